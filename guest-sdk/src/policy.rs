//! The [`Policy`] trait an author implements, its [`Metadata`] and errors.

use serde::{Serialize, de::DeserializeOwned};

use crate::{Decisions, Request};

/// An error a policy reports; the host records it and serves the fallback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyError {
    /// The operator's settings are invalid; the message says which and why.
    InvalidSettings(String),
    /// This request cannot be scored by the policy.
    InvalidRequest(String),
    /// Anything else.
    Internal(String),
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PolicyError::InvalidSettings(m) => write!(f, "invalid settings: {m}"),
            PolicyError::InvalidRequest(m) => write!(f, "invalid request: {m}"),
            PolicyError::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

impl std::error::Error for PolicyError {}

/// What a policy says about itself, built with [`Metadata::new`], and one
/// setting of it: the wire format's record ([`oasis_wire::metadata`]), the
/// one definition the SDK and the host share.
pub use oasis_wire::metadata::{Metadata, SettingInfo};

/// A promotion-scoring policy.
///
/// Implement it on a unit struct and export it with
/// [`export_policy!`](crate::export_policy). The host calls [`Policy::score`]
/// on a fresh instance for every request: keep no state between calls.
pub trait Policy {
    /// Operator settings, deserialized from the manifest's `[settings]`.
    /// Missing fields take their defaults (use `#[serde(default)]`); mark the
    /// struct `#[serde(deny_unknown_fields)]` so typos are refused at load.
    type Settings: DeserializeOwned + Serialize + Default;

    /// Name, version, features and settings of the policy.
    fn metadata() -> Metadata;

    /// Checks settings beyond their types (ranges, consistency). Called at
    /// load time: an error refuses the load with your message.
    fn validate(_settings: &Self::Settings) -> Result<(), String> {
        Ok(())
    }

    /// Scores one request.
    fn score(settings: &Self::Settings, request: &Request) -> Result<Decisions, PolicyError>;
}

/// Parses and validates settings JSON for `P`. An empty string means defaults.
///
/// # Errors
/// [`PolicyError::InvalidSettings`] with serde's or the policy's message.
pub fn parse_settings<P: Policy>(json: &str) -> Result<P::Settings, PolicyError> {
    let settings: P::Settings = if json.trim().is_empty() {
        P::Settings::default()
    } else {
        serde_json::from_str(json).map_err(|e| PolicyError::InvalidSettings(e.to_string()))?
    };
    P::validate(&settings).map_err(PolicyError::InvalidSettings)?;
    Ok(settings)
}

/// The metadata of `P` with setting defaults filled in from
/// `P::Settings::default()` and this SDK's version ([`crate::SDK_VERSION`]):
/// what the policy's `describe` export answers.
pub fn full_metadata<P: Policy>() -> Metadata {
    let mut meta = P::metadata();
    meta.sdk_version = crate::SDK_VERSION.to_string();
    let defaults = serde_json::to_value(P::Settings::default()).unwrap_or_default();
    if let serde_json::Value::Object(map) = defaults {
        for (name, value) in map {
            match meta.settings.iter_mut().find(|s| s.name == name) {
                Some(s) => s.default_json = value.to_string(),
                None => meta.settings.push(SettingInfo {
                    name,
                    description: String::new(),
                    default_json: value.to_string(),
                }),
            }
        }
    }
    meta
}
