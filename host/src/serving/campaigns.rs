//! [`CampaignBook`]: what serving has seen of each promotion campaign —
//! its delivery against its target (as the delivery state or the caller
//! gave it to the policy) and what the served policy did with its tracks
//! (promoted, held back by a frequency cap, throttled by pacing).
//!
//! Operators ask "is campaign X on pace, and if not, why?" The answer needs
//! both halves: `delivered` against `expected_by_now` says whether it is
//! behind, and the reasons on its tracks say whether the policy is holding
//! it back (pacing), the listeners have seen it enough (frequency caps), or
//! it is simply not offered. The book is fed once per served request, after
//! the answer is encoded ([`Scorer::after`](super::Scorer::after)); the
//! dashboard and `GET /v1/campaigns` read it.
//!
//! **Bounded.** Campaign ids come from callers, so the book keeps at most
//! [`CampaignBook::capacity`] of them. When a new campaign would exceed it,
//! the tenth least recently seen are dropped at once (so the cost of
//! eviction is paid once per many insertions, not on every request), and
//! counted in `evicted`.
//!
//! **Cost.** One mutex, held for a hash lookup per distinct campaign in the
//! request; the per-candidate tally is done before taking it, and a request
//! with no campaigns does not touch the book at all.

use std::collections::HashMap;
use std::sync::Mutex;

use oasis_contract::{ReasonBits, reason};
use serde::Serialize;

use crate::bindings::WitDecisions;
use crate::request::ValidRequest;
use crate::serving::route_stats::lock;

/// Campaigns kept by default ([`CampaignBook::new`]).
pub const DEFAULT_CAPACITY: usize = 10_000;

/// What serving has seen of each campaign, bounded; see the module docs.
#[derive(Debug)]
pub struct CampaignBook {
    book: Mutex<Book>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Book {
    by_id: HashMap<Box<str>, Track>,
    /// Campaigns dropped to stay within the capacity.
    evicted: u64,
    /// Served requests observed (a sequence number for recency).
    seq: u64,
}

/// One campaign's record: the last delivery figures seen and running
/// counts.
#[derive(Debug, Clone, Default)]
struct Track {
    route: Box<str>,
    last_seq: u64,
    last_request_ms: i64,
    start_ms: i64,
    end_ms: i64,
    target: f64,
    delivered: f64,
    expected_by_now: f64,
    pacing_integral: f64,
    pacing_last_error: f64,
    source: DeliverySource,
    counts: Counts,
}

/// Per-campaign tallies of served candidates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Counts {
    /// Served requests that offered at least one of its tracks.
    pub requests: u64,
    /// Its tracks among the served requests' candidates.
    pub candidates: u64,
    /// Of those, eligible for promotion.
    pub eligible: u64,
    /// Of those, promoted.
    pub promoted: u64,
    /// Of those, held back by a frequency cap (reason `freq_capped`).
    pub frequency_capped: u64,
    /// Of those, held back by pacing (reason `pacing_throttled`).
    pub pacing_throttled: u64,
    /// Of those, outside the campaign's window (reason `campaign_inactive`).
    pub inactive: u64,
}

/// Where the `delivered` figure the policy saw came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliverySource {
    /// The caller sent it in the request.
    Request,
    /// The host's delivery state (events posted to `/v1/events`).
    #[default]
    State,
    /// Neither: the server keeps no delivery state and the caller sent
    /// none, so the policy saw 0.
    Unknown,
}

/// One campaign as `GET /v1/campaigns` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CampaignView {
    /// Campaign id.
    pub campaign: String,
    /// The route of the last request that offered it.
    pub route: String,
    /// `context.timestamp_ms` of that request (the caller's clock).
    pub last_request_ms: i64,
    /// Active window, unix ms, start inclusive.
    pub start_ms: i64,
    /// Active window, unix ms, end exclusive.
    pub end_ms: i64,
    /// Promoted impressions targeted over the window.
    pub delivery_target: f64,
    /// Promoted impressions delivered, as the policy last saw it.
    pub delivered: f64,
    /// Where `delivered` came from.
    pub delivered_from: DeliverySource,
    /// What a linear schedule (or the caller) expected by then.
    pub expected_by_now: f64,
    /// `delivered / expected_by_now`: below 1 behind schedule, above 1
    /// ahead; absent before anything is expected.
    pub pace: Option<f64>,
    /// `delivered / delivery_target`.
    pub target_share: Option<f64>,
    /// The pacing controller's integral, as the policy last saw it.
    pub pacing_integral: f64,
    /// The pacing controller's last error, as the policy last saw it.
    pub pacing_last_error: f64,
    /// What the served policy did with its tracks since `since`.
    #[serde(flatten)]
    pub counts: Counts,
}

