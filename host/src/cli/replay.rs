//! `oasis replay`: run logged requests again, offline.
//!
//! ```text
//! oasis replay --logs decisions/ --policies deploy/policies            # determinism
//! oasis replay --logs decisions/ --policies deploy/policies \
//!              --candidate new.wasm=s.toml --candidate deploy/policies/x.toml \
//!              [--outcomes outcomes/]                                   # candidates
//! ```
//!
//! Every logged decision names the version that made it (digest) and the
//! settings it ran with (hash). Replay finds the module by digest among the
//! policy directory's modules and its version store, and the settings by
//! hash among its manifests, so replaying the served version must reproduce
//! the logged output bit for bit; any difference is listed by request id.
//!
//! With one or more `--candidate`s, every candidate runs on every logged
//! request and is compared with the logged decisions: the same metrics as
//! shadow scoring, promoted tracks per campaign and each rights holder's
//! exposure share, and with `--outcomes` an off-policy estimate of its
//! value ([`oasis::ope`]).
//!
//! Records stream from the files (memory independent of the log's size,
//! apart from the per-request sums of the estimates) and are parsed and
//! scored on every core: one thread only reads lines, the workers parse
//! and score (a record and its request in one pass, [`ReplayRecord`]).
//! `--measure-scaling` replays once confined to one core and once on all,
//! and reports the parallel efficiency.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use oasis::decision_log::outcomes::Outcomes;
use oasis::decision_log::{DecisionRecord, Records, ReplayRecord};
use oasis::divergence::{DecisionColumns, Divergence, DivergenceStats, DivergenceSummary, compare};
use oasis::ope::{Accumulator, Decision, Estimate, Estimator};
use oasis::request::Validate;
use oasis::{Policy, Runtime, RuntimeConfig, request};
use oasis_contract::ReasonBits;
use oasis_contract::reason::PROMOTED;

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
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1);
    let runtime = Runtime::new(RuntimeConfig {
        max_instances: (threads as u32 + 2).max(super::CLI_INSTANCES),
        ..Default::default()
    })?;
    let index = Index::scan(&args.policies)?;
    let candidates = load_candidates(&runtime, &args)?;
    let outcomes = if args.outcomes.is_empty() {
        None
    } else {
        Some(Outcomes::load(&args.outcomes).context("reading the outcomes")?)
    };
    let policies = Policies {
        runtime,
        index,
        limits: args.limits.limits(),
        loaded: Mutex::new(HashMap::new()),
    };
    let job = Job {
        policies: &policies,
        candidates: &candidates,
        outcomes: outcomes.as_ref(),
    };
    let single = if args.measure_scaling {
        Some(on_one_core(|| job.run(&args.logs, 1, args.json))?)
    } else {
        None
    };
    let mut report = job.run(&args.logs, threads, args.json)?;
    if let Some(single) = single {
        report.scaling = Some(Scaling::new(&single, &report));
    }
    let failed = report.failed();
    report.print(&args)?;
    Ok(if failed {
        ExitCode::from(super::exit::CHECK_FAILED)
    } else {
        ExitCode::SUCCESS
    })
}

/// Runs `f` with this thread, and the threads it starts, confined to one
/// of the cores it may use; the affinity is restored afterwards. Unpinned,
/// a "single-thread" replay still spreads its line reader and report over
/// the other cores, which overstates what one core does (measured: 76%
/// efficiency unpinned, 87-100% pinned on the same logs).
fn on_one_core<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: `cpu_set_t` is plain data (zeroed is the empty set);
    // `sched_getaffinity`/`sched_setaffinity` on pid 0 read and change the
    // calling thread's mask only, through a pointer to a set of the size
    // passed.
    unsafe {
        let mut before: libc::cpu_set_t = std::mem::zeroed();
        let size = std::mem::size_of::<libc::cpu_set_t>();
        if libc::sched_getaffinity(0, size, &mut before) != 0 {
            return f();
        }
        let Some(first) = (0..libc::CPU_SETSIZE as usize).find(|&c| libc::CPU_ISSET(c, &before))
        else {
            return f();
        };
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(first, &mut one);
        let pinned = libc::sched_setaffinity(0, size, &one) == 0;
        let out = f();
        if pinned {
            libc::sched_setaffinity(0, size, &before);
        }
        out
    }
}

