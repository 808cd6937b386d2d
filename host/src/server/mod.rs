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
//! | `openapi`    | the OpenAPI 3.1 document (`/openapi.json`)                |
//! | `rollout`    | rollout state (`rollout.json`): pins, canary, shadows, kill |
//! | `versions`   | the version store (every loaded version, by digest)       |
//! | `manager`    | the one writer of rollout state, audited                  |
//! | `admin`      | the admin API (token required)                            |
//! | `admin_auth` | bearer tokens, constant-time                              |
//! | `audit`      | the append-only audit log                                 |
//! | `persist`    | atomic files and the directory lock                       |
//! | `guardrail`  | a canary's sliding window and its limits                  |
//! | `shadow`     | shadow scoring off the response path                      |
//! | `route_stats`| per-route state that outlives snapshots                   |
//! | `logging`    | which decisions are logged, handed to the decision log    |
//! | `listener`   | the accept loop: connection limit, read and idle timeouts |
//! | `grpc`       | the gRPC API (scoring, health, reflection)                |
//!
//! [`Server::run`] takes a bound listener and a shutdown future, so tests run
//! real servers on `127.0.0.1:0` and stop them deterministically.

pub mod admin;
pub mod admin_auth;
pub mod api_error;
pub mod audit;
pub mod chain;
pub mod events;
pub mod grpc;
pub mod guardrail;
pub mod listener;
pub mod logging;
pub mod manager;
pub mod manifest;
pub mod metrics;
pub mod openapi;
pub mod outcomes;
pub mod persist;
pub mod promotion;
pub mod registry;
pub mod reload;
pub mod rollout;
pub mod route_stats;
pub mod score;
pub mod shadow;
pub mod state;
pub mod status;
pub mod versions;

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
use admin_auth::AdminTokens;
use audit::AuditLog;
use manager::RolloutManager;
use metrics::Metrics;
use registry::Registry;
use reload::Reloader;
use state::AppState;
use versions::VersionStore;

/// Server configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The policy directory (manifests, modules, optional routes.toml).
    pub policies: PathBuf,
    /// Route used when a request names none and routes.toml sets no default.
    pub default_route: Option<String>,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Scoring requests in progress at once, counted once their body is
    /// read; more are refused with 503.
    pub max_inflight: usize,
    /// Connection limit and read timeouts of the listeners (main and admin).
    pub connections: listener::ConnectionLimits,
    /// Runtime options (pool size, cache directory).
    pub runtime: RuntimeConfig,
    /// Quiet period before a reload.
    pub debounce: Duration,
    /// Safety-net rescan interval.
    pub rescan: Duration,
    /// Versions kept per policy in the version store.
    pub keep_versions: usize,
    /// The admin API: off (no route answers) without tokens.
    pub admin: Option<AdminConfig>,
    /// Decision logging: off when `None`.
    pub decision_log: Option<DecisionLogSettings>,
    /// When a version that promotes nothing is flagged.
    pub promotion_stall: promotion::PromotionStall,
    /// How long a manifest may wait for its module before the wait counts
    /// as a failed load.
    pub module_grace: Duration,
    /// Where delivery state is kept (embedded by default).
    pub state: crate::delivery::StateConfig,
}

/// Decision logging of a server.
#[derive(Debug, Clone)]
pub struct DecisionLogSettings {
    /// Where and how records are written.
    pub config: crate::decision_log::DecisionLogConfig,
    /// Share of requests logged on routes that set none, in [0, 1].
    pub sample: f64,
}

/// The admin API's configuration.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Who may call it.
    pub tokens: Arc<AdminTokens>,
    /// Largest uploaded module.
    pub max_upload_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            policies: PathBuf::from("deploy/policies"),
            default_route: None,
            max_body_bytes: 4 << 20,
            max_inflight: 1024,
            connections: listener::ConnectionLimits::default(),
            runtime: RuntimeConfig::default(),
            debounce: Duration::from_millis(150),
            rescan: Duration::from_secs(10),
            keep_versions: versions::DEFAULT_KEEP,
            admin: None,
            decision_log: None,
            promotion_stall: promotion::PromotionStall::default(),
            module_grace: Duration::from_secs(60),
            state: crate::delivery::StateConfig::default(),
        }
    }
}

/// File name of the audit log inside the policy directory (hidden, so the
/// watcher's manifest scan ignores it).
pub const AUDIT_FILE: &str = ".oasis-audit.jsonl";

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
    admin_listener: Option<TcpListener>,
    grpc_listener: Option<TcpListener>,
}

