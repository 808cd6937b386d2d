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
mod policies;
mod report;
pub mod text;

use std::path::PathBuf;

pub use error::ReplayError;
pub(crate) use error::chain;
pub use job::{PROGRESS_EVERY, Progress};
pub use policies::{CandidateSource, CandidateSpec};
pub use report::{
    CandidateReport, OutcomeCounts, Report, SCORE_BIN_WIDTH, SCORE_BINS, Scaling, Side,
};

use crate::decision_log::outcomes::Outcomes;
use crate::{Limits, Runtime, RuntimeConfig};
use job::{Job, on_one_core};
use policies::{Index, LoggedVersions, load_candidates};

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
/// };
/// let report = replay::run(&config, &mut |p| eprintln!("{} records", p.records))?;
/// print!("{}", replay::text::render(&report, 20));
/// std::process::exit(if report.failed() { 1 } else { 0 });
/// # }
/// ```
pub fn run(config: &Config, progress: &mut dyn FnMut(&Progress)) -> Result<Report, ReplayError> {
    // Said first, before the engine is built: an empty directory is not a
    // replay of zero records.
    if crate::decision_log::files(&config.logs)
        .map_err(ReplayError::Logs)?
        .is_empty()
    {
        return Err(ReplayError::NoLogFiles {
            inputs: config.logs.clone(),
        });
    }
    let threads = config.threads();
    let runtime = Runtime::new(RuntimeConfig {
        max_instances: (threads as u32 + SPARE_INSTANCES).max(MIN_INSTANCES),
        ..Default::default()
    })?;
    let index = Index::scan(&config.policies)?;
    let candidates = load_candidates(&runtime, &config.candidates, config.limits)?;
    let outcomes = if config.outcomes.is_empty() {
        None
    } else {
        Some(Outcomes::load(&config.outcomes).map_err(ReplayError::Outcomes)?)
    };
    let versions = LoggedVersions::new(runtime, index, config.limits);
    let job = Job {
        versions: &versions,
        candidates: &candidates,
        outcomes: outcomes.as_ref(),
    };
    let single = if config.measure_scaling {
        Some(on_one_core(|| job.run(&config.logs, 1, progress))?)
    } else {
        None
    };
    let mut report = job.run(&config.logs, threads, progress)?;
    if let Some(single) = single {
        report.scaling = Some(Scaling::new(&single, &report));
    }
    report.finish();
    Ok(report)
}
