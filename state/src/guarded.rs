//! [`Guarded`]: the store as the request path uses it, with its faults
//! contained.
//!
//! **Why.** A scoring request has a latency budget of its own; a slow or dead
//! store must cost it at most a small, bounded wait once, not a timeout on
//! every request, and must not lose delivery events. So:
//!
//! * **reads** run under a budget ([`GuardConfig::read_budget`]); on an error
//!   or timeout the answer is built from the *last-known* campaign states
//!   and holder shares (a bounded LRU cache filled by every successful read
//!   and pacing write); listener and session counts have no useful
//!   last-known value and are [`Sourced::Unknown`] (the host then uses what
//!   the request sent, or 0). Each value says where it came from
//!   ([`Sourced`]), so the host can count and document it;
//! * a read that is merely **slow** (over budget) uses the last-known
//!   values for that request but opens the breaker only when reads have
//!   been slow without a break for [`SLOW_READS_TO_TRIP`] reads *and*
//!   [`SLOW_STREAK_TO_TRIP`]: a saturated machine's slow reads must not
//!   stop events and pacing writes, which have a budget of their own
//!   ([`GuardConfig::write_budget`]); a hung store trips it;
//! * a **circuit breaker**: after a failure the store is skipped for a
//!   backoff (1 s doubling to 10 s by default) and then probed with `ping`,
//!   by one request at a time, so a dead store costs one probe per backoff;
//!   it closes by itself when the store answers again;
//! * a **local** store ([`StateStore::is_local`], the embedded one) is
//!   treated differently: its reads are its own memory, so they are never
//!   switched off by the breaker nor replaced by last-known values, and its
//!   events are never queued in memory (that would acknowledge what a crash
//!   loses): while its writes fail or overrun their budget, events are
//!   *refused* ([`RecordOutcome::refused`]; the HTTP layer answers 503 with
//!   Retry-After and the client retries, de-duplicated by id);
//! * **events** recorded while a remote store is down are queued (bounded,
//!   [`GuardConfig::buffer_capacity`]) and flushed in order, in the
//!   background, once it is back; events that do not fit are dropped and
//!   counted, and [`RecordOutcome::dropped`] tells the caller (so the HTTP
//!   layer can answer 503 with Retry-After). Replays are safe: the stores
//!   de-duplicate by event id. The queue is in memory: a process that exits
//!   during an outage loses it;
//! * **pacing writes** while the store is down are applied to the last-known
//!   cache under the same write rule, so pacing continues locally from the
//!   last state this replica saw, and are *not* replayed: by the time the
//!   store is back its state has moved on (other replicas kept pacing, or
//!   time did) and each local step was computed from a state the store no
//!   longer holds, which is exactly what the write rule refuses. Campaigns
//!   never seen before the outage have no local state and are refused;
//! * [`Guarded::health`] is a snapshot for `/readyz`, `/v1/policies` and
//!   metrics: the state (ok, or degraded since when and why) and plain
//!   counters.

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lru::LruCache;
use parking_lot::Mutex;
use tracing::{info, warn};

use crate::{
    CampaignState, DeliveryEvent, PacingState, PacingWrite, Recorded, StateQuery, StateSnapshot,
    StateStore, model,
};

/// Configuration of [`Guarded`].
#[derive(Debug, Clone)]
pub struct GuardConfig {
    /// How long a read may take before the last-known values are used.
    pub read_budget: Duration,
    /// How long a write (record, pacing, one flush batch) may take.
    pub write_budget: Duration,
    /// The first backoff after a failure.
    pub backoff_initial: Duration,
    /// The longest backoff (it doubles after each failed probe).
    pub backoff_max: Duration,
    /// At most this many events are queued while the store is down.
    pub buffer_capacity: usize,
    /// At most this many events per record call when flushing the queue.
    pub flush_batch: usize,
    /// Campaigns kept in the last-known cache (least recently used dropped).
    pub last_known_campaigns: usize,
    /// Holders kept in the last-known cache.
    pub last_known_holders: usize,
    /// The pacing tick, for the write rule applied locally while down; the
    /// same as the store's.
    pub tick_ms: i64,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            read_budget: Duration::from_millis(20),
            write_budget: Duration::from_secs(1),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(10),
            buffer_capacity: 100_000,
            flush_batch: 500,
            last_known_campaigns: 10_000,
            last_known_holders: 10_000,
            tick_ms: crate::DEFAULT_TICK_MS,
        }
    }
}

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// The store, just now.
    Store,
    /// The last value this process read from (or wrote to) the store.
    LastKnown,
    /// Not known: the store did not answer and there is no last-known value.
    Unknown,
}

