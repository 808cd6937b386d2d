//! The scoring response: policy decisions joined back to candidate ids.

use serde::Serialize;
use serde::ser::SerializeSeq;

use crate::bindings::{WitDecisions, WitReason};
use crate::error::CallErrorKind;
use crate::policy::{PolicyInfo, Usage};
use crate::request::ScoreRequest;

/// Which policy of a route decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// The route's stable policy.
    Stable,
    /// The policy failed; its fallback decided.
    Fallback,
}

/// Identity of a policy version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyRef {
    /// Policy name.
    pub name: String,
    /// Semantic version.
    pub version: String,
    /// `sha256:…` of the component.
    pub digest: String,
}

impl From<&PolicyInfo> for PolicyRef {
    fn from(i: &PolicyInfo) -> Self {
        PolicyRef {
            name: i.name.clone(),
            version: i.version.clone(),
            digest: i.digest.clone(),
        }
    }
}

/// Why a fallback served.
#[derive(Debug, Clone, Serialize)]
pub struct FallbackInfo<'a> {
    /// The policy that failed.
    pub failed: &'a PolicyRef,
    /// Category of its error.
    pub error_kind: CallErrorKind,
    /// The error, for humans.
    pub error: String,
}

/// One scored candidate.
#[derive(Debug, Serialize)]
pub struct ScoredCandidate<'a> {
    /// Candidate id as sent.
    pub id: &'a str,
    /// Final score.
    pub score: f64,
    /// Eligible for promotion.
    pub eligible: bool,
    /// Reason codes.
    pub reasons: Reasons,
    /// Probability that the policy's randomized choice promoted it.
    pub propensity: f64,
}

/// Reason flags, serialized as a list of snake_case names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reasons(pub WitReason);

const REASON_NAMES: [(WitReason, &str); 13] = [
    (WitReason::ORGANIC, "organic"),
    (WitReason::PROMOTED, "promoted"),
    (WitReason::NOT_ELIGIBLE_SURFACE, "not_eligible_surface"),
    (WitReason::NOT_ELIGIBLE_MARKET, "not_eligible_market"),
    (WitReason::CAMPAIGN_INACTIVE, "campaign_inactive"),
    (WitReason::FREQ_CAPPED, "freq_capped"),
    (WitReason::PACING_THROTTLED, "pacing_throttled"),
    (WitReason::RELEVANCE_GUARDRAIL, "relevance_guardrail"),
    (WitReason::DIVERSITY_PENALTY, "diversity_penalty"),
    (WitReason::FAIRNESS_ADJUST, "fairness_adjust"),
    (WitReason::EXPLORATION, "exploration"),
    (WitReason::SLATE_CAP, "slate_cap"),
    (WitReason::MISSING_FEATURE, "missing_feature"),
];

impl Reasons {
    /// The names of the set flags.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        REASON_NAMES
            .iter()
            .filter(move |(f, _)| self.0.contains(*f))
            .map(|(_, n)| *n)
    }
}

impl Serialize for Reasons {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        for n in self.names() {
            seq.serialize_element(n)?;
        }
        seq.end()
    }
}

/// A named debug value, with the candidate's id.
#[derive(Debug, Serialize)]
pub struct DebugEntry<'a> {
    /// Name.
    pub name: &'a str,
    /// Candidate id, absent for request-level values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate: Option<&'a str>,
    /// Value.
    pub value: f64,
}

/// Timing and resources of the request.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Timing {
    /// Server time from body received to response built, microseconds.
    pub server_us: u64,
    /// Policy call (instantiate + run), microseconds.
    pub policy_us: u64,
}

/// The response to a scoring request.
#[derive(Debug, Serialize)]
pub struct ScoreResponse<'a> {
    /// Echo of `context.request_id`.
    pub request_id: &'a str,
    /// Route that served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<&'a str>,
    /// The policy version that decided.
    pub policy: &'a PolicyRef,
    /// Which variant served.
    pub variant: Variant,
    /// Present when the fallback served: what failed and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<FallbackInfo<'a>>,
    /// One entry per candidate, in request order.
    pub scores: Vec<ScoredCandidate<'a>>,
    /// Debug values, when the request asked for them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug: Option<Vec<DebugEntry<'a>>>,
    /// Timing.
    pub timing: Timing,
}

/// Joins validated decisions back to the request's candidate ids.
pub fn scored<'a>(req: &'a ScoreRequest, d: &WitDecisions) -> Vec<ScoredCandidate<'a>> {
    req.candidates
        .iter()
        .enumerate()
        .map(|(i, c)| ScoredCandidate {
            id: &c.id,
            score: d.scores[i],
            eligible: d.eligible[i],
            reasons: Reasons(d.reasons[i]),
            propensity: d.propensity[i],
        })
        .collect()
}

/// The debug values with candidate ids resolved.
pub fn debug_entries<'a>(req: &'a ScoreRequest, d: &'a WitDecisions) -> Vec<DebugEntry<'a>> {
    d.debug
        .iter()
        .map(|v| DebugEntry {
            name: &v.name,
            candidate: v.candidate.map(|c| &*req.candidates[c as usize].id),
            value: v.value,
        })
        .collect()
}

/// Relevance passthrough computed on the host: the last-resort fallback when
/// a policy has no fallback policy, or the fallback failed too.
pub fn passthrough(req: &ScoreRequest) -> WitDecisions {
    let n = req.candidates.len();
    WitDecisions {
        scores: req.candidates.iter().map(|c| c.relevance).collect(),
        eligible: vec![false; n],
        reasons: req
            .candidates
            .iter()
            .map(|c| {
                if c.campaign.is_none() {
                    WitReason::ORGANIC
                } else {
                    WitReason::empty()
                }
            })
            .collect(),
        propensity: vec![0.0; n],
        debug: Vec::new(),
    }
}

/// Usage summary for `oasis run`.
pub fn usage_json(u: &Usage) -> serde_json::Value {
    serde_json::json!({
        "wall_us": u.wall_us,
        "peak_memory_bytes": u.peak_memory_bytes,
        "fuel": u.fuel,
    })
}
