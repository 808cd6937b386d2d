//! The embedded store: one machine, no setup, survives kill -9.
//!
//! **Why two copies.** Reads are on the scoring hot path (a request reads
//! ~300 tracks, a few campaigns and holders), so they are answered from
//! in-memory maps under short read locks, with no disk I/O. The durable copy
//! is a [redb](https://docs.rs/redb) database (ACID, copy-on-write, checksummed
//! commits): `record` and `write_pacing` commit to it (fsync) *before* they
//! return and only then update memory, so everything a caller was told is
//! recorded survives a crash, kill -9 included. At [`EmbeddedStore::open`]
//! the whole database is loaded into memory.
//!
//! Writes are serialized (one redb write transaction at a time) and run on
//! tokio's blocking pool; reads never wait for the disk, only, briefly, for
//! the memory update of a write to the same shard.
//!
//! **Bounds** (memory and disk hold the same data):
//! * listener × track: at most [`MAX_IMPRESSIONS_PER_PAIR`] timestamps, only
//!   those of the last 24 h (trimmed on every write to the pair); a pair with
//!   nothing left in the window is removed by the hourly compaction;
//! * sessions: removed once idle for [`EmbeddedConfig::session_idle_ms`];
//! * rights holders: one counter per holder per hour, hours older than 7 days
//!   removed by the hourly compaction;
//! * event ids (de-duplication): kept for [`EmbeddedConfig::dedup_window_ms`]
//!   of the server's clock after they were recorded, as Redis keeps them
//!   (one rule for both stores, however late an event's own time), and at
//!   most [`EmbeddedConfig::dedup_max_ids`] (oldest forgotten first);
//! * campaigns: one entry each, kept (a campaign's delivered count is for its
//!   whole life).
//!
//! "Old" listener, session and holder data is measured on event time: the
//! compaction runs when the newest event time seen enters a new hour and
//! expires relative to that newest time. Reads always apply the windows
//! themselves, so expiry only bounds memory and never changes an answer. An
//! event more than [`MAX_AHEAD_MS`](crate::MAX_AHEAD_MS) ahead of the
//! server's clock is applied but never moves that newest time, so one
//! mis-dated event cannot expire anyone else's data.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use tracing::{debug, info};

use crate::model::{self, hour_of};
use crate::{
    CampaignState, DeliveryEvent, MAX_IMPRESSIONS_PER_PAIR, PacingState, PacingWrite, Recorded,
    StateQuery, StateSnapshot, StateStore, StoreError,
};

const STORE: &str = "embedded";
/// The file name used when [`EmbeddedConfig::path`] is a directory.
pub const DEFAULT_FILE_NAME: &str = "oasis-state.redb";
/// Written into every database this store creates; a database without it is
/// someone else's and is refused.
const SCHEMA: &str = "oasis-state/1";

const META: TableDefinition<&str, &str> = TableDefinition::new("oasis_meta");
/// campaign → (delivered, has pacing, integral, last error, updated_ms)
const CAMPAIGNS: TableDefinition<&str, (u64, bool, f64, f64, i64)> =
    TableDefinition::new("campaigns");
/// (listener, track) → promoted impression times, little-endian i64s
const IMPRESSIONS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("impressions");
/// session → time of its latest promoted play
const SESSIONS: TableDefinition<&str, i64> = TableDefinition::new("sessions");
/// (session, track) → promoted plays
const SESSION_PLAYS: TableDefinition<(&str, &str), u32> = TableDefinition::new("session_plays");
/// (holder, hour) → attention (fixed point)
const ATTENTION: TableDefinition<(&str, i64), u64> = TableDefinition::new("attention");
/// hour → attention of all holders (fixed point)
const ATTENTION_TOTAL: TableDefinition<i64, u64> = TableDefinition::new("attention_total");
/// event id → when it was recorded (the server's clock, unix ms); databases
/// written before that rule hold the event's `at_ms`, read the same way
const DEDUP: TableDefinition<&str, i64> = TableDefinition::new("dedup");

const SHARDS: usize = 32;

