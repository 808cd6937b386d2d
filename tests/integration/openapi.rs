//! The OpenAPI document (`oasis::api::openapi`, served at
//! `/openapi.json`) against the routers it describes.
//!
//! - Coverage, both ways, with no list of routes kept here: the paths are
//!   read from the routers `app` and `admin::router` build (axum has no
//!   public route listing; its `Debug` output names every path), and each
//!   path's methods from the router itself: a request with a method no route
//!   uses is answered 405 with the path's `Allow` header. That set of
//!   (method, path) must equal the document's operations.
//! - The served document parses and is the built one, OpenAPI 3.1.
//! - Real answers of every endpoint, errors included, have a status the
//!   document lists for the operation and a body that validates against its
//!   schema (a small JSON Schema checker below: `$ref`, `type`, `enum`,
//!   `required`, `properties`, `additionalProperties`, `items`, `oneOf`),
//!   undocumented properties being errors. This keeps the schemas written
//!   for the bodies handlers build with `json!` true to them.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, header};
use oasis::api::auth::AdminTokens;
use oasis::api::{AppState, admin, app, openapi};
use oasis::control::audit::AuditLog;
use oasis::control::manager::RolloutManager;
use oasis::control::registry::Registry;
use oasis::control::reload::{ReloadSettings, Reloader};
use oasis::control::versions::VersionStore;
use oasis::server::AUDIT_FILE;
use oasis::serving::Scorer;
use oasis::telemetry::metrics::Metrics;
use oasis_test_components::{ADVERSARIAL, BASELINE, GUARDED_BOOST};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::harness::server::{attack_body, digest, install, routed};
use crate::harness::{example_body, runtime, small_body};

const TOKEN: &str = "openapi-test-admin-token-0123456789";

/// The two routers over a policy directory filled by `setup` and loaded
/// once, as `Server::run` builds them.
struct Routers {
    _dir: tempfile::TempDir,
    public: Router,
    admin: Router,
}

async fn routers(setup: impl FnOnce(&Path)) -> Routers {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let registry = Arc::new(Registry::default());
    let metrics = Arc::new(Metrics::new());
    let store = VersionStore::new(dir.path(), 10);
    let reloader = Reloader::new(
        dir.path().to_path_buf(),
        runtime().clone(),
        registry.clone(),
        metrics.clone(),
        store.clone(),
        ReloadSettings {
            default_route: None,
            debounce: Duration::from_millis(50),
            rescan: Duration::from_secs(60),
            module_grace: Duration::from_secs(60),
        },
    );
    reloader.load_initial().await;
    registry.set_ready();
    let scorer = Scorer::new(registry, metrics.clone(), 16, 64).with_store(store);
    let state = AppState::new(scorer, 64 << 10);
    let audit = AuditLog::open(dir.path().join(AUDIT_FILE)).unwrap();
    let manager = Arc::new(RolloutManager::new(reloader, audit, metrics));
    let tokens = Arc::new(AdminTokens::from_env_value(TOKEN).unwrap());
    Routers {
        _dir: dir,
        public: app(state),
        admin: admin::router(manager, tokens),
    }
}

