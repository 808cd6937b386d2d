//! The output contract: what a policy's decisions must satisfy.
//!
//! A policy is untrusted code, so the host checks every answer before a score
//! leaves it; the SDK's test harness runs the same function, so a policy that
//! passes its unit tests is not refused by the host for a rule the author
//! could not see. The rules, in the order they are checked:
//!
//! 1. every column has one entry per candidate;
//! 2. every score is finite;
//! 3. every propensity is in `[0, 1]`;
//! 4. only campaign tracks may be eligible or promoted;
//! 5. at most [`max_debug_values`](crate::max_debug_values) debug values,
//!    each named with 1 to [`MAX_NAME_BYTES`](crate::MAX_NAME_BYTES) bytes,
//!    referring to a candidate in range, and **finite** (the response is
//!    JSON, which has no NaN or infinity; a non-finite debug value is a bug
//!    in the policy, not a value to pass on as `null`);
//! 6. (contract 0.2.0) every campaign update names a campaign of the request
//!    (`campaign < campaigns`), carries a finite `pacing_integral` and
//!    `pacing_last_error`, and no campaign is updated twice: the host stores
//!    these as the campaign's controller state, so a NaN or a second,
//!    conflicting step must never reach the store.
//!
//! For a 0.1.0 component (no campaign updates) pass an empty
//! [`DecisionsView::campaign_updates`]; rule 6 then holds trivially.

use alloc::string::{String, ToString};
use core::fmt;

use crate::reason::PROMOTED;
use crate::{MAX_NAME_BYTES, max_debug_values};

/// Reason flags as their contract bits, whatever type a side's bindings use.
pub trait ReasonBits {
    /// The bits, as in [`crate::reason`].
    fn reason_bits(&self) -> u16;
}

impl ReasonBits for u16 {
    fn reason_bits(&self) -> u16 {
        *self
    }
}

/// A campaign update (contract 0.2.0 `campaign-update`) as the check reads
/// it, whatever type a side's bindings use: the SDK uses [`CampaignUpdate`],
/// the host implements this for its generated WIT record.
pub trait CampaignUpdateFields {
    /// Index into the request's campaigns.
    fn campaign(&self) -> u32;
    /// The new leaky integral of the pacing controller.
    fn pacing_integral(&self) -> f64;
    /// The new "previous error" of the pacing controller.
    fn pacing_last_error(&self) -> f64;
}

/// New pacing-controller state for one campaign of a request (the contract's
/// `campaign-update`): the policy hands it back in its decisions and the host
/// stores it for the served policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CampaignUpdate {
    /// Index into the request's campaigns.
    pub campaign: u32,
    /// The new leaky integral of the normalized delivery error.
    pub pacing_integral: f64,
    /// The delivery error of this step, the next step's "previous error".
    pub pacing_last_error: f64,
}

impl CampaignUpdateFields for CampaignUpdate {
    fn campaign(&self) -> u32 {
        self.campaign
    }
    fn pacing_integral(&self) -> f64 {
        self.pacing_integral
    }
    fn pacing_last_error(&self) -> f64 {
        self.pacing_last_error
    }
}

/// A policy's decisions, column by column, borrowed from either side's types.
///
/// `U` is the campaign-update type of the side's bindings (any
/// [`CampaignUpdateFields`]); it defaults to [`CampaignUpdate`], so a view of
/// 0.1.0 output can say `campaign_updates: &[] as &[CampaignUpdate]`.
#[derive(Debug, Clone, Copy)]
pub struct DecisionsView<'a, R, U = CampaignUpdate> {
    /// Score per candidate.
    pub scores: &'a [f64],
    /// Eligibility per candidate.
    pub eligible: &'a [bool],
    /// Reason flags per candidate.
    pub reasons: &'a [R],
    /// Propensity per candidate.
    pub propensity: &'a [f64],
    /// New pacing state, at most one per campaign (contract 0.2.0; empty for
    /// a 0.1.0 component, which cannot return any).
    pub campaign_updates: &'a [U],
}

/// One debug value, borrowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DebugRef<'a> {
    /// Its name.
    pub name: &'a str,
    /// The candidate it refers to, if any.
    pub candidate: Option<u32>,
    /// The value.
    pub value: f64,
}

