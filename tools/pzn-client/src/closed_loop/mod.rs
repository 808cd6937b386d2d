//! `--closed-loop`: a simulated day of listening in compressed time, with
//! the server keeping the delivery state.
//!
//! A listener population ([`plan`]) comes back in sessions across a
//! simulated window (24 h by default). Each slate is a scoring request on a
//! pacing route whose campaigns carry only their window and target: the
//! server fills delivered counts, pacing state and frequency counts from its
//! own store. For each answer the client shows the `slate_size` best-scored
//! candidates, and posts to `/v1/events` an `impression` per shown track
//! (with its campaign, rights holder, `promoted` from the response's reasons
//! and its 1-based position) and a `stream` or `skip` from the listener
//! model ([`book::stream_chance`]). The simulated clock is the requests'
//! `timestamp_ms` and the events' `at_ms`, which is all the server's windows
//! and pacing ticks look at, so a day runs in about a minute.
//!
//! Before the loop, a **calibration** pass scores a sample of the same
//! requests on an unpaced route (guarded-boost: pid-pacing's boost with a
//! multiplier of 1) without posting events, which measures what each
//! campaign would get without pacing. Each campaign's target is that supply
//! times a factor (`--supply-factors`, default 0.5, 2, 0.7, 1.5 in turn):
//! below 1 the campaign is over-supplied and the pacer must hold it back,
//! above 1 it is under-supplied and the pacer must push.
//!
//! The client keeps its own account ([`book`]): promoted impressions per
//! campaign over time against the linear schedule, and promoted impressions
//! per listener × track in sliding 24-hour windows. The report is a table
//! (or `--json`); `--delivery-band` and `--max-daily` make it a check that
//! fails the exit status.
//!
//! Several `--url`s are replicas sharing a store: request `k` goes to
//! replica `k mod n`, and its events (batched by `--event-batch`) to the
//! next one, so state written through one replica must be read through the
//! other.

pub mod book;
pub mod plan;

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use book::{DeliveryBook, Event, FrequencyBook, Point, Scored, ShownTrack, Viewer};
use plan::{Plan, mix};

/// How to run the loop (the plan aside).
#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// The pacing route the loop scores on.
    pub route: String,
    /// The unpaced route that measures each campaign's supply.
    pub calibration_route: String,
    /// Score every n-th request in the calibration pass.
    pub calibration_sample: usize,
    /// Target over unpaced supply, per campaign in turn.
    pub supply_factors: Vec<f64>,
    /// Post events after this many requests (earlier when a listener with
    /// unposted events asks again).
    pub event_batch: usize,
    /// Simulated seconds per wall second, if the loop should not run flat
    /// out.
    pub sim_speed: Option<f64>,
    /// Length of a delivery-series bucket, ms.
    pub bucket_ms: i64,
    /// Check: at most this many promoted impressions per listener × track
    /// in any 24 hours.
    pub max_daily: Option<u32>,
    /// Check: delivered / target within this band for every checked
    /// campaign.
    pub delivery_band: Option<(f64, f64)>,
    /// Campaigns with a smaller target are reported but not checked (too
    /// few impressions to judge pacing).
    pub min_check_volume: f64,
}

/// What a server answered to a score request.
#[derive(Debug, Clone)]
pub struct Answer {
    /// `(id, score, promoted)` per candidate, in the server's order.
    pub scores: Vec<(String, f64, bool)>,
    /// `name@version` of the policy that decided.
    pub policy: String,
    /// `stable`, `canary`, `fallback` or `killed`.
    pub variant: String,
}

/// What a server answered to a batch of events.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct EventsAnswer {
    /// Events in the batch.
    pub accepted: u64,
    /// Events that changed state.
    pub applied: u64,
    /// Events whose id was seen before.
    pub duplicates: u64,
    /// Events buffered while the store is down.
    pub buffered: u64,
}

/// The scoring and events API of a set of replicas.
pub trait Server {
    /// Scores `body` on replica `replica`.
    fn score(
        &mut self,
        replica: usize,
        body: Vec<u8>,
    ) -> impl std::future::Future<Output = anyhow::Result<Answer>>;
    /// Posts a batch of events (JSON lines) to replica `replica`.
    fn events(
        &mut self,
        replica: usize,
        body: Vec<u8>,
    ) -> impl std::future::Future<Output = anyhow::Result<EventsAnswer>>;
    /// Number of replicas.
    fn replicas(&self) -> usize;
}

