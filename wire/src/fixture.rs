//! The golden fixture: one JSON file with the request PZN would send,
//! optional settings, the expected output per candidate and a tolerance for
//! floating-point fields. `oasis test` runs it against a built component,
//! the SDK's `check_fixture` natively; both read it, compare and bless with
//! this module, so they agree on what passes.
//!
//! ```json
//! { "description": "campaign track in a foreign market is not promoted",
//!   "settings": { "theta": 0.3 },
//!   "tolerance": 1e-9,
//!   "request": { "context": { ... }, "candidates": [ ... ] },
//!   "expected": [ { "id": "t1", "score": 0.5, "eligible": false,
//!                   "reasons": ["organic"], "propensity": 0.0 } ] }
//! ```
//!
//! Optional: `expected_debug` (request-level debug values by name), a
//! candidate's `debug` (its debug values by name; only those listed are
//! compared) and `expected_campaign_updates` (`[{"campaign": "<id>",
//! "pacing_integral": …, "pacing_last_error": …}]`: the pacing state a
//! policy hands back, compared by campaign id; present means exactly these).
//!
//! [`Fixture::compare`] lists every difference between the expectations and
//! a policy's [`Output`] as a [`Mismatch`] naming the fixture field;
//! [`Fixture::bless`] rewrites the expectations from an output, keeping the
//! file's other keys in their order and with their own text.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The tolerance of a fixture that states none.
pub const DEFAULT_TOLERANCE: f64 = 1e-9;

/// A fixture file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    /// What the fixture pins, for the reader.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The policy's settings; its defaults when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<serde_json::Value>,
    /// Largest difference allowed in a score, propensity, debug value or
    /// pacing state ([`DEFAULT_TOLERANCE`] when absent).
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
    /// The scoring request (read with [`crate::request::from_value`]).
    pub request: serde_json::Value,
    /// The expected output per candidate, in request order; absent until
    /// the fixture is first blessed.
    #[serde(default)]
    pub expected: Option<Vec<Candidate>>,
    /// Request-level debug values to compare, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_debug: Option<BTreeMap<String, f64>>,
    /// The campaign updates (pacing state handed back), by campaign id; when
    /// present, exactly these must be returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_campaign_updates: Option<Vec<PacingUpdate>>,
}

fn default_tolerance() -> f64 {
    DEFAULT_TOLERANCE
}

/// One candidate's output as a fixture records it: an entry of `expected`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Candidate {
    /// Track id (the request's), in request order.
    pub id: String,
    /// Final score.
    pub score: f64,
    /// Whether the track is promoted.
    pub eligible: bool,
    /// Reason codes by name, in contract order.
    pub reasons: Vec<String>,
    /// Probability of the decision (for off-policy evaluation).
    pub propensity: f64,
    /// The candidate's debug values to compare, by name (only those listed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug: Option<BTreeMap<String, f64>>,
}

/// One campaign update (new pacing state) as a fixture records it: an
/// entry of `expected_campaign_updates`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacingUpdate {
    /// The campaign's id (the request's).
    pub campaign: String,
    /// New leaky integral of the delivery error.
    pub pacing_integral: f64,
    /// New last delivery error.
    pub pacing_last_error: f64,
}

/// What a policy answered to a fixture's request, in the fixture's terms
/// (ids rather than indexes, reasons by name).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    /// Per candidate, in request order, with every debug value the policy
    /// reported for it (`None` when it reported none).
    pub candidates: Vec<Candidate>,
    /// The request-level debug values.
    pub debug: BTreeMap<String, f64>,
    /// The campaign updates, in the order returned.
    pub campaign_updates: Vec<PacingUpdate>,
}

impl Output {
    /// Records debug value `name` of candidate `candidate` (an index into
    /// [`Output::candidates`]), or of the request when `None`; a later value
    /// of the same name replaces an earlier one. A candidate index out of
    /// range is ignored (the contract's output check refuses it first).
    pub fn add_debug(&mut self, candidate: Option<usize>, name: &str, value: f64) {
        match candidate {
            None => {
                self.debug.insert(name.to_string(), value);
            }
            Some(i) => {
                if let Some(c) = self.candidates.get_mut(i) {
                    c.debug
                        .get_or_insert_with(BTreeMap::new)
                        .insert(name.to_string(), value);
                }
            }
        }
    }
}

