//! Rollout state: which version of a route's policy serves, which is in
//! canary and for what share of listeners, which policies shadow it, and
//! whether the route is killed.
//!
//! # One rule between files and the API
//!
//! The policy directory has two kinds of files, and each has one writer:
//!
//! | file | says | written by |
//! |---|---|---|
//! | `<key>.toml`, modules, `routes.toml` | *which* policies exist and which policy a route runs (its baseline, salt, guardrails) | people, GitOps |
//! | `rollout.json` | *which version* of the route's policy is stable, the canary and its share, shadows, the kill switch | the admin API only |
//!
//! The API never edits a manifest or `routes.toml`; nobody edits
//! `rollout.json` by hand (the API rewrites it atomically, under a lock, so
//! replicas serving the same directory never lose each other's changes). The
//! watcher reads both, so every replica converges on the same state, and a
//! restart (kill -9 included) restores it.
//!
//! Precedence, stated once: a route's *stable* version is the version pinned
//! in `rollout.json` (set by promote and rollback), else the version the
//! directory's manifest points at. When the directory's module changes while
//! a pin exists, the new file becomes a version one can canary or promote;
//! the route's status shows both, so the two never disagree silently. If
//! `routes.toml` moves a route to another policy, the route's rollout state
//! (recorded with the policy it applies to) no longer applies: it is ignored
//! and reported as stale until the next API change of that route.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// File name of the rollout state inside the policy directory.
pub const ROLLOUT_FILE: &str = "rollout.json";

/// A copy of the last committed rollout state, beside [`ROLLOUT_FILE`]:
/// written by the rollout manager after every committed change, read when
/// [`ROLLOUT_FILE`] is corrupt so that a restart keeps the last good state (a
/// killed route stays killed) instead of serving an empty one.
pub const LAST_GOOD_FILE: &str = ".rollout.last-good.json";

/// What [`read_rollout`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadRollout {
    /// The state to serve.
    pub state: RolloutFile,
    /// Set when [`ROLLOUT_FILE`] could not be read or is not valid and
    /// `state` is the last good copy ([`LAST_GOOD_FILE`]): what is wrong,
    /// to report.
    pub fault: Option<String>,
}

/// Reads [`ROLLOUT_FILE`] in `dir`: an empty state when it is absent, the
/// last good copy ([`LAST_GOOD_FILE`], with the fault reported) when it
/// cannot be read or is not valid. The one reader of the file (the reloader
/// and the manager both call it).
///
/// # Errors
/// A message naming the file, for a file that cannot be read or is not
/// valid rollout state when there is no valid last good copy either.
pub fn read_rollout(dir: &std::path::Path) -> Result<ReadRollout, String> {
    let error = match read_state(&dir.join(ROLLOUT_FILE)) {
        Ok(Some(state)) => return Ok(ReadRollout { state, fault: None }),
        Ok(None) => {
            return Ok(ReadRollout {
                state: RolloutFile::default(),
                fault: None,
            });
        }
        Err(e) => e,
    };
    match read_state(&dir.join(LAST_GOOD_FILE)) {
        Ok(Some(state)) => Ok(ReadRollout {
            state,
            fault: Some(format!(
                "{error}; serving the last good state ({LAST_GOOD_FILE}) until it is fixed"
            )),
        }),
        Ok(None) => Err(format!("{error}; fix or remove it")),
        Err(e) => Err(format!(
            "{error}; fix or remove it (the last good copy is unusable too: {e})"
        )),
    }
}

/// The rollout state in `path`; `None` when there is no such file.
fn read_state(path: &std::path::Path) -> Result<Option<RolloutFile>, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{} is not valid rollout state ({e})", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// The whole rollout state, as stored in [`ROLLOUT_FILE`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutFile {
    /// The committed revision: bumped by every change (compare-and-set in
    /// the control store); 0 before the first.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub revision: u64,
    /// Per route.
    #[serde(default)]
    pub routes: BTreeMap<String, RouteRollout>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The rollout state of one route.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteRollout {
    /// The policy key this state applies to (the route's policy when it was
    /// written). If `routes.toml` now names another policy, the state is stale.
    pub policy: String,
    /// Pinned stable version (`sha256:…`); `None` follows the directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<String>,
    /// Earlier stable versions, oldest first (`None` = the directory's
    /// version), for rollback.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Option<String>>,
    /// The canary, if one runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
    /// Policies scoring beside the served one, never served.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shadows: Vec<String>,
    /// Kill switch: serve the route's baseline.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub killed: bool,
    /// The last rollback, manual or automatic, with its reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rollback: Option<Rollback>,
}

/// A canary: a version of the route's policy for a share of listeners.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    /// The version (`sha256:…`).
    pub digest: String,
    /// Share of listeners, in percent (0–100).
    pub percent: f64,
    /// When it started, unix ms.
    pub since_ms: u64,
}

