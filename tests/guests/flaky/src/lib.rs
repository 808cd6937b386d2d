//! A faulty canary for the rollout tests: relevance passthrough that panics
//! on 30% of requests, chosen by the request's seed (seeds ending in 7, 8
//! or 9), so a test knows which requests fail. The load-time smoke call
//! (seed 1) passes, as a real bug would.

use oasis_sdk::{Decisions, Metadata, Policy, PolicyError, Request};
use serde::{Deserialize, Serialize};

/// The flaky policy.
pub struct Flaky;

/// No settings: it loads under any policy key whose settings are `{}`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {}

/// Whether a request with `seed` fails.
pub fn fails(seed: u64) -> bool {
    seed % 10 >= 7
}

impl Policy for Flaky {
    type Settings = Settings;

    fn metadata() -> Metadata {
        Metadata::new("flaky", "0.2.0").description("Fails 30% of requests (tests only).")
    }

    fn score(_: &Settings, req: &Request) -> Result<Decisions, PolicyError> {
        if fails(req.context.seed) {
            panic!("flaky policy failed on purpose (seed {})", req.context.seed);
        }
        Ok(Decisions::passthrough(req))
    }
}

oasis_sdk::export_policy!(Flaky);

#[cfg(test)]
mod tests {
    use super::*;
    use oasis_sdk::testing::{CandidateSpec, RequestBuilder, run};

    #[test]
    fn fails_on_three_seeds_in_ten() {
        assert_eq!((0..1000).filter(|&s| fails(s)).count(), 300);
        let req = RequestBuilder::new()
            .seed(3)
            .candidate(CandidateSpec::new(0.5))
            .build();
        assert_eq!(run::<Flaky>("{}", &req).unwrap().scores, vec![0.5]);
    }
}
