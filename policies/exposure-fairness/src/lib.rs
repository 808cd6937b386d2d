//! # exposure-fairness: steer exposure toward relevance across rights holders
//!
//! A rights holder whose share of attention lags its share of relevance is
//! lifted; one that is over-exposed is pushed down. With `s` the base
//! relevance of a candidate:
//!
//! 1. **Attention in this slate.** Candidates are ranked by relevance,
//!    descending (ties: request order); rank `k` (1-based) receives attention
//!    `1 / log2(1 + k)` (so 1, 0.63, 0.5, ...).
//! 2. **Per rights holder `h`**, over all its candidates (organic ones too):
//!    `R_h = sum of max(0, s)` (negative relevance counts as 0 so shares stay
//!    in [0, 1]) and `A_h = (attention of its candidates in this slate) +
//!    holder_exposure_7d`, where `holder_exposure_7d` is the required candidate
//!    feature carrying the holder's accumulated attention over 7 days, read
//!    from the holder's first candidate in request order (NaN, infinite or
//!    negative read as 0).
//! 3. **Deficit** `d_h = R_h / sum(R) - A_h / sum(A)`: positive when the
//!    holder gets less attention than its relevance warrants. Deficits sum to
//!    0 over holders. When every relevance is <= 0 there is no relevance share
//!    to aim for and every `d_h` is 0.
//! 4. **Adjustment** of each eligible campaign track (campaign active now,
//!    allowed surface and market; `CAMPAIGN_INACTIVE`, `NOT_ELIGIBLE_SURFACE`,
//!    `NOT_ELIGIBLE_MARKET` otherwise): `b = clip(eta * d_h, -clip, clip)`,
//!    `score = s + b`, `FAIRNESS_ADJUST` when `b != 0`, and `PROMOTED`
//!    (propensity 1) when `b > 0`. A track pushed down stays eligible with
//!    propensity 0.
//!
//! Organic tracks keep their relevance. The debug value `holder_deficit`
//! (`d_h`) is reported for every campaign candidate.

use std::collections::BTreeMap;

use oasis_sdk::{Decisions, Eligibility, Metadata, Policy, PolicyError, Reason, Request};
use serde::{Deserialize, Serialize};

/// The exposure-fairness policy.
pub struct ExposureFairness;

/// Candidate feature: the rights holder's accumulated attention over 7 days.
pub const HOLDER_EXPOSURE_7D: &str = "holder_exposure_7d";

/// Operator settings; every field is optional and defaults as documented.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Gain on the holder's exposure deficit, in [0, 10]. Default 0.5.
    pub eta: f64,
    /// Largest absolute adjustment of a score, in (0, 1]. Default 0.2.
    pub clip: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            eta: 0.5,
            clip: 0.2,
        }
    }
}

/// Attention received at 1-based rank `k`: `1 / log2(1 + k)`.
pub fn attention(k: usize) -> f64 {
    1.0 / ((1 + k) as f64).log2()
}

/// Exposure deficit `d_h` of every rights holder in the request (see the crate
/// docs); `base` holds finite base relevances.
pub fn holder_deficits(
    req: &Request,
    base: &[f64],
    exposure: oasis_sdk::Feature,
) -> BTreeMap<u32, f64> {
    #[derive(Default)]
    struct Acc {
        relevance: f64,
        attention: f64,
    }
    let order = oasis_sdk::blocks::rank_by_score(base);
    let mut holders: BTreeMap<u32, Acc> = BTreeMap::new();
    for (rank0, &i) in order.iter().enumerate() {
        let acc = holders.entry(req.candidate(i).rights_holder()).or_default();
        acc.relevance += base[i].max(0.0);
        acc.attention += attention(rank0 + 1);
    }
    // Accumulated exposure, from each holder's first candidate in request order.
    let mut seen = std::collections::BTreeSet::new();
    for c in req.candidates() {
        if seen.insert(c.rights_holder()) {
            let e = c
                .get(exposure)
                .filter(|e| e.is_finite() && *e > 0.0)
                .unwrap_or(0.0);
            if let Some(acc) = holders.get_mut(&c.rights_holder()) {
                acc.attention += e;
            }
        }
    }
    let sum_r: f64 = holders.values().map(|a| a.relevance).sum();
    let sum_a: f64 = holders.values().map(|a| a.attention).sum();
    holders
        .into_iter()
        .map(|(h, a)| {
            let d = if sum_r > 0.0 && sum_a > 0.0 && sum_r.is_finite() && sum_a.is_finite() {
                a.relevance / sum_r - a.attention / sum_a
            } else {
                0.0
            };
            (h, d)
        })
        .collect()
}

