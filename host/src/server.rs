//! The composition root: [`Server`] builds the four layers and wires them.
//!
//! ```text
//! api/        transport   HTTP handlers, gRPC, listener, admission, auth, OpenAPI
//!   │  calls
//! serving/    serving     Scorer: resolve → validate → fill → chain → write-back → log → shadows
//!   │  reads the snapshot of
//! control/    control     manifests, registry, reload, rollout state, versions, manager, audit
//!   │  counts into
//! telemetry/  telemetry   logging setup, metrics
//!   │  all use
//! the library core        request, policy, runtime, columnar, response, delivery, decision_log, …
//! ```
//!
//! Nothing below imports what is above it. [`Server::run`] takes a bound
//! listener and a shutdown future, so tests run real servers on
//! `127.0.0.1:0` and stop them deterministically.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::api::auth::AdminTokens;
use crate::api::state::AppState;
use crate::api::{admin, grpc, listener};
use crate::control::audit::AuditLog;
use crate::control::manager::{DEFAULT_MAX_UPLOAD_BYTES, RolloutManager};
use crate::control::registry::Registry;
use crate::control::reload::{ReloadSettings, Reloader};
use crate::control::versions::{self, VersionStore};
use crate::runtime::{Runtime, RuntimeConfig};
use crate::serving::{Scorer, logging};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::promotion;

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
    /// How `oci://` modules are pulled: plain-HTTP registries,
    /// credentials, poll interval, backoff.
    pub registry: crate::control::source::oci::RegistryConfig,
    /// The Redis server (URL) whose shared counters make canary guardrail
    /// windows fleet-wide (`--fleet-windows`); each replica's own when
    /// `None`.
    pub fleet_windows: Option<String>,
    /// Where rollout state is committed: the policy directory (`None`), or
    /// Redis.
    pub control_store: Option<crate::control::store::RedisControlConfig>,
    /// This replica's name in heartbeats (default `hostname:port`).
    pub replica_id: Option<String>,
    /// A policy-set bundle to follow into the policy directory
    /// (`--bundle oci://…`), polled like `oci://` modules
    /// ([`crate::control::bundle`]).
    pub bundle: Option<crate::control::source::oci::OciRef>,
    /// The CPU slots policy calls run in ([`crate::serving::cpu`]).
    pub cpu_slots: crate::serving::cpu::CpuSlotConfig,
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
            registry: Default::default(),
            fleet_windows: None,
            control_store: None,
            replica_id: None,
            bundle: None,
            cpu_slots: crate::serving::cpu::CpuSlotConfig::default(),
        }
    }
}

/// How often a replica writes its heartbeat to the control store.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// The safety-net poll of a shared control store (besides pub/sub).
const FOLLOW_POLL: Duration = Duration::from_millis(250);

