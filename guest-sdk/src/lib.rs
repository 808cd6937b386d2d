//! # oasis-sdk: write Oasis promotion-scoring policies in Rust
//!
//! An Oasis policy decides, for one listening context and its candidate
//! tracks, which campaign tracks to promote and by how much. It is built into
//! a WebAssembly component against the versioned contract in `wit/` and runs
//! sandboxed in the Oasis host, a fresh instance per request.
//!
//! This crate hides the generated bindings: implement [`Policy`] on your own
//! types, call [`export_policy!`], and unit-test the logic natively with
//! [`testing`] and plain `cargo test` (golden fixtures included:
//! [`testing::check_fixture`]). Rules several policies share (the one
//! relevance guardrail, the guarded boost, the per-slate cap) are ready-made
//! in [`blocks`].
//!
//! Contract 0.2.0 adds what a policy reads ([`Request::slate_size`],
//! [`Campaign::pacing_updated_ms`], [`Request::exposure_share_7d`]) and what
//! it hands back: new pacing state with [`Decisions::update_campaign`].
//!
//! ## A complete policy
//!
//! ```
//! use oasis_sdk::{Decisions, Eligibility, Metadata, Policy, PolicyError, Request};
//! use serde::{Deserialize, Serialize};
//!
//! /// Promotes every campaign track allowed here (active campaign, surface,
//! /// market) by a fixed boost.
//! pub struct FixedBoost;
//!
//! #[derive(Debug, Serialize, Deserialize)]
//! #[serde(default, deny_unknown_fields)]
//! pub struct Settings {
//!     /// Added to the relevance of promoted tracks.
//!     pub boost: f64,
//! }
//!
//! impl Default for Settings {
//!     fn default() -> Self {
//!         Settings { boost: 0.1 }
//!     }
//! }
//!
//! impl Policy for FixedBoost {
//!     type Settings = Settings;
//!
//!     fn metadata() -> Metadata {
//!         Metadata::new("fixed-boost", "1.0.0")
//!             .description("Adds a fixed boost to eligible campaign tracks.")
//!             .setting("boost", "score added to promoted tracks, in [0, 1]")
//!     }
//!
//!     fn validate(s: &Settings) -> Result<(), String> {
//!         if !(0.0..=1.0).contains(&s.boost) {
//!             return Err(format!("boost must be in [0, 1], got {}", s.boost));
//!         }
//!         Ok(())
//!     }
//!
//!     fn score(s: &Settings, req: &Request) -> Result<Decisions, PolicyError> {
//!         let mut out = Decisions::passthrough(req);
//!         for c in req.candidates() {
//!             match c.campaign_eligibility() {
//!                 Eligibility::Eligible(_) => out.promote(c.index(), s.boost, 1.0),
//!                 // CAMPAIGN_INACTIVE, NOT_ELIGIBLE_SURFACE and/or NOT_ELIGIBLE_MARKET.
//!                 Eligibility::Ineligible(why) => out.mark(c.index(), why),
//!                 Eligibility::Organic => {}
//!             }
//!         }
//!         Ok(out)
//!     }
//! }
//!
//! oasis_sdk::export_policy!(FixedBoost);
//!
//! // A native unit test of the logic, no wasm involved:
//! use oasis_sdk::testing::{CampaignSpec, CandidateSpec, RequestBuilder};
//! let req = RequestBuilder::new()
//!     .campaign(CampaignSpec::new(1))
//!     .candidate(CandidateSpec::new(0.5).campaign(0))
//!     .candidate(CandidateSpec::new(0.7))
//!     .build();
//! let out = oasis_sdk::testing::run::<FixedBoost>("{}", &req).unwrap();
//! assert_eq!(out.scores, vec![0.6, 0.7]);
//! assert!(out.eligible[0] && !out.eligible[1]);
//! assert!(oasis_sdk::testing::run::<FixedBoost>(r#"{"boost": 2}"#, &req).is_err());
//! ```
//!
//! Build it for the host with `cargo build --target wasm32-wasip2 --release`
//! (crate type `cdylib`); the `.wasm` in `target/wasm32-wasip2/release/` is the
//! component Oasis loads.
#![deny(missing_docs)]

// Lets the generated bindings name this crate as `oasis_sdk` from inside it too.
extern crate self as oasis_sdk;

pub mod arena;
pub mod blocks;
mod decisions;
pub mod log;
mod policy;
mod request;
mod rng;
pub mod testing;

#[doc(hidden)]
pub mod export;

pub use decisions::{DebugValue, Decisions, Reason};
pub use oasis_contract::{CampaignUpdate, Violation};
pub use policy::{Metadata, Policy, PolicyError, SettingInfo, full_metadata, parse_settings};
pub use request::{
    Campaign, Candidate, Candidates, Context, Eligibility, Feature, Holders, Request, Surface,
    SurfaceSet, market_code,
};
pub use rng::Rng;

/// Version of this SDK, stamped into every policy's metadata so the host can
/// check compatibility.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The generated WIT bindings (contract `oasis:policy@`[`oasis_contract::CONTRACT_VERSION`]).
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "scoring-policy",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_oasis_policy",
        default_bindings_module: "oasis_sdk::bindings",
        runtime_path: "oasis_sdk::__private::wit_bindgen::rt",
        bitflags_path: "oasis_sdk::__private::wit_bindgen::rt::bitflags",
    });
}

/// Items used by [`export_policy!`]'s expansion.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::oasis::policy::types as wit;
    pub use crate::export::{Guest, metadata, score, validate_settings};
    pub use wit_bindgen;
}