/// One campaign's line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct CampaignReport {
    /// Campaign id.
    pub id: String,
    /// Popularity rank of its first track (0 = most streamed).
    pub popularity_rank: usize,
    /// Promoted impressions the unpaced route delivered (calibration
    /// sample, scaled up).
    pub unpaced_supply: f64,
    /// Target over unpaced supply.
    pub supply_factor: f64,
    /// `over-supplied` (factor < 1) or `under-supplied`.
    pub kind: &'static str,
    /// Target over the window.
    pub target: f64,
    /// Promoted impressions shown (client's count).
    pub delivered: u64,
    /// The linear schedule at the end of the run (the target when the run
    /// covers the window).
    pub expected: f64,
    /// delivered / target.
    pub ratio: f64,
    /// unpaced supply / target: the ratio without pacing.
    pub unpaced_ratio: f64,
    /// Whether the delivery check applies (target >= min volume).
    pub checked: bool,
    /// Cumulative delivered vs expected per bucket.
    pub series: Vec<Point>,
}

/// What the run did and saw.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Run tag (prefix of every id).
    pub run_tag: String,
    /// Route scored.
    pub route: String,
    /// Calibration route.
    pub calibration_route: String,
    /// Simulated hours.
    pub sim_hours: f64,
    /// Listeners.
    pub listeners: u32,
    /// Score requests of the loop.
    pub requests: u64,
    /// Score requests of the calibration pass.
    pub calibration_requests: u64,
    /// Wall seconds of the whole run.
    pub wall_s: f64,
    /// Responses by `policy@version`.
    pub policies: BTreeMap<String, u64>,
    /// Responses by variant.
    pub variants: BTreeMap<String, u64>,
    /// Candidates promoted per response (shown or not).
    pub promoted_per_response: f64,
    /// Promoted impressions shown.
    pub promoted_impressions: u64,
    /// Events posted and their answers.
    pub events: EventsAnswer,
    /// Event posts (batches).
    pub event_posts: u64,
    /// Most promoted impressions of one track to one listener in 24 h.
    pub max_per_listener_track_24h: u32,
    /// Where that maximum was reached: listener id, track id, hour.
    pub max_at: Option<(String, String, f64)>,
    /// Mean |ratio - 1| over checked campaigns, paced.
    pub mean_abs_error: f64,
    /// The same without pacing (calibration).
    pub mean_abs_error_unpaced: f64,
    /// Per campaign.
    pub campaigns: Vec<CampaignReport>,
    /// Checks and whether they passed.
    pub checks: Vec<Check>,
}

/// One configured check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// What was seen.
    pub detail: String,
}

impl Report {
    /// Whether every configured check passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }
}

/// Candidates of the calibration or loop request `k`, aligned with the
/// server's answer by id.
fn align(candidates: &[plan::SimCandidate], answer: &Answer) -> anyhow::Result<Vec<Scored>> {
    anyhow::ensure!(
        answer.scores.len() == candidates.len(),
        "the server scored {} candidates of {}",
        answer.scores.len(),
        candidates.len()
    );
    let in_order = answer
        .scores
        .iter()
        .zip(candidates)
        .all(|(s, c)| s.0 == c.id);
    if in_order {
        return Ok(answer
            .scores
            .iter()
            .map(|s| Scored {
                score: s.1,
                promoted: s.2,
            })
            .collect());
    }
    let by_id: std::collections::HashMap<&str, (f64, bool)> = answer
        .scores
        .iter()
        .map(|s| (s.0.as_str(), (s.1, s.2)))
        .collect();
    candidates
        .iter()
        .map(|c| {
            let &(score, promoted) = by_id
                .get(c.id.as_str())
                .with_context(|| format!("the answer has no score for {}", c.id))?;
            Ok(Scored { score, promoted })
        })
        .collect()
}

