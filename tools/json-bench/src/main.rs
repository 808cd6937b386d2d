//! serde_json vs sonic-rs on the host's own request types
//! (`oasis::request::ScoreRequest`: borrowed strings, features as (name,
//! value) pairs): the same Deserialize impls under both parsers.
use std::time::Instant;

use oasis::request::ScoreRequest;

fn replicate(body: &[u8], n: usize) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(body).unwrap();
    let c = v["candidates"].as_array().unwrap().clone();
    let mut out = Vec::new();
    for i in 0..n {
        let mut x = c[i % c.len()].clone();
        x["id"] = format!("{}-{i}", x["id"].as_str().unwrap()).into();
        out.push(x);
    }
    v["candidates"] = out.into();
    serde_json::to_vec(&v).unwrap()
}

fn time<F: FnMut() -> usize>(name: &str, size: usize, mut f: F) -> f64 {
    for _ in 0..50 {
        std::hint::black_box(f());
    }
    let mut best = f64::MAX;
    for _ in 0..7 {
        let iters = 200;
        let t = Instant::now();
        for _ in 0..iters {
            std::hint::black_box(f());
        }
        best = best.min(t.elapsed().as_secs_f64() * 1e6 / iters as f64);
    }
    println!("{name:<12} {size:>5} cand: {best:>8.1} us (best of 7 x 200)");
    best
}

fn main() {
    let example = std::fs::read(
        std::env::args()
            .nth(1)
            .expect("path to examples/request.json"),
    )
    .unwrap();
    for n in [300usize, 1000] {
        let body = if n == 300 {
            example.clone()
        } else {
            replicate(&example, n)
        };
        println!("body {} bytes", body.len());
        let a = time("serde_json", n, || {
            serde_json::from_slice::<ScoreRequest>(&body)
                .unwrap()
                .candidates
                .len()
        });
        let b = time("sonic-rs", n, || {
            sonic_rs::from_slice::<ScoreRequest>(&body)
                .unwrap()
                .candidates
                .len()
        });
        // Same result?
        let x = serde_json::from_slice::<ScoreRequest>(&body).unwrap();
        let y = sonic_rs::from_slice::<ScoreRequest>(&body).unwrap();
        assert_eq!(format!("{x:?}"), format!("{y:?}"));
        println!("ratio sonic/serde_json: {:.2}", b / a);
    }
}
