//! The `oasis` binary: run, test and inspect, as a user types them.

use std::process::Command;

use oasis_test_components::{ADVERSARIAL, BASELINE, GUARDED_BOOST, NOT_A_POLICY, PID_PACING, ROOT};

fn oasis(args: &[&str]) -> (bool, String, String) {
    let (code, out, err) = oasis_code(args, None);
    (code == Some(0), out, err)
}

/// `oasis args` with `stdin` as its standard input: (exit status, stdout, stderr).
fn oasis_code(args: &[&str], stdin: Option<&[u8]>) -> (Option<i32>, String, String) {
    // A generous deadline unless the test sets one: a busy CI machine must
    // not turn a 20 ms call into a failure in tests that are not about time.
    let mut args = args.to_vec();
    // (`oasis check` takes the limits of the manifests it checks;
    // `completions` loads no policy.)
    if !args.contains(&"--deadline-ms") && !matches!(args.first(), Some(&"check" | &"completions"))
    {
        args.extend(["--deadline-ms", "2000"]);
    }
    oasis_as_given(&args, stdin)
}

/// `oasis args` exactly as given (no added deadline).
fn oasis_as_given(args: &[&str], stdin: Option<&[u8]>) -> (Option<i32>, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_oasis"))
        .args(args)
        .env(
            "OASIS_CACHE_DIR",
            std::env::temp_dir().join("oasis-cli-test-cache"),
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut input = child.stdin.take().unwrap();
        if let Some(bytes) = stdin {
            input.write_all(bytes).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `oasis run` of the adversarial guest with `attack` armed, plus `extra` flags.
fn run_attack(attack: &str, extra: &[&str]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("s.json");
    std::fs::write(&settings, format!(r#"{{"attack": "{attack}"}}"#)).unwrap();
    let req = dir.path().join("r.json");
    std::fs::write(&req, crate::harness::small_body(true)).unwrap();
    let mut args = vec![
        "run",
        ADVERSARIAL,
        "--request",
        req.to_str().unwrap(),
        "--settings",
        settings.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    oasis(&args)
}

fn example() -> String {
    format!("{ROOT}/examples/request.json")
}

#[test]
fn run_prints_scores_and_resources() {
    let (ok, stdout, stderr) = oasis(&[
        "run",
        GUARDED_BOOST,
        "--request",
        &example(),
        "--json",
        "--fuel",
    ]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["policy"]["name"], "guarded-boost");
    assert_eq!(v["variant"], "stable");
    assert_eq!(v["scores"].as_array().unwrap().len(), 300);
    assert!(v["resources"]["call"]["fuel"].as_u64().unwrap() > 0);
    assert!(
        v["resources"]["call"]["peak_memory_bytes"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(v["resources"]["promoted"].as_u64().unwrap() > 0);
}

#[test]
fn run_reports_a_bad_request_by_field() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        std::fs::read_to_string(example()).unwrap().replacen(
            "\"market\": \"SE\"",
            "\"market\": \"Sweden\"",
            1,
        ),
    )
    .unwrap();
    let (ok, _, stderr) = oasis(&["run", BASELINE, "--request", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("context.market"), "{stderr}");
}

#[test]
fn run_with_toml_settings_and_refused_settings() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("s.toml");
    std::fs::write(&good, "k_max = 1\n").unwrap();
    let (ok, stdout, stderr) = oasis(&[
        "run",
        GUARDED_BOOST,
        "--request",
        &example(),
        "--settings",
        good.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["resources"]["promoted"], 1);
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "k_max = 0\n").unwrap();
    let (ok, _, stderr) = oasis(&[
        "run",
        GUARDED_BOOST,
        "--request",
        &example(),
        "--settings",
        bad.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("refused its settings") && stderr.contains("k_max"),
        "{stderr}"
    );
}

#[test]
fn run_reports_a_policy_timeout() {
    let (ok, _, stderr) = run_attack("loop", &["--deadline-ms", "30"]);
    assert!(!ok);
    assert!(stderr.contains("exceeded its deadline of 30ms"), "{stderr}");
    // The message says where the limit is raised.
    assert!(
        stderr.contains("`deadline_ms` in the manifest's [limits] or --deadline-ms"),
        "{stderr}"
    );
}

/// `oasis run --settings manifest.toml` runs under the manifest's limits, as
/// the server would; an explicit `--deadline-ms` still wins.
#[test]
fn run_takes_the_limits_of_a_manifest_given_as_settings() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("adv.toml");
    std::fs::write(
        &manifest,
        format!("module = \"{ADVERSARIAL}\"\n[settings]\nattack = \"loop\"\n[limits]\ndeadline_ms = 35\n"),
    )
    .unwrap();
    let req = dir.path().join("r.json");
    std::fs::write(&req, crate::harness::small_body(true)).unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            ADVERSARIAL,
            "--request",
            req.to_str().unwrap(),
            "--settings",
            manifest.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let (code, out, err) = oasis_as_given(&args, None);
        (code == Some(0), out, err)
    };
    let (ok, _, stderr) = run(&[]);
    assert!(!ok);
    assert!(stderr.contains("exceeded its deadline of 35ms"), "{stderr}");
    let (ok, _, stderr) = run(&["--deadline-ms", "45"]);
    assert!(!ok);
    assert!(stderr.contains("exceeded its deadline of 45ms"), "{stderr}");
}

#[test]
fn inspect_shows_metadata_and_digest() {
    let (ok, stdout, stderr) = oasis(&["inspect", GUARDED_BOOST, "--json"]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["name"], "guarded-boost");
    assert!(
        v["required_features"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "p_skip")
    );
    assert!(
        v["settings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "theta")
    );
    let digest = oasis::cache::digest(&std::fs::read(GUARDED_BOOST).unwrap());
    assert_eq!(v["digest"], digest);
    let (ok, text, _) = oasis(&["inspect", BASELINE]);
    assert!(ok && text.contains("name:        baseline"), "{text}");
}

#[test]
fn golden_fixtures_of_every_example_policy_pass() {
    let mut checked = 0;
    for (name, path) in oasis_test_components::ALL {
        let fixtures = format!("{ROOT}/policies/{name}/fixtures");
        if !std::path::Path::new(&fixtures).exists() {
            continue;
        }
        let (ok, stdout, stderr) = oasis(&["test", path, &fixtures]);
        assert!(ok, "{name}: {stdout}{stderr}");
        assert!(stdout.contains(" 0 failed"), "{stdout}");
        checked += 1;
    }
    assert_eq!(checked, 6, "every example policy has golden fixtures");
}

#[test]
fn test_fails_with_a_readable_diff_on_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let req: serde_json::Value =
        serde_json::from_slice(&crate::harness::small_body(false)).unwrap();
    let fixture = serde_json::json!({
        "request": req,
        "expected": [
            {"id": "a", "score": 0.9, "eligible": false, "reasons": ["organic"], "propensity": 0.0},
            {"id": "b", "score": 0.75, "eligible": false, "reasons": ["organic"], "propensity": 0.0},
            {"id": "c", "score": 0.1, "eligible": false, "reasons": ["organic"], "propensity": 0.0}
        ]
    });
    std::fs::write(dir.path().join("one.json"), fixture.to_string()).unwrap();
    let (ok, stdout, _) = oasis(&["test", BASELINE, dir.path().to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stdout.contains("FAILED  one") && stdout.contains("b: score expected 0.75 got 0.5"),
        "{stdout}"
    );
    // Blessing rewrites the expectation; the fixture then passes.
    let (ok, _, _) = oasis(&["test", BASELINE, dir.path().to_str().unwrap(), "--bless"]);
    assert!(ok);
    let (ok, stdout, _) = oasis(&["test", BASELINE, dir.path().to_str().unwrap()]);
    assert!(ok, "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_exits_0_on_sigterm_after_finishing_in_flight_requests() {
    use crate::harness::process::ServeProcess;
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(ADVERSARIAL, dir.path().join("slow.wasm")).unwrap();
    std::fs::write(
        dir.path().join("slow.toml"),
        "module = \"slow.wasm\"\n[limits]\ndeadline_ms = 1000\n[settings]\nattack = \"loop\"\n",
    )
    .unwrap();
    let server = ServeProcess::start(dir.path(), &[], &[]);
    // No admin token: the admin API is off, and the log says so.
    assert!(
        server.startup.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("admin API disabled"))),
        "{:?}",
        server.startup
    );
    let url = format!("{}/v1/score", server.url);
    let mut body: serde_json::Value =
        serde_json::from_slice(&crate::harness::small_body(true)).unwrap();
    body["route"] = "slow".into();
    let request = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .json(&body)
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    server.signal("TERM");
    assert_eq!(
        request.await.unwrap().unwrap(),
        200,
        "the in-flight request finished"
    );
    let (status, lines) = server.wait();
    assert!(status.success(), "exit status {status}");
    let fallback = lines
        .iter()
        .find(|l| l["message"] == "policy failed; serving the fallback")
        .expect("fallback logged");
    assert_eq!(
        fallback["span"]["request_id"], "t",
        "log lines of a request carry its id: {fallback}"
    );
    assert!(lines.iter().any(|l| l["message"] == "shut down cleanly"));
}

#[test]
fn policy_logs_are_structured_and_bounded() {
    let (ok, _, stderr) = run_attack(
        "log-flood",
        &["--log-format", "json", "--log-level", "info"],
    );
    assert!(ok, "{stderr}");
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let policy_lines: Vec<_> = lines
        .iter()
        .filter(|l| l["message"] == "policy log")
        .collect();
    assert_eq!(policy_lines.len(), 32, "at most 32 lines per call");
    let first = policy_lines[0];
    assert_eq!(first["policy"], "adversarial");
    assert_eq!(first["policy_message"], "line 0");
    let fields = first["policy_fields"].as_str().unwrap();
    assert_eq!(fields.split(' ').count(), 16, "at most 16 fields");
    assert!(
        fields.starts_with(&format!("key0={}", "v".repeat(256))),
        "values cut at 256 bytes"
    );
    assert!(!fields.contains(&"v".repeat(257)));
    let dropped = lines
        .iter()
        .find(|l| l["message"] == "policy log lines dropped")
        .expect("drop reported");
    assert_eq!(dropped["dropped"], 68);
}

#[test]
fn a_policy_cannot_forge_host_log_lines() {
    const FORGED: &str =
        "2026-01-01T00:00:00.000000Z  INFO oasis::control::reload: policy activated";
    for format in ["human", "json"] {
        let (ok, _, stderr) = run_attack(
            "forge-log",
            &["--log-format", format, "--log-level", "info"],
        );
        assert!(ok, "{stderr}");
        for line in stderr.lines() {
            assert!(!line.starts_with(FORGED), "{format}: forged line: {line}");
            assert!(!line.contains('\u{1b}'), "{format}: raw escape: {line:?}");
            if format == "json" {
                serde_json::from_str::<serde_json::Value>(line)
                    .unwrap_or_else(|_| panic!("one JSON object per line: {line}"));
            }
        }
        // The text is still there, made visible, in the policy's own fields.
        for field in ["policy_message", "policy_fields", "stdout", "stderr"] {
            assert!(
                stderr.contains(field),
                "{format}: {field} missing:\n{stderr}"
            );
        }
        // `\n` made visible; JSON escapes that backslash once more.
        let visible = if format == "json" {
            "ok\\\\n2026-01-01"
        } else {
            "ok\\n2026-01-01"
        };
        assert!(stderr.contains(visible), "{format}:\n{stderr}");
    }
}

/// `scripts/seed-policies` (what `scripts/serve` seeds `deploy/policies`
/// with) adds missing files, refreshes files it put there itself, and never
/// overwrites a file an operator changed.
#[test]
fn seeding_the_served_directory_never_overwrites_an_operators_edit() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bundled = tempfile::tempdir().unwrap();
    let served = tempfile::tempdir().unwrap();
    let (a, b) = (bundled.path().join("a.toml"), bundled.path().join("b.wasm"));
    std::fs::write(&a, "module = \"a.wasm\"\n").unwrap();
    std::fs::write(&b, "v1").unwrap();
    let seed = || {
        let out = std::process::Command::new(root.join("scripts/seed-policies"))
            .arg(served.path())
            .args([&a, &b])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stderr).unwrap()
    };
    let said = seed();
    assert!(said.contains("2 added, 0 updated"), "{said}");
    let read = |name: &str| std::fs::read_to_string(served.path().join(name)).unwrap();
    assert_eq!(read("b.wasm"), "v1");

    // The operator edits the manifest; the bundled component is rebuilt.
    std::fs::write(
        served.path().join("a.toml"),
        "module = \"a.wasm\"\n[settings]\nx = 1\n",
    )
    .unwrap();
    std::fs::write(&b, "v2").unwrap();
    let said = seed();
    assert!(said.contains("kept") && said.contains("a.toml"), "{said}");
    assert!(
        said.contains("0 added, 1 updated") && said.contains("1 kept"),
        "{said}"
    );
    assert!(
        read("a.toml").contains("x = 1"),
        "the operator's edit survives"
    );
    assert_eq!(
        read("b.wasm"),
        "v2",
        "an untouched seeded file follows the bundle"
    );

    // An operator's own component is kept too; deleting a file reseeds it.
    std::fs::write(served.path().join("b.wasm"), "mine").unwrap();
    std::fs::remove_file(served.path().join("a.toml")).unwrap();
    let said = seed();
    assert!(
        said.contains("1 added, 0 updated") && said.contains("1 kept"),
        "{said}"
    );
    assert_eq!(read("b.wasm"), "mine");
    assert_eq!(read("a.toml"), "module = \"a.wasm\"\n");
}

/// `oasis new` scaffolds a crate whose unit tests pass with plain `cargo
/// test`, whose component builds, and whose golden fixture passes under
/// `oasis test`, out of the box. (It compiles the crate natively and for
/// wasm, with the workspace's lock file, into a target directory kept
/// between runs.)
#[test]
fn new_scaffolds_a_policy_whose_tests_and_fixture_pass_out_of_the_box() {
    let root = std::path::Path::new(ROOT);
    let place = tempfile::tempdir().unwrap();
    let dir = place.path().join("my-boost");
    let new = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_oasis"))
            .arg("new")
            .args(args)
            .output()
            .unwrap()
    };
    let bad = new(&["My_Boost"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("lowercase letters"));
    let sdk = root.join("guest-sdk");
    let out = new(&[
        "my-boost",
        "--path",
        dir.to_str().unwrap(),
        "--sdk",
        sdk.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let again = new(&["my-boost", "--path", dir.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    // The workspace's versions, so nothing new is downloaded or resolved.
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("scaffold");
    let cargo = |args: &[&str]| {
        let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(args)
            .arg("--offline")
            .current_dir(&dir)
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("CARGO_BUILD_BUILD_DIR")
            .env_remove("RUSTFLAGS")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cargo {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The unit tests and the golden fixture, natively.
    let tests = cargo(&["test"]);
    assert!(tests.contains("test result: ok. 4 passed"), "{tests}");
    assert!(
        tests.contains("golden_fixtures_pass_natively ... ok"),
        "{tests}"
    );
    // The build the next steps print, with the crate's own `policy` profile
    // (it is a workspace of its own here).
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("--target wasm32-wasip2 --profile policy")
            && printed.contains("/wasm32-wasip2/policy/my_boost.wasm"),
        "{printed}"
    );
    cargo(&["build", "--target", "wasm32-wasip2", "--profile", "policy"]);
    let wasm = target.join("wasm32-wasip2/policy/my_boost.wasm");
    let fixture = dir.join("fixtures/basic.json");
    let written = std::fs::read_to_string(&fixture).unwrap();
    let (ok, out, err) = oasis(&[
        "test",
        wasm.to_str().unwrap(),
        dir.join("fixtures").to_str().unwrap(),
    ]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("1 fixtures, 1 passed"), "{out}");
    // Blessing an output that has not changed leaves the file as written.
    let (ok, out, err) = oasis(&[
        "test",
        wasm.to_str().unwrap(),
        dir.join("fixtures").to_str().unwrap(),
        "--bless",
    ]);
    assert!(ok, "{out}\n{err}");
    assert_eq!(std::fs::read_to_string(&fixture).unwrap(), written);
    // A changed output rewrites only its candidate's line, in the same style.
    let changed = written.replace(
        r#"{ "id": "t1", "score": 0.6,"#,
        r#"{ "id": "t1", "score": 0.65,"#,
    );
    assert_ne!(changed, written);
    std::fs::write(&fixture, &changed).unwrap();
    let (ok, out, err) = oasis(&[
        "test",
        wasm.to_str().unwrap(),
        dir.join("fixtures").to_str().unwrap(),
        "--bless",
    ]);
    assert!(ok, "{out}\n{err}");
    assert_eq!(std::fs::read_to_string(&fixture).unwrap(), written);
    // Its build script gives the component 1 MiB of heap in its initial
    // memory, as the example policies have (the linker's default: ~1.1 MiB
    // in all).
    let (ok, out, err) = oasis(&[
        "run",
        wasm.to_str().unwrap(),
        "--request",
        &example(),
        "--json",
    ]);
    assert!(ok, "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        v["resources"]["call"]["peak_memory_bytes"]
            .as_u64()
            .is_some_and(|b| b > 2 << 20),
        "{out}"
    );
    // The manifest it suggests loads with its module.
    let (ok, out, err) = oasis(&["inspect", wasm.to_str().unwrap()]);
    assert!(ok && out.contains("name:        my-boost"), "{out}\n{err}");
}

/// `oasis run`'s summary, stdin, inline settings and manifests; the exit
/// statuses of a load failure, a policy failure and a usage error.
#[test]
fn run_summarises_reads_stdin_takes_inline_settings_and_manifests() {
    let body = std::fs::read(example()).unwrap();
    let (code, out, err) = oasis_code(
        &[
            "run",
            GUARDED_BOOST,
            "--request",
            "-",
            "--settings",
            r#"{"k_max": 2}"#,
        ],
        Some(&body),
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("policy     guarded-boost 1.1.0"), "{out}");
    assert!(
        out.contains("decided") && out.contains(", 2 promoted"),
        "{out}"
    );
    assert_eq!(
        out.lines()
            .filter(|l| l.contains("relevance ") && l.contains("promoted"))
            .count(),
        2,
        "one line per promoted candidate: {out}"
    );
    assert!(
        out.contains("reasons    ") && out.contains("slate_cap"),
        "{out}"
    );
    assert!(
        out.contains("resources  load") && out.contains("memory peak"),
        "{out}"
    );

    // A manifest names the module and its settings.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(GUARDED_BOOST, dir.path().join("g.wasm")).unwrap();
    let manifest = dir.path().join("g.toml");
    std::fs::write(
        &manifest,
        "module = \"g.wasm\"\n[settings]\nk_max = 1\n[limits]\ndeadline_ms = 2000\n",
    )
    .unwrap();
    let (code, out, err) = oasis_code(
        &[
            "run",
            manifest.to_str().unwrap(),
            "--request",
            &example(),
            "--json",
        ],
        None,
    );
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["resources"]["promoted"], 1, "the manifest's k_max");

    // Exit statuses: 3 the policy did not load, 4 it failed on the request,
    // 2 usage.
    let (code, _, err) = oasis_code(
        &[
            "run",
            GUARDED_BOOST,
            "--request",
            &example(),
            "--settings",
            r#"{"k_max": 0}"#,
        ],
        None,
    );
    assert_eq!(code, Some(3), "{err}");
    let (ok, _, err) = run_attack("loop", &["--deadline-ms", "30"]);
    assert!(!ok && err.contains("deadline"), "{err}");
    let dir2 = tempfile::tempdir().unwrap();
    let settings = dir2.path().join("s.json");
    std::fs::write(&settings, r#"{"attack": "loop"}"#).unwrap();
    let req = dir2.path().join("r.json");
    std::fs::write(&req, crate::harness::small_body(true)).unwrap();
    let (code, _, err) = oasis_code(
        &[
            "run",
            ADVERSARIAL,
            "--request",
            req.to_str().unwrap(),
            "--settings",
            settings.to_str().unwrap(),
            "--deadline-ms",
            "300",
        ],
        None,
    );
    assert_eq!(code, Some(4), "{err}");
    let (code, _, err) = oasis_code(&["run", BASELINE, "--request", "/no/such/file.json"], None);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("/no/such/file.json"), "{err}");
}

/// `oasis inspect` shows what a policy says about itself even when it does
/// not load, then the failure (exit 3).
#[test]
fn inspect_prints_the_metadata_of_a_policy_that_does_not_load() {
    let (code, out, err) = oasis_code(
        &["inspect", GUARDED_BOOST, "--settings", r#"{"theta": 7}"#],
        None,
    );
    assert_eq!(code, Some(3), "{err}");
    assert!(out.contains("name:        guarded-boost"), "{out}");
    assert!(
        out.contains("does not load:") && out.contains("theta"),
        "{out}"
    );
}

/// Fixtures: a missing `expected` says to bless; blessing keeps the file's
/// key order and text; a name filter; JSON and JUnit results; debug values
/// compared when listed.
#[test]
fn fixtures_bless_in_place_filter_and_report_for_ci() {
    let dir = tempfile::tempdir().unwrap();
    let req: serde_json::Value =
        serde_json::from_slice(&crate::harness::small_body(false)).unwrap();
    // Keys in an unusual order, with a comment-like description last.
    let text = format!(
        "{{\n  \"request\": {},\n  \"tolerance\": 1e-9,\n  \"description\": \"b is 0.5\"\n}}\n",
        serde_json::to_string(&req).unwrap()
    );
    std::fs::write(dir.path().join("alpha.json"), &text).unwrap();
    std::fs::write(dir.path().join("beta.json"), &text).unwrap();
    let d = dir.path().to_str().unwrap();
    let (code, out, _) = oasis_code(&["test", BASELINE, d, "--deadline-ms", "2000"], None);
    assert_eq!(code, Some(1));
    assert!(out.contains("oasis test --bless"), "{out}");

    let (code, out, _) = oasis_code(
        &[
            "test",
            BASELINE,
            d,
            "--bless",
            "--filter",
            "alph",
            "--deadline-ms",
            "2000",
        ],
        None,
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("alpha (blessed)") && !out.contains("beta"),
        "{out}"
    );
    let blessed = std::fs::read_to_string(dir.path().join("alpha.json")).unwrap();
    let keys: Vec<usize> = [
        "\"request\"",
        "\"tolerance\"",
        "\"description\"",
        "\"expected\"",
    ]
    .iter()
    .map(|k| blessed.find(k).unwrap())
    .collect();
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "order kept, expected appended: {blessed}"
    );
    assert!(blessed.contains("\"description\": \"b is 0.5\""));

    // Machine-readable results: beta has no expectation yet.
    let (code, out, _) = oasis_code(
        &[
            "test",
            BASELINE,
            d,
            "--format",
            "json",
            "--deadline-ms",
            "2000",
        ],
        None,
    );
    assert_eq!(code, Some(1));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["passed"].as_u64(), v["failed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(v["results"][1]["result"], "error");
    let (_, xml, _) = oasis_code(
        &[
            "test",
            BASELINE,
            d,
            "--format",
            "junit",
            "--deadline-ms",
            "2000",
        ],
        None,
    );
    assert!(
        xml.starts_with("<?xml") && xml.contains("tests=\"2\" failures=\"0\" errors=\"1\""),
        "{xml}"
    );
    assert!(
        xml.contains("<testcase classname=\"fixtures\" name=\"alpha\"/>"),
        "{xml}"
    );

    // A listed debug value is compared (the baseline reports none).
    let mut fixture: serde_json::Value = serde_json::from_str(&blessed).unwrap();
    fixture["expected"][0]["debug"] = serde_json::json!({"boost": 0.1});
    std::fs::write(dir.path().join("alpha.json"), fixture.to_string()).unwrap();
    let (code, out, _) = oasis_code(
        &[
            "test",
            BASELINE,
            d,
            "--filter",
            "alpha",
            "--deadline-ms",
            "2000",
        ],
        None,
    );
    assert_eq!(code, Some(1));
    assert!(
        out.contains("debug `boost` expected 0.1, not reported"),
        "{out}"
    );
}

/// `oasis check` lists every problem of a directory, with the file, the
/// line and the field: refused settings, a module that is missing, a
/// manifest that does not parse, a route to a policy that does not exist.
#[test]
fn check_lists_every_problem_with_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::copy(GUARDED_BOOST, d.join("g.wasm")).unwrap();
    std::fs::write(
        d.join("good.toml"),
        "module = \"g.wasm\"\n[settings]\ntheta = 0.3\n",
    )
    .unwrap();
    std::fs::write(
        d.join("badsettings.toml"),
        "module = \"g.wasm\"\n\n[settings]\nk_max = 3\ntheta = 7\n",
    )
    .unwrap();
    std::fs::write(
        d.join("typo.toml"),
        "module = \"g.wasm\"\n[settings]\nthetta = 0.3\n",
    )
    .unwrap();
    std::fs::write(d.join("nomodule.toml"), "module = \"missing.wasm\"\n").unwrap();
    std::fs::write(d.join("broken.toml"), "module = \"g.wasm\"\n[limits\n").unwrap();
    std::fs::write(
        d.join("routes.toml"),
        "[routes.radio]\npolicy = \"good\"\n\n[routes.mixes]\npolicy = \"nope\"\n",
    )
    .unwrap();
    let (code, out, err) = oasis_code(&["check", d.to_str().unwrap()], None);
    assert_eq!(code, Some(1), "{out}{err}");
    let line = |needle: &str| {
        out.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle}: {out}"))
            .to_string()
    };
    assert!(line("good.toml").starts_with("ok "), "{out}");
    let l = line("badsettings.toml");
    assert!(
        l.contains("badsettings.toml:5: [settings] theta:") && l.contains("theta must be"),
        "{l}"
    );
    let l = line("typo.toml");
    assert!(
        l.contains("typo.toml:3: [settings] thetta:") && l.contains("unknown field"),
        "{l}"
    );
    assert!(!l.contains("column"), "no position in converted JSON: {l}");
    let l = line("nomodule.toml");
    assert!(
        l.contains(":1: module:") && l.contains("missing.wasm"),
        "{l}"
    );
    assert!(line("broken.toml").contains("broken.toml:2:"), "{out}");
    let l = line("routes.toml");
    assert!(
        l.contains("routes.toml:4: routes.mixes.policy:") && l.contains("`nope`"),
        "{l}"
    );
    assert!(out.contains("5 manifests, 1 loaded, 5 problems"), "{out}");

    // One manifest alone; JSON for pipelines.
    let (code, out, _) = oasis_code(
        &["check", d.join("good.toml").to_str().unwrap(), "--json"],
        None,
    );
    assert_eq!(code, Some(0), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["loaded"][0]["name"], "guarded-boost");
    assert!(v["problems"].as_array().unwrap().is_empty());
}

/// `oasis check` lists every problem of one manifest, each at its own
/// line: a setting of the wrong type at the setting (not the `[settings]`
/// header), every refused setting, each bad limit, and a fallback that
/// names no policy of the directory.
#[test]
fn check_lists_every_problem_of_a_manifest_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::copy(GUARDED_BOOST, d.join("g.wasm")).unwrap();
    std::fs::write(
        d.join("many.toml"),
        "module = \"g.wasm\"\nfallback = \"nosuch\"\n\n[limits]\ndeadline_ms = 0\nmax_queue = 1000000\n\n[settings]\ntheta = \"high\"\nk_max = -1\nbeta = 99\n",
    )
    .unwrap();
    std::fs::write(
        d.join("typed.toml"),
        "module = \"g.wasm\"\n[limits]\ndeadline_ms = \"fast\"\n[settings]\ns_min = 0.2\ntheta = 0.3\n",
    )
    .unwrap();
    let (code, out, err) = oasis_code(&["check", d.to_str().unwrap()], None);
    assert_eq!(code, Some(1), "{out}{err}");
    let errors: Vec<&str> = out.lines().filter(|l| l.starts_with("ERROR")).collect();
    let many: Vec<String> = errors
        .iter()
        .filter(|l| l.contains("many.toml"))
        .map(|l| l.split_once("many.toml").unwrap().1.to_string())
        .collect();
    let expect = [
        ":2: fallback: `nosuch` has no manifest (nosuch.toml)",
        ":5: [limits] deadline_ms: must be in 1..=5000, got 0",
        ":6: [limits] max_queue: must be at most 100000, got 1000000",
        ":9: [settings] theta: the policy refused its settings: invalid settings: invalid type: string \"high\", expected f64",
        ":10: [settings] k_max: the policy refused its settings: invalid settings: invalid value: integer `-1`, expected u32",
        ":11: [settings] beta: the policy refused its settings: invalid settings: beta must be in",
    ];
    assert_eq!(many.len(), expect.len(), "{out}");
    for (line, want) in many.iter().zip(expect) {
        assert!(
            line.starts_with(want),
            "{line:?} should start with {want:?}\n{out}"
        );
    }
    // A limit of the wrong type: named at its line, and the module is
    // still loaded and its settings checked.
    let typed: Vec<&&str> = errors.iter().filter(|l| l.contains("typed.toml")).collect();
    assert_eq!(typed.len(), 1, "{out}");
    assert!(
        typed[0].contains("typed.toml:3: [limits] deadline_ms: invalid type: string \"fast\""),
        "{out}"
    );
    assert!(out.contains("2 manifests, 0 loaded, 7 problems"), "{out}");

    // One manifest given alone: its fallback is looked for beside it.
    std::fs::write(d.join("base.toml"), "module = \"g.wasm\"\n").unwrap();
    std::fs::write(
        d.join("one.toml"),
        "module = \"g.wasm\"\nfallback = \"base\"\n",
    )
    .unwrap();
    let (code, out, _) = oasis_code(&["check", d.join("one.toml").to_str().unwrap()], None);
    assert_eq!(code, Some(0), "{out}");
    std::fs::write(
        d.join("one.toml"),
        "module = \"g.wasm\"\nfallback = \"gone\"\n",
    )
    .unwrap();
    let (code, out, _) = oasis_code(&["check", d.join("one.toml").to_str().unwrap()], None);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("one.toml:2: fallback: `gone` has no manifest"),
        "{out}"
    );
}

#[test]
fn a_contract_0_1_0_component_keeps_loading_and_scoring_as_it_did() {
    let dir = format!("{ROOT}/tests/fixtures/contract-0.1.0");
    let wasm = format!("{dir}/pid_pacing.wasm");
    // Its golden outputs were recorded by the host that served 0.1.0 only.
    let (code, out, err) = oasis_code(&["test", &wasm, &format!("{dir}/pid_pacing")], None);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("3 fixtures, 3 passed, 0 failed"), "{out}");
    let (code, out, err) = oasis_code(&["inspect", &wasm], None);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("contract:    oasis:policy@0.1.0"), "{out}");
    let (_, out, _) = oasis_code(&["inspect", PID_PACING], None);
    assert!(out.contains("contract:    oasis:policy@0.2.0"), "{out}");
}

#[test]
fn test_of_a_policy_that_does_not_load_exits_3() {
    // 3 means "did not load" (docs/writing-policies.md); 1 is a mismatch.
    let dir = tempfile::tempdir().unwrap();
    let fixture = format!(
        "{{\"request\": {}}}",
        String::from_utf8(crate::harness::small_body(false)).unwrap()
    );
    std::fs::write(dir.path().join("a.json"), fixture).unwrap();
    let (code, out, err) = oasis_code(&["test", NOT_A_POLICY, dir.path().to_str().unwrap()], None);
    assert_eq!(code, Some(3), "{out}{err}");
    assert!(out.contains("ERROR"), "{out}");
}

#[test]
fn a_failed_scaffold_leaves_nothing_behind_and_the_retry_works() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("half");
    let d = dir.to_str().unwrap();
    let oasis_code = |args: &[&str], _: Option<&[u8]>| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_oasis"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for lang in ["rust", "python"] {
        // No SDK there: it fails after creating the directory…
        let (code, _, err) = oasis_code(
            &[
                "new",
                "half",
                "--path",
                d,
                "--lang",
                lang,
                "--sdk",
                "/no/such/sdk",
            ],
            None,
        );
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("/no/such/sdk"), "{err}");
        // …and removes it, so the retry is not refused as "exists already".
        assert!(!dir.exists(), "{lang}: {} left behind", dir.display());
    }
    let sdk = format!("{ROOT}/guest-sdk");
    let (code, out, err) = oasis_code(&["new", "half", "--path", d, "--sdk", &sdk], None);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(dir.join("Cargo.toml").is_file());
    // The next steps name the real target directory, not a placeholder.
    assert!(
        !out.contains("<target>") && out.contains("/wasm32-wasip2/policy/half.wasm"),
        "{out}"
    );
}

