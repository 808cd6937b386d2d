//! `oasis-bench`: the one benchmark command of issue 9 (run it through
//! `scripts/bench`). In one run it prints, on this machine:
//!
//! 1. per example policy, the policy compiled natively (its crate linked in
//!    as a library) vs the same policy as a component through
//!    `oasis::Policy::call` (an instance reset after each call), at 100, 300 and 1000
//!    candidates × 30 features, as a ratio;
//! 2. the isolation overhead alone (the baseline component on an empty
//!    slate: instantiate + call);
//! 3. end-to-end server time per request, JSON and gRPC, at 300 and 1000
//!    candidates (the server's pipeline in process, and the running server's
//!    own `timing.server_us`);
//! 4. throughput and p50/p99 over HTTP and gRPC at a fixed concurrency
//!    against `oasis serve` and against a native baseline server built from
//!    the same crates (`oasis-bench native-server`), load from `pzn-client`
//!    in a separate process, the two servers' closed loops in interleaved
//!    pairs (the median pair's ratio is the throughput figure) with each
//!    server's CPU time per request; and open-loop p99 at 50% and 80% of the
//!    peak;
//! 5. startup with 20 policies, cold and from the compile cache, and the
//!    server's peak RSS under load;
//! 6. the measurable tactics, and the targets table with pass or miss and,
//!    for each miss, the measured reason.
//!
//! In-process timer: the lowest mean of 7 rounds of ~40 ms of back-to-back
//! calls (`stats::best_mean`), not criterion.

/// The same allocator as `oasis` (host/src/main.rs), so that the native
/// baseline server differs from `oasis serve` by the policy call, not by
/// malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod engine;
mod inproc;
mod instantiation;
mod native;
mod parquet_decode;
mod server;
mod serving;
mod stats;
mod targets;

use std::fmt::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(about = "Oasis against the same policies compiled natively (issue 9)")]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Runs every measurement and prints the report (Markdown).
    Run {
        #[command(flatten)]
        serve: ServeArgs,
        /// Interleaved Oasis/native closed-loop pairs per transport (the
        /// throughput ratio is the median pair's).
        #[arg(long, default_value_t = 3)]
        pairs: usize,
        /// Skip the serving runs (in-process figures only).
        #[arg(long)]
        no_serving: bool,
        /// Skip the 20-policy startup runs.
        #[arg(long)]
        no_startup: bool,
        /// Label of the build (e.g. the git commit), printed in the header.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Where the time of a fresh instance goes, phase by phase (context,
    /// store, instantiate, empty call, drop), under the host's engine
    /// configuration and each tactic, for the baseline and guarded-boost
    /// Rust components and any Python components given; plus each
    /// component's structure (modules, memories, data, tables).
    Instantiation {
        /// Repository root.
        #[arg(long, default_value = ".")]
        root: PathBuf,
        /// Directory of the built example components (`scripts/build-policies`).
        #[arg(long)]
        wasm_dir: PathBuf,
        /// Python components to add (`scripts/build-python-policy`), as
        /// LABEL=PATH.
        #[arg(long)]
        python: Vec<String>,
        /// Only the host's configuration (no tactics).
        #[arg(long)]
        host_only: bool,
    },
    /// Decode time of a decision log's Parquet file, column by column and
    /// all at once as replay reads it (string views for the big string
    /// columns): microseconds a row, best of `rounds`.
    ParquetDecode {
        /// A `decisions-*.parquet` file.
        file: PathBuf,
        /// Rounds per measurement (the best is kept).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// Server CPU per request under the closed loop, two servers side by
    /// side in interleaved pairs: an `oasis` build against another one
    /// (`--against`) or against the native server (the A/B of a serving
    /// change; run it through `scripts/serve-cpu`).
    ServeCpu {
        #[command(flatten)]
        serve: ServeArgs,
        /// A second `oasis` binary (B) to measure `--oasis` (A) against;
        /// the native server when absent.
        #[arg(long)]
        against: Option<PathBuf>,
        /// Pairs per transport.
        #[arg(long, default_value_t = 5)]
        pairs: usize,
        /// Only this transport (`http` or `grpc`); both by default.
        #[arg(long)]
        transport: Option<String>,
    },
    /// Serves the bundled routes with the policies called natively (the
    /// serving ceiling) until killed.
    NativeServer {
        /// Repository root.
        #[arg(long, default_value = ".")]
        root: PathBuf,
        /// HTTP listen address.
        #[arg(long, default_value = "127.0.0.1:18180")]
        listen: SocketAddr,
        /// gRPC listen address.
        #[arg(long, default_value = "127.0.0.1:18151")]
        grpc_listen: SocketAddr,
    },
}

/// What the serving runs start and how they load it (`run`, `serve-cpu`).
#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Repository root.
    #[arg(long, default_value = ".")]
    root: PathBuf,
    /// The `oasis` binary (release build; A of `serve-cpu`).
    #[arg(long)]
    oasis: PathBuf,
    /// The `pzn-client` binary (release build).
    #[arg(long)]
    pzn_client: PathBuf,
    /// Directory of the built example components (`scripts/build-policies`).
    #[arg(long)]
    wasm_dir: PathBuf,
    /// Seconds per measured load run.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Closed-loop concurrency.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
}

