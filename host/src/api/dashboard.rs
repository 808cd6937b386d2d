//! The operators' dashboard: one page, served with the admin API, over the
//! same admin and status endpoints `oasis rollout` uses (nothing private:
//! every path the page calls is in `/openapi.json`, which a test checks).
//!
//! The assets are embedded in the binary (no CDN, nothing to deploy beside
//! it) and hold no data, so they are served without a token; the page asks
//! for the admin token and sends it as a bearer token on each call. A
//! `Content-Security-Policy` keeps the page to its own origin.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const APP_CSS: &str = include_str!("dashboard/app.css");

/// What every asset is sent with: its type, no caching across versions,
/// and a policy that allows only this origin.
fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}

/// `GET /dashboard` and its assets.
pub fn router() -> Router {
    Router::new()
        .route(
            "/dashboard",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/dashboard/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/dashboard/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
}

/// The API paths the page calls (with `{…}` for path parameters), read from
/// its script: what the OpenAPI test checks.
pub fn called_paths() -> Vec<String> {
    let mut out = Vec::new();
    for quote in ['"', '`'] {
        for part in APP_JS.split(quote).skip(1).step_by(2) {
            if part.starts_with("/v1/") || part.starts_with("/admin/v1/") {
                // `${…}` template parts are path parameters; a query ends the path.
                let path = part.split('?').next().unwrap_or(part);
                let mut p = String::new();
                let mut rest = path;
                while let Some(i) = rest.find("${") {
                    p.push_str(&rest[..i]);
                    p.push_str("{}");
                    rest = rest[i..].split_once('}').map_or("", |(_, r)| r);
                }
                p.push_str(rest);
                out.push(p);
            }
        }
    }
    out.sort();
    out.dedup();
    out
}
