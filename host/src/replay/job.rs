//! One replay pass ([`Job::run`]): a reader thread splits the logs into
//! lines, workers parse and replay them ([`Job::replay_line`]), and the
//! calling thread sums their [`Outcome`]s into the [`Tally`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use oasis_contract::ReasonBits;
use oasis_contract::reason::PROMOTED;

use super::policies::{Candidate, LoggedVersions};
use super::report::{OutcomeCounts, Tally, histogram};
use super::{ReplayError, chain};
use crate::decision_log::columnar::{FeatureBuffer, ParquetRows, SchemaError};
use crate::decision_log::outcomes::Outcomes;
use crate::decision_log::reader::Raw;
use crate::decision_log::{DecisionRecord, Records, ReplayRecord};
use crate::divergence::{DecisionColumns, Divergence, compare};
use crate::ope::{Decision, Estimator};
use crate::request::{self, Validate};

/// How far a pass is, told every [`PROGRESS_EVERY`] on long runs.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Records replayed so far.
    pub records: u64,
    /// Since the pass started.
    pub elapsed: Duration,
}

/// How often a pass reports its [`Progress`].
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// What one replay pass needs; [`Job::run`] may be called more than once.
pub(crate) struct Job<'a> {
    pub(crate) versions: &'a LoggedVersions,
    pub(crate) candidates: &'a [Candidate],
    pub(crate) outcomes: Option<&'a Outcomes>,
    pub(crate) estimator: Estimator,
}

/// A pass's tally and how long it took.
pub(crate) struct Pass {
    pub(crate) tally: Tally,
    pub(crate) threads: usize,
    pub(crate) elapsed_s: f64,
}

impl Pass {
    pub(crate) fn records_per_s(&self) -> f64 {
        self.tally.records as f64 / self.elapsed_s.max(1e-9)
    }
}