/// Runs calibration, the loop and the checks.
///
/// # Errors
/// A request or event batch the server refuses (after retries), or an
/// answer that does not match the request.
pub async fn run<S: Server>(
    plan: &mut Plan,
    cfg: &LoopConfig,
    server: &mut S,
) -> anyhow::Result<Report> {
    anyhow::ensure!(!plan.slots.is_empty(), "the schedule has no requests");
    anyhow::ensure!(server.replicas() > 0, "no server");
    let started = Instant::now();
    let n_campaigns = plan.campaigns.len();
    let slate = plan.config.slate_size as usize;

    // Calibration: what each campaign gets without pacing.
    let sample = cfg.calibration_sample.max(1);
    let mut supply = vec![0u64; n_campaigns];
    let mut calibration_requests = 0u64;
    for k in (0..plan.slots.len()).step_by(sample) {
        let (mut req, tracks) = plan.request(k, &cfg.calibration_route);
        req.context.inner.request_id += "-cal";
        let body = serde_json::to_vec(&req)?;
        let answer = server
            .score(k % server.replicas(), body)
            .await
            .with_context(|| format!("calibration request {k} on {}", cfg.calibration_route))?;
        calibration_requests += 1;
        let scored = align(&req.candidates, &answer)?;
        for i in book::shown_slate(&scored, slate) {
            if scored[i].promoted
                && let Some(j) = plan.campaign_of(tracks[i])
            {
                supply[j] += 1;
            }
        }
    }
    let factors = if cfg.supply_factors.is_empty() {
        vec![1.0]
    } else {
        cfg.supply_factors.clone()
    };
    let unpaced: Vec<f64> = supply
        .iter()
        .map(|&n| (n as usize * sample) as f64)
        .collect();
    for (j, c) in plan.campaigns.iter_mut().enumerate() {
        c.supply_factor = factors[j % factors.len()];
        c.target = (unpaced[j] * c.supply_factor).round().max(1.0);
    }

    // The loop.
    let start_ms = plan.config.start_ms;
    let mut delivery = DeliveryBook::new(
        start_ms,
        plan.end_ms(),
        cfg.bucket_ms,
        plan.campaigns.iter().map(|c| c.target).collect(),
    );
    let mut frequency = FrequencyBook::default();
    let mut rng = StdRng::seed_from_u64(mix(plan.config.seed ^ 0xe7e7_e7e7));
    let mut pending: Vec<Event> = Vec::new();
    let mut pending_listeners: HashSet<u32> = HashSet::new();
    let mut pending_requests = 0usize;
    let mut policies = BTreeMap::new();
    let mut variants = BTreeMap::new();
    let mut promoted_total = 0u64;
    let mut events = EventsAnswer::default();
    let mut event_posts = 0u64;
    let replicas = server.replicas();
    let wall_start = Instant::now();
    let mut last_k = 0;
    for k in 0..plan.slots.len() {
        let slot = plan.slots[k].clone();
        if let Some(speed) = cfg.sim_speed {
            let due = Duration::from_secs_f64((slot.at_ms - start_ms) as f64 / 1000.0 / speed);
            if let Some(wait) = due.checked_sub(wall_start.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        // The listener's previous slate must be in the store before it asks
        // again: its frequency counts depend on it.
        if pending_listeners.contains(&slot.listener) {
            flush(server, (k + 1) % replicas, &mut pending, &mut events).await?;
            event_posts += 1;
            pending_listeners.clear();
            pending_requests = 0;
        }
        let (req, tracks) = plan.request(k, &cfg.route);
        let body = serde_json::to_vec(&req)?;
        let answer = server
            .score(k % replicas, body)
            .await
            .with_context(|| format!("request {k} on {}", cfg.route))?;
        *policies.entry(answer.policy.clone()).or_insert(0u64) += 1;
        *variants.entry(answer.variant.clone()).or_insert(0u64) += 1;
        let scored = align(&req.candidates, &answer)?;
        promoted_total += scored.iter().filter(|s| s.promoted).count() as u64;
        let shown = book::shown_slate(&scored, slate);
        for &i in &shown {
            if scored[i].promoted {
                if let Some(j) = plan.campaign_of(tracks[i]) {
                    delivery.record(j, slot.at_ms);
                }
                frequency.record(slot.listener, tracks[i] as u32, slot.at_ms);
            }
        }
        let shown_tracks: Vec<ShownTrack<'_>> = req
            .candidates
            .iter()
            .map(|c| ShownTrack {
                id: &c.id,
                campaign_id: c.campaign.as_ref().map(|k| k.id.as_str()),
                rights_holder: &c.rights_holder,
                relevance: c.relevance,
                p_skip: c.features.p_skip,
            })
            .collect();
        let viewer = Viewer {
            request_id: &req.context.inner.request_id,
            listener_id: &req.context.inner.listener_id,
            session_id: &req.context.inner.session_id,
            at_ms: slot.at_ms,
        };
        pending.extend(book::slate_events(
            viewer,
            &shown_tracks,
            &scored,
            &shown,
            &mut rng,
        ));
        pending_listeners.insert(slot.listener);
        pending_requests += 1;
        if pending_requests >= cfg.event_batch.max(1) {
            flush(server, (k + 1) % replicas, &mut pending, &mut events).await?;
            event_posts += 1;
            pending_listeners.clear();
            pending_requests = 0;
        }
        last_k = k;
    }
    if !pending.is_empty() {
        flush(server, (last_k + 1) % replicas, &mut pending, &mut events).await?;
        event_posts += 1;
    }

    // The report.
    let requests = plan.slots.len() as u64;
    let end_at = plan.end_ms();
    let campaigns: Vec<CampaignReport> = plan
        .campaigns
        .iter()
        .enumerate()
        .map(|(j, c)| {
            let delivered = delivery.delivered(j);
            CampaignReport {
                id: c.id.clone(),
                popularity_rank: c.popularity_rank,
                unpaced_supply: unpaced[j],
                supply_factor: c.supply_factor,
                kind: if c.supply_factor < 1.0 {
                    "over-supplied"
                } else if c.supply_factor > 1.0 {
                    "under-supplied"
                } else {
                    "matched"
                },
                target: c.target,
                delivered,
                expected: delivery.expected(j, end_at),
                ratio: delivered as f64 / c.target,
                unpaced_ratio: unpaced[j] / c.target,
                checked: c.target >= cfg.min_check_volume,
                series: delivery.series(j),
            }
        })
        .collect();
    let checked: Vec<&CampaignReport> = campaigns.iter().filter(|c| c.checked).collect();
    let mean_abs = |f: &dyn Fn(&CampaignReport) -> f64| {
        if checked.is_empty() {
            0.0
        } else {
            checked.iter().map(|c| (f(c) - 1.0).abs()).sum::<f64>() / checked.len() as f64
        }
    };
    let mut checks = Vec::new();
    if let Some((lo, hi)) = cfg.delivery_band {
        let out: Vec<String> = checked
            .iter()
            .filter(|c| !(lo..=hi).contains(&c.ratio))
            .map(|c| format!("{} {:.2}", c.id, c.ratio))
            .collect();
        checks.push(Check {
            name: format!(
                "delivered/target in [{lo}, {hi}] for campaigns with target >= {}",
                cfg.min_check_volume
            ),
            passed: out.is_empty() && !checked.is_empty(),
            detail: if checked.is_empty() {
                "no campaign reached the minimum volume".into()
            } else if out.is_empty() {
                format!("{} campaigns in band", checked.len())
            } else {
                format!("out of band: {}", out.join(", "))
            },
        });
    }
    if let Some(cap) = cfg.max_daily {
        checks.push(Check {
            name: format!("promoted impressions per listener x track in 24 h <= {cap}"),
            passed: !frequency.exceeds(cap),
            detail: format!("max {}", frequency.max_in_window),
        });
    }
    let max_at = frequency.worst.map(|(l, t, at)| {
        (
            plan.listener_id(l),
            plan.catalog.tracks[t as usize].id.clone(),
            (at - start_ms) as f64 / 3_600_000.0,
        )
    });
    Ok(Report {
        run_tag: plan.config.run_tag.clone(),
        route: cfg.route.clone(),
        calibration_route: cfg.calibration_route.clone(),
        sim_hours: plan.config.window_ms as f64 / 3_600_000.0,
        listeners: plan.config.listeners,
        requests,
        calibration_requests,
        wall_s: started.elapsed().as_secs_f64(),
        policies,
        variants,
        promoted_per_response: promoted_total as f64 / requests as f64,
        promoted_impressions: frequency.impressions,
        events,
        event_posts,
        max_per_listener_track_24h: frequency.max_in_window,
        max_at,
        mean_abs_error: mean_abs(&|c| c.ratio),
        mean_abs_error_unpaced: mean_abs(&|c| c.unpaced_ratio),
        campaigns,
        checks,
    })
}

/// Posts the pending events as one batch of JSON lines.
async fn flush<S: Server>(
    server: &mut S,
    replica: usize,
    pending: &mut Vec<Event>,
    total: &mut EventsAnswer,
) -> anyhow::Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let mut body = Vec::with_capacity(pending.len() * 300);
    for e in pending.iter() {
        serde_json::to_writer(&mut body, e)?;
        body.push(b'\n');
    }
    let a = server
        .events(replica, body)
        .await
        .with_context(|| format!("posting {} events", pending.len()))?;
    total.accepted += a.accepted;
    total.applied += a.applied;
    total.duplicates += a.duplicates;
    total.buffered += a.buffered;
    pending.clear();
    Ok(())
}

/// The campaigns the text report plots: the two largest over-supplied and
/// the two largest under-supplied among the checked ones.
fn tracked(r: &Report) -> Vec<usize> {
    let mut pick = Vec::new();
    for over in [true, false] {
        let mut idx: Vec<usize> = (0..r.campaigns.len())
            .filter(|&j| {
                let c = &r.campaigns[j];
                c.checked && (c.supply_factor < 1.0) == over && c.supply_factor != 1.0
            })
            .collect();
        idx.sort_by(|&a, &b| r.campaigns[b].target.total_cmp(&r.campaigns[a].target));
        pick.extend(idx.into_iter().take(2));
    }
    pick.sort_unstable();
    pick
}

impl Report {
    /// The report for humans: summary, campaign table, delivery series of
    /// the tracked campaigns, checks.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "closed loop  run {}, route {}, {} listeners, {:.0} simulated hours, {} requests \
             (+{} calibration on {}), {:.1} s wall",
            self.run_tag,
            self.route,
            self.listeners,
            self.sim_hours,
            self.requests,
            self.calibration_requests,
            self.calibration_route,
            self.wall_s
        );
        let join = |m: &BTreeMap<String, u64>| {
            m.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(s, "policy       {}", join(&self.policies));
        let _ = writeln!(s, "variant      {}", join(&self.variants));
        let _ = writeln!(
            s,
            "events       {} posted in {} batches: {} applied, {} duplicates, {} buffered",
            self.events.accepted,
            self.event_posts,
            self.events.applied,
            self.events.duplicates,
            self.events.buffered
        );
        let _ = writeln!(
            s,
            "promoted     {:.2} per response, {} promoted impressions shown",
            self.promoted_per_response, self.promoted_impressions
        );
        let _ = writeln!(
            s,
            "frequency    max {} promoted impressions of one track to one listener in 24 h{}",
            self.max_per_listener_track_24h,
            match &self.max_at {
                Some((l, t, h)) => format!(" ({l}, {t}, hour {h:.1})"),
                None => String::new(),
            }
        );
        let _ = writeln!(
            s,
            "tracking     mean |delivered/target - 1| {:.3} paced, {:.3} unpaced (checked campaigns)\n",
            self.mean_abs_error, self.mean_abs_error_unpaced
        );
        let _ = writeln!(
            s,
            "| campaign | rank | kind | unpaced | target | delivered | ratio | unpaced ratio |"
        );
        let _ = writeln!(s, "|---|---:|---|---:|---:|---:|---:|---:|");
        for c in &self.campaigns {
            let _ = writeln!(
                s,
                "| {}{} | {} | {} | {:.0} | {:.0} | {} | {:.2} | {:.2} |",
                c.id,
                if c.checked { "" } else { " (small)" },
                c.popularity_rank,
                c.kind,
                c.unpaced_supply,
                c.target,
                c.delivered,
                c.ratio,
                c.unpaced_ratio
            );
        }
        let tracked = tracked(self);
        if !tracked.is_empty() {
            let _ = writeln!(s, "\ncumulative delivered / expected by simulated hour");
            let _ = write!(s, "| hour |");
            for &j in &tracked {
                let c = &self.campaigns[j];
                let _ = write!(s, " {} (x{}) |", c.id, c.supply_factor);
            }
            let _ = write!(s, "\n|---:|");
            for _ in &tracked {
                let _ = write!(s, "---:|");
            }
            let _ = writeln!(s);
            let points = self.campaigns[tracked[0]].series.len();
            for b in 0..points {
                let _ = write!(s, "| {:.0} |", self.campaigns[tracked[0]].series[b].hour);
                for &j in &tracked {
                    let p = &self.campaigns[j].series[b];
                    let _ = write!(s, " {} / {:.0} |", p.delivered, p.expected);
                }
                let _ = writeln!(s);
            }
        }
        if !self.checks.is_empty() {
            let _ = writeln!(s);
        }
        for c in &self.checks {
            let _ = writeln!(
                s,
                "check        {}: {} ({})",
                if c.passed { "PASS" } else { "FAIL" },
                c.name,
                c.detail
            );
        }
        s
    }
}

