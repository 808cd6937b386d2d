//! What a Python policy costs next to a Rust one (docs/python.md, "Policies in
//! Python"): per policy, cold compile + load, load from the compile cache,
//! and the median of 31 calls (lift + score + checks) at 1, 300 and 1000
//! candidates, each on a fresh instance (the default) and with instance
//! reuse (`reuse_instance_calls`, the median call then runs on a warm
//! instance). The difference between the two is what instantiating a fresh
//! instance costs.
//!
//! ```text
//! cargo bench -p oasis-host --bench python_cost
//! ```
//!
//! With `OASIS_BENCH_AB=before.wasm,after.wasm` it measures only those
//! two, interleaved on fresh instances (p50 and p99; see [`ab`]).
//!
//! It builds the Python examples with `scripts/build-python-policy` (which
//! needs the virtual environment `scripts/setup-python` makes). A measurement, not
//! a test: nothing here asserts a speed.

use std::process::Command;
use std::time::{Duration, Instant};

use oasis::request::{self, Validate};
use oasis::{Limits, Policy, Runtime, RuntimeConfig};
use oasis_test_components::{EPSILON_GREEDY, GUARDED_BOOST, ROOT};

/// Builds a Python policy package to a component; its path.
fn build(dir: &str) -> String {
    let setup = Command::new(format!("{ROOT}/scripts/setup-python"))
        .status()
        .expect("cannot run scripts/setup-python");
    assert!(setup.success(), "scripts/setup-python failed");
    let out = Command::new(format!("{ROOT}/scripts/build-python-policy"))
        .arg(format!("{ROOT}/{dir}"))
        .output()
        .expect("cannot run scripts/build-python-policy");
    assert!(
        out.status.success(),
        "building {dir} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The bundled request with `n` candidates (cycled, renamed).
fn example(n: usize) -> Vec<u8> {
    let body = std::fs::read(format!("{ROOT}/examples/request.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let base = v["candidates"].as_array().unwrap().clone();
    let cands: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let mut c = base[i % base.len()].clone();
            c["id"] = format!("track-{i}").into();
            c
        })
        .collect();
    v["candidates"] = cands.into();
    serde_json::to_vec(&v).unwrap()
}

/// Median wall time of `runs` calls of `f`, after 3 warm-up calls.
fn median(runs: usize, mut f: impl FnMut()) -> Duration {
    for _ in 0..3 {
        f();
    }
    let mut t: Vec<_> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed()
        })
        .collect();
    t.sort();
    t[runs / 2]
}

/// Instance reuse for the reuse-mode rows (`[limits] reuse_instance_calls`).
const REUSE: u32 = 1000;

/// Fresh-instance calls of two components interleaved (A, B, A, B, ...),
/// so that both see the same machine load: p50 and p99 of `runs` calls
/// each at 1, 300 and 1000 candidates. For a before/after of one policy
/// built two ways: `OASIS_BENCH_AB=before.wasm,after.wasm`.
fn ab(a: &str, b: &str, runs: usize) {
    let cache = tempfile::tempdir().unwrap();
    let rt = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        measure_fuel: false,
        max_instances: 8,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let limits = Limits {
        deadline: Duration::from_secs(5),
        ..Limits::default()
    };
    let pa = Policy::load_file(&rt, a.as_ref(), "{}", limits).unwrap();
    let pb = Policy::load_file(&rt, b.as_ref(), "{}", limits).unwrap();
    let ms = |d: Duration| format!("{:.3} ms", d.as_secs_f64() * 1e3);
    println!("| component | contract | candidates | p50 | p99 | calls |");
    println!("|---|---|---|---|---|---|");
    for n in [1usize, 300, 1000] {
        let body = example(n);
        let req = request::parse(&body).unwrap().validate(10_000).unwrap();
        let (ba, bb) = (pa.batch(&req), pb.batch(&req));
        let mut times = [Vec::with_capacity(runs), Vec::with_capacity(runs)];
        for i in 0..runs + 3 {
            for (k, (p, batch)) in [(&pa, &ba), (&pb, &bb)].into_iter().enumerate() {
                let s = Instant::now();
                p.call(batch).unwrap();
                if i >= 3 {
                    times[k].push(s.elapsed());
                }
            }
        }
        for (k, (path, p)) in [(a, &pa), (b, &pb)].into_iter().enumerate() {
            let t = &mut times[k];
            t.sort();
            println!(
                "| {path} | {} | {n} | {} | {} | {runs} |",
                p.info().contract,
                ms(t[runs / 2]),
                ms(t[runs * 99 / 100]),
            );
        }
    }
}

