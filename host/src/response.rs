//! The scoring response: policy decisions joined back to candidate ids.

use serde::Serialize;
use serde::ser::SerializeSeq;

use oasis_contract::ReasonBits;

use crate::bindings::{WitDecisions, WitReason};
use crate::error::CallErrorKind;
pub use crate::metadata::PolicyRef;
use crate::request::ScoreRequest;

/// Which policy of a route decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum Variant {
    /// The route's stable version.
    Stable,
    /// The route's canary version (the listener is in the canary's share).
    Canary,
    /// The intended arm failed; a later arm of the chain decided.
    Fallback,
    /// The route's kill switch is on: its baseline (or the passthrough) decided.
    Killed,
}

impl Variant {
    /// The name, as in responses and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Stable => "stable",
            Variant::Canary => "canary",
            Variant::Fallback => "fallback",
            Variant::Killed => "killed",
        }
    }
}

impl Serialize for Variant {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Why a fallback served.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FallbackInfo<'a> {
    /// The policy that failed.
    pub failed: &'a PolicyRef,
    /// Category of its error.
    pub error_kind: CallErrorKind,
    /// The error, for humans.
    pub error: String,
}

/// One scored candidate.
#[derive(Debug, Serialize, utoipa::ToSchema)]
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

impl Reasons {
    /// The names of the set flags, in WIT order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        oasis_contract::reason::names(self.0.reason_bits())
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
#[derive(Debug, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Copy, Default, Serialize, utoipa::ToSchema)]
pub struct Timing {
    /// Server time from body received to response built, microseconds.
    pub server_us: u64,
    /// Policy call (instantiate + run), microseconds.
    pub policy_us: u64,
}

/// The response to a scoring request.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScoreResponse<'a> {
    /// Echo of `context.request_id`.
    pub request_id: &'a str,
    /// Route that served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<&'a str>,
    /// The policy version that decided.
    pub policy: &'a PolicyRef,
    /// How the request was served.
    pub variant: Variant,
    /// The arm that decided: `canary`, `stable`, `baseline` or `passthrough`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arm: Option<&'static str>,
    /// Present when the fallback served: what failed and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<FallbackInfo<'a>>,
    /// One entry per candidate, in request order.
    pub scores: Vec<ScoredCandidate<'a>>,
    /// Debug values, when the request asked for them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug: Option<Vec<DebugEntry<'a>>>,
    /// Present when the delivery state could not be used as is:
    /// `counts_unknown` when the listener and session counts a frequency
    /// cap relies on were unknown (the store did not answer), so the answer
    /// is the organic order and nothing is promoted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_state: Option<&'static str>,
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
