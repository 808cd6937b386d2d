//! # guarded-boost: lift relevant, low-skip campaign tracks, a few per slate
//!
//! With `s` the base relevance of a candidate and `c` its campaign:
//!
//! 1. **Eligibility.** A campaign track is eligible only if `c` is active at
//!    `context.timestamp_ms` (`CAMPAIGN_INACTIVE` otherwise), allows the
//!    request's surface (`NOT_ELIGIBLE_SURFACE`) and market
//!    (`NOT_ELIGIBLE_MARKET`), and passes the SDK's relevance guardrail
//!    ([`oasis_sdk::blocks::RelevanceGuardrail`] with `s_min` and
//!    `max_p_skip = theta`): a campaign track is never lifted when it is not
//!    relevant enough for this listener, i.e. `s < s_min` or
//!    `p_skip > theta`, which makes it ineligible with `RELEVANCE_GUARDRAIL`;
//!    a missing `p_skip` (NaN) makes it ineligible with
//!    `RELEVANCE_GUARDRAIL` and `MISSING_FEATURE`. Every failing condition is
//!    reported, not just the first. An ineligible track keeps `s`,
//!    propensity 0.
//! 2. **Boost.** `b = beta * (s - s_min)` (>= 0 for an eligible track).
//!    Tracks with `b > 0` are promoted: score `s + b`, `PROMOTED`,
//!    propensity 1; a track at exactly `s_min` is eligible but not lifted.
//! 3. **Slate cap.** At most `k_max` tracks are promoted per slate (request):
//!    the highest boosts win (ties: higher relevance, then request order);
//!    the others are demoted back to `s` with `SLATE_CAP`, propensity 0.
//!
//! Organic tracks keep `s` with reason `ORGANIC`. The policy is
//! deterministic: propensity is 1 for promoted tracks and 0 otherwise.
//!
//! The eligibility and boost rules and the slate cap are the SDK's shared
//! building blocks [`oasis_sdk::blocks::Guard`] and
//! [`oasis_sdk::blocks::slate_cap`], which other policies compose too.
//!
//! | setting | default | meaning |
//! |---|---|---|
//! | `theta` | 0.35 | the guardrail's highest `p_skip`, in [0, 1] |
//! | `beta` | 0.5 | boost per unit of relevance above `s_min`, in [0, 10] |
//! | `s_min` | 0.2 | the guardrail's lowest relevance (finite) |
//! | `k_max` | 3 | most promoted tracks per slate, in [1, 1000] |
//!
//! Since 1.1.0 (contract 0.2.0) a track below `s_min` is ineligible (it was
//! eligible but not lifted), and a missing `p_skip` carries
//! `RELEVANCE_GUARDRAIL` besides `MISSING_FEATURE`: the one guardrail of
//! every example policy.

use oasis_sdk::blocks::{self, Guard, P_SKIP};
use oasis_sdk::{Decisions, Metadata, Policy, PolicyError, Request};
use serde::{Deserialize, Serialize};

/// The guarded-boost policy.
pub struct GuardedBoost;

/// Operator settings; every field is optional and defaults as documented.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Relevance guardrail: highest predicted skip probability a promoted
    /// track may have, in [0, 1]. Default 0.35.
    pub theta: f64,
    /// Boost per unit of relevance above `s_min`, in [0, 10]. Default 0.5.
    pub beta: f64,
    /// Relevance guardrail: campaign tracks below it are not eligible, never
    /// lifted; finite. Default 0.2.
    pub s_min: f64,
    /// Most promoted tracks per slate, in [1, 1000]. Default 3.
    pub k_max: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            theta: 0.35,
            beta: 0.5,
            s_min: 0.2,
            k_max: 3,
        }
    }
}

impl Settings {
    fn guard(&self) -> Guard {
        Guard {
            theta: self.theta,
            beta: self.beta,
            s_min: self.s_min,
        }
    }
}

