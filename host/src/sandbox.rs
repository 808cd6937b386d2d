//! The per-call sandbox: what one store holds while a policy runs.
//!
//! A policy gets no ambient capability. Its WASI context has no preopened
//! directories, no environment variables, no arguments and no network; its
//! clocks are frozen at the request's timestamp and its random sources are
//! seeded from the request's seed, so a call can be replayed bit for bit.
//! stdout and stderr are captured into small in-memory pipes and forwarded to
//! the host's logs; the `log` import is capped in lines and bytes.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::WitLogLevel;
use crate::stdio::BoundedPipe;

/// Bytes of stdout and of stderr kept per call; the rest is counted and
/// dropped, so a policy that floods its output is truncated, not failed.
pub const STDIO_CAPACITY: usize = 16 << 10;
/// `log` lines accepted per call; later ones are counted and dropped.
pub const MAX_LOG_LINES: usize = 32;
/// Bytes kept of one `log` line.
pub const MAX_LOG_LINE_BYTES: usize = 1024;
/// Fields kept of one `log` line.
pub const MAX_LOG_FIELDS: usize = 16;
/// Largest `wasi:random` request per call.
pub const MAX_RANDOM_BYTES: u64 = 64 << 10;
/// WASI resource handles (streams, pollables) a call may hold at once.
pub const MAX_HANDLES: usize = 1024;

/// Store data of one call.
pub struct CallState {
    /// Built on the policy's first WASI call ([`WasiView::ctx`]): most
    /// calls of a Rust policy make none, and building it (the pipes' ends,
    /// two seeded generators, two clocks, each boxed) was ~1.3 µs of every
    /// fresh instance. Rebuilt after [`CallState::begin_call`].
    wasi: Option<WasiCtx>,
    /// What the WASI context is built with: this call's frozen clock and
    /// its randomness seed.
    timestamp_ms: i64,
    seed: u64,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    /// The policy's stdout and stderr, created with the WASI context (a
    /// policy that makes no WASI call writes neither).
    stdio: Option<(BoundedPipe, BoundedPipe)>,
    policy: Arc<str>,
    log_lines: usize,
    pub(crate) logs_dropped: usize,
    /// Bytes of stdout and stderr already forwarded: a reused instance
    /// ([`CallState::begin_call`]) keeps its pipes, since the guest may
    /// hold stream handles to them, and each call forwards only what it
    /// added.
    stdout_seen: usize,
    stderr_seen: usize,
    /// The call's time budget, checked every epoch tick.
    pub(crate) clock: CallClock,
}

impl CallState {
    /// A sandbox for one call of `policy` with `memory_limit` bytes, the
    /// clock frozen at `timestamp_ms` and randomness seeded with `seed`.
    pub(crate) fn new(policy: Arc<str>, memory_limit: usize, timestamp_ms: i64, seed: u64) -> Self {
        let mut table = ResourceTable::new();
        // Each WASI handle is a host allocation outside the memory limit.
        table.set_max_capacity(MAX_HANDLES);
        CallState {
            wasi: None,
            timestamp_ms,
            seed,
            table,
            limiter: MemoryLimiter::new(memory_limit),
            stdio: None,
            policy,
            log_lines: 0,
            logs_dropped: 0,
            stdout_seen: 0,
            stderr_seen: 0,
            clock: CallClock::default(),
        }
    }

    /// Prepares the sandbox of a reused instance for its next call: the
    /// clock frozen at this request's `timestamp_ms`, randomness seeded with
    /// this request's `seed`, the per-call log counters reset. What stays is
    /// the instance's: its memory (and the limiter's high-water mark: memory
    /// never shrinks), its WASI handle table (the [`MAX_HANDLES`] cap is per
    /// instance) and its stdout/stderr pipes (their [`STDIO_CAPACITY`] is
    /// per instance too; each call forwards what it added).
    pub(crate) fn begin_call(&mut self, timestamp_ms: i64, seed: u64) {
        self.wasi = None;
        self.timestamp_ms = timestamp_ms;
        self.seed = seed;
        self.log_lines = 0;
        self.logs_dropped = 0;
        self.limiter.refused = None;
    }

    /// Drops what a finished call left here: its WASI context and its
    /// stdout/stderr pipes (their contents were forwarded by
    /// [`CallState::drain_stdio`]), for an instance kept idle after a reset.
    pub(crate) fn release(&mut self) {
        self.wasi = None;
        self.stdio = None;
        self.stdout_seen = 0;
        self.stderr_seen = 0;
    }

    /// Whether the guest has made a WASI call with this sandbox (its WASI
    /// context, seeded and clocked from the request, was built).
    pub(crate) fn wasi_used(&self) -> bool {
        self.wasi.is_some()
    }