/// The first rule a policy's output breaks.
#[derive(Debug, Clone, PartialEq)]
pub enum Violation {
    /// A column does not have one entry per candidate.
    ColumnLength {
        /// `scores`, `eligible`, `reasons` or `propensity`.
        column: &'static str,
        /// Entries it has.
        len: usize,
        /// Candidates in the request.
        candidates: usize,
    },
    /// A score is NaN or infinite.
    NonFiniteScore {
        /// The candidate.
        candidate: usize,
        /// The score.
        score: f64,
    },
    /// A propensity is outside `[0, 1]` (or NaN).
    PropensityOutOfRange {
        /// The candidate.
        candidate: usize,
        /// The propensity.
        propensity: f64,
    },
    /// A track in no campaign is marked eligible or promoted.
    OrganicPromoted {
        /// The candidate.
        candidate: usize,
    },
    /// More debug values than the bound.
    TooManyDebugValues {
        /// Values returned.
        count: usize,
        /// The bound for this many candidates.
        max: usize,
        /// Candidates in the request.
        candidates: usize,
    },
    /// A debug value's name is empty or too long.
    DebugNameLength {
        /// Its length in bytes.
        bytes: usize,
    },
    /// A debug value refers to a candidate that does not exist.
    DebugCandidateOutOfRange {
        /// The value's name.
        name: String,
        /// The candidate it names.
        candidate: u32,
        /// Candidates in the request.
        candidates: usize,
    },
    /// A debug value is NaN or infinite.
    NonFiniteDebugValue {
        /// The value's name.
        name: String,
        /// The value.
        value: f64,
    },
    /// A campaign update names a campaign the request does not have.
    CampaignUpdateOutOfRange {
        /// The campaign index it names.
        campaign: u32,
        /// Campaigns in the request.
        campaigns: usize,
    },
    /// A campaign update carries a NaN or infinite controller state.
    NonFiniteCampaignUpdate {
        /// The campaign index.
        campaign: u32,
        /// `pacing_integral` or `pacing_last_error`.
        field: &'static str,
        /// The value.
        value: f64,
    },
    /// Two campaign updates name the same campaign.
    DuplicateCampaignUpdate {
        /// The campaign index.
        campaign: u32,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::ColumnLength {
                column,
                len,
                candidates,
            } => write!(
                f,
                "`{column}` has {len} entries for {candidates} candidates"
            ),
            Violation::NonFiniteScore { candidate, score } => {
                write!(f, "score of candidate {candidate} is not finite ({score})")
            }
            Violation::PropensityOutOfRange {
                candidate,
                propensity,
            } => write!(
                f,
                "propensity of candidate {candidate} is outside [0, 1] ({propensity})"
            ),
            Violation::OrganicPromoted { candidate } => write!(
                f,
                "candidate {candidate} has no campaign but is marked eligible or promoted"
            ),
            Violation::TooManyDebugValues {
                count,
                max,
                candidates,
            } => write!(
                f,
                "{count} debug values (at most {max} for {candidates} candidates)"
            ),
            Violation::DebugNameLength { bytes } => write!(
                f,
                "a debug value name is {bytes} bytes; names must be 1-{MAX_NAME_BYTES} bytes"
            ),
            Violation::DebugCandidateOutOfRange {
                name,
                candidate,
                candidates,
            } => write!(
                f,
                "debug value `{name}` refers to candidate {candidate} of {candidates} (out of range)"
            ),
            Violation::NonFiniteDebugValue { name, value } => {
                write!(f, "debug value `{name}` is not finite ({value})")
            }
            Violation::CampaignUpdateOutOfRange {
                campaign,
                campaigns,
            } => write!(
                f,
                "campaign update for campaign {campaign} of {campaigns} (out of range)"
            ),
            Violation::NonFiniteCampaignUpdate {
                campaign,
                field,
                value,
            } => write!(
                f,
                "campaign update for campaign {campaign}: `{field}` is not finite ({value})"
            ),
            Violation::DuplicateCampaignUpdate { campaign } => write!(
                f,
                "campaign {campaign} is updated more than once (at most one update per campaign)"
            ),
        }
    }
}