/// The HTTP replicas.
pub struct HttpServer {
    client: reqwest::Client,
    urls: Vec<String>,
}

/// The parts of a score response the loop needs.
#[derive(Deserialize)]
struct WireAnswer {
    policy: WirePolicy,
    variant: String,
    scores: Vec<WireScore>,
}

#[derive(Deserialize)]
struct WirePolicy {
    name: String,
    version: String,
}

#[derive(Deserialize)]
struct WireScore {
    id: String,
    score: f64,
    reasons: Vec<String>,
}

/// Parses a score response body.
fn parse_answer(body: &[u8]) -> anyhow::Result<Answer> {
    let w: WireAnswer = serde_json::from_slice(body).context("not a score response")?;
    Ok(Answer {
        policy: format!("{}@{}", w.policy.name, w.policy.version),
        variant: w.variant,
        scores: w
            .scores
            .into_iter()
            .map(|s| {
                let promoted = s.reasons.iter().any(|r| r == "promoted");
                (s.id, s.score, promoted)
            })
            .collect(),
    })
}

/// Retries of a 503 (score or events) before giving up.
const RETRIES: u32 = 30;

impl HttpServer {
    /// Replicas at `urls` (base URLs), with a per-request timeout.
    ///
    /// # Errors
    /// If the HTTP client cannot be built.
    pub fn new(urls: Vec<String>, timeout: Duration) -> anyhow::Result<Self> {
        Ok(HttpServer {
            client: reqwest::Client::builder()
                .tcp_nodelay(true)
                .timeout(timeout)
                .build()?,
            urls: urls
                .into_iter()
                .map(|u| u.trim_end_matches('/').to_string())
                .collect(),
        })
    }

