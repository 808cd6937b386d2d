//! An `oasis.v1.ScoreRequest` read in place: the candidate columns' strings
//! borrowed from the message's bytes, its packed numbers copied once into
//! columns, instead of prost's owned message (a `String` allocated per id,
//! artist and rights holder, packed doubles pushed one at a time).
//!
//! Why: at 1000 candidates × 30 features, prost's decode was ~80% of the gRPC
//! front end's decode + validate (BENCHMARKS.md, "`scripts/bench`, session
//! 14"): an allocation per string ~24%, the doubles ~17%. The candidate
//! columns are the whole of that cost, so only they are read here; the small
//! parts (the context, each campaign, the rights holders' values) are still
//! decoded by prost, with its merge semantics.
//!
//! The reader is strict: a message it does not fully understand (a wire type
//! other than the field's, a group, bytes that end early, a string that is
//! not UTF-8, a field the context or a campaign cannot decode) gives `None`,
//! and [`ProtoMessage`] then decodes the message with prost, which names the
//! error, or takes it if it is valid after all. So what a message means and
//! how a bad one is refused are prost's, field for field: repeated fields
//! concatenate, a scalar or string given twice keeps the last, a message
//! field given twice merges, packed and unpacked repeated numbers are both
//! read, unknown fields are skipped (tested against prost in
//! `tests::the_view_is_prost_s_reading`).

use std::sync::OnceLock;

use oasis_proto::prost::Message;
use oasis_proto::v1;

use super::RequestError;

/// A gRPC request's bytes, read in place when possible and by prost
/// otherwise (see the module docs). Each reading is made once, when first
/// asked for (so inside the caller's decode span).
pub struct ProtoMessage<'b> {
    bytes: &'b [u8],
    view: OnceLock<Option<MessageView<'b>>>,
    owned: OnceLock<Result<v1::ScoreRequest, oasis_proto::prost::DecodeError>>,
}

impl<'b> ProtoMessage<'b> {
    /// The message in `bytes`, not yet read.
    pub fn new(bytes: &'b [u8]) -> Self {
        ProtoMessage {
            bytes,
            view: OnceLock::new(),
            owned: OnceLock::new(),
        }
    }

    /// The in-place reading, `None` when the reader does not take the bytes.
    pub fn view(&self) -> Option<&MessageView<'b>> {
        self.view
            .get_or_init(|| MessageView::read(self.bytes))
            .as_ref()
    }

    /// The message as prost decodes it.
    ///
    /// # Errors
    /// [`RequestError::Malformed`] naming prost's error when the bytes are not
    /// an `oasis.v1.ScoreRequest`.
    pub fn message(&self) -> Result<&v1::ScoreRequest, RequestError> {
        self.owned
            .get_or_init(|| v1::ScoreRequest::decode(self.bytes))
            .as_ref()
            .map_err(|e| RequestError::Malformed {
                path: String::new(),
                message: format!("not a valid oasis.v1.ScoreRequest: {e}"),
            })
    }
}

/// A `ScoreRequest` whose candidate columns borrow from the message bytes.
#[derive(Debug, Default, PartialEq)]
pub struct MessageView<'b> {
    /// Field 1.
    pub route: &'b str,
    /// Field 2, decoded (and merged when repeated) by prost.
    pub context: Option<v1::Context>,
    /// Field 3, the columns (a repeated `candidates` concatenates them, as
    /// prost's merge does).
    pub candidates: Columns<'b>,
    /// Field 4, each decoded by prost.
    pub campaigns: Vec<v1::Campaign>,
    /// Field 5.
    pub debug: bool,
    /// Field 6, the map's entries in message order (a later key replaces an
    /// earlier one when they are collected, as in prost's map).
    pub rights_holders: Vec<(&'b str, v1::RightsHolder)>,
}

/// `oasis.v1.Candidates`, strings borrowed.
#[derive(Debug, Default, PartialEq)]
pub struct Columns<'b> {
    /// Field 1.
    pub ids: Vec<&'b str>,
    /// Field 2.
    pub relevance: Vec<f64>,
    /// Field 3.
    pub artists: Vec<&'b str>,
    /// Field 4.
    pub rights_holders: Vec<&'b str>,
    /// Field 5.
    pub impressions_24h: Vec<u32>,
    /// Field 6.
    pub session_promoted: Vec<u32>,
    /// Field 7.
    pub campaign: Vec<i32>,
    /// Field 8 (few, so owned: the column checks take `&[String]`).
    pub feature_names: Vec<String>,
    /// Field 9.
    pub features: Vec<f64>,
}

/// One field's payload.
enum Value<'b> {
    Varint(u64),
    Fixed64([u8; 8]),
    Bytes(&'b [u8]),
    Fixed32,
}

