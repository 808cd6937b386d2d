//! # freq-cap-diversity: frequency caps, one track per artist, MMR diversity
//!
//! With `s` the base relevance of a candidate and `c` its campaign:
//!
//! 1. **Eligibility.** A campaign track is eligible only if `c` is active now
//!    (`CAMPAIGN_INACTIVE`), allows the surface (`NOT_ELIGIBLE_SURFACE`) and
//!    market (`NOT_ELIGIBLE_MARKET`), and the listener has not hit a frequency
//!    cap: `impressions_24h >= max_daily` or `session_promoted >= max_session`
//!    makes it ineligible with `FREQ_CAPPED`; and it passes the SDK's
//!    relevance guardrail ([`oasis_sdk::blocks::RelevanceGuardrail`],
//!    `s_min`, no `p_skip`): a track with `s < s_min` is not eligible, keeps
//!    `s`, propensity 0, `RELEVANCE_GUARDRAIL`. Every failing condition is
//!    reported.
//! 2. **Boost.** `b = beta * s`, giving `score = s + b`; only `b > 0` lifts
//!    (with `beta = 0` eligible tracks stay at `s`).
//! 3. **One promoted track per artist per slate.** Among the boosted tracks of
//!    one artist the largest boost is kept (ties: request order); the others
//!    stay eligible but are demoted to `s` with `DIVERSITY_PENALTY`.
//! 4. **Greedy maximal marginal relevance** over the remaining promoted set
//!    `P`. Similarity between two candidates:
//!
//!    ```text
//!    sim(i, j) = 1    if i and j share the primary artist
//!              = 0.5  else if they share the rights holder
//!              = 0    otherwise
//!    ```
//!
//!    Starting from `S = {}`, repeatedly pick
//!    `i* = argmax_{i in P \ S} v_i` with
//!    `v_i = lambda * score_i - (1 - lambda) * max_{j in S} sim(i, j)`
//!    (the max over an empty `S` is 0; ties: request order). The MMR value
//!    `v_i` is reported as the debug value `mmr_value`. So that promoted
//!    scores stay on the relevance scale the recommender blends (the raw
//!    `v_i` would shrink every promoted score by `lambda` and could push it
//!    below its own relevance), the final score is `v_i / lambda`:
//!
//!    ```text
//!    final_i = score_i - (1 - lambda) / lambda * max_{j in S} sim(i, j)
//!    ```
//!
//!    Dividing by `lambda > 0` does not change the greedy order. A track whose
//!    penalty reaches its whole boost (`final_i <= s_i`) is demoted to `s` with
//!    `DIVERSITY_PENALTY` and does not join `S`; a promoted track that paid a
//!    penalty keeps `PROMOTED` and also carries `DIVERSITY_PENALTY`.
//!
//! Deterministic: propensity 1 for promoted tracks, 0 otherwise.
//!
//! | setting | default | meaning |
//! |---|---|---|
//! | `max_daily` | 3 | cap on promoted impressions of a track to the listener in 24h, >= 1 |
//! | `max_session` | 1 | cap on promoted plays of a track in the session, >= 1 |
//! | `beta` | 0.2 | boost per unit of relevance, in [0, 10] |
//! | `lambda` | 0.7 | MMR trade-off between score (1) and diversity (0), in (0, 1] |
//! | `s_min` | 0.2 | the relevance guardrail: campaign tracks below it are not eligible (finite) |
//!
//! Since 1.1.0 (contract 0.2.0) the guardrail is the shared one: a track
//! below `s_min` is not eligible (1.0 kept tracks with `s <= 0` eligible and
//! marked them, with no threshold setting).

use oasis_sdk::blocks::{self, RelevanceGuardrail};
use oasis_sdk::{Decisions, Eligibility, Metadata, Policy, PolicyError, Reason, Request};
use serde::{Deserialize, Serialize};

/// The frequency-cap and diversity policy.
pub struct FreqCapDiversity;

/// Operator settings; every field is optional and defaults as documented.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// A track with at least this many promoted impressions to the listener in
    /// the last 24 hours is capped; at least 1. Default 3.
    pub max_daily: u32,
    /// A track with at least this many promoted plays this session is capped;
    /// at least 1. Default 1.
    pub max_session: u32,
    /// Boost per unit of relevance (`b = beta * s`), in [0, 10]. Default 0.2.
    pub beta: f64,
    /// MMR trade-off between score (1) and diversity (0), in (0, 1]. Default 0.7.
    pub lambda: f64,
    /// Relevance guardrail: campaign tracks below it are not eligible, never
    /// lifted; finite. Default 0.2.
    pub s_min: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_daily: 3,
            max_session: 1,
            beta: 0.2,
            lambda: 0.7,
            s_min: 0.2,
        }
    }
}