/// A policy evaluated on the logged requests.
struct Candidate {
    /// How the reports name it.
    name: String,
    module: PathBuf,
    policy: Policy,
}

/// Loads every `--candidate`, naming each after its manifest or module
/// (and settings file), made unique.
fn load_candidates(runtime: &Runtime, args: &Args) -> anyhow::Result<Vec<Candidate>> {
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
    let mut out: Vec<Candidate> = Vec::with_capacity(args.candidates.len());
    for spec in &args.candidates {
        let (name, module, settings, limits) = if spec.ends_with(".toml") && !spec.contains('=') {
            let manifest = oasis::server::manifest::Manifest::load(Path::new(spec))
                .with_context(|| format!("candidate {spec}"))?;
            (
                manifest.key,
                manifest.module,
                manifest.settings_json,
                manifest.limits,
            )
        } else {
            let (module, settings_path) = match spec.split_once('=') {
                Some((m, s)) => (PathBuf::from(m), Some(PathBuf::from(s))),
                None => (PathBuf::from(spec), args.settings.clone()),
            };
            let stem = |p: &Path| {
                p.file_stem()
                    .map_or_else(|| p.display().to_string(), |s| s.to_string_lossy().into())
            };
            let name = match &settings_path {
                Some(s) => format!("{}[{}]", stem(&module), stem(s)),
                None => stem(&module),
            };
            let settings = super::read_settings(settings_path.as_deref())
                .with_context(|| format!("candidate {spec}"))?;
            (name, module, settings, args.limits.limits())
        };
        let policy = super::load_policy(runtime, &module, &settings, limits)
            .with_context(|| format!("candidate {spec}"))?;
        let mut unique = name.clone();
        let mut n = 1;
        while out.iter().any(|c| c.name == unique) {
            n += 1;
            unique = format!("{name}#{n}");
        }
        out.push(Candidate {
            name: unique,
            module,
            policy,
        });
    }
    Ok(out)
}

/// The logged versions, found by digest and settings hash.
struct Policies {
    runtime: Runtime,
    index: Index,
    limits: oasis::Limits,
    loaded: Mutex<HashMap<(String, String), Arc<Policy>>>,
}

impl Policies {
    fn get(&self, digest: &str, settings_sha256: &str) -> anyhow::Result<Arc<Policy>> {
        let key = (digest.to_string(), settings_sha256.to_string());
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = loaded.get(&key) {
            return Ok(p.clone());
        }
        let module = self.index.modules.get(digest).with_context(|| {
            format!("no module with digest {digest} in the policy directory or its versions/")
        })?;
        let settings = self
            .index
            .settings
            .get(settings_sha256)
            .with_context(|| format!("no manifest with settings of hash {settings_sha256}"))?;
        let policy = Arc::new(super::load_policy(
            &self.runtime,
            module,
            settings,
            self.limits,
        )?);
        loaded.insert(key, policy.clone());
        Ok(policy)
    }
}

/// Modules by digest and settings by hash, from a policy directory.
struct Index {
    modules: HashMap<String, PathBuf>,
    settings: HashMap<String, String>,
}

