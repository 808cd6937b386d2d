//! The line format: one [`DecisionRecord`] per line, JSON, version [`VERSION`].
//!
//! A record is written once and read for years (replay, audits, offline
//! evaluation of a new policy against logged traffic), so the format is
//! meant to grow without breaking readers:
//!
//! * readers **ignore unknown fields** (no `deny_unknown_fields`): a field
//!   added later does not break an old `oasis replay`;
//! * a field that may be absent is an `Option` and reads as `None` when
//!   missing;
//! * an incompatible change bumps [`VERSION`] (the `v` field), so a reader
//!   can tell old lines from new ones.
//!
//! The request is kept as the policy received it, as raw JSON
//! ([`RawValue`]): re-encoding it through a generic value would reorder keys
//! and could change a float by one unit in the last place, and replay must
//! rebuild *exactly* the batch the policy saw. The decisions are kept as
//! columns aligned with the request's candidates, as the contract has them.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use oasis_contract::ReasonBits;

use crate::bindings::WitDecisions;
use crate::metadata::PolicyRef;
use crate::policy::Usage;

/// The version of the line format written by this build (the `v` field).
pub const VERSION: u32 = 1;

/// One scored request (or one shadow's decisions on it): a line of the
/// decision log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// Line format version, [`VERSION`].
    pub v: u32,
    /// When the request was scored, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The request's `context.request_id`.
    pub request_id: String,
    /// The route that served it.
    pub route: String,
    /// How it was served: `stable`, `canary`, `fallback`, `killed`, or
    /// `shadow` for a shadow's decisions.
    pub variant: String,
    /// The arm whose decisions these are: `canary`, `stable`, `baseline`,
    /// `passthrough`, or `shadow`.
    pub arm: String,
    /// Whether these are a shadow's decisions (computed, never served).
    pub shadow: bool,
    /// The policy version that decided.
    pub policy: PolicyRefRecord,
    /// `sha256` (hex) of the settings the policy was loaded with.
    pub settings_sha256: String,
    /// The arm that failed before the one that decided, when one did.
    pub fallback: Option<FallbackRecord>,
    /// The request body as received (JSON), enough to rebuild the batch
    /// exactly; `context.listener_id` and `context.session_id` are
    /// pseudonyms when the log is configured with a key.
    pub request: Box<RawValue>,
    /// The delivery state the host filled into the request from its store
    /// (values the request did not send); replay applies it after
    /// validating `request`, so the batch is rebuilt without a store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<crate::delivery::Fill>,
    /// The decisions, one entry per candidate in each column.
    pub decisions: DecisionColumnsRecord,
    /// Time spent.
    pub timing: TimingRecord,
    /// Resources the deciding policy used (none for the passthrough).
    pub usage: Option<UsageRecord>,
}

/// A record as `oasis replay` reads it: the fields replay uses, with the
/// request parsed *in place* from the line (its strings borrowed, one pass
/// over its JSON) instead of kept as raw text and parsed again. A record is
/// mostly its request (~94 KB at 300 candidates), so this is most of the
/// parse cost of a replayed record. A line this cannot read is read again
/// as a [`DecisionRecord`] to say precisely what is wrong.
#[derive(Debug, Deserialize)]
pub struct ReplayRecord<'a> {
    /// The request's `context.request_id`.
    #[serde(borrow)]
    pub request_id: std::borrow::Cow<'a, str>,
    /// The route that served it; empty when absent.
    #[serde(borrow, default)]
    pub route: std::borrow::Cow<'a, str>,
    /// How it was served (`fallback`: by the baseline after the policy
    /// failed); empty when absent.
    #[serde(borrow, default)]
    pub variant: std::borrow::Cow<'a, str>,
    /// The arm whose decisions these are.
    #[serde(borrow)]
    pub arm: std::borrow::Cow<'a, str>,
    /// Whether these are a shadow's decisions.
    pub shadow: bool,
    /// The policy version that decided.
    pub policy: PolicyRefRecord,
    /// `sha256` (hex) of its settings.
    #[serde(borrow)]
    pub settings_sha256: std::borrow::Cow<'a, str>,
    /// The request, parsed (taken by the replay).
    #[serde(borrow)]
    pub request: Option<crate::request::ScoreRequest<'a>>,
    /// The delivery state the server filled in.
    #[serde(default)]
    pub state: Option<crate::delivery::Fill>,
    /// The logged decisions.
    pub decisions: DecisionColumnsRecord,
}