/// A rollback that happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// When, unix ms.
    pub at_ms: u64,
    /// The version taken out.
    pub digest: Option<String>,
    /// Why (for an automatic rollback: the breached guardrail).
    pub reason: String,
    /// Done by the host's guardrails rather than an operator.
    pub automatic: bool,
    /// The canary's share of listeners (percent) when a canary was rolled
    /// back; absent for a return to an earlier stable version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
}

/// Why a rollout change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolloutError {
    /// The percentage is outside (0, 100].
    #[error("percent must be in (0, 100], got {0}")]
    Percent(String),
    /// Promote or a canary change without a canary.
    #[error("route `{0}` has no canary")]
    NoCanary(String),
    /// Rollback with nothing to go back to.
    #[error("route `{0}` has no canary and no earlier stable version to roll back to")]
    NothingToRollBack(String),
    /// The canary is the stable version already.
    #[error("version {0} is already the route's stable version")]
    AlreadyStable(String),
    /// Shadowing the route's own policy version, or a shadow twice.
    #[error("{0}")]
    Shadow(String),
    /// Unpin on a route that follows the directory's version.
    #[error("route `{0}` pins no version: it serves the directory's version already")]
    NotPinned(String),
}

/// Longest rollback history kept per route.
pub const MAX_HISTORY: usize = 20;

/// Most shadows per route: each one is a full policy call per request.
pub const MAX_SHADOWS: usize = 4;

impl RouteRollout {
    /// A fresh state for a route running `policy`.
    pub fn new(policy: &str) -> Self {
        RouteRollout {
            policy: policy.to_string(),
            ..Default::default()
        }
    }

    /// Starts a canary of `digest` at `percent`, or changes its percentage
    /// when `digest` is already the canary.
    ///
    /// # Errors
    /// [`RolloutError::Percent`] outside (0, 100]; [`RolloutError::AlreadyStable`]
    /// when `digest` is the pinned stable version.
    pub fn set_canary(
        &mut self,
        digest: &str,
        percent: f64,
        now_ms: u64,
    ) -> Result<(), RolloutError> {
        if !(percent > 0.0 && percent <= 100.0) {
            return Err(RolloutError::Percent(percent.to_string()));
        }
        if self.stable.as_deref() == Some(digest) {
            return Err(RolloutError::AlreadyStable(digest.to_string()));
        }
        match &mut self.canary {
            Some(c) if c.digest == digest => c.percent = percent,
            _ => {
                self.canary = Some(Canary {
                    digest: digest.to_string(),
                    percent,
                    since_ms: now_ms,
                })
            }
        }
        Ok(())
    }

    /// Makes the canary the stable version; the previous stable goes to the
    /// history.
    ///
    /// # Errors
    /// [`RolloutError::NoCanary`].
    pub fn promote(&mut self, route: &str) -> Result<String, RolloutError> {
        let canary = self
            .canary
            .take()
            .ok_or_else(|| RolloutError::NoCanary(route.to_string()))?;
        self.push_history(self.stable.clone());
        self.stable = Some(canary.digest.clone());
        Ok(canary.digest)
    }

    /// Rolls back: stops the canary if one runs, else returns to the
    /// previous stable version. Returns the version taken out.
    ///
    /// # Errors
    /// [`RolloutError::NothingToRollBack`].
    pub fn rollback(
        &mut self,
        route: &str,
        reason: &str,
        automatic: bool,
        now_ms: u64,
    ) -> Result<Option<String>, RolloutError> {
        let (removed, percent) = if let Some(canary) = self.canary.take() {
            (Some(canary.digest), Some(canary.percent))
        } else if let Some(previous) = self.history.pop() {
            (std::mem::replace(&mut self.stable, previous), None)
        } else {
            return Err(RolloutError::NothingToRollBack(route.to_string()));
        };
        self.last_rollback = Some(Rollback {
            at_ms: now_ms,
            digest: removed.clone(),
            reason: reason.to_string(),
            automatic,
            percent,
        });
        Ok(removed)
    }

    /// Unpins the stable version: the route serves the directory's version
    /// again. The unpinned version goes to the history (a rollback returns
    /// to it); the canary, if one runs, keeps running. Returns the version
    /// unpinned.
    ///
    /// # Errors
    /// [`RolloutError::NotPinned`] when the route follows the directory.
    pub fn unpin(&mut self, route: &str) -> Result<String, RolloutError> {
        let pinned = self
            .stable
            .take()
            .ok_or_else(|| RolloutError::NotPinned(route.to_string()))?;
        self.push_history(Some(pinned.clone()));
        Ok(pinned)
    }

