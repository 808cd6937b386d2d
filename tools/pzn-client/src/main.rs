//! `pzn-client`: a PZN-like load generator for an Oasis scoring server.
//!
//! It builds a synthetic catalog (50,000 tracks with Zipf popularity,
//! Zipf-sized artists and labels, 3% of tracks in promotion campaigns with
//! varied windows, surfaces, markets and delivery states), pre-generates a
//! pool of scoring requests (300 candidates each, drawn by popularity, with
//! listener predictions and session context), then POSTs them to
//! `{url}/v1/score` from `--concurrency` tasks for `--duration` seconds and
//! prints throughput, status counts, stable/fallback counts, promoted
//! candidates per response, latency percentiles and the policies that
//! served. Everything is deterministic given `--seed`.
//!
//! Run it against a server:
//!
//! ```text
//! scripts/serve                     # in one terminal: serves on 127.0.0.1:8080
//! cargo run --release -p pzn-client -- --url http://127.0.0.1:8080 --duration 10 --concurrency 8
//! ```
//!
//! and you will see something like (2-CPU machine, client and server on it)
//!
//! ```text
//! catalog      50000 tracks, 466 campaigns (3.0% of tracks, 380 active now)
//! pool         256 requests, 300.0 candidates each, 2.2% in campaigns; routes radio,autoplay,mixes,fairness,explore
//! target       http://127.0.0.1:8080/v1/score, concurrency 4, 5 s
//! requests     10914 in 5.00 s: 2182.1 req/s
//! status       200: 10914
//! variant      stable 10914, fallback 0
//! per response 300.0 candidates, 1.76 eligible, 0.93 promoted
//! latency ms   p50 1.518  p90 2.789  p99 4.451  p99.9 7.663  max 14.039
//! server says  1036 us in server, 157 us in policy (mean)
//! policy       epsilon-greedy@1.0.0: 2174
//! policy       exposure-fairness@1.0.0: 2174
//! ...
//! ```
//!
//! Non-200 responses are counted by status and the first few distinct error
//! bodies printed; the exit status is 1 when no request succeeded.
//!
//! `--grpc` sends the same requests, converted to protobuf before the run,
//! to the gRPC API (`--grpc-url`, default `http://127.0.0.1:50051`, which
//! `scripts/serve` enables):
//!
//! ```text
//! cargo run --release -p pzn-client -- --grpc --duration 10 --concurrency 8
//! ```
//!
//! `--json` prints the same figures as one JSON object; `--emit-request`
//! prints one generated request and exits, for curl:
//!
//! ```text
//! cargo run -q -p pzn-client -- --emit-request > /tmp/req.json
//! curl -s -H 'content-type: application/json' --data @/tmp/req.json localhost:8080/v1/score
//! ```
//!
//! `--emit-example` prints the bundled example request, which the docs, the
//! integration tests and the benchmarks use (see the `example` module for
//! what is in it). It is the one generator of that file:
//!
//! ```text
//! cargo run -q -p pzn-client -- --emit-example > examples/request.json
//! ```
//!
//! and a test fails when the two disagree.

mod catalog;
mod example;
mod load;
mod outcomes;
mod simulate;
mod traffic;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use crate::catalog::{Catalog, CatalogConfig, DEFAULT_NOW_MS};
use crate::load::LoadConfig;
use crate::traffic::{DEFAULT_ROUTES, RequestGenerator, TrafficConfig};