impl Index {
    fn scan(dir: &Path) -> anyhow::Result<Self> {
        let mut modules = HashMap::new();
        let mut settings = HashMap::new();
        let entries = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read the policy directory {}", dir.display()))?;
        let mut wasm: Vec<PathBuf> = Vec::new();
        for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            match path.extension().and_then(|e| e.to_str()) {
                Some("wasm") => wasm.push(path),
                Some("toml") if path.file_name().is_some_and(|n| n != "routes.toml") => {
                    if let Ok(m) = oasis::server::manifest::Manifest::load(&path) {
                        settings.insert(
                            oasis::cache::sha256_hex(m.settings_json.as_bytes()),
                            m.settings_json,
                        );
                    }
                }
                _ => {}
            }
        }
        if let Ok(keys) = std::fs::read_dir(dir.join(oasis::server::versions::VERSIONS_DIR)) {
            for key in keys.filter_map(|e| e.ok().map(|e| e.path())) {
                if let Ok(files) = std::fs::read_dir(&key) {
                    wasm.extend(
                        files
                            .filter_map(|e| e.ok().map(|e| e.path()))
                            .filter(|p| p.extension().is_some_and(|e| e == "wasm")),
                    );
                }
            }
        }
        for path in wasm {
            let bytes =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            modules.insert(oasis::cache::digest(&bytes), path);
        }
        if modules.is_empty() {
            bail!("no modules in {}", dir.display());
        }
        Ok(Index { modules, settings })
    }
}

/// What one replay pass needs; [`Job::run`] may be called more than once.
struct Job<'a> {
    policies: &'a Policies,
    candidates: &'a [Candidate],
    outcomes: Option<&'a Outcomes>,
}

