//! The native baseline server: the serving ceiling. The same front ends as
//! `oasis serve` (HTTP/JSON with axum, gRPC with tonic taking the message's
//! bytes), the host's own decoders as the server runs them (JSON straight
//! into the route's columns, gRPC read in place, each falling back to the
//! general parse and validation),
//! its columnar batch and its response encoding, the same routes as the
//! bundled deployment (`examples/policies/routes.toml`), but the policy
//! called natively, inline, instead of as a component on a fresh instance.
//! What it leaves out: the serving chain (fallbacks, canaries), backpressure,
//! metrics, logs and the decision log — so it is a ceiling, not a rival.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use oasis::PolicyRef;
use oasis::request::proto_view::ProtoMessage;
use oasis::request::{self, RequestError, ValidRequest, Validate};
use oasis_proto::v1;

use crate::native::{Native, POLICIES, manifest_settings};

/// The policies and routes served.
pub struct Routes {
    policies: Vec<(Native, Arc<PolicyRef>)>,
    routes: HashMap<String, usize>,
    default: usize,
}

impl Routes {
    /// The bundled deployment: every example policy (also a route of its own
    /// name) and the routes of `examples/policies/routes.toml`.
    pub fn bundled(root: &Path) -> anyhow::Result<Routes> {
        let mut policies = Vec::new();
        let mut routes = HashMap::new();
        for (i, name) in POLICIES.iter().enumerate() {
            let native = Native::new(name, &manifest_settings(root, name)?)?;
            let r = PolicyRef {
                name: native.name.as_str().into(),
                version: native.version.clone(),
                digest: "native".into(),
                settings_sha256: None,
            };
            routes.insert(name.to_string(), i);
            policies.push((native, Arc::new(r)));
        }
        let text = std::fs::read_to_string(root.join("examples/policies/routes.toml"))?;
        let v: toml::Value = toml::from_str(&text)?;
        if let Some(table) = v.get("routes").and_then(|r| r.as_table()) {
            for (route, spec) in table {
                let policy = spec.get("policy").and_then(|p| p.as_str()).unwrap_or("");
                let Some(i) = POLICIES.iter().position(|p| *p == policy) else {
                    anyhow::bail!("route {route}: unknown policy {policy}");
                };
                routes.insert(route.clone(), i);
            }
        }
        let default_name = v.get("default").and_then(|d| d.as_str()).unwrap_or("radio");
        let default = *routes
            .get(default_name)
            .ok_or_else(|| anyhow::anyhow!("default route {default_name} is not defined"))?;
        Ok(Routes {
            policies,
            routes,
            default,
        })
    }

    fn resolve(&self, route: Option<&str>) -> Result<(&Native, &Arc<PolicyRef>), String> {
        let i = match route {
            None => self.default,
            Some(r) => *self
                .routes
                .get(r)
                .ok_or_else(|| format!("unknown route `{r}`"))?,
        };
        let (n, r) = &self.policies[i];
        Ok((n, r))
    }

    /// Scores a validated request natively on the policy of its route.
    fn call<'a>(
        &self,
        req: ValidRequest<'a>,
    ) -> Result<
        (
            ValidRequest<'a>,
            &Arc<PolicyRef>,
            oasis::bindings::WitDecisions,
        ),
        (StatusCode, String),
    > {
        let (native, r) = self
            .resolve(req.route.as_deref())
            .map_err(|e| (StatusCode::NOT_FOUND, e))?;
        let d = native
            .call(&native.batch(&req))
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e))?;
        Ok((req, r, d))
    }

    /// A JSON body decoded as `oasis serve` decodes it: the route from the
    /// body's hint, then straight into the route's declared columns
    /// (`request::json::decode_or_parse`); a body the hint does not take
    /// goes through the general parse.
    fn decode_json<'a>(&self, body: &'a [u8]) -> Result<ValidRequest<'a>, (StatusCode, String)> {
        let refused = |e: RequestError| {
            let status = match e {
                RequestError::Malformed { .. } => StatusCode::BAD_REQUEST,
                RequestError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            };
            (status, e.to_string())
        };
        let Ok(route) = request::json::route_hint(body) else {
            return request::parse(body)
                .and_then(|r| r.validate(2000))
                .map_err(refused);
        };
        let (native, _) = self
            .resolve(route.as_deref())
            .map_err(|e| (StatusCode::NOT_FOUND, e))?;
        let columns: Vec<&str> = native.columns.iter().map(String::as_str).collect();
        request::json::decode_or_parse(body, &columns, 2000).map_err(refused)
    }
}

async fn score_http(State(routes): State<Arc<Routes>>, body: Bytes) -> Response {
    let started = Instant::now();
    let scored = routes.decode_json(&body).and_then(|req| routes.call(req));
    match scored {
        Ok((req, r, d)) => {
            let served = oasis::serving::served::Served::stable(r.clone(), d);
            let route = req.route.as_deref().unwrap_or_default();
            let server_us = started.elapsed().as_micros() as u64;
            match oasis::serving::encode::json_of(&req, route, &served, server_us) {
                Ok(out) => ([(header::CONTENT_TYPE, "application/json")], out).into_response(),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
            }
        }
        Err((status, e)) => (status, e).into_response(),
    }
}

/// The gRPC service as `oasis serve` runs it: the message's bytes
/// (`oasis::api::grpc_service`), read in place and checked on their
/// columns (`request::packed::validate_message`).
#[derive(Clone)]
struct Grpc(Arc<Routes>);

impl oasis::api::grpc_service::Score for Grpc {
    async fn score(
        &self,
        request: tonic::Request<Bytes>,
    ) -> Result<tonic::Response<v1::ScoreResponse>, tonic::Status> {
        let started = Instant::now();
        let bytes = request.into_inner();
        let msg = ProtoMessage::new(&bytes);
        let req = request::packed::validate_message(&msg, 2000)
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        let (req, r, d) = self.0.call(req).map_err(|(s, e)| match s {
            StatusCode::NOT_FOUND => tonic::Status::not_found(e),
            _ => tonic::Status::internal(e),
        })?;
        let mut resp = crate::inproc::grpc_response(&req, r, d);
        resp.timing = Some(v1::Timing {
            server_us: started.elapsed().as_micros() as u64,
            policy_us: 0,
        });
        Ok(tonic::Response::new(resp))
    }
}

/// Serves HTTP on `http` and gRPC on `grpc` until killed.
pub async fn serve(root: &Path, http: SocketAddr, grpc: SocketAddr) -> anyhow::Result<()> {
    let routes = Arc::new(Routes::bundled(root)?);
    let app = Router::new()
        .route("/v1/score", post(score_http))
        .route("/readyz", get(|| async { "ready" }))
        .with_state(routes.clone());
    let listener = tokio::net::TcpListener::bind(http).await?;
    let grpc_listener = tokio::net::TcpListener::bind(grpc).await?;
    eprintln!("native baseline server: HTTP {http}, gRPC {grpc}");
    let http_task = tokio::spawn(async move {
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app)
            .await
            .map_err(anyhow::Error::from)
    });
    use tokio_stream::StreamExt;
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc_listener).map(|s| {
        let s = s?;
        s.set_nodelay(true)?;
        Ok::<_, std::io::Error>(s)
    });
    let svc = oasis::api::grpc_service::ScoringServer::new(Grpc(routes))
        .max_decoding_message_size(64 << 20);
    let grpc_task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(incoming)
            .await
            .map_err(anyhow::Error::from)
    });
    tokio::select! {
        r = http_task => r??,
        r = grpc_task => r??,
    }
    Ok(())
}
