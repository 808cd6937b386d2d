//! The serving figures, from separate processes on loopback: `oasis serve`
//! on the bundled deployment and the native baseline server
//! (`oasis-bench native-server`), loaded by `pzn-client` (closed loop at a
//! fixed concurrency, then open loop at 50% and 80% of the closed loop's
//! peak); the server's own `timing.server_us` and its CPU time per request
//! (from `/proc`); its peak RSS (`VmHWM`); and the startup time of 20
//! policies, cold and from the compile cache.
//!
//! **Throughput in interleaved pairs.** Both servers run side by side (an
//! idle server costs nothing) and the closed loops alternate: Oasis then
//! native, native then Oasis, and so on, `pairs` times per transport. This
//! machine's speed drifts by tens of percent within minutes (a shared VM),
//! so two runs minutes apart compare the drift as much as the servers; the
//! ratio of each pair is taken and the median pair reported, every pair
//! beside it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::stats;

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
    /// Interleaved Oasis/native closed-loop pairs per transport.
    pub pairs: usize,
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
    /// Requests sent in the measured run.
    pub requests: u64,
    /// The server process's CPU time (user + system) per request over the
    /// measured run, µs; NaN when not read.
    pub server_cpu_us: f64,
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
            requests,
            server_cpu_us: f64::NAN,
            load,
        }
    }
}

/// One interleaved closed-loop pair ([module docs](self)).
#[derive(Debug, Clone)]
pub struct Pair {
    /// "HTTP" or "gRPC".
    pub transport: &'static str,
    /// The run of the Oasis build measured.
    pub a: LoadRun,
    /// The run of what it is compared with: the native server (or, in
    /// [`serve_cpu`], possibly another Oasis build).
    pub b: LoadRun,
}

impl Pair {
    /// A's throughput as a share of B's.
    pub fn ratio(&self) -> f64 {
        self.a.rps / self.b.rps
    }
}

/// Everything measured over sockets.
#[derive(Debug, Default)]
pub struct Serving {
    /// Closed- and open-loop runs, Oasis and native, in the order run.
    pub runs: Vec<LoadRun>,
    /// The closed-loop runs as interleaved pairs.
    pub pairs: Vec<Pair>,
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

    /// `transport`'s pairs, and the one whose ratio is the median (the
    /// lower middle one of an even count).
    pub fn median_pair(&self, transport: &str) -> Option<(Vec<&Pair>, &Pair)> {
        let pairs: Vec<&Pair> = self
            .pairs
            .iter()
            .filter(|p| p.transport == transport && p.ratio().is_finite())
            .collect();
        let mut sorted = pairs.clone();
        sorted.sort_by(|a, b| a.ratio().total_cmp(&b.ratio()));
        let median = stats::percentile(&sorted, 0.5)?;
        Some((pairs, median))
    }
}

/// Linux's `USER_HZ`: the unit of `/proc/<pid>/stat`'s CPU times (100 on
/// every architecture Linux builds for today).
const USER_HZ: f64 = 100.0;

/// CPU time (user + system) process `pid` has used so far, seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(parse_cpu_ticks(&stat)? as f64 / USER_HZ)
}