/// Configuration of the [`EmbeddedStore`].
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// The database file, or a directory to keep [`DEFAULT_FILE_NAME`] in
    /// (e.g. `deploy/state`). Missing directories are created.
    pub path: PathBuf,
    /// The pacing tick (see [`PacingWrite`]); at least 1.
    pub tick_ms: i64,
    /// A session idle this long (event time) is forgotten.
    pub session_idle_ms: i64,
    /// Event ids are remembered this long (the server's clock, from when
    /// they were recorded) for de-duplication.
    pub dedup_window_ms: i64,
    /// At most this many event ids are remembered (~100 bytes each in memory
    /// and on disk); the oldest are forgotten first.
    pub dedup_max_ids: usize,
    /// The server's clock, unix milliseconds: when an id was recorded (for
    /// the de-dup window) and the bound on event times that may move the
    /// expiry clock. [`crate::unix_now_ms`] but in tests.
    pub clock: fn() -> i64,
}

impl EmbeddedConfig {
    /// Defaults (1 s tick, 24 h session idle and de-dup window, 1M ids) at
    /// `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            tick_ms: crate::DEFAULT_TICK_MS,
            session_idle_ms: crate::DEFAULT_SESSION_IDLE_MS,
            dedup_window_ms: crate::DEFAULT_DEDUP_WINDOW_MS,
            dedup_max_ids: 1_000_000,
            clock: crate::unix_now_ms,
        }
    }
}

/// The embedded store (see the [module docs](self)). Cheap to clone; clones
/// share the database.
///
/// ```no_run
/// # async fn demo() -> Result<(), oasis_state::StoreError> {
/// use oasis_state::{EmbeddedConfig, EmbeddedStore, StateStore};
/// let store = EmbeddedStore::open(EmbeddedConfig::new("deploy/state/oasis-state.redb"))?;
/// store.ping().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("file", &self.inner.file)
            .finish()
    }
}

struct Inner {
    config: EmbeddedConfig,
    file: PathBuf,
    db: redb::Database,
    mem: Memory,
    /// Held for the whole of a write (redb transaction + memory update):
    /// writes are serialized, and the de-dup set is only touched here.
    writer: Mutex<Writer>,
}

/// A map split into shards, each behind its own read-write lock, so that a
/// write to one listener does not stall reads of others.
struct Sharded<V> {
    shards: Box<[RwLock<HashMap<String, V>>]>,
    hasher: RandomState,
}

impl<V> Sharded<V> {
    fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }
    fn shard(&self, key: &str) -> &RwLock<HashMap<String, V>> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }
}

#[derive(Default)]
struct Session {
    last_at: i64,
    plays: HashMap<String, u32>,
}

#[derive(Default)]
struct Holders {
    by_holder: HashMap<String, BTreeMap<i64, u64>>,
    total: BTreeMap<i64, u64>,
}

struct Memory {
    /// listener → track → impression times (ascending)
    listeners: Sharded<HashMap<String, Vec<i64>>>,
    sessions: Sharded<Session>,
    campaigns: RwLock<HashMap<String, CampaignState>>,
    holders: RwLock<Holders>,
}

struct Writer {
    /// Id → when it was recorded (the server's clock).
    dedup: HashMap<Arc<str>, i64>,
    /// Ids in the order they were recorded, for expiry.
    dedup_order: VecDeque<Arc<str>>,
    /// The newest event time seen (not more than [`crate::MAX_AHEAD_MS`]
    /// ahead of the server's clock when seen): the clock of expiry.
    high_water_ms: i64,
    /// The hour of `high_water_ms` at the last compaction.
    compacted_hour: Option<i64>,
}

/// A change committed to the database, to be mirrored in memory.
enum Change {
    Campaign(String, CampaignState),
    Impressions(String, String, Vec<i64>),
    Play {
        session: String,
        track: String,
        plays: u32,
        last_at: i64,
    },
    Attention(String, i64, u64),
    AttentionTotal(i64, u64),
}

fn unavailable(file: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable {
        store: STORE,
        message: format!("{}: {e}", file.display()),
    }
}

fn storage_error(file: &Path, e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::Corrupted(m) => StoreError::Corrupt {
            store: STORE,
            key: file.display().to_string(),
            message: m,
        },
        e => unavailable(file, e),
    }
}

