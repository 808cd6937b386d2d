//! The OpenAPI 3.1 document of the HTTP API, served at `GET /openapi.json`.
//!
//! Nothing here is written as JSON by hand: [utoipa] builds the document from
//! the `#[utoipa::path(...)]` attribute on each handler (`score`, `status`,
//! `admin`) and the `ToSchema` derives of the types those handlers read and
//! write (`ScoreRequest`, `ScoreResponse`, `PolicyStatus`, `RouteStatus`,
//! `RouteRollout`, `VersionRecord`, `AuditEntry`, `ApiError`, …). What this
//! module adds:
//!
//! - [`ApiDoc`], the list of documented handlers;
//! - nothing per endpoint: the schemas of the few bodies handlers build with
//!   `serde_json::json!` live beside their handlers (`status::PolicyList`,
//!   `admin::RolloutChange`, …) and the error envelope beside the error
//!   (`error::ApiErrorBody`), so this module imports the handlers and no
//!   handler imports it;
//! - schemas of names that live in the contract crate (surfaces, reason
//!   codes) or have hand-written serializers (call error kinds), enumerated
//!   from the same tables the code uses;
//! - [`AdminAuth`], which gives every operation tagged `admin` the bearer
//!   security requirement and the 401/403 answers of `require_admin`, the
//!   layer the admin router puts in front of all its routes.
//!
//! `tests/integration/openapi.rs` checks that every route of [`app`] and
//! [`admin::router`] is in the document with its method, and nothing else.
//!
//! [`app`]: crate::api::app
//! [`admin::router`]: crate::api::admin::router

use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use crate::api::{admin, events, outcomes, score, status};
use crate::error::CallErrorKind;
use crate::response::Reasons;

/// Name of the admin API's security scheme in the document.
pub const ADMIN_SECURITY: &str = "admin_token";

/// The document: every handler of the public and admin routers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Oasis",
        description = "Sandboxed WebAssembly promotion-scoring policies: the scoring API, \
                       status and health endpoints, and the admin (rollout) API."
    ),
    paths(
        score::score,
        outcomes::record,
        events::record,
        status::list,
        status::get,
        status::versions,
        status::routes,
        status::route,
        status::campaigns,
        status::healthz,
        status::readyz,
        status::metrics,
        serve,
        admin::upload,
        admin::canary,
        admin::promote,
        admin::unpin,
        admin::rollback,
        admin::kill,
        admin::shadow,
        admin::audit,
        admin::fleet,
    ),
    modifiers(&AdminAuth),
    tags(
        (name = "score", description = "Scoring candidates with a route's policy"),
        (name = "status", description = "Policies, routes, versions, health, metrics"),
        (name = "admin", description = "Rollout changes and uploads; bearer token required"),
    )
)]
pub struct ApiDoc;

/// The document, built once.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOC: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(ApiDoc::openapi);
    &DOC
}

/// `GET /openapi.json`: this API's OpenAPI 3.1 document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "status",
    operation_id = "openapi",
    summary = "This API's OpenAPI 3.1 document",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object))
)]
pub async fn serve() -> Response {
    static JSON: LazyLock<String> = LazyLock::new(|| {
        document()
            .to_json()
            .expect("the OpenAPI document serializes")
    });
    ([(header::CONTENT_TYPE, "application/json")], JSON.as_str()).into_response()
}

/// Adds the bearer scheme, and to each `admin` operation its requirement
/// and the 401/403 answers of the admin router's `require_admin` layer.
pub struct AdminAuth;

impl Modify for AdminAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            ADMIN_SECURITY,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An admin token (`--admin-token-file` or `OASIS_ADMIN_TOKEN`); \
                         `X-Oasis-Actor` may name the person acting, for the audit log",
                    ))
                    .build(),
            ),
        );
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    utoipa::openapi::ContentBuilder::new()
                        .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                            crate::api::error::ApiErrorBody::name(),
                        ))))
                        .build(),
                )
                .build()
        };
        for item in doc.paths.paths.values_mut() {
            for op in operations(item) {
                if !op.tags.iter().flatten().any(|t| t == "admin") {
                    continue;
                }
                op.security = Some(vec![SecurityRequirement::new(
                    ADMIN_SECURITY,
                    Vec::<String>::new(),
                )]);
                op.responses.responses.insert(
                    "401".into(),
                    RefOr::T(error(
                        "No bearer credentials (`unauthorized`); `WWW-Authenticate: Bearer`",
                    )),
                );
                op.responses.responses.insert(
                    "403".into(),
                    RefOr::T(error(
                        "The bearer token is not an admin token (`forbidden`)",
                    )),
                );
            }
        }
    }
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// A schema that is a string enumeration of `names`.
fn names(description: &str, names: impl IntoIterator<Item = &'static str>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .enum_values(Some(names))
        .description(Some(description))
        .into()
}

/// Reason codes: the names of `oasis_contract::reason::REASONS`.
impl PartialSchema for Reasons {
    fn schema() -> RefOr<Schema> {
        ArrayBuilder::new()
            .items(names(
                "A reason code",
                oasis_contract::reason::REASONS.iter().map(|(_, n)| *n),
            ))
            .unique_items(true)
            .description(Some("Reason codes of the decision, in contract order"))
            .into()
    }
}

impl ToSchema for Reasons {}

/// Call error kinds: [`CallErrorKind::ALL`] by their names.
impl PartialSchema for CallErrorKind {
    fn schema() -> RefOr<Schema> {
        names(
            "Category of a policy call's error",
            CallErrorKind::ALL.map(CallErrorKind::as_str),
        )
    }
}

impl ToSchema for CallErrorKind {}
