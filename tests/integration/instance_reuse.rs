//! The opt-in instance-reuse mode (`[limits] reuse_instance_calls`):
//! by default no state of one request reaches another; with reuse it does
//! (the mode is real, and its weaker isolation is what the README says);
//! any failed call discards its instance; the deadline and the memory limit
//! still apply to every call; an instance serves at most N calls.
//!
//! The probe is a Python policy written here (into `<target>/python/src/`)
//! and built like any other: it counts its `score` calls in a module global
//! and reports the count as a debug value, and it fails on marker seeds.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use oasis::request::{self, Validate};
use oasis::{CallErrorKind, Limits, Policy};
use oasis_test_components::{GUARDED_BOOST, ROOT};

use crate::python::{build, runtime, target_dir};

/// Seeds on which the probe fails, each in its own way.
const RAISE: u64 = 666;
const LOOP: u64 = 777;
const HOARD: u64 = 888;
const NAN: u64 = 999;

const PROBE: &str = r#"from dataclasses import dataclass

from oasis_sdk import Decisions, Policy

# Module state: the snapshot taken at build time has CALLS == [0], so a
# fresh instance always starts from 0.
CALLS = [0]
HOARD = []


@dataclass
class Settings:
    pass


class ReuseProbe(Policy):
    name, version = "reuse-probe", "1.0.0"
    description = "Test policy: counts its calls in a global; fails on marker seeds."
    Settings = Settings

    def score(self, s, req):
        CALLS[0] += 1
        if req.seed == 666:
            raise RuntimeError("marker seed: raise")
        if req.seed == 777:
            while True:
                pass
        if req.seed == 888:
            HOARD.append(bytearray(512 << 20))
        out = Decisions.passthrough(req)
        if req.seed == 999:
            out.scores[0] = float("nan")
        out.add_debug("calls", None, float(CALLS[0]))
        return out
"#;

/// The probe's component, built once per test binary.
fn probe() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = target_dir().join("python").join("src").join("reuse_probe");
        std::fs::create_dir_all(dir.join("reuse_probe")).unwrap();
        std::fs::write(
            dir.join("pyproject.toml"),
            "[project]\nname = \"reuse-probe\"\nversion = \"1.0.0\"\n\n\
             [tool.oasis]\npolicy = \"reuse_probe.policy:ReuseProbe\"\n",
        )
        .unwrap();
        std::fs::write(dir.join("reuse_probe").join("__init__.py"), "").unwrap();
        std::fs::write(dir.join("reuse_probe").join("policy.py"), PROBE).unwrap();
        build(dir.to_str().unwrap())
    })
}

fn load(path: &str, reuse: u32, deadline: Duration) -> Policy {
    Policy::load_file(
        runtime(),
        path.as_ref(),
        "{}",
        Limits {
            deadline,
            reuse_instance_calls: reuse,
            ..Limits::default()
        },
    )
    .unwrap_or_else(|e| panic!("loading {path}: {e}"))
}

