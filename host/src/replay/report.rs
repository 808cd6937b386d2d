//! [`Report`]: the figures of a replay. Workers' [`Outcome`]s are summed
//! record by record into a [`Tally`], which is what a shard writes as its
//! partial result and what partials merge into; once every record is in,
//! [`Report::finish`] computes what needs them all (shares, divergence
//! means, estimates).
//!
//! Every sum of the tally is exact or of integers (counts, [`ExactSum`]s,
//! per-request estimator sums summed in a total order), so a tally does not
//! depend on the order in which records arrived, nor on how the logs were
//! split into shards: merged partials give the single run's report.
//!
//! Its JSON form (`Serialize`) is what `oasis replay --json` prints and what
//! the [HTML page](super::html) is drawn from.

use std::collections::BTreeMap;
use std::path::PathBuf;

use oasis_contract::reason;
use serde::{Deserialize, Serialize};

use super::job::Outcome;
use super::policies::Candidate;
use crate::divergence::{Divergence, DivergenceSummary, MetricMeans, ReasonTotals};
use crate::exact::ExactSum;
use crate::ope::{Accumulator, Estimate, Estimator, OpeError};

/// Bins of the score histograms.
pub const SCORE_BINS: usize = 30;
/// Width of a score histogram bin.
pub const SCORE_BIN_WIDTH: f64 = 0.1;

/// Differences kept by request id (the counts go on).
const DIFFERENCES_KEPT: usize = 1000;
/// Errors kept by request id (the counts go on).
const ERRORS_KEPT: usize = 100;

/// The whole replay's figures.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Records read (every line that is a record).
    pub records: u64,
    /// Records replayed (determinism or candidates).
    pub replayed: u64,
    /// Determinism: records whose logged version reproduced them bit for bit.
    pub identical: u64,
    /// Determinism: records whose logged version did not.
    pub different: u64,
    /// Records not replayed: the host's passthrough decided them, or (with
    /// candidates) a shadow's decisions.
    pub skipped_passthrough: u64,
    /// Records that could not be replayed (module missing, bad request).
    pub errors: u64,
    /// Lines that are not records (torn, garbage).
    pub skipped_lines: u64,
    /// Log files that ended in a torn line.
    pub truncated_files: u64,
    /// Partial results this report was merged from (`oasis replay merge`);
    /// 1 for a run in one process.
    pub shards: usize,
    /// Worker threads of this pass (of a merge: the most of any shard).
    pub threads: usize,
    /// Wall time of this pass, seconds (of a merge: the shards' sum).
    pub elapsed_s: f64,
    /// Records per second of this pass (of a merge: per second of the
    /// shards' summed time).
    pub records_per_s: f64,
    /// With [`Config::measure_scaling`](super::Config::measure_scaling):
    /// one thread against all.
    pub scaling: Option<Scaling>,
    /// The fuel each policy call was given: calls are bounded by this
    /// count of instructions, not by time, so the replay does not depend on
    /// the machine's load ([`Config::fuel`](super::Config::fuel)).
    pub fuel_per_call: u64,
    /// The estimators' settings, with outcomes.
    pub estimator: Option<Estimator>,
    /// Differences (request id, what differs), the first 1000.
    pub differences: Vec<(String, String)>,
    /// Records that could not be replayed (request id, why), the first 100.
    pub error_samples: Vec<(String, String)>,
    /// The logged decisions, with candidates: what the log promoted.
    pub logged: Option<Side>,
    /// Replayed records per route and logged arm, with candidates.
    pub routes: Vec<RouteCount>,
    /// One per candidate, in the order given.
    pub candidates: Vec<CandidateReport>,
    /// With outcome events: how many were read, skipped and matched.
    pub outcomes: Option<OutcomeCounts>,
}

/// The outcome events behind the estimates. Outcomes that match no logged
/// request (another deployment's files, an empty directory) would give a
/// value of exactly 0 with a zero-width interval that looks like a result;
/// with none matched, no estimate is made and the replay fails.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeCounts {
    /// Events read (each event id once).
    pub events: u64,
    /// Lines skipped: not events (torn, garbage, unknown kind, too long).
    pub skipped: u64,
    /// Events not counted again: their event id was read before (a
    /// retried `POST /v1/events` batch).
    pub duplicates: u64,
    /// Replayed records whose request has at least one event.
    pub matched_requests: u64,
    /// Records served by the fallback (the baseline, after the policy
    /// failed), left out of the estimates: their decisions are not the
    /// logging policy's.
    pub fallback_excluded: u64,
}