/// `utime + stime` (fields 14 and 15) of a `/proc/<pid>/stat` line, in
/// clock ticks. The command name (field 2) is in parentheses and may hold
/// spaces or parentheses itself, so the fields are counted from its last
/// `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11); // field 3 is the first after ')'
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
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
fn bundled_dir(setup: &Setup, name: &str) -> anyhow::Result<PathBuf> {
    let dir = setup.scratch.join(name);
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
    binary: &Path,
    policies: &Path,
    cache: &Path,
    http: SocketAddr,
    grpc: Option<SocketAddr>,
) -> anyhow::Result<Server> {
    let mut cmd = Command::new(binary);
    cmd.arg("serve")
        .arg("--policies")
        .arg(policies)
        .arg("--listen")
        .arg(http.to_string())
        .arg("--cache-dir")
        .arg(cache)
        // The server's default log level (`info`), as deployed: the
        // `score` span's fields are part of what a request costs.
        // (`oasis` reads `OASIS_LOG`, not `RUST_LOG`.)
        .env_remove("OASIS_LOG")
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

/// One closed-loop run of `args` against the server `pid`: a 1-second
/// warm-up run first (not measured), then the measured run, with the
/// server's CPU time per request read from `/proc` around it.
fn closed_loop(setup: &Setup, label: &str, pid: u32, args: &[String]) -> anyhow::Result<LoadRun> {
    let mut warm = args.to_vec();
    warm.extend([
        "--concurrency".into(),
        setup.concurrency.to_string(),
        "--duration".into(),
        "1".into(),
    ]);
    pzn(setup, &warm)?;
    let mut args = args.to_vec();
    args.extend([
        "--concurrency".into(),
        setup.concurrency.to_string(),
        "--duration".into(),
        setup.duration.to_string(),
    ]);
    eprintln!("serving: {label}");
    let load = loadavg();
    let before = cpu_seconds(pid);
    let v = pzn(setup, &args)?;
    let after = cpu_seconds(pid);
    let mut run = LoadRun::from_json(label, load, &v);
    if let (Some(a), Some(b)) = (before, after)
        && run.requests > 0
    {
        run.server_cpu_us = (b - a) * 1e6 / run.requests as f64;
    }
    Ok(run)
}

/// What [`interleaved`] measured: every run in the order run, the pairs
/// both of whose runs succeeded, and the runs that failed.
#[derive(Debug, Default)]
struct Interleaved {
    runs: Vec<LoadRun>,
    pairs: Vec<Pair>,
    problems: Vec<String>,
}

/// The interleaved closed-loop pairs ([module docs](self)): `setup.pairs`
/// rounds over `transports`, A (`a`, named `a_name` in the labels) against
/// B, who goes first alternating from round to round so that a drift
/// within a pair favours neither side over the rounds.
fn interleaved(
    setup: &Setup,
    (a_name, a): (&str, &Endpoints),
    (b_name, b): (&str, &Endpoints),
    transports: &[&'static str],
) -> Interleaved {
    let mut out = Interleaved::default();
    for round in 0..setup.pairs.max(1) {
        for &transport in transports {
            let order = if round % 2 == 0 {
                [(a_name, a, 0), (b_name, b, 1)]
            } else {
                [(b_name, b, 1), (a_name, a, 0)]
            };
            let mut runs: [Option<LoadRun>; 2] = [None, None];
            for (name, ep, side) in order {
                let label = format!("{name} {transport} closed loop, pair {}", round + 1);
                let args = target_args(ep.http, ep.grpc, transport);
                match closed_loop(setup, &label, ep.pid, &args) {
                    Ok(r) => {
                        out.runs.push(r.clone());
                        runs[side] = Some(r);
                    }
                    Err(e) => out.problems.push(format!("{label}: {e:#}")),
                }
            }
            if let [Some(a), Some(b)] = runs {
                out.pairs.push(Pair { transport, a, b });
            }
        }
    }
    out
}

/// `scripts/bench`'s pairs: Oasis against the native server, both
/// transports.
fn paired_runs(setup: &Setup, oasis: &Endpoints, native: &Endpoints, out: &mut Serving) {
    let i = interleaved(
        setup,
        ("oasis", oasis),
        ("native", native),
        &["HTTP", "gRPC"],
    );
    out.runs.extend(i.runs);
    out.pairs.extend(i.pairs);
    out.problems.extend(i.problems);
}

/// Oasis's open loops at 50% and 80% of its median closed-loop rate.
fn open_loops(setup: &Setup, oasis: &Endpoints, out: &mut Serving) {
    for transport in ["HTTP", "gRPC"] {
        let Some((_, median)) = out.median_pair(transport) else {
            continue;
        };
        let peak = median.a.rps;
        if !peak.is_finite() || peak <= 0.0 {
            continue;
        }
        for share in [50u32, 80] {
            let rate = peak * share as f64 / 100.0;
            let mut args = target_args(oasis.http, oasis.grpc, transport);
            args.extend([
                "--rate".into(),
                format!("{rate:.1}"),
                "--duration".into(),
                setup.duration.to_string(),
                "--warmup".into(),
                "1".into(),
            ]);
            let label = format!("oasis {transport} open loop {share}%");
            eprintln!("serving: {label} ({rate:.0} req/s)");
            let load = loadavg();
            match pzn(setup, &args) {
                Ok(v) => out.runs.push(LoadRun::from_json(&label, load, &v)),
                Err(e) => out.problems.push(format!("{label}: {e:#}")),
            }
        }
    }
}

/// A running server's addresses and process id.
struct Endpoints {
    http: SocketAddr,
    grpc: SocketAddr,
    pid: u32,
}

/// Runs the serving section; progress on stderr. Failures are recorded in
/// [`Serving::problems`] rather than aborting the report.
pub fn run(setup: &Setup, startup: bool) -> Serving {
    let mut out = Serving::default();
    if let Err(e) = both_servers(setup, &mut out) {
        out.problems.push(format!("serving: {e:#}"));
    }
    if startup {
        match startup_runs(setup) {
            Ok(s) => out.startup = Some(s),
            Err(e) => out.problems.push(format!("startup: {e:#}")),
        }
    }
    out
}

/// Starts `oasis serve` on the bundled deployment and the native server,
/// then runs Oasis's one-at-a-time server times, the interleaved pairs and
/// Oasis's open loops; both servers' peak RSS at the end.
fn both_servers(setup: &Setup, out: &mut Serving) -> anyhow::Result<()> {
    let dir = bundled_dir(setup, "policies")?;
    let cache = setup.scratch.join("cache-serve");
    std::fs::create_dir_all(&cache)?;
    let (_oasis, oasis_ep) = ready_oasis(&setup.oasis, &dir, &cache)?;
    server_times(setup, &oasis_ep, out);

    let (_native, native_ep) = start_native(setup)?;

    paired_runs(setup, &oasis_ep, &native_ep, out);
    open_loops(setup, &oasis_ep, out);
    out.oasis_vmhwm_kb = vmhwm_kb(oasis_ep.pid);
    out.native_vmhwm_kb = vmhwm_kb(native_ep.pid);
    Ok(())
}

/// `binary serve` on `policies`, ready; killed when the [`Server`] drops.
fn ready_oasis(
    binary: &Path,
    policies: &Path,
    cache: &Path,
) -> anyhow::Result<(Server, Endpoints)> {
    let (http, grpc) = (free_addr()?, free_addr()?);
    let server = start_oasis(binary, policies, cache, http, Some(grpc))?;
    // Compiling the bundled policies cold takes a while on 2 cores.
    ready(server, http, grpc, Duration::from_secs(300))
}

/// `server` (listening on `http` and `grpc`) once `/readyz` answers 200,
/// within `limit`.
fn ready(
    mut server: Server,
    http: SocketAddr,
    grpc: SocketAddr,
    limit: Duration,
) -> anyhow::Result<(Server, Endpoints)> {
    wait_ready(&mut server.child, http, Instant::now(), limit)?;
    let pid = server.child.id();
    Ok((server, Endpoints { http, grpc, pid }))
}

/// The native baseline server, ready; killed when the [`Server`] drops.
fn start_native(setup: &Setup) -> anyhow::Result<(Server, Endpoints)> {
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
    ready(Server { child }, http, grpc, Duration::from_secs(30))
}

/// `oasis-bench serve-cpu`: the closed loop against two servers side by
/// side, interleaved as in [`run`]'s pairs — `setup.oasis` (A) against a
/// second `oasis` build (`against`) or, without one, the native server
/// (B) — `setup.pairs` pairs per transport. The Markdown report has every
/// run's req/s and server CPU per request, and per transport the medians
/// and the median pair's ratios: an A/B of a change to the serving path in
/// one command, on a machine whose speed drifts between runs.
pub fn serve_cpu(
    setup: &Setup,
    against: Option<&Path>,
    transports: &[&'static str],
) -> anyhow::Result<String> {
    use std::fmt::Write as _;
    // Each server its own copy: a policy directory is served by one
    // server at a time (it takes the directory's lock).
    let (_a, a) = ready_oasis(
        &setup.oasis,
        &bundled_dir(setup, "policies-a")?,
        &setup.scratch.join("cache-a"),
    )?;
    let (_b, b) = match against {
        Some(bin) => ready_oasis(
            bin,
            &bundled_dir(setup, "policies-b")?,
            &setup.scratch.join("cache-b"),
        )?,
        None => start_native(setup)?,
    };
    let b_name = match against {
        Some(bin) => bin.display().to_string(),
        None => "native server".into(),
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "A = {}, B = {b_name}; bundled deployment, 300 candidates, closed loop at concurrency \
         {}, {} s per run after a 1 s warm-up run; load average at start {}.\n",
        setup.oasis.display(),
        setup.concurrency,
        setup.duration,
        loadavg()
    );
    let _ = writeln!(
        s,
        "| run | req/s | server CPU / request | p50 | p99 | non-200 |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
    let measured = interleaved(setup, ("A", &a), ("B", &b), transports);
    for r in &measured.runs {
        let _ = writeln!(
            s,
            "| {} | {:.0} | {:.1} us | {:.2} ms | {:.2} ms | {} |",
            r.label, r.rps, r.server_cpu_us, r.p50_ms, r.p99_ms, r.failed
        );
    }
    let _ = writeln!(s);
    for &transport in transports {
        let mine: Vec<&Pair> = measured
            .pairs
            .iter()
            .filter(|p| p.transport == transport)
            .collect();
        let cpu_a = stats::median(mine.iter().map(|p| p.a.server_cpu_us).collect());
        let cpu_b = stats::median(mine.iter().map(|p| p.b.server_cpu_us).collect());
        let cpu = stats::median(
            mine.iter()
                .map(|p| p.a.server_cpu_us / p.b.server_cpu_us)
                .collect(),
        );
        let rps = stats::median(mine.iter().map(|p| p.ratio()).collect());
        let _ = writeln!(
            s,
            "{transport}: server CPU per request, median A {cpu_a:.1} us, B {cpu_b:.1} us; \
             median of the pairs' A/B ratios: CPU {:.1}%, req/s {:.1}%.",
            100.0 * cpu,
            100.0 * rps
        );
    }
    for p in &measured.problems {
        let _ = writeln!(s, "\nProblem: {p}");
    }
    anyhow::ensure!(
        !measured.pairs.is_empty(),
        "no pair was measured:\n{}",
        measured.problems.join("\n")
    );
    Ok(s)
}

/// The server's own time, one request at a time (no queueing).
fn server_times(setup: &Setup, oasis: &Endpoints, out: &mut Serving) {
    for transport in ["JSON", "gRPC"] {
        for n in [300usize, 1000] {
            let mut args = target_args(
                oasis.http,
                oasis.grpc,
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
        let mut server = start_oasis(&setup.oasis, &dir, &cache, http, None)?;
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
    fn cpu_ticks_from_proc_stat() {
        // A command name with a space and a parenthesis: fields are counted
        // from the last ')'.
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 1200 0 3 0 \
                    1234 56 0 0 20 0 9 0 100 1000000 2000 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(1234 + 56));
        assert_eq!(parse_cpu_ticks("4242 (x) S 1 2"), None);
        let me = cpu_seconds(std::process::id()).expect("this process's stat");
        assert!(me >= 0.0);
    }

    #[test]
    fn the_median_pair_is_the_middle_ratio() {
        let run = |rps: f64| LoadRun {
            rps,
            ..LoadRun::default()
        };
        let pair = |transport, a, b| Pair {
            transport,
            a: run(a),
            b: run(b),
        };
        let sv = Serving {
            pairs: vec![
                pair("HTTP", 90.0, 100.0),
                pair("HTTP", 70.0, 100.0),
                pair("gRPC", 10.0, 100.0),
                pair("HTTP", 85.0, 100.0),
                pair("HTTP", 1.0, 0.0),
            ],
            ..Serving::default()
        };
        let (all, median) = sv.median_pair("HTTP").unwrap();
        // The pair with no native throughput (an infinite ratio) is left out.
        assert_eq!(all.len(), 3);
        assert_eq!(median.a.rps, 85.0);
        let (_, g) = sv.median_pair("gRPC").unwrap();
        assert_eq!(g.a.rps, 10.0);
        assert!(sv.median_pair("HTTP/3").is_none());
        let even = Serving {
            pairs: vec![pair("HTTP", 90.0, 100.0), pair("HTTP", 80.0, 100.0)],
            ..Serving::default()
        };
        assert_eq!(even.median_pair("HTTP").unwrap().1.a.rps, 80.0);
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
