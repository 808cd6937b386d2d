//! A policy built against contract 0.3.0 (`wit/0.3.0/`), whose numeric
//! columns are little-endian byte buffers: relevance as the score, nobody
//! eligible, `organic` for tracks without a campaign, propensity 0.
//!
//! A request whose id is `short-<column>` (`short-scores`, `short-eligible`,
//! `short-reasons` or `short-propensity`) is answered with that column one
//! byte short, so a test sees the host refuse a buffer of the wrong length
//! as invalid output naming the column (the load-time smoke request, with
//! its own id, is answered in full).

wit_bindgen::generate!({
    world: "scoring-policy",
    path: "../../../wit/0.3.0",
});

use exports::oasis::policy::policy::{Decisions, Guest, Metadata, PolicyError, Request};

struct Bytes;

/// The `organic` reason bit (the first flag of `reason`).
const ORGANIC: u16 = 1;

/// The column a request id names to be answered short, if any.
fn short(request_id: &str) -> Option<&str> {
    request_id.strip_prefix("short-")
}

impl Guest for Bytes {
    fn describe() -> Metadata {
        Metadata {
            name: "contract-0-3".into(),
            version: "0.1.0".into(),
            description: "Relevance passthrough on contract 0.3.0 (tests only).".into(),
            required_features: Vec::new(),
            optional_features: Vec::new(),
            context_features: Vec::new(),
            settings: Vec::new(),
            sdk_version: "none".into(),
        }
    }

    fn validate_settings(_settings_json: String) -> Result<(), PolicyError> {
        Ok(())
    }

    fn score(_settings_json: String, request: Request) -> Result<Decisions, PolicyError> {
        let k = &request.candidates;
        let n = k.count as usize;
        if k.relevance.len() != n * 8 || k.campaign.len() != n * 4 {
            return Err(PolicyError::InvalidRequest(format!(
                "{} relevance and {} campaign bytes for {n} candidates",
                k.relevance.len(),
                k.campaign.len()
            )));
        }
        let reasons = k
            .campaign
            .chunks_exact(4)
            .flat_map(|c| {
                let organic = i32::from_le_bytes(c.try_into().unwrap()) < 0;
                if organic { ORGANIC } else { 0 }.to_le_bytes()
            })
            .collect();
        let mut d = Decisions {
            scores: k.relevance.clone(),
            eligible: vec![0; n],
            reasons,
            propensity: vec![0; n * 8],
            debug: Vec::new(),
            campaign_updates: Vec::new(),
        };
        match short(&request.context.request_id) {
            Some("scores") => d.scores.truncate(d.scores.len().saturating_sub(1)),
            Some("eligible") => d.eligible.truncate(n.saturating_sub(1)),
            Some("reasons") => d.reasons.truncate(d.reasons.len().saturating_sub(1)),
            Some("propensity") => d.propensity.truncate(d.propensity.len().saturating_sub(1)),
            _ => {}
        }
        Ok(d)
    }
}

export!(Bytes);