impl Policy for GuardedBoost {
    type Settings = Settings;

    fn metadata() -> Metadata {
        Metadata::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
            .description(
                "Promotes active campaign tracks allowed on this surface and market that pass \
                 the relevance guardrail (relevance >= s_min, p_skip <= theta), by \
                 beta * (relevance - s_min); at most k_max promoted per slate (highest boost wins).",
            )
            .requires(&[P_SKIP])
            .setting(
                "theta",
                "relevance guardrail: highest predicted skip probability a promoted track may have, in [0, 1]",
            )
            .setting(
                "beta",
                "boost per unit of relevance above s_min, in [0, 10]",
            )
            .setting(
                "s_min",
                "relevance guardrail: campaign tracks below it are not eligible, never lifted (finite)",
            )
            .setting("k_max", "most promoted tracks per slate, in [1, 1000]")
    }

    fn validate(s: &Settings) -> Result<(), String> {
        if !(0.0..=1.0).contains(&s.theta) {
            return Err(format!("theta must be in [0, 1], got {}", s.theta));
        }
        if !(0.0..=10.0).contains(&s.beta) {
            return Err(format!("beta must be in [0, 10], got {}", s.beta));
        }
        if !s.s_min.is_finite() {
            return Err(format!("s_min must be finite, got {}", s.s_min));
        }
        if !(1..=1000).contains(&s.k_max) {
            return Err(format!("k_max must be in [1, 1000], got {}", s.k_max));
        }
        Ok(())
    }

    fn score(s: &Settings, req: &Request) -> Result<Decisions, PolicyError> {
        let p_skip = req.feature(P_SKIP)?;
        let guard = s.guard();
        // Passthrough reads a non-finite relevance as 0: scores stay finite.
        let mut out = Decisions::passthrough(req);
        let base = out.scores.clone();
        let mut promoted = Vec::new();
        for c in req.candidates() {
            let i = c.index();
            if let Some(boost) = guard.evaluate(c, base[i], p_skip).apply(&mut out, i) {
                promoted.push((i, boost));
            }
        }
        blocks::slate_cap(&mut out, &base, &mut promoted, s.k_max as usize);
        Ok(out)
    }
}

oasis_sdk::export_policy!(GuardedBoost);

#[cfg(test)]
mod tests {
    use super::*;
    use oasis_sdk::testing::{
        CampaignSpec, CandidateSpec, NOW_MS, RequestBuilder, assert_close,
        assert_settings_documented, assert_settings_refused, run,
    };
    use oasis_sdk::{Reason, Surface, full_metadata};

    /// A campaign candidate with relevance `s` and `p_skip`.
    fn cand(s: f64, p_skip: f64) -> CandidateSpec {
        CandidateSpec::new(s).feature("p_skip", p_skip).campaign(0)
    }

    fn builder() -> RequestBuilder {
        RequestBuilder::new()
            .features(&["p_skip"])
            .campaign(CampaignSpec::new(1))
    }

