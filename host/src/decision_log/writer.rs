//! The writer: a bounded queue in front of one background thread that owns
//! the sink.
//!
//! Logging a decision must never delay or fail a response, so the request
//! path does as little as possible: it moves a [`PendingRecord`] (the
//! request body as a refcounted [`Bytes`], the decision columns as owned
//! vectors, the policy as an `Arc`) into a bounded queue with `try_send`.
//! When the queue is full the entry is dropped and counted
//! ([`DecisionLog::dropped`]); nothing waits. Everything costly happens on
//! the writer thread: embedding the body (and pseudonymising its ids), JSON
//! encoding, compression and I/O. An I/O failure (disk full, directory
//! gone) loses records, counted in [`DecisionLog::failed`] and logged once
//! per outage, and the writer retries a new file every second; it never
//! reaches a response either.
//!
//! The writer is a plain OS thread, not a tokio task: its work is blocking
//! file I/O and CPU, which would otherwise hold a runtime worker.
//!
//! # Files
//!
//! `<dir>/decisions-<UTC start, 20261126T012233Z>-<seq>.parquet` (the
//! default [`LogFormat::Parquet`], see [`super::columnar`]), or `.jsonl`
//! ([`LogFormat::Jsonl`]), `.jsonl.zst` when compressed; `seq` counts the files of the process
//! (six digits or more), so names sort in writing order (for one writer per
//! directory, and a clock that does not step back). A file gets its final
//! name when it is created, and is never reopened: after a crash the file
//! ends with at most a torn last line (or, compressed, an unterminated zstd
//! frame), both of which the [reader](super::reader) handles. A Parquet
//! file cannot be read before its footer is written, so it is written as
//! `<name>.parquet.tmp` and renamed to `<name>.parquet` once closed
//! (footer written, synced): readers never see half a file, and a crash
//! loses the records of the file being written (at most
//! `max_file_age` of them; readers ignore the `.tmp` file, the disk budget
//! counts and may delete it). Records are buffered and encoded in batches
//! of [`PARQUET_BATCH_ROWS`]. A name that
//! exists already (a restart within the same second) is never overwritten:
//! the next `seq` is taken.
//!
//! The current file is closed and the next one starts at the next record
//! when it holds `max_file_bytes` (bytes on disk: for a compressed file,
//! the compressed bytes that reached it, which lag the records by up to one
//! zstd block; for Parquet, the encoded bytes so far, an estimate until the
//! file is closed) or is `max_file_age` old; an idle writer closes an expired
//! file on its own. Written lines are flushed at least every second (the
//! zstd encoder too, so a crash loses at most about the last second) and
//! on rotation and shutdown; a closed file is synced to disk.
//!
//! # Disk budget
//!
//! Nothing else bounds the directory, so the log has a budget
//! ([`DiskBudget`], on by default: [`DEFAULT_MAX_TOTAL_BYTES`]). Before a
//! file is opened, the log files in the directory (`decisions-*` and
//! `outcomes-*`) are summed; when they and the new file (which may grow to
//! `max_file_bytes`) would exceed the budget, the oldest closed files are
//! deleted ([`WhenFull::DeleteOldest`], the default) or, with
//! [`WhenFull::Pause`] (or when nothing is left to delete), the log
//! pauses: records are counted as paused, not written, and room is looked
//! for again every second. The newest file of each kind is never deleted
//! (it may be the one being written). The directory may exceed the budget
//! by at most the other kind's open file. A full disk (ENOSPC, a quota:
//! EDQUOT, or a file-size limit: EFBIG) pauses the log the same way until
//! a file can be written again (records counted as paused, a new file tried
//! every second) and is reported ([`BudgetStats::disk_full`]); like the
//! budget, it never reaches a response: only the writer thread touches the
//! disk.

use std::borrow::Cow;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::body::{self, Pseudonymiser};
use super::columnar::{self, DecisionRows, OutcomeRows};
use super::outcomes::OutcomeEvent;
use super::record::{
    DecisionColumnsRecord, FallbackView, PolicyView, RecordView, TimingRecord, UsageRecord, VERSION,
};
use crate::delivery::Fill;
use crate::metadata::PolicyRef;
use crate::sandbox::visible;

/// File name prefix of decision records.
pub const DECISIONS_PREFIX: &str = "decisions";
/// File name prefix of outcome events ([`DecisionLog::log_outcomes`]).
pub const OUTCOMES_PREFIX: &str = "outcomes";

/// Default size at which a file is rotated: 64 MiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 << 20;
/// Default age at which a file is rotated: one hour.
pub const DEFAULT_MAX_FILE_AGE: Duration = Duration::from_secs(3600);
/// Default disk budget of a log directory: 4 GiB (64 files of the default
/// size; at 300 candidates about 675,000 Parquet records of ~6.4 KB, or
/// 45,000 JSON lines of ~94 KB).
pub const DEFAULT_MAX_TOTAL_BYTES: u64 = 4 << 30;
/// Default queue length (records waiting for the writer thread).
pub const DEFAULT_QUEUE: usize = 4096;
/// Written records reach the file (or stdout) at least this often.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// After an I/O error, the writer tries a new file after this long (records
/// in between are counted as failed).
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// zstd level: the library's default, fast and about 5–10× on these lines.
const ZSTD_LEVEL: i32 = 3;
/// Buffer of an uncompressed file.
const FILE_BUFFER: usize = 64 << 10;
/// Parquet rows are buffered and encoded this many at a time.
pub const PARQUET_BATCH_ROWS: usize = 64;
/// The writer's line buffer is given back when a record made it larger.
const LINE_BUFFER_KEEP: usize = 1 << 20;

/// Where and how the decision log is written.
#[derive(Clone)]
pub struct DecisionLogConfig {
    /// Directory of the log files (created if missing), or `None` to write
    /// one line per record to stdout (for a log shipper).
    pub dir: Option<PathBuf>,
    /// A file is rotated when it holds this many bytes (on disk).
    pub max_file_bytes: u64,
    /// A file is rotated when it is this old.
    pub max_file_age: Duration,
    /// The files' format: Parquet (the default) or JSON lines. Stdout
    /// always gets JSON lines.
    pub format: LogFormat,
    /// Compress JSON-lines files with zstd (`.jsonl.zst`). Not applied to
    /// stdout; Parquet files always have zstd pages.
    pub compress: bool,
    /// Records that may wait for the writer; more are dropped and counted.
    /// At least 1.
    pub queue: usize,
    /// When set, `context.listener_id` and `context.session_id` in the
    /// logged request are replaced by keyed pseudonyms (`p:` and 32 hex
    /// digits of HMAC-SHA256(key, id)). Replaying such a log through a
    /// policy that reads `listener_id` (for bucketing, say) sees the
    /// pseudonyms, so its decisions may differ from the logged ones; the
    /// example policies do not read it.
    pub pseudonymise_key: Option<Vec<u8>>,
    /// The most the log's files may take in `dir` (see the
    /// [module docs](self#disk-budget)); `None`: unbounded.
    pub budget: Option<DiskBudget>,
}