fn encode_times(ts: &[i64]) -> Vec<u8> {
    ts.iter().flat_map(|t| t.to_le_bytes()).collect()
}

fn decode_times(b: &[u8]) -> Option<Vec<i64>> {
    if !b.len().is_multiple_of(8) {
        return None;
    }
    Some(
        b.chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect(),
    )
}

fn campaign_row(c: &CampaignState) -> (u64, bool, f64, f64, i64) {
    match c.pacing {
        Some(p) => (c.delivered, true, p.integral, p.last_error, p.updated_ms),
        None => (c.delivered, false, 0.0, 0.0, 0),
    }
}

fn campaign_from_row(
    (delivered, has, integral, last_error, updated_ms): (u64, bool, f64, f64, i64),
) -> CampaignState {
    CampaignState {
        delivered,
        pacing: has.then_some(PacingState {
            integral,
            last_error,
            updated_ms,
        }),
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the database at `config.path` and loads it into
    /// memory. Blocking (it reads the whole file); call it at startup.
    ///
    /// Errors name the file: [`StoreError::Corrupt`] for a damaged file or one
    /// that is not an Oasis state database, [`StoreError::Unavailable`] for
    /// I/O errors or a database another process has open.
    pub fn open(config: EmbeddedConfig) -> Result<Self, StoreError> {
        let file = if config.path.is_dir() {
            config.path.join(DEFAULT_FILE_NAME)
        } else {
            config.path.clone()
        };
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| unavailable(dir, e))?;
        }
        let corrupt = |message: String| StoreError::Corrupt {
            store: STORE,
            key: file.display().to_string(),
            message,
        };
        // redb may panic on a file damaged outside redb unless the integrity
        // check runs at open; the check makes it an error, and the
        // catch_unwind is a last line against a foreign file.
        let opened = std::panic::catch_unwind(|| {
            redb::Database::builder()
                .set_check_integrity_on_open(true)
                .create(&file)
        });
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => {
                // The usual cause is a second server on the same policy
                // directory (the default state directory is inside it):
                // name the ways out, not only the symptom.
                return Err(unavailable(
                    &file,
                    "the database is open in another process (a second `oasis serve` on the same policy directory?); give this server its own `--state-dir`, share delivery state with `--state redis`, or serve without it with `--state off`",
                ));
            }
            Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Io(e)))) => {
                // A foreign file usually fails as a short read or bad header.
                return Err(
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::NotFound
                    ) {
                        unavailable(&file, e)
                    } else {
                        corrupt(format!("not a readable redb database ({e})"))
                    },
                );
            }
            Ok(Err(e)) => {
                return Err(corrupt(format!(
                    "not a readable Oasis state database ({e})"
                )));
            }
            Err(_) => {
                return Err(corrupt(
                    "not a readable Oasis state database (redb panicked opening it)".into(),
                ));
            }
        };
        check_schema(&db, &file)?;
        let started = std::time::Instant::now();
        let (mem, writer) = load(&db, &file, (config.clock)())?;
        info!(
            file = %file.display(),
            campaigns = mem.campaigns.read().len(),
            event_ids = writer.dedup.len(),
            ms = started.elapsed().as_millis() as u64,
            "embedded state store opened"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                file,
                db,
                mem,
                writer: Mutex::new(writer),
            }),
        })
    }

    /// The database file.
    pub fn file(&self) -> &Path {
        &self.inner.file
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| unavailable(&self.inner.file, format!("write task failed: {e}")))?
    }
}

