//! The contract's `decisions` and `debug-value` as the host keeps them:
//! debug values' names lifted out of the guest without a heap allocation.
//!
//! Why: a policy may report a debug value per candidate (pid-pacing reports
//! three per campaign track, exposure-fairness one), and
//! the generated bindings lift each name into its own `String`. At 1000
//! candidates that was hundreds of allocations, UTF-8 checks and frees a
//! call (BENCHMARKS.md, session 21), for names that are a few bytes long
//! and that serving reads only when a request asks for debug output.
//! [`DebugName`] keeps a name of up to 23 bytes inline
//! ([`smol_str::SmolStr`]); a longer one (the contract allows up to
//! [`oasis_contract::MAX_NAME_BYTES`]) is heap-allocated as before.
//!
//! The lift does what wasmtime's own `string` lift does for a UTF-8
//! component (bounds of linear memory, the hostcall fuel that bounds what
//! the host copies out of a guest, UTF-8 validation, the same errors), and
//! hands any other string encoding to wasmtime's lift. It implements
//! wasmtime's `ComponentType`/`Lift` by hand, through the doc-hidden
//! `wasmtime::component::__internal` items its derive macros use: not under
//! wasmtime's semver, so a wasmtime upgrade re-checks this file (the
//! adversarial tests `debug_value_names_of_every_length_come_through_exactly`
//! and `a_debug_value_name_that_is_not_utf8_traps_the_call` pin it).

use std::ops::Deref;

use smol_str::SmolStr;
use wasmtime::ValRaw;
use wasmtime::component::__internal::wasmtime_environ::component::StringEncoding;
use wasmtime::component::__internal::{CanonicalAbiInfo, InstanceType, InterfaceType, LiftContext};
use wasmtime::component::{ComponentType, Lift};

use super::types::{CampaignUpdate, Reason};

/// What a policy decided (WIT `decisions`): one entry per candidate in
/// each column, plus debug values and campaign controller updates.
#[derive(ComponentType, Lift, Clone, Debug)]
#[component(record)]
pub struct Decisions {
    /// One score per candidate.
    pub scores: Vec<f64>,
    /// Whether each candidate is eligible for promotion.
    pub eligible: Vec<bool>,
    /// Why each candidate scored as it did.
    pub reasons: Vec<Reason>,
    /// The probability the policy promoted each candidate with.
    pub propensity: Vec<f64>,
    /// Named values for debugging and explanation.
    pub debug: Vec<DebugValue>,
    /// New pacing-controller state, at most one per campaign.
    #[component(name = "campaign-updates")]
    pub campaign_updates: Vec<CampaignUpdate>,
}

/// A named value a policy reports for debugging and explanation (WIT
/// `debug-value`, the same in contracts 0.2.0 and 0.3.0).
#[derive(ComponentType, Lift, Clone, Debug, PartialEq)]
#[component(record)]
pub struct DebugValue {
    /// What the value is.
    pub name: DebugName,
    /// The candidate it refers to, or none for a request-level value.
    pub candidate: Option<u32>,
    /// The value.
    pub value: f64,
}

/// A debug value's name: a WIT `string`, kept inline up to 23 bytes.
///
/// ```
/// use oasis::bindings::DebugName;
/// let name = DebugName::from("pacing_multiplier");
/// assert_eq!(&*name, "pacing_multiplier");
/// assert_eq!(name, "pacing_multiplier");
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct DebugName(SmolStr);

impl DebugName {
    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Lifts the name at `ptr`, `len` (bytes) of the guest's linear memory.
    fn lift(cx: &mut LiftContext<'_>, ptr: usize, len: usize) -> wasmtime::Result<Self> {
        let memory = cx.memory();
        match ptr.checked_add(len) {
            Some(end) if end <= memory.len() => cx.consume_fuel(len)?,
            _ => wasmtime::bail!("string pointer/length out of bounds of memory"),
        }
        let text = std::str::from_utf8(&memory[ptr..ptr + len])?;
        Ok(DebugName(SmolStr::new(text)))
    }

    fn utf8(cx: &LiftContext<'_>) -> bool {
        matches!(cx.options().string_encoding, StringEncoding::Utf8)
    }
}

impl Deref for DebugName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<&str> for DebugName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl From<&str> for DebugName {
    fn from(s: &str) -> Self {
        DebugName(SmolStr::new(s))
    }
}

impl From<String> for DebugName {
    fn from(s: String) -> Self {
        DebugName(SmolStr::from(s))
    }
}

// SAFETY: the canonical ABI of `string` (a pointer and a length, two flat
// values), exactly as wasmtime declares it for `str`, `String` and `WasmStr`.
unsafe impl ComponentType for DebugName {
    type Lower = [ValRaw; 2];

    const ABI: CanonicalAbiInfo = CanonicalAbiInfo::POINTER_PAIR;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <str as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: reads the pointer pair from memory as wasmtime's `string` lift
// does (two little-endian u32) and checks it against linear memory before
// reading; flat strings and other encodings go to wasmtime's own lift.
unsafe impl Lift for DebugName {
    fn linear_lift_from_flat(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        src: &Self::Lower,
    ) -> wasmtime::Result<Self> {
        // A name is only ever a record field in a list (lifted from
        // memory below); a flat string would be a top-level result.
        <String as Lift>::linear_lift_from_flat(cx, ty, src).map(DebugName::from)
    }

    fn linear_lift_from_memory(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        bytes: &[u8],
    ) -> wasmtime::Result<Self> {
        if !Self::utf8(cx) {
            return <String as Lift>::linear_lift_from_memory(cx, ty, bytes).map(DebugName::from);
        }
        // A pointer and a length, u32 little-endian (32-bit memory).
        let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        Self::lift(cx, word(0), word(4))
    }
}