/// The format of the decision and outcome files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Parquet with zstd pages, one row per record ([`super::columnar`]):
    /// ~10× smaller than JSON lines, read directly by DuckDB, pandas,
    /// polars and Spark, and about 3× faster to replay.
    #[default]
    Parquet,
    /// JSON lines, one record per line ([`super::record`]); the request
    /// kept as received.
    Jsonl,
}

/// How much disk a log directory may take, and what happens when it is
/// full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct DiskBudget {
    /// Bytes of `decisions-*` and `outcomes-*` files in the directory; at
    /// least twice `max_file_bytes`.
    pub max_total_bytes: u64,
    /// Delete the oldest files, or pause.
    pub when_full: WhenFull,
}

impl Default for DiskBudget {
    fn default() -> Self {
        DiskBudget {
            max_total_bytes: DEFAULT_MAX_TOTAL_BYTES,
            when_full: WhenFull::DeleteOldest,
        }
    }
}

/// What the log does when its directory holds its budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Delete the oldest closed files (keep the most recent decisions).
    #[default]
    DeleteOldest,
    /// Stop writing until files are removed (keep the oldest: an audit
    /// trail that must not be lost silently); records are counted as
    /// paused.
    Pause,
}

impl Default for DecisionLogConfig {
    fn default() -> Self {
        DecisionLogConfig {
            dir: None,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            max_file_age: DEFAULT_MAX_FILE_AGE,
            format: LogFormat::default(),
            compress: false,
            queue: DEFAULT_QUEUE,
            pseudonymise_key: None,
            budget: Some(DiskBudget::default()),
        }
    }
}

/// The key is never printed.
impl fmt::Debug for DecisionLogConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecisionLogConfig")
            .field("dir", &self.dir)
            .field("max_file_bytes", &self.max_file_bytes)
            .field("max_file_age", &self.max_file_age)
            .field("format", &self.format)
            .field("compress", &self.compress)
            .field("queue", &self.queue)
            .field(
                "pseudonymise_key",
                &self.pseudonymise_key.as_ref().map(|_| "<set>"),
            )
            .field("budget", &self.budget)
            .finish()
    }
}

/// Why the decision log could not start. (Once started, it never fails:
/// losses are counted instead.)
#[derive(Debug, thiserror::Error)]
pub enum DecisionLogError {
    /// The log directory could not be created, or a file created in it.
    #[error("decision log directory {}: {source}", path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A setting is out of range.
    #[error("decision log: {0}")]
    Config(String),
    /// The writer thread could not be started.
    #[error("decision log: cannot start the writer thread: {0}")]
    Spawn(#[source] io::Error),
}

/// A decision to log, as the request path hands it over: cheap to build
/// (the body is shared, not copied), encoded later on the writer thread.
/// The fields are those of [`DecisionRecord`](super::DecisionRecord).
#[derive(Debug, Clone)]
pub struct PendingRecord {
    /// When the request was scored, milliseconds since the Unix epoch
    /// ([`now_ms`]).
    pub at_ms: u64,
    /// The request's `context.request_id`.
    pub request_id: String,
    /// The route that served it.
    pub route: String,
    /// `stable`, `canary`, `fallback`, `killed`, or `shadow`.
    pub variant: Cow<'static, str>,
    /// `canary`, `stable`, `baseline`, `passthrough`, or `shadow`.
    pub arm: Cow<'static, str>,
    /// A shadow's decisions (never served).
    pub shadow: bool,
    /// The policy version that decided.
    pub policy: Arc<PolicyRef>,
    /// `sha256` (hex) of the settings the policy was loaded with.
    pub settings_sha256: Arc<str>,
    /// The arm that failed before the one that decided, if any.
    pub fallback: Option<PendingFallback>,
    /// The request body exactly as received (one JSON value).
    pub request: Bytes,
    /// The delivery state the host filled into it, if any.
    pub state: Option<Arc<Fill>>,
    /// The decision columns.
    pub decisions: DecisionColumnsRecord,
    /// Time spent.
    pub timing: TimingRecord,
    /// Resources the deciding policy used (none for the passthrough).
    pub usage: Option<UsageRecord>,
}

/// The failed arm of a [`PendingRecord`].
#[derive(Debug, Clone)]
pub struct PendingFallback {
    /// The policy version that failed.
    pub policy: Arc<PolicyRef>,
    /// Category of its error ([`CallErrorKind::as_str`](crate::CallErrorKind::as_str)).
    pub error_kind: Cow<'static, str>,
    /// The error, for humans.
    pub error: String,
}

/// Milliseconds since the Unix epoch, now (for [`PendingRecord::at_ms`]).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Counts of what happened to logged records, since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecisionLogStats {
    /// Written to the sink (handed to its buffer; flushed within
    /// [`FLUSH_INTERVAL`]).
    pub written: u64,
    /// Dropped because the queue was full (or the writer had stopped).
    pub dropped: u64,
    /// Lost on the writer thread: an I/O error, or a request body that is
    /// not JSON. The rows of a Parquet file that could not be finished are
    /// moved here from `written` (which can therefore go down). (JSON
    /// lines already counted as written and still buffered when a flush
    /// fails are lost without being counted here; the failure is logged.)
    pub failed: u64,
}

/// Counts of outcome events handed to the log ([`DecisionLog::log_outcomes`]),
/// since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutcomeStats {
    /// Events written to the sink.
    pub written: u64,
    /// Events refused because the queue was full or the writer had stopped
    /// (the caller was told, and may send them again).
    pub refused: u64,
    /// Events lost on the writer thread (an I/O error).
    pub failed: u64,
}

/// The disk budget's state ([`DecisionLog::budget_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct BudgetStats {
    /// The budget, if any.
    pub budget: Option<DiskBudget>,
    /// Logging is paused now: the directory holds its budget.
    pub paused: bool,
    /// The last write failed for lack of space on the device (ENOSPC).
    pub disk_full: bool,
    /// Files deleted to stay within the budget, since start.
    pub deleted_files: u64,
    /// Their bytes.
    pub deleted_bytes: u64,
    /// Decision records not written while paused, since start.
    pub paused_records: u64,
    /// Outcome events not written while paused, since start.
    pub paused_events: u64,
}

