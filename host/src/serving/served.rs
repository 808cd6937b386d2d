//! [`Served`]: the answer to one request, as the chain produced it — what
//! the encoders, the decision log, the shadows and the metrics read.

use std::sync::Arc;

use crate::bindings::WitDecisions;
use crate::control::registry::{ActivePolicy, ArmKind};
use crate::error::CallError;
use crate::metadata::PolicyRef;
use crate::response::Variant;

/// The answer to one request: who served it, and what failed before.
#[derive(Debug)]
pub struct Served {
    /// The decisions, one entry per candidate.
    pub decisions: WitDecisions,
    /// Time in the serving policy's call, microseconds (0 for passthrough).
    pub policy_us: u64,
    /// The version that served.
    pub by: Arc<PolicyRef>,
    /// The loaded version that served (none for the passthrough).
    pub active: Option<Arc<ActivePolicy>>,
    /// Resources its call used (none for the passthrough).
    pub usage: Option<crate::policy::Usage>,
    /// The arm that served.
    pub arm: ArmKind,
    /// How the request was served: the intended arm, a fallback, or the
    /// kill switch.
    pub variant: Variant,
    /// The arms that failed before it, in chain order, with their errors.
    pub failures: Vec<(Arc<PolicyRef>, CallError)>,
    /// The first arm tried, whether it answered and its call time
    /// (microseconds): what a canary's guardrails judge.
    pub first: Option<(ArmKind, bool, u64)>,
    /// The listener and session counts were unknown, so the host withheld
    /// the promotions ([`crate::delivery::withhold_promotions`]); the
    /// answer says `"delivery_state": "counts_unknown"`.
    pub counts_unknown: bool,
    /// Eligible candidates in the decisions.
    pub eligible: u64,
    /// Promoted candidates in the decisions.
    pub promoted: u64,
}

impl Served {
    /// `decisions` of `by` served as the stable arm, nothing failed before:
    /// what a tool that calls a policy itself (the benchmark) hands to
    /// [`encode`](crate::serving::encode).
    pub fn stable(by: Arc<PolicyRef>, decisions: WitDecisions) -> Served {
        let (eligible, promoted) = counts(&decisions);
        Served {
            eligible,
            promoted,
            decisions,
            policy_us: 0,
            by,
            active: None,
            usage: None,
            arm: ArmKind::Stable,
            variant: Variant::Stable,
            failures: Vec::new(),
            first: None,
            counts_unknown: false,
        }
    }
}

/// Eligible and promoted candidates of `decisions` (what the chain counts
/// as it serves; this is for answers it did not count, the passthrough's).
pub fn counts(decisions: &WitDecisions) -> (u64, u64) {
    use oasis_contract::ReasonBits;
    let eligible = decisions.eligible.iter().filter(|e| **e).count() as u64;
    let promoted = decisions
        .reasons
        .iter()
        .filter(|r| r.reason_bits() & oasis_contract::reason::PROMOTED != 0)
        .count() as u64;
    (eligible, promoted)
}