/// `GET /v1/campaigns`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CampaignList {
    /// The campaigns, furthest behind schedule first (then by id).
    pub campaigns: Vec<CampaignView>,
    /// Campaigns in the book (before `limit`).
    pub tracked: usize,
    /// How many the book keeps.
    pub capacity: usize,
    /// Campaigns dropped, least recently seen first, to stay within it.
    pub evicted: u64,
}

impl Default for CampaignBook {
    fn default() -> Self {
        CampaignBook::new(DEFAULT_CAPACITY)
    }
}

impl CampaignBook {
    /// A book of at most `capacity` campaigns (at least 1).
    pub fn new(capacity: usize) -> Self {
        CampaignBook {
            book: Mutex::new(Book::default()),
            capacity: capacity.max(1),
        }
    }

    /// How many campaigns it keeps.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Records one served request of `route`: each campaign's delivery
    /// figures as the policy saw them, and what `decisions` did with its
    /// tracks. `state_kept`: whether the server has a delivery state (so a
    /// figure the caller did not send came from it). Withheld promotions
    /// (`counts_unknown`) count as not promoted.
    pub fn observe(
        &self,
        route: &str,
        req: &ValidRequest<'_>,
        decisions: &WitDecisions,
        state_kept: bool,
        counts_unknown: bool,
    ) {
        let campaigns = req.campaigns();
        if campaigns.is_empty() {
            return;
        }
        // The tally, outside the lock.
        let mut tally = vec![Counts::default(); campaigns.len()];
        for (i, &c) in req.campaign_index().iter().enumerate() {
            let Ok(c) = usize::try_from(c) else { continue };
            let Some(t) = tally.get_mut(c) else { continue };
            let bits = decisions.reasons.get(i).map_or(0, |r| r.reason_bits());
            t.candidates += 1;
            t.eligible += u64::from(decisions.eligible.get(i).copied().unwrap_or(false));
            t.promoted += u64::from(!counts_unknown && bits & reason::PROMOTED != 0);
            t.frequency_capped += u64::from(bits & reason::FREQ_CAPPED != 0);
            t.pacing_throttled += u64::from(bits & reason::PACING_THROTTLED != 0);
            t.inactive += u64::from(bits & reason::CAMPAIGN_INACTIVE != 0);
        }
        let at_ms = req.context.timestamp_ms;
        let sent = req.campaign_sent();
        let mut book = lock(&self.book);
        book.seq += 1;
        let seq = book.seq;
        for (i, (c, t)) in campaigns.iter().zip(&tally).enumerate() {
            let id = req.campaign_id(i);
            if !book.by_id.contains_key(id) && book.by_id.len() >= self.capacity {
                book.evict(self.capacity);
            }
            let track = match book.by_id.get_mut(id) {
                Some(track) => track,
                None => book.by_id.entry(id.into()).or_default(),
            };
            // Figures of an older request (by the caller's clock) than the
            // one already recorded do not replace newer ones.
            if at_ms >= track.last_request_ms {
                if *track.route != *route {
                    track.route = route.into();
                }
                track.last_request_ms = at_ms;
                track.start_ms = c.start_ms;
                track.end_ms = c.end_ms;
                track.target = c.delivery_target;
                track.delivered = c.delivered;
                track.expected_by_now = c.expected_by_now;
                track.pacing_integral = c.pacing_integral;
                track.pacing_last_error = c.pacing_last_error;
                track.source = match sent.get(i) {
                    Some(s) if s.delivered => DeliverySource::Request,
                    _ if state_kept => DeliverySource::State,
                    _ => DeliverySource::Unknown,
                };
            }
            track.last_seq = seq;
            let n = &mut track.counts;
            n.requests += 1;
            n.candidates += t.candidates;
            n.eligible += t.eligible;
            n.promoted += t.promoted;
            n.frequency_capped += t.frequency_capped;
            n.pacing_throttled += t.pacing_throttled;
            n.inactive += t.inactive;
        }
    }