#[derive(Debug, Default)]
struct Counters {
    written: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    outcomes_written: AtomicU64,
    outcomes_refused: AtomicU64,
    outcomes_failed: AtomicU64,
    /// Paused by the budget: the decision sink, the outcome sink.
    paused: [AtomicBool; 2],
    disk_full: AtomicBool,
    deleted_files: AtomicU64,
    deleted_bytes: AtomicU64,
    paused_records: AtomicU64,
    paused_events: AtomicU64,
}

/// Outcome events [`DecisionLog::log_outcomes`] could not queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OutcomesRefused {
    /// The queue is full: try again shortly.
    #[error("the decision log's queue is full")]
    QueueFull,
    /// The writer has stopped (the server is shutting down).
    #[error("the decision log has stopped")]
    Stopped,
}

/// What the queue carries. Records are not boxed: the queue's slots are
/// allocated once (`queue` × ~370 bytes), and `log` allocates nothing.
#[allow(
    clippy::large_enum_variant,
    reason = "records are not boxed so that logging allocates nothing"
)]
enum Msg {
    Record(PendingRecord),
    /// Outcome events, encoded on the writer thread.
    Outcomes(Vec<OutcomeEvent>),
    Shutdown,
}

struct Inner {
    tx: SyncSender<Msg>,
    counters: Arc<Counters>,
    budget: Option<DiskBudget>,
}

/// The request path's handle on the decision log: cheap to clone, and
/// [`log`](DecisionLog::log) never blocks nor fails.
#[derive(Clone)]
pub struct DecisionLog {
    inner: Arc<Inner>,
}

impl fmt::Debug for DecisionLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecisionLog")
            .field("stats", &self.stats())
            .finish()
    }
}

/// Owns the writer thread: [`shutdown`](WriterHandle::shutdown) writes what
/// is queued and stops it. Dropped without `shutdown`, the thread goes on
/// until every [`DecisionLog`] clone is dropped, then flushes and ends.
#[derive(Debug)]
pub struct WriterHandle {
    log: DecisionLog,
    thread: JoinHandle<()>,
}

impl DecisionLog {
    /// Starts the writer thread. With a directory, creates it if missing and
    /// checks that a file can be created in it.
    ///
    /// # Errors
    /// [`DecisionLogError`]: the directory is unusable, `queue` is 0, or the
    /// thread could not be started.
    pub fn start(
        config: DecisionLogConfig,
    ) -> Result<(DecisionLog, WriterHandle), DecisionLogError> {
        spawn(config, None)
    }

    /// Queues `entry` for writing, or drops it (counted) when the queue is
    /// full. Never blocks.
    pub fn log(&self, entry: PendingRecord) {
        if let Err(e) = self.inner.tx.try_send(Msg::Record(entry)) {
            let n = self.inner.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // Logged at 1, 2, 4, 8, ... drops: visible, never a flood.
            if n.is_power_of_two() {
                let why = match e {
                    TrySendError::Full(_) => "queue full",
                    TrySendError::Disconnected(_) => "writer stopped",
                };
                tracing::warn!(dropped = n, why, "decision log entries dropped");
            }
        }
    }

    /// Queues outcome events for the outcome files (`outcomes-*.parquet`
    /// or `outcomes-*.jsonl` in the [outcome format](super::outcomes)
    /// beside the decision files, or stdout); they are encoded on the
    /// writer thread. Never blocks; unlike a decision, a refused batch is
    /// the caller's to retry, so the refusal is returned (and counted).
    ///
    /// # Errors
    /// [`OutcomesRefused`] when the queue is full or the writer stopped.
    pub fn log_outcomes(&self, events: Vec<OutcomeEvent>) -> Result<(), OutcomesRefused> {
        let n = events.len() as u64;
        self.inner.tx.try_send(Msg::Outcomes(events)).map_err(|e| {
            self.inner
                .counters
                .outcomes_refused
                .fetch_add(n, Ordering::Relaxed);
            match e {
                TrySendError::Full(_) => OutcomesRefused::QueueFull,
                TrySendError::Disconnected(_) => OutcomesRefused::Stopped,
            }
        })
    }

    /// Outcome event counts since start.
    pub fn outcome_stats(&self) -> OutcomeStats {
        let c = &self.inner.counters;
        OutcomeStats {
            written: c.outcomes_written.load(Ordering::Relaxed),
            refused: c.outcomes_refused.load(Ordering::Relaxed),
            failed: c.outcomes_failed.load(Ordering::Relaxed),
        }
    }

    /// Records written since start.
    pub fn written(&self) -> u64 {
        self.inner.counters.written.load(Ordering::Relaxed)
    }

    /// Records dropped since start because the queue was full (or the
    /// writer had stopped).
    pub fn dropped(&self) -> u64 {
        self.inner.counters.dropped.load(Ordering::Relaxed)
    }

    /// Records lost on the writer thread since start (I/O errors, bodies
    /// that are not JSON).
    pub fn failed(&self) -> u64 {
        self.inner.counters.failed.load(Ordering::Relaxed)
    }

    /// All three counts.
    pub fn stats(&self) -> DecisionLogStats {
        DecisionLogStats {
            written: self.written(),
            dropped: self.dropped(),
            failed: self.failed(),
        }
    }

    /// The disk budget's state: paused or not, what it deleted and what it
    /// did not write.
    pub fn budget_stats(&self) -> BudgetStats {
        let c = &self.inner.counters;
        BudgetStats {
            budget: self.inner.budget,
            paused: c.paused.iter().any(|p| p.load(Ordering::Relaxed)),
            disk_full: c.disk_full.load(Ordering::Relaxed),
            deleted_files: c.deleted_files.load(Ordering::Relaxed),
            deleted_bytes: c.deleted_bytes.load(Ordering::Relaxed),
            paused_records: c.paused_records.load(Ordering::Relaxed),
            paused_events: c.paused_events.load(Ordering::Relaxed),
        }
    }
}

impl WriterHandle {
    /// Writes every entry queued before (and while) it is called, flushes
    /// and closes the sink (finishing a zstd frame, syncing the file), and
    /// joins the thread. Entries logged after it returns are dropped and
    /// counted. Blocks: call it from a blocking context (e.g. after the
    /// server stopped, or in `spawn_blocking`).
    pub fn shutdown(self) -> DecisionLogStats {
        // Blocking send: waits for room behind the queued entries.
        let _ = self.log.inner.tx.send(Msg::Shutdown);
        if self.thread.join().is_err() {
            tracing::error!("decision log writer thread panicked");
        }
        self.log.stats()
    }
}