    /// POSTs `body`; a 503 is retried after its `Retry-After` (at most 2 s)
    /// up to [`RETRIES`] times; returns the first other status and body.
    async fn post(
        &self,
        url: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<(u16, bytes::Bytes)> {
        let mut attempt = 0;
        loop {
            let resp = self
                .client
                .post(url)
                .header("content-type", content_type)
                .body(body.clone())
                .send()
                .await
                .with_context(|| format!("POST {url}"))?;
            let status = resp.status().as_u16();
            if status == 503 && attempt < RETRIES {
                attempt += 1;
                let wait = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.1)
                    .clamp(0.05, 2.0);
                tokio::time::sleep(Duration::from_secs_f64(wait)).await;
                continue;
            }
            return Ok((status, resp.bytes().await?));
        }
    }
}

fn refused(url: &str, status: u16, body: &[u8]) -> anyhow::Error {
    let text = String::from_utf8_lossy(&body[..body.len().min(500)]);
    anyhow::anyhow!("{url} answered {status}: {text}")
}

impl Server for HttpServer {
    async fn score(&mut self, replica: usize, body: Vec<u8>) -> anyhow::Result<Answer> {
        let url = format!("{}/v1/score", self.urls[replica]);
        let (status, bytes) = self.post(&url, "application/json", body).await?;
        if status != 200 {
            return Err(refused(&url, status, &bytes));
        }
        parse_answer(&bytes).with_context(|| url.clone())
    }

    async fn events(&mut self, replica: usize, body: Vec<u8>) -> anyhow::Result<EventsAnswer> {
        let url = format!("{}/v1/events", self.urls[replica]);
        let (status, bytes) = self.post(&url, "application/x-ndjson", body).await?;
        if status != 202 {
            return Err(refused(&url, status, &bytes));
        }
        serde_json::from_slice(&bytes).with_context(|| format!("{url}: not an events answer"))
    }

    fn replicas(&self) -> usize {
        self.urls.len()
    }
}

#[cfg(test)]
mod tests;