    /// The campaigns, furthest behind schedule first, at most `limit`.
    pub fn list(&self, limit: usize) -> CampaignList {
        let book = lock(&self.book);
        let mut campaigns: Vec<CampaignView> = book
            .by_id
            .iter()
            .map(|(id, t)| CampaignView {
                campaign: id.to_string(),
                route: t.route.to_string(),
                last_request_ms: t.last_request_ms,
                start_ms: t.start_ms,
                end_ms: t.end_ms,
                delivery_target: t.target,
                delivered: t.delivered,
                delivered_from: t.source,
                expected_by_now: t.expected_by_now,
                pace: ratio(t.delivered, t.expected_by_now),
                target_share: ratio(t.delivered, t.target),
                pacing_integral: t.pacing_integral,
                pacing_last_error: t.pacing_last_error,
                counts: t.counts,
            })
            .collect();
        let tracked = campaigns.len();
        let evicted = book.evicted;
        drop(book);
        campaigns.sort_by(|a, b| {
            let behind = |v: &CampaignView| v.pace.unwrap_or(f64::INFINITY);
            behind(a)
                .total_cmp(&behind(b))
                .then_with(|| a.campaign.cmp(&b.campaign))
        });
        campaigns.truncate(limit);
        CampaignList {
            campaigns,
            tracked,
            capacity: self.capacity,
            evicted,
        }
    }
}

impl Book {
    /// Drops the least recently seen tenth of a full book (at least one).
    fn evict(&mut self, capacity: usize) {
        let drop = (capacity / 10).max(1).min(self.by_id.len());
        let mut seqs: Vec<u64> = self.by_id.values().map(|t| t.last_seq).collect();
        let (_, &mut cut, _) = seqs.select_nth_unstable(drop - 1);
        let before = self.by_id.len();
        self.by_id.retain(|_, t| t.last_seq > cut);
        self.evicted += (before - self.by_id.len()) as u64;
    }
}