/// [`DecisionLog::start`], with an optional gate for tests: the writer
/// takes nothing from the queue until the gate's sender sends or is dropped.
pub(super) fn spawn(
    config: DecisionLogConfig,
    gate: Option<Receiver<()>>,
) -> Result<(DecisionLog, WriterHandle), DecisionLogError> {
    if config.queue == 0 {
        return Err(DecisionLogError::Config(
            "the queue must hold at least 1 record".into(),
        ));
    }
    if let Some(b) = config.budget
        && b.max_total_bytes < config.max_file_bytes.saturating_mul(2)
    {
        return Err(DecisionLogError::Config(format!(
            "the disk budget ({} bytes) must hold at least two files ({} bytes each)",
            b.max_total_bytes, config.max_file_bytes
        )));
    }
    let counters = Arc::new(Counters::default());
    let pseudonymiser = config
        .pseudonymise_key
        .as_deref()
        .map(Pseudonymiser::new)
        .transpose()
        .map_err(|e| DecisionLogError::Config(format!("pseudonymisation key: {e}")))?;
    let (sink, outcome_sink) = match &config.dir {
        None => (
            Sink::Stdout(StdoutSink { failing: false }),
            Sink::Stdout(StdoutSink { failing: false }),
        ),
        Some(dir) => (
            Sink::Files(FileSink::new(dir, &config, DECISIONS_PREFIX, &counters)?),
            Sink::Files(FileSink::new(dir, &config, OUTCOMES_PREFIX, &counters)?),
        ),
    };
    let (tx, rx) = mpsc::sync_channel(config.queue);
    let mut writer = Writer {
        sink,
        outcome_sink,
        format: config.format,
        pseudonymiser,
        counters: counters.clone(),
        line: Vec::with_capacity(4096),
    };
    tracing::info!(
        sink = %config.dir.as_deref().map_or("stdout".into(), |d| d.display().to_string()),
        format = ?config.format,
        compress = config.compress && config.dir.is_some(),
        pseudonymised = config.pseudonymise_key.is_some(),
        queue = config.queue,
        "decision log started"
    );
    let thread = std::thread::Builder::new()
        .name("decision-log".into())
        .spawn(move || {
            if let Some(gate) = gate {
                let _ = gate.recv();
            }
            writer.run(rx);
        })
        .map_err(DecisionLogError::Spawn)?;
    let log = DecisionLog {
        inner: Arc::new(Inner {
            tx,
            counters,
            budget: config.budget.filter(|_| config.dir.is_some()),
        }),
    };
    Ok((log.clone(), WriterHandle { log, thread }))
}

/// The writer thread's state.
struct Writer {
    sink: Sink,
    /// Outcome events: their own files, so that decision files hold only
    /// records and outcome files only events. Opens no file until the first
    /// event.
    outcome_sink: Sink,
    /// Of the files (stdout is always JSON lines).
    format: LogFormat,
    pseudonymiser: Option<Pseudonymiser>,
    counters: Arc<Counters>,
    /// The line being encoded, reused.
    line: Vec<u8>,
}

