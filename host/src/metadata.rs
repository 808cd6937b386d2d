//! Who a loaded policy is and what it says about itself.
//!
//! [`PolicyInfo`] is the host's checked copy of the policy's `describe`
//! answer plus what the host knows of the module (digest, size).
//! [`PolicyRef`] is a loaded version's identity — name, version, digest —
//! built once at load and shared, behind one `Arc`, by the registry, every
//! response, the metrics and the logs.

use std::sync::Arc;

use oasis_contract::{MAX_DECLARED_FEATURES, MAX_NAME_BYTES, is_key};

use crate::sandbox::bounded;

pub use oasis_wire::metadata::{Metadata, SettingInfo};

/// Identity of a policy version, as named in every response.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct PolicyRef {
    /// Policy name (also the label of the policy's log lines).
    #[schema(value_type = String)]
    pub name: Arc<str>,
    /// Semantic version.
    pub version: String,
    /// `sha256:…` of the component.
    pub digest: String,
    /// `sha256` (hex) of the settings JSON it was loaded with: the same
    /// module with other settings is another policy. Absent for the host's
    /// built-in passthrough and before settings are known.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub settings_sha256: Option<Arc<str>>,
}

/// What a policy says about itself, plus what the host knows of its module.
///
/// The policy's part is the wire format's [`Metadata`] record (the WIT
/// `metadata` record as a serializable struct, converted once at load:
/// [`crate::bindings::metadata`]); its fields read through this one
/// (`info.name`, `info.settings`), and it serializes flat, followed by the
/// module's digest, size and contract.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PolicyInfo {
    /// What the policy says about itself.
    #[serde(flatten)]
    pub metadata: Metadata,
    /// `sha256:<hex>` of the component bytes: the version's identity.
    pub digest: String,
    /// Component size in bytes.
    pub size_bytes: usize,
    /// Version of the contract the component was built against
    /// (`oasis:policy@…`): the host serves 0.1.0, 0.2.0 and 0.3.0 side by side.
    pub contract: &'static str,
}

impl std::ops::Deref for PolicyInfo {
    type Target = Metadata;
    fn deref(&self) -> &Metadata {
        &self.metadata
    }
}

impl PolicyInfo {
    /// Checks `m` ([`validate_metadata`]) and takes it over, with the
    /// module's digest and size.
    ///
    /// # Errors
    /// A message naming the offending metadata field.
    pub fn new(
        m: Metadata,
        digest: String,
        size_bytes: usize,
        contract: &'static str,
    ) -> Result<Self, String> {
        validate_metadata(&m)?;
        Ok(PolicyInfo {
            metadata: m,
            digest,
            size_bytes,
            contract,
        })
    }

    /// The version's identity.
    pub fn identity(&self) -> PolicyRef {
        PolicyRef {
            name: Arc::from(self.name.as_str()),
            version: self.version.clone(),
            digest: self.digest.clone(),
            settings_sha256: None,
        }
    }
}

/// Checks what a policy says about itself before the host relies on it: the
/// host sizes per-request buffers by the declared features, so they are
/// bounded like everything else that comes from a guest.
///
/// # Errors
/// A message naming the offending field.
pub fn validate_metadata(m: &Metadata) -> Result<(), String> {
    if !is_key(&m.name) || m.name.contains('.') {
        return Err(format!(
            "name {:?} must be 1-{MAX_NAME_BYTES} characters of [A-Za-z0-9_-]",
            bounded(&m.name)
        ));
    }
    semver::Version::parse(&m.version)
        .map_err(|e| format!("version {:?} is not semver: {e}", bounded(&m.version)))?;
    let features = m.required_features.len() + m.optional_features.len();
    if features > MAX_DECLARED_FEATURES || m.context_features.len() > MAX_DECLARED_FEATURES {
        return Err(format!(
            "declares {features} candidate and {} context features; at most {MAX_DECLARED_FEATURES} each",
            m.context_features.len()
        ));
    }
    for f in m
        .required_features
        .iter()
        .chain(&m.optional_features)
        .chain(&m.context_features)
    {
        if !is_key(f) {
            return Err(format!(
                "feature name {:?} must be 1-{MAX_NAME_BYTES} characters of [A-Za-z0-9._-]",
                bounded(f)
            ));
        }
    }
    if m.description.len() > 4096 || m.settings.len() > 256 {
        return Err("description over 4 KiB or more than 256 settings".into());
    }
    if m.settings.iter().any(|s| {
        s.name.len() > MAX_NAME_BYTES || s.description.len() > 1024 || s.default_json.len() > 4096
    }) {
        return Err("a setting's name, description or default is too long".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Metadata {
        Metadata {
            sdk_version: "0.1.0".into(),
            ..Metadata::new("p", "1.0.0").requires(&["p_skip"])
        }
    }

    #[test]
    fn metadata_is_bounded_before_the_host_relies_on_it() {
        validate_metadata(&meta()).unwrap();
        let mut m = meta();
        m.required_features = (0..300).map(|i| format!("f{i}")).collect();
        assert!(validate_metadata(&m).unwrap_err().contains("at most 256"));
        let mut m = meta();
        m.optional_features = vec!["x".repeat(65)];
        assert!(validate_metadata(&m).unwrap_err().contains("feature name"));
        let mut m = meta();
        m.version = "v1".into();
        assert!(validate_metadata(&m).unwrap_err().contains("not semver"));
        let mut m = meta();
        m.name = "has space".into();
        assert!(validate_metadata(&m).unwrap_err().contains("name"));
        let mut m = meta();
        m.name = "dotted.name".into();
        assert!(validate_metadata(&m).unwrap_err().contains("name"));
    }

    #[test]
    fn columns_are_required_then_new_optional_features() {
        let mut m = meta();
        m.required_features = vec!["a".into(), "b".into()];
        m.optional_features = vec!["b".into(), "c".into()];
        let info = PolicyInfo::new(m, "sha256:x".into(), 1, "0.2.0").unwrap();
        assert_eq!(info.feature_columns(), ["a", "b", "c"]);
        assert_eq!(&*info.identity().name, "p");
    }

    #[test]
    fn info_serializes_flat_the_record_then_the_module() {
        let info = PolicyInfo::new(meta(), "sha256:x".into(), 7, "0.2.0").unwrap();
        assert_eq!(
            serde_json::to_string(&info).unwrap(),
            r#"{"name":"p","version":"1.0.0","description":"","required_features":["p_skip"],"optional_features":[],"context_features":[],"settings":[],"sdk_version":"0.1.0","digest":"sha256:x","size_bytes":7,"contract":"0.2.0"}"#
        );
    }
}
