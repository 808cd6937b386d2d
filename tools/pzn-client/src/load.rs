//! The load: `concurrency` tasks, each POSTing pre-generated bodies to
//! `/v1/score` back to back until the time or request budget is spent, and
//! the statistics of what came back.
//!
//! Latency is measured from just before the request is sent until the whole
//! response body has arrived; parsing the response comes after the clock
//! stops. Every HTTP response counts in the latency histogram, whatever its
//! status; connection failures and timeouts are counted apart.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::json;

use crate::traffic::PoolEntry;

/// How many error bodies (and transport errors) to keep for the report.
const KEEP_ERRORS: usize = 5;

/// How to run the load.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Base URL of the server, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// Concurrent in-flight requests (one task each).
    pub concurrency: usize,
    /// Stop sending after this long.
    pub duration: Option<Duration>,
    /// Stop after this many requests in total.
    pub requests: Option<u64>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Load to send, unmeasured, before the measured run.
    pub warmup: Duration,
    /// Post simulated listener outcomes of every scored request to
    /// `/v1/outcomes`, drawn with this seed ([`crate::outcomes`]).
    pub outcomes_seed: Option<u64>,
    /// Send over gRPC (`oasis.v1.Scoring/Score` at `url`) instead of JSON
    /// over HTTP.
    pub grpc: bool,
}

/// What the run measured.
#[derive(Debug)]
pub struct Stats {
    /// Wall time of the measured run.
    pub elapsed: Duration,
    /// Latency of every HTTP response, microseconds.
    pub latency_us: Histogram<u64>,
    /// Responses by HTTP status.
    pub by_status: BTreeMap<u16, u64>,
    /// Requests that got no HTTP response (connect error, timeout...).
    pub transport_errors: u64,
    /// Responses served by the route's stable policy.
    pub stable: u64,
    /// Responses served by a fallback.
    pub fallback: u64,
    /// Fallbacks by the failed policy's error kind.
    pub fallback_kinds: BTreeMap<String, u64>,
    /// Responses by `policy.name@policy.version`.
    pub policies: BTreeMap<String, u64>,
    /// Successful responses that were parsed.
    pub scored: u64,
    /// 200 responses that were not a score response.
    pub unparsable: u64,
    /// Sum over scored responses of candidates with the `promoted` reason.
    pub promoted: u64,
    /// Sum over scored responses of eligible candidates.
    pub eligible: u64,
    /// Sum over scored responses of candidates scored.
    pub candidates: u64,
    /// Sum of the server's own `timing.server_us`.
    pub server_us: u64,
    /// Sum of the server's `timing.policy_us`.
    pub policy_us: u64,
    /// The server's `timing.policy_us` of every scored response (the policy
    /// call as the server timed it: instance, call and checks).
    pub policy_latency_us: Histogram<u64>,
    /// The first few distinct error bodies and transport errors.
    pub errors: Vec<String>,
    /// Outcome events posted and accepted (`--outcomes`).
    pub outcome_events: u64,
    /// Outcome posts that failed (not 202, or no answer).
    pub outcome_posts_failed: u64,
}

impl Stats {
    pub(crate) fn new() -> Self {
        Stats {
            elapsed: Duration::ZERO,
            latency_us: Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds"),
            by_status: BTreeMap::new(),
            transport_errors: 0,
            stable: 0,
            fallback: 0,
            fallback_kinds: BTreeMap::new(),
            policies: BTreeMap::new(),
            scored: 0,
            unparsable: 0,
            promoted: 0,
            eligible: 0,
            candidates: 0,
            server_us: 0,
            policy_us: 0,
            policy_latency_us: Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds"),
            errors: Vec::new(),
            outcome_events: 0,
            outcome_posts_failed: 0,
        }
    }

    fn merge(&mut self, o: Stats) {
        self.latency_us.add(&o.latency_us).expect("same bounds");
        for (k, v) in o.by_status {
            *self.by_status.entry(k).or_default() += v;
        }
        for (k, v) in o.fallback_kinds {
            *self.fallback_kinds.entry(k).or_default() += v;
        }
        for (k, v) in o.policies {
            *self.policies.entry(k).or_default() += v;
        }
        self.transport_errors += o.transport_errors;
        self.stable += o.stable;
        self.fallback += o.fallback;
        self.scored += o.scored;
        self.unparsable += o.unparsable;
        self.promoted += o.promoted;
        self.eligible += o.eligible;
        self.candidates += o.candidates;
        self.server_us += o.server_us;
        self.policy_us += o.policy_us;
        let _ = self.policy_latency_us.add(&o.policy_latency_us);
        self.outcome_events += o.outcome_events;
        self.outcome_posts_failed += o.outcome_posts_failed;
        for e in o.errors {
            self.keep_error(e);
        }
    }