/// A value with its [`Source`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sourced<T> {
    /// Read from the store just now.
    Store(T),
    /// The last-known value (the store did not answer).
    LastKnown(T),
    /// Not known.
    Unknown,
}

impl<T> Sourced<T> {
    /// The value, if known.
    pub fn value(&self) -> Option<&T> {
        match self {
            Self::Store(v) | Self::LastKnown(v) => Some(v),
            Self::Unknown => None,
        }
    }

    /// The value, if known.
    pub fn into_value(self) -> Option<T> {
        match self {
            Self::Store(v) | Self::LastKnown(v) => Some(v),
            Self::Unknown => None,
        }
    }

    /// Where it came from.
    pub fn source(&self) -> Source {
        match self {
            Self::Store(_) => Source::Store,
            Self::LastKnown(_) => Source::LastKnown,
            Self::Unknown => Source::Unknown,
        }
    }
}

/// The answer of [`Guarded::read`], aligned with the query's slices like
/// [`StateSnapshot`], each value with its source.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardedSnapshot {
    /// `Store` when the store answered (every value is then `Store`),
    /// `LastKnown` when it did not.
    pub source: Source,
    /// Per `query.campaigns[i]`.
    pub campaigns: Vec<Sourced<CampaignState>>,
    /// Per `query.tracks[i]`; `Unknown` when the store did not answer.
    pub impressions_24h: Vec<Sourced<u32>>,
    /// Per `query.tracks[i]`; `Unknown` when the store did not answer.
    pub session_promoted: Vec<Sourced<u32>>,
    /// Per `query.holders[i]` (see [`StateSnapshot::exposure_share_7d`]).
    pub exposure_share_7d: Vec<Sourced<Option<f64>>>,
}

/// The answer of [`Guarded::record`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordOutcome {
    /// What the store answered, when the events were written through.
    pub stored: Option<Recorded>,
    /// Events queued for when the store is back.
    pub buffered: u64,
    /// Events lost because the queue was full: answer 503 with Retry-After.
    pub dropped: u64,
    /// Events not taken because a local store cannot make them durable now
    /// (its writes fail or overrun their budget): answer 503 with
    /// Retry-After. Some may have landed; the retry is de-duplicated.
    pub refused: u64,
}

/// The answer of [`Guarded::write_pacing`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacingOutcome {
    /// Per write, whether it was applied.
    pub applied: Vec<bool>,
    /// `Store`, or `LastKnown` when applied to the local cache only (the
    /// store was down).
    pub source: Source,
}

/// The state of the store as [`Guarded`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthState {
    /// The store answers; nothing is queued.
    Ok,
    /// The store failed (or is back but the queue is still being flushed).
    Degraded {
        /// When it started, unix milliseconds (this machine's clock).
        since_unix_ms: i64,
        /// The last error.
        last_error: String,
        /// The store answers again and the queued events are being flushed.
        recovering: bool,
    },
}

