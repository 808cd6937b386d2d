//! # epsilon-greedy: exploration over campaign tracks with exact propensities
//!
//! Promotes up to `slots` campaign tracks per request, mostly the most
//! relevant ones, sometimes a random one, and logs for every eligible track
//! the exact probability that it was promoted, so that other policies can be
//! evaluated offline on the logs (inverse propensity scoring).
//!
//! **Eligible set `A`.** Campaign tracks whose campaign is active now
//! (`CAMPAIGN_INACTIVE`), allows the surface (`NOT_ELIGIBLE_SURFACE`) and
//! market (`NOT_ELIGIBLE_MARKET`), and that pass the SDK's relevance
//! guardrail ([`oasis_sdk::blocks::RelevanceGuardrail`], `s_min`, no
//! `p_skip`): a track with `s < s_min` is not eligible, keeps `s`,
//! propensity 0, `RELEVANCE_GUARDRAIL`. Every failing condition is reported. `A` is ordered by
//! relevance descending, ties in request order; the *greedy* track of a set is
//! its first in that order.
//!
//! **Choice.** `K = min(slots, |A|)` sequential draws without replacement from
//! the remaining set `R` (initially `A`). Each draw takes `u = rng.next_f64()`
//! from the request's seeded generator (the only randomness used): if
//! `u < epsilon` the draw *explores*, a uniformly random track of `R`
//! (`rng.below(|R|)`); otherwise it takes the greedy track of `R`. So a track
//! `i` in `R` is drawn with probability
//!
//! ```text
//! pi_draw(i | R) = (1 - epsilon) * [i is greedy in R] + epsilon / |R|
//! ```
//!
//! which for one slot is the marginal propensity `pi = (1 - eps) * [greedy] +
//! eps / |A|`. Chosen tracks get `+boost`, `PROMOTED`, and `EXPLORATION` when
//! the random branch chose them (even if it happened to pick the greedy one).
//!
//! **Propensity** (logged for every eligible track, chosen or not) is the
//! exact marginal probability that the `K` draws promote it, summing to `K`
//! over `A`. For `slots > 1` it is computed with a small dynamic program
//! instead of enumerating the `|A|^K` draw sequences. Number the tracks of `A`
//! by rank `0..n-1`. After `t` draws, the state is `(g, j)`: `g` is the rank
//! of the greedy (best remaining) track, so ranks `< g` were all drawn, and
//! `j = t - g` tracks of rank `> g` were drawn by exploration. By symmetry
//! those `j` are a uniformly random `j`-subset of the `N = n - 1 - g` ranks
//! below `g` (true initially; exploring keeps it uniform; when `g` is drawn,
//! conditioning on which ranks just below `g` were drawn keeps the rest
//! uniform). With `m = n - t` remaining, one draw moves
//!
//! ```text
//! (g, j) -> (g, j + 1)            with eps * (m - 1) / m   (explore, not the greedy)
//! (g, j) -> (g + 1 + l, j - l)    with ((1 - eps) + eps / m) * q_l,  l = 0..=j
//! q_l = P(ranks g+1..g+l drawn, g+1+l not) = prod_{a<l} (j - a)/(N - a) * (N - j)/(N - l)
//! ```
//!
//! (for `l = j` the last factor is 1). After `K` draws, rank `r` was drawn
//! with probability `sum over final (g, j) of P(g, j) * ([r < g] + [r > g] * j / N)`.
//! The cost is `O(K^3 + K * n)`; a unit test checks it against brute-force
//! enumeration. Non-eligible tracks have propensity 0.
//!
//! | setting | default | meaning |
//! |---|---|---|
//! | `epsilon` | 0.1 | probability that a draw explores, in [0, 1] |
//! | `slots` | 1 | most tracks promoted per request, in [1, 100] |
//! | `boost` | 0.2 | score added to chosen tracks, in (0, 10] |
//! | `s_min` | 0.2 | the relevance guardrail: campaign tracks below it are not eligible (finite) |

