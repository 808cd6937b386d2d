//! The closed loop's bookkeeping, free of I/O: which candidates the caller
//! shows, the events a shown slate produces, the client-side frequency
//! accounting and the per-campaign delivery series.
//!
//! Everything here is what the *client* saw and did, independently of the
//! server's store, so that the report checks the server against an account
//! kept on the other side of the wire.

use std::collections::{HashMap, VecDeque};

use rand::RngExt;
use rand::rngs::StdRng;
use serde::Serialize;

use crate::outcomes::stream_probability;

/// The server's listener × track impression window: 24 hours.
pub const WINDOW_MS: i64 = 24 * 3_600_000;

/// One candidate as the server scored it.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// Final score.
    pub score: f64,
    /// Whether the policy promoted it (`reasons` contains `promoted`).
    pub promoted: bool,
}

/// The indices of the candidates the caller shows: the `slate_size`
/// highest scores, best first; equal scores keep request order (the
/// recommender's rank). Non-finite scores rank last.
pub fn shown_slate(scored: &[Scored], slate_size: usize) -> Vec<usize> {
    let key = |s: f64| if s.is_finite() { s } else { f64::NEG_INFINITY };
    let mut order: Vec<usize> = (0..scored.len()).collect();
    // A stable sort: ties stay in request order.
    order.sort_by(|&a, &b| key(scored[b].score).total_cmp(&key(scored[a].score)));
    order.truncate(slate_size);
    order
}

/// What the event generator needs of one candidate of a request.
#[derive(Debug, Clone)]
pub struct ShownTrack<'a> {
    /// Candidate (track) id.
    pub id: &'a str,
    /// Campaign id, if the track is in a campaign.
    pub campaign_id: Option<&'a str>,
    /// Rights holder id.
    pub rights_holder: &'a str,
    /// Base relevance.
    pub relevance: f64,
    /// Predicted skip probability.
    pub p_skip: Option<f64>,
}

/// One event of `POST /v1/events`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Unique within the run: `<request id>-<position><kind letter>`.
    pub event_id: String,
    /// The scored request.
    pub request_id: String,
    /// The track.
    pub candidate_id: String,
    /// `impression`, `stream` or `skip`.
    pub event: &'static str,
    /// When it happened (simulated time), ms.
    pub at_ms: i64,
    /// The listener.
    pub listener_id: String,
    /// The session.
    pub session_id: String,
    /// The track's campaign.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<String>,
    /// The track's rights holder.
    pub rights_holder: String,
    /// Shown as a promotion.
    pub promoted: bool,
    /// 1-based rank in the shown slate.
    pub position: u32,
}

/// Who saw a slate, and when.
#[derive(Debug, Clone, Copy)]
pub struct Viewer<'a> {
    /// The request id.
    pub request_id: &'a str,
    /// The listener.
    pub listener_id: &'a str,
    /// The session.
    pub session_id: &'a str,
    /// The request's (simulated) time.
    pub at_ms: i64,
}

/// The probability that the listener streams a shown track: the reward
/// model of [`crate::outcomes`] for a campaign track (what `--outcomes`
/// posts), `1 - p_skip` for an organic one (0.5 when `p_skip` is missing).
pub fn stream_chance(track: &ShownTrack<'_>, promoted: bool) -> f64 {
    if track.campaign_id.is_some() {
        stream_probability(track.relevance, track.p_skip, promoted)
    } else {
        (1.0 - track.p_skip.unwrap_or(0.5)).clamp(0.0, 1.0)
    }
}

