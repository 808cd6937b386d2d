//! `oasis run`: score one request locally and show the resources it used.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use oasis::response::{self, ScoreResponse, Timing, Variant};
use oasis::{RuntimeConfig, request};

/// Arguments of `oasis run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy component (.wasm).
    pub policy: PathBuf,
    /// The request (JSON, as PZN sends it).
    #[arg(long)]
    pub request: PathBuf,
    /// Settings (JSON, or TOML with a .toml extension).
    #[arg(long)]
    pub settings: Option<PathBuf>,
    /// Include the policy's debug values.
    #[arg(long)]
    pub debug: bool,
    #[command(flatten)]
    pub limits: super::LimitArgs,
}

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = oasis::Runtime::new(RuntimeConfig {
        measure_fuel: true,
        max_instances: super::CLI_INSTANCES,
        ..Default::default()
    })?;
    let settings = super::read_settings(args.settings.as_deref())?;
    let loaded = Instant::now();
    let policy = super::load_policy(&runtime, &args.policy, &settings, args.limits.limits())?;
    let load_ms = loaded.elapsed().as_secs_f64() * 1e3;

    let body = std::fs::read(&args.request)
        .with_context(|| format!("cannot read request {}", args.request.display()))?;
    let started = Instant::now();
    let req = request::parse(&body)
        .and_then(|r| r.validate(policy.limits().max_candidates))
        .with_context(|| format!("in {}", args.request.display()))?;
    let outcome = policy.score(&req).context("the policy failed")?;
    let d = &outcome.decisions;
    let resp = ScoreResponse {
        request_id: &req.context.request_id,
        route: None,
        policy: policy.identity(),
        variant: Variant::Stable,
        arm: None,
        fallback: None,
        scores: response::scored(&req, d),
        debug: (args.debug || req.debug).then(|| response::debug_entries(&req, d)),
        timing: Timing {
            server_us: started.elapsed().as_micros() as u64,
            policy_us: outcome.usage.wall_us,
        },
    };
    let mut out = serde_json::to_value(&resp)?;
    out["resources"] = serde_json::json!({
        "load_ms": (load_ms * 1000.0).round() / 1000.0,
        "call": outcome.usage,
        "candidates": req.candidates.len(),
        "promoted": d.reasons.iter().filter(|r| r.contains(oasis::bindings::WitReason::PROMOTED)).count(),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}
