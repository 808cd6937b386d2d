//! A policy whose `describe` spins until its deadline: every load of it
//! times out, as a real bug in metadata code would, and never succeeds
//! until the module changes.

use oasis_sdk::{Decisions, Metadata, Policy, PolicyError, Request};
use serde::{Deserialize, Serialize};

/// The policy.
pub struct SlowDescribe;

/// No settings.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Settings {}

impl Policy for SlowDescribe {
    type Settings = Settings;

    fn metadata() -> Metadata {
        let mut x = 0u64;
        loop {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }

    fn score(_: &Settings, req: &Request) -> Result<Decisions, PolicyError> {
        Ok(Decisions::passthrough(req))
    }
}

oasis_sdk::export_policy!(SlowDescribe);