/// The bundled request with its seed set to `seed`.
fn body(seed: u64) -> Vec<u8> {
    let text = std::fs::read(format!("{ROOT}/examples/request.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&text).unwrap();
    v["context"]["seed"] = seed.into();
    serde_json::to_vec(&v).unwrap()
}

fn score(policy: &Policy, seed: u64) -> Result<oasis::CallOutcome, oasis::CallError> {
    let body = body(seed);
    let req = request::parse(&body).unwrap().validate(1000).unwrap();
    policy.score(&req)
}

/// The probe's call count as it reported it.
fn calls(policy: &Policy, seed: u64) -> f64 {
    let out = score(policy, seed).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    let d = out.decisions.debug.iter().find(|d| d.name == "calls");
    d.expect("the probe reports its calls").value
}

fn kind(r: Result<oasis::CallOutcome, oasis::CallError>) -> CallErrorKind {
    r.map(|_| ()).expect_err("the marker call must fail").kind()
}

const SLOW: Duration = Duration::from_secs(5);

#[test]
fn by_default_no_state_of_one_request_reaches_another() {
    let p = load(probe(), 0, SLOW);
    let first = score(&p, 1).unwrap().decisions;
    for seed in [2, 3, 1, RAISE, 1, HOARD, 1] {
        let _ = score(&p, seed);
    }
    let again = score(&p, 1).unwrap().decisions;
    assert_eq!(format!("{first:?}"), format!("{again:?}"));
    assert_eq!(calls(&p, 1), 1.0, "every call starts from the snapshot");
    // The instance is kept between calls, put back after each one to the
    // state its instantiation left (RuntimeConfig::reset_instances): what
    // is above holds for it.
    assert_eq!(p.idle_instances(), 1, "one instance, reset after each call");
}

#[test]
fn with_reuse_the_globals_carry_over_and_an_instance_serves_at_most_n_calls() {
    // The smoke call at load is the first call of the first instance.
    let p = load(probe(), 3, SLOW);
    assert_eq!(p.idle_instances(), 1);
    assert_eq!(calls(&p, 1), 2.0, "the weaker isolation is real");
    assert_eq!(calls(&p, 1), 3.0);
    // That instance has served 3 calls: discarded, the next is fresh.
    assert_eq!(p.idle_instances(), 0);
    let counts: Vec<f64> = (0..6).map(|_| calls(&p, 1)).collect();
    assert_eq!(counts, [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
}

#[test]
fn with_reuse_any_failed_call_discards_its_instance() {
    let p = load(probe(), 1000, Duration::from_millis(500));
    for (marker, expected) in [
        (RAISE, CallErrorKind::PolicyError),
        (NAN, CallErrorKind::InvalidOutput),
        (HOARD, CallErrorKind::MemoryLimit),
        (LOOP, CallErrorKind::Timeout),
    ] {
        // Warm the instance so that its counter is past 1.
        let before = calls(&p, 1);
        assert!(
            calls(&p, 1) > before,
            "{expected:?}: the instance is reused"
        );
        assert_eq!(kind(score(&p, marker)), expected, "seed {marker}");
        assert_eq!(
            p.idle_instances(),
            0,
            "{expected:?}: the instance is dropped"
        );
        assert_eq!(
            calls(&p, 1),
            1.0,
            "{expected:?}: the next call runs on a fresh instance"
        );
    }
}

#[test]
fn with_reuse_the_deadline_applies_to_each_call_not_to_the_instance() {
    let deadline = Duration::from_millis(250);
    let p = load(probe(), 100_000, deadline);
    // Calls on one instance for well over the deadline in total: each one
    // has its own deadline, so none times out.
    let started = Instant::now();
    let mut n = 0.0;
    while started.elapsed() < 3 * deadline {
        let c = calls(&p, 1);
        assert!(c > n, "one instance serves them all: {c} after {n}");
        n = c;
    }
    assert!(n > 2.0);
    // ...and the deadline still stops a call on that reused instance.
    let started = Instant::now();
    assert_eq!(kind(score(&p, LOOP)), CallErrorKind::Timeout);
    let took = started.elapsed();
    assert!(
        took >= deadline && took < deadline + Duration::from_secs(10),
        "{took:?}"
    );
    assert_eq!(calls(&p, 1), 1.0);
}

/// Reuse changes no output of a policy that keeps no state: the Rust and the
/// Python guarded-boost and the softmax bandit give in reuse mode, call after call and from several
/// threads at once, what they give on fresh instances, and the pool stays
/// within its bound.
#[test]
fn with_reuse_a_stateless_policy_gives_the_fresh_instance_output() {
    let py = build("policies-python/guarded_boost");
    let bandit = build("policies-python/softmax_bandit");
    for path in [GUARDED_BOOST, py.as_str(), bandit.as_str()] {
        let fresh = load(path, 0, SLOW);
        let reused = std::sync::Arc::new(load(path, 50, SLOW));
        let expected: Vec<String> = (1..=4)
            .map(|seed| format!("{:?}", score(&fresh, seed).unwrap().decisions))
            .collect();
        let expected = std::sync::Arc::new(expected);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (reused, expected) = (reused.clone(), expected.clone());
                std::thread::spawn(move || {
                    for i in 0..20u64 {
                        let seed = (t + i) % 4 + 1;
                        let got = format!("{:?}", score(&reused, seed).unwrap().decisions);
                        assert_eq!(got, expected[seed as usize - 1], "seed {seed}");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let idle = reused.idle_instances();
        assert!((1..=Limits::MAX_IDLE_INSTANCES).contains(&idle), "{idle}");
    }
}
