//! A policy call in a loop: the fresh-instance call cost of built policy
//! components, for quick A/B comparisons of guest builds (BENCHMARKS.md,
//! session 15, "A heap that does not grow").
//!
//! ```text
//! cargo run --release -p oasis-bench --example call_loop -- baseline.wasm guarded_boost.wasm
//! WD=/tmp/other-build NS=0,300,1000 cargo run --release -p oasis-bench --example call_loop -- baseline.wasm
//! ```
//!
//! `FRESH=1` gives every call a fresh instance (`--fresh-instances`),
//! `REUSE=n` reuses one for n calls without a reset, `CALLS=n` sets the
//! calls per round (2,000).
//!
//! For each candidate count in `NS` (default `0,1000`: the bundled example
//! request's candidates cycled, ids made unique, their own 6 features) and
//! each component named on the command line (looked up in `WD`, default
//! `target/guests/wasm32-wasip2/policy`), prints the best mean of 7 rounds
//! of 2,000 calls, the components' rounds interleaved (`oasis::Policy::call`: instance, call, checks).
//! Run it from the repository root.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use oasis::request::{self, Validate};
use oasis::{Limits, Policy, Runtime, RuntimeConfig};

fn main() -> anyhow::Result<()> {
    // FRESH=1: a fresh instance per call instead of a reset one
    // (`oasis serve --fresh-instances`).
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: None,
        reset_instances: std::env::var_os("FRESH").is_none(),
        ..RuntimeConfig::default()
    })?;
    // CALLS=n: calls per round (2,000; fewer for a Python component).
    let calls: u32 = std::env::var("CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let dir = PathBuf::from(
        std::env::var("WD").unwrap_or_else(|_| "target/guests/wasm32-wasip2/policy".into()),
    );
    let mut request: serde_json::Value =
        serde_json::from_slice(&std::fs::read("examples/request.json")?)?;
    let base = request["candidates"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    anyhow::ensure!(!base.is_empty(), "examples/request.json has no candidates");
    let sizes = std::env::var("NS").unwrap_or_else(|_| "0,1000".into());
    for n in sizes.split(',') {
        let n: usize = n.trim().parse()?;
        let candidates: Vec<_> = (0..n)
            .map(|i| {
                let mut c = base[i % base.len()].clone();
                c["id"] = format!("spotify:track:{i:016x}").into();
                c
            })
            .collect();
        request["candidates"] = candidates.into();
        let body = serde_json::to_vec(&request)?;
        let req = request::parse(&body)?.validate(2000)?;
        // A generous deadline: a busy machine must not turn a measurement
        // into a timeout.
        let limits = Limits {
            deadline: Duration::from_secs(2),
            // REUSE=n: up to n calls on one instance (instance reuse, the
            // upper bound of what not making a fresh instance saves).
            reuse_instance_calls: std::env::var("REUSE")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(Limits::default().reuse_instance_calls),
            ..Limits::default()
        };
        let mut loaded = Vec::new();
        for name in std::env::args().skip(1) {
            let policy = Policy::load_file(&runtime, &dir.join(&name), "{}", limits.clone())
                .map_err(|e| anyhow::anyhow!("loading {name}: {e}"))?;
            let batch = policy.batch(&req);
            loaded.push((name, policy, batch, f64::MAX));
        }
        // Rounds interleaved across the components: on a machine whose
        // speed drifts, A and B see the same drift.
        for _ in 0..7 {
            for (name, policy, batch, best) in &mut loaded {
                let started = Instant::now();
                for _ in 0..calls {
                    policy
                        .call(batch)
                        .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
                }
                *best = best.min(started.elapsed().as_secs_f64() / f64::from(calls) * 1e6);
            }
        }
        for (name, _, _, best) in &loaded {
            println!("{name} n={n} {best:.2} us");
        }
    }
    Ok(())
}
