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
    (memory 1 8)
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
)
"#;

/// A store with one instance of [`STATEFUL`] on the runtime's engine (the
/// pooling allocator `oasis` serves with), and its snapshot.
struct Probe {
    store: Store<()>,
    instance: wasmtime::component::Instance,
    snapshot: OasisStoreSnapshot,
}

impl Probe {
    fn new() -> Probe {
        let engine = crate::harness::runtime().engine();
        let bytes = wat::parse_str(STATEFUL).expect("the test component parses");
        let component = Component::new(engine, &bytes).expect("the test component compiles");
        let mut store = Store::new(engine, ());
        // The engine interrupts on epochs (the runtime's ticker): far away.
        store.set_epoch_deadline(1 << 40);
        let instance = Linker::new(engine)
            .instantiate(&mut store, &component)
            .expect("the test component instantiates");
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

#[test]
fn a_store_whose_instance_trapped_is_not_reset() {
    let mut p = Probe::new();
    assert!(p.call("trap").is_err());
    let err = p.reset().expect_err("a trapped store cannot be reset");
    assert!(format!("{err:#}").contains("trapped"), "{err:#}");
}