fn main() {
    if let Ok(pair) = std::env::var("OASIS_BENCH_AB") {
        let (a, b) = pair
            .split_once(',')
            .expect("OASIS_BENCH_AB=before.wasm,after.wasm");
        return ab(a, b, 301);
    }
    let py_gb = build("policies-python/guarded_boost");
    let py_bandit = build("policies-python/softmax_bandit");
    let mut policies = vec![
        ("guarded_boost (Python)", py_gb.as_str()),
        ("softmax_bandit (Python)", py_bandit.as_str()),
        ("guarded-boost (Rust)", GUARDED_BOOST),
        ("epsilon-greedy (Rust)", EPSILON_GREEDY),
    ];
    // Any other component to compare, e.g. a passthrough to separate the
    // boundary's cost from the policy's: OASIS_BENCH_EXTRA=a.wasm,b.wasm
    let extra = std::env::var("OASIS_BENCH_EXTRA").unwrap_or_default();
    policies.extend(extra.split(',').filter(|p| !p.is_empty()).map(|p| (p, p)));
    let fresh = Limits {
        deadline: Duration::from_secs(5),
        ..Limits::default()
    };
    let reuse = Limits {
        reuse_instance_calls: REUSE,
        ..fresh
    };
    let bodies: Vec<(usize, Vec<u8>)> = [1usize, 300, 1000]
        .into_iter()
        .map(|n| (n, example(n)))
        .collect();
    println!(
        "| policy | cold compile + load | load from cache | mode | call, 1 candidate | call, 300 | call, 1000 |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, path) in policies {
        let cache = tempfile::tempdir().unwrap();
        let rt = || {
            Runtime::new(RuntimeConfig {
                cache_dir: Some(cache.path().to_path_buf()),
                measure_fuel: false,
                max_instances: 8,
                ..RuntimeConfig::default()
            })
            .unwrap()
        };
        let cold_rt = rt();
        let s = Instant::now();
        drop(Policy::load_file(&cold_rt, path.as_ref(), "{}", fresh).unwrap());
        let cold = s.elapsed();
        let warm_rt = rt();
        let ms = |d: Duration| format!("{:.3} ms", d.as_secs_f64() * 1e3);
        let mut per_mode = Vec::new();
        for (mode, limits) in [("fresh instance", fresh), ("reuse", reuse)] {
            let s = Instant::now();
            let policy = Policy::load_file(&warm_rt, path.as_ref(), "{}", limits).unwrap();
            let cached = s.elapsed();
            let mut calls = Vec::new();
            for (_, body) in &bodies {
                let req = request::parse(body).unwrap().validate(10_000).unwrap();
                let batch = policy.batch(&req);
                calls.push(median(31, || {
                    policy.call(&batch).unwrap();
                }));
            }
            println!(
                "| {name} | {} | {} | {mode} | {} | {} | {} |",
                ms(cold),
                ms(cached),
                ms(calls[0]),
                ms(calls[1]),
                ms(calls[2])
            );
            per_mode.push(calls);
        }
        // What a fresh instance adds: instantiation (and the first touch of
        // its pages), the same work otherwise.
        let inst: Vec<String> = (0..3)
            .map(|i| ms(per_mode[0][i].saturating_sub(per_mode[1][i])))
            .collect();
        println!(
            "| {name} | | | instantiation (fresh − reuse) | {} | {} | {} |",
            inst[0], inst[1], inst[2]
        );
    }
}
