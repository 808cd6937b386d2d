//! The `oasis serve` binary as a child process, for what only a real
//! process shows: signals (SIGTERM, kill -9), restarts, the CLI against it.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// A running `oasis serve` with JSON logs on a channel.
pub struct ServeProcess {
    pub child: Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// Its log lines up to readiness, parsed.
    pub startup: Vec<Value>,
    /// Its later log lines, parsed.
    pub logs: mpsc::Receiver<Value>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl ServeProcess {
    /// Starts `oasis serve --policies dir` on a free loopback port with JSON
    /// logs, `extra` arguments and `env`, and waits until it is ready.
    pub fn start(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_with(dir, extra, env, |_| {})
    }

    /// [`ServeProcess::start`], with the command `tune`d before it is
    /// spawned (resource limits, signal dispositions).
    pub fn start_with(
        dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        tune: impl FnOnce(&mut Command),
    ) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_oasis"));
        cmd.args([
            "serve",
            "--policies",
            dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .args(extra)
        .env(
            "OASIS_CACHE_DIR",
            std::env::temp_dir().join("oasis-cli-test-cache"),
        )
        .env_remove("OASIS_ADMIN_TOKEN")
        .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        tune(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        let (tx, logs) = mpsc::channel::<Value>();
        let stderr = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|_| panic!("not a JSON log line: {line}"));
                let _ = tx.send(v);
            }
        });
        let mut addr = None;
        let mut startup = Vec::new();
        loop {
            let line = logs
                .recv_timeout(Duration::from_secs(30))
                .expect("server did not become ready");
            if line["message"] == "listening" {
                addr = line["addr"].as_str().map(String::from);
            }
            let ready = line["message"] == "initial policy set loaded; ready";
            startup.push(line);
            if ready {
                break;
            }
        }
        ServeProcess {
            child,
            url: format!("http://{}", addr.expect("listening address logged")),
            startup,
            logs,
            reader: Some(reader),
        }
    }

    /// The gRPC listener's `host:port`, when it was started with
    /// `--grpc-listen` (logged before readiness).
    pub fn grpc_addr(&self) -> Option<String> {
        self.startup
            .iter()
            .find(|l| l["message"] == "gRPC API listening")
            .and_then(|l| l["grpc_addr"].as_str().map(String::from))
    }

    /// Sends `signal` (`TERM`, `KILL`…) to the process.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits for the process to exit; returns its status and every log line
    /// it wrote after readiness.
    pub fn wait(mut self) -> (std::process::ExitStatus, Vec<Value>) {
        let status = self.child.wait().unwrap();
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        (status, self.logs.try_iter().collect())
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        // A failed test must not leave a server behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
