//! The host side of the WIT contract, generated once from `wit/` and imported
//! from here by the rest of the crate.

#[allow(
    missing_docs,
    reason = "generated code; the contract is documented in wit/policy.wit"
)]
mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "scoring-policy",
    });
}
pub use generated::*;

pub use self::exports::oasis::policy::policy::PolicyError as WitPolicyError;
pub use self::oasis::policy::log::Level as WitLogLevel;
pub use self::oasis::policy::types::{
    Campaign as WitCampaign, Candidates as WitCandidates, Context as WitContext,
    Decisions as WitDecisions, Metadata as WitMetadata, Reason as WitReason, Request as WitRequest,
    Surface as WitSurface, SurfaceSet as WitSurfaceSet,
};

/// Version of the contract package this host implements (`oasis:policy@…`).
pub const CONTRACT_VERSION: &str = "0.1.0";