impl<'a> ReplayRecord<'a> {
    /// Parses one line of a decision log for replay.
    ///
    /// # Errors
    /// The line is not a record, or its request does not parse.
    pub fn from_line(line: &'a [u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(line)
    }
}

impl DecisionRecord {
    /// Parses one line of a decision log.
    ///
    /// # Errors
    /// The line is not a record (torn, garbage, another format).
    pub fn from_line(line: &[u8]) -> Result<DecisionRecord, serde_json::Error> {
        serde_json::from_slice(line)
    }
}

/// Equality compares the request by its JSON text ([`RawValue`] has no
/// `PartialEq` of its own).
impl PartialEq for DecisionRecord {
    fn eq(&self, o: &Self) -> bool {
        self.v == o.v
            && self.at_ms == o.at_ms
            && self.request_id == o.request_id
            && self.route == o.route
            && self.variant == o.variant
            && self.arm == o.arm
            && self.shadow == o.shadow
            && self.policy == o.policy
            && self.settings_sha256 == o.settings_sha256
            && self.fallback == o.fallback
            && self.request.get() == o.request.get()
            && self.state == o.state
            && self.decisions == o.decisions
            && self.timing == o.timing
            && self.usage == o.usage
    }
}

/// A policy version's identity, as logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRefRecord {
    /// Policy name.
    pub name: String,
    /// Semantic version.
    pub version: String,
    /// `sha256:…` of the component.
    pub digest: String,
}

impl From<&PolicyRef> for PolicyRefRecord {
    fn from(p: &PolicyRef) -> Self {
        PolicyRefRecord {
            name: p.name.to_string(),
            version: p.version.clone(),
            digest: p.digest.clone(),
        }
    }
}

/// The arm that failed before the one that decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FallbackRecord {
    /// The policy version that failed.
    pub policy: PolicyRefRecord,
    /// Category of its error (`timeout`, `trap`, ...; see
    /// [`CallErrorKind::as_str`](crate::CallErrorKind::as_str)).
    pub error_kind: String,
    /// The error, for humans.
    pub error: String,
}

/// The decisions as columns aligned with the request's candidates.
///
/// The float columns read back bit for bit: they are parsed with Rust's
/// correctly rounded `f64` parser rather than serde_json's default one,
/// which can land one unit in the last place off (it reads the
/// `1.4000000000000001` it wrote for `14.0 * 0.1` as `1.4`). A non-finite
/// value (which the contract refuses anyway) is written as `null` and
/// read back as NaN.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DecisionColumnsRecord {
    /// Promotion score per candidate.
    #[serde(deserialize_with = "exact_f64s")]
    pub scores: Vec<f64>,
    /// Whether each candidate may be promoted.
    pub eligible: Vec<bool>,
    /// Reason bits per candidate (`oasis_contract::reason`).
    pub reasons: Vec<u16>,
    /// Propensity per candidate, in [0, 1].
    #[serde(deserialize_with = "exact_f64s")]
    pub propensity: Vec<f64>,
}

