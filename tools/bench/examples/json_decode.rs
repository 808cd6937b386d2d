//! The JSON fast path's decoder in a loop, for profiling and quick A/B
//! comparisons (BENCHMARKS.md, session 16, "JSON read by the fast path's
//! own reader").
//!
//! ```text
//! cargo run --release -p oasis-bench --example json_decode
//! N=300 F=30 SECS=20 perf record -g target/release/examples/json_decode
//! ```
//!
//! Builds the benchmark's request (`oasis-bench`'s body: the bundled
//! example's candidates cycled to `N`, default 1000, each with `F`, default
//! 30, features) and decodes it with `oasis::request::json::decode` against
//! guarded-boost's columns for `SECS` seconds (default 3), printing the
//! fastest and the median of its batches of 20. Run it from the repository root.

use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (n, features, secs) = (env("N", 1000), env("F", 30), env("SECS", 3));
    let mut request: serde_json::Value =
        serde_json::from_slice(&std::fs::read("examples/request.json")?)?;
    let base = request["candidates"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    anyhow::ensure!(!base.is_empty(), "examples/request.json has no candidates");
    let candidates: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let mut c = base[i % base.len()].clone();
            c["id"] = format!("track-{i}").into();
            let f = c["features"].as_object_mut().expect("features object");
            let mut j = f.len();
            while j < features {
                j += 1;
                f.insert(
                    format!("f{j:02}"),
                    (((i * 31 + j * 7) % 100) as f64 / 100.0).into(),
                );
            }
            c
        })
        .collect();
    request["candidates"] = candidates.into();
    let body = serde_json::to_vec(&request)?;
    // guarded-boost's declared columns.
    let columns = ["p_skip", "p_complete", "popularity", "holder_exposure_7d"];
    anyhow::ensure!(
        oasis::request::json::decode(&body, &columns, 2000).is_ok(),
        "the fast path takes the body"
    );
    println!("{} bytes, {n} candidates x {features} features", body.len());
    // Batches of 20 decodes: the fastest batch and the median, since this
    // shared machine's neighbours make any single mean noisy.
    let end = Instant::now() + Duration::from_secs(secs as u64);
    let mut batches = Vec::new();
    while Instant::now() < end {
        let start = Instant::now();
        for _ in 0..20 {
            std::hint::black_box(oasis::request::json::decode(&body, &columns, 2000).is_ok());
        }
        batches.push(start.elapsed().as_secs_f64() * 1e6 / 20.0);
    }
    batches.sort_by(f64::total_cmp);
    // The route hint on this body (its keys sorted, so the route, absent,
    // is looked for past the candidates): what the server adds before
    // decoding.
    let start = Instant::now();
    for _ in 0..20 {
        std::hint::black_box(oasis::request::json::route_hint(&body).is_ok());
    }
    println!(
        "route hint {:.1} us",
        start.elapsed().as_secs_f64() * 1e6 / 20.0
    );
    println!(
        "fastest {:.1} us, median {:.1} us ({} batches of 20)",
        batches[0],
        batches[batches.len() / 2],
        batches.len()
    );
    Ok(())
}