/// `oasis completions bash`, sourced in a real bash: `oasis` gets a
/// completion function, which offers the subcommands (not the hidden
/// compile worker) and those of `rollout`; the other shells' scripts name
/// the subcommands too.
#[test]
fn shell_completions_complete_the_subcommands() {
    let exe = env!("CARGO_BIN_EXE_oasis");
    let script = format!(
        r#"source <("{exe}" completions bash) || exit 9
complete -p oasis
complete_line() {{ COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMPREPLY=(); _oasis oasis "${{@: -1}}" "${{@: -2:1}}"; echo "${{COMPREPLY[*]}}"; }}
complete_line oasis ""
complete_line oasis rollout ""
complete_line oasis rollout canary --
"#
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(
        lines[0].starts_with("complete ") && lines[0].ends_with(" oasis"),
        "{stdout}"
    );
    let top: Vec<&str> = lines[1].split(' ').collect();
    for sub in [
        "run",
        "test",
        "check",
        "serve",
        "rollout",
        "replay",
        "new",
        "completions",
    ] {
        assert!(top.contains(&sub), "`oasis <TAB>` offers {sub}: {stdout}");
    }
    assert!(
        !lines[1].contains("__compile-worker"),
        "hidden stays hidden: {stdout}"
    );
    let rollout: Vec<&str> = lines[2].split(' ').collect();
    for sub in [
        "status", "canary", "promote", "unpin", "rollback", "kill", "audit",
    ] {
        assert!(
            rollout.contains(&sub),
            "`oasis rollout <TAB>` offers {sub}: {stdout}"
        );
    }
    assert!(lines[3].split(' ').any(|w| w == "--percent"), "{stdout}");

    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let (ok, out, err) = oasis(&["completions", shell]);
        assert!(ok, "{shell}: {err}");
        assert!(
            out.contains("rollout") && out.contains("replay") && !out.contains("__compile-worker"),
            "{shell}"
        );
    }
    let (code, _, err) = oasis_code(&["completions", "tcsh"], None);
    assert_eq!(code, Some(2), "{err}");
}