/// A JSON array of numbers, each parsed exactly (see
/// [`DecisionColumnsRecord`]): the array is taken as raw JSON (one
/// allocation) and its numbers are parsed with `str::parse::<f64>`.
fn exact_f64s<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    use serde::de::Error;
    let raw = Box::<RawValue>::deserialize(d)?;
    let text = raw.get().trim();
    let items = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .ok_or_else(|| {
            D::Error::custom(format_args!(
                "expected an array of numbers, found {text:.40}"
            ))
        })?;
    if items.trim().is_empty() {
        return Ok(Vec::new());
    }
    items
        .split(',')
        .map(|item| match item.trim() {
            "null" => Ok(f64::NAN),
            // The raw value is valid JSON, so an item that starts like a
            // number is one (JSON has no `inf`, `NaN`, `+1` or `.5`).
            n if n.starts_with(|c: char| c == '-' || c.is_ascii_digit()) => n
                .parse::<f64>()
                .map_err(|e| D::Error::custom(format_args!("{n:.40}: {e}"))),
            other => Err(D::Error::custom(format_args!(
                "expected a number, found {other:.40}"
            ))),
        })
        .collect()
}

impl DecisionColumnsRecord {
    /// Copies the columns of a policy's decisions (the debug values are not
    /// logged).
    pub fn from_wit(d: &WitDecisions) -> Self {
        DecisionColumnsRecord {
            scores: d.scores.clone(),
            eligible: d.eligible.clone(),
            reasons: d.reasons.iter().map(|r| r.reason_bits()).collect(),
            propensity: d.propensity.clone(),
        }
    }
}

/// Time spent on the request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimingRecord {
    /// In the server, from the body read to the response encoded,
    /// microseconds.
    pub server_us: u64,
    /// In the deciding policy's call, microseconds (0 for the passthrough).
    pub policy_us: u64,
}

/// Resources the deciding policy used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// Wall time of instantiate + call, microseconds.
    pub wall_us: u64,
    /// High-water mark of the instance's linear memory, bytes.
    pub peak_memory_bytes: u64,
    /// Fuel consumed, when measured.
    pub fuel: Option<u64>,
}

impl From<&Usage> for UsageRecord {
    fn from(u: &Usage) -> Self {
        UsageRecord {
            wall_us: u.wall_us,
            peak_memory_bytes: u.peak_memory_bytes as u64,
            fuel: u.fuel,
        }
    }
}

/// The writer's borrowed view of a record: the same fields, in the same
/// order and with the same names as [`DecisionRecord`] (the round-trip
/// tests hold the two together), serialized without copying the pending
/// record's strings.
#[derive(Serialize)]
pub(super) struct RecordView<'a> {
    pub v: u32,
    pub at_ms: u64,
    pub request_id: &'a str,
    pub route: &'a str,
    pub variant: &'a str,
    pub arm: &'a str,
    pub shadow: bool,
    pub policy: PolicyView<'a>,
    pub settings_sha256: &'a str,
    pub fallback: Option<FallbackView<'a>>,
    pub request: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'a crate::delivery::Fill>,
    pub decisions: &'a DecisionColumnsRecord,
    pub timing: &'a TimingRecord,
    pub usage: &'a Option<UsageRecord>,
}

/// Borrowed [`PolicyRefRecord`].
#[derive(Serialize)]
pub(super) struct PolicyView<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub digest: &'a str,
}

impl<'a> From<&'a Arc<PolicyRef>> for PolicyView<'a> {
    fn from(p: &'a Arc<PolicyRef>) -> Self {
        PolicyView {
            name: &p.name,
            version: &p.version,
            digest: &p.digest,
        }
    }
}

