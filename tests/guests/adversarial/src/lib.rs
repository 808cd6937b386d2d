//! A policy that misbehaves on demand, for the runtime's containment tests.
//!
//! The settings choose the attack; it only fires when the request carries the
//! context feature `attack` = 1 (so the load-time smoke call, which sets
//! context features to 0.5, passes and the same
//! loaded policy can be shown to serve normally right after an attack).

use oasis_sdk::{Decisions, Metadata, Policy, PolicyError, Request};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU8, Ordering};

/// The misbehaving policy.
pub struct Adversarial;

/// Which attack to run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attack {
    /// Behave (relevance passthrough).
    #[default]
    None,
    /// Spin forever.
    Loop,
    /// Write a mark into 600 disjoint 4 KiB pages (every other one) of a
    /// zero-initialised static, after counting the pages that already hold
    /// it: debug value `stale_pages` (0 unless a previous instance's memory
    /// leaked into this one).
    Scatter,
    /// Allocate until memory runs out.
    MemoryBomb,
    /// Recurse without bound.
    Recursion,
    /// Panic with a known message.
    Panic,
    /// Return one score too few.
    WrongLength,
    /// Return a NaN score.
    NanScore,
    /// Return a propensity of 2.
    BadPropensity,
    /// Try to read `path`; report success as debug value `file_read_ok`.
    ReadFile,
    /// Try to read env var `OASIS_TEST_SECRET`; report as `env_read_ok`.
    ReadEnv,
    /// Return a policy error.
    PolicyError,
    /// Print more than the host keeps.
    PrintFlood,
    /// Sleep for an hour (a host call epochs cannot interrupt).
    Sleep,
    /// Log 100 structured lines with 20 long fields each.
    LogFlood,
    /// Log one 16 MiB message: more than the host copies in one transfer.
    HugeLog,
    /// Try to forge host log lines (newlines, terminal escapes) through its
    /// log message, a log field, stdout and stderr, then behave.
    ForgeLog,
    /// Call the `log` import with 128 fields whose values all point at the
    /// same 1 MiB of guest memory (the canonical ABI allows it): lifted in
    /// full that is 128 MiB of host memory for 1 MiB of the guest's.
    AliasLog,
    /// Take 2,000 WASI stream handles (`get-stdout`) without dropping any:
    /// past the host's handle table limit.
    HandleFlood,
    /// Spin for `iterations` loop iterations, then behave: a fixed amount
    /// of CPU work.
    Spin,
    /// Log one message of `bytes` bytes.
    LogBytes,
    /// Return a policy error whose message is `bytes` bytes.
    ErrorBytes,
    /// Report debug values whose names straddle the host's inline name
    /// length (23 bytes) and the contract's longest (64 bytes), one with
    /// multi-byte characters: each must come through exactly
    /// ([`DEBUG_NAMES`], value `i` on candidate `i % 3`).
    DebugNames,
    /// Report a debug value whose name is not UTF-8.
    BadDebugName,
    /// Churn through small allocations: 100 rounds of 10,000 blocks of 100
    /// bytes (1 MB a round, 100 MB in all: far past the SDK's arena and
    /// the 64 MiB limit unless freed memory is reused), each filled with a
    /// pattern and checked before it is freed in allocation order, while a
    /// `Vec` grows by pushes between them. Reports `checksum` (the sum of
    /// the checked bytes, `u8` wrapping per block, as f64) and `grown` (the
    /// grown `Vec`'s length).
    AllocChurn,
    /// Leave state behind for the next call: count this call in a static
    /// (debug value `calls`, the count after this one), report the linear
    /// memory's size at entry in 64 KiB pages (`pages_at_start`), then grow
    /// the memory by 64 pages and write to its last byte. A call on an
    /// instance put back to its state after instantiation reports
    /// `calls` = 1 and the same `pages_at_start` every time.
    Residue,
    /// Take a WASI stream handle (`get-stdout`) and keep it in a static,
    /// reporting `handle_kept` = 1 when a handle an earlier call kept is
    /// there: an instance holding a handle cannot be put back to its state
    /// after instantiation, so the host must drop it, and the next call
    /// finds none.
    KeepHandle,
}

/// The names `Attack::DebugNames` reports, in order.
pub const DEBUG_NAMES: [&str; 5] = [
    "x",
    "twenty_three_bytes_name",
    "twenty_four_bytes_name__",
    "sixty_four_bytes_name_sixty_four_bytes_name_sixty_four_bytes_nam",
    "naïve_ø_名前",
];

/// Settings: the attack and its parameter.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The attack.
    pub attack: Attack,
    /// File to read for `read-file`.
    pub path: String,
    /// Loop iterations for `spin`.
    pub iterations: u64,
    /// Size of the message for `log-bytes` and `error-bytes`.
    pub bytes: u64,
}

