//! Slow and idle clients against the real `oasis serve` binary (issue 13):
//! clients that trickle a body at 1 byte/s or send half a request head and
//! stop, more of them than `--max-inflight`, hold connection slots for a
//! bounded time and no scoring permit: legitimate traffic meanwhile gets
//! 200, never 503, and each slow client is cut off after its timeout.

use std::time::{Duration, Instant};

use oasis_test_components::BASELINE;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::process::ServeProcess;
use crate::harness::server::{install, routed};
use crate::harness::small_body;

/// How a slow client misbehaves.
#[derive(Clone, Copy, Debug)]
enum Slow {
    /// Full head with `Content-Length: 1000`, then 1 byte per second.
    Body,
    /// Half a request head, then nothing.
    HalfHead,
    /// Connects and sends nothing.
    Idle,
}

/// What a slow client saw: how long until the server closed, and what it
/// answered before closing.
struct CutOff {
    after: Duration,
    answer: String,
}

/// Runs one slow client against `addr` until the server closes on it (30 s
/// at most).
async fn slow_client(addr: String, how: Slow) -> CutOff {
    let stream = TcpStream::connect(&addr).await.unwrap();
    let started = Instant::now();
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        match how {
            Slow::Body => {
                let head = format!(
                    "POST /v1/score HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n"
                );
                wr.write_all(head.as_bytes()).await?;
                loop {
                    wr.write_all(b" ").await?;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            Slow::HalfHead => {
                wr.write_all(b"POST /v1/score HTTP/1.1\r\nhost: x\r\ncontent-ty")
                    .await?;
                std::future::pending::<()>().await;
            }
            Slow::Idle => std::future::pending::<()>().await,
        }
        Ok::<_, std::io::Error>(wr)
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), rd.read_to_end(&mut answer)).await;
    writer.abort();
    assert!(read.is_ok(), "{how:?}: still connected after 30 s");
    CutOff {
        after: started.elapsed(),
        answer: String::from_utf8_lossy(&answer).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trickling_clients_hold_no_permit_and_are_cut_off_after_their_timeout() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "p", BASELINE, "");
    let token = "slow-clients-test-token-0123456789abcdef";
    let server = ServeProcess::start(
        dir.path(),
        &[
            "--max-inflight",
            "16",
            "--max-connections",
            "64",
            "--header-read-timeout-ms",
            "1500",
            "--body-read-timeout-ms",
            "2000",
            "--idle-timeout-ms",
            "2500",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        &[("OASIS_ADMIN_TOKEN", token)],
    );
    let addr = server.url.trim_start_matches("http://").to_string();
    let admin_addr = server
        .startup
        .iter()
        .find_map(|l| l["admin_addr"].as_str())
        .expect("admin listener logged")
        .to_string();

    // 40 slow clients, more body tricklers than --max-inflight; one idle
    // connection; half a head on the admin listener.
    let mut slow = Vec::new();
    for i in 0..40 {
        let how = if i < 24 { Slow::Body } else { Slow::HalfHead };
        slow.push((how, tokio::spawn(slow_client(addr.clone(), how))));
    }
    slow.push((
        Slow::Idle,
        tokio::spawn(slow_client(addr.clone(), Slow::Idle)),
    ));
    let admin = tokio::spawn(slow_client(admin_addr, Slow::HalfHead));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Legitimate traffic while they trickle: 4 clients for 3 s.
    let client = reqwest::Client::new();
    let url = format!("{}/v1/score", server.url);
    let until = Instant::now() + Duration::from_secs(3);
    let legit = (0..4).map(|_| {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            while Instant::now() < until {
                let r = client
                    .post(&url)
                    .body(routed("p", &small_body(false)))
                    .send()
                    .await;
                statuses.push(r.map(|r| r.status().as_u16()).unwrap_or(0));
            }
            statuses
        })
    });
    let statuses: Vec<u16> = futures::future::join_all(legit)
        .await
        .into_iter()
        .flat_map(Result::unwrap)
        .collect();
    assert!(statuses.len() >= 20, "only {} requests", statuses.len());
    assert!(
        statuses.iter().all(|s| *s == 200),
        "legitimate requests refused while slow clients trickled: {:?}",
        statuses
            .iter()
            .filter(|s| **s != 200)
            .take(10)
            .collect::<Vec<_>>()
    );

    // Each slow client was cut off after its timeout, not before, not much later.
    let margin = Duration::from_millis(1500);
    for (how, task) in slow {
        let cut = task.await.unwrap();
        let limit = match how {
            Slow::Body => Duration::from_millis(2000),
            Slow::HalfHead => Duration::from_millis(1500),
            Slow::Idle => Duration::from_millis(2500),
        };
        assert!(
            cut.after >= limit - Duration::from_millis(100) && cut.after <= limit + margin,
            "{how:?} cut off after {:?}, limit {limit:?}",
            cut.after
        );
        match how {
            Slow::Body => assert!(
                cut.answer.starts_with("HTTP/1.1 408") && cut.answer.contains("body_timeout"),
                "{}",
                cut.answer
            ),
            Slow::HalfHead | Slow::Idle => {
                assert!(!cut.answer.contains("200 OK"), "{}", cut.answer)
            }
        }
    }
    let cut = admin.await.unwrap();
    assert!(
        cut.after <= Duration::from_millis(1500) + margin,
        "admin listener kept half a head for {:?}",
        cut.after
    );
    let metrics = reqwest::get(format!("{}/metrics", server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !metrics.contains(r#"reason="overloaded""#),
        "no request was refused as overloaded"
    );
}