impl ServeArgs {
    /// The serving runs' setup, with `pairs` pairs and `scratch` space.
    fn setup(self, pairs: usize, scratch: PathBuf) -> anyhow::Result<serving::Setup> {
        Ok(serving::Setup {
            root: self.root,
            oasis: self.oasis,
            pzn_client: self.pzn_client,
            me: std::env::current_exe()?,
            wasm_dir: self.wasm_dir,
            duration: self.duration,
            concurrency: self.concurrency,
            pairs,
            scratch,
        })
    }
}

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Cmd::Instantiation {
            root,
            wasm_dir,
            python,
            host_only,
        } => {
            let load = serving::loadavg();
            print!(
                "{}",
                inproc::instantiation(&root, &wasm_dir, &python, host_only)?
            );
            println!(
                "\nLoad average (1, 5, 15 min) at start {load}, at the end {}.",
                serving::loadavg()
            );
            Ok(())
        }
        Cmd::ServeCpu {
            serve,
            against,
            pairs,
            transport,
        } => {
            let transports: &[&'static str] = match transport.as_deref() {
                None => &["HTTP", "gRPC"],
                Some("http") => &["HTTP"],
                Some("grpc") => &["gRPC"],
                Some(other) => anyhow::bail!("--transport {other}: expected http or grpc"),
            };
            let scratch = tempdir()?;
            let report = serving::serve_cpu(
                &serve.setup(pairs, scratch.clone())?,
                against.as_deref(),
                transports,
            );
            let _ = std::fs::remove_dir_all(&scratch);
            print!("{}", report?);
            Ok(())
        }
        Cmd::ParquetDecode { file, rounds } => {
            print!("{}", parquet_decode::report(&file, rounds.max(1))?);
            Ok(())
        }
        Cmd::NativeServer {
            root,
            listen,
            grpc_listen,
        } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(server::serve(&root, listen, grpc_listen)),
        Cmd::Run {
            serve,
            pairs,
            no_serving,
            no_startup,
            label,
        } => {
            let started = Instant::now();
            let load_start = serving::loadavg();
            let inproc = inproc::run(&serve.root, &serve.wasm_dir, false)?;
            let load_inproc = serving::loadavg();
            let (concurrency, duration) = (serve.concurrency, serve.duration);
            let scratch = tempdir()?;
            let serving = if no_serving {
                None
            } else {
                Some(serving::run(
                    &serve.setup(pairs, scratch.clone())?,
                    !no_startup,
                ))
            };
            let _ = std::fs::remove_dir_all(&scratch);
            print!(
                "{}",
                report(
                    &label,
                    &load_start,
                    &load_inproc,
                    concurrency,
                    duration,
                    &inproc,
                    serving.as_ref(),
                    started.elapsed().as_secs_f64()
                )
            );
            Ok(())
        }
    }
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("oasis-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn f(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1}")
    } else {
        "-".into()
    }
}