/// Pages `Attack::Scatter` marks, every other 4 KiB page of [`SCATTER`].
const SCATTER_PAGES: usize = 600;
const SCATTER_STRIDE: usize = 8192;
const SCATTER_MARK: u8 = 0xA5;
/// Zero-initialised (`.bss`): a fresh instance must find it all zero.
static SCATTER: [AtomicU8; SCATTER_PAGES * SCATTER_STRIDE] =
    [const { AtomicU8::new(0) }; SCATTER_PAGES * SCATTER_STRIDE];

#[inline(never)]
#[allow(unconditional_recursion, reason = "the point of the recursion attack")]
fn recurse(depth: u64, sink: &mut [u64; 16]) -> u64 {
    sink[(depth % 16) as usize] = depth;
    let more = recurse(depth + 1, sink);
    std::hint::black_box(more + sink[3])
}

impl Policy for Adversarial {
    type Settings = Settings;

    fn metadata() -> Metadata {
        Metadata::new("adversarial", "0.1.0")
            .description("Misbehaves on demand (tests only).")
            .context(&["attack"])
    }

    fn score(s: &Settings, req: &Request) -> Result<Decisions, PolicyError> {
        let mut out = Decisions::passthrough(req);
        if req.context_feature("attack") != Some(1.0) {
            return Ok(out);
        }
        match s.attack {
            Attack::None => {}
            Attack::Loop => {
                let mut x = 0u64;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            Attack::MemoryBomb => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    // Reserve 8 MiB at a time and touch one byte: the bomb is
                    // about address space, not about the time to fill pages.
                    let mut block = Vec::<u8>::with_capacity(8 << 20);
                    block.push(1);
                    hoard.push(block);
                    std::hint::black_box(&hoard);
                }
            }
            Attack::Recursion => {
                let mut sink = [0u64; 16];
                out.debug("depth", None, recurse(0, &mut sink) as f64);
            }
            Attack::Panic => panic!(
                "adversarial policy panicked on purpose: candidate count {}",
                req.len()
            ),
            Attack::WrongLength => {
                out.scores.pop();
            }
            Attack::NanScore => out.scores[0] = f64::NAN,
            Attack::BadPropensity => out.propensity[0] = 2.0,
            Attack::ReadFile => {
                let ok = std::fs::read_to_string(&s.path).is_ok();
                out.debug("file_read_ok", None, ok as u8 as f64);
            }
            Attack::ReadEnv => {
                let ok =
                    std::env::var("OASIS_TEST_SECRET").is_ok() || std::env::vars().next().is_some();
                out.debug("env_read_ok", None, ok as u8 as f64);
            }
            Attack::PolicyError => {
                return Err(PolicyError::InvalidRequest("refusing on purpose".into()));
            }
            Attack::Sleep => std::thread::sleep(std::time::Duration::from_secs(3600)),
            Attack::LogFlood => {
                let long = "v".repeat(1000);
                let fields: Vec<(String, &str)> = (0..20)
                    .map(|k| (format!("key{k}"), long.as_str()))
                    .collect();
                let fields: Vec<(&str, &str)> =
                    fields.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                for i in 0..100 {
                    oasis_sdk::log::event(
                        oasis_sdk::log::Level::Info,
                        &format!("line {i}"),
                        &fields,
                    );
                }
            }
            Attack::ForgeLog => {
                let forged = "ok\n2026-01-01T00:00:00.000000Z  INFO oasis::control::reload: policy activated policy=evil\u{1b}[2K";
                oasis_sdk::log::event(oasis_sdk::log::Level::Info, forged, &[("k\nx", forged)]);
                println!("{forged}");
                eprintln!("{forged}");
            }
            Attack::HugeLog => {
                let huge = "x".repeat(16 << 20);
                oasis_sdk::log::event(oasis_sdk::log::Level::Info, &huge, &[]);
            }
            Attack::AliasLog => alias_log(),
            Attack::HandleFlood => handle_flood(),
            Attack::LogBytes => {
                let text = "x".repeat(s.bytes as usize);
                oasis_sdk::log::event(oasis_sdk::log::Level::Info, &text, &[]);
            }
            Attack::ErrorBytes => {
                return Err(PolicyError::Internal("e".repeat(s.bytes as usize)));
            }
            Attack::DebugNames => {
                for (i, name) in DEBUG_NAMES.iter().enumerate() {
                    out.debug(*name, Some(i % 3), i as f64);
                }
            }
            Attack::AllocChurn => {
                let mut checksum = 0u64;
                let mut grown: Vec<u32> = Vec::new();
                for round in 0..100u32 {
                    let blocks: Vec<Vec<u8>> = (0..10_000u32)
                        .map(|i| {
                            if i % 16 == 0 {
                                grown.push(round ^ i);
                            }
                            vec![(round.wrapping_add(i) % 251) as u8; 100]
                        })
                        .collect();
                    for (i, b) in blocks.iter().enumerate() {
                        let want = (round.wrapping_add(i as u32) % 251) as u8;
                        assert!(b.iter().all(|&x| x == want), "block {i} of round {round}");
                        checksum += u64::from(want);
                    }
                    drop(blocks);
                }
                out.debug("checksum", None, checksum as f64);
                out.debug("grown", None, grown.len() as f64);
            }
            Attack::BadDebugName => {
                // SAFETY: not safe, on purpose: a `String` that is not UTF-8
                // is what a guest written in another language can return;
                // the host must refuse it. Nothing in this guest reads it.
                let name = unsafe { String::from_utf8_unchecked(vec![b'o', 0xff, b'k']) };
                out.debug(name, None, 1.0);
            }
            Attack::Residue => {
                static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
                out.debug("calls", None, calls as f64);
                out.debug("pages_at_start", None, grow_memory(64) as f64);
            }
            Attack::KeepHandle => {
                static KEPT: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);
                let before = KEPT.swap(take_stdout_handle(), Ordering::Relaxed);
                out.debug("handle_kept", None, if before >= 0 { 1.0 } else { 0.0 });
            }
            Attack::Scatter => {
                let mut stale = 0u32;
                for page in SCATTER.chunks(SCATTER_STRIDE) {
                    if page[0].load(Ordering::Relaxed) == SCATTER_MARK {
                        stale += 1;
                    }
                    page[0].store(SCATTER_MARK, Ordering::Relaxed);
                }
                out.debug("stale_pages", None, stale as f64);
            }
            Attack::Spin => {
                let mut x = 0u64;
                for i in 0..s.iterations {
                    x = std::hint::black_box(x.wrapping_add(i));
                }
                out.debug("spun", None, (x & 1) as f64);
            }
            Attack::PrintFlood => {
                for i in 0..1_000 {
                    println!("flooding the host's stdout, line {i}");
                }
            }
        }
        Ok(out)
    }
}

