//! A real OCI registry for the tests: Debian's `docker-registry` (the CNCF
//! distribution registry, installed by `scripts/setup`) on a free loopback
//! port, storing into a temporary directory, with a generated config.yml;
//! killed on drop. Restartable on the same port and storage, so a test can
//! take it down and bring it back.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The registry binary `scripts/setup` installs.
pub const BINARY: &str = "docker-registry";

/// A running registry.
pub struct DockerRegistry {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl DockerRegistry {
    /// Starts one without authentication and waits until `/v2/` answers.
    pub fn start() -> Self {
        Self::start_with_htpasswd(None)
    }

    /// Starts one whose clients authenticate with HTTP basic against
    /// `htpasswd` (lines `user:<bcrypt hash>`), when given.
    pub fn start_with_htpasswd(htpasswd: Option<&str>) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = tempfile::tempdir().expect("temp dir");
        let auth = match htpasswd {
            Some(lines) => {
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, lines).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: oasis-test\n    path: {}\n",
                    file.display()
                )
            }
            None => String::new(),
        };
        // No blob descriptor cache: what is on disk is what is served (the
        // digest-mismatch test corrupts a blob on disk).
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let mut registry = DockerRegistry {
            port,
            dir,
            child: None,
        };
        registry.restart();
        registry
    }

    /// `127.0.0.1:<port>`, as references and `--registry-plain-http` name it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills it (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it (again) on the same port and storage.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let spawned = Command::new(BINARY)
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "{BINARY} is not installed (not found on PATH): run scripts/setup to install it"
            ),
            Err(e) => panic!("cannot start {BINARY}: {e}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if answers(self.port) {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("{BINARY} exited at startup on port {}: {status}", self.port);
            }
            assert!(
                Instant::now() < deadline,
                "{BINARY} did not answer on port {} within 15 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Where the registry keeps blob `digest` (`sha256:…`) on disk.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

/// Whether the registry answers `GET /v2/` (200, or 401 with auth on).
fn answers(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok()
        && (buf.ends_with(b"200") || buf.ends_with(b"401"))
        && buf.starts_with(b"HTTP/1.")
}

impl Drop for DockerRegistry {
    fn drop(&mut self) {
        self.kill();
    }
}
