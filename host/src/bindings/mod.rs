//! The host side of the WIT contract, generated once from `wit/` and imported
//! from here by the rest of the crate.
//!
//! The crate works in the current contract's types (0.2.0, `wit/policy.wit`).
//! Components built against the frozen 0.1.0 contract (`wit/0.1.0/`) are
//! served side by side: [`v0_1`] has their bindings and the two conversions
//! (a request down to 0.1.0, decisions up to 0.2.0) that let the rest of the
//! host ignore which contract a policy was built against. So does [`v0_3`]
//! for 0.3.0 (`wit/0.3.0/`): 0.2.0 with the numeric columns as byte buffers,
//! which the Python SDK builds against.
//!
//! This module is public on purpose: a [`CallOutcome`](crate::CallOutcome)
//! carries the policy's [`WitDecisions`] as they crossed the boundary, and
//! tools built on the library (the CLI, replays) read them without a copy.
//! The rules around these types (bounds, names, bit order) are not here but
//! in `oasis-contract`; the few conversions below are pinned to it by tests.

#[allow(
    missing_docs,
    reason = "generated code; the contract is documented in wit/policy.wit"
)]
mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "scoring-policy",
        // The `types` interface is the generated one (`plain` below) except
        // `decisions`, whose debug values' names are lifted without an
        // allocation each (debug_value.rs). Bindgen replaces whole
        // interfaces only, hence the module that mixes the two.
        with: { "oasis:policy/types": super::types },
    });
}
pub use generated::*;

/// The contract's types as generated, for [`types`] to take all but
/// `decisions` from.
#[allow(
    missing_docs,
    reason = "generated code; the contract is documented in wit/policy.wit"
)]
mod plain {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "scoring-policy",
    });
}

/// The `oasis:policy/types` interface as the host's bindings use it: the
/// generated types, with [`Decisions`](types::Decisions) and
/// [`DebugValue`](types::DebugValue) defined by the host (their debug
/// names are [`DebugName`]s).
pub mod types {
    pub use super::debug_value::{DebugValue, Decisions};
    pub use super::plain::oasis::policy::types::{
        Campaign, CampaignUpdate, Candidates, Context, Holders, Metadata, PolicyError, Reason,
        Request, SettingInfo, Surface, SurfaceSet,
    };
    // The interface has no functions; linking it is the generated no-op.
    pub use super::plain::oasis::policy::types::{Host, HostWithStore, add_to_linker};
}

mod debug_value;
pub mod v0_1;
pub mod v0_3;

pub use debug_value::DebugName;

use oasis_contract::Surface;

pub use self::exports::oasis::policy::policy::PolicyError as WitPolicyError;
pub use self::oasis::policy::log::Level as WitLogLevel;
pub use self::types::{
    Campaign as WitCampaign, CampaignUpdate as WitCampaignUpdate, Candidates as WitCandidates,
    Context as WitContext, DebugValue as WitDebugValue, Decisions as WitDecisions,
    Holders as WitHolders, Metadata as WitMetadata, Reason as WitReason, Request as WitRequest,
    Surface as WitSurface, SurfaceSet as WitSurfaceSet,
};

/// Version of the contract package this host implements (`oasis:policy@…`).
pub use oasis_contract::CONTRACT_VERSION;

/// The WIT surface and surface-set bit of each [`Surface`], in contract
/// order (index = `Surface as usize`). The generated flags have no
/// constructor from bits, so this one table is the bridge; a test pins it.
const SURFACES: [(WitSurface, WitSurfaceSet); 8] = [
    (WitSurface::Radio, WitSurfaceSet::RADIO),
    (WitSurface::Autoplay, WitSurfaceSet::AUTOPLAY),
    (WitSurface::DailyMix, WitSurfaceSet::DAILY_MIX),
    (WitSurface::ArtistMix, WitSurfaceSet::ARTIST_MIX),
    (WitSurface::MoodMix, WitSurfaceSet::MOOD_MIX),
    (WitSurface::DecadeMix, WitSurfaceSet::DECADE_MIX),
    (WitSurface::GenreMix, WitSurfaceSet::GENRE_MIX),
    (WitSurface::Other, WitSurfaceSet::OTHER),
];

/// The WIT form of `s`.
pub fn wit_surface(s: Surface) -> WitSurface {
    SURFACES[s as usize].0
}

