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

/// A setting the policy accepts, as reported to operators by `oasis inspect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingInfo {
    /// The setting's key in the settings JSON (the serde field name).
    pub name: String,
    /// What it does, with its unit and valid range.
    pub description: String,
    /// JSON-encoded default, taken from `Settings::default()`.
    pub default_json: String,
}

/// What a policy says about itself. Build it with [`Metadata::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// Policy name, usually the crate name.
    pub name: String,
    /// Semantic version of the policy, e.g. `1.2.0`.
    pub version: String,
    /// A one-paragraph description for operators.
    pub description: String,
    /// Candidate features the policy needs; the host sends these columns.
    pub required_features: Vec<String>,
    /// Candidate features the policy uses when present.
    pub optional_features: Vec<String>,
    /// Context features the policy reads.
    pub context_features: Vec<String>,
    /// Descriptions of settings; defaults are filled in by the SDK.
    pub settings: Vec<SettingInfo>,
}

impl Metadata {
    /// Metadata for policy `name` at semantic version `version`; usually
    /// `Metadata::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))`.
    pub fn new(name: &str, version: &str) -> Self {
        Metadata {
            name: name.to_string(),
            version: version.to_string(),
            description: String::new(),
            required_features: Vec::new(),
            optional_features: Vec::new(),
            context_features: Vec::new(),
            settings: Vec::new(),
        }
    }

    /// A one-paragraph description for operators.
    pub fn description(mut self, text: &str) -> Self {
        self.description = text.to_string();
        self
    }

    /// Candidate features the policy needs (the host sends these columns).
    pub fn requires(mut self, features: &[&str]) -> Self {
        self.required_features
            .extend(features.iter().map(|f| f.to_string()));
        self
    }

    /// Candidate features the policy uses when present.
    pub fn optional(mut self, features: &[&str]) -> Self {
        self.optional_features
            .extend(features.iter().map(|f| f.to_string()));
        self
    }

    /// Context features the policy reads.
    pub fn context(mut self, features: &[&str]) -> Self {
        self.context_features
            .extend(features.iter().map(|f| f.to_string()));
        self
    }

    /// Documents setting `name`.
    pub fn setting(mut self, name: &str, description: &str) -> Self {
        self.settings.push(SettingInfo {
            name: name.to_string(),
            description: description.to_string(),
            default_json: String::new(),
        });
        self
    }
}

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

/// The metadata of `P` with setting defaults filled in from `P::Settings::default()`.
pub fn full_metadata<P: Policy>() -> Metadata {
    let mut meta = P::metadata();
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
