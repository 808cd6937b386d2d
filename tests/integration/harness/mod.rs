//! Shared helpers: one runtime per test binary, requests, and loading;
//! [`server`] holds the server harnesses and their helpers.

pub mod process;
pub mod registry;
pub mod server;

use std::sync::OnceLock;

use oasis::request::{self, Validate};
use oasis::{CallError, CallOutcome, Limits, Policy, Runtime, RuntimeConfig};

/// A runtime shared by the tests of this binary (the engine is the costly part).
pub fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        // One directory shared by every run, as the CLI and server harnesses
        // do: entries are written atomically and keyed by content, and a
        // directory per process would pile up in /tmp run after run.
        let cache = std::env::temp_dir().join("oasis-test-cache");
        Runtime::new(RuntimeConfig {
            cache_dir: Some(cache),
            measure_fuel: false,
            max_instances: 64,
            ..Default::default()
        })
        .expect("runtime")
    })
}

/// Default limits with a generous deadline: tests that are not about time
/// must not fail because a busy CI machine preempted a 20 ms call.
pub fn limits() -> Limits {
    Limits {
        deadline: std::time::Duration::from_secs(2),
        ..Limits::default()
    }
}

/// Loads a component with settings JSON and [`limits`].
pub fn load(path: &str, settings: &str) -> Result<Policy, oasis::LoadError> {
    Policy::load_file(runtime(), path.as_ref(), settings, limits())
}

/// The bundled example request (examples/request.json).
pub fn example_body() -> Vec<u8> {
    std::fs::read(format!(
        "{}/examples/request.json",
        oasis_test_components::ROOT
    ))
    .unwrap()
}

/// Scores `body` (which must be a valid request) with `policy`, through the
/// library's pipeline.
pub fn score(policy: &Policy, body: &[u8]) -> Result<CallOutcome, CallError> {
    let req = request::parse(body)
        .and_then(|r| r.validate(policy.limits().max_candidates))
        .unwrap();
    policy.score(&req)
}

/// A small request; `attack` adds the context feature that arms the adversarial guest.
pub fn small_body(attack: bool) -> Vec<u8> {
    let features = if attack {
        r#", "features": {"attack": 1}"#
    } else {
        ""
    };
    format!(
        r#"{{"context": {{"request_id": "t", "listener_id": "u", "session_id": "s",
            "surface": "radio", "market": "SE", "timestamp_ms": 1781524800000, "seed": 3{features}}},
          "candidates": [{{"id": "a", "relevance": 0.9}}, {{"id": "b", "relevance": 0.5}},
                         {{"id": "c", "relevance": 0.1}}]}}"#
    )
    .into_bytes()
}
