//! `oasis replay`: run logged requests again, offline.
//!
//! ```text
//! oasis replay --logs decisions/ --policies deploy/policies            # determinism
//! oasis replay --logs decisions/ --policies deploy/policies \
//!              --candidate new.wasm [--settings s.toml]                 # divergence
//! ```
//!
//! Every logged decision names the version that made it (digest) and the
//! settings it ran with (hash). Replay finds the module by digest among the
//! policy directory's modules and its version store, and the settings by
//! hash among its manifests, so replaying the served version must reproduce
//! the logged output bit for bit; any difference is listed by request id.
//! With `--candidate`, the candidate runs on every logged request and its
//! divergence from the logged decisions is summarised with the same metrics
//! as shadow scoring. Records stream from the files (memory independent of
//! the log's size) and are scored on every core.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, mpsc};

use anyhow::{Context as _, bail};
use oasis::decision_log::outcomes::Outcomes;
use oasis::decision_log::{DecisionRecord, Records};
use oasis::divergence::{DecisionColumns, DivergenceStats, compare};
use oasis::ope::{Accumulator, Decision, Estimate, Estimator};
use oasis::{Policy, Runtime, RuntimeConfig, request};
use oasis_contract::ReasonBits;

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
    /// Instead of the logged versions, run this component and report its
    /// divergence from the logged decisions.
    #[arg(long)]
    pub candidate: Option<PathBuf>,
    /// Settings of the candidate (JSON, or TOML with a .toml extension).
    #[arg(long, requires = "candidate")]
    pub settings: Option<PathBuf>,
    /// Outcome events (files, directories, globs): estimate the candidate's
    /// value off-policy from the logged propensities.
    #[arg(long, num_args = 1.., requires = "candidate")]
    pub outcomes: Vec<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Differences listed at most.
    #[arg(long, default_value_t = 20)]
    pub show: usize,
    #[command(flatten)]
    pub limits: super::LimitArgs,
}

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let runtime = Runtime::new(RuntimeConfig {
        max_instances: (workers as u32 + 2).max(super::CLI_INSTANCES),
        ..Default::default()
    })?;
    let index = Index::scan(&args.policies)?;
    let candidate = match &args.candidate {
        Some(path) => {
            let settings = super::read_settings(args.settings.as_deref())?;
            Some(Arc::new(super::load_policy(
                &runtime,
                path,
                &settings,
                args.limits.limits(),
            )?))
        }
        None => None,
    };
    let outcomes = if args.outcomes.is_empty() {
        None
    } else {
        Some(Outcomes::load(&args.outcomes).context("reading the outcomes")?)
    };
    let mut records = Records::open(&args.logs).context("reading the decision logs")?;
    let policies = Policies {
        runtime,
        index,
        limits: args.limits.limits(),
        loaded: Mutex::new(HashMap::new()),
    };

    let (work_tx, work_rx) = mpsc::sync_channel::<DecisionRecord>(workers * 4);
    let work_rx = Mutex::new(work_rx);
    let (done_tx, done_rx) = mpsc::channel::<Outcome>();
    let report = std::thread::scope(|scope| -> anyhow::Result<Report> {
        for _ in 0..workers {
            let (rx, tx) = (&work_rx, done_tx.clone());
            let (policies, candidate, outcomes) = (&policies, candidate.clone(), outcomes.as_ref());
            scope.spawn(move || {
                loop {
                    let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok(record) = next else { break };
                    let outcome = replay_one(policies, candidate.as_deref(), outcomes, &record);
                    if tx.send(outcome).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        let reader = scope.spawn(move || -> anyhow::Result<(u64, u64)> {
            for record in records.by_ref() {
                let record = record.context("reading the decision logs")?;
                if work_tx.send(record).is_err() {
                    break;
                }
            }
            Ok((records.skipped(), records.truncated()))
        });
        let mut report = Report::default();
        let started = std::time::Instant::now();
        let mut shown = started;
        for outcome in done_rx {
            report.add(outcome);
            // Progress on long runs, on stderr (stdout stays the report).
            if shown.elapsed() >= std::time::Duration::from_secs(5) {
                shown = std::time::Instant::now();
                let secs = started.elapsed().as_secs_f64();
                eprintln!(
                    "replayed {} records in {secs:.0} s ({:.0}/s)",
                    report.records,
                    report.records as f64 / secs
                );
            }
        }
        let (skipped, truncated) = reader.join().expect("reader thread")?;
        report.skipped_lines = skipped;
        report.truncated_files = truncated;
        Ok(report)
    })?;
    let failed = report.failed();
    report.print(&args)?;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
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

/// What replaying one record gave.
enum Outcome {
    /// The logged version reproduced the logged decisions exactly, or not.
    Determinism {
        request_id: String,
        identical: bool,
        detail: Option<String>,
    },
    /// The candidate's decisions and their divergence from the logged ones.
    Candidate {
        divergence: Option<oasis::divergence::Divergence>,
        promoted: Vec<(String, bool, bool)>,
        /// Per promoted track: its rights holder, promoted in the log, by
        /// the candidate.
        holders: Vec<(String, bool, bool)>,
        error: Option<String>,
        /// The record's off-policy decisions, when outcomes were given.
        ope: Option<Vec<Decision>>,
    },
    /// A record that could not be replayed (module missing, bad request).
    Error { request_id: String, error: String },
    /// A record not replayed (the host's passthrough decided; a shadow's
    /// decisions when comparing a candidate).
    Skipped,
}

fn replay_one(
    policies: &Policies,
    candidate: Option<&Policy>,
    outcomes: Option<&Outcomes>,
    r: &DecisionRecord,
) -> Outcome {
    let error = |e: String| Outcome::Error {
        request_id: r.request_id.clone(),
        error: e,
    };
    let body = r.request.get().as_bytes();
    let parsed = match request::parse(body) {
        Ok(p) => p,
        Err(e) => return error(format!("logged request does not parse: {e}")),
    };
    let req = match parsed.validate(oasis::Limits::MAX_CANDIDATES) {
        Ok(v) => v,
        Err(e) => return error(format!("logged request is not valid: {e}")),
    };
    let logged = &r.decisions;
    if let Some(candidate) = candidate {
        if r.shadow {
            // A shadow's decisions were never served: not the logging policy's.
            return Outcome::Skipped;
        }
        let promoted_logged: Vec<bool> = logged
            .reasons
            .iter()
            .map(|b| b & oasis_contract::reason::PROMOTED != 0)
            .collect();
        return match candidate.score(&req) {
            Ok(out) => {
                let d = &out.decisions;
                let reasons: Vec<u16> = d.reasons.iter().map(|b| b.reason_bits()).collect();
                let div = compare(
                    DecisionColumns::new(&logged.scores, &logged.eligible, &logged.reasons),
                    DecisionColumns::new(&d.scores, &d.eligible, &reasons),
                    10,
                )
                .ok();
                let promoted = req
                    .candidates
                    .iter()
                    .enumerate()
                    .filter_map(|(i, c)| {
                        let camp = c.campaign.as_ref()?;
                        Some((
                            camp.id.to_string(),
                            promoted_logged.get(i).copied().unwrap_or(false),
                            reasons[i] & oasis_contract::reason::PROMOTED != 0,
                        ))
                    })
                    .collect();
                // Off-policy data: each campaign track's logged action and
                // propensity, the candidate's promote probability, the reward.
                let ope = outcomes.map(|o| {
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
                let holders = req
                    .candidates
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        (
                            c.rights_holder.to_string(),
                            promoted_logged.get(i).copied().unwrap_or(false),
                            reasons[i] & oasis_contract::reason::PROMOTED != 0,
                        )
                    })
                    .filter(|(_, l, n)| *l || *n)
                    .collect();
                Outcome::Candidate {
                    divergence: div,
                    promoted,
                    holders,
                    error: None,
                    ope,
                }
            }
            Err(e) => Outcome::Candidate {
                divergence: None,
                promoted: Vec::new(),
                holders: Vec::new(),
                error: Some(e.kind().as_str().to_string()),
                ope: None,
            },
        };
    }
    if r.arm == "passthrough" {
        return Outcome::Skipped;
    }
    let policy = match policies.get(&r.policy.digest, &r.settings_sha256) {
        Ok(p) => p,
        Err(e) => return error(format!("{e:#}")),
    };
    match policy.score(&req) {
        Ok(out) => {
            let d = &out.decisions;
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let reasons: Vec<u16> = d.reasons.iter().map(|b| b.reason_bits()).collect();
            let detail = if bits(&d.scores) != bits(&logged.scores) {
                Some("scores differ")
            } else if d.eligible != logged.eligible {
                Some("eligibility differs")
            } else if reasons != logged.reasons {
                Some("reasons differ")
            } else if bits(&d.propensity) != bits(&logged.propensity) {
                Some("propensities differ")
            } else {
                None
            };
            Outcome::Determinism {
                request_id: r.request_id.clone(),
                identical: detail.is_none(),
                detail: detail.map(String::from),
            }
        }
        Err(e) => Outcome::Determinism {
            request_id: r.request_id.clone(),
            identical: false,
            detail: Some(format!("the logged version failed on replay: {e}")),
        },
    }
}

/// The whole replay's figures.
#[derive(Default, serde::Serialize)]
struct Report {
    records: u64,
    replayed: u64,
    identical: u64,
    different: u64,
    skipped_passthrough: u64,
    errors: u64,
    skipped_lines: u64,
    truncated_files: u64,
    differences: Vec<(String, String)>,
    error_samples: Vec<(String, String)>,
    #[serde(skip)]
    divergence: Option<DivergenceStats>,
    divergence_summary: Option<oasis::divergence::DivergenceSummary>,
    candidate_errors: BTreeMap<String, u64>,
    /// Campaign id -> (promoted in the log, promoted by the candidate).
    promoted_per_campaign: BTreeMap<String, (u64, u64)>,
    /// Rights holder -> (share of the log's promotions, share of the
    /// candidate's): the exposure each holder gets under each policy.
    exposure_share_per_holder: BTreeMap<String, (f64, f64)>,
    #[serde(skip)]
    holder_counts: BTreeMap<String, (u64, u64)>,
    #[serde(skip)]
    ope: Option<Accumulator>,
    /// Off-policy estimate of the candidate's value, with outcomes.
    estimate: Option<Estimate>,
}

impl Report {
    fn add(&mut self, o: Outcome) {
        self.records += 1;
        match o {
            Outcome::Determinism {
                request_id,
                identical,
                detail,
            } => {
                self.replayed += 1;
                if identical {
                    self.identical += 1;
                } else {
                    self.different += 1;
                    if self.differences.len() < 1000 {
                        self.differences
                            .push((request_id, detail.unwrap_or_default()));
                    }
                }
            }
            Outcome::Candidate {
                divergence,
                promoted,
                holders,
                error,
                ope,
            } => {
                for (holder, logged, candidate) in holders {
                    let e = self.holder_counts.entry(holder).or_default();
                    e.0 += u64::from(logged);
                    e.1 += u64::from(candidate);
                }
                if let Some(decisions) = ope {
                    self.ope
                        .get_or_insert_with(|| Estimator::default().accumulator())
                        .add_request(decisions);
                }
                self.replayed += 1;
                let stats = self.divergence.get_or_insert_with(DivergenceStats::default);
                if let Some(kind) = error {
                    stats.record_error();
                    *self.candidate_errors.entry(kind).or_default() += 1;
                }
                if let Some(d) = divergence {
                    stats.add(&d);
                }
                for (campaign, logged, candidate) in promoted {
                    let e = self.promoted_per_campaign.entry(campaign).or_default();
                    e.0 += u64::from(logged);
                    e.1 += u64::from(candidate);
                }
            }
            Outcome::Error { request_id, error } => {
                self.errors += 1;
                if self.error_samples.len() < 100 {
                    self.error_samples.push((request_id, error));
                }
            }
            Outcome::Skipped => self.skipped_passthrough += 1,
        }
    }

    fn failed(&self) -> bool {
        self.different > 0 || self.errors > 0 || self.replayed == 0
    }

    fn print(mut self, args: &Args) -> anyhow::Result<()> {
        self.divergence_summary = self.divergence.as_ref().map(|d| d.summary());
        self.estimate = self.ope.take().map(Accumulator::finish);
        let (logged, candidate) = self
            .holder_counts
            .values()
            .fold((0, 0), |(a, b), (l, n)| (a + l, b + n));
        let share = |x: u64, total: u64| {
            if total == 0 {
                0.0
            } else {
                x as f64 / total as f64
            }
        };
        self.exposure_share_per_holder = self
            .holder_counts
            .iter()
            .map(|(h, (l, n))| (h.clone(), (share(*l, logged), share(*n, candidate))))
            .collect();
        if args.json {
            println!("{}", serde_json::to_string_pretty(&self)?);
            return Ok(());
        }
        println!(
            "records {}  replayed {}  passthrough (not replayed) {}  errors {}  unreadable lines {}",
            self.records, self.replayed, self.skipped_passthrough, self.errors, self.skipped_lines
        );
        match &self.divergence_summary {
            None => println!(
                "determinism: {} identical, {} different{}",
                self.identical,
                self.different,
                if self.different == 0 && self.replayed > 0 {
                    " (bit for bit)"
                } else {
                    ""
                }
            ),
            Some(s) => {
                if let Some(m) = &s.mean {
                    println!(
                        "candidate vs logged: top-10 overlap {:.3}, rank corr {:.3}, score mae {:.4}, promoted {:+.2}%, eligible {:+.2}%",
                        m.topk_overlap,
                        m.rank_correlation,
                        m.score_mae,
                        m.promoted_share_diff * 100.0,
                        m.eligibility_rate_diff * 100.0
                    );
                }
                println!("candidate errors: {} of {}", s.errors, s.samples + s.errors);
                match &self.estimate {
                    Some(Estimate::Value(e)) => println!(
                        "value (mean reward per campaign-track decision): candidate {:.4} [{:.4}, {:.4}] (self-normalised IPS, {:.0}% bootstrap), IPS {:.4}, clipped IPS {:.4}; logged policy {:.4}; ESS {:.0} of {} decisions",
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
                        "value: no support: the logged policy never took the candidate's action on {:.1}% of {} decisions (it did not explore there)",
                        n.unsupported_share * 100.0,
                        n.decisions
                    ),
                    Some(Estimate::NoData { .. }) => {
                        println!("value: no decisions to estimate from")
                    }
                    None => {}
                }
                println!("{:<24} {:>10} {:>10}", "campaign", "logged", "candidate");
                for (c, (l, n)) in &self.promoted_per_campaign {
                    println!("{c:<24} {l:>10} {n:>10}");
                }
                println!(
                    "{:<24} {:>10} {:>10}",
                    "rights holder", "logged %", "candidate %"
                );
                for (h, (l, n)) in &self.exposure_share_per_holder {
                    let h = if h.is_empty() {
                        "(unknown)"
                    } else {
                        h.as_str()
                    };
                    println!("{h:<24} {:>10.1} {:>10.1}", l * 100.0, n * 100.0);
                }
            }
        }
        for (id, what) in self.differences.iter().take(args.show) {
            println!("  different: {id}: {what}");
        }
        for (id, e) in self.error_samples.iter().take(args.show) {
            println!("  error: {id}: {}", oasis::visible(e));
        }
        Ok(())
    }
}
