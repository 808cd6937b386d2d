//! Decision logging from the server: which requests are logged, and what
//! the request path hands to the decision log's writer.
//!
//! A request is logged when a hash of its request id falls under the
//! route's sample rate (`[routes.<r>.log] sample`, else the server's
//! `--decision-log-sample`), so a request is all in or all out, on every
//! replica, and its shadows' decisions are logged with it. The request path
//! only clones the body (`Bytes`, reference-counted) and the decision
//! columns; encoding and I/O run on the log's writer thread, and a full
//! queue drops the record (counted) rather than delay the response.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;

use crate::bindings::WitDecisions;
use crate::control::registry::RoutePlan;
use crate::decision_log::{
    DecisionColumnsRecord, DecisionLog, PendingFallback, PendingRecord, TimingRecord, UsageRecord,
    now_ms,
};
use crate::delivery::Fill;
use crate::metadata::PolicyRef;
use crate::serving::served::Served;

/// The server's decision log and its default sample rate.
#[derive(Debug, Clone)]
pub struct DecisionLogging {
    /// The log.
    pub log: DecisionLog,
    /// Share of requests logged on routes that set none, in [0, 1].
    pub sample: f64,
}

impl DecisionLogging {
    /// Whether the request `request_id` on `plan` is logged.
    pub fn sampled(&self, plan: &RoutePlan, request_id: &str) -> bool {
        let rate = plan.log_sample.unwrap_or(self.sample);
        rate > 0.0 && crate::bucket::bucket(request_id, "oasis-decision-log") < rate
    }

    /// Hands the served decisions of one request to the log.
    pub fn served(
        &self,
        route: &str,
        request_id: &str,
        body: &Bytes,
        state: Option<&Arc<Fill>>,
        served: &Served,
        server_us: u64,
    ) {
        let settings = served
            .active
            .as_ref()
            .map_or_else(|| Arc::from(""), |a| a.policy.settings_sha256().clone());
        self.log.log(PendingRecord {
            at_ms: now_ms(),
            request_id: request_id.to_string(),
            route: route.to_string(),
            variant: Cow::Borrowed(served.variant.as_str()),
            arm: Cow::Borrowed(served.arm.as_str()),
            shadow: false,
            policy: served.by.clone(),
            settings_sha256: settings,
            fallback: served
                .failures
                .first()
                .map(|(failed, error)| PendingFallback {
                    policy: failed.clone(),
                    error_kind: Cow::Borrowed(error.kind().as_str()),
                    error: error.to_string(),
                }),
            request: body.clone(),
            state: state.cloned(),
            decisions: DecisionColumnsRecord::from_wit(&served.decisions),
            timing: TimingRecord {
                server_us,
                policy_us: served.policy_us,
            },
            usage: served.usage.as_ref().map(UsageRecord::from),
        });
    }

    /// Hands a shadow's decisions on one request to the log, marked as such.
    #[allow(clippy::too_many_arguments, reason = "one record's fields")]
    pub fn shadow(
        &self,
        route: &str,
        request_id: &str,
        body: &Bytes,
        state: Option<&Arc<Fill>>,
        policy: &Arc<PolicyRef>,
        settings_sha256: &Arc<str>,
        decisions: &WitDecisions,
        usage: &crate::policy::Usage,
    ) {
        self.log.log(PendingRecord {
            at_ms: now_ms(),
            request_id: request_id.to_string(),
            route: route.to_string(),
            variant: Cow::Borrowed("shadow"),
            arm: Cow::Borrowed("shadow"),
            shadow: true,
            policy: policy.clone(),
            settings_sha256: settings_sha256.clone(),
            fallback: None,
            request: body.clone(),
            state: state.cloned(),
            decisions: DecisionColumnsRecord::from_wit(decisions),
            timing: TimingRecord {
                server_us: 0,
                policy_us: usage.wall_us,
            },
            usage: Some(UsageRecord::from(usage)),
        });
    }
}