    /// Adds or removes a shadow policy reference.
    ///
    /// # Errors
    /// [`RolloutError::Shadow`] for a duplicate, an unknown one to remove, or
    /// more than [`MAX_SHADOWS`].
    pub fn set_shadow(&mut self, reference: &str, on: bool) -> Result<(), RolloutError> {
        let present = self.shadows.iter().position(|s| s == reference);
        match (on, present) {
            (true, Some(_)) => Err(RolloutError::Shadow(format!(
                "`{reference}` already shadows this route"
            ))),
            (true, None) if self.shadows.len() >= MAX_SHADOWS => Err(RolloutError::Shadow(
                format!("at most {MAX_SHADOWS} shadows per route"),
            )),
            (true, None) => {
                self.shadows.push(reference.to_string());
                Ok(())
            }
            (false, Some(i)) => {
                self.shadows.remove(i);
                Ok(())
            }
            (false, None) => Err(RolloutError::Shadow(format!(
                "`{reference}` does not shadow this route"
            ))),
        }
    }

    /// Stored versions of the route's own policy this state refers to: the
    /// pinned stable version and the canary, and with `history` the earlier
    /// stable versions (kept for rollback).
    pub fn own_versions(&self, history: bool) -> impl Iterator<Item = &str> {
        let past = self.history.iter().flatten().filter(move |_| history);
        self.stable
            .iter()
            .chain(self.canary.as_ref().map(|c| &c.digest))
            .chain(past)
            .map(String::as_str)
    }

    /// Stored versions the shadows name (`key@digest`), as (key, digest).
    pub fn shadow_versions(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.shadows
            .iter()
            .filter_map(|s| VersionRef::parse(s).ok())
            .filter_map(|r| Some((r.key, r.digest?)))
    }

    fn push_history(&mut self, stable: Option<String>) {
        self.history.push(stable);
        if self.history.len() > MAX_HISTORY {
            self.history.remove(0);
        }
    }
}

/// A reference to a policy version: `key` (the directory's version) or
/// `key@sha256:…` (a stored version).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VersionRef {
    /// Policy key.
    pub key: String,
    /// A stored version, or `None` for the directory's.
    pub digest: Option<String>,
}

impl VersionRef {
    /// Parses `key` or `key@sha256:<64 hex>`.
    ///
    /// # Errors
    /// A message saying what is wrong.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (key, digest) = match s.split_once('@') {
            Some((k, d)) => (k, Some(d)),
            None => (s, None),
        };
        if !oasis_contract::is_key(key) {
            return Err(format!("`{s}`: `{key}` is not a policy key"));
        }
        if let Some(d) = digest
            && !is_digest(d)
        {
            return Err(format!("`{s}`: a version is `sha256:` and 64 hex digits"));
        }
        Ok(VersionRef {
            key: key.to_string(),
            digest: digest.map(str::to_string),
        })
    }
}

impl std::fmt::Display for VersionRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.digest {
            Some(d) => write!(f, "{}@{d}", self.key),
            None => f.write_str(&self.key),
        }
    }
}

/// Fewest hex digits a digest prefix must have to name a version: the
/// commands print `sha256:` and 12 digits, and that must round-trip.
pub const MIN_DIGEST_PREFIX: usize = 12;

