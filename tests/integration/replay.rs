//! `oasis replay` at scale and under load: shards replayed apart and merged
//! give the single run's report; estimates per route and logged arm, with
//! a support threshold; the same estimates on a saturated machine.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::Method;
use oasis::decision_log::{DecisionLogConfig, DecisionRecord, Records};
use oasis::server::DecisionLogSettings;
use oasis_test_components::{ADVERSARIAL, BASELINE, EPSILON_GREEDY, GUARDED_BOOST};
use serde_json::Value;

use crate::harness::example_body;
use crate::harness::server::{Harness, TestServer, atomic_write, install};

/// Runs `oasis` with `args`: exit code, stdout, stderr.
fn oasis(args: &[&str]) -> (Option<i32>, String, String) {
    oasis_with(Command::new(env!("CARGO_BIN_EXE_oasis")), args)
}

fn oasis_with(mut cmd: Command, args: &[&str]) -> (Option<i32>, String, String) {
    let out = cmd
        .args(args)
        .env(
            "OASIS_CACHE_DIR",
            std::env::temp_dir().join("oasis-cli-test-cache"),
        )
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Logs of two routes, served: `radio` by guarded-boost (deterministic:
/// propensities 0 or 1) and `explore` by epsilon-greedy (epsilon 0.3), with
/// outcome events for every campaign track; the decisions split into
/// `files` files of one directory.
struct Served {
    /// The decision files.
    logs: tempfile::TempDir,
    /// The outcome files.
    outcomes: tempfile::TempDir,
    /// The policy directory (modules and manifests).
    policies: tempfile::TempDir,
}

impl Served {
    fn outcomes(&self) -> &str {
        self.outcomes.path().to_str().unwrap()
    }
    fn policies(&self) -> &str {
        self.policies.path().to_str().unwrap()
    }
    /// The logged records, in file order.
    fn records(&self) -> Vec<DecisionRecord> {
        Records::open(&[self.logs.path().to_path_buf()])
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }
    /// An epsilon-greedy candidate with `epsilon`, as `x.wasm=SETTINGS`.
    fn epsilon(&self, name: &str, epsilon: f64) -> String {
        let settings = self.policies.path().join(format!("{name}.json"));
        std::fs::write(&settings, format!("{{\"epsilon\": {epsilon}}}")).unwrap();
        format!("{EPSILON_GREEDY}={}", settings.display())
    }
}

/// The example request on `route` as request `id` with `seed`.
fn request(route: &str, id: &str, seed: u64) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&example_body()).unwrap();
    v["route"] = route.into();
    v["context"]["request_id"] = id.into();
    v["context"]["seed"] = seed.into();
    serde_json::to_vec(&v).unwrap()
}