/// Counters since [`Guarded::new`] (monotonic, for Prometheus counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Reads answered by the store.
    pub read_ok: u64,
    /// Reads answered from the last-known cache (the store failed or was
    /// skipped by the breaker).
    pub read_fallback: u64,
    /// Reads that failed or timed out at the store.
    pub read_errors: u64,
    /// Writes (record, pacing, flush) that failed or timed out.
    pub write_errors: u64,
    /// Events queued while the store was down.
    pub events_buffered: u64,
    /// Events dropped because the queue was full.
    pub events_dropped: u64,
    /// Events refused by a local store that could not make them durable.
    pub events_refused: u64,
    /// Queued events later written to the store.
    pub events_flushed: u64,
    /// Pacing steps applied (in the store or locally).
    pub pacing_applied: u64,
    /// Pacing steps refused by the write rule.
    pub pacing_refused: u64,
}

/// A snapshot of [`Guarded`]'s view of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// `embedded` or `redis`.
    pub kind: &'static str,
    /// Ok or degraded.
    pub state: HealthState,
    /// Events queued now.
    pub queued_events: u64,
    /// Counters.
    pub counters: Counters,
}

#[derive(Default)]
struct AtomicCounters {
    read_ok: AtomicU64,
    read_fallback: AtomicU64,
    read_errors: AtomicU64,
    write_errors: AtomicU64,
    events_buffered: AtomicU64,
    events_dropped: AtomicU64,
    events_refused: AtomicU64,
    events_flushed: AtomicU64,
    pacing_applied: AtomicU64,
    pacing_refused: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

enum Mode {
    Ok,
    /// Skipping the store until `retry_at`, then probing.
    Open {
        since: SystemTime,
        last_error: String,
        retry_at: Instant,
        backoff: Duration,
    },
    /// The store answers; the queue is being flushed.
    Recovering {
        since: SystemTime,
        last_error: String,
    },
}

struct Shared {
    mode: Mode,
    queue: VecDeque<DeliveryEvent>,
    flushing: bool,
}

struct LastKnown {
    campaigns: LruCache<String, CampaignState>,
    holders: LruCache<String, Option<f64>>,
}

struct Inner {
    store: Arc<dyn StateStore>,
    config: GuardConfig,
    shared: Mutex<Shared>,
    probing: AtomicBool,
    /// Reads over budget in a row (reset by a read in budget), and when
    /// the streak began.
    slow_reads: std::sync::atomic::AtomicU32,
    slow_since: Mutex<Option<Instant>>,
    last_known: Mutex<LastKnown>,
    counters: AtomicCounters,
}

/// Reads over budget in a row that, lasting [`SLOW_STREAK_TO_TRIP`], open
/// the breaker (an error opens it at once).
pub const SLOW_READS_TO_TRIP: u32 = 5;

/// How long reads must have been over budget without a break before the
/// breaker opens.
pub const SLOW_STREAK_TO_TRIP: Duration = Duration::from_secs(2);

/// A [`StateStore`] with a read budget, last-known fallback, circuit breaker
/// and event queue (see the [module docs](self)). Cheap to clone; clones
/// share everything.
///
/// ```no_run
/// # async fn demo() -> Result<(), oasis_state::StoreError> {
/// use std::sync::Arc;
/// use oasis_state::{GuardConfig, Guarded, RedisConfig, RedisStore};
/// let store = RedisStore::connect_lazy(RedisConfig::new("redis://127.0.0.1:6379"))?;
/// let state = Guarded::new(Arc::new(store), GuardConfig::default());
/// let outcome = state.record(&[]).await;
/// if outcome.dropped + outcome.refused > 0 { /* 503, Retry-After */ }
/// println!("{:?}", state.health().state);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Guarded {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Guarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("kind", &self.inner.store.kind())
            .finish()
    }
}

