//! Consumer groups through librdkafka's admin API: list and describe.

use super::*;

fn group_state(state: rd::rd_kafka_consumer_group_state_t) -> GroupState {
    use rd::rd_kafka_consumer_group_state_t as S;
    match state {
        S::RD_KAFKA_CONSUMER_GROUP_STATE_PREPARING_REBALANCE => GroupState::PreparingRebalance,
        S::RD_KAFKA_CONSUMER_GROUP_STATE_COMPLETING_REBALANCE => GroupState::CompletingRebalance,
        S::RD_KAFKA_CONSUMER_GROUP_STATE_STABLE => GroupState::Stable,
        S::RD_KAFKA_CONSUMER_GROUP_STATE_DEAD => GroupState::Dead,
        S::RD_KAFKA_CONSUMER_GROUP_STATE_EMPTY => GroupState::Empty,
        _ => GroupState::Unknown,
    }
}

fn group_type(group_type: rd::rd_kafka_consumer_group_type_t) -> GroupType {
    use rd::rd_kafka_consumer_group_type_t as T;
    match group_type {
        T::RD_KAFKA_CONSUMER_GROUP_TYPE_CLASSIC => GroupType::Classic,
        T::RD_KAFKA_CONSUMER_GROUP_TYPE_CONSUMER => GroupType::Consumer,
        _ => GroupType::Unknown,
    }
}

/// Group listings, and the errors of brokers that could not list theirs.
pub(crate) type GroupListings = (Vec<GroupListing>, Vec<(KafkaCode, String)>);

/// `ListGroups`, sent to every broker. Errors from some brokers are returned beside the listings.
pub(crate) fn list_consumer_groups<C: ClientContext>(
    client: &Client<C>,
    timeout: Duration,
) -> Result<GroupListings, Error> {
    let event = run_admin(
        client,
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPS,
        "list consumer groups",
        timeout,
        AdminSettings::default(),
        rd::RD_KAFKA_EVENT_LISTCONSUMERGROUPS_RESULT,
        |options, queue| {
            // SAFETY: all pointers are live for the call.
            unsafe { rd::rd_kafka_ListConsumerGroups(client.native_ptr(), options, queue) }
        },
    )?;
    // SAFETY: `event` is a ListConsumerGroups result event.
    let result = unsafe { rd::rd_kafka_event_ListConsumerGroups_result(event.as_ptr()) };
    let mut count = 0usize;
    // SAFETY: `result` is valid while `event` lives.
    let valid = unsafe { rd::rd_kafka_ListConsumerGroups_result_valid(result, &mut count) };
    // SAFETY: `valid` holds `count` pointers valid while `event` lives.
    let valid = unsafe { pointers(valid, count) };
    let mut listings = Vec::with_capacity(valid.len());
    for listing in valid {
        // SAFETY: each listing is valid while `event` lives.
        let (group, state, simple, kind) = unsafe {
            (
                opt_string(rd::rd_kafka_ConsumerGroupListing_group_id(*listing)),
                rd::rd_kafka_ConsumerGroupListing_state(*listing),
                rd::rd_kafka_ConsumerGroupListing_is_simple_consumer_group(*listing),
                rd::rd_kafka_ConsumerGroupListing_type(*listing),
            )
        };
        listings.push(GroupListing {
            group: group.unwrap_or_default(),
            state: group_state(state),
            is_simple: simple != 0,
            group_type: group_type(kind),
        });
    }
    let mut count = 0usize;
    // SAFETY: as above.
    let errors = unsafe { rd::rd_kafka_ListConsumerGroups_result_errors(result, &mut count) };
    // SAFETY: `errors` holds `count` pointers valid while `event` lives.
    let errors = unsafe { pointers(errors, count) }
        .iter()
        // SAFETY: each error is valid while `event` lives.
        .filter_map(|e| unsafe { error_parts(*e) })
        .collect();
    Ok((listings, errors))
}

/// A group description with its coordinator's advertised address.
pub(crate) struct DescribedGroup {
    pub(crate) description: GroupDescription,
    pub(crate) coordinator_address: Option<(String, u16)>,
}