/// A base-128 varint, as prost reads it (at most 10 bytes, the tenth 0 or
/// 1); `None` past the end. Written here rather than calling
/// `prost::encoding::decode_varint`: that module is prost's generated code's
/// (`#[doc(hidden)]`, outside its semver promise).
fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&byte, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return (i < 9 || byte <= 1).then_some(value);
        }
    }
    None
}

/// Reads the next field of `buf`: its number and payload; `None` at a group,
/// an invalid key or bytes that end early.
fn field<'b>(buf: &mut &'b [u8]) -> Option<(u32, Value<'b>)> {
    let key = u32::try_from(varint(buf)?).ok()?;
    let tag = key >> 3;
    if tag == 0 {
        return None;
    }
    let value = match key & 7 {
        0 => Value::Varint(varint(buf)?),
        1 => {
            let (head, rest) = buf.split_first_chunk::<8>()?;
            *buf = rest;
            Value::Fixed64(*head)
        }
        2 => {
            let len = usize::try_from(varint(buf)?).ok()?;
            if len > buf.len() {
                return None;
            }
            let (head, rest) = buf.split_at(len);
            *buf = rest;
            Value::Bytes(head)
        }
        5 => {
            *buf = buf.get(4..)?;
            Value::Fixed32
        }
        // 3 and 4 are groups, 6 and 7 are not wire types.
        _ => return None,
    };
    Some((tag, value))
}

fn text(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok()
}

/// A repeated double: packed (a multiple of 8 bytes) or one value.
fn doubles(value: Value<'_>, out: &mut Vec<f64>) -> Option<()> {
    match value {
        Value::Bytes(b) => {
            let chunks = b.chunks_exact(8);
            if !chunks.remainder().is_empty() {
                return None;
            }
            out.reserve(b.len() / 8);
            out.extend(chunks.map(|c| f64::from_le_bytes(c.try_into().unwrap_or_default())));
        }
        Value::Fixed64(b) => out.push(f64::from_le_bytes(b)),
        _ => return None,
    }
    Some(())
}

/// A repeated varint (uint32, int32: prost truncates the 64-bit value):
/// packed or one value.
fn varints<T>(value: Value<'_>, out: &mut Vec<T>, from: impl Fn(u64) -> T) -> Option<()> {
    match value {
        Value::Bytes(mut b) => {
            while !b.is_empty() {
                out.push(from(varint(&mut b)?));
            }
        }
        Value::Varint(v) => out.push(from(v)),
        _ => return None,
    }
    Some(())
}

fn string<'b>(value: Value<'b>) -> Option<&'b str> {
    match value {
        Value::Bytes(b) => text(b),
        _ => None,
    }
}

impl<'b> MessageView<'b> {
    /// The route, `None` for the default (an empty string on the wire).
    pub fn route(&self) -> Option<&'b str> {
        (!self.route.is_empty()).then_some(self.route)
    }

    /// Reads a `ScoreRequest`; `None` on anything the reader does not take
    /// (see the module docs).
    pub fn read(mut buf: &'b [u8]) -> Option<Self> {
        let mut view = MessageView::default();
        while !buf.is_empty() {
            let (tag, value) = field(&mut buf)?;
            match (tag, value) {
                (1, v) => view.route = string(v)?,
                (2, Value::Bytes(b)) => view
                    .context
                    .get_or_insert_with(Default::default)
                    .merge(b)
                    .ok()?,
                (3, Value::Bytes(b)) => view.candidates.read(b)?,
                (4, Value::Bytes(b)) => view.campaigns.push(v1::Campaign::decode(b).ok()?),
                (5, Value::Varint(v)) => view.debug = v != 0,
                (6, Value::Bytes(b)) => view.rights_holders.push(holder_entry(b)?),
                (1..=6, _) => return None,
                _ => {}
            }
        }
        Some(view)
    }
}

/// A `rights_holders` map entry: key (1) and value (2).
fn holder_entry(mut buf: &[u8]) -> Option<(&str, v1::RightsHolder)> {
    let mut key = "";
    let mut value = v1::RightsHolder::default();
    while !buf.is_empty() {
        match field(&mut buf)? {
            (1, v) => key = string(v)?,
            (2, Value::Bytes(b)) => value.merge(b).ok()?,
            (2, _) => return None,
            _ => {}
        }
    }
    Some((key, value))
}

