//! The in-process figures: each example policy natively vs as a component
//! (an instance reset after each call, as `oasis serve` runs them) at 100, 300 and 1000 candidates × 30
//! features; the isolation overhead alone; the server's pipeline end to end
//! for JSON and gRPC; and the tactics that can be measured in process.
//!
//! Timer: [`crate::stats::best_mean`], the lowest mean of 7 rounds of
//! ~40 ms of back-to-back calls.

use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

use oasis::request::{self, Validate};
use oasis::{Limits, Policy, Runtime, RuntimeConfig};
use oasis_proto::prost::Message;

use crate::native::{Native, POLICIES, manifest_settings};
use crate::stats::{best_mean, us};

/// Candidate counts of the per-policy comparison.
pub const SIZES: [usize; 3] = [100, 300, 1000];
/// Candidate features per candidate in the generated requests.
pub const FEATURES: usize = 30;

const ROUNDS: usize = 7;
const BUDGET: Duration = Duration::from_millis(40);

fn time(f: impl FnMut()) -> f64 {
    us(best_mean(ROUNDS, BUDGET, f))
}

/// The bundled example request (`examples/request.json`) with `n`
/// candidates (cycled, renamed) and `features` candidate features each: its
/// own six plus synthetic `f07`… up to `features`. `n = 0` is an empty slate.
pub fn body(root: &Path, n: usize, features: usize) -> anyhow::Result<Vec<u8>> {
    let text = std::fs::read(root.join("examples/request.json"))?;
    let mut v: serde_json::Value = serde_json::from_slice(&text)?;
    let base = v["candidates"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no candidates in examples/request.json"))?
        .clone();
    let cands: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let mut c = base[i % base.len()].clone();
            c["id"] = format!("track-{i}").into();
            let f = c["features"].as_object_mut().expect("features object");
            let mut j = f.len();
            while j < features {
                j += 1;
                f.insert(
                    format!("f{j:02}"),
                    (((i * 31 + j * 7) % 100) as f64 / 100.0).into(),
                );
            }
            c
        })
        .collect();
    v["candidates"] = cands.into();
    Ok(serde_json::to_vec(&v)?)
}

/// One policy at one size.
#[derive(Debug, Clone)]
pub struct CallRow {
    /// Policy name.
    pub policy: String,
    /// Candidates.
    pub n: usize,
    /// Native call (copy into the SDK's types + score + output check), µs.
    pub native_us: f64,
    /// `oasis::Policy::call`: instance (reset after its last call) + lift +
    /// score + checks, µs.
    pub wasm_us: f64,
    /// Single component calls: p50 and p99 of 201, µs.
    pub wasm_p50_us: f64,
    /// See `wasm_p50_us`.
    pub wasm_p99_us: f64,
    /// Whether both gave the same scores, eligibility and reasons.
    pub same: bool,
}

/// End-to-end server pipeline at one size and transport.
#[derive(Debug, Clone)]
pub struct E2eRow {
    /// `JSON` or `gRPC`.
    pub transport: &'static str,
    /// Candidates.
    pub n: usize,
    /// Decode (JSON parse / protobuf decode + conversion) + validate, µs.
    pub decode_us: f64,
    /// The policy's call (batch + instance + call), µs.
    pub call_us: f64,
    /// Decode → validate → batch → call → encoded response, µs.
    pub total_us: f64,
    /// The same pipeline with the native call, µs.
    pub native_total_us: f64,
}

/// Everything measured in process.
#[derive(Debug, Default)]
pub struct InProc {
    /// Per policy and size.
    pub calls: Vec<CallRow>,
    /// Baseline component on 0 candidates: an instance in its state after
    /// instantiation (an idle one reset after its last call, as `oasis
    /// serve` runs them) + empty call, µs.
    pub isolation_us: f64,
    /// The same on a fresh instance per call (`--fresh-instances`), µs.
    pub fresh_isolation_us: f64,
    /// Baseline natively on 0 candidates, µs.
    pub native_empty_us: f64,
    /// End to end, guarded-boost.
    pub e2e: Vec<E2eRow>,
    /// Tactic lines (Markdown table rows), and notes.
    pub tactics: String,
}

/// Paths of the example components in `wasm_dir` (`<name>.wasm` with `_`).
pub fn component(wasm_dir: &Path, policy: &str) -> std::path::PathBuf {
    wasm_dir.join(format!("{}.wasm", policy.replace('-', "_")))
}

fn limits() -> Limits {
    Limits {
        // A loaded shared machine must not turn a measurement into a timeout.
        deadline: Duration::from_secs(2),
        ..Limits::default()
    }
}

