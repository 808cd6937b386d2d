//! Simulated listeners: what they do with the campaign tracks of a scored
//! request, as outcome events for `POST /v1/outcomes`.
//!
//! The reward model is the one the off-policy simulation test
//! (`simulate.rs`) uses, so the walkthrough in
//! docs/decision-logs-and-replay.md (serve with a decision log, run
//! `pzn-client --outcomes`, `oasis replay --outcomes`) estimates values
//! under a known model: a campaign track is streamed with probability
//! [`stream_probability`], else skipped. Promoting a relevant track pays,
//! promoting an irrelevant one does not; a likely skip lowers it either way.
//!
//! Draws are seeded from the run's seed and the request id, so the same run
//! posts the same events.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

/// The probability that a listener streams a campaign track, given whether
/// it was promoted: `clamp(0.02 + 5·(relevance − 0.25)·[promoted] − 0.02·p_skip, 0, 1)`
/// (`p_skip` 0.5 when missing).
pub fn stream_probability(relevance: f64, p_skip: Option<f64>, promoted: bool) -> f64 {
    let p_skip = p_skip.unwrap_or(0.5);
    let lift = if promoted {
        5.0 * (relevance - 0.25)
    } else {
        0.0
    };
    (0.02 + lift - 0.02 * p_skip).clamp(0.0, 1.0)
}

/// What the model needs of one campaign track of a request.
#[derive(Debug, Clone)]
pub struct CampaignTrack {
    /// Candidate id.
    pub id: String,
    /// Its relevance in the request.
    pub relevance: f64,
    /// Its `p_skip` feature.
    pub p_skip: Option<f64>,
}

/// One line of `POST /v1/outcomes`.
#[derive(Debug, Serialize)]
struct Event<'a> {
    request_id: &'a str,
    candidate_id: &'a str,
    event: &'static str,
}

/// The outcome events of one scored request as JSON lines: per campaign
/// track, `stream` or `skip` drawn from the model; `promoted(id)` says
/// whether the server promoted it. Returns the body and the event count.
pub fn events(
    seed: u64,
    request_id: &str,
    tracks: &[CampaignTrack],
    promoted: impl Fn(&str) -> bool,
) -> (Vec<u8>, usize) {
    let mut rng = StdRng::seed_from_u64(seed ^ fnv1a(request_id.as_bytes()));
    let mut body = Vec::new();
    for t in tracks {
        let p = stream_probability(t.relevance, t.p_skip, promoted(&t.id));
        let event = if rng.random::<f64>() < p {
            "stream"
        } else {
            "skip"
        };
        let e = Event {
            request_id,
            candidate_id: &t.id,
            event,
        };
        serde_json::to_writer(&mut body, &e).expect("events serialize");
        body.push(b'\n');
    }
    (body, tracks.len())
}

/// A stable 64-bit hash (FNV-1a) for seeding: the same on every platform
/// and Rust version.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_follow_the_model_and_are_reproducible() {
        let tracks: Vec<CampaignTrack> = (0..2000)
            .map(|i| CampaignTrack {
                id: format!("t{i}"),
                relevance: 0.3,
                p_skip: Some(0.5),
            })
            .collect();
        let promoted = |id: &str| id.ends_with('0') || id.ends_with('5');
        let (a, n) = events(7, "r-1", &tracks, promoted);
        let (b, _) = events(7, "r-1", &tracks, promoted);
        assert_eq!((a.clone(), n), (b, 2000), "same seed and id, same events");
        let (c, _) = events(7, "r-2", &tracks, promoted);
        assert_ne!(a, c, "another request draws anew");
        // Stream rates: promoted 0.02 + 0.25 - 0.01 = 0.26, else 0.01.
        let lines: Vec<serde_json::Value> = a
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        let rate = |want: bool| {
            let sel: Vec<_> = lines
                .iter()
                .filter(|l| promoted(l["candidate_id"].as_str().unwrap()) == want)
                .collect();
            sel.iter().filter(|l| l["event"] == "stream").count() as f64 / sel.len() as f64
        };
        assert!((rate(true) - 0.26).abs() < 0.05, "{}", rate(true));
        assert!(rate(false) < 0.03, "{}", rate(false));
        assert_eq!(lines[0]["request_id"], "r-1");
    }
}