/// One difference between a fixture's expectations and an output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The fixture field that differs, as a JSON path into the file:
    /// `expected`, `expected[2].score`, `expected[0].debug.boost`,
    /// `expected_debug.total`, `expected_campaign_updates.camp-7`.
    pub field: String,
    /// What differs, for a person: the subject (candidate id, campaign,
    /// debug value), the expected and the actual value, and the tolerance
    /// where one applies.
    pub message: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A fixture that cannot be read, compared or blessed.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// The text is not a fixture (not JSON, an unknown key, a wrong type);
    /// serde's message, with line and column, is part of this one.
    #[error("not a valid fixture file: {0}")]
    Invalid(serde_json::Error),
    /// There are no expectations to compare with.
    #[error(
        "the fixture has no `expected` output yet: run `oasis test --bless` to record it, then review the diff"
    )]
    NotBlessed,
    /// The file's text could not be rewritten (blessing).
    #[error("rewriting the fixture: {0}")]
    Rewrite(serde_json::Error),
}

/// Whether `got` is within `tol` of `want` (NaN never is).
fn close(got: f64, want: f64, tol: f64) -> bool {
    (got - want).abs() <= tol
}

impl Fixture {
    /// Reads a fixture from its file's text.
    ///
    /// # Errors
    /// [`FixtureError::Invalid`] with serde's message (line and column).
    pub fn from_json(text: &str) -> Result<Fixture, FixtureError> {
        serde_json::from_str(text).map_err(FixtureError::Invalid)
    }

    /// The settings JSON to load the policy with: `settings` as written, or
    /// `{}` (every default) when absent.
    pub fn settings_json(&self) -> String {
        self.settings
            .as_ref()
            .map_or("{}".to_string(), |s| s.to_string())
    }

    /// Whether the fixture lists any debug value (request-level or of a
    /// candidate): only then does blessing record debug values.
    pub fn lists_debug(&self) -> bool {
        self.expected_debug.is_some() || self.expected.iter().flatten().any(|e| e.debug.is_some())
    }