/// The WIT set of the surfaces whose bits are set in `bits`.
pub fn wit_surface_set(bits: u8) -> WitSurfaceSet {
    Surface::ALL
        .iter()
        .filter(|s| bits & s.bit() != 0)
        .fold(WitSurfaceSet::empty(), |set, s| {
            set | SURFACES[*s as usize].1
        })
}

/// The reason flags in bit order (bit `i` is `oasis_contract::reason` bit
/// `i`); a test pins the order.
const REASONS: [WitReason; 13] = [
    WitReason::ORGANIC,
    WitReason::PROMOTED,
    WitReason::NOT_ELIGIBLE_SURFACE,
    WitReason::NOT_ELIGIBLE_MARKET,
    WitReason::CAMPAIGN_INACTIVE,
    WitReason::FREQ_CAPPED,
    WitReason::PACING_THROTTLED,
    WitReason::RELEVANCE_GUARDRAIL,
    WitReason::DIVERSITY_PENALTY,
    WitReason::FAIRNESS_ADJUST,
    WitReason::EXPLORATION,
    WitReason::SLATE_CAP,
    WitReason::MISSING_FEATURE,
];

/// The reason set whose bits are set in `bits` (generated flags have no
/// constructor from bits). Visits the set bits only.
pub fn wit_reason(bits: u16) -> WitReason {
    let mut out = WitReason::empty();
    let mut rest = bits;
    while rest != 0 {
        let i = rest.trailing_zeros() as usize;
        if let Some(r) = REASONS.get(i) {
            out |= *r;
        }
        rest &= rest - 1;
    }
    out
}

/// A `describe` answer as the wire format's metadata record, which the
/// rest of the host works in (the WIT record takes no serde derives).
pub fn metadata(m: WitMetadata) -> oasis_wire::metadata::Metadata {
    oasis_wire::metadata::Metadata {
        name: m.name,
        version: m.version,
        description: m.description,
        required_features: m.required_features,
        optional_features: m.optional_features,
        context_features: m.context_features,
        settings: m
            .settings
            .into_iter()
            .map(|s| oasis_wire::metadata::SettingInfo {
                name: s.name,
                description: s.description,
                default_json: s.default_json,
            })
            .collect(),
        sdk_version: m.sdk_version,
    }
}

impl oasis_contract::ReasonBits for WitReason {
    fn reason_bits(&self) -> u16 {
        // 13 flags fit in the first (and only) 32-bit word.
        self.as_array()[0] as u16
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oasis_contract::{ReasonBits, reason};

    #[test]
    fn reason_bits_match_the_generated_wit_flags() {
        // REASONS is in bit order: each entry's bit and generated name are
        // the contract's (the name from the generated Debug, which prints
        // the WIT flag name).
        let wit = REASONS;
        let union = wit.iter().fold(WitReason::empty(), |a, b| a | *b);
        assert_eq!(union.reason_bits(), reason::ALL);
        assert_eq!(wit_reason(reason::ALL).as_array(), union.as_array());
        assert_eq!(wit_reason(0).as_array(), WitReason::empty().as_array());
        for (w, (bit, name)) in wit.iter().zip(reason::REASONS) {
            assert_eq!(w.reason_bits(), bit, "{name}");
            assert_eq!(wit_reason(bit).as_array(), w.as_array(), "{name}");
            // The generated Debug prints the WIT flag name.
            let debug = format!("{w:?}").to_lowercase().replace('-', "_");
            assert!(debug.contains(name), "{debug} vs {name}");
        }
    }

    #[test]
    fn surfaces_match_the_generated_wit_types() {
        for s in Surface::ALL {
            let w = wit_surface(s);
            assert_eq!(w as u8, s as u8, "{}", s.name());
            assert_eq!(wit_surface_set(s.bit()).as_array()[0], s.bit() as u32);
        }
        assert_eq!(wit_surface_set(u8::MAX), WitSurfaceSet::all());
        assert_eq!(wit_surface_set(0), WitSurfaceSet::empty());
    }

    #[test]
    fn contract_version_is_the_wit_package_version() {
        let wit = include_str!("../../../wit/policy.wit");
        assert!(
            wit.contains(&format!("package oasis:policy@{CONTRACT_VERSION};")),
            "wit/policy.wit does not declare oasis:policy@{CONTRACT_VERSION}"
        );
    }
}
