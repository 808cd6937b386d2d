//! Fleet-wide guardrail windows: a canary's window counts the requests of
//! every replica, through shared counters in Redis (`oasis serve
//! --fleet-windows redis://…`).
//!
//! ```text
//! request path                    every FLUSH (200 ms), off the request path
//! ───────────                     ─────────────────────────────────────────────
//! record(route, digest, arm, s)   HINCRBY {prefix}{route}|{digest}|{arm}|{t/5 s}
//!   adds to a local accumulator     r f c p e h<i>   (EXPIRE 120 s)
//!   (a mutex, no I/O)             read the buckets of each canary seen, newest
//!                                 first, until the canary's `window` requests;
//!                                 the stable arm's over the same buckets;
//!                                 guardrail::judge → breach?
//!                                   SET {prefix}claim|{route}|{digest} NX EX
//!                                   and RollbackRequests (the manager's path)
//! ```
//!
//! Counters are per (route, canary digest, arm): requests `r`, failures `f`,
//! candidates `c`, promoted `p`, eligible `e`, and the canary's latency as a
//! mergeable log-linear histogram (`h<bucket>` fields, the one
//! [`crate::divergence`] keeps). Each replica adds its own, so a bucket is
//! the fleet's; a window is whole 5 s buckets, newest first, until it holds
//! `window` canary requests (or 120 s of them), so it may hold a few more.
//!
//! A breach is claimed once for the fleet (`SET NX EX`); every replica that
//! sees the claim (its own or another's) asks its control plane to roll the
//! canary back with the claim's reason, and the manager ignores a request for
//! a canary no longer serving, so a shared rollout store rolls back once and
//! replicas with their own directories each roll back theirs.
//!
//! Redis unreachable: the counts of that flush are dropped, the gauge
//! `oasis_fleet_windows_degraded` is 1 and a warning is logged; each replica
//! keeps judging its own window ([`CanaryWindow`](super::guardrail::CanaryWindow)
//! always runs). A scoring request never waits for Redis.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio_util::sync::CancellationToken;

use crate::control::manifest::Guardrails;
use crate::divergence::LatencyHistogram;
use crate::serving::guardrail::{ArmTotals, Sample, WindowSummary, judge};
use crate::serving::route_stats::lock;
use crate::telemetry::metrics::Metrics;

/// What judging on the fleet's counts needs of the serving layer: where
/// route summaries go and where rollbacks are asked for. The scorer
/// implements it (`serving::scorer`); this module does not import the
/// scorer, which imports it (no cycle between the two files).
pub trait FleetHost: Send + Sync + 'static {
    /// The per-route statistics the fleet's view is shown in.
    fn route_stats(&self) -> &crate::serving::route_stats::RouteStats;
    /// The queue of rollbacks the control layer applies.
    fn rollbacks(&self) -> &crate::control::manager::RollbackRequests;
}

/// How often a replica adds its counts to the shared buckets and judges.
pub const FLUSH: Duration = Duration::from_millis(200);
/// Width of one shared bucket, seconds.
pub const BUCKET_S: u64 = 5;
/// How long a bucket lives, seconds: the longest window judged.
pub const TTL_S: u64 = 120;
/// Longest wait for one Redis round trip before the flush counts as failed.
const TIMEOUT: Duration = Duration::from_millis(500);
/// Key prefix of the shared counters.
pub const DEFAULT_PREFIX: &str = "oasis:fw:";

/// Which arm a sample is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FleetArm {
    /// The canary being judged.
    Canary,
    /// The stable arm, served beside the canary: what the business
    /// guardrail compares with.
    Stable,
}

impl FleetArm {
    /// `canary` or `stable`.
    pub fn as_str(self) -> &'static str {
        match self {
            FleetArm::Canary => "canary",
            FleetArm::Stable => "stable",
        }
    }
}