use oasis_sdk::blocks::RelevanceGuardrail;
use oasis_sdk::{Decisions, Eligibility, Metadata, Policy, PolicyError, Reason, Request};
use serde::{Deserialize, Serialize};

/// The epsilon-greedy policy.
pub struct EpsilonGreedy;

/// Operator settings; every field is optional and defaults as documented.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Probability that a draw explores (uniform pick) instead of taking the
    /// most relevant track, in [0, 1]. Default 0.1.
    pub epsilon: f64,
    /// Most tracks promoted per request, in [1, 100]. Default 1.
    pub slots: u32,
    /// Score added to chosen tracks, in (0, 10]. Default 0.2.
    pub boost: f64,
    /// Relevance guardrail: campaign tracks below it are not eligible, never
    /// chosen; finite. Default 0.2.
    pub s_min: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            epsilon: 0.1,
            slots: 1,
            boost: 0.2,
            s_min: 0.2,
        }
    }
}

/// Exact probability, per rank `0..n` of the eligible set, that `min(k, n)`
/// epsilon-greedy draws without replacement pick it (see the crate docs).
pub fn inclusion_probabilities(n: usize, k: usize, eps: f64) -> Vec<f64> {
    let k = k.min(n);
    // p[g][j]: probability of state (g, j) after t = g + j draws.
    let mut p = vec![vec![0.0_f64; k + 1]; k + 1];
    p[0][0] = 1.0;
    for t in 0..k {
        let m = (n - t) as f64;
        let p_top = (1.0 - eps) + eps / m;
        let p_explore_other = eps * (m - 1.0) / m;
        for g in 0..=t {
            let j = t - g;
            let pr = p[g][j];
            if pr == 0.0 {
                continue;
            }
            let below = n - 1 - g; // N
            if below > j {
                p[g][j + 1] += pr * p_explore_other;
            }
            // The greedy track g is drawn; the next greedy is the first rank
            // after g not yet drawn.
            let mut run = 1.0; // P(ranks g+1..g+l all drawn)
            for l in 0..j {
                let q = run * (below - j) as f64 / (below - l) as f64;
                p[g + 1 + l][j - l] += pr * p_top * q;
                run *= (j - l) as f64 / (below - l) as f64;
            }
            p[g + 1 + j][0] += pr * p_top * run;
        }
    }
    let mut incl = vec![0.0_f64; n];
    for g in 0..=k {
        let j = k - g;
        let pr = p[g][j];
        if pr == 0.0 {
            continue;
        }
        for x in &mut incl[..g] {
            *x += pr;
        }
        if g + 1 < n {
            let share = pr * j as f64 / (n - 1 - g) as f64;
            for x in &mut incl[g + 1..] {
                *x += share;
            }
        }
    }
    for x in &mut incl {
        *x = x.clamp(0.0, 1.0); // rounding must not leave [0, 1]
    }
    incl
}

impl Policy for EpsilonGreedy {
    type Settings = Settings;

    fn metadata() -> Metadata {
        Metadata::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
            .description(
                "Promotes up to `slots` eligible campaign tracks (active, surface, market, \
                 relevance >= s_min) by sequential epsilon-greedy draws seeded by the request, \
                 and logs each eligible track's exact marginal propensity.",
            )
            .setting("epsilon", "probability that a draw explores uniformly instead of taking the best track, in [0, 1]")
            .setting("slots", "most tracks promoted per request, in [1, 100]")
            .setting("boost", "score added to chosen tracks, in (0, 10]")
            .setting("s_min", "relevance guardrail: campaign tracks below it are not eligible, never chosen (finite)")
    }

