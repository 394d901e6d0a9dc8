//! Secrets given on the command line (`-X sasl.password=…`, `-X ssl.key.password=…`) never
//! come out again: not from any `kafka-ops` command, in tables or JSON, on success or failure,
//! with every log level on; and not from the reference consumer's output, logs, health JSON or
//! metrics.
//!
//! It needs librdkafka built with TLS and SASL (the `ssl` and `sasl` features; the test command
//! builds with every feature): without them the settings are refused before any client exists.
#![cfg(all(feature = "ssl", feature = "sasl"))]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kafka_ops_core::testkit::{MockKafka, free_port};

mod support;
use support::example_binary;

const SASL_PASSWORD: &str = "sasl-hunter2-never-printed";
const KEY_PASSWORD: &str = "key-hunter3-never-printed";

fn secret_settings() -> [String; 10] {
    [
        "-X",
        "security.protocol=sasl_plaintext",
        "-X",
        "sasl.mechanism=PLAIN",
        "-X",
        "sasl.username=svc-billing",
        "-X",
        &format!("sasl.password={SASL_PASSWORD}"),
        "-X",
        &format!("ssl.key.password={KEY_PASSWORD}"),
    ]
    .map(String::from)
}

fn assert_clean(what: &str, text: &str) {
    for secret in [SASL_PASSWORD, KEY_PASSWORD] {
        assert!(!text.contains(secret), "{what} leaks {secret}:\n{text}");
    }
}

#[test]
fn no_command_prints_a_secret() {
    // A broker that is not there: every command fails, through its error path.
    let unreachable = format!("127.0.0.1:{}", free_port().unwrap());
    // A broker that is there: the commands work, and log at every level on the way.
    let kafka = MockKafka::start(1).unwrap();
    kafka.create_topic("orders.dlq", 1).unwrap();
    let commands: [&[&str]; 8] = [
        &["lag", "--group", "g"],
        &["lag", "--group", "g", "--json"],
        &["health", "--json"],
        &["health"],
        &["restart-check", "--broker", "1", "--json"],
        &["offsets", "export", "--group", "g"],
        &["dlq", "inspect", "--topic", "orders.dlq", "--json"],
        &[
            "dlq",
            "replay",
            "--topic",
            "orders.dlq",
            "--id",
            "r1",
            "--dry-run",
        ],
    ];
    for bootstrap in [unreachable.as_str(), kafka.bootstrap()] {
        for command in commands {
            let output = Command::new(example_binary("kafka-ops"))
                .args(command)
                .args(["--bootstrap", bootstrap, "--timeout", "1s"])
                .args(secret_settings())
                .env("RUST_LOG", "trace")
                .output()
                .unwrap();
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            assert_clean(&format!("kafka-ops {}", command.join(" ")), &all);
            if bootstrap == unreachable {
                assert!(!all.trim().is_empty(), "{command:?} says why it failed");
            }
        }
    }
}

fn http_get(address: &str, path: &str) -> String {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn the_reference_consumer_prints_no_secret() {
    let bootstrap = format!("127.0.0.1:{}", free_port().unwrap());
    let mut child = Command::new(example_binary("reference-consumer"))
        .args(["--bootstrap", &bootstrap])
        .args(secret_settings())
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let logs = std::thread::spawn(move || {
        let mut text = String::new();
        BufReader::new(stderr).read_to_string(&mut text).unwrap();
        text
    });
    // Read stdout to the end on its own thread (trace logs go there too: a full pipe would
    // stall the consumer), passing each line on.
    let stdout = child.stdout.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    let printed = std::thread::spawn(move || {
        let mut printed = String::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let _ = lines.send(line.clone());
            printed.push_str(&line);
            printed.push('\n');
        }
        printed
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let address = loop {
        let line = received
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the consumer prints where its health endpoints are");
        if let Some(rest) = line.strip_prefix("health endpoints on http://") {
            break rest.split('/').next().unwrap().to_string();
        }
    };
    // The first answer waits for the first report, whose probes time out against the closed
    // port.
    for path in ["/livez", "/readyz", "/health", "/metrics"] {
        assert_clean(path, &http_get(&address, path));
    }
    let health = http_get(&address, "/health");
    assert!(health.contains("\"broker_connectivity\""), "{health}");
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    child.wait().unwrap();
    let printed = printed.join().unwrap();
    assert_clean("the reference consumer's output and logs", &printed);
    assert!(printed.contains("TRACE"), "trace logs were written");
    assert_clean("the reference consumer's stderr", &logs.join().unwrap());
}
