//! Read-only endpoints: policies, health, readiness, metrics.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::server::api_error::ApiError;
use crate::server::registry::{Failure, PolicyEntry, Snapshot, unix_ms};
use crate::server::state::AppState;

/// One policy as reported by `/v1/policies`.
#[derive(Debug, Serialize)]
pub struct PolicyStatus<'a> {
    /// Policy key.
    pub key: &'a str,
    /// `active`, `failed` (a failure is current; the last good version, if
    /// any, keeps serving) or `unavailable` (never loaded).
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
#[derive(Debug, Serialize)]
pub struct ActiveStatus<'a> {
    /// Name from the policy's metadata.
    pub name: &'a str,
    /// Semver.
    pub version: &'a str,
    /// `sha256:…` of the component.
    pub digest: &'a str,
    /// Module file it was loaded from.
    pub module: String,
    /// Manifest file.
    pub manifest: String,
    /// Activation time, unix ms.
    pub loaded_at_ms: u64,
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
    /// Features it receives.
    pub features: &'a [String],
    /// Description.
    pub description: &'a str,
}

fn status_of<'a>(snapshot: &'a Snapshot, key: &'a str, e: &'a PolicyEntry) -> PolicyStatus<'a> {
    // The configured routes to this policy, plus its own-name route unless
    // a configured route of that name points elsewhere.
    let mut routes: Vec<&str> = snapshot
        .routes
        .iter()
        .filter(|(_, p)| *p == key)
        .map(|(r, _)| r.as_str())
        .chain((!snapshot.routes.contains_key(key)).then_some(key))
        .collect();
    routes.sort_unstable();
    PolicyStatus {
        key,
        status: match (&e.active, &e.failure) {
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
                module: a.manifest.module.display().to_string(),
                manifest: a.manifest.path.display().to_string(),
                loaded_at_ms: unix_ms::millis(&a.loaded_at),
                fallback: a.manifest.fallback.as_deref(),
                deadline_ms: a.manifest.limits.deadline.as_millis(),
                memory_mb: a.manifest.limits.memory_bytes >> 20,
                max_candidates: a.manifest.limits.max_candidates,
                max_concurrency: a.manifest.concurrency.max,
                features: a.policy.columns(),
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
            .collect(),
    }
}

/// `GET /v1/policies`.
pub async fn list(State(state): State<AppState>) -> Response {
    let snapshot = state.registry.snapshot();
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
    }))
    .into_response()
}

/// `GET /v1/policies/{name}`.
pub async fn get(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    let snapshot = state.registry.snapshot();
    match snapshot.policies.get_key_value(name.as_str()) {
        Some((k, e)) => Json(status_of(&snapshot, k, e)).into_response(),
        None => ApiError::unknown_policy(&name, snapshot.policies.keys().cloned().collect())
            .into_response(),
    }
}

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: ready once the initial policy set is loaded.
pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.registry.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "loading policies\n").into_response()
    }
}

/// `GET /metrics`: Prometheus / OpenMetrics text.
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}