/// `DescribeGroups` (or ConsumerGroupDescribe, which librdkafka tries first) for the named
/// groups, sent to `coordinator` when given (librdkafka finds each group's coordinator
/// otherwise, a path that can crash the process; see the cluster module's `coordinator`).
pub(crate) fn describe_consumer_groups<C: ClientContext>(
    client: &Client<C>,
    groups: &[String],
    coordinator: Option<i32>,
    timeout: Duration,
) -> Result<Vec<DescribedGroup>, Error> {
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<CString> = groups
        .iter()
        .map(|g| c_string(g))
        .collect::<Result<_, _>>()?;
    let mut pointers_to_names: Vec<*const c_char> = names.iter().map(|n| n.as_ptr()).collect();
    let event = run_admin(
        client,
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS,
        "describe consumer groups",
        timeout,
        AdminSettings {
            broker: coordinator,
            // Without a broker, librdkafka looks the coordinator up, and a lookup that outlives
            // its request frees the request twice and aborts the process once the coordinator
            // answers (librdkafka 2.12). Its request is kept for as long as librdkafka allows;
            // the caller still returns at `timeout`.
            lifetime: coordinator.is_none().then_some(LONGEST_ADMIN_LIFETIME),
            ..AdminSettings::default()
        },
        rd::RD_KAFKA_EVENT_DESCRIBECONSUMERGROUPS_RESULT,
        |options, queue| {
            // SAFETY: `pointers_to_names` holds `len` NUL-terminated strings kept alive by `names`;
            // librdkafka copies them.
            unsafe {
                rd::rd_kafka_DescribeConsumerGroups(
                    client.native_ptr(),
                    pointers_to_names.as_mut_ptr(),
                    pointers_to_names.len(),
                    options,
                    queue,
                )
            }
        },
    )?;
    // SAFETY: `event` is a DescribeConsumerGroups result event.
    let result = unsafe { rd::rd_kafka_event_DescribeConsumerGroups_result(event.as_ptr()) };
    let mut count = 0usize;
    // SAFETY: `result` is valid while `event` lives.
    let descriptions =
        unsafe { rd::rd_kafka_DescribeConsumerGroups_result_groups(result, &mut count) };
    // SAFETY: `descriptions` holds `count` pointers valid while `event` lives.
    let descriptions = unsafe { pointers(descriptions, count) };
    let mut out = Vec::with_capacity(descriptions.len());
    for description in descriptions {
        let description = *description;
        // SAFETY: `description` and everything reachable from it live as long as `event`.
        let parsed = unsafe {
            let coordinator = rd::rd_kafka_ConsumerGroupDescription_coordinator(description);
            let member_count = rd::rd_kafka_ConsumerGroupDescription_member_count(description);
            let mut members = Vec::with_capacity(member_count);
            for index in 0..member_count {
                let member = rd::rd_kafka_ConsumerGroupDescription_member(description, index);
                if member.is_null() {
                    continue;
                }
                let assignment = rd::rd_kafka_MemberDescription_assignment(member);
                let partitions = if assignment.is_null() {
                    ptr::null()
                } else {
                    rd::rd_kafka_MemberAssignment_partitions(assignment)
                };
                let target = rd::rd_kafka_MemberDescription_target_assignment(member);
                let target = (!target.is_null())
                    .then(|| read_partition_list(rd::rd_kafka_MemberAssignment_partitions(target)));
                members.push(GroupMember {
                    member_id: opt_string(rd::rd_kafka_MemberDescription_consumer_id(member))
                        .unwrap_or_default(),
                    client_id: opt_string(rd::rd_kafka_MemberDescription_client_id(member))
                        .unwrap_or_default(),
                    host: opt_string(rd::rd_kafka_MemberDescription_host(member))
                        .unwrap_or_default(),
                    instance_id: opt_string(rd::rd_kafka_MemberDescription_group_instance_id(
                        member,
                    )),
                    assignment: read_partition_list(partitions),
                    target_assignment: target,
                });
            }
            let coordinator_address = (!coordinator.is_null())
                .then(|| {
                    let host = opt_string(rd::rd_kafka_Node_host(coordinator))?;
                    let port = rd::rd_kafka_Node_port(coordinator);
                    Some((host, port))
                })
                .flatten();
            let description = GroupDescription {
                group: opt_string(rd::rd_kafka_ConsumerGroupDescription_group_id(description))
                    .unwrap_or_default(),
                state: group_state(rd::rd_kafka_ConsumerGroupDescription_state(description)),
                group_type: group_type(rd::rd_kafka_ConsumerGroupDescription_type(description)),
                assignor: opt_string(rd::rd_kafka_ConsumerGroupDescription_partition_assignor(
                    description,
                ))
                .unwrap_or_default(),
                coordinator: (!coordinator.is_null()).then(|| rd::rd_kafka_Node_id(coordinator)),
                members,
                error: error_parts(rd::rd_kafka_ConsumerGroupDescription_error(description)).map(
                    |(code, reason)| PartitionError {
                        code: Some(code),
                        reason,
                    },
                ),
            };
            DescribedGroup {
                description,
                coordinator_address,
            }
        };
        out.push(parsed);
    }
    Ok(out)
}
