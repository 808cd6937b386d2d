//! `oasis replay`: run logged requests again, offline.
//!
//! ```text
//! oasis replay --logs decisions/ --policies deploy/policies            # determinism
//! oasis replay --logs decisions/ --policies deploy/policies \
//!              --candidate new.wasm=s.toml --candidate deploy/policies/x.toml \
//!              [--outcomes outcomes/]                                   # candidates
//! oasis replay --logs shard-3/ … --partial part-3.json                  # one shard
//! oasis replay merge part-*.json                                        # the report
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
use oasis::ope::Estimator;
use oasis::replay::{self, CandidateSource, CandidateSpec, Config, Progress, Report};

/// Arguments of `oasis replay`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    /// Merge partial results instead of replaying.
    #[command(subcommand)]
    pub merge: Option<Merge>,
    /// Decision logs: files, directories or glob patterns.
    #[arg(long, required = true, num_args = 1..)]
    pub logs: Vec<PathBuf>,
    /// The policy directory the logs were served from: its manifests give
    /// the settings, its modules and `versions/` the logged versions.
    #[arg(long, required = true)]
    pub policies: Option<PathBuf>,
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
    /// candidate's value off-policy from the logged propensities, per
    /// route and logged arm, and over those with support.
    #[arg(long, num_args = 1.., requires = "candidates")]
    pub outcomes: Vec<PathBuf>,
    /// Seed of the bootstrap intervals (the same logs and seed give the
    /// same intervals, in one process or merged from shards).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Bootstrap resamples of the intervals.
    #[arg(long, default_value_t = 1000)]
    pub bootstrap: usize,
    /// Least number of campaign-track decisions a route/arm needs for an
    /// estimate; fewer are reported as "no support" with their count.
    #[arg(long, default_value_t = 0, value_name = "DECISIONS")]
    pub min_support: u64,
    /// Largest share (0 to 1) of a route/arm's decisions that the logging
    /// policy never explored (the candidate may do what it never did) for
    /// which an estimate is still given; above it, "no support".
    #[arg(long, default_value_t = 0.0, value_name = "SHARE")]
    pub max_unsupported: f64,
    /// Fuel (about one wasm instruction a unit) each policy call gets.
    /// Replay bounds calls by this count, not by time (`--deadline-ms` does
    /// not apply), so its figures do not depend on the machine's load; a
    /// call that uses it all fails the replay.
    #[arg(long, default_value_t = replay::DEFAULT_FUEL)]
    pub fuel: u64,
    /// Write this shard's mergeable partial result to OUT (JSON, zstd when
    /// OUT ends in .zst) instead of printing a report; `oasis replay merge`
    /// gives the report of all shards.
    #[arg(long, value_name = "OUT", conflicts_with_all = ["html", "measure_scaling"])]
    pub partial: Option<PathBuf>,
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

/// `oasis replay merge`.
#[derive(Debug, clap::Subcommand)]
pub enum Merge {
    /// Merge partial results (`oasis replay --partial OUT` of each shard)
    /// into the report of one replay of all their logs: the same counts,
    /// estimates and intervals as a single run. Partials of other
    /// candidates, options, seed, outcomes or oasis versions are refused.
    Merge(MergeArgs),
}

/// Arguments of `oasis replay merge`.
#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// The partial results.
    #[arg(required = true, value_name = "PARTIAL")]
    pub partials: Vec<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Also write the self-contained HTML report to this file.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Differences, errors and campaigns listed at most in the tables.
    #[arg(long, default_value_t = 20)]
    pub show: usize,
}

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(Merge::Merge(m)) = args.merge {
        let report = replay::merge(&m.partials)?;
        return print(&report, m.json, m.html.as_deref(), m.show);
    }
    let estimator = Estimator::default()
        .with_seed(args.seed)
        .with_bootstrap(args.bootstrap)
        .context("--bootstrap")?
        .with_max_unsupported(args.max_unsupported)
        .context("--max-unsupported")?
        .with_min_support(args.min_support);
    if args.fuel == 0 {
        bail!("--fuel must be at least 1");
    }
    let config = Config {
        candidates: candidates(&args)?,
        logs: args.logs,
        policies: args.policies.context("--policies is required")?,
        outcomes: args.outcomes,
        limits: args.limits.limits(),
        threads: args.threads,
        measure_scaling: args.measure_scaling,
        estimator,
        fuel: args.fuel,
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
    if let Some(out) = &args.partial {
        let partial = replay::partial(&config, &mut progress)?;
        partial.write(out)?;
        eprintln!(
            "partial result of {} records written to {}; `oasis replay merge` gives the report",
            partial.records(),
            out.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let report = replay::run(&config, &mut progress)?;
    print(&report, args.json, args.html.as_deref(), args.show)
}

/// Prints `report` (tables or JSON, and the HTML page to a file); exit 1
/// when it found a problem.
fn print(
    report: &Report,
    json: bool,
    html: Option<&std::path::Path>,
    show: usize,
) -> anyhow::Result<ExitCode> {
    if let Some(path) = html {
        std::fs::write(path, replay::html::render(report)?)
            .with_context(|| format!("cannot write the report {}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", replay::text::render(report, show));
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
