//! Delivery state on the request path: what the host reads into a request
//! before the policy runs, and what it writes back after.
//!
//! ```text
//! validated request ─► Wanted (what the request did not send)
//!                   ─► store read (budget; last-known values when the store is down)
//!                   ─► Fill applied to the request (and logged with it)
//!                   ─► serving chain ─► served decisions' campaign updates
//!                   ─► pacing writer task (off the response path) ─► store
//! POST /v1/events   ─► store (once per event id; queued while it is down)
//! ```
//!
//! **Write rules.** Only the served arm's campaign updates are written:
//! shadows and replays never write, and neither does a fallback to the
//! host's passthrough (it has none). A campaign whose pacing state the
//! caller sent is the caller's to keep, so its updates are not written
//! either. Each write is a [`PacingWrite`] under the store's rule — applied
//! only if the stored state is still the one the policy read and the
//! request falls in a later pacing tick — so concurrent requests for one
//! campaign make at most one controller step per tick, each computed from
//! the state it replaces.
//!
//! **Faults.** The store sits behind [`oasis_state::Guarded`]: a read has a
//! budget, after which the last-known campaign and holder values are used
//! (listener and session counts are then what the request sent, or 0); a
//! failing store is skipped (circuit breaker) and probed until it answers;
//! events are queued (bounded) while Redis is down, and refused (503) while
//! the embedded store's writes overrun, so that what is acknowledged is on
//! disk. Scoring never fails because of the store; [`Delivery::health`]
//! reports the degradation to `/readyz`, `/v1/policies` and the metrics.
//!
//! **Unknown counts promote nothing.** When the listener and session
//! counts a frequency cap relies on are unknown (the store did not answer
//! and the request did not send them), the served answer is replaced by the
//! organic order ([`withhold_promotions`]): a cap that cannot be checked
//! must not be overrun. [`StateConfig::promote_on_unknown_counts`] turns
//! this off (counts are then 0).

pub mod fill;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use oasis_state::{
    DeliveryEvent, EmbeddedConfig, EmbeddedStore, GuardConfig, Guarded, Health, PacingWrite,
    RedisConfig, RedisStore, StateStore, StoreError,
};

pub use fill::{CampaignFill, Fill, Wanted};

use oasis_contract::{ReasonBits, reason};

use crate::bindings::{WitCampaignUpdate, WitDecisions, WitReason};
use crate::request::ValidRequest;

/// Where the delivery state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateBackend {
    /// No state: requests carry everything, campaign updates are dropped.
    Off,
    /// The embedded store in this directory (one machine, no setup); by
    /// default `.state/` inside the policy directory, beside the version
    /// store and the audit log.
    Embedded(Option<PathBuf>),
    /// A Redis server shared by replicas (`redis://host:port/db`).
    Redis(String),
}

/// How the server keeps delivery state.
#[derive(Debug, Clone)]
pub struct StateConfig {
    /// The store.
    pub backend: StateBackend,
    /// The pacing tick: at most one controller step per campaign per tick.
    pub tick: Duration,
    /// How long a request waits for the store before using last-known
    /// values.
    pub read_budget: Duration,
    /// How long a write (a batch of events, pacing steps) may take before
    /// the store counts as failing.
    pub write_budget: Duration,
    /// Events held while the store is down.
    pub buffer_events: usize,
    /// Score with counts 0 when the listener and session counts are
    /// unknown, instead of the organic order (off by default: caps fail
    /// safe).
    pub promote_on_unknown_counts: bool,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            backend: StateBackend::Embedded(None),
            tick: Duration::from_millis(oasis_state::DEFAULT_TICK_MS as u64),
            read_budget: GuardConfig::default().read_budget,
            write_budget: GuardConfig::default().write_budget,
            buffer_events: GuardConfig::default().buffer_capacity,
            promote_on_unknown_counts: false,
        }
    }
}

/// Why the state store could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("delivery state ({backend}): {source}")]
pub struct OpenError {
    /// `embedded <dir>` or `redis <url>`.
    pub backend: String,
    /// What failed.
    #[source]
    pub source: StoreError,
}

/// The embedded store's directory inside the policy directory, by default
/// (hidden, so the policy watcher ignores it).
pub const DEFAULT_DIR: &str = ".state";

/// Pacing writes queued for the writer task at most; beyond, a step is
/// dropped (counted): the next tick proposes another.
const PACING_QUEUE: usize = 4096;

/// The server's delivery state: the guarded store and the pacing writer.
#[derive(Debug, Clone)]
pub struct Delivery {
    state: Guarded,
    promote_on_unknown_counts: bool,
    pacing: mpsc::Sender<PacingWrite>,
    dropped_steps: Arc<std::sync::atomic::AtomicU64>,
}

