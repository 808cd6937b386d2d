//! End-to-end check of off-policy evaluation (`oasis::ope`) on pzn-client's
//! traffic model: a seeded simulator with a known reward model logs traffic
//! under an exploring policy (epsilon-greedy, epsilon 0.3) through the
//! decision log, in its Parquet format, and reads the log back as replay
//! does (each request rebuilt from its columns); the self-normalised IPS
//! estimates of several candidate policies, scored on the rebuilt requests,
//! are compared with their true values, computed exactly from the
//! candidates' own propensities on the same requests.
//!
//! ```text
//! cargo test -p pzn-client simulate -- --nocapture
//! ```
//!
//! prints the table that docs/decision-logs-and-replay.md shows.

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use oasis::decision_log::columnar::{FeatureBuffer, ParquetRows};
    use oasis::decision_log::reader::Raw;
    use oasis::decision_log::{
        DecisionColumnsRecord, DecisionLog, DecisionLogConfig, LogFormat, PendingRecord, Records,
        TimingRecord,
    };
    use oasis::metadata::PolicyRef;

    use oasis::ope::{Decision, Estimate, Estimator};
    use oasis::{Limits, Policy, Runtime};
    use oasis_contract::ReasonBits;
    use oasis_contract::reason::PROMOTED;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    use crate::catalog::{Catalog, CatalogConfig};
    use crate::traffic::{Candidate, RequestGenerator, TrafficConfig};

    /// Seeds (independent simulated logs).
    const SEEDS: u64 = 20;
    /// Logged requests per seed.
    const REQUESTS: usize = 200;
    /// The logging policy's exploration rate.
    const LOGGER_EPSILON: f64 = 0.3;
    /// The candidates' exploration rates.
    const CANDIDATES: [f64; 3] = [0.0, 0.1, 0.6];

    /// The known reward model: the probability that a campaign track's
    /// decision is rewarded (a stream), given whether it was promoted.
    /// Promoting a relevant track pays, promoting an irrelevant one does
    /// not; a likely skip lowers it either way.
    /// It is pzn-client's listener model ([`crate::outcomes`]), the one
    /// `pzn-client --outcomes` posts events from.
    fn reward_probability(c: &Candidate, promoted: bool) -> f64 {
        crate::outcomes::stream_probability(c.relevance, c.features.p_skip, promoted)
    }

    fn load(runtime: &Runtime, epsilon: f64) -> Policy {
        let limits = Limits {
            deadline: Duration::from_secs(2),
            ..Limits::default()
        };
        Policy::load_file(
            runtime,
            oasis_test_components::EPSILON_GREEDY.as_ref(),
            &format!(r#"{{"epsilon": {epsilon}}}"#),
            limits,
        )
        .expect("epsilon-greedy loads")
    }

    /// `(promoted, propensity)` of every candidate of the request.
    fn decide(policy: &Policy, req: &oasis::ValidRequest<'_>) -> Vec<(bool, f64)> {
        let d = policy.score(req).expect("the policy scores").decisions;
        d.reasons
            .iter()
            .zip(&d.propensity)
            .map(|(r, &p)| (r.reason_bits() & PROMOTED != 0, p))
            .collect()
    }

    #[derive(Default, Clone)]
    struct Row {
        truth: Vec<f64>,
        snips: Vec<f64>,
        width: Vec<f64>,
        ess: Vec<f64>,
        covered: usize,
    }

    fn mean(xs: &[f64]) -> f64 {
        xs.iter().sum::<f64>() / xs.len() as f64
    }

    fn ranking(values: &[f64]) -> Vec<usize> {
        let mut order: Vec<usize> = (0..values.len()).collect();
        order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
        order
    }

    #[test]
    fn simulate_snips_covers_and_ranks_the_true_values() {
        let started = Instant::now();
        let runtime = Runtime::new(Default::default()).expect("runtime");
        let logger = load(&runtime, LOGGER_EPSILON);
        let candidates: Vec<Policy> = CANDIDATES.iter().map(|&e| load(&runtime, e)).collect();
        let catalog = Arc::new(Catalog::generate(
            CatalogConfig {
                tracks: 20_000,
                ..CatalogConfig::default()
            },
            2024,
        ));

        let logged_by = Arc::new(PolicyRef {
            name: "epsilon-greedy".into(),
            version: "1.0.0".into(),
            digest: "sha256:simulated".into(),
            settings_sha256: None,
        });
        let loaded = started.elapsed();
        let mut rows = vec![Row::default(); CANDIDATES.len()];
        let mut logged_values = Vec::new();
        let mut seeds_ranked_right = 0;
        let mut decisions_per_seed = Vec::new();
        for seed in 0..SEEDS {
            let mut generator =
                RequestGenerator::new(Arc::clone(&catalog), TrafficConfig::default(), seed);
            let mut rewards = StdRng::seed_from_u64(seed ^ 0x0e5e_7a1d);
            // Per candidate: the logged decisions reweighted to it, and the
            // exact expected reward of its own decisions.
            let mut logs: Vec<Vec<Vec<Decision>>> = vec![Vec::new(); CANDIDATES.len()];
            let mut expected = vec![0.0_f64; CANDIDATES.len()];
            let mut decisions = 0_u64;
            let mut logged_reward = 0.0;
            // Served: the logger decides, the decision log (Parquet) keeps it.
            use oasis::request::Validate;
            let dir = tempfile::tempdir().expect("a temporary directory");
            let (log, writer) = DecisionLog::start(DecisionLogConfig {
                dir: Some(dir.path().to_owned()),
                format: LogFormat::Parquet,
                queue: REQUESTS,
                ..Default::default()
            })
            .expect("the decision log starts");
            let mut sent = Vec::with_capacity(REQUESTS);
            for _ in 0..REQUESTS {
                let req = generator.next_request();
                let body = serde_json::to_vec(&req).expect("requests serialize");
                let parsed = oasis::request::parse(&body).expect("generated requests parse");
                let valid = parsed
                    .validate(logger.limits().max_candidates)
                    .expect("generated requests are valid");
                let d = logger.score(&valid).expect("the policy scores").decisions;
                log.log(PendingRecord {
                    at_ms: 0,
                    request_id: valid.context.request_id.to_string(),
                    route: "explore".into(),
                    variant: "stable".into(),
                    arm: "stable".into(),
                    shadow: false,
                    policy: Arc::clone(&logged_by),
                    settings_sha256: "".into(),
                    fallback: None,
                    request: body.clone().into(),
                    state: None,
                    decisions: DecisionColumnsRecord::from_wit(&d),
                    timing: TimingRecord::default(),
                    usage: None,
                });
                sent.push(req);
            }
            let stats = writer.shutdown();
            assert_eq!((stats.written, stats.dropped), (REQUESTS as u64, 0));
            // Read back as replay does: batches of rows, each request
            // rebuilt from its columns.
            let mut records = Records::open(&[dir.path().to_owned()]).expect("the log reads");
            let mut read = 0;
            let mut features = FeatureBuffer::default();
            while let Some(raw) = records.next_raw() {
                let Raw::Rows(batch) = raw.expect("the log reads") else {
                    panic!("the log is Parquet");
                };
                let rows = ParquetRows::new(&batch).expect("a decision batch");
                for row in 0..rows.len() {
                    rows.load_features(row, &mut features);
                    let mut record = rows.replay_record(row, &features).expect("a record");
                    let req = &sent[read];
                    read += 1;
                    assert_eq!(record.request_id, req.context.request_id, "in order");
                    let valid = record
                        .request
                        .take()
                        .expect("a request")
                        .validate(logger.limits().max_candidates)
                        .expect("logged requests are valid");
                    let logged: Vec<(bool, f64)> = record
                        .decisions
                        .reasons
                        .iter()
                        .zip(&record.decisions.propensity)
                        .map(|(r, &p)| (r & PROMOTED != 0, p))
                        .collect();
                    let scored: Vec<Vec<(bool, f64)>> =
                        candidates.iter().map(|p| decide(p, &valid)).collect();
                    let mut per_candidate = vec![Vec::new(); CANDIDATES.len()];
                    for (i, c) in req.candidates.iter().enumerate() {
                        if c.campaign.is_none() {
                            continue; // only campaign tracks are promotion decisions
                        }
                        decisions += 1;
                        let (promoted, propensity) = logged[i];
                        let reward =
                            rewards.random_bool(reward_probability(c, promoted)) as u8 as f64;
                        logged_reward += reward;
                        let (p1, p0) = (reward_probability(c, true), reward_probability(c, false));
                        for (k, s) in scored.iter().enumerate() {
                            let q = s[i].1;
                            expected[k] += q * p1 + (1.0 - q) * p0;
                            per_candidate[k].push(Decision {
                                promoted,
                                propensity,
                                candidate_promote: q,
                                reward,
                            });
                        }
                    }
                    for (k, d) in per_candidate.into_iter().enumerate() {
                        logs[k].push(d);
                    }
                }
            }
            assert_eq!(read, REQUESTS, "every logged request read back");
            decisions_per_seed.push(decisions as f64 / REQUESTS as f64);
            logged_values.push(logged_reward / decisions as f64);
            let mut truths = Vec::new();
            let mut estimates = Vec::new();
            for (k, row) in rows.iter_mut().enumerate() {
                let truth = expected[k] / decisions as f64;
                let v = match Estimator::default().with_seed(seed).estimate(&logs[k]) {
                    Estimate::Value(v) => v,
                    other => panic!(
                        "seed {seed}, epsilon {}: the exploring logger supports every candidate, got {other:?}",
                        CANDIDATES[k]
                    ),
                };
                assert_eq!(v.malformed, 0);
                assert_eq!(v.unsupported_share, 0.0);
                row.truth.push(truth);
                row.snips.push(v.snips);
                row.width.push(v.snips_ci.width());
                row.ess.push(v.ess);
                row.covered += v.snips_ci.contains(truth) as usize;
                truths.push(truth);
                estimates.push(v.snips);
            }
            seeds_ranked_right += (ranking(&truths) == ranking(&estimates)) as usize;
        }
        let elapsed = started.elapsed();

        println!(
            "{SEEDS} seeds x {REQUESTS} requests ({:.1} campaign-track decisions per request), \
             logged by epsilon-greedy epsilon {LOGGER_EPSILON} (logged value {:.4}); {:.1} s, of which loading the policies {:.1} s\n",
            mean(&decisions_per_seed),
            mean(&logged_values),
            elapsed.as_secs_f64(),
            loaded.as_secs_f64()
        );
        println!(
            "| candidate | true value (mean) | SNIPS (mean) | 95% interval width (mean) | interval covers the truth | ESS (mean) |"
        );
        println!("|---|---:|---:|---:|---:|---:|");
        for (k, row) in rows.iter().enumerate() {
            println!(
                "| epsilon-greedy, epsilon {} | {:.4} | {:.4} | {:.4} | {}/{SEEDS} | {:.0} |",
                CANDIDATES[k],
                mean(&row.truth),
                mean(&row.snips),
                mean(&row.width),
                row.covered,
                mean(&row.ess),
            );
        }
        println!(
            "\nseeds whose estimates rank the candidates like the true values: {seeds_ranked_right}/{SEEDS}"
        );

        for (k, row) in rows.iter().enumerate() {
            assert!(
                row.covered >= 17,
                "epsilon {}: the 95% interval covered the true value in {}/{SEEDS} seeds",
                CANDIDATES[k],
                row.covered
            );
        }
        let truth: Vec<f64> = rows.iter().map(|r| mean(&r.truth)).collect();
        let snips: Vec<f64> = rows.iter().map(|r| mean(&r.snips)).collect();
        assert_eq!(
            ranking(&truth),
            ranking(&snips),
            "true values {truth:?}, mean SNIPS {snips:?}"
        );
    }
}
