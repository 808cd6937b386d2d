//! `oasis serve`: the scoring server on a policy directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use oasis::api::auth::AdminTokens;
use oasis::api::listener::ConnectionLimits;
use oasis::decision_log::{DecisionLogConfig, DiskBudget, LogFormat, WhenFull};
use oasis::delivery::{StateBackend, StateConfig};
use oasis::server::{AdminConfig, DecisionLogSettings, Server, ServerConfig};

/// Arguments of `oasis serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Policy directory: one `<key>.toml` manifest per policy, the modules,
    /// and an optional `routes.toml`. Watched for changes.
    #[arg(long)]
    pub policies: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Route for requests that name none (when routes.toml sets no default).
    #[arg(long)]
    pub default_route: Option<String>,
    /// Largest accepted request body, bytes.
    #[arg(long, default_value_t = ServerConfig::default().max_body_bytes)]
    pub max_body_bytes: usize,
    /// Scoring requests in progress at once (counted once their body is
    /// read); more get 503.
    #[arg(long, default_value_t = ServerConfig::default().max_inflight)]
    pub max_inflight: usize,
    /// Connections open at once per listener; more wait to be accepted.
    #[arg(long, default_value_t = ConnectionLimits::default().max_connections)]
    pub max_connections: usize,
    /// Close a connection that sends no byte of a request for this long
    /// after opening or after its last response (keep-alive), ms.
    #[arg(long, default_value_t = ConnectionLimits::default().idle_timeout.as_millis() as u64)]
    pub idle_timeout_ms: u64,
    /// Close a connection whose request head is not complete this long after
    /// its first byte, ms.
    #[arg(long, default_value_t = ConnectionLimits::default().header_read_timeout.as_millis() as u64)]
    pub header_read_timeout_ms: u64,
    /// Fail a request whose body is not complete this long after its head
    /// (408 on /v1/score; the connection is closed), ms.
    #[arg(long, default_value_t = ConnectionLimits::default().body_read_timeout.as_millis() as u64)]
    pub body_read_timeout_ms: u64,
    /// Policy instances that may exist at once, across all policies.
    #[arg(long, default_value_t = oasis::RuntimeConfig::default().max_instances)]
    pub max_instances: u32,
    /// Policy calls that execute at once (CPU slots); a call waits for a
    /// slot, then runs undisturbed. Default: one per core. 0: no gate (the
    /// kernel time-slices every call in flight, and each call's time, the
    /// time its deadline measures, stretches with the load).
    #[arg(long)]
    pub cpu_slots: Option<usize>,
    /// How long a call keeps its CPU slot, ms: past it the slot goes to the
    /// next call and the long call goes on time-sliced, so a policy that
    /// spins to its deadline delays the others by this much at most.
    #[arg(long, default_value_t = oasis::serving::cpu::CpuSlotConfig::DEFAULT_SLICE.as_millis() as u64)]
    pub cpu_slice_ms: u64,
    /// A policy whose last 64 calls in a row each succeeded within this many
    /// µs of CPU time has its calls run inline on the request's thread, without the
    /// hop to the blocking pool (a call that does not sends the next ones
    /// back to the pool). 0: never inline.
    #[arg(long, default_value_t = oasis::serving::cpu::CpuSlotConfig::DEFAULT_INLINE_UNDER.as_micros() as u64)]
    pub inline_calls_under_us: u64,
    /// MiB at the start of each instance's linear-memory slot kept resident
    /// between instances: pages a call touched there are reset in place and
    /// found mapped by the next instance (beyond it they fault in again). Only
    /// touched pages stay resident; a Python policy touches several MiB.
    #[arg(long, default_value_t = oasis::runtime::DEFAULT_MEMORY_KEEP_RESIDENT >> 20)]
    pub instance_memory_resident_mb: usize,
    /// A fresh instance for every call, dropped afterwards, instead of
    /// instances kept between calls and put back after each one to the
    /// state their instantiation left (the default: the same isolation at
    /// a fraction of the cost; docs/performance.md). For comparison and as
    /// a way out should a reset ever misbehave.
    #[arg(long)]
    pub fresh_instances: bool,
    /// Components defining more functions are refused before compiling.
    #[arg(long, default_value_t = oasis::CompileLimits::default().max_functions)]
    pub max_functions: u64,
    /// Wall-clock ceiling of compiling one component, ms; beyond it the load
    /// fails and the last good version keeps serving.
    #[arg(long, default_value_t = oasis::CompileLimits::default().timeout.as_millis() as u64)]
    pub max_compile_ms: u64,
    /// Memory cap of one compile, MiB: components compile in a child
    /// process under this cap (and are killed at --max-compile-ms); 0
    /// compiles on a thread of the server instead (no memory cap).
    #[arg(long, default_value_t = oasis::runtime::compile_worker::DEFAULT_MEMORY_BYTES >> 20)]
    pub max_compile_mb: u64,
    /// How long a reload pass waits for a compile, milliseconds; a longer
    /// compile goes on in the background (the worker) and the policy loads
    /// in a later pass when it finishes, so a slow compile never holds up
    /// the reload of other policies.
    #[arg(long, default_value_t = 2000)]
    pub compile_wait_ms: u64,
    /// Compile cache directory (default: $OASIS_CACHE_DIR, else ~/.cache/oasis).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Admin API tokens, one `name token` per line (tokens of 32 bytes or
    /// more). Without this or OASIS_ADMIN_TOKEN the admin API is off.
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// Serve the admin API on this address instead of `--listen`.
    #[arg(long)]
    pub admin_listen: Option<SocketAddr>,
    /// Also serve the gRPC API (`oasis.v1.Scoring`, health, reflection) on
    /// this address.
    #[arg(long)]
    pub grpc_listen: Option<SocketAddr>,
    /// Largest module the admin API accepts, bytes.
    #[arg(long, default_value_t = oasis::control::manager::DEFAULT_MAX_UPLOAD_BYTES)]
    pub max_upload_bytes: usize,
    /// Log decisions (one row per scored request) into this directory,
    /// rotating files by size and age; `-` logs JSON lines to stdout.
    #[arg(long)]
    pub decision_log: Option<PathBuf>,
    /// Format of the decision and outcome files: Parquet (zstd pages, what
    /// DuckDB, pandas and Spark read) or JSON lines.
    #[arg(long, value_enum, default_value_t = LogFormatArg::Parquet)]
    pub decision_log_format: LogFormatArg,
    /// Share of requests logged on routes that set none (`[routes.x.log]`).
    #[arg(long, default_value_t = 1.0)]
    pub decision_log_sample: f64,
    /// Compress JSON-lines decision log files with zstd (Parquet files
    /// always have zstd pages).
    #[arg(long)]
    pub decision_log_compress: bool,
    /// Rotate decision log files at this size, MiB.
    #[arg(long, default_value_t = 64)]
    pub decision_log_max_mb: u64,
    /// Rotate decision log files at this age, seconds.
    #[arg(long, default_value_t = 3600)]
    pub decision_log_max_age_s: u64,
    /// Disk budget of the decision log directory (decision and outcome
    /// files), MiB; 0: unbounded. At least twice --decision-log-max-mb.
    #[arg(long, default_value_t = oasis::decision_log::writer::DEFAULT_MAX_TOTAL_BYTES >> 20)]
    pub decision_log_max_total_mb: u64,
    /// When the decision log directory holds its budget: delete the oldest
    /// files, or pause logging (records counted, not written).
    #[arg(long, value_enum, default_value_t = WhenFullArg::DeleteOldest)]
    pub decision_log_when_full: WhenFullArg,
    /// File holding a key: listener and session ids are logged as keyed
    /// pseudonyms (HMAC-SHA256) instead of as sent.
    #[arg(long)]
    pub decision_log_key_file: Option<PathBuf>,
    /// Versions kept per policy in the version store (`<policies>/versions`),
    /// besides those the rollout state refers to (pinned, canary, history,
    /// shadows), which are always kept and do not count.
    #[arg(long, default_value_t = ServerConfig::default().keep_versions)]
    pub keep_versions: usize,
    /// A version that promotes nothing over this many campaign candidates
    /// (and --stall-after-s) is flagged as stalled.
    #[arg(long, default_value_t = oasis::telemetry::promotion::PromotionStall::default().candidates)]
    pub stall_candidates: u64,
    /// ... and over this many seconds.
    #[arg(long, default_value_t = oasis::telemetry::promotion::PromotionStall::default().after.as_secs())]
    pub stall_after_s: u64,
    /// A manifest may wait this long for its module (deployed after it)
    /// before the wait counts as a failed load.
    #[arg(long, default_value_t = ServerConfig::default().module_grace.as_secs())]
    pub module_grace_s: u64,
    /// Where delivery state (campaign delivery and pacing, listener and
    /// session counts, rights holders' exposure) is kept: `embedded` (one
    /// machine, in --state-dir), `redis` (replicas sharing --redis-url), or
    /// `off` (requests carry all of it).
    #[arg(long, value_enum, default_value = "embedded")]
    pub state: StateKind,
    /// The embedded store's directory [default: <policies>/.state].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// The Redis server of `--state redis`.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// The pacing tick: at most one controller step per campaign per tick,
    /// in the requests' time, milliseconds.
    #[arg(long, default_value_t = oasis_state::DEFAULT_TICK_MS as u64)]
    pub pacing_tick_ms: u64,
    /// How long a request waits for the state store before it is scored
    /// with the last-known values, milliseconds.
    #[arg(long, default_value_t = 20)]
    pub state_read_budget_ms: u64,
    /// How long a write to the state store (a batch of events, pacing
    /// steps) may take before the store counts as failing, milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub state_write_budget_ms: u64,
    /// When the listener and session counts a frequency cap relies on are
    /// unknown (the store did not answer), score with counts 0 instead of
    /// answering in organic order with nothing promoted (the default).
    #[arg(long)]
    pub promote_on_unknown_counts: bool,
    /// Count canary guardrail windows across replicas in this Redis
    /// (`redis://host:port`): a small canary spread over many replicas is
    /// judged on the fleet's requests. Redis unreachable: each replica
    /// judges its own (gauge `oasis_fleet_windows_degraded`). Default: the
    /// control store's Redis when `--control-store` is one; `off` keeps
    /// each replica's windows its own.
    #[arg(long, value_name = "REDIS_URL|off")]
    pub fleet_windows: Option<String>,
    #[command(flatten)]
    pub registry: super::registry::RegistryArgs,
    /// How often a tag named by a manifest (`module = "oci://…:tag"`) is
    /// polled, milliseconds.
    #[arg(long, default_value_t = oasis::control::source::oci::RegistryConfig::default().poll.as_millis() as u64)]
    pub registry_poll_ms: u64,
    /// Longest wait between two registry attempts after failures,
    /// milliseconds (the wait doubles from min(poll, 1 s)).
    #[arg(long, default_value_t = oasis::control::source::oci::RegistryConfig::default().backoff_max.as_millis() as u64)]
    pub registry_backoff_max_ms: u64,
    /// Where rollout state (document, revision, audit, heartbeats) is
    /// committed: `dir` (the policy directory, the default) or
    /// `redis://host:port[/db]` (replicas with no shared disk).
    #[arg(long, default_value = "dir", value_name = "dir|redis://…")]
    pub control_store: String,
    /// Prefix of the control store's Redis keys.
    #[arg(long, default_value = oasis::control::store::DEFAULT_PREFIX)]
    pub control_store_prefix: String,
    /// This replica's name in heartbeats and `oasis fleet status`
    /// (default: hostname:port).
    #[arg(long)]
    pub replica_id: Option<String>,
    /// Require of every registry module a cosign signature of its digest by
    /// this public key (PEM, P-256; `cosign.pub`); repeatable: one valid
    /// signature by any of the keys suffices. An unsigned or wrongly signed
    /// module is refused; the last good version keeps serving.
    #[arg(long = "verify-key", value_name = "PUB.pem")]
    pub verify_keys: Vec<PathBuf>,
    /// Follow a policy-set bundle (`oasis push-bundle`): the tag is polled
    /// like `oci://` modules (--registry-poll-ms, backoff), and each new
    /// bundle is pulled, verified, checked as a set and installed into
    /// --policies (which is created if missing); a bundle that is not a
    /// valid set is refused and the directory keeps its set.
    #[arg(long, value_name = "oci://REGISTRY/REPOSITORY:TAG")]
    pub bundle: Option<String>,
}

