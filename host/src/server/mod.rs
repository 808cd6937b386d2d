//! The scoring server: axum on tokio, one concern per module.
//!
//! | module       | concern                                                   |
//! |--------------|-----------------------------------------------------------|
//! | `manifest`   | per-policy TOML manifests and `routes.toml`               |
//! | `registry`   | the atomically swapped snapshot of policies and routes    |
//! | `reload`     | watching the directory, loading off the request path      |
//! | `score`      | `POST /v1/score`, the hot path                            |
//! | `chain`      | the serving chain: arms tried in order, passthrough last  |
//! | `status`     | policies, health, readiness, metrics endpoints            |
//! | `api_error`  | the one JSON error shape                                  |
//! | `metrics`    | Prometheus metrics                                        |
//!
//! [`Server::run`] takes a bound listener and a shutdown future, so tests run
//! real servers on `127.0.0.1:0` and stop them deterministically.

pub mod admin_auth;
pub mod api_error;
pub mod audit;
pub mod chain;
pub mod manifest;
pub mod metrics;
pub mod persist;
pub mod registry;
pub mod reload;
pub mod score;
pub mod state;
pub mod status;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::runtime::{Runtime, RuntimeConfig};
use metrics::Metrics;
use registry::Registry;
use reload::Reloader;
use state::AppState;

/// Server configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The policy directory (manifests, modules, optional routes.toml).
    pub policies: PathBuf,
    /// Route used when a request names none and routes.toml sets no default.
    pub default_route: Option<String>,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Scoring requests in progress at once (reading bodies included);
    /// more are refused with 503 before their body is read.
    pub max_inflight: usize,
    /// Runtime options (pool size, cache directory).
    pub runtime: RuntimeConfig,
    /// Quiet period before a reload.
    pub debounce: Duration,
    /// Safety-net rescan interval.
    pub rescan: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            policies: PathBuf::from("deploy/policies"),
            default_route: None,
            max_body_bytes: 4 << 20,
            max_inflight: 1024,
            runtime: RuntimeConfig::default(),
            debounce: Duration::from_millis(150),
            rescan: Duration::from_secs(10),
        }
    }
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The runtime could not start.
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    /// The policy directory is unusable.
    #[error("policy directory {path}: {message}")]
    Policies {
        /// The directory.
        path: String,
        /// Why.
        message: String,
    },
    /// Serving failed.
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
}

/// The Oasis scoring server.
pub struct Server {
    config: ServerConfig,
}

/// Builds the router over `state`: the whole HTTP surface in one place.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route(
            "/v1/score",
            post(score::score).route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                score::admit,
            )),
        )
        .route("/v1/policies", get(status::list))
        .route("/v1/policies/{name}", get(status::get))
        .route("/healthz", get(status::healthz))
        .route("/readyz", get(status::readyz))
        .route("/metrics", get(status::metrics))
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

impl Server {
    /// A server with `config`.
    pub fn new(config: ServerConfig) -> Self {
        Server { config }
    }

    /// Loads the initial policy set, then serves on `listener` until
    /// `shutdown` resolves; in-flight requests finish before it returns.
    ///
    /// # Errors
    /// [`ServerError`] if the runtime cannot start, the directory cannot be
    /// read or watched, or the listener fails.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo() -> Result<(), oasis::server::ServerError> {
    /// use oasis::server::{Server, ServerConfig};
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    /// let config = ServerConfig { policies: "deploy/policies".into(), ..Default::default() };
    /// Server::new(config).run(listener, async { let _ = tokio::signal::ctrl_c().await; }).await
    /// # }
    /// ```
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let cfg = self.config;
        if !cfg.policies.is_dir() {
            return Err(ServerError::Policies {
                path: cfg.policies.display().to_string(),
                message: "is not a directory".into(),
            });
        }
        let runtime = Runtime::new(cfg.runtime.clone())?;
        let registry = Arc::new(Registry::default());
        let metrics = Arc::new(Metrics::new());
        let reloader = Reloader {
            dir: cfg.policies.clone(),
            default_route: cfg.default_route.clone(),
            runtime: runtime.clone(),
            registry: registry.clone(),
            metrics: metrics.clone(),
            debounce: cfg.debounce,
            rescan: cfg.rescan,
        };
        let token = CancellationToken::new();
        let state = AppState::new(
            registry.clone(),
            metrics,
            cfg.runtime.max_instances,
            cfg.max_body_bytes,
            cfg.max_inflight,
        );

        let addr = listener.local_addr()?;
        let app = app(state);
        // Shutdown is wired before anything slow happens, so a signal during
        // the initial load is a clean stop too.
        let stop = token.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections, finishing in-flight requests");
            stop.cancel();
        });
        // Health answers while the initial set loads; readiness (and
        // scoring) waits for it.
        let serve_token = token.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(serve_token.cancelled_owned())
                .await
        });
        tracing::info!(%addr, "listening");

        tokio::select! {
            _ = token.cancelled() => {}
            _ = reloader.load_initial() => {
                registry.set_ready();
                let snapshot = registry.snapshot();
                tracing::info!(
                    active = snapshot.policies.values().filter(|e| e.active.is_some()).count(),
                    failed = snapshot.policies.values().filter(|e| e.failure.is_some()).count(),
                    routes = ?snapshot.route_names(),
                    default_route = ?snapshot.default_route,
                    "initial policy set loaded; ready"
                );
            }
        }
        let watcher = tokio::spawn(reloader.watch(token.clone()));

        let served = server
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        token.cancel();
        let _ = watcher.await;
        served?;
        tracing::info!("shut down cleanly");
        Ok(())
    }
}
