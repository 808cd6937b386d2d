//! `oasis run`: score one request locally and show what the policy decided
//! and the resources it used.
//!
//! ```text
//! oasis run policy.wasm --request examples/request.json              # summary
//! oasis run policy.wasm --request - --settings '{"theta": 0.3}' --json
//! oasis run deploy/policies/radio.toml --request req.json           # a manifest
//! ```

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use oasis::RuntimeConfig;
use oasis::cache::short;
use oasis::request::{self, Validate};
use oasis::response::{self, Reasons, ScoreResponse, Timing, Variant};
use oasis_contract::ReasonBits;
use oasis_contract::reason::{PROMOTED, REASONS};

/// Arguments of `oasis run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy: a component (.wasm), or a manifest (.toml) naming one
    /// with its settings and limits.
    pub policy: PathBuf,
    /// The request (JSON, as PZN sends it); `-` reads it from stdin.
    #[arg(long)]
    pub request: PathBuf,
    /// Settings: inline JSON (`'{"theta": 0.3}'`), a JSON file, or a TOML
    /// file (settings, or a manifest's `[settings]`). Overrides a
    /// manifest's settings.
    #[arg(long)]
    pub settings: Option<PathBuf>,
    /// Include the policy's debug values.
    #[arg(long)]
    pub debug: bool,
    /// Print the full response (and resources) as JSON instead of a
    /// summary.
    #[arg(long)]
    pub json: bool,
    /// Also count fuel (about one unit per wasm instruction). Fuel metering
    /// changes the compiled code, so this compiles the component once more
    /// (cached separately) instead of sharing the entry `inspect`, `test`
    /// and `serve` use.
    #[arg(long)]
    pub fuel: bool,
    /// Candidates listed at most in the summary.
    #[arg(long, default_value_t = 10)]
    pub show: usize,
    #[command(flatten)]
    pub limits: super::LimitArgs,
}

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    if super::native::is_python_source(&args.policy) {
        return execute_native(&args);
    }
    let runtime = oasis::Runtime::new(RuntimeConfig {
        measure_fuel: args.fuel,
        max_instances: super::CLI_INSTANCES,
        ..Default::default()
    })?;
    let target = super::PolicyArg::resolve(&args.policy)?;
    let loaded = Instant::now();
    let policy = target.load(&runtime, args.settings.as_deref(), &args.limits)?;
    let load_ms = loaded.elapsed().as_secs_f64() * 1e3;

    let body = read_request(&args.request)?;
    let started = Instant::now();
    let req = request::parse(&body)
        .and_then(|r| r.validate(policy.limits().max_candidates))
        .with_context(|| format!("in {}", args.request.display()))?;
    let outcome = policy.score(&req).map_err(|e| {
        anyhow::Error::from(e).context(super::PolicyFailed("the policy failed".into()))
    })?;
    let u = &outcome.usage;
    let shown = Shown {
        identity: policy.identity().clone(),
        settings_sha256: policy.settings_sha256(),
        decisions: &outcome.decisions,
        server_us: started.elapsed().as_micros() as u64,
        policy_us: u.wall_us,
        resources: serde_json::json!({
            "load_ms": (load_ms * 1000.0).round() / 1000.0,
            "call": u,
        }),
        resources_line: format!(
            "load {load_ms:.1} ms, call {:.3} ms, memory peak {:.1} MiB{}",
            u.wall_us as f64 / 1000.0,
            u.peak_memory_bytes as f64 / (1 << 20) as f64,
            u.fuel.map_or(String::new(), |f| format!(", fuel {f}"))
        ),
    };
    show(&args, &req, &shown)
}

/// `oasis run` on a Python policy's source: scored under CPython
/// ([`super::native`]), shown as a component's answer is.
fn execute_native(args: &Args) -> anyhow::Result<ExitCode> {
    let loaded = Instant::now();
    let mut python = super::native::NativePython::start(&args.policy)?;
    let load_ms = loaded.elapsed().as_secs_f64() * 1e3;
    let settings = super::read_settings(args.settings.as_deref())?;
    let body = read_request(&args.request)?;
    let started = Instant::now();
    let req = request::parse(&body)
        .and_then(|r| r.validate(args.limits.limits().max_candidates))
        .with_context(|| format!("in {}", args.request.display()))?;
    let outcome = python.score(&settings, &body)?;
    let wall_us = started.elapsed().as_micros() as u64;
    let settings_sha256 = oasis::cache::sha256_hex(settings.as_bytes());
    let shown = Shown {
        identity: std::sync::Arc::new(oasis::PolicyRef {
            name: python.name.as_str().into(),
            version: python.version.clone(),
            digest: "source".into(),
            settings_sha256: Some(settings_sha256.as_str().into()),
        }),
        settings_sha256: &settings_sha256,
        decisions: &outcome.decisions,
        server_us: wall_us,
        policy_us: wall_us,
        resources: serde_json::json!({
            "load_ms": (load_ms * 1000.0).round() / 1000.0,
            "native": true,
            "cpu_ms": (outcome.cpu_ms * 1000.0).round() / 1000.0,
        }),
        resources_line: format!(
            "native CPython (not the component: build it to see its sandbox and memory): \
             start {load_ms:.1} ms, call {:.3} ms of CPU",
            outcome.cpu_ms
        ),
    };
    show(args, &req, &shown)
}