/// Refuses databases that are not ours; stamps new ones.
fn check_schema(db: &redb::Database, file: &Path) -> Result<(), StoreError> {
    let foreign = |message: String| StoreError::Corrupt {
        store: STORE,
        key: file.display().to_string(),
        message,
    };
    let read = db.begin_read().map_err(|e| storage_error(file, e))?;
    let tables: Vec<String> = read
        .list_tables()
        .map_err(|e| storage_error(file, e))?
        .map(|t| t.name().to_string())
        .collect();
    if tables.iter().any(|t| t == META.name()) {
        let meta = read
            .open_table(META)
            .map_err(|e| foreign(format!("meta table: {e}")))?;
        let schema = meta.get("schema").map_err(|e| storage_error(file, e))?;
        return match schema.as_ref().map(|s| s.value()) {
            Some(SCHEMA) => Ok(()),
            other => Err(foreign(format!(
                "schema {:?}, expected {SCHEMA:?} (a database of another version or program)",
                other
            ))),
        };
    }
    if !tables.is_empty() {
        return Err(foreign(format!(
            "a redb database of another program (tables {tables:?}, no {SCHEMA} stamp)"
        )));
    }
    drop(read);
    let write = db.begin_write().map_err(|e| storage_error(file, e))?;
    {
        let mut meta = write.open_table(META).map_err(|e| storage_error(file, e))?;
        meta.insert("schema", SCHEMA)
            .map_err(|e| storage_error(file, e))?;
        // Create every table so that reads at load never meet a missing one.
        write
            .open_table(CAMPAIGNS)
            .map_err(|e| storage_error(file, e))?;
        write
            .open_table(IMPRESSIONS)
            .map_err(|e| storage_error(file, e))?;
        write
            .open_table(SESSIONS)
            .map_err(|e| storage_error(file, e))?;
        write
            .open_table(SESSION_PLAYS)
            .map_err(|e| storage_error(file, e))?;
        write
            .open_table(ATTENTION)
            .map_err(|e| storage_error(file, e))?;
        write
            .open_table(ATTENTION_TOTAL)
            .map_err(|e| storage_error(file, e))?;
        write
            .open_table(DEDUP)
            .map_err(|e| storage_error(file, e))?;
    }
    write.commit().map_err(|e| storage_error(file, e))?;
    Ok(())
}

fn load(db: &redb::Database, file: &Path, now_ms: i64) -> Result<(Memory, Writer), StoreError> {
    // Times further ahead than this never set the expiry clock.
    let latest = now_ms.saturating_add(crate::MAX_AHEAD_MS);
    let err = |e: redb::Error| storage_error(file, e);
    let bad = |key: String, message: &str| StoreError::Corrupt {
        store: STORE,
        key: format!("{} {key}", file.display()),
        message: message.to_string(),
    };
    let mem = Memory {
        listeners: Sharded::new(),
        sessions: Sharded::new(),
        campaigns: RwLock::new(HashMap::new()),
        holders: RwLock::new(Holders::default()),
    };
    let read = db.begin_read().map_err(|e| err(e.into()))?;
    let mut high_water_ms = i64::MIN;

    let t = read.open_table(CAMPAIGNS).map_err(|e| err(e.into()))?;
    let mut campaigns = mem.campaigns.write();
    for row in t.iter().map_err(|e| err(e.into()))? {
        let (k, v) = row.map_err(|e| err(e.into()))?;
        campaigns.insert(k.value().to_string(), campaign_from_row(v.value()));
    }
    drop(campaigns);

    let t = read.open_table(IMPRESSIONS).map_err(|e| err(e.into()))?;
    for row in t.iter().map_err(|e| err(e.into()))? {
        let (k, v) = row.map_err(|e| err(e.into()))?;
        let (listener, track) = k.value();
        let ts = decode_times(v.value()).ok_or_else(|| {
            bad(
                format!("impressions/{listener}/{track}"),
                "not a list of times",
            )
        })?;
        if let Some(&t) = ts.last().filter(|&&t| t <= latest) {
            high_water_ms = high_water_ms.max(t);
        }
        mem.listeners
            .shard(listener)
            .write()
            .entry(listener.to_string())
            .or_default()
            .insert(track.to_string(), ts);
    }

    let t = read.open_table(SESSIONS).map_err(|e| err(e.into()))?;
    for row in t.iter().map_err(|e| err(e.into()))? {
        let (k, v) = row.map_err(|e| err(e.into()))?;
        if v.value() <= latest {
            high_water_ms = high_water_ms.max(v.value());
        }
        mem.sessions
            .shard(k.value())
            .write()
            .entry(k.value().to_string())
            .or_default()
            .last_at = v.value();
    }
    let t = read.open_table(SESSION_PLAYS).map_err(|e| err(e.into()))?;
    for row in t.iter().map_err(|e| err(e.into()))? {
        let (k, v) = row.map_err(|e| err(e.into()))?;
        let (session, track) = k.value();
        mem.sessions
            .shard(session)
            .write()
            .entry(session.to_string())
            .or_default()
            .plays
            .insert(track.to_string(), v.value());
    }

    let mut holders = mem.holders.write();
    let t = read.open_table(ATTENTION).map_err(|e| err(e.into()))?;
    for row in t.iter().map_err(|e| err(e.into()))? {
        let (k, v) = row.map_err(|e| err(e.into()))?;
        let (holder, hour) = k.value();
        holders
            .by_holder
            .entry(holder.to_string())
            .or_default()
            .insert(hour, v.value());
    }
    let t = read
        .open_table(ATTENTION_TOTAL)
        .map_err(|e| err(e.into()))?;
    for row in t.iter().map_err(|e| err(e.into()))? {
        let (k, v) = row.map_err(|e| err(e.into()))?;
        holders.total.insert(k.value(), v.value());
    }
    drop(holders);

    let t = read.open_table(DEDUP).map_err(|e| err(e.into()))?;
    let mut ids: Vec<(i64, Arc<str>)> = Vec::new();
    for row in t.iter().map_err(|e| err(e.into()))? {
        let (k, v) = row.map_err(|e| err(e.into()))?;
        ids.push((v.value(), Arc::from(k.value())));
    }
    ids.sort();
    let dedup = ids.iter().map(|(at, id)| (id.clone(), *at)).collect();
    let dedup_order = ids.into_iter().map(|(_, id)| id).collect();
    Ok((
        mem,
        Writer {
            dedup,
            dedup_order,
            high_water_ms,
            compacted_hour: None,
        },
    ))
}

