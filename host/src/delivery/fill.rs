//! What the host fills into a request from its delivery-state store.
//!
//! **The request wins.** A value the caller sends is used as sent; the store
//! fills only what is absent:
//!
//! | request field (absent) | filled with |
//! |---|---|
//! | `campaign.delivered` | the campaign's delivered count |
//! | `campaign.pacing_*` (all three absent) | the controller's stored state |
//! | `candidate.impressions_24h`, `session_promoted` | the listener's / session's counts |
//! | `rights_holders[h]` | the holder's 7-day exposure share |
//!
//! `expected_by_now` needs no store: when absent it is the linear schedule
//! ([`RequestCampaign::linear_schedule`](crate::request::RequestCampaign::linear_schedule)). Whatever the store cannot answer
//! stays at its default (0, or NaN = unknown for an exposure share).
//!
//! A [`Fill`] is data: it is built from one store answer, applied to the
//! request, and written to the decision log beside the request, so that a
//! replay rebuilds exactly the batch the policy saw without a store.

use serde::{Deserialize, Serialize};

use oasis_state::{GuardedSnapshot, StateQuery};

use crate::request::ValidRequest;

/// The ids a request needs state for: the [`StateQuery`] slices.
#[derive(Debug, Default)]
pub struct Wanted<'r> {
    /// Candidate ids (all of them when some candidate sent no counts).
    pub tracks: Vec<&'r str>,
    /// Campaigns missing `delivered` or the pacing state, with their index.
    pub campaigns: Vec<&'r str>,
    campaign_index: Vec<usize>,
    /// Rights holders whose exposure was not sent, with their key.
    pub holders: Vec<&'r str>,
    holder_key: Vec<u32>,
}

impl<'r> Wanted<'r> {
    /// What `req` did not send.
    pub fn of(req: &'r ValidRequest<'_>) -> Self {
        let mut w = Wanted::default();
        if req.counts_missing() {
            w.tracks = req.candidates.iter().map(|c| &*c.id).collect();
        }
        for (i, sent) in req.campaign_sent().iter().enumerate() {
            if !sent.delivered || !sent.pacing {
                w.campaigns.push(req.campaign_id(i));
                w.campaign_index.push(i);
            }
        }
        for (k, sent) in req.holders_sent().iter().enumerate() {
            let id = req.holder_id(k as u32);
            if !sent && !id.is_empty() {
                w.holders.push(id);
                w.holder_key.push(k as u32);
            }
        }
        w
    }

    /// Nothing to ask the store.
    pub fn is_empty(&self) -> bool {
        self.tracks.is_empty() && self.campaigns.is_empty() && self.holders.is_empty()
    }

    /// The store query for `req`'s listener, session and time.
    pub fn query<'q>(&'q self, req: &'q ValidRequest<'_>) -> StateQuery<'q> {
        StateQuery {
            now_ms: req.context.timestamp_ms,
            listener_id: &req.context.listener_id,
            session_id: &req.context.session_id,
            tracks: &self.tracks,
            campaigns: &self.campaigns,
            holders: &self.holders,
        }
    }

    /// The [`Fill`] of a store answer to [`Wanted::query`]: only the values
    /// the request did not send, and only those known (from the store, or
    /// last known when it did not answer). A snapshot whose columns are
    /// shorter than the query fills what it has.
    pub fn fill(&self, req: &ValidRequest<'_>, snap: &GuardedSnapshot) -> Fill {
        let mut fill = Fill::default();
        for (j, state) in snap.campaigns.iter().enumerate() {
            let (Some(&index), Some(state)) = (self.campaign_index.get(j), state.value()) else {
                continue;
            };
            let sent = req.campaign_sent()[index];
            let pacing = state.pacing.filter(|_| !sent.pacing);
            let delivered = (!sent.delivered).then_some(state.delivered as f64);
            if delivered.is_some() || pacing.is_some() {
                fill.campaigns.push(CampaignFill {
                    index: index as u32,
                    delivered,
                    pacing: pacing.map(|p| [p.integral, p.last_error, p.updated_ms as f64]),
                });
            }
        }
        if !self.tracks.is_empty() {
            let unknown =
                |v: Option<&oasis_state::Sourced<u32>>| v.is_none_or(|v| v.value().is_none());
            fill.counts_unknown = req.candidates.iter().enumerate().any(|(i, c)| {
                (c.impressions_24h.is_none() && unknown(snap.impressions_24h.get(i)))
                    || (c.session_promoted.is_none() && unknown(snap.session_promoted.get(i)))
            });
            for (i, c) in req.candidates.iter().enumerate() {
                if c.impressions_24h.is_none()
                    && let Some(&v) = snap.impressions_24h.get(i).and_then(|v| v.value())
                    && v > 0
                {
                    fill.impressions_24h.push((i as u32, v));
                }
                if c.session_promoted.is_none()
                    && let Some(&v) = snap.session_promoted.get(i).and_then(|v| v.value())
                    && v > 0
                {
                    fill.session_promoted.push((i as u32, v));
                }
            }
        }
        for (j, share) in snap.exposure_share_7d.iter().enumerate() {
            if let (Some(&key), Some(Some(share))) = (self.holder_key.get(j), share.value()) {
                fill.exposure_share_7d.push((key, *share));
            }
        }
        fill
    }
}