impl Policy for ExposureFairness {
    type Settings = Settings;

    fn metadata() -> Metadata {
        Metadata::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
            .description(
                "Adjusts eligible campaign tracks by clip(eta * d_h, -clip, clip), where d_h is \
                 the rights holder's relevance share minus its attention share (this slate's \
                 1/log2(1+rank) attention plus holder_exposure_7d).",
            )
            .requires(&[HOLDER_EXPOSURE_7D])
            .setting(
                "eta",
                "gain on the rights holder's exposure deficit, in [0, 10]",
            )
            .setting("clip", "largest absolute score adjustment, in (0, 1]")
    }

    fn validate(s: &Settings) -> Result<(), String> {
        if !(0.0..=10.0).contains(&s.eta) {
            return Err(format!("eta must be in [0, 10], got {}", s.eta));
        }
        if !(s.clip > 0.0 && s.clip <= 1.0) {
            return Err(format!("clip must be in (0, 1], got {}", s.clip));
        }
        Ok(())
    }

    fn score(s: &Settings, req: &Request) -> Result<Decisions, PolicyError> {
        let exposure = req.feature(HOLDER_EXPOSURE_7D)?;
        // Passthrough reads a non-finite relevance as 0: scores stay finite.
        let mut out = Decisions::passthrough(req);
        let base = out.scores.clone();
        let deficits = holder_deficits(req, &base, exposure);
        for c in req.candidates() {
            let i = c.index();
            let eligibility = c.campaign_eligibility();
            if eligibility == Eligibility::Organic {
                continue;
            }
            let d = deficits[&c.rights_holder()];
            out.debug("holder_deficit", Some(i), d);
            if let Eligibility::Ineligible(block) = eligibility {
                out.mark(i, block);
                continue;
            }
            out.eligible[i] = true;
            let b = (s.eta * d).clamp(-s.clip, s.clip);
            if b > 0.0 {
                out.promote(i, b, 1.0);
                out.mark(i, Reason::FAIRNESS_ADJUST);
            } else if b < 0.0 {
                out.scores[i] += b;
                out.mark(i, Reason::FAIRNESS_ADJUST);
            }
        }
        Ok(out)
    }
}

oasis_sdk::export_policy!(ExposureFairness);

#[cfg(test)]
mod tests {
    use super::*;
    use oasis_sdk::testing::{
        CampaignSpec, CandidateSpec, RequestBuilder, assert_close, assert_settings_documented,
        assert_settings_refused, is_close, run,
    };
    use oasis_sdk::{Surface, full_metadata};

    fn cand(s: f64, holder: u32, exposure: f64) -> CandidateSpec {
        CandidateSpec::new(s)
            .rights_holder(holder)
            .feature(HOLDER_EXPOSURE_7D, exposure)
    }

    fn deficit_of(out: &Decisions, i: usize) -> Option<f64> {
        out.debug
            .iter()
            .find(|d| d.name == "holder_deficit" && d.candidate == Some(i as u32))
            .map(|d| d.value)
    }

    /// Holder 1: candidates 0 (0.9, campaign) and 2 (0.3, organic), 7-day
    /// exposure 0.5 (candidate 2's 0.9 is ignored: not the holder's first).
    /// Holder 2: candidate 1 (0.6, campaign), exposure missing (NaN -> 0).
    /// Two holders, three candidates, each built by `f` from a bare spec.
    /// `columns` are the feature columns the caller sends.
    fn two_holders_with(columns: &[&str], f: impl Fn(CandidateSpec) -> CandidateSpec) -> Request {
        let mut b = RequestBuilder::new()
            .features(columns)
            .campaign(CampaignSpec::new(1));
        for (s, holder, campaign) in [(0.9, 1, true), (0.6, 2, true), (0.3, 1, false)] {
            let c = f(CandidateSpec::new(s).rights_holder(holder));
            b = b.candidate(if campaign { c.campaign(0) } else { c });
        }
        b.build()
    }

    fn two_holders() -> Request {
        RequestBuilder::new()
            .features(&[HOLDER_EXPOSURE_7D])
            .campaign(CampaignSpec::new(1))
            .candidate(cand(0.9, 1, 0.5).campaign(0))
            .candidate(cand(0.6, 2, f64::NAN).campaign(0))
            .candidate(cand(0.3, 1, 0.9))
            .build()
    }

    #[test]
    fn attention_decays_with_rank() {
        assert_eq!(attention(1), 1.0);
        assert_eq!(attention(3), 0.5);
        assert_close(attention(2), 1.0 / 3f64.log2());
    }

