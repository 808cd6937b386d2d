//! The bridge between the WIT bindings and the SDK's own types.
//!
//! Authors never see this module: [`export_policy!`](crate::export_policy)
//! expands to a type implementing the generated `Guest` trait by calling the
//! functions here. Conversions move the bindings' vectors into the SDK types,
//! so the columnar data is not copied again inside the guest.

use crate::bindings::exports::oasis::policy::policy as wit_policy;
use crate::bindings::oasis::policy::types as wit;
use crate::{
    Campaign, Candidates, Context, Holders, Metadata, Policy, PolicyError, Request, Surface,
    SurfaceSet,
};

/// `metadata` export.
pub fn metadata<P: Policy>() -> wit::Metadata {
    let m: Metadata = crate::policy::full_metadata::<P>();
    wit::Metadata {
        name: m.name,
        version: m.version,
        description: m.description,
        required_features: m.required_features,
        optional_features: m.optional_features,
        context_features: m.context_features,
        settings: m
            .settings
            .into_iter()
            .map(|s| wit::SettingInfo {
                name: s.name,
                description: s.description,
                default_json: s.default_json,
            })
            .collect(),
        sdk_version: m.sdk_version,
    }
}

/// `validate-settings` export.
pub fn validate_settings<P: Policy>(json: &str) -> Result<(), wit::PolicyError> {
    crate::policy::parse_settings::<P>(json)
        .map(drop)
        .map_err(to_wit_error)
}

/// `score` export.
pub fn score<P: Policy>(
    json: &str,
    request: wit::Request,
) -> Result<wit::Decisions, wit::PolicyError> {
    let settings = crate::policy::parse_settings::<P>(json).map_err(to_wit_error)?;
    let request = from_wit_request(request);
    request.check_shape().map_err(to_wit_error)?;
    let d = P::score(&settings, &request).map_err(to_wit_error)?;
    Ok(wit::Decisions {
        scores: d.scores,
        eligible: d.eligible,
        reasons: d
            .reasons
            .into_iter()
            .map(|r| wit::Reason::from_bits_retain(r.bits()))
            .collect(),
        propensity: d.propensity,
        debug: d
            .debug
            .into_iter()
            .map(|v| wit::DebugValue {
                name: v.name,
                candidate: v.candidate,
                value: v.value,
            })
            .collect(),
        campaign_updates: d
            .campaign_updates
            .into_iter()
            .map(|u| wit::CampaignUpdate {
                campaign: u.campaign,
                pacing_integral: u.pacing_integral,
                pacing_last_error: u.pacing_last_error,
            })
            .collect(),
    })
}

fn to_wit_error(e: PolicyError) -> wit::PolicyError {
    match e {
        PolicyError::InvalidSettings(m) => wit::PolicyError::InvalidSettings(m),
        PolicyError::InvalidRequest(m) => wit::PolicyError::InvalidRequest(m),
        PolicyError::Internal(m) => wit::PolicyError::Internal(m),
    }
}

fn from_wit_surface(s: wit::Surface) -> Surface {
    // The WIT enum and the contract list the surfaces in the same order
    // (pinned by a test), so the discriminant is the index.
    Surface::ALL[s as usize]
}

fn from_wit_request(r: wit::Request) -> Request {
    let c = r.context;
    let k = r.candidates;
    Request {
        context: Context {
            request_id: c.request_id,
            listener_id: c.listener_id,
            session_id: c.session_id,
            surface: from_wit_surface(c.surface),
            market: c.market,
            timestamp_ms: c.timestamp_ms,
            seed: c.seed,
            feature_names: c.feature_names,
            features: c.features,
            slate_size: c.slate_size,
        },
        candidates: Candidates {
            count: k.count,
            relevance: k.relevance,
            feature_names: k.feature_names,
            features: k.features,
            campaign: k.campaign,
            artist: k.artist,
            rights_holder: k.rights_holder,
            impressions_24h: k.impressions_24h,
            session_promoted: k.session_promoted,
        },
        campaigns: r
            .campaigns
            .into_iter()
            .map(|c| Campaign {
                key: c.key,
                start_ms: c.start_ms,
                end_ms: c.end_ms,
                surfaces: SurfaceSet::from_bits_retain(c.surfaces.bits()),
                markets: c.markets,
                delivery_target: c.delivery_target,
                delivered: c.delivered,
                expected_by_now: c.expected_by_now,
                pacing_integral: c.pacing_integral,
                pacing_last_error: c.pacing_last_error,
                pacing_updated_ms: c.pacing_updated_ms,
                commission_bps: c.commission_bps,
            })
            .collect(),
        holders: Holders {
            count: r.holders.count,
            exposure_share_7d: r.holders.exposure_share_7d,
        },
    }
}

/// The generated trait [`export_policy!`](crate::export_policy) implements.
pub use wit_policy::Guest;

/// Exports a [`Policy`] implementation as the component's `policy` interface.
///
/// Use it once per policy crate, at the crate root:
/// `oasis_sdk::export_policy!(MyPolicy);` (see the crate docs for a complete
/// policy). On non-wasm targets it expands to nothing, so the same crate is
/// unit-tested natively.
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __OasisExport;
            impl $crate::__private::Guest for __OasisExport {
                fn describe() -> $crate::__private::wit::Metadata {
                    $crate::__private::metadata::<$policy>()
                }
                fn validate_settings(
                    settings_json: ::std::string::String,
                ) -> ::std::result::Result<(), $crate::__private::wit::PolicyError> {
                    $crate::__private::validate_settings::<$policy>(&settings_json)
                }
                fn score(
                    settings_json: ::std::string::String,
                    request: $crate::__private::wit::Request,
                ) -> ::std::result::Result<
                    $crate::__private::wit::Decisions,
                    $crate::__private::wit::PolicyError,
                > {
                    $crate::__private::score::<$policy>(&settings_json, request)
                }
            }
    $crate::bindings::__export_oasis_policy!(__OasisExport with_types_in $crate::bindings);
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wit_surfaces_are_in_contract_order() {
        let wit = [
            wit::Surface::Radio,
            wit::Surface::Autoplay,
            wit::Surface::DailyMix,
            wit::Surface::ArtistMix,
            wit::Surface::MoodMix,
            wit::Surface::DecadeMix,
            wit::Surface::GenreMix,
            wit::Surface::Other,
        ];
        for (w, s) in wit.into_iter().zip(Surface::ALL) {
            assert_eq!(from_wit_surface(w), s);
            assert_eq!(
                wit::SurfaceSet::from_bits(s.bit()).map(|b| b.bits()),
                Some(SurfaceSet::from(s).bits())
            );
        }
        assert_eq!(wit::SurfaceSet::all().bits(), SurfaceSet::all().bits());
    }
}
