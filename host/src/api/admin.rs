//! The admin API: rollout changes, version uploads and the audit log, behind
//! a bearer token.
//!
//! | method | path | what |
//! |---|---|---|
//! | POST | `/admin/v1/policies/{key}/versions` | upload a module (`application/wasm`) as a version of `key` |
//! | POST | `/admin/v1/routes/{route}/canary` | `{"version", "percent"}`: start a canary or change its share |
//! | POST | `/admin/v1/routes/{route}/promote` | the canary becomes stable |
//! | POST | `/admin/v1/routes/{route}/unpin` | drop the pinned stable version: serve the directory's |
//! | POST | `/admin/v1/routes/{route}/rollback` | `{"reason"?}`: stop the canary, else the previous stable |
//! | POST | `/admin/v1/routes/{route}/kill` | `{"on": bool}`: serve the baseline, or stop doing so |
//! | POST | `/admin/v1/routes/{route}/shadows` | `{"policy": "key[@digest]", "on": bool}` |
//! | GET | `/admin/v1/audit?limit=N` | the last N audit entries, oldest first |
//! | GET | `/admin/v1/fleet` | every replica's generation, revision, age and refusals (from the control store) |
//!
//! A change made with `If-Match: "<revision>"` is made only if the rollout
//! is still at that revision, else refused with 409 `conflict` naming the
//! current one; every change answers with the new `revision` (and `ETag`).
//! With a Redis control store that cannot be reached, changes are refused
//! with 503 `control_store_unavailable` (serving goes on).
//!
//! Reads (`/v1/routes`, `/v1/policies/{key}/versions`) are on the public
//! API. Every change answers with the route's rollout state after it, and is
//! effective from the next request on this replica.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;

use crate::api::auth::{Actor, AdminTokens, require_admin};
use crate::api::error::{ApiError, ErrorKind};
use crate::control::manager::{Change, RolloutManager};

/// The admin routes, each requiring a valid token.
pub fn router(manager: Arc<RolloutManager>, tokens: Arc<AdminTokens>) -> Router {
    let max_upload_bytes = manager.max_upload_bytes;
    Router::new()
        .route(
            "/admin/v1/policies/{policy}/versions",
            post(upload).layer(DefaultBodyLimit::max(max_upload_bytes)),
        )
        .route("/admin/v1/routes/{route}/canary", post(canary))
        .route("/admin/v1/routes/{route}/promote", post(promote))
        .route("/admin/v1/routes/{route}/unpin", post(unpin))
        .route("/admin/v1/routes/{route}/rollback", post(rollback))
        .route("/admin/v1/routes/{route}/kill", post(kill))
        .route("/admin/v1/routes/{route}/shadows", post(shadow))
        .route("/admin/v1/audit", get(audit))
        .route("/admin/v1/fleet", get(fleet))
        .layer(axum::middleware::from_fn_with_state(tokens, require_admin))
        .with_state(manager)
}

#[utoipa::path(post, path = "/admin/v1/policies/{policy}/versions", operation_id = "upload_version", tag = "admin",
    summary = "Upload a module as a version of a policy (with the policy's manifest settings and limits)",
    params(("policy" = String, Path, description = "Policy key")),
    request_body(content = crate::api::admin::WasmModule, content_type = "application/wasm"),
    responses(
        (status = 201, description = "The stored version (also when it was already stored)", body = crate::control::versions::VersionRecord),
        (status = 400, description = "The body could not be read (`bad_body`)", body = crate::api::error::ApiErrorBody),
        (status = 404, description = "No loaded policy of that key (`unknown_policy`); `known` lists the keys", body = crate::api::error::ApiErrorBody),
        (status = 413, description = "Module over the upload limit (`too_large`)", body = crate::api::error::ApiErrorBody),
        (status = 422, description = "The module does not load (`invalid_module`)", body = crate::api::error::ApiErrorBody),
        (status = 500, description = "The version could not be stored (`internal`)", body = crate::api::error::ApiErrorBody),
    ))]