impl Inner {
    fn err(&self, e: impl Into<redb::Error>) -> StoreError {
        storage_error(&self.file, e)
    }

    fn record(&self, events: &[DeliveryEvent]) -> Result<Recorded, StoreError> {
        let mut w = self.writer.lock();
        let mut out = Recorded::default();
        let mut changes = Vec::new();
        let mut new_ids: Vec<(Arc<str>, i64)> = Vec::new();
        let mut high_water_ms = w.high_water_ms;
        let now_ms = (self.config.clock)();
        let latest = now_ms.saturating_add(crate::MAX_AHEAD_MS);
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut campaigns = txn.open_table(CAMPAIGNS).map_err(|e| self.err(e))?;
            let mut impressions = txn.open_table(IMPRESSIONS).map_err(|e| self.err(e))?;
            let mut sessions = txn.open_table(SESSIONS).map_err(|e| self.err(e))?;
            let mut plays = txn.open_table(SESSION_PLAYS).map_err(|e| self.err(e))?;
            let mut attention = txn.open_table(ATTENTION).map_err(|e| self.err(e))?;
            let mut total = txn.open_table(ATTENTION_TOTAL).map_err(|e| self.err(e))?;
            let mut dedup = txn.open_table(DEDUP).map_err(|e| self.err(e))?;
            for e in events {
                if w.dedup.contains_key(e.id.as_str())
                    || dedup.get(e.id.as_str()).map_err(|x| self.err(x))?.is_some()
                {
                    out.duplicates += 1;
                    continue;
                }
                dedup
                    .insert(e.id.as_str(), now_ms)
                    .map_err(|x| self.err(x))?;
                new_ids.push((Arc::from(e.id.as_str()), now_ms));
                if e.at_ms <= latest {
                    high_water_ms = high_water_ms.max(e.at_ms);
                }
                out.applied += 1;
                let fx = model::effects(e);
                if let Some(c) = fx.delivered {
                    let mut state = campaigns
                        .get(c)
                        .map_err(|x| self.err(x))?
                        .map(|v| campaign_from_row(v.value()))
                        .unwrap_or_default();
                    state.delivered += 1;
                    campaigns
                        .insert(c, campaign_row(&state))
                        .map_err(|x| self.err(x))?;
                    changes.push(Change::Campaign(c.to_string(), state));
                }
                if fx.impression {
                    let key = (e.listener_id.as_str(), e.track_id.as_str());
                    let mut ts = match impressions.get(key).map_err(|x| self.err(x))? {
                        Some(v) => decode_times(v.value()).unwrap_or_default(),
                        None => Vec::new(),
                    };
                    ts.push(e.at_ms);
                    model::trim_impressions(&mut ts, MAX_IMPRESSIONS_PER_PAIR);
                    impressions
                        .insert(key, encode_times(&ts).as_slice())
                        .map_err(|x| self.err(x))?;
                    changes.push(Change::Impressions(
                        e.listener_id.clone(),
                        e.track_id.clone(),
                        ts,
                    ));
                }
                if fx.play {
                    let key = (e.session_id.as_str(), e.track_id.as_str());
                    let n = plays
                        .get(key)
                        .map_err(|x| self.err(x))?
                        .map_or(0, |v| v.value())
                        + 1;
                    plays.insert(key, n).map_err(|x| self.err(x))?;
                    let last = sessions
                        .get(e.session_id.as_str())
                        .map_err(|x| self.err(x))?
                        .map_or(e.at_ms, |v| v.value().max(e.at_ms));
                    sessions
                        .insert(e.session_id.as_str(), last)
                        .map_err(|x| self.err(x))?;
                    changes.push(Change::Play {
                        session: e.session_id.clone(),
                        track: e.track_id.clone(),
                        plays: n,
                        last_at: last,
                    });
                }
                if let Some((holder, units)) = fx.attention {
                    let hour = hour_of(e.at_ms);
                    let h = attention
                        .get((holder, hour))
                        .map_err(|x| self.err(x))?
                        .map_or(0, |v| v.value())
                        + units;
                    attention
                        .insert((holder, hour), h)
                        .map_err(|x| self.err(x))?;
                    let t = total
                        .get(hour)
                        .map_err(|x| self.err(x))?
                        .map_or(0, |v| v.value())
                        + units;
                    total.insert(hour, t).map_err(|x| self.err(x))?;
                    changes.push(Change::Attention(holder.to_string(), hour, h));
                    changes.push(Change::AttentionTotal(hour, t));
                }
            }
            // Forget ids that left the de-dup window or exceed the cap, in
            // the order they were recorded.
            let cutoff = now_ms.saturating_sub(self.config.dedup_window_ms);
            let excess = (w.dedup.len() + new_ids.len()).saturating_sub(self.config.dedup_max_ids);
            let mut removed = 0;
            while let Some(id) = w.dedup_order.get(removed) {
                let at = w.dedup.get(id).copied().unwrap_or(i64::MIN);
                if removed < excess || at <= cutoff {
                    dedup.remove(&**id).map_err(|x| self.err(x))?;
                    removed += 1;
                } else {
                    break;
                }
            }
            if removed > 0 {
                for id in w.dedup_order.drain(..removed).collect::<Vec<_>>() {
                    w.dedup.remove(&id);
                }
            }
        }
        txn.commit().map_err(|e| self.err(e))?;
        for (id, at) in new_ids {
            w.dedup.insert(id.clone(), at);
            w.dedup_order.push_back(id);
        }
        w.high_water_ms = high_water_ms;
        self.apply(changes);
        if w.compacted_hour != Some(hour_of(high_water_ms)) && high_water_ms != i64::MIN {
            self.compact(&mut w)?;
        }
        Ok(out)
    }

    fn apply(&self, changes: Vec<Change>) {
        for c in changes {
            match c {
                Change::Campaign(id, state) => {
                    // The whole committed state (delivery and pacing):
                    // writes are serialized, so it is the latest.
                    self.mem.campaigns.write().insert(id, state);
                }
                Change::Impressions(listener, track, ts) => {
                    self.mem
                        .listeners
                        .shard(&listener)
                        .write()
                        .entry(listener)
                        .or_default()
                        .insert(track, ts);
                }
                Change::Play {
                    session,
                    track,
                    plays,
                    last_at,
                } => {
                    let mut shard = self.mem.sessions.shard(&session).write();
                    let s = shard.entry(session).or_default();
                    s.last_at = last_at;
                    s.plays.insert(track, plays);
                }
                Change::Attention(holder, hour, units) => {
                    self.mem
                        .holders
                        .write()
                        .by_holder
                        .entry(holder)
                        .or_default()
                        .insert(hour, units);
                }
                Change::AttentionTotal(hour, units) => {
                    self.mem.holders.write().total.insert(hour, units);
                }
            }
        }
    }

    /// Removes expired data from the database and memory (see the module
    /// docs). Runs under the writer lock, shard by shard, so readers wait at
    /// most for one shard's removal.
    fn compact(&self, w: &mut Writer) -> Result<(), StoreError> {
        let now = w.high_water_ms;
        let impression_cutoff = now - crate::IMPRESSION_WINDOW_MS;
        let session_cutoff = now.saturating_sub(self.config.session_idle_ms);
        let oldest_hour = hour_of(now) - crate::EXPOSURE_WINDOW_HOURS;

        let mut dead_pairs: Vec<(String, String)> = Vec::new();
        for shard in self.mem.listeners.shards.iter() {
            for (listener, tracks) in shard.read().iter() {
                for (track, ts) in tracks {
                    if ts.last().is_none_or(|&t| t <= impression_cutoff) {
                        dead_pairs.push((listener.clone(), track.clone()));
                    }
                }
            }
        }
        let mut dead_sessions: Vec<(String, Vec<String>)> = Vec::new();
        for shard in self.mem.sessions.shards.iter() {
            for (session, s) in shard.read().iter() {
                if s.last_at <= session_cutoff {
                    dead_sessions.push((session.clone(), s.plays.keys().cloned().collect()));
                }
            }
        }
        let (dead_attention, dead_total): (Vec<(String, i64)>, Vec<i64>) = {
            let h = self.mem.holders.read();
            (
                h.by_holder
                    .iter()
                    .flat_map(|(holder, hours)| {
                        hours
                            .range(..oldest_hour)
                            .map(move |(hour, _)| (holder.clone(), *hour))
                    })
                    .collect(),
                h.total
                    .range(..oldest_hour)
                    .map(|(hour, _)| *hour)
                    .collect(),
            )
        };
        if !(dead_pairs.is_empty()
            && dead_sessions.is_empty()
            && dead_attention.is_empty()
            && dead_total.is_empty())
        {
            let txn = self.db.begin_write().map_err(|e| self.err(e))?;
            {
                let mut impressions = txn.open_table(IMPRESSIONS).map_err(|e| self.err(e))?;
                for (l, t) in &dead_pairs {
                    impressions
                        .remove((l.as_str(), t.as_str()))
                        .map_err(|e| self.err(e))?;
                }
                let mut sessions = txn.open_table(SESSIONS).map_err(|e| self.err(e))?;
                let mut plays = txn.open_table(SESSION_PLAYS).map_err(|e| self.err(e))?;
                for (s, tracks) in &dead_sessions {
                    sessions.remove(s.as_str()).map_err(|e| self.err(e))?;
                    for t in tracks {
                        plays
                            .remove((s.as_str(), t.as_str()))
                            .map_err(|e| self.err(e))?;
                    }
                }
                let mut attention = txn.open_table(ATTENTION).map_err(|e| self.err(e))?;
                for (h, hour) in &dead_attention {
                    attention
                        .remove((h.as_str(), *hour))
                        .map_err(|e| self.err(e))?;
                }
                let mut total = txn.open_table(ATTENTION_TOTAL).map_err(|e| self.err(e))?;
                for hour in &dead_total {
                    total.remove(*hour).map_err(|e| self.err(e))?;
                }
            }
            txn.commit().map_err(|e| self.err(e))?;
            for (l, t) in &dead_pairs {
                let mut shard = self.mem.listeners.shard(l).write();
                if let Some(tracks) = shard.get_mut(l) {
                    tracks.remove(t);
                    if tracks.is_empty() {
                        shard.remove(l);
                    }
                }
            }
            for (s, _) in &dead_sessions {
                self.mem.sessions.shard(s).write().remove(s);
            }
            let mut h = self.mem.holders.write();
            for (holder, hour) in &dead_attention {
                if let Some(hours) = h.by_holder.get_mut(holder) {
                    hours.remove(hour);
                    if hours.is_empty() {
                        h.by_holder.remove(holder);
                    }
                }
            }
            for hour in &dead_total {
                h.total.remove(hour);
            }
        }
        debug!(
            pairs = dead_pairs.len(),
            sessions = dead_sessions.len(),
            holder_hours = dead_attention.len(),
            "embedded state store compacted"
        );
        w.compacted_hour = Some(hour_of(now));
        Ok(())
    }

    fn write_pacing(&self, writes: &[PacingWrite]) -> Result<Vec<bool>, StoreError> {
        let _w = self.writer.lock();
        let mut applied = Vec::with_capacity(writes.len());
        let mut changes = Vec::new();
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut campaigns = txn.open_table(CAMPAIGNS).map_err(|e| self.err(e))?;
            for w in writes {
                let mut state = campaigns
                    .get(w.campaign_id.as_str())
                    .map_err(|x| self.err(x))?
                    .map(|v| campaign_from_row(v.value()))
                    .unwrap_or_default();
                let stored = state.pacing.map_or(0, |p| p.updated_ms);
                let ok = model::pacing_applies(stored, w, self.config.tick_ms);
                if ok {
                    state.pacing = Some(PacingState {
                        integral: w.integral,
                        last_error: w.last_error,
                        updated_ms: w.at_ms,
                    });
                    campaigns
                        .insert(w.campaign_id.as_str(), campaign_row(&state))
                        .map_err(|x| self.err(x))?;
                    changes.push(Change::Campaign(w.campaign_id.clone(), state));
                }
                applied.push(ok);
            }
        }
        if changes.is_empty() {
            txn.abort().map_err(|e| self.err(e))?;
        } else {
            txn.commit().map_err(|e| self.err(e))?;
            self.apply(changes);
        }
        Ok(applied)
    }

    fn read(&self, q: &StateQuery<'_>) -> StateSnapshot {
        let campaigns = {
            let map = self.mem.campaigns.read();
            q.campaigns
                .iter()
                .map(|c| map.get(*c).copied().unwrap_or_default())
                .collect()
        };
        let impressions_24h = {
            let shard = self.mem.listeners.shard(q.listener_id).read();
            let tracks = shard.get(q.listener_id);
            q.tracks
                .iter()
                .map(|t| {
                    tracks.and_then(|m| m.get(*t)).map_or(0, |ts| {
                        ts.iter()
                            .filter(|&&at| model::in_impression_window(at, q.now_ms))
                            .count() as u32
                    })
                })
                .collect()
        };
        let session_promoted = {
            let shard = self.mem.sessions.shard(q.session_id).read();
            let session = shard
                .get(q.session_id)
                .filter(|s| q.now_ms - s.last_at <= self.config.session_idle_ms);
            q.tracks
                .iter()
                .map(|t| session.and_then(|s| s.plays.get(*t)).copied().unwrap_or(0))
                .collect()
        };
        let exposure_share_7d = if q.holders.is_empty() {
            Vec::new()
        } else {
            let hours = model::exposure_hours(q.now_ms);
            let h = self.mem.holders.read();
            let total: u64 = h.total.range(hours.clone()).map(|(_, u)| u).sum();
            q.holders
                .iter()
                .map(|holder| {
                    let units = h
                        .by_holder
                        .get(*holder)
                        .map_or(0, |m| m.range(hours.clone()).map(|(_, u)| u).sum());
                    model::share(units, total)
                })
                .collect()
        };
        StateSnapshot {
            campaigns,
            impressions_24h,
            session_promoted,
            exposure_share_7d,
        }
    }
}

#[async_trait]
impl StateStore for EmbeddedStore {
    fn kind(&self) -> &'static str {
        STORE
    }

    async fn read(&self, query: &StateQuery<'_>) -> Result<StateSnapshot, StoreError> {
        Ok(self.inner.read(query))
    }

    async fn record(&self, events: &[DeliveryEvent]) -> Result<Recorded, StoreError> {
        if events.is_empty() {
            return Ok(Recorded::default());
        }
        let events = events.to_vec();
        self.blocking(move |inner| inner.record(&events)).await
    }

    async fn write_pacing(&self, writes: &[PacingWrite]) -> Result<Vec<bool>, StoreError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let writes = writes.to_vec();
        self.blocking(move |inner| inner.write_pacing(&writes))
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Reads are answered from memory, writes committed before they return.
    fn is_local(&self) -> bool {
        true
    }
}
