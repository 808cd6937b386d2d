//! Python policies: the Python SDK's pytest suite and each Python policy's
//! own tests run under the repository's virtual environment, and the Python
//! examples, built to components with `scripts/build-python-policy`, are run
//! by the host against the Rust versions' golden fixtures with identical
//! output.
//!
//! The venv is prepared by `scripts/setup-python` (run here when missing, as
//! `.ci/run` does first). Components are built into
//! `<target>/python/<name>.wasm` and rebuilt only when their sources' hash
//! changes (~20 s each cold); their compiled form is cached in
//! `<target>/python/wasmtime-cache`, so repeated runs skip both compiles.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use oasis::request::{self, Validate};
use oasis::{Limits, Policy, Runtime, RuntimeConfig};
use oasis_test_components::{GUARDED_BOOST, ROOT};

/// The target directory of this build (the `oasis` binary is `<target>/<profile>/oasis`).
pub fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_oasis"))
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .to_path_buf()
}

/// Runs `scripts/setup-python` once per test binary (it is quick when the venv is current).
pub fn venv() -> &'static Path {
    static SETUP: OnceLock<PathBuf> = OnceLock::new();
    SETUP.get_or_init(|| {
        let out = Command::new(format!("{ROOT}/scripts/setup-python"))
            .output()
            .expect("cannot run scripts/setup-python");
        assert!(
            out.status.success(),
            "scripts/setup-python failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(format!("{ROOT}/.venv"))
    })
}

/// Builds (or takes from the hash-keyed cache) the Python policy in `dir`
/// (relative to the repository) and returns the component's path. One build
/// at a time: the machine has few cores and the builds are heavy.
pub fn build(dir: &str) -> String {
    static LOCK: Mutex<()> = Mutex::new(());
    venv();
    let _one = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let path = if Path::new(dir).is_absolute() {
        dir.to_string()
    } else {
        format!("{ROOT}/{dir}")
    };
    let out = Command::new(format!("{ROOT}/scripts/build-python-policy"))
        .arg(path)
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .expect("cannot run scripts/build-python-policy");
    assert!(
        out.status.success(),
        "building {dir} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A runtime whose compile cache survives test runs (the 18 MB Python
/// components take seconds to compile).
pub fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        Runtime::new(RuntimeConfig {
            cache_dir: Some(target_dir().join("python").join("wasmtime-cache")),
            measure_fuel: false,
            // Shared by the Python and instance-reuse tests, which run side by
            // side: idle instances of all their policies keep at most a
            // quarter of the pool (`Runtime::keep_idle`), and with 16 slots
            // the 4 idle ones were often another test's, so a test asserting
            // that its instance was kept failed.
            max_instances: 64,
            ..RuntimeConfig::default()
        })
        .expect("runtime")
    })
}

fn load(path: &str, settings: &str) -> Policy {
    Policy::load_file(
        runtime(),
        path.as_ref(),
        settings,
        Limits {
            deadline: std::time::Duration::from_secs(5),
            ..Limits::default()
        },
    )
    .unwrap_or_else(|e| panic!("loading {path}: {e}"))
}

/// pytest in `dir` (relative to the repository, or absolute), which must pass.
fn pytest(dir: &str) {
    let venv = venv();
    let cwd = if Path::new(dir).is_absolute() {
        dir.to_string()
    } else {
        format!("{ROOT}/{dir}")
    };
    let out = Command::new(venv.join("bin/pytest"))
        .args(["-q", "-p", "no:cacheprovider"])
        .current_dir(cwd)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("cannot run pytest");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pytest in {dir} failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(" passed"), "{text}");
}

#[test]
fn the_python_sdk_suite_passes_under_pytest() {
    pytest("guest-sdk-python");
}

#[test]
fn each_python_policys_own_tests_pass_under_pytest() {
    let dirs = python_policies();
    assert!(dirs.len() >= 2, "{dirs:?}");
    for d in dirs {
        pytest(&d);
    }
}

