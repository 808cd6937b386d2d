//! # baseline: relevance passthrough
//!
//! Scores every candidate with its base relevance and promotes nothing. It is
//! the reference other policies are compared with, and the default fallback
//! the host serves when a policy fails. It lifts nothing, so the SDK's
//! relevance guardrail ([`oasis_sdk::blocks::RelevanceGuardrail`]) has
//! nothing to hold back here.

use oasis_sdk::{Decisions, Metadata, Policy, PolicyError, Request};
use serde::{Deserialize, Serialize};

/// The baseline policy.
pub struct Baseline;

/// Baseline takes no settings; unknown keys are refused.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {}

impl Policy for Baseline {
    type Settings = Settings;

    fn metadata() -> Metadata {
        Metadata::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
            .description("Relevance passthrough: score = base relevance, nothing promoted.")
    }

    fn score(_: &Settings, req: &Request) -> Result<Decisions, PolicyError> {
        Ok(Decisions::passthrough(req))
    }
}

oasis_sdk::export_policy!(Baseline);

#[cfg(test)]
mod tests {
    use super::*;
    use oasis_sdk::Reason;
    use oasis_sdk::testing::{
        CampaignSpec, CandidateSpec, RequestBuilder, assert_settings_documented,
        assert_settings_refused, run,
    };

    #[test]
    fn scores_are_relevance_and_nothing_is_promoted() {
        let req = RequestBuilder::new()
            .campaign(CampaignSpec::new(1))
            .candidate(CandidateSpec::new(0.3))
            .candidate(CandidateSpec::new(0.9).campaign(0))
            .build();
        let out = run::<Baseline>("", &req).unwrap();
        assert_eq!(out.scores, vec![0.3, 0.9]);
        assert_eq!(out.eligible, vec![false, false]);
        assert_eq!(out.propensity, vec![0.0, 0.0]);
        assert_eq!(out.reasons, vec![Reason::ORGANIC, Reason::empty()]);
    }

    #[test]
    fn unknown_settings_are_refused() {
        let req = RequestBuilder::new().build();
        assert_settings_refused::<Baseline>(&req, &[(r#"{"boost": 1}"#, "unknown field `boost`")]);
    }

    #[test]
    fn golden_fixtures_pass_natively() {
        oasis_sdk::testing::assert_fixtures_pass::<Baseline>(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures"
        ));
    }

    #[test]
    fn metadata_documents_no_settings() {
        assert_settings_documented::<Baseline>(&[]);
    }
}