    fn validate(s: &Settings) -> Result<(), String> {
        if !(0.0..=1.0).contains(&s.epsilon) {
            return Err(format!("epsilon must be in [0, 1], got {}", s.epsilon));
        }
        if !(1..=100).contains(&s.slots) {
            return Err(format!("slots must be in [1, 100], got {}", s.slots));
        }
        if !(s.boost > 0.0 && s.boost <= 10.0) {
            return Err(format!("boost must be in (0, 10], got {}", s.boost));
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

        let guardrail = RelevanceGuardrail {
            s_min: s.s_min,
            max_p_skip: None,
        };
        let mut eligible = Vec::new();
        for c in req.candidates() {
            let i = c.index();
            let block = match c.campaign_eligibility() {
                Eligibility::Organic => continue,
                Eligibility::Eligible(_) => Reason::empty(),
                Eligibility::Ineligible(r) => r,
            } | guardrail.check(base[i], None);
            if block.is_empty() {
                out.eligible[i] = true;
                eligible.push(i);
            } else {
                RelevanceGuardrail::hold_back(&mut out, i, base[i], block);
            }
        }
        // Rank order: relevance descending, ties in request order.
        let eligible = oasis_sdk::blocks::top_by_relevance(&base, eligible, usize::MAX);
        let pi = inclusion_probabilities(eligible.len(), s.slots as usize, s.epsilon);
        for (rank, &i) in eligible.iter().enumerate() {
            out.propensity[i] = pi[rank];
        }

        let mut rng = req.rng();
        let mut remaining = eligible;
        for _ in 0..(s.slots as usize).min(remaining.len()) {
            let explore = rng.next_f64() < s.epsilon;
            let pos = if explore {
                rng.below(remaining.len())
            } else {
                0
            };
            let i = remaining.remove(pos);
            let propensity = out.propensity[i];
            out.promote(i, s.boost, propensity);
            if explore {
                out.mark(i, Reason::EXPLORATION);
            }
        }
        Ok(out)
    }
}

oasis_sdk::export_policy!(EpsilonGreedy);

#[cfg(test)]
mod tests {
    use super::*;
    use oasis_sdk::Surface;
    use oasis_sdk::testing::{
        CampaignSpec, CandidateSpec, NOW_MS, RequestBuilder, assert_close,
        assert_settings_documented, assert_settings_refused, is_close, run,
    };

    /// Campaign candidates with the given relevances, plus one organic track.
    fn request(relevance: &[f64], seed: u64) -> Request {
        let mut b = RequestBuilder::new()
            .seed(seed)
            .campaign(CampaignSpec::new(1));
        for &s in relevance {
            b = b.candidate(CandidateSpec::new(s).campaign(0));
        }
        b.candidate(CandidateSpec::new(0.99)).build()
    }

    const REL: [f64; 5] = [0.5, 0.9, 0.3, 0.7, 0.6];

    fn promoted(out: &Decisions) -> Vec<usize> {
        (0..out.len())
            .filter(|&i| out.reasons[i].contains(Reason::PROMOTED))
            .collect()
    }

    /// Brute force over every draw sequence; `remaining` holds ranks in order.
    fn brute(remaining: &[usize], draws: usize, eps: f64, prob: f64, incl: &mut [f64]) {
        if draws == 0 || remaining.is_empty() {
            return;
        }
        let m = remaining.len() as f64;
        for pos in 0..remaining.len() {
            let p = eps / m + if pos == 0 { 1.0 - eps } else { 0.0 };
            incl[remaining[pos]] += prob * p;
            let mut rest = remaining.to_vec();
            rest.remove(pos);
            brute(&rest, draws - 1, eps, prob * p, incl);
        }
    }