    /// Forwards captured stdout/stderr to the host log and returns stderr's
    /// text (where a Rust panic message lands): what this call added.
    pub(crate) fn drain_stdio(&mut self) -> String {
        if self.logs_dropped > 0 {
            tracing::warn!(policy = %self.policy, dropped = self.logs_dropped, limit = MAX_LOG_LINES, "policy log lines dropped");
        }
        // No WASI call ever made: nothing was written.
        let Some((stdout, stderr)) = &self.stdio else {
            return String::new();
        };
        let (out, dropped) = stdout.contents();
        let out = out.get(self.stdout_seen..).unwrap_or_default();
        self.stdout_seen += out.len();
        if !out.is_empty() {
            let stdout = String::from_utf8_lossy(out);
            tracing::info!(policy = %self.policy, stdout = %visible(&stdout), dropped_bytes = dropped, "policy stdout");
        }
        let (err, dropped) = stderr.contents();
        let err = err.get(self.stderr_seen..).unwrap_or_default();
        self.stderr_seen += err.len();
        let err = String::from_utf8_lossy(err).into_owned();
        if !err.is_empty() {
            tracing::info!(policy = %self.policy, stderr = %visible(&err), dropped_bytes = dropped, "policy stderr");
        }
        err
    }
}

/// The WASI context of one call: stdout and stderr into `stdout`/`stderr`,
/// the clock frozen at `timestamp_ms`, randomness seeded with `seed`, no
/// network.
fn wasi_ctx(stdout: &BoundedPipe, stderr: &BoundedPipe, timestamp_ms: i64, seed: u64) -> WasiCtx {
    let seed_bytes = seed_stream(seed);
    WasiCtx::builder()
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .secure_random(wasmtime_wasi::Deterministic::new(seed_bytes.clone()))
        .insecure_random(wasmtime_wasi::Deterministic::new(seed_bytes))
        .insecure_random_seed(seed as u128)
        .wall_clock(FrozenClock(Duration::from_millis(
            timestamp_ms.max(0) as u64
        )))
        .monotonic_clock(FrozenClock(Duration::ZERO))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        // wasi:random would otherwise fill up to 64 MiB per call on the host.
        .max_random_size(MAX_RANDOM_BYTES)
        .build()
}

/// Longest text taken from a guest (error messages) into responses and logs.
pub const MAX_GUEST_TEXT: usize = 1024;

/// The first `max` bytes of `s`, cut on a char boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    &s[..s.floor_char_boundary(max)]
}

/// `s` with control characters (newlines, terminal escapes, C1 controls)
/// written as escapes (`\n`, `\u{1b}`), so text from a policy or a caller
/// can never become a second log line or drive a terminal. Borrowed, with no
/// copy, when there is nothing to escape.
pub fn visible(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Guest-provided text bounded to [`MAX_GUEST_TEXT`] bytes, with `…` when cut.
pub(crate) fn bounded(text: &str) -> String {
    let cut = truncate(text, MAX_GUEST_TEXT);
    if cut.len() == text.len() {
        text.to_string()
    } else {
        format!("{cut}…")
    }
}

/// 32 bytes derived from `seed` (splitmix64), cycled by WASI's deterministic RNG.
fn seed_stream(seed: u64) -> Vec<u8> {
    let mut x = seed;
    let mut out = Vec::with_capacity(32);
    for _ in 0..4 {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out
}

/// A clock that always reads the same instant.
struct FrozenClock(Duration);

impl wasmtime_wasi::HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        self.0
    }
}

impl wasmtime_wasi::HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }
    fn now(&self) -> u64 {
        self.0.as_nanos() as u64
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        // The pipes outlive the context: a reused instance keeps them.
        let (stdout, stderr) = self.stdio.get_or_insert_with(|| {
            (
                BoundedPipe::new(STDIO_CAPACITY),
                BoundedPipe::new(STDIO_CAPACITY),
            )
        });
        let (timestamp_ms, seed) = (self.timestamp_ms, self.seed);
        WasiCtxView {
            ctx: self
                .wasi
                .get_or_insert_with(|| wasi_ctx(stdout, stderr, timestamp_ms, seed)),
            table: &mut self.table,
        }
    }
}