/// Replayed records of one route and logged arm (with candidates).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteCount {
    /// The route that served them (empty: not logged).
    pub route: String,
    /// The arm whose decisions were logged (`stable`, `canary`,
    /// `baseline`…).
    pub arm: String,
    /// Records replayed.
    pub records: u64,
    /// Of which served by the fallback: left out of the estimates.
    pub fallback: u64,
}

/// Promotions under one policy: per campaign, and each rights holder's
/// share of them (the exposure each holder gets).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Side {
    /// Scores of every candidate, in [`SCORE_BINS`] bins of
    /// [`SCORE_BIN_WIDTH`] from 0 (the first bin also takes scores below
    /// 0, the last those above).
    pub score_histogram: Vec<u64>,
    /// Promoted tracks.
    pub promoted: u64,
    /// Promoted tracks per campaign id.
    pub promoted_per_campaign: BTreeMap<String, u64>,
    /// Promoted tracks per rights holder.
    pub promoted_per_holder: BTreeMap<String, u64>,
    /// Each rights holder's share of the promoted tracks (0 to 1).
    #[serde(default, skip_deserializing)]
    pub exposure_share_per_holder: BTreeMap<String, f64>,
}

/// One candidate's figures.
#[derive(Debug, Serialize)]
pub struct CandidateReport {
    /// Its name (unique among the candidates).
    pub name: String,
    /// Its component.
    pub module: PathBuf,
    /// The component's digest.
    pub digest: String,
    /// The hash of its settings.
    pub settings_sha256: String,
    /// The shadow metrics against the logged decisions.
    pub divergence: Option<DivergenceSummary>,
    /// Calls that failed, by error kind.
    pub errors: BTreeMap<String, u64>,
    /// What it promoted.
    #[serde(flatten)]
    pub side: Side,
    /// Off-policy estimate of its value, with outcomes: over the routes
    /// and arms of [`CandidateReport::estimates`] that have a value
    /// (`pooled`), or, when none has, over all of them.
    pub estimate: Option<Estimate>,
    /// The estimate of each route and logged arm, with outcomes.
    pub estimates: Vec<RouteEstimate>,
}

/// A candidate's estimate on the records of one route and logged arm.
#[derive(Debug, Serialize)]
pub struct RouteEstimate {
    /// The route.
    pub route: String,
    /// The logged arm.
    pub arm: String,
    /// Whether it is part of the candidate's overall
    /// [`estimate`](CandidateReport::estimate).
    pub pooled: bool,
    /// The estimate.
    pub estimate: Estimate,
}

/// One pass on one thread against one on all.
#[derive(Debug, Serialize)]
pub struct Scaling {
    /// The rate of the pass confined to one core.
    pub single_thread_records_per_s: f64,
    /// Worker threads of the other pass.
    pub threads: usize,
    /// Its rate.
    pub records_per_s: f64,
    /// records_per_s / (threads × single_thread_records_per_s).
    pub efficiency: f64,
}

impl Scaling {
    /// `all` against `single`: records and seconds of each pass.
    pub(crate) fn new(single_rate: f64, threads: usize, rate: f64) -> Scaling {
        Scaling {
            single_thread_records_per_s: single_rate,
            threads,
            records_per_s: rate,
            efficiency: rate / (threads as f64 * single_rate.max(1e-9)),
        }
    }
}

/// Counts `scores` into a [`SCORE_BINS`]-bin histogram.
pub(crate) fn histogram(scores: &[f64]) -> Vec<u64> {
    let mut h = vec![0; SCORE_BINS];
    for s in scores.iter().filter(|s| s.is_finite()) {
        let bin = (s / SCORE_BIN_WIDTH)
            .floor()
            .clamp(0.0, (SCORE_BINS - 1) as f64) as usize;
        h[bin] += 1;
    }
    h
}

fn add_counts(a: &mut BTreeMap<String, u64>, b: &BTreeMap<String, u64>) {
    for (k, n) in b {
        *a.entry(k.clone()).or_default() += n;
    }
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
        *self
            .promoted_per_holder
            .entry(holder.to_string())
            .or_default() += 1;
    }

    fn merge(&mut self, o: &Side) {
        if !o.score_histogram.is_empty() {
            self.add_scores(&o.score_histogram);
        }
        self.promoted += o.promoted;
        add_counts(&mut self.promoted_per_campaign, &o.promoted_per_campaign);
        add_counts(&mut self.promoted_per_holder, &o.promoted_per_holder);
    }

    fn finish(&mut self) {
        let total = self.promoted.max(1) as f64;
        self.exposure_share_per_holder = self
            .promoted_per_holder
            .iter()
            .map(|(h, n)| (h.clone(), *n as f64 / total))
            .collect();
    }
}

