//! The request a policy scores: context, columnar candidates and campaigns.
//!
//! The layout mirrors the WIT contract (`wit/policy.wit`) so that the
//! WebAssembly bindings move their vectors in without copying. Accessors make
//! the columnar form pleasant: resolve a feature name to a [`Feature`] once
//! per request, then read it per candidate through [`Candidate::get`].

use crate::rng::Rng;

/// Where the listening happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Surface {
    Radio,
    Autoplay,
    DailyMix,
    ArtistMix,
    MoodMix,
    DecadeMix,
    GenreMix,
    Other,
}

impl Surface {
    /// Every surface, in contract order.
    pub const ALL: [Surface; 8] = [
        Surface::Radio,
        Surface::Autoplay,
        Surface::DailyMix,
        Surface::ArtistMix,
        Surface::MoodMix,
        Surface::DecadeMix,
        Surface::GenreMix,
        Surface::Other,
    ];

    /// The bit of this surface in a [`SurfaceSet`].
    pub fn bit(self) -> SurfaceSet {
        SurfaceSet::from_bits_retain(1 << self as u8)
    }
}

bitflags::bitflags! {
    /// A set of surfaces; bit `i` is `Surface::ALL[i]` (same order as the WIT flags).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct SurfaceSet: u8 {
        const RADIO = 1 << 0;
        const AUTOPLAY = 1 << 1;
        const DAILY_MIX = 1 << 2;
        const ARTIST_MIX = 1 << 3;
        const MOOD_MIX = 1 << 4;
        const DECADE_MIX = 1 << 5;
        const GENRE_MIX = 1 << 6;
        const OTHER = 1 << 7;
    }
}

/// Packs an ISO 3166-1 alpha-2 code ("SE") into the contract's `u16` form.
///
/// Returns `None` unless `code` is exactly two ASCII letters. Letters are
/// upper-cased, so "se" and "SE" pack the same.
///
/// ```
/// assert_eq!(oasis_sdk::market_code("SE"), Some(0x5345));
/// assert_eq!(oasis_sdk::market_code("se"), Some(0x5345));
/// assert_eq!(oasis_sdk::market_code("SWE"), None);
/// ```
pub fn market_code(code: &str) -> Option<u16> {
    match code.as_bytes() {
        [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
            Some(((a.to_ascii_uppercase() as u16) << 8) | b.to_ascii_uppercase() as u16)
        }
        _ => None,
    }
}

/// The listening context of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    pub request_id: String,
    pub listener_id: String,
    pub session_id: String,
    pub surface: Surface,
    /// Market, packed with [`market_code`].
    pub market: u16,
    /// Unix time of the request in milliseconds.
    pub timestamp_ms: i64,
    /// The only source of randomness a policy may use: see [`Request::rng`].
    pub seed: u64,
    pub feature_names: Vec<String>,
    /// Aligned with `feature_names`; NaN means missing.
    pub features: Vec<f64>,
}

/// A promotion campaign.
#[derive(Debug, Clone, PartialEq)]
pub struct Campaign {
    /// Small integer key; the host maps it back to the campaign id.
    pub key: u32,
    /// Active window in unix milliseconds: `[start_ms, end_ms)`.
    pub start_ms: i64,
    pub end_ms: i64,
    pub surfaces: SurfaceSet,
    /// Markets packed with [`market_code`]; empty means every market.
    pub markets: Vec<u16>,
    /// Promoted impressions targeted over the whole window.
    pub delivery_target: f64,
    /// Promoted impressions delivered so far.
    pub delivered: f64,
    /// What a linear schedule would have delivered by now.
    pub expected_by_now: f64,
    /// Leaky integral of the normalized delivery error (carried by the host).
    pub pacing_integral: f64,
    /// Normalized delivery error of the previous pacing step.
    pub pacing_last_error: f64,
    pub commission_bps: u32,
}

impl Campaign {
    /// Whether the campaign runs at `timestamp_ms`.
    pub fn is_active(&self, timestamp_ms: i64) -> bool {
        self.start_ms <= timestamp_ms && timestamp_ms < self.end_ms
    }

    /// Whether the campaign may promote on `surface`.
    pub fn allows_surface(&self, surface: Surface) -> bool {
        self.surfaces.contains(surface.bit())
    }

    /// Whether the campaign may promote in `market` (packed).
    pub fn allows_market(&self, market: u16) -> bool {
        self.markets.is_empty() || self.markets.contains(&market)
    }