    #[test]
    fn boost_is_beta_times_relevance_above_s_min() {
        let req = builder()
            .candidate(cand(0.8, 0.1))
            .candidate(CandidateSpec::new(0.9))
            .build();
        let out = run::<GuardedBoost>(r#"{"beta": 0.4, "s_min": 0.3}"#, &req).unwrap();
        assert_close(out.scores[0], 0.8 + 0.4 * 0.5);
        assert_eq!(out.reasons[0], Reason::PROMOTED);
        assert_eq!(out.propensity[0], 1.0);
        assert!(out.eligible[0]);
        // The organic track is untouched.
        assert_eq!(out.scores[1], 0.9);
        assert_eq!(out.reasons[1], Reason::ORGANIC);
        assert!(!out.eligible[1]);
        assert_eq!(out.propensity[1], 0.0);
    }

    #[test]
    fn campaign_window_surface_and_market_gate_eligibility() {
        let req = RequestBuilder::new()
            .surface(Surface::Autoplay)
            .market("SE")
            .features(&["p_skip"])
            .campaign(CampaignSpec::new(1).window(NOW_MS - 1000, NOW_MS)) // ended (end exclusive)
            .campaign(CampaignSpec::new(2).surfaces(&[Surface::Radio]))
            .campaign(CampaignSpec::new(3).markets(&["NO", "DK"]))
            .campaign(
                CampaignSpec::new(4)
                    .window(NOW_MS + 1, NOW_MS + 1000)
                    .surfaces(&[Surface::DailyMix])
                    .markets(&["US"]),
            )
            .campaign(
                CampaignSpec::new(5)
                    .surfaces(&[Surface::Autoplay])
                    .markets(&["SE"]),
            )
            .candidate(cand(0.8, 0.1).campaign(0))
            .candidate(cand(0.8, 0.1).campaign(1))
            .candidate(cand(0.8, 0.1).campaign(2))
            .candidate(cand(0.8, 0.1).campaign(3))
            .candidate(cand(0.8, 0.1).campaign(4))
            .build();
        let out = run::<GuardedBoost>("", &req).unwrap();
        assert_eq!(out.reasons[0], Reason::CAMPAIGN_INACTIVE);
        assert_eq!(out.reasons[1], Reason::NOT_ELIGIBLE_SURFACE);
        assert_eq!(out.reasons[2], Reason::NOT_ELIGIBLE_MARKET);
        assert_eq!(
            out.reasons[3],
            Reason::CAMPAIGN_INACTIVE | Reason::NOT_ELIGIBLE_SURFACE | Reason::NOT_ELIGIBLE_MARKET
        );
        for i in 0..4 {
            assert!(!out.eligible[i], "candidate {i}");
            assert_eq!(out.scores[i], 0.8, "candidate {i}");
            assert_eq!(out.propensity[i], 0.0);
        }
        assert_eq!(out.reasons[4], Reason::PROMOTED);
        assert!(out.scores[4] > 0.8);
    }

    #[test]
    fn p_skip_above_theta_or_missing_is_not_eligible() {
        let req = builder()
            .candidate(cand(0.8, 0.35)) // exactly theta: allowed
            .candidate(cand(0.8, 0.36))
            .candidate(CandidateSpec::new(0.8).campaign(0)) // p_skip missing
            .build();
        let out = run::<GuardedBoost>("", &req).unwrap();
        assert_eq!(out.reasons[0], Reason::PROMOTED);
        assert_eq!(out.reasons[1], Reason::RELEVANCE_GUARDRAIL);
        assert_eq!(
            out.reasons[2],
            Reason::RELEVANCE_GUARDRAIL | Reason::MISSING_FEATURE
        );
        assert_eq!(out.eligible, vec![true, false, false]);
        assert_eq!(&out.scores[1..], &[0.8, 0.8]);
    }

    #[test]
    fn below_s_min_is_not_eligible_and_never_lifted() {
        let req = builder()
            .candidate(cand(0.15, 0.0))
            .candidate(cand(0.2, 0.0)) // exactly s_min: eligible, zero boost, not promoted
            .build();
        let out = run::<GuardedBoost>("", &req).unwrap();
        assert_eq!(out.scores, vec![0.15, 0.2]);
        assert_eq!(out.eligible, vec![false, true]);
        assert_eq!(
            out.reasons,
            vec![Reason::RELEVANCE_GUARDRAIL, Reason::empty()]
        );
        assert_eq!(out.propensity, vec![0.0, 0.0]);
    }

    #[test]
    fn slate_cap_keeps_the_highest_boosts() {
        let rel = [0.5, 0.9, 0.3, 0.7, 0.8];
        let mut b = builder();
        for s in rel {
            b = b.candidate(cand(s, 0.1));
        }
        let out = run::<GuardedBoost>(r#"{"k_max": 2}"#, &b.build()).unwrap();
        let promoted: Vec<usize> = (0..rel.len())
            .filter(|&i| out.reasons[i].contains(Reason::PROMOTED))
            .collect();
        assert_eq!(promoted, vec![1, 4]);
        for i in [0, 2, 3] {
            assert_eq!(out.reasons[i], Reason::SLATE_CAP, "candidate {i}");
            assert_eq!(out.scores[i], rel[i], "demoted back to relevance");
            assert_eq!(out.propensity[i], 0.0);
            assert!(out.eligible[i], "still eligible, only capped");
        }
        assert_close(out.scores[1], 0.9 + 0.5 * 0.7);
    }

    #[test]
    fn slate_cap_ties_keep_request_order() {
        let req = builder()
            .candidate(cand(0.6, 0.1))
            .candidate(cand(0.6, 0.1))
            .candidate(cand(0.6, 0.1))
            .build();
        let out = run::<GuardedBoost>(r#"{"k_max": 1}"#, &req).unwrap();
        assert_eq!(
            out.reasons,
            vec![Reason::PROMOTED, Reason::SLATE_CAP, Reason::SLATE_CAP]
        );
    }

    #[test]
    fn non_finite_relevance_never_yields_non_finite_scores() {
        let req = builder()
            .candidate(cand(f64::NAN, 0.1))
            .candidate(CandidateSpec::new(f64::INFINITY))
            .build();
        let out = run::<GuardedBoost>("", &req).unwrap();
        assert_eq!(out.scores, vec![0.0, 0.0]);
        assert!(out.reasons[0].contains(Reason::RELEVANCE_GUARDRAIL));
    }

    #[test]
    fn a_request_without_p_skip_blocks_promotion_as_missing() {
        // The host always sends the declared `p_skip` column (NaN where the
        // caller sent nothing), and so does the harness: the guard reads it
        // as missing and does not promote.
        let req = RequestBuilder::new()
            .campaign(CampaignSpec::new(1))
            .candidate(CandidateSpec::new(0.5).campaign(0))
            .build();
        let out = run::<GuardedBoost>("", &req).unwrap();
        assert_eq!(out.scores, vec![0.5]);
        assert_eq!(
            out.reasons[0],
            Reason::RELEVANCE_GUARDRAIL | Reason::MISSING_FEATURE
        );
        assert!(!out.eligible[0]);
        assert!(!out.reasons[0].contains(Reason::PROMOTED));
    }

    #[test]
    fn invalid_settings_name_the_setting_and_value() {
        let req = builder().build();
        assert_settings_refused::<GuardedBoost>(
            &req,
            &[
                (r#"{"theta": 1.5}"#, "theta must be in [0, 1], got 1.5"),
                (r#"{"beta": -0.1}"#, "beta must be in [0, 10], got -0.1"),
                (r#"{"k_max": 0}"#, "k_max must be in [1, 1000], got 0"),
                (r#"{"thetta": 0.3}"#, "unknown field `thetta`"),
                (r#"{"k_max": -1}"#, "expected u32"),
            ],
        );
        assert!(run::<GuardedBoost>(r#"{"s_min": -0.5, "k_max": 1000}"#, &req).is_ok());
    }

    #[test]
    fn golden_fixtures_pass_natively() {
        oasis_sdk::testing::assert_fixtures_pass::<GuardedBoost>(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures"
        ));
    }

    #[test]
    fn metadata_documents_features_and_every_setting_with_defaults() {
        let m = full_metadata::<GuardedBoost>();
        assert_eq!(m.name, "guarded-boost");
        assert_eq!(m.required_features, vec!["p_skip"]);
        assert_settings_documented::<GuardedBoost>(&[
            ("theta", "0.35"),
            ("beta", "0.5"),
            ("s_min", "0.2"),
            ("k_max", "3"),
        ]);
    }
}