/// The events of one shown slate: for each shown track, in slate order, an
/// `impression` at the request's time and then a `stream` or a `skip` (drawn
/// from [`stream_chance`]) one millisecond per position later, so a slate's
/// plays follow its impressions. `tracks[i]` and `scored[i]` are candidate
/// `i` of the request; `shown` comes from [`shown_slate`].
pub fn slate_events(
    viewer: Viewer<'_>,
    tracks: &[ShownTrack<'_>],
    scored: &[Scored],
    shown: &[usize],
    rng: &mut StdRng,
) -> Vec<Event> {
    let mut events = Vec::with_capacity(2 * shown.len());
    for (rank, &i) in shown.iter().enumerate() {
        let (t, s) = (&tracks[i], &scored[i]);
        let position = rank as u32 + 1;
        let event = |kind: &'static str, letter: char, at_ms: i64| Event {
            event_id: format!("{}-{position}{letter}", viewer.request_id),
            request_id: viewer.request_id.to_string(),
            candidate_id: t.id.to_string(),
            event: kind,
            at_ms,
            listener_id: viewer.listener_id.to_string(),
            session_id: viewer.session_id.to_string(),
            campaign_id: t.campaign_id.map(str::to_string),
            rights_holder: t.rights_holder.to_string(),
            promoted: s.promoted,
            position,
        };
        events.push(event("impression", 'i', viewer.at_ms));
        let streamed = rng.random::<f64>() < stream_chance(t, s.promoted);
        let (kind, letter) = if streamed {
            ("stream", 's')
        } else {
            ("skip", 'k')
        };
        events.push(event(kind, letter, viewer.at_ms + i64::from(position)));
    }
    events
}

/// Promoted impressions per listener × track over sliding 24-hour windows,
/// as the client showed them: the window of an impression at `t` is
/// `(t - 24 h, t]`, the server's own rule.
#[derive(Debug, Default)]
pub struct FrequencyBook {
    times: HashMap<(u32, u32), VecDeque<i64>>,
    /// The most promoted impressions of one track to one listener seen in
    /// one 24-hour window.
    pub max_in_window: u32,
    /// The (listener, track, time) where `max_in_window` was first reached.
    pub worst: Option<(u32, u32, i64)>,
    /// Promoted impressions recorded.
    pub impressions: u64,
}

impl FrequencyBook {
    /// Records a promoted impression of `track` to `listener` at `at_ms`
    /// (non-decreasing per pair) and returns how many the pair has had in
    /// the 24 hours ending at it, this one included.
    pub fn record(&mut self, listener: u32, track: u32, at_ms: i64) -> u32 {
        let q = self.times.entry((listener, track)).or_default();
        while q.front().is_some_and(|&t| t <= at_ms - WINDOW_MS) {
            q.pop_front();
        }
        q.push_back(at_ms);
        let n = q.len() as u32;
        self.impressions += 1;
        if n > self.max_in_window {
            self.max_in_window = n;
            self.worst = Some((listener, track, at_ms));
        }
        n
    }

    /// Listener × track pairs that had more than `cap` promoted
    /// impressions in some 24-hour window: judged on what was recorded,
    /// as the count in the window ending at each impression.
    pub fn exceeds(&self, cap: u32) -> bool {
        self.max_in_window > cap
    }
}

/// Promoted impressions per campaign over time, against each campaign's
/// linear schedule.
#[derive(Debug, Clone)]
pub struct DeliveryBook {
    start_ms: i64,
    end_ms: i64,
    bucket_ms: i64,
    /// Targets over the window, by campaign index.
    targets: Vec<f64>,
    /// Promoted impressions per campaign per bucket.
    counts: Vec<Vec<u64>>,
}

/// One point of a campaign's delivery series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    /// End of the bucket, hours since the window's start.
    pub hour: f64,
    /// Promoted impressions delivered up to the end of the bucket.
    pub delivered: u64,
    /// What the linear schedule expects by then.
    pub expected: f64,
}

impl DeliveryBook {
    /// A book over `[start_ms, end_ms)` in buckets of `bucket_ms` (the
    /// last one may be shorter), for campaigns with these targets.
    ///
    /// # Panics
    /// If the window or the bucket is empty.
    pub fn new(start_ms: i64, end_ms: i64, bucket_ms: i64, targets: Vec<f64>) -> Self {
        assert!(end_ms > start_ms && bucket_ms > 0);
        let buckets = ((end_ms - start_ms + bucket_ms - 1) / bucket_ms) as usize;
        DeliveryBook {
            start_ms,
            end_ms,
            bucket_ms,
            counts: vec![vec![0; buckets]; targets.len()],
            targets,
        }
    }