/// A compile is never silent: `oasis test` (a compile on a thread) and
/// `oasis serve` (a compile in the worker process) log `compiling`, then
/// `still compiling` at the progress interval (20 ms here, 5 s by default),
/// then `compiled in N ms`, each line naming the component's digest and
/// the load's module; a cached component is not compiled again.
#[test]
fn long_compiles_log_their_progress() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let fixtures = format!("{ROOT}/policies/pid-pacing/fixtures");
    let test = || {
        Command::new(env!("CARGO_BIN_EXE_oasis"))
            .args(["test", PID_PACING, &fixtures, "--deadline-ms", "2000"])
            .env("OASIS_CACHE_DIR", &cache)
            .env("OASIS_COMPILE_PROGRESS_MS", "20")
            .output()
            .unwrap()
    };
    let out = test();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    let first = lines
        .iter()
        .position(|l| l.contains("compiling the component"))
        .unwrap_or_else(|| panic!("no compiling line: {err}"));
    let done = lines
        .iter()
        .position(|l| l.contains("compiled in "))
        .unwrap_or_else(|| panic!("no compiled line: {err}"));
    let still = lines[first..done]
        .iter()
        .filter(|l| l.contains("still compiling ("))
        .count();
    assert!(still >= 1, "a compile over 20 ms says it goes on: {err}");
    for l in [lines[first], lines[done]] {
        assert!(
            l.contains("pid_pacing.wasm") && l.contains("digest="),
            "{l}"
        );
    }
    let again = test();
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{err}");
    assert!(!err.contains("compiling"), "cached: {err}");

    // The server: JSON lines, the load's span naming policy and module.
    let dir = tmp.path().join("policies");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(PID_PACING, dir.join("p.wasm")).unwrap();
    std::fs::write(dir.join("p.toml"), "module = \"p.wasm\"\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_oasis"))
        .args(["serve", "--policies"])
        .arg(&dir)
        .args(["--listen", "127.0.0.1:0", "--state", "off"])
        .args(["--log-format", "json"])
        .env("OASIS_CACHE_DIR", tmp.path().join("server-cache"))
        .env("OASIS_COMPILE_PROGRESS_MS", "20")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let message = v["message"].as_str().unwrap_or("").to_string();
            if message == "initial policy set loaded; ready" {
                break;
            }
            seen.push(v);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let find = |prefix: &str| {
        seen.iter()
            .filter(|v| v["message"].as_str().unwrap_or("").starts_with(prefix))
            .collect::<Vec<_>>()
    };
    let all = serde_json::to_string_pretty(&seen).unwrap();
    let (start, progress, end) = (
        find("compiling the component"),
        find("still compiling ("),
        find("compiled in "),
    );
    assert_eq!((start.len(), end.len()), (1, 1), "{all}");
    assert!(!progress.is_empty(), "{all}");
    for v in start.iter().chain(&progress).chain(&end) {
        assert_eq!(v["span"]["name"], "load", "{v}");
        assert_eq!(v["span"]["policy"], "p", "{v}");
        assert!(
            v["span"]["module"].as_str().unwrap().ends_with("p.wasm"),
            "{v}"
        );
        assert_eq!(v["digest"], start[0]["digest"], "{v}");
    }
    assert!(end[0]["elapsed_ms"].as_u64().unwrap() > 0, "{all}");
}

