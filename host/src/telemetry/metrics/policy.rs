//! Metrics of policy versions: calls, errors, fallbacks, decisions, the
//! promotion-stall flag and queue depth. Handles for one version are
//! resolved once at activation ([`PolicyMetrics`]), so the request path
//! does not build label sets.

use std::sync::{Arc, OnceLock};

use super::Catalog;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use oasis_contract::reason::REASONS;

use crate::error::CallErrorKind;
use crate::metadata::PolicyRef;
use crate::telemetry::promotion::{PromotionStall, PromotionWatch};

use super::latency_histogram;

/// Labels of a policy version.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    /// Policy key.
    pub policy: String,
    /// Policy semver.
    pub version: String,
    /// First 12 hex digits of the component's sha256: the same version
    /// string redeployed with another module is another series.
    pub digest: String,
    /// First 12 hex digits of the settings' sha256.
    pub settings: String,
}

/// Labels of a policy version's reason counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyReasonLabels {
    /// Policy key.
    pub policy: String,
    /// Policy semver.
    pub version: String,
    /// Short component digest.
    pub digest: String,
    /// Short settings hash.
    pub settings: String,
    /// Reason code.
    pub reason: &'static str,
}

/// Labels of a policy call error.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Policy key.
    pub policy: String,
    /// Policy semver.
    pub version: String,
    /// Short component digest.
    pub digest: String,
    /// Short settings hash.
    pub settings: String,
    /// Error kind.
    pub kind: CallErrorKind,
}

/// Labels of a fallback answer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FallbackLabels {
    /// Key of the policy that failed.
    pub policy: String,
    /// Its semver.
    pub version: String,
    /// Short component digest.
    pub digest: String,
    /// Short settings hash.
    pub settings: String,
    /// Why it failed.
    pub kind: CallErrorKind,
    /// What answered instead.
    pub served_by: FallbackBy,
}

/// What answered when a route's policy failed.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum FallbackBy {
    /// The policy's fallback policy.
    FallbackPolicy,
    /// The host's relevance passthrough.
    Passthrough,
}

impl FallbackBy {
    /// Both, in label order.
    pub const ALL: [FallbackBy; 2] = [FallbackBy::FallbackPolicy, FallbackBy::Passthrough];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FallbackBy::FallbackPolicy => "fallback_policy",
            FallbackBy::Passthrough => "passthrough",
        }
    }
}

impl EncodeLabelValue for FallbackBy {
    fn encode(
        &self,
        e: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(e, self.as_str())
    }
}

/// Labels of a policy's queue.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// Policy key.
    pub policy: String,
}

/// The families of every policy version's metrics.
pub struct PolicyFamilies {
    /// Fallbacks served, by failed policy version, error kind and what served.
    pub fallbacks: Family<FallbackLabels, Counter>,
    /// Policy call errors, by policy version and kind.
    pub errors: Family<ErrorLabels, Counter>,
    /// Policy call latency (instantiate + run), seconds.
    pub latency: Family<PolicyLabels, Histogram>,
    /// Candidates scored, by policy version.
    pub candidates: Family<PolicyLabels, Counter>,
    /// Candidates marked eligible, by policy version.
    pub eligible: Family<PolicyLabels, Counter>,
    /// Candidates promoted, by policy version.
    pub promoted: Family<PolicyLabels, Counter>,
    /// Candidates with each reason, by policy version.
    pub reasons: Family<PolicyReasonLabels, Counter>,
    /// 1 while a version promotes nothing although campaign candidates
    /// arrive ([`PromotionWatch`]).
    pub promotion_stalled: Family<PolicyLabels, Gauge>,
    /// Requests waiting for a free instance, by policy.
    pub queue_depth: Family<QueueLabels, Gauge>,
    /// Calls that ran past their CPU slice and gave their slot up
    /// (`serving::cpu`), by policy version.
    pub demoted: Family<PolicyLabels, Counter>,
    /// Calls run inline on the request's thread (`serving::arm`), by
    /// policy version.
    pub inline: Family<PolicyLabels, Counter>,
    /// When a version counts as stalled.
    pub promotion_stall: PromotionStall,
}