impl Job<'_> {
    /// Replays every record of `logs` on `threads` workers.
    fn run(
        &self,
        logs: &[PathBuf],
        threads: usize,
        quiet_progress: bool,
    ) -> anyhow::Result<Report> {
        let mut records = Records::open(logs).context("reading the decision logs")?;
        let (work_tx, work_rx) = mpsc::sync_channel::<Vec<u8>>(threads * 8);
        let work_rx = Mutex::new(work_rx);
        let (done_tx, done_rx) = mpsc::channel::<Outcome>();
        let started = Instant::now();
        let mut report = std::thread::scope(|scope| -> anyhow::Result<Report> {
            for _ in 0..threads {
                let (rx, tx) = (&work_rx, done_tx.clone());
                scope.spawn(move || {
                    loop {
                        let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok(line) = next else { break };
                        if tx.send(self.replay_line(&line)).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(done_tx);
            // The reader only splits lines: parsing is the workers' job, so
            // that one thread does not bound the whole replay.
            let reader = scope.spawn(move || -> anyhow::Result<(u64, u64)> {
                while let Some(line) = records.next_raw() {
                    let line = line.context("reading the decision logs")?;
                    if work_tx.send(line).is_err() {
                        break;
                    }
                }
                Ok((records.skipped(), records.truncated()))
            });
            let mut report = Report::new(self.candidates);
            let mut shown = started;
            for outcome in done_rx {
                report.add(outcome);
                // Progress on long runs, on stderr (stdout stays the report).
                if shown.elapsed() >= Duration::from_secs(5) && !quiet_progress {
                    shown = Instant::now();
                    let secs = started.elapsed().as_secs_f64();
                    eprintln!(
                        "replayed {} records in {secs:.0} s ({:.0}/s)",
                        report.records,
                        report.records as f64 / secs
                    );
                }
            }
            let (skipped, truncated) = reader.join().expect("reader thread")?;
            report.skipped_lines += skipped;
            report.truncated_files = truncated;
            Ok(report)
        })?;
        report.threads = threads;
        report.elapsed_s = started.elapsed().as_secs_f64();
        report.records_per_s = report.records as f64 / report.elapsed_s.max(1e-9);
        Ok(report)
    }

    fn replay_line(&self, line: &[u8]) -> Outcome {
        // One pass: the request is parsed in place with the record.
        if let Ok(mut record) = ReplayRecord::from_line(line)
            && let Some(request) = record.request.take()
        {
            return self.replay_one(&record, request);
        }
        // Not readable that way: as a plain record, to say what is wrong.
        match DecisionRecord::from_line(line) {
            Ok(r) => match request::parse(r.request.get().as_bytes()) {
                Ok(_) => Outcome::Unreadable,
                Err(e) => Outcome::Error {
                    request_id: r.request_id,
                    error: format!("logged request does not parse: {e}"),
                },
            },
            Err(_) => Outcome::Unreadable,
        }
    }

    fn replay_one(&self, r: &ReplayRecord<'_>, parsed: request::ScoreRequest<'_>) -> Outcome {
        let error = |e: String| Outcome::Error {
            request_id: r.request_id.to_string(),
            error: e,
        };
        let mut req = match parsed.validate(oasis::Limits::MAX_CANDIDATES) {
            Ok(v) => v,
            Err(e) => return error(format!("logged request is not valid: {e}")),
        };
        // The delivery state the server filled in, as logged: the batch is
        // rebuilt exactly, and replay never reads or writes a store.
        if let Some(fill) = &r.state {
            fill.apply(&mut req);
        }
        if !self.candidates.is_empty() {
            if r.shadow {
                // A shadow's decisions were never served: not the logging
                // policy's.
                return Outcome::Skipped;
            }
            return self.compare_candidates(r, &req);
        }
        if r.arm == "passthrough" {
            return Outcome::Skipped;
        }
        let policy = match self.policies.get(&r.policy.digest, &r.settings_sha256) {
            Ok(p) => p,
            Err(e) => return error(format!("{e:#}")),
        };
        let logged = &r.decisions;
        let detail = match policy.score(&req) {
            Ok(out) => {
                let d = &out.decisions;
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                let reasons: Vec<u16> = d.reasons.iter().map(|b| b.reason_bits()).collect();
                if bits(&d.scores) != bits(&logged.scores) {
                    Some("scores differ".to_string())
                } else if d.eligible != logged.eligible {
                    Some("eligibility differs".to_string())
                } else if reasons != logged.reasons {
                    Some("reasons differ".to_string())
                } else if bits(&d.propensity) != bits(&logged.propensity) {
                    Some("propensities differ".to_string())
                } else {
                    None
                }
            }
            Err(e) => Some(format!("the logged version failed on replay: {e}")),
        };
        Outcome::Determinism {
            request_id: r.request_id.to_string(),
            detail,
        }
    }

    /// Every candidate on one logged request.
    fn compare_candidates(&self, r: &ReplayRecord<'_>, req: &oasis::ValidRequest<'_>) -> Outcome {
        let logged = &r.decisions;
        let promoted_logged = |i: usize| logged.reasons.get(i).is_some_and(|b| b & PROMOTED != 0);
        let mut rows: Vec<Row> = Vec::new();
        let mut row_of: HashMap<usize, usize> = HashMap::new();
        let mut row = |i: usize, rows: &mut Vec<Row>| -> usize {
            *row_of.entry(i).or_insert_with(|| {
                let c = &req.candidates[i];
                rows.push(Row {
                    campaign: c.campaign.as_ref().map(|camp| camp.id.to_string()),
                    holder: c.rights_holder.to_string(),
                    logged: promoted_logged(i),
                    by: vec![false; self.candidates.len()],
                });
                rows.len() - 1
            })
        };
        for i in (0..req.candidates.len()).filter(|&i| promoted_logged(i)) {
            row(i, &mut rows);
        }
        let mut each = Vec::with_capacity(self.candidates.len());
        for (k, candidate) in self.candidates.iter().enumerate() {
            let out = match candidate.policy.score(req) {
                Ok(out) => out,
                Err(e) => {
                    each.push(CandidateOutcome {
                        divergence: None,
                        scores: Vec::new(),
                        error: Some(e.kind().as_str().to_string()),
                        ope: None,
                    });
                    continue;
                }
            };
            let d = &out.decisions;
            let reasons: Vec<u16> = d.reasons.iter().map(|b| b.reason_bits()).collect();
            let divergence = compare(
                DecisionColumns::new(&logged.scores, &logged.eligible, &logged.reasons),
                DecisionColumns::new(&d.scores, &d.eligible, &reasons),
                10,
            )
            .ok();
            for (i, _) in reasons
                .iter()
                .enumerate()
                .filter(|(_, b)| *b & PROMOTED != 0)
            {
                let at = row(i, &mut rows);
                rows[at].by[k] = true;
            }
            // Off-policy data: each campaign track's logged action and
            // propensity, the candidate's promote probability, the reward.
            let ope = self.outcomes.map(|o| {
                req.candidates
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.campaign.is_some())
                    .map(|(i, c)| {
                        Decision::from_reasons(
                            logged.reasons[i],
                            logged.propensity[i],
                            d.propensity[i],
                            o.reward(&r.request_id, &c.id),
                        )
                    })
                    .collect()
            });
            each.push(CandidateOutcome {
                divergence,
                scores: histogram(&d.scores),
                error: None,
                ope,
            });
        }
        let mut hasher = std::hash::DefaultHasher::new();
        r.request_id.hash(&mut hasher);
        Outcome::Candidates {
            key: hasher.finish(),
            logged_scores: histogram(&logged.scores),
            rows,
            each,
        }
    }
}

/// What replaying one record gave.
enum Outcome {
    /// The logged version reproduced the logged decisions exactly (no
    /// detail), or not.
    Determinism {
        request_id: String,
        detail: Option<String>,
    },
    /// The candidates' decisions on one logged request.
    Candidates {
        /// Orders the request in the off-policy bootstrap.
        key: u64,
        /// The logged scores' histogram.
        logged_scores: Vec<u64>,
        /// Tracks promoted by the log or by any candidate.
        rows: Vec<Row>,
        /// One per candidate, in order.
        each: Vec<CandidateOutcome>,
    },
    /// A record that could not be replayed (module missing, bad request).
    Error { request_id: String, error: String },
    /// A record not replayed (the host's passthrough decided; a shadow's
    /// decisions when comparing candidates).
    Skipped,
    /// A line that is not a record (torn, garbage).
    Unreadable,
}

/// A track promoted by the log or by a candidate.
struct Row {
    campaign: Option<String>,
    holder: String,
    logged: bool,
    /// Promoted by each candidate.
    by: Vec<bool>,
}

/// One candidate on one logged request.
struct CandidateOutcome {
    divergence: Option<Divergence>,
    /// Its scores' histogram.
    scores: Vec<u64>,
    error: Option<String>,
    ope: Option<Vec<Decision>>,
}

/// The whole replay's figures.
#[derive(serde::Serialize)]
struct Report {
    records: u64,
    replayed: u64,
    identical: u64,
    different: u64,
    skipped_passthrough: u64,
    errors: u64,
    skipped_lines: u64,
    truncated_files: u64,
    /// Worker threads, wall time and rate of this pass.
    threads: usize,
    elapsed_s: f64,
    records_per_s: f64,
    /// With `--measure-scaling`: one thread against all.
    scaling: Option<Scaling>,
    differences: Vec<(String, String)>,
    error_samples: Vec<(String, String)>,
    /// The logged decisions, with candidates: what the log promoted.
    logged: Option<Side>,
    candidates: Vec<CandidateReport>,
}

/// Promotions under one policy: per campaign, and each rights holder's
/// share of them (the exposure each holder gets).
#[derive(Default, serde::Serialize)]
struct Side {
    /// Scores of every candidate, in [`SCORE_BINS`] bins of
    /// [`SCORE_BIN_WIDTH`] from 0 (the first bin also takes scores below
    /// 0, the last those above).
    score_histogram: Vec<u64>,
    promoted: u64,
    promoted_per_campaign: BTreeMap<String, u64>,
    exposure_share_per_holder: BTreeMap<String, f64>,
    #[serde(skip)]
    holder_counts: BTreeMap<String, u64>,
}

/// Bins of the score histograms.
const SCORE_BINS: usize = 30;
/// Width of a score histogram bin.
const SCORE_BIN_WIDTH: f64 = 0.1;

/// Counts `scores` into a [`SCORE_BINS`]-bin histogram.
fn histogram(scores: &[f64]) -> Vec<u64> {
    let mut h = vec![0; SCORE_BINS];
    for s in scores.iter().filter(|s| s.is_finite()) {
        let bin = (s / SCORE_BIN_WIDTH)
            .floor()
            .clamp(0.0, (SCORE_BINS - 1) as f64) as usize;
        h[bin] += 1;
    }
    h
}

impl Side {
    fn add_scores(&mut self, h: &[u64]) {
        if self.score_histogram.is_empty() {
            self.score_histogram = vec![0; SCORE_BINS];
        }
        for (a, b) in self.score_histogram.iter_mut().zip(h) {
            *a += b;
        }
    }

    fn add(&mut self, campaign: Option<&str>, holder: &str) {
        self.promoted += 1;
        if let Some(c) = campaign {
            *self.promoted_per_campaign.entry(c.to_string()).or_default() += 1;
        }
        *self.holder_counts.entry(holder.to_string()).or_default() += 1;
    }

    fn finish(&mut self) {
        let total = self.promoted.max(1) as f64;
        self.exposure_share_per_holder = self
            .holder_counts
            .iter()
            .map(|(h, n)| (h.clone(), *n as f64 / total))
            .collect();
    }
}

/// One candidate's figures.
#[derive(serde::Serialize)]
struct CandidateReport {
    name: String,
    module: PathBuf,
    digest: String,
    settings_sha256: String,
    #[serde(skip)]
    stats: DivergenceStats,
    /// The shadow metrics against the logged decisions.
    divergence: Option<DivergenceSummary>,
    /// Calls that failed, by error kind.
    errors: BTreeMap<String, u64>,
    #[serde(flatten)]
    side: Side,
    #[serde(skip)]
    ope: Option<Accumulator>,
    /// Off-policy estimate of its value, with outcomes.
    estimate: Option<Estimate>,
}

/// One pass on one thread against one on all.
#[derive(serde::Serialize)]
struct Scaling {
    single_thread_records_per_s: f64,
    threads: usize,
    records_per_s: f64,
    /// records_per_s / (threads × single_thread_records_per_s).
    efficiency: f64,
}

impl Scaling {
    fn new(single: &Report, all: &Report) -> Scaling {
        Scaling {
            single_thread_records_per_s: single.records_per_s,
            threads: all.threads,
            records_per_s: all.records_per_s,
            efficiency: all.records_per_s / (all.threads as f64 * single.records_per_s.max(1e-9)),
        }
    }
}

impl Report {
    fn new(candidates: &[Candidate]) -> Report {
        Report {
            records: 0,
            replayed: 0,
            identical: 0,
            different: 0,
            skipped_passthrough: 0,
            errors: 0,
            skipped_lines: 0,
            truncated_files: 0,
            threads: 0,
            elapsed_s: 0.0,
            records_per_s: 0.0,
            scaling: None,
            differences: Vec::new(),
            error_samples: Vec::new(),
            logged: (!candidates.is_empty()).then(Side::default),
            candidates: candidates
                .iter()
                .map(|c| CandidateReport {
                    name: c.name.clone(),
                    module: c.module.clone(),
                    digest: c.policy.identity().digest.clone(),
                    settings_sha256: c.policy.settings_sha256().to_string(),
                    stats: DivergenceStats::default(),
                    divergence: None,
                    errors: BTreeMap::new(),
                    side: Side::default(),
                    ope: None,
                    estimate: None,
                })
                .collect(),
        }
    }

    fn add(&mut self, o: Outcome) {
        if matches!(o, Outcome::Unreadable) {
            self.skipped_lines += 1;
            return;
        }
        self.records += 1;
        match o {
            Outcome::Determinism { request_id, detail } => {
                self.replayed += 1;
                match detail {
                    None => self.identical += 1,
                    Some(detail) => {
                        self.different += 1;
                        if self.differences.len() < 1000 {
                            self.differences.push((request_id, detail));
                        }
                    }
                }
            }
            Outcome::Candidates {
                key,
                logged_scores,
                rows,
                each,
            } => {
                self.replayed += 1;
                let logged = self.logged.get_or_insert_with(Side::default);
                logged.add_scores(&logged_scores);
                for row in &rows {
                    if row.logged {
                        logged.add(row.campaign.as_deref(), &row.holder);
                    }
                    for (k, c) in self.candidates.iter_mut().enumerate() {
                        if row.by[k] {
                            c.side.add(row.campaign.as_deref(), &row.holder);
                        }
                    }
                }
                for (c, o) in self.candidates.iter_mut().zip(each) {
                    c.side.add_scores(&o.scores);
                    if let Some(kind) = o.error {
                        c.stats.record_error();
                        *c.errors.entry(kind).or_default() += 1;
                    }
                    if let Some(d) = o.divergence {
                        c.stats.add(&d);
                    }
                    if let Some(decisions) = o.ope {
                        c.ope
                            .get_or_insert_with(|| Estimator::default().accumulator())
                            .add_keyed_request(key, decisions);
                    }
                }
            }
            Outcome::Error { request_id, error } => {
                self.errors += 1;
                if self.error_samples.len() < 100 {
                    self.error_samples.push((request_id, error));
                }
            }
            Outcome::Skipped => self.skipped_passthrough += 1,
            Outcome::Unreadable => unreachable!("counted above"),
        }
    }

    fn failed(&self) -> bool {
        self.different > 0 || self.errors > 0 || self.replayed == 0
    }

    fn print(mut self, args: &Args) -> anyhow::Result<()> {
        if let Some(l) = self.logged.as_mut() {
            l.finish();
        }
        for c in &mut self.candidates {
            c.divergence = Some(c.stats.summary());
            c.estimate = c.ope.take().map(Accumulator::finish);
            c.side.finish();
        }
        if let Some(path) = &args.html {
            let page = super::replay_html::render(&serde_json::to_value(&self)?, SCORE_BIN_WIDTH);
            std::fs::write(path, page)
                .with_context(|| format!("cannot write the report {}", path.display()))?;
            eprintln!("report written to {}", path.display());
        }
        if args.json {
            println!("{}", serde_json::to_string_pretty(&self)?);
            return Ok(());
        }
        println!(
            "records {}  replayed {}  passthrough/shadow (not replayed) {}  errors {}  unreadable lines {}",
            self.records, self.replayed, self.skipped_passthrough, self.errors, self.skipped_lines
        );
        println!(
            "{:.1} s on {} threads: {:.0} records/s",
            self.elapsed_s, self.threads, self.records_per_s
        );
        if let Some(s) = &self.scaling {
            println!(
                "scaling: 1 core {:.0} records/s, {} threads {:.0} records/s: {:.0}% of {} × the one-core rate",
                s.single_thread_records_per_s,
                s.threads,
                s.records_per_s,
                s.efficiency * 100.0,
                s.threads
            );
        }
        if self.candidates.is_empty() {
            println!(
                "determinism: {} identical, {} different{}",
                self.identical,
                self.different,
                if self.different == 0 && self.replayed > 0 {
                    " (bit for bit)"
                } else {
                    ""
                }
            );
        } else {
            self.print_candidates(args.show);
        }
        for (id, what) in self.differences.iter().take(args.show) {
            println!("  different: {id}: {what}");
        }
        for (id, e) in self.error_samples.iter().take(args.show) {
            println!("  error: {id}: {}", oasis::visible(e));
        }
        Ok(())
    }

    fn print_candidates(&self, show: usize) {
        for c in &self.candidates {
            println!();
            println!(
                "candidate {} ({}, settings {})",
                c.name,
                c.module.display(),
                &c.settings_sha256[..c.settings_sha256.len().min(12)]
            );
            let Some(s) = &c.divergence else { continue };
            if let Some(m) = &s.mean {
                println!(
                    "  vs logged: top-10 overlap {:.3}, rank corr {:.3}, score mae {:.4}, promoted {:+.2}%, eligible {:+.2}%",
                    m.topk_overlap,
                    m.rank_correlation,
                    m.score_mae,
                    m.promoted_share_diff * 100.0,
                    m.eligibility_rate_diff * 100.0
                );
            }
            println!(
                "  errors: {} of {} requests",
                s.errors,
                s.samples + s.errors
            );
            match &c.estimate {
                Some(Estimate::Value(e)) => println!(
                    "  value (mean reward per campaign-track decision): {:.4} [{:.4}, {:.4}] (self-normalised IPS, {:.0}% bootstrap), IPS {:.4}, clipped IPS {:.4}; logged policy {:.4}; ESS {:.0} of {} decisions",
                    e.snips,
                    e.snips_ci.low,
                    e.snips_ci.high,
                    e.level * 100.0,
                    e.ips,
                    e.clipped_ips,
                    e.logged_value,
                    e.ess,
                    e.decisions
                ),
                Some(Estimate::NoSupport(n)) => println!(
                    "  value: no support: the logged policy never took the candidate's action on {:.1}% of {} decisions (it did not explore there)",
                    n.unsupported_share * 100.0,
                    n.decisions
                ),
                Some(Estimate::NoData { .. }) => println!("  value: no decisions to estimate from"),
                None => {}
            }
        }
        let Some(logged) = &self.logged else { return };
        let width = self
            .candidates
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(0)
            .max(10);
        let header = |first: &str, unit: &str| {
            let mut line = format!("{first:<24} {:>width$}", format!("logged{unit}"));
            for c in &self.candidates {
                line += &format!(" {:>width$}", c.name);
            }
            println!("{line}");
        };
        println!();
        header("promoted per campaign", "");
        // Campaigns by promotions under any policy, most first.
        let mut campaigns: BTreeMap<&str, u64> = BTreeMap::new();
        for side in std::iter::once(logged).chain(self.candidates.iter().map(|c| &c.side)) {
            for (c, n) in &side.promoted_per_campaign {
                *campaigns.entry(c.as_str()).or_default() += n;
            }
        }
        let mut order: Vec<(&str, u64)> = campaigns.into_iter().collect();
        order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let count = |side: &Side, c: &str| side.promoted_per_campaign.get(c).copied().unwrap_or(0);
        for (c, _) in order.iter().take(show) {
            let mut line = format!("{c:<24} {:>width$}", count(logged, c));
            for cand in &self.candidates {
                line += &format!(" {:>width$}", count(&cand.side, c));
            }
            println!("{line}");
        }
        if order.len() > show {
            println!(
                "({} more campaigns: --show N or --json)",
                order.len() - show
            );
        }
        let mut line = format!("{:<24} {:>width$}", "all promotions", logged.promoted);
        for cand in &self.candidates {
            line += &format!(" {:>width$}", cand.side.promoted);
        }
        println!("{line}");
        println!();
        header("rights holder exposure", " %");
        let mut holders: Vec<&String> = logged
            .exposure_share_per_holder
            .keys()
            .chain(
                self.candidates
                    .iter()
                    .flat_map(|c| c.side.exposure_share_per_holder.keys()),
            )
            .collect();
        holders.sort();
        holders.dedup();
        let share = |side: &Side, h: &str| {
            side.exposure_share_per_holder
                .get(h)
                .copied()
                .unwrap_or(0.0)
                * 100.0
        };
        for h in holders {
            let name = if h.is_empty() {
                "(unknown)"
            } else {
                h.as_str()
            };
            let mut line = format!("{name:<24} {:>width$.1}", share(logged, h));
            for cand in &self.candidates {
                line += &format!(" {:>width$.1}", share(&cand.side, h));
            }
            println!("{line}");
        }
    }
}
