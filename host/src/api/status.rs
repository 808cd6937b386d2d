//! Read-only endpoints: policies, routes (arms, rollout state, canary
//! guardrails, shadow divergence), stored versions, campaigns (delivery
//! against target, frequency-cap hits), health, readiness,
//! metrics.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use std::sync::Arc;

use crate::api::error::{ApiError, ErrorKind};
use crate::api::state::AppState;
use crate::control::manifest::Guardrails;
use crate::control::registry::{ActivePolicy, Failure, PolicyEntry, RoutePlan, Snapshot, unix_ms};
use crate::control::rollout::Rollback;
use crate::divergence::DivergenceSummary;
use crate::metadata::PolicyRef;
use crate::serving::guardrail::WindowSummary;
use crate::serving::route_stats::{ArmDivergence, ArmSummary, lock};

/// One policy as reported by `/v1/policies`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PolicyStatus<'a> {
    /// Policy key.
    pub key: &'a str,
    /// `active`, `waiting` (the manifest names a module that is not there
    /// yet; within the grace period this is not a failure), `failed` (a
    /// failure is current; the last good version, if any, keeps serving) or
    /// `unavailable` (never loaded).
    pub status: &'static str,
    /// The version serving now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active: Option<ActiveStatus<'a>>,
    /// The current load failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<&'a Failure>,
    /// Routes served by this policy (including its implicit own-name route).
    pub routes: Vec<&'a str>,
    /// Configuration problems that do not stop serving.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The serving version of a policy.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ActiveStatus<'a> {
    /// Name from the policy's metadata.
    pub name: &'a str,
    /// Semver.
    pub version: &'a str,
    /// `sha256:…` of the component.
    pub digest: &'a str,
    /// The contract version the component was built against (`0.1.0`,
    /// `0.2.0` or `0.3.0`).
    pub contract: &'a str,
    /// `sha256` (hex) of the settings it was loaded with.
    pub settings_sha256: &'a str,
    /// The settings in effect: documented defaults overridden by the
    /// manifest's `[settings]`.
    #[schema(value_type = Object)]
    pub settings: serde_json::Value,
    /// Module file it was loaded from.
    pub module: String,
    /// Manifest file.
    pub manifest: String,
    /// Activation time, RFC 3339.
    pub loaded_at: String,
    /// Fallback policy key.
    pub fallback: Option<&'a str>,
    /// Limits.
    pub deadline_ms: u128,
    /// Memory limit, MiB.
    pub memory_mb: usize,
    /// Candidate limit.
    pub max_candidates: usize,
    /// Concurrency limit.
    pub max_concurrency: usize,
    /// Calls one instance may serve (`[limits] reuse_instance_calls`; 0 or
    /// 1: a fresh instance per call, the default isolation).
    pub reuse_instance_calls: u32,
    /// Features it receives.
    pub features: &'a [String],
    /// What it promoted since activation, its recent promoted rate, and
    /// whether it has stalled (promotes nothing while campaign candidates
    /// arrive).
    pub promotion: crate::telemetry::promotion::PromotionStatus,
    /// Description.
    pub description: &'a str,
}

