//! Policies from an OCI registry, end to end: a real registry
//! (`docker-registry`, harness::registry), the real `oasis push`/`pull`
//! and the real `oasis serve`, with scoring traffic throughout each fault
//! and not one failed response.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use oasis::control::source::credentials::Credentials;
use oasis::control::source::oci::{OciRef, RegistryClient, RegistryConfig};
use oasis_test_components::{BASELINE, GUARDED_BOOST, NOT_A_POLICY};
use serde_json::Value;

use crate::harness::example_body;
use crate::harness::process::ServeProcess;
use crate::harness::registry::DockerRegistry;
use crate::harness::server::{atomic_write, digest, install, routed};

/// No docker config of the machine's leaks into a test.
pub(crate) const NO_DOCKER_CONFIG: &str = "/nonexistent/oasis-test-docker-config";

/// Runs `oasis ARGS` with the tests' environment.
pub(crate) fn oasis(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_oasis"));
    cmd.args(args)
        .env(
            "OASIS_CACHE_DIR",
            std::env::temp_dir().join("oasis-cli-test-cache"),
        )
        .env("DOCKER_CONFIG", NO_DOCKER_CONFIG);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// `oasis push --json MODULE REF` over plain HTTP; its JSON report.
pub(crate) fn push(reg: &DockerRegistry, module: &str, reference: &str, extra: &[&str]) -> Value {
    let host = reg.host();
    let mut args = vec![
        "push",
        module,
        reference,
        "--json",
        "--registry-plain-http",
        &host,
    ];
    args.extend_from_slice(extra);
    let out = oasis(&args, &[]);
    assert!(
        out.status.success(),
        "oasis push failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Publishes raw bytes to `reference` with the library's client, as any
/// other tool could (no check that they are a policy).
pub(crate) async fn push_raw(reg: &DockerRegistry, reference: &str, bytes: &[u8]) {
    let client = RegistryClient::new(RegistryConfig {
        plain_http: BTreeSet::from([reg.host()]),
        ..Default::default()
    });
    client
        .push(&OciRef::parse(reference).unwrap(), bytes, BTreeMap::new())
        .await
        .unwrap();
}

/// A manifest `key.toml` whose module is `module` (a registry reference).
pub(crate) fn manifest(dir: &Path, key: &str, module: &str) {
    atomic_write(
        &dir.join(format!("{key}.toml")),
        format!("module = \"{module}\"\n[limits]\ndeadline_ms = 2000\n").as_bytes(),
    );
}

/// `oasis serve` on `dir`, polling `reg` every 200 ms (backoff to 1 s).
fn serve(dir: &Path, reg: &DockerRegistry) -> ServeProcess {
    serve_with(dir, reg, &[("DOCKER_CONFIG", NO_DOCKER_CONFIG)])
}

fn serve_with(dir: &Path, reg: &DockerRegistry, env: &[(&str, &str)]) -> ServeProcess {
    let host = reg.host();
    ServeProcess::start(
        dir,
        &[
            "--registry-plain-http",
            &host,
            "--registry-poll-ms",
            "200",
            "--registry-backoff-max-ms",
            "1000",
        ],
        env,
    )
}

async fn get_json(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

async fn policies(server: &ServeProcess) -> Value {
    get_json(&format!("{}/v1/policies", server.url)).await
}

fn policy<'a>(v: &'a Value, key: &str) -> &'a Value {
    v["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["key"] == key)
        .unwrap_or_else(|| panic!("no policy {key}: {v}"))
}

/// Waits (at most 30 s) until `/v1/policies` satisfies `f`; returns it.
async fn wait_for(server: &ServeProcess, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = policies(server).await;
        if f(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "never {what}: {v:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Scoring requests on `routes`, one after the other, until stopped.
pub(crate) struct Traffic {
    stop: Arc<AtomicBool>,
    /// Responses received so far.
    answered: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<Vec<(String, u16, Value)>>,
}

/// Responses [`Traffic::finish`] waits for before it stops the traffic.
const MIN_TRAFFIC: usize = 11;

impl Traffic {
    pub(crate) fn start(url: &str, routes: &[&str]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let (url, routes, flag, count) = (
            url.to_string(),
            routes.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
            stop.clone(),
            answered.clone(),
        );
        let task = tokio::spawn(async move {
            let client = reqwest::Client::new();
            let body = example_body();
            let mut out = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                for route in &routes {
                    let r = client
                        .post(format!("{url}/v1/score"))
                        .body(routed(route, &body))
                        .send()
                        .await
                        .unwrap();
                    let status = r.status().as_u16();
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    out.push((route.clone(), status, v));
                    count.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            out
        });
        Traffic {
            stop,
            answered,
            task,
        }
    }

    /// Stops; asserts that every response was a 200 answered by the route's
    /// own policy (no fallback); returns the digests that served `route`,
    /// in order.
    ///
    /// It first lets the traffic reach [`MIN_TRAFFIC`] responses (at most
    /// 30 s): on a loaded machine a test's changes can all be done before
    /// a dozen requests were answered, and the point is that traffic flowed
    /// and none of it failed, not how fast it flowed.
    pub(crate) async fn finish(self, route: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.answered.load(Ordering::Relaxed) < MIN_TRAFFIC && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.stop.store(true, Ordering::Relaxed);
        let all = self.task.await.unwrap();
        assert!(
            all.len() >= MIN_TRAFFIC,
            "too little traffic: {}",
            all.len()
        );
        for (r, status, v) in &all {
            assert_eq!(*status, 200, "route {r}: {v}");
            assert!(
                v.get("fallback").is_none_or(Value::is_null),
                "route {r} fell back: {v}"
            );
        }
        all.iter()
            .filter(|(r, _, _)| r == route)
            .map(|(_, _, v)| v["policy"]["digest"].as_str().unwrap().to_string())
            .collect()
    }
}

/// The log lines with `message` received so far.
fn logged(server: &ServeProcess, message: &str, seen: &mut Vec<Value>) -> Vec<Value> {
    seen.extend(server.logs.try_iter());
    seen.iter()
        .filter(|l| l["message"] == message)
        .cloned()
        .collect()
}

const POLL_FAILED: &str = "registry poll failed; serving goes on with the module pulled before";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_pushed_to_the_tag_is_served_after_a_poll() {
    let reg = DockerRegistry::start();
    let tag = format!("{}/oasis/promo:stable", reg.host());
    let (v1, v2) = (digest(BASELINE), digest(GUARDED_BOOST));
    let pushed = push(&reg, BASELINE, &tag, &[]);
    assert_eq!(pushed["digest"], v1);
    assert_eq!(pushed["annotations"]["dev.oasis.policy.name"], "baseline");
    assert_eq!(
        pushed["annotations"]["dev.oasis.policy.contract"],
        "oasis:policy@0.2.0"
    );
    let dir = tempfile::tempdir().unwrap();
    manifest(dir.path(), "promo", &format!("oci://{tag}"));
    let server = serve(dir.path(), &reg);
    let p = policies(&server).await;
    assert_eq!(policy(&p, "promo")["active"]["digest"], v1, "{p:#}");
    assert_eq!(
        policy(&p, "promo")["active"]["module"],
        format!("oci://{tag}")
    );
    let oci = &p["oci"][0];
    assert_eq!(
        (&oci["reference"], &oci["status"], &oci["serving_from"]),
        (
            &Value::from(format!("oci://{tag}")),
            &Value::from("ok"),
            &Value::from("registry")
        ),
        "{p:#}"
    );
    assert_eq!(oci["module_digest"], v1);
    assert_eq!(oci["manifest_digest"], pushed["manifest_digest"]);

    let traffic = Traffic::start(&server.url, &["promo"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // v2 to the same tag, validated with a manifest's settings (annotated).
    let m = dir.path().join("push-manifest.toml");
    std::fs::write(&m, "module = \"unused.wasm\"\n[settings]\n").unwrap();
    let pushed2 = push(
        &reg,
        GUARDED_BOOST,
        &tag,
        &["--manifest", m.to_str().unwrap()],
    );
    assert_eq!(pushed2["digest"], v2);
    assert!(
        pushed2["annotations"]["dev.oasis.policy.settings-sha256"]
            .as_str()
            .is_some_and(|h| h.len() == 64),
        "{pushed2}"
    );
    let started = Instant::now();
    wait_for(&server, "serving v2", |p| {
        policy(p, "promo")["active"]["digest"] == v2
    })
    .await;
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let served = traffic.finish("promo").await;
    assert!(
        took < Duration::from_secs(5),
        "v2 took {took:?} after the push"
    );
    // v1 until the swap, v2 after it, nothing else.
    let switch = served.iter().position(|d| *d == v2).expect("v2 served");
    assert!(served[..switch].iter().all(|d| *d == v1), "{served:?}");
    assert!(served[switch..].iter().all(|d| *d == v2), "{served:?}");

    // Both are in the version store, recorded as from the registry.
    let versions = get_json(&format!("{}/v1/policies/promo/versions", server.url)).await;
    let sources: Vec<(&str, &str)> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["digest"].as_str().unwrap(), r["source"].as_str().unwrap()))
        .collect();
    assert_eq!(sources.len(), 2, "{versions}");
    for (d, source) in &sources {
        assert!([&v1, &v2].contains(&&d.to_string()), "{versions}");
        assert!(
            source.starts_with(&format!("oci:{tag}@sha256:")),
            "{versions}"
        );
    }

    // `oasis pull` gets the same bytes, by tag and by digest.
    let out_file = dir.path().join("pulled.wasm");
    let out = oasis(
        &[
            "pull",
            &tag,
            "-o",
            out_file.to_str().unwrap(),
            "--registry-plain-http",
            &reg.host(),
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("pulled guarded-boost") && text.contains(&v2),
        "{text}"
    );
    assert_eq!(
        std::fs::read(&out_file).unwrap(),
        std::fs::read(GUARDED_BOOST).unwrap()
    );
    let pinned = pushed["pinned"].as_str().unwrap();
    let out = oasis(
        &[
            "pull",
            pinned,
            "-o",
            "-",
            "--registry-plain-http",
            &reg.host(),
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.stdout,
        std::fs::read(BASELINE).unwrap(),
        "pinned v1 by digest"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_down_at_start_serves_the_last_pulled_module_from_the_version_store() {
    let mut reg = DockerRegistry::start();
    let tag = format!("{}/oasis/promo:stable", reg.host());
    let v1 = digest(BASELINE);
    push(&reg, BASELINE, &tag, &[]);
    let dir = tempfile::tempdir().unwrap();
    manifest(dir.path(), "promo", &format!("oci://{tag}"));
    install(dir.path(), "other", GUARDED_BOOST, "");
    let first = serve(dir.path(), &reg);
    assert_eq!(
        policy(&policies(&first).await, "promo")["active"]["digest"],
        v1
    );
    drop(first);

    reg.kill();
    let server = serve(dir.path(), &reg);
    let failed: Vec<&Value> = server
        .startup
        .iter()
        .filter(|l| l["message"] == POLL_FAILED)
        .collect();
    assert!(
        !failed.is_empty(),
        "the failed poll is logged at start: {:#?}",
        server.startup
    );
    assert_eq!(failed[0]["kind"], "unreachable", "{}", failed[0]);
    let p = policies(&server).await;
    let promo = policy(&p, "promo");
    assert_eq!(
        (&promo["status"], &promo["active"]["digest"]),
        (&Value::from("active"), &Value::from(v1.clone())),
        "{p:#}"
    );
    let oci = &p["oci"][0];
    assert_eq!(
        (&oci["status"], &oci["kind"], &oci["serving_from"]),
        (
            &Value::from("failing"),
            &Value::from("unreachable"),
            &Value::from("store")
        ),
        "{p:#}"
    );
    assert!(
        oci["error"]
            .as_str()
            .unwrap()
            .contains("cannot reach the registry"),
        "{oci}"
    );
    let ready = reqwest::get(format!("{}/readyz", server.url))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let text = ready.text().await.unwrap();
    assert!(
        text.contains("registry failing") && text.contains("serving store"),
        "{text}"
    );

    let traffic = Traffic::start(&server.url, &["promo", "other"]);
    tokio::time::sleep(Duration::from_millis(800)).await;
    reg.restart();
    let p = wait_for(&server, "recovered", |p| p["oci"][0]["status"] == "ok").await;
    assert_eq!(p["oci"][0]["serving_from"], "registry");
    let served = traffic.finish("promo").await;
    assert!(served.iter().all(|d| *d == v1), "{served:?}");
    let ready = reqwest::get(format!("{}/readyz", server.url))
        .await
        .unwrap();
    assert!(
        ready
            .text()
            .await
            .unwrap()
            .starts_with("ready\ngeneration g")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_going_down_keeps_serving_reports_and_retries_with_backoff() {
    let mut reg = DockerRegistry::start();
    let tag = format!("{}/oasis/promo:stable", reg.host());
    let (v1, v2) = (digest(BASELINE), digest(GUARDED_BOOST));
    push(&reg, BASELINE, &tag, &[]);
    let dir = tempfile::tempdir().unwrap();
    manifest(dir.path(), "promo", &format!("oci://{tag}"));
    let server = serve(dir.path(), &reg);
    let traffic = Traffic::start(&server.url, &["promo"]);
    tokio::time::sleep(Duration::from_millis(300)).await;

    reg.kill();
    let p = wait_for(&server, "failing three times", |p| {
        p["oci"][0]["failures"].as_u64() >= Some(3)
    })
    .await;
    assert_eq!(p["oci"][0]["kind"], "unreachable", "{p:#}");
    assert_eq!(
        p["oci"][0]["serving_from"], "registry",
        "what it pulled before"
    );
    assert_eq!(policy(&p, "promo")["active"]["digest"], v1);
    let text = reqwest::get(format!("{}/readyz", server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.starts_with("ready; registry failing"), "{text}");
    // Each failure logged with its wait: doubling from the poll interval.
    let mut seen = Vec::new();
    let waits: Vec<u64> = logged(&server, POLL_FAILED, &mut seen)
        .iter()
        .map(|l| l["retry_in_ms"].as_u64().unwrap())
        .collect();
    assert!(
        waits.len() >= 3 && waits[..3] == [200, 400, 800],
        "{waits:?}"
    );

    reg.restart();
    push(&reg, GUARDED_BOOST, &tag, &[]);
    wait_for(&server, "serving v2 after the recovery", |p| {
        policy(p, "promo")["active"]["digest"] == v2 && p["oci"][0]["status"] == "ok"
    })
    .await;
    // A request sent now is decided by v2. (The traffic's last request may
    // have been sent before the swap and still be answered by v1: in-flight
    // requests finish on the version they started with.)
    let after: Value = reqwest::Client::new()
        .post(format!("{}/v1/score", server.url))
        .body(routed("promo", &example_body()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(after["policy"]["digest"], v2.as_str(), "{after}");
    let served = traffic.finish("promo").await;
    assert!(served.iter().all(|d| *d == v1 || *d == v2), "{served:?}");
    // The traffic is sequential, so the switch is one-way: once v2 answered,
    // every later request started after the swap.
    let first_v2 = served.iter().position(|d| *d == v2);
    assert!(
        first_v2.is_none_or(|i| served[i..].iter().all(|d| *d == v2)),
        "v1 answered after v2 had: {served:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_moved_to_a_module_that_does_not_load_is_refused_and_reported() {
    let reg = DockerRegistry::start();
    let tag = format!("{}/oasis/promo:stable", reg.host());
    let v1 = digest(BASELINE);
    push(&reg, BASELINE, &tag, &[]);
    let dir = tempfile::tempdir().unwrap();
    manifest(dir.path(), "promo", &format!("oci://{tag}"));
    install(dir.path(), "other", GUARDED_BOOST, "");
    let server = serve(dir.path(), &reg);
    let traffic = Traffic::start(&server.url, &["promo", "other"]);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Someone publishes a component that is not a policy to the tag.
    push_raw(&reg, &tag, &std::fs::read(NOT_A_POLICY).unwrap()).await;
    let p = wait_for(&server, "refused", |p| {
        policy(p, "promo")["status"] == "failed"
    })
    .await;
    let promo = policy(&p, "promo");
    let error = promo["failure"]["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!("oci:{tag}@sha256:")),
        "names what was pulled: {error}"
    );
    assert_eq!(
        promo["active"]["digest"], v1,
        "the last good version serves"
    );
    assert_eq!(policy(&p, "other")["status"], "active");
    assert_eq!(p["oci"][0]["status"], "ok", "the registry is fine: {p:#}");
    assert_eq!(p["oci"][0]["module_digest"], digest(NOT_A_POLICY));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let served = traffic.finish("promo").await;
    assert!(served.iter().all(|d| *d == v1), "{served:?}");
    let mut seen = Vec::new();
    let failures = logged(
        &server,
        "policy load failed; the last good version keeps serving",
        &mut seen,
    );
    assert!(
        failures.iter().any(|l| l["policy"] == "promo"),
        "the refusal is logged: {seen:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_mismatch_is_refused() {
    let reg = DockerRegistry::start();
    let tag = format!("{}/oasis/promo:stable", reg.host());
    let v1 = digest(BASELINE);
    push(&reg, BASELINE, &tag, &[]);
    let dir = tempfile::tempdir().unwrap();
    manifest(dir.path(), "promo", &format!("oci://{tag}"));
    let server = serve(dir.path(), &reg);
    let traffic = Traffic::start(&server.url, &["promo"]);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // v2's layer is pushed elsewhere first and corrupted on the registry's
    // disk (same length); then the tag moves to a manifest naming it: the
    // registry keeps the blob it has and serves the corrupted bytes under
    // v2's digest.
    push(
        &reg,
        GUARDED_BOOST,
        &format!("{}/oasis/staging:v2", reg.host()),
        &[],
    );
    let blob = reg.blob_file(&digest(GUARDED_BOOST));
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();
    push(&reg, GUARDED_BOOST, &tag, &[]);

    let p = wait_for(&server, "refused", |p| p["oci"][0]["kind"] == "invalid").await;
    let oci = &p["oci"][0];
    assert_eq!(oci["status"], "failing");
    assert!(
        oci["error"].as_str().unwrap().contains("digest mismatch"),
        "{oci}"
    );
    assert_eq!(oci["module_digest"], v1, "nothing unverified is held");
    let promo = policy(&p, "promo");
    assert_eq!(
        (&promo["status"], &promo["active"]["digest"]),
        (&Value::from("active"), &Value::from(v1.clone()))
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let served = traffic.finish("promo").await;
    assert!(served.iter().all(|d| *d == v1), "{served:?}");

    // `oasis pull` refuses it too, and writes nothing.
    let out_file = dir.path().join("bad.wasm");
    let out = oasis(
        &[
            "pull",
            &tag,
            "-o",
            out_file.to_str().unwrap(),
            "--registry-plain-http",
            &reg.host(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("digest mismatch"), "{err}");
    assert!(!out_file.exists());
}

/// `oasis-test-secret`, bcrypt (cost 5): the registry's htpasswd line.
const HTPASSWD: &str = "ci:$2b$05$ZNR2MFiF7nZnek/P4Bb6Uuao532HngodkJ9FCb38gyKPJ2P0OAzAm\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_come_from_a_docker_config_and_plain_http_only_when_asked() {
    use base64::Engine as _;
    let reg = DockerRegistry::start_with_htpasswd(Some(HTPASSWD));
    let tag = format!("{}/oasis/promo:stable", reg.host());
    let host = reg.host();

    // Without credentials: refused by the registry, and said so.
    let out = oasis(
        &["push", BASELINE, &tag, "--registry-plain-http", &host],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("oci://{tag}")), "{err}");
    // Without --registry-plain-http: HTTPS, which a plain registry does not speak.
    let out = oasis(&["pull", &tag, "-o", "-"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the registry"));

    let docker = tempfile::tempdir().unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode("ci:oasis-test-secret");
    let config = docker.path().join("config.json");
    std::fs::write(
        &config,
        format!(r#"{{"auths": {{"{host}": {{"auth": "{auth}"}}}}}}"#),
    )
    .unwrap();
    // --registry-auth FILE.
    push(
        &reg,
        BASELINE,
        &tag,
        &["--registry-auth", config.to_str().unwrap()],
    );
    // The server reads $DOCKER_CONFIG/config.json.
    let dir = tempfile::tempdir().unwrap();
    manifest(dir.path(), "promo", &format!("oci://{tag}"));
    let server = serve_with(
        dir.path(),
        &reg,
        &[("DOCKER_CONFIG", docker.path().to_str().unwrap())],
    );
    let p = policies(&server).await;
    assert_eq!(
        policy(&p, "promo")["active"]["digest"],
        digest(BASELINE),
        "{p:#}"
    );
    assert_eq!(p["oci"][0]["status"], "ok");
    // And a bad password is the registry's refusal.
    let bad = docker.path().join("bad.json");
    let wrong = base64::engine::general_purpose::STANDARD.encode("ci:wrong");
    std::fs::write(
        &bad,
        format!(r#"{{"auths": {{"{host}": {{"auth": "{wrong}"}}}}}}"#),
    )
    .unwrap();
    let creds = Credentials::load(Some(&bad)).unwrap();
    let client = RegistryClient::new(RegistryConfig {
        plain_http: BTreeSet::from([host.clone()]),
        credentials: creds,
        ..Default::default()
    });
    let e = client
        .resolve(&OciRef::parse(&tag).unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "registry", "{e}");
}

#[test]
fn push_refuses_what_is_not_a_policy_and_bad_references() {
    let out = oasis(&["push", NOT_A_POLICY, "127.0.0.1:1/oasis/x:v1"], &[]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not load; not pushed"), "{err}");
    let out = oasis(&["push", BASELINE, "oasis/x:v1"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("names no registry"), "{err}");
    let out = oasis(&["pull", "127.0.0.1:1/oasis/x"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no tag or digest"));
}
