//! The serving figures, from separate processes on loopback: `oasis serve`
//! on the bundled deployment and the native baseline server
//! (`oasis-bench native-server`), loaded by `pzn-client` (closed loop at a
//! fixed concurrency, then open loop at 50% and 80% of the closed loop's
//! peak); the server's own `timing.server_us`; its peak RSS (`VmHWM`); and
//! the startup time of 20 policies, cold and from the compile cache.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Paths and knobs of the serving runs.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Repository root.
    pub root: PathBuf,
    /// The `oasis` binary.
    pub oasis: PathBuf,
    /// The `pzn-client` binary.
    pub pzn_client: PathBuf,
    /// This binary (for `native-server`).
    pub me: PathBuf,
    /// Directory of the built example components.
    pub wasm_dir: PathBuf,
    /// Seconds per measured load run.
    pub duration: f64,
    /// Closed-loop concurrency.
    pub concurrency: usize,
    /// Scratch directory (policy directories, caches).
    pub scratch: PathBuf,
}

/// One pzn-client run's figures.
#[derive(Debug, Clone, Default)]
pub struct LoadRun {
    /// What was run, for the report.
    pub label: String,
    /// Requests per second.
    pub rps: f64,
    /// Latency p50, ms.
    pub p50_ms: f64,
    /// Latency p99, ms.
    pub p99_ms: f64,
    /// Mean `timing.server_us` reported by the server.
    pub server_us: f64,
    /// Requests that did not get a 200.
    pub failed: u64,
    /// Load average when the run started.
    pub load: String,
}

impl LoadRun {
    /// Figures from pzn-client's `--json` output.
    pub fn from_json(label: &str, load: String, v: &serde_json::Value) -> LoadRun {
        let requests = v["requests"].as_u64().unwrap_or(0);
        let ok = v["status"]["200"].as_u64().unwrap_or(0);
        LoadRun {
            label: label.into(),
            rps: v["rps"].as_f64().unwrap_or(f64::NAN),
            p50_ms: v["latency_ms"]["p50"].as_f64().unwrap_or(f64::NAN),
            p99_ms: v["latency_ms"]["p99"].as_f64().unwrap_or(f64::NAN),
            server_us: v["server_us_mean"].as_f64().unwrap_or(f64::NAN),
            failed: requests.saturating_sub(ok),
            load,
        }
    }
}

/// Everything measured over sockets.
#[derive(Debug, Default)]
pub struct Serving {
    /// Closed- and open-loop runs, Oasis and native.
    pub runs: Vec<LoadRun>,
    /// Server-reported time, Oasis, one client at a time: (transport,
    /// candidates, mean server_us).
    pub server_time: Vec<(&'static str, usize, f64)>,
    /// Peak RSS of `oasis serve` after all its load, KiB.
    pub oasis_vmhwm_kb: Option<u64>,
    /// Peak RSS of the native server, KiB.
    pub native_vmhwm_kb: Option<u64>,
    /// 20 policies ready: cold, from the cache (seconds).
    pub startup: Option<(f64, f64)>,
    /// What went wrong, if something did.
    pub problems: Vec<String>,
}

impl Serving {
    /// The run labelled `label`.
    pub fn run(&self, label: &str) -> Option<&LoadRun> {
        self.runs.iter().find(|r| r.label == label)
    }
}

/// `/proc/loadavg`'s first three fields.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// A free loopback port (bound, then released).
fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// `GET path` on `addr`: the status code, if a response came.
fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    parse_status(&buf[..n])
}

/// The status code of an HTTP/1.1 status line.
pub fn parse_status(head: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(head).ok()?;
    let mut parts = text.strip_prefix("HTTP/1.")?.split(' ');
    parts.next()?;
    parts.next()?.get(..3)?.parse().ok()
}