impl Writer {
    fn run(&mut self, rx: Receiver<Msg>) {
        let mut last_flush = Instant::now();
        loop {
            match rx.recv_timeout(FLUSH_INTERVAL) {
                Ok(Msg::Record(r)) => self.write(&r),
                Ok(Msg::Outcomes(events)) => self.write_outcomes(&events),
                Ok(Msg::Shutdown) => {
                    while let Ok(m) = rx.try_recv() {
                        match m {
                            Msg::Record(r) => self.write(&r),
                            Msg::Outcomes(events) => self.write_outcomes(&events),
                            Msg::Shutdown => {}
                        }
                    }
                    break;
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.sink.idle();
                    self.outcome_sink.idle();
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if last_flush.elapsed() >= FLUSH_INTERVAL {
                self.sink.flush();
                self.outcome_sink.flush();
                last_flush = Instant::now();
            }
        }
        drop(rx);
        self.sink.close();
        self.outcome_sink.close();
        let c = &self.counters;
        tracing::info!(
            written = c.written.load(Ordering::Relaxed),
            dropped = c.dropped.load(Ordering::Relaxed),
            failed = c.failed.load(Ordering::Relaxed),
            "decision log stopped"
        );
    }

    /// Writes a batch of outcome events as one unit (a file is not
    /// rotated inside a batch).
    fn write_outcomes(&mut self, events: &[OutcomeEvent]) {
        let wrote = match (&mut self.outcome_sink, self.format) {
            (Sink::Files(f), LogFormat::Parquet) => f.write_events(events),
            (sink, _) => {
                self.line.clear();
                for e in events {
                    // Strings are escaped: one event, one line.
                    serde_json::to_writer(&mut self.line, e).expect("an event encodes");
                    self.line.push(b'\n');
                }
                sink.write_line(&self.line)
            }
        };
        let events = events.len() as u64;
        let counter = match wrote {
            Wrote::Yes => &self.counters.outcomes_written,
            Wrote::Failed => &self.counters.outcomes_failed,
            Wrote::Paused => &self.counters.paused_events,
        };
        counter.fetch_add(events, Ordering::Relaxed);
    }

    fn write(&mut self, r: &PendingRecord) {
        self.line.clear();
        if self.line.capacity() > LINE_BUFFER_KEEP {
            self.line = Vec::with_capacity(4096);
        }
        let wrote = match (&mut self.sink, self.format) {
            (Sink::Files(f), LogFormat::Parquet) => match crate::request::parse(&r.request) {
                Ok(req) => f.write_record(r, &req, self.pseudonymiser.as_ref()),
                Err(e) => {
                    tracing::warn!(request_id = %visible(&r.request_id), error = %e,
                        "decision record not written: its request body is not a scoring request");
                    Wrote::Failed
                }
            },
            (sink, _) => match encode(&mut self.line, r, self.pseudonymiser.as_ref()) {
                Ok(()) => sink.write_line(&self.line),
                Err(e) => {
                    tracing::warn!(request_id = %visible(&r.request_id), error = %e,
                        "decision record not written: its request body is not one JSON value");
                    Wrote::Failed
                }
            },
        };
        let counter = match wrote {
            Wrote::Yes => &self.counters.written,
            Wrote::Failed => &self.counters.failed,
            Wrote::Paused => &self.counters.paused_records,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Encodes `r` as one JSON line (newline included) into `out`.
fn encode(
    out: &mut Vec<u8>,
    r: &PendingRecord,
    pseudonymiser: Option<&Pseudonymiser>,
) -> Result<(), serde_json::Error> {
    let request = body::embed(&r.request, pseudonymiser)?;
    let view = RecordView {
        v: VERSION,
        at_ms: r.at_ms,
        request_id: &r.request_id,
        route: &r.route,
        variant: &r.variant,
        arm: &r.arm,
        shadow: r.shadow,
        policy: PolicyView::from(&r.policy),
        settings_sha256: &r.settings_sha256,
        fallback: r.fallback.as_ref().map(|f| FallbackView {
            policy: PolicyView::from(&f.policy),
            error_kind: &f.error_kind,
            error: &f.error,
        }),
        request: request.get(),
        state: r.state.as_deref(),
        decisions: &r.decisions,
        timing: &r.timing,
        usage: &r.usage,
    };
    // Strings are escaped, so the line has no newline of its own.
    serde_json::to_writer(&mut *out, &view)?;
    out.push(b'\n');
    Ok(())
}

/// Where lines go. (One per writer thread: its size does not matter.)
#[allow(
    clippy::large_enum_variant,
    reason = "one per writer thread: its size does not matter"
)]
enum Sink {
    Stdout(StdoutSink),
    Files(FileSink),
}

/// What became of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wrote {
    Yes,
    /// Lost: an I/O error (already logged).
    Failed,
    /// Not written: the directory holds its budget.
    Paused,
}

impl Sink {
    /// Writes one line.
    fn write_line(&mut self, line: &[u8]) -> Wrote {
        match self {
            Sink::Stdout(s) => {
                if s.write_line(line) {
                    Wrote::Yes
                } else {
                    Wrote::Failed
                }
            }
            Sink::Files(f) => f.write_line(line),
        }
    }

    fn flush(&mut self) {
        if let Sink::Files(f) = self {
            f.flush();
        }
    }

    fn idle(&mut self) {
        if let Sink::Files(f) = self {
            f.idle();
        }
    }

    fn close(&mut self) {
        if let Sink::Files(f) = self {
            f.close();
        }
    }
}

/// One line per record to stdout, flushed per record.
struct StdoutSink {
    failing: bool,
}

impl StdoutSink {
    fn write_line(&mut self, line: &[u8]) -> bool {
        let mut out = io::stdout().lock();
        match out.write_all(line).and_then(|()| out.flush()) {
            Ok(()) => {
                if std::mem::take(&mut self.failing) {
                    tracing::info!("decision log: writing to stdout again");
                }
                true
            }
            Err(e) => {
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(error = %e, "decision log: cannot write to stdout; records are lost until it recovers");
                }
                false
            }
        }
    }
}

/// Rotating files in one directory.
struct FileSink {
    /// File names are `<prefix>-<UTC start>-<seq>.parquet` or
    /// `.jsonl[.zst]`.
    prefix: &'static str,
    dir: PathBuf,
    format: LogFormat,
    compress: bool,
    max_bytes: u64,
    max_age: Duration,
    /// The next file's sequence number.
    seq: u64,
    current: Option<OpenFile>,
    /// After an error, or while paused: no new file before this.
    retry_at: Option<Instant>,
    failing: bool,
    budget: Option<DiskBudget>,
    /// Paused by the budget.
    paused: bool,
    /// Paused by a full disk (until a write succeeds).
    full: bool,
    counters: Arc<Counters>,
}

impl FileSink {
    fn new(
        dir: &Path,
        config: &DecisionLogConfig,
        prefix: &'static str,
        counters: &Arc<Counters>,
    ) -> Result<Self, DecisionLogError> {
        let err = |source| DecisionLogError::Dir {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        // Fail at start, not at the first record, when no file can be made.
        tempfile::Builder::new()
            .prefix(".decisions-probe")
            .tempfile_in(dir)
            .map_err(err)?;
        Ok(FileSink {
            prefix,
            dir: dir.to_owned(),
            format: config.format,
            compress: config.compress,
            max_bytes: config.max_file_bytes,
            max_age: config.max_file_age,
            seq: 0,
            current: None,
            retry_at: None,
            failing: false,
            budget: config.budget,
            paused: false,
            full: false,
            counters: counters.clone(),
        })
    }

    /// This sink's paused flag in the counters.
    fn paused_flag(&self) -> &AtomicBool {
        &self.counters.paused[usize::from(self.prefix == OUTCOMES_PREFIX)]
    }

    /// Whether a new file fits the budget, after deleting the oldest files
    /// if the budget says so.
    fn make_room(&mut self) -> bool {
        let Some(budget) = self.budget else {
            return true;
        };
        let mut files = match log_files(&self.dir) {
            Ok(f) => f,
            Err(e) => {
                // Cannot tell: write (a full disk still fails safely).
                tracing::debug!(dir = %self.dir.display(), error = %e, "decision log: cannot list the directory");
                return true;
            }
        };
        let mut total: u64 = files.iter().map(|f| f.bytes).sum();
        let fits = |total: u64| total.saturating_add(self.max_bytes) <= budget.max_total_bytes;
        if fits(total) {
            return true;
        }
        if budget.when_full == WhenFull::Pause {
            return false;
        }
        // Oldest first; the newest file of each kind is kept: it may be
        // the one the other sink is writing.
        files.sort_by(|a, b| (a.modified, &a.name).cmp(&(b.modified, &b.name)));
        let newest: Vec<&str> = [DECISIONS_PREFIX, OUTCOMES_PREFIX]
            .iter()
            .filter_map(|p| {
                files
                    .iter()
                    .filter(|f| f.name.starts_with(p))
                    .map(|f| f.name.as_str())
                    .max()
            })
            .collect();
        let deletable: Vec<&LogFile> = files
            .iter()
            .filter(|f| !newest.contains(&f.name.as_str()))
            .collect();
        for f in deletable {
            if fits(total) {
                break;
            }
            let path = self.dir.join(&f.name);
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    total -= f.bytes;
                    self.counters.deleted_files.fetch_add(1, Ordering::Relaxed);
                    self.counters
                        .deleted_bytes
                        .fetch_add(f.bytes, Ordering::Relaxed);
                    tracing::info!(path = %path.display(), bytes = f.bytes,
                        "decision log: oldest file deleted to stay within the disk budget");
                }
                // Someone else removed it: it takes no room either.
                Err(e) if e.kind() == io::ErrorKind::NotFound => total -= f.bytes,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e,
                        "decision log: cannot delete an old file for the disk budget");
                }
            }
        }
        fits(total)
    }

    fn write_line(&mut self, line: &[u8]) -> Wrote {
        self.write_with(line.len(), |f| f.write(line))
    }

    /// Appends one decision row (Parquet).
    fn write_record(
        &mut self,
        r: &PendingRecord,
        req: &crate::request::ScoreRequest<'_>,
        p: Option<&Pseudonymiser>,
    ) -> Wrote {
        // Compressed, a row is about a tenth of its request's text.
        self.write_with(r.request.len() / 10, |f| f.append_record(r, req, p))
    }

    /// Appends outcome rows (Parquet).
    fn write_events(&mut self, events: &[OutcomeEvent]) -> Wrote {
        self.write_with(events.len() * 16, |f| f.append_events(events))
    }

    /// Rotates or opens the file as needed, then writes with `write`
    /// (`len`: the bytes it adds, about).
    fn write_with(
        &mut self,
        len: usize,
        write: impl FnOnce(&mut OpenFile) -> io::Result<()>,
    ) -> Wrote {
        if let Some(f) = &self.current
            && f.records > 0
            && (f.opened.elapsed() >= self.max_age || f.size_after(len) > self.max_bytes)
        {
            self.close();
        }
        if self.current.is_none() {
            let lost = if self.paused || self.full {
                Wrote::Paused
            } else {
                Wrote::Failed
            };
            if self.retry_at.is_some_and(|t| Instant::now() < t) {
                return lost;
            }
            if !self.make_room() {
                self.retry_at = Some(Instant::now() + RETRY_AFTER);
                if !std::mem::replace(&mut self.paused, true) {
                    self.paused_flag().store(true, Ordering::Relaxed);
                    tracing::warn!(dir = %self.dir.display(), kind = self.prefix,
                        "decision log paused: the directory holds its disk budget (records are counted, not written; retried every second)");
                }
                return Wrote::Paused;
            }
            if std::mem::take(&mut self.paused) {
                self.paused_flag().store(false, Ordering::Relaxed);
                tracing::info!(dir = %self.dir.display(), kind = self.prefix,
                    "decision log resumed: the directory has room again");
            }
            match self.open() {
                Ok(f) => self.current = Some(f),
                Err((path, e)) => return self.fail(&path, e),
            }
        }
        let Some(f) = self.current.as_mut() else {
            return Wrote::Failed;
        };
        if let Err(e) = write(f) {
            let f = self.current.take().expect("current file");
            let path = f.path.clone();
            let lost = f.discard();
            self.lost(lost);
            return self.fail(&path, e);
        }
        // A Parquet row is encoded in memory and reaches the disk when its
        // file is finished: only a finished file shows the disk has room.
        if f.final_path.is_none() {
            let path = f.path.clone();
            self.recovered(&path);
        }
        Wrote::Yes
    }

    /// Bytes reached the disk at `path`: a full disk (or failing one) is
    /// over.
    fn recovered(&mut self, path: &Path) {
        if std::mem::take(&mut self.failing) {
            self.counters.disk_full.store(false, Ordering::Relaxed);
            tracing::info!(path = %path.display(), "decision log: writing again");
        }
        if std::mem::take(&mut self.full) {
            self.paused_flag().store(self.paused, Ordering::Relaxed);
        }
    }

    fn flush(&mut self) {
        if let Some(f) = self.current.as_mut()
            && let Err(e) = f.flush()
        {
            let f = self.current.take().expect("current file");
            let path = f.path.clone();
            let lost = f.discard();
            self.lost(lost);
            let _ = self.fail(&path, e);
        }
    }

    /// Rows counted as written that a Parquet file lost (it could not be
    /// finished): counted as failed instead.
    fn lost(&self, rows: u64) {
        if rows == 0 {
            return;
        }
        let c = &self.counters;
        let (written, failed) = if self.prefix == OUTCOMES_PREFIX {
            (&c.outcomes_written, &c.outcomes_failed)
        } else {
            (&c.written, &c.failed)
        };
        written.fetch_sub(rows, Ordering::Relaxed);
        failed.fetch_add(rows, Ordering::Relaxed);
        tracing::warn!(
            rows,
            kind = self.prefix,
            "decision log: a Parquet file could not be finished; its rows are lost"
        );
    }

    /// No record for a while: flush, and close the file if it expired.
    fn idle(&mut self) {
        if self
            .current
            .as_ref()
            .is_some_and(|f| f.opened.elapsed() >= self.max_age)
        {
            self.close();
        } else {
            self.flush();
        }
    }

    fn close(&mut self) {
        let Some(f) = self.current.take() else {
            return;
        };
        let (path, records, rows) = (f.path.clone(), f.records, f.rows);
        let parquet = f.final_path.is_some();
        match f.finish() {
            Ok(bytes) => {
                tracing::debug!(path = %path.display(), records, bytes, "decision log file closed");
                self.recovered(&path);
            }
            Err(e) => {
                if parquet {
                    // Without its footer the file cannot be read.
                    let _ = std::fs::remove_file(&path);
                    self.lost(rows);
                }
                let _ = self.fail(&path, e);
            }
        }
    }

    /// Creates the next file, never over an existing one (nor over a
    /// Parquet file's final name).
    fn open(&mut self) -> Result<OpenFile, (PathBuf, io::Error)> {
        let stamp = utc_stamp(SystemTime::now());
        let parquet = self.format == LogFormat::Parquet;
        let ext = match (parquet, self.compress) {
            (true, _) => "parquet.tmp",
            (false, true) => "jsonl.zst",
            (false, false) => "jsonl",
        };
        loop {
            let path = self
                .dir
                .join(format!("{}-{stamp}-{:06}.{ext}", self.prefix, self.seq));
            self.seq += 1;
            let final_path = parquet.then(|| path.with_extension(""));
            if final_path.as_ref().is_some_and(|p| p.exists()) {
                continue;
            }
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => {
                    let out = if parquet {
                        let outcomes = self.prefix == OUTCOMES_PREFIX;
                        let (schema, rows, kind) = if outcomes {
                            (
                                OutcomeRows::schema(),
                                Rows::Outcomes(OutcomeRows::default()),
                                "outcomes",
                            )
                        } else {
                            (
                                DecisionRows::schema(),
                                Rows::Decisions(Box::default()),
                                "decisions",
                            )
                        };
                        let writer = parquet::arrow::ArrowWriter::try_new(
                            file,
                            schema,
                            Some(columnar::properties(kind)),
                        )
                        .map_err(|e| (path.clone(), parquet_io(e)))?;
                        Out::Parquet(Box::new(ParquetOut { writer, rows }))
                    } else if self.compress {
                        let mut enc = zstd::stream::write::Encoder::new(
                            Counted {
                                inner: file,
                                bytes: 0,
                            },
                            ZSTD_LEVEL,
                        )
                        .map_err(|e| (path.clone(), e))?;
                        enc.include_checksum(true).map_err(|e| (path.clone(), e))?;
                        Out::Zstd(enc)
                    } else {
                        Out::Plain(BufWriter::with_capacity(FILE_BUFFER, file))
                    };
                    tracing::debug!(path = %path.display(), "decision log file opened");
                    return Ok(OpenFile {
                        path,
                        final_path,
                        out,
                        bytes: 0,
                        records: 0,
                        rows: 0,
                        opened: Instant::now(),
                        dirty: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err((path, e)),
            }
        }
    }

    /// Counts a failed write: a full disk (no space, a quota, a file-size
    /// limit) pauses the log until a write succeeds again; any other error
    /// fails the record. Either way a new file is tried in a second. What
    /// the record that met the error counts as is returned.
    fn fail(&mut self, path: &Path, e: io::Error) -> Wrote {
        self.retry_at = Some(Instant::now() + RETRY_AFTER);
        let full = matches!(
            e.raw_os_error(),
            Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG)
        );
        if full {
            self.counters.disk_full.store(true, Ordering::Relaxed);
            self.full = true;
            self.paused_flag().store(true, Ordering::Relaxed);
        }
        if !std::mem::replace(&mut self.failing, true) {
            if full {
                tracing::warn!(path = %path.display(), error = %e,
                    "decision log paused: the disk is full; records are counted, not written, until a new file can be written (retried every second)");
            } else {
                tracing::warn!(path = %path.display(), error = %e,
                    "decision log: cannot write; records are lost until a new file can be written (retried every second)");
            }
        } else {
            tracing::debug!(path = %path.display(), error = %e, "decision log: still failing");
        }
        if full { Wrote::Paused } else { Wrote::Failed }
    }
}

