//! A policy whose instantiation reads the sandbox's randomness: its core
//! module exports `_initialize`, which the component calls when the
//! instance is made, and which takes a `wasi:random` value before any
//! call (Rust's own constructors run at each export's entry instead). Each
//! call reports it as debug value `init_random`. The host seeds randomness
//! from the request, so a fresh instance per request shows each request's
//! own value; an instance put back to a snapshot taken after one request's
//! instantiation would show that request's value to every later one.

use std::sync::atomic::{AtomicU64, Ordering};

use oasis_sdk::{Decisions, Metadata, Policy, PolicyError, Request};
use serde::{Deserialize, Serialize};

/// The policy.
pub struct InitRandom;

/// No settings.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {}

/// What `_initialize` read (0 before it ran, or natively).
static AT_INIT: AtomicU64 = AtomicU64::new(0);

/// The core module's `_initialize`, which the component calls once when
/// it is instantiated (before any export).
#[cfg(target_arch = "wasm32")]
#[unsafe(export_name = "_initialize")]
pub extern "C" fn read_at_init() {
    #[link(wasm_import_module = "wasi:random/random@0.2.0")]
    unsafe extern "C" {
        #[link_name = "get-random-u64"]
        fn get_random_u64() -> i64;
    }
    // SAFETY: the import takes nothing and returns a number.
    AT_INIT.store(unsafe { get_random_u64() } as u64, Ordering::Relaxed);
}

impl Policy for InitRandom {
    type Settings = Settings;

    fn metadata() -> Metadata {
        Metadata::new("init-random", "0.1.0")
            .description("Reads randomness at instantiation (tests only).")
    }

    fn score(_: &Settings, req: &Request) -> Result<Decisions, PolicyError> {
        let mut out = Decisions::passthrough(req);
        // The low 48 bits: exact in an f64.
        let v = AT_INIT.load(Ordering::Relaxed) & ((1 << 48) - 1);
        out.debug("init_random", None, v as f64);
        Ok(out)
    }
}

oasis_sdk::export_policy!(InitRandom);
