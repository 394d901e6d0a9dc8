//! A `kafka-ops exporter` process for the tests that scrape it.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::example_binary;

/// A running exporter, killed if the test fails before it stops it.
pub(crate) struct Exporter {
    child: Mutex<Child>,
    /// Kept open: the exporter's standard output stays writable for as long as it runs.
    _stdout: BufReader<ChildStdout>,
    base: String,
    http: reqwest::Client,
}

impl Exporter {
    /// The process id (to read its memory).
    pub(crate) fn pid(&self) -> u32 {
        self.child.lock().unwrap().id()
    }

    /// Starts `kafka-ops exporter` on a free port with `args` and waits for its address.
    pub(crate) fn start(args: &[&str]) -> Exporter {
        let mut child = Command::new(example_binary("kafka-ops"))
            .arg("exporter")
            .args(["--listen", "127.0.0.1:0", "--interval", "1s"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        // "kafka-ops exporter: serving http://127.0.0.1:PORT/metrics, polling ..."
        let base = line
            .split_whitespace()
            .find_map(|word| word.strip_suffix("/metrics,"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        Exporter {
            child: Mutex::new(child),
            _stdout: stdout,
            base,
            http: reqwest::Client::new(),
        }
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, String) {
        let response = match self.http.get(format!("{}{path}", self.base)).send().await {
            Ok(response) => response,
            Err(error) => {
                // Say whether the exporter is still there, and how it ended if not.
                let status = self.child.lock().unwrap().try_wait();
                panic!("GET {path}: {error}; the exporter: {status:?}")
            }
        };
        (response.status().as_u16(), response.text().await.unwrap())
    }

    pub(crate) async fn metrics(&self) -> String {
        let (status, text) = self.get("/metrics").await;
        assert_eq!(status, 200);
        text
    }

    /// Scrapes until `ready` holds for the text (polls run every second), or fails after 60 s
    /// showing the last scrape.
    pub(crate) async fn scrape_until(&self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = self.metrics().await;
            if ready(&text) {
                return text;
            }
            assert!(Instant::now() < deadline, "never saw {what}:\n{text}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Sends SIGTERM and waits (at most 20 s) for the process to end.
    pub(crate) fn terminate(self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.lock().unwrap().try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit 20 s after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let child = self
            .child
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The value of the sample `series` (name and labels exactly as printed), if present.
pub(crate) fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}
