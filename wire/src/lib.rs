//! # oasis-wire: each of Oasis's wire formats, defined once
//!
//! A format that two programs read must mean the same thing to both. Oasis
//! had each of its formats written out several times — the JSON scoring
//! request parsed by the host, again by the guest SDK's test harness and
//! again by the JSON ─► protobuf conversion; the golden fixture file read
//! and compared by `oasis test` and again by the SDK's native runner; the
//! policy metadata record copied field by field between the SDK, its
//! export, the host and the 0.1.0 binding — so a new field cost about eight
//! edits, and a forgotten one made two readers disagree. This crate is the
//! one definition of each; the host, the SDK's testing module and
//! `oasis-proto` all use it.
//!
//! - [`request`]: the JSON scoring request (the body of `POST /v1/score`,
//!   the `request` of a fixture, what the decision log keeps): serde types
//!   that borrow their strings from the body, a parser that names the JSON
//!   path of an error, and the packing every reader shares (the request's
//!   seed, campaigns sent once, the feature matrix).
//! - [`fixture`]: the golden fixture file of `oasis test` and the SDK's
//!   `check_fixture` (`policies/*/fixtures/*.json`), its comparison with a
//!   policy's output (tolerance, fields compared, the list of mismatches)
//!   and the blessing that rewrites its expectations.
//! - [`metadata`]: what a policy says about itself (the WIT `metadata`
//!   record as a plain, serializable struct), built by the SDK and read by
//!   the host.
//!
//! What stays elsewhere: the contract's *rules* (bounds, surfaces, markets,
//! reason codes, the output check) are `oasis-contract`, which stays
//! `no_std` and dependency-free; checking a request against them
//! (`ScoreRequest` ─► the host's `ValidRequest`) is the host's; conversions
//! from and to the WIT-generated types live next to those bindings.
//!
//! The crate is std and serde only, so that it builds for policies
//! (`wasm32-wasip2`, through the SDK) as well as for the host. The `schema`
//! feature adds the [utoipa] schemas of the request types, for the host's
//! OpenAPI document; the SDK leaves it off.
//!
//! [utoipa]: https://docs.rs/utoipa
#![warn(missing_docs)]

pub mod fixture;
pub mod metadata;
pub mod request;