impl<'b> Columns<'b> {
    /// Appends the columns of one `Candidates` message.
    fn read(&mut self, mut buf: &'b [u8]) -> Option<()> {
        while !buf.is_empty() {
            let (tag, value) = field(&mut buf)?;
            match tag {
                1 => self.ids.push(string(value)?),
                2 => doubles(value, &mut self.relevance)?,
                3 => self.artists.push(string(value)?),
                4 => self.rights_holders.push(string(value)?),
                5 => varints(value, &mut self.impressions_24h, |v| v as u32)?,
                6 => varints(value, &mut self.session_promoted, |v| v as u32)?,
                7 => varints(value, &mut self.campaign, |v| v as i32)?,
                8 => self.feature_names.push(string(value)?.to_owned()),
                9 => doubles(value, &mut self.features)?,
                _ => {}
            }
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, PartialEq)]
    enum WireType {
        Varint = 0,
        SixtyFourBit = 1,
        LengthDelimited = 2,
        StartGroup = 3,
        EndGroup = 4,
        ThirtyTwoBit = 5,
    }

    fn encode_varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn encode_key(tag: u32, wire: WireType, out: &mut Vec<u8>) {
        encode_varint(u64::from(tag << 3 | wire as u32), out);
    }

    fn sample() -> v1::ScoreRequest {
        let mut holders = std::collections::HashMap::new();
        holders.insert(
            "h1".to_string(),
            v1::RightsHolder {
                exposure_share_7d: 0.25,
            },
        );
        v1::ScoreRequest {
            route: "autoplay".into(),
            context: Some(v1::Context {
                request_id: "r".into(),
                listener_id: "l".into(),
                session_id: "s".into(),
                surface: 2,
                market: "SE".into(),
                timestamp_ms: 1_781_524_800_000,
                seed: Some(7),
                feature_names: vec!["mood".into()],
                features: vec![0.5],
                slate_size: Some(3),
            }),
            candidates: Some(v1::Candidates {
                ids: vec!["a".into(), "bé".into(), "c".into()],
                relevance: vec![0.1, -0.0, 1e300],
                artists: vec!["x".into(), "".into(), "x".into()],
                rights_holders: vec!["h1".into(), "h1".into(), "".into()],
                impressions_24h: vec![0, u32::MAX, 5],
                session_promoted: vec![1, 2, 3],
                campaign: vec![-1, 0, i32::MIN],
                feature_names: vec!["f1".into(), "f2".into()],
                features: vec![1.0, f64::NAN, 3.0, 4.0, 5.0, 6.0],
            }),
            campaigns: vec![v1::Campaign {
                id: "c1".into(),
                surfaces: vec![1, 2],
                markets: vec!["SE".into()],
                delivered: Some(3.0),
                ..Default::default()
            }],
            debug: true,
            rights_holders: holders,
        }
    }

    /// The view as prost's message (the fields it reads, converted back).
    fn as_message(v: &MessageView<'_>) -> v1::ScoreRequest {
        let k = &v.candidates;
        let strings = |s: &[&str]| s.iter().map(|s| s.to_string()).collect();
        let empty = k == &Columns::default();
        v1::ScoreRequest {
            route: v.route.into(),
            context: v.context.clone(),
            candidates: (!empty).then(|| v1::Candidates {
                ids: strings(&k.ids),
                relevance: k.relevance.clone(),
                artists: strings(&k.artists),
                rights_holders: strings(&k.rights_holders),
                impressions_24h: k.impressions_24h.clone(),
                session_promoted: k.session_promoted.clone(),
                campaign: k.campaign.clone(),
                feature_names: k.feature_names.clone(),
                features: k.features.clone(),
            }),
            campaigns: v.campaigns.clone(),
            debug: v.debug,
            rights_holders: v
                .rights_holders
                .iter()
                .map(|(k, h)| (k.to_string(), *h))
                .collect(),
        }
    }

    /// Equal field by field, NaN equal to NaN (bit patterns).
    fn same(a: &v1::ScoreRequest, b: &v1::ScoreRequest) -> bool {
        let bits = |m: &v1::ScoreRequest| {
            m.candidates.as_ref().map(|k| {
                (
                    k.relevance.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    k.features.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                )
            })
        };
        let strip = |m: &v1::ScoreRequest| {
            let mut m = m.clone();
            if let Some(k) = &mut m.candidates {
                k.relevance.clear();
                k.features.clear();
            }
            m
        };
        bits(a) == bits(b) && strip(a) == strip(b)
    }

    fn raw_field(out: &mut Vec<u8>, tag: u32, wire: WireType, payload: &[u8]) {
        encode_key(tag, wire, out);
        if wire == WireType::LengthDelimited {
            encode_varint(payload.len() as u64, out);
        }
        out.extend_from_slice(payload);
    }