/// The key that orders a request in the off-policy bootstrap: the first 8
/// bytes of the SHA-256 of its id. Stable across builds and machines (the
/// standard library's hasher is not promised to be), so shards replayed
/// apart order their requests as one process does.
pub(crate) fn request_key(request_id: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(request_id.as_bytes());
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

impl Job<'_> {
    /// Replays every record of `logs` on `threads` workers; `progress` is
    /// called on this thread.
    pub(crate) fn run(
        &self,
        logs: &[PathBuf],
        threads: usize,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<Pass, ReplayError> {
        let mut records = Records::open(logs).map_err(ReplayError::Logs)?;
        let (work_tx, work_rx) = mpsc::sync_channel::<Raw>(threads * 8);
        let work_rx = Mutex::new(work_rx);
        // Outcomes travel in batches (one per Parquet batch, one per log
        // line): a send per record was ~7% of a one-core Parquet replay.
        let (done_tx, done_rx) = mpsc::channel::<Vec<Outcome>>();
        let started = Instant::now();
        let loading_before = self.versions.loading_time();
        let tally = std::thread::scope(|scope| -> Result<Tally, ReplayError> {
            for _ in 0..threads {
                let (rx, tx) = (&work_rx, done_tx.clone());
                scope.spawn(move || {
                    let mut features = FeatureBuffer::default();
                    loop {
                        let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let sent = match next {
                            Err(_) => break,
                            Ok(Raw::Line(line)) => tx.send(vec![self.replay_line(&line)]).is_ok(),
                            Ok(Raw::Rows(batch)) => {
                                tx.send(self.replay_rows(&batch, &mut features)).is_ok()
                            }
                        };
                        if !sent {
                            break;
                        }
                    }
                });
            }
            drop(done_tx);
            // The reader only splits lines: parsing is the workers' job, so
            // that one thread does not bound the whole replay.
            let reader = scope.spawn(move || -> Result<(u64, u64), ReplayError> {
                while let Some(line) = records.next_raw() {
                    let line = line.map_err(ReplayError::Logs)?;
                    if work_tx.send(line).is_err() {
                        break;
                    }
                }
                Ok((records.skipped(), records.truncated()))
            });
            let mut report = Tally::new(self.candidates, self.estimator);
            report.outcomes = self.outcomes.map(|o| OutcomeCounts {
                events: o.events(),
                skipped: o.skipped(),
                duplicates: o.duplicates(),
                matched_requests: 0,
                fallback_excluded: 0,
            });
            let mut shown = started;
            for outcome in done_rx.into_iter().flatten() {
                report.add(outcome);
                if shown.elapsed() >= PROGRESS_EVERY {
                    shown = Instant::now();
                    progress(&Progress {
                        records: report.records,
                        elapsed: started.elapsed(),
                    });
                }
            }
            let (skipped, truncated) = reader.join().expect("reader thread")?;
            report.skipped_lines += skipped;
            report.truncated_files = truncated;
            Ok(report)
        })?;
        // Loading the logged versions (a compile, or a load from the
        // compile cache, and the load-time calls) is not replay: a short
        // one-core pass that loads every version would otherwise show a
        // rate a third below what it replays at.
        let loading = self.versions.loading_time().saturating_sub(loading_before);
        Ok(Pass {
            tally,
            threads,
            elapsed_s: started.elapsed().saturating_sub(loading).as_secs_f64(),
        })
    }

    /// Parquet rows: each request rebuilt from its columns (no parse),
    /// then replayed; one outcome per row.
    fn replay_rows(
        &self,
        batch: &arrow_array::RecordBatch,
        features: &mut FeatureBuffer,
    ) -> Vec<Outcome> {
        let columns = match ParquetRows::new(batch) {
            Ok(c) => c,
            // The reader checked the file's columns: not expected.
            Err(_) => {
                return (0..batch.num_rows()).map(|_| Outcome::Unreadable).collect();
            }
        };
        let mut outcomes = Vec::with_capacity(columns.len());
        for row in 0..columns.len() {
            columns.load_features(row, features);
            let error = |e: SchemaError| Outcome::Error {
                request_id: columns.request_id(row).to_string(),
                error: format!("logged row does not read: {e}"),
            };
            // Checked on the columns and packed directly; a row that path
            // does not take is rebuilt and validated, which names its error.
            let outcome = match columns.valid_request(row, features, crate::Limits::MAX_CANDIDATES)
            {
                Some(valid) => match columns.replay_fields(row) {
                    Ok(record) => self.replay_valid(&record, valid),
                    Err(e) => error(e),
                },
                None => match columns.replay_record(row, features) {
                    Ok(mut record) => {
                        let request = record.request.take().expect("a rebuilt request");
                        self.replay_one(&record, request)
                    }
                    Err(e) => error(e),
                },
            };
            outcomes.push(outcome);
        }
        outcomes
    }

    /// One log line: parsed, then replayed.
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

    /// One record: its logged version again (determinism), or the
    /// candidates against it.
    fn replay_one(&self, r: &ReplayRecord<'_>, parsed: request::ScoreRequest<'_>) -> Outcome {
        match parsed.validate(crate::Limits::MAX_CANDIDATES) {
            Ok(req) => self.replay_valid(r, req),
            Err(e) => Outcome::Error {
                request_id: r.request_id.to_string(),
                error: format!("logged request is not valid: {e}"),
            },
        }
    }

    /// One record whose request passed validation.
    fn replay_valid(&self, r: &ReplayRecord<'_>, mut req: crate::ValidRequest<'_>) -> Outcome {
        let error = |e: String| Outcome::Error {
            request_id: r.request_id.to_string(),
            error: e,
        };
        // The delivery state the server filled in, as logged: the batch is
        // rebuilt exactly, and replay never reads or writes a store.
        if let Some(fill) = &r.state {
            fill.apply(&mut req);
        }
        // Every column must have one entry per candidate: the comparisons
        // and the off-policy data index them by candidate (a shorter column
        // used to panic the replay with `--outcomes`, and to pass unnoticed
        // without).
        let (d, n) = (&r.decisions, req.candidates.len());
        if [
            d.scores.len(),
            d.eligible.len(),
            d.reasons.len(),
            d.propensity.len(),
        ] != [n; 4]
        {
            return error(format!(
                "logged decisions do not match the request: {} scores, {} eligible, {} reasons, {} propensities for {n} candidates",
                d.scores.len(),
                d.eligible.len(),
                d.reasons.len(),
                d.propensity.len()
            ));
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
        let policy = match self.versions.get(&r.policy.digest, &r.settings_sha256) {
            Ok(p) => p,
            Err(e) => return error(chain(&e)),
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
    fn compare_candidates(&self, r: &ReplayRecord<'_>, req: &crate::ValidRequest<'_>) -> Outcome {
        let logged = &r.decisions;
        let fallback = r.variant == "fallback";
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
            // Not from a fallback-served record: its decisions are the
            // baseline's, taken because the policy failed, so they are not
            // draws from the logging policy the estimate reweights (one
            // such deterministic record made every candidate "no support").
            let ope = self.outcomes.filter(|_| !fallback).map(|o| {
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
        Outcome::Candidates {
            key: request_key(&r.request_id),
            route: r.route.to_string(),
            arm: r.arm.to_string(),
            logged_scores: histogram(&logged.scores),
            rows,
            each,
            matched: self.outcomes.is_some_and(|o| o.has_request(&r.request_id)),
            fallback,
        }
    }
}

/// What replaying one record gave.
pub(crate) enum Outcome {
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
        /// The route that served it.
        route: String,
        /// The arm whose decisions were logged.
        arm: String,
        /// The logged scores' histogram.
        logged_scores: Vec<u64>,
        /// Tracks promoted by the log or by any candidate.
        rows: Vec<Row>,
        /// One per candidate, in order.
        each: Vec<CandidateOutcome>,
        /// Some outcome event names this request.
        matched: bool,
        /// Served by the fallback: left out of the estimates.
        fallback: bool,
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
pub(crate) struct Row {
    pub(crate) campaign: Option<String>,
    pub(crate) holder: String,
    pub(crate) logged: bool,
    /// Promoted by each candidate.
    pub(crate) by: Vec<bool>,
}

/// One candidate on one logged request.
pub(crate) struct CandidateOutcome {
    pub(crate) divergence: Option<Divergence>,
    /// Its scores' histogram.
    pub(crate) scores: Vec<u64>,
    /// The kind of error of a failed call.
    pub(crate) error: Option<String>,
    pub(crate) ope: Option<Vec<Decision>>,
}

/// Runs `f` with this thread, and the threads it starts, confined to one
/// of the cores it may use; the affinity is restored afterwards. Unpinned,
/// a "single-thread" replay still spreads its line reader and report over
/// the other cores, which overstates what one core does (measured: 76%
/// efficiency unpinned, 87-100% pinned on the same logs).
pub(crate) fn on_one_core<T>(f: impl FnOnce() -> T) -> T {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_core_pinning_is_undone() {
        let cores = || std::thread::available_parallelism().map_or(1, |n| n.get());
        let before = cores();
        let inside = on_one_core(cores);
        assert_eq!(inside, 1);
        assert_eq!(cores(), before);
    }
}