/// A log file found in the directory (for the budget).
struct LogFile {
    name: String,
    bytes: u64,
    modified: SystemTime,
}

/// The directory's `decisions-*` and `outcomes-*` files (`.parquet`,
/// `.jsonl`, `.jsonl.zst`, and `.parquet.tmp`: the file being written, or
/// one a crash left).
fn log_files(dir: &Path) -> io::Result<Vec<LogFile>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let ours = [DECISIONS_PREFIX, OUTCOMES_PREFIX]
            .iter()
            .any(|p| name.starts_with(&format!("{p}-")))
            && [".parquet", ".parquet.tmp", ".jsonl", ".jsonl.zst"]
                .iter()
                .any(|ext| name.ends_with(ext));
        if !ours {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_file() {
            out.push(LogFile {
                name,
                bytes: meta.len(),
                modified: meta.modified().unwrap_or(UNIX_EPOCH),
            });
        }
    }
    Ok(out)
}

/// The file being written.
struct OpenFile {
    path: PathBuf,
    /// The name a Parquet file gets once closed (`path` without `.tmp`).
    final_path: Option<PathBuf>,
    out: Out,
    /// Bytes of records written (uncompressed).
    bytes: u64,
    /// Writes (lines, decision rows, outcome batches).
    records: u64,
    /// Parquet rows (decisions, or outcome events).
    rows: u64,
    opened: Instant,
    /// Written since the last flush (an idle zstd flush would otherwise
    /// add an empty block every second).
    dirty: bool,
}