/// `--control-store`: the directory, or a Redis URL.
fn control_store(
    value: &str,
    prefix: &str,
) -> anyhow::Result<Option<oasis::control::store::RedisControlConfig>> {
    if value == "dir" {
        return Ok(None);
    }
    if !(value.starts_with("redis://") || value.starts_with("rediss://")) {
        anyhow::bail!("--control-store must be `dir` or a redis://host:port URL, got {value:?}");
    }
    Ok(Some(oasis::control::store::RedisControlConfig {
        prefix: prefix.to_string(),
        ..oasis::control::store::RedisControlConfig::new(value)
    }))
}

/// Where delivery state is kept (`--state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StateKind {
    /// The embedded store (no setup; survives restarts).
    Embedded,
    /// A Redis server shared by replicas.
    Redis,
    /// No state.
    Off,
}

/// The admin tokens: `--admin-token-file`, else the `OASIS_ADMIN_TOKEN`
/// environment variable (one token, named `admin`), else none.
fn admin_tokens(file: Option<&std::path::Path>) -> anyhow::Result<Option<AdminTokens>> {
    if let Some(path) = file {
        return Ok(Some(AdminTokens::from_file(path)?));
    }
    match std::env::var("OASIS_ADMIN_TOKEN") {
        Ok(v) if !v.is_empty() => Ok(Some(
            AdminTokens::from_env_value(&v).context("OASIS_ADMIN_TOKEN")?,
        )),
        _ => Ok(None),
    }
}

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let admin = admin_tokens(args.admin_token_file.as_deref())?.map(|tokens| AdminConfig {
        tokens: std::sync::Arc::new(tokens),
        max_upload_bytes: args.max_upload_bytes,
    });
    if !(0.0..=1.0).contains(&args.decision_log_sample) {
        anyhow::bail!(
            "--decision-log-sample must be in [0, 1], got {}",
            args.decision_log_sample
        );
    }
    let decision_log = match &args.decision_log {
        None => None,
        Some(dir) => Some(DecisionLogSettings {
            config: DecisionLogConfig {
                dir: (dir.as_os_str() != "-").then(|| dir.clone()),
                format: match args.decision_log_format {
                    LogFormatArg::Parquet => LogFormat::Parquet,
                    LogFormatArg::Jsonl => LogFormat::Jsonl,
                },
                compress: args.decision_log_compress,
                max_file_bytes: args
                    .decision_log_max_mb
                    .saturating_mul(1 << 20)
                    .max(1 << 20),
                max_file_age: std::time::Duration::from_secs(args.decision_log_max_age_s.max(1)),
                pseudonymise_key: match &args.decision_log_key_file {
                    Some(f) => Some(
                        std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?,
                    ),
                    None => None,
                },
                budget: (args.decision_log_max_total_mb > 0).then(|| DiskBudget {
                    max_total_bytes: args.decision_log_max_total_mb.saturating_mul(1 << 20),
                    when_full: match args.decision_log_when_full {
                        WhenFullArg::DeleteOldest => WhenFull::DeleteOldest,
                        WhenFullArg::Pause => WhenFull::Pause,
                    },
                }),
                ..Default::default()
            },
            sample: args.decision_log_sample,
        }),
    };
    let mut config = ServerConfig {
        policies: args.policies,
        default_route: args.default_route,
        max_body_bytes: args.max_body_bytes,
        max_inflight: args.max_inflight,
        connections: ConnectionLimits {
            max_connections: args.max_connections.max(1),
            idle_timeout: Duration::from_millis(args.idle_timeout_ms.max(1)),
            header_read_timeout: Duration::from_millis(args.header_read_timeout_ms.max(1)),
            body_read_timeout: Duration::from_millis(args.body_read_timeout_ms.max(1)),
        },
        keep_versions: args.keep_versions,
        admin,
        decision_log,
        module_grace: std::time::Duration::from_secs(args.module_grace_s),
        state: StateConfig {
            backend: match args.state {
                StateKind::Embedded => StateBackend::Embedded(args.state_dir),
                StateKind::Redis => StateBackend::Redis(args.redis_url),
                StateKind::Off => StateBackend::Off,
            },
            tick: Duration::from_millis(args.pacing_tick_ms.max(1)),
            read_budget: Duration::from_millis(args.state_read_budget_ms.max(1)),
            write_budget: Duration::from_millis(args.state_write_budget_ms.max(1)),
            promote_on_unknown_counts: args.promote_on_unknown_counts,
            ..StateConfig::default()
        },
        registry: oasis::control::source::oci::RegistryConfig {
            poll: Duration::from_millis(args.registry_poll_ms.max(1)),
            backoff_max: Duration::from_millis(args.registry_backoff_max_ms.max(1)),
            verify_keys: super::registry::load_verify_keys(&args.verify_keys)?,
            ..args.registry.config()?
        },
        // The shared windows live in the control store's Redis unless told
        // otherwise: a fleet that shares rollout state judges canaries on
        // the fleet's requests.
        fleet_windows: match args.fleet_windows.as_deref() {
            Some("off") => None,
            Some(url) => Some(url.to_string()),
            None => control_store(&args.control_store, &args.control_store_prefix)?
                .is_some()
                .then(|| args.control_store.clone()),
        },
        control_store: control_store(&args.control_store, &args.control_store_prefix)?,
        replica_id: args.replica_id,
        bundle: args
            .bundle
            .as_deref()
            .map(|b| oasis::control::source::oci::OciRef::parse(b).map_err(anyhow::Error::msg))
            .transpose()
            .context("--bundle")?,
        promotion_stall: oasis::telemetry::promotion::PromotionStall {
            candidates: args.stall_candidates,
            after: std::time::Duration::from_secs(args.stall_after_s),
        },
        ..Default::default()
    };
    config.runtime.max_instances = args.max_instances;
    let cpu_slots = args
        .cpu_slots
        .unwrap_or(oasis::serving::cpu::CpuSlotConfig::for_this_machine().slots);
    if cpu_slots > oasis::serving::cpu::CpuSlotConfig::MAX_SLOTS {
        anyhow::bail!(
            "--cpu-slots {cpu_slots} is more than {} (one per core is the point; 0 turns the slots off)",
            oasis::serving::cpu::CpuSlotConfig::MAX_SLOTS
        );
    }
    let slice = Duration::from_millis(args.cpu_slice_ms.max(1));
    let inline_under = Duration::from_micros(args.inline_calls_under_us);
    if inline_under > slice {
        anyhow::bail!(
            "--inline-calls-under-us {} is longer than the CPU slice ({} ms): an inline call cannot give its slot up, so only calls shorter than a slice may run inline",
            args.inline_calls_under_us,
            slice.as_millis()
        );
    }
    config.cpu_slots = oasis::serving::cpu::CpuSlotConfig {
        slots: cpu_slots,
        slice: Duration::from_millis(args.cpu_slice_ms.max(1)),
        inline_under: Duration::from_micros(args.inline_calls_under_us),
    };
    let max_memory_mb = oasis::Limits::MAX_MEMORY_BYTES >> 20;
    if args.instance_memory_resident_mb > max_memory_mb {
        anyhow::bail!(
            "--instance-memory-resident-mb {} is more than an instance's memory can be ({max_memory_mb} MiB)",
            args.instance_memory_resident_mb
        );
    }
    config.runtime.memory_keep_resident = args.instance_memory_resident_mb << 20;
    config.runtime.reset_instances = !args.fresh_instances;
    config.runtime.compile = oasis::CompileLimits {
        max_functions: args.max_functions,
        timeout: Duration::from_millis(args.max_compile_ms.max(1)),
    };
    if args.cache_dir.is_some() {
        config.runtime.cache_dir = args.cache_dir;
    }
    if args.max_compile_mb > 0 {
        config.runtime.compile_worker = Some(oasis::runtime::compile_worker::CompileWorker {
            exe: std::env::current_exe()
                .context("locating the oasis binary for its compile worker")?,
            memory_bytes: args.max_compile_mb.saturating_mul(1 << 20),
            load_wait: Some(Duration::from_millis(args.compile_wait_ms.max(1))),
        });
    }
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let mut server = Server::new(config);
        if let Some(addr) = args.admin_listen {
            let admin = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (admin)"))?;
            server = server.with_admin_listener(admin);
        }
        if let Some(addr) = args.grpc_listen {
            let grpc = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (gRPC)"))?;
            server = server.with_grpc_listener(grpc);
        }
        server.run(listener, shutdown_signal()).await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// `--decision-log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormatArg {
    /// Parquet files (`.parquet`), one row per record.
    Parquet,
    /// JSON lines (`.jsonl`, `.jsonl.zst` with --decision-log-compress).
    Jsonl,
}

/// `--decision-log-when-full`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WhenFullArg {
    /// Delete the oldest closed files.
    DeleteOldest,
    /// Pause logging until there is room.
    Pause,
}
