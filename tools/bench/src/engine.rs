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
    /// `PoolingAllocationConfig::pagemap_scan`: a slot's reset rewrites
    /// only the pages the instance dirtied (Linux 6.7+).
    pub pagemap_scan: bool,
    /// `Config::memory_init_cow`: memory images mapped copy-on-write
    /// instead of data segments copied at instantiation.
    pub memory_init_cow: bool,
}

/// The host's configuration (host/src/runtime/mod.rs).
pub const HOST: Tactic = Tactic {
    label: "host: pooling, keep resident 4 MiB, pagemap_scan, concurrency_support(false)",
    pooling: true,
    keep_resident: 4 << 20,
    concurrency_support: false,
    pagemap_scan: true,
    memory_init_cow: true,
};

/// The host's configuration and one change at a time.
pub const TACTICS: [Tactic; 7] = [
    HOST,
    Tactic {
        label: "keep resident 32 MiB (a Python heap's pages stay mapped between instances)",
        keep_resident: 32 << 20,
        ..HOST
    },
    Tactic {
        label: "pagemap_scan off (the kept-resident prefix memset on every reset)",
        pagemap_scan: false,
        ..HOST
    },
    Tactic {
        label: "concurrency_support(true)",
        concurrency_support: true,
        ..HOST
    },
    Tactic {
        label: "keep resident 0 (pool slots decommitted after each instance)",
        keep_resident: 0,
        ..HOST
    },
    Tactic {
        label: "memory_init_cow off (data segments copied)",
        memory_init_cow: false,
        ..HOST
    },
    Tactic {
        label: "no pooling (on-demand allocator)",
        pooling: false,
        keep_resident: 0,
        pagemap_scan: false,
        ..HOST
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

impl oasis::bindings::v0_3::oasis::policy::log::Host for State {
    fn log(
        &mut self,
        _: oasis::bindings::v0_3::oasis::policy::log::Level,
        _: String,
        _: Vec<oasis::bindings::v0_3::oasis::policy::log::Field>,
    ) {
    }
}

impl oasis::bindings::v0_3::oasis::policy::types::Host for State {}

/// The pre-linked component, on the contract version it exports.
enum Pre {
    /// `oasis:policy@0.2.0` (the Rust SDK's).
    V2(ScoringPolicyPre<State>),
    /// `oasis:policy@0.3.0` (byte columns: the Python SDK's).
    V3(oasis::bindings::v0_3::ScoringPolicyPre<State>),
}

/// A request in the form the component's contract version takes (the
/// 0.3.0 form is encoded once, outside the timed call, as the host does
/// before it instantiates).
pub enum Request<'r> {
    /// 0.2.0: the typed request.
    V2(&'r WitRequest),
    /// 0.3.0: byte columns.
    V3(Box<oasis::bindings::v0_3::oasis::policy::types::Request>),
}

/// A component ready to instantiate under one tactic.
pub struct Harness {
    engine: Engine,
    pre: Pre,
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
                })
                .pagemap_scan(if tactic.pagemap_scan {
                    wasmtime::Enabled::Auto
                } else {
                    wasmtime::Enabled::No
                });
            cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        cfg.epoch_interruption(true)
            .max_wasm_stack(oasis::runtime::MAX_WASM_STACK)
            .concurrency_support(tactic.concurrency_support)
            .memory_init_cow(tactic.memory_init_cow);
        let engine = Engine::new(&cfg).map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let mut linker = Linker::<State>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| anyhow::anyhow!("{e:#}"))?;
        oasis::bindings::ScoringPolicy::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        oasis::bindings::v0_3::ScoringPolicy::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let component =
            Component::from_file(&engine, component).map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let instance_pre = linker
            .instantiate_pre(&component)
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let pre = match ScoringPolicyPre::new(instance_pre.clone()) {
            Ok(pre) => Pre::V2(pre),
            Err(v2) => Pre::V3(
                oasis::bindings::v0_3::ScoringPolicyPre::new(instance_pre).map_err(|v3| {
                    anyhow::anyhow!(
                        "exports neither oasis:policy@0.2.0 ({v2:#}) nor 0.3.0 ({v3:#})"
                    )
                })?,
            ),
        };
        Ok(Harness { engine, pre })
    }

    /// `req` in the form this component's contract version takes.
    pub fn request<'r>(&self, req: &'r WitRequest) -> Request<'r> {
        match self.pre {
            Pre::V2(_) => Request::V2(req),
            Pre::V3(_) => Request::V3(Box::new(oasis::bindings::v0_3::request(req.clone()).0)),
        }
    }

    /// One call on a fresh instance; the number of scores returned. For a
    /// 0.3.0 component the request is encoded into byte columns here, so
    /// [`time_call`] counts that encoding (the host does it per call too);
    /// [`Harness::phases`] leaves it out of every phase.
    pub fn call(&self, settings: &str, req: &WitRequest) -> anyhow::Result<usize> {
        let mut store = Store::new(
            &self.engine,
            State {
                wasi: WasiCtx::builder().build(),
                table: ResourceTable::new(),
            },
        );
        store.set_epoch_deadline(1_000_000);
        let req = self.request(req);
        Ok(self.instantiate_and_call(&mut store, settings, &req)?.2)
    }

    /// Instantiates in `store` and calls once: the time of each step and
    /// the number of scores.
    fn instantiate_and_call(
        &self,
        store: &mut Store<State>,
        settings: &str,
        req: &Request<'_>,
    ) -> anyhow::Result<(Duration, Duration, usize)> {
        use crate::instantiation::timed;
        let e = |e: wasmtime::Error| anyhow::anyhow!("{e:#}");
        // The two versions' generated types differ, their steps do not.
        macro_rules! steps {
            ($pre:expr, $req:expr) => {{
                let (instance, instantiate) = timed(|| $pre.instantiate(&mut *store));
                let instance = instance.map_err(e)?;
                let (out, call) = timed(|| {
                    instance
                        .oasis_policy_policy()
                        .call_score(&mut *store, settings, $req)
                });
                let out = out
                    .map_err(e)?
                    .map_err(|x| anyhow::anyhow!("policy error: {x:?}"))?;
                (instantiate, call, out.scores.len())
            }};
        }
        Ok(match (&self.pre, req) {
            (Pre::V2(pre), Request::V2(req)) => steps!(pre, req),
            // 0.3.0 scores are little-endian f64 bytes.
            (Pre::V3(pre), Request::V3(req)) => {
                let (i, c, bytes) = steps!(pre, &**req);
                (i, c, bytes / 8)
            }
            _ => anyhow::bail!("a request of another contract version"),
        })
    }
}

