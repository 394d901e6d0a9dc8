//! DescribeConfigs, reading each resource's own error: the Rust binding's answer drops it, so a
//! resource the broker refused (not authorized, no such topic) arrived as one with no settings.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::bindings as rd;
use rdkafka::client::Client;

use super::{
    AdminSettings, Owned, c_string, code_of, describe_code, is_error, opt_string, pointers,
    run_admin,
};
use crate::cluster::{ConfigEntries, PartitionError};
use crate::error::Error;

/// A resource whose configuration is asked.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ConfigResource<'a> {
    /// A topic, by name.
    Topic(&'a str),
    /// A broker, by id (librdkafka sends the request to that broker).
    Broker(i32),
}

impl ConfigResource<'_> {
    fn kind(&self) -> rd::rd_kafka_ResourceType_t {
        match self {
            ConfigResource::Topic(_) => rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_TOPIC,
            ConfigResource::Broker(_) => rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_BROKER,
        }
    }

    fn name(&self) -> String {
        match self {
            ConfigResource::Topic(name) => (*name).to_string(),
            ConfigResource::Broker(id) => id.to_string(),
        }
    }
}

/// One resource's settings (sensitive values left out), or why the broker would not describe it.
pub(crate) type ConfigAnswer = Result<ConfigEntries, PartitionError>;

/// Describes `resources` in one DescribeConfigs call within `timeout`; one answer per resource,
/// in their order. A failure of the whole call (the cluster does not serve DescribeConfigs, a
/// time-out) is the call's error.
pub(crate) fn describe_configs<C: ClientContext>(
    client: &Client<C>,
    resources: &[ConfigResource<'_>],
    timeout: Duration,
) -> Result<Vec<ConfigAnswer>, Error> {
    const OPERATION: &str = "describe configs";
    let mut owned = Vec::with_capacity(resources.len());
    for resource in resources {
        let name = c_string(&resource.name())?;
        // SAFETY: `name` is a valid C string for the call; librdkafka copies it.
        let raw = unsafe { rd::rd_kafka_ConfigResource_new(resource.kind(), name.as_ptr()) };
        owned.push(Owned::new(
            raw,
            rd::rd_kafka_ConfigResource_destroy,
            "config resource",
        )?);
    }
    let mut raw: Vec<*mut rd::rd_kafka_ConfigResource_t> =
        owned.iter().map(Owned::as_ptr).collect();
    let event = run_admin(
        client,
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS,
        OPERATION,
        timeout,
        AdminSettings::default(),
        rd::RD_KAFKA_EVENT_DESCRIBECONFIGS_RESULT,
        |options, queue| {
            // SAFETY: the resources and options are live for the call; librdkafka copies both.
            unsafe {
                rd::rd_kafka_DescribeConfigs(
                    client.native_ptr(),
                    raw.as_mut_ptr(),
                    raw.len(),
                    options,
                    queue,
                )
            }
        },
    )?;
    // SAFETY: `event` is a DescribeConfigs result event (its type was checked by run_admin).
    let result = unsafe { rd::rd_kafka_event_DescribeConfigs_result(event.as_ptr()) };
    let mut count = 0usize;
    // SAFETY: `result` is valid while `event` lives; `count` receives the array's length.
    let answered = unsafe { rd::rd_kafka_DescribeConfigs_result_resources(result, &mut count) };
    // SAFETY: `answered` holds `count` pointers valid while `event` lives.
    let answered = unsafe { pointers(answered, count) };
    let mut by_resource: HashMap<(u32, String), ConfigAnswer> = HashMap::new();
    for resource in answered {
        // SAFETY: each resource is valid while `event` lives, and so are its strings.
        let (kind, name, err) = unsafe {
            (
                rd::rd_kafka_ConfigResource_type(*resource),
                opt_string(rd::rd_kafka_ConfigResource_name(*resource)).unwrap_or_default(),
                rd::rd_kafka_ConfigResource_error(*resource),
            )
        };
        let answer = if is_error(err) {
            // SAFETY: as above.
            let message =
                unsafe { opt_string(rd::rd_kafka_ConfigResource_error_string(*resource)) }
                    .filter(|m| !m.is_empty())
                    .unwrap_or_else(|| describe_code(err));
            Err(PartitionError {
                code: Some(code_of(err)),
                reason: message,
            })
        } else {
            // SAFETY: as above.
            Ok(unsafe { entries(*resource) })
        };
        by_resource.insert((kind as u32, name), answer);
    }
    Ok(resources
        .iter()
        .map(|resource| {
            by_resource
                .remove(&(resource.kind() as u32, resource.name()))
                .unwrap_or_else(|| {
                    Err(PartitionError {
                        code: None,
                        reason: "the answer leaves it out".into(),
                    })
                })
        })
        .collect())
}

/// A described resource's settings; sensitive ones have no value.
///
/// # Safety
/// `resource` is a valid resource of a live DescribeConfigs result event.
unsafe fn entries(resource: *const rd::rd_kafka_ConfigResource_t) -> ConfigEntries {
    let mut count = 0usize;
    // SAFETY: `resource` is valid per this function's contract.
    let configs = unsafe { rd::rd_kafka_ConfigResource_configs(resource, &mut count) };
    // SAFETY: `configs` holds `count` pointers valid while the event lives.
    let configs = unsafe { pointers(configs, count) };
    configs
        .iter()
        .map(|entry| {
            // SAFETY: each entry and its strings are valid while the event lives.
            unsafe {
                let name = opt_string(rd::rd_kafka_ConfigEntry_name(*entry)).unwrap_or_default();
                let value = if rd::rd_kafka_ConfigEntry_is_sensitive(*entry) != 0 {
                    None
                } else {
                    opt_string(rd::rd_kafka_ConfigEntry_value(*entry))
                };
                (name, value)
            }
        })
        .collect()
}
