//! A minimal wasmtime setup next to the host's, to measure engine tactics
//! the host fixes in `host/src/runtime.rs` (this crate must not change the
//! host): the same component, the same generated bindings and the same kind
//! of fresh instance per call, under a configuration that can be toggled.
//! It leaves out what the host adds per call (memory limiter, captured
//! stdio, deterministic clocks and random, output checks), so its absolute
//! figures are a little lower than `oasis::Policy::call`'s; the before/after
//! difference is what it is for.

use std::path::Path;
use std::time::Duration;

use oasis::bindings::{ScoringPolicyPre, WitRequest};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// One engine configuration.
#[derive(Debug, Clone, Copy)]
pub struct Tactic {
    /// Label in the report.
    pub label: &'static str,
    /// Pooling allocator (else on-demand mmap per instance).
    pub pooling: bool,
    /// `linear_memory_keep_resident` of the pool, bytes.
    pub keep_resident: usize,
    /// `Config::concurrency_support`.
    pub concurrency_support: bool,
}

/// The host's configuration (runtime.rs) and one change at a time.
pub const TACTICS: [Tactic; 4] = [
    Tactic {
        label: "host: pooling, keep resident 4 MiB, concurrency_support(false)",
        pooling: true,
        keep_resident: 4 << 20,
        concurrency_support: false,
    },
    Tactic {
        label: "concurrency_support(true)",
        pooling: true,
        keep_resident: 4 << 20,
        concurrency_support: true,
    },
    Tactic {
        label: "keep resident 0 (pool slots decommitted after each instance)",
        pooling: true,
        keep_resident: 0,
        concurrency_support: false,
    },
    Tactic {
        label: "no pooling (on-demand allocator)",
        pooling: false,
        keep_resident: 0,
        concurrency_support: false,
    },
];

struct State {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl oasis::bindings::oasis::policy::log::Host for State {
    fn log(
        &mut self,
        _: oasis::bindings::WitLogLevel,
        _: String,
        _: Vec<oasis::bindings::oasis::policy::log::Field>,
    ) {
    }
}

impl oasis::bindings::oasis::policy::types::Host for State {}

/// A component ready to instantiate under one tactic.
pub struct Harness {
    engine: Engine,
    pre: ScoringPolicyPre<State>,
}

impl Harness {
    /// Compiles `component` under `tactic`.
    pub fn new(tactic: Tactic, component: &Path) -> anyhow::Result<Harness> {
        let mut cfg = Config::new();
        if tactic.pooling {
            let mut pool = PoolingAllocationConfig::new();
            pool.total_component_instances(16)
                .total_core_instances(16 * 8)
                .total_memories(16 * 2)
                .total_tables(16 * 4)
                .max_memory_size(oasis::Limits::MAX_MEMORY_BYTES)
                .linear_memory_keep_resident(tactic.keep_resident)
                .table_keep_resident(if tactic.keep_resident > 0 {
                    64 << 10
                } else {
                    0
                });
            cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        cfg.epoch_interruption(true)
            .max_wasm_stack(oasis::runtime::MAX_WASM_STACK)
            .concurrency_support(tactic.concurrency_support);
        let engine = Engine::new(&cfg).map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let mut linker = Linker::<State>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| anyhow::anyhow!("{e:#}"))?;
        oasis::bindings::ScoringPolicy::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let component =
            Component::from_file(&engine, component).map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let pre = ScoringPolicyPre::new(
            linker
                .instantiate_pre(&component)
                .map_err(|e| anyhow::anyhow!("{e:#}"))?,
        )
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        Ok(Harness { engine, pre })
    }

    /// One call on a fresh instance; the number of scores returned.
    pub fn call(&self, settings: &str, req: &WitRequest) -> anyhow::Result<usize> {
        let mut store = Store::new(
            &self.engine,
            State {
                wasi: WasiCtx::builder().build(),
                table: ResourceTable::new(),
            },
        );
        store.set_epoch_deadline(1_000_000);
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let out = instance
            .oasis_policy_policy()
            .call_score(&mut store, settings, req)
            .map_err(|e| anyhow::anyhow!("{e:#}"))?
            .map_err(|e| anyhow::anyhow!("policy error: {e:?}"))?;
        Ok(out.scores.len())
    }
}

/// Best-of-N mean of one call under `harness`.
pub fn time_call(harness: &Harness, settings: &str, req: &WitRequest) -> anyhow::Result<Duration> {
    harness.call(settings, req)?;
    Ok(crate::stats::best_mean(
        7,
        Duration::from_millis(40),
        || {
            harness.call(settings, req).expect("call");
        },
    ))
}
