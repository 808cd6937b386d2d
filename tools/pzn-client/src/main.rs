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
//! `--rate R` is an open loop: requests scheduled at R per second whatever
//! the server does, latency measured from each one's scheduled send time,
//! so a stall is not hidden by the client sending less (coordinated
//! omission; see the `open_loop` module). `scripts/bench` uses it at 50%
//! and 80% of the closed loop's peak:
//!
//! ```text
//! cargo run --release -p pzn-client -- --rate 1000 --duration 5
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
//!
//! `--closed-loop` simulates a day of listeners in compressed time against
//! a server that keeps delivery state itself: requests without state
//! fields, the shown slate's impressions and plays posted to `/v1/events`,
//! delivery per campaign against its target and frequency per listener ×
//! track checked from the client side (see the `closed_loop` module and
//! `scripts/closed-loop`):
//!
//! ```text
//! cargo run --release -p pzn-client -- --closed-loop --route radio --delivery-band 0.6,1.6
//! cargo run --release -p pzn-client -- --closed-loop --route mixes --max-daily 3 \
//!     --url http://127.0.0.1:18080,http://127.0.0.1:18081
//! ```

mod catalog;
mod closed_loop;
mod example;
mod load;
mod open_loop;
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
    /// Base URL of the server. With --closed-loop, repeatable or
    /// comma-separated: replicas sharing one state store.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:8080")]
    url: Vec<String>,
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
    /// Open loop: send at this fixed rate (requests per second) instead of
    /// --concurrency back-to-back tasks; latency is measured from each
    /// request's scheduled send time (see the `open_loop` module).
    #[arg(long, conflicts_with_all = ["outcomes", "closed_loop"])]
    rate: Option<f64>,
    /// The gRPC server (`oasis serve --grpc-listen`).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    grpc_url: String,
    /// Closed loop: simulate listeners over --sim-hours of simulated time
    /// on one pacing route (--route, default radio), sending requests
    /// without delivery state (the server fills it from its store), showing
    /// the top --slate-size candidates and posting their impressions and
    /// plays to /v1/events; report delivery against targets and frequency
    /// per listener x track (see the `closed_loop` module).
    #[arg(long, conflicts_with_all = ["grpc", "outcomes", "requests", "warmup"])]
    closed_loop: bool,
    /// Closed loop: simulated hours (campaigns run over exactly this window,
    /// starting at --now-ms).
    #[arg(long, default_value_t = 24.0)]
    sim_hours: f64,
    /// Closed loop: simulated seconds per wall second; flat out when absent.
    #[arg(long)]
    sim_speed: Option<f64>,
    /// Closed loop: listeners in the population.
    #[arg(long, default_value_t = 1_500)]
    listeners: u32,
    /// Closed loop: mean sessions per listener per simulated day.
    #[arg(long, default_value_t = 3.0)]
    sessions_per_day: f64,
    /// Closed loop: mean slates (requests) per session.
    #[arg(long, default_value_t = 4.0)]
    slates_per_session: f64,
    /// Closed loop: candidates shown per slate (`context.slate_size`).
    #[arg(long, default_value_t = 10)]
    slate_size: u32,
    /// Closed loop: campaigns (their tracks log-spaced in popularity).
    #[arg(long, default_value_t = 12)]
    campaigns: usize,
    /// Closed loop: tracks per campaign.
    #[arg(long, default_value_t = 2)]
    tracks_per_campaign: usize,
    /// Closed loop: the unpaced route that measures each campaign's supply
    /// before the loop (guarded-boost: pid-pacing's boost, multiplier 1).
    #[arg(long, default_value = "guarded-boost")]
    calibration_route: String,
    /// Closed loop: calibrate on every n-th request of the schedule.
    #[arg(long, default_value_t = 4)]
    calibration_sample: usize,
    /// Closed loop: campaign target = unpaced supply x factor, factors
    /// taken in turn (< 1: over-supplied, > 1: under-supplied).
    #[arg(long, value_delimiter = ',', default_values_t = vec![0.5, 2.0, 0.7, 1.5])]
    supply_factors: Vec<f64>,
    /// Closed loop: post events after this many requests (earlier when a
    /// listener with unposted events asks again).
    #[arg(long, default_value_t = 4)]
    event_batch: usize,
    /// Closed loop: simulated minutes per delivery-series point.
    #[arg(long, default_value_t = 60)]
    series_minutes: u32,
    /// Closed loop check: fail (exit 1) if a listener got more than K
    /// promoted impressions of one track in 24 simulated hours.
    #[arg(long, value_name = "K")]
    max_daily: Option<u32>,
    /// Closed loop check: fail (exit 1) unless every campaign with target
    /// >= --min-check-volume delivered within [LO, HI] x its target.
    #[arg(long, value_name = "LO,HI")]
    delivery_band: Option<String>,
    /// Closed loop: smaller campaigns are reported but not checked.
    #[arg(long, default_value_t = 30.0)]
    min_check_volume: f64,
    /// Closed loop: prefix of every id sent (listeners, sessions, requests,
    /// campaigns, events), so that runs against one store do not share
    /// state. Default: from the wall clock.
    #[arg(long)]
    run_tag: Option<String>,
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
    if args.closed_loop {
        return closed_loop_main(&args, catalog);
    }
    anyhow::ensure!(args.url.len() == 1, "several --url only with --closed-loop");
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
        format!("{}/v1/score", args.url[0].trim_end_matches('/'))
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
            "target       {target}, {}, {}",
            match args.rate {
                Some(r) => format!("open loop at {r} req/s"),
                None => format!("concurrency {}", args.concurrency),
            },
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
            args.url[0].clone()
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
    let stats = match args.rate {
        Some(rate) => runtime.block_on(open_loop::run(&load, rate, Arc::new(pool)))?,
        None => runtime.block_on(load::run(&load, Arc::new(pool)))?,
    };

    if args.json {
        let mut j = stats.to_json();
        j["config"] = serde_json::json!({
            "url": if args.grpc { &args.grpc_url } else { &args.url[0] },
            "transport": if args.grpc { "grpc" } else { "http" },
            "concurrency": args.concurrency,
            "open_loop_rate": args.rate,
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

/// `--closed-loop`: builds the plan, runs calibration and the loop, prints
/// the report; exit 1 when a configured check fails.
fn closed_loop_main(args: &Args, catalog: Catalog) -> anyhow::Result<ExitCode> {
    use closed_loop::plan::{Plan, PlanConfig};
    anyhow::ensure!(
        args.sim_hours.is_finite() && args.sim_hours > 0.0,
        "--sim-hours must be positive"
    );
    anyhow::ensure!(args.listeners > 0, "--listeners must be positive");
    anyhow::ensure!(args.slate_size > 0, "--slate-size must be positive");
    anyhow::ensure!(args.campaigns > 0, "--campaigns must be positive");
    anyhow::ensure!(
        args.campaigns * args.tracks_per_campaign.max(1) < args.tracks,
        "--tracks too small for --campaigns x --tracks-per-campaign"
    );
    anyhow::ensure!(
        args.sessions_per_day > 0.0 && args.slates_per_session >= 1.0,
        "--sessions-per-day must be positive and --slates-per-session at least 1"
    );
    anyhow::ensure!(
        args.supply_factors
            .iter()
            .all(|f| f.is_finite() && *f > 0.0),
        "--supply-factors must be positive"
    );
    anyhow::ensure!(
        args.sim_speed.is_none_or(|s| s.is_finite() && s > 0.0),
        "--sim-speed must be positive"
    );
    anyhow::ensure!(args.series_minutes > 0, "--series-minutes must be positive");
    let band = match args.delivery_band.as_deref() {
        None => None,
        Some(text) => {
            let parsed: Option<(f64, f64)> = text
                .split_once(',')
                .and_then(|(lo, hi)| Some((lo.trim().parse().ok()?, hi.trim().parse().ok()?)));
            match parsed {
                Some((lo, hi)) if lo.is_finite() && hi.is_finite() && 0.0 <= lo && lo <= hi => {
                    Some((lo, hi))
                }
                _ => anyhow::bail!("--delivery-band wants LO,HI with 0 <= LO <= HI, got {text:?}"),
            }
        }
    };
    let route = match args.route.as_slice() {
        [] => "radio".to_string(),
        [one] if one != traffic::NO_ROUTE => one.trim().to_string(),
        _ => anyhow::bail!("--closed-loop scores on one named --route"),
    };
    let run_tag = args.run_tag.clone().unwrap_or_else(|| {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        format!("cl{ms:x}")
    });
    let window_ms = (args.sim_hours * 3_600_000.0).round() as i64;
    let mut plan = Plan::new(
        PlanConfig {
            start_ms: args.now_ms,
            window_ms,
            listeners: args.listeners,
            sessions_per_day: args.sessions_per_day,
            slates_per_session: args.slates_per_session,
            slate_size: args.slate_size,
            candidates: args.candidates,
            campaigns: args.campaigns,
            tracks_per_campaign: args.tracks_per_campaign,
            run_tag,
            seed: args.seed,
        },
        catalog,
    );
    let config = closed_loop::LoopConfig {
        route,
        calibration_route: args.calibration_route.clone(),
        calibration_sample: args.calibration_sample,
        supply_factors: args.supply_factors.clone(),
        event_batch: args.event_batch,
        sim_speed: args.sim_speed,
        bucket_ms: i64::from(args.series_minutes) * 60_000,
        max_daily: args.max_daily,
        delivery_band: band,
        min_check_volume: args.min_check_volume,
    };
    if !args.json {
        println!(
            "plan         {} requests from {} listeners over {} simulated hours; {} campaigns; replicas {}",
            plan.slots.len(),
            args.listeners,
            args.sim_hours,
            plan.campaigns.len(),
            args.url.join(", ")
        );
    }
    let mut server =
        closed_loop::HttpServer::new(args.url.clone(), Duration::from_millis(args.timeout_ms))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(closed_loop::run(&mut plan, &config, &mut server))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