/// The divergence of a candidate from the logged decisions, summed exactly
/// ([`ExactSum`]): the means do not depend on the order of the records.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct DivergenceSums {
    samples: u64,
    errors: u64,
    candidates: u64,
    topk_overlap: ExactSum,
    rank_correlation: ExactSum,
    score_mae: ExactSum,
    promoted_share_diff: ExactSum,
    eligibility_rate_diff: ExactSum,
    /// Per reason bit, in [`reason::REASONS`] order: (logged, candidate).
    reasons: Vec<(u64, u64)>,
}

impl DivergenceSums {
    fn add(&mut self, d: &Divergence) {
        self.samples += 1;
        self.candidates += d.candidates as u64;
        self.topk_overlap.add(d.topk_overlap);
        self.rank_correlation.add(d.rank_correlation);
        self.score_mae.add(d.score_mae);
        self.promoted_share_diff.add(d.promoted_share_diff);
        self.eligibility_rate_diff.add(d.eligibility_rate_diff);
        self.reasons.resize(reason::REASONS.len(), (0, 0));
        for (total, (s, o)) in self.reasons.iter_mut().zip(d.reason_counts) {
            total.0 += s as u64;
            total.1 += o as u64;
        }
    }

    fn merge(&mut self, o: &DivergenceSums) {
        self.samples += o.samples;
        self.errors += o.errors;
        self.candidates += o.candidates;
        self.topk_overlap.merge(&o.topk_overlap);
        self.rank_correlation.merge(&o.rank_correlation);
        self.score_mae.merge(&o.score_mae);
        self.promoted_share_diff.merge(&o.promoted_share_diff);
        self.eligibility_rate_diff.merge(&o.eligibility_rate_diff);
        self.reasons.resize(reason::REASONS.len(), (0, 0));
        for (a, b) in self.reasons.iter_mut().zip(&o.reasons) {
            a.0 += b.0;
            a.1 += b.1;
        }
    }

    fn summary(&self) -> DivergenceSummary {
        let attempts = self.samples + self.errors;
        let n = self.samples as f64;
        let mean = (self.samples > 0).then(|| MetricMeans {
            topk_overlap: self.topk_overlap.value() / n,
            rank_correlation: self.rank_correlation.value() / n,
            score_mae: self.score_mae.value() / n,
            promoted_share_diff: self.promoted_share_diff.value() / n,
            eligibility_rate_diff: self.eligibility_rate_diff.value() / n,
        });
        DivergenceSummary {
            samples: self.samples,
            errors: self.errors,
            error_rate: if attempts == 0 {
                0.0
            } else {
                self.errors as f64 / attempts as f64
            },
            candidates: self.candidates,
            mean,
            reasons: reason::REASONS
                .iter()
                .enumerate()
                .map(|(i, &(_, name))| {
                    let (served, other) = self.reasons.get(i).copied().unwrap_or_default();
                    ReasonTotals {
                        name,
                        served,
                        other,
                        // Two's complement: exact while |difference| < 2^63.
                        difference: other.wrapping_sub(served) as i64,
                    }
                })
                .collect(),
            latency: None,
        }
    }
}

/// One candidate's sums.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CandidateTally {
    pub(crate) name: String,
    pub(crate) module: PathBuf,
    pub(crate) digest: String,
    pub(crate) settings_sha256: String,
    divergence: DivergenceSums,
    errors: BTreeMap<String, u64>,
    side: Side,
    /// The estimator's sums per route and logged arm, sorted.
    groups: Vec<Group>,
}

/// The estimator's sums of one route and logged arm.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Group {
    route: String,
    arm: String,
    ope: Accumulator,
}

/// Everything a replay sums, record by record: mergeable (the shards of
/// one replay, [`Tally::merge`]) and serializable (partial results).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Tally {
    pub(crate) records: u64,
    replayed: u64,
    identical: u64,
    different: u64,
    skipped_passthrough: u64,
    errors: u64,
    pub(crate) skipped_lines: u64,
    pub(crate) truncated_files: u64,
    differences: Vec<(String, String)>,
    error_samples: Vec<(String, String)>,
    logged: Option<Side>,
    routes: Vec<RouteCount>,
    pub(crate) candidates: Vec<CandidateTally>,
    pub(crate) outcomes: Option<OutcomeCounts>,
    /// The estimators' settings (every group's accumulator has them).
    pub(crate) estimator: Estimator,
}