fn status_of<'a>(snapshot: &'a Snapshot, key: &'a str, e: &'a PolicyEntry) -> PolicyStatus<'a> {
    // The configured routes to this policy, plus its own-name route unless
    // a configured route of that name points elsewhere.
    let mut routes: Vec<&str> = snapshot
        .routes
        .iter()
        .filter(|(_, r)| r.policy == key)
        .map(|(r, _)| r.as_str())
        .chain((!snapshot.routes.contains_key(key)).then_some(key))
        .collect();
    routes.sort_unstable();
    PolicyStatus {
        key,
        status: match (&e.active, &e.failure) {
            _ if e.waiting.is_some_and(|w| !w.overdue) => "waiting",
            (_, Some(_)) => "failed",
            (Some(_), None) => "active",
            (None, None) => "unavailable",
        },
        active: e.active.as_ref().map(|a| {
            let i = a.policy.info();
            ActiveStatus {
                name: &i.name,
                version: &i.version,
                digest: &i.digest,
                contract: i.contract,
                settings_sha256: a.policy.settings_sha256(),
                settings: a.policy.effective_settings(),
                module: a.manifest.module.to_string(),
                manifest: a.manifest.path.display().to_string(),
                loaded_at: unix_ms::rfc3339(&a.loaded_at),
                fallback: a.manifest.fallback.as_deref(),
                deadline_ms: a.policy.limits().deadline.as_millis(),
                memory_mb: a.manifest.limits.memory_bytes >> 20,
                max_candidates: a.manifest.limits.max_candidates,
                max_concurrency: a.manifest.concurrency.max,
                reuse_instance_calls: a.manifest.limits.reuse_instance_calls,
                features: a.policy.columns(),
                promotion: a.metrics.promotion.status(),
                description: &i.description,
            }
        }),
        failure: e.failure.as_ref(),
        routes,
        warnings: e
            .active
            .as_ref()
            .and_then(|a| a.manifest.fallback.as_deref())
            .filter(|fb| snapshot.active(fb).is_none())
            .map(|fb| format!("fallback `{fb}` is not loaded; failures are answered by the host's relevance passthrough"))
            .into_iter()
            .chain(
                e.active
                    .as_ref()
                    .filter(|a| a.metrics.promotion.status().stalled)
                    .map(|_| "promotes nothing although campaign candidates arrive: check that its features are declared and sent, and its settings".to_string()),
            )
            .collect(),
    }
}

/// `GET /v1/policies`.
#[utoipa::path(get, path = "/v1/policies", operation_id = "list_policies", tag = "status", operation_id = "list_policies",
    summary = "Every policy with its status, and the configured routes",
    responses((status = 200, description = "Policies and routes", body = crate::api::status::PolicyList)))]
pub async fn list(State(state): State<AppState>) -> Response {
    let snapshot = state.scorer.registry().snapshot();
    let policies: Vec<_> = snapshot
        .policies
        .iter()
        .map(|(k, e)| status_of(&snapshot, k, e))
        .collect();
    Json(serde_json::json!({
        "policies": policies,
        "routes": snapshot.routes,
        "default_route": snapshot.default_route,
        "routes_failure": snapshot.routes_failure,
        "oci": snapshot.oci,
        "state": state.scorer.delivery().as_ref().map(|d| StateStatus::of(&d.health())),
        "decision_log": state.scorer.decision_log().as_ref().map(|l| l.log.budget_stats()),
    }))
    .into_response()
}

/// The delivery state store as `/v1/policies` and `/readyz` report it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StateStatus {
    /// `embedded` or `redis`.
    pub store: &'static str,
    /// `ok`, `degraded` (the store fails: requests are scored with
    /// last-known values, events are queued) or `recovering` (it answers
    /// again; queued events are being applied).
    pub status: &'static str,
    /// Since when it is degraded, RFC 3339.
    pub since: Option<String>,
    /// The last error.
    pub error: Option<String>,
    /// Events queued for the store.
    pub queued_events: u64,
}

impl StateStatus {
    /// The status of `h`.
    pub fn of(h: &oasis_state::Health) -> Self {
        use oasis_state::HealthState;
        let (status, since, error) = match &h.state {
            HealthState::Ok => ("ok", None, None),
            HealthState::Degraded {
                since_unix_ms,
                last_error,
                recovering,
            } => (
                if *recovering {
                    "recovering"
                } else {
                    "degraded"
                },
                Some(
                    humantime::format_rfc3339_millis(
                        std::time::UNIX_EPOCH
                            + std::time::Duration::from_millis((*since_unix_ms).max(0) as u64),
                    )
                    .to_string(),
                ),
                Some(last_error.clone()),
            ),
        };
        StateStatus {
            store: h.kind,
            status,
            since,
            error,
            queued_events: h.queued_events,
        }
    }
}