/// Requests of the Rust guarded-boost's fixtures, with their settings, plus
/// the bundled example request under several settings.
fn guarded_boost_cases() -> Vec<(String, String, Vec<u8>)> {
    let mut cases = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(format!("{ROOT}/policies/guarded-boost/fixtures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        let fx: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        let settings = fx
            .get("settings")
            .map_or("{}".to_string(), |s| s.to_string());
        cases.push((
            f.display().to_string(),
            settings,
            serde_json::to_vec(&fx["request"]).unwrap(),
        ));
    }
    let example = std::fs::read(format!("{ROOT}/examples/request.json")).unwrap();
    for settings in [
        "{}",
        r#"{"theta": 0.6, "k_max": 10}"#,
        r#"{"beta": 2.0, "s_min": 0.0, "k_max": 1}"#,
    ] {
        cases.push((
            format!("examples/request.json with {settings}"),
            settings.into(),
            example.clone(),
        ));
    }
    cases
}

#[test]
fn python_guarded_boost_gives_the_rust_versions_output_bit_for_bit() {
    let py = build("policies-python/guarded_boost");
    for (name, settings, body) in guarded_boost_cases() {
        let rust = load(GUARDED_BOOST, &settings);
        let python = load(&py, &settings);
        let req = request::parse(&body)
            .and_then(|r| r.validate(1000))
            .unwrap();
        let a = rust.score(&req).unwrap().decisions;
        let b = python
            .score(&req)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .decisions;
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a.scores), bits(&b.scores), "{name}: scores");
        assert_eq!(a.eligible, b.eligible, "{name}: eligible");
        assert_eq!(
            format!("{:?}", a.reasons),
            format!("{:?}", b.reasons),
            "{name}: reasons"
        );
        assert_eq!(
            bits(&a.propensity),
            bits(&b.propensity),
            "{name}: propensity"
        );
        assert_eq!(a.debug.len(), b.debug.len(), "{name}: debug");
    }
}

/// Every Python policy in `policies-python/` (relative paths), sorted.
fn python_policies() -> Vec<String> {
    let mut dirs: Vec<String> = std::fs::read_dir(format!("{ROOT}/policies-python"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("pyproject.toml").exists())
        .map(|p| {
            format!(
                "policies-python/{}",
                p.file_name().unwrap().to_str().unwrap()
            )
        })
        .collect();
    dirs.sort();
    dirs
}

/// `oasis test` of each Python policy's component on the fixtures its
/// pyproject names (`[tool.oasis] fixtures`): for guarded_boost the Rust
/// version's, for the others their own (checked natively by pytest too, so
/// the component and CPython agree).
#[test]
fn oasis_test_passes_each_python_policys_fixtures_as_a_component() {
    for dir in python_policies() {
        let meta: toml::Value = toml::from_str(
            &std::fs::read_to_string(format!("{ROOT}/{dir}/pyproject.toml")).unwrap(),
        )
        .unwrap();
        let fixtures = meta["tool"]["oasis"]
            .get("fixtures")
            .and_then(|f| f.as_str())
            .unwrap_or("fixtures");
        let component = build(&dir);
        let out = Command::new(env!("CARGO_BIN_EXE_oasis"))
            .args(["test", &component])
            .arg(format!("{ROOT}/{dir}/{fixtures}"))
            .args(["--deadline-ms", "5000"])
            .env(
                "OASIS_CACHE_DIR",
                target_dir().join("python").join("wasmtime-cache"),
            )
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{dir}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains(" passed, 0 failed"), "{dir}: {text}");
    }
}

