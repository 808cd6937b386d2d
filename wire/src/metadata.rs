//! What a policy says about itself: the WIT `metadata` record (the answer
//! of `describe`) as a plain, serializable struct.
//!
//! The guest SDK builds it ([`Metadata::new`] and its builder methods, then
//! the SDK fills in the setting defaults and its version) and converts it to
//! the WIT record its export returns; the host converts the record it gets
//! back (from either contract version) into it, checks it, and serves it in
//! `oasis inspect` and `/v1/policies`. Adding a field is one edit here plus
//! the WIT record and its two conversions, one on each side of the WIT.

use serde::{Deserialize, Serialize};

/// What a policy says about itself. Build it with [`Metadata::new`].
///
/// ```
/// use oasis_wire::metadata::Metadata;
///
/// let m = Metadata::new("fixed-boost", "1.0.0")
///     .description("Adds a fixed boost to eligible campaign tracks.")
///     .requires(&["p_skip"])
///     .optional(&["popularity", "p_skip"])
///     .setting("boost", "score added to promoted tracks, in [0, 1]");
/// assert_eq!(m.feature_columns(), ["p_skip", "popularity"]);
/// assert_eq!(m.settings[0].name, "boost");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
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
    /// The settings it accepts; their defaults are filled in by the SDK.
    pub settings: Vec<SettingInfo>,
    /// Version of the guest SDK the policy was built with; stamped by the
    /// SDK (empty until then).
    pub sdk_version: String,
}

/// A setting a policy accepts, as reported to operators by `oasis inspect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct SettingInfo {
    /// The setting's key in the settings JSON (the serde field name).
    pub name: String,
    /// What it does, with its unit and valid range.
    pub description: String,
    /// JSON-encoded default, taken from the settings' `Default`.
    pub default_json: String,
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
            sdk_version: String::new(),
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

    /// The candidate feature columns the policy receives, in order: the
    /// required features, then the optional ones not already listed
    /// ([`oasis_contract::feature_columns`]).
    pub fn feature_columns(&self) -> Vec<String> {
        oasis_contract::feature_columns(&self.required_features, &self.optional_features)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_in_the_record_order() {
        let m = Metadata::new("p", "1.0.0")
            .context(&["hour"])
            .setting("boost", "b");
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(
            json,
            r#"{"name":"p","version":"1.0.0","description":"","required_features":[],"optional_features":[],"context_features":["hour"],"settings":[{"name":"boost","description":"b","default_json":""}],"sdk_version":""}"#
        );
        assert_eq!(serde_json::from_str::<Metadata>(&json).unwrap(), m);
    }
}
