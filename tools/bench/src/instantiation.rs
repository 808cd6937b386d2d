//! Where the time of a fresh instance goes (issue 20 item 1, issue 21 item 3).
//!
//! Oasis isolates every request by running it on a fresh instance of the
//! policy's component, so the cost of making (and throwing away) an instance
//! is paid on every request. This module splits that cost into the phases a
//! call goes through, measured one by one on the host's own engine
//! configuration ([`Tactic`] `HOST`):
//!
//! 1. **context**: the WASI context and resource table of the call (host
//!    memory only: pipes, deterministic random, frozen clocks);
//! 2. **store**: `Store::new`, the epoch deadline and the memory limiter;
//! 3. **instantiate**: the pre-linked component instantiated: a slot of the
//!    pooling allocator per core instance, its memory image mapped
//!    (copy-on-write) or its data segments copied, tables initialised,
//!    start functions run;
//! 4. **call**: the export called on an empty slate (lifting, the guest's
//!    own work, lowering); for a Python component this includes whatever
//!    the interpreter does on its first call in a fresh instance;
//! 5. **drop**: the store dropped: each slot is reset for the next
//!    instance (its memory returned to the initial image).
//!
//! Alongside the times it reads the component's structure with
//! `wasmparser` (core modules, memories defined or imported, the bytes of
//! active data segments, tables and element segments), which is what decides
//! the cost of phase 3.
//!
//! The harness is [`crate::engine`]'s: the host's bindings and engine
//! settings, without the host's per-call extras (captured stdio limits,
//! output checks), so the phases add up to a little less than
//! `oasis::Policy::call` on an empty slate.

use std::fmt::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use wasmparser::{Parser, Payload};

use crate::engine::{Harness, Tactic};

/// Mean time of each phase of one fresh instance.
#[derive(Debug, Clone, Copy, Default)]
pub struct Phases {
    /// WASI context and resource table.
    pub context: Duration,
    /// `Store::new` and its settings.
    pub store: Duration,
    /// The component instantiated.
    pub instantiate: Duration,
    /// The export called on an empty slate.
    pub call: Duration,
    /// The store dropped (slots reset).
    pub drop: Duration,
}

impl Phases {
    /// The sum of the phases.
    pub fn total(&self) -> Duration {
        self.context + self.store + self.instantiate + self.call + self.drop
    }
}

/// Measures `rounds` rounds of `per_round` fresh instances of `harness`
/// called with `settings` on `req`; returns the round with the lowest total
/// (the least disturbed by the rest of the machine), as means per instance.
///
/// # Errors
/// When an instance cannot be made or the call fails.
pub fn measure(
    harness: &Harness,
    settings: &str,
    req: &oasis::bindings::WitRequest,
    rounds: usize,
    per_round: usize,
) -> anyhow::Result<Phases> {
    // Warm-up: the first instances fault the pool's pages in.
    for _ in 0..per_round.min(20) {
        harness.phases(settings, req)?;
    }
    let mut best: Option<Phases> = None;
    for _ in 0..rounds {
        let mut sum = Phases::default();
        for _ in 0..per_round {
            let p = harness.phases(settings, req)?;
            sum.context += p.context;
            sum.store += p.store;
            sum.instantiate += p.instantiate;
            sum.call += p.call;
            sum.drop += p.drop;
        }
        let n = per_round as u32;
        let mean = Phases {
            context: sum.context / n,
            store: sum.store / n,
            instantiate: sum.instantiate / n,
            call: sum.call / n,
            drop: sum.drop / n,
        };
        if best.is_none_or(|b| mean.total() < b.total()) {
            best = Some(mean);
        }
    }
    Ok(best.unwrap_or_default())
}

/// Times `f`, returning its value and the time it took.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed())
}

/// What a component is made of, as far as instantiating it is concerned.
#[derive(Debug, Clone, Default)]
pub struct Shape {
    /// Size of the component file.
    pub bytes: usize,
    /// Core modules in it.
    pub core_modules: usize,
    /// Memories the core modules define (the others import theirs).
    pub memories_defined: usize,
    /// Initial pages (64 KiB) of the largest defined memory.
    pub largest_memory_pages: u64,
    /// Bytes of active data segments over all core modules.
    pub data_bytes: usize,
    /// Active data segments in modules that import their memory (these
    /// cannot be part of a copy-on-write image: they are copied at
    /// instantiation).
    pub data_bytes_in_importers: usize,
    /// Tables defined, and their total initial elements.
    pub tables: usize,
    /// Initial elements over all defined tables.
    pub table_elements: u64,
    /// Element segment entries over all core modules.
    pub element_entries: u64,
    /// Core modules with a start function.
    pub start_functions: usize,
}