async fn upload(
    State(m): State<Arc<RolloutManager>>,
    Extension(actor): Extension<Actor>,
    Path(key): Path<String>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => return ApiError::body(e, m.max_upload_bytes).into_response(),
    };
    match m.upload(&key, body.to_vec(), &actor.name).await {
        Ok(record) => (StatusCode::CREATED, Json(record)).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Body of a canary change.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CanaryBody {
    /// The version (`sha256:…`).
    pub version: String,
    /// Share of listeners, (0, 100].
    pub percent: f64,
}

#[utoipa::path(post, path = "/admin/v1/routes/{route}/canary", operation_id = "set_canary", tag = "admin", summary = "Start a canary of a stored version, or change its share",
    params(("route" = String, Path, description = "Route name (a route of `routes.toml` or a policy key)")),
    request_body(content = CanaryBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The route's rollout state after the change", body = crate::api::admin::RolloutChange),
        (status = 400, description = "Malformed JSON body (`malformed_request`)", body = crate::api::error::ApiErrorBody),
        (status = 415, description = "Body without `Content-Type: application/json` (`unsupported_media_type`)", body = crate::api::error::ApiErrorBody),
        (status = 404, description = "No such route (`unknown_route`) or version not stored (`unknown_version`)", body = crate::api::error::ApiErrorBody),
        (status = 409, description = "The change does not apply now, e.g. no canary to promote (`refused`)", body = crate::api::error::ApiErrorBody),
        (status = 422, description = "A value out of range (`refused`), a `version` that is not a digest (`invalid_request`, field `version`), or a body of the wrong shape (`malformed_request`)", body = crate::api::error::ApiErrorBody),
        (status = 500, description = "The rollout state could not be read or written (`internal`)", body = crate::api::error::ApiErrorBody),
    ))]
async fn canary(
    State(m): State<Arc<RolloutManager>>,
    Extension(actor): Extension<Actor>,
    headers: HeaderMap,
    Path(route): Path<String>,
    Body(b): Body<CanaryBody>,
) -> Response {
    apply(
        &m,
        &route,
        Change::Canary {
            version: b.version,
            percent: b.percent,
        },
        &actor,
        &headers,
    )
    .await
}

#[utoipa::path(post, path = "/admin/v1/routes/{route}/promote", operation_id = "promote_canary", tag = "admin", summary = "Make the canary the stable version",
    params(("route" = String, Path, description = "Route name (a route of `routes.toml` or a policy key)")),
    responses(
        (status = 200, description = "The route's rollout state after the change", body = crate::api::admin::RolloutChange),
        (status = 404, description = "No such route (`unknown_route`)", body = crate::api::error::ApiErrorBody),
        (status = 409, description = "The change does not apply now, e.g. no canary to promote (`refused`)", body = crate::api::error::ApiErrorBody),
        (status = 500, description = "The rollout state could not be read or written (`internal`)", body = crate::api::error::ApiErrorBody),
    ))]
async fn promote(
    State(m): State<Arc<RolloutManager>>,
    Extension(actor): Extension<Actor>,
    headers: HeaderMap,
    Path(route): Path<String>,
) -> Response {
    apply(&m, &route, Change::Promote, &actor, &headers).await
}

#[utoipa::path(post, path = "/admin/v1/routes/{route}/unpin", operation_id = "unpin_stable", tag = "admin", summary = "Drop the pinned stable version: the route serves the directory's version again",
    params(("route" = String, Path, description = "Route name (a route of `routes.toml` or a policy key)")),
    responses(
        (status = 200, description = "The route's rollout state after the change", body = crate::api::admin::RolloutChange),
        (status = 404, description = "No such route (`unknown_route`)", body = crate::api::error::ApiErrorBody),
        (status = 409, description = "The route pins no version (`refused`)", body = crate::api::error::ApiErrorBody),
        (status = 500, description = "The rollout state or its audit entry could not be written; nothing changed (`internal`)", body = crate::api::error::ApiErrorBody),
    ))]
async fn unpin(
    State(m): State<Arc<RolloutManager>>,
    Extension(actor): Extension<Actor>,
    headers: HeaderMap,
    Path(route): Path<String>,
) -> Response {
    apply(&m, &route, Change::Unpin, &actor, &headers).await
}

