//! Paths of the guest components built for the tests by this crate's
//! `build.rs`: the example policies (`BASELINE`, `GUARDED_BOOST`, ...) and
//! the adversarial guests (`ADVERSARIAL`, `NOT_A_POLICY`).

include!(concat!(env!("OUT_DIR"), "/components.rs"));
