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
}

impl Served {
    /// `decisions` of `by` served as the stable arm, nothing failed before:
    /// what a tool that calls a policy itself (the benchmark) hands to
    /// [`encode`](crate::serving::encode).
    pub fn stable(by: Arc<PolicyRef>, decisions: WitDecisions) -> Served {
        Served {
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
