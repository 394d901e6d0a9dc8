use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proptest::prelude::*;

use super::*;

/// A response group as the tests write it: name, error, and (topic, partition, offset, error).
type Model = (String, i16, Vec<(String, i32, i64, i16)>);

/// OffsetFetch v8's response for `groups`, each partition written as its own topic entry (the
/// decoder must merge them) with a metadata string, and a tagged field where one may appear.
fn response(correlation_id: i32, groups: &[Model]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&correlation_id.to_be_bytes());
    put_uvarint(&mut body, 0);
    body.extend_from_slice(&0i32.to_be_bytes()); // throttle
    put_compact_len(&mut body, groups.len());
    for (group, error, partitions) in groups {
        put_compact_string(&mut body, group);
        put_compact_len(&mut body, partitions.len());
        for (topic, partition, offset, error) in partitions {
            put_compact_string(&mut body, topic);
            put_compact_len(&mut body, 1);
            body.extend_from_slice(&partition.to_be_bytes());
            body.extend_from_slice(&offset.to_be_bytes());
            body.extend_from_slice(&(-1i32).to_be_bytes()); // leader epoch
            put_compact_string(&mut body, "meta");
            body.extend_from_slice(&error.to_be_bytes());
            // One tagged field (tag 7, two bytes), which the decoder skips.
            body.extend_from_slice(&[1, 7, 2, 0xab, 0xcd]);
            put_uvarint(&mut body, 0);
        }
        body.extend_from_slice(&error.to_be_bytes());
        put_uvarint(&mut body, 0);
    }
    put_uvarint(&mut body, 0);
    body
}

fn tp(topic: &str, partition: i32) -> TopicPartition {
    TopicPartition::new(topic, partition)
}

#[test]
fn the_request_asks_every_group_for_the_same_partitions() {
    let framed = encode_request(&["a", "bb"], &[("t", vec![0, 2])], 5);
    let size = i32::from_be_bytes([framed[0], framed[1], framed[2], framed[3]]);
    assert_eq!(size as usize, framed.len() - 4);
    assert_eq!(&framed[4..8], &[0, 9, 0, 8], "OffsetFetch v8");
    assert_eq!(&framed[8..12], &5i32.to_be_bytes());
    let topic = b"\x02\x02t\x03\x00\x00\x00\x00\x00\x00\x00\x02\x00";
    let mut expected = vec![0u8, 3]; // header tags; two groups
    for group in [&b"a"[..], b"bb"] {
        expected.push(group.len() as u8 + 1);
        expected.extend_from_slice(group);
        expected.extend_from_slice(topic);
        expected.push(0); // group tags
    }
    expected.extend_from_slice(&[1, 0]); // stable offsets only; body tags
    assert_eq!(&framed[23..], &expected[..]);
}

#[test]
fn partitions_are_asked_by_topic_in_the_order_first_seen() {
    let asked = [tp("b", 1), tp("a", 0), tp("b", 0), tp("a", 3)];
    assert_eq!(by_topic(&asked), vec![("b", vec![1, 0]), ("a", vec![0, 3])]);
}

#[test]
fn each_partition_gets_its_offset_none_or_its_error() {
    let body = response(
        4,
        &[
            (
                "billing".into(),
                0,
                vec![
                    ("t".into(), 0, 42, 0),
                    ("t".into(), 1, -1, 0),
                    ("u".into(), 0, -1, 3),
                ],
            ),
            ("moved".into(), 16, vec![]),
        ],
    );
    let groups = decode_response(&body, 4).unwrap();
    assert_eq!(groups.len(), 2);
    let billing = &groups[0];
    assert_eq!(billing.group, "billing");
    let answer = billing
        .answer(&[tp("u", 0), tp("t", 0), tp("t", 1)])
        .unwrap();
    assert_eq!(
        answer,
        vec![
            (
                tp("u", 0),
                Err(PartitionError::from_code(
                    KafkaCode::UNKNOWN_TOPIC_OR_PARTITION
                ))
            ),
            (tp("t", 0), Ok(Some(Offset::new(42).unwrap()))),
            (tp("t", 1), Ok(None)),
        ]
    );
    assert_eq!(
        billing.answer(&[tp("t", 0), tp("t", 2)]),
        None,
        "t-2 was not answered"
    );
    assert_eq!(
        groups[1].answer(&[]),
        None,
        "NOT_COORDINATOR: not this path's answer"
    );
    let pending = response(
        4,
        &[(
            "ledger".into(),
            0,
            vec![("t".into(), 0, 42, 0), ("t".into(), 1, 7, 88)],
        )],
    );
    assert_eq!(
        decode_response(&pending, 4).unwrap()[0].answer(&[tp("t", 0), tp("t", 1)]),
        None,
        "UNSTABLE_OFFSET_COMMIT: left to the consumers"
    );
    assert!(
        decode_response(&body, 5).is_err(),
        "another request's answer"
    );
    for cut in [body.len() - 1, body.len() / 2, 6] {
        assert!(decode_response(&body[..cut], 4).is_err(), "cut at {cut}");
    }
}

