//! How a request body is embedded in a record: verbatim when possible,
//! with pseudonymised ids when configured.
//!
//! Replay rebuilds the batch from the logged body, so the body must survive
//! the trip through the log token for token. Nothing here goes through a
//! generic `serde_json::Value`: that would sort the keys and, with
//! serde_json's default (fast, not always correctly rounded) float parser,
//! could move a feature value by one unit in the last place. Instead:
//!
//! * a body on one line is embedded as it came (a borrowed [`RawValue`]);
//! * a body with line breaks (pretty-printed JSON) has its insignificant
//!   whitespace removed, outside strings only, so the record stays one line
//!   and every token is unchanged;
//! * pseudonymisation splits the top-level object and its `context` object
//!   into their members as raw JSON, replaces the two id values and joins
//!   them again in the same order; every other member is copied as text.
//!
//! A pseudonym is `"p:"` followed by the first 32 hex digits (128 bits) of
//! HMAC-SHA256(key, id): deterministic for one key, so a listener's
//! requests still group together, and not reversible nor linkable across
//! keys without the key.

use std::fmt;

use hmac::{Hmac, Mac};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use sha2::Sha256;

/// The members of `context` that are pseudonymised.
pub(super) const PSEUDONYMISED: [&str; 2] = ["listener_id", "session_id"];

/// The keyed hash of listener and session ids.
#[derive(Clone)]
pub(super) struct Pseudonymiser {
    mac: Hmac<Sha256>,
}

impl fmt::Debug for Pseudonymiser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pseudonymiser(<key>)")
    }
}

impl Pseudonymiser {
    /// A pseudonymiser keyed with `key` (HMAC takes keys of any length).
    pub(super) fn new(key: &[u8]) -> Result<Self, hmac::digest::InvalidLength> {
        Ok(Pseudonymiser {
            mac: Hmac::<Sha256>::new_from_slice(key)?,
        })
    }

    /// The pseudonym of `id`: `p:` and 32 hex digits.
    pub(super) fn pseudonym(&self, id: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(id.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut out = String::with_capacity(34);
        out.push_str("p:");
        out.push_str(&hex::encode(&digest[..16]));
        out
    }
}

/// A body ready to embed: borrowed from the request, or rewritten.
pub(super) enum Embedded<'a> {
    /// The body as received.
    Verbatim(&'a RawValue),
    /// The body compacted and/or pseudonymised.
    Rewritten(Box<RawValue>),
}

impl Embedded<'_> {
    /// The JSON to embed.
    pub(super) fn get(&self) -> &RawValue {
        match self {
            Embedded::Verbatim(r) => r,
            Embedded::Rewritten(r) => r,
        }
    }
}

/// Prepares `body` for embedding in a record.
///
/// # Errors
/// The body is not one JSON value (not UTF-8, not JSON, or trailing data).
pub(super) fn embed<'a>(
    body: &'a [u8],
    pseudonymiser: Option<&Pseudonymiser>,
) -> Result<Embedded<'a>, serde_json::Error> {
    let raw: &RawValue = serde_json::from_slice(body)?;
    let text = raw.get();
    let compacted = text
        .bytes()
        .any(|b| b == b'\n' || b == b'\r')
        .then(|| compact(text));
    let text = compacted.as_deref().unwrap_or(text);
    if let Some(p) = pseudonymiser
        && let Some(rewritten) = pseudonymise(text, p)?
    {
        return Ok(Embedded::Rewritten(RawValue::from_string(rewritten)?));
    }
    match compacted {
        Some(c) => Ok(Embedded::Rewritten(RawValue::from_string(c)?)),
        None => Ok(Embedded::Verbatim(raw)),
    }
}

/// `json` without whitespace outside strings. `json` must be valid JSON,
/// where whitespace only separates tokens, so no token changes.
fn compact(json: &str) -> String {
    let mut out = Vec::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for &b in json.as_bytes() {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            out.push(b);
            in_string = b == b'"';
        }
    }
    // Only ASCII whitespace was removed, between complete UTF-8 sequences.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// `json` with its `context`'s ids replaced by pseudonyms, or `None` when it
