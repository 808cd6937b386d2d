//! Benchmarks of the scoring path, step by step, on the bundled example
//! request (300 candidates) and a 1000-candidate variant.
//!
//! ```text
//! cargo bench -p oasis-host --bench score_path
//! ```
//!
//! Steps: JSON parse + validate, columnar conversion, a policy call (fresh
//! instance + run + output checks) for each example policy, and the whole
//! path end to end; the same request as a gRPC message (protobuf decode +
//! conversion + the same validation, its columnar batch, and end to end with
//! the response encoded as protobuf). Figures are recorded in
//! docs/performance.md and BENCHMARKS.md.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use oasis::request::{self, Validate};
use oasis::{Limits, Policy, Runtime, RuntimeConfig};

fn example(n: usize) -> Vec<u8> {
    let body = std::fs::read(format!(
        "{}/examples/request.json",
        oasis_test_components::ROOT
    ))
    .unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let base = v["candidates"].as_array().unwrap().clone();
    let cands: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let mut c = base[i % base.len()].clone();
            c["id"] = format!("track-{i}").into();
            c
        })
        .collect();
    v["candidates"] = cands.into();
    serde_json::to_vec(&v).unwrap()
}

fn bench(c: &mut Criterion) {
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: None,
        ..Default::default()
    })
    .unwrap();
    let policies: Vec<(&str, Policy)> = oasis_test_components::ALL
        .iter()
        .filter(|(name, _)| {
            !["adversarial", "flaky", "not-a-policy", "slow-describe"].contains(name)
        })
        .map(|(name, path)| {
            (
                *name,
                Policy::load_file(&runtime, path.as_ref(), "{}", Limits::default()).unwrap(),
            )
        })
        .collect();

    for n in [300usize, 1000] {
        let body = example(n);
        let mut g = c.benchmark_group(format!("{n}_candidates"));
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function("parse+validate", |b| {
            b.iter(|| {
                let req = request::parse(&body).unwrap().validate(10_000).unwrap();
                req.candidates.len()
            })
        });
        let req = request::parse(&body).unwrap().validate(10_000).unwrap();
        let (_, gb) = policies
            .iter()
            .find(|(n, _)| *n == "guarded-boost")
            .unwrap();
        g.bench_function("columnar", |b| b.iter(|| gb.batch(&req)));
        for (name, policy) in &policies {
            let batch = policy.batch(&req);
            g.bench_with_input(BenchmarkId::new("call", name), &batch, |b, batch| {
                b.iter(|| policy.call(batch).unwrap())
            });
        }
        g.bench_function("end_to_end/guarded-boost", |b| {
            b.iter(|| {
                let req = request::parse(&body).unwrap().validate(10_000).unwrap();
                let out = gb.score(&req).unwrap();
                let resp = oasis::response::scored(&req, &out.decisions);
                serde_json::to_vec(&resp).unwrap().len()
            })
        });
        // The same request through the gRPC front end.
        use oasis_proto::prost::Message;
        let encoded = oasis_proto::json::request(&body).unwrap().encode_to_vec();
        g.bench_function("grpc_decode+validate", |b| {
            b.iter(|| {
                let msg = oasis_proto::v1::ScoreRequest::decode(&encoded[..]).unwrap();
                let req = request::packed::from_proto(&msg)
                    .unwrap()
                    .validate(10_000)
                    .unwrap();
                req.candidates.len()
            })
        });
        let msg = oasis_proto::v1::ScoreRequest::decode(&encoded[..]).unwrap();
        let grpc_req = request::packed::from_proto(&msg)
            .unwrap()
            .validate(10_000)
            .unwrap();
        g.bench_function("grpc_columnar", |b| b.iter(|| gb.batch(&grpc_req)));
        g.bench_function("grpc_end_to_end/guarded-boost", |b| {
            b.iter(|| {
                let msg = oasis_proto::v1::ScoreRequest::decode(&encoded[..]).unwrap();
                let req = request::packed::from_proto(&msg)
                    .unwrap()
                    .validate(10_000)
                    .unwrap();
                let out = gb.score(&req).unwrap();
                let d = &out.decisions;
                let resp = oasis_proto::v1::ScoreResponse {
                    request_id: req.context.request_id.to_string(),
                    scores: Some(oasis_proto::v1::Scores {
                        ids: req.candidates.iter().map(|c| c.id.to_string()).collect(),
                        scores: d.scores.clone(),
                        eligible: d.eligible.clone(),
                        reasons: d
                            .reasons
                            .iter()
                            .map(|r| u32::from(oasis_contract::ReasonBits::reason_bits(r)))
                            .collect(),
                        propensity: d.propensity.clone(),
                        reason_names: Vec::new(),
                    }),
                    ..Default::default()
                };
                resp.encode_to_vec().len()
            })
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = bench
}
criterion_main!(benches);