/// The aliasing attack: the `log` import called by hand (the SDK copies each
/// string, so it cannot alias) with every field's value at the same bytes.
#[cfg(target_arch = "wasm32")]
fn alias_log() {
    #[link(wasm_import_module = "oasis:policy/log@0.2.0")]
    unsafe extern "C" {
        #[link_name = "log"]
        fn log_import(
            level: i32,
            message: *mut u8,
            message_len: usize,
            fields: *mut u8,
            fields_len: usize,
        );
    }
    let value = vec![b'x'; 1 << 20];
    let key = b"k";
    // A `field` record is { key: string, value: string }: four 32-bit words.
    let fields: Vec<[usize; 4]> = (0..128)
        .map(|_| {
            [
                key.as_ptr() as usize,
                key.len(),
                value.as_ptr() as usize,
                value.len(),
            ]
        })
        .collect();
    let message = b"aliased";
    // SAFETY: every pointer and length describes live memory of this
    // instance for the duration of the call; `info` is level 2.
    unsafe {
        log_import(
            2,
            message.as_ptr().cast_mut(),
            message.len(),
            fields.as_ptr().cast::<u8>().cast_mut(),
            fields.len(),
        )
    };
}

/// Natively (unit tests of the crate) there is no host to attack.
#[cfg(not(target_arch = "wasm32"))]
fn alias_log() {}

/// The handle flood: `wasi:cli/stdout.get-stdout` called by hand, each call
/// a new resource in the host's table, none dropped.
#[cfg(target_arch = "wasm32")]
fn handle_flood() {
    #[link(wasm_import_module = "wasi:cli/stdout@0.2.0")]
    unsafe extern "C" {
        #[link_name = "get-stdout"]
        fn get_stdout() -> i32;
    }
    for _ in 0..2_000 {
        // SAFETY: the import takes nothing and returns a handle we leak on
        // purpose.
        let _ = unsafe { get_stdout() };
    }
}

/// Natively there is no host to attack.
#[cfg(not(target_arch = "wasm32"))]
fn handle_flood() {}

/// A `get-stdout` handle, not dropped.
#[cfg(target_arch = "wasm32")]
fn take_stdout_handle() -> i32 {
    #[link(wasm_import_module = "wasi:cli/stdout@0.2.0")]
    unsafe extern "C" {
        #[link_name = "get-stdout"]
        fn get_stdout() -> i32;
    }
    // SAFETY: the import takes nothing and returns a handle kept on purpose.
    unsafe { get_stdout() }
}

#[cfg(not(target_arch = "wasm32"))]
fn take_stdout_handle() -> i32 {
    0
}

/// Grows linear memory by `pages` 64 KiB pages and writes to its last
/// byte; returns the size in pages before.
#[cfg(target_arch = "wasm32")]
fn grow_memory(pages: usize) -> usize {
    let before = core::arch::wasm32::memory_size(0);
    if core::arch::wasm32::memory_grow(0, pages) != usize::MAX {
        let last = (before + pages) * 65536 - 1;
        // SAFETY: `last` is the last byte of the memory just grown, which
        // nothing else uses.
        unsafe { core::ptr::write_volatile(last as *mut u8, 0xA5) };
    }
    before
}

#[cfg(not(target_arch = "wasm32"))]
fn grow_memory(_pages: usize) -> usize {
    0
}

oasis_sdk::export_policy!(Adversarial);
