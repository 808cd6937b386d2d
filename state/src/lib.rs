//! # oasis-state: the delivery state Oasis keeps between requests
//!
//! Pacing, frequency caps and exposure fairness need state that outlives a
//! request. Oasis counts what was delivered (from the events PZN sends to
//! `POST /v1/events`) and carries the pacing controller's state (from the
//! served policy's `campaign-updates`), and fills both into the requests it
//! scores where the caller does not send them.
//!
//! | what | key | window |
//! |---|---|---|
//! | promoted impressions delivered | campaign | the campaign's life |
//! | pacing controller state (integral, last error, updated at) | campaign | latest |
//! | promoted impressions | listener × track | sliding 24 h |
//! | promoted plays (streams) | session × track | the session (idle expiry) |
//! | attention received (share of all) | rights holder | sliding 7 days |
//!
//! Time is the caller's: windows slide on the events' `at_ms` and the
//! requests' `timestamp_ms`, not on this machine's clock, so a simulation in
//! compressed time and a replay see the same state as production would.
//!
//! [`StateStore`] is the one interface; the embedded store (one machine, no
//! setup, survives kill -9) and the Redis store (many replicas) implement
//! it, and one test suite runs against both. The host calls them through
//! [`Guarded`], which bounds the time a read may take, falls back to the
//! last-known values, skips a dead store (circuit breaker) and buffers events
//! until it returns.
//!
//! ```no_run
//! # async fn demo() -> Result<(), oasis_state::StoreError> {
//! use std::sync::Arc;
//! use oasis_state::{EmbeddedConfig, EmbeddedStore, GuardConfig, Guarded, StateQuery};
//!
//! let store = EmbeddedStore::open(EmbeddedConfig::new("deploy/state"))?;
//! let state = Guarded::new(Arc::new(store), GuardConfig::default());
//! let snapshot = state
//!     .read(&StateQuery {
//!         now_ms: 1_700_000_000_000,
//!         listener_id: "l1",
//!         session_id: "s1",
//!         tracks: &["t1", "t2"],
//!         campaigns: &["c1"],
//!         holders: &["h1"],
//!     })
//!     .await;
//! println!("{:?} impressions of t1 in 24 h", snapshot.impressions_24h[0].value());
//! # Ok(()) }
//! ```

use async_trait::async_trait;

pub mod embedded;
pub mod guarded;
mod model;
pub mod redis;

pub use embedded::{EmbeddedConfig, EmbeddedStore};
pub use guarded::{
    Counters, GuardConfig, Guarded, GuardedSnapshot, Health, HealthState, PacingOutcome,
    RecordOutcome, SLOW_READS_TO_TRIP, SLOW_STREAK_TO_TRIP, Source, Sourced,
};
pub use redis::{RedisConfig, RedisStore};

/// The listener × track promoted-impression window: 24 h.
pub const IMPRESSION_WINDOW_MS: i64 = 24 * 3_600_000;
/// The rights-holder exposure window in hour buckets: 7 days.
pub const EXPOSURE_WINDOW_HOURS: i64 = 7 * 24;
/// The default pacing tick: one controller step per campaign per second.
pub const DEFAULT_TICK_MS: i64 = 1_000;
/// The default idle time after which a session's plays are forgotten: 24 h.
pub const DEFAULT_SESSION_IDLE_MS: i64 = 24 * 3_600_000;
/// The default time an event id is remembered for de-duplication: 24 h.
pub const DEFAULT_DEDUP_WINDOW_MS: i64 = 24 * 3_600_000;
/// How far ahead of the server's clock an event's `at_ms` or a request's
/// `timestamp_ms` may be: 5 minutes (clock skew between the caller and this
/// machine). The host refuses later times (422 naming the field), and the
/// embedded store never lets a later event move its expiry clock, so one
/// mis-dated event (a time in microseconds) cannot expire anyone's data.
pub const MAX_AHEAD_MS: i64 = 5 * 60_000;

/// This machine's clock, unix milliseconds (0 before 1970).
pub fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// At most this many impression timestamps are kept per listener × track
/// (the newest); counts above it are reported as this number. Frequency caps
/// are far below it.
pub const MAX_IMPRESSIONS_PER_PAIR: usize = 64;

/// What one scoring request needs from the store. Every slice may be empty;
/// ids are the caller's (track ids are candidate ids).
#[derive(Debug, Clone, Copy)]
pub struct StateQuery<'a> {
    /// The request's time (`context.timestamp_ms`): the end of every window.
    pub now_ms: i64,
    /// Whose promoted impressions to count.
    pub listener_id: &'a str,
    /// Whose promoted plays to count.
    pub session_id: &'a str,
    /// Tracks to count impressions and plays of (may repeat).
    pub tracks: &'a [&'a str],
    /// Campaigns to read delivery and pacing state of.
    pub campaigns: &'a [&'a str],
    /// Rights holders to read the 7-day exposure share of.
    pub holders: &'a [&'a str],
}

/// The store's answer to a [`StateQuery`], aligned with its slices.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateSnapshot {
    /// Per `query.campaigns[i]`.
    pub campaigns: Vec<CampaignState>,
    /// Promoted impressions of `query.tracks[i]` to the listener in the 24 h
    /// up to `now_ms`.
    pub impressions_24h: Vec<u32>,
    /// Promoted plays of `query.tracks[i]` in the session.
    pub session_promoted: Vec<u32>,
    /// Share of all attention `query.holders[i]` received in the 7 days up
    /// to `now_ms`, in [0, 1]; `None` when nothing was recorded in that
    /// window (no attention at all, for anyone).
    pub exposure_share_7d: Vec<Option<f64>>,
}