    /// Requests sent (HTTP responses plus transport errors).
    pub fn requests(&self) -> u64 {
        self.by_status.values().sum::<u64>() + self.transport_errors
    }

    /// Requests per second over the measured run.
    pub fn rps(&self) -> f64 {
        self.requests() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Responses with status 200.
    pub fn ok(&self) -> u64 {
        self.by_status.get(&200).copied().unwrap_or(0)
    }

    fn per_scored(&self, sum: u64) -> f64 {
        if self.scored == 0 {
            0.0
        } else {
            sum as f64 / self.scored as f64
        }
    }

    /// Latency quantile `q` (0-1) in milliseconds.
    pub fn latency_ms(&self, q: f64) -> f64 {
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }

    /// The figures as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "elapsed_s": self.elapsed.as_secs_f64(),
            "requests": self.requests(),
            "rps": self.rps(),
            "status": self.by_status.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
            "transport_errors": self.transport_errors,
            "variant": {"stable": self.stable, "fallback": self.fallback},
            "fallback_error_kinds": self.fallback_kinds,
            "unparsable_responses": self.unparsable,
            "candidates_per_response": self.per_scored(self.candidates),
            "promoted_per_response": self.per_scored(self.promoted),
            "eligible_per_response": self.per_scored(self.eligible),
            "server_us_mean": self.per_scored(self.server_us),
            "policy_us_mean": self.per_scored(self.policy_us),
            "policy_us": {
                "p50": self.policy_latency_us.value_at_quantile(0.5),
                "p99": self.policy_latency_us.value_at_quantile(0.99),
                "max": self.policy_latency_us.max(),
            },
            "latency_ms": {
                "p50": self.latency_ms(0.5),
                "p90": self.latency_ms(0.9),
                "p99": self.latency_ms(0.99),
                "p99_9": self.latency_ms(0.999),
                "max": self.latency_us.max() as f64 / 1000.0,
                "mean": self.latency_us.mean() / 1000.0,
            },
            "policies": self.policies,
            "outcomes": {"events": self.outcome_events, "failed_posts": self.outcome_posts_failed},
            "errors": self.errors,
        })
    }

    /// The figures for humans.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "requests     {} in {:.2} s: {:.1} req/s",
            self.requests(),
            self.elapsed.as_secs_f64(),
            self.rps()
        );
        let statuses: Vec<String> = self
            .by_status
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .chain(
                (self.transport_errors > 0)
                    .then(|| format!("transport: {}", self.transport_errors)),
            )
            .collect();
        let _ = writeln!(s, "status       {}", statuses.join(", "));
        let kinds: Vec<String> = self
            .fallback_kinds
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(
            s,
            "variant      stable {}, fallback {}{}",
            self.stable,
            self.fallback,
            if kinds.is_empty() {
                String::new()
            } else {
                format!(" ({})", kinds.join(", "))
            }
        );
        let _ = writeln!(
            s,
            "per response {:.1} candidates, {:.2} eligible, {:.2} promoted",
            self.per_scored(self.candidates),
            self.per_scored(self.eligible),
            self.per_scored(self.promoted)
        );
        let _ = writeln!(
            s,
            "latency ms   p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            self.latency_ms(0.5),
            self.latency_ms(0.9),
            self.latency_ms(0.99),
            self.latency_ms(0.999),
            self.latency_us.max() as f64 / 1000.0
        );
        let _ = writeln!(
            s,
            "server says  {:.0} us in server, {:.0} us in policy (mean)",
            self.per_scored(self.server_us),
            self.per_scored(self.policy_us)
        );
        let _ = writeln!(
            s,
            "policy us    p50 {}  p99 {}  max {}",
            self.policy_latency_us.value_at_quantile(0.5),
            self.policy_latency_us.value_at_quantile(0.99),
            self.policy_latency_us.max()
        );
        for (p, n) in &self.policies {
            let _ = writeln!(s, "policy       {p}: {n}");
        }
        if self.outcome_events > 0 || self.outcome_posts_failed > 0 {
            let _ = writeln!(
                s,
                "outcomes     {} events posted, {} posts failed",
                self.outcome_events, self.outcome_posts_failed
            );
        }
        if self.unparsable > 0 {
            let _ = writeln!(s, "unparsable   {} 200 responses", self.unparsable);
        }
        for e in &self.errors {
            let _ = writeln!(s, "error        {e}");
        }
        s
    }
}

