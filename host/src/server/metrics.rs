//! Prometheus metrics, served at `GET /metrics` in the text format.
//!
//! Label values are policy keys, versions, routes and error kinds: bounded
//! sets chosen by operators, never request data. Handles for a policy
//! version are resolved once at activation ([`PolicyMetrics`]), so the
//! request path does not build label sets for them.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use std::sync::Arc;

use oasis_contract::reason::REASONS;

use crate::error::CallErrorKind;
use crate::metadata::PolicyRef;
use crate::server::promotion::{PromotionStall, PromotionWatch};

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

/// Labels of a served request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route name.
    pub route: String,
    /// `stable` or `fallback`.
    pub variant: &'static str,
    /// `http` or `grpc`.
    pub transport: &'static str,
}

/// Labels of a rejected request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    /// HTTP status.
    pub status: u16,
    /// Short reason: malformed, invalid, unknown_route, overloaded, too_large.
    pub reason: &'static str,
    /// `http` or `grpc`.
    pub transport: &'static str,
}

/// Labels of a reload attempt.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// Policy key (or `routes`).
    pub policy: String,
    /// `ok` or `failed`.
    pub result: &'static str,
}

/// Labels of a shadow of a route.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShadowLabels {
    /// Route.
    pub route: String,
    /// The shadow, as configured (`key` or `key@sha256:…`).
    pub shadow: String,
}

/// Labels of a shadow's reason difference.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShadowReasonLabels {
    /// Route.
    pub route: String,
    /// The shadow.
    pub shadow: String,
    /// Reason code.
    pub reason: &'static str,
}

/// Labels of a shadow call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShadowCallLabels {
    /// Route.
    pub route: String,
    /// The shadow.
    pub shadow: String,
    /// `ok`, `failed`, `shed` or `skipped`.
    pub result: &'static str,
}

/// Labels of a rollback.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RollbackLabels {
    /// Route.
    pub route: String,
    /// `guardrail` (automatic) or `operator`.
    pub by: &'static str,
}

/// Labels of the decision log's record counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLogLabels {
    /// `written`, `dropped` (queue full), `refused` (outcomes: queue full,
    /// answered 503) or `failed` (I/O).
    pub state: &'static str,
}

/// A gauge of floats.
pub type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// Labels of a policy's queue.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// Policy key.
    pub policy: String,
}

/// Every metric of the server.
pub struct Metrics {
    registry: Registry,
    /// Requests answered with scores, by route and variant.
    pub requests: Family<RequestLabels, Counter>,
    /// Requests refused (4xx/5xx), by status and reason.
    pub rejected: Family<RejectLabels, Counter>,
    /// Fallbacks served, by failed policy version, error kind and what served.
    pub fallbacks: Family<FallbackLabels, Counter>,
    /// Policy call errors, by policy version and kind.
    pub policy_errors: Family<ErrorLabels, Counter>,
    /// Policy call latency (instantiate + run), seconds.
    pub policy_latency: Family<PolicyLabels, Histogram>,
    /// Candidates scored, by policy version.
    pub policy_candidates: Family<PolicyLabels, Counter>,
    /// Candidates marked eligible, by policy version.
    pub policy_eligible: Family<PolicyLabels, Counter>,
    /// Candidates promoted, by policy version.
    pub policy_promoted: Family<PolicyLabels, Counter>,
    /// Candidates with each reason, by policy version.
    pub policy_reasons: Family<PolicyReasonLabels, Counter>,
    /// 1 while a version promotes nothing although campaign candidates
    /// arrive ([`PromotionWatch`]).
    pub policy_promotion_stalled: Family<PolicyLabels, Gauge>,
    /// When a version counts as stalled.
    pub promotion_stall: PromotionStall,
    /// End-to-end server latency of scored requests, seconds.
    pub request_latency: Histogram,
    /// Reload attempts.
    pub reloads: Family<ReloadLabels, Counter>,
    /// Policy instances running now.
    pub instances_in_use: Gauge,
    /// Requests waiting for a free instance, by policy.
    pub queue_depth: Family<QueueLabels, Gauge>,
    /// Policies with an active version.
    pub policies_active: Gauge,
    /// Shadow calls, by route, shadow and result.
    pub shadow_calls: Family<ShadowCallLabels, Counter>,
    /// Shadow divergence, mean over every comparison, by metric.
    pub shadow_divergence: [Family<ShadowLabels, FloatGauge>; 7],
    /// Per reason: share of candidates with it under the shadow minus
    /// under the served arm.
    pub shadow_reason_diff: Family<ShadowReasonLabels, FloatGauge>,
    /// Rollbacks, by route and who did it.
    pub rollbacks: Family<RollbackLabels, Counter>,
    /// Decision log records since start, by what became of them.
    pub decision_log: Family<DecisionLogLabels, Gauge>,
    /// Outcome events since start (`POST /v1/outcomes`), by what became of
    /// them.
    pub outcome_events: Family<DecisionLogLabels, Gauge>,
    /// Delivery state store operations since start, by what became of them.
    pub state_ops: Family<StateOpLabels, Gauge>,
    /// 1 while the delivery state store is degraded (scoring on last-known
    /// values, events queued), else 0.
    pub state_degraded: Gauge,
    /// Events queued for the delivery state store now.
    pub state_queued_events: Gauge,
    /// `POST /v1/events`: events by what became of them.
    pub events: Family<EventLabels, Counter>,
}