fn cap(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n.max(1)).expect("at least 1")
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Guarded {
    /// Wraps `store`. Needs a tokio runtime when used (the queue is flushed
    /// by a spawned task).
    pub fn new(store: Arc<dyn StateStore>, config: GuardConfig) -> Self {
        let last_known = LastKnown {
            campaigns: LruCache::new(cap(config.last_known_campaigns)),
            holders: LruCache::new(cap(config.last_known_holders)),
        };
        Self {
            inner: Arc::new(Inner {
                store,
                config,
                shared: Mutex::new(Shared {
                    mode: Mode::Ok,
                    queue: VecDeque::new(),
                    flushing: false,
                }),
                probing: AtomicBool::new(false),
                slow_reads: Default::default(),
                slow_since: Mutex::new(None),
                last_known: Mutex::new(last_known),
                counters: AtomicCounters::default(),
            }),
        }
    }

    /// The wrapped store.
    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.inner.store
    }

    /// Reads the state for one request; never fails (see the module docs).
    pub async fn read(&self, q: &StateQuery<'_>) -> GuardedSnapshot {
        let inner = &self.inner;
        if inner.store.is_local() {
            // Memory: no budget to protect and no breaker to consult.
            match inner.store.read(q).await {
                Ok(snap) => {
                    bump(&inner.counters.read_ok, 1);
                    self.remember(q, &snap);
                    return from_store(snap);
                }
                Err(e) => {
                    bump(&inner.counters.read_errors, 1);
                    warn!(store = inner.store.kind(), error = %e, "state store read failed; using last-known state");
                }
            }
        } else if self.admit().await {
            match tokio::time::timeout(inner.config.read_budget, inner.store.read(q)).await {
                Ok(Ok(snap)) => {
                    bump(&inner.counters.read_ok, 1);
                    inner.slow_reads.store(0, Ordering::Relaxed);
                    *inner.slow_since.lock() = None;
                    self.remember(q, &snap);
                    return from_store(snap);
                }
                Ok(Err(e)) => {
                    bump(&inner.counters.read_errors, 1);
                    self.failed(&e.to_string());
                }
                Err(_) => {
                    bump(&inner.counters.read_errors, 1);
                    let slow = inner.slow_reads.fetch_add(1, Ordering::Relaxed) + 1;
                    let lasted = inner
                        .slow_since
                        .lock()
                        .get_or_insert_with(Instant::now)
                        .elapsed();
                    if slow >= SLOW_READS_TO_TRIP && lasted >= SLOW_STREAK_TO_TRIP {
                        inner.slow_reads.store(0, Ordering::Relaxed);
                        *inner.slow_since.lock() = None;
                        self.failed(&format!(
                            "{slow} reads in a row took more than {:?}",
                            inner.config.read_budget
                        ));
                    }
                }
            }
        }
        bump(&inner.counters.read_fallback, 1);
        self.last_known_snapshot(q)
    }

    /// Records events: written through when the store is up, queued when it
    /// is down (or while earlier queued events are still being flushed, to
    /// keep the order).
    pub async fn record(&self, events: &[DeliveryEvent]) -> RecordOutcome {
        if events.is_empty() {
            return RecordOutcome::default();
        }
        let inner = &self.inner;
        let usable = self.admit().await;
        if inner.store.is_local() {
            return self.record_local(usable, events).await;
        }
        {
            let mut shared = inner.shared.lock();
            if !(usable && matches!(shared.mode, Mode::Ok) && shared.queue.is_empty()) {
                return self.enqueue(&mut shared, events);
            }
        }
        match tokio::time::timeout(inner.config.write_budget, inner.store.record(events)).await {
            Ok(Ok(r)) => RecordOutcome {
                stored: Some(r),
                ..Default::default()
            },
            failure => {
                bump(&inner.counters.write_errors, 1);
                self.failed(&match failure {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("record took more than {:?}", inner.config.write_budget),
                });
                // Some may have landed; the replay is de-duplicated by id.
                let mut shared = inner.shared.lock();
                self.enqueue(&mut shared, events)
            }
        }
    }

    /// [`Guarded::record`] for a local store: written through, or refused
    /// whole; never held in memory.
    async fn record_local(&self, usable: bool, events: &[DeliveryEvent]) -> RecordOutcome {
        let inner = &self.inner;
        if usable {
            match tokio::time::timeout(inner.config.write_budget, inner.store.record(events)).await
            {
                Ok(Ok(r)) => {
                    return RecordOutcome {
                        stored: Some(r),
                        ..Default::default()
                    };
                }
                failure => {
                    bump(&inner.counters.write_errors, 1);
                    self.failed(&match failure {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("record took more than {:?}", inner.config.write_budget),
                    });
                }
            }
        }
        let n = events.len() as u64;
        bump(&inner.counters.events_refused, n);
        tracing::debug!(
            store = inner.store.kind(),
            events = n,
            "events refused: the store cannot make them durable now"
        );
        RecordOutcome {
            refused: n,
            ..Default::default()
        }
    }

    /// Applies pacing steps under the write rule: in the store when it is
    /// up, to the last-known cache when it is down (not replayed later; see
    /// the module docs).
    pub async fn write_pacing(&self, writes: &[PacingWrite]) -> PacingOutcome {
        let inner = &self.inner;
        if self.admit().await {
            match tokio::time::timeout(inner.config.write_budget, inner.store.write_pacing(writes))
                .await
            {
                Ok(Ok(applied)) => {
                    let mut lk = inner.last_known.lock();
                    for (w, ok) in writes.iter().zip(&applied) {
                        if *ok {
                            let mut c = lk
                                .campaigns
                                .get(&w.campaign_id)
                                .copied()
                                .unwrap_or_default();
                            c.pacing = Some(pacing_of(w));
                            lk.campaigns.put(w.campaign_id.clone(), c);
                        }
                    }
                    drop(lk);
                    self.count_pacing(&applied);
                    return PacingOutcome {
                        applied,
                        source: Source::Store,
                    };
                }
                failure => {
                    bump(&inner.counters.write_errors, 1);
                    self.failed(&match failure {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!(
                            "pacing write took more than {:?}",
                            inner.config.write_budget
                        ),
                    });
                }
            }
        }
        let mut lk = inner.last_known.lock();
        let applied: Vec<bool> = writes
            .iter()
            .map(|w| match lk.campaigns.get_mut(&w.campaign_id) {
                Some(c) => {
                    let stored = c.pacing.map_or(0, |p| p.updated_ms);
                    let ok = model::pacing_applies(stored, w, inner.config.tick_ms);
                    if ok {
                        c.pacing = Some(pacing_of(w));
                    }
                    ok
                }
                None => false,
            })
            .collect();
        drop(lk);
        self.count_pacing(&applied);
        PacingOutcome {
            applied,
            source: Source::LastKnown,
        }
    }

    /// The state and counters, for `/readyz`, status and metrics.
    pub fn health(&self) -> Health {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let shared = self.inner.shared.lock();
        let state = match &shared.mode {
            Mode::Ok => HealthState::Ok,
            Mode::Open {
                since, last_error, ..
            } => HealthState::Degraded {
                since_unix_ms: unix_ms(*since),
                last_error: last_error.clone(),
                recovering: false,
            },
            Mode::Recovering { since, last_error } => HealthState::Degraded {
                since_unix_ms: unix_ms(*since),
                last_error: last_error.clone(),
                recovering: true,
            },
        };
        Health {
            kind: self.inner.store.kind(),
            state,
            queued_events: shared.queue.len() as u64,
            counters: Counters {
                read_ok: get(&c.read_ok),
                read_fallback: get(&c.read_fallback),
                read_errors: get(&c.read_errors),
                write_errors: get(&c.write_errors),
                events_buffered: get(&c.events_buffered),
                events_dropped: get(&c.events_dropped),
                events_refused: get(&c.events_refused),
                events_flushed: get(&c.events_flushed),
                pacing_applied: get(&c.pacing_applied),
                pacing_refused: get(&c.pacing_refused),
            },
        }
    }

    /// Whether to use the store now: yes when closed or recovering; when
    /// open, only once the backoff has passed and a `ping` (by one caller at
    /// a time) succeeds.
    async fn admit(&self) -> bool {
        let inner = &self.inner;
        {
            let shared = inner.shared.lock();
            match &shared.mode {
                Mode::Ok | Mode::Recovering { .. } => return true,
                Mode::Open { retry_at, .. } if Instant::now() < *retry_at => return false,
                Mode::Open { .. } => {}
            }
        }
        if inner.probing.swap(true, Ordering::AcqRel) {
            return false; // another caller is probing
        }
        let probe = tokio::time::timeout(inner.config.read_budget, inner.store.ping()).await;
        let ok = match probe {
            Ok(Ok(())) => {
                self.recovered();
                true
            }
            Ok(Err(e)) => {
                self.probe_failed(e.to_string());
                false
            }
            Err(_) => {
                self.probe_failed(format!(
                    "ping took more than {:?}",
                    inner.config.read_budget
                ));
                false
            }
        };
        inner.probing.store(false, Ordering::Release);
        ok
    }

    /// Opens the breaker (or records the error if already open).
    fn failed(&self, error: &str) {
        let config = &self.inner.config;
        let mut shared = self.inner.shared.lock();
        let since = match &shared.mode {
            Mode::Ok => {
                warn!(store = self.inner.store.kind(), error, backoff = ?config.backoff_initial, "state store failed; using last-known state");
                SystemTime::now()
            }
            Mode::Recovering { since, .. } | Mode::Open { since, .. } => *since,
        };
        let backoff = match &shared.mode {
            Mode::Open { backoff, .. } => *backoff,
            _ => config.backoff_initial,
        };
        shared.mode = Mode::Open {
            since,
            last_error: error.to_string(),
            retry_at: Instant::now() + backoff,
            backoff,
        };
    }

    fn probe_failed(&self, error: String) {
        let max = self.inner.config.backoff_max;
        let mut shared = self.inner.shared.lock();
        if let Mode::Open {
            backoff,
            retry_at,
            last_error,
            ..
        } = &mut shared.mode
        {
            *backoff = (*backoff * 2).min(max);
            *retry_at = Instant::now() + *backoff;
            *last_error = error;
        }
    }

    fn recovered(&self) {
        let mut shared = self.inner.shared.lock();
        let Mode::Open {
            since, last_error, ..
        } = &shared.mode
        else {
            return;
        };
        let (since, last_error) = (*since, last_error.clone());
        if shared.queue.is_empty() {
            shared.mode = Mode::Ok;
            info!(store = self.inner.store.kind(), "state store is back");
        } else {
            info!(
                store = self.inner.store.kind(),
                queued = shared.queue.len(),
                "state store is back; flushing queued events"
            );
            shared.mode = Mode::Recovering { since, last_error };
            if !shared.flushing {
                shared.flushing = true;
                tokio::spawn(self.clone().flush());
            }
        }
    }

    /// Writes the queue to the store in order, a batch at a time; closes the
    /// breaker once it is empty, reopens it on a failure.
    async fn flush(self) {
        let inner = &self.inner;
        loop {
            let batch: Vec<DeliveryEvent> = {
                let mut shared = inner.shared.lock();
                if !matches!(shared.mode, Mode::Recovering { .. }) {
                    shared.flushing = false;
                    return;
                }
                if shared.queue.is_empty() {
                    shared.mode = Mode::Ok;
                    shared.flushing = false;
                    info!(
                        store = inner.store.kind(),
                        "queued events flushed; state store ok"
                    );
                    return;
                }
                let n = shared.queue.len().min(inner.config.flush_batch.max(1));
                shared.queue.range(..n).cloned().collect()
            };
            match tokio::time::timeout(inner.config.write_budget, inner.store.record(&batch)).await
            {
                Ok(Ok(_)) => {
                    // Only this task removes from the front; others push to the back.
                    inner.shared.lock().queue.drain(..batch.len());
                    bump(&inner.counters.events_flushed, batch.len() as u64);
                }
                failure => {
                    bump(&inner.counters.write_errors, 1);
                    let error = match failure {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("flush took more than {:?}", inner.config.write_budget),
                    };
                    self.failed(&error);
                    inner.shared.lock().flushing = false;
                    return;
                }
            }
        }
    }

    fn enqueue(&self, shared: &mut Shared, events: &[DeliveryEvent]) -> RecordOutcome {
        let room = self
            .inner
            .config
            .buffer_capacity
            .saturating_sub(shared.queue.len());
        let taken = events.len().min(room);
        shared.queue.extend(events[..taken].iter().cloned());
        let dropped = (events.len() - taken) as u64;
        bump(&self.inner.counters.events_buffered, taken as u64);
        if dropped > 0 {
            bump(&self.inner.counters.events_dropped, dropped);
            warn!(
                store = self.inner.store.kind(),
                dropped, "state store down and event queue full; events dropped"
            );
        }
        // Keep the local delivered counts moving, so local pacing sees
        // delivery (approximate: not de-duplicated; replaced by the store's
        // count on the next successful read).
        let mut lk = self.inner.last_known.lock();
        for e in &events[..taken] {
            if let Some(c) = model::effects(e).delivered
                && let Some(state) = lk.campaigns.get_mut(c)
            {
                state.delivered += 1;
            }
        }
        RecordOutcome {
            stored: None,
            buffered: taken as u64,
            dropped,
            refused: 0,
        }
    }

    /// Keeps what a read returned as the last-known values. Runs on every
    /// scored request: a key already kept (most are: the same campaigns and
    /// holders come back request after request) is updated in place,
    /// without allocating its key again.
    fn remember(&self, q: &StateQuery<'_>, snap: &StateSnapshot) {
        let mut lk = self.inner.last_known.lock();
        for (c, state) in q.campaigns.iter().zip(&snap.campaigns) {
            match lk.campaigns.get_mut(*c) {
                Some(kept) => *kept = *state,
                None => {
                    lk.campaigns.put((*c).to_string(), *state);
                }
            }
        }
        for (h, share) in q.holders.iter().zip(&snap.exposure_share_7d) {
            match lk.holders.get_mut(*h) {
                Some(kept) => *kept = *share,
                None => {
                    lk.holders.put((*h).to_string(), *share);
                }
            }
        }
    }

    fn last_known_snapshot(&self, q: &StateQuery<'_>) -> GuardedSnapshot {
        let mut lk = self.inner.last_known.lock();
        GuardedSnapshot {
            source: Source::LastKnown,
            campaigns: q
                .campaigns
                .iter()
                .map(|c| known(lk.campaigns.get(*c).copied()))
                .collect(),
            exposure_share_7d: q
                .holders
                .iter()
                .map(|h| known(lk.holders.get(*h).copied()))
                .collect(),
            impressions_24h: vec![Sourced::Unknown; q.tracks.len()],
            session_promoted: vec![Sourced::Unknown; q.tracks.len()],
        }
    }

    fn count_pacing(&self, applied: &[bool]) {
        let ok = applied.iter().filter(|a| **a).count() as u64;
        bump(&self.inner.counters.pacing_applied, ok);
        bump(
            &self.inner.counters.pacing_refused,
            applied.len() as u64 - ok,
        );
    }
}

fn known<T>(v: Option<T>) -> Sourced<T> {
    v.map_or(Sourced::Unknown, Sourced::LastKnown)
}

fn pacing_of(w: &PacingWrite) -> PacingState {
    PacingState {
        integral: w.integral,
        last_error: w.last_error,
        updated_ms: w.at_ms,
    }
}

fn from_store(s: StateSnapshot) -> GuardedSnapshot {
    GuardedSnapshot {
        source: Source::Store,
        campaigns: s.campaigns.into_iter().map(Sourced::Store).collect(),
        impressions_24h: s.impressions_24h.into_iter().map(Sourced::Store).collect(),
        session_promoted: s.session_promoted.into_iter().map(Sourced::Store).collect(),
        exposure_share_7d: s
            .exposure_share_7d
            .into_iter()
            .map(Sourced::Store)
            .collect(),
    }
}