/// The state filled into one request (see the [module docs](self)). Sparse:
/// only values that differ from the request's defaults are listed, so a
/// decision-log line grows by what the store actually supplied.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Fill {
    /// Per campaign (index in the request's distinct campaigns).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub campaigns: Vec<CampaignFill>,
    /// (candidate index, promoted impressions in 24 hours), non-zero only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub impressions_24h: Vec<(u32, u32)>,
    /// (candidate index, promoted plays this session), non-zero only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub session_promoted: Vec<(u32, u32)>,
    /// (rights-holder key, 7-day exposure share).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "exact::pairs"
    )]
    pub exposure_share_7d: Vec<(u32, f64)>,
    /// Some listener or session count the request did not send was not
    /// known (the store did not answer): the host withholds promotions
    /// ([`super::withhold_promotions`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub counts_unknown: bool,
}

/// The state filled into one campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignFill {
    /// Index in the request's distinct campaigns.
    pub index: u32,
    /// Delivered count, when filled.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "exact::option"
    )]
    pub delivered: Option<f64>,
    /// `[integral, last_error, updated_ms]`, when filled.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "exact::triple"
    )]
    pub pacing: Option<[f64; 3]>,
}

impl Fill {
    /// Nothing filled.
    pub fn is_empty(&self) -> bool {
        self.campaigns.is_empty()
            && self.impressions_24h.is_empty()
            && self.session_promoted.is_empty()
            && self.exposure_share_7d.is_empty()
            && !self.counts_unknown
    }

    /// Writes the filled values into `req`. Indices out of range (a fill
    /// logged for another request) are ignored.
    pub fn apply(&self, req: &mut ValidRequest<'_>) {
        let s = req.state_mut();
        for c in &self.campaigns {
            let Some(camp) = s.campaigns.get_mut(c.index as usize) else {
                continue;
            };
            if let Some(d) = c.delivered {
                camp.delivered = d;
            }
            if let Some([integral, last_error, updated_ms]) = c.pacing {
                camp.pacing_integral = integral;
                camp.pacing_last_error = last_error;
                camp.pacing_updated_ms = updated_ms as i64;
            }
        }
        for &(i, v) in &self.impressions_24h {
            if let Some(slot) = s.impressions_24h.get_mut(i as usize) {
                *slot = v;
            }
        }
        for &(i, v) in &self.session_promoted {
            if let Some(slot) = s.session_promoted.get_mut(i as usize) {
                *slot = v;
            }
        }
        for &(k, v) in &self.exposure_share_7d {
            if let Some(slot) = s.exposure_share_7d.get_mut(k as usize) {
                *slot = v;
            }
        }
    }
}

/// Reading a logged fill's numbers exactly. serde_json's default float
/// parser is not correctly rounded (about 5% of these values came back one
/// unit in the last place off), and a stateful policy replayed on a value
/// one ULP off can decide differently, failing the determinism replay. Each
/// number is taken as raw JSON and parsed with Rust's correctly rounded
/// `str::parse::<f64>` (as the decision columns are,
/// [`DecisionColumnsRecord`](crate::decision_log::DecisionColumnsRecord)),
/// rather than turning on serde_json's `float_roundtrip` for every crate
/// of the workspace.
mod exact {
    use serde::de::{Deserialize, Deserializer, Error};
    use serde_json::value::RawValue;