impl crate::bindings::oasis::policy::log::Host for CallState {
    fn log(
        &mut self,
        level: WitLogLevel,
        message: String,
        fields: Vec<crate::bindings::oasis::policy::log::Field>,
    ) {
        if self.log_lines >= MAX_LOG_LINES {
            self.logs_dropped += 1;
            return;
        }
        self.log_lines += 1;
        // The guest's text goes in its own fields, never in the event's
        // `message`, so a policy cannot forge host log lines. Its fields are
        // rendered as one bounded `key=value` list.
        let policy = &*self.policy;
        let policy_message = visible(truncate(&message, MAX_LOG_LINE_BYTES));
        let policy_message = &*policy_message;
        let mut policy_fields = String::new();
        for f in fields.iter().take(MAX_LOG_FIELDS) {
            if !policy_fields.is_empty() {
                policy_fields.push(' ');
            }
            policy_fields.push_str(&visible(truncate(&f.key, 64)));
            policy_fields.push('=');
            policy_fields.push_str(&visible(truncate(&f.value, 256)));
        }
        let policy_fields = policy_fields.as_str();
        match level {
            WitLogLevel::Trace => {
                tracing::trace!(policy, policy_message, policy_fields, "policy log")
            }
            WitLogLevel::Debug => {
                tracing::debug!(policy, policy_message, policy_fields, "policy log")
            }
            WitLogLevel::Info => {
                tracing::info!(policy, policy_message, policy_fields, "policy log")
            }
            WitLogLevel::Warn => {
                tracing::warn!(policy, policy_message, policy_fields, "policy log")
            }
            WitLogLevel::Error => {
                tracing::error!(policy, policy_message, policy_fields, "policy log")
            }
        }
    }
}

impl crate::bindings::oasis::policy::types::Host for CallState {}

/// The log import of another contract version (`v0_1`, `v0_3`): the same
/// interface under that package version, forwarded to the current one, so
/// one implementation serves every version.
macro_rules! forward_log {
    ($version:ident) => {
        impl crate::bindings::$version::oasis::policy::log::Host for CallState {
            fn log(
                &mut self,
                level: crate::bindings::$version::oasis::policy::log::Level,
                message: String,
                fields: Vec<crate::bindings::$version::oasis::policy::log::Field>,
            ) {
                use crate::bindings::$version::oasis::policy::log::Level;
                let level = match level {
                    Level::Trace => WitLogLevel::Trace,
                    Level::Debug => WitLogLevel::Debug,
                    Level::Info => WitLogLevel::Info,
                    Level::Warn => WitLogLevel::Warn,
                    Level::Error => WitLogLevel::Error,
                };
                let fields = fields
                    .into_iter()
                    .map(|f| crate::bindings::oasis::policy::log::Field {
                        key: f.key,
                        value: f.value,
                    })
                    .collect();
                crate::bindings::oasis::policy::log::Host::log(self, level, message, fields);
            }
        }

        impl crate::bindings::$version::oasis::policy::types::Host for CallState {}
    };
}

forward_log!(v0_1);
forward_log!(v0_3);

/// The time budget of one call: the policy's own CPU time (its thread's CPU
/// clock) against the deadline, wall-clock time against a ceiling. Armed on
/// the thread that runs the call, checked from the store's epoch-deadline
/// callback every tick, so a busy machine (a thread waiting for a core) does
/// not count against the policy, while a call that cannot get its CPU time in
/// still ends at the ceiling.
///
/// The thread's CPU clock is a system call (~1 µs here, 7% of a fresh
/// instance), and most calls end before the first tick, so it is first read
/// at the first check, not when the call is armed. What the call used before
/// that check is estimated from the wall clock: all of it, when the check
/// comes within [`CPU_ESTIMATE_WINDOW`] of arming (a call that waited for a
/// core that briefly is charged for the wait: stricter by at most the
/// window); none of it, when the check comes later (the ticker or the thread
/// was held up: the wall-clock ceiling still bounds the call).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallClock {
    /// Read at the first check (see above).
    cpu_start: Option<Duration>,
    wall_start: std::time::Instant,
    deadline: Duration,
    ceiling: Duration,
    /// Which clock ended the call, once one has.
    pub(crate) hit: Option<crate::DeadlineClock>,
}

/// How late after arming a call's first clock check may come for the time
/// in between to be counted as the call's CPU time ([`CallClock`]): two
/// epoch ticks.
const CPU_ESTIMATE_WINDOW: Duration = Duration::from_millis(2);

impl Default for CallClock {
    fn default() -> Self {
        CallClock {
            cpu_start: None,
            wall_start: std::time::Instant::now(),
            deadline: Duration::MAX,
            ceiling: Duration::MAX,
            hit: None,
        }
    }
}

impl CallClock {
    /// Starts the budget of a call on the calling thread.
    pub(crate) fn arm(&mut self, deadline: Duration, ceiling: Duration) {
        *self = CallClock {
            cpu_start: None,
            wall_start: std::time::Instant::now(),
            deadline,
            ceiling,
            hit: None,
        };
    }