/// `scripts/serve` passes `--grpc-listen` and `--policies` once (clap
/// refuses a flag given twice; the defaults step aside): on a temporary
/// policy directory, with the built binary (`OASIS_BIN`, so nothing is
/// built), both listeners answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_serve_takes_grpc_listen_and_policies_in_place_of_its_defaults() {
    use std::io::BufRead as _;
    use std::time::{Duration, Instant};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("policies");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(GUARDED_BOOST, dir.join("p.wasm")).unwrap();
    std::fs::write(dir.join("p.toml"), "module = \"p.wasm\"\n").unwrap();
    let mut child = Command::new("bash")
        .arg(format!("{ROOT}/scripts/serve"))
        .args(["--policies", "policies", "--listen", "127.0.0.1:0"])
        .args(["--grpc-listen", "127.0.0.1:0", "--state", "off"])
        .args(["--log-format", "json"])
        .current_dir(tmp.path())
        .env("OASIS_BIN", env!("CARGO_BIN_EXE_oasis"))
        .env(
            "OASIS_CACHE_DIR",
            std::env::temp_dir().join("oasis-cli-test-cache"),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stderr = child.stderr.take().unwrap();
    // The script `exec`s the server: same pid.
    let pid = child.id();
    let _child = Kill(child);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let (mut http, mut grpc, mut ready, mut seen) = (None, None, false, String::new());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(ready && http.is_some() && grpc.is_some()) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("scripts/serve did not become ready:\n{seen}"));
        seen += &line;
        seen.push('\n');
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        match v["message"].as_str().unwrap_or("") {
            "listening" => http = v["addr"].as_str().map(String::from),
            "gRPC API listening" => grpc = v["grpc_addr"].as_str().map(String::from),
            "initial policy set loaded; ready" => ready = true,
            _ => {}
        }
    }
    let (http, grpc) = (http.unwrap(), grpc.unwrap());
    assert_ne!(
        grpc, "127.0.0.1:50051",
        "the caller's address, not the default"
    );
    // The server runs without mimalloc's 1 GiB arena reservation
    // (scripts/serve; BENCHMARKS.md "Session 19").
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(
        environ
            .split(|b| *b == 0)
            .any(|v| v == b"MIMALLOC_ARENA_RESERVE=0"),
        "{}",
        String::from_utf8_lossy(&environ).replace('\0', "\n")
    );
    let policies: serde_json::Value = reqwest::get(format!("http://{http}/v1/policies"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(policies.to_string().contains("guarded-boost"), "{policies}");
    let channel = tonic::transport::Channel::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    // Readiness reaches the health service within a few tens of
    // milliseconds of the log line.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        if status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 {
            break;
        }
        assert!(Instant::now() < deadline, "gRPC health never SERVING");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A second `oasis serve` on the directory of a running one (whose
/// embedded state is inside it) fails at once, naming the ways out.
#[test]
fn a_second_server_on_one_directory_is_told_the_ways_out() {
    use crate::harness::process::ServeProcess;
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(GUARDED_BOOST, dir.path().join("p.wasm")).unwrap();
    std::fs::write(dir.path().join("p.toml"), "module = \"p.wasm\"\n").unwrap();
    let first = ServeProcess::start(dir.path(), &[], &[]);
    let mut second = Command::new(env!("CARGO_BIN_EXE_oasis"))
        .args(["serve", "--policies"])
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0"])
        .env(
            "OASIS_CACHE_DIR",
            std::env::temp_dir().join("oasis-cli-test-cache"),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // It must stop by itself; one that serves is a failure, not a hang.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while second.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = second.kill();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let second = second.wait_with_output().unwrap();
    drop(first);
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{err}");
    for way in ["--state-dir", "--state off", "--state redis"] {
        assert!(err.contains(way), "{way} missing from:\n{err}");
    }
}

/// `oasis serve` refuses out-of-range numeric flags before it starts,
/// naming the flag, instead of overflowing or panicking on them.
#[test]
fn serve_refuses_out_of_range_cpu_and_memory_flags() {
    let tmp = tempfile::tempdir().unwrap();
    for (flag, value, expected) in [
        (
            "--instance-memory-resident-mb",
            "18446744073709551615",
            "--instance-memory-resident-mb 18446744073709551615 is more than an instance's memory can be (256 MiB)",
        ),
        (
            "--instance-memory-resident-mb",
            "257",
            "--instance-memory-resident-mb 257 is more than",
        ),
        (
            "--cpu-slots",
            "100000",
            "--cpu-slots 100000 is more than 4096",
        ),
        (
            "--inline-calls-under-us",
            "5001",
            "--inline-calls-under-us 5001 is longer than the CPU slice (5 ms)",
        ),
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_oasis"))
            .args(["serve", "--policies"])
            .arg(tmp.path())
            .args(["--listen", "127.0.0.1:0", "--state", "off", flag, value])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A server that accepted the value would run on: stop it and fail.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let started = child.try_wait().unwrap().is_none();
        if started {
            let _ = child.kill();
        }
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !started && !out.status.success(),
            "{flag} {value} was accepted: {err}"
        );
        assert!(err.contains(expected), "{flag} {value}: {err}");
    }
}