/// Waits until `GET /readyz` answers 200; the time it took from `since`.
fn wait_ready(
    child: &mut Child,
    addr: SocketAddr,
    since: Instant,
    limit: Duration,
) -> anyhow::Result<Duration> {
    loop {
        if http_status(addr, "/readyz") == Some(200) {
            return Ok(since.elapsed());
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("server exited before it was ready: {status}");
        }
        anyhow::ensure!(since.elapsed() < limit, "server not ready after {limit:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Peak RSS (`VmHWM`) of process `pid`, KiB.
pub fn vmhwm_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vmhwm(&status)
}

/// `VmHWM` from a `/proc/<pid>/status` text, KiB.
pub fn parse_vmhwm(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A server process that is killed when dropped.
struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A policy directory with the bundled deployment: the example manifests
/// and routes, and the built components.
fn bundled_dir(setup: &Setup) -> anyhow::Result<PathBuf> {
    let dir = setup.scratch.join("policies");
    std::fs::create_dir_all(&dir)?;
    for e in std::fs::read_dir(setup.root.join("examples/policies"))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "toml") {
            std::fs::copy(&p, dir.join(p.file_name().expect("file name")))?;
        }
    }
    for name in crate::native::POLICIES {
        let src = crate::inproc::component(&setup.wasm_dir, name);
        std::fs::copy(&src, dir.join(src.file_name().expect("file name")))?;
    }
    Ok(dir)
}

fn start_oasis(
    setup: &Setup,
    policies: &Path,
    cache: &Path,
    http: SocketAddr,
    grpc: Option<SocketAddr>,
) -> anyhow::Result<Server> {
    let mut cmd = Command::new(&setup.oasis);
    cmd.arg("serve")
        .arg("--policies")
        .arg(policies)
        .arg("--listen")
        .arg(http.to_string())
        .arg("--cache-dir")
        .arg(cache)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(g) = grpc {
        cmd.arg("--grpc-listen").arg(g.to_string());
    }
    Ok(Server {
        child: cmd.spawn()?,
    })
}

/// Runs pzn-client with `args` (plus `--json`); its JSON output.
fn pzn(setup: &Setup, args: &[String]) -> anyhow::Result<serde_json::Value> {
    let out = Command::new(&setup.pzn_client)
        .args(args)
        .arg("--json")
        .stderr(Stdio::inherit())
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "pzn-client {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn target_args(http: SocketAddr, grpc: SocketAddr, transport: &str) -> Vec<String> {
    if transport == "gRPC" {
        vec![
            "--grpc".into(),
            "--grpc-url".into(),
            format!("http://{grpc}"),
        ]
    } else {
        vec!["--url".into(), format!("http://{http}")]
    }
}

fn load_runs(
    setup: &Setup,
    who: &str,
    http: SocketAddr,
    grpc: SocketAddr,
    open_loop: bool,
    out: &mut Serving,
) {
    for transport in ["HTTP", "gRPC"] {
        let mut args = target_args(http, grpc, transport);
        args.extend([
            "--concurrency".into(),
            setup.concurrency.to_string(),
            "--duration".into(),
            setup.duration.to_string(),
            "--warmup".into(),
            "1".into(),
        ]);
        let label = format!("{who} {transport} closed loop");
        eprintln!("serving: {label}");
        let load = loadavg();
        let peak = match pzn(setup, &args) {
            Ok(v) => {
                let r = LoadRun::from_json(&label, load, &v);
                let rps = r.rps;
                out.runs.push(r);
                rps
            }
            Err(e) => {
                out.problems.push(format!("{label}: {e:#}"));
                continue;
            }
        };
        if !open_loop || peak.is_nan() || peak <= 0.0 {
            continue;
        }
        for share in [50u32, 80] {
            let rate = peak * share as f64 / 100.0;
            let mut args = target_args(http, grpc, transport);
            args.extend([
                "--rate".into(),
                format!("{rate:.1}"),
                "--duration".into(),
                setup.duration.to_string(),
                "--warmup".into(),
                "1".into(),
            ]);
            let label = format!("{who} {transport} open loop {share}%");
            eprintln!("serving: {label} ({rate:.0} req/s)");
            let load = loadavg();
            match pzn(setup, &args) {
                Ok(v) => out.runs.push(LoadRun::from_json(&label, load, &v)),
                Err(e) => out.problems.push(format!("{label}: {e:#}")),
            }
        }
    }
}

/// Runs the serving section; progress on stderr. Failures are recorded in
/// [`Serving::problems`] rather than aborting the report.
pub fn run(setup: &Setup, startup: bool) -> Serving {
    let mut out = Serving::default();
    if let Err(e) = oasis_runs(setup, &mut out) {
        out.problems.push(format!("oasis serve: {e:#}"));
    }
    if let Err(e) = native_runs(setup, &mut out) {
        out.problems.push(format!("native server: {e:#}"));
    }
    if startup {
        match startup_runs(setup) {
            Ok(s) => out.startup = Some(s),
            Err(e) => out.problems.push(format!("startup: {e:#}")),
        }
    }
    out
}

fn oasis_runs(setup: &Setup, out: &mut Serving) -> anyhow::Result<()> {
    let dir = bundled_dir(setup)?;
    let cache = setup.scratch.join("cache-serve");
    std::fs::create_dir_all(&cache)?;
    let (http, grpc) = (free_addr()?, free_addr()?);
    let mut server = start_oasis(setup, &dir, &cache, http, Some(grpc))?;
    wait_ready(
        &mut server.child,
        http,
        Instant::now(),
        Duration::from_secs(300),
    )?;
    // The server's own time, one request at a time (no queueing).
    for transport in ["JSON", "gRPC"] {
        for n in [300usize, 1000] {
            let mut args = target_args(
                http,
                grpc,
                if transport == "gRPC" { "gRPC" } else { "HTTP" },
            );
            args.extend([
                "--route".into(),
                "autoplay".into(),
                "--candidates".into(),
                n.to_string(),
                "--concurrency".into(),
                "1".into(),
                "--requests".into(),
                "300".into(),
                "--pool".into(),
                "32".into(),
            ]);
            eprintln!("serving: oasis server time, {transport}, {n} candidates");
            match pzn(setup, &args) {
                Ok(v) => out.server_time.push((
                    transport,
                    n,
                    v["server_us_mean"].as_f64().unwrap_or(f64::NAN),
                )),
                Err(e) => out
                    .problems
                    .push(format!("server time {transport} {n}: {e:#}")),
            }
        }
    }
    load_runs(setup, "oasis", http, grpc, true, out);
    out.oasis_vmhwm_kb = vmhwm_kb(server.child.id());
    Ok(())
}

fn native_runs(setup: &Setup, out: &mut Serving) -> anyhow::Result<()> {
    let (http, grpc) = (free_addr()?, free_addr()?);
    let child = Command::new(&setup.me)
        .arg("native-server")
        .arg("--root")
        .arg(&setup.root)
        .arg("--listen")
        .arg(http.to_string())
        .arg("--grpc-listen")
        .arg(grpc.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let mut server = Server { child };
    wait_ready(
        &mut server.child,
        http,
        Instant::now(),
        Duration::from_secs(30),
    )?;
    load_runs(setup, "native", http, grpc, false, out);
    out.native_vmhwm_kb = vmhwm_kb(server.child.id());
    Ok(())
}

/// Appends a custom section to a component, which changes its digest (so
/// its compile-cache key) and nothing else.
pub fn with_custom_section(component: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    fn leb(mut v: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let mut body = Vec::new();
    leb(name.len(), &mut body);
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(payload);
    let mut out = component.to_vec();
    out.push(0); // custom section id
    leb(body.len(), &mut out);
    out.extend(body);
    out
}

/// 20 policies (the six examples, each component made distinct with a
/// custom section so that all 20 compile): time to `/readyz` 200 with an
/// empty compile cache, then again from the cache.
fn startup_runs(setup: &Setup) -> anyhow::Result<(f64, f64)> {
    let dir = setup.scratch.join("policies-20");
    std::fs::create_dir_all(&dir)?;
    for i in 0..20 {
        let name = crate::native::POLICIES[i % crate::native::POLICIES.len()];
        let bytes = std::fs::read(crate::inproc::component(&setup.wasm_dir, name))?;
        let file = format!("p{i:02}.wasm");
        std::fs::write(
            dir.join(&file),
            with_custom_section(&bytes, "oasis-bench", format!("copy {i}").as_bytes()),
        )?;
        std::fs::write(
            dir.join(format!("p{i:02}.toml")),
            format!("module = \"{file}\"\n"),
        )?;
    }
    std::fs::write(dir.join("routes.toml"), "default = \"p00\"\n")?;
    let cache = setup.scratch.join("cache-startup");
    let _ = std::fs::remove_dir_all(&cache);
    std::fs::create_dir_all(&cache)?;
    let mut times = Vec::new();
    for what in ["cold", "cached"] {
        eprintln!("startup: 20 policies, {what} (load average {})", loadavg());
        let http = free_addr()?;
        let since = Instant::now();
        let mut server = start_oasis(setup, &dir, &cache, http, None)?;
        let t = wait_ready(&mut server.child, http, since, Duration::from_secs(300))?;
        times.push(t.as_secs_f64());
    }
    Ok((times[0], times[1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pzn_client_json() {
        let v = serde_json::json!({
            "requests": 100, "rps": 20.5, "status": {"200": 98, "503": 2},
            "server_us_mean": 812.0, "latency_ms": {"p50": 1.5, "p99": 4.25}
        });
        let r = LoadRun::from_json("x", "1.0".into(), &v);
        assert_eq!((r.rps, r.p50_ms, r.p99_ms, r.failed), (20.5, 1.5, 4.25, 2));
        assert_eq!(r.server_us, 812.0);
        let empty = LoadRun::from_json("x", "1.0".into(), &serde_json::json!({}));
        assert!(empty.rps.is_nan());
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.1 503 Service Unavailable"), Some(503));
        assert_eq!(parse_status(b"garbage"), None);
        assert_eq!(parse_status(b"HTTP/1.1 2"), None);
    }

    #[test]
    fn vmhwm_from_proc_status() {
        let s = "Name:\toasis\nVmPeak:\t 9000 kB\nVmHWM:\t  153600 kB\nVmRSS:\t 100 kB\n";
        assert_eq!(parse_vmhwm(s), Some(153_600));
        assert_eq!(parse_vmhwm("Name: x\n"), None);
    }

    #[test]
    fn custom_section_is_appended_with_leb128_sizes() {
        let c = with_custom_section(b"\0asm", "ab", &[1u8; 200]);
        // id 0, size 1 + 2 + 200 = 203 = 0xcb 0x01, name length 2, "ab".
        assert_eq!(&c[..8], b"\0asm\0\xcb\x01\x02");
        assert_eq!(&c[8..10], b"ab");
        assert_eq!(c.len(), 4 + 1 + 2 + 1 + 2 + 200);
    }
}