/// Delivery state of one campaign.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CampaignState {
    /// Promoted impressions delivered so far (all time).
    pub delivered: u64,
    /// The pacing controller's state, `None` before its first update.
    pub pacing: Option<PacingState>,
}

/// The pacing controller's state of one campaign.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PacingState {
    /// Leaky integral of the normalized delivery error.
    pub integral: f64,
    /// The previous error.
    pub last_error: f64,
    /// The request time (`timestamp_ms`) of the update that wrote it.
    pub updated_ms: i64,
}

/// What a listener did with a track; see [`DeliveryEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The track was shown.
    Impression,
    /// The track was streamed.
    Stream,
    /// The track was skipped.
    Skip,
    /// The track was saved.
    Save,
}

/// One delivery event, validated by the caller of the store (`/v1/events`).
///
/// What it changes (once per `id`; a repeated id changes nothing):
/// * an `Impression` with `promoted` and a `campaign_id`: that campaign's
///   delivered count +1;
/// * an `Impression` with `promoted`: the listener's promoted impressions
///   of `track_id` at `at_ms` (24 h window);
/// * a `Stream` with `promoted`: the session's promoted plays of `track_id`;
/// * an `Impression` with a `rights_holder` and a `position` (1-based rank
///   shown): attention `1 / log2(1 + position)` to that holder at `at_ms`
///   (7-day window), promoted or not;
/// * `Skip` and `Save` change no delivery state (they are outcomes for
///   offline evaluation only).
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryEvent {
    /// Unique id of the event, for de-duplication (retries are safe).
    pub id: String,
    /// What happened.
    pub kind: EventKind,
    /// When, unix milliseconds (the caller's clock).
    pub at_ms: i64,
    /// Who.
    pub listener_id: String,
    /// In which session.
    pub session_id: String,
    /// Which track (the candidate id).
    pub track_id: String,
    /// The track's campaign, if it had one.
    pub campaign_id: Option<String>,
    /// The track's rights holder, if known.
    pub rights_holder: Option<String>,
    /// Whether the track was shown as a promotion.
    pub promoted: bool,
    /// 1-based rank at which it was shown, if known.
    pub position: Option<u32>,
}

/// The answer to [`StateStore::record`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Events applied.
    pub applied: u64,
    /// Events whose id was already recorded (nothing changed).
    pub duplicates: u64,
}

/// A pacing controller step proposed by the served policy for one campaign.
///
/// **The write rule** (one controller step per campaign per tick): the step
/// is applied only if the stored state is still the one the policy read
/// (`stored.updated_ms == based_on_ms`, with 0 meaning "no state yet") and
/// `at_ms` falls in a later tick than the stored update
/// (`at_ms / tick_ms > stored.updated_ms / tick_ms`). Concurrent requests for
/// one campaign read the same state and propose steps from it; exactly one
/// of them lands per tick, the others are refused, so no update is lost
/// (each applied step was computed from the state it replaces) and the
/// integral cannot run away however many requests arrive.
#[derive(Debug, Clone, PartialEq)]
pub struct PacingWrite {
    /// The campaign.
    pub campaign_id: String,
    /// `updated_ms` of the state the policy read; 0 when it read none.
    pub based_on_ms: i64,
    /// The request's time: the new `updated_ms`.
    pub at_ms: i64,
    /// New integral.
    pub integral: f64,
    /// New last error.
    pub last_error: f64,
}

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store did not answer in time.
    #[error("the {store} store did not answer within {ms} ms")]
    Timeout {
        /// `embedded` or `redis`.
        store: &'static str,
        /// The budget.
        ms: u64,
    },
    /// The store is unreachable or failed (connection refused, I/O error...).
    #[error("the {store} store failed: {message}")]
    Unavailable {
        /// `embedded` or `redis`.
        store: &'static str,
        /// What happened.
        message: String,
    },
    /// The stored data could not be read back (corrupt or foreign data).
    #[error("the {store} store holds data it cannot read at {key}: {message}")]
    Corrupt {
        /// `embedded` or `redis`.
        store: &'static str,
        /// Where.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// The one interface of delivery-state stores.
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// `embedded` or `redis`, for logs, metrics and status.
    fn kind(&self) -> &'static str;

    /// Everything one request needs, in one round trip where the store has
    /// round trips.
    async fn read(&self, query: &StateQuery<'_>) -> Result<StateSnapshot, StoreError>;

    /// Applies delivery events (see [`DeliveryEvent`]), each once per id.
    async fn record(&self, events: &[DeliveryEvent]) -> Result<Recorded, StoreError>;

    /// Applies pacing steps under the write rule of [`PacingWrite`];
    /// returns, per write, whether it was applied.
    async fn write_pacing(&self, writes: &[PacingWrite]) -> Result<Vec<bool>, StoreError>;

    /// Cheap liveness check (used to notice recovery).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Whether this store answers reads from this process's memory and
    /// makes writes durable before they return (the embedded store).
    /// [`Guarded`] then never switches its reads off (a slow disk cannot
    /// make them slow, and frequency caps need them), and never holds
    /// events in memory to acknowledge them (a crash would lose what was
    /// acknowledged): while writes fail or overrun their budget, events are
    /// refused and the caller retries.
    fn is_local(&self) -> bool {
        false
    }
}