#[allow(
    clippy::too_many_arguments,
    reason = "one report row per argument, each a measured figure"
)]
fn report(
    label: &str,
    load_start: &str,
    load_inproc: &str,
    concurrency: usize,
    duration: f64,
    ip: &inproc::InProc,
    sv: Option<&serving::Serving>,
    elapsed_s: f64,
) -> String {
    let mut s = String::new();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let _ = writeln!(s, "# oasis-bench {label}\n");
    let _ = writeln!(
        s,
        "{cores} cores; load average (1, 5, 15 min) at start {load_start}, after the in-process \
         section {load_inproc}, at the end {}; {elapsed_s:.0} s in all.\n",
        serving::loadavg()
    );

    let _ = writeln!(
        s,
        "## 1. Policy call in process: native vs component ({} features per candidate)\n",
        inproc::FEATURES
    );
    let _ = writeln!(
        s,
        "native = the policy crate as a Rust library on the columnar request the host sends \
         (copied into the SDK's types) + the contract's output check; component = \
         `oasis::Policy::call` (an instance reset after its last call + lift + score + checks). \
         Best mean of 7 rounds.\n"
    );
    let _ = writeln!(
        s,
        "| policy | candidates | native | component | ratio | component - native | component single calls p50 / p99 | same decisions |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---|");
    for r in &ip.calls {
        let _ = writeln!(
            s,
            "| {} | {} | {} us | {} us | {:.1}x | {} us | {} / {} us | {} |",
            r.policy,
            r.n,
            f(r.native_us),
            f(r.wasm_us),
            r.wasm_us / r.native_us,
            f(r.wasm_us - r.native_us),
            f(r.wasm_p50_us),
            f(r.wasm_p99_us),
            if r.same { "yes" } else { "NO" }
        );
    }

    let _ = writeln!(
        s,
        "\n## 2. Isolation overhead\n\nbaseline component on an empty slate (an instance in its \
         state after instantiation, reset after its last call as `oasis serve` runs them, + empty \
         call + checks): {} us; on a fresh instance per call (`--fresh-instances`): {} us; the \
         same natively: {:.2} us.\n",
        f(ip.isolation_us),
        f(ip.fresh_isolation_us),
        ip.native_empty_us
    );

    let _ = writeln!(
        s,
        "## 3. End-to-end server time per request (guarded-boost)\n"
    );
    let _ = writeln!(
        s,
        "In process: decode (JSON parse / protobuf read in place) → validate → columnar \
         batch → call → encoded response, the server's own functions. Server-reported: mean \
         `timing.server_us` of `oasis serve`, one request at a time (pzn-client requests, 6 \
         features; both clocks start once the request's bytes are read, before decoding).\n"
    );
    let _ = writeln!(
        s,
        "| transport | candidates | decode + validate | policy call | end to end | same with native call | server-reported |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
    for r in &ip.e2e {
        let reported = sv
            .and_then(|sv| {
                sv.server_time
                    .iter()
                    .find(|(t, n, _)| *t == r.transport && *n == r.n)
            })
            .map_or("-".to_string(), |(_, _, us)| format!("{} us", f(*us)));
        let _ = writeln!(
            s,
            "| {} | {} | {} us | {} us | {} us | {} us | {} |",
            r.transport,
            r.n,
            f(r.decode_us),
            f(r.call_us),
            f(r.total_us),
            f(r.native_total_us),
            reported
        );
    }

    if let Some(sv) = sv {
        let _ = writeln!(
            s,
            "\n## 4. Serving: throughput and latency over loopback\n\n`pzn-client` (separate \
             process, same 2 cores) against `oasis serve` on the bundled deployment and against \
             the native baseline server (`oasis-bench native-server`: same parsing, validation, \
             batch and encoding, policy called natively, no chain/metrics/logs). 300 candidates, \
             the five routes in rotation, closed loop at concurrency {concurrency}, {duration} s \
             after a 1 s warm-up run, in interleaved Oasis/native pairs (both servers up, who \
             goes first alternating); open loop at 50% and 80% of Oasis's median closed-loop \
             rate, latency from the scheduled send time. Server CPU = the server process's \
             user + system time over the measured run (`/proc/<pid>/stat`) per request.\n"
        );
        let _ = writeln!(
            s,
            "| run | req/s | p50 | p99 | server-reported mean | server CPU / request | non-200 | load average at start |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---|");
        for r in &sv.runs {
            let _ = writeln!(
                s,
                "| {} | {:.0} | {:.2} ms | {:.2} ms | {} us | {} | {} | {} |",
                r.label,
                r.rps,
                r.p50_ms,
                r.p99_ms,
                f(r.server_us),
                if r.server_cpu_us.is_finite() {
                    format!("{} us", f(r.server_cpu_us))
                } else {
                    "-".into()
                },
                r.failed,
                r.load
            );
        }
        for transport in ["HTTP", "gRPC"] {
            if let Some((pairs, median)) = sv.median_pair(transport) {
                let ratios: Vec<String> = pairs
                    .iter()
                    .map(|p| format!("{:.0}%", 100.0 * p.ratio()))
                    .collect();
                let _ = writeln!(
                    s,
                    "\n{transport} pairs, Oasis / native req/s: {} (median {:.0}%).",
                    ratios.join(", "),
                    100.0 * median.ratio()
                );
            }
        }
        let _ = writeln!(s, "\n## 5. Startup and memory\n");
        match sv.startup {
            Some((cold, cached)) => {
                let _ = writeln!(
                    s,
                    "20 policies (the six examples, each copy made distinct so that each \
                     compiles), process start to `/readyz` 200: cold (empty compile cache) \
                     {cold:.2} s, from the cache {cached:.2} s."
                );
            }
            None => {
                let _ = writeln!(s, "Startup not measured in this run.");
            }
        }
        let kb =
            |v: Option<u64>| v.map_or("-".to_string(), |k| format!("{:.0} MiB", k as f64 / 1024.0));
        let _ = writeln!(
            s,
            "Peak RSS (VmHWM) after all the load above: `oasis serve` {}, native server {}.",
            kb(sv.oasis_vmhwm_kb),
            kb(sv.native_vmhwm_kb)
        );
        for p in &sv.problems {
            let _ = writeln!(s, "\nProblem: {p}");
        }
    }

    let _ = writeln!(s, "\n## Tactics measured in process\n\n{}", ip.tactics);

    let _ = writeln!(s, "## Targets\n");
    let (table, pass) = targets::render(&evaluate(ip, sv));
    let total = table.lines().count() - 2;
    let _ = writeln!(s, "{table}\n{pass} of {total} targets met.");
    s
}

fn evaluate(ip: &inproc::InProc, sv: Option<&serving::Serving>) -> Vec<targets::Target> {
    use targets::*;
    let mut t = Vec::new();
    for r in ip.calls.iter().filter(|r| r.n == 1000) {
        t.push(policy_call(
            &r.policy,
            r.native_us,
            r.wasm_us,
            ip.isolation_us,
        ));
    }
    t.push(isolation(ip.isolation_us, ip.native_empty_us));
    for (transport, limit) in [("gRPC", GRPC_END_TO_END_US), ("JSON", JSON_END_TO_END_US)] {
        match ip
            .e2e
            .iter()
            .find(|r| r.transport == transport && r.n == 1000)
        {
            Some(r) => t.push(end_to_end(
                transport,
                r.total_us,
                limit,
                r.decode_us,
                r.call_us,
            )),
            None => t.push(Target::not_measured(
                transport,
                format!("<= {limit} us"),
                "no 1000-candidate run".into(),
            )),
        }
    }
    let Some(sv) = sv else {
        t.push(Target::not_measured(
            "serving targets",
            "-".into(),
            "--no-serving".into(),
        ));
        return t;
    };
    for transport in ["HTTP", "gRPC"] {
        match sv.median_pair(transport) {
            Some((pairs, median)) => {
                let (o, n) = (&median.a, &median.b);
                let all: Vec<String> = pairs
                    .iter()
                    .map(|p| format!("{:.0}%", 100.0 * p.ratio()))
                    .collect();
                t.push(throughput(
                    transport,
                    o.rps,
                    n.rps,
                    format!(
                        "median of {} interleaved pairs ({}); in that pair the server's CPU per \
                         request was {} us (Oasis) vs {} us (native), its reported time {} vs \
                         {} us: the difference is the component call (instance reset, copy in, \
                         wasm) plus the chain, metrics and logs, on 2 cores shared with the \
                         client (load average {})",
                        pairs.len(),
                        all.join(", "),
                        f(o.server_cpu_us),
                        f(n.server_cpu_us),
                        f(o.server_us),
                        f(n.server_us),
                        o.load
                    ),
                ))
            }
            None => t.push(Target::not_measured(
                &format!("{transport} throughput vs native server"),
                throughput_goal(),
                "a load run failed (see Problems)".into(),
            )),
        }
    }
    for transport in ["HTTP", "gRPC"] {
        let peak = sv.median_pair(transport).map(|(_, m)| &m.a);
        match (sv.run(&format!("oasis {transport} open loop 80%")), peak) {
            (Some(r), Some(peak)) => t.push(p99_at_80(
                transport,
                r.rps,
                r.p99_ms,
                format!(
                    "p50 {:.2} ms, server-reported mean {} us: the tail is queueing for CPU \
                     (client and server on the same 2 cores at 80% of a CPU-bound peak of \
                     {:.0} req/s; load average {})",
                    r.p50_ms,
                    f(r.server_us),
                    peak.rps,
                    r.load
                ),
            )),
            _ => t.push(Target::not_measured(
                &format!("{transport} p99 at 80% of peak"),
                "<= 2 ms".into(),
                "no open-loop run".into(),
            )),
        }
    }
    match sv.startup {
        Some((cold, cached)) => t.push(startup(cached, cold)),
        None => t.push(Target::not_measured(
            "20 policies ready from the cache",
            "<= 1 s".into(),
            "not run".into(),
        )),
    }
    t
}