/// Whether `s` is a digest prefix a version may be named by: `sha256:` and
/// [`MIN_DIGEST_PREFIX`] to 64 lower-case hex digits (a full digest
/// included).
pub fn is_digest_prefix(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|h| {
        (MIN_DIGEST_PREFIX..=64).contains(&h.len())
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Whether `s` is a version digest: `sha256:` and 64 lower-case hex digits.
pub fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn canary_promote_rollback_cycle() {
        let mut r = RouteRollout::new("pid-pacing");
        assert!(matches!(
            r.set_canary(B, 0.0, 1),
            Err(RolloutError::Percent(_))
        ));
        assert!(r.set_canary(B, 101.0, 1).is_err());
        r.set_canary(B, 5.0, 1).unwrap();
        r.set_canary(B, 20.0, 2).unwrap();
        let c = r.canary.clone().unwrap();
        assert_eq!(
            (c.percent, c.since_ms),
            (20.0, 1),
            "a percentage change keeps the start"
        );
        assert_eq!(r.promote("radio").unwrap(), B);
        assert_eq!((r.stable.as_deref(), r.canary.is_none()), (Some(B), true));
        assert_eq!(r.history, vec![None]);
        assert!(matches!(r.promote("radio"), Err(RolloutError::NoCanary(_))));
        assert!(matches!(
            r.set_canary(B, 5.0, 3),
            Err(RolloutError::AlreadyStable(_))
        ));
        // Rollback with a canary stops the canary only.
        r.set_canary(A, 5.0, 4).unwrap();
        assert_eq!(
            r.rollback("radio", "bad", false, 5).unwrap().as_deref(),
            Some(A)
        );
        assert_eq!(r.stable.as_deref(), Some(B));
        // Without one, it returns to the previous stable (the directory's).
        assert_eq!(
            r.rollback("radio", "worse", false, 6).unwrap().as_deref(),
            Some(B)
        );
        assert_eq!(r.stable, None);
        assert_eq!(r.last_rollback.as_ref().unwrap().reason, "worse");
        assert!(matches!(
            r.rollback("radio", "again", false, 7),
            Err(RolloutError::NothingToRollBack(_))
        ));
    }

    #[test]
    fn referenced_versions_include_history_only_when_asked() {
        let mut r = RouteRollout::new("p");
        r.set_canary(A, 5.0, 0).unwrap();
        r.promote("x").unwrap();
        r.set_canary(B, 5.0, 0).unwrap();
        r.set_shadow(&format!("q@{A}"), true).unwrap();
        r.set_shadow("q", true).unwrap();
        assert_eq!(r.own_versions(false).collect::<Vec<_>>(), [A, B]);
        assert_eq!(
            r.own_versions(true).count(),
            2,
            "history holds the directory's (None)"
        );
        r.promote("x").unwrap();
        assert_eq!(r.own_versions(true).collect::<Vec<_>>(), [B, A]);
        assert_eq!(
            r.shadow_versions().collect::<Vec<_>>(),
            [("q".to_string(), A.to_string())]
        );
    }

    #[test]
    fn shadows_are_a_bounded_set() {
        let mut r = RouteRollout::new("p");
        r.set_shadow("a", true).unwrap();
        assert!(r.set_shadow("a", true).is_err());
        for k in ["b", "c", "d"] {
            r.set_shadow(k, true).unwrap();
        }
        assert!(r.set_shadow("e", true).is_err(), "at most {MAX_SHADOWS}");
        r.set_shadow("a", false).unwrap();
        assert!(r.set_shadow("a", false).is_err());
    }

    #[test]
    fn history_is_bounded() {
        let mut r = RouteRollout::new("p");
        for i in 0..(MAX_HISTORY + 5) {
            let d = format!("sha256:{i:064x}");
            r.set_canary(&d, 50.0, 0).unwrap();
            r.promote("x").unwrap();
        }
        assert_eq!(r.history.len(), MAX_HISTORY);
    }

    #[test]
    fn version_refs_parse_and_print() {
        let v = VersionRef::parse(&format!("baseline@{A}")).unwrap();
        assert_eq!((v.key.as_str(), v.digest.as_deref()), ("baseline", Some(A)));
        assert_eq!(v.to_string(), format!("baseline@{A}"));
        assert_eq!(VersionRef::parse("baseline").unwrap().digest, None);
        assert!(VersionRef::parse("base line").is_err());
        assert!(VersionRef::parse("baseline@sha256:xyz").is_err());
    }

    #[test]
    fn the_file_round_trips_and_refuses_unknown_fields() {
        let mut f = RolloutFile::default();
        let mut r = RouteRollout::new("p");
        r.set_canary(A, 5.0, 9).unwrap();
        r.killed = true;
        f.routes.insert("radio".into(), r);
        let text = serde_json::to_string_pretty(&f).unwrap();
        assert_eq!(serde_json::from_str::<RolloutFile>(&text).unwrap(), f);
        assert!(serde_json::from_str::<RolloutFile>(r#"{"routes": {}, "extra": 1}"#).is_err());
    }

    #[test]
    fn a_corrupt_file_falls_back_to_the_last_good_copy_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let read = read_rollout(dir.path()).unwrap();
        assert_eq!((read.state, read.fault), (RolloutFile::default(), None));
        let mut good = RolloutFile::default();
        let mut r = RouteRollout::new("p");
        r.killed = true;
        good.routes.insert("radio".into(), r);
        let json = serde_json::to_vec_pretty(&good).unwrap();
        std::fs::write(dir.path().join(ROLLOUT_FILE), b"{\"routes\": {").unwrap();
        assert!(
            read_rollout(dir.path())
                .unwrap_err()
                .contains("not valid rollout state"),
            "no last good copy: an error"
        );
        std::fs::write(dir.path().join(LAST_GOOD_FILE), &json).unwrap();
        let read = read_rollout(dir.path()).unwrap();
        assert_eq!(
            read.state, good,
            "the last good state, killed route and all"
        );
        assert!(read.fault.unwrap().contains("serving the last good state"));
        std::fs::write(dir.path().join(ROLLOUT_FILE), &json).unwrap();
        assert_eq!(read_rollout(dir.path()).unwrap().fault, None);
    }
}