/// Why two tallies do not merge.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TallyError {
    #[error("they replay different candidates")]
    Candidates,
    #[error(transparent)]
    Estimator(#[from] OpeError),
}

fn group<'a>(groups: &'a mut Vec<Group>, route: &str, arm: &str, e: &Estimator) -> &'a mut Group {
    let at =
        match groups.binary_search_by(|g| (g.route.as_str(), g.arm.as_str()).cmp(&(route, arm))) {
            Ok(at) => at,
            Err(at) => {
                groups.insert(
                    at,
                    Group {
                        route: route.to_string(),
                        arm: arm.to_string(),
                        ope: e.accumulator(),
                    },
                );
                at
            }
        };
    &mut groups[at]
}

fn route_count<'a>(routes: &'a mut Vec<RouteCount>, route: &str, arm: &str) -> &'a mut RouteCount {
    let at =
        match routes.binary_search_by(|g| (g.route.as_str(), g.arm.as_str()).cmp(&(route, arm))) {
            Ok(at) => at,
            Err(at) => {
                routes.insert(
                    at,
                    RouteCount {
                        route: route.to_string(),
                        arm: arm.to_string(),
                        ..RouteCount::default()
                    },
                );
                at
            }
        };
    &mut routes[at]
}

impl Tally {
    /// An empty tally for `candidates` (none: a determinism check).
    pub(crate) fn new(candidates: &[Candidate], estimator: Estimator) -> Tally {
        Tally {
            records: 0,
            replayed: 0,
            identical: 0,
            different: 0,
            skipped_passthrough: 0,
            errors: 0,
            skipped_lines: 0,
            truncated_files: 0,
            differences: Vec::new(),
            error_samples: Vec::new(),
            logged: (!candidates.is_empty()).then(Side::default),
            routes: Vec::new(),
            outcomes: None,
            estimator,
            candidates: candidates
                .iter()
                .map(|c| CandidateTally {
                    name: c.name.clone(),
                    module: c.module.clone(),
                    digest: c.policy.identity().digest.clone(),
                    settings_sha256: c.policy.settings_sha256().to_string(),
                    divergence: DivergenceSums::default(),
                    errors: BTreeMap::new(),
                    side: Side::default(),
                    groups: Vec::new(),
                })
                .collect(),
        }
    }