/// What `oasis run` prints, however the request was scored.
struct Shown<'a> {
    identity: std::sync::Arc<oasis::PolicyRef>,
    settings_sha256: &'a str,
    decisions: &'a oasis::bindings::WitDecisions,
    server_us: u64,
    policy_us: u64,
    /// The `resources` object of `--json` (candidates and promoted added).
    resources: serde_json::Value,
    /// The summary's `resources` line.
    resources_line: String,
}

/// Prints the summary, or the response as JSON.
fn show(args: &Args, req: &oasis::ValidRequest<'_>, s: &Shown<'_>) -> anyhow::Result<ExitCode> {
    let d = s.decisions;
    let resp = ScoreResponse {
        request_id: &req.context.request_id,
        route: None,
        policy: &s.identity,
        variant: Variant::Stable,
        arm: None,
        fallback: None,
        scores: response::scored(req, d),
        debug: (args.debug || req.debug).then(|| response::debug_entries(req, d)),
        delivery_state: None,
        timing: Timing {
            server_us: s.server_us,
            policy_us: s.policy_us,
        },
    };
    let promoted = d
        .reasons
        .iter()
        .filter(|r| r.reason_bits() & PROMOTED != 0)
        .count();
    if args.json {
        let mut out = serde_json::to_value(&resp)?;
        let mut resources = s.resources.clone();
        resources["candidates"] = req.candidates.len().into();
        resources["promoted"] = promoted.into();
        out["resources"] = resources;
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }

    // The summary: who decided, what was promoted and why, what it cost.
    let id = &s.identity;
    println!(
        "policy     {} {} ({}, settings {})",
        id.name,
        id.version,
        short(&id.digest),
        short(s.settings_sha256)
    );
    let in_campaigns = req.campaign_index().iter().filter(|&&c| c >= 0).count();
    println!(
        "request    {}: {} candidates, {in_campaigns} in campaigns",
        oasis::visible(&req.context.request_id),
        req.candidates.len()
    );
    println!(
        "decided    {} eligible, {promoted} promoted",
        d.eligible.iter().filter(|e| **e).count()
    );
    let mut promoted_rows: Vec<usize> = (0..d.scores.len())
        .filter(|&i| d.reasons[i].reason_bits() & PROMOTED != 0)
        .collect();
    promoted_rows.sort_by(|&a, &b| d.scores[b].total_cmp(&d.scores[a]).then(a.cmp(&b)));
    for &i in promoted_rows.iter().take(args.show) {
        let c = &req.candidates[i];
        println!(
            "  {:<28} relevance {:.4} -> score {:.4}  propensity {:.2}  {}",
            oasis::visible(&c.id),
            c.relevance,
            d.scores[i],
            d.propensity[i],
            Reasons(d.reasons[i]).names().collect::<Vec<_>>().join(",")
        );
    }
    if promoted_rows.len() > args.show {
        println!(
            "  ... {} more (--show N, or --json)",
            promoted_rows.len() - args.show
        );
    }
    let mut histogram = Vec::new();
    for (bit, name) in REASONS {
        let n = d
            .reasons
            .iter()
            .filter(|r| r.reason_bits() & bit != 0)
            .count();
        if n > 0 {
            histogram.push(format!("{name} {n}"));
        }
    }
    println!("reasons    {}", histogram.join(", "));
    println!("resources  {}", s.resources_line);
    Ok(ExitCode::SUCCESS)
}

/// The request body from a file, or stdin for `-`.
fn read_request(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut body = Vec::new();
        std::io::stdin()
            .read_to_end(&mut body)
            .context("cannot read the request from stdin")?;
        return Ok(body);
    }
    std::fs::read(path).with_context(|| format!("cannot read request {}", path.display()))
}
