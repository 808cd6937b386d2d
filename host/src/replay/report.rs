//! [`Report`]: the figures of a replay, summed record by record from the
//! workers' [`Outcome`]s, then finished (shares, divergence summaries,
//! estimates) once every record is in.
//!
//! Its JSON form (`Serialize`) is what `oasis replay --json` prints and what
//! the [HTML page](super::html) is drawn from.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::job::Outcome;
use super::policies::Candidate;
use crate::divergence::{DivergenceStats, DivergenceSummary};
use crate::ope::{Accumulator, Estimate, Estimator};

/// Bins of the score histograms.
pub const SCORE_BINS: usize = 30;
/// Width of a score histogram bin.
pub const SCORE_BIN_WIDTH: f64 = 0.1;

/// Differences kept by request id (the counts go on).
const DIFFERENCES_KEPT: usize = 1000;
/// Errors kept by request id (the counts go on).
const ERRORS_KEPT: usize = 100;

/// The whole replay's figures.
#[derive(Debug, serde::Serialize)]
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
    /// Worker threads of this pass.
    pub threads: usize,
    /// Wall time of this pass, seconds.
    pub elapsed_s: f64,
    /// Records per second of this pass.
    pub records_per_s: f64,
    /// With [`Config::measure_scaling`](super::Config::measure_scaling):
    /// one thread against all.
    pub scaling: Option<Scaling>,
    /// Differences (request id, what differs), the first 1000.
    pub differences: Vec<(String, String)>,
    /// Records that could not be replayed (request id, why), the first 100.
    pub error_samples: Vec<(String, String)>,
    /// The logged decisions, with candidates: what the log promoted.
    pub logged: Option<Side>,
    /// One per candidate, in the order given.
    pub candidates: Vec<CandidateReport>,
    /// With outcome events: how many were read, skipped and matched.
    pub outcomes: Option<OutcomeCounts>,
}

/// The outcome events behind the estimates. Outcomes that match no logged
/// request (another deployment's files, an empty directory) would give a
/// value of exactly 0 with a zero-width interval that looks like a result;
/// with none matched, no estimate is made and the replay fails.
#[derive(Debug, Default, Clone, serde::Serialize)]
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

/// Promotions under one policy: per campaign, and each rights holder's
/// share of them (the exposure each holder gets).
#[derive(Debug, Default, serde::Serialize)]
pub struct Side {
    /// Scores of every candidate, in [`SCORE_BINS`] bins of
    /// [`SCORE_BIN_WIDTH`] from 0 (the first bin also takes scores below
    /// 0, the last those above).
    pub score_histogram: Vec<u64>,
    /// Promoted tracks.
    pub promoted: u64,
    /// Promoted tracks per campaign id.
    pub promoted_per_campaign: BTreeMap<String, u64>,
    /// Each rights holder's share of the promoted tracks (0 to 1).
    pub exposure_share_per_holder: BTreeMap<String, f64>,
    #[serde(skip)]
    holder_counts: BTreeMap<String, u64>,
}

/// One candidate's figures.
#[derive(Debug, serde::Serialize)]
pub struct CandidateReport {
    /// Its name (unique among the candidates).
    pub name: String,
    /// Its component.
    pub module: PathBuf,
    /// The component's digest.
    pub digest: String,
    /// The hash of its settings.
    pub settings_sha256: String,
    #[serde(skip)]
    stats: DivergenceStats,
    /// The shadow metrics against the logged decisions.
    pub divergence: Option<DivergenceSummary>,
    /// Calls that failed, by error kind.
    pub errors: BTreeMap<String, u64>,
    /// What it promoted.
    #[serde(flatten)]
    pub side: Side,
    #[serde(skip)]
    ope: Option<Accumulator>,
    /// Off-policy estimate of its value, with outcomes.
    pub estimate: Option<Estimate>,
}

/// One pass on one thread against one on all.
#[derive(Debug, serde::Serialize)]
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
    /// `all` against `single`.
    pub(crate) fn new(single: &Report, all: &Report) -> Scaling {
        Scaling {
            single_thread_records_per_s: single.records_per_s,
            threads: all.threads,
            records_per_s: all.records_per_s,
            efficiency: all.records_per_s / (all.threads as f64 * single.records_per_s.max(1e-9)),
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

impl Report {
    /// An empty report for `candidates` (none: a determinism check).
    pub(crate) fn new(candidates: &[Candidate]) -> Report {
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
            outcomes: None,
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
                logged_scores,
                rows,
                each,
                matched,
                fallback,
            } => {
                self.replayed += 1;
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
                if self.error_samples.len() < ERRORS_KEPT {
                    self.error_samples.push((request_id, error));
                }
            }
            Outcome::Skipped => self.skipped_passthrough += 1,
            Outcome::Unreadable => unreachable!("counted above"),
        }
    }

    /// Computes what needs every record: exposure shares, divergence
    /// summaries, off-policy estimates.
    pub(crate) fn finish(&mut self) {
        if let Some(l) = self.logged.as_mut() {
            l.finish();
        }
        let unmatched = self
            .outcomes
            .as_ref()
            .is_some_and(|o| o.matched_requests == 0);
        for c in &mut self.candidates {
            c.divergence = Some(c.stats.summary());
            // Nothing matched: every reward would be 0, not an estimate.
            c.estimate = c.ope.take().filter(|_| !unmatched).map(Accumulator::finish);
            c.side.finish();
        }
    }

    /// Whether the replay found a problem: a difference, a record that
    /// could not be replayed, nothing replayed at all, or outcome events
    /// given of which none matches a replayed record.
    pub fn failed(&self) -> bool {
        self.different > 0 || self.errors > 0 || self.replayed == 0 || self.no_outcome_matched()
    }

    /// Outcome events were given but none names a replayed request: no
    /// estimate is made.
    pub fn no_outcome_matched(&self) -> bool {
        self.outcomes
            .as_ref()
            .is_some_and(|o| o.matched_requests == 0)
    }
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

    #[test]
    fn determinism_outcomes_are_counted_and_failures_said() {
        let mut r = Report::new(&[]);
        assert!(r.failed(), "nothing replayed");
        r.add(Outcome::Determinism {
            request_id: "a".into(),
            detail: None,
        });
        r.add(Outcome::Skipped);
        r.add(Outcome::Unreadable);
        assert!(!r.failed());
        r.add(Outcome::Determinism {
            request_id: "b".into(),
            detail: Some("scores differ".into()),
        });
        r.add(Outcome::Error {
            request_id: "c".into(),
            error: "no module".into(),
        });
        r.finish();
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
        assert!(r.logged.is_none() && r.candidates.is_empty());
    }

    #[test]
    fn exposure_shares_are_of_the_promotions() {
        let mut side = Side::default();
        side.add(Some("c1"), "h1");
        side.add(Some("c1"), "h2");
        side.add(None, "h1");
        side.finish();
        assert_eq!(side.promoted, 3);
        assert_eq!(side.promoted_per_campaign["c1"], 2);
        assert!((side.exposure_share_per_holder["h1"] - 2.0 / 3.0).abs() < 1e-12);
    }
}
