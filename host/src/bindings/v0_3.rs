//! The 0.3.0 contract (`wit/0.3.0/policy.wit`): 0.2.0 with the
//! per-candidate numeric columns as little-endian byte buffers, served
//! beside 0.1.0 and 0.2.0.
//!
//! A guest language's bindings may lift a `list<f64>` element by element
//! into objects of that language (componentize-py makes one Python object
//! per element); a `list<u8>` lifts to one `bytes` in one copy, which the
//! Python SDK reads in place with `memoryview.cast`. The host keeps working
//! in 0.2.0's types and converts at the boundary:
//!
//! * [`request`]: a current request as 0.3.0 buffers. Each column is encoded
//!   with `zerocopy`'s little-endian types, which compile to a copy of the
//!   column on a little-endian host (and stay correct on a big-endian one).
//! * [`decisions`]: a 0.3.0 answer as the current type. A buffer whose
//!   length is not the candidate count times its width is refused naming
//!   the column, before any value is read; the values are then checked by
//!   `oasis_contract::check_decisions` as for every other version.

#[allow(
    missing_docs,
    reason = "generated code; the contract is documented in wit/0.3.0/policy.wit"
)]
mod generated {
    wasmtime::component::bindgen!({
        path: "../wit/0.3.0",
        world: "scoring-policy",
    });
}
pub use generated::*;