    /// Whether the call may go on; records which clock ended it if not.
    pub(crate) fn check(&mut self) -> bool {
        let now = thread_cpu_time();
        let wall = self.wall_start.elapsed();
        let start = *self.cpu_start.get_or_insert_with(|| {
            if wall <= CPU_ESTIMATE_WINDOW {
                now.saturating_sub(wall)
            } else {
                now
            }
        });
        if now.saturating_sub(start) >= self.deadline {
            self.hit = Some(crate::DeadlineClock::Cpu);
        } else if wall >= self.ceiling {
            self.hit = Some(crate::DeadlineClock::Wall);
        }
        self.hit.is_none()
    }
}

/// CPU time the calling thread has used; zero if the clock cannot be read
/// (never on Linux; without the clock, time is not counted and the
/// wall-clock ceiling ends the call).
pub(crate) fn thread_cpu_time() -> Duration {
    thread_cpu().unwrap_or(Duration::ZERO)
}

/// CPU time the calling thread has used (`None` if the clock cannot be
/// read). A system call, not a vDSO read: the kernel takes the run queue's
/// lock to bring the running task's time up to date.
pub(crate) fn thread_cpu() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec that outlives the call;
    // CLOCK_THREAD_CPUTIME_ID needs no other argument.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| {
        Duration::new(
            ts.tv_sec.max(0) as u64,
            ts.tv_nsec.clamp(0, 999_999_999) as u32,
        )
    })
}

/// Enforces the memory limit of one store and remembers whether it refused a
/// growth, so that the resulting trap is reported as a memory-limit error
/// rather than as the guest's own "allocation failed" abort.
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    limit: usize,
    /// Largest size the guest asked for beyond the limit, if any.
    pub(crate) refused: Option<usize>,
    /// High-water mark of linear memory, for resource reports.
    pub(crate) peak: usize,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: usize) -> Self {
        MemoryLimiter {
            limit,
            refused: None,
            peak: 0,
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.refused = Some(self.refused.map_or(desired, |r| r.max(desired)));
            // Refuse with a trap: a guest that cannot allocate aborts anyway,
            // and trapping here keeps the cause unambiguous.
            return Err(wasmtime::format_err!(
                "memory limit of {} bytes exceeded",
                self.limit
            ));
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= crate::limits::Limits::MAX_TABLE_ELEMENTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_call_clock_names_the_clock_that_ran_out() {
        let mut clock = CallClock::default();
        clock.arm(Duration::from_secs(3600), Duration::from_secs(3600));
        assert!(clock.check() && clock.hit.is_none());
        clock.arm(Duration::from_secs(3600), Duration::ZERO);
        assert!(!clock.check());
        assert_eq!(clock.hit, Some(crate::DeadlineClock::Wall));
        clock.arm(Duration::ZERO, Duration::from_secs(3600));
        assert!(!clock.check());
        assert_eq!(clock.hit, Some(crate::DeadlineClock::Cpu));
        // Waiting is not CPU time.
        clock.arm(Duration::from_millis(20), Duration::from_secs(3600));
        std::thread::sleep(Duration::from_millis(40));
        assert!(clock.check(), "40 ms asleep used no CPU");
        // CPU time counts from arming, though the clock is first read at the
        // first check: spin 15 ms (checked at once), then 10 ms more.
        clock.arm(Duration::from_millis(20), Duration::from_secs(3600));
        assert!(clock.check(), "nothing used yet");
        // Spins until this thread has used `ms` of CPU (not wall) time, so a
        // loaded machine does not change the outcome.
        let spin = |ms| {
            let t = thread_cpu_time();
            while thread_cpu_time() - t < Duration::from_millis(ms) {
                std::hint::black_box(0);
            }
        };
        spin(15);
        assert!(clock.check(), "15 ms of 20");
        spin(10);
        assert!(!clock.check(), "25 ms of 20");
        assert_eq!(clock.hit, Some(crate::DeadlineClock::Cpu));
        // A first check within the window charges the time since arming
        // (later than the window, nothing before it: the machine was busy).
        clock.arm(Duration::from_micros(500), Duration::from_secs(3600));
        spin(1);
        let passed = clock.check();
        assert!(
            !passed || clock.wall_start.elapsed() > CPU_ESTIMATE_WINDOW,
            "1 ms spun before a first check within the window counts"
        );
    }

    #[test]
    fn guest_text_is_truncated_on_a_char_boundary() {
        assert_eq!(bounded("short"), "short");
        let b = bounded(&"é".repeat(1000));
        assert!(b.len() <= MAX_GUEST_TEXT + '…'.len_utf8() && b.ends_with('…'));
        assert_eq!(truncate("aé", 2), "a");
    }

    #[test]
    fn control_characters_are_made_visible() {
        assert!(matches!(
            visible("plain text"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            visible("ok\n2026-01-01 INFO oasis: forged\u{1b}[31m\u{9b}"),
            "ok\\n2026-01-01 INFO oasis: forged\\u{1b}[31m\\u{9b}"
        );
    }
}
