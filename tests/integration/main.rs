//! Integration tests: real components built from `policies/` and
//! `tests/guests/` (by the `oasis-test-components` build script), run through
//! the runtime, the CLI and the server.

mod adversarial;
mod bundle;
mod cache;
mod cli;
mod compile_bounds;
mod contract_0_3;
mod dashboard;
mod decision_log;
mod delivery_state;
mod deploy;
mod docs;
mod fleet;
mod fleet_guardrails;
mod full_disk;
mod grpc;
mod harness;
mod instance_reset;
mod instance_reuse;
mod layers;
mod memory_bound;
mod openapi;
mod parquet_log;
mod policies;
mod python;
mod python_client;
mod registry;
mod replay;
mod request_fuzz;
mod rollout;
mod server_api;
mod server_backpressure;
mod server_reload;
mod server_slow_clients;
mod server_smoke;
mod signing;
mod traces;