/// Similarity of two candidates for MMR: 1 for the same primary artist, 0.5
/// for the same rights holder, 0 otherwise.
pub fn similarity(req: &Request, i: usize, j: usize) -> f64 {
    let (a, b) = (req.candidate(i), req.candidate(j));
    if a.artist() == b.artist() {
        1.0
    } else if a.rights_holder() == b.rights_holder() {
        0.5
    } else {
        0.0
    }
}

impl Policy for FreqCapDiversity {
    type Settings = Settings;

    fn metadata() -> Metadata {
        Metadata::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
            .description(
                "Boosts active campaign tracks with relevance >= s_min by beta * relevance unless \
                 the listener hit the daily or session frequency cap; keeps one promoted track per artist; then \
                 re-scores promoted tracks by greedy MMR (similarity 1 same artist, 0.5 same \
                 rights holder).",
            )
            .setting(
                "max_daily",
                "cap on promoted impressions of a track to the listener in 24h, >= 1",
            )
            .setting(
                "max_session",
                "cap on promoted plays of a track in the session, >= 1",
            )
            .setting("beta", "boost per unit of relevance, in [0, 10]")
            .setting(
                "lambda",
                "MMR trade-off between score (1) and diversity (0), in (0, 1]",
            )
            .setting(
                "s_min",
                "relevance guardrail: campaign tracks below it are not eligible, never lifted (finite)",
            )
    }

    fn validate(s: &Settings) -> Result<(), String> {
        if s.max_daily < 1 {
            return Err(format!("max_daily must be at least 1, got {}", s.max_daily));
        }
        if s.max_session < 1 {
            return Err(format!(
                "max_session must be at least 1, got {}",
                s.max_session
            ));
        }
        if !(0.0..=10.0).contains(&s.beta) {
            return Err(format!("beta must be in [0, 10], got {}", s.beta));
        }
        if !(s.lambda > 0.0 && s.lambda <= 1.0) {
            return Err(format!("lambda must be in (0, 1], got {}", s.lambda));
        }
        if !s.s_min.is_finite() {
            return Err(format!("s_min must be finite, got {}", s.s_min));
        }
        Ok(())
    }

    fn score(s: &Settings, req: &Request) -> Result<Decisions, PolicyError> {
        // Passthrough reads a non-finite relevance as 0: scores stay finite.
        let mut out = Decisions::passthrough(req);
        let base = out.scores.clone();

        // 1-2. Eligibility and boost.
        let guardrail = RelevanceGuardrail {
            s_min: s.s_min,
            max_p_skip: None,
        };
        let mut pool: Vec<(usize, f64)> = Vec::new();
        for c in req.candidates() {
            let i = c.index();
            let mut block = match c.campaign_eligibility() {
                Eligibility::Organic => continue,
                Eligibility::Eligible(_) => Reason::empty(),
                Eligibility::Ineligible(r) => r,
            };
            // max_daily and max_session are >= 1 (validated), so both cap.
            block |= blocks::FrequencyCap {
                max_daily: s.max_daily,
                max_session: s.max_session,
            }
            .check(c);
            block |= guardrail.check(base[i], None);
            if !block.is_empty() {
                RelevanceGuardrail::hold_back(&mut out, i, base[i], block);
                continue;
            }
            out.eligible[i] = true;
            let boost = s.beta * base[i];
            if boost > 0.0 {
                pool.push((i, boost));
            }
        }
        // 3. The best boost per artist (ties: request order).
        blocks::cap_per_group(
            &mut out,
            &mut pool,
            1,
            |i| req.candidate(i).artist(),
            Reason::DIVERSITY_PENALTY,
        );

        // 4. Greedy MMR. `max_sim[k]`: max similarity of pool[k] to the selected set.
        let penalty_scale = (1.0 - s.lambda) / s.lambda;
        let mut max_sim = vec![0.0_f64; pool.len()];
        let mut open: Vec<usize> = (0..pool.len()).collect();
        while !open.is_empty() {
            let mmr =
                |k: usize| s.lambda * (base[pool[k].0] + pool[k].1) - (1.0 - s.lambda) * max_sim[k];
            let (pos, _) =
                open.iter()
                    .enumerate()
                    .fold((0, f64::NEG_INFINITY), |(bp, bv), (p, &k)| {
                        let v = mmr(k);
                        if v > bv { (p, v) } else { (bp, bv) }
                    });
            let k = open.remove(pos);
            let (i, boost) = pool[k];
            out.debug("mmr_value", Some(i), mmr(k));
            let final_score = base[i] + boost - penalty_scale * max_sim[k];
            if final_score <= base[i] {
                out.mark(i, Reason::DIVERSITY_PENALTY);
                continue;
            }
            out.promote(i, 0.0, 1.0);
            out.scores[i] = final_score;
            if penalty_scale * max_sim[k] > 0.0 {
                out.mark(i, Reason::DIVERSITY_PENALTY);
            }
            for &o in &open {
                max_sim[o] = max_sim[o].max(similarity(req, i, pool[o].0));
            }
        }
        Ok(out)
    }
}

