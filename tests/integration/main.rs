//! Integration tests: real components built from `policies/` and
//! `tests/guests/` (by the `oasis-test-components` build script), run through
//! the runtime, the CLI and the server.

mod adversarial;
mod cache;
mod cli;
mod compile_bounds;
mod dashboard;
mod decision_log;
mod delivery_state;
mod docs;
mod grpc;
mod harness;
mod instance_reuse;
mod layers;
mod memory_bound;
mod openapi;
mod policies;
mod python;
mod registry;
mod request_fuzz;
mod rollout;
mod server_api;
mod server_backpressure;
mod server_reload;
mod server_slow_clients;
mod server_smoke;
mod traces;