/// Generates realistic scoring traffic against an Oasis server.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Seconds to send for (ignored with --requests).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Send this many requests in total instead of running for --duration.
    #[arg(long)]
    requests: Option<u64>,
    /// Concurrent in-flight requests.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Candidates per request.
    #[arg(long, default_value_t = 300)]
    candidates: usize,
    /// Route(s), repeatable or comma-separated, used in rotation; `-` sends
    /// no route (the server's default). Default: radio,autoplay,mixes,fairness,explore.
    #[arg(long, value_delimiter = ',')]
    route: Vec<String>,
    /// Seed of the catalog and the requests.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Request bodies to pre-generate; the run cycles through them.
    #[arg(long, default_value_t = 256)]
    pool: usize,
    /// Tracks in the catalog.
    #[arg(long, default_value_t = 50_000)]
    tracks: usize,
    /// Artists in the catalog.
    #[arg(long, default_value_t = 5_000)]
    artists: usize,
    /// Rights holders (labels) in the catalog.
    #[arg(long, default_value_t = 60)]
    rights_holders: usize,
    /// Fraction of tracks in a promotion campaign.
    #[arg(long, default_value_t = 0.03)]
    campaign_share: f64,
    /// Zipf exponent of track popularity.
    #[arg(long, default_value_t = 1.0)]
    zipf: f64,
    /// Probability that a candidate has one feature missing (null).
    #[arg(long, default_value_t = 0.0)]
    missing_features: f64,
    /// "Now" of the traffic (unix ms); campaign windows are relative to it.
    #[arg(long, default_value_t = DEFAULT_NOW_MS)]
    now_ms: i64,
    /// Ask the server for the policies' debug values.
    #[arg(long)]
    debug: bool,
    /// Per-request timeout, milliseconds.
    #[arg(long, default_value_t = 5_000)]
    timeout_ms: u64,
    /// Seconds of unmeasured load before the measured run.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// After each scored request, post simulated listener outcomes (stream
    /// or skip per campaign track, from a known model) to `/v1/outcomes`,
    /// for `oasis replay --outcomes`. Needs `--requests N`; every request
    /// is sent once (the pool grows to N), so that request ids are unique.
    #[arg(long, requires = "requests")]
    outcomes: bool,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
    /// Send over gRPC (`oasis.v1.Scoring/Score`) to --grpc-url instead of
    /// JSON over HTTP; the requests are the same, converted to protobuf
    /// before the run.
    #[arg(long)]
    grpc: bool,
    /// The gRPC server (`oasis serve --grpc-listen`).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    grpc_url: String,
    /// Print one generated request (pretty JSON) and exit.
    #[arg(long)]
    emit_request: bool,
    /// Print the bundled example request, `examples/request.json`, and exit.
    /// Deterministic; the other flags do not change it.
    #[arg(long, conflicts_with = "emit_request")]
    emit_example: bool,
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pzn-client: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    if args.emit_example {
        print!("{}", example::json());
        return Ok(ExitCode::SUCCESS);
    }
    anyhow::ensure!(args.tracks > 0, "--tracks must be positive");
    anyhow::ensure!(args.candidates > 0, "--candidates must be positive");
    anyhow::ensure!(args.pool > 0, "--pool must be positive");
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.campaign_share),
        "--campaign-share must be in [0, 1]"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.missing_features),
        "--missing-features must be in [0, 1]"
    );
    anyhow::ensure!(args.zipf >= 0.0, "--zipf must be >= 0");
    anyhow::ensure!(
        args.duration.is_finite() && args.duration > 0.0,
        "--duration must be positive"
    );
    anyhow::ensure!(
        args.warmup.is_finite() && args.warmup >= 0.0,
        "--warmup must be >= 0"
    );
    anyhow::ensure!(
        !(args.outcomes && args.warmup > 0.0),
        "--outcomes sends every request once: no --warmup"
    );

    let catalog = Catalog::generate(
        CatalogConfig {
            tracks: args.tracks,
            artists: args.artists.max(1),
            rights_holders: args.rights_holders.max(1),
            popularity_exponent: args.zipf,
            campaign_share: args.campaign_share,
            now_ms: args.now_ms,
        },
        args.seed,
    );
    let catalog_line = format!(
        "catalog      {} tracks, {} campaigns ({:.1}% of tracks, {} active now)",
        catalog.tracks.len(),
        catalog.campaigns.len(),
        100.0 * catalog.promoted_share(),
        catalog
            .campaigns
            .iter()
            .filter(|c| c.is_active(args.now_ms))
            .count()
    );
    let routes: Vec<String> = if args.route.is_empty() {
        DEFAULT_ROUTES.iter().map(|r| r.to_string()).collect()
    } else {
        args.route.iter().map(|r| r.trim().to_string()).collect()
    };
    let traffic = TrafficConfig {
        candidates: args.candidates,
        routes: routes.clone(),
        missing_feature_rate: args.missing_features,
        debug: args.debug,
        ..TrafficConfig::default()
    };
    let mut generator = RequestGenerator::new(Arc::new(catalog), traffic, args.seed);

    if args.emit_request {
        println!(
            "{}",
            serde_json::to_string_pretty(&generator.next_request())?
        );
        return Ok(ExitCode::SUCCESS);
    }

    // Outcomes join on the request id: no request may be sent twice.
    let pool_size = match (args.outcomes, args.requests) {
        (true, Some(n)) => args.pool.max(n as usize),
        _ => args.pool,
    };
    let mut pool = traffic::pool(&mut generator, pool_size);
    if args.grpc {
        for entry in &mut pool {
            entry.grpc = Some(
                oasis_proto::json::request(&entry.body)
                    .map_err(|e| anyhow::anyhow!("converting a request to protobuf: {e}"))?,
            );
        }
    }
    let target = if args.grpc {
        format!("{} (gRPC oasis.v1.Scoring/Score)", args.grpc_url)
    } else {
        format!("{}/v1/score", args.url.trim_end_matches('/'))
    };
    let cands: usize = pool.iter().map(|e| e.candidates).sum();
    let promoted: usize = pool.iter().map(|e| e.campaign_candidates).sum();
    let cands_per_request = cands as f64 / pool.len() as f64;
    let campaign_share = promoted as f64 / cands.max(1) as f64;
    let pool_line = format!(
        "pool         {} requests, {:.1} candidates each, {:.1}% in campaigns; routes {}",
        pool.len(),
        cands_per_request,
        100.0 * campaign_share,
        routes.join(",")
    );
    if !args.json {
        println!("{catalog_line}");
        println!("{pool_line}");
        println!(
            "target       {target}, concurrency {}, {}",
            args.concurrency,
            match args.requests {
                Some(n) => format!("{n} requests"),
                None => format!("{} s", args.duration),
            }
        );
    }

    let load = LoadConfig {
        url: if args.grpc {
            args.grpc_url.clone()
        } else {
            args.url.clone()
        },
        grpc: args.grpc,
        concurrency: args.concurrency,
        duration: args
            .requests
            .is_none()
            .then(|| Duration::from_secs_f64(args.duration)),
        requests: args.requests,
        timeout: Duration::from_millis(args.timeout_ms),
        warmup: Duration::from_secs_f64(args.warmup),
        outcomes_seed: args.outcomes.then_some(args.seed),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let stats = runtime.block_on(load::run(&load, Arc::new(pool)))?;

    if args.json {
        let mut j = stats.to_json();
        j["config"] = serde_json::json!({
            "url": if args.grpc { &args.grpc_url } else { &args.url },
            "transport": if args.grpc { "grpc" } else { "http" },
            "concurrency": args.concurrency,
            "seed": args.seed,
            "pool": args.pool,
            "routes": routes,
            "candidates_per_request": cands_per_request,
            "campaign_candidate_share": campaign_share,
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        print!("{}", stats.render());
    }
    Ok(if stats.ok() > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
