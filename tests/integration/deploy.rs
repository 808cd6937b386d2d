//! The deployment example (`deploy/kubernetes/`, `deploy/Containerfile`)
//! checked against the binary: every flag it passes exists in `oasis serve
//! --help`, the ports agree with the listen flags, the shutdown grace covers
//! the drain, and the probe paths answer 200 on a real `oasis serve` started
//! with the Deployment's own arguments (and a real redis-server for
//! `--state redis`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use oasis::control::source::oci::OciRef;
use oasis_test_components::BASELINE;
use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

use crate::harness::process::ServeProcess;
use crate::harness::server::install;

/// A real redis-server (the state crate's test helper).
#[path = "../../state/tests/support/mod.rs"]
mod redis_support;

fn root() -> PathBuf {
    PathBuf::from(oasis_test_components::ROOT)
}

/// A YAML document as JSON (the shapes the manifests use: maps with string
/// keys, lists, scalars).
fn json(y: &Yaml) -> Value {
    match y {
        Yaml::Real(s) => s.parse::<f64>().map(Value::from).unwrap_or(Value::Null),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::String(s) => Value::from(s.clone()),
        Yaml::Boolean(b) => Value::from(*b),
        Yaml::Array(a) => Value::Array(a.iter().map(json).collect()),
        Yaml::Hash(h) => Value::Object(
            h.iter()
                .map(|(k, v)| {
                    let k = match k {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        other => panic!("a non-string key: {other:?}"),
                    };
                    (k, json(v))
                })
                .collect(),
        ),
        Yaml::Null => Value::Null,
        other => panic!("unexpected YAML node {other:?}"),
    }
}

/// Every document of every file the kustomization lists, by kind.
fn objects() -> BTreeMap<String, Value> {
    let dir = root().join("deploy/kubernetes");
    let load = |name: &str| -> Vec<Value> {
        let text = std::fs::read_to_string(dir.join(name))
            .unwrap_or_else(|e| panic!("deploy/kubernetes/{name}: {e}"));
        YamlLoader::load_from_str(&text)
            .unwrap_or_else(|e| panic!("deploy/kubernetes/{name}: {e}"))
            .iter()
            .map(json)
            .collect()
    };
    let kustomization = load("kustomization.yaml").remove(0);
    let mut out = BTreeMap::new();
    for file in kustomization["resources"].as_array().unwrap() {
        for doc in load(file.as_str().unwrap()) {
            let kind = doc["kind"].as_str().unwrap().to_string();
            assert!(
                out.insert(kind.clone(), doc).is_none(),
                "two {kind}s: the test expects one of each"
            );
        }
    }
    for kind in ["Deployment", "Service", "ConfigMap"] {
        assert!(out.contains_key(kind), "no {kind} in deploy/kubernetes");
    }
    out
}

/// The long flags `oasis serve --help` lists (global ones included).
fn serve_flags() -> BTreeSet<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_oasis"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let flags: BTreeSet<String> = help
        .split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_string()
        })
        .collect();
    assert!(flags.contains("--policies") && flags.contains("--log-format"));
    flags
}

/// `--flag=value` / `--flag value` / `--switch` arguments as (flag, value).
fn parse_args(args: &[String]) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut it = args.iter().peekable();
    while let Some(a) = it.next() {
        assert!(a.starts_with("--"), "`{a}` is not a flag");
        match a.split_once('=') {
            Some((f, v)) => out.push((f.to_string(), Some(v.to_string()))),
            None => {
                let v = it.next_if(|n| !n.starts_with("--")).cloned();
                out.push((a.clone(), v));
            }
        }
    }
    out
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// The Deployment's one container, and its `serve` arguments.
fn container(objects: &BTreeMap<String, Value>) -> (Value, Vec<(String, Option<String>)>) {
    let spec = &objects["Deployment"]["spec"]["template"]["spec"];
    let [c] = spec["containers"].as_array().unwrap().as_slice() else {
        panic!("one container expected");
    };
    let args = strings(&c["args"]);
    assert_eq!(args[0], "serve", "the container runs `oasis serve`");
    (c.clone(), parse_args(&args[1..]))
}

fn flag<'a>(args: &'a [(String, Option<String>)], name: &str) -> Option<&'a str> {
    args.iter()
        .find(|(f, _)| f == name)
        .map(|(_, v)| v.as_deref().unwrap_or(""))
}

