//! The server under test, reached two ways through one [`Harness`]:
//!
//! - [`TestApp`]: the router of `oasis::api::app` driven in process with
//!   `tower::ServiceExt::oneshot`, over a registry loaded once by the
//!   reloader: no socket, no watcher. For what the HTTP surface answers.
//! - [`TestServer`]: `Server::run` on 127.0.0.1:0 with its watcher. For what
//!   is about sockets, hot reload or timing under concurrency.
//!
//! Plus the policy-directory helpers (`install`, `atomic_write`, …) and the
//! response helpers (`metric`, `policy`, …) both kinds of test share.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use oasis::api::{AppState, app};
use oasis::control::registry::Registry;
use oasis::control::reload::{ReloadSettings, Reloader};
use oasis::control::versions::VersionStore;
use oasis::server::{Server, ServerConfig};
use oasis::serving::Scorer;
use oasis::telemetry::metrics::Metrics;
use oasis::{Runtime, RuntimeConfig};
use serde_json::Value;
use tokio::sync::oneshot;
use tower::ServiceExt;

use super::small_body;

/// One answer: status, `Retry-After`, body.
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: Vec<u8>,
}

impl Reply {
    fn new(status: StatusCode, headers: &HeaderMap, body: Vec<u8>) -> Self {
        Reply {
            status: status.as_u16(),
            retry_after: headers
                .get(header::RETRY_AFTER)
                .map(|v| v.to_str().unwrap().to_string()),
            body,
        }
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// What both harnesses offer: a server started over a temporary policy
/// directory, and its HTTP surface.
pub trait Harness: Sized {
    /// Starts over a directory filled by `setup`, with the test
    /// configuration (see [`config`]) `tune`d.
    async fn start_with(setup: impl FnOnce(&Path), tune: impl FnOnce(&mut ServerConfig)) -> Self;

    /// Starts over a directory filled by `setup`.
    async fn start(setup: impl FnOnce(&Path)) -> Self {
        Self::start_with(setup, |_| {}).await
    }

    /// Sends one request to `path`.
    async fn send(&self, method: Method, path: &str, body: Vec<u8>) -> Reply;

    /// `GET path`.
    async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, Vec::new()).await
    }

    /// `POST /v1/score`: the status and the JSON answer.
    async fn score(&self, body: Vec<u8>) -> (u16, Value) {
        let r = self.send(Method::POST, "/v1/score", body).await;
        (r.status, r.json())
    }

    /// The metrics exposition.
    async fn metrics(&self) -> String {
        String::from_utf8(self.get("/metrics").await.body).unwrap()
    }

    /// `GET /v1/policies`.
    async fn policies(&self) -> Value {
        serde_json::from_slice(&self.get("/v1/policies").await.body).unwrap()
    }
}

/// A temporary policy directory filled by `setup`, and the configuration
/// both harnesses start from over it (short debounce and rescan, a 64-instance
/// pool, a test cache), then `tune`d.
fn config(
    setup: impl FnOnce(&Path),
    tune: impl FnOnce(&mut ServerConfig),
) -> (tempfile::TempDir, ServerConfig) {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let config = config_in(dir.path(), tune);
    (dir, config)
}

/// The test configuration over an existing policy directory, `tune`d.
pub fn config_in(dir: &Path, tune: impl FnOnce(&mut ServerConfig)) -> ServerConfig {
    let mut config = ServerConfig {
        policies: dir.to_path_buf(),
        debounce: Duration::from_millis(50),
        rescan: Duration::from_millis(500),
        runtime: RuntimeConfig {
            cache_dir: Some(std::env::temp_dir().join("oasis-server-test-cache")),
            measure_fuel: false,
            max_instances: 64,
            ..Default::default()
        },
        ..Default::default()
    };
    tune(&mut config);
    config
}

/// The router over a temporary policy directory, loaded once as the server
/// loads its initial set, and called in process.
pub struct TestApp {
    _dir: tempfile::TempDir,
    router: axum::Router,
}

impl Harness for TestApp {
    async fn start_with(setup: impl FnOnce(&Path), tune: impl FnOnce(&mut ServerConfig)) -> Self {
        let (dir, config) = config(setup, tune);
        let registry = Arc::new(Registry::default());
        let metrics = Arc::new(Metrics::new().with_promotion_stall(config.promotion_stall));
        Reloader::new(
            config.policies.clone(),
            Runtime::new(config.runtime.clone()).unwrap(),
            registry.clone(),
            metrics.clone(),
            VersionStore::new(&config.policies, config.keep_versions),
            ReloadSettings {
                default_route: config.default_route.clone(),
                debounce: config.debounce,
                rescan: config.rescan,
                module_grace: config.module_grace,
            },
        )
        .load_initial()
        .await;
        registry.set_ready();
        let scorer = Scorer::new(
            registry,
            metrics,
            config.runtime.max_instances,
            config.max_inflight,
        );
        let state = AppState::new(scorer, config.max_body_bytes);
        TestApp {
            _dir: dir,
            router: app(state),
        }
    }

    async fn send(&self, method: Method, path: &str, body: Vec<u8>) -> Reply {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::from(body))
            .unwrap();
        let r = self.router.clone().oneshot(request).await.unwrap();
        let (parts, body) = r.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        Reply::new(parts.status, &parts.headers, body.to_vec())
    }
}

/// A server running on 127.0.0.1:0 over a temporary policy directory.
pub struct TestServer {
    pub url: String,
    pub dir: tempfile::TempDir,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), oasis::server::ServerError>>>,
}