/// Builds the router over `state`: the whole HTTP surface in one place.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/v1/score", post(score::score))
        .route("/v1/outcomes", post(outcomes::record))
        .route("/v1/events", post(events::record))
        .route("/v1/policies", get(status::list))
        .route("/v1/policies/{name}", get(status::get))
        .route("/v1/policies/{name}/versions", get(status::versions))
        .route("/v1/routes", get(status::routes))
        .route("/v1/routes/{route}", get(status::route))
        .route("/healthz", get(status::healthz))
        .route("/readyz", get(status::readyz))
        .route("/metrics", get(status::metrics))
        .route("/openapi.json", get(openapi::serve))
        .fallback(api_error::not_found)
        .method_not_allowed_fallback(api_error::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

impl Server {
    /// A server with `config`.
    pub fn new(config: ServerConfig) -> Self {
        Server {
            config,
            admin_listener: None,
            grpc_listener: None,
        }
    }

    /// Also serves the gRPC API (scoring, health, reflection) on `listener`.
    pub fn with_grpc_listener(mut self, listener: TcpListener) -> Self {
        self.grpc_listener = Some(listener);
        self
    }

    /// Serves the admin API on `listener` instead of the main one (for
    /// example on a private interface). Without admin tokens it stays off.
    pub fn with_admin_listener(mut self, listener: TcpListener) -> Self {
        self.admin_listener = Some(listener);
        self
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
        let metrics = Arc::new(Metrics::new().with_promotion_stall(cfg.promotion_stall));
        let store = VersionStore::new(&cfg.policies, cfg.keep_versions);
        let reloader = Reloader {
            dir: cfg.policies.clone(),
            default_route: cfg.default_route.clone(),
            runtime: runtime.clone(),
            registry: registry.clone(),
            metrics: metrics.clone(),
            debounce: cfg.debounce,
            rescan: cfg.rescan,
            store: store.clone(),
            module_grace: cfg.module_grace,
        };
        let token = CancellationToken::new();
        let state = AppState::new(
            registry.clone(),
            metrics.clone(),
            cfg.runtime.max_instances,
            cfg.max_body_bytes,
            cfg.max_inflight,
        )
        .with_store(store);
        let delivery = crate::delivery::Delivery::open(&cfg.state, &cfg.policies).map_err(|e| {
            ServerError::Policies {
                path: cfg.policies.display().to_string(),
                message: e.to_string(),
            }
        })?;
        if let Some(d) = &delivery {
            tracing::info!(store = d.health().kind, "delivery state on");
        } else {
            tracing::info!("delivery state off: requests carry all of it");
        }
        let state = AppState { delivery, ..state };
        let (state, log_writer) = match &cfg.decision_log {
            None => (state, None),
            Some(d) => {
                let (log, writer) = crate::decision_log::DecisionLog::start(d.config.clone())
                    .map_err(|e| ServerError::Policies {
                        path: d
                            .config
                            .dir
                            .as_ref()
                            .map_or("stdout".into(), |p| p.display().to_string()),
                        message: format!("decision log: {e}"),
                    })?;
                tracing::info!(
                    sink = %d.config.dir.as_ref().map_or("stdout".into(), |p| p.display().to_string()),
                    sample = d.sample,
                    "decision log on"
                );
                let logging = logging::DecisionLogging {
                    log,
                    sample: d.sample,
                };
                (state.with_decision_log(logging), Some(writer))
            }
        };
        let audit =
            AuditLog::open(cfg.policies.join(AUDIT_FILE)).map_err(|e| ServerError::Policies {
                path: cfg.policies.display().to_string(),
                message: e.to_string(),
            })?;
        let manager = Arc::new(
            RolloutManager::new(reloader.clone(), audit, metrics).with_max_upload_bytes(
                cfg.admin
                    .as_ref()
                    .map_or(admin::DEFAULT_MAX_UPLOAD_BYTES, |a| a.max_upload_bytes),
            ),
        );
        if let Some(rx) = state.rollbacks.take_receiver() {
            tokio::spawn(manager.clone().run_rollbacks(rx));
        }

        let addr = listener.local_addr()?;
        let grpc = match self.grpc_listener {
            None => None,
            Some(l) => {
                let grpc_addr = l.local_addr()?;
                tracing::info!(%grpc_addr, "gRPC API listening");
                Some(tokio::spawn(grpc::serve(l, state.clone(), token.clone())))
            }
        };
        let mut app = app(state);
        match (&cfg.admin, self.admin_listener) {
            (None, _) => tracing::warn!(
                "admin API disabled: no admin token configured (--admin-token-file or OASIS_ADMIN_TOKEN)"
            ),
            (Some(a), None) => {
                app = app.merge(admin::router(manager.clone(), a.tokens.clone()));
                tracing::info!(%addr, tokens = a.tokens.len(), "admin API on the main listener");
            }
            (Some(a), Some(admin_listener)) => {
                let admin_addr = admin_listener.local_addr()?;
                let router = admin::router(manager.clone(), a.tokens.clone())
                    .layer(TraceLayer::new_for_http());
                let (stop, limits) = (token.clone(), cfg.connections);
                tokio::spawn(listener::serve(admin_listener, router, limits, stop));
                tracing::info!(%admin_addr, tokens = a.tokens.len(), "admin API on its own listener");
            }
        }
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
        let server = tokio::spawn(listener::serve(
            listener,
            app,
            cfg.connections,
            token.clone(),
        ));
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
        if let Some(Ok(Err(e))) = match grpc {
            Some(g) => Some(g.await),
            None => None,
        } {
            tracing::error!(error = %e, "gRPC server failed");
        }
        served?;
        if let Some(writer) = log_writer {
            let stats = writer.shutdown();
            tracing::info!(
                written = stats.written,
                dropped = stats.dropped,
                "decision log flushed"
            );
        }
        tracing::info!("shut down cleanly");
        Ok(())
    }
}