    /// Every difference between the fixture's expectations and `actual`,
    /// empty when it passes. Compared: the number of candidates; per
    /// candidate in order its id (a different id ends that candidate's
    /// comparison), score and propensity (within `tolerance`), eligibility,
    /// reason names in order, and the debug values its entry lists; the
    /// request-level debug values `expected_debug` lists; and, when
    /// `expected_campaign_updates` is present, exactly those updates (by
    /// campaign id, in any order, within `tolerance`).
    ///
    /// # Errors
    /// [`FixtureError::NotBlessed`] when the fixture has no `expected`.
    ///
    /// ```
    /// use oasis_wire::fixture::{Candidate, Fixture, Output};
    ///
    /// let fixture = Fixture::from_json(r#"{"request": {}, "tolerance": 1e-6,
    ///     "expected": [{"id": "a", "score": 0.5, "eligible": false,
    ///                   "reasons": ["organic"], "propensity": 0.0}]}"#).unwrap();
    /// let mut out = Output::default();
    /// out.candidates.push(Candidate { id: "a".into(), score: 0.5000001, eligible: false,
    ///     reasons: vec!["organic".into()], propensity: 0.0, debug: None });
    /// assert!(fixture.compare(&out).unwrap().is_empty()); // within the tolerance
    /// out.candidates[0].score = 0.6;
    /// let diffs = fixture.compare(&out).unwrap();
    /// assert_eq!(diffs[0].field, "expected[0].score");
    /// assert_eq!(diffs[0].to_string(), "a: score expected 0.5 got 0.6 (tolerance 0.000001)");
    /// ```
    pub fn compare(&self, actual: &Output) -> Result<Vec<Mismatch>, FixtureError> {
        let Some(expected) = &self.expected else {
            return Err(FixtureError::NotBlessed);
        };
        let tol = self.tolerance;
        let mut out = Vec::new();
        let mut push = |field: String, message: String| out.push(Mismatch { field, message });
        if expected.len() != actual.candidates.len() {
            push(
                "expected".into(),
                format!(
                    "expected {} candidates, got {}",
                    expected.len(),
                    actual.candidates.len()
                ),
            );
        }
        for (i, (e, a)) in expected.iter().zip(&actual.candidates).enumerate() {
            let field = |name: &str| format!("expected[{i}].{name}");
            if e.id != a.id {
                push(
                    field("id"),
                    format!(
                        "candidate order differs: expected `{}`, got `{}`",
                        e.id, a.id
                    ),
                );
                continue;
            }
            if !close(a.score, e.score, tol) {
                push(
                    field("score"),
                    format!(
                        "{}: score expected {} got {} (tolerance {tol})",
                        e.id, e.score, a.score
                    ),
                );
            }
            if e.eligible != a.eligible {
                push(
                    field("eligible"),
                    format!(
                        "{}: eligible expected {} got {}",
                        e.id, e.eligible, a.eligible
                    ),
                );
            }
            if e.reasons != a.reasons {
                push(
                    field("reasons"),
                    format!(
                        "{}: reasons expected {:?} got {:?}",
                        e.id, e.reasons, a.reasons
                    ),
                );
            }
            if !close(a.propensity, e.propensity, tol) {
                push(
                    field("propensity"),
                    format!(
                        "{}: propensity expected {} got {} (tolerance {tol})",
                        e.id, e.propensity, a.propensity
                    ),
                );
            }
            for (name, want) in e.debug.iter().flatten() {
                match a.debug.as_ref().and_then(|d| d.get(name)) {
                    Some(got) if close(*got, *want, tol) => {}
                    Some(got) => push(
                        field(&format!("debug.{name}")),
                        format!(
                            "{}: debug `{name}` expected {want} got {got} (tolerance {tol})",
                            e.id
                        ),
                    ),
                    None => push(
                        field(&format!("debug.{name}")),
                        format!("{}: debug `{name}` expected {want}, not reported", e.id),
                    ),
                }
            }
        }
        if let Some(want) = &self.expected_campaign_updates {
            let updates = &actual.campaign_updates;
            for w in want {
                let field = format!("expected_campaign_updates.{}", w.campaign);
                match updates.iter().find(|u| u.campaign == w.campaign) {
                    None => push(
                        field,
                        format!("campaign `{}`: expected an update, got none", w.campaign),
                    ),
                    Some(g)
                        if !(close(g.pacing_integral, w.pacing_integral, tol)
                            && close(g.pacing_last_error, w.pacing_last_error, tol)) =>
                    {
                        push(
                            field,
                            format!(
                                "campaign `{}`: update expected (integral {}, last error {}) got ({}, {}) (tolerance {tol})",
                                w.campaign,
                                w.pacing_integral,
                                w.pacing_last_error,
                                g.pacing_integral,
                                g.pacing_last_error
                            ),
                        )
                    }
                    Some(_) => {}
                }
            }
            for g in updates
                .iter()
                .filter(|g| !want.iter().any(|w| w.campaign == g.campaign))
            {
                push(
                    format!("expected_campaign_updates.{}", g.campaign),
                    format!("campaign `{}`: unexpected update", g.campaign),
                );
            }
        }
        for (name, want) in self.expected_debug.iter().flatten() {
            let field = format!("expected_debug.{name}");
            match actual.debug.get(name) {
                Some(got) if close(*got, *want, tol) => {}
                Some(got) => push(
                    field,
                    format!("debug `{name}`: expected {want} got {got} (tolerance {tol})"),
                ),
                None => push(
                    field,
                    format!("debug `{name}`: expected {want}, not reported"),
                ),
            }
        }
        Ok(out)
    }

    /// `text` (this fixture's file) with its expectations rewritten from
    /// `actual`: `expected` always; `expected_campaign_updates` when the
    /// fixture has it or the policy returned updates; debug values (a
    /// candidate's `debug`, `expected_debug`) only when the fixture already
    /// lists some ([`Fixture::lists_debug`]) and the policy reported any.
    /// Every other key keeps its order and its own text, so that a blessed
    /// fixture's diff shows only what changed: an expectation whose value
    /// did not change keeps its text too (a fixture that passes exactly is
    /// left as it is), and a changed one is written one candidate (or
    /// campaign update) a line, the style `oasis new` writes.
    ///
    /// # Errors
    /// [`FixtureError::Rewrite`] when `text` is not a JSON object.
    pub fn bless(&self, text: &str, actual: &Output) -> Result<String, FixtureError> {
        let listed = self.lists_debug();
        let candidates: Vec<Candidate> = actual
            .candidates
            .iter()
            .map(|c| Candidate {
                debug: c.debug.clone().filter(|d| listed && !d.is_empty()),
                ..c.clone()
            })
            .collect();
        // Written from the typed values, so keys keep the format's order.
        let mut updates = vec![("expected", lines(&candidates)?)];
        if self.expected_campaign_updates.is_some() || !actual.campaign_updates.is_empty() {
            updates.push((
                "expected_campaign_updates",
                lines(&actual.campaign_updates)?,
            ));
        }
        if listed && !actual.debug.is_empty() {
            updates.push(("expected_debug", inline(&actual.debug)?));
        }
        rewrite_keys(text, &updates).map_err(FixtureError::Rewrite)
    }
}

