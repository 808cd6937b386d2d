//! Replay: run logged requests again, offline.
//!
//! Every logged decision names the version that made it (module digest) and
//! the settings it ran with (hash). Replay finds the module by digest among
//! a policy directory's modules and its version store, and the settings by
//! hash among its manifests, so replaying the served version must reproduce
//! the logged output bit for bit; any difference is listed by request id.
//!
//! With one or more candidates ([`CandidateSpec`]), every candidate runs on
//! every logged request and is compared with the logged decisions: the same
//! metrics as shadow scoring ([`crate::divergence`]), promoted tracks per
//! campaign and each rights holder's exposure share, and with outcome
//! events an off-policy estimate of its value ([`crate::ope`]).
//!
//! The flow, one file per step:
//!
//! ```text
//! Config ─► policies.rs ─────────────► job.rs ──────────────────────► report.rs ─► text.rs / html.rs
//!           Index::scan (versions)      reader thread: log lines        Report::add    render to a String
//!           load_candidates             workers: parse, replay, compare Report::finish
//! ```
//!
//! * `policies.rs`: the logged versions, found by digest and
//!   settings hash and loaded once, and the candidates.
//! * `job.rs`: one pass. Records stream from the files (memory independent
//!   of the log's size, apart from the per-request sums of the estimates)
//!   and are parsed and scored on every core: one thread only reads lines,
//!   the workers parse and score (a record and its request in one pass,
//!   [`ReplayRecord`](crate::decision_log::ReplayRecord)), the calling
//!   thread sums the outcomes.
//! * [`Report`]: the figures, serializable (the CLI's `--json`).
//! * [`text`] and [`html`]: the report as tables, or as one self-contained
//!   page.
//!
//! # Shards
//!
//! [`partial`] replays a shard of the logs (any subset of the files) and
//! returns its [`Partial`] result, which [`Partial::write`] saves;
//! [`merge`] reads such files and gives the [`Report`] one process
//! replaying every shard's files would have given: the same counts, the
//! same divergence means (summed exactly), the same off-policy estimates
//! and bootstrap intervals, bit for bit (see [`partial`](self::partial)'s
//! module for what must agree between shards).
//!
//! # Determinism
//!
//! Replay's figures depend only on the logs, the policies and the options,
//! never on the machine's load: every policy call is bounded by a count of
//! instructions ([`Config::fuel`], wasmtime fuel), not by a deadline, so a
//! busy machine cannot make a call time out and drop a request from an
//! estimate. A call that uses its fuel fails the same way on every run and
//! machine; it is counted by candidate and fails the replay (exit 1). The
//! policies' deadlines (`--deadline-ms`, a manifest's `deadline_ms`) do
//! not apply offline: latency is what `oasis run` and the benchmarks
//! measure.
//!
//! # Per route and arm
//!
//! With outcomes, each candidate is estimated on the records of each route
//! and logged arm apart ([`CandidateReport::estimates`]), and overall on
//! those of them that have a value: a deterministic route (no support)
//! does not hide the estimate of an exploring one, and is listed with its
//! count and why. Fallback-served records are left out and counted.
//! [`Estimator::with_min_support`] and
//! [`Estimator::with_max_unsupported`] are the thresholds.
//!
//! With [`Config::measure_scaling`] the logs are replayed twice: once on one
//! worker confined to one core (with the line reader and the report: what
//! one core does), then on all, and the report gives the parallel
//! efficiency ([`Scaling`]).
//!
//! Problems with single records are counted in the report; a
//! [`ReplayError`] stops the replay (unreadable logs or policy directory, a
//! candidate that does not load).

mod error;
pub mod html;
mod job;
pub mod partial;
mod policies;
mod report;
pub mod text;

use std::path::PathBuf;