    #[test]
    fn dynamic_program_matches_brute_force_enumeration() {
        for n in 0..=7 {
            for k in 1..=8 {
                for eps in [0.0, 0.1, 0.37, 0.9, 1.0] {
                    let mut want = vec![0.0; n];
                    brute(&(0..n).collect::<Vec<_>>(), k, eps, 1.0, &mut want);
                    let got = inclusion_probabilities(n, k, eps);
                    for r in 0..n {
                        assert!(
                            is_close(got[r], want[r]),
                            "n={n} k={k} eps={eps} rank {r}: {} vs {}",
                            got[r],
                            want[r]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn single_slot_propensity_is_the_closed_form() {
        let out = run::<EpsilonGreedy>(r#"{"epsilon": 0.3}"#, &request(&REL, 1)).unwrap();
        let n = REL.len() as f64;
        for i in 0..REL.len() {
            let greedy = if i == 1 { 0.7 } else { 0.0 };
            assert!(
                is_close(out.propensity[i], greedy + 0.3 / n),
                "candidate {i}"
            );
            assert!(out.eligible[i]);
        }
        assert_eq!(out.propensity[5], 0.0, "organic");
        assert_eq!(promoted(&out).len(), 1);
    }

    #[test]
    fn propensities_sum_to_the_number_of_promoted_slots() {
        for (slots, eps) in [(1, 0.2), (2, 0.5), (3, 0.05), (5, 0.8), (9, 0.3)] {
            let json = format!(r#"{{"epsilon": {eps}, "slots": {slots}}}"#);
            let out = run::<EpsilonGreedy>(&json, &request(&REL, 7)).unwrap();
            let sum: f64 = out.propensity.iter().sum();
            let k = slots.min(REL.len());
            assert!((sum - k as f64).abs() < 1e-9, "slots {slots}: {sum}");
            assert_eq!(promoted(&out).len(), k);
            for i in promoted(&out) {
                assert!(out.propensity[i] > 0.0);
                assert_close(out.scores[i], REL[i] + 0.2);
            }
        }
    }

    #[test]
    fn same_seed_same_decisions_and_seeds_matter() {
        let json = r#"{"epsilon": 0.5, "slots": 2}"#;
        let a = run::<EpsilonGreedy>(json, &request(&REL, 99)).unwrap();
        let b = run::<EpsilonGreedy>(json, &request(&REL, 99)).unwrap();
        assert_eq!(a, b);
        let distinct: std::collections::BTreeSet<Vec<usize>> = (0..50)
            .map(|seed| promoted(&run::<EpsilonGreedy>(json, &request(&REL, seed)).unwrap()))
            .collect();
        assert!(distinct.len() > 3, "{distinct:?}");
    }

    #[test]
    fn empirical_frequencies_match_propensities() {
        for (slots, eps) in [(1, 0.3), (3, 0.4)] {
            let json = format!(r#"{{"epsilon": {eps}, "slots": {slots}}}"#);
            let trials = 20_000;
            let mut count = [0usize; 5];
            let mut explored = 0usize;
            let pi = run::<EpsilonGreedy>(&json, &request(&REL, 0))
                .unwrap()
                .propensity;
            for seed in 0..trials {
                let out = run::<EpsilonGreedy>(&json, &request(&REL, seed)).unwrap();
                assert_eq!(out.propensity, pi, "propensity does not depend on the seed");
                for i in promoted(&out) {
                    count[i] += 1;
                    explored += out.reasons[i].contains(Reason::EXPLORATION) as usize;
                }
            }
            for i in 0..5 {
                let freq = count[i] as f64 / trials as f64;
                assert!(
                    (freq - pi[i]).abs() < 0.015,
                    "slots {slots} candidate {i}: {freq} vs {}",
                    pi[i]
                );
            }
            let explore_rate = explored as f64 / (trials as usize * slots) as f64;
            assert!((explore_rate - eps).abs() < 0.015, "{explore_rate}");
        }
    }

    #[test]
    fn epsilon_zero_is_greedy_and_one_is_uniform() {
        let out = run::<EpsilonGreedy>(r#"{"epsilon": 0, "slots": 2}"#, &request(&REL, 3)).unwrap();
        assert_eq!(promoted(&out), vec![1, 3]);
        assert_eq!(&out.propensity[..5], &[0.0, 1.0, 0.0, 1.0, 0.0]);
        assert!(out.reasons.iter().all(|r| !r.contains(Reason::EXPLORATION)));

        let out = run::<EpsilonGreedy>(r#"{"epsilon": 1, "slots": 2}"#, &request(&REL, 3)).unwrap();
        assert!(out.propensity[..5].iter().all(|&p| is_close(p, 0.4)));
        for i in promoted(&out) {
            assert_eq!(out.reasons[i], Reason::PROMOTED | Reason::EXPLORATION);
        }
    }

    #[test]
    fn ineligible_tracks_are_never_chosen_and_carry_no_propensity() {
        let req = RequestBuilder::new()
            .surface(Surface::GenreMix)
            .market("SE")
            .campaign(CampaignSpec::new(1))
            .campaign(CampaignSpec::new(2).window(NOW_MS + 1, NOW_MS + 2))
            .campaign(CampaignSpec::new(3).surfaces(&[Surface::Radio]))
            .campaign(CampaignSpec::new(4).markets(&["JP"]))
            .candidate(CandidateSpec::new(0.4).campaign(0))
            .candidate(CandidateSpec::new(0.95).campaign(1))
            .candidate(CandidateSpec::new(0.95).campaign(2))
            .candidate(CandidateSpec::new(0.95).campaign(3))
            .candidate(CandidateSpec::new(0.1).campaign(0)) // below s_min
            .build();
        for seed in 0..200 {
            let req = Request {
                context: oasis_sdk::Context {
                    seed,
                    ..req.context.clone()
                },
                ..req.clone()
            };
            let out = run::<EpsilonGreedy>(r#"{"epsilon": 1, "slots": 3}"#, &req).unwrap();
            assert_eq!(promoted(&out), vec![0], "seed {seed}");
            assert_eq!(out.propensity, vec![1.0, 0.0, 0.0, 0.0, 0.0]);
        }
        let out = run::<EpsilonGreedy>("", &req).unwrap();
        assert_eq!(
            out.reasons[1..],
            [
                Reason::CAMPAIGN_INACTIVE,
                Reason::NOT_ELIGIBLE_SURFACE,
                Reason::NOT_ELIGIBLE_MARKET,
                Reason::RELEVANCE_GUARDRAIL,
            ]
        );
        assert_eq!(out.eligible, vec![true, false, false, false, false]);
        assert_eq!(&out.scores[1..], &[0.95, 0.95, 0.95, 0.1]);
    }

    #[test]
    fn no_eligible_track_means_passthrough() {
        let out =
            run::<EpsilonGreedy>(r#"{"epsilon": 0.5}"#, &request(&[0.1, f64::NAN], 5)).unwrap();
        assert_eq!(out.scores, vec![0.1, 0.0, 0.99]);
        assert!(promoted(&out).is_empty());
        assert!(out.propensity.iter().all(|&p| p == 0.0));
    }

    #[test]
    fn invalid_settings_name_the_setting_and_value() {
        assert_settings_refused::<EpsilonGreedy>(
            &request(&REL, 1),
            &[
                (r#"{"epsilon": 1.5}"#, "epsilon must be in [0, 1], got 1.5"),
                (
                    r#"{"epsilon": -0.1}"#,
                    "epsilon must be in [0, 1], got -0.1",
                ),
                (r#"{"slots": 0}"#, "slots must be in [1, 100], got 0"),
                (r#"{"slots": 101}"#, "slots must be in [1, 100], got 101"),
                (r#"{"boost": 0}"#, "boost must be in (0, 10], got 0"),
                (r#"{"eps": 0.1}"#, "unknown field `eps`"),
            ],
        );
    }

    #[test]
    fn golden_fixtures_pass_natively() {
        oasis_sdk::testing::assert_fixtures_pass::<EpsilonGreedy>(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures"
        ));
    }

    #[test]
    fn metadata_documents_every_setting_with_defaults() {
        assert_settings_documented::<EpsilonGreedy>(&[
            ("epsilon", "0.1"),
            ("slots", "1"),
            ("boost", "0.2"),
            ("s_min", "0.2"),
        ]);
    }
}