/// Borrowed [`FallbackRecord`].
#[derive(Serialize)]
pub(super) struct FallbackView<'a> {
    pub policy: PolicyView<'a>,
    pub error_kind: &'a str,
    pub error: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_ignored_and_missing_options_are_none() {
        let line = r#"{"v":1,"at_ms":5,"request_id":"r","route":"radio","variant":"stable",
            "arm":"stable","shadow":false,"policy":{"name":"p","version":"1.0.0","digest":"sha256:x",
            "added_later":1},"settings_sha256":"ab","request":{"a" : 1},
            "decisions":{"scores":[0.5],"eligible":[true],"reasons":[2],"propensity":[1.0]},
            "timing":{"server_us":3,"policy_us":2},"a_future_field":{"x":[1,2]}}"#;
        let r: DecisionRecord = serde_json::from_str(line).unwrap();
        assert_eq!(r.v, 1);
        assert_eq!(r.fallback, None);
        assert_eq!(r.usage, None);
        assert_eq!(r.request.get(), r#"{"a" : 1}"#, "kept verbatim");
        assert_eq!(r.decisions.reasons, [2]);
    }

    #[test]
    fn replay_reads_the_request_in_place_and_refuses_one_that_does_not_parse() {
        let line = |request: &str| {
            format!(
                r#"{{"v":1,"at_ms":5,"request_id":"r","route":"radio","variant":"stable",
            "arm":"stable","shadow":false,"policy":{{"name":"p","version":"1.0.0","digest":"sha256:x"}},
            "settings_sha256":"ab","request":{request},"state":{{"impressions_24h":[[0,2]]}},
            "decisions":{{"scores":[0.5],"eligible":[true],"reasons":[2],"propensity":[1.0]}},
            "timing":{{"server_us":3,"policy_us":2}}}}"#
            )
        };
        let ok = line(
            r#"{"context":{"request_id":"r","listener_id":"u","session_id":"s","surface":"radio",
               "market":"SE","timestamp_ms":5},"candidates":[{"id":"t\u00e9","relevance":0.5}]}"#,
        );
        let r = ReplayRecord::from_line(ok.as_bytes()).unwrap();
        let req = r.request.as_ref().unwrap();
        assert_eq!(req.candidates[0].id, "t\u{e9}", "escapes decoded");
        assert!(matches!(
            req.context.listener_id,
            std::borrow::Cow::Borrowed("u")
        ));
        assert_eq!(r.state.as_ref().unwrap().impressions_24h, [(0, 2)]);
        assert_eq!((r.policy.digest.as_str(), &*r.arm), ("sha256:x", "stable"));
        // A request that is not a scoring request: not a replay record (the
        // replay then reads it as a plain record to say what is wrong).
        let bad = line(r#"{"a": 1}"#);
        assert!(ReplayRecord::from_line(bad.as_bytes()).is_err());
        assert!(DecisionRecord::from_line(bad.as_bytes()).is_ok());
    }

    #[test]
    fn float_columns_read_back_bit_for_bit() {
        let d = DecisionColumnsRecord {
            scores: (0..200)
                .map(|i| i as f64 * 0.1)
                .chain([f64::MIN_POSITIVE, -0.0, 1e300, 5e-324])
                .collect(),
            propensity: vec![1.0 / 3.0, 0.1 + 0.2],
            ..Default::default()
        };
        let json = serde_json::to_string(&d).unwrap();
        let back: DecisionColumnsRecord = serde_json::from_str(&json).unwrap();
        let bits = |v: &[f64]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back.scores), bits(&d.scores));
        assert_eq!(bits(&back.propensity), bits(&d.propensity));
        let spaced: DecisionColumnsRecord = serde_json::from_str(
            r#"{"scores": [ 1 , -2.5e3 ,null ], "eligible": [], "reasons": [], "propensity": [ ]}"#,
        )
        .unwrap();
        assert_eq!(spaced.scores[..2], [1.0, -2500.0]);
        assert!(spaced.scores[2].is_nan());
        assert!(spaced.propensity.is_empty());
        for bad in [r#"["1"]"#, r#"[[1]]"#, r#"{"a":1}"#, r#"1"#] {
            let line =
                format!(r#"{{"scores": {bad}, "eligible": [], "reasons": [], "propensity": []}}"#);
            assert!(
                serde_json::from_str::<DecisionColumnsRecord>(&line).is_err(),
                "{bad}"
            );
        }
    }
}