async fn serve_logs(per_route: u64) -> Served {
    let logs = tempfile::tempdir().unwrap();
    let dir = logs.path().to_path_buf();
    let s = TestServer::start_with(
        |d| {
            install(d, "base", BASELINE, "");
            install(d, "p", GUARDED_BOOST, "");
            install(d, "explore", EPSILON_GREEDY, "[settings]\nepsilon = 0.3\n");
            atomic_write(
                &d.join("routes.toml"),
                b"[routes.radio]\npolicy = \"p\"\nbaseline = \"base\"\n",
            );
        },
        move |c| {
            c.decision_log = Some(DecisionLogSettings {
                config: DecisionLogConfig {
                    dir: Some(dir),
                    ..Default::default()
                },
                sample: 1.0,
            })
        },
    )
    .await;
    for i in 0..per_route {
        for route in ["explore", "radio"] {
            let id = format!("{route}-{i}");
            let body = request(route, &id, 7 + i);
            let (status, answer) = s.score(body.clone()).await;
            assert_eq!(status, 200, "{answer}");
            // Listeners stream some promoted tracks and skip the rest.
            let sent: Value = serde_json::from_slice(&body).unwrap();
            let mut events = String::new();
            for (j, (c, scored)) in sent["candidates"]
                .as_array()
                .unwrap()
                .iter()
                .zip(answer["scores"].as_array().unwrap())
                .enumerate()
            {
                if c.get("campaign").is_none() {
                    continue;
                }
                let promoted = scored["reasons"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r == "promoted");
                let streamed = if promoted {
                    (i + j as u64) % 3 != 0
                } else {
                    (i + j as u64) % 11 == 0
                };
                let event = if streamed { "stream" } else { "skip" };
                events.push_str(&format!(
                    "{{\"request_id\": \"{id}\", \"candidate_id\": {}, \"event\": \"{event}\"}}\n",
                    c["id"]
                ));
            }
            let r = s
                .send(Method::POST, "/v1/outcomes", events.into_bytes())
                .await;
            assert_eq!(r.status, 202, "{}", r.json());
        }
    }
    let policies = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(s.dir.path()).unwrap() {
        let p = f.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, policies.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    s.shutdown().await;
    // Decisions and outcomes apart.
    let outcomes = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(logs.path()).unwrap() {
        let p = f.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("outcomes-") {
            std::fs::rename(&p, outcomes.path().join(name)).unwrap();
        }
    }
    Served {
        logs,
        outcomes,
        policies,
    }
}

/// `records` written as `shards` decision files, record i in file i mod
/// `shards`, each in its own directory (and all of them in `all`).
fn split(records: &[DecisionRecord], shards: usize, all: &Path) -> Vec<PathBuf> {
    (0..shards)
        .map(|k| {
            let dir = all.join(format!("shard-{k}"));
            std::fs::create_dir_all(&dir).unwrap();
            let lines: String = records
                .iter()
                .skip(k)
                .step_by(shards)
                .map(|r| serde_json::to_string(r).unwrap() + "\n")
                .collect();
            let name = format!("decisions-20260101T000000Z-{k:06}.jsonl");
            std::fs::write(dir.join(&name), &lines).unwrap();
            std::fs::write(all.join(&name), &lines).unwrap();
            dir
        })
        .collect()
}

/// The report without what depends on the run (times, threads) or on the
/// order records arrived in (the samples of differences and errors).
fn figures(mut v: Value) -> Value {
    for k in [
        "elapsed_s",
        "records_per_s",
        "threads",
        "shards",
        "scaling",
        "differences",
        "error_samples",
    ] {
        v.as_object_mut().unwrap().remove(k);
    }
    v
}

fn json(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Four shards replayed separately and merged give the single run's report:
/// counts, divergence, promotions, and every estimate and bootstrap
/// interval, exactly. Estimates are per route and logged arm: the
/// deterministic route is "no support", the exploring one has a value, and
/// the overall value is the exploring route's (it was "no support" for
/// every candidate before). Partials of another seed or replaying the same
/// file twice are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_shards_merged_give_the_single_run_and_routes_are_estimated_apart() {
    let served = serve_logs(12).await;
    let records = served.records();
    assert_eq!(records.len(), 24);
    let work = tempfile::tempdir().unwrap();
    let all = work.path().join("all");
    std::fs::create_dir_all(&all).unwrap();
    let shards = split(&records, 4, &all);
    let (logger, wide) = (served.epsilon("eps", 0.3), served.epsilon("wide", 0.6));
    let common = |logs: &str| -> Vec<String> {
        [
            "replay",
            "--logs",
            logs,
            "--policies",
            served.policies(),
            "--candidate",
            &logger,
            "--candidate",
            &wide,
            "--outcomes",
            served.outcomes(),
            "--seed",
            "7",
            "--json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let args = common(all.to_str().unwrap());
    let (code, out, err) = oasis(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, Some(0), "{out}\n{err}");
    let single = json(&out);
    assert_eq!(single["replayed"].as_u64(), Some(24), "{single}");

    // Per route and arm: radio's deterministic logger gives no support,
    // explore's estimate stands, and the overall value is explore's.
    let c = &single["candidates"][1];
    let groups = c["estimates"].as_array().unwrap();
    let route = |name: &str| groups.iter().find(|g| g["route"] == name).unwrap();
    assert_eq!(groups.len(), 2, "{c}");
    assert_eq!(route("explore")["arm"], "stable");
    assert_eq!(route("explore")["estimate"]["kind"], "value", "{c}");
    assert_eq!(route("explore")["pooled"], true);
    assert_eq!(route("radio")["estimate"]["kind"], "no_support", "{c}");
    assert_eq!(
        route("radio")["estimate"]["reason"]["kind"],
        "unsupported",
        "{c}"
    );
    assert_eq!(route("radio")["pooled"], false);
    assert_eq!(c["estimate"], route("explore")["estimate"], "{c}");
    let routes = single["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 2, "{single}");
    assert!(routes.iter().all(|r| r["records"] == 12), "{single}");

    // Each shard apart, then merged.
    let parts = work.path().join("parts");
    std::fs::create_dir_all(&parts).unwrap();
    let mut partials = Vec::new();
    for (k, shard) in shards.iter().enumerate() {
        let out_file = parts.join(format!("part-{k}.json"));
        let mut args = common(shard.to_str().unwrap());
        args.extend(["--partial".into(), out_file.display().to_string()]);
        let (code, out, err) = oasis(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(code, Some(0), "{out}\n{err}");
        assert!(err.contains("partial result of 6 records written"), "{err}");
        partials.push(out_file.display().to_string());
    }
    let mut merge = vec!["replay", "merge"];
    merge.extend(partials.iter().map(String::as_str));
    merge.push("--json");
    let (code, out, err) = oasis(&merge);
    assert_eq!(code, Some(0), "{out}\n{err}");
    let merged = json(&out);
    assert_eq!(merged["shards"].as_u64(), Some(4));
    let estimate = &merged["candidates"][0]["estimate"];
    assert_eq!(estimate["kind"], "value", "{merged}");
    assert!(estimate["snips_ci"]["high"].as_f64() > estimate["snips_ci"]["low"].as_f64());
    assert_eq!(
        figures(merged.clone()),
        figures(single.clone()),
        "merged partials give the single run's figures"
    );
    // The tables say the same, route by route.
    merge.pop();
    let (code, text, _) = oasis(&merge);
    assert_eq!(code, Some(0));
    assert!(text.contains("merged from 4 partial results"), "{text}");
    assert!(text.contains("    radio/stable: no support"), "{text}");
    assert!(text.contains("value (over explore/stable): "), "{text}");

    // A shard with another seed, and the same shard twice, are refused.
    let other = parts.join("other-seed.json");
    let mut args = common(shards[3].to_str().unwrap());
    let seed = args.iter().position(|a| a == "--seed").unwrap();
    args[seed + 1] = "8".into();
    args.extend(["--partial".into(), other.display().to_string()]);
    let (code, _, err) = oasis(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = oasis(&[
        "replay",
        "merge",
        &partials[0],
        &partials[1],
        &partials[2],
        other.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("its seed is 8, the other's 7"), "{err}");
    let (code, _, err) = oasis(&["replay", "merge", &partials[1], &partials[1]]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("decisions-20260101T000000Z-000001.jsonl") && err.contains("counted twice"),
        "{err}"
    );

    // A least number of decisions per route/arm: below it, "no support"
    // with the count, not a number.
    let mut args = common(all.to_str().unwrap());
    args.extend(["--min-support".into(), "100000".into()]);
    let (code, out, err) = oasis(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, Some(0), "{out}\n{err}");
    let v = json(&out);
    let e = &v["candidates"][0]["estimates"];
    let explore = e
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["route"] == "explore")
        .unwrap();
    assert_eq!(explore["estimate"]["kind"], "no_support", "{e}");
    assert_eq!(
        explore["estimate"]["reason"],
        serde_json::json!({"kind": "below_min_support", "min_support": 100000})
    );
    assert!(explore["estimate"]["decisions"].as_u64().unwrap() > 0);
}

/// CPU time of the calling thread.
fn thread_cpu() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid, writable timespec; the clock id needs nothing else.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The same log replayed on an idle machine and on one saturated by busy
/// threads (the replay at the lowest priority, so that a call waits for
/// its core many times longer than it runs) gives the same estimates and
/// no failed call. With a wall-clock bound (replay ran under the policies'
/// deadline and its 10× wall-clock ceiling), the starved calls timed out
/// and their requests left the estimate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_gives_the_same_estimates_on_a_saturated_machine() {
    let served = serve_logs(4).await;
    // Every logged request arms the candidate: it spins ~8 ms of CPU.
    let logs = tempfile::tempdir().unwrap();
    let lines: String = served
        .records()
        .into_iter()
        .map(|mut r| {
            let mut req: Value = serde_json::from_str(r.request.get()).unwrap();
            req["context"]["features"]["attack"] = 1.into();
            r.request = serde_json::value::to_raw_value(&req).unwrap();
            serde_json::to_string(&r).unwrap() + "\n"
        })
        .collect();
    std::fs::write(
        logs.path().join("decisions-20260101T000000Z-000000.jsonl"),
        lines,
    )
    .unwrap();
    // Calibrate the spin on this machine (CPU time, which load does not
    // change much).
    let spin = |iterations: u64| format!("{{\"attack\": \"spin\", \"iterations\": {iterations}}}");
    let probe = crate::harness::load(ADVERSARIAL, &spin(2_000_000)).unwrap();
    let mut body: Value = serde_json::from_slice(&example_body()).unwrap();
    body["context"]["features"]["attack"] = 1.into();
    let body = serde_json::to_vec(&body).unwrap();
    crate::harness::score(&probe, &body).unwrap();
    let before = thread_cpu();
    crate::harness::score(&probe, &body).unwrap();
    let per_iteration = (thread_cpu() - before).as_secs_f64() / 2_000_000.0;
    let iterations = (0.008 / per_iteration.max(1e-12)) as u64;
    let settings = served.policies.path().join("spin.json");
    std::fs::write(&settings, spin(iterations)).unwrap();
    let candidate = format!("{ADVERSARIAL}={}", settings.display());
    // The default deadline (20 ms of CPU), well above the call's 8 ms; its
    // wall-clock ceiling (200 ms) is what a starved call overran.
    let args = [
        "replay",
        "--logs",
        logs.path().to_str().unwrap(),
        "--policies",
        served.policies(),
        "--candidate",
        &candidate,
        "--outcomes",
        served.outcomes(),
        "--deadline-ms",
        "20",
        "--json",
    ];
    let (code, out, err) = oasis(&args);
    assert_eq!(code, Some(0), "{out}\n{err}");
    let idle = json(&out);
    assert_eq!(idle["replayed"].as_u64(), Some(8), "{idle}");
    assert_eq!(idle["candidates"][0]["errors"], serde_json::json!({}));

    // Saturated: a busy thread per core at normal priority, the replay at
    // nice 19 (about 1.5% of a core against one busy thread).
    let stop = Arc::new(AtomicBool::new(false));
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let busy: Vec<_> = (0..cores)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            })
        })
        .collect();
    let mut nice = Command::new("nice");
    nice.args(["-n", "19", env!("CARGO_BIN_EXE_oasis")]);
    let (code, out, err) = oasis_with(nice, &args);
    stop.store(true, Ordering::Relaxed);
    for b in busy {
        b.join().unwrap();
    }
    let loaded = json(&out);
    assert_eq!(
        loaded["candidates"][0]["errors"],
        serde_json::json!({}),
        "no call failed under load: {err}"
    );
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert_eq!(
        loaded["candidates"][0]["estimate"],
        idle["candidates"][0]["estimate"]
    );
    assert_eq!(figures(loaded), figures(idle));
}