/// Runs the in-process section; progress on stderr.
pub fn run(root: &Path, wasm_dir: &Path, quick: bool) -> anyhow::Result<InProc> {
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: None,
        ..RuntimeConfig::default()
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut out = InProc::default();
    let bodies: Vec<(usize, Vec<u8>)> = SIZES
        .iter()
        .map(|&n| Ok((n, body(root, n, FEATURES)?)))
        .collect::<anyhow::Result<_>>()?;
    let mut loaded = Vec::new();
    for name in POLICIES {
        let settings = manifest_settings(root, name)?;
        let native = Native::new(name, &settings)?;
        let policy = Policy::load_file(&runtime, &component(wasm_dir, name), &settings, limits())
            .map_err(|e| anyhow::anyhow!("loading {name}: {e}"))?;
        eprintln!("in-process: {name}");
        for (n, body) in &bodies {
            if quick && *n != 1000 {
                continue;
            }
            let req = request::parse(body)?.validate(2000)?;
            let batch = policy.batch(&req);
            let nb = native.batch(&req);
            let wasm = policy.call(&batch).map_err(|e| anyhow::anyhow!("{e}"))?;
            let nat = native
                .call(&nb)
                .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
            let d = &wasm.decisions;
            let same =
                d.scores == nat.scores && d.eligible == nat.eligible && d.reasons == nat.reasons;
            let native_us = time(|| {
                native.call(&nb).expect("native call");
            });
            let wasm_us = time(|| {
                policy.call(&batch).expect("component call");
            });
            let single = crate::stats::single_calls(201, || {
                policy.call(&batch).expect("component call");
            });
            let q = |q| crate::stats::percentile(&single, q).map_or(f64::NAN, us);
            out.calls.push(CallRow {
                policy: name.to_string(),
                n: *n,
                native_us,
                wasm_us,
                wasm_p50_us: q(0.5),
                wasm_p99_us: q(0.99),
                same,
            });
        }
        loaded.push((name, native, policy, settings));
    }

    // Isolation alone: the baseline on an empty slate.
    let empty = body(root, 0, FEATURES)?;
    let req = request::parse(&empty)?.validate(2000)?;
    let (_, bn, bp, _) = &loaded[0];
    let batch = bp.batch(&req);
    bp.call(&batch).map_err(|e| anyhow::anyhow!("{e}"))?;
    out.isolation_us = time(|| {
        bp.call(&batch).expect("empty call");
    });
    // The same with a fresh instance per call (`oasis serve --fresh-instances`).
    let fresh_runtime = Runtime::new(RuntimeConfig {
        cache_dir: None,
        reset_instances: false,
        ..RuntimeConfig::default()
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let fresh = Policy::load_file(
        &fresh_runtime,
        &component(wasm_dir, "baseline"),
        &manifest_settings(root, "baseline")?,
        limits(),
    )
    .map_err(|e| anyhow::anyhow!("loading baseline: {e}"))?;
    let fresh_batch = fresh.batch(&req);
    out.fresh_isolation_us = time(|| {
        fresh.call(&fresh_batch).expect("empty call");
    });
    let nb = bn.batch(&req);
    out.native_empty_us = time(|| {
        bn.call(&nb).expect("native empty call");
    });

    // End to end, guarded-boost (the autoplay route).
    let (_, gn, gp, _) = loaded
        .iter()
        .find(|(n, ..)| *n == "guarded-boost")
        .expect("guarded-boost");
    eprintln!("in-process: end to end");
    // The server's decoders: JSON straight into the route's declared
    // columns (here guarded-boost's), gRPC checked on the message's columns.
    let columns: Vec<&str> = gp.columns().iter().map(String::as_str).collect();
    fn json_decode<'b>(body: &'b [u8], columns: &[&str]) -> oasis::ValidRequest<'b> {
        request::json::decode_or_parse(body, columns, 2000).unwrap()
    }
    let mut general = String::from(
        "\nDecoding straight into the batch (issue 21), guarded-boost, same run: the general path \
         (JSON `request::parse` + `validate`; gRPC `packed::from_proto` + `validate`, what the server \
         ran before and still runs for any request the fast path refuses) vs the server's path now.\n\n\
         | candidates | transport | decode + validate, general | decode + validate, now | end to end, general | end to end, now |\n\
         |---:|---|---:|---:|---:|---:|\n",
    );
    let mut prost_direct = String::from(
        "\nThe gRPC message read in place (`request::proto_view`, the server's path) vs decoded by \
         prost into its owned message first, both then checked on their columns, guarded-boost:\n\n",
    );
    for (n, body) in bodies.iter().filter(|(n, _)| *n >= 300) {
        let req = request::parse(body)?.validate(2000)?;
        assert!(
            request::json::decode(body, &columns, 2000).is_ok(),
            "the JSON fast path takes the benchmark's body"
        );
        let call_us = time(|| {
            gp.score(&req).expect("call");
        });
        let json_decode_us = time(|| {
            json_decode(body, &columns);
        });
        let json_total = time(|| {
            let req = json_decode(body, &columns);
            let out = gp.score(&req).unwrap();
            json_response(&req, gp.identity(), out.decisions);
        });
        let json_native = time(|| {
            let req = json_decode(body, &columns);
            let d = gn.call(&gn.batch(&req)).unwrap();
            json_response(&req, gp.identity(), d);
        });
        out.e2e.push(E2eRow {
            transport: "JSON",
            n: *n,
            decode_us: json_decode_us,
            call_us,
            total_us: json_total,
            native_total_us: json_native,
        });
        let encoded = oasis_proto::json::request(body)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .encode_to_vec();
        // The server's path: the bytes read in place (request::proto_view),
        // checked on their columns.
        use oasis::request::proto_view::ProtoMessage;
        assert!(
            ProtoMessage::new(&encoded).view().is_some(),
            "the gRPC reader takes the benchmark's message"
        );
        let grpc_decode = time(|| {
            let msg = ProtoMessage::new(&encoded);
            request::packed::validate_message(&msg, 2000).unwrap();
        });
        let grpc_total = time(|| {
            let msg = ProtoMessage::new(&encoded);
            let req = request::packed::validate_message(&msg, 2000).unwrap();
            let out = gp.score(&req).unwrap();
            grpc_response(&req, gp.identity(), out.decisions).encode_to_vec();
        });
        let grpc_native = time(|| {
            let msg = ProtoMessage::new(&encoded);
            let req = request::packed::validate_message(&msg, 2000).unwrap();
            let d = gn.call(&gn.batch(&req)).unwrap();
            grpc_response(&req, gp.identity(), d).encode_to_vec();
        });
        // Before the in-place reader: prost's owned message, then the
        // column checks.
        let grpc_prost = time(|| {
            let msg = oasis_proto::v1::ScoreRequest::decode(&encoded[..]).unwrap();
            request::packed::validate(&msg, 2000).unwrap();
        });
        // The general paths the fast ones replace (and fall back to), in
        // the same run: what decoding cost before issue 21.
        let json_general = time(|| {
            request::parse(body).unwrap().validate(2000).unwrap();
        });
        let json_general_total = time(|| {
            let req = request::parse(body).unwrap().validate(2000).unwrap();
            let out = gp.score(&req).unwrap();
            json_response(&req, gp.identity(), out.decisions);
        });
        let grpc_general = time(|| {
            let msg = oasis_proto::v1::ScoreRequest::decode(&encoded[..]).unwrap();
            request::packed::from_proto(&msg)
                .unwrap()
                .validate(2000)
                .unwrap();
        });
        let grpc_general_total = time(|| {
            let msg = oasis_proto::v1::ScoreRequest::decode(&encoded[..]).unwrap();
            let req = request::packed::from_proto(&msg)
                .unwrap()
                .validate(2000)
                .unwrap();
            let out = gp.score(&req).unwrap();
            grpc_response(&req, gp.identity(), out.decisions).encode_to_vec();
        });
        let _ = writeln!(
            general,
            "| {n} | JSON | {json_general:.1} us | {json_decode_us:.1} us | {json_general_total:.1} us | {json_total:.1} us |\n\
             | {n} | gRPC | {grpc_general:.1} us | {grpc_decode:.1} us | {grpc_general_total:.1} us | {grpc_total:.1} us |"
        );
        let _ = writeln!(
            prost_direct,
            "- {n} candidates: prost's owned message + column checks {grpc_prost:.1} us; read in place + column checks {grpc_decode:.1} us"
        );
        out.e2e.push(E2eRow {
            transport: "gRPC",
            n: *n,
            decode_us: grpc_decode,
            call_us,
            total_us: grpc_total,
            native_total_us: grpc_native,
        });
    }

    eprintln!("in-process: tactics");
    out.tactics = tactics(root, wasm_dir, &bodies)?;
    out.tactics.push_str(&general);
    out.tactics.push_str(&prost_direct);
    Ok(out)
}