fn port_of(addr: &str) -> u64 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn every_flag_port_and_path_of_the_deployment_exists_in_oasis_serve() {
    let objects = objects();
    let flags = serve_flags();
    let (c, args) = container(&objects);
    for (f, _) in &args {
        assert!(
            flags.contains(f),
            "the Deployment passes {f}, which `oasis serve` does not have"
        );
    }
    for required in [
        "--policies",
        "--listen",
        "--admin-token-file",
        "--state",
        "--redis-url",
        "--control-store",
    ] {
        assert!(
            flag(&args, required).is_some(),
            "the Deployment sets no {required}"
        );
    }
    assert_eq!(flag(&args, "--state"), Some("redis"));
    assert!(flag(&args, "--redis-url").unwrap().starts_with("redis://"));
    // A fleet with no shared disk: rollout state in Redis.
    assert!(
        flag(&args, "--control-store")
            .unwrap()
            .starts_with("redis://")
    );

    // Ports: each listen flag is a named container port, and back.
    let ports: BTreeMap<String, u64> = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["containerPort"].as_u64().unwrap(),
            )
        })
        .collect();
    let listens: BTreeMap<&str, u64> = [
        ("http", "--listen"),
        ("admin", "--admin-listen"),
        ("grpc", "--grpc-listen"),
    ]
    .into_iter()
    .filter_map(|(name, f)| flag(&args, f).map(|a| (name, port_of(a))))
    .collect();
    assert_eq!(
        ports
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect::<BTreeMap<_, _>>(),
        listens,
        "container ports vs listen flags"
    );
    for (f, a) in &args {
        if f.ends_with("-listen") {
            assert!(
                a.as_deref().unwrap().starts_with("0.0.0.0:"),
                "{f} must listen on every interface in a pod"
            );
        }
    }

    // Probes: on the scoring listener, at paths the server routes.
    let mut probe_paths = BTreeSet::new();
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["port"], "http", "{probe} is not on the --listen port");
        probe_paths.insert(get["path"].as_str().unwrap().to_string());
    }
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    let openapi = std::fs::read_to_string(root().join("host/src/api/mod.rs")).unwrap();
    for p in &probe_paths {
        assert!(
            openapi.contains(&format!(".route(\"{p}\"")),
            "{p} is not routed by the server"
        );
    }

    // The Service reaches named container ports.
    for p in objects["Service"]["spec"]["ports"].as_array().unwrap() {
        let target = p["targetPort"].as_str().unwrap();
        assert!(
            ports.contains_key(target),
            "the Service targets port `{target}`, which the container does not name"
        );
    }
    assert_eq!(
        objects["Service"]["spec"]["selector"],
        objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    );

    // Files the flags name are mounted: the token from a Secret, the policy
    // directory writable.
    let spec = &objects["Deployment"]["spec"]["template"]["spec"];
    let volumes: BTreeMap<String, Value> = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap().to_string(), v.clone()))
        .collect();
    let mounted = |path: &str| -> (Value, Value) {
        let m = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| Path::new(path).starts_with(m["mountPath"].as_str().unwrap()))
            .unwrap_or_else(|| panic!("{path} is on no volume mount"))
            .clone();
        let v = volumes[m["name"].as_str().unwrap()].clone();
        (m, v)
    };
    let (_, token) = mounted(flag(&args, "--admin-token-file").unwrap());
    assert!(
        token["secret"]["secretName"].is_string(),
        "the admin token is not a Secret"
    );
    let (m, v) = mounted(flag(&args, "--policies").unwrap());
    assert_ne!(
        m["readOnly"], true,
        "the policy directory must be writable (version store)"
    );
    assert!(v["emptyDir"].is_object());

    // The ConfigMap's manifests name registry modules that parse, and reach
    // the policy directory through the init container.
    let init = &spec["initContainers"][0];
    assert_eq!(init["image"], c["image"]);
    let script = strings(&init["command"]).join(" ");
    assert!(
        script.contains(flag(&args, "--policies").unwrap()),
        "{script}"
    );
    let data = objects["ConfigMap"]["data"].as_object().unwrap();
    assert!(data.contains_key("routes.toml"));
    for (name, text) in data {
        let doc: toml::Table = toml::from_str(text.as_str().unwrap())
            .unwrap_or_else(|e| panic!("ConfigMap {name}: {e}"));
        if let Some(module) = doc.get("module") {
            let r = OciRef::parse(module.as_str().unwrap())
                .unwrap_or_else(|e| panic!("ConfigMap {name}: {e}"));
            assert!(r.to_string().starts_with("oci://"));
        }
    }

    // Shutdown: the grace period covers preStop, the longest drain (a body
    // being read) and a margin for deadlines and flushing.
    let grace = spec["terminationGracePeriodSeconds"].as_u64().unwrap();
    let pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap();
    let body_ms: u64 = flag(&args, "--body-read-timeout-ms")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        grace >= pre_stop + body_ms.div_ceil(1000) + 5,
        "terminationGracePeriodSeconds {grace} < preStop {pre_stop} s + body read {body_ms} ms + 5 s"
    );
    assert!(
        c["resources"]["requests"]["memory"].is_string()
            && c["resources"]["limits"]["memory"].is_string()
    );

    // The Containerfile: its command's flags exist, its ports are exposed.
    let containerfile = std::fs::read_to_string(root().join("deploy/Containerfile")).unwrap();
    let line = |word: &str| -> String {
        containerfile
            .lines()
            .rfind(|l| l.starts_with(word))
            .unwrap_or_else(|| panic!("no {word} in deploy/Containerfile"))[word.len()..]
            .trim()
            .to_string()
    };
    assert!(
        containerfile
            .lines()
            .filter(|l| l.starts_with("FROM "))
            .count()
            >= 2,
        "not a multi-stage build"
    );
    assert!(containerfile.contains("cargo build --release --locked -p oasis-host --bin oasis"));
    let entry: Vec<String> = serde_json::from_str(&line("ENTRYPOINT")).unwrap();
    assert!(entry[0].ends_with("/oasis"));
    let cmd: Vec<String> = serde_json::from_str(&line("CMD")).unwrap();
    assert_eq!(cmd[0], "serve");
    let cmd_args = parse_args(&cmd[1..]);
    for (f, _) in &cmd_args {
        assert!(
            flags.contains(f),
            "the Containerfile's CMD passes {f}, which `oasis serve` does not have"
        );
    }
    let exposed: BTreeSet<u64> = line("EXPOSE")
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(exposed.contains(&port_of(flag(&cmd_args, "--listen").unwrap())));
    for p in ports.values() {
        assert!(exposed.contains(p), "container port {p} is not EXPOSEd");
    }
    assert_eq!(flag(&cmd_args, "--policies"), flag(&args, "--policies"));
}