proptest! {
    #[test]
    fn any_answer_reads_back(
        groups in prop::collection::vec(
            ("[a-zé.-]{0,12}", any::<i16>(), prop::collection::vec(
                ("[a-z_]{1,8}", 0i32..64, any::<i64>(), any::<i16>()), 0..6)),
            0..5)
    ) {
        let body = response(1, &groups);
        let decoded = decode_response(&body, 1).unwrap();
        prop_assert_eq!(decoded.len(), groups.len());
        for (read, (group, error, partitions)) in decoded.iter().zip(&groups) {
            prop_assert_eq!(read.group, group.as_str());
            prop_assert_eq!(read.error, *error);
            let mut expected = HashMap::new();
            for (topic, partition, offset, error) in partitions {
                expected.insert((topic.as_str(), *partition), Committed { offset: *offset, error: *error });
            }
            prop_assert_eq!(&read.partitions, &expected);
        }
    }

    #[test]
    fn any_bytes_are_an_answer_or_an_error_never_a_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..256)
    ) {
        let _ = decode_response(&bytes, 0);
        let mut framed = 0i32.to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        let _ = decode_response(&framed, 0);
    }
}

/// A coordinator on a local port that answers each OffsetFetch v8 it gets with every asked
/// partition committed at `partition * 100 + the group's number` (its name after `g`), and
/// counts the requests. Only for the splitting logic: real coordinators are asked in
/// `tests/committed_real_kafka.rs`.
fn answering_coordinator(requests: Arc<AtomicUsize>) -> u16 {
    answering_then_silent(requests, usize::MAX, Duration::ZERO)
}

/// The same, answering the first `answered` requests of each connection, each after `delay`,
/// then none (the connection stays open).
fn answering_then_silent(requests: Arc<AtomicUsize>, answered: usize, delay: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let requests = requests.clone();
            std::thread::spawn(move || {
                for _ in 0..answered {
                    std::thread::sleep(delay);
                    if answer_one(&mut stream, &requests).is_none() {
                        return;
                    }
                }
                std::thread::sleep(Duration::from_secs(5));
            });
        }
    });
    port
}

fn answer_one(stream: &mut TcpStream, requests: &AtomicUsize) -> Option<()> {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).ok()?;
    let mut request = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut request).ok()?;
    requests.fetch_add(1, Ordering::SeqCst);
    let correlation_id = i32::from_be_bytes(request[4..8].try_into().ok()?);
    // Past the header (client id "kafka-ops" and no tags): the groups.
    let mut cursor = Cursor::new("test", &request[8 + 2 + 9 + 1..]);
    let mut groups = Vec::new();
    for _ in 0..cursor.compact_len(1).ok()?? {
        let group = cursor.compact_string().ok()??.to_string();
        let number: i64 = group.trim_start_matches('g').parse().ok()?;
        let mut partitions = Vec::new();
        for _ in 0..cursor.compact_len(1).ok()?? {
            let topic = cursor.compact_string().ok()??.to_string();
            for _ in 0..cursor.compact_len(4).ok()?? {
                let partition = cursor.i32().ok()?;
                partitions.push((
                    topic.clone(),
                    partition,
                    i64::from(partition) * 100 + number,
                    0,
                ));
            }
            cursor.skip_tagged_fields().ok()?;
        }
        cursor.skip_tagged_fields().ok()?;
        groups.push((group, 0, partitions));
    }
    let body = response(correlation_id, &groups);
    let mut framed = (body.len() as i32).to_be_bytes().to_vec();
    framed.extend_from_slice(&body);
    stream.write_all(&framed).ok()
}

#[test]
fn large_asks_are_split_by_groups_and_by_partitions_and_answered_in_order() {
    let requests = Arc::new(AtomicUsize::new(0));
    let port = answering_coordinator(requests.clone());
    let groups: Vec<String> = (0..7).map(|i| format!("g{i}")).collect();
    let partitions: Vec<TopicPartition> =
        (0..3).map(|p| tp("t", 2 - p)).chain([tp("u", 0)]).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    let locate = |_: &str| Some(("127.0.0.1".to_string(), port));
    let check = |answers: Vec<Option<GroupAnswer>>| {
        for (number, answer) in answers.into_iter().enumerate() {
            let expected: GroupAnswer = partitions
                .iter()
                .map(|tp| {
                    let offset = i64::from(tp.partition) * 100 + number as i64;
                    (tp.clone(), Ok(Some(Offset::new(offset).unwrap())))
                })
                .collect();
            assert_eq!(answer, Some(expected), "group {number}");
        }
    };
    // Eight entries a request: two groups of four partitions each time, four requests.
    check(committed_at_coordinators(
        &groups,
        &partitions,
        locate,
        deadline,
        8,
    ));
    assert_eq!(requests.swap(0, Ordering::SeqCst), 4);
    // Three entries: one group a request, its partitions in two requests.
    check(committed_at_coordinators(
        &groups,
        &partitions,
        locate,
        deadline,
        3,
    ));
    assert_eq!(requests.swap(0, Ordering::SeqCst), 14);
    check(committed_at_coordinators(
        &groups,
        &partitions,
        locate,
        deadline,
        MAX_ENTRIES,
    ));
    assert_eq!(requests.swap(0, Ordering::SeqCst), 1);
}

