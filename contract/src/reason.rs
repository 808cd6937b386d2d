//! Reason codes: why a candidate got its score.
//!
//! Bit `i` is the `i`-th flag of WIT's `flags reason`; the host pins these
//! bits against its generated bindings in a test, and the SDK's `Reason`
//! bitflags are defined from these constants.

/// Not in a campaign: relevance alone.
pub const ORGANIC: u16 = 1 << 0;
/// The policy lifted this candidate.
pub const PROMOTED: u16 = 1 << 1;
/// The campaign does not allow the request's surface.
pub const NOT_ELIGIBLE_SURFACE: u16 = 1 << 2;
/// The campaign does not allow the request's market.
pub const NOT_ELIGIBLE_MARKET: u16 = 1 << 3;
/// The request time is outside the campaign's `[start_ms, end_ms)` window.
pub const CAMPAIGN_INACTIVE: u16 = 1 << 4;
/// The listener hit a frequency cap (impressions in 24h or this session).
pub const FREQ_CAPPED: u16 = 1 << 5;
/// Pacing reduced the boost (the campaign is ahead of its schedule).
pub const PACING_THROTTLED: u16 = 1 << 6;
/// A listener-satisfaction guardrail (relevance or skip risk) held it back.
pub const RELEVANCE_GUARDRAIL: u16 = 1 << 7;
/// Lowered or not promoted to keep the promoted set diverse.
pub const DIVERSITY_PENALTY: u16 = 1 << 8;
/// Score adjusted, up or down, toward fair exposure across rights holders.
pub const FAIRNESS_ADJUST: u16 = 1 << 9;
/// Chosen by a random (exploration) draw rather than greedily.
pub const EXPLORATION: u16 = 1 << 10;
/// The per-slate limit on promoted tracks was reached.
pub const SLATE_CAP: u16 = 1 << 11;
/// A feature the policy needed was missing for this candidate.
pub const MISSING_FEATURE: u16 = 1 << 12;

/// Every reason bit with its name, in WIT order.
pub const REASONS: [(u16, &str); 13] = [
    (ORGANIC, "organic"),
    (PROMOTED, "promoted"),
    (NOT_ELIGIBLE_SURFACE, "not_eligible_surface"),
    (NOT_ELIGIBLE_MARKET, "not_eligible_market"),
    (CAMPAIGN_INACTIVE, "campaign_inactive"),
    (FREQ_CAPPED, "freq_capped"),
    (PACING_THROTTLED, "pacing_throttled"),
    (RELEVANCE_GUARDRAIL, "relevance_guardrail"),
    (DIVERSITY_PENALTY, "diversity_penalty"),
    (FAIRNESS_ADJUST, "fairness_adjust"),
    (EXPLORATION, "exploration"),
    (SLATE_CAP, "slate_cap"),
    (MISSING_FEATURE, "missing_feature"),
];

/// Every defined bit.
pub const ALL: u16 = (1 << REASONS.len()) - 1;

/// The names of the bits set in `bits`, in WIT order (undefined bits are
/// skipped).
///
/// ```
/// use oasis_contract::reason;
/// let names: Vec<_> = reason::names(reason::PROMOTED | reason::EXPLORATION).collect();
/// assert_eq!(names, ["promoted", "exploration"]);
/// ```
pub fn names(bits: u16) -> impl Iterator<Item = &'static str> {
    REASONS
        .iter()
        .filter(move |(bit, _)| bits & bit != 0)
        .map(|(_, name)| *name)
}

/// The bit named `name`, if any.
pub fn from_name(name: &str) -> Option<u16> {
    REASONS
        .iter()
        .find(|(_, n)| *n == name)
        .map(|(bit, _)| *bit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_are_in_order_and_distinct() {
        for (i, (bit, name)) in REASONS.iter().enumerate() {
            assert_eq!(*bit, 1 << i, "{name}");
            assert_eq!(from_name(name), Some(*bit));
        }
        assert_eq!(ALL, 0x1fff);
        assert_eq!(names(0).count(), 0);
        assert_eq!(names(1 << 15).count(), 0);
    }
}