    #[test]
    fn the_view_is_prost_s_reading() {
        let msg = sample();
        let bytes = msg.encode_to_vec();
        let view = MessageView::read(&bytes).expect("a plain message is read");
        assert!(same(&as_message(&view), &msg));
        // Borrowed, not copied.
        let at = bytes.windows(3).position(|w| w == "bé".as_bytes()).unwrap();
        assert!(std::ptr::eq(view.candidates.ids[1].as_ptr(), &bytes[at]));

        // Unusual but valid encodings: a second `candidates` and `context`
        // (merged), unpacked numbers, unknown fields of every wire type, a
        // route and debug flag given twice (the last kept), a map key twice.
        let mut odd = bytes.clone();
        let mut more = Vec::new();
        raw_field(&mut more, 1, WireType::LengthDelimited, b"d");
        encode_key(2, WireType::SixtyFourBit, &mut more);
        more.extend_from_slice(&0.75f64.to_le_bytes());
        encode_key(5, WireType::Varint, &mut more);
        encode_varint(9, &mut more);
        encode_key(7, WireType::Varint, &mut more);
        encode_varint(-2i64 as u64, &mut more);
        raw_field(&mut more, 9, WireType::LengthDelimited, &[0u8; 16]);
        encode_key(99, WireType::ThirtyTwoBit, &mut more);
        more.extend_from_slice(&[1, 2, 3, 4]);
        raw_field(&mut odd, 3, WireType::LengthDelimited, &more);
        let ctx = v1::Context {
            market: "NO".into(),
            ..Default::default()
        };
        raw_field(&mut odd, 2, WireType::LengthDelimited, &ctx.encode_to_vec());
        raw_field(&mut odd, 1, WireType::LengthDelimited, b"radio");
        encode_key(5, WireType::Varint, &mut odd);
        encode_varint(0, &mut odd);
        encode_key(50, WireType::Varint, &mut odd);
        encode_varint(u64::MAX, &mut odd);
        raw_field(&mut odd, 51, WireType::LengthDelimited, b"\xff\xfe");
        encode_key(52, WireType::SixtyFourBit, &mut odd);
        odd.extend_from_slice(&[0; 8]);
        let mut entry = Vec::new();
        raw_field(&mut entry, 1, WireType::LengthDelimited, b"h1");
        let share = v1::RightsHolder {
            exposure_share_7d: 0.5,
        };
        raw_field(
            &mut entry,
            2,
            WireType::LengthDelimited,
            &share.encode_to_vec(),
        );
        raw_field(&mut odd, 6, WireType::LengthDelimited, &entry);
        let prost = v1::ScoreRequest::decode(&odd[..]).unwrap();
        let view = MessageView::read(&odd).expect("valid encodings are read");
        assert!(same(&as_message(&view), &prost), "{view:?}\n{prost:?}");
        assert_eq!(view.route, "radio");
        assert!(!view.debug);
        assert_eq!(view.context.as_ref().unwrap().market, "NO");
        assert_eq!(view.candidates.ids.last(), Some(&"d"));
        assert_eq!(view.candidates.campaign.last(), Some(&-2));
        assert_eq!(prost.rights_holders["h1"].exposure_share_7d, 0.5);
    }

    #[test]
    fn what_the_view_does_not_take_prost_decides() {
        let bytes = sample().encode_to_vec();
        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        // Truncated anywhere.
        for cut in [1, bytes.len() / 2, bytes.len() - 1] {
            cases.push(("truncated", bytes[..cut].to_vec()));
        }
        // A string that is not UTF-8, in the candidate columns.
        let mut k = Vec::new();
        raw_field(&mut k, 1, WireType::LengthDelimited, b"\xff");
        let mut bad = bytes.clone();
        raw_field(&mut bad, 3, WireType::LengthDelimited, &k);
        cases.push(("not UTF-8", bad));
        // A known field with the wrong wire type.
        let mut bad = bytes.clone();
        encode_key(1, WireType::Varint, &mut bad);
        encode_varint(1, &mut bad);
        cases.push(("wrong wire type", bad));
        // Packed doubles that are not a multiple of 8 bytes.
        let mut k = Vec::new();
        raw_field(&mut k, 2, WireType::LengthDelimited, &[0; 7]);
        let mut bad = bytes.clone();
        raw_field(&mut bad, 3, WireType::LengthDelimited, &k);
        cases.push(("ragged doubles", bad));
        // A group.
        let mut bad = bytes.clone();
        encode_key(60, WireType::StartGroup, &mut bad);
        cases.push(("group", bad));
        for (what, bytes) in cases {
            assert_eq!(MessageView::read(&bytes), None, "{what}");
            let msg = ProtoMessage::new(&bytes);
            assert!(msg.view().is_none());
            let err = msg.message().unwrap_err().to_string();
            assert!(
                err.contains("not a valid oasis.v1.ScoreRequest"),
                "{what}: {err}"
            );
        }
        // A message prost takes though the view does not: still served.
        let mut grouped = bytes.clone();
        encode_key(60, WireType::StartGroup, &mut grouped);
        encode_key(60, WireType::EndGroup, &mut grouped);
        let msg = ProtoMessage::new(&grouped);
        assert!(msg.view().is_none());
        assert!(same(msg.message().unwrap(), &sample()));
    }
}