impl core::error::Error for Violation {}

/// Checks a policy's decisions for `candidates` candidates whose campaign
/// column is `campaign` (an index per candidate, negative for organic
/// tracks; a missing entry counts as organic), in a request with `campaigns`
/// campaigns (the range of [`DecisionsView::campaign_updates`]).
///
/// # Errors
/// The first [`Violation`], in the order of the module docs.
///
/// # Examples
/// ```
/// use oasis_contract::{
///     check_decisions, reason, CampaignUpdate, DebugRef, DecisionsView, Violation,
/// };
/// let reasons = [reason::ORGANIC, reason::PROMOTED];
/// let update = [CampaignUpdate { campaign: 0, pacing_integral: 0.1, pacing_last_error: 0.05 }];
/// let view = DecisionsView {
///     scores: &[0.4, 0.9], eligible: &[false, true],
///     reasons: &reasons, propensity: &[0.0, 1.0],
///     campaign_updates: &update,
/// };
/// let campaign = [-1, 0];
/// assert_eq!(check_decisions(2, &campaign, 1, view, [].into_iter()), Ok(()));
/// let nan = [DebugRef { name: "boost", candidate: Some(1), value: f64::NAN }];
/// assert!(matches!(
///     check_decisions(2, &campaign, 1, view, nan.into_iter()),
///     Err(Violation::NonFiniteDebugValue { .. })
/// ));
/// // The request has one campaign: index 1 does not exist.
/// let stray = [CampaignUpdate { campaign: 1, ..update[0] }];
/// assert_eq!(
///     check_decisions(2, &campaign, 1, DecisionsView { campaign_updates: &stray, ..view }, [].into_iter()),
///     Err(Violation::CampaignUpdateOutOfRange { campaign: 1, campaigns: 1 })
/// );
/// ```
pub fn check_decisions<'a, R: ReasonBits, U: CampaignUpdateFields>(
    candidates: usize,
    campaign: &[i32],
    campaigns: usize,
    d: DecisionsView<'_, R, U>,
    debug: impl ExactSizeIterator<Item = DebugRef<'a>>,
) -> Result<(), Violation> {
    for (column, len) in [
        ("scores", d.scores.len()),
        ("eligible", d.eligible.len()),
        ("reasons", d.reasons.len()),
        ("propensity", d.propensity.len()),
    ] {
        if len != candidates {
            return Err(Violation::ColumnLength {
                column,
                len,
                candidates,
            });
        }
    }
    if let Some(i) = d.scores.iter().position(|s| !s.is_finite()) {
        return Err(Violation::NonFiniteScore {
            candidate: i,
            score: d.scores[i],
        });
    }
    if let Some(i) = d.propensity.iter().position(|p| !(0.0..=1.0).contains(p)) {
        return Err(Violation::PropensityOutOfRange {
            candidate: i,
            propensity: d.propensity[i],
        });
    }
    let organic_promoted = (0..candidates).find(|&i| {
        campaign.get(i).is_none_or(|&c| c < 0)
            && (d.eligible[i] || d.reasons[i].reason_bits() & PROMOTED != 0)
    });
    if let Some(candidate) = organic_promoted {
        return Err(Violation::OrganicPromoted { candidate });
    }
    let max = max_debug_values(candidates);
    if debug.len() > max {
        return Err(Violation::TooManyDebugValues {
            count: debug.len(),
            max,
            candidates,
        });
    }
    for v in debug {
        if v.name.is_empty() || v.name.len() > MAX_NAME_BYTES {
            return Err(Violation::DebugNameLength {
                bytes: v.name.len(),
            });
        }
        if let Some(c) = v.candidate.filter(|&c| c as usize >= candidates) {
            return Err(Violation::DebugCandidateOutOfRange {
                name: v.name.to_string(),
                candidate: c,
                candidates,
            });
        }
        if !v.value.is_finite() {
            return Err(Violation::NonFiniteDebugValue {
                name: v.name.to_string(),
                value: v.value,
            });
        }
    }
    check_campaign_updates(campaigns, d.campaign_updates)
}