pub use error::ReplayError;
pub(crate) use error::chain;
pub use job::{PROGRESS_EVERY, Progress};
pub use partial::{Partial, PartialError, merge};
pub use policies::{CandidateSource, CandidateSpec};
pub use report::{
    CandidateReport, OutcomeCounts, Report, RouteCount, RouteEstimate, SCORE_BIN_WIDTH, SCORE_BINS,
    Scaling, Side,
};

use crate::decision_log::outcomes::{Outcomes, outcome_files};
use crate::ope::Estimator;
use crate::{Limits, Runtime, RuntimeConfig};
use job::{Job, on_one_core};
use partial::{CandidateId, InputFile, Options, OutcomeSet};
use policies::{Index, LoggedVersions, load_candidates};

/// The fuel a policy call gets by default in a replay: about 10⁹ wasm
/// instructions, some 0.5–2 s of compute, far beyond what a policy that
/// meets a serving deadline uses (the bundled ones use a few million at 300
/// candidates), and an end to a policy that loops.
pub const DEFAULT_FUEL: u64 = 1_000_000_000;

/// Instances in the pool beyond one per worker (and the least there are).
const SPARE_INSTANCES: u32 = 2;
/// The smallest pool (that of the CLI's one-shot commands).
const MIN_INSTANCES: u32 = 4;

/// What to replay, and how.
#[derive(Debug, Clone)]
pub struct Config {
    /// Decision logs: files, directories or glob patterns
    /// ([`crate::decision_log::files`]).
    pub logs: Vec<PathBuf>,
    /// The policy directory the logs were served from: its manifests give
    /// the settings, its modules and `versions/` the logged versions.
    pub policies: PathBuf,
    /// Policies to evaluate on the logged requests; none: check
    /// determinism instead.
    pub candidates: Vec<CandidateSpec>,
    /// Outcome events (files, directories, globs): with candidates,
    /// estimate each one's value off-policy from the logged propensities.
    /// None: no estimates.
    pub outcomes: Vec<PathBuf>,
    /// Limits of the logged versions, and of the candidates that are not
    /// manifests.
    pub limits: Limits,
    /// Worker threads; `None`: one per core.
    pub threads: Option<usize>,
    /// Replay once on one worker confined to one core, then on all, and
    /// report the parallel efficiency ([`Report::scaling`]).
    pub measure_scaling: bool,
    /// The off-policy estimators' settings: bootstrap seed and resamples,
    /// level, clip, support thresholds.
    pub estimator: Estimator,
    /// The fuel (about one unit per wasm instruction) each policy call gets
    /// instead of a deadline: [`DEFAULT_FUEL`] unless told otherwise.
    pub fuel: u64,
}

impl Config {
    /// The worker threads a replay uses.
    pub fn threads(&self) -> usize {
        self.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
            .max(1)
    }
}

/// Replays `config.logs`: checks determinism, or compares the candidates
/// with the logged decisions. `progress` is called on the calling thread
/// every [`PROGRESS_EVERY`] of a long pass.
///
/// The report is finished (shares, divergence summaries, estimates); see
/// [`Report::failed`] for whether it found a problem.
///
/// # Errors
/// [`ReplayError`] when the replay cannot run: the engine cannot be built,
/// the policy directory cannot be read or holds no module, a candidate
/// does not load, the outcomes or the logs cannot be found or read.
///
/// # Examples
/// ```no_run
/// # fn main() -> Result<(), oasis::replay::ReplayError> {
/// use oasis::replay::{self, CandidateSource, CandidateSpec, Config};
/// let config = Config {
///     logs: vec!["decisions/".into()],
///     policies: "deploy/policies".into(),
///     candidates: vec![CandidateSpec {
///         arg: "deploy/policies/x.toml".into(),
///         source: CandidateSource::Manifest("deploy/policies/x.toml".into()),
///     }],
///     outcomes: vec!["outcomes/".into()],
///     limits: oasis::Limits::default(),
///     threads: None,
///     measure_scaling: false,
///     estimator: oasis::ope::Estimator::default().with_seed(7),
///     fuel: replay::DEFAULT_FUEL,
/// };
/// let report = replay::run(&config, &mut |p| eprintln!("{} records", p.records))?;
/// print!("{}", replay::text::render(&report, 20));
/// std::process::exit(if report.failed() { 1 } else { 0 });
/// # }
/// ```
pub fn run(config: &Config, progress: &mut dyn FnMut(&Progress)) -> Result<Report, ReplayError> {
    let (partial, scaling) = pass(config, progress)?;
    let mut report = partial.report();
    report.scaling = scaling;
    Ok(report)
}