    /// Counts one promoted impression of `campaign` at `at_ms`; times
    /// outside the window are clamped into its first or last bucket.
    pub fn record(&mut self, campaign: usize, at_ms: i64) {
        let row = &mut self.counts[campaign];
        let b = ((at_ms - self.start_ms).max(0) / self.bucket_ms) as usize;
        let last = row.len() - 1;
        row[b.min(last)] += 1;
    }

    /// The linear schedule of `campaign` at `at_ms`: its target times the
    /// elapsed share of the window, as the host computes `expected_by_now`.
    pub fn expected(&self, campaign: usize, at_ms: i64) -> f64 {
        let share = (at_ms - self.start_ms) as f64 / (self.end_ms - self.start_ms) as f64;
        self.targets[campaign] * share.clamp(0.0, 1.0)
    }

    /// Promoted impressions of `campaign` over the whole window.
    pub fn delivered(&self, campaign: usize) -> u64 {
        self.counts[campaign].iter().sum()
    }

    /// The cumulative series of `campaign`, one point per bucket end.
    pub fn series(&self, campaign: usize) -> Vec<Point> {
        let mut total = 0;
        self.counts[campaign]
            .iter()
            .enumerate()
            .map(|(b, n)| {
                total += n;
                let end = (self.start_ms + (b as i64 + 1) * self.bucket_ms).min(self.end_ms);
                Point {
                    hour: (end - self.start_ms) as f64 / 3_600_000.0,
                    delivered: total,
                    expected: self.expected(campaign, end),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn s(score: f64, promoted: bool) -> Scored {
        Scored { score, promoted }
    }

    #[test]
    fn the_shown_slate_is_the_top_scores_ties_in_request_order() {
        let scored = [
            s(0.5, false),
            s(0.9, true),
            s(f64::NAN, false),
            s(0.5, false),
            s(0.7, false),
            s(1.2, true),
        ];
        assert_eq!(shown_slate(&scored, 4), vec![5, 1, 4, 0]);
        assert_eq!(shown_slate(&scored, 5), vec![5, 1, 4, 0, 3]);
        // More than the candidates: all of them, NaN last.
        assert_eq!(shown_slate(&scored, 10), vec![5, 1, 4, 0, 3, 2]);
        assert!(shown_slate(&scored, 0).is_empty());
    }

    fn tracks() -> Vec<ShownTrack<'static>> {
        vec![
            ShownTrack {
                id: "t0",
                campaign_id: None,
                rights_holder: "h0",
                relevance: 0.9,
                p_skip: Some(0.0),
            },
            ShownTrack {
                id: "t1",
                campaign_id: Some("c1"),
                rights_holder: "h1",
                relevance: 0.25,
                p_skip: Some(1.0),
            },
            ShownTrack {
                id: "t2",
                campaign_id: Some("c2"),
                rights_holder: "h2",
                relevance: 0.1,
                p_skip: None,
            },
        ]
    }

    #[test]
    fn a_shown_slate_gives_an_impression_and_a_play_outcome_per_shown_track() {
        let tracks = tracks();
        let scored = [s(0.9, false), s(1.0, true), s(0.1, false)];
        let shown = shown_slate(&scored, 2);
        let viewer = Viewer {
            request_id: "r-7",
            listener_id: "u-1",
            session_id: "s-1",
            at_ms: 1_000,
        };
        let mut rng = StdRng::seed_from_u64(1);
        let events = slate_events(viewer, &tracks, &scored, &shown, &mut rng);
        assert_eq!(events.len(), 4, "t2 is not shown: no events");
        let (imp, play) = (&events[0], &events[1]);
        assert_eq!(
            (imp.event, imp.candidate_id.as_str(), imp.position),
            ("impression", "t1", 1)
        );
        assert_eq!(imp.event_id, "r-7-1i");
        assert_eq!(imp.campaign_id.as_deref(), Some("c1"));
        assert!(imp.promoted && imp.at_ms == 1_000);
        // t1: relevance 0.25, p_skip 1, promoted: 0.02 + 0 - 0.02 = 0, a skip.
        assert_eq!((play.event, play.event_id.as_str()), ("skip", "r-7-1k"));
        assert!(play.at_ms > imp.at_ms && play.promoted);
        // t0: organic with p_skip 0: always streamed, not promoted.
        let (imp, play) = (&events[2], &events[3]);
        assert_eq!((imp.candidate_id.as_str(), imp.position), ("t0", 2));
        assert!(!imp.promoted && imp.campaign_id.is_none());
        assert_eq!(play.event, "stream");
        let ids: std::collections::HashSet<&str> =
            events.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids.len(), events.len(), "event ids are unique");
        // The wire form: no campaign_id for an organic track.
        let v = serde_json::to_value(&events[2]).unwrap();
        assert!(v.get("campaign_id").is_none());
        assert_eq!(v["rights_holder"], "h0");
    }

    #[test]
    fn stream_chances_follow_the_reward_model() {
        let t = tracks();
        assert_eq!(stream_chance(&t[0], false), 1.0);
        // Campaign track, p_skip missing (0.5): 0.02 + 5 * (0.1 - 0.25) < 0.
        assert_eq!(stream_chance(&t[2], true), 0.0);
        let relevant = ShownTrack {
            relevance: 0.3,
            p_skip: Some(0.5),
            ..t[1].clone()
        };
        assert!((stream_chance(&relevant, true) - 0.26).abs() < 1e-12);
        assert!((stream_chance(&relevant, false) - 0.01).abs() < 1e-12);
    }

    #[test]
    fn frequency_counts_slide_over_24_hours_per_listener_and_track() {
        let mut f = FrequencyBook::default();
        let h = 3_600_000;
        assert_eq!(f.record(1, 7, 0), 1);
        assert_eq!(f.record(1, 7, 10 * h), 2);
        assert_eq!(f.record(2, 7, 10 * h), 1, "another listener");
        assert_eq!(f.record(1, 8, 10 * h), 1, "another track");
        assert_eq!(f.record(1, 7, 20 * h), 3);
        assert!(!f.exceeds(3) && f.exceeds(2));
        assert_eq!(f.worst, Some((1, 7, 20 * h)));
        // At exactly 24 h the first impression has left the window.
        assert_eq!(f.record(1, 7, 24 * h), 3);
        assert_eq!(f.record(1, 7, 30 * h), 4, "10 h, 20 h, 24 h and 30 h");
        assert_eq!(f.record(1, 7, 44 * h + 1), 3, "24 h, 30 h and 44 h");
        assert_eq!(f.max_in_window, 4);
        assert_eq!(f.worst, Some((1, 7, 30 * h)));
        assert_eq!(f.impressions, 8);
    }

    #[test]
    fn delivery_series_are_cumulative_against_the_linear_schedule() {
        let h = 3_600_000;
        // 0..10 h in 4 h buckets: 0-4, 4-8, 8-10.
        let mut d = DeliveryBook::new(0, 10 * h, 4 * h, vec![100.0, 10.0]);
        d.record(0, 0);
        d.record(0, 4 * h - 1);
        d.record(0, 4 * h);
        d.record(0, 11 * h); // after the window: the last bucket
        d.record(1, -5); // before it: the first
        assert_eq!((d.delivered(0), d.delivered(1)), (4, 1));
        let s = d.series(0);
        let got: Vec<(f64, u64, f64)> = s
            .iter()
            .map(|p| (p.hour, p.delivered, p.expected))
            .collect();
        assert_eq!(got, vec![(4.0, 2, 40.0), (8.0, 3, 80.0), (10.0, 4, 100.0)]);
        assert_eq!(d.expected(1, 5 * h), 5.0);
        assert_eq!(d.expected(1, 20 * h), 10.0, "clamped to the target");
        assert_eq!(d.expected(1, -h), 0.0);
    }
}
