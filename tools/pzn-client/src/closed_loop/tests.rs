//! The loop against an in-memory server that keeps delivery state only from
//! the events it is sent, the way Oasis does: what it decides depends on
//! the client posting the right events, to some replica, in time.

use std::collections::{HashMap, HashSet, VecDeque};

use serde_json::Value;

use super::*;
use crate::closed_loop::plan::tests::small_plan;

/// A fake set of replicas sharing one store. It promotes a campaign track
/// when its campaign is behind its linear schedule (a bang-bang pacer),
/// unless the listener has had `cap` promoted impressions of it in 24 h
/// (a frequency cap), and ranks promoted tracks first.
struct FakeServer {
    replicas: usize,
    /// Enforce the frequency cap (else promote regardless).
    cap: Option<u32>,
    delivered: HashMap<String, u64>,
    impressions: HashMap<(String, String), VecDeque<i64>>,
    event_ids: HashSet<String>,
    /// (replica of the request, request id) in order.
    scored_on: Vec<(usize, String)>,
    /// (replica, request ids) of each event batch.
    events_on: Vec<(usize, HashSet<String>)>,
}

impl FakeServer {
    fn new(replicas: usize, cap: Option<u32>) -> Self {
        FakeServer {
            replicas,
            cap,
            delivered: HashMap::new(),
            impressions: HashMap::new(),
            event_ids: HashSet::new(),
            scored_on: Vec::new(),
            events_on: Vec::new(),
        }
    }

    fn in_window(&self, listener: &str, track: &str, now: i64) -> u32 {
        self.impressions
            .get(&(listener.to_string(), track.to_string()))
            .map_or(0, |q| {
                q.iter()
                    .filter(|&&t| t <= now && t > now - book::WINDOW_MS)
                    .count() as u32
            })
    }
}

impl Server for FakeServer {
    async fn score(&mut self, replica: usize, body: Vec<u8>) -> anyhow::Result<Answer> {
        let v: Value = serde_json::from_slice(&body)?;
        let ctx = &v["context"];
        let now = ctx["timestamp_ms"].as_i64().unwrap();
        let listener = ctx["listener_id"].as_str().unwrap();
        self.scored_on
            .push((replica, ctx["request_id"].as_str().unwrap().to_string()));
        let mut scores = Vec::new();
        for c in v["candidates"].as_array().unwrap() {
            let id = c["id"].as_str().unwrap();
            let relevance = c["relevance"].as_f64().unwrap();
            assert!(c.get("impressions_24h").is_none());
            let mut promoted = false;
            if let Some(camp) = c.get("campaign") {
                assert!(camp.get("delivered").is_none() && camp.get("pacing_integral").is_none());
                let (start, end) = (
                    camp["start_ms"].as_i64().unwrap(),
                    camp["end_ms"].as_i64().unwrap(),
                );
                let target = camp["delivery_target"].as_f64().unwrap();
                let expected = target * ((now - start) as f64 / (end - start) as f64);
                let delivered = *self
                    .delivered
                    .get(camp["id"].as_str().unwrap())
                    .unwrap_or(&0);
                let capped = self
                    .cap
                    .is_some_and(|k| self.in_window(listener, id, now) >= k);
                promoted = (delivered as f64) < expected + 1.0 && !capped;
            }
            let score = relevance + if promoted { 10.0 } else { 0.0 };
            scores.push((id.to_string(), score, promoted));
        }
        Ok(Answer {
            scores,
            policy: "fake@1".into(),
            variant: "stable".into(),
        })
    }

    async fn events(&mut self, replica: usize, body: Vec<u8>) -> anyhow::Result<EventsAnswer> {
        let mut a = EventsAnswer::default();
        let mut requests = HashSet::new();
        for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let e: Value = serde_json::from_slice(line)?;
            a.accepted += 1;
            requests.insert(e["request_id"].as_str().unwrap().to_string());
            if !self
                .event_ids
                .insert(e["event_id"].as_str().unwrap().to_string())
            {
                a.duplicates += 1;
                continue;
            }
            if e["event"] == "impression" && e["promoted"] == true {
                a.applied += 1;
                if let Some(c) = e["campaign_id"].as_str() {
                    *self.delivered.entry(c.to_string()).or_default() += 1;
                }
                self.impressions
                    .entry((
                        e["listener_id"].as_str().unwrap().to_string(),
                        e["candidate_id"].as_str().unwrap().to_string(),
                    ))
                    .or_default()
                    .push_back(e["at_ms"].as_i64().unwrap());
            }
        }
        self.events_on.push((replica, requests));
        Ok(a)
    }

    fn replicas(&self) -> usize {
        self.replicas
    }
}

fn config(batch: usize, max_daily: Option<u32>) -> LoopConfig {
    LoopConfig {
        route: "radio".into(),
        calibration_route: "guarded-boost".into(),
        calibration_sample: 4,
        supply_factors: vec![0.5, 2.0],
        event_batch: batch,
        sim_speed: None,
        bucket_ms: 3_600_000,
        max_daily,
        delivery_band: Some((0.8, 1.2)),
        min_check_volume: 20.0,
    }
}

fn run_fake(server: &mut FakeServer, cfg: &LoopConfig) -> (Report, Plan) {
    let mut plan = small_plan(150);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = rt.block_on(run(&mut plan, cfg, server)).unwrap();
    (report, plan)
}