/// `GET /v1/policies/{name}`.
#[utoipa::path(get, path = "/v1/policies/{policy}", operation_id = "get_policy", tag = "status", operation_id = "get_policy",
    summary = "One policy with its status", params(("policy" = String, Path, description = "Policy key")),
    responses((status = 200, description = "The policy", body = PolicyStatus), (status = 404, description = "No such policy (`unknown_policy`); `known` lists the keys", body = crate::api::error::ApiErrorBody)))]
pub async fn get(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    let snapshot = state.scorer.registry().snapshot();
    match snapshot.policies.get_key_value(name.as_str()) {
        Some((k, e)) => Json(status_of(&snapshot, k, e)).into_response(),
        None => ApiError::unknown_policy(&name, snapshot.policies.keys().cloned().collect())
            .into_response(),
    }
}

/// `GET /healthz`: the process is alive.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "status", summary = "Liveness",
    responses((status = 200, description = "The process is alive", body = String, content_type = "text/plain", example = "ok\n")))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: ready once the initial policy set is loaded.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "status", summary = "Readiness: the initial policy set is loaded",
    responses((status = 200, description = "Ready; the `oasis-generation` header and the second line name the generation this replica serves (`g<revision>-<12 hex>`)", body = String, content_type = "text/plain", example = "ready\ngeneration g12-3f2a9c0d1e4b\n"),
        (status = 503, description = "Still loading the initial policy set", body = String, content_type = "text/plain", example = "loading policies\n")))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let (status, mut text) = readiness(&state);
    if status != StatusCode::OK {
        return (status, text).into_response();
    }
    // What this replica serves, for operators and the fleet view.
    let generation = crate::control::generation::generation(&state.scorer.registry().snapshot());
    text.push_str(&format!("generation {generation}\n"));
    let mut response = (status, text).into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(&generation) {
        response.headers_mut().insert("oasis-generation", v);
    }
    response
}

/// `/readyz`'s status and first line.
fn readiness(state: &AppState) -> (StatusCode, String) {
    if state.scorer.registry().is_ready() {
        // A registry that fails does not make the server unready either:
        // it serves what it pulled before (or what the version store kept).
        let snapshot = state.scorer.registry().snapshot();
        let failing: Vec<String> = snapshot
            .oci
            .iter()
            .filter(|o| o.status == "failing")
            .map(|o| {
                format!(
                    "{} ({}; serving {})",
                    o.error.as_deref().unwrap_or(&o.reference),
                    o.failures,
                    o.serving_from.unwrap_or("nothing")
                )
            })
            .collect();
        if !failing.is_empty() {
            return (
                StatusCode::OK,
                format!(
                    "ready; registry failing, retried with backoff: {}\n",
                    failing.join("; ")
                ),
            );
        }
        // A degraded state store does not make the server unready: it
        // scores with last-known values. It is reported, for operators.
        match state
            .scorer
            .delivery()
            .map(|d| StateStatus::of(&d.health()))
        {
            Some(s) if s.status != "ok" => (
                StatusCode::OK,
                format!(
                    "ready; delivery state {} ({} store: {}; {} events queued)\n",
                    s.status,
                    s.store,
                    s.error.unwrap_or_default(),
                    s.queued_events
                ),
            ),
            _ => (StatusCode::OK, "ready\n".into()),
        }
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "loading policies\n".into())
    }
}

