//! [`Scorer`]: the transport-neutral handle both front ends call.
//!
//! A transport admits the request ([`Scorer::admit`]), decodes it, and then:
//!
//! ```text
//! Scorer::score(req) ─► Scored ─► encode::json / encode::proto ─► Scorer::after(scored)
//!   ready? resolve, validate,        the transport's answer         decision log, shadows,
//!   fill state, chain, write-back,                                  request metrics
//!   guardrail
//! ```
//!
//! The handle is cheap to clone (one `Arc`) and its state is private, as
//! mini-redis's `Db` is: the registry snapshot, the semaphores that bound
//! work, the route statistics, the decision log and the delivery state are
//! reached through its methods, so following a request never goes blind at
//! a public field.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use crate::control::manager::RollbackRequests;
use crate::control::registry::{ActivePolicy, ArmKind, Registry, RoutePlan};
use crate::control::versions::VersionStore;
use crate::delivery::{Delivery, Fill};
use crate::request::{self, ScoreRequest, ValidRequest, Validate};
use crate::sandbox::visible;
use crate::serving::campaigns::CampaignBook;
use crate::serving::chain;
use crate::serving::fleet_window::{FleetArm, FleetWindows};
use crate::serving::guardrail::Sample;
use crate::serving::logging::DecisionLogging;
use crate::serving::resources::Resources;
use crate::serving::route_stats::{Observed, RouteStats, lock};
use crate::serving::served::Served;
use crate::serving::{Received, ServeError, Transport, shadow};
use crate::telemetry::metrics::{Metrics, RequestLabels};

/// The serving side of a server. Cheap to clone.
#[derive(Clone)]
pub struct Scorer {
    inner: Arc<Inner>,
}

/// What a [`Scorer`] owns.
#[derive(Clone)]
struct Inner {
    /// Loaded policies and routes (published by the control plane).
    registry: Arc<Registry>,
    /// What the chain and the shadows draw on: metrics, instance and shadow
    /// slots, route statistics, the decision log.
    res: Resources,
    /// Bounds scoring requests in progress (bodies in memory included).
    inflight: Arc<Semaphore>,
    /// Where guardrail breaches are sent to be rolled back.
    rollbacks: RollbackRequests,
    /// The version store, when serving a policy directory.
    store: Option<VersionStore>,
    /// The delivery state, when kept.
    delivery: Option<Delivery>,
    /// What served requests showed of each campaign.
    campaigns: Arc<CampaignBook>,
    /// The fleet's shared guardrail windows, when `--fleet-windows` is set.
    fleet: Option<FleetWindows>,
}

/// A request let in: holds its `--max-inflight` slot until dropped.
#[derive(Debug)]
pub struct Admission {
    _slot: OwnedSemaphorePermit,
}

/// A scored request: what the transport encodes, then hands to
/// [`Scorer::after`].
pub struct Scored<'a> {
    /// The validated request (with the delivery state filled in).
    pub req: ValidRequest<'a>,
    /// The route it was served on.
    pub route: String,
    /// Who served it and what failed before.
    pub served: Served,
    /// When the server started on it (after the body was read).
    pub started: Instant,
    plan: Arc<RoutePlan>,
    fill: Option<Arc<Fill>>,
}

impl Scorer {
    /// A scorer over `registry` for a runtime of `max_instances` instances,
    /// scoring at most `max_inflight` requests at once. Two pool slots are
    /// kept for loads and smoke tests, so requests use at most
    /// `max_instances - 2` at once.
    pub fn new(
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        max_instances: u32,
        max_inflight: usize,
    ) -> Self {
        Scorer {
            inner: Arc::new(Inner {
                registry,
                res: Resources::new(metrics, max_instances),
                inflight: Arc::new(Semaphore::new(max_inflight.max(1))),
                rollbacks: RollbackRequests::new(),
                store: None,
                delivery: None,
                campaigns: Arc::new(CampaignBook::default()),
                fleet: None,
            }),
        }
    }