/// With a large event batch, only the flush before a returning listener's
/// next request keeps the server's frequency counts current: the cap the
/// server enforces from posted events must hold in the client's own count.
#[test]
fn the_server_sees_a_listeners_impressions_before_the_listener_returns() {
    let mut server = FakeServer::new(2, Some(2));
    let cfg = LoopConfig {
        delivery_band: None,
        ..config(1_000, Some(2))
    };
    let (report, _) = run_fake(&mut server, &cfg);
    assert!(report.passed(), "{}", report.render());
    assert_eq!(report.max_per_listener_track_24h, 2, "the cap binds");
    assert_eq!(report.events.duplicates, 0, "event ids are unique");
    assert_eq!(
        report.events.accepted,
        2 * report.requests * 10,
        "an impression and a play per shown track"
    );
    // The server's count from events equals the client's.
    for c in &report.campaigns {
        assert_eq!(
            server.delivered.get(&c.id).copied().unwrap_or(0),
            c.delivered
        );
    }
}

/// Without the cap the same traffic exceeds it, and the check fails.
#[test]
fn the_cap_check_fails_when_the_server_does_not_cap() {
    let mut server = FakeServer::new(1, None);
    let (report, _) = run_fake(&mut server, &config(8, Some(2)));
    assert!(report.max_per_listener_track_24h > 2);
    let cap = report
        .checks
        .iter()
        .find(|c| c.name.contains("24 h"))
        .unwrap();
    assert!(!cap.passed);
    assert!(!report.passed());
}

/// Requests alternate over the replicas and each batch of events goes to
/// another replica than the requests it reports on.
#[test]
fn requests_and_events_alternate_over_replicas() {
    let mut server = FakeServer::new(2, Some(3));
    let (report, plan) = run_fake(&mut server, &config(1, None));
    let loop_requests: Vec<&(usize, String)> = server
        .scored_on
        .iter()
        .filter(|(_, id)| !id.ends_with("-cal"))
        .collect();
    assert_eq!(loop_requests.len(), plan.slots.len());
    let replica_of: HashMap<&str, usize> = loop_requests
        .iter()
        .map(|(r, id)| (id.as_str(), *r))
        .collect();
    for (k, (r, _)) in loop_requests.iter().enumerate() {
        assert_eq!(*r, k % 2);
    }
    assert_eq!(server.events_on.len() as u64, report.event_posts);
    for (replica, requests) in &server.events_on {
        for id in requests {
            assert_ne!(replica_of[id.as_str()], *replica, "{id}");
        }
    }
}

/// Targets come from calibration (unpaced supply × factor), the fake's
/// pacer tracks them, and the series ends at the delivered count and the
/// target.
#[test]
fn targets_follow_calibration_and_delivery_tracks_them() {
    let mut server = FakeServer::new(1, None);
    // The fake promotes every campaign track while behind, so it cannot
    // deliver more than its unpaced supply: over-supplied campaigns only.
    let cfg = LoopConfig {
        supply_factors: vec![0.5, 0.8],
        ..config(4, None)
    };
    let (report, _) = run_fake(&mut server, &cfg);
    let mut checked = 0;
    for (j, c) in report.campaigns.iter().enumerate() {
        assert_eq!(c.supply_factor, [0.5, 0.8][j % 2]);
        assert_eq!(c.kind, "over-supplied");
        assert_eq!(
            c.target,
            (c.unpaced_supply * c.supply_factor).round().max(1.0)
        );
        let last = c.series.last().unwrap();
        assert_eq!(last.delivered, c.delivered);
        assert!((last.expected - c.target).abs() < 1e-9);
        assert!((last.hour - 24.0).abs() < 1e-9);
        assert!(
            c.series
                .windows(2)
                .all(|w| w[0].delivered <= w[1].delivered)
        );
        if c.checked {
            checked += 1;
        }
    }
    assert!(checked >= 2, "{}", report.render());
    // The fake pacer promotes while behind: over-supplied campaigns land
    // near their target instead of at twice it.
    assert!(report.passed(), "{}", report.render());
    assert!(report.mean_abs_error < report.mean_abs_error_unpaced);
    let text = report.render();
    assert!(text.contains("| campaign | rank |"), "{text}");
    assert!(text.contains("check        PASS"), "{text}");
}

#[test]
fn answers_align_by_id_whatever_their_order() {
    let plan = small_plan(5);
    let (req, _) = plan.request(0, "radio");
    let mut scores: Vec<(String, f64, bool)> = req
        .candidates
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id.clone(), i as f64, i == 3))
        .collect();
    scores.reverse();
    let answer = Answer {
        scores,
        policy: "p@1".into(),
        variant: "stable".into(),
    };
    let aligned = align(&req.candidates, &answer).unwrap();
    assert_eq!(
        aligned[3],
        Scored {
            score: 3.0,
            promoted: true
        }
    );
    assert_eq!(aligned[0].score, 0.0);
    let short = Answer {
        scores: answer.scores[1..].to_vec(),
        ..answer
    };
    assert!(align(&req.candidates, &short).is_err());
    let parsed = parse_answer(
        br#"{"request_id":"r","policy":{"name":"pid-pacing","version":"0.2.0","digest":"d"},
            "variant":"stable","scores":[{"id":"a","score":1.5,"eligible":true,
            "reasons":["eligible","promoted"],"propensity":1}]}"#,
    )
    .unwrap();
    assert_eq!(parsed.policy, "pid-pacing@0.2.0");
    assert_eq!(parsed.scores, vec![("a".to_string(), 1.5, true)]);
}