impl PolicyFamilies {
    /// Creates the families and registers them in `registry`.
    pub fn register(registry: &mut Catalog<'_>) -> Self {
        let f = PolicyFamilies {
            fallbacks: Family::default(),
            errors: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            candidates: Family::default(),
            eligible: Family::default(),
            promoted: Family::default(),
            reasons: Family::default(),
            promotion_stalled: Family::default(),
            queue_depth: Family::default(),
            demoted: Family::default(),
            inline: Family::default(),
            promotion_stall: PromotionStall::default(),
        };
        registry.register(
            "policy_candidates",
            "Candidates scored, by policy version (served answers only)",
            f.candidates.clone(),
        );
        registry.register(
            "policy_eligible",
            "Candidates marked eligible, by policy version",
            f.eligible.clone(),
        );
        registry.register(
            "policy_promoted",
            "Candidates promoted, by policy version",
            f.promoted.clone(),
        );
        registry.register(
            "policy_reasons",
            "Candidates with each reason code, by policy version",
            f.reasons.clone(),
        );
        registry.register(
            "policy_promotion_stalled",
            "1 while a policy version promotes nothing although campaign candidates arrive",
            f.promotion_stalled.clone(),
        );
        registry.register(
            "fallbacks",
            "Fallback answers, by failed policy version, error kind and what served instead",
            f.fallbacks.clone(),
        );
        registry.register(
            "policy_errors",
            "Policy call errors, by policy version and kind",
            f.errors.clone(),
        );
        registry.register(
            "policy_latency_seconds",
            "Policy call latency (instance as instantiated + run)",
            f.latency.clone(),
        );
        registry.register(
            "policy_calls_demoted",
            "Policy calls that ran past their CPU slice and gave their CPU slot to the next call",
            f.demoted.clone(),
        );
        registry.register(
            "policy_calls_inline",
            "Policy calls run inline on the request's thread (the version's calls had been quick), by policy version",
            f.inline.clone(),
        );
        registry.register(
            "queue_depth",
            "Requests waiting for a free policy instance",
            f.queue_depth.clone(),
        );
        f
    }

    /// Resolves the handles of one policy version (labels: its key,
    /// version, short digest and short settings hash). Series a version may
    /// never use (each error kind, each fallback, each reason) are created on
    /// first use, so `/metrics` has no series that stay zero.
    pub fn for_policy(&self, key: &str, id: &PolicyRef) -> PolicyMetrics {
        let short = |h: &str| crate::cache::short(h).to_string();
        let labels = PolicyLabels {
            policy: key.to_string(),
            version: id.version.clone(),
            digest: short(&id.digest),
            settings: id.settings_sha256.as_deref().map(short).unwrap_or_default(),
        };
        PolicyMetrics {
            decided: OnceLock::new(),
            reasons: Default::default(),
            promotion: Arc::new(PromotionWatch::new(
                self.promotion_stall,
                self.promotion_stalled.get_or_create_owned(&labels),
                format!("{key}@{}", id.version),
            )),
            latency: OnceLock::new(),
            inline: OnceLock::new(),
            errors: Default::default(),
            fallbacks: Default::default(),
            queue_depth: self.queue_depth.get_or_create_owned(&QueueLabels {
                policy: key.to_string(),
            }),
            lazy: Arc::new(Lazy {
                latency: self.latency.clone(),
                candidates: self.candidates.clone(),
                eligible: self.eligible.clone(),
                promoted: self.promoted.clone(),
                errors: self.errors.clone(),
                fallbacks: self.fallbacks.clone(),
                reasons: self.reasons.clone(),
                demoted: self.demoted.clone(),
                inline: self.inline.clone(),
                labels,
            }),
        }
    }
}

/// What [`PolicyMetrics`] needs to create a series on first use.
#[derive(Clone)]
struct Lazy {
    latency: Family<PolicyLabels, Histogram>,
    candidates: Family<PolicyLabels, Counter>,
    eligible: Family<PolicyLabels, Counter>,
    promoted: Family<PolicyLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    fallbacks: Family<FallbackLabels, Counter>,
    reasons: Family<PolicyReasonLabels, Counter>,
    demoted: Family<PolicyLabels, Counter>,
    inline: Family<PolicyLabels, Counter>,
    labels: PolicyLabels,
}

impl std::fmt::Debug for Lazy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.labels.fmt(f)
    }
}

impl Lazy {
    fn decided(&self) -> [Counter; 3] {
        [&self.candidates, &self.eligible, &self.promoted]
            .map(|f| f.get_or_create_owned(&self.labels))
    }

    fn error(&self, kind: CallErrorKind) -> Counter {
        let l = &self.labels;
        self.errors.get_or_create_owned(&ErrorLabels {
            policy: l.policy.clone(),
            version: l.version.clone(),
            digest: l.digest.clone(),
            settings: l.settings.clone(),
            kind,
        })
    }