/// `oasis new --lang python`: the package's tests and fixture pass natively
/// out of the box, and its component passes the fixture under `oasis test`
/// and scores the bundled request.
#[test]
fn oasis_new_python_scaffolds_a_package_that_passes_out_of_the_box() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("py_scaffold");
    let out = Command::new(env!("CARGO_BIN_EXE_oasis"))
        .args(["new", "py-scaffold", "--lang", "python", "--path"])
        .arg(&dir)
        .arg("--sdk")
        .arg(format!("{ROOT}/guest-sdk-python"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("scripts/build-python-policy"), "{said}");
    for f in [
        "pyproject.toml",
        "py_scaffold/policy.py",
        "tests/test_policy.py",
        "fixtures/basic.json",
        "py-scaffold.toml",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let dir = dir.to_str().unwrap();
    pytest(dir);
    // The fixture natively, through `oasis test` on the source (as printed).
    assert!(
        said.contains(&format!("oasis test {dir} {dir}/fixtures")),
        "{said}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_oasis"))
        .args(["test", dir, &format!("{dir}/fixtures")])
        .env("OASIS_PYTHON", venv().join("bin/python"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("1 passed, 0 failed"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let component = build(dir);
    let out = Command::new(env!("CARGO_BIN_EXE_oasis"))
        .args(["test", &component, &format!("{dir}/fixtures")])
        .args(["--deadline-ms", "5000"])
        .env(
            "OASIS_CACHE_DIR",
            target_dir().join("python").join("wasmtime-cache"),
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("1 passed, 0 failed"),
        "{text}"
    );
    let policy = load(&component, r#"{"boost": 0.2}"#);
    assert_eq!(policy.info().name, "py-scaffold");
    let body = std::fs::read(format!("{ROOT}/examples/request.json")).unwrap();
    let req = request::parse(&body)
        .and_then(|r| r.validate(1000))
        .unwrap();
    let d = policy.score(&req).unwrap().decisions;
    assert_eq!(d.scores.len(), req.candidates.len());
    assert!(d.eligible.iter().any(|&e| e));
}

/// A Python component whose deadline nobody chose gets the Python default
/// (a fresh CPython instance costs milliseconds before the policy runs);
/// a chosen deadline is kept, and a Rust component keeps the general default.
#[test]
fn a_python_component_gets_the_python_default_deadline_unless_one_was_chosen() {
    let py = build("policies-python/guarded_boost");
    let with = |path: &str, limits: Limits| {
        Policy::load_file(runtime(), path.as_ref(), "", limits)
            .unwrap_or_else(|e| panic!("loading {path}: {e}"))
            .limits()
            .deadline
    };
    assert_eq!(
        with(&py, Limits::default()),
        Limits::PYTHON_DEFAULT_DEADLINE
    );
    let chosen = Limits {
        deadline: Limits::default().deadline,
        deadline_explicit: true,
        ..Limits::default()
    };
    assert_eq!(with(&py, chosen.clone()), Limits::default().deadline);
    assert_eq!(
        with(GUARDED_BOOST, Limits::default()),
        Limits::default().deadline
    );
}

/// `oasis test` and `oasis run` on a Python policy's source directory score
/// natively under CPython (no component build): the same fixtures pass, the
/// same request gets the component's decisions, and a fixture that no longer
/// matches fails with the same report as for a component.
#[test]
fn oasis_test_and_run_take_a_python_source_directory_natively() {
    let dir = format!("{ROOT}/policies-python/guarded_boost");
    let fixtures = format!("{ROOT}/policies/guarded-boost/fixtures");
    let oasis = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_oasis"))
            .args(args)
            .env("OASIS_PYTHON", venv().join("bin/python"))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, text, err) = oasis(&["test", &dir, &fixtures]);
    assert_eq!(code, Some(0), "{text}{err}");
    assert!(text.contains(" passed, 0 failed"), "{text}");

    // A fixture the policy no longer meets fails, by field.
    let changed = tempfile::tempdir().unwrap();
    let first = std::fs::read_dir(&fixtures)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .min()
        .unwrap();
    let mut fx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&first).unwrap()).unwrap();
    let score = fx["expected"][0]["score"].as_f64().unwrap();
    fx["expected"][0]["score"] = (score + 0.25).into();
    std::fs::write(changed.path().join("changed.json"), fx.to_string()).unwrap();
    let (code, text, _) = oasis(&["test", &dir, changed.path().to_str().unwrap()]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("score"), "{text}");

    // `oasis run` natively gives the component's scores.
    let request = format!("{ROOT}/examples/request.json");
    let (code, native, err) = oasis(&["run", &dir, "--request", &request, "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let native: serde_json::Value = serde_json::from_str(&native).unwrap();
    assert_eq!(native["resources"]["native"], true);
    let component = build("policies-python/guarded_boost");
    let (code, built, err) = oasis(&[
        "run",
        &component,
        "--request",
        &request,
        "--json",
        "--deadline-ms",
        "5000",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let built: serde_json::Value = serde_json::from_str(&built).unwrap();
    assert_eq!(native["scores"], built["scores"]);
    assert_eq!(native["policy"]["name"], built["policy"]["name"]);

    // Settings the policy refuses are named, as for a component.
    let (code, _, err) = oasis(&[
        "run",
        &dir,
        "--request",
        &request,
        "--settings",
        r#"{"theta": "high"}"#,
    ]);
    assert_ne!(code, Some(0));
    assert!(err.contains("invalid-settings"), "{err}");
}