/// The JSON response body, encoded by the server's own encoder
/// (`oasis::serving::encode`) for `d` served by `policy` as the stable arm.
pub fn json_response(
    req: &oasis::ValidRequest<'_>,
    policy: &std::sync::Arc<oasis::PolicyRef>,
    d: oasis::bindings::WitDecisions,
) -> Vec<u8> {
    let served = oasis::serving::served::Served::stable(policy.clone(), d);
    let route = req.route.as_deref().unwrap_or_default();
    oasis::serving::encode::json_of(req, route, &served, 0).expect("encodable")
}

/// The gRPC response message, built by the server's own encoder
/// (`oasis::serving::encode`) for `d` served by `policy` as the stable arm.
pub fn grpc_response(
    req: &oasis::ValidRequest<'_>,
    policy: &std::sync::Arc<oasis::PolicyRef>,
    d: oasis::bindings::WitDecisions,
) -> oasis_proto::v1::ScoreResponse {
    let served = oasis::serving::served::Served::stable(policy.clone(), d);
    let route = req.route.as_deref().unwrap_or_default();
    oasis::serving::encode::proto_of(req, route, &served, 0)
}

/// The fresh-instance breakdown ([`crate::instantiation`]) of the baseline
/// and guarded-boost components, and of `python` (`LABEL=PATH` each), under
/// the host's configuration and, unless `host_only`, each tactic.
pub fn instantiation(
    root: &Path,
    wasm_dir: &Path,
    python: &[String],
    host_only: bool,
) -> anyhow::Result<String> {
    use crate::instantiation::{Subject, report};
    let empty_body = body(root, 0, FEATURES)?;
    let empty = request::parse(&empty_body)?.validate(2000)?;
    // An empty slate that still carries every feature column (empty), so
    // that a policy requiring one (guarded-boost's `p_skip`) accepts it.
    let one_body = body(root, 1, FEATURES)?;
    let names = declared_all_names(&request::parse(&one_body)?.validate(2000)?);
    let empty = oasis::columnar::batch(&empty, &names, &[]);
    let gb_settings = manifest_settings(root, "guarded-boost")?;
    let (base, gb) = (
        component(wasm_dir, "baseline"),
        component(wasm_dir, "guarded-boost"),
    );
    let mut subjects = vec![
        Subject {
            label: "baseline (Rust)",
            path: &base,
            settings: "{}",
            per_round: 400,
        },
        Subject {
            label: "guarded-boost (Rust)",
            path: &gb,
            settings: &gb_settings,
            per_round: 400,
        },
    ];
    let python: Vec<(String, std::path::PathBuf)> = python
        .iter()
        .map(|p| match p.split_once('=') {
            Some((label, path)) => Ok((format!("{label} (Python)"), path.into())),
            None => Err(anyhow::anyhow!("--python takes LABEL=PATH, not {p:?}")),
        })
        .collect::<anyhow::Result<_>>()?;
    for (label, path) in &python {
        subjects.push(Subject {
            label,
            path,
            settings: "{}",
            per_round: 20,
        });
    }
    let tactics: &[crate::engine::Tactic] = if host_only {
        std::slice::from_ref(&crate::engine::HOST)
    } else {
        &crate::engine::TACTICS
    };
    report(&subjects, tactics, &empty)
}