    fn fallback(&self, kind: CallErrorKind, served_by: FallbackBy) -> Counter {
        let l = &self.labels;
        self.fallbacks.get_or_create_owned(&FallbackLabels {
            policy: l.policy.clone(),
            version: l.version.clone(),
            digest: l.digest.clone(),
            settings: l.settings.clone(),
            kind,
            served_by,
        })
    }

    fn reason(&self, reason: &'static str) -> Counter {
        let l = &self.labels;
        self.reasons.get_or_create_owned(&PolicyReasonLabels {
            policy: l.policy.clone(),
            version: l.version.clone(),
            digest: l.digest.clone(),
            settings: l.settings.clone(),
            reason,
        })
    }
}

/// Metric handles of one policy version, resolved at activation.
#[derive(Clone, Debug)]
pub struct PolicyMetrics {
    /// Call latency (created on the first call).
    latency: OnceLock<Histogram>,
    /// Calls run inline (created on the first).
    inline: OnceLock<Counter>,
    errors: [OnceLock<Counter>; 6],
    fallbacks: [[OnceLock<Counter>; 2]; 6],
    /// Requests waiting for an instance of this policy.
    pub queue_depth: Gauge,
    /// Candidates, eligible, promoted: created on the first answer served.
    decided: OnceLock<[Counter; 3]>,
    reasons: [OnceLock<Counter>; REASONS.len()],
    /// Promotion counts and the stall flag.
    pub promotion: Arc<PromotionWatch>,
    lazy: Arc<Lazy>,
}

impl PolicyMetrics {
    fn index(kind: CallErrorKind) -> usize {
        CallErrorKind::ALL
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(0)
    }

    /// Counts the decisions of an answer this version served: candidates,
    /// eligible, promoted, each reason; `campaign` is the request's number
    /// of campaign candidates, for the [`PromotionWatch`]. Returns the
    /// eligible and promoted counts.
    pub fn decided(&self, decisions: &crate::bindings::WitDecisions, campaign: u64) -> (u64, u64) {
        use oasis_contract::ReasonBits;
        let mut counts = [0u64; REASONS.len()];
        let mut eligible = 0u64;
        // Reason i is bit i (pinned in the contract crate): visit the set
        // bits only, usually one or none per candidate.
        for (r, e) in decisions.reasons.iter().zip(&decisions.eligible) {
            let mut bits = r.reason_bits() & oasis_contract::reason::ALL;
            eligible += u64::from(*e);
            while bits != 0 {
                counts[bits.trailing_zeros() as usize] += 1;
                bits &= bits - 1;
            }
        }
        let promoted = counts[oasis_contract::reason::PROMOTED.trailing_zeros() as usize];
        let [candidates, eligible_c, promoted_c] = self.decided.get_or_init(|| self.lazy.decided());
        candidates.inc_by(decisions.reasons.len() as u64);
        eligible_c.inc_by(eligible);
        for (i, (c, n)) in self.reasons.iter().zip(counts).enumerate() {
            if n > 0 {
                c.get_or_init(|| self.lazy.reason(REASONS[i].1)).inc_by(n);
            }
        }
        promoted_c.inc_by(promoted);
        self.promotion.record(campaign, promoted);
        (eligible, promoted)
    }

    /// Counts a call that ran past its CPU slice (`serving::cpu`).
    pub fn demoted(&self) {
        self.lazy.demoted.get_or_create(&self.lazy.labels).inc();
    }

    /// Counts a call run inline (`serving::arm`).
    pub fn ran_inline(&self) {
        self.inline
            .get_or_init(|| self.lazy.inline.get_or_create_owned(&self.lazy.labels))
            .inc();
    }

    /// Records one call's latency, seconds.
    pub fn called(&self, seconds: f64) {
        self.latency
            .get_or_init(|| self.lazy.latency.get_or_create_owned(&self.lazy.labels))
            .observe(seconds);
    }

    /// Counts a failed call of this version.
    pub fn failed(&self, kind: CallErrorKind) {
        self.errors[Self::index(kind)]
            .get_or_init(|| self.lazy.error(kind))
            .inc();
    }

    /// Counts an answer served by `by` because this version failed with `kind`.
    pub fn fallback_served(&self, kind: CallErrorKind, by: FallbackBy) {
        self.fallbacks[Self::index(kind)][by as usize]
            .get_or_init(|| self.lazy.fallback(kind, by))
            .inc();
    }
}
