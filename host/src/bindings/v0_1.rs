//! The frozen 0.1.0 contract (`wit/0.1.0/policy.wit`), served beside 0.2.0.
//!
//! Component-model types must match exactly, so a component built against
//! 0.1.0 links only with 0.1.0 bindings. The host keeps them here and meets
//! the rest of the crate with two conversions, both by move (no per-candidate
//! copy of the columns):
//!
//! * [`request`]: a current request down to 0.1.0. What 0.1.0 has no field
//!   for is dropped: the slate size, the pacing state's update time and the
//!   rights holders' exposure table. `impressions-24h` travels in its 0.1.0
//!   name, `impressions-last-day`.
//! * [`decisions`]: a 0.1.0 answer up to the current type, with no
//!   campaign updates (0.1.0 policies hand no state back).
//!
//! So a 0.1.0 policy scores exactly what it scored before the host moved to
//! 0.2.0 (a test keeps a 0.1.0 build of pid-pacing and its golden outputs),
//! while the state the host now keeps still reaches it through the fields it
//! already had (`delivered`, the pacing integral and error, impressions).

#[allow(
    missing_docs,
    reason = "generated code; the contract is documented in wit/0.1.0/policy.wit"
)]
mod generated {
    wasmtime::component::bindgen!({
        path: "../wit/0.1.0",
        world: "scoring-policy",
    });
}
pub use generated::*;

use self::oasis::policy::types as v1;
use super::{
    WitCampaign, WitCandidates, WitContext, WitDebugValue, WitDecisions, WitReason, WitRequest,
    WitSurface,
};
use crate::bindings::WitPolicyError;

/// The contract version of this module's bindings.
pub const VERSION: &str = "0.1.0";

/// The name under which a 0.1.0 component exports its policy interface.
pub const POLICY_EXPORT: &str = "oasis:policy/policy@0.1.0";

/// A current request as the 0.1.0 contract carries it (see the module docs).
pub fn request(r: WitRequest) -> v1::Request {
    let WitRequest {
        context,
        candidates,
        campaigns,
        holders: _,
    } = r;
    let WitContext {
        request_id,
        listener_id,
        session_id,
        surface,
        market,
        timestamp_ms,
        seed,
        feature_names,
        features,
        slate_size: _,
    } = context;
    let WitCandidates {
        count,
        relevance,
        feature_names: candidate_feature_names,
        features: candidate_features,
        campaign,
        artist,
        rights_holder,
        impressions_24h,
        session_promoted,
    } = candidates;
    v1::Request {
        context: v1::Context {
            request_id,
            listener_id,
            session_id,
            surface: surface_down(surface),
            market,
            timestamp_ms,
            seed,
            feature_names,
            features,
        },
        candidates: v1::Candidates {
            count,
            relevance,
            feature_names: candidate_feature_names,
            features: candidate_features,
            campaign,
            artist,
            rights_holder,
            impressions_last_day: impressions_24h,
            session_promoted,
        },
        campaigns: campaigns.into_iter().map(campaign_down).collect(),
    }
}

fn campaign_down(c: WitCampaign) -> v1::Campaign {
    v1::Campaign {
        key: c.key,
        start_ms: c.start_ms,
        end_ms: c.end_ms,
        surfaces: surface_set_down(c.surfaces),
        markets: c.markets,
        delivery_target: c.delivery_target,
        delivered: c.delivered,
        expected_by_now: c.expected_by_now,
        pacing_integral: c.pacing_integral,
        pacing_last_error: c.pacing_last_error,
        commission_bps: c.commission_bps,
    }
}

/// The 0.1.0 surface flags in bit order (the same order as 0.2.0's).
const SURFACE_SET: [v1::SurfaceSet; 8] = [
    v1::SurfaceSet::RADIO,
    v1::SurfaceSet::AUTOPLAY,
    v1::SurfaceSet::DAILY_MIX,
    v1::SurfaceSet::ARTIST_MIX,
    v1::SurfaceSet::MOOD_MIX,
    v1::SurfaceSet::DECADE_MIX,
    v1::SurfaceSet::GENRE_MIX,
    v1::SurfaceSet::OTHER,
];

/// Generated flags have no constructor from bits: the set is rebuilt from
/// the bits that are set.
fn surface_set_down(s: super::WitSurfaceSet) -> v1::SurfaceSet {
    let bits = s.as_array()[0];
    SURFACE_SET
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .fold(v1::SurfaceSet::empty(), |set, (_, f)| set | *f)
}

/// A 0.1.0 reason set as the current type (the same flags in the same order).
fn reason_up(r: v1::Reason) -> WitReason {
    super::wit_reason(r.as_array()[0] as u16)
}

