//! # oasis-contract: the rules around the WIT types, written once
//!
//! `wit/policy.wit` fixes the *types* that cross the component boundary. The
//! *rules* around them — how long a name may be, which surfaces exist and in
//! what order, how a market code is packed, what each reason bit means, what
//! makes a policy's output acceptable — live here, and only here. The host
//! (`oasis-host`) and the guest SDK (`oasis-sdk`) both depend on this crate,
//! so the check a policy author runs under `cargo test` is, function for
//! function, the check the host applies before a score leaves it.
//!
//! The crate has no dependencies and is `no_std` + `alloc`: it builds natively
//! and for `wasm32-wasip2`, and adds nothing to a policy component but the
//! code it uses.
//!
//! | module | what it decides |
//! |---|---|
//! | crate root | the contract version and the bounds on names, ids, features and magnitudes |
//! | [`surface`] | the surfaces, their names and bit order |
//! | [`market`] | packing an ISO 3166-1 alpha-2 code into the contract's `u16` |
//! | [`reason`] | the reason bits and their names, in WIT order |
//! | [`output`] | the one check of a policy's decisions, returning a typed [`Violation`] |
//!
//! ```
//! use oasis_contract::{market_code, Surface, reason};
//! assert_eq!(market_code("se"), Some(0x5345));
//! assert_eq!(Surface::from_name("daily_mix"), Some(Surface::DailyMix));
//! assert_eq!(reason::names(reason::ORGANIC | reason::SLATE_CAP).collect::<Vec<_>>(),
//!            ["organic", "slate_cap"]);
//! ```
#![no_std]
#![deny(missing_docs)]

extern crate alloc;

pub mod market;
pub mod output;
pub mod reason;
pub mod surface;

pub use market::market_code;
pub use output::{
    CampaignUpdate, CampaignUpdateFields, DebugRef, DecisionsView, ReasonBits, Violation,
    check_decisions,
};
pub use surface::Surface;

/// Version of the contract package (`package oasis:policy@…;` in
/// `wit/policy.wit`). The host pins it against the WIT file in a test.
pub const CONTRACT_VERSION: &str = "0.2.0";

/// Longest name, in bytes: feature names, debug-value names, setting names,
/// policy and route keys.
pub const MAX_NAME_BYTES: usize = 64;

/// Longest id, in bytes: request, listener, session, candidate, campaign,
/// artist and rights-holder ids.
pub const MAX_ID_BYTES: usize = 256;

/// Most features a request may carry per candidate or in its context.
pub const MAX_FEATURES: usize = 256;

/// Most features a policy may declare (required + optional, or context).
pub const MAX_DECLARED_FEATURES: usize = 256;

/// Largest magnitude of relevance and feature values: far beyond any real
/// score, small enough that policy arithmetic cannot overflow. Relevance is
/// also at least 0 ([`valid_relevance`]).
pub const MAX_MAGNITUDE: f64 = 1e9;

/// Debug values a policy may return for `candidates` candidates: a few per
/// candidate plus some request-level ones.
///
/// ```
/// assert_eq!(oasis_contract::max_debug_values(10), 104);
/// ```
pub const fn max_debug_values(candidates: usize) -> usize {
    candidates.saturating_mul(4).saturating_add(64)
}

/// The candidate feature columns a policy receives, in order: its required
/// features, then its optional features not already required. The host
/// builds every batch with exactly these columns (values NaN where a
/// candidate lacks one), and the SDK's test harness does the same.
///
/// ```
/// let cols = oasis_contract::feature_columns(&["a".into()], &["b".into(), "a".into()]);
/// assert_eq!(cols, ["a", "b"]);
/// ```
pub fn feature_columns(
    required: &[alloc::string::String],
    optional: &[alloc::string::String],
) -> alloc::vec::Vec<alloc::string::String> {
    let mut cols = required.to_vec();
    for f in optional {
        if !cols.contains(f) {
            cols.push(f.clone());
        }
    }
    cols
}

/// Whether `name` is a valid key: 1 to [`MAX_NAME_BYTES`] bytes of
/// `[A-Za-z0-9._-]`. Policy keys, route names, feature names and policy
/// names (which also exclude `.`) follow it.
///
/// ```
/// assert!(oasis_contract::is_key("guarded-boost"));
/// assert!(oasis_contract::is_key("p_skip.v2"));
/// assert!(!oasis_contract::is_key("has space"));
/// assert!(!oasis_contract::is_key(""));
/// ```
pub fn is_key(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Whether `value` is an acceptable base relevance: a finite number in
/// [0, [`MAX_MAGNITUDE`]]. Relevance is a recommender's score, higher is
/// better; a negative one has no meaning the policies could act on (the
/// relevance guardrail and boosts compare it with floors at or above 0).
///
/// ```
/// assert!(oasis_contract::valid_relevance(0.0));
/// assert!(oasis_contract::valid_relevance(1e9));
/// assert!(!oasis_contract::valid_relevance(-0.25));
/// assert!(!oasis_contract::valid_relevance(f64::NAN));
/// ```
pub fn valid_relevance(value: f64) -> bool {
    (0.0..=MAX_MAGNITUDE).contains(&value)
}

/// Whether `value` is an acceptable feature value: finite and of
/// magnitude at most [`MAX_MAGNITUDE`].
///
/// ```
/// assert!(oasis_contract::within_magnitude(-1e9));
/// assert!(!oasis_contract::within_magnitude(f64::NAN));
/// assert!(!oasis_contract::within_magnitude(2e9));
/// ```
pub fn within_magnitude(value: f64) -> bool {
    value.abs() <= MAX_MAGNITUDE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_bounded_and_plain() {
        assert!(is_key(&"a".repeat(MAX_NAME_BYTES)));
        assert!(!is_key(&"a".repeat(MAX_NAME_BYTES + 1)));
        assert!(!is_key("é"));
        assert!(!is_key("a/b"));
    }

    #[test]
    fn debug_budget_saturates() {
        assert_eq!(max_debug_values(0), 64);
        assert_eq!(max_debug_values(usize::MAX), usize::MAX);
    }
}