/// Body of a rollback.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    /// Why, for the audit log.
    #[serde(default)]
    pub reason: Option<String>,
}

#[utoipa::path(post, path = "/admin/v1/routes/{route}/rollback", operation_id = "rollback", tag = "admin", summary = "Stop the canary, else return to the previous stable version",
    params(("route" = String, Path, description = "Route name (a route of `routes.toml` or a policy key)")),
    request_body(content = Option<RollbackBody>, content_type = "application/json"),
    responses(
        (status = 200, description = "The route's rollout state after the change", body = crate::api::admin::RolloutChange),
        (status = 404, description = "No such route (`unknown_route`)", body = crate::api::error::ApiErrorBody),
        (status = 409, description = "The change does not apply now, e.g. no canary to promote (`refused`)", body = crate::api::error::ApiErrorBody),
        (status = 415, description = "A body labelled other than `Content-Type: application/json` (`unsupported_media_type`)", body = crate::api::error::ApiErrorBody),
        (status = 422, description = "A `reason` over 4096 bytes (`invalid_request`, field `reason`)", body = crate::api::error::ApiErrorBody),
        (status = 500, description = "The rollout state or its audit entry could not be written; nothing changed (`internal`)", body = crate::api::error::ApiErrorBody),
    ))]
async fn rollback(
    State(m): State<Arc<RolloutManager>>,
    Extension(actor): Extension<Actor>,
    headers: HeaderMap,
    Path(route): Path<String>,
    body: Result<Option<Json<ObjectOnly<RollbackBody>>>, JsonRejection>,
) -> Response {
    let reason = match body {
        Ok(b) => b.and_then(|Json(ObjectOnly(b))| b.reason),
        Err(e) => return ApiError::from(e).into_response(),
    };
    apply(&m, &route, Change::Rollback { reason }, &actor, &headers).await
}

/// Body of a kill switch change.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KillBody {
    /// On (serve the baseline) or off.
    pub on: bool,
    /// Why, for the audit log (at most 4096 bytes).
    #[serde(default)]
    pub reason: Option<String>,
}

#[utoipa::path(post, path = "/admin/v1/routes/{route}/kill", operation_id = "set_kill_switch", tag = "admin", summary = "Turn the kill switch on (serve the baseline) or off",
    params(("route" = String, Path, description = "Route name (a route of `routes.toml` or a policy key)")),
    request_body(content = KillBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The route's rollout state after the change", body = crate::api::admin::RolloutChange),
        (status = 400, description = "Malformed JSON body (`malformed_request`)", body = crate::api::error::ApiErrorBody),
        (status = 415, description = "Body without `Content-Type: application/json` (`unsupported_media_type`)", body = crate::api::error::ApiErrorBody),
        (status = 404, description = "No such route (`unknown_route`)", body = crate::api::error::ApiErrorBody),
        (status = 409, description = "The change does not apply now, e.g. no canary to promote (`refused`)", body = crate::api::error::ApiErrorBody),
        (status = 422, description = "A value out of range (`refused`, `invalid_shadow`), or a body of the wrong shape (`malformed_request`)", body = crate::api::error::ApiErrorBody),
        (status = 500, description = "The rollout state could not be read or written (`internal`)", body = crate::api::error::ApiErrorBody),
    ))]
async fn kill(
    State(m): State<Arc<RolloutManager>>,
    Extension(actor): Extension<Actor>,
    headers: HeaderMap,
    Path(route): Path<String>,
    Body(b): Body<KillBody>,
) -> Response {
    apply(
        &m,
        &route,
        Change::Kill {
            on: b.on,
            reason: b.reason,
        },
        &actor,
        &headers,
    )
    .await
}

/// Body of a shadow change.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShadowBody {
    /// `key` or `key@sha256:…`.
    pub policy: String,
    /// Add or remove.
    pub on: bool,
}