impl Harness {
    /// One call on a fresh instance, phase by phase
    /// ([`crate::instantiation`]). The context mirrors the host's
    /// (`host/src/sandbox.rs`): captured stdout/stderr, seeded random,
    /// frozen clocks, no network.
    pub fn phases(
        &self,
        settings: &str,
        req: &WitRequest,
    ) -> anyhow::Result<crate::instantiation::Phases> {
        use crate::instantiation::timed;
        let (state, context) = timed(|| {
            let seed = [7u8; 32].to_vec();
            let mut table = ResourceTable::new();
            table.set_max_capacity(1024);
            State {
                wasi: WasiCtx::builder()
                    .stdout(wasmtime_wasi::p2::pipe::MemoryOutputPipe::new(64 << 10))
                    .stderr(wasmtime_wasi::p2::pipe::MemoryOutputPipe::new(64 << 10))
                    .secure_random(wasmtime_wasi::Deterministic::new(seed.clone()))
                    .insecure_random(wasmtime_wasi::Deterministic::new(seed))
                    .insecure_random_seed(7)
                    .allow_tcp(false)
                    .allow_udp(false)
                    .allow_ip_name_lookup(false)
                    .build(),
                table,
            }
        });
        let (mut store, store_t) = timed(|| {
            let mut store = Store::new(&self.engine, state);
            store.set_epoch_deadline(1_000_000);
            store
        });
        let req = self.request(req);
        let (instantiate, call, _) = self.instantiate_and_call(&mut store, settings, &req)?;
        let ((), drop_t) = timed(|| drop(store));
        Ok(crate::instantiation::Phases {
            context,
            store: store_t,
            instantiate,
            call,
            drop: drop_t,
        })
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