/// Labels of an event count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// `applied`, `duplicate`, `buffered` (queued while the store is down)
    /// or `busy` (refused with 503), counting events; `invalid` counts
    /// batches refused with a 4xx.
    pub result: &'static str,
}

/// Labels of a delivery state operation count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateOpLabels {
    /// What: `read_ok`, `read_fallback` (last-known values used),
    /// `read_error`, `write_error`, `events_buffered`, `events_dropped`,
    /// `events_flushed`, `pacing_applied`, `pacing_refused` (the write rule
    /// refused a stale or same-tick step), `pacing_dropped` (writer queue
    /// full).
    pub op: &'static str,
}

/// The shadow divergence gauges: name and help.
const SHADOW_GAUGES: [(&str, &str); 7] = [
    (
        "shadow_topk_overlap",
        "Mean top-10 overlap of a shadow with the served arm",
    ),
    (
        "shadow_rank_correlation",
        "Mean Spearman correlation over the top-10 union",
    ),
    (
        "shadow_score_mae",
        "Mean absolute score difference from the served arm",
    ),
    (
        "shadow_promoted_share_diff",
        "Mean promoted share of the shadow minus the served arm's",
    ),
    (
        "shadow_eligibility_rate_diff",
        "Mean eligibility rate of the shadow minus the served arm's",
    ),
    ("shadow_error_rate", "Share of failed shadow calls"),
    (
        "shadow_latency_p99_seconds",
        "p99 of the shadow's call latency",
    ),
];