/// The document as JSON.
fn doc() -> Value {
    serde_json::to_value(openapi::document()).unwrap()
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Every (METHOD, path) the document describes.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in METHODS {
            if item.get(m).is_some() {
                ops.insert((m.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

/// The paths `router` routes, from its `Debug` output
/// (`Router { path_router: PathRouter { routes: {..}, node: Node { paths:
/// {RouteId(1): "/v1/score", ..} } }, fallback_router: .. }`).
fn router_paths(router: &Router) -> BTreeSet<String> {
    let debug = format!("{router:?}");
    let (routes, _fallbacks) = debug
        .split_once("fallback_router")
        .expect("axum's Router Debug output has changed: update router_paths");
    let mut paths = BTreeSet::new();
    for piece in routes.split("RouteId(").skip(1) {
        let Some((id, rest)) = piece.split_once(')') else {
            continue;
        };
        let Some(rest) = rest.strip_prefix(": \"") else {
            continue;
        };
        assert!(id.chars().all(|c| c.is_ascii_digit()), "{piece}");
        let path = &rest[..rest.find('"').unwrap()];
        if !path.contains("__private__axum") {
            paths.insert(path.to_string());
        }
    }
    paths
}

/// `template` with each `{param}` filled in.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|s| if s.starts_with('{') { "probe" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

/// Every (METHOD, path) `router` serves: its paths, each asked with a method
/// no route uses, which the router refuses with 405 and the path's `Allow`.
/// `HEAD` is left out where it comes with `GET`.
async fn served(router: &Router) -> BTreeSet<(String, String)> {
    let probe = Method::from_bytes(b"OASIS-PROBE").unwrap();
    let mut ops = BTreeSet::new();
    for path in router_paths(router) {
        let r = router
            .clone()
            .oneshot(
                Request::builder()
                    .method(probe.clone())
                    .uri(concrete(&path))
                    .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{path}: an unrouted method");
        let allow = r.headers()[header::ALLOW].to_str().unwrap().to_string();
        let methods: Vec<&str> = allow.split(',').map(str::trim).collect();
        assert!(!methods.is_empty() && !methods[0].is_empty(), "{path}");
        for m in &methods {
            if *m != "HEAD" || !methods.contains(&"GET") {
                ops.insert((m.to_string(), path.clone()));
            }
        }
    }
    ops
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_in_the_document_and_nothing_else() {
    let r = routers(|_| {}).await;
    let public = served(&r.public).await;
    let admin = served(&r.admin).await;
    // The listing itself works (a change of axum's Debug output fails here).
    assert!(
        public.contains(&("POST".into(), "/v1/score".into())),
        "{public:?}"
    );
    assert!(
        public.contains(&("GET".into(), "/openapi.json".into())),
        "{public:?}"
    );
    assert!(admin.len() >= 7, "{admin:?}");
    assert!(public.is_disjoint(&admin));

    let doc = doc();
    let documented = documented(&doc);
    let routed: BTreeSet<_> = public.union(&admin).cloned().collect();
    let missing: Vec<_> = routed.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&routed).collect();
    assert!(
        missing.is_empty(),
        "routes missing from the document: {missing:?}"
    );
    assert!(extra.is_empty(), "documented but not routed: {extra:?}");

    let version = doc["openapi"].as_str().unwrap();
    assert!(version.starts_with("3.1."), "{version}");

    // The admin routes, and only they, require the bearer token.
    let scheme = &doc["components"]["securitySchemes"][openapi::ADMIN_SECURITY];
    assert_eq!(
        (&scheme["type"], &scheme["scheme"]),
        (&json!("http"), &json!("bearer"))
    );
    for (method, path) in &routed {
        let op = &doc["paths"][path][method.to_lowercase()];
        let secured = op["security"] == json!([{ openapi::ADMIN_SECURITY: [] }]);
        let is_admin = admin.contains(&(method.clone(), path.clone()));
        assert_eq!(
            secured, is_admin,
            "{method} {path}: security {}",
            op["security"]
        );
        if is_admin {
            for status in ["401", "403"] {
                assert!(
                    op["responses"][status].is_object(),
                    "{method} {path}: {status}"
                );
            }
        }
        // Every 4xx/5xx JSON answer is the one error shape.
        for (status, resp) in op["responses"].as_object().unwrap() {
            if let Some(schema) = resp["content"].get("application/json")
                && status.starts_with(['4', '5'])
            {
                assert_eq!(
                    schema["schema"]["$ref"], "#/components/schemas/ApiErrorBody",
                    "{method} {path} {status}"
                );
            }
        }
    }
    let error = &doc["components"]["schemas"]["ApiError"];
    let props: BTreeSet<_> = error["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        props,
        ["status", "kind", "message", "field", "known"]
            .map(String::from)
            .into()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_document() {
    let r = routers(|_| {}).await;
    let resp = r
        .public
        .clone()
        .oneshot(Request::get("/openapi.json").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let served: Value = serde_json::from_slice(&body).expect("the document is JSON");
    assert_eq!(served, doc());

    // The scoring operation: a request with `candidates`, an answer with `scores`.
    let score = &served["paths"]["/v1/score"]["post"];
    let req = resolve(
        &served,
        &score["requestBody"]["content"]["application/json"]["schema"],
    );
    assert!(req["properties"]["candidates"].is_object(), "{req}");
    assert!(
        req["required"]
            .as_array()
            .unwrap()
            .contains(&json!("candidates"))
    );
    let resp = resolve(
        &served,
        &score["responses"]["200"]["content"]["application/json"]["schema"],
    );
    assert!(resp["properties"]["scores"].is_object(), "{resp}");
    let upload = &served["paths"]["/admin/v1/policies/{policy}/versions"]["post"];
    assert!(upload["requestBody"]["content"]["application/wasm"].is_object());
}

/// `schema`, following `$ref`s into the document's components.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.strip_prefix("#/components/schemas/").unwrap();
            let target = &doc["components"]["schemas"][name];
            assert!(target.is_object(), "dangling {r}");
            resolve(doc, target)
        }
        None => schema,
    }
}

/// Checks `v` against `schema`, pushing what does not match to `errs`.
fn check(doc: &Value, schema: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
    let s = resolve(doc, schema);
    if let Some(alts) = s.get("oneOf").or_else(|| s.get("anyOf")) {
        let matching = alts
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| {
                let mut e = Vec::new();
                check(doc, a, v, at, &mut e);
                e.is_empty()
            })
            .count();
        if matching == 0 {
            errs.push(format!("{at}: {v} matches none of {alts}"));
        }
        return;
    }
    if let Some(t) = s.get("type") {
        let types: Vec<&str> = match t {
            Value::String(t) => vec![t],
            Value::Array(ts) => ts.iter().map(|t| t.as_str().unwrap()).collect(),
            _ => panic!("{at}: type {t}"),
        };
        let ok = types.iter().any(|t| match *t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            other => panic!("{at}: type {other}"),
        });
        if !ok {
            errs.push(format!("{at}: {v} is not of type {t}"));
            return;
        }
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array)
        && !e.contains(v)
    {
        errs.push(format!("{at}: {v} is not one of {e:?}"));
    }
    match v {
        Value::Object(map) => {
            for req in s
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if !map.contains_key(req.as_str().unwrap()) {
                    errs.push(format!("{at}: required `{req}` missing"));
                }
            }
            let props = s.get("properties").and_then(Value::as_object);
            let extra = s.get("additionalProperties").filter(|a| a.is_object());
            for (k, x) in map {
                let at = format!("{at}.{k}");
                match (props.and_then(|p| p.get(k)), extra) {
                    (Some(p), _) | (None, Some(p)) => check(doc, p, x, &at, errs),
                    // A schema without properties is a free-form object.
                    (None, None) if props.is_some() => errs.push(format!("{at}: undocumented")),
                    (None, None) => {}
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = s.get("items") {
                for (i, x) in items.iter().enumerate() {
                    check(doc, item, x, &format!("{at}[{i}]"), errs);
                }
            }
        }
        _ => {}
    }
}

/// The answer to one call, checked against the document.
struct Answer {
    status: u16,
    json: Value,
}

/// How a test call authenticates.
#[derive(Clone, Copy)]
enum Auth {
    Admin,
    None,
    Bad,
}

/// The document's path template matching `path`.
fn template<'a>(doc: &'a Value, path: &str) -> &'a str {
    let segments: Vec<&str> = path.split('/').collect();
    let found: Vec<&String> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|t| {
            let ts: Vec<&str> = t.split('/').collect();
            ts.len() == segments.len()
                && ts
                    .iter()
                    .zip(&segments)
                    .all(|(t, s)| t.starts_with('{') || t == s)
        })
        .collect();
    assert_eq!(found.len(), 1, "{path}: {found:?}");
    found[0]
}

/// Sends a request to `router` and checks the answer against the document:
/// its status is listed for the operation, its content type is the
/// documented one, and a JSON body validates against the schema.
async fn call(
    router: &Router,
    method: Method,
    uri: &str,
    body: Option<(&str, Vec<u8>)>,
    auth: Auth,
) -> Answer {
    let doc = doc();
    let mut req = Request::builder().method(method.clone()).uri(uri);
    match auth {
        Auth::Admin => req = req.header(header::AUTHORIZATION, format!("Bearer {TOKEN}")),
        Auth::Bad => req = req.header(header::AUTHORIZATION, "Bearer not-an-admin-token-at-all"),
        Auth::None => {}
    }
    let req = match body {
        Some((content_type, b)) => req
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(b)),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();

    let path = uri.split('?').next().unwrap();
    let template = template(&doc, path);
    let what = format!("{method} {uri} -> {status}");
    let op = &doc["paths"][template][method.as_str().to_lowercase()];
    assert!(op.is_object(), "{what}: undocumented operation");
    let documented = &op["responses"][status.to_string()];
    assert!(
        documented.is_object(),
        "{what}: status not in the document ({}): {}",
        String::from_utf8_lossy(&bytes),
        op["responses"]
    );
    let essence = |t: &str| t.split(';').next().unwrap().trim().to_string();
    let content = documented["content"]
        .as_object()
        .unwrap_or_else(|| panic!("{what}: no documented content"))
        .iter()
        .find(|(t, _)| essence(t) == essence(&content_type))
        .unwrap_or_else(|| panic!("{what}: content type {content_type} not documented"))
        .1;
    let json = if essence(&content_type) == "application/json" {
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        let mut errs = Vec::new();
        check(&doc, &content["schema"], &v, "$", &mut errs);
        assert!(errs.is_empty(), "{what}: {errs:#?}\n{v:#}");
        v
    } else {
        let mut errs = Vec::new();
        check(
            &doc,
            &content["schema"],
            &Value::String(String::new()),
            "$",
            &mut errs,
        );
        assert!(errs.is_empty(), "{what}: {errs:?}");
        Value::Null
    };
    Answer { status, json }
}

fn json_body(v: Value) -> Option<(&'static str, Vec<u8>)> {
    Some(("application/json", serde_json::to_vec(&v).unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn answers_match_the_documented_schemas() {
    let r = routers(|d| {
        install(d, "base", BASELINE, "");
        install(d, "guarded", GUARDED_BOOST, "");
        install(
            d,
            "panicky",
            ADVERSARIAL,
            "fallback = \"base\"\n[settings]\nattack = \"panic\"\n",
        );
        std::fs::write(
            d.join("routes.toml"),
            "default = \"radio\"\n[routes.radio]\npolicy = \"base\"\nbaseline = \"guarded\"\n\
             [routes.radio.guardrails]\nwindow = 10\nmin_samples = 5\n",
        )
        .unwrap();
    })
    .await;
    // As `Server::run` serves them on one listener.
    let s = r.public.clone().merge(r.admin.clone());
    let get = |uri: &'static str| call(&s, Method::GET, uri, None, Auth::None);
    let post = |uri: &'static str, body, auth| call(&s, Method::POST, uri, body, auth);
    let score = |body: Vec<u8>| {
        call(
            &s,
            Method::POST,
            "/v1/score",
            Some(("application/json", body)),
            Auth::None,
        )
    };

    for uri in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        assert_eq!(get(uri).await.status, 200, "{uri}");
    }

    // Scoring: stable, debug values, fallback, and each kind of refusal.
    let a = score(small_body(false)).await;
    assert_eq!(
        (a.status, a.json["variant"].as_str()),
        (200, Some("stable"))
    );
    let mut debug: Value = serde_json::from_slice(&routed("guarded", &small_body(false))).unwrap();
    debug["debug"] = true.into();
    assert_eq!(score(serde_json::to_vec(&debug).unwrap()).await.status, 200);
    let a = score(attack_body("panicky")).await;
    assert_eq!(a.json["variant"], "fallback", "{}", a.json);
    assert_eq!(score(b"{not json".to_vec()).await.status, 400);
    assert_eq!(score(routed("nope", &small_body(false))).await.status, 404);
    let bad_market = String::from_utf8(small_body(false))
        .unwrap()
        .replace("\"SE\"", "\"Sweden\"");
    assert_eq!(score(bad_market.into_bytes()).await.status, 422);
    assert_eq!(score(example_body()).await.status, 413);
    let plain = call(
        &s,
        Method::POST,
        "/v1/score",
        Some(("text/plain", small_body(false))),
        Auth::None,
    )
    .await;
    assert_eq!(
        (plain.status, plain.json["error"]["kind"].as_str()),
        (415, Some("unsupported_media_type"))
    );

    // Status endpoints.
    assert_eq!(get("/v1/policies").await.status, 200);
    assert_eq!(get("/v1/policies/base").await.status, 200);
    assert_eq!(get("/v1/policies/panicky").await.status, 200);
    assert_eq!(get("/v1/policies/nope").await.status, 404);
    assert_eq!(
        get("/v1/policies/base/versions").await.json["versions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(get("/v1/policies/nope/versions").await.status, 404);
    assert_eq!(get("/v1/routes").await.status, 200);
    assert_eq!(get("/v1/routes/nope").await.status, 404);

    // The admin API: refusals without a good token…
    assert_eq!(
        post("/admin/v1/routes/radio/promote", None, Auth::None)
            .await
            .status,
        401
    );
    assert_eq!(
        post("/admin/v1/routes/radio/promote", None, Auth::Bad)
            .await
            .status,
        403
    );
    // …uploads…
    let wasm = |path: &str| Some(("application/wasm", std::fs::read(path).unwrap()));
    let a = post(
        "/admin/v1/policies/base/versions",
        wasm(GUARDED_BOOST),
        Auth::Admin,
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.json);
    assert_eq!(a.json["digest"], digest(GUARDED_BOOST));
    let a = post(
        "/admin/v1/policies/nope/versions",
        wasm(GUARDED_BOOST),
        Auth::Admin,
    )
    .await;
    assert_eq!(a.status, 404);
    let a = post(
        "/admin/v1/policies/base/versions",
        Some(("application/wasm", b"\0asm".to_vec())),
        Auth::Admin,
    )
    .await;
    assert_eq!(a.status, 422);
    // …a canary, watched by its guardrail window, beside a shadow…
    let canary = json!({"version": digest(GUARDED_BOOST), "percent": 100});
    let a = post(
        "/admin/v1/routes/radio/canary",
        json_body(canary.clone()),
        Auth::Admin,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.json);
    let shadow = json!({"policy": "panicky", "on": true});
    assert_eq!(
        post(
            "/admin/v1/routes/radio/shadows",
            json_body(shadow),
            Auth::Admin
        )
        .await
        .status,
        200
    );
    for _ in 0..6 {
        assert_eq!(score(small_body(false)).await.json["variant"], "canary");
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // shadows score off the response path
    let a = get("/v1/routes/radio").await;
    assert!(a.json["canary"]["window"].is_object(), "{}", a.json);
    assert_eq!(get("/v1/routes").await.status, 200);
    assert_eq!(
        get("/v1/policies/base/versions").await.json["versions"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // …promoted, rolled back, killed and revived…
    assert_eq!(
        post("/admin/v1/routes/radio/promote", None, Auth::Admin)
            .await
            .status,
        200
    );
    assert_eq!(
        post("/admin/v1/routes/radio/promote", None, Auth::Admin)
            .await
            .status,
        409
    );
    let a = post(
        "/admin/v1/routes/radio/rollback",
        json_body(json!({"reason": "test"})),
        Auth::Admin,
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.json["rollout"]["last_rollback"]["reason"], "test",
        "{}",
        a.json
    );
    assert_eq!(
        post(
            "/admin/v1/routes/radio/kill",
            json_body(json!({"on": true})),
            Auth::Admin
        )
        .await
        .status,
        200
    );
    assert_eq!(score(small_body(false)).await.json["variant"], "killed");
    assert_eq!(
        post(
            "/admin/v1/routes/radio/kill",
            json_body(json!({"on": false})),
            Auth::Admin
        )
        .await
        .status,
        200
    );
    // …and bad changes.
    let canary_to = |uri, body| post(uri, body, Auth::Admin);
    assert_eq!(
        canary_to(
            "/admin/v1/routes/radio/canary",
            Some(("application/json", b"{".to_vec()))
        )
        .await
        .status,
        400
    );
    let a = canary_to(
        "/admin/v1/routes/radio/canary",
        Some(("text/plain", b"{}".to_vec())),
    )
    .await;
    assert_eq!(
        (a.status, a.json["error"]["kind"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    assert_eq!(
        canary_to(
            "/admin/v1/routes/radio/canary",
            json_body(json!({"percent": 5}))
        )
        .await
        .status,
        422
    );
    let a = canary_to(
        "/admin/v1/routes/radio/canary",
        json_body(json!({"version": digest(GUARDED_BOOST), "percent": 500})),
    )
    .await;
    assert_eq!(a.status, 422);
    let a = canary_to(
        "/admin/v1/routes/radio/canary",
        json_body(json!({"version": "sha256:00", "percent": 5})),
    )
    .await;
    assert_eq!(a.status, 422, "not a digest");
    let a = canary_to(
        "/admin/v1/routes/radio/canary",
        json_body(json!({"version": format!("sha256:{}", "0".repeat(64)), "percent": 5})),
    )
    .await;
    assert_eq!(a.status, 404, "a digest that is not stored");
    assert_eq!(
        canary_to("/admin/v1/routes/nope/canary", json_body(canary))
            .await
            .status,
        404
    );
    // The audit log.
    let a = call(
        &s,
        Method::GET,
        "/admin/v1/audit?limit=3",
        None,
        Auth::Admin,
    )
    .await;
    assert_eq!(a.json["entries"].as_array().unwrap().len(), 3, "{}", a.json);
    let a = call(
        &s,
        Method::GET,
        "/admin/v1/audit?limit=many",
        None,
        Auth::Admin,
    )
    .await;
    assert_eq!(a.status, 400);
}

#[test]
fn operation_ids_are_unique_and_path_parameters_named_alike() {
    let doc = doc();
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if !METHODS.contains(&method.as_str()) {
                continue;
            }
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            assert!(ids.insert(id.to_string()), "operationId `{id}` twice");
        }
        // A policy is `{policy}` and a route `{route}` wherever a path names one.
        let segments: Vec<&str> = path.split('/').collect();
        for pair in segments.windows(2) {
            if let [parent, param] = pair
                && param.starts_with('{')
            {
                let want = match *parent {
                    "policies" => "{policy}",
                    "routes" => "{route}",
                    other => panic!("{path}: a parameter under `{other}` has no naming rule"),
                };
                assert_eq!(*param, want, "{path}");
            }
        }
    }
    assert!(ids.len() >= 19, "{ids:?}");
}

#[test]
fn the_error_kinds_are_one_enum_in_the_document() {
    let doc = doc();
    let kinds: BTreeSet<&str> = doc["components"]["schemas"]["ErrorKind"]["enum"]
        .as_array()
        .expect("ErrorKind is an enum schema")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let all: BTreeSet<&str> = oasis::api::error::ErrorKind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(kinds, all);
    assert_eq!(
        doc["components"]["schemas"]["ApiError"]["properties"]["kind"]["$ref"],
        "#/components/schemas/ErrorKind"
    );
}

/// The dashboard reads and changes nothing private: every API path its
/// script calls is in the document.
#[test]
fn the_dashboard_calls_only_documented_paths() {
    let doc = doc();
    let templates: BTreeSet<String> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(|p| {
            // `/v1/routes/{route}` → `/v1/routes/{}`
            let mut out = String::new();
            let mut rest = p.as_str();
            while let Some(i) = rest.find('{') {
                out.push_str(&rest[..i]);
                out.push_str("{}");
                rest = rest[i..].split_once('}').map_or("", |(_, r)| r);
            }
            out + rest
        })
        .collect();
    let called = oasis::api::dashboard::called_paths();
    for must in [
        "/v1/routes",
        "/admin/v1/routes/{}/canary",
        "/admin/v1/audit",
    ] {
        assert!(
            called.iter().any(|c| c == must),
            "{must} not found in {called:?}"
        );
    }
    let private: Vec<&String> = called.iter().filter(|c| !templates.contains(*c)).collect();
    assert!(
        private.is_empty(),
        "the dashboard calls undocumented paths: {private:?}"
    );
}