/// The parts of a score response the statistics need.
#[derive(Deserialize)]
struct Response {
    policy: PolicyRef,
    variant: String,
    #[serde(default)]
    fallback: Option<Fallback>,
    scores: Vec<Scored>,
    #[serde(default)]
    timing: Timing,
}

#[derive(Deserialize)]
struct PolicyRef {
    name: String,
    version: String,
}

#[derive(Deserialize)]
struct Fallback {
    error_kind: String,
}

#[derive(Deserialize)]
struct Scored {
    #[serde(default)]
    id: String,
    eligible: bool,
    reasons: Vec<String>,
}

#[derive(Deserialize, Default)]
struct Timing {
    server_us: u64,
    policy_us: u64,
}

impl Stats {
    /// Records one HTTP response; returns the ids of the promoted
    /// candidates of a score response.
    pub(crate) fn record(
        &mut self,
        status: u16,
        latency: Duration,
        body: &[u8],
    ) -> Option<Vec<String>> {
        let us = (latency.as_micros() as u64).clamp(1, 120_000_000);
        self.latency_us.saturating_record(us);
        *self.by_status.entry(status).or_default() += 1;
        if status != 200 {
            if self.errors.len() < KEEP_ERRORS {
                let text = String::from_utf8_lossy(&body[..body.len().min(500)]);
                self.keep_error(format!("HTTP {status}: {text}"));
            }
            return None;
        }
        let Ok(r) = serde_json::from_slice::<Response>(body) else {
            self.unparsable += 1;
            return None;
        };
        self.scored += 1;
        match r.variant.as_str() {
            "stable" => self.stable += 1,
            _ => self.fallback += 1,
        }
        if let Some(f) = r.fallback {
            *self.fallback_kinds.entry(f.error_kind).or_default() += 1;
        }
        *self
            .policies
            .entry(format!("{}@{}", r.policy.name, r.policy.version))
            .or_default() += 1;
        self.candidates += r.scores.len() as u64;
        self.eligible += r.scores.iter().filter(|s| s.eligible).count() as u64;
        self.promoted += r
            .scores
            .iter()
            .filter(|s| s.reasons.iter().any(|x| x == "promoted"))
            .count() as u64;
        self.server_us += r.timing.server_us;
        self.policy_us += r.timing.policy_us;
        self.policy_latency_us
            .saturating_record(r.timing.policy_us.clamp(1, 120_000_000));
        Some(
            r.scores
                .into_iter()
                .filter(|s| s.reasons.iter().any(|x| x == "promoted"))
                .map(|s| s.id)
                .collect(),
        )
    }

    /// Records one gRPC answer: an OK counts as a 200, an error status by
    /// the HTTP status of the same error.
    pub(crate) fn record_grpc(
        &mut self,
        latency: Duration,
        result: Result<oasis_proto::v1::ScoreResponse, tonic::Status>,
    ) {
        use tonic::Code;
        let us = (latency.as_micros() as u64).clamp(1, 120_000_000);
        let r = match result {
            Ok(r) => r,
            Err(e) if e.code() == Code::Unknown || e.code() == Code::Cancelled => {
                self.transport_errors += 1;
                self.keep_error(format!("transport: {e}"));
                return;
            }
            Err(e) => {
                self.latency_us.saturating_record(us);
                let status = match e.code() {
                    Code::InvalidArgument => 400,
                    Code::NotFound => 404,
                    Code::ResourceExhausted | Code::Unavailable => 503,
                    Code::DeadlineExceeded => 504,
                    _ => 500,
                };
                *self.by_status.entry(status).or_default() += 1;
                self.keep_error(format!("gRPC {:?}: {}", e.code(), e.message()));
                return;
            }
        };
        self.latency_us.saturating_record(us);
        *self.by_status.entry(200).or_default() += 1;
        self.scored += 1;
        match r.variant.as_str() {
            "stable" => self.stable += 1,
            _ => self.fallback += 1,
        }
        if let Some(f) = r.fallback {
            *self.fallback_kinds.entry(f.error_kind).or_default() += 1;
        }
        if let Some(p) = &r.policy {
            *self
                .policies
                .entry(format!("{}@{}", p.name, p.version))
                .or_default() += 1;
        }
        if let Some(s) = &r.scores {
            let promoted = s.reason_names.iter().position(|n| n == "promoted");
            self.candidates += s.ids.len() as u64;
            self.eligible += s.eligible.iter().filter(|e| **e).count() as u64;
            self.promoted += promoted.map_or(0, |b| {
                s.reasons.iter().filter(|r| **r & (1 << b) != 0).count() as u64
            });
        }
        if let Some(t) = r.timing {
            self.server_us += t.server_us;
            self.policy_us += t.policy_us;
            self.policy_latency_us
                .saturating_record(t.policy_us.clamp(1, 120_000_000));
        }
    }