    /// Counts one record's outcome.
    pub(crate) fn add(&mut self, o: Outcome) {
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
                        if self.differences.len() < DIFFERENCES_KEPT {
                            self.differences.push((request_id, detail));
                        }
                    }
                }
            }
            Outcome::Candidates {
                key,
                route,
                arm,
                logged_scores,
                rows,
                each,
                matched,
                fallback,
            } => {
                self.replayed += 1;
                let count = route_count(&mut self.routes, &route, &arm);
                count.records += 1;
                count.fallback += u64::from(fallback);
                if let Some(o) = self.outcomes.as_mut() {
                    o.matched_requests += u64::from(matched);
                    o.fallback_excluded += u64::from(fallback);
                }
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
                        c.divergence.errors += 1;
                        *c.errors.entry(kind).or_default() += 1;
                    }
                    if let Some(d) = o.divergence {
                        c.divergence.add(&d);
                    }
                    if let Some(decisions) = o.ope {
                        group(&mut c.groups, &route, &arm, &self.estimator)
                            .ope
                            .add_keyed_request(key, decisions);
                    }
                }
            }
            Outcome::Error { request_id, error } => {
                self.errors += 1;
                if self.error_samples.len() < ERRORS_KEPT {
                    self.error_samples.push((request_id, error));
                }
            }
            Outcome::Skipped => self.skipped_passthrough += 1,
            Outcome::Unreadable => unreachable!("counted above"),
        }
    }

    /// Adds everything `other` summed: the tally of both's records. The
    /// outcome counts of the events themselves (read, skipped, repeated)
    /// are those of one set of outcome files, which every shard read
    /// whole: they are taken once, not added.
    ///
    /// # Errors
    /// The two replayed different candidates (names, digests, settings) or
    /// estimated with different settings.
    pub(crate) fn merge(&mut self, o: Tally) -> Result<(), TallyError> {
        let same = |a: &CandidateTally, b: &CandidateTally| {
            (&a.name, &a.digest, &a.settings_sha256) == (&b.name, &b.digest, &b.settings_sha256)
        };
        if self.candidates.len() != o.candidates.len()
            || !self
                .candidates
                .iter()
                .zip(&o.candidates)
                .all(|(a, b)| same(a, b))
            || self.logged.is_some() != o.logged.is_some()
        {
            return Err(TallyError::Candidates);
        }
        if self.estimator != o.estimator {
            return Err(OpeError::Settings(Box::new(self.estimator), Box::new(o.estimator)).into());
        }
        self.records += o.records;
        self.replayed += o.replayed;
        self.identical += o.identical;
        self.different += o.different;
        self.skipped_passthrough += o.skipped_passthrough;
        self.errors += o.errors;
        self.skipped_lines += o.skipped_lines;
        self.truncated_files += o.truncated_files;
        let room = DIFFERENCES_KEPT.saturating_sub(self.differences.len());
        self.differences
            .extend(o.differences.into_iter().take(room));
        let room = ERRORS_KEPT.saturating_sub(self.error_samples.len());
        self.error_samples
            .extend(o.error_samples.into_iter().take(room));
        if let (Some(a), Some(b)) = (self.logged.as_mut(), o.logged.as_ref()) {
            a.merge(b);
        }
        for r in o.routes {
            let c = route_count(&mut self.routes, &r.route, &r.arm);
            c.records += r.records;
            c.fallback += r.fallback;
        }
        if let (Some(a), Some(b)) = (self.outcomes.as_mut(), o.outcomes.as_ref()) {
            a.matched_requests += b.matched_requests;
            a.fallback_excluded += b.fallback_excluded;
        }
        for (a, b) in self.candidates.iter_mut().zip(o.candidates) {
            a.divergence.merge(&b.divergence);
            add_counts(&mut a.errors, &b.errors);
            a.side.merge(&b.side);
            for g in b.groups {
                group(&mut a.groups, &g.route, &g.arm, &self.estimator)
                    .ope
                    .merge(g.ope)?;
            }
        }
        Ok(())
    }
}

/// How a report came to be: its passes' threads and time, the fuel its
/// calls were given.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Run {
    pub(crate) shards: usize,
    pub(crate) threads: usize,
    pub(crate) elapsed_s: f64,
    pub(crate) fuel_per_call: u64,
}

impl Report {
    /// Computes what needs every record: exposure shares, divergence
    /// means, off-policy estimates per route and arm and pooled.
    pub(crate) fn finish(tally: Tally, run: Run) -> Report {
        let mut logged = tally.logged;
        if let Some(l) = logged.as_mut() {
            l.finish();
        }
        let unmatched = tally
            .outcomes
            .as_ref()
            .is_some_and(|o| o.matched_requests == 0);
        let estimating = tally.outcomes.is_some() && !unmatched;
        let candidates = tally
            .candidates
            .into_iter()
            .map(|c| {
                let mut side = c.side;
                side.finish();
                let (estimate, estimates) = if estimating {
                    estimates(c.groups, &tally.estimator)
                } else {
                    (None, Vec::new())
                };
                CandidateReport {
                    name: c.name,
                    module: c.module,
                    digest: c.digest,
                    settings_sha256: c.settings_sha256,
                    divergence: Some(c.divergence.summary()),
                    errors: c.errors,
                    side,
                    estimate,
                    estimates,
                }
            })
            .collect();
        Report {
            records: tally.records,
            replayed: tally.replayed,
            identical: tally.identical,
            different: tally.different,
            skipped_passthrough: tally.skipped_passthrough,
            errors: tally.errors,
            skipped_lines: tally.skipped_lines,
            truncated_files: tally.truncated_files,
            shards: run.shards,
            threads: run.threads,
            elapsed_s: run.elapsed_s,
            records_per_s: tally.records as f64 / run.elapsed_s.max(1e-9),
            scaling: None,
            fuel_per_call: run.fuel_per_call,
            estimator: tally.outcomes.is_some().then_some(tally.estimator),
            differences: tally.differences,
            error_samples: tally.error_samples,
            logged,
            routes: tally.routes,
            candidates,
            outcomes: tally.outcomes,
        }
    }

    /// Whether the replay found a problem: a difference, a record that
    /// could not be replayed, a candidate call that failed, nothing
    /// replayed at all, or outcome events given of which none matches a
    /// replayed record.
    pub fn failed(&self) -> bool {
        self.different > 0
            || self.errors > 0
            || self.replayed == 0
            || self.no_outcome_matched()
            || self.candidate_failures() > 0
    }