/// has none (not an object, or no `context` object).
fn pseudonymise(json: &str, p: &Pseudonymiser) -> Result<Option<String>, serde_json::Error> {
    let Ok(RawMap(top)) = serde_json::from_str::<RawMap<'_>>(json) else {
        return Ok(None);
    };
    let Some(at) = top.iter().position(|(k, _)| k == "context") else {
        return Ok(None);
    };
    let Ok(RawMap(members)) = serde_json::from_str::<RawMap<'_>>(top[at].1.get()) else {
        return Ok(None);
    };
    let mut context: Vec<(String, Box<RawValue>)> = Vec::with_capacity(members.len());
    for (k, v) in members {
        let v = if PSEUDONYMISED.contains(&k.as_str()) {
            // A string id is hashed as the string it denotes; anything else
            // (the server refuses it anyway) as its JSON text.
            let id = serde_json::from_str::<String>(v.get());
            let id = id.as_deref().unwrap_or(v.get());
            serde_json::value::to_raw_value(&p.pseudonym(id))?
        } else {
            v.to_owned()
        };
        context.push((k, v));
    }
    let context = serde_json::value::to_raw_value(&Pairs(&context))?;
    let out: Vec<(&str, &RawValue)> = top
        .iter()
        .enumerate()
        .map(|(i, (k, v))| (k.as_str(), if i == at { &*context } else { *v }))
        .collect();
    serde_json::to_string(&Pairs(&out)).map(Some)
}

/// A JSON object's members in their order, values as raw JSON.
struct RawMap<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for RawMap<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = RawMap<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<RawMap<'a>, M::Error> {
                let mut members = Vec::with_capacity(m.size_hint().unwrap_or(8));
                while let Some((k, v)) = m.next_entry::<String, &'de RawValue>()? {
                    members.push((k, v));
                }
                Ok(RawMap(members))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// Serializes members as a JSON object, in order (duplicates kept).
struct Pairs<'a, K, V>(&'a [(K, V)]);

impl<K: serde::Serialize, V: serde::Serialize> serde::Serialize for Pairs<'_, K, V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = r#"{"context": {"request_id": "r1", "listener_id": "u\"1", "session_id": "s1",
  "surface": "radio", "market": "SE"},
 "candidates": [{"id": "t1", "relevance": 0.30000000000000004, "big": 12345678901234567890}],
 "zeta": 1, "alpha": "a  b"}"#;

    #[test]
    fn one_line_bodies_are_embedded_verbatim() {
        let body = r#"{"b": 1,  "a": [1.0, 2e3], "s": "x y"}"#;
        let e = embed(body.as_bytes(), None).unwrap();
        assert!(matches!(e, Embedded::Verbatim(_)));
        assert_eq!(e.get().get(), body);
    }

    #[test]
    fn line_breaks_are_removed_outside_strings_only() {
        let e = embed(BODY.as_bytes(), None).unwrap();
        let text = e.get().get();
        assert!(!text.contains('\n'), "{text}");
        assert!(text.contains(r#""alpha":"a  b""#), "{text}");
        assert!(text.contains("0.30000000000000004"), "{text}");
        assert!(text.contains("12345678901234567890"), "{text}");
        assert!(text.find("zeta") < text.find("alpha"), "order kept: {text}");
        let a: serde_json::Value = serde_json::from_str(BODY).unwrap();
        let b: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn not_json_is_an_error() {
        assert!(embed(b"{\"a\":", None).is_err());
        assert!(embed(b"{} {}", None).is_err());
        assert!(embed(b"\xff", None).is_err());
    }

    #[test]
    fn pseudonymise_replaces_the_ids_only() {
        let p = Pseudonymiser::new(b"key one").unwrap();
        let e = embed(BODY.as_bytes(), Some(&p)).unwrap();
        let text = e.get().get();
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        let c = &v["context"];
        assert_eq!(c["listener_id"], p.pseudonym("u\"1").as_str());
        assert_eq!(c["session_id"], p.pseudonym("s1").as_str());
        assert_eq!(c["request_id"], "r1");
        assert_eq!(c["surface"], "radio");
        assert!(
            text.contains(r#""relevance":0.30000000000000004,"big":12345678901234567890"#),
            "{text}"
        );
        assert!(text.find("zeta") < text.find("alpha"), "order kept: {text}");
        let pseudonym = p.pseudonym("u1");
        assert!(
            pseudonym.starts_with("p:") && pseudonym.len() == 34,
            "{pseudonym}"
        );
        assert!(pseudonym[2..].bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn bodies_without_context_are_left_alone() {
        let p = Pseudonymiser::new(b"k").unwrap();
        for body in [r#"[1,2]"#, r#"{"a":1}"#, r#"{"context":"x"}"#] {
            let e = embed(body.as_bytes(), Some(&p)).unwrap();
            assert_eq!(e.get().get(), body);
        }
    }
}