    pub(crate) fn record_transport_error(&mut self, e: &reqwest::Error) {
        self.transport_errors += 1;
        if self.errors.len() < KEEP_ERRORS {
            // reqwest's message omits the cause (connection refused...).
            let mut text = format!("transport: {e}");
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                text += &format!(": {cause}");
                source = cause.source();
            }
            self.keep_error(text);
        }
    }

    /// Keeps the first few distinct errors.
    fn keep_error(&mut self, text: String) {
        if self.errors.len() < KEEP_ERRORS && !self.errors.contains(&text) {
            self.errors.push(text);
        }
    }
}

/// Runs the load and returns what it measured.
///
/// # Errors
/// If the HTTP client or the gRPC channel cannot be built.
pub async fn run(config: &LoadConfig, pool: Arc<Vec<PoolEntry>>) -> anyhow::Result<Stats> {
    anyhow::ensure!(!pool.is_empty(), "empty request pool");
    let concurrency = config.concurrency.max(1);
    let warmup = (!config.warmup.is_zero()).then(|| LoadConfig {
        duration: Some(config.warmup),
        requests: None,
        ..config.clone()
    });
    if config.grpc {
        let channel = tonic::transport::Endpoint::from_shared(config.url.clone())?
            .tcp_nodelay(true)
            .timeout(config.timeout)
            .connect()
            .await?;
        let sender = || GrpcSender::new(&channel);
        if let Some(w) = &warmup {
            drive(w, concurrency, pool.clone(), sender).await;
        }
        return Ok(drive(config, concurrency, pool, sender).await);
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .timeout(config.timeout)
        .build()?;
    let base = config.url.trim_end_matches('/');
    let sender = || HttpSender {
        client: client.clone(),
        url: format!("{base}/v1/score"),
        outcomes_url: format!("{base}/v1/outcomes"),
        outcomes_seed: config.outcomes_seed,
    };
    if let Some(w) = &warmup {
        drive(w, concurrency, pool.clone(), sender).await;
    }
    Ok(drive(config, concurrency, pool, sender).await)
}

/// One task's way of sending a pool entry and recording what came back.
trait Sender: Send + 'static {
    fn send(
        &mut self,
        entry: &PoolEntry,
        stats: &mut Stats,
    ) -> impl std::future::Future<Output = ()> + Send;
}

/// `concurrency` tasks, each with its own sender from `make`, take the next
/// pool entry until the request or time budget is spent; their statistics
/// are merged.
async fn drive<S: Sender>(
    config: &LoadConfig,
    concurrency: usize,
    pool: Arc<Vec<PoolEntry>>,
    make: impl Fn() -> S,
) -> Stats {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = config.duration.map(|d| start + d);
    let limit = config.requests;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (mut sender, pool, next) = (make(), pool.clone(), next.clone());
            tokio::spawn(async move {
                let mut stats = Stats::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if limit.is_some_and(|n| i >= n)
                        || deadline.is_some_and(|d| Instant::now() >= d)
                    {
                        break;
                    }
                    let entry = &pool[(i % pool.len() as u64) as usize];
                    sender.send(entry, &mut stats).await;
                }
                stats
            })
        })
        .collect();
    let mut total = Stats::new();
    for t in tasks {
        total.merge(t.await.expect("load task panicked"));
    }
    total.elapsed = start.elapsed();
    total
}