/// `GET /metrics`: Prometheus / OpenMetrics text.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "status", summary = "Prometheus / OpenMetrics metrics",
    responses((status = 200, description = "OpenMetrics text exposition", body = String,
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    if let Some(l) = &state.scorer.decision_log() {
        state
            .scorer
            .metrics()
            .state
            .decision_log_stats(&l.log.stats());
        state
            .scorer
            .metrics()
            .state
            .decision_log_budget(&l.log.budget_stats());
        state
            .scorer
            .metrics()
            .state
            .outcome_stats(&l.log.outcome_stats());
    }
    if let Some(d) = &state.scorer.delivery() {
        state
            .scorer
            .metrics()
            .state
            .state_stats(&d.health(), d.dropped_steps());
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.scorer.metrics().encode(),
    )
        .into_response()
}

/// One route as reported by `/v1/routes`: its arms, rollout state, canary
/// guardrail window and shadow divergence.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RouteStatus<'a> {
    /// The route.
    pub route: &'a str,
    /// Its policy key.
    pub policy: &'a str,
    /// Canary bucketing salt.
    pub salt: &'a str,
    /// The stable version serving.
    pub stable: Option<&'a PolicyRef>,
    /// Whether the stable version is pinned by the rollout state (else it
    /// follows the directory).
    pub pinned: bool,
    /// The version the directory's manifest points at.
    pub directory: Option<&'a PolicyRef>,
    /// The canary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryStatus<'a>>,
    /// The baseline.
    pub baseline: Option<&'a PolicyRef>,
    /// Kill switch.
    pub killed: bool,
    /// Shadows and their divergence from the served arm.
    pub shadows: Vec<ShadowStatus<'a>>,
    /// Automatic rollback limits.
    pub guardrails: Option<&'a Guardrails>,
    /// The last rollback.
    pub last_rollback: Option<&'a Rollback>,
    /// Earlier stable versions (oldest first; `null` = the directory's).
    pub history: &'a [Option<String>],
    /// Parts of the rollout state that do not apply, and why.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub problems: &'a [String],
    /// When this replica's per-arm counts and shadow divergence restarted
    /// (the route's last rollout change it served), RFC 3339; `null`
    /// before the route's first request.
    pub since: Option<String>,
    /// Each arm that saw requests since then: requests, fallbacks,
    /// latency, eligible and promoted rates.
    pub arms: Vec<ArmSummary>,
}

/// A route's canary.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CanaryStatus<'a> {
    /// The version.
    pub version: &'a PolicyRef,
    /// Share of listeners, percent.
    pub percent: f64,
    /// When it started, RFC 3339.
    pub since: Option<String>,
    /// Its guardrail window (this replica's requests): error rate, p99,
    /// and the promoted and eligible rates beside the stable arm's.
    pub window: Option<WindowSummary>,
    /// The same window over every replica's requests, as last judged
    /// (`--fleet-windows`; `null` otherwise).
    pub fleet_window: Option<WindowSummary>,
}

/// A route's shadow.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ShadowStatus<'a> {
    /// As configured (`key` or `key@sha256:…`).
    pub shadow: &'a str,
    /// The version it resolves to.
    pub version: &'a PolicyRef,
    /// Divergence from the served arms over the window of recent requests
    /// (every served arm together).
    pub divergence: Option<DivergenceSummary>,
    /// The same, from each arm that served beside the shadow.
    pub by_arm: Vec<ArmDivergence>,
}