/// Rule 6 of the module docs, in update order: for each update, its range,
/// then its finiteness, then whether an earlier update named the campaign.
fn check_campaign_updates<U: CampaignUpdateFields>(
    campaigns: usize,
    updates: &[U],
) -> Result<(), Violation> {
    if updates.is_empty() {
        return Ok(());
    }
    let mut seen = alloc::vec![false; campaigns];
    for u in updates {
        let campaign = u.campaign();
        let Some(slot) = seen.get_mut(campaign as usize) else {
            return Err(Violation::CampaignUpdateOutOfRange {
                campaign,
                campaigns,
            });
        };
        for (field, value) in [
            ("pacing_integral", u.pacing_integral()),
            ("pacing_last_error", u.pacing_last_error()),
        ] {
            if !value.is_finite() {
                return Err(Violation::NonFiniteCampaignUpdate {
                    campaign,
                    field,
                    value,
                });
            }
        }
        if core::mem::replace(slot, true) {
            return Err(Violation::DuplicateCampaignUpdate { campaign });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reason::{ORGANIC, PROMOTED};
    use alloc::vec;
    use alloc::vec::Vec;

    struct Out {
        scores: Vec<f64>,
        eligible: Vec<bool>,
        reasons: Vec<u16>,
        propensity: Vec<f64>,
        debug: Vec<(&'static str, Option<u32>, f64)>,
        updates: Vec<CampaignUpdate>,
    }

    fn ok(n: usize) -> Out {
        Out {
            scores: vec![0.5; n],
            eligible: vec![false; n],
            reasons: vec![ORGANIC; n],
            propensity: vec![0.0; n],
            debug: Vec::new(),
            updates: Vec::new(),
        }
    }

    /// Checks `o` in a request with two campaigns.
    fn check(o: &Out, campaign: &[i32]) -> Result<(), Violation> {
        check_decisions(
            campaign.len(),
            campaign,
            2,
            DecisionsView {
                scores: &o.scores,
                eligible: &o.eligible,
                reasons: &o.reasons,
                propensity: &o.propensity,
                campaign_updates: &o.updates,
            },
            o.debug.iter().map(|&(name, candidate, value)| DebugRef {
                name,
                candidate,
                value,
            }),
        )
    }

    #[test]
    fn accepts_well_formed_output() {
        check(&ok(3), &[-1; 3]).unwrap();
        check(&ok(0), &[]).unwrap();
        let mut o = ok(2);
        o.eligible[1] = true;
        o.reasons[1] = PROMOTED;
        o.debug.push(("boost", Some(1), 0.25));
        o.debug.push(("total", None, -3.0));
        check(&o, &[-1, 0]).unwrap();
    }

    #[test]
    fn each_rule_has_its_violation() {
        let mut o = ok(3);
        o.scores.pop();
        assert_eq!(
            check(&o, &[-1; 3]).unwrap_err().to_string(),
            "`scores` has 2 entries for 3 candidates"
        );
        let mut o = ok(3);
        o.reasons.push(ORGANIC);
        assert!(matches!(
            check(&o, &[-1; 3]),
            Err(Violation::ColumnLength {
                column: "reasons",
                len: 4,
                ..
            })
        ));
        let mut o = ok(3);
        o.scores[2] = f64::INFINITY;
        assert!(matches!(
            check(&o, &[-1; 3]),
            Err(Violation::NonFiniteScore { candidate: 2, .. })
        ));
        let mut o = ok(3);
        o.propensity[0] = f64::NAN;
        assert!(matches!(
            check(&o, &[-1; 3]),
            Err(Violation::PropensityOutOfRange { candidate: 0, .. })
        ));
        let mut o = ok(2);
        o.reasons[1] |= PROMOTED;
        assert_eq!(
            check(&o, &[0, -1]),
            Err(Violation::OrganicPromoted { candidate: 1 })
        );
        let mut o = ok(1);
        o.debug = vec![("x", None, 1.0); 69];
        assert!(matches!(
            check(&o, &[-1]),
            Err(Violation::TooManyDebugValues {
                count: 69,
                max: 68,
                ..
            })
        ));
        let mut o = ok(1);
        o.debug.push(("", None, 1.0));
        assert!(
            check(&o, &[-1])
                .unwrap_err()
                .to_string()
                .contains("names must be 1-64 bytes")
        );
        let mut o = ok(1);
        o.debug.push(("x", Some(5), 1.0));
        assert!(
            check(&o, &[-1])
                .unwrap_err()
                .to_string()
                .contains("refers to candidate 5 of 1")
        );
        let mut o = ok(1);
        o.debug.push(("x", None, f64::NEG_INFINITY));
        assert!(matches!(
            check(&o, &[-1]),
            Err(Violation::NonFiniteDebugValue { .. })
        ));
    }

    #[test]
    fn a_missing_campaign_entry_counts_as_organic() {
        let mut o = ok(2);
        o.eligible[1] = true;
        assert_eq!(
            check_decisions(
                2,
                &[0],
                1,
                DecisionsView {
                    scores: &o.scores,
                    eligible: &o.eligible,
                    reasons: &o.reasons,
                    propensity: &o.propensity,
                    campaign_updates: &[] as &[CampaignUpdate],
                },
                [].into_iter(),
            ),
            Err(Violation::OrganicPromoted { candidate: 1 })
        );
    }

    fn update(campaign: u32, integral: f64, last_error: f64) -> CampaignUpdate {
        CampaignUpdate {
            campaign,
            pacing_integral: integral,
            pacing_last_error: last_error,
        }
    }

    #[test]
    fn campaign_updates_are_in_range_finite_and_one_per_campaign() {
        let mut o = ok(1);
        o.updates = vec![update(1, -0.5, 0.25), update(0, 0.0, 0.0)];
        check(&o, &[-1]).unwrap();

        o.updates = vec![update(0, 0.1, 0.1), update(2, 0.1, 0.1)];
        assert_eq!(
            check(&o, &[-1]),
            Err(Violation::CampaignUpdateOutOfRange {
                campaign: 2,
                campaigns: 2
            })
        );
        assert_eq!(
            check(&o, &[-1]).unwrap_err().to_string(),
            "campaign update for campaign 2 of 2 (out of range)"
        );

        o.updates = vec![update(1, 0.1, f64::NAN)];
        let err = check(&o, &[-1]).unwrap_err();
        assert!(matches!(
            err,
            Violation::NonFiniteCampaignUpdate {
                campaign: 1,
                field: "pacing_last_error",
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "campaign update for campaign 1: `pacing_last_error` is not finite (NaN)"
        );
        o.updates = vec![update(0, f64::INFINITY, 0.0)];
        assert!(matches!(
            check(&o, &[-1]),
            Err(Violation::NonFiniteCampaignUpdate {
                field: "pacing_integral",
                ..
            })
        ));

        o.updates = vec![
            update(1, 0.1, 0.1),
            update(0, 0.1, 0.1),
            update(1, 0.2, 0.2),
        ];
        assert_eq!(
            check(&o, &[-1]),
            Err(Violation::DuplicateCampaignUpdate { campaign: 1 })
        );
    }

    #[test]
    fn campaign_updates_are_checked_after_the_candidate_rules() {
        // A request without campaigns: any update is out of range, but a
        // broken score is reported first (rule order of the module docs).
        let mut o = ok(1);
        o.scores[0] = f64::NAN;
        o.updates = vec![update(0, 0.0, 0.0)];
        let view = DecisionsView {
            scores: &o.scores,
            eligible: &o.eligible,
            reasons: &o.reasons,
            propensity: &o.propensity,
            campaign_updates: &o.updates,
        };
        assert!(matches!(
            check_decisions(1, &[-1], 0, view, [].into_iter()),
            Err(Violation::NonFiniteScore { .. })
        ));
        let fine = [0.5];
        let view = DecisionsView {
            scores: &fine,
            ..view
        };
        assert_eq!(
            check_decisions(1, &[-1], 0, view, [].into_iter()),
            Err(Violation::CampaignUpdateOutOfRange {
                campaign: 0,
                campaigns: 0
            })
        );
    }
}