    /// Candidate calls that failed (each leaves its request out of that
    /// candidate's figures).
    pub fn candidate_failures(&self) -> u64 {
        self.candidates
            .iter()
            .map(|c| c.errors.values().sum::<u64>())
            .sum()
    }

    /// Outcome events were given but none names a replayed request: no
    /// estimate is made.
    pub fn no_outcome_matched(&self) -> bool {
        self.outcomes
            .as_ref()
            .is_some_and(|o| o.matched_requests == 0)
    }
}

/// Each route and arm's estimate, and the pooled one: over the groups that
/// have a value, or over all when none has.
fn estimates(groups: Vec<Group>, e: &Estimator) -> (Option<Estimate>, Vec<RouteEstimate>) {
    if groups.is_empty() {
        return (Some(e.accumulator().finish()), Vec::new());
    }
    let mut per = Vec::with_capacity(groups.len());
    let mut pooled: Option<Accumulator> = None;
    let mut all: Option<Accumulator> = None;
    for g in groups {
        let estimate = g.ope.clone().finish();
        let has_value = matches!(estimate, Estimate::Value(_));
        for (into, take) in [(&mut all, true), (&mut pooled, has_value)] {
            if take {
                match into.as_mut() {
                    None => *into = Some(g.ope.clone()),
                    // The same settings: a merge of one tally's groups.
                    Some(acc) => acc.merge(g.ope.clone()).expect("one estimator"),
                }
            }
        }
        per.push(RouteEstimate {
            route: g.route,
            arm: g.arm,
            pooled: has_value,
            estimate,
        });
    }
    let overall = pooled.or(all).map(Accumulator::finish);
    (overall, per)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_clamps_to_the_end_bins_and_drops_non_finite_scores() {
        let h = histogram(&[-1.0, 0.0, 0.05, 0.15, 2.95, 7.0, f64::NAN, f64::INFINITY]);
        assert_eq!(h.len(), SCORE_BINS);
        assert_eq!((h[0], h[1], h[SCORE_BINS - 1]), (3, 1, 2));
        assert_eq!(h.iter().sum::<u64>(), 6);
    }

    fn run() -> Run {
        Run {
            shards: 1,
            threads: 1,
            elapsed_s: 1.0,
            fuel_per_call: 1,
        }
    }

    #[test]
    fn determinism_outcomes_are_counted_and_failures_said() {
        let mut t = Tally::new(&[], Estimator::default());
        assert!(
            Report::finish(t.clone(), run()).failed(),
            "nothing replayed"
        );
        t.add(Outcome::Determinism {
            request_id: "a".into(),
            detail: None,
        });
        t.add(Outcome::Skipped);
        t.add(Outcome::Unreadable);
        assert!(!Report::finish(t.clone(), run()).failed());
        t.add(Outcome::Determinism {
            request_id: "b".into(),
            detail: Some("scores differ".into()),
        });
        let mut other = Tally::new(&[], Estimator::default());
        other.add(Outcome::Error {
            request_id: "c".into(),
            error: "no module".into(),
        });
        t.merge(other).unwrap();
        let r = Report::finish(t, run());
        assert!(r.failed());
        assert_eq!(
            (r.records, r.replayed, r.identical, r.different, r.errors),
            (4, 2, 1, 1, 1)
        );
        assert_eq!((r.skipped_passthrough, r.skipped_lines), (1, 1));
        assert_eq!(
            r.differences,
            [("b".to_string(), "scores differ".to_string())]
        );
        assert_eq!(r.error_samples.len(), 1);
        assert!(r.logged.is_none() && r.candidates.is_empty());
    }

    #[test]
    fn exposure_shares_are_of_the_promotions() {
        let mut side = Side::default();
        side.add(Some("c1"), "h1");
        side.add(Some("c1"), "h2");
        let mut more = Side::default();
        more.add(None, "h1");
        side.merge(&more);
        side.finish();
        assert_eq!(side.promoted, 3);
        assert_eq!(side.promoted_per_campaign["c1"], 2);
        assert_eq!(side.promoted_per_holder["h1"], 2);
        assert!((side.exposure_share_per_holder["h1"] - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn tallies_of_other_settings_do_not_merge() {
        let mut a = Tally::new(&[], Estimator::default());
        let b = Tally::new(&[], Estimator::default().with_seed(3));
        assert!(matches!(a.merge(b), Err(TallyError::Estimator(_))));
    }
}