enum Out {
    Plain(BufWriter<File>),
    Zstd(zstd::stream::write::Encoder<'static, Counted<File>>),
    Parquet(Box<ParquetOut>),
}

/// A Parquet file being written: the rows not yet encoded, and the writer
/// (which holds the row group being encoded).
struct ParquetOut {
    writer: parquet::arrow::ArrowWriter<File>,
    rows: Rows,
}

/// Rows of one kind.
enum Rows {
    Decisions(Box<DecisionRows>),
    Outcomes(OutcomeRows),
}

impl ParquetOut {
    fn buffered(&self) -> usize {
        match &self.rows {
            Rows::Decisions(r) => r.len(),
            Rows::Outcomes(r) => r.len(),
        }
    }

    /// Encodes the buffered rows.
    fn encode(&mut self) -> io::Result<()> {
        if self.buffered() == 0 {
            return Ok(());
        }
        let batch = match &mut self.rows {
            Rows::Decisions(r) => r.finish(),
            Rows::Outcomes(r) => r.finish(),
        };
        self.writer.write(&batch).map_err(parquet_io)
    }

    /// The file's size, estimated: bytes written, the row group being
    /// encoded, and the rows not yet encoded (about a tenth, compressed).
    fn size(&self) -> u64 {
        let pending = match &self.rows {
            Rows::Decisions(r) => r.bytes() / 10,
            Rows::Outcomes(r) => r.len() * 16,
        };
        (self.writer.bytes_written() + self.writer.in_progress_size() + pending) as u64
    }
}

/// An error of the Parquet writer as an I/O error (the OS error kept, so
/// that ENOSPC is recognised).
fn parquet_io(e: parquet::errors::ParquetError) -> io::Error {
    match e {
        parquet::errors::ParquetError::External(inner) => match inner.downcast::<io::Error>() {
            Ok(io) => *io,
            Err(other) => io::Error::other(other),
        },
        other => io::Error::other(other),
    }
}

impl OpenFile {
    /// The file's size once a line of `len` bytes is added (compressed:
    /// the bytes that reached the file so far).
    fn size_after(&self, len: usize) -> u64 {
        match &self.out {
            Out::Plain(_) => self.bytes + len as u64,
            Out::Zstd(e) => e.get_ref().bytes,
            Out::Parquet(p) => p.size() + len as u64,
        }
    }

    /// Appends a decision row (Parquet files only).
    fn append_record(
        &mut self,
        r: &PendingRecord,
        req: &crate::request::ScoreRequest<'_>,
        p: Option<&Pseudonymiser>,
    ) -> io::Result<()> {
        let Out::Parquet(out) = &mut self.out else {
            return Err(io::Error::other("not a Parquet file"));
        };
        let Rows::Decisions(rows) = &mut out.rows else {
            return Err(io::Error::other("not a decision file"));
        };
        rows.append(r, req, p);
        self.dirty = true;
        if out.buffered() >= PARQUET_BATCH_ROWS {
            out.encode()?;
        }
        // Counted as the file's only once in: when encoding fails the file
        // is lost with the rows counted before (moved from written to
        // failed), and this row is counted by what its write returns.
        self.records += 1;
        self.rows += 1;
        Ok(())
    }

