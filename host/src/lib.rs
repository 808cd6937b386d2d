//! # Oasis: a host for sandboxed WebAssembly promotion-scoring policies
//!
//! The personalization system sends a listening context and its candidate
//! tracks; Oasis runs the route's policy, a WebAssembly component written
//! against `wit/policy.wit`, and returns a promotion score per candidate.
//!
//! The data path, one module per step:
//!
//! ```text
//! request (JSON) ─► valid request ─► columnar batch ─► policy (wasm) ─► output checks ─► response
//!   request.rs       request.rs        columnar.rs       policy.rs        output.rs       response.rs
//! ```
//!
//! The library owns the pipeline: [`request::parse`] borrows the body,
//! [`validate`](request::Validate::validate) checks it against the contract
//! and packs it into a [`ValidRequest`], and [`Policy::score`] builds the
//! batch the policy declared and calls it. The contract's rules (bounds,
//! surfaces, markets, reason bits, the output check) come from the
//! `oasis-contract` crate, shared with the guest SDK; the wire formats (the
//! request's JSON types, the golden fixture, the metadata record) from
//! `oasis-wire`, shared with the guest SDK and `oasis-proto`.
//!
//! Around it: [`runtime`] (engine, linker, epoch ticker, the compile
//! worker), [`metadata`] (what a policy says about itself, and its
//! identity), [`cache`] (compiled components on disk), [`limits`],
//! [`error`], [`delivery`] (state the request did not send).
//!
//! The server is four layers over that core, each a folder whose module
//! doc gives its map and rules, and [`server`], the composition root that
//! wires them:
//!
//! ```text
//! api/        transport: HTTP and gRPC handlers, listener, admission, auth, OpenAPI, ErrorKind
//! serving/    Scorer: resolve → validate → fill → chain → write-back → guardrail → log → shadows
//! control/    manifests, registry, reload, rollout state, versions, manager, audit
//! telemetry/  logging setup, metrics per subsystem
//! ```
//!
//! A layer imports only the layers below it and the core; the core imports
//! none of them (`tests/integration/layers.rs` checks the graph).
//!
//! Offline: [`decision_log`] records what was served, [`replay`] runs the
//! logged requests again (determinism, or candidates compared with the log
//! and valued off-policy with [`ope`]).
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use oasis::request::{self, Validate};
//! use oasis::{Policy, Runtime};
//! let runtime = Runtime::new(Default::default())?;
//! let policy = Policy::load_file(&runtime, "baseline.wasm".as_ref(), "{}", Default::default())?;
//! let body = std::fs::read("examples/request.json")?;
//! let req = request::parse(&body)?.validate(policy.limits().max_candidates)?;
//! let outcome = policy.score(&req)?;
//! println!("{} says {:?}", policy.identity().name, outcome.decisions.scores);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod api;
pub mod bindings;
pub mod bucket;
pub mod cache;
pub mod columnar;
pub mod control;
pub mod decision_log;
pub mod delivery;
pub mod divergence;
pub mod error;
pub mod exact;
pub mod limits;
pub mod metadata;
pub mod ope;
pub(crate) mod output;
pub mod policy;
pub mod replay;
pub mod request;
pub mod response;
pub mod runtime;
pub(crate) mod sandbox;
pub mod server;
pub mod serving;
pub(crate) mod stdio;
pub mod telemetry;

pub use error::{CallError, CallErrorKind, DeadlineClock, LoadError};
pub use limits::{Concurrency, Limits};
pub use metadata::{PolicyInfo, PolicyRef};
pub use policy::{CallOutcome, Policy, Usage};
pub use request::ValidRequest;
pub use runtime::{CompileLimits, Runtime, RuntimeConfig};
pub use sandbox::visible;
