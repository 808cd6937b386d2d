//! Serving: one scoring request from a parsed request to its answer,
//! whatever transport it came through.
//!
//! ```text
//! ScoreRequest ─► Scorer::score ──────────────────────────────► Scored ─► encode::{json, proto}
//!                  resolve route (control::registry snapshot)            (the transport's bytes)
//!                  validate against the route's policy                 ─► Scorer::after
//!                  fill delivery state (delivery::Delivery)                write-back is done;
//!                  chain: arm after arm (arm::invoke), passthrough last    decision log, shadows,
//!                  write-back, guardrail                                   metrics
//! ```
//!
//! | module        | concern                                                        |
//! |---------------|----------------------------------------------------------------|
//! | `scorer`      | [`Scorer`], the handle the transports call; [`Scored`]         |
//! | `intake`      | how a request came in: [`Transport`], [`Received`], its [`span`] |
//! | `error`       | [`ServeError`]: why a request was not scored                    |
//! | `chain`       | the serving chain: arms tried in order, passthrough last       |
//! | `served`      | [`Served`](served::Served): who answered, what failed before   |
//! | `resources`   | slots, statistics, metrics and log the chain and shadows use   |
//! | `arm`         | one policy call on a blocking thread, in the request's span     |
//! | `cpu`         | CPU slots: calls run to completion, one per core, a slice each |
//! | `encode`      | the JSON body and the protobuf message of a [`Scored`]         |
//! | `shadow`      | shadow calls beside the served arm, off the response path      |
//! | `shadow_pool` | the threads shadows run on, at the lowest CPU priority         |
//! | `guardrail`   | a canary's sliding window and its limits                       |
//! | `fleet_window`| the same window summed over replicas in shared Redis counters  |
//! | `route_stats` | per-route state that outlives registry snapshots               |
//! | `campaigns`   | per-campaign delivery against target and what was done with it |
//! | `logging`     | which requests are logged, handed to the decision log           |
//!
//! Rules: serving reads the control plane's published snapshot (the
//! registry) and sends rollback requests to it, but never changes it; it
//! returns [`ServeError`], never an HTTP or gRPC type (the transport maps it,
//! `api::error`); nothing here holds a lock while guest code runs.

pub mod arm;
pub mod campaigns;
pub mod chain;
pub mod cpu;
pub mod encode;
mod error;
pub mod fleet_window;
pub mod guardrail;
mod intake;
pub mod logging;
pub mod resources;
pub mod route_stats;
pub mod scorer;
pub mod served;
pub mod shadow;
pub mod shadow_pool;

pub use error::ServeError;
pub use intake::{Received, Transport, identify, span};
pub use scorer::{Admission, Scored, Scorer};