oasis_sdk::export_policy!(FreqCapDiversity);

#[cfg(test)]
mod tests {
    use super::*;
    use oasis_sdk::Surface;
    use oasis_sdk::testing::{
        CampaignSpec, CandidateSpec, RequestBuilder, assert_close, assert_settings_documented,
        assert_settings_refused, run,
    };

    /// A campaign candidate with relevance `s`, artist and rights holder.
    fn cand(s: f64, artist: u32, holder: u32) -> CandidateSpec {
        CandidateSpec::new(s)
            .campaign(0)
            .artist(artist)
            .rights_holder(holder)
    }

    fn builder() -> RequestBuilder {
        RequestBuilder::new().campaign(CampaignSpec::new(1))
    }

    fn mmr_value(out: &Decisions, i: usize) -> Option<f64> {
        out.debug
            .iter()
            .find(|d| d.name == "mmr_value" && d.candidate == Some(i as u32))
            .map(|d| d.value)
    }

    #[test]
    fn boost_is_beta_times_relevance() {
        let req = builder()
            .candidate(cand(0.6, 1, 1))
            .candidate(CandidateSpec::new(0.9).artist(2))
            .build();
        let out = run::<FreqCapDiversity>(r#"{"beta": 0.25}"#, &req).unwrap();
        // Alone in the pool: no MMR penalty.
        assert_close(out.scores[0], 0.6 * 1.25);
        assert_eq!(out.reasons[0], Reason::PROMOTED);
        assert_eq!(out.propensity, vec![1.0, 0.0]);
        assert_eq!(out.scores[1], 0.9);
        assert_eq!(out.reasons[1], Reason::ORGANIC);
    }

    #[test]
    fn frequency_caps_are_inclusive_thresholds() {
        let req = builder()
            .candidate(cand(0.5, 1, 1).impressions(2, 0)) // below both caps
            .candidate(cand(0.5, 2, 2).impressions(3, 0)) // daily cap reached
            .candidate(cand(0.5, 3, 3).impressions(0, 1)) // session cap reached
            .build();
        let out = run::<FreqCapDiversity>("", &req).unwrap();
        assert_eq!(
            out.reasons,
            vec![Reason::PROMOTED, Reason::FREQ_CAPPED, Reason::FREQ_CAPPED]
        );
        assert_eq!(out.eligible, vec![true, false, false]);
        assert_eq!(&out.scores[1..], &[0.5, 0.5]);
        // Raised caps let them through.
        let out = run::<FreqCapDiversity>(r#"{"max_daily": 4, "max_session": 2}"#, &req).unwrap();
        assert!(out.reasons.iter().all(|r| r.contains(Reason::PROMOTED)));
    }

    #[test]
    fn campaign_gate_reasons_accumulate_with_caps() {
        let req = RequestBuilder::new()
            .surface(Surface::MoodMix)
            .market("SE")
            .campaign(
                CampaignSpec::new(1)
                    .surfaces(&[Surface::Radio])
                    .markets(&["FI"]),
            )
            .candidate(cand(0.5, 1, 1).impressions(5, 5))
            .build();
        let out = run::<FreqCapDiversity>("", &req).unwrap();
        assert_eq!(
            out.reasons[0],
            Reason::NOT_ELIGIBLE_SURFACE | Reason::NOT_ELIGIBLE_MARKET | Reason::FREQ_CAPPED
        );
        assert!(!out.eligible[0]);
    }

    #[test]
    fn one_promoted_track_per_artist() {
        let req = builder()
            .candidate(cand(0.5, 7, 1))
            .candidate(cand(0.9, 7, 1))
            .candidate(cand(0.7, 7, 1))
            .candidate(cand(0.95, 7, 1).impressions(9, 0)) // capped: does not compete
            .candidate(CandidateSpec::new(0.99).artist(7)) // organic: does not compete
            .build();
        let out = run::<FreqCapDiversity>("", &req).unwrap();
        assert_eq!(out.reasons[1], Reason::PROMOTED);
        assert_close(out.scores[1], 0.9 * 1.2);
        for i in [0, 2] {
            assert_eq!(out.reasons[i], Reason::DIVERSITY_PENALTY, "candidate {i}");
            assert_eq!(out.scores[i], [0.5, 0.9, 0.7][i]);
            assert!(out.eligible[i]);
            assert_eq!(out.propensity[i], 0.0);
        }
        assert_eq!(out.reasons[3], Reason::FREQ_CAPPED);
        assert_eq!(out.scores[4], 0.99);
    }

    #[test]
    fn mmr_penalizes_the_later_track_of_the_same_rights_holder() {
        // Scores with beta 0.5: A 1.2 (holder 1), B 1.05 (holder 1), C 0.9 (holder 2).
        let req = builder()
            .candidate(cand(0.8, 1, 1))
            .candidate(cand(0.7, 2, 1))
            .candidate(cand(0.6, 3, 2))
            .build();
        let out = run::<FreqCapDiversity>(r#"{"beta": 0.5, "lambda": 0.8}"#, &req).unwrap();
        // A first (v = 0.96), then B (0.84 - 0.2 * 0.5 = 0.74 > C's 0.72), then C.
        assert_close(mmr_value(&out, 0).unwrap(), 0.96);
        assert_close(mmr_value(&out, 1).unwrap(), 0.74);
        assert_close(mmr_value(&out, 2).unwrap(), 0.72);
        assert_close(out.scores[0], 1.2);
        assert_close(out.scores[1], 1.05 - 0.25 * 0.5);
        assert_close(out.scores[2], 0.9);
        assert_eq!(out.reasons[0], Reason::PROMOTED);
        assert_eq!(out.reasons[1], Reason::PROMOTED | Reason::DIVERSITY_PENALTY);
        assert_eq!(out.reasons[2], Reason::PROMOTED);
    }

    #[test]
    fn strong_diversity_reorders_and_withdraws_a_boost_it_consumes() {
        // lambda 0.5: after A, C (0.45) beats B (0.525 - 0.25 = 0.275); B's
        // penalty (1 * 0.5) exceeds its boost (0.35), so B is demoted.
        let req = builder()
            .candidate(cand(0.8, 1, 1))
            .candidate(cand(0.7, 2, 1))
            .candidate(cand(0.6, 3, 2))
            .build();
        let out = run::<FreqCapDiversity>(r#"{"beta": 0.5, "lambda": 0.5}"#, &req).unwrap();
        assert_close(mmr_value(&out, 2).unwrap(), 0.45);
        assert_close(mmr_value(&out, 1).unwrap(), 0.275);
        assert_eq!(out.reasons[1], Reason::DIVERSITY_PENALTY);
        assert_eq!(out.scores[1], 0.7);
        assert_eq!(out.propensity[1], 0.0);
        assert!(out.eligible[1]);
        assert_eq!(out.reasons[2], Reason::PROMOTED);
        assert_close(out.scores[2], 0.9);
    }

    #[test]
    fn penalty_uses_the_max_similarity_not_the_sum() {
        // Three artists of one rights holder, beta 0.5, lambda 0.8 (scale 0.25):
        // B and C each pay 0.25 * 0.5 once, however many holder-mates precede them.
        let req = builder()
            .candidate(cand(0.8, 1, 1))
            .candidate(cand(0.7, 2, 1))
            .candidate(cand(0.6, 3, 1))
            .build();
        let out = run::<FreqCapDiversity>(r#"{"beta": 0.5, "lambda": 0.8}"#, &req).unwrap();
        assert_close(out.scores[0], 1.2);
        assert_close(out.scores[1], 1.05 - 0.125);
        assert_close(out.scores[2], 0.9 - 0.125);
        assert_close(mmr_value(&out, 2).unwrap(), 0.8 * 0.9 - 0.2 * 0.5);
    }

    #[test]
    fn lambda_one_disables_the_penalty() {
        let req = builder()
            .candidate(cand(0.8, 1, 1))
            .candidate(cand(0.7, 2, 1))
            .build();
        let out = run::<FreqCapDiversity>(r#"{"lambda": 1}"#, &req).unwrap();
        assert_close(out.scores[0], 0.96);
        assert_close(out.scores[1], 0.84);
        assert!(out.reasons.iter().all(|r| *r == Reason::PROMOTED));
    }

    #[test]
    fn similarity_is_artist_then_rights_holder() {
        let req = RequestBuilder::new()
            .candidate(CandidateSpec::new(0.1).artist(1).rights_holder(1))
            .candidate(CandidateSpec::new(0.1).artist(1).rights_holder(2))
            .candidate(CandidateSpec::new(0.1).artist(2).rights_holder(1))
            .candidate(CandidateSpec::new(0.1).artist(3).rights_holder(3))
            .build();
        assert_eq!(similarity(&req, 0, 1), 1.0);
        assert_eq!(similarity(&req, 0, 2), 0.5);
        assert_eq!(similarity(&req, 0, 3), 0.0);
    }

    #[test]
    fn the_relevance_guardrail_holds_back_tracks_below_s_min() {
        let req = builder()
            .candidate(cand(-0.2, 1, 1))
            .candidate(cand(f64::NAN, 2, 1))
            .candidate(cand(0.15, 3, 2).impressions(5, 0)) // capped too
            .candidate(cand(0.2, 4, 3)) // exactly s_min: lifted
            .build();
        let out = run::<FreqCapDiversity>("", &req).unwrap();
        assert_eq!(out.scores[..3], [-0.2, 0.0, 0.15]);
        assert_eq!(
            out.reasons,
            vec![
                Reason::RELEVANCE_GUARDRAIL,
                Reason::RELEVANCE_GUARDRAIL,
                Reason::FREQ_CAPPED | Reason::RELEVANCE_GUARDRAIL,
                Reason::PROMOTED,
            ]
        );
        assert_eq!(out.eligible, vec![false, false, false, true]);
        assert_close(out.scores[3], 0.2 * 1.2);
        // A lower s_min lets the 0.15 track through (caps lifted too); a
        // zero beta keeps eligible tracks at their relevance, unmarked.
        let out = run::<FreqCapDiversity>(r#"{"s_min": 0.1, "max_daily": 9}"#, &req).unwrap();
        assert_eq!(out.reasons[2], Reason::PROMOTED);
        let out = run::<FreqCapDiversity>(r#"{"beta": 0}"#, &req).unwrap();
        assert_eq!(out.reasons[3], Reason::empty());
        assert_eq!((out.scores[3], out.eligible[3]), (0.2, true));
    }

    #[test]
    fn invalid_settings_name_the_setting_and_value() {
        assert_settings_refused::<FreqCapDiversity>(
            &builder().build(),
            &[
                (r#"{"max_daily": 0}"#, "max_daily must be at least 1, got 0"),
                (
                    r#"{"max_session": 0}"#,
                    "max_session must be at least 1, got 0",
                ),
                (r#"{"beta": 11}"#, "beta must be in [0, 10], got 11"),
                (r#"{"lambda": 0}"#, "lambda must be in (0, 1], got 0"),
                (r#"{"lambda": 1.2}"#, "lambda must be in (0, 1], got 1.2"),
                (r#"{"s_min": "low"}"#, "invalid type"),
                (r#"{"k_max": 1}"#, "unknown field `k_max`"),
            ],
        );
    }

    #[test]
    fn metadata_documents_every_setting_with_defaults() {
        assert_settings_documented::<FreqCapDiversity>(&[
            ("max_daily", "3"),
            ("max_session", "1"),
            ("beta", "0.2"),
            ("lambda", "0.7"),
            ("s_min", "0.2"),
        ]);
    }

    #[test]
    fn golden_fixtures_pass_natively() {
        oasis_sdk::testing::assert_fixtures_pass::<FreqCapDiversity>(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures"
        ));
    }
}