#[test]
fn groups_that_cannot_be_asked_are_left_to_the_consumers() {
    let groups: Vec<String> = vec!["a".into(), "b".into()];
    let partitions = [tp("t", 0)];
    let soon = || Instant::now() + Duration::from_secs(5);
    let unanswered = vec![None, None];
    // No coordinator known.
    assert_eq!(
        committed_at_coordinators(&groups, &partitions, |_| None, soon(), MAX_ENTRIES),
        unanswered
    );
    // Nothing listens there.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let at = |port: u16| move |_: &str| Some(("127.0.0.1".to_string(), port));
    assert_eq!(
        committed_at_coordinators(&groups, &partitions, at(closed), soon(), MAX_ENTRIES),
        unanswered
    );
    // A listener that hangs up, one that answers garbage, one that never answers.
    for reply in [None, Some(vec![0, 0, 0, 3, 1, 2, 3]), Some(Vec::new())] {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let keep = reply.as_ref().is_some_and(Vec::is_empty);
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 64];
            let _ = stream.read(&mut request);
            if let Some(reply) = reply {
                let _ = stream.write_all(&reply);
            }
            if keep {
                std::thread::sleep(Duration::from_secs(3));
            }
        });
        let started = Instant::now();
        let deadline = started + Duration::from_millis(500);
        assert_eq!(
            committed_at_coordinators(&groups, &partitions, at(port), deadline, MAX_ENTRIES),
            unanswered
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "bounded by the deadline"
        );
    }
    // A group no consumer can be made for is not asked here either.
    let requests = Arc::new(AtomicUsize::new(0));
    let port = answering_coordinator(requests.clone());
    let odd: Vec<String> = vec![String::new(), "g\0x".into()];
    assert_eq!(
        committed_at_coordinators(&odd, &partitions, at(port), soon(), MAX_ENTRIES),
        unanswered
    );
    assert_eq!(requests.load(Ordering::SeqCst), 0);
    // A topic name the consumers' path refuses with a typed error is not asked here.
    let requests = Arc::new(AtomicUsize::new(0));
    let port = answering_coordinator(requests.clone());
    assert_eq!(
        committed_at_coordinators(&groups, &[tp("t\0", 0)], at(port), soon(), MAX_ENTRIES),
        unanswered
    );
    assert_eq!(requests.load(Ordering::SeqCst), 0);
}

#[test]
fn a_coordinator_that_stops_answering_holds_the_call_no_longer_than_its_deadline() {
    let requests = Arc::new(AtomicUsize::new(0));
    // The first answer comes late: a per-read timeout set when the connection opened would
    // give the second request about as long again.
    let port = answering_then_silent(requests.clone(), 1, Duration::from_secs(2));
    let groups: Vec<String> = vec!["g0".into(), "g1".into()];
    let partitions = [tp("t", 0)];
    let at = move |_: &str| Some(("127.0.0.1".to_string(), port));
    let started = Instant::now();
    // One group a request: the first is answered, the second never is.
    let deadline = started + Duration::from_secs(4);
    let answers = committed_at_coordinators(&groups, &partitions, at, deadline, 1);
    let took = started.elapsed();
    assert_eq!(requests.load(Ordering::SeqCst), 1);
    assert_eq!(
        answers,
        vec![
            Some(vec![(tp("t", 0), Ok(Some(Offset::new(0).unwrap())))]),
            None
        ]
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn a_coordinator_answering_a_byte_at_a_time_holds_the_call_no_longer_than_its_deadline() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = [0u8; 256];
        let _ = stream.read(&mut request);
        // A large answer, one byte every 100 ms: each read gets a byte well within any
        // per-read timeout.
        for byte in (1000i32).to_be_bytes().into_iter().chain([0; 1000]) {
            if stream.write_all(&[byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let groups: Vec<String> = vec!["g0".into()];
    let at = move |_: &str| Some(("127.0.0.1".to_string(), port));
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_millis(500);
        let _ = done.send(committed_at_coordinators(
            &groups,
            &[tp("t", 0)],
            at,
            deadline,
            MAX_ENTRIES,
        ));
    });
    // The answer drips for 100 s; the call must end near its 500 ms deadline.
    let answers = finished
        .recv_timeout(Duration::from_secs(3))
        .expect("the call ends by its deadline");
    assert_eq!(answers, vec![None]);
}