fn latency_histogram() -> Histogram {
    // 50 µs .. ~0.8 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 15))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric under the `oasis_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("oasis");
        let requests = Family::default();
        let rejected = Family::default();
        let fallbacks = Family::default();
        let policy_errors = Family::default();
        let policy_latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let policy_candidates = Family::<PolicyLabels, Counter>::default();
        let policy_eligible = Family::<PolicyLabels, Counter>::default();
        let policy_promoted = Family::<PolicyLabels, Counter>::default();
        let policy_reasons = Family::<PolicyReasonLabels, Counter>::default();
        let policy_promotion_stalled = Family::<PolicyLabels, Gauge>::default();
        registry.register(
            "policy_candidates",
            "Candidates scored, by policy version (served answers only)",
            policy_candidates.clone(),
        );
        registry.register(
            "policy_eligible",
            "Candidates marked eligible, by policy version",
            policy_eligible.clone(),
        );
        registry.register(
            "policy_promoted",
            "Candidates promoted, by policy version",
            policy_promoted.clone(),
        );
        registry.register(
            "policy_reasons",
            "Candidates with each reason code, by policy version",
            policy_reasons.clone(),
        );
        registry.register(
            "policy_promotion_stalled",
            "1 while a policy version promotes nothing although campaign candidates arrive",
            policy_promotion_stalled.clone(),
        );
        let request_latency = latency_histogram();
        let reloads = Family::default();
        let instances_in_use = Gauge::default();
        let queue_depth = Family::default();
        let policies_active = Gauge::default();
        let shadow_calls = Family::default();
        let shadow_divergence: [Family<ShadowLabels, FloatGauge>; 7] = Default::default();
        let rollbacks = Family::default();
        let shadow_reason_diff = Family::default();
        let decision_log = Family::default();
        let outcome_events = Family::default();
        let state_ops = Family::default();
        registry.register(
            "state_operations",
            "Delivery state store operations since start, by op (read_ok, read_fallback, read_error, write_error, events_buffered, events_dropped, events_flushed, pacing_applied, pacing_refused, pacing_dropped)",
            Family::<StateOpLabels, Gauge>::clone(&state_ops),
        );
        let state_degraded = Gauge::default();
        registry.register(
            "state_degraded",
            "1 while the delivery state store is degraded (last-known values, events queued)",
            state_degraded.clone(),
        );
        let events = Family::default();
        registry.register(
            "events",
            "POST /v1/events: events by result (applied, duplicate, buffered, invalid, busy)",
            Family::<EventLabels, Counter>::clone(&events),
        );
        let state_queued_events = Gauge::default();
        registry.register(
            "state_queued_events",
            "Events queued for the delivery state store",
            state_queued_events.clone(),
        );
        registry.register(
            "outcome_events",
            "Outcome events since start: written, refused (queue full, answered 503), failed (I/O)",
            Family::<DecisionLogLabels, Gauge>::clone(&outcome_events),
        );
        registry.register(
            "decision_log_records",
            "Decision log records since start: written, dropped (queue full), failed (I/O)",
            Family::<DecisionLogLabels, Gauge>::clone(&decision_log),
        );
        registry.register(
            "shadow_reason_share_diff",
            "Per reason, share of candidates with it under the shadow minus under the served arm",
            Family::<ShadowReasonLabels, FloatGauge>::clone(&shadow_reason_diff),
        );
        registry.register(
            "shadow_calls",
            "Shadow calls, by route, shadow and result (ok, failed, shed, skipped)",
            Family::<ShadowCallLabels, Counter>::clone(&shadow_calls),
        );
        for ((name, help), family) in SHADOW_GAUGES.iter().zip(&shadow_divergence) {
            registry.register(*name, *help, family.clone());
        }
        registry.register(
            "rollbacks",
            "Canary rollbacks, by route and who rolled back (guardrail or operator)",
            Family::<RollbackLabels, Counter>::clone(&rollbacks),
        );
        registry.register(
            "requests",
            "Scoring requests answered, by route and variant",
            requests.clone(),
        );
        registry.register(
            "rejected",
            "Requests refused, by HTTP status and reason",
            rejected.clone(),
        );
        registry.register(
            "fallbacks",
            "Fallback answers, by failed policy version, error kind and what served instead",
            fallbacks.clone(),
        );
        registry.register(
            "policy_errors",
            "Policy call errors, by policy version and kind",
            policy_errors.clone(),
        );
        registry.register(
            "policy_latency_seconds",
            "Policy call latency (fresh instance + run)",
            policy_latency.clone(),
        );
        registry.register(
            "request_latency_seconds",
            "Server latency of scored requests",
            request_latency.clone(),
        );
        registry.register(
            "reloads",
            "Policy (re)load attempts, by policy and result",
            reloads.clone(),
        );
        registry.register(
            "instances_in_use",
            "Policy instances running now",
            instances_in_use.clone(),
        );
        registry.register(
            "queue_depth",
            "Requests waiting for a free policy instance",
            queue_depth.clone(),
        );
        registry.register(
            "policies_active",
            "Policies with an active version",
            policies_active.clone(),
        );
        Metrics {
            registry,
            requests,
            rejected,
            fallbacks,
            policy_errors,
            policy_latency,
            policy_candidates,
            policy_eligible,
            policy_promoted,
            policy_reasons,
            policy_promotion_stalled,
            promotion_stall: PromotionStall::default(),
            request_latency,
            reloads,
            instances_in_use,
            queue_depth,
            policies_active,
            shadow_calls,
            shadow_divergence,
            shadow_reason_diff,
            rollbacks,
            decision_log,
            outcome_events,
            state_ops,
            state_degraded,
            state_queued_events,
            events,
        }
    }

    /// Counts `n` events of `/v1/events` with `result`.
    pub fn events(&self, result: &'static str, n: u64) {
        if n > 0 {
            self.events.get_or_create(&EventLabels { result }).inc_by(n);
        }
    }

    /// Counts a shadow call of `shadow` on `route` with `result`.
    pub fn shadow_call(&self, route: &str, shadow: &str, result: &'static str) {
        self.shadow_calls
            .get_or_create(&ShadowCallLabels {
                route: route.to_string(),
                shadow: shadow.to_string(),
                result,
            })
            .inc();
    }

    /// Publishes a shadow's divergence summary as gauges.
    pub fn shadow_divergence(
        &self,
        route: &str,
        shadow: &str,
        s: &crate::divergence::DivergenceSummary,
    ) {
        let labels = ShadowLabels {
            route: route.to_string(),
            shadow: shadow.to_string(),
        };
        let mut values = [None; 7];
        if let Some(m) = &s.mean {
            values[..5].copy_from_slice(&[
                Some(m.topk_overlap),
                Some(m.rank_correlation),
                Some(m.score_mae),
                Some(m.promoted_share_diff),
                Some(m.eligibility_rate_diff),
            ]);
        }
        values[5] = Some(s.error_rate);
        values[6] = s.latency.map(|l| l.p99_ms / 1000.0);
        for (family, value) in self.shadow_divergence.iter().zip(values) {
            if let Some(v) = value {
                family.get_or_create(&labels).set(v);
            }
        }
        if s.candidates > 0 {
            for r in &s.reasons {
                self.shadow_reason_diff
                    .get_or_create(&ShadowReasonLabels {
                        route: route.to_string(),
                        shadow: shadow.to_string(),
                        reason: r.name,
                    })
                    .set(r.difference as f64 / s.candidates as f64);
            }
        }
    }

    /// Publishes the decision log's counts.
    pub fn decision_log_stats(&self, s: &crate::decision_log::DecisionLogStats) {
        for (state, n) in [
            ("written", s.written),
            ("dropped", s.dropped),
            ("failed", s.failed),
        ] {
            self.decision_log
                .get_or_create(&DecisionLogLabels { state })
                .set(n as i64);
        }
    }

    /// Publishes the outcome event counts.
    pub fn outcome_stats(&self, s: &crate::decision_log::OutcomeStats) {
        for (state, n) in [
            ("written", s.written),
            ("refused", s.refused),
            ("failed", s.failed),
        ] {
            self.outcome_events
                .get_or_create(&DecisionLogLabels { state })
                .set(n as i64);
        }
    }

    /// Publishes the delivery state store's health.
    pub fn state_stats(&self, h: &oasis_state::Health, pacing_dropped: u64) {
        let c = &h.counters;
        for (op, n) in [
            ("read_ok", c.read_ok),
            ("read_fallback", c.read_fallback),
            ("read_error", c.read_errors),
            ("write_error", c.write_errors),
            ("events_buffered", c.events_buffered),
            ("events_dropped", c.events_dropped),
            ("events_flushed", c.events_flushed),
            ("pacing_applied", c.pacing_applied),
            ("pacing_refused", c.pacing_refused),
            ("pacing_dropped", pacing_dropped),
        ] {
            self.state_ops
                .get_or_create(&StateOpLabels { op })
                .set(n as i64);
        }
        self.state_degraded
            .set(i64::from(h.state != oasis_state::HealthState::Ok));
        self.state_queued_events.set(h.queued_events as i64);
    }

    /// Counts a rollback of `route`'s canary.
    pub fn rollback(&self, route: &str, automatic: bool) {
        self.rollbacks
            .get_or_create(&RollbackLabels {
                route: route.to_string(),
                by: if automatic { "guardrail" } else { "operator" },
            })
            .inc();
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts a (re)load attempt of `policy` (a key, or `routes` /
    /// `directory`).
    pub fn reload(&self, policy: &str, ok: bool) {
        self.reloads
            .get_or_create(&ReloadLabels {
                policy: policy.to_string(),
                result: if ok { "ok" } else { "failed" },
            })
            .inc();
    }

    /// Counts a refused request.
    pub fn reject(&self, status: u16, reason: &'static str, transport: &'static str) {
        self.rejected
            .get_or_create(&RejectLabels {
                status,
                reason,
                transport,
            })
            .inc();
    }

    /// Sets when a policy version counts as stalled (before any version is
    /// activated).
    pub fn with_promotion_stall(mut self, rule: PromotionStall) -> Self {
        self.promotion_stall = rule;
        self
    }

    /// Resolves the handles of one policy version (labels: its key,
    /// version, short digest and short settings hash).
    pub fn for_policy(&self, key: &str, id: &PolicyRef) -> PolicyMetrics {
        let short = |h: &str| crate::cache::short(h).to_string();
        let labels = PolicyLabels {
            policy: key.to_string(),
            version: id.version.clone(),
            digest: short(&id.digest),
            settings: id.settings_sha256.as_deref().map(short).unwrap_or_default(),
        };
        let error = |kind: CallErrorKind| ErrorLabels {
            policy: key.to_string(),
            version: labels.version.clone(),
            digest: labels.digest.clone(),
            settings: labels.settings.clone(),
            kind,
        };
        let fallback = |kind: CallErrorKind, served_by: FallbackBy| FallbackLabels {
            policy: key.to_string(),
            version: labels.version.clone(),
            digest: labels.digest.clone(),
            settings: labels.settings.clone(),
            kind,
            served_by,
        };
        let reason = |reason: &'static str| PolicyReasonLabels {
            policy: key.to_string(),
            version: labels.version.clone(),
            digest: labels.digest.clone(),
            settings: labels.settings.clone(),
            reason,
        };
        PolicyMetrics {
            candidates: self.policy_candidates.get_or_create_owned(&labels),
            eligible: self.policy_eligible.get_or_create_owned(&labels),
            promoted: self.policy_promoted.get_or_create_owned(&labels),
            reasons: REASONS
                .map(|(_, name)| self.policy_reasons.get_or_create_owned(&reason(name))),
            promotion: Arc::new(PromotionWatch::new(
                self.promotion_stall,
                self.policy_promotion_stalled.get_or_create_owned(&labels),
                format!("{key}@{}", id.version),
            )),
            latency: self.policy_latency.get_or_create_owned(&labels),
            errors: CallErrorKind::ALL.map(|k| self.policy_errors.get_or_create_owned(&error(k))),
            fallbacks: CallErrorKind::ALL.map(|k| {
                FallbackBy::ALL.map(|by| self.fallbacks.get_or_create_owned(&fallback(k, by)))
            }),
            queue_depth: self.queue_depth.get_or_create_owned(&QueueLabels {
                policy: key.to_string(),
            }),
        }
    }
}