/// JSON over HTTP, and the simulated outcomes of each answer with
/// `--outcomes`.
struct HttpSender {
    client: reqwest::Client,
    url: String,
    outcomes_url: String,
    outcomes_seed: Option<u64>,
}

impl Sender for HttpSender {
    async fn send(&mut self, entry: &PoolEntry, stats: &mut Stats) {
        let sent = Instant::now();
        let result = async {
            let resp = self
                .client
                .post(&self.url)
                .header("content-type", "application/json")
                .body(entry.body.clone())
                .send()
                .await?;
            let status = resp.status().as_u16();
            Ok::<_, reqwest::Error>((status, resp.bytes().await?))
        }
        .await;
        let latency = sent.elapsed();
        let promoted = match result {
            Ok((status, bytes)) => stats.record(status, latency, &bytes),
            Err(e) => {
                stats.record_transport_error(&e);
                None
            }
        };
        if let (Some(seed), Some(promoted)) = (self.outcomes_seed, promoted) {
            let (events, n) =
                crate::outcomes::events(seed, &entry.request_id, &entry.campaign_tracks, |id| {
                    promoted.iter().any(|p| p == id)
                });
            if n > 0 {
                post_outcomes(&self.client, &self.outcomes_url, events, n, stats).await;
            }
        }
    }
}

/// The pool's protobuf requests over one HTTP/2 connection (the way a
/// gRPC client multiplexes calls).
struct GrpcSender {
    client: oasis_proto::v1::scoring_client::ScoringClient<tonic::transport::Channel>,
}

impl GrpcSender {
    fn new(channel: &tonic::transport::Channel) -> Self {
        GrpcSender {
            client: oasis_proto::v1::scoring_client::ScoringClient::new(channel.clone())
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX),
        }
    }
}

impl Sender for GrpcSender {
    async fn send(&mut self, entry: &PoolEntry, stats: &mut Stats) {
        let msg = entry.grpc.clone().expect("pool built for gRPC");
        let sent = Instant::now();
        let result = self.client.score(msg).await.map(|r| r.into_inner());
        stats.record_grpc(sent.elapsed(), result);
    }
}

/// Posts one request's outcome events; a refusal is counted (and its body
/// kept among the errors), not retried.
async fn post_outcomes(
    client: &reqwest::Client,
    url: &str,
    events: Vec<u8>,
    n: usize,
    stats: &mut Stats,
) {
    let sent = client
        .post(url)
        .header("content-type", "application/x-ndjson")
        .body(events)
        .send()
        .await;
    match sent {
        Ok(resp) if resp.status() == reqwest::StatusCode::ACCEPTED => {
            stats.outcome_events += n as u64;
        }
        Ok(resp) => {
            stats.outcome_posts_failed += 1;
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            stats.keep_error(format!(
                "outcomes: HTTP {status}: {}",
                &text[..text.len().min(300)]
            ));
        }
        Err(e) => {
            stats.outcome_posts_failed += 1;
            stats.keep_error(format!("outcomes: {e}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_responses() {
        let mut s = Stats::new();
        let ok = br#"{"request_id":"r","policy":{"name":"p","version":"1.0.0","digest":"sha256:x"},
            "variant":"fallback","fallback":{"failed":{"name":"q","version":"1","digest":"d"},
            "error_kind":"timeout","error":"slow"},
            "scores":[{"id":"a","score":1,"eligible":true,"reasons":["promoted"],"propensity":1},
                      {"id":"b","score":0.5,"eligible":false,"reasons":["organic"],"propensity":0}],
            "timing":{"server_us":100,"policy_us":80}}"#;
        s.record(200, Duration::from_millis(2), ok);
        s.record(
            422,
            Duration::from_millis(1),
            br#"{"error":{"status":422}}"#,
        );
        assert_eq!((s.requests(), s.ok(), s.scored), (2, 1, 1));
        assert_eq!(
            (s.fallback, s.promoted, s.eligible, s.candidates),
            (1, 1, 1, 2)
        );
        assert_eq!(s.fallback_kinds["timeout"], 1);
        assert_eq!(s.policies["p@1.0.0"], 1);
        assert!(s.errors[0].starts_with("HTTP 422"));
        let j = s.to_json();
        assert_eq!(j["status"]["422"], 1);
        assert!(s.render().contains("fallback 1 (timeout 1)"));
    }
}