    /// Normalized delivery error: positive when under-delivering.
    /// `(expected_by_now - delivered) / delivery_target`, 0 without a target.
    pub fn delivery_error(&self) -> f64 {
        if self.delivery_target > 0.0 {
            (self.expected_by_now - self.delivered) / self.delivery_target
        } else {
            0.0
        }
    }
}

/// The candidates of a request, column by column.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Candidates {
    pub count: u32,
    pub relevance: Vec<f64>,
    pub feature_names: Vec<String>,
    /// Row-major: candidate `i`, feature `j` at `i * feature_names.len() + j`.
    pub features: Vec<f64>,
    /// Index into [`Request::campaigns`], or -1 for organic tracks.
    pub campaign: Vec<i32>,
    pub artist: Vec<u32>,
    pub rights_holder: Vec<u32>,
    pub impressions_24h: Vec<u32>,
    pub session_promoted: Vec<u32>,
}

/// One scoring request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub context: Context,
    pub candidates: Candidates,
    pub campaigns: Vec<Campaign>,
}

/// A candidate feature column, resolved by name once per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feature {
    column: usize,
}

impl Request {
    /// Number of candidates.
    pub fn len(&self) -> usize {
        self.candidates.count as usize
    }

    /// Whether there are no candidates.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves a candidate feature column by name.
    ///
    /// # Errors
    /// [`PolicyError::InvalidRequest`](crate::PolicyError::InvalidRequest)
    /// naming the feature when the request does not carry it. Declare the
    /// feature as required in your [`Metadata`](crate::Metadata) so the host sends it.
    pub fn feature(&self, name: &str) -> Result<Feature, crate::PolicyError> {
        self.optional_feature(name).ok_or_else(|| {
            crate::PolicyError::InvalidRequest(format!(
                "the request has no candidate feature `{name}` (it carries: {:?})",
                self.candidates.feature_names
            ))
        })
    }

    /// Resolves a candidate feature column by name, `None` when absent.
    pub fn optional_feature(&self, name: &str) -> Option<Feature> {
        self.candidates
            .feature_names
            .iter()
            .position(|n| n == name)
            .map(|column| Feature { column })
    }

    /// A context feature by name; `None` when absent or NaN.
    pub fn context_feature(&self, name: &str) -> Option<f64> {
        let ctx = &self.context;
        let i = ctx.feature_names.iter().position(|n| n == name)?;
        ctx.features.get(i).copied().filter(|v| !v.is_nan())
    }

    /// Candidate `index`. Panics if out of range.
    pub fn candidate(&self, index: usize) -> Candidate<'_> {
        assert!(index < self.len(), "candidate {index} out of range");
        Candidate { req: self, index }
    }

    /// All candidates in request order.
    pub fn candidates(&self) -> impl ExactSizeIterator<Item = Candidate<'_>> + '_ {
        (0..self.len()).map(move |index| Candidate { req: self, index })
    }

    /// A deterministic random generator seeded from the request's seed.
    /// Two calls return generators producing the same sequence.
    pub fn rng(&self) -> Rng {
        Rng::from_seed(self.context.seed)
    }
}

/// A view of one candidate.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    req: &'a Request,
    index: usize,
}

impl<'a> Candidate<'a> {
    /// Position in the request (results are aligned by it).
    pub fn index(&self) -> usize {
        self.index
    }

    /// Base relevance from the recommender.
    pub fn relevance(&self) -> f64 {
        self.req.candidates.relevance[self.index]
    }

    /// Feature value; `None` when missing (NaN).
    pub fn get(&self, feature: Feature) -> Option<f64> {
        let width = self.req.candidates.feature_names.len();
        let v = self.req.candidates.features[self.index * width + feature.column];
        (!v.is_nan()).then_some(v)
    }

    /// The candidate's campaign, `None` for organic tracks.
    pub fn campaign(&self) -> Option<&'a Campaign> {
        let c = self.req.candidates.campaign[self.index];
        usize::try_from(c)
            .ok()
            .and_then(|c| self.req.campaigns.get(c))
    }

    /// Primary artist key.
    pub fn artist(&self) -> u32 {
        self.req.candidates.artist[self.index]
    }

    /// Rights holder key.
    pub fn rights_holder(&self) -> u32 {
        self.req.candidates.rights_holder[self.index]
    }

    /// Promoted impressions to this listener in the last 24 hours.
    pub fn impressions_24h(&self) -> u32 {
        self.req.candidates.impressions_24h[self.index]
    }

    /// Promoted plays of this track in this session.
    pub fn session_promoted(&self) -> u32 {
        self.req.candidates.session_promoted[self.index]
    }
}