/// Reads the structure of the component at `path`.
///
/// # Errors
/// When the file cannot be read or parsed.
pub fn shape(path: &Path) -> anyhow::Result<Shape> {
    let wasm = std::fs::read(path)?;
    let mut s = Shape {
        bytes: wasm.len(),
        ..Default::default()
    };
    // Per core module being parsed: does it import its memory, and its
    // active data bytes so far.
    let mut imports_memory = false;
    let mut module_data = 0usize;
    for payload in Parser::new(0).parse_all(&wasm) {
        match payload? {
            Payload::ModuleSection { .. } => {
                s.core_modules += 1;
                imports_memory = false;
                module_data = 0;
            }
            Payload::ImportSection(r) => {
                for imp in r {
                    if let wasmparser::TypeRef::Memory(_) = imp?.ty {
                        imports_memory = true;
                    }
                }
            }
            Payload::MemorySection(r) => {
                for m in r {
                    let m = m?;
                    s.memories_defined += 1;
                    s.largest_memory_pages = s.largest_memory_pages.max(m.initial);
                }
            }
            Payload::TableSection(r) => {
                for t in r {
                    s.tables += 1;
                    s.table_elements += t?.ty.initial;
                }
            }
            Payload::ElementSection(r) => {
                for e in r {
                    s.element_entries += match e?.items {
                        wasmparser::ElementItems::Functions(f) => u64::from(f.count()),
                        wasmparser::ElementItems::Expressions(_, x) => u64::from(x.count()),
                    };
                }
            }
            Payload::StartSection { .. } => s.start_functions += 1,
            Payload::DataSection(r) => {
                for d in r {
                    let d = d?;
                    if matches!(d.kind, wasmparser::DataKind::Active { .. }) {
                        module_data += d.data.len();
                    }
                }
            }
            Payload::End(_) => {
                // The end of a core module (or of the component itself).
                s.data_bytes += module_data;
                if imports_memory {
                    s.data_bytes_in_importers += module_data;
                }
                module_data = 0;
                imports_memory = false;
            }
            _ => {}
        }
    }
    Ok(s)
}

fn us(d: Duration) -> String {
    format!("{:.1} us", d.as_secs_f64() * 1e6)
}

/// One component to break down.
pub struct Subject<'a> {
    /// Label in the report.
    pub label: &'a str,
    /// Path of the component.
    pub path: &'a Path,
    /// Its settings (JSON).
    pub settings: &'a str,
    /// Instances per round (fewer for slow components).
    pub per_round: usize,
}

/// The breakdown for each subject under each tactic, as Markdown.
///
/// # Errors
/// When a component cannot be read or instantiated.
pub fn report(
    subjects: &[Subject<'_>],
    tactics: &[Tactic],
    empty: &oasis::bindings::WitRequest,
) -> anyhow::Result<String> {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| component | configuration | context | store | instantiate | empty call | drop (reset) | total |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|");
    for subj in subjects {
        for t in tactics {
            let h = match Harness::new(*t, subj.path) {
                Ok(h) => h,
                Err(e) => {
                    let _ = writeln!(
                        s,
                        "| {} | {} | not available: {e} | | | | | |",
                        subj.label, t.label
                    );
                    continue;
                }
            };
            let p = measure(&h, subj.settings, empty, 5, subj.per_round)?;
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | **{}** |",
                subj.label,
                t.label,
                us(p.context),
                us(p.store),
                us(p.instantiate),
                us(p.call),
                us(p.drop),
                us(p.total())
            );
        }
    }
    let _ = writeln!(
        s,
        "\n| component | file | core modules | memories defined (largest, initial) | active data | of it in modules importing their memory | tables (initial elements) | element entries | start functions |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for subj in subjects {
        let sh = shape(subj.path)?;
        let _ = writeln!(
            s,
            "| {} | {:.1} MB | {} | {} ({:.1} MiB) | {:.1} MB | {:.1} MB | {} ({}) | {} | {} |",
            subj.label,
            sh.bytes as f64 / 1e6,
            sh.core_modules,
            sh.memories_defined,
            sh.largest_memory_pages as f64 / 16.0,
            sh.data_bytes as f64 / 1e6,
            sh.data_bytes_in_importers as f64 / 1e6,
            sh.tables,
            sh.table_elements,
            sh.element_entries,
            sh.start_functions
        );
    }
    Ok(s)
}
