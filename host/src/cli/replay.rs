//! `oasis replay`: run logged requests again, offline.
//!
//! ```text
//! oasis replay --logs decisions/ --policies deploy/policies            # determinism
//! oasis replay --logs decisions/ --policies deploy/policies \
//!              --candidate new.wasm=s.toml --candidate deploy/policies/x.toml \
//!              [--outcomes outcomes/]                                   # candidates
//! ```
//!
//! The engine is the library's ([`oasis::replay`]); this command parses the
//! flags into its [`Config`], runs it, and prints the report (tables or
//! JSON, and the HTML page to a file). It exits 1 when the replay found a
//! problem (a difference, a record that could not be replayed, nothing
//! replayed), 3 when a candidate does not load, 2 on other errors.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use oasis::replay::{self, CandidateSource, CandidateSpec, Config, Progress};

/// Arguments of `oasis replay`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Decision logs: files, directories or glob patterns.
    #[arg(long, required = true, num_args = 1..)]
    pub logs: Vec<PathBuf>,
    /// The policy directory the logs were served from: its manifests give
    /// the settings, its modules and `versions/` the logged versions.
    #[arg(long)]
    pub policies: PathBuf,
    /// A policy to evaluate on the logged requests instead of checking
    /// determinism; repeat for several. SPEC is a manifest (`x.toml`: its
    /// module and settings, as `oasis serve` loads them), a component
    /// (`x.wasm`, with its default settings or `--settings`), or
    /// `x.wasm=SETTINGS` (a JSON or `.toml` settings file).
    #[arg(long = "candidate", value_name = "SPEC")]
    pub candidates: Vec<String>,
    /// Settings of a single `x.wasm` candidate given without `=SETTINGS`
    /// (JSON, or TOML with a .toml extension).
    #[arg(long, requires = "candidates")]
    pub settings: Option<PathBuf>,
    /// Outcome events (files, directories, globs): estimate each
    /// candidate's value off-policy from the logged propensities.
    #[arg(long, num_args = 1.., requires = "candidates")]
    pub outcomes: Vec<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Also write a self-contained HTML report (charts of score
    /// distributions, delivery per campaign, exposure per rights holder and
    /// each candidate's estimate with its interval) to this file.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Differences, errors and campaigns listed at most in the tables.
    #[arg(long, default_value_t = 20)]
    pub show: usize,
    /// Worker threads; default: one per core.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Replay once on one worker thread *confined to one core* (with the
    /// line reader and the report: what one core does), then on all cores,
    /// and report the parallel efficiency (rate on N / (N × rate on one
    /// core)).
    #[arg(long)]
    pub measure_scaling: bool,
    #[command(flatten)]
    pub limits: super::LimitArgs,
}

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let config = Config {
        candidates: candidates(&args)?,
        logs: args.logs,
        policies: args.policies,
        outcomes: args.outcomes,
        limits: args.limits.limits(),
        threads: args.threads,
        measure_scaling: args.measure_scaling,
    };
    // Progress on long runs, on stderr (stdout stays the report).
    let mut progress = |p: &Progress| {
        if !args.json {
            let secs = p.elapsed.as_secs_f64();
            eprintln!(
                "replayed {} records in {secs:.0} s ({:.0}/s)",
                p.records,
                p.records as f64 / secs
            );
        }
    };
    let report = replay::run(&config, &mut progress)?;
    if let Some(path) = &args.html {
        std::fs::write(path, replay::html::render(&report)?)
            .with_context(|| format!("cannot write the report {}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", replay::text::render(&report, args.show));
    }
    Ok(if report.failed() {
        ExitCode::from(super::exit::CHECK_FAILED)
    } else {
        ExitCode::SUCCESS
    })
}

/// Every `--candidate` as the library takes it: a manifest, or a module
/// with its settings read (`x.wasm=SETTINGS`, or `--settings` for a single
/// `x.wasm`).
fn candidates(args: &Args) -> anyhow::Result<Vec<CandidateSpec>> {
    let bare_wasm = args
        .candidates
        .iter()
        .filter(|s| !s.contains('=') && !s.ends_with(".toml"))
        .count();
    if args.settings.is_some() && (args.candidates.len() != 1 || bare_wasm != 1) {
        bail!(
            "--settings applies to a single `x.wasm` candidate; with several, give each its settings as `x.wasm=SETTINGS` or a manifest"
        );
    }
    let mut out = Vec::with_capacity(args.candidates.len());
    for spec in &args.candidates {
        let source = if spec.ends_with(".toml") && !spec.contains('=') {
            CandidateSource::Manifest(PathBuf::from(spec))
        } else {
            let (module, settings_file) = match spec.split_once('=') {
                Some((m, s)) => (PathBuf::from(m), Some(PathBuf::from(s))),
                None => (PathBuf::from(spec), args.settings.clone()),
            };
            let settings_json = super::read_settings(settings_file.as_deref())
                .with_context(|| format!("candidate {spec}"))?;
            CandidateSource::Module {
                module,
                settings_file,
                settings_json,
            }
        };
        out.push(CandidateSpec {
            arg: spec.clone(),
            source,
        });
    }
    Ok(out)
}
