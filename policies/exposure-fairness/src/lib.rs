//! # exposure-fairness: steer exposure toward relevance across rights holders
//!
//! A rights holder whose share of attention lags its share of relevance is
//! lifted; one that is over-exposed is pushed down. Shares are compared with
//! shares: the holder's share of the relevance in this request against its
//! share of the attention listeners actually give, over the ranks the caller
//! shows and over the last 7 days. With `s` the base relevance of a
//! candidate and `k = slate_size` (the ranks shown, `context.slate_size`):
//!
//! 1. **Attention in this slate.** Candidates are ranked by relevance,
//!    descending (ties: request order). Rank `r` (1-based) receives attention
//!    `a(r) = 1 / log2(1 + r)` (so 1, 0.63, 0.5, ...) when `r <= k`, and none
//!    beyond the slate: a candidate the caller does not show gets no
//!    attention.
//! 2. **Per rights holder `h`**, over all its candidates (organic ones too):
//!
//!    ```text
//!    R_h = sum of max(0, s) / sum over all candidates of max(0, s)   (relevance share, all candidates)
//!    S_h = sum of a(r) of its candidates / sum of a(r), r = 1..=k     (this slate's attention share)
//!    A_h = w * E_h + (1 - w) * S_h   when E_h is known                (attention share)
//!        = S_h                       when E_h is unknown (NaN)
//!    d_h = R_h - A_h                                                  (deficit)
//!    ```
//!
//!    where `E_h` is the holder's 7-day attention share from the request's
//!    holders table (`holders.exposure-share-7d`, same attention curve,
//!    clamped to [0, 1]) and `w = history_weight`. Negative relevance counts
//!    as 0 so shares stay in [0, 1]; when every relevance is <= 0 there is no
//!    relevance share to aim for and every `d_h` is 0. `d_h > 0`: the holder
//!    gets less attention than its relevance warrants. With `w = 0` (or no
//!    history) deficits sum to 0 over the request's holders.
//! 3. **Eligibility** of each campaign track: the campaign is active now and
//!    allows the surface and market (`CAMPAIGN_INACTIVE`,
//!    `NOT_ELIGIBLE_SURFACE`, `NOT_ELIGIBLE_MARKET` otherwise), and it passes
//!    the SDK's relevance guardrail
//!    ([`oasis_sdk::blocks::RelevanceGuardrail`], `s_min`, no `p_skip`): a
//!    track with `s < s_min` is not eligible, keeps `s`, propensity 0,
//!    `RELEVANCE_GUARDRAIL`. Every failing condition is reported.
//! 4. **Adjustment** of each eligible campaign track:
//!    `b = clip(eta * d_h, -clip, clip)`, `score = s + b`, `FAIRNESS_ADJUST`
//!    when `b != 0`, and `PROMOTED` (propensity 1) when `b > 0`. A track
//!    pushed down stays eligible with propensity 0.
//!
//! Organic tracks keep their relevance. The debug value `holder_deficit`
//! (`d_h`) is reported for every campaign candidate.
//!
//! | setting | default | meaning |
//! |---|---|---|
//! | `eta` | 0.5 | gain on the deficit, in [0, 10] |
//! | `clip` | 0.2 | largest absolute adjustment, in (0, 1] |
//! | `history_weight` | 0.5 | weight `w` of the 7-day share in the attention share, in [0, 1] |
//! | `s_min` | 0.2 | the relevance guardrail: campaign tracks below it are not eligible (finite) |
//!
//! Since 2.0.0 (contract 0.2.0): the 7-day exposure comes from the holders
//! table (a share, once per holder) instead of the `holder_exposure_7d`
//! candidate feature (an absolute amount added to this slate's attention),
//! attention counts only the ranks shown, and the relevance guardrail
//! applies.

use std::collections::BTreeMap;

use oasis_sdk::blocks::RelevanceGuardrail;
use oasis_sdk::{Decisions, Eligibility, Metadata, Policy, PolicyError, Reason, Request};
use serde::{Deserialize, Serialize};

/// The exposure-fairness policy.
pub struct ExposureFairness;

/// Operator settings; every field is optional and defaults as documented.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Gain on the holder's exposure deficit, in [0, 10]. Default 0.5.
    pub eta: f64,
    /// Largest absolute adjustment of a score, in (0, 1]. Default 0.2.
    pub clip: f64,
    /// Weight of the holder's 7-day attention share against this slate's in
    /// its attention share, in [0, 1]. Default 0.5.
    pub history_weight: f64,
    /// Relevance guardrail: campaign tracks below it are not eligible, never
    /// adjusted; finite. Default 0.2.
    pub s_min: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            eta: 0.5,
            clip: 0.2,
            history_weight: 0.5,
            s_min: 0.2,
        }
    }
}