impl Harness for TestServer {
    async fn start_with(setup: impl FnOnce(&Path), tune: impl FnOnce(&mut ServerConfig)) -> Self {
        let (dir, config) = config(setup, tune);
        let (url, client, stop, task) = launch(config).await;
        TestServer {
            url,
            dir,
            client,
            stop: Some(stop),
            task: Some(task),
        }
    }

    async fn send(&self, method: Method, path: &str, body: Vec<u8>) -> Reply {
        http(&self.client, method, self.at(path), body).await
    }
}

type Running = (
    String,
    reqwest::Client,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), oasis::server::ServerError>>,
);

/// Runs a server with `config` on 127.0.0.1:0 and waits until it is ready.
async fn launch(config: ServerConfig) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(Server::new(config).run(listener, async {
        let _ = rx.await;
    }));
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .get(format!("{url}/readyz"))
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "server not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (url, client, tx, task)
}

/// Another server on the directory of an existing one: a second replica.
pub struct Replica {
    pub url: String,
    pub client: reqwest::Client,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), oasis::server::ServerError>>,
}

impl Replica {
    /// Starts a server on `dir` with the test configuration `tune`d.
    /// A replica keeps no delivery state unless `tune` says so: the first
    /// server's embedded store is its own (replicas share state via Redis).
    pub async fn start(dir: &Path, tune: impl FnOnce(&mut ServerConfig)) -> Self {
        let (url, client, stop, task) = launch(config_in(dir, |c| {
            c.state.backend = oasis::delivery::StateBackend::Off;
            tune(c)
        }))
        .await;
        Replica {
            url,
            client,
            stop,
            task,
        }
    }

    /// Stops it and waits until it has.
    pub async fn shutdown(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

impl TestServer {
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Sends a scoring request in the background: (status, Retry-After, body).
    pub fn spawn_score(
        &self,
        body: Vec<u8>,
    ) -> tokio::task::JoinHandle<(u16, Option<String>, Value)> {
        let (client, url) = (self.client.clone(), self.at("/v1/score"));
        tokio::spawn(async move {
            let r = http(&client, Method::POST, url, body).await;
            let v = r.json();
            (r.status, r.retry_after, v)
        })
    }

    /// Polls `/v1/policies` until `f` holds (10 s at most).
    pub async fn wait_until(&self, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(r) = self.client.get(self.at("/v1/policies")).send().await
                && let Ok(v) = r.json::<Value>().await
                && f(&v)
            {
                return v;
            }
            assert!(Instant::now() < deadline, "condition not reached in time");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn shutdown(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.take().unwrap().await.unwrap().unwrap();
    }

    /// Stops it and hands over its policy directory (with the state kept
    /// in it), for a restart on the same directory.
    pub async fn stop_keeping_dir(mut self) -> (tempfile::TempDir, std::path::PathBuf) {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.take().unwrap().await.unwrap().unwrap();
        let path = self.dir.path().to_path_buf();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (dir, path)
    }
}

/// One request over the socket; a body that cannot be read is empty.
async fn http(client: &reqwest::Client, method: Method, url: String, body: Vec<u8>) -> Reply {
    let r = client.request(method, url).body(body).send().await.unwrap();
    let (status, headers) = (r.status(), r.headers().clone());
    let body = r.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
    Reply::new(status, &headers, body)
}

/// The value of one series in a metrics exposition (0 when absent).
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// The metric labels of policy `key`'s active version in a `/v1/policies`
/// answer: `policy="k",version="v",digest="<12 hex>",settings="<12 hex>"`.
pub fn version_labels(v: &Value, key: &str) -> String {
    let a = &policy(v, key).unwrap_or_else(|| panic!("no policy {key}: {v}"))["active"];
    let digest = a["digest"].as_str().unwrap().trim_start_matches("sha256:");
    let settings = a["settings_sha256"].as_str().unwrap();
    format!(
        "policy=\"{key}\",version=\"{}\",digest=\"{}\",settings=\"{}\"",
        a["version"].as_str().unwrap(),
        &digest[..12],
        &settings[..12]
    )
}

/// The entry of policy `key` in a `/v1/policies` answer.
pub fn policy<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v["policies"].as_array()?.iter().find(|p| p["key"] == key)
}

/// Writes a manifest and copies its module into `dir` (atomically). Unless
/// `extra` sets one, the deadline is a generous 2 s: tests that are not about
/// time must not fall back because a busy machine preempted a call.
pub fn install(dir: &Path, key: &str, module: &str, extra: &str) {
    let wasm = format!("{key}.wasm");
    atomic_copy(Path::new(module), &dir.join(&wasm));
    let extra = if extra.contains("deadline_ms") {
        extra.to_string()
    } else if extra.contains("[limits]") {
        extra.replace("[limits]\n", "[limits]\ndeadline_ms = 2000\n")
    } else {
        format!("{extra}\n[limits]\ndeadline_ms = 2000\n")
    };
    let manifest = format!("module = \"{wasm}\"\n{extra}");
    atomic_write(&dir.join(format!("{key}.toml")), manifest.as_bytes());
}

/// Writes `path` as editors do: elsewhere, then renamed in.
pub fn atomic_write(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

pub fn atomic_copy(from: &Path, to: &Path) {
    atomic_write(to, &std::fs::read(from).unwrap());
}

/// The `sha256:…` digest the server reports for the component at `path`.
pub fn digest(path: &str) -> String {
    oasis::cache::digest(&std::fs::read(path).unwrap())
}

/// The armed small request (see [`small_body`]), sent to `route`.
pub fn attack_body(route: &str) -> Vec<u8> {
    routed(route, &small_body(true))
}

/// `body` with its `route` set.
pub fn routed(route: &str, body: &[u8]) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(body).unwrap();
    v["route"] = route.into();
    serde_json::to_vec(&v).unwrap()
}
