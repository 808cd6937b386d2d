//! The vendored wasmtime's instance reset (`Store::oasis_snapshot` and
//! `Store::oasis_reset`, vendor/README.md), on components written as text so
//! that each kind of state can be changed directly: a mutable global, a
//! linear memory's contents and size, a passive data segment, a function
//! table, a trap. Compiled guests (tests/integration/adversarial.rs) change
//! memory but never leave a global changed after a call (their stack pointer
//! is restored on return), so only these tests show that globals and data
//! segments are put back.

use wasmtime::component::{Component, Linker, TypedFunc};
use wasmtime::{OasisStoreSnapshot, Store};

/// One core module lifted as a component: each export takes nothing and
/// returns a `u32`.
const STATEFUL: &str = r#"
(component
  (core module $m
    (global $g (mut i32) (i32.const 0))
    (memory 1 128)
    (table $t 2 funcref)
    (data $d "\2a\2b\2c")
    (func $zero (result i32) (i32.const 0))
    (elem declare func $zero)
    ;; The global, incremented.
    (func (export "bump") (result i32)
      (global.set $g (i32.add (global.get $g) (i32.const 1)))
      (global.get $g))
    ;; Byte 100 of memory, incremented.
    (func (export "poke") (result i32)
      (i32.store8 (i32.const 100) (i32.add (i32.load8_u (i32.const 100)) (i32.const 1)))
      (i32.load8_u (i32.const 100)))
    ;; Grows memory by 2 pages, writes to its last byte; the size before.
    (func (export "grow") (result i32)
      (local $before i32)
      (local.set $before (memory.grow (i32.const 2)))
      (i32.store8
        (i32.sub (i32.mul (i32.add (local.get $before) (i32.const 2)) (i32.const 65536)) (i32.const 1))
        (i32.const 1))
      (local.get $before))
    (func (export "size") (result i32) (memory.size))
    ;; Drops the passive segment: a later `init` traps.
    (func (export "drop-data") (result i32) (data.drop $d) (i32.const 0))
    ;; Copies the passive segment to address 200; its first byte.
    (func (export "init") (result i32)
      (memory.init $d (i32.const 200) (i32.const 0) (i32.const 3))
      (i32.load8_u (i32.const 200)))
    ;; Whether table slot 0 is null (1) or not (0).
    (func (export "slot-null") (result i32) (ref.is_null (table.get $t (i32.const 0))))
    ;; Fills table slot 0.
    (func (export "set-slot") (result i32) (table.set $t (i32.const 0) (ref.func $zero)) (i32.const 0))
    ;; Grows the table by one slot.
    (func (export "grow-table") (result i32) (table.grow $t (ref.null func) (i32.const 1)))
    (func (export "trap") (result i32) unreachable)
    ;; Grows memory to 100 pages (6.4 MiB: past the 4 MiB a reset keeps
    ;; resident, so part of it is decommitted) and writes 1 to the first
    ;; byte of every 4 KiB page; the number of 4 KiB pages that already
    ;; held a 1.
    (func (export "fill") (result i32)
      (local $p i32) (local $end i32) (local $stale i32)
      (drop (memory.grow (i32.sub (i32.const 100) (memory.size))))
      (local.set $end (i32.mul (memory.size) (i32.const 65536)))
      (block $done
        (loop $next
          (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
          (local.set $stale (i32.add (local.get $stale) (i32.load8_u (local.get $p))))
          (i32.store8 (local.get $p) (i32.const 1))
          (local.set $p (i32.add (local.get $p) (i32.const 4096)))
          (br $next)))
      (local.get $stale))
  )
  (core instance $i (instantiate $m))
  (func (export "bump") (result u32) (canon lift (core func $i "bump")))
  (func (export "poke") (result u32) (canon lift (core func $i "poke")))
  (func (export "grow") (result u32) (canon lift (core func $i "grow")))
  (func (export "size") (result u32) (canon lift (core func $i "size")))
  (func (export "drop-data") (result u32) (canon lift (core func $i "drop-data")))
  (func (export "init") (result u32) (canon lift (core func $i "init")))
  (func (export "slot-null") (result u32) (canon lift (core func $i "slot-null")))
  (func (export "set-slot") (result u32) (canon lift (core func $i "set-slot")))
  (func (export "grow-table") (result u32) (canon lift (core func $i "grow-table")))
  (func (export "trap") (result u32) (canon lift (core func $i "trap")))
  (func (export "fill") (result u32) (canon lift (core func $i "fill")))
)
"#;

/// A store with one instance of [`STATEFUL`] ([`instantiate`]) and its
/// snapshot.
struct Probe {
    store: Store<()>,
    instance: wasmtime::component::Instance,
    snapshot: OasisStoreSnapshot,
}

impl Probe {
    fn new() -> Probe {
        let (mut store, instance) = instantiate(STATEFUL);
        let snapshot = store.oasis_snapshot().expect("a snapshot");
        Probe {
            store,
            instance,
            snapshot,
        }
    }

    fn call(&mut self, name: &str) -> wasmtime::Result<u32> {
        let f: TypedFunc<(), (u32,)> = self.instance.get_typed_func(&mut self.store, name)?;
        let (v,) = f.call(&mut self.store, ())?;
        Ok(v)
    }

    fn reset(&mut self) -> wasmtime::Result<()> {
        self.store.oasis_reset(&self.snapshot)
    }
}

#[test]
fn a_reset_puts_a_mutable_global_back() {
    let mut p = Probe::new();
    assert_eq!(p.call("bump").unwrap(), 1);
    assert_eq!(p.call("bump").unwrap(), 2, "no reset: the global carries");
    p.reset().unwrap();
    for _ in 0..3 {
        assert_eq!(p.call("bump").unwrap(), 1);
        p.reset().unwrap();
    }
}

#[test]
fn a_reset_puts_memory_contents_and_size_back() {
    let mut p = Probe::new();
    assert_eq!(p.call("poke").unwrap(), 1);
    assert_eq!(p.call("size").unwrap(), 1);
    assert_eq!(p.call("grow").unwrap(), 1);
    assert_eq!(p.call("size").unwrap(), 3);
    p.reset().unwrap();
    assert_eq!(p.call("size").unwrap(), 1, "the growth is undone");
    assert_eq!(p.call("poke").unwrap(), 1, "the write is undone");
    // Growing again finds zeroed pages, not the earlier write.
    assert_eq!(p.call("grow").unwrap(), 1);
    p.reset().unwrap();
    assert_eq!(p.call("grow").unwrap(), 1);
}

#[test]
fn a_reset_puts_a_dropped_data_segment_back() {
    let mut p = Probe::new();
    assert_eq!(p.call("init").unwrap(), 0x2a);
    p.call("drop-data").unwrap();
    assert!(p.call("init").is_err(), "a dropped segment traps");
    // A trap poisons the instance: a fresh probe for the reset.
    let mut p = Probe::new();
    p.call("drop-data").unwrap();
    p.reset().unwrap();
    assert_eq!(p.call("init").unwrap(), 0x2a, "the segment is back");
}

#[test]
fn a_reset_puts_table_slots_back_and_refuses_a_grown_table() {
    let mut p = Probe::new();
    assert_eq!(p.call("slot-null").unwrap(), 1);
    p.call("set-slot").unwrap();
    assert_eq!(p.call("slot-null").unwrap(), 0);
    p.reset().unwrap();
    assert_eq!(p.call("slot-null").unwrap(), 1, "the slot is empty again");
    assert_eq!(p.call("grow-table").unwrap(), 2);
    let err = p.reset().expect_err("a grown table cannot be put back");
    assert!(format!("{err:#}").contains("table"), "{err:#}");
}

/// 6.4 MiB written, more than the 4 MiB a reset keeps resident: what is
/// past it is decommitted, and none of it is found again.
#[test]
fn a_reset_after_writing_past_the_resident_budget_leaves_nothing() {
    let mut p = Probe::new();
    for round in 0..3 {
        assert_eq!(
            p.call("fill").unwrap(),
            0,
            "round {round} found earlier writes"
        );
        assert_eq!(p.call("size").unwrap(), 100);
        p.reset().unwrap();
        assert_eq!(p.call("size").unwrap(), 1);
    }
}

/// A snapshot puts back only the store it was taken of.
#[test]
fn a_snapshot_of_another_store_is_refused() {
    let mut a = Probe::new();
    let b = Probe::new();
    let err = a
        .store
        .oasis_reset(&b.snapshot)
        .expect_err("another store's snapshot");
    assert!(format!("{err:#}").contains("another store"), "{err:#}");
    a.reset().unwrap();
}

#[test]
fn a_store_whose_instance_trapped_is_not_reset() {
    let mut p = Probe::new();
    assert!(p.call("trap").is_err());
    let err = p.reset().expect_err("a trapped store cannot be reset");
    assert!(format!("{err:#}").contains("trapped"), "{err:#}");
}

/// The `init_random` a call of the `init-random` guest reports for a
/// request with `seed`.
fn init_random(policy: &oasis::Policy, seed: u64) -> f64 {
    let mut body: serde_json::Value =
        serde_json::from_slice(&crate::harness::example_body()).unwrap();
    body["context"]["seed"] = seed.into();
    let body = serde_json::to_vec(&body).unwrap();
    let out = crate::harness::score(policy, &body).unwrap();
    let debug = out.decisions.debug.iter().find(|d| d.name == "init_random");
    debug.expect("the guest reports init_random").value
}

/// A component whose instantiation reads the sandbox's randomness (seeded
/// from the request) is not reset: a snapshot taken after one request's
/// instantiation would give that request's value to every later request on
/// the instance. Each request sees its own, as with a fresh instance.
#[test]
fn an_instance_whose_instantiation_used_wasi_is_not_reset() {
    let policy = crate::harness::load(oasis_test_components::INIT_RANDOM, "{}").unwrap();
    let first = init_random(&policy, 1);
    let second = init_random(&policy, 2);
    assert_ne!(
        first, second,
        "the second request saw the first one's instantiation"
    );
    assert_eq!(
        init_random(&policy, 1),
        first,
        "the same seed, the same value"
    );
    assert_eq!(policy.idle_instances(), 0, "nothing is kept");
}

/// A component whose start function writes memory: `$pages` 4 KiB pages
/// from address 0, byte 100 set to 7 (in the first page).
fn started(pages: u32) -> String {
    format!(
        r#"
(component
  (core module $m
    (memory 128 128)
    (func $start
      (local $p i32)
      (block $done
        (loop $next
          (br_if $done (i32.ge_u (local.get $p) (i32.const {end})))
          (i32.store8 (local.get $p) (i32.const 3))
          (local.set $p (i32.add (local.get $p) (i32.const 4096)))
          (br $next)))
      (i32.store8 (i32.const 100) (i32.const 7)))
    (start $start)
    (func (export "poke") (result i32)
      (i32.store8 (i32.const 100) (i32.add (i32.load8_u (i32.const 100)) (i32.const 1)))
      (i32.load8_u (i32.const 100)))
  )
  (core instance $i (instantiate $m))
  (func (export "poke") (result u32) (canon lift (core func $i "poke")))
)
"#,
        end = pages * 4096
    )
}

fn instantiate(wat: &str) -> (Store<()>, wasmtime::component::Instance) {
    let engine = crate::harness::runtime().engine();
    let component = Component::new(engine, wat::parse_str(wat).unwrap()).unwrap();
    let mut store = Store::new(engine, ());
    store.set_epoch_deadline(1 << 40);
    let instance = Linker::new(engine)
        .instantiate(&mut store, &component)
        .unwrap();
    (store, instance)
}

/// What instantiation wrote (a start function's writes) is part of the
/// snapshot and comes back with every reset.
#[test]
fn a_reset_puts_back_what_instantiation_wrote() {
    let (mut store, instance) = instantiate(&started(4));
    let snapshot = store.oasis_snapshot().unwrap();
    let poke: TypedFunc<(), (u32,)> = instance.get_typed_func(&mut store, "poke").unwrap();
    for _ in 0..3 {
        assert_eq!(
            poke.call(&mut store, ()).unwrap().0,
            8,
            "7 from the start function, + 1"
        );
        store.oasis_reset(&snapshot).unwrap();
    }
}

/// A snapshot keeps a copy of what instantiation wrote, outside the
/// guest's memory limit: more than a reset keeps resident (4 MiB) is
/// refused, and the host then gives the policy fresh instances.
#[test]
fn a_snapshot_of_an_instantiation_that_wrote_megabytes_is_refused() {
    let (mut store, _) = instantiate(&started(1200));
    let Err(err) = store.oasis_snapshot() else {
        panic!("4.8 MB written at instantiation: the snapshot must be refused");
    };
    assert!(
        format!("{err:#}").contains("more than a reset keeps resident"),
        "{err:#}"
    );
}