    #[test]
    fn deficits_and_adjustments_follow_the_formulas() {
        let out = run::<ExposureFairness>("", &two_holders()).unwrap();
        let (r1, r2) = (0.9 + 0.3, 0.6);
        let (a1, a2) = (attention(1) + attention(3) + 0.5, attention(2));
        let d1 = r1 / (r1 + r2) - a1 / (a1 + a2);
        let d2 = r2 / (r1 + r2) - a2 / (a1 + a2);
        assert!(d1 < 0.0 && d2 > 0.0, "holder 1 over-exposed: {d1} {d2}");
        assert_close(deficit_of(&out, 0).unwrap(), d1);
        assert_close(deficit_of(&out, 1).unwrap(), d2);
        assert_eq!(deficit_of(&out, 2), None, "organic: no debug value");

        assert_close(out.scores[0], 0.9 + 0.5 * d1);
        assert_eq!(out.reasons[0], Reason::FAIRNESS_ADJUST);
        assert_eq!(out.propensity[0], 0.0);
        assert!(out.eligible[0], "pushed down but eligible");

        assert_close(out.scores[1], 0.6 + 0.5 * d2);
        assert_eq!(out.reasons[1], Reason::PROMOTED | Reason::FAIRNESS_ADJUST);
        assert_eq!(out.propensity[1], 1.0);

        assert_eq!(out.scores[2], 0.3);
        assert_eq!(out.reasons[2], Reason::ORGANIC);
    }

