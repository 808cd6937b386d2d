//! Test helpers: a real `redis-server` per test, and event builders.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oasis_state::{DeliveryEvent, EventKind};

/// A `redis-server` from `$PATH` on a free loopback port, without
/// persistence, in a temporary directory; killed on drop.
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one and waits until it answers PING. Panics (the test fails)
    /// when `redis-server` is not installed.
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut server = Self {
            port,
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it (again) on the same port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let spawned = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed (not found on PATH): run scripts/setup to install it"
            ),
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if ping(self.port) {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "redis-server exited at startup on port {}: {status}",
                    self.port
                );
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer on port {} within 15 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

pub const HOUR: i64 = 3_600_000;
pub const DAY: i64 = 24 * HOUR;
/// A time far from 0 and hour-aligned, like a real unix time.
pub const T0: i64 = 1_700_000_000_000 / HOUR * HOUR;

/// A promoted impression of `track` to `listener` in session `s1`.
pub fn impression(id: &str, at_ms: i64, listener: &str, track: &str) -> DeliveryEvent {
    DeliveryEvent {
        id: id.into(),
        kind: EventKind::Impression,
        at_ms,
        listener_id: listener.into(),
        session_id: "s1".into(),
        track_id: track.into(),
        campaign_id: None,
        rights_holder: None,
        promoted: true,
        position: None,
    }
}

pub trait EventExt {
    fn campaign(self, c: &str) -> Self;
    fn holder(self, h: &str, position: u32) -> Self;
    fn kind(self, k: EventKind) -> Self;
    fn session(self, s: &str) -> Self;
    fn organic(self) -> Self;
}

impl EventExt for DeliveryEvent {
    fn campaign(mut self, c: &str) -> Self {
        self.campaign_id = Some(c.into());
        self
    }
    fn holder(mut self, h: &str, position: u32) -> Self {
        self.rights_holder = Some(h.into());
        self.position = Some(position);
        self
    }
    fn kind(mut self, k: EventKind) -> Self {
        self.kind = k;
        self
    }
    fn session(mut self, s: &str) -> Self {
        self.session_id = s.into();
        self
    }
    fn organic(mut self) -> Self {
        self.promoted = false;
        self
    }
}