fn route_status<'a>(
    state: &AppState,
    snapshot: &'a Snapshot,
    plan: &'a RoutePlan,
) -> RouteStatus<'a> {
    let rollout = snapshot
        .rollout
        .routes
        .get(&plan.route)
        .filter(|r| r.policy == plan.policy);
    let runtime = state.scorer.route_stats().peek(&plan.route);
    let id = |a: &'a Arc<ActivePolicy>| &**a.policy.identity();
    RouteStatus {
        route: &plan.route,
        policy: &plan.policy,
        salt: &plan.salt,
        stable: plan.stable.as_ref().map(id),
        pinned: rollout.is_some_and(|r| r.stable.is_some()),
        directory: snapshot
            .policies
            .get(&plan.policy)
            .and_then(|e| e.active.as_ref())
            .map(id),
        canary: plan.canary.as_ref().map(|(c, percent)| CanaryStatus {
            version: id(c),
            percent: *percent,
            since: rollout
                .and_then(|r| r.canary.as_ref())
                .filter(|c| c.since_ms > 0)
                .map(|c| {
                    unix_ms::rfc3339(
                        &(std::time::UNIX_EPOCH + std::time::Duration::from_millis(c.since_ms)),
                    )
                }),
            window: runtime
                .as_ref()
                .and_then(|r| lock(&r.canary).summary())
                .filter(|w| w.digest == c.policy.identity().digest),
            fleet_window: runtime
                .as_ref()
                .and_then(|r| lock(&r.fleet).clone())
                .filter(|w| w.digest == c.policy.identity().digest),
        }),
        baseline: plan.baseline.as_ref().map(id),
        killed: plan.killed,
        shadows: plan
            .shadows
            .iter()
            .map(|(shadow, v)| {
                // Windows of an earlier rollout of the route are not shown.
                let (divergence, by_arm) = runtime
                    .as_ref()
                    .filter(|r| r.is_current(plan.arms_key))
                    .and_then(|r| r.shadow(shadow))
                    .unzip();
                ShadowStatus {
                    shadow,
                    version: id(v),
                    divergence,
                    by_arm: by_arm.unwrap_or_default(),
                }
            })
            .collect(),
        guardrails: plan.guardrails.as_ref(),
        last_rollback: rollout.and_then(|r| r.last_rollback.as_ref()),
        history: rollout.map(|r| r.history.as_slice()).unwrap_or_default(),
        problems: &plan.problems,
        since: runtime
            .as_ref()
            .filter(|r| r.is_current(plan.arms_key) && r.since_ms() > 0)
            .map(|r| {
                unix_ms::rfc3339(
                    &(std::time::UNIX_EPOCH + std::time::Duration::from_millis(r.since_ms())),
                )
            }),
        arms: runtime
            .as_ref()
            .filter(|r| r.is_current(plan.arms_key))
            .map(|r| r.arms())
            .unwrap_or_default(),
    }
}

/// `GET /v1/routes`: every route with its arms and rollout state.
#[utoipa::path(get, path = "/v1/routes", operation_id = "list_routes", tag = "status", operation_id = "list_routes",
    summary = "Every route with its arms and rollout state",
    responses((status = 200, description = "Routes", body = crate::api::status::RouteList)))]
pub async fn routes(State(state): State<AppState>) -> Response {
    let snapshot = state.scorer.registry().snapshot();
    let routes: Vec<_> = snapshot
        .plans
        .values()
        .map(|p| route_status(&state, &snapshot, p))
        .collect();
    Json(serde_json::json!({
        "routes": routes,
        "revision": snapshot.rollout.revision,
        "generation": crate::control::generation::generation(&snapshot),
        "default_route": snapshot.default_route,
        "rollout_failure": snapshot.rollout_failure,
    }))
    .into_response()
}

/// `GET /v1/routes/{route}`.
#[utoipa::path(get, path = "/v1/routes/{route}", operation_id = "get_route", tag = "status", operation_id = "get_route",
    summary = "One route with its arms, rollout state, canary window and shadow divergence", params(("route" = String, Path, description = "Route name (a route of `routes.toml` or a policy key)")),
    responses((status = 200, description = "The route", body = RouteStatus),
        (status = 404, description = "No such route (`unknown_route`); `known` lists the routes", body = crate::api::error::ApiErrorBody)))]
pub async fn route(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    let snapshot = state.scorer.registry().snapshot();
    match snapshot.plans.get(name.as_str()) {
        Some(p) => Json(route_status(&state, &snapshot, p)).into_response(),
        None => ApiError::from(crate::control::registry::ResolveError::Unknown {
            name,
            known: snapshot.route_names(),
        })
        .into_response(),
    }
}

/// `GET /v1/policies/{key}/versions`: the stored versions of a policy,
/// oldest first.
#[utoipa::path(get, path = "/v1/policies/{policy}/versions", operation_id = "list_policy_versions", tag = "status", operation_id = "list_versions",
    summary = "The stored versions of a policy, oldest first", params(("policy" = String, Path, description = "Policy key")),
    responses((status = 200, description = "Stored versions", body = crate::api::status::VersionList), (status = 404, description = "No such policy (`unknown_policy`); `known` lists the keys", body = crate::api::error::ApiErrorBody), (status = 500, description = "Internal error (`internal`)", body = crate::api::error::ApiErrorBody)))]