/// Metric handles of one policy version, resolved at activation.
#[derive(Clone, Debug)]
pub struct PolicyMetrics {
    /// Call latency.
    pub latency: Histogram,
    errors: [Counter; 6],
    fallbacks: [[Counter; 2]; 6],
    /// Requests waiting for an instance of this policy.
    pub queue_depth: Gauge,
    candidates: Counter,
    eligible: Counter,
    promoted: Counter,
    reasons: [Counter; REASONS.len()],
    /// Promotion counts and the stall flag.
    pub promotion: Arc<PromotionWatch>,
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
    /// of campaign candidates, for the [`PromotionWatch`].
    pub fn decided(&self, decisions: &crate::bindings::WitDecisions, campaign: u64) {
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
        self.candidates.inc_by(decisions.reasons.len() as u64);
        self.eligible.inc_by(eligible);
        for (c, n) in self.reasons.iter().zip(counts) {
            if n > 0 {
                c.inc_by(n);
            }
        }
        self.promoted.inc_by(promoted);
        self.promotion.record(campaign, promoted);
    }

    /// Counts a failed call of this version.
    pub fn failed(&self, kind: CallErrorKind) {
        self.errors[Self::index(kind)].inc();
    }

    /// Counts an answer served by `by` because this version failed with `kind`.
    pub fn fallback_served(&self, kind: CallErrorKind, by: FallbackBy) {
        self.fallbacks[Self::index(kind)][by as usize].inc();
    }
}