use zerocopy::byteorder::little_endian::{F64, I32, U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use self::oasis::policy::types as v3;
use super::{
    WitCampaign, WitCampaignUpdate, WitCandidates, WitContext, WitDebugValue, WitDecisions,
    WitPolicyError, WitRequest, WitSurface,
};

/// The contract version of this module's bindings.
pub const VERSION: &str = "0.3.0";

/// The name under which a 0.3.0 component exports its policy interface.
pub const POLICY_EXPORT: &str = "oasis:policy/policy@0.3.0";

/// `values` as a packed little-endian buffer: a copy of the column's bytes
/// on a little-endian host (`memcpy`), each value through `to_le` on a
/// big-endian one.
fn encode<T, L>(values: &[T], to_le: impl Fn(T) -> L) -> Vec<u8>
where
    T: IntoBytes + Immutable + Copy,
    L: IntoBytes + FromBytes + KnownLayout + Immutable + Unaligned,
{
    if cfg!(target_endian = "little") {
        return values.as_bytes().to_vec();
    }
    encode_each(values, to_le)
}

/// [`encode`] value by value (the big-endian path; tested on any host).
fn encode_each<T: Copy, L>(values: &[T], to_le: impl Fn(T) -> L) -> Vec<u8>
where
    L: IntoBytes + FromBytes + KnownLayout + Immutable + Unaligned,
{
    let mut out = vec![0u8; values.len() * size_of::<L>()];
    let dst = <[L]>::mut_from_bytes(&mut out[..]).expect("the buffer is `len * width` bytes");
    for (d, v) in dst.iter_mut().zip(values) {
        *d = to_le(*v);
    }
    out
}

/// The f64 column `values` as a 0.3.0 buffer.
pub fn encode_f64(values: &[f64]) -> Vec<u8> {
    encode(values, F64::new)
}

/// The u32 column `values` as a 0.3.0 buffer.
pub fn encode_u32(values: &[u32]) -> Vec<u8> {
    encode(values, U32::new)
}

/// The s32 column `values` as a 0.3.0 buffer.
pub fn encode_s32(values: &[i32]) -> Vec<u8> {
    encode(values, I32::new)
}

/// The column `field` of a 0.3.0 answer: `count` values of `T`, copied
/// from the buffer's bytes on a little-endian host (`memcpy`), read through
/// `from_le` on a big-endian one; an error naming the field when the
/// buffer is not `count * width` bytes.
fn decode<T, L>(
    field: &str,
    bytes: &[u8],
    count: usize,
    from_le: impl Fn(&L) -> T,
) -> Result<Vec<T>, String>
where
    T: FromBytes + IntoBytes + Copy,
    L: FromBytes + KnownLayout + Immutable + Unaligned,
{
    let width = size_of::<L>();
    if bytes.len() != count * width {
        return Err(format!(
            "`{field}` is {} bytes; {count} candidates need {} ({width} bytes each)",
            bytes.len(),
            count * width
        ));
    }
    if cfg!(target_endian = "little") && size_of::<T>() == width {
        let mut out = vec![T::new_zeroed(); count];
        out.as_mut_bytes().copy_from_slice(bytes);
        return Ok(out);
    }
    decode_each(bytes, from_le).map_err(|e| format!("`{field}`: {e}"))
}

/// [`decode`] value by value (the big-endian path; tested on any host).
fn decode_each<T, L>(bytes: &[u8], from_le: impl Fn(&L) -> T) -> Result<Vec<T>, String>
where
    L: FromBytes + KnownLayout + Immutable + Unaligned,
{
    let values = <[L]>::ref_from_bytes(bytes).map_err(|e| e.to_string())?;
    Ok(values.iter().map(from_le).collect())
}

/// A current request as 0.3.0 carries it, and its campaign column (which
/// the output check reads, and which 0.3.0 carries only as bytes).
pub fn request(r: WitRequest) -> (v3::Request, Vec<i32>) {
    let WitRequest {
        context,
        candidates,
        campaigns,
        holders,
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
        slate_size,
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
    let request = v3::Request {
        context: v3::Context {
            request_id,
            listener_id,
            session_id,
            surface: surface_up(surface),
            market,
            timestamp_ms,
            seed,
            feature_names,
            features: encode_f64(&features),
            slate_size,
        },
        candidates: v3::Candidates {
            count,
            relevance: encode_f64(&relevance),
            feature_names: candidate_feature_names,
            features: encode_f64(&candidate_features),
            campaign: encode_s32(&campaign),
            artist: encode_u32(&artist),
            rights_holder: encode_u32(&rights_holder),
            impressions_24h: encode_u32(&impressions_24h),
            session_promoted: encode_u32(&session_promoted),
        },
        campaigns: campaigns.into_iter().map(campaign_up).collect(),
        holders: v3::Holders {
            count: holders.count,
            exposure_share_7d: encode_f64(&holders.exposure_share_7d),
        },
    };
    (request, campaign)
}

fn campaign_up(c: WitCampaign) -> v3::Campaign {
    v3::Campaign {
        key: c.key,
        start_ms: c.start_ms,
        end_ms: c.end_ms,
        surfaces: surface_set_up(c.surfaces),
        markets: c.markets,
        delivery_target: c.delivery_target,
        delivered: c.delivered,
        expected_by_now: c.expected_by_now,
        pacing_integral: c.pacing_integral,
        pacing_last_error: c.pacing_last_error,
        pacing_updated_ms: c.pacing_updated_ms,
        commission_bps: c.commission_bps,
    }
}

/// The 0.3.0 surface flags in bit order (the same order as 0.2.0's).
const SURFACE_SET: [v3::SurfaceSet; 8] = [
    v3::SurfaceSet::RADIO,
    v3::SurfaceSet::AUTOPLAY,
    v3::SurfaceSet::DAILY_MIX,
    v3::SurfaceSet::ARTIST_MIX,
    v3::SurfaceSet::MOOD_MIX,
    v3::SurfaceSet::DECADE_MIX,
    v3::SurfaceSet::GENRE_MIX,
    v3::SurfaceSet::OTHER,
];

/// Generated flags have no constructor from bits: the set is rebuilt from
/// the bits that are set.
fn surface_set_up(s: super::WitSurfaceSet) -> v3::SurfaceSet {
    let bits = s.as_array()[0];
    SURFACE_SET
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .fold(v3::SurfaceSet::empty(), |set, (_, f)| set | *f)
}

fn surface_up(s: WitSurface) -> v3::Surface {
    match s {
        WitSurface::Radio => v3::Surface::Radio,
        WitSurface::Autoplay => v3::Surface::Autoplay,
        WitSurface::DailyMix => v3::Surface::DailyMix,
        WitSurface::ArtistMix => v3::Surface::ArtistMix,
        WitSurface::MoodMix => v3::Surface::MoodMix,
        WitSurface::DecadeMix => v3::Surface::DecadeMix,
        WitSurface::GenreMix => v3::Surface::GenreMix,
        WitSurface::Other => v3::Surface::Other,
    }
}

/// A 0.3.0 answer for `count` candidates as the current type.
///
/// # Errors
/// The invalid-output text naming the first column whose buffer is not
/// `count` entries long, or the first candidate whose reason bits name no
/// reason.
pub fn decisions(d: v3::Decisions, count: usize) -> Result<WitDecisions, String> {
    let scores = decode("scores", &d.scores, count, |v: &F64| v.get())?;
    let eligible = decode("eligible", &d.eligible, count, |v: &u8| *v)?;
    let bits = decode("reasons", &d.reasons, count, |v: &U16| v.get())?;
    let propensity = decode("propensity", &d.propensity, count, |v: &F64| v.get())?;
    if let Some((i, b)) = bits
        .iter()
        .enumerate()
        .find(|(_, b)| **b & !oasis_contract::reason::ALL != 0)
    {
        return Err(format!(
            "`reasons` of candidate {i} has bits {b:#06x} set; the contract defines {:#06x}",
            oasis_contract::reason::ALL
        ));
    }
    Ok(WitDecisions {
        scores,
        eligible: eligible.into_iter().map(|b| b != 0).collect(),
        reasons: bits.into_iter().map(super::wit_reason).collect(),
        propensity,
        debug: d
            .debug
            .into_iter()
            .map(|v| WitDebugValue {
                name: v.name.into(),
                candidate: v.candidate,
                value: v.value,
            })
            .collect(),
        campaign_updates: d
            .campaign_updates
            .into_iter()
            .map(|u| WitCampaignUpdate {
                campaign: u.campaign,
                pacing_integral: u.pacing_integral,
                pacing_last_error: u.pacing_last_error,
            })
            .collect(),
    })
}

/// A 0.3.0 metadata record as the wire format's (the record is 0.2.0's).
pub fn metadata(m: v3::Metadata) -> oasis_wire::metadata::Metadata {
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

/// A 0.3.0 policy error as the current type (the variant is 0.2.0's).
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
    use crate::bindings::{WitHolders, WitSurfaceSet};

    #[test]
    fn columns_are_packed_little_endian() {
        assert_eq!(encode_f64(&[1.0, -0.5]), {
            let mut b = 1.0f64.to_le_bytes().to_vec();
            b.extend((-0.5f64).to_le_bytes());
            b
        });
        assert_eq!(encode_u32(&[1, 0x0102_0304]), [1, 0, 0, 0, 4, 3, 2, 1]);
        assert_eq!(encode_s32(&[-1, 2]), [255, 255, 255, 255, 2, 0, 0, 0]);
        assert!(encode_f64(&[]).is_empty());
        // NaN keeps its bits.
        let nan = f64::from_bits(0x7ff8_0000_0000_0001);
        assert_eq!(encode_f64(&[nan]), nan.to_le_bytes());
        // The value-by-value path (big-endian hosts) writes the same bytes
        // and reads them back.
        let f = [1.5, -0.0, nan, f64::MAX];
        assert_eq!(encode_each(&f, F64::new), encode_f64(&f));
        assert_eq!(encode_each(&[-7i32, 9], I32::new), encode_s32(&[-7, 9]));
        assert_eq!(
            encode_each(&[3u32, 1 << 31], U32::new),
            encode_u32(&[3, 1 << 31])
        );
        let back: Vec<u64> = decode_each(&encode_f64(&f), |v: &F64| v.get().to_bits()).unwrap();
        assert_eq!(back, f.map(f64::to_bits));
        let fast = decode("scores", &encode_f64(&f), 4, |v: &F64| v.get()).unwrap();
        assert_eq!(fast.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), back);
        let bits: Vec<u16> = decode_each(&[1, 0, 0, 0x10], |v: &U16| v.get()).unwrap();
        assert_eq!(bits, [1, 0x1000]);
    }

    fn answer(
        scores: Vec<u8>,
        eligible: Vec<u8>,
        reasons: Vec<u8>,
        propensity: Vec<u8>,
    ) -> v3::Decisions {
        v3::Decisions {
            scores,
            eligible,
            reasons,
            propensity,
            debug: vec![v3::DebugValue {
                name: "x".into(),
                candidate: Some(1),
                value: 2.0,
            }],
            campaign_updates: vec![v3::CampaignUpdate {
                campaign: 0,
                pacing_integral: 0.25,
                pacing_last_error: -0.5,
            }],
        }
    }

    #[test]
    fn decisions_decode_every_column() {
        use oasis_contract::{ReasonBits, reason};
        let d = answer(
            encode_f64(&[0.5, 2.0]),
            vec![0, 1],
            [reason::ORGANIC, reason::PROMOTED | reason::EXPLORATION]
                .iter()
                .flat_map(|b| b.to_le_bytes())
                .collect(),
            encode_f64(&[0.0, 0.75]),
        );
        let w = decisions(d, 2).unwrap();
        assert_eq!(w.scores, [0.5, 2.0]);
        assert_eq!(w.eligible, [false, true]);
        assert_eq!(w.reasons[0].reason_bits(), reason::ORGANIC);
        assert_eq!(
            w.reasons[1].reason_bits(),
            reason::PROMOTED | reason::EXPLORATION
        );
        assert_eq!(w.propensity, [0.0, 0.75]);
        assert_eq!(w.debug[0].candidate, Some(1));
        assert_eq!(w.campaign_updates[0].pacing_last_error, -0.5);
    }

    #[test]
    fn a_buffer_of_the_wrong_length_is_refused_naming_its_column() {
        let good = || {
            answer(
                encode_f64(&[0.5, 2.0]),
                vec![0, 0],
                vec![0; 4],
                encode_f64(&[0.0, 0.0]),
            )
        };
        assert!(decisions(good(), 2).is_ok());
        let mut d = good();
        d.scores.pop();
        let e = decisions(d, 2).unwrap_err();
        assert_eq!(
            e,
            "`scores` is 15 bytes; 2 candidates need 16 (8 bytes each)"
        );
        let mut d = good();
        d.eligible.push(1);
        assert!(
            decisions(d, 2)
                .unwrap_err()
                .starts_with("`eligible` is 3 bytes")
        );
        let mut d = good();
        d.reasons.truncate(2);
        assert!(
            decisions(d, 2)
                .unwrap_err()
                .starts_with("`reasons` is 2 bytes")
        );
        let mut d = good();
        d.propensity.extend([0; 8]);
        assert!(
            decisions(d, 2)
                .unwrap_err()
                .starts_with("`propensity` is 24 bytes")
        );
        // Whole entries, but for another candidate count.
        assert!(
            decisions(good(), 3)
                .unwrap_err()
                .starts_with("`scores` is 16 bytes; 3 candidates")
        );
        let mut d = good();
        d.reasons = vec![0, 0, 0, 0x80];
        let e = decisions(d, 2).unwrap_err();
        assert!(
            e.starts_with("`reasons` of candidate 1 has bits 0x8000"),
            "{e}"
        );
    }

    #[test]
    fn a_request_keeps_every_value() {
        let req = WitRequest {
            context: WitContext {
                request_id: "r".into(),
                listener_id: "l".into(),
                session_id: "s".into(),
                surface: WitSurface::MoodMix,
                market: 7,
                timestamp_ms: 9,
                seed: 3,
                feature_names: vec!["h".into()],
                features: vec![21.0],
                slate_size: 2,
            },
            candidates: WitCandidates {
                count: 2,
                relevance: vec![0.9, 0.1],
                feature_names: vec!["a".into()],
                features: vec![f64::NAN, 1.5],
                campaign: vec![-1, 0],
                artist: vec![4, 5],
                rights_holder: vec![0, 1],
                impressions_24h: vec![6, 7],
                session_promoted: vec![8, 9],
            },
            campaigns: vec![WitCampaign {
                key: 1,
                start_ms: 2,
                end_ms: 3,
                surfaces: WitSurfaceSet::RADIO | WitSurfaceSet::OTHER,
                markets: vec![7],
                delivery_target: 4.0,
                delivered: 5.0,
                expected_by_now: 6.0,
                pacing_integral: 7.0,
                pacing_last_error: 8.0,
                pacing_updated_ms: 10,
                commission_bps: 11,
            }],
            holders: WitHolders {
                count: 2,
                exposure_share_7d: vec![0.25, f64::NAN],
            },
        };
        let (r, campaign) = request(req);
        assert_eq!(campaign, [-1, 0]);
        assert_eq!(r.candidates.campaign, encode_s32(&[-1, 0]));
        assert_eq!(r.candidates.relevance, encode_f64(&[0.9, 0.1]));
        assert_eq!(r.candidates.features, encode_f64(&[f64::NAN, 1.5]));
        assert_eq!(r.candidates.artist, encode_u32(&[4, 5]));
        assert_eq!(r.candidates.rights_holder, encode_u32(&[0, 1]));
        assert_eq!(r.candidates.impressions_24h, encode_u32(&[6, 7]));
        assert_eq!(r.candidates.session_promoted, encode_u32(&[8, 9]));
        assert_eq!(r.context.features, encode_f64(&[21.0]));
        assert_eq!(r.context.slate_size, 2);
        assert!(matches!(r.context.surface, v3::Surface::MoodMix));
        assert_eq!(
            r.campaigns[0].surfaces.as_array(),
            (v3::SurfaceSet::RADIO | v3::SurfaceSet::OTHER).as_array()
        );
        assert_eq!(r.campaigns[0].pacing_updated_ms, 10);
        assert_eq!(r.holders.exposure_share_7d, encode_f64(&[0.25, f64::NAN]));
        for s in oasis_contract::Surface::ALL {
            assert_eq!(surface_up(super::super::wit_surface(s)) as u8, s as u8);
        }
    }

    #[test]
    fn the_byte_contract_is_0_3_0() {
        let wit = include_str!("../../../wit/0.3.0/policy.wit");
        assert!(wit.contains("package oasis:policy@0.3.0;"));
        assert!(POLICY_EXPORT.ends_with(VERSION));
    }
}