/// `items` as blessing writes a list: one element a line, each on its line
/// as [`inline`] writes it — the style of the fixtures `oasis new` writes,
/// so that blessing one keeps its look and a diff shows one line per
/// changed candidate.
fn lines<T: Serialize>(items: &[T]) -> Result<String, FixtureError> {
    if items.is_empty() {
        return Ok("[]".into());
    }
    let items = items.iter().map(inline).collect::<Result<Vec<_>, _>>()?;
    Ok(format!("[\n  {}\n]", items.join(",\n  ")))
}

/// `value` on one line with a space inside braces and after `:` and `,`:
/// `{ "id": "a", "score": 0.5, "reasons": ["promoted"] }`.
fn inline<T: Serialize>(value: &T) -> Result<String, FixtureError> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, Inline::default());
    value.serialize(&mut ser).map_err(FixtureError::Rewrite)?;
    Ok(String::from_utf8(out).expect("serde_json writes UTF-8"))
}

/// The formatter of [`inline`]: serde_json's compact one with spaces.
#[derive(Default)]
struct Inline {
    /// Per open object, whether it has a key yet.
    objects: Vec<bool>,
}

impl serde_json::ser::Formatter for Inline {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.objects.push(false);
        writer.write_all(b"{")
    }

    fn end_object<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        if self.objects.pop().unwrap_or(false) {
            writer.write_all(b" }")
        } else {
            writer.write_all(b"}")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if let Some(has) = self.objects.last_mut() {
            *has = true;
        }
        writer.write_all(if first { b" " } else { b", " })
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

/// `text` (a JSON object) with the top-level `updates` replaced (or
/// appended when missing), every other key kept in its order and with its
/// own text.
fn rewrite_keys(text: &str, updates: &[(&str, String)]) -> serde_json::Result<String> {
    let Ordered(mut entries) = serde_json::from_str(text)?;
    let mut changed = false;
    for (key, value) in updates {
        let value = value.replace('\n', "\n  ");
        let same = |old: &RawValue| {
            serde_json::from_str::<serde_json::Value>(old.get()).ok()
                == serde_json::from_str::<serde_json::Value>(&value).ok()
        };
        match entries.iter_mut().find(|(k, _)| k == key) {
            // The same value keeps its own text, however it is written.
            Some(e) if same(&e.1) => {}
            Some(e) => {
                e.1 = RawValue::from_string(value)?;
                changed = true;
            }
            None => {
                entries.push((key.to_string(), RawValue::from_string(value)?));
                changed = true;
            }
        }
    }
    if !changed {
        // Nothing to record: the file stays as it is, byte for byte.
        return Ok(text.to_string());
    }
    let mut out = String::from("{\n");
    for (i, (k, v)) in entries.iter().enumerate() {
        out += &format!(
            "  {}: {}{}\n",
            serde_json::to_string(k)?,
            v.get(),
            if i + 1 < entries.len() { "," } else { "" }
        );
    }
    out.push_str("}\n");
    Ok(out)
}

/// A JSON object's top-level entries in file order, values as written.
struct Ordered(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Ordered, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Box<RawValue>>()? {
                    out.push((k, v));
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = r#"{
  "description": "two candidates",
  "tolerance": 1e-6,
  "request": {"candidates": []},
  "expected": [
    {"id": "a", "score": 0.5, "eligible": true, "reasons": ["promoted"], "propensity": 0.25,
     "debug": {"boost": 0.1}},
    {"id": "b", "score": 0.4, "eligible": false, "reasons": ["organic"], "propensity": 0.0}
  ],
  "expected_debug": {"total": 2.0},
  "expected_campaign_updates": [{"campaign": "c1", "pacing_integral": 0.5, "pacing_last_error": -0.1}]
}"#;

    fn candidate(id: &str, score: f64, eligible: bool, reason: &str, propensity: f64) -> Candidate {
        Candidate {
            id: id.into(),
            score,
            eligible,
            reasons: vec![reason.into()],
            propensity,
            debug: None,
        }
    }

    /// The output the fixture expects, exactly.
    fn output() -> Output {
        let mut out = Output {
            candidates: vec![
                candidate("a", 0.5, true, "promoted", 0.25),
                candidate("b", 0.4, false, "organic", 0.0),
            ],
            campaign_updates: vec![PacingUpdate {
                campaign: "c1".into(),
                pacing_integral: 0.5,
                pacing_last_error: -0.1,
            }],
            ..Output::default()
        };
        out.add_debug(Some(0), "boost", 0.1);
        out.add_debug(Some(0), "unlisted", 9.0);
        out.add_debug(None, "total", 2.0);
        out
    }

    fn fields(fixture: &Fixture, out: &Output) -> Vec<String> {
        fixture
            .compare(out)
            .unwrap()
            .into_iter()
            .map(|m| m.field)
            .collect()
    }

    #[test]
    fn within_the_tolerance_nothing_is_reported() {
        let f = Fixture::from_json(FIXTURE).unwrap();
        assert_eq!(f.tolerance, 1e-6);
        assert!(f.compare(&output()).unwrap().is_empty());
        let mut out = output();
        out.candidates[0].score += 9e-7;
        out.candidates[1].propensity -= 9e-7;
        out.candidates[0]
            .debug
            .as_mut()
            .unwrap()
            .insert("boost".into(), 0.1 + 5e-7);
        out.debug.insert("total".into(), 2.0 - 5e-7);
        out.campaign_updates[0].pacing_integral += 1e-7;
        assert_eq!(f.compare(&out).unwrap(), []);
    }

    #[test]
    fn beyond_the_tolerance_the_field_is_reported() {
        let f = Fixture::from_json(FIXTURE).unwrap();
        let mut out = output();
        out.candidates[1].score = 0.4 + 2e-6;
        let diffs = f.compare(&out).unwrap();
        assert_eq!(diffs.len(), 1);
        assert_eq!(diffs[0].field, "expected[1].score");
        assert_eq!(
            diffs[0].to_string(),
            format!(
                "b: score expected 0.4 got {} (tolerance 0.000001)",
                0.4 + 2e-6
            )
        );
        let mut out = output();
        out.candidates[0].propensity = f64::NAN;
        assert_eq!(
            fields(&f, &out),
            ["expected[0].propensity"],
            "NaN is never close"
        );
        let mut out = output();
        out.candidates[0].eligible = false;
        out.candidates[0].reasons = vec!["organic".into()];
        assert_eq!(
            fields(&f, &out),
            ["expected[0].eligible", "expected[0].reasons"]
        );
        let mut out = output();
        out.candidates[0].debug = None;
        out.debug.insert("total".into(), 3.0);
        let diffs = f.compare(&out).unwrap();
        assert_eq!(diffs[0].field, "expected[0].debug.boost");
        assert_eq!(
            diffs[0].message,
            "a: debug `boost` expected 0.1, not reported"
        );
        assert_eq!(diffs[1].field, "expected_debug.total");
        assert_eq!(
            diffs[1].message,
            "debug `total`: expected 2 got 3 (tolerance 0.000001)"
        );
    }

    #[test]
    fn candidates_are_compared_in_order_and_counted() {
        let f = Fixture::from_json(FIXTURE).unwrap();
        let mut out = output();
        out.candidates.swap(0, 1);
        let diffs = f.compare(&out).unwrap();
        assert_eq!(
            diffs.len(),
            2,
            "a different id ends that candidate's comparison"
        );
        assert_eq!(diffs[0].field, "expected[0].id");
        assert_eq!(
            diffs[0].message,
            "candidate order differs: expected `a`, got `b`"
        );
        let mut out = output();
        out.candidates.pop();
        let diffs = f.compare(&out).unwrap();
        assert_eq!(diffs[0].field, "expected");
        assert_eq!(diffs[0].message, "expected 2 candidates, got 1");
    }

    #[test]
    fn campaign_updates_are_exactly_the_listed_ones_by_id() {
        let f = Fixture::from_json(FIXTURE).unwrap();
        let mut out = output();
        out.campaign_updates[0].pacing_last_error = 0.0;
        out.campaign_updates.push(PacingUpdate {
            campaign: "c9".into(),
            pacing_integral: 0.0,
            pacing_last_error: 0.0,
        });
        let diffs = f.compare(&out).unwrap();
        assert_eq!(
            diffs.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            [
                "campaign `c1`: update expected (integral 0.5, last error -0.1) got (0.5, 0) (tolerance 0.000001)",
                "campaign `c9`: unexpected update",
            ]
        );
        assert_eq!(diffs[1].field, "expected_campaign_updates.c9");
        out.campaign_updates.clear();
        assert_eq!(
            f.compare(&out).unwrap()[0].message,
            "campaign `c1`: expected an update, got none"
        );
        // Without `expected_campaign_updates`, updates are not compared.
        let mut f = f;
        f.expected_campaign_updates = None;
        assert!(f.compare(&out).unwrap().is_empty());
    }

    #[test]
    fn a_fixture_without_expectations_is_not_blessed() {
        let f = Fixture::from_json(r#"{"request": {}}"#).unwrap();
        assert_eq!(f.tolerance, DEFAULT_TOLERANCE);
        assert_eq!(f.settings_json(), "{}");
        assert!(matches!(
            f.compare(&output()),
            Err(FixtureError::NotBlessed)
        ));
        let e = Fixture::from_json(r#"{"request": {}, "tolerence": 1}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `tolerence`"), "{e}");
        let e = Fixture::from_json(r#"{"request": {}, "expected": [{"id": "a"}]}"#).unwrap_err();
        assert!(e.to_string().contains("missing field `score`"), "{e}");
    }

    #[test]
    fn blessing_rewrites_only_the_expectations() {
        let text = "{\n  \"description\": \"d\",\n  \"settings\": {\"k_max\":   1},\n  \"request\": {\"candidates\": []}\n}\n";
        let f = Fixture::from_json(text).unwrap();
        let mut out = output();
        out.campaign_updates.clear();
        let blessed = f.bless(text, &out).unwrap();
        assert_eq!(
            blessed,
            r#"{
  "description": "d",
  "settings": {"k_max":   1},
  "request": {"candidates": []},
  "expected": [
    { "id": "a", "score": 0.5, "eligible": true, "reasons": ["promoted"], "propensity": 0.25 },
    { "id": "b", "score": 0.4, "eligible": false, "reasons": ["organic"], "propensity": 0.0 }
  ]
}
"#,
            "debug values are recorded only when the fixture lists some"
        );
        let again = Fixture::from_json(&blessed).unwrap();
        assert!(again.compare(&out).unwrap().is_empty());
        // A fixture listing debug values gets them all; updates are written.
        let f = Fixture::from_json(FIXTURE).unwrap();
        let blessed = f.bless(FIXTURE, &output()).unwrap();
        let again = Fixture::from_json(&blessed).unwrap();
        let debug = again.expected.as_ref().unwrap()[0].debug.clone().unwrap();
        assert_eq!(debug.keys().collect::<Vec<_>>(), ["boost", "unlisted"]);
        assert_eq!(again.expected_debug, Some([("total".into(), 2.0)].into()));
        assert_eq!(again.expected_campaign_updates.unwrap().len(), 1);
        assert!(
            blessed
                .starts_with("{\n  \"description\": \"two candidates\",\n  \"tolerance\": 1e-6,")
        );
        assert!(matches!(
            f.bless("[1]", &output()),
            Err(FixtureError::Rewrite(_))
        ));
    }

    #[test]
    fn blessing_an_unchanged_output_changes_nothing() {
        let mut out = output();
        out.campaign_updates.clear();
        out.debug.clear();
        for c in &mut out.candidates {
            c.debug = None;
        }
        // Written by hand, in any style: the same values keep their text.
        let text = "{\"request\": {},\n \"expected\": [\n {\"id\":\"a\", \"score\":0.5, \"eligible\":true, \"reasons\":[\"promoted\"], \"propensity\":0.25},\n {\"id\":\"b\",\"score\":0.4,\"eligible\":false,\"reasons\":[\"organic\"],\"propensity\":0.0}]}";
        let f = Fixture::from_json(text).unwrap();
        assert_eq!(f.bless(text, &out).unwrap(), text);
        // Blessing is a fixed point: what it writes, it leaves alone.
        out.candidates[1].score = 0.3;
        let once = f.bless(text, &out).unwrap();
        let f = Fixture::from_json(&once).unwrap();
        assert_eq!(f.bless(&once, &out).unwrap(), once);
        assert!(
            once.contains(r#"{ "id": "b", "score": 0.3, "eligible": false, "reasons": ["organic"], "propensity": 0.0 }"#),
            "{once}"
        );
        // Empty objects and lists, and campaign updates, one a line.
        assert_eq!(
            inline(&serde_json::json!({"a": {}, "b": []})).unwrap(),
            r#"{ "a": {}, "b": [] }"#
        );
        assert_eq!(lines::<u8>(&[]).unwrap(), "[]");
        assert_eq!(lines(&[1, 2]).unwrap(), "[\n  1,\n  2\n]");
    }
}