    /// One JSON number, parsed exactly.
    struct Exact(f64);

    impl<'de> Deserialize<'de> for Exact {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let raw = Box::<RawValue>::deserialize(d)?;
            let text = raw.get().trim();
            match text {
                // serde_json writes a non-finite number as `null`.
                "null" => Ok(Exact(f64::NAN)),
                n => n
                    .parse::<f64>()
                    .map(Exact)
                    .map_err(|e| D::Error::custom(format_args!("{n:.40}: {e}"))),
            }
        }
    }

    pub(super) fn option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        Ok(Option::<Exact>::deserialize(d)?.map(|e| e.0))
    }

    pub(super) fn triple<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[f64; 3]>, D::Error> {
        Ok(Option::<[Exact; 3]>::deserialize(d)?.map(|[a, b, c]| [a.0, b.0, c.0]))
    }

    pub(super) fn pairs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(u32, f64)>, D::Error> {
        Ok(Vec::<(u32, Exact)>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{Validate, parse};

    /// Fails with serde_json's default float parser: it reads the
    /// `1.4000000000000001` written for `14.0 * 0.1` as `1.4`.
    #[test]
    fn logged_fill_numbers_read_back_bit_for_bit() {
        let x = 14.0 * 0.1;
        let values = [x, 0.1 + 0.2, 1.0 / 3.0, 2.0f64.sqrt(), 1e-300 * 7.0];
        let fill = Fill {
            campaigns: values
                .iter()
                .enumerate()
                .map(|(i, &v)| CampaignFill {
                    index: i as u32,
                    delivered: Some(v),
                    pacing: Some([v, -v, 1_781_524_800_000.0]),
                })
                .collect(),
            exposure_share_7d: values
                .iter()
                .enumerate()
                .map(|(i, &v)| (i as u32, v))
                .collect(),
            ..Default::default()
        };
        let line = serde_json::to_vec(&fill).unwrap();
        let back: Fill = serde_json::from_slice(&line).unwrap();
        let bits = |f: &Fill| {
            let mut out = Vec::new();
            for c in &f.campaigns {
                out.push(c.delivered.unwrap().to_bits());
                out.extend(c.pacing.unwrap().map(f64::to_bits));
            }
            out.extend(f.exposure_share_7d.iter().map(|(_, v)| v.to_bits()));
            out
        };
        assert_eq!(bits(&back), bits(&fill));
        // Inside a record, as replay reads it.
        let record: crate::decision_log::DecisionRecord = serde_json::from_str(&format!(
            r#"{{"v":1,"at_ms":0,"request_id":"r","route":"x","variant":"stable","arm":"stable",
                "shadow":false,"policy":{{"name":"p","version":"1.0.0","digest":"sha256:0"}},
                "settings_sha256":"0","fallback":null,"request":{{}},"state":{},
                "decisions":{{"scores":[],"eligible":[],"reasons":[],"propensity":[]}},
                "timing":{{"server_us":0,"policy_us":0}},"usage":null}}"#,
            String::from_utf8(line).unwrap()
        ))
        .unwrap();
        assert_eq!(bits(record.state.as_ref().unwrap()), bits(&fill));
    }
    use oasis_state::{CampaignState, PacingState, Source, Sourced};

    const BODY: &[u8] = br#"{"context": {"request_id": "r", "listener_id": "u", "session_id": "s",
        "surface": "radio", "market": "SE", "timestamp_ms": 5000},
      "rights_holders": {"L": {"exposure_share_7d": 0.5}},
      "candidates": [
        {"id": "a", "relevance": 0.9, "rights_holder": "L", "impressions_24h": 4,
         "campaign": {"id": "sent", "start_ms": 0, "end_ms": 10000, "delivery_target": 10,
                      "delivered": 3, "pacing_integral": 0.1}},
        {"id": "b", "relevance": 0.8, "rights_holder": "M",
         "campaign": {"id": "open", "start_ms": 0, "end_ms": 10000, "delivery_target": 10}},
        {"id": "c", "relevance": 0.7}
      ]}"#;

    #[test]
    fn the_request_wins_and_the_store_fills_only_what_is_absent() {
        let mut req = parse(BODY).unwrap().validate(10).unwrap();
        let wanted = Wanted::of(&req);
        assert_eq!(wanted.tracks, ["a", "b", "c"], "some counts are absent");
        assert_eq!(wanted.campaigns, ["open"], "`sent` sent both");
        assert_eq!(wanted.holders, ["M"], "L was sent; c has no holder");
        let q = wanted.query(&req);
        assert_eq!((q.now_ms, q.listener_id, q.session_id), (5000, "u", "s"));

        let pacing = PacingState {
            integral: -0.2,
            last_error: 0.05,
            updated_ms: 4000,
        };
        let snap = GuardedSnapshot {
            source: Source::Store,
            campaigns: vec![Sourced::Store(CampaignState {
                delivered: 7,
                pacing: Some(pacing),
            })],
            impressions_24h: [9, 2, 0].map(Sourced::Store).to_vec(),
            session_promoted: vec![Sourced::Store(1), Sourced::LastKnown(0), Sourced::Store(3)],
            exposure_share_7d: vec![Sourced::Store(Some(0.25))],
        };
        let fill = wanted.fill(&req, &snap);
        assert!(!fill.counts_unknown);
        // `a` sent impressions_24h (kept) but not session_promoted (filled).
        assert_eq!(fill.impressions_24h, [(1, 2)]);
        assert_eq!(fill.session_promoted, [(0, 1), (2, 3)]);
        assert_eq!(fill.exposure_share_7d, [(1, 0.25)]);
        fill.apply(&mut req);
        assert_eq!(req.impressions_24h(), [4, 2, 0]);
        assert_eq!(req.session_promoted(), [1, 0, 3]);
        assert_eq!(req.exposure_share_7d()[0], 0.5);
        assert_eq!(req.exposure_share_7d()[1], 0.25);
        let [sent, open] = req.campaigns() else {
            panic!("two campaigns")
        };
        assert_eq!((sent.delivered, sent.pacing_integral), (3.0, 0.1));
        assert_eq!(
            (open.delivered, open.pacing_integral, open.pacing_updated_ms),
            (7.0, -0.2, 4000)
        );
        assert_eq!(open.expected_by_now, 5.0, "linear schedule at half time");

        // The fill survives the decision log's JSON and applies the same.
        let logged: Fill = serde_json::from_str(&serde_json::to_string(&fill).unwrap()).unwrap();
        assert_eq!(logged, fill);

        // A store that did not answer fills nothing it does not know.
        let req = parse(BODY).unwrap().validate(10).unwrap();
        let down = GuardedSnapshot {
            source: Source::LastKnown,
            campaigns: vec![Sourced::Unknown],
            impressions_24h: vec![Sourced::Unknown; 3],
            session_promoted: vec![Sourced::Unknown; 3],
            exposure_share_7d: vec![Sourced::LastKnown(Some(0.5))],
        };
        let fill = Wanted::of(&req).fill(&req, &down);
        assert!(fill.campaigns.is_empty() && fill.impressions_24h.is_empty());
        assert!(fill.counts_unknown, "and says so");
        assert_eq!(fill.exposure_share_7d, [(1, 0.5)]);
    }

    #[test]
    fn a_request_that_sends_everything_asks_nothing() {
        let body = br#"{"context": {"request_id": "r", "listener_id": "u", "session_id": "s",
            "surface": "radio", "market": "SE", "timestamp_ms": 5},
          "candidates": [{"id": "a", "relevance": 0.9, "impressions_24h": 0, "session_promoted": 0,
            "campaign": {"id": "c", "start_ms": 0, "end_ms": 10, "delivery_target": 1,
                         "delivered": 0, "pacing_integral": 0, "pacing_last_error": 0}}]}"#;
        let req = parse(body).unwrap().validate(10).unwrap();
        assert!(Wanted::of(&req).is_empty());
    }
}