/// The Deployment's arguments, run: addresses on loopback port 0, paths in
/// a temporary directory, `--state redis` against a real redis-server; its
/// probe paths answer 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployments_arguments_start_a_server_whose_probe_paths_answer_200() {
    let objects = objects();
    let (c, args) = container(&objects);
    let redis = redis_support::RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let policies = tmp.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    install(&policies, "baseline", BASELINE, "");
    let tokens = tmp.path().join("tokens");
    std::fs::write(&tokens, format!("ops {}\n", "k".repeat(40))).unwrap();
    let mut extra: Vec<String> = Vec::new();
    for (f, v) in &args {
        // The harness passes these itself (port 0, JSON logs, test cache).
        if ["--policies", "--listen", "--log-format", "--cache-dir"].contains(&f.as_str()) {
            continue;
        }
        let v = match f.as_str() {
            "--admin-listen" | "--grpc-listen" => Some("127.0.0.1:0".to_string()),
            "--admin-token-file" => Some(tokens.display().to_string()),
            "--redis-url" | "--control-store" => Some(redis.url()),
            "--replica-id" => Some("oasis-test-pod".to_string()),
            _ => v.clone(),
        };
        extra.push(match v {
            Some(v) => format!("{f}={v}"),
            None => f.clone(),
        });
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let server = ServeProcess::start(
        &policies,
        &extra,
        &[("DOCKER_CONFIG", "/nonexistent/oasis-test")],
    );
    // With the control store in Redis, canary windows are the fleet's by
    // default (no --fleet-windows given).
    assert!(
        server
            .startup
            .iter()
            .any(|l| l["message"] == "fleet-wide guardrail windows on" && l["url"] == redis.url()),
        "{:#?}",
        server.startup
    );
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let path = c[probe]["httpGet"]["path"].as_str().unwrap();
        let url = format!("{}{path}", server.url);
        let status = reqwest::get(&url).await.map(|r| r.status().as_u16());
        assert_eq!(status.ok(), Some(200), "{probe} {url}");
    }
}