#[utoipa::path(post, path = "/admin/v1/routes/{route}/shadows", operation_id = "set_shadow", tag = "admin", summary = "Add or remove a shadow policy (scored beside the served one, never served)",
    params(("route" = String, Path, description = "Route name (a route of `routes.toml` or a policy key)")),
    request_body(content = ShadowBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The route's rollout state after the change", body = crate::api::admin::RolloutChange),
        (status = 400, description = "Malformed JSON body (`malformed_request`)", body = crate::api::error::ApiErrorBody),
        (status = 415, description = "Body without `Content-Type: application/json` (`unsupported_media_type`)", body = crate::api::error::ApiErrorBody),
        (status = 404, description = "No such route (`unknown_route`) or policy / version not loaded or stored (`unknown_version`)", body = crate::api::error::ApiErrorBody),
        (status = 409, description = "The change does not apply now, e.g. no canary to promote (`refused`)", body = crate::api::error::ApiErrorBody),
        (status = 422, description = "A value out of range (`refused`, `invalid_shadow`), or a body of the wrong shape (`malformed_request`)", body = crate::api::error::ApiErrorBody),
        (status = 500, description = "The rollout state could not be read or written (`internal`)", body = crate::api::error::ApiErrorBody),
    ))]
async fn shadow(
    State(m): State<Arc<RolloutManager>>,
    Extension(actor): Extension<Actor>,
    headers: HeaderMap,
    Path(route): Path<String>,
    Body(b): Body<ShadowBody>,
) -> Response {
    apply(
        &m,
        &route,
        Change::Shadow {
            policy: b.policy,
            on: b.on,
        },
        &actor,
        &headers,
    )
    .await
}

async fn apply(
    m: &Arc<RolloutManager>,
    route: &str,
    change: Change,
    actor: &Actor,
    headers: &HeaderMap,
) -> Response {
    let expected = match if_match(headers) {
        Ok(e) => e,
        Err(e) => return e.into_response(),
    };
    match m.change_if(route, change, &actor.name, expected).await {
        Ok(c) => {
            let mut r = Json(serde_json::json!({
                "route": route,
                "rollout": c.rollout,
                "revision": c.revision,
            }))
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", c.revision)) {
                r.headers_mut().insert(header::ETAG, v);
            }
            r
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// The revision an `If-Match` header expects: `"12"`, `W/"12"` or `12`.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = v.to_str().unwrap_or_default().trim();
    let bare = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    bare.parse().map(Some).map_err(|_| {
        ApiError::new(
            ErrorKind::InvalidRequest,
            format!(
                "If-Match: {:?} is not a rollout revision; send the number a change or GET /v1/routes answered, e.g. If-Match: \"12\"",
                crate::sandbox::visible(text)
            ),
        )
        .with_field("If-Match")
    })
}

#[utoipa::path(get, path = "/admin/v1/fleet", operation_id = "fleet_status", tag = "admin", summary = "Every replica's generation, revision, age and refusals (from the control store's heartbeats)",
    responses(
        (status = 200, description = "The fleet", body = crate::api::admin::FleetStatus),
        (status = 503, description = "The control store cannot be reached (`control_store_unavailable`)", body = crate::api::error::ApiErrorBody),
    ))]
async fn fleet(State(m): State<Arc<RolloutManager>>) -> Response {
    let store = m.store();
    let unavailable = |e: crate::control::store::StoreError| {
        ApiError::new(ErrorKind::ControlStoreUnavailable, e.to_string())
            .retry_after(1)
            .into_response()
    };
    let revision = match store.load().await {
        Ok(v) => v.revision,
        Err(e) => return unavailable(e),
    };
    let replicas = match store.list_status().await {
        Ok(r) => r,
        Err(e) => return unavailable(e),
    };
    let now = crate::control::audit::now_ms();
    let replicas: Vec<_> = replicas
        .into_iter()
        .map(|r| {
            let age_ms = now.saturating_sub(r.at_ms);
            let mut v = serde_json::to_value(&r).unwrap_or_default();
            v["age_ms"] = age_ms.into();
            v
        })
        .collect();
    Json(serde_json::json!({
        "store": store.kind(),
        "revision": revision,
        "replicas": replicas,
    }))
    .into_response()
}

/// `GET /admin/v1/fleet`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code, reason = "documentation only: read by utoipa, never built")]
pub struct FleetStatus {
    /// `dir` or `redis`.
    pub store: String,
    /// The committed rollout revision.
    pub revision: u64,
    /// Each replica's last heartbeat (with `age_ms`: how old it is).
    pub replicas: Vec<crate::control::store::ReplicaStatus>,
}

