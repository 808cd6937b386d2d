//! The real socket: one smoke test of scoring through `Server::run`, and a
//! graceful shutdown that finishes the requests in flight.

use std::time::{Duration, Instant};

use oasis_test_components::{ADVERSARIAL, GUARDED_BOOST};

use crate::harness::example_body;
use crate::harness::server::{Harness, TestServer, attack_body, digest, install};

/// The socket path end to end: `Server::run` binds, loads the directory,
/// turns ready and scores over HTTP. (What the answers hold is covered in
/// process by `server_api`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scores_over_a_real_socket() {
    let s = TestServer::start_with(
        |d| install(d, "guarded", GUARDED_BOOST, ""),
        |c| c.default_route = Some("guarded".into()),
    )
    .await;
    let (status, v) = s.score(example_body()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["route"], "guarded");
    assert_eq!(v["policy"]["digest"], digest(GUARDED_BOOST));
    assert_eq!(v["scores"].as_array().unwrap().len(), 300);
    assert_eq!(s.get("/healthz").await.status, 200);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_finishes_in_flight_requests() {
    let s = TestServer::start(|d| {
        install(
            d,
            "slow",
            ADVERSARIAL,
            "[limits]\ndeadline_ms = 800\n[settings]\nattack = \"loop\"\n",
        );
    })
    .await;
    let inflight: Vec<_> = (0..3).map(|_| s.spawn_score(attack_body("slow"))).collect();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let url = s.url.clone();
    let started = Instant::now();
    s.shutdown().await;
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "shutdown waited for in-flight requests"
    );
    for t in inflight {
        assert_eq!(t.await.unwrap().0, 200);
    }
    assert!(
        reqwest::get(format!("{url}/healthz")).await.is_err(),
        "no longer accepting"
    );
}