impl Delivery {
    /// Opens the configured store (`None` for [`StateBackend::Off`]) and
    /// starts the pacing writer task (on the current tokio runtime).
    ///
    /// # Errors
    /// The embedded store's file cannot be opened (locked by another
    /// process, corrupt, unwritable); a bad Redis URL. An unreachable Redis
    /// server is not an error: the server starts degraded and recovers
    /// when it answers.
    pub fn open(config: &StateConfig, policies: &Path) -> Result<Option<Self>, OpenError> {
        let tick_ms = config.tick.as_millis().max(1) as i64;
        let store: Arc<dyn StateStore> = match &config.backend {
            StateBackend::Off => return Ok(None),
            StateBackend::Embedded(dir) => {
                let dir = dir.clone().unwrap_or_else(|| policies.join(DEFAULT_DIR));
                let mut c = EmbeddedConfig::new(dir.join("oasis-state.redb"));
                c.tick_ms = tick_ms;
                Arc::new(EmbeddedStore::open(c).map_err(|source| OpenError {
                    backend: format!("embedded {}", dir.display()),
                    source,
                })?)
            }
            StateBackend::Redis(url) => {
                let mut c = RedisConfig::new(url.clone());
                c.tick_ms = tick_ms;
                Arc::new(RedisStore::connect_lazy(c).map_err(|source| OpenError {
                    backend: format!("redis {url}"),
                    source,
                })?)
            }
        };
        Ok(Some(Self::with_store(store, config)))
    }

    /// Wraps an open store (tests, tools) and starts the pacing writer.
    pub fn with_store(store: Arc<dyn StateStore>, config: &StateConfig) -> Self {
        let guard = GuardConfig {
            read_budget: config.read_budget,
            write_budget: config.write_budget,
            buffer_capacity: config.buffer_events,
            tick_ms: config.tick.as_millis().max(1) as i64,
            ..GuardConfig::default()
        };
        let state = Guarded::new(store, guard);
        let (tx, rx) = mpsc::channel(PACING_QUEUE);
        tokio::spawn(write_pacing(state.clone(), rx));
        Delivery {
            state,
            promote_on_unknown_counts: config.promote_on_unknown_counts,
            pacing: tx,
            dropped_steps: Default::default(),
        }
    }

    /// Reads what `req` did not send and fills it in; `None` when the
    /// request sent everything (the store is not asked).
    pub async fn fill(&self, req: &mut ValidRequest<'_>) -> Option<Arc<Fill>> {
        let fill = {
            let wanted = Wanted::of(req);
            if wanted.is_empty() {
                return None;
            }
            let snapshot = self.state.read(&wanted.query(req)).await;
            wanted.fill(req, &snapshot)
        };
        fill.apply(req);
        Some(Arc::new(fill))
    }

    /// Applies the unknown-counts rule to the served decisions: when `fill`
    /// says the counts were unknown, promotions are withheld
    /// ([`withhold_promotions`]) unless the server was told to promote on
    /// unknown counts. Returns whether the answer was changed.
    pub fn guard_unknown_counts(
        &self,
        req: &ValidRequest<'_>,
        fill: Option<&Fill>,
        decisions: &mut WitDecisions,
    ) -> bool {
        if self.promote_on_unknown_counts || !fill.is_some_and(|f| f.counts_unknown) {
            return false;
        }
        withhold_promotions(req, decisions)
    }