/// Query of the audit endpoint.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Entries to return (default 100, at most 10,000).
    pub limit: Option<usize>,
}

#[utoipa::path(get, path = "/admin/v1/audit", operation_id = "read_audit", tag = "admin", summary = "The most recent audit entries, oldest first",
    params(AuditQuery),
    responses(
        (status = 200, description = "Audit entries", body = crate::api::admin::AuditPage),
        (status = 400, description = "Bad query string (axum's plain-text rejection)", body = String, content_type = "text/plain"),
        (status = 500, description = "The audit log could not be read (`internal`)", body = crate::api::error::ApiErrorBody),
        (status = 503, description = "The control store (Redis) that keeps the fleet's audit cannot be reached (`control_store_unavailable`)", body = crate::api::error::ApiErrorBody),
    ))]
async fn audit(State(m): State<Arc<RolloutManager>>, Query(q): Query<AuditQuery>) -> Response {
    let limit = q.limit.unwrap_or(100).min(10_000);
    // A shared store (Redis) keeps the fleet's audit: every replica's
    // changes, whichever replica is asked.
    match m.store().recent_audit(limit).await {
        Ok(Some(recent)) => {
            return Json(serde_json::json!({
                "entries": recent.entries,
                "skipped_lines": recent.skipped,
            }))
            .into_response();
        }
        Ok(None) => {}
        Err(e) => {
            return ApiError::new(ErrorKind::ControlStoreUnavailable, e.to_string())
                .retry_after(1)
                .into_response();
        }
    }
    let m2 = m.clone();
    match tokio::task::spawn_blocking(move || m2.audit().read_recent(limit)).await {
        Ok(Ok(recent)) => Json(serde_json::json!({
            "entries": recent.entries,
            "skipped_lines": recent.skipped,
        }))
        .into_response(),
        Ok(Err(e)) => ApiError::new(ErrorKind::Internal, e.to_string()).into_response(),
        Err(e) => ApiError::new(ErrorKind::Internal, e.to_string()).into_response(),
    }
}

/// A JSON body whose rejection is the API's one error shape. Only a JSON
/// object is accepted: serde would also read a struct from an array of its
/// fields in order (`[true]` as `{"on": true}`), which no admin body means.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        match Json::<ObjectOnly<T>>::from_request(req, state).await {
            Ok(Json(ObjectOnly(t))) => Ok(Body(t)),
            Err(e) => Err(e.into()),
        }
    }
}

/// `T` read from a JSON object only; any other JSON value is refused with
/// "invalid type: …, expected a JSON object".
pub struct ObjectOnly<T>(pub T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Visitor<T> {
            type Value = ObjectOnly<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(ObjectOnly)
            }
        }
        d.deserialize_map(Visitor(std::marker::PhantomData))
    }
}

/// The answer to every rollout change: the route's state after it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code, reason = "documentation only: read by utoipa, never built")]
pub struct RolloutChange {
    /// The route changed.
    pub route: String,
    /// Its rollout state after the change (effective from the next request).
    pub rollout: crate::control::rollout::RouteRollout,
    /// The revision the change committed (also the `ETag`).
    pub revision: u64,
}

/// `GET /admin/v1/audit`: the most recent audit entries.
#[derive(utoipa::ToSchema)]
#[allow(dead_code, reason = "documentation only: read by utoipa, never built")]
pub struct AuditPage {
    /// The entries, oldest first (newest last).
    pub entries: Vec<crate::control::audit::AuditEntry>,
    /// Lines skipped while reading them (torn, invalid or oversized).
    pub skipped_lines: usize,
}

/// An uploaded WebAssembly component (the raw bytes of the `.wasm` file).
#[allow(dead_code, reason = "documentation only: read by utoipa, never built")]
pub struct WasmModule;

impl utoipa::PartialSchema for WasmModule {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .content_media_type("application/wasm")
            .description(Some("A WebAssembly component built against `oasis:policy`"))
            .into()
    }
}

impl utoipa::ToSchema for WasmModule {}