pub async fn versions(State(state): State<AppState>, Path(key): Path<String>) -> Response {
    let snapshot = state.scorer.registry().snapshot();
    if !snapshot.policies.contains_key(&key) {
        return ApiError::unknown_policy(&key, snapshot.policies.keys().cloned().collect())
            .into_response();
    }
    let Some(store) = state.scorer.versions().cloned() else {
        return Json(serde_json::json!({ "versions": [] })).into_response();
    };
    match tokio::task::spawn_blocking(move || store.list(&key)).await {
        Ok(list) => Json(serde_json::json!({ "versions": list })).into_response(),
        Err(e) => ApiError::new(ErrorKind::Internal, e.to_string()).into_response(),
    }
}

/// `GET /v1/policies`: every policy, plus the routes of `routes.toml`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code, reason = "documentation only: read by utoipa, never built")]
pub struct PolicyList {
    /// Every policy with its status, by key.
    pub policies: Vec<PolicyStatus<'static>>,
    /// The routes configured in `routes.toml`, by name.
    pub routes: std::collections::BTreeMap<String, crate::control::manifest::RouteConfig>,
    /// Route used when a request names none.
    pub default_route: Option<String>,
    /// Error of the last `routes.toml` load, if it failed (previous routes kept).
    pub routes_failure: Option<Failure>,
    /// The registry references (`oci://…`) the manifests name: polled,
    /// pulled, failing (empty without them).
    pub oci: Vec<crate::control::source::oci::OciStatus>,
    /// The delivery state store (absent with `--state off`).
    pub state: Option<crate::api::status::StateStatus>,
    /// The decision log's disk budget: paused or not, files deleted,
    /// records not written (absent without a decision log).
    pub decision_log: Option<crate::decision_log::BudgetStats>,
}

/// `GET /v1/routes`: every route with its arms and rollout state.
#[derive(utoipa::ToSchema)]
#[allow(dead_code, reason = "documentation only: read by utoipa, never built")]
pub struct RouteList {
    /// Configured routes and each policy's own-name route.
    pub routes: Vec<RouteStatus<'static>>,
    /// The rollout revision this replica serves.
    pub revision: u64,
    /// The generation this replica serves (`g<revision>-<12 hex>`).
    pub generation: String,
    /// Route used when a request names none.
    pub default_route: Option<String>,
    /// Error of the last `rollout.json` load, if it failed (previous state kept).
    pub rollout_failure: Option<Failure>,
}

/// `GET /v1/policies/{name}/versions`: the stored versions, oldest first.
#[derive(utoipa::ToSchema)]
#[allow(dead_code, reason = "documentation only: read by utoipa, never built")]
pub struct VersionList {
    /// Stored versions of the policy, oldest first.
    pub versions: Vec<crate::control::versions::VersionRecord>,
}

/// Query of `GET /v1/campaigns`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CampaignQuery {
    /// Campaigns to return, furthest behind schedule first (default 500,
    /// at most 10,000).
    pub limit: Option<usize>,
}

/// `GET /v1/campaigns`: per campaign, its delivery against target as the
/// policy last saw it (from the delivery state or the request) and what
/// the served policy did with its tracks since the server started.
#[utoipa::path(get, path = "/v1/campaigns", operation_id = "list_campaigns", tag = "status",
    summary = "Per campaign: delivery against target, pace, promotions and frequency-cap hits",
    params(CampaignQuery),
    responses((status = 200, description = "Campaigns, furthest behind schedule first", body = crate::serving::campaigns::CampaignList),
        (status = 400, description = "Bad query string (axum's plain-text rejection)", body = String, content_type = "text/plain")))]
pub async fn campaigns(
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<CampaignQuery>,
) -> Response {
    let limit = q.limit.unwrap_or(500).min(10_000);
    Json(state.scorer.campaigns().list(limit)).into_response()
}