/// Replays `config.logs` as one shard of a larger replay: the result is
/// written with [`Partial::write`] and merged with others by [`merge`].
/// [`Config::measure_scaling`] is not used.
///
/// # Errors
/// As [`run`].
pub fn partial(
    config: &Config,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Partial, ReplayError> {
    let config = Config {
        measure_scaling: false,
        ..config.clone()
    };
    Ok(pass(&config, progress)?.0)
}

/// One replay: its partial result, and the scaling when measured.
fn pass(
    config: &Config,
    progress: &mut dyn FnMut(&Progress),
) -> Result<(Partial, Option<Scaling>), ReplayError> {
    // Said first, before the engine is built: an empty directory is not a
    // replay of zero records.
    let files = crate::decision_log::files(&config.logs).map_err(ReplayError::Logs)?;
    if files.is_empty() {
        return Err(ReplayError::NoLogFiles {
            inputs: config.logs.clone(),
        });
    }
    let threads = config.threads();
    let runtime = Runtime::new(RuntimeConfig {
        max_instances: (threads as u32 + SPARE_INSTANCES).max(MIN_INSTANCES),
        // Calls bounded by instructions, not time: the figures do not
        // depend on the machine's load.
        fuel_limit: Some(config.fuel),
        ..Default::default()
    })?;
    let index = Index::scan(&config.policies)?;
    let candidates = load_candidates(&runtime, &config.candidates, config.limits)?;
    let outcomes = if config.outcomes.is_empty() {
        None
    } else {
        Some(Outcomes::load(&config.outcomes).map_err(ReplayError::Outcomes)?)
    };
    let outcome_set = match &outcomes {
        None => None,
        Some(o) => Some(OutcomeSet {
            files: InputFile::list(
                &outcome_files(&config.outcomes).map_err(ReplayError::Outcomes)?,
            ),
            events: o.events(),
            skipped: o.skipped(),
            duplicates: o.duplicates(),
        }),
    };
    let options = Options {
        candidates: candidates
            .iter()
            .map(|c| CandidateId {
                name: c.name.clone(),
                digest: c.policy.identity().digest.clone(),
                settings_sha256: c.policy.settings_sha256().to_string(),
            })
            .collect(),
        estimator: config.estimator,
        fuel_per_call: config.fuel,
        memory_bytes: config.limits.memory_bytes,
        max_candidates: config.limits.max_candidates,
        outcomes: outcome_set,
    };
    let versions = LoggedVersions::new(runtime, index, config.limits);
    let job = Job {
        versions: &versions,
        candidates: &candidates,
        outcomes: outcomes.as_ref(),
        estimator: config.estimator,
    };
    let single = if config.measure_scaling {
        Some(on_one_core(|| job.run(&config.logs, 1, progress))?)
    } else {
        None
    };
    let all = job.run(&config.logs, threads, progress)?;
    let scaling = single.map(|s| Scaling::new(s.records_per_s(), all.threads, all.records_per_s()));
    tracing::debug!(
        records = all.tally.records,
        elapsed_s = all.elapsed_s,
        "replayed"
    );
    Ok((
        Partial::new(
            options,
            InputFile::list(&files),
            all.threads,
            all.elapsed_s,
            all.tally,
        ),
        scaling,
    ))
}
