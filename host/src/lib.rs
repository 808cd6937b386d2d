//! # Oasis: a host for sandboxed WebAssembly promotion-scoring policies
//!
//! The personalization system sends a listening context and its candidate
//! tracks; Oasis runs the route's policy, a WebAssembly component written
//! against `wit/policy.wit`, and returns a promotion score per candidate.
//!
//! The data path, one module per step:
//!
//! ```text
//! request (JSON) ─► columnar batch ─► policy (wasm) ─► output checks ─► response
//!   request.rs       columnar.rs       policy.rs        output.rs       response.rs
//! ```
//!
//! Around it: [`runtime`] (engine, linker, epoch ticker), [`sandbox`] (what
//! a call may touch: nothing but bounded logs), [`cache`] (compiled
//! components on disk), [`limits`] and [`error`].
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use oasis::{Policy, Runtime, columnar, request};
//! let runtime = Runtime::new(Default::default())?;
//! let policy = Policy::load_file(&runtime, "baseline.wasm".as_ref(), "{}", Default::default())?;
//! let body = std::fs::read("examples/request.json")?;
//! let req = request::parse(&body)?;
//! req.validate(policy.limits().max_candidates)?;
//! let batch = columnar::to_wit(&req, &columnar::feature_columns(policy.info()), &policy.info().context_features);
//! let outcome = policy.call(&batch)?;
//! println!("{:?}", outcome.decisions.scores);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod bindings;
pub mod cache;
pub mod columnar;
pub mod error;
pub mod limits;
pub mod output;
pub mod policy;
pub mod request;
pub mod response;
pub mod runtime;
pub mod sandbox;
pub mod server;
pub mod stdio;

pub use error::{CallError, CallErrorKind, LoadError};
pub use limits::Limits;
pub use policy::{CallOutcome, Policy, PolicyInfo, Usage};
pub use runtime::{Runtime, RuntimeConfig};