    /// Appends outcome rows (Parquet files only).
    fn append_events(&mut self, events: &[OutcomeEvent]) -> io::Result<()> {
        let Out::Parquet(out) = &mut self.out else {
            return Err(io::Error::other("not a Parquet file"));
        };
        let Rows::Outcomes(rows) = &mut out.rows else {
            return Err(io::Error::other("not an outcome file"));
        };
        for e in events {
            rows.append(e);
        }
        self.dirty = true;
        if out.buffered() >= PARQUET_BATCH_ROWS * 16 {
            out.encode()?;
        }
        // As a decision row: counted once encoded or buffered.
        self.records += 1;
        self.rows += events.len() as u64;
        Ok(())
    }

    fn write(&mut self, line: &[u8]) -> io::Result<()> {
        match &mut self.out {
            Out::Plain(w) => w.write_all(line)?,
            Out::Zstd(e) => e.write_all(line)?,
            Out::Parquet(_) => return Err(io::Error::other("a line for a Parquet file")),
        }
        self.bytes += line.len() as u64;
        self.records += 1;
        self.dirty = true;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !std::mem::take(&mut self.dirty) {
            return Ok(());
        }
        match &mut self.out {
            Out::Plain(w) => w.flush(),
            // Ends the current zstd block: everything so far is decodable.
            Out::Zstd(e) => e.flush(),
            // Nothing is readable before the footer: encode what is
            // buffered, so that it waits compressed.
            Out::Parquet(p) => p.encode(),
        }
    }

    /// Flushes, ends the zstd frame (writes the Parquet footer) and syncs;
    /// a Parquet file then gets its final name. Returns the file's size.
    fn finish(self) -> io::Result<u64> {
        let len = match self.out {
            Out::Plain(w) => synced(&w.into_inner().map_err(|e| e.into_error())?)?,
            Out::Zstd(e) => synced(&e.finish()?.inner)?,
            Out::Parquet(mut p) => {
                p.encode()?;
                // Writes the footer and flushes; the writer then only
                // lends its file.
                p.writer.finish().map_err(parquet_io)?;
                synced(p.writer.inner())?
            }
        };
        if let Some(final_path) = &self.final_path {
            std::fs::rename(&self.path, final_path)?;
        }
        Ok(len)
    }

    /// Gives up on a file after an error; removes it if it holds no record
    /// (or, Parquet, if it could not be finished: without its footer it
    /// cannot be read).
    /// Returns the rows lost with it (those of an unfinished Parquet file).
    fn discard(self) -> u64 {
        let (path, empty, rows) = (self.path.clone(), self.records == 0, self.rows);
        let parquet = self.final_path.is_some();
        let finished = self.finish().is_ok();
        if empty || (parquet && !finished) {
            let _ = std::fs::remove_file(&path);
        }
        if parquet && !finished { rows } else { 0 }
    }
}

/// Syncs `file` to disk; returns its size.
fn synced(file: &File) -> io::Result<u64> {
    file.sync_data()?;
    Ok(file.metadata()?.len())
}

/// Counts the bytes that reach the inner writer.
struct Counted<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `t` in UTC as `YYYYMMDDTHHMMSSZ` (RFC 3339 without separators).
fn utc_stamp(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace(['-', ':'], "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamps() {
        let at = |s| utc_stamp(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "19700101T000000Z");
        assert_eq!(at(951_782_400), "20000229T000000Z");
        assert_eq!(at(1_795_648_953), "20261125T232233Z");
        assert_eq!(at(4_102_444_799), "20991231T235959Z");
    }

    #[test]
    fn config_debug_hides_the_key() {
        let c = DecisionLogConfig {
            pseudonymise_key: Some(b"secret-key".to_vec()),
            ..Default::default()
        };
        let s = format!("{c:?}");
        assert!(!s.contains("secret") && !s.contains("115"), "{s}");
        assert!(s.contains("<set>"), "{s}");
    }

    /// A Parquet file whose row group cannot reach the disk loses the rows
    /// it held: they move from written to failed, the row that met the
    /// error counts as paused (a full disk), and every row is counted once.
    /// `written` never counts a row that was not written (it once counted
    /// the failing row and went below zero when every earlier file had
    /// been lost too).
    #[test]
    fn rows_of_a_parquet_file_lost_to_a_full_disk_are_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        let config = DecisionLogConfig {
            dir: Some(dir.path().to_owned()),
            format: LogFormat::Parquet,
            max_file_bytes: u64::MAX,
            max_file_age: Duration::from_secs(3600),
            ..Default::default()
        };
        let counters = Arc::new(Counters::default());
        let mut sink = FileSink::new(dir.path(), &config, DECISIONS_PREFIX, &counters).unwrap();
        // The file's bytes go to /dev/full: the first row group to leave
        // the Parquet writer's buffer fails with ENOSPC.
        let full = OpenOptions::new().write(true).open("/dev/full").unwrap();
        let writer = parquet::arrow::ArrowWriter::try_new(
            full,
            DecisionRows::schema(),
            Some(columnar::properties("decisions")),
        )
        .unwrap();
        let path = dir.path().join("decisions-full-000000.parquet.tmp");
        sink.current = Some(OpenFile {
            final_path: Some(path.with_extension("")),
            path,
            out: Out::Parquet(Box::new(ParquetOut {
                writer,
                rows: Rows::Decisions(Box::default()),
            })),
            bytes: 0,
            records: 0,
            rows: 0,
            opened: Instant::now(),
            dirty: false,
        });
        let outcome_sink = Sink::Stdout(StdoutSink { failing: false });
        let mut writer = Writer {
            sink: Sink::Files(sink),
            outcome_sink,
            format: LogFormat::Parquet,
            pseudonymiser: None,
            counters: counters.clone(),
            line: Vec::new(),
        };
        let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut sent = 0u64;
        while count(&counters.paused_records) == 0 {
            assert!(
                sent < 100_000,
                "/dev/full never failed a write: written {}, failed {}",
                count(&counters.written),
                count(&counters.failed)
            );
            writer.write(&columnar::tests::pending(sent as usize, 20));
            sent += 1;
            assert!(
                count(&counters.written) <= sent,
                "written {}",
                count(&counters.written)
            );
        }
        // Every row before the failing one was in the lost file.
        assert_eq!(count(&counters.written), 0);
        assert_eq!(count(&counters.failed), sent - 1);
        assert_eq!(count(&counters.paused_records), 1);
        assert!(counters.disk_full.load(Ordering::Relaxed));
        // Nothing unreadable is left behind.
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_zero_queue_is_refused() {
        let c = DecisionLogConfig {
            queue: 0,
            ..Default::default()
        };
        assert!(matches!(
            DecisionLog::start(c),
            Err(DecisionLogError::Config(_))
        ));
    }
}