    fn map(self, f: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| (*shared).clone());
        f(&mut inner);
        Scorer {
            inner: Arc::new(inner),
        }
    }

    /// The same scorer, logging decisions to `log`.
    pub fn with_decision_log(self, log: DecisionLogging) -> Self {
        self.map(|i| i.res.decision_log = Some(log))
    }

    /// The same scorer, running policy calls in the CPU slots of `config`
    /// ([`crate::serving::cpu`]; one per core by default), quick ones inline
    /// ([`crate::serving::arm`]).
    pub fn with_cpu_slots(self, config: crate::serving::cpu::CpuSlotConfig) -> Self {
        self.map(|i| {
            i.res.cpu = crate::serving::cpu::CpuSlots::new(config);
            i.res.inline_under = config.inline_under;
        })
    }

    /// The same scorer, keeping delivery state in `delivery`.
    pub fn with_delivery(self, delivery: Option<Delivery>) -> Self {
        self.map(|i| i.delivery = delivery)
    }

    /// The same scorer, listing stored versions from `store`.
    pub fn with_store(self, store: VersionStore) -> Self {
        self.map(|i| i.store = Some(store))
    }

    /// The same scorer, also counting canary windows in the fleet's shared
    /// counters `fleet`.
    pub fn with_fleet_windows(self, fleet: FleetWindows) -> Self {
        self.map(|i| i.fleet = Some(fleet))
    }

    /// The fleet's shared guardrail windows, when on.
    pub fn fleet_windows(&self) -> Option<&FleetWindows> {
        self.inner.fleet.as_ref()
    }

    /// Loaded policies and routes.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.inner.registry
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.res.metrics
    }

    /// What serving learned per route (canary windows, shadow divergence).
    pub fn route_stats(&self) -> &RouteStats {
        &self.inner.res.route_stats
    }

    /// The version store, when serving a policy directory.
    pub fn versions(&self) -> Option<&VersionStore> {
        self.inner.store.as_ref()
    }

    /// The decision log, when decisions are logged.
    pub fn decision_log(&self) -> Option<&DecisionLogging> {
        self.inner.res.decision_log.as_ref()
    }

    /// The delivery state, when kept.
    pub fn delivery(&self) -> Option<&Delivery> {
        self.inner.delivery.as_ref()
    }

    /// What served requests showed of each campaign: delivery against
    /// target, promotions, frequency-cap hits.
    pub fn campaigns(&self) -> &CampaignBook {
        &self.inner.campaigns
    }

    /// The queue of guardrail breaches the control plane acts on.
    pub fn rollbacks(&self) -> &RollbackRequests {
        &self.inner.rollbacks
    }

    /// Lets one more request in, or refuses it: at most `max_inflight` are
    /// scored at once. Transports admit after the body is read, so a client
    /// that is slow to send never holds a slot.
    ///
    /// # Errors
    /// [`ServeError::Busy`] when every slot is taken.
    pub fn admit(&self) -> Result<Admission, ServeError> {
        self.inner
            .inflight
            .clone()
            .try_acquire_owned()
            .map(|slot| Admission { _slot: slot })
            .map_err(|_| ServeError::Busy)
    }

    /// Resolves the request's route, validates it against the route's
    /// policy, fills the delivery state it did not send, walks the route's
    /// serving chain, writes the served arm's state back and feeds a
    /// canary's guardrails. Call it inside [`span`](crate::serving::span).
    ///
    /// # Errors
    /// [`ServeError`]: not ready, an unknown route or a policy that never
    /// loaded, an invalid request, or an overloaded primary arm. A policy's
    /// fault is not an error: the chain answers with a fallback.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo(scorer: oasis::serving::Scorer, body: bytes::Bytes) -> Result<(), Box<dyn std::error::Error>> {
    /// use oasis::serving::{Received, Transport, encode};
    /// let started = std::time::Instant::now();
    /// let _slot = scorer.admit()?;
    /// let scored = scorer.score(oasis::request::parse(&body)?, started).await?;
    /// let json = encode::json(&scored)?;
    /// scorer.after(scored, Received::Json(&body), Transport::Http);
    /// # let _ = json; Ok(()) }
    /// ```
    pub async fn score<'a>(
        &self,
        req: ScoreRequest<'a>,
        started: Instant,
    ) -> Result<Scored<'a>, ServeError> {
        let (route, plan, main) = self.resolve(req.route.as_deref())?;
        Self::record_route(&route, &main);
        let max = main.policy.limits().max_candidates;
        let req = tracing::debug_span!("validate").in_scope(|| req.validate(max))?;
        self.score_valid(req, route, plan, started).await
    }

    /// [`Scorer::score`] for a JSON body: decoded straight into the
    /// validated, columnar form against the route's declared columns
    /// ([`request::json`]) when the fast path takes it, else parsed and
    /// scored as [`Scorer::score`] does, with the same errors. Records the
    /// request id on the span ([`crate::serving::identify`]).
    ///
    /// # Errors
    /// As [`request::parse`] and [`Scorer::score`].
    pub async fn score_json<'a>(
        &self,
        body: &'a [u8],
        started: Instant,
    ) -> Result<Scored<'a>, ServeError> {
        let fast = tracing::debug_span!("decode", path = "one-pass").in_scope(|| {
            let route = request::json::route_hint(body).ok()?;
            let (route, plan, main) = self.resolve(route.as_deref()).ok()?;
            let columns = declared_columns(&plan);
            let max = main.policy.limits().max_candidates;
            let req = request::json::decode(body, &columns, max).ok()?;
            Some((req, route, plan, main))
        });
        if let Some((req, route, plan, main)) = fast {
            Self::record_route(&route, &main);
            crate::serving::identify(&req);
            return self.score_valid(req, route, plan, started).await;
        }
        let req =
            tracing::debug_span!("decode", path = "general").in_scope(|| request::parse(body))?;
        crate::serving::identify(&req);
        self.score(req, started).await
    }

    /// [`Scorer::score`] for a gRPC message's bytes: read in place
    /// ([`request::proto_view`]), checked on its columns and packed straight
    /// into the validated form ([`request::packed::direct_view`]) when the
    /// direct path takes it, else decoded by prost, converted and scored as
    /// [`Scorer::score`] does, with the same errors. Records the request id
    /// on the span.
    ///
    /// # Errors
    /// As [`request::proto_view::ProtoMessage::message`],
    /// [`request::packed::from_proto`] and [`Scorer::score`].
    pub async fn score_proto<'a>(
        &self,
        msg: &'a request::proto_view::ProtoMessage<'_>,
        started: Instant,
    ) -> Result<Scored<'a>, ServeError> {
        let fast = tracing::debug_span!("decode", path = "one-pass").in_scope(|| {
            let view = msg.view()?;
            let (route, plan, main) = self.resolve(view.route()).ok()?;
            let max = main.policy.limits().max_candidates;
            let req = request::packed::direct_view(view, max)?;
            Some((req, route, plan, main))
        });
        if let Some((req, route, plan, main)) = fast {
            Self::record_route(&route, &main);
            crate::serving::identify(&req);
            return self.score_valid(req, route, plan, started).await;
        }
        let req = tracing::debug_span!("decode", path = "general")
            .in_scope(|| request::packed::from_proto(msg.message()?))?;
        crate::serving::identify(&req);
        self.score(req, started).await
    }

    /// The route's plan and the arm whose contract the request is
    /// validated against; records them on the span.
    fn resolve(
        &self,
        route: Option<&str>,
    ) -> Result<(String, Arc<RoutePlan>, Arc<ActivePolicy>), ServeError> {
        let inner = &*self.inner;
        if !inner.registry.is_ready() {
            return Err(ServeError::NotReady);
        }
        let snapshot = inner.registry.snapshot();
        let (route, plan) = snapshot.resolve(route)?;
        // The route's contract is its stable version's (or, killed, its baseline's).
        let Some(main) = plan.stable.as_ref().or(plan.baseline.as_ref()).cloned() else {
            return Err(crate::control::registry::ResolveError::Unavailable {
                route,
                policy: plan.policy.clone(),
                error: None,
            }
            .into());
        };
        Ok((route, plan, main))
    }

    /// Records the resolved route, its policy and version on the request's
    /// span (the current one, which must not be a stage's).
    ///
    /// One `record_all` rather than three `record`s: each is a trip
    /// through the subscriber (span lookup, its extensions' lock, the fmt
    /// layer appending to the span's formatted fields).
    fn record_route(route: &str, main: &ActivePolicy) {
        let span = tracing::Span::current();
        tracing::record_all!(
            span,
            route = route,
            policy = main.key(),
            version = main.policy.identity().version.as_str()
        );
    }

    /// Scores a validated request on its resolved route: fill, chain,
    /// write-back, guardrail.
    async fn score_valid<'a>(
        &self,
        mut req: ValidRequest<'a>,
        route: String,
        plan: Arc<RoutePlan>,
        started: Instant,
    ) -> Result<Scored<'a>, ServeError> {
        let inner = &*self.inner;
        // A request dated far ahead would move the store's clocks (one
        // pacing step ten years ahead freezes the campaign's pacing).
        if inner.delivery.is_some() {
            check_not_ahead(req.context.timestamp_ms, oasis_state::unix_now_ms())?;
        }
        // Delivery state the request did not send (request values win).
        let fill = match &inner.delivery {
            Some(d) => {
                d.fill(&mut req)
                    .instrument(tracing::debug_span!("state_fill"))
                    .await
            }
            None => None,
        };
        let arms = plan.arms(&req.context.listener_id);
        let mut served = chain::serve(&inner.res, arms, plan.primary(), &req).await?;
        // Counts a cap relies on that are unknown promote nothing.
        if let Some(d) = &inner.delivery
            && d.guard_unknown_counts(&req, fill.as_deref(), &mut served.decisions)
        {
            served.counts_unknown = true;
            inner
                .res
                .metrics
                .state
                .counts_unknown
                .get_or_create(&crate::telemetry::metrics::NoLabels)
                .inc();
            tracing::debug!("listener counts unknown; promotions withheld");
        }
        // Only the served arm writes state (shadows and fallbacks never do).
        if let Some(d) = &inner.delivery
            && served.arm != ArmKind::Passthrough
        {
            tracing::debug_span!("write_back")
                .in_scope(|| d.served(&req, &served.decisions.campaign_updates));
        }
        self.guard_canary(&plan, &served);
        Ok(Scored {
            req,
            route,
            served,
            started,
            plan,
            fill,
        })
    }

    /// What follows the answer: the decision log, the shadows and the
    /// request metrics. Returns at once (shadows run on their own).
    pub fn after(&self, scored: Scored<'_>, received: Received<'_>, transport: Transport) {
        let inner = &*self.inner;
        let Scored {
            req,
            route,
            served,
            started,
            plan,
            fill,
        } = scored;
        let logged = inner
            .res
            .decision_log
            .as_ref()
            .filter(|l| l.sampled(&plan, &req.context.request_id));
        let raw = logged.map(|_| match received {
            Received::Json(body) => body.clone(),
            Received::Parsed => Bytes::from(serde_json::to_vec(&*req).unwrap_or_default()),
        });
        if let (Some(log), Some(raw)) = (logged, &raw) {
            let _span = tracing::debug_span!("decision_log").entered();
            let server_us = started.elapsed().as_micros() as u64;
            log.served(
                &route,
                &req.context.request_id,
                raw,
                fill.as_ref(),
                &served,
                server_us,
            );
        }
        let runtime = inner.res.route_stats.get(&plan.route);
        runtime.observe(
            plan.arms_key,
            Observed {
                assigned: served.first.map_or(served.arm, |(arm, _, _)| arm),
                served: served.arm,
                latency: started.elapsed(),
                candidates: served.decisions.scores.len() as u64,
                eligible: served.eligible,
                promoted: if served.counts_unknown {
                    0
                } else {
                    served.promoted
                },
            },
        );
        inner.campaigns.observe(
            &route,
            &req,
            &served.decisions,
            inner.delivery.is_some(),
            served.counts_unknown,
        );
        if !plan.shadows.is_empty() {
            // The served arm's latency trend, which sheds shadows when it
            // rises: kept only on routes that have shadows.
            if served.arm != ArmKind::Passthrough && served.policy_us > 0 {
                lock(&runtime.served).record(served.policy_us);
            }
            tracing::debug_span!("shadows").in_scope(|| {
                shadow::spawn(
                    &inner.res,
                    &plan,
                    &req,
                    &served,
                    raw.as_ref(),
                    fill.as_ref(),
                )
            });
        }
        inner.res.metrics.requests.answered(
            &RequestLabels {
                route,
                variant: served.variant.as_str(),
                transport: transport.as_str(),
            },
            started.elapsed().as_secs_f64(),
        );
        tracing::debug!(
            candidates = req.candidates.len(),
            policy_us = served.policy_us,
            "scored"
        );
    }

    /// Counts and logs a refused request: `status` and `kind` as the
    /// transport answered it.
    pub fn refused(&self, status: u16, kind: &'static str, message: &str, transport: Transport) {
        self.inner
            .res
            .metrics
            .requests
            .reject(status, kind, transport.as_str());
        if status >= 500 {
            tracing::warn!(status, kind, transport = transport.as_str(), message = %visible(message), "request refused");
        } else {
            tracing::debug!(status, kind, transport = transport.as_str(), message = %visible(message), "request refused");
        }
    }

    /// Feeds the first call of a canary to the route's guardrails, and a
    /// stable request served beside a canary to the stable arm's window the
    /// business guardrail compares with (locally, and to the fleet's shared
    /// counters when on); on a local breach, asks the control plane (off the
    /// request path) to roll the canary back.
    fn guard_canary(&self, plan: &RoutePlan, served: &Served) {
        let (Some((first, ok, us)), Some(g), Some((canary, _))) =
            (served.first, &plan.guardrails, &plan.canary)
        else {
            return;
        };
        let arm = match first {
            ArmKind::Canary => FleetArm::Canary,
            ArmKind::Stable => FleetArm::Stable,
            _ => return,
        };
        // A failed call scored nothing (the answer is a fallback's).
        let sample = if ok {
            Sample {
                ok,
                latency_us: us,
                candidates: served.decisions.scores.len() as u64,
                promoted: if served.counts_unknown {
                    0
                } else {
                    served.promoted
                },
                eligible: served.eligible,
            }
        } else {
            Sample {
                ok,
                latency_us: us,
                ..Sample::default()
            }
        };
        let digest = &canary.policy.identity().digest;
        if let Some(fleet) = &self.inner.fleet {
            fleet.record(&plan.route, digest, arm, &sample, g);
        }
        let runtime = self.inner.res.route_stats.get(&plan.route);
        if arm == FleetArm::Stable {
            lock(&runtime.canary).record_stable(digest, sample, g);
            return;
        }
        let breach = lock(&runtime.canary).record(digest, sample, g);
        if let Some(reason) = breach {
            tracing::error!(route = %plan.route, %digest, %reason, "canary guardrail breached; rolling it back");
            self.inner.rollbacks.request(&plan.route, digest, reason);
        }
    }
}