/// Why fleet windows could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum FleetWindowError {
    /// The URL is not a Redis URL.
    #[error("--fleet-windows: bad redis url {url:?}: {message}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// Why.
        message: String,
    },
}

/// One arm's counts not yet flushed.
#[derive(Default)]
struct Pending {
    totals: ArmTotals,
    latency: Option<Box<LatencyHistogram>>,
}

/// A canary this replica has served: judged on the fleet's counts.
struct Watched {
    guardrails: Guardrails,
    seen: Instant,
    /// A rollback was requested here (once per canary version).
    done: bool,
}

struct Shared {
    conn: ConnectionManager,
    prefix: String,
    metrics: Arc<Metrics>,
    pending: Mutex<HashMap<(String, String, FleetArm), Pending>>,
    watched: Mutex<HashMap<(String, String), Watched>>,
    degraded: AtomicBool,
}

/// The fleet's shared guardrail windows. Cheap to clone.
#[derive(Clone)]
pub struct FleetWindows {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for FleetWindows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetWindows")
            .field("prefix", &self.shared.prefix)
            .field("degraded", &self.is_degraded())
            .finish_non_exhaustive()
    }
}

impl FleetWindows {
    /// Counters in the Redis server at `url` under `prefix`. Connects
    /// lazily: a server down at start only makes the windows degraded until
    /// it comes up. Needs a tokio runtime.
    ///
    /// # Errors
    /// [`FleetWindowError::BadUrl`] for a URL that is not a Redis URL.
    pub fn connect(
        url: &str,
        prefix: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Self, FleetWindowError> {
        let bad = |message: String| FleetWindowError::BadUrl {
            url: url.to_string(),
            message,
        };
        let client = redis::Client::open(url).map_err(|e| bad(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| bad(e.to_string()))?;
        Ok(FleetWindows {
            shared: Arc::new(Shared {
                conn,
                prefix: prefix.to_string(),
                metrics,
                pending: Mutex::new(HashMap::new()),
                watched: Mutex::new(HashMap::new()),
                degraded: AtomicBool::new(false),
            }),
        })
    }

    /// Whether the last flush or read failed (the gauge
    /// `oasis_fleet_windows_degraded`).
    pub fn is_degraded(&self) -> bool {
        self.shared.degraded.load(Ordering::Relaxed)
    }

    /// Adds one request's sample `s` of `arm` while canary `digest` runs on
    /// `route` under guardrails `g`. No I/O: the next flush sends it.
    pub fn record(&self, route: &str, digest: &str, arm: FleetArm, s: &Sample, g: &Guardrails) {
        // On the request path: the maps hold a few entries (the canaries
        // running now), so they are searched by borrowed keys and a key is
        // allocated only for a canary's first request.
        {
            let mut pending = lock(&self.shared.pending);
            let found =
                |(r, d, a): &(String, String, FleetArm)| r == route && d == digest && *a == arm;
            if !pending.keys().any(found) {
                pending.insert(
                    (route.to_string(), digest.to_string(), arm),
                    Pending::default(),
                );
            }
            let p = pending
                .iter_mut()
                .find_map(|(k, p)| found(k).then_some(p))
                .expect("inserted above");
            p.totals.add(s);
            if arm == FleetArm::Canary && s.ok {
                p.latency
                    .get_or_insert_with(Default::default)
                    .record(Duration::from_micros(s.latency_us));
            }
        }
        if arm == FleetArm::Canary {
            let mut watched = lock(&self.shared.watched);
            match watched
                .iter_mut()
                .find_map(|((r, d), w)| (r == route && d == digest).then_some(w))
            {
                Some(w) => {
                    w.seen = Instant::now();
                    if w.guardrails != *g {
                        w.guardrails = g.clone();
                    }
                }
                None => {
                    watched.insert(
                        (route.to_string(), digest.to_string()),
                        Watched {
                            guardrails: g.clone(),
                            seen: Instant::now(),
                            done: false,
                        },
                    );
                }
            }
        }
    }

    /// Flushes and judges every [`FLUSH`] until `token` is cancelled;
    /// breaches go to `scorer`'s rollback queue, summaries to its route
    /// statistics.
    pub async fn run<S: FleetHost>(self, scorer: S, token: CancellationToken) {
        let mut tick = tokio::time::interval(FLUSH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tick.tick() => {}
            }
            let result = async {
                self.flush().await?;
                self.judge(&scorer).await
            }
            .await;
            self.set_degraded(result.err());
        }
        // Counts of the last requests still reach the fleet.
        let _ = self.flush().await;
    }

    fn set_degraded(&self, error: Option<redis::RedisError>) {
        let now = error.is_some();
        let was = self.shared.degraded.swap(now, Ordering::Relaxed);
        self.shared
            .metrics
            .control
            .fleet_windows_degraded
            .set(i64::from(now));
        match (was, error) {
            (false, Some(e)) => tracing::warn!(
                error = %e,
                "fleet guardrail windows unreachable: canaries are judged on this replica's requests alone"
            ),
            (true, None) => tracing::info!("fleet guardrail windows reachable again"),
            _ => {}
        }
    }

    fn key(&self, route: &str, digest: &str, arm: FleetArm, bucket: u64) -> String {
        format!(
            "{}{route}|{digest}|{}|{bucket}",
            self.shared.prefix,
            arm.as_str()
        )
    }

    fn claim_key(&self, route: &str, digest: &str) -> String {
        format!("{}claim|{route}|{digest}", self.shared.prefix)
    }

    async fn query<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, redis::RedisError> {
        let mut conn = self.shared.conn.clone();
        match tokio::time::timeout(TIMEOUT, pipe.query_async(&mut conn)).await {
            Ok(r) => r,
            Err(_) => Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {} ms", TIMEOUT.as_millis()),
            ))),
        }
    }

    /// Adds the counts gathered since the last flush to the current bucket.
    async fn flush(&self) -> Result<(), redis::RedisError> {
        let pending = std::mem::take(&mut *lock(&self.shared.pending));
        if pending.is_empty() {
            return Ok(());
        }
        let bucket = now_s() / BUCKET_S;
        let mut pipe = redis::pipe();
        for ((route, digest, arm), p) in &pending {
            let key = self.key(route, digest, *arm, bucket);
            let t = &p.totals;
            for (field, n) in [
                ("r", t.requests),
                ("f", t.failures),
                ("c", t.candidates),
                ("p", t.promoted),
                ("e", t.eligible),
            ] {
                if n > 0 {
                    pipe.cmd("HINCRBY").arg(&key).arg(field).arg(n).ignore();
                }
            }
            for (i, n) in p.latency.iter().flat_map(|h| h.nonzero_buckets()) {
                pipe.cmd("HINCRBY")
                    .arg(&key)
                    .arg(format!("h{i}"))
                    .arg(n)
                    .ignore();
            }
            pipe.cmd("EXPIRE").arg(&key).arg(TTL_S).ignore();
        }
        // The counts are dropped on failure: the fleet's window misses them,
        // this replica's own window has them.
        self.query::<()>(&pipe).await
    }

    /// Judges every canary this replica served in the last [`TTL_S`] on the
    /// fleet's counts.
    async fn judge<S: FleetHost>(&self, scorer: &S) -> Result<(), redis::RedisError> {
        let canaries: Vec<(String, String, Guardrails, bool)> = {
            let mut watched = lock(&self.shared.watched);
            watched.retain(|_, w| w.seen.elapsed() < Duration::from_secs(TTL_S));
            watched
                .iter()
                .map(|((r, d), w)| (r.clone(), d.clone(), w.guardrails.clone(), w.done))
                .collect()
        };
        for (route, digest, g, done) in canaries {
            if done {
                continue;
            }
            let (canary, stable, latency, claim) = self.read(&route, &digest, g.window).await?;
            let p99_ms = latency
                .summary()
                .filter(|_| canary.requests > canary.failures)
                .map(|s| s.p99_ms);
            let runtime = scorer.route_stats().get(&route);
            let breach = judge(
                &g,
                &canary,
                &stable,
                || p99_ms,
                &format!(
                    "the fleet's last {} canary requests (every replica)",
                    canary.requests
                ),
            );
            *lock(&runtime.fleet) = Some(WindowSummary::of(
                &digest,
                "fleet",
                &canary,
                &stable,
                p99_ms,
                breach.is_some() || claim.is_some(),
            ));
            let reason = match (claim, breach) {
                (Some(reason), _) => reason,
                (None, Some(breach)) => {
                    let mut pipe = redis::pipe();
                    pipe.cmd("SET")
                        .arg(self.claim_key(&route, &digest))
                        .arg(&breach)
                        .arg("NX")
                        .arg("EX")
                        .arg(TTL_S)
                        .cmd("GET")
                        .arg(self.claim_key(&route, &digest));
                    let (won, reason): (redis::Value, Option<String>) = self.query(&pipe).await?;
                    if won != redis::Value::Nil {
                        tracing::error!(%route, %digest, reason = %breach, "fleet-wide canary guardrail breached; claimed the rollback");
                    }
                    reason.unwrap_or(breach)
                }
                (None, None) => continue,
            };
            if let Some(w) = lock(&self.shared.watched).get_mut(&(route.clone(), digest.clone())) {
                w.done = true;
            }
            tracing::warn!(%route, %digest, %reason, "rolling the canary back on the fleet's guardrail window");
            scorer.rollbacks().request(&route, &digest, reason);
        }
        Ok(())
    }

    /// The fleet's counts of canary `digest` on `route` over whole buckets,
    /// newest first, until `window` canary requests; the stable arm's over
    /// the same buckets; the canary's latency; the fleet's claim, if any.
    async fn read(
        &self,
        route: &str,
        digest: &str,
        window: usize,
    ) -> Result<(ArmTotals, ArmTotals, LatencyHistogram, Option<String>), redis::RedisError> {
        let newest = now_s() / BUCKET_S;
        let buckets: Vec<u64> = (0..TTL_S / BUCKET_S)
            .filter_map(|back| newest.checked_sub(back))
            .collect();
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(self.claim_key(route, digest));
        for &b in &buckets {
            pipe.cmd("HGETALL")
                .arg(self.key(route, digest, FleetArm::Canary, b));
            pipe.cmd("HGETALL")
                .arg(self.key(route, digest, FleetArm::Stable, b));
        }
        let replies: Vec<redis::Value> = self.query(&pipe).await?;
        let mut replies = replies.into_iter();
        let claim: Option<String> = match replies.next() {
            Some(v) => redis::from_redis_value(v)?,
            None => None,
        };
        let (mut canary, mut stable) = (ArmTotals::default(), ArmTotals::default());
        let mut latency = LatencyHistogram::new();
        while let (Some(c), Some(s)) = (replies.next(), replies.next()) {
            if canary.requests >= window as u64 {
                break;
            }
            let c: HashMap<String, u64> = redis::from_redis_value(c)?;
            let s: HashMap<String, u64> = redis::from_redis_value(s)?;
            canary.merge(&totals(&c));
            stable.merge(&totals(&s));
            for (field, n) in &c {
                if let Some(i) = field.strip_prefix('h').and_then(|i| i.parse().ok()) {
                    latency.add_bucket(i, *n);
                }
            }
        }
        Ok((canary, stable, latency, claim))
    }
}

/// The counts of one bucket's hash.
fn totals(h: &HashMap<String, u64>) -> ArmTotals {
    let get = |k: &str| h.get(k).copied().unwrap_or(0);
    ArmTotals {
        requests: get("r"),
        failures: get("f"),
        candidates: get("c"),
        promoted: get("p"),
        eligible: get("e"),
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