/// Attention received at 1-based rank `k`: `1 / log2(1 + k)`.
pub fn attention(k: usize) -> f64 {
    1.0 / ((1 + k) as f64).log2()
}

/// Exposure deficit `d_h` of every rights holder of the request's
/// candidates (see the crate docs), with `w = history_weight`; `base` holds
/// finite base relevances.
pub fn holder_deficits(req: &Request, base: &[f64], history_weight: f64) -> BTreeMap<u32, f64> {
    #[derive(Default)]
    struct Acc {
        relevance: f64,
        attention: f64,
    }
    let slate = req.slate_size();
    let order = oasis_sdk::blocks::rank_by_score(base);
    let mut holders: BTreeMap<u32, Acc> = BTreeMap::new();
    let mut slate_attention = 0.0;
    for (rank0, &i) in order.iter().enumerate() {
        let acc = holders.entry(req.candidate(i).rights_holder()).or_default();
        acc.relevance += base[i].max(0.0);
        if rank0 < slate {
            let a = attention(rank0 + 1);
            acc.attention += a;
            slate_attention += a;
        }
    }
    let sum_r: f64 = holders.values().map(|a| a.relevance).sum();
    holders
        .into_iter()
        .map(|(h, a)| {
            let d = if sum_r > 0.0 && sum_r.is_finite() && slate_attention > 0.0 {
                let this_slate = a.attention / slate_attention;
                let share = match req.exposure_share_7d(h) {
                    Some(e) => {
                        history_weight * e.clamp(0.0, 1.0) + (1.0 - history_weight) * this_slate
                    }
                    None => this_slate,
                };
                a.relevance / sum_r - share
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
                "Adjusts eligible campaign tracks (relevance >= s_min) by clip(eta * d_h, -clip, \
                 clip), where d_h is the rights holder's relevance share minus its attention share: \
                 this slate's 1/log2(1+rank) attention over the ranks shown, blended with the \
                 holder's 7-day share by history_weight.",
            )
            .setting(
                "eta",
                "gain on the rights holder's exposure deficit, in [0, 10]",
            )
            .setting("clip", "largest absolute score adjustment, in (0, 1]")
            .setting(
                "history_weight",
                "weight of the holder's 7-day attention share against this slate's, in [0, 1]",
            )
            .setting(
                "s_min",
                "relevance guardrail: campaign tracks below it are not eligible, never adjusted (finite)",
            )
    }

    fn validate(s: &Settings) -> Result<(), String> {
        if !(0.0..=10.0).contains(&s.eta) {
            return Err(format!("eta must be in [0, 10], got {}", s.eta));
        }
        if !(s.clip > 0.0 && s.clip <= 1.0) {
            return Err(format!("clip must be in (0, 1], got {}", s.clip));
        }
        if !(0.0..=1.0).contains(&s.history_weight) {
            return Err(format!(
                "history_weight must be in [0, 1], got {}",
                s.history_weight
            ));
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
        let deficits = holder_deficits(req, &base, s.history_weight);
        let guardrail = RelevanceGuardrail {
            s_min: s.s_min,
            max_p_skip: None,
        };
        for c in req.candidates() {
            let i = c.index();
            let block = match c.campaign_eligibility() {
                Eligibility::Organic => continue,
                Eligibility::Eligible(_) => Reason::empty(),
                Eligibility::Ineligible(r) => r,
            } | guardrail.check(base[i], None);
            let d = deficits[&c.rights_holder()];
            out.debug("holder_deficit", Some(i), d);
            if !block.is_empty() {
                RelevanceGuardrail::hold_back(&mut out, i, base[i], block);
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

    fn cand(s: f64, holder: u32) -> CandidateSpec {
        CandidateSpec::new(s).rights_holder(holder)
    }

    fn deficit_of(out: &Decisions, i: usize) -> Option<f64> {
        out.debug
            .iter()
            .find(|d| d.name == "holder_deficit" && d.candidate == Some(i as u32))
            .map(|d| d.value)
    }

    /// Holder 1: candidates 0 (0.9, campaign) and 2 (0.3, organic), 7-day
    /// share 0.9. Holder 2: candidate 1 (0.6, campaign), share unknown.
    fn two_holders() -> RequestBuilder {
        RequestBuilder::new()
            .campaign(CampaignSpec::new(1))
            .candidate(cand(0.9, 1).campaign(0))
            .candidate(cand(0.6, 2).campaign(0))
            .candidate(cand(0.3, 1))
            .holder_exposure_share_7d(1, 0.9)
    }

    #[test]
    fn attention_decays_with_rank() {
        assert_eq!(attention(1), 1.0);
        assert_eq!(attention(3), 0.5);
        assert_close(attention(2), 1.0 / 3f64.log2());
    }

    #[test]
    fn deficits_and_adjustments_follow_the_formulas() {
        let out = run::<ExposureFairness>("", &two_holders().build()).unwrap();
        let (r1, r2) = (1.2 / 1.8, 0.6 / 1.8);
        let total = attention(1) + attention(2) + attention(3);
        let (s1, s2) = ((attention(1) + attention(3)) / total, attention(2) / total);
        // Holder 1 blends its 7-day share 0.9 with this slate's; holder 2's
        // history is unknown: this slate's share alone.
        let d1 = r1 - (0.5 * 0.9 + 0.5 * s1);
        let d2 = r2 - s2;
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
    fn only_the_ranks_shown_get_attention() {
        // Holder 1 has the two best tracks, holder 2 the third. With a slate
        // of 2 holder 2 is not shown at all: its whole relevance share is
        // a deficit. With the full slate it gets rank 3's attention.
        let build = |k: Option<u32>| {
            let b = RequestBuilder::new()
                .campaign(CampaignSpec::new(1))
                .candidate(cand(0.9, 1).campaign(0))
                .candidate(cand(0.8, 1))
                .candidate(cand(0.7, 2).campaign(0));
            match k {
                Some(k) => b.slate_size(k),
                None => b,
            }
            .build()
        };
        let r2 = 0.7 / 2.4;
        let shown = run::<ExposureFairness>("", &build(Some(2))).unwrap();
        assert_close(deficit_of(&shown, 2).unwrap(), r2);
        assert_close(deficit_of(&shown, 0).unwrap(), (1.7 / 2.4) - 1.0);
        let all = run::<ExposureFairness>("", &build(None)).unwrap();
        let total = attention(1) + attention(2) + attention(3);
        assert_close(deficit_of(&all, 2).unwrap(), r2 - attention(3) / total);
        assert!(shown.scores[2] > all.scores[2], "hidden: lifted more");
        // A slate larger than the request is the whole request.
        let big = run::<ExposureFairness>("", &build(Some(50))).unwrap();
        assert_eq!(big.scores, all.scores);
    }

    #[test]
    fn the_holders_table_sets_the_history_and_its_weight() {
        let d = |json: &str, b: RequestBuilder| {
            let out = run::<ExposureFairness>(json, &b.build()).unwrap();
            (deficit_of(&out, 0).unwrap(), deficit_of(&out, 1).unwrap())
        };
        let total = attention(1) + attention(2);
        let slate = (attention(1) / total, attention(2) / total);
        let base = || {
            RequestBuilder::new()
                .campaign(CampaignSpec::new(1))
                .candidate(cand(0.5, 0).campaign(0))
                .candidate(cand(0.5, 1).campaign(0))
        };
        // Unknown history: this slate's shares alone, deficits sum to 0.
        let (d0, d1) = d("", base());
        assert_close(d0, 0.5 - slate.0);
        assert_close(d1, 0.5 - slate.1);
        assert!(is_close(d0 + d1, 0.0) && d0 < 0.0);
        // Holder 0 took 90% of the last week's attention: blended at the
        // default weight 0.5, with weight 1 the history alone, with weight 0
        // ignored.
        let table = || {
            base()
                .holder_exposure_share_7d(0, 0.9)
                .holder_exposure_share_7d(1, 0.1)
        };
        let (d0, d1) = d("", table());
        assert_close(d0, 0.5 - (0.5 * 0.9 + 0.5 * slate.0));
        assert_close(d1, 0.5 - (0.5 * 0.1 + 0.5 * slate.1));
        let (d0, d1) = d(r#"{"history_weight": 1}"#, table());
        assert_close(d0, 0.5 - 0.9);
        assert_close(d1, 0.5 - 0.1);
        let (d0, _) = d(r#"{"history_weight": 0}"#, table());
        assert_close(d0, 0.5 - slate.0);
        // A share outside [0, 1] (a host bug) is clamped; NaN is unknown.
        let (d0, _) = d(
            r#"{"history_weight": 1}"#,
            base().holder_exposure_share_7d(0, 3.0),
        );
        assert_close(d0, 0.5 - 1.0);
        let (d0, _) = d("", base().holder_exposure_share_7d(0, f64::NAN));
        assert_close(d0, 0.5 - slate.0);
    }

    #[test]
    fn adjustment_is_clipped_symmetrically() {
        let out = run::<ExposureFairness>(r#"{"eta": 10, "clip": 0.05}"#, &two_holders().build())
            .unwrap();
        assert_close(out.scores[0], 0.9 - 0.05);
        assert_close(out.scores[1], 0.6 + 0.05);
    }

    #[test]
    fn ineligible_campaigns_are_not_adjusted_but_count_for_their_holder() {
        let req = RequestBuilder::new()
            .surface(Surface::Autoplay)
            .campaign(CampaignSpec::new(1).surfaces(&[Surface::Radio]))
            .candidate(cand(0.9, 1).campaign(0))
            .candidate(cand(0.25, 2).campaign(0))
            .build();
        let out = run::<ExposureFairness>("", &req).unwrap();
        assert_eq!(out.reasons, vec![Reason::NOT_ELIGIBLE_SURFACE; 2]);
        assert_eq!(out.scores, vec![0.9, 0.25]);
        assert_eq!(out.eligible, vec![false, false]);
        assert!(deficit_of(&out, 0).unwrap() != 0.0);
    }

    #[test]
    fn the_relevance_guardrail_holds_back_irrelevant_tracks() {
        // Holder 2's track is under-exposed but below s_min: not eligible,
        // not lifted, though its deficit is positive.
        let req = RequestBuilder::new()
            .campaign(CampaignSpec::new(1))
            .candidate(cand(0.9, 1).campaign(0))
            .candidate(cand(0.8, 1).campaign(0))
            .candidate(cand(0.15, 2).campaign(0))
            .slate_size(2)
            .build();
        let out = run::<ExposureFairness>("", &req).unwrap();
        assert!(deficit_of(&out, 2).unwrap() > 0.0);
        assert_eq!(out.reasons[2], Reason::RELEVANCE_GUARDRAIL);
        assert_eq!(
            (out.scores[2], out.eligible[2], out.propensity[2]),
            (0.15, false, 0.0)
        );
        // A lower s_min lets it through.
        let out = run::<ExposureFairness>(r#"{"s_min": 0.1}"#, &req).unwrap();
        assert_eq!(out.reasons[2], Reason::PROMOTED | Reason::FAIRNESS_ADJUST);
    }

    #[test]
    fn ranking_is_by_relevance_not_request_order() {
        let slate = [
            (0.9, 1, true),
            (0.6, 2, true),
            (0.5, 2, false),
            (0.3, 2, false),
        ];
        let build = |order: &[usize]| {
            let mut b = RequestBuilder::new()
                .campaign(CampaignSpec::new(1))
                .holder_exposure_share_7d(1, 0.5)
                .holder_exposure_share_7d(2, 0.2)
                .slate_size(3);
            for &k in order {
                let (s, h, promoted) = slate[k];
                let c = cand(s, h);
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
            .campaign(CampaignSpec::new(1))
            .candidate(cand(-0.4, 1).campaign(0))
            .candidate(cand(f64::NAN, 2).campaign(0))
            .holder_exposure_share_7d(1, f64::INFINITY)
            .build();
        let out = run::<ExposureFairness>(r#"{"s_min": -1}"#, &req).unwrap();
        assert_eq!(out.scores, vec![-0.4, 0.0]);
        assert_eq!(deficit_of(&out, 0), Some(0.0));
        assert_eq!(out.reasons, vec![Reason::empty(); 2]);
        assert_eq!(out.eligible, vec![true, true]);
        // With the default s_min both are held back by the guardrail.
        let out = run::<ExposureFairness>("", &req).unwrap();
        assert_eq!(out.reasons, vec![Reason::RELEVANCE_GUARDRAIL; 2]);
        assert_eq!(out.eligible, vec![false, false]);
    }

    #[test]
    fn invalid_settings_name_the_setting_and_value() {
        let req = two_holders().build();
        assert_settings_refused::<ExposureFairness>(
            &req,
            &[
                (r#"{"eta": -1}"#, "eta must be in [0, 10], got -1"),
                (r#"{"clip": 0}"#, "clip must be in (0, 1], got 0"),
                (r#"{"clip": 2}"#, "clip must be in (0, 1], got 2"),
                (
                    r#"{"history_weight": 1.5}"#,
                    "history_weight must be in [0, 1], got 1.5",
                ),
                (r#"{"gamma": 2}"#, "unknown field `gamma`"),
            ],
        );
        // eta 0 is valid and turns the policy into a passthrough.
        let out = run::<ExposureFairness>(r#"{"eta": 0}"#, &req).unwrap();
        assert_eq!(out.scores, vec![0.9, 0.6, 0.3]);
    }

    #[test]
    fn golden_fixtures_pass_natively() {
        oasis_sdk::testing::assert_fixtures_pass::<ExposureFairness>(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures"
        ));
    }

    #[test]
    fn metadata_documents_features_and_settings() {
        let m = full_metadata::<ExposureFairness>();
        assert!(
            m.required_features.is_empty(),
            "the history is the holders table"
        );
        assert_settings_documented::<ExposureFairness>(&[
            ("eta", "0.5"),
            ("clip", "0.2"),
            ("history_weight", "0.5"),
            ("s_min", "0.2"),
        ]);
    }
}