/// The union of the candidate feature columns of every policy that may see
/// a request on `plan` (its arms and its shadows), in order of first
/// appearance: what the JSON fast path decodes into columns.
fn declared_columns(plan: &RoutePlan) -> Vec<&str> {
    let arms = [&plan.stable, &plan.baseline]
        .into_iter()
        .flatten()
        .chain(plan.canary.iter().map(|(c, _)| c))
        .chain(plan.shadows.iter().map(|(_, s)| s));
    let mut out: Vec<&str> = Vec::new();
    for arm in arms {
        for c in arm.policy.columns() {
            if !out.contains(&c.as_str()) {
                out.push(c);
            }
        }
    }
    out
}

/// Refuses a request time more than [`oasis_state::MAX_AHEAD_MS`] ahead of
/// the server's clock `now_ms`, naming `context.timestamp_ms`.
pub(crate) fn check_not_ahead(
    timestamp_ms: i64,
    now_ms: i64,
) -> Result<(), crate::request::RequestError> {
    if timestamp_ms > now_ms.saturating_add(oasis_state::MAX_AHEAD_MS) {
        return Err(crate::request::RequestError::invalid(
            "context.timestamp_ms",
            format!(
                "is {} s ahead of the server's clock (at most {} s; is it in milliseconds?)",
                (timestamp_ms - now_ms) / 1000,
                oasis_state::MAX_AHEAD_MS / 1000
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_not_ahead;

    #[test]
    fn times_more_than_the_bound_ahead_are_refused_naming_the_field() {
        let now = 1_800_000_000_000;
        assert!(check_not_ahead(now, now).is_ok());
        assert!(
            check_not_ahead(now - 86_400_000 * 365, now).is_ok(),
            "the past is the caller's"
        );
        assert!(check_not_ahead(now + oasis_state::MAX_AHEAD_MS, now).is_ok());
        match check_not_ahead(now + oasis_state::MAX_AHEAD_MS + 1, now) {
            Err(crate::request::RequestError::Invalid { field, .. }) => {
                assert_eq!(field, "context.timestamp_ms")
            }
            other => panic!("{other:?}"),
        }
        assert!(check_not_ahead(now * 1000, now).is_err(), "microseconds");
    }
}

impl crate::serving::fleet_window::FleetHost for Scorer {
    fn route_stats(&self) -> &RouteStats {
        Scorer::route_stats(self)
    }

    fn rollbacks(&self) -> &RollbackRequests {
        Scorer::rollbacks(self)
    }
}