fn surface_down(s: WitSurface) -> v1::Surface {
    match s {
        WitSurface::Radio => v1::Surface::Radio,
        WitSurface::Autoplay => v1::Surface::Autoplay,
        WitSurface::DailyMix => v1::Surface::DailyMix,
        WitSurface::ArtistMix => v1::Surface::ArtistMix,
        WitSurface::MoodMix => v1::Surface::MoodMix,
        WitSurface::DecadeMix => v1::Surface::DecadeMix,
        WitSurface::GenreMix => v1::Surface::GenreMix,
        WitSurface::Other => v1::Surface::Other,
    }
}

/// A 0.1.0 answer as the current type, with no campaign updates.
pub fn decisions(d: v1::Decisions) -> WitDecisions {
    WitDecisions {
        scores: d.scores,
        eligible: d.eligible,
        reasons: d.reasons.into_iter().map(reason_up).collect(),
        propensity: d.propensity,
        debug: d
            .debug
            .into_iter()
            .map(|v| WitDebugValue {
                name: v.name.into(),
                candidate: v.candidate,
                value: v.value,
            })
            .collect(),
        campaign_updates: Vec::new(),
    }
}

/// A 0.1.0 metadata record as the wire format's (the record did not change
/// from 0.1.0 to 0.2.0; a field added later takes its default here).
pub fn metadata(m: v1::Metadata) -> oasis_wire::metadata::Metadata {
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

/// A 0.1.0 policy error as the current type (the variant did not change).
pub fn policy_error(e: exports::oasis::policy::policy::PolicyError) -> WitPolicyError {
    use exports::oasis::policy::policy::PolicyError as E;
    match e {
        E::InvalidSettings(m) => WitPolicyError::InvalidSettings(m),
        E::InvalidRequest(m) => WitPolicyError::InvalidRequest(m),
        E::Internal(m) => WitPolicyError::Internal(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_and_surface_bits_are_the_same_in_both_contracts() {
        let pairs = [
            (v1::Reason::ORGANIC, WitReason::ORGANIC),
            (v1::Reason::PROMOTED, WitReason::PROMOTED),
            (
                v1::Reason::NOT_ELIGIBLE_SURFACE,
                WitReason::NOT_ELIGIBLE_SURFACE,
            ),
            (
                v1::Reason::NOT_ELIGIBLE_MARKET,
                WitReason::NOT_ELIGIBLE_MARKET,
            ),
            (v1::Reason::CAMPAIGN_INACTIVE, WitReason::CAMPAIGN_INACTIVE),
            (v1::Reason::FREQ_CAPPED, WitReason::FREQ_CAPPED),
            (v1::Reason::PACING_THROTTLED, WitReason::PACING_THROTTLED),
            (
                v1::Reason::RELEVANCE_GUARDRAIL,
                WitReason::RELEVANCE_GUARDRAIL,
            ),
            (v1::Reason::DIVERSITY_PENALTY, WitReason::DIVERSITY_PENALTY),
            (v1::Reason::FAIRNESS_ADJUST, WitReason::FAIRNESS_ADJUST),
            (v1::Reason::EXPLORATION, WitReason::EXPLORATION),
            (v1::Reason::SLATE_CAP, WitReason::SLATE_CAP),
            (v1::Reason::MISSING_FEATURE, WitReason::MISSING_FEATURE),
        ];
        for (old, new) in pairs {
            assert_eq!(old.as_array(), new.as_array(), "{new:?}");
            assert_eq!(reason_up(old).as_array(), new.as_array());
        }
        use super::super::WitSurfaceSet as S;
        let sets = [
            (v1::SurfaceSet::RADIO, S::RADIO),
            (v1::SurfaceSet::AUTOPLAY, S::AUTOPLAY),
            (v1::SurfaceSet::DAILY_MIX, S::DAILY_MIX),
            (v1::SurfaceSet::ARTIST_MIX, S::ARTIST_MIX),
            (v1::SurfaceSet::MOOD_MIX, S::MOOD_MIX),
            (v1::SurfaceSet::DECADE_MIX, S::DECADE_MIX),
            (v1::SurfaceSet::GENRE_MIX, S::GENRE_MIX),
            (v1::SurfaceSet::OTHER, S::OTHER),
        ];
        for (old, new) in sets {
            assert_eq!(old.as_array(), new.as_array(), "{new:?}");
            assert_eq!(surface_set_down(new).as_array(), old.as_array());
        }
        assert_eq!(
            surface_set_down(S::all()).as_array(),
            v1::SurfaceSet::all().as_array()
        );
        for s in oasis_contract::Surface::ALL {
            assert_eq!(surface_down(super::super::wit_surface(s)) as u8, s as u8);
        }
    }

    #[test]
    fn the_frozen_contract_is_0_1_0() {
        let wit = include_str!("../../../wit/0.1.0/policy.wit");
        assert!(wit.contains("package oasis:policy@0.1.0;"));
        assert!(POLICY_EXPORT.ends_with(VERSION));
    }
}