/// This machine's host name (`localhost` if it has none).
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is valid for writes of its length; gethostname writes
    // at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(h) if rc == 0 && !h.is_empty() => h.to_string(),
        _ => "localhost".into(),
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
    /// The fleet windows' Redis URL is invalid.
    #[error(transparent)]
    FleetWindows(#[from] crate::serving::fleet_window::FleetWindowError),
    /// The delivery state store could not be opened.
    #[error("delivery state: {0}")]
    State(#[from] crate::delivery::OpenError),
    /// The decision log could not start.
    #[error("decision log {sink}: {source}")]
    DecisionLog {
        /// Its directory, or `stdout`.
        sink: String,
        /// Why.
        source: crate::decision_log::DecisionLogError,
    },
    /// The audit log could not be opened.
    #[error(transparent)]
    Audit(#[from] crate::control::audit::AuditError),
    /// The control store is misconfigured.
    #[error(transparent)]
    ControlStore(#[from] crate::control::store::StoreError),
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
        let bundle = match &cfg.bundle {
            Some(r) => Some(install_bundle(&cfg, r).await?),
            None => None,
        };
        let Parts {
            registry,
            reloader,
            state,
            manager,
            log_writer,
        } = Parts::build(&cfg)?;
        let token = CancellationToken::new();
        if let Some(follower) = bundle {
            tokio::spawn(follower.reporting_to(reloader.clone()).run(token.clone()));
        }
        if let Some(rx) = state.scorer.rollbacks().take_receiver() {
            tokio::spawn(manager.clone().run_rollbacks(rx));
        }
        if let Some(fleet) = state.scorer.fleet_windows() {
            tokio::spawn(fleet.clone().run(state.scorer.clone(), token.clone()));
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
        let mut app = crate::api::app(state.clone());
        match (&cfg.admin, self.admin_listener) {
            (None, _) => tracing::warn!(
                "admin API disabled: no admin token configured (--admin-token-file or OASIS_ADMIN_TOKEN)"
            ),
            (Some(a), None) => {
                app = app
                    .merge(admin::router(manager.clone(), a.tokens.clone()))
                    .merge(crate::api::dashboard::router());
                tracing::info!(%addr, tokens = a.tokens.len(), "admin API on the main listener");
            }
            (Some(a), Some(admin_listener)) => {
                let admin_addr = admin_listener.local_addr()?;
                // The dashboard and the reads it needs come with the admin
                // API, so the page calls its own origin.
                let router = admin::router(manager.clone(), a.tokens.clone())
                    .merge(crate::api::dashboard::router())
                    .merge(crate::api::reads().with_state(state))
                    .layer(axum::middleware::from_fn_with_state(
                        a.tokens.clone(),
                        crate::api::auth::require_admin_but_the_dashboard,
                    ))
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

        // A replica following a shared store starts on its committed state
        // when the store answers, else on its own last copy.
        if manager.store().shared() {
            match crate::control::store::sync_once(manager.store().as_ref(), &reloader).await {
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "control store unreachable at start; serving the last committed state this replica copied (rollout.json)")
                }
            }
        }
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
        let watcher = tokio::spawn(reloader.clone().watch(token.clone()));
        let replica = cfg
            .replica_id
            .clone()
            .unwrap_or_else(|| format!("{}:{}", hostname(), addr.port()));
        tracing::info!(%replica, store = manager.store().kind(), "control store");
        let heartbeat = tokio::spawn(crate::control::store::heartbeat(
            manager.store().clone(),
            registry.clone(),
            manager.metrics().clone(),
            replica,
            HEARTBEAT,
            token.clone(),
        ));
        let follower = manager.store().shared().then(|| {
            tokio::spawn(crate::control::store::follow(
                manager.store().clone(),
                reloader.clone(),
                FOLLOW_POLL,
                token.clone(),
            ))
        });

        let served = server
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        token.cancel();
        let _ = watcher.await;
        let _ = heartbeat.await;
        if let Some(f) = follower {
            let _ = f.await;
        }
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

/// What a server is made of, built before anything listens.
struct Parts {
    registry: Arc<Registry>,
    reloader: Reloader,
    state: AppState,
    manager: Arc<RolloutManager>,
    log_writer: Option<crate::decision_log::WriterHandle>,
}

impl Parts {
    /// Builds the control plane (registry, reloader, manager), the serving
    /// side (scorer with delivery state and decision log) and the
    /// transports' state from `cfg`.
    fn build(cfg: &ServerConfig) -> Result<Parts, ServerError> {
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
        let reloader = Reloader::new(
            cfg.policies.clone(),
            runtime,
            registry.clone(),
            metrics.clone(),
            store.clone(),
            ReloadSettings {
                default_route: cfg.default_route.clone(),
                debounce: cfg.debounce,
                rescan: cfg.rescan,
                module_grace: cfg.module_grace,
            },
        )
        .with_registry(cfg.registry.clone());
        let delivery = crate::delivery::Delivery::open(&cfg.state, &cfg.policies)?;
        match &delivery {
            Some(d) => tracing::info!(store = d.health().kind, "delivery state on"),
            None => tracing::info!("delivery state off: requests carry all of it"),
        }
        let mut scorer = Scorer::new(
            registry.clone(),
            metrics.clone(),
            cfg.runtime.max_instances,
            cfg.max_inflight,
        )
        .with_store(store)
        .with_delivery(delivery)
        .with_cpu_slots(cfg.cpu_slots);
        tracing::info!(
            slots = cfg.cpu_slots.slots,
            slice_ms = cfg.cpu_slots.slice.as_millis() as u64,
            "policy calls run in CPU slots (0 = off)"
        );
        if let Some(url) = &cfg.fleet_windows {
            let fleet = crate::serving::fleet_window::FleetWindows::connect(
                url,
                crate::serving::fleet_window::DEFAULT_PREFIX,
                metrics.clone(),
            )?;
            tracing::info!(%url, "fleet-wide guardrail windows on");
            scorer = scorer.with_fleet_windows(fleet);
        }
        let mut log_writer = None;
        if let Some(d) = &cfg.decision_log {
            let sink = d
                .config
                .dir
                .as_ref()
                .map_or("stdout".into(), |p| p.display().to_string());
            let (log, writer) =
                crate::decision_log::DecisionLog::start(d.config.clone()).map_err(|source| {
                    ServerError::DecisionLog {
                        sink: sink.clone(),
                        source,
                    }
                })?;
            tracing::info!(%sink, sample = d.sample, "decision log on");
            scorer = scorer.with_decision_log(logging::DecisionLogging {
                log,
                sample: d.sample,
            });
            log_writer = Some(writer);
        }
        let audit = AuditLog::open(cfg.policies.join(AUDIT_FILE))?;
        let mut manager = RolloutManager::new(reloader.clone(), audit, metrics)
            .with_max_upload_bytes(
                cfg.admin
                    .as_ref()
                    .map_or(DEFAULT_MAX_UPLOAD_BYTES, |a| a.max_upload_bytes),
            );
        if let Some(redis) = &cfg.control_store {
            tracing::info!(url = %redis.url, prefix = %redis.prefix, "rollout state in Redis");
            manager = manager.with_store(Arc::new(crate::control::store::RedisStore::new(
                redis.clone(),
            )?));
        }
        let manager = Arc::new(manager);
        Ok(Parts {
            registry,
            reloader,
            state: AppState::new(scorer, cfg.max_body_bytes),
            manager,
            log_writer,
        })
    }
}

/// The follower of `--bundle`, after one bounded attempt to install the
/// bundle before the initial load (a fresh replica starts on the bundle;
/// with the registry down it starts on what the directory holds, the last
/// installed bundle, and the follower keeps trying).
async fn install_bundle(
    cfg: &ServerConfig,
    reference: &crate::control::source::oci::OciRef,
) -> Result<crate::control::bundle::BundleFollower, ServerError> {
    std::fs::create_dir_all(&cfg.policies)?;
    let follower = crate::control::bundle::BundleFollower::new(
        cfg.registry.clone(),
        reference.clone(),
        cfg.policies.clone(),
    );
    match tokio::time::timeout(Duration::from_secs(10), follower.poll()).await {
        Ok(Ok(Some(i))) => {
            tracing::info!(reference = %i.reference, digest = %i.digest, files = i.files.len(), "policy bundle installed");
        }
        Ok(Ok(None)) => tracing::info!(%reference, "policy bundle already installed"),
        Ok(Err(e)) => {
            tracing::warn!(%reference, error = %e, "policy bundle not installed at start; serving the directory's set")
        }
        Err(_) => {
            tracing::warn!(%reference, "policy bundle: the registry did not answer within 10 s; serving the directory's set")
        }
    }
    Ok(follower)
}
