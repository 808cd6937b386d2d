//! Open-loop load (`--rate R`): requests are scheduled at a fixed arrival
//! rate, `R` per second, whatever the server does, and each one's latency
//! is measured from its **scheduled** send time, not from when it actually
//! left. A closed loop (the default: `--concurrency` tasks sending back to
//! back) sends less when the server slows down, so the requests that would
//! have queued behind a stall are never sent and its percentiles understate
//! latency under load (coordinated omission). Here a stall shows up as the
//! latency of every request scheduled during it.
//!
//! The dispatcher sleeps until each scheduled time and spawns the request;
//! at most [`MAX_OUTSTANDING`] are in flight (the server's default
//! connection limit is 512); a request that waits for a slot still has its
//! latency counted from its scheduled time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};

use crate::load::{LoadConfig, Stats};
use crate::traffic::PoolEntry;

/// Requests in flight at most.
pub const MAX_OUTSTANDING: usize = 512;

/// When request `i` is due, after the start, at `rate` requests per second.
pub fn scheduled(i: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(i as f64 / rate)
}

/// How many requests a run of `duration` at `rate` schedules.
pub fn count(rate: f64, duration: Duration) -> u64 {
    (rate * duration.as_secs_f64()).floor() as u64
}

/// Latency of a request due at `due` whose response arrived at `done`: the
/// time since it was due (never negative).
pub fn latency(due: Instant, done: Instant) -> Duration {
    done.saturating_duration_since(due)
}

/// One finished request, sent from a request task to the collector.
enum Done {
    Http(Duration, Result<(u16, bytes::Bytes), reqwest::Error>),
    Grpc(
        Duration,
        Box<Result<oasis_proto::v1::ScoreResponse, tonic::Status>>,
    ),
}

/// Runs `config.duration` (or `config.requests` requests) at `rate`
/// requests per second and returns what it measured; `elapsed` runs from
/// the start to the last answer.
///
/// # Errors
/// If the HTTP client or the gRPC channel cannot be built, or the rate is
/// not positive.
pub async fn run(
    config: &LoadConfig,
    rate: f64,
    pool: Arc<Vec<PoolEntry>>,
) -> anyhow::Result<Stats> {
    anyhow::ensure!(rate.is_finite() && rate > 0.0, "--rate must be positive");
    anyhow::ensure!(!pool.is_empty(), "empty request pool");
    if !config.warmup.is_zero() {
        let warm = LoadConfig {
            duration: Some(config.warmup),
            requests: None,
            warmup: Duration::ZERO,
            ..config.clone()
        };
        Box::pin(run(&warm, rate, pool.clone())).await?;
    }
    let n = match (config.requests, config.duration) {
        (Some(n), _) => n,
        (None, Some(d)) => count(rate, d),
        (None, None) => anyhow::bail!("open loop needs --duration or --requests"),
    };
    let grpc = if config.grpc {
        let channel = tonic::transport::Endpoint::from_shared(config.url.clone())?
            .tcp_nodelay(true)
            .timeout(config.timeout)
            .connect()
            .await?;
        Some(
            oasis_proto::v1::scoring_client::ScoringClient::new(channel)
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX),
        )
    } else {
        None
    };
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(MAX_OUTSTANDING)
        .tcp_nodelay(true)
        .timeout(config.timeout)
        .build()?;
    let url = format!("{}/v1/score", config.url.trim_end_matches('/'));
    let slots = Arc::new(Semaphore::new(MAX_OUTSTANDING));
    let (tx, mut rx) = mpsc::unbounded_channel::<Done>();
    let collector = tokio::spawn(async move {
        let mut stats = Stats::new();
        while let Some(done) = rx.recv().await {
            match done {
                Done::Http(l, Ok((status, body))) => {
                    stats.record(status, l, &body);
                }
                Done::Http(_, Err(e)) => stats.record_transport_error(&e),
                Done::Grpc(l, r) => stats.record_grpc(l, *r),
            }
        }
        stats
    });
    let start = Instant::now();
    for i in 0..n {
        let due = start + scheduled(i, rate);
        tokio::time::sleep_until(due.into()).await;
        let (pool, k) = (pool.clone(), (i % pool.len() as u64) as usize);
        let (tx, slots) = (tx.clone(), slots.clone());
        let (http, url, grpc) = (http.clone(), url.clone(), grpc.clone());
        tokio::spawn(async move {
            let _slot = slots.acquire_owned().await;
            let entry = &pool[k];
            let done = match grpc {
                Some(mut client) => {
                    let msg = entry.grpc.clone().expect("pool built for gRPC");
                    let r = client.score(msg).await.map(|r| r.into_inner());
                    Done::Grpc(latency(due, Instant::now()), Box::new(r))
                }
                None => {
                    let r = async {
                        let resp = http
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(entry.body.clone())
                            .send()
                            .await?;
                        let status = resp.status().as_u16();
                        Ok((status, resp.bytes().await?))
                    }
                    .await;
                    Done::Http(latency(due, Instant::now()), r)
                }
            };
            let _ = tx.send(done);
        });
    }
    drop(tx);
    let mut stats = collector.await?;
    stats.elapsed = start.elapsed();
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_evenly_spaced_at_the_rate() {
        assert_eq!(scheduled(0, 100.0), Duration::ZERO);
        assert_eq!(scheduled(1, 100.0), Duration::from_millis(10));
        assert_eq!(scheduled(250, 100.0), Duration::from_millis(2500));
        // Spacing does not drift with i.
        let gap = scheduled(10_001, 1000.0) - scheduled(10_000, 1000.0);
        assert!((gap.as_secs_f64() - 0.001).abs() < 1e-9);
    }

    #[test]
    fn count_covers_the_duration() {
        assert_eq!(count(100.0, Duration::from_secs(5)), 500);
        assert_eq!(count(2.5, Duration::from_secs(1)), 2);
        assert_eq!(count(1000.0, Duration::from_millis(1500)), 1500);
    }

    #[test]
    fn latency_counts_from_the_scheduled_time() {
        let due = Instant::now();
        // Sent 30 ms late (queued behind a stall), answered 2 ms later:
        // 32 ms, not 2.
        let done = due + Duration::from_millis(32);
        assert_eq!(latency(due, done), Duration::from_millis(32));
        // A clock read before the due time is not a negative latency.
        assert_eq!(latency(done, due), Duration::ZERO);
    }
}