/// Tactics measured in process, as Markdown table rows plus notes.
fn tactics(root: &Path, wasm_dir: &Path, bodies: &[(usize, Vec<u8>)]) -> anyhow::Result<String> {
    use crate::engine::{Harness, TACTICS, time_call};
    let mut s = String::new();
    let (_, big) = bodies.last().expect("a 1000-candidate body");
    let req = request::parse(big)?.validate(2000)?;
    let empty_body = body(root, 0, FEATURES)?;
    let empty = request::parse(&empty_body)?.validate(2000)?;
    let gb_settings = manifest_settings(root, "guarded-boost")?;
    let gb_native = Native::new("guarded-boost", &gb_settings)?;
    let declared = gb_native.batch(&req);
    let all_names: Vec<String> = declared_all_names(&req);
    let all = oasis::columnar::batch(&req, &all_names, &gb_native.context);
    let gb_path = component(wasm_dir, "guarded-boost");
    let base_path = component(wasm_dir, "baseline");

    let _ = writeln!(
        s,
        "Engine configuration (own wasmtime engine with the host's bindings; \
         instance + score per call; best mean of 7):\n"
    );
    let _ = writeln!(
        s,
        "| configuration | baseline, 0 candidates | guarded-boost, 1000x30, declared column | guarded-boost, 1000x30, all 30 columns |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|");
    let mut declared_us = f64::NAN;
    let mut all_us = f64::NAN;
    for (i, t) in TACTICS.iter().enumerate() {
        let base = match Harness::new(*t, &base_path) {
            Ok(h) => h,
            Err(e) => {
                let _ = writeln!(s, "| {} | not available: {e} | - | - |", t.label);
                continue;
            }
        };
        let e = time_call(&base, "{}", &oasis::columnar::batch(&empty, &[], &[]))?;
        let gb = Harness::new(*t, &gb_path)?;
        let d = time_call(&gb, &gb_settings, &declared)?;
        let a = time_call(&gb, &gb_settings, &all)?;
        let _ = writeln!(
            s,
            "| {} | {:.1} us | {:.1} us | {:.1} us |",
            t.label,
            us(e),
            us(d),
            us(a)
        );
        if i == 0 {
            declared_us = us(d);
            all_us = us(a);
        }
    }
    let cols = declared.candidates.feature_names.len();
    let _ = writeln!(
        s,
        "\nCopying only declared feature columns (guarded-boost, 1000 candidates, host configuration): \
         {cols} declared column(s) {declared_us:.1} us per call; all {} columns {all_us:.1} us \
         ({:+.1} us, {:.2} ns per extra f64 lowered into guest memory).",
        all_names.len(),
        all_us - declared_us,
        1000.0 * (all_us - declared_us) / ((all_names.len() - cols) * 1000) as f64
    );

    // f32 vs f64 feature columns: the contract carries f64; what halving
    // the bytes would save is estimated from the measured per-f64 cost above,
    // and the host-side column copy is measured for both widths.
    let features: Vec<f64> = all.candidates.features.clone();
    let f64_copy = time(|| {
        std::hint::black_box(features.to_vec());
    });
    let f32s: Vec<f32> = features.iter().map(|&x| x as f32).collect();
    let f32_copy = time(|| {
        std::hint::black_box(f32s.to_vec());
    });
    let f32_convert = time(|| {
        std::hint::black_box(features.iter().map(|&x| x as f32).collect::<Vec<f32>>());
    });
    let per_f64_ns = 1000.0 * (all_us - declared_us) / ((all_names.len() - cols) * 1000) as f64;
    let _ = writeln!(
        s,
        "\nf32 vs f64 feature columns (1000 x 30 = {} values): host-side copy of the column \
         f64 {f64_copy:.1} us, f32 {f32_copy:.1} us (f64 -> f32 conversion {f32_convert:.1} us). \
         Into guest memory, from the per-f64 cost measured above: all 30 columns as f64 \
         ~{:.1} us, as f32 ~{:.1} us; with only the declared column(s) the difference is \
         ~{:.2} us per call.",
        features.len(),
        per_f64_ns * features.len() as f64 / 1000.0,
        per_f64_ns * features.len() as f64 / 2000.0,
        per_f64_ns * (cols * 1000) as f64 / 2000.0
    );

    // Per-route counter handles vs a label lookup per request.
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    let family: Family<oasis::telemetry::metrics::RequestLabels, Counter> = Family::default();
    let routes = ["radio", "autoplay", "mixes", "fairness", "explore"];
    for r in routes {
        family
            .get_or_create(&oasis::telemetry::metrics::RequestLabels {
                route: r.into(),
                variant: "stable",
                transport: "http",
            })
            .inc();
    }
    let mut i = 0usize;
    let lookup = time(|| {
        i += 1;
        family
            .get_or_create(&oasis::telemetry::metrics::RequestLabels {
                route: routes[i % 5].to_string(),
                variant: "stable",
                transport: "http",
            })
            .inc();
    });
    let handles: Vec<Counter> = routes
        .iter()
        .map(|r| {
            family
                .get_or_create(&oasis::telemetry::metrics::RequestLabels {
                    route: (*r).into(),
                    variant: "stable",
                    transport: "http",
                })
                .clone()
        })
        .collect();
    let mut j = 0usize;
    let handle = time(|| {
        j += 1;
        handles[j % 5].inc();
    });
    let _ = writeln!(
        s,
        "\nPer-route counter handles: a label lookup per request (`Family::get_or_create` with \
         the route's name cloned, as `serving::Scorer::after` does) {:.0} ns; a held handle {:.0} ns; \
         saving {:.2} us per request, uncontended (one thread).",
        lookup * 1000.0,
        handle * 1000.0,
        lookup - handle
    );
    Ok(s)
}

/// Every candidate feature name the request carries, in first-seen order.
fn declared_all_names(req: &oasis::ValidRequest<'_>) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for c in req.candidates.iter().take(1) {
        for (name, _) in c.features.iter() {
            if !names.iter().any(|n| n == name) {
                names.push(name.to_string());
            }
        }
    }
    names
}