    #[test]
    fn adjustment_is_clipped_symmetrically() {
        let out = run::<ExposureFairness>(r#"{"eta": 10, "clip": 0.05}"#, &two_holders()).unwrap();
        assert_close(out.scores[0], 0.9 - 0.05);
        assert_close(out.scores[1], 0.6 + 0.05);
    }

    #[test]
    fn deficits_sum_to_zero_and_history_flips_the_direction() {
        // Same slate; now holder 2 carries a large 7-day exposure.
        let req = RequestBuilder::new()
            .features(&[HOLDER_EXPOSURE_7D])
            .campaign(CampaignSpec::new(1))
            .candidate(cand(0.9, 1, 0.0).campaign(0))
            .candidate(cand(0.6, 2, 5.0).campaign(0))
            .candidate(cand(0.3, 3, 0.0).campaign(0))
            .build();
        let out = run::<ExposureFairness>("", &req).unwrap();
        let d: Vec<f64> = (0..3).map(|i| deficit_of(&out, i).unwrap()).collect();
        assert!(is_close(d.iter().sum::<f64>(), 0.0), "{d:?}");
        assert!(d[1] < 0.0 && d[0] > 0.0 && d[2] > 0.0, "{d:?}");
        assert_eq!(out.reasons[1], Reason::FAIRNESS_ADJUST);
        assert!(out.scores[1] < 0.6);
    }

    #[test]
    fn equal_attention_shares_mean_zero_deficit() {
        // Two holders with identical relevance and exposure profiles: the
        // top-ranked one got more attention in this slate, so it is pushed
        // down exactly as much as the other is lifted.
        let req = RequestBuilder::new()
            .features(&[HOLDER_EXPOSURE_7D])
            .campaign(CampaignSpec::new(1))
            .candidate(cand(0.5, 1, 0.0).campaign(0))
            .candidate(cand(0.5, 2, 0.0).campaign(0))
            .build();
        let out = run::<ExposureFairness>("", &req).unwrap();
        let (d0, d1) = (deficit_of(&out, 0).unwrap(), deficit_of(&out, 1).unwrap());
        assert!(is_close(d0, -d1) && d0 < 0.0);
        // A 7-day exposure that exactly compensates the rank gap: d = 0.
        let a_gap = attention(1) - attention(2);
        let req = RequestBuilder::new()
            .features(&[HOLDER_EXPOSURE_7D])
            .campaign(CampaignSpec::new(1))
            .candidate(cand(0.5, 1, 0.0).campaign(0))
            .candidate(cand(0.5, 2, a_gap).campaign(0))
            .build();
        let out = run::<ExposureFairness>("", &req).unwrap();
        assert_close(deficit_of(&out, 0).unwrap(), 0.0);
        assert!(out.scores.iter().all(|&s| is_close(s, 0.5)));
        assert!(out.propensity.iter().all(|&p| p == 0.0 || p == 1.0));
    }

    #[test]
    fn ineligible_campaigns_are_not_adjusted_but_count_for_their_holder() {
        let req = RequestBuilder::new()
            .surface(Surface::Autoplay)
            .features(&[HOLDER_EXPOSURE_7D])
            .campaign(CampaignSpec::new(1).surfaces(&[Surface::Radio]))
            .candidate(cand(0.9, 1, 0.0).campaign(0))
            .candidate(cand(0.2, 2, 0.0).campaign(0))
            .build();
        let out = run::<ExposureFairness>("", &req).unwrap();
        assert_eq!(out.reasons, vec![Reason::NOT_ELIGIBLE_SURFACE; 2]);
        assert_eq!(out.scores, vec![0.9, 0.2]);
        assert_eq!(out.eligible, vec![false, false]);
        assert!(deficit_of(&out, 0).unwrap() != 0.0);
    }

    #[test]
    fn ranking_is_by_relevance_not_request_order() {
        // Holder 1 has the best track; holder 2 the three others. Reversing
        // the request order would move holder 1 from rank 1 to rank 4 if
        // ranks followed request order, changing both holders' attention.
        let slate = [
            (0.9, 1, 0.5, true),
            (0.6, 2, 0.2, true),
            (0.5, 2, 0.2, false),
            (0.3, 2, 0.2, false),
        ];
        let build = |order: &[usize]| {
            let mut b = RequestBuilder::new()
                .features(&[HOLDER_EXPOSURE_7D])
                .campaign(CampaignSpec::new(1));
            for &k in order {
                let (s, h, e, promoted) = slate[k];
                let c = cand(s, h, e);
                b = b.candidate(if promoted { c.campaign(0) } else { c });
            }
            b.build()
        };
        let f = run::<ExposureFairness>("", &build(&[0, 1, 2, 3])).unwrap();
        let r = run::<ExposureFairness>("", &build(&[3, 2, 1, 0])).unwrap();
        for i in 0..4 {
            assert!(
                is_close(f.scores[i], r.scores[3 - i]),
                "candidate {i}: {} vs {}",
                f.scores[i],
                r.scores[3 - i]
            );
            assert_eq!(f.reasons[i], r.reasons[3 - i]);
        }
        // And the adjustment is real: holder 1 (rank 1, most attention) is pushed down.
        assert!(f.scores[0] < 0.9 && f.reasons[0].contains(Reason::FAIRNESS_ADJUST));
    }

    #[test]
    fn degenerate_relevance_gives_zero_deficits_and_finite_scores() {
        let req = RequestBuilder::new()
            .features(&[HOLDER_EXPOSURE_7D])
            .campaign(CampaignSpec::new(1))
            .candidate(cand(-0.4, 1, f64::INFINITY).campaign(0))
            .candidate(cand(f64::NAN, 2, -3.0).campaign(0))
            .build();
        let out = run::<ExposureFairness>("", &req).unwrap();
        assert_eq!(out.scores, vec![-0.4, 0.0]);
        assert_eq!(deficit_of(&out, 0), Some(0.0));
        assert_eq!(out.reasons, vec![Reason::empty(); 2]);
        assert_eq!(out.eligible, vec![true, true]);
    }

    #[test]
    fn a_request_without_the_exposure_column_counts_no_past_exposure() {
        // The host always sends the declared column (NaN where the caller
        // sent nothing), and so does the harness: missing exposure is read
        // as none, the same as an explicit 0.
        let without = two_holders_with(&[], |c| c);
        let with_zero = two_holders_with(&[HOLDER_EXPOSURE_7D], |c| {
            c.feature(HOLDER_EXPOSURE_7D, 0.0)
        });
        let a = run::<ExposureFairness>("", &without).unwrap();
        let b = run::<ExposureFairness>("", &with_zero).unwrap();
        assert_eq!(a.scores, b.scores);
        assert_eq!(a.reasons, b.reasons);
    }

    #[test]
    fn invalid_settings_name_the_setting_and_value() {
        let req = two_holders();
        assert_settings_refused::<ExposureFairness>(
            &req,
            &[
                (r#"{"eta": -1}"#, "eta must be in [0, 10], got -1"),
                (r#"{"clip": 0}"#, "clip must be in (0, 1], got 0"),
                (r#"{"clip": 2}"#, "clip must be in (0, 1], got 2"),
                (r#"{"gamma": 2}"#, "unknown field `gamma`"),
            ],
        );
        // eta 0 is valid and turns the policy into a passthrough.
        let out = run::<ExposureFairness>(r#"{"eta": 0}"#, &req).unwrap();
        assert_eq!(out.scores, vec![0.9, 0.6, 0.3]);
    }

    #[test]
    fn metadata_documents_features_and_settings() {
        let m = full_metadata::<ExposureFairness>();
        assert_eq!(m.required_features, vec![HOLDER_EXPOSURE_7D]);
        assert_settings_documented::<ExposureFairness>(&[("eta", "0.5"), ("clip", "0.2")]);
    }
}