/// `a / b` when `b` is positive and both are finite.
fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite() && b.is_finite()).then(|| a / b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::WitReason;
    use crate::request::{ScoreRequest, Validate};

    const NOW: i64 = 1_781_524_800_000;

    /// A request at `at_ms` offering `campaigns` (one track each, target
    /// 1000 over 8 days of which 1 has passed) and one organic track.
    fn request(json: &mut Vec<u8>, at_ms: i64, campaigns: &[(&str, Option<f64>)]) {
        let mut candidates: Vec<serde_json::Value> = campaigns
            .iter()
            .enumerate()
            .map(|(i, (id, delivered))| {
                let mut c = serde_json::json!({"id": id, "start_ms": NOW - 86_400_000,
                    "end_ms": NOW + 7 * 86_400_000, "delivery_target": 1000.0});
                if let Some(d) = delivered {
                    c["delivered"] = (*d).into();
                }
                serde_json::json!({"id": format!("t{i}"), "relevance": 0.5, "campaign": c})
            })
            .collect();
        candidates.push(serde_json::json!({"id": "organic", "relevance": 0.4}));
        *json = serde_json::to_vec(&serde_json::json!({
            "context": {"request_id": "r", "listener_id": "u", "session_id": "s", "surface": "radio",
                        "market": "SE", "timestamp_ms": at_ms},
            "candidates": candidates,
        }))
        .unwrap();
    }

    fn decisions(reasons: &[WitReason]) -> WitDecisions {
        WitDecisions {
            scores: vec![0.5; reasons.len()],
            eligible: reasons
                .iter()
                .map(|r| r.contains(WitReason::PROMOTED))
                .collect(),
            reasons: reasons.to_vec(),
            propensity: vec![0.0; reasons.len()],
            debug: Vec::new(),
            campaign_updates: Vec::new(),
        }
    }

    #[test]
    fn counts_what_the_policy_did_with_each_campaigns_tracks_and_its_pace() {
        let book = CampaignBook::new(10);
        let mut body = Vec::new();
        request(&mut body, NOW, &[("c1", Some(50.0)), ("c2", None)]);
        let req = crate::request::parse(&body).unwrap().validate(100).unwrap();
        let d = decisions(&[
            WitReason::PROMOTED,
            WitReason::FREQ_CAPPED,
            WitReason::ORGANIC,
        ]);
        book.observe("radio", &req, &d, true, false);
        book.observe("radio", &req, &d, true, true);
        let list = book.list(10);
        assert_eq!(list.tracked, 2);
        let c1 = list.campaigns.iter().find(|c| c.campaign == "c1").unwrap();
        let c2 = list.campaigns.iter().find(|c| c.campaign == "c2").unwrap();
        assert_eq!(
            c1.counts,
            Counts {
                requests: 2,
                candidates: 2,
                eligible: 2,
                promoted: 1, // the second time the promotions were withheld
                ..Counts::default()
            }
        );
        assert_eq!(c2.counts.frequency_capped, 2);
        assert_eq!(c2.counts.promoted, 0);
        assert_eq!(c1.delivered_from, DeliverySource::Request);
        assert_eq!(c2.delivered_from, DeliverySource::State);
        // One day of eight has passed: 125 of 1000 expected.
        assert_eq!(c1.expected_by_now, 125.0);
        assert_eq!(c1.pace, Some(50.0 / 125.0));
        assert_eq!(c1.target_share, Some(0.05));
        // c2 delivered nothing: furthest behind, listed first.
        assert_eq!(list.campaigns[0].campaign, "c2");
        assert_eq!(list.campaigns[0].pace, Some(0.0));
        assert_eq!(book.list(1).campaigns.len(), 1);

        // An older request does not overwrite newer figures, but counts.
        request(&mut body, NOW - 1000, &[("c1", Some(10.0))]);
        let old = crate::request::parse(&body).unwrap().validate(100).unwrap();
        book.observe(
            "autoplay",
            &old,
            &decisions(&[WitReason::empty(), WitReason::empty()]),
            false,
            false,
        );
        let c1 = book
            .list(10)
            .campaigns
            .into_iter()
            .find(|c| c.campaign == "c1")
            .unwrap();
        assert_eq!((c1.delivered, c1.route.as_str()), (50.0, "radio"));
        assert_eq!(c1.counts.requests, 3);
    }

    /// `book` sees one request at `at_ms` offering campaign `id` alone.
    fn seen(book: &CampaignBook, at_ms: i64, id: &str) {
        let mut body = Vec::new();
        request(&mut body, at_ms, &[(id, Some(1.0))]);
        let req = crate::request::parse(&body).unwrap().validate(100).unwrap();
        let none = decisions(&[WitReason::empty(), WitReason::empty()]);
        book.observe("radio", &req, &none, false, false);
    }

    #[test]
    fn a_full_book_drops_the_least_recently_seen_tenth() {
        let book = CampaignBook::new(20);
        for i in 0..20 {
            seen(&book, NOW + i, &format!("c{i:02}"));
        }
        // c00 is seen again: c01 and c02 are now the oldest.
        seen(&book, NOW + 20, "c00");
        seen(&book, NOW + 21, "new");
        let list = book.list(100);
        let ids: Vec<&str> = list.campaigns.iter().map(|c| c.campaign.as_str()).collect();
        assert_eq!(list.tracked, 19);
        assert_eq!(list.evicted, 2);
        assert!(ids.contains(&"c00") && ids.contains(&"new"), "{ids:?}");
        assert!(!ids.contains(&"c01") && !ids.contains(&"c02"), "{ids:?}");
        assert!(
            list.campaigns
                .iter()
                .all(|c| c.delivered_from == DeliverySource::Request)
        );
    }

    #[test]
    fn requests_without_campaigns_leave_the_book_alone() {
        let book = CampaignBook::new(5);
        let body = br#"{"context":{"request_id":"r","listener_id":"u","session_id":"s","surface":"radio","market":"SE","timestamp_ms":1},"candidates":[{"id":"a","relevance":0.5}]}"#;
        let req: ScoreRequest<'_> = crate::request::parse(body).unwrap();
        let req = req.validate(10).unwrap();
        book.observe(
            "radio",
            &req,
            &decisions(&[WitReason::ORGANIC]),
            true,
            false,
        );
        assert_eq!(book.list(10).tracked, 0);
    }
}