    /// Queues the served policy's campaign updates for writing (never
    /// blocks; see the module docs for which are written).
    pub fn served(&self, req: &ValidRequest<'_>, updates: &[WitCampaignUpdate]) {
        let now = req.context.timestamp_ms;
        for u in updates {
            let index = u.campaign as usize;
            let (Some(campaign), Some(sent)) =
                (req.campaigns().get(index), req.campaign_sent().get(index))
            else {
                continue;
            };
            if sent.pacing {
                continue;
            }
            let write = PacingWrite {
                campaign_id: req.campaign_id(index).to_string(),
                based_on_ms: campaign.pacing_updated_ms,
                at_ms: now,
                integral: u.pacing_integral,
                last_error: u.pacing_last_error,
            };
            if self.pacing.try_send(write).is_err() {
                self.dropped_steps
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// Applies delivery events (queued while a remote store is down).
    ///
    /// # Errors
    /// A message when the embedded store cannot make them durable now, or a
    /// remote store is down and its queue is full: the caller answers 503
    /// and the client sends the batch again.
    pub async fn record(&self, events: Vec<DeliveryEvent>) -> Result<Recorded, String> {
        let outcome = self.state.record(&events).await;
        if outcome.refused > 0 {
            return Err(format!(
                "the {} delivery state store cannot make events durable now (its writes overrun or fail); nothing of this batch is acknowledged, send it again shortly",
                self.state.store().kind()
            ));
        }
        if outcome.dropped > 0 {
            return Err(format!(
                "the delivery state store is unavailable and {} events are already queued; send the batch again shortly",
                self.state.health().queued_events
            ));
        }
        let stored = outcome.stored.unwrap_or_default();
        Ok(Recorded {
            applied: stored.applied,
            duplicates: stored.duplicates,
            buffered: outcome.buffered,
        })
    }

    /// The store's health and counters.
    pub fn health(&self) -> Health {
        self.state.health()
    }

    /// Pacing steps dropped because the writer's queue was full.
    pub fn dropped_steps(&self) -> u64 {
        self.dropped_steps
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// What [`Delivery::record`] did with a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Events that changed state.
    pub applied: u64,
    /// Events already recorded (same id).
    pub duplicates: u64,
    /// Events queued until the store returns.
    pub buffered: u64,
}

/// The pacing writer: drains the queue in batches, one store call per batch.
async fn write_pacing(state: Guarded, mut rx: mpsc::Receiver<PacingWrite>) {
    let mut batch = Vec::with_capacity(256);
    while rx.recv_many(&mut batch, 256).await > 0 {
        let outcome = state.write_pacing(&batch).await;
        tracing::trace!(
            steps = batch.len(),
            applied = outcome.applied.iter().filter(|a| **a).count(),
            "pacing steps written"
        );
        batch.clear();
    }
}

/// The organic order for a request whose listener and session counts are
/// unknown: when a campaign track's counts were neither sent nor known,
/// every score becomes the candidate's relevance, nothing is eligible or
/// promoted (propensity 0), and the campaign tracks whose counts are
/// unknown carry `freq_capped` and `missing_feature` (the cap could not be
/// checked). The policy's other reasons and its pacing updates are kept.
/// Returns whether anything changed (no campaign track with unknown counts:
/// nothing to protect).
pub fn withhold_promotions(req: &ValidRequest<'_>, d: &mut WitDecisions) -> bool {
    let mut unknown = Vec::new();
    for (i, (campaign, c)) in req.campaign_index().iter().zip(&req.candidates).enumerate() {
        if *campaign >= 0 && (c.impressions_24h.is_none() || c.session_promoted.is_none()) {
            unknown.push(i);
        }
    }
    if unknown.is_empty() {
        return false;
    }
    for (i, c) in req.candidates.iter().enumerate() {
        if let Some(s) = d.scores.get_mut(i) {
            *s = c.relevance;
        }
        if let Some(e) = d.eligible.get_mut(i) {
            *e = false;
        }
        if let Some(p) = d.propensity.get_mut(i) {
            *p = 0.0;
        }
        if let Some(r) = d.reasons.get_mut(i) {
            *r = crate::bindings::wit_reason(r.reason_bits() & !reason::PROMOTED);
        }
    }
    for i in unknown {
        if let Some(r) = d.reasons.get_mut(i) {
            *r |= WitReason::FREQ_CAPPED | WitReason::MISSING_FEATURE;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{Validate, parse};

    const BODY: &str = r#"{"context": {"request_id": "r", "listener_id": "u", "session_id": "s",
        "surface": "radio", "market": "SE", "timestamp_ms": 5000},
      "candidates": [
        {"id": "a", "relevance": 0.5, "campaign": {"id": "c", "start_ms": 0, "end_ms": 10000, "delivery_target": 10}},
        {"id": "b", "relevance": 0.9},
        {"id": "c", "relevance": 0.7, "campaign": {"id": "c", "start_ms": 0, "end_ms": 10000, "delivery_target": 10}}
      ]}"#;

    fn promoted_first() -> WitDecisions {
        WitDecisions {
            scores: vec![2.0, 0.9, 0.7],
            eligible: vec![true, false, true],
            reasons: vec![
                WitReason::PROMOTED,
                WitReason::ORGANIC,
                WitReason::PACING_THROTTLED,
            ],
            propensity: vec![1.0, 0.0, 0.0],
            debug: Vec::new(),
            campaign_updates: Vec::new(),
        }
    }

    #[test]
    fn unknown_counts_give_the_organic_order_and_say_why() {
        let req = parse(BODY.as_bytes()).unwrap().validate(10).unwrap();
        let mut d = promoted_first();
        assert!(withhold_promotions(&req, &mut d));
        assert_eq!(d.scores, [0.5, 0.9, 0.7], "relevance: organic order");
        assert_eq!(d.eligible, [false; 3]);
        assert_eq!(d.propensity, [0.0; 3]);
        let capped = WitReason::FREQ_CAPPED | WitReason::MISSING_FEATURE;
        assert_eq!(d.reasons[0], capped, "promoted is withdrawn");
        assert_eq!(d.reasons[1], WitReason::ORGANIC);
        assert_eq!(d.reasons[2], WitReason::PACING_THROTTLED | capped);
    }

    #[test]
    fn counts_the_caller_sent_are_known() {
        let mut body: serde_json::Value = serde_json::from_str(BODY).unwrap();
        for c in [0, 2] {
            body["candidates"][c]["impressions_24h"] = 0.into();
            body["candidates"][c]["session_promoted"] = 0.into();
        }
        let bytes = serde_json::to_vec(&body).unwrap();
        let req = parse(&bytes).unwrap().validate(10).unwrap();
        let mut d = promoted_first();
        assert!(!withhold_promotions(&req, &mut d), "nothing to protect");
        let before = promoted_first();
        assert_eq!(
            (d.scores, d.eligible, d.reasons, d.propensity),
            (
                before.scores,
                before.eligible,
                before.reasons,
                before.propensity
            )
        );
    }
}
