//! The catalog the traffic draws from: tracks with Zipf popularity, artists
//! and rights holders (labels) with Zipf-like sizes, and the promotion
//! campaigns a few percent of the tracks are in.
//!
//! Tracks are stored in popularity order (index 0 is the most streamed), so
//! drawing a Zipf rank draws a track by popularity. Whether a track is
//! promoted does not depend on its popularity, so any popularity-weighted
//! sample of candidates carries the configured campaign share on average.

use oasis_contract::Surface;
use rand::distr::weighted::WeightedIndex;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, LogNormal, Normal, Zipf};
use serde::{Serialize, Serializer};

/// One day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;

/// Default "now" of the generated traffic: 2026-06-15T12:00:00Z, the same
/// instant as `examples/request.json`, so runs are reproducible.
pub const DEFAULT_NOW_MS: i64 = 1_781_524_800_000;

/// The algorithmic mixes (the surfaces of the `mixes` route).
pub const MIXES: [Surface; 5] = [
    Surface::DailyMix,
    Surface::ArtistMix,
    Surface::MoodMix,
    Surface::DecadeMix,
    Surface::GenreMix,
];

/// Serializes a surface by its contract name (`daily_mix`), as the request
/// schema spells it.
pub fn serialize_surface<S: Serializer>(surface: &Surface, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(surface.name())
}

/// Serializes a campaign's surface list by contract names.
fn serialize_surfaces<S: Serializer>(
    surfaces: &Option<Vec<Surface>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match surfaces {
        Some(list) => s.collect_seq(list.iter().map(|x| x.name())),
        None => s.serialize_none(),
    }
}

/// Markets and their share of listening (roughly a global streaming mix).
pub const MARKETS: [(&str, f64); 13] = [
    ("US", 0.30),
    ("BR", 0.12),
    ("GB", 0.10),
    ("DE", 0.09),
    ("MX", 0.07),
    ("SE", 0.06),
    ("FR", 0.06),
    ("NL", 0.04),
    ("ES", 0.04),
    ("NO", 0.03),
    ("DK", 0.03),
    ("FI", 0.03),
    ("CA", 0.03),
];

/// Market groups a campaign may be limited to.
const CAMPAIGN_REGIONS: [&[&str]; 7] = [
    &["SE", "NO", "DK", "FI"],
    &["US", "CA"],
    &["US"],
    &["BR", "MX"],
    &["GB"],
    &["DE", "NL"],
    &["FR", "ES"],
];

/// How to build a catalog.
#[derive(Debug, Clone)]
pub struct CatalogConfig {
    /// Number of tracks.
    pub tracks: usize,
    /// Number of artists.
    pub artists: usize,
    /// Number of rights holders (labels and distributors).
    pub rights_holders: usize,
    /// Zipf exponent of track popularity (1.0: the classic long tail).
    pub popularity_exponent: f64,
    /// Fraction of tracks in a promotion campaign.
    pub campaign_share: f64,
    /// "Now" for campaign windows and delivery states, unix ms.
    pub now_ms: i64,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        CatalogConfig {
            tracks: 50_000,
            artists: 5_000,
            rights_holders: 60,
            popularity_exponent: 1.0,
            campaign_share: 0.03,
            now_ms: DEFAULT_NOW_MS,
        }
    }
}

/// One track of the catalog.
#[derive(Debug, Clone)]
pub struct Track {
    /// Track id, `spotify:track:<16 hex>`.
    pub id: String,
    /// Primary artist (index).
    pub artist: u32,
    /// Rights holder (index).
    pub rights_holder: u32,
    /// Popularity in [0, 1], decreasing with popularity rank.
    pub popularity: f64,
    /// Days since release.
    pub release_age_days: u32,
    /// How well the track tends to land with listeners, about N(0, 0.5);
    /// positive lowers the predicted skip probability.
    pub appeal: f64,
    /// Campaign (index into [`Catalog::campaigns`]), if promoted.
    pub campaign: Option<u32>,
}

/// A promotion campaign, serialized exactly as the request's inline
/// `campaign` object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Campaign {
    /// Campaign id, `cmp-<n>`.
    pub id: String,
    /// Start of the active window (unix ms, inclusive).
    pub start_ms: i64,
    /// End of the active window (unix ms, exclusive).
    pub end_ms: i64,
    /// Surfaces it may promote on; all but `other` when absent.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_surfaces"
    )]
    pub surfaces: Option<Vec<Surface>>,
    /// Markets it may promote in; every market when empty.
    pub markets: Vec<&'static str>,
    /// Promoted impressions targeted over the window.
    pub delivery_target: f64,
    /// Promoted impressions delivered so far.
    pub delivered: f64,
    /// What a linear schedule would have delivered by now.
    pub expected_by_now: f64,
    /// Pacing controller state: leaky integral of the delivery error.
    pub pacing_integral: f64,
    /// Pacing controller state: previous delivery error.
    pub pacing_last_error: f64,
    /// Commission accepted, basis points.
    pub commission_bps: u32,
    /// The rights holder running it (not sent).
    #[serde(skip)]
    pub rights_holder: u32,
}

impl Campaign {
    /// Whether `now_ms` falls in the active window.
    pub fn is_active(&self, now_ms: i64) -> bool {
        self.start_ms <= now_ms && now_ms < self.end_ms
    }
}

/// Tracks, campaigns and per-holder statistics, generated from a seed.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// The configuration it was built from.
    pub config: CatalogConfig,
    /// Tracks, most popular first.
    pub tracks: Vec<Track>,
    /// Promotion campaigns.
    pub campaigns: Vec<Campaign>,
    /// Each rights holder's share of listening attention over the last 7
    /// days (sums to about 1).
    pub holder_exposure_7d: Vec<f64>,
    popularity: Zipf<f64>,
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// A Zipf sampler over `0..n` (rank 0 most likely).
fn zipf(n: usize, s: f64) -> Zipf<f64> {
    Zipf::new(n.max(1) as f64, s).expect("valid Zipf parameters")
}

fn draw(z: &Zipf<f64>, rng: &mut StdRng) -> usize {
    z.sample(rng) as usize - 1
}

impl Catalog {
    /// Builds a catalog; the same config and seed give the same catalog.
    ///
    /// # Panics
    /// If `tracks`, `artists` or `rights_holders` is zero, or
    /// `campaign_share` is outside [0, 1].
    pub fn generate(config: CatalogConfig, seed: u64) -> Catalog {
        assert!(config.tracks > 0 && config.artists > 0 && config.rights_holders > 0);
        assert!((0.0..=1.0).contains(&config.campaign_share));
        let mut rng = StdRng::seed_from_u64(seed);
        let n = config.tracks;

        // Labels: a few majors hold most artists, a long tail of indies.
        let holder_of_artist = zipf(config.rights_holders, 1.1);
        let artist_holder: Vec<u32> = (0..config.artists)
            .map(|_| draw(&holder_of_artist, &mut rng) as u32)
            .collect();
        let artist_of_track = zipf(config.artists, 0.9);
        let age = LogNormal::new(900f64.ln(), 1.2).unwrap();
        let appeal = Normal::new(0.0, 0.5).unwrap();
        let log_n = ((n + 1) as f64).ln();
        let tracks: Vec<Track> = (0..n)
            .map(|rank| {
                let artist = draw(&artist_of_track, &mut rng) as u32;
                // Mostly the artist's label; sometimes a compilation or a
                // distribution deal with another holder.
                let rights_holder = if rng.random_bool(0.9) {
                    artist_holder[artist as usize]
                } else {
                    draw(&holder_of_artist, &mut rng) as u32
                };
                let popularity = 1.0 - ((rank + 1) as f64).ln() / log_n;
                Track {
                    id: format!("spotify:track:{:016x}", rng.random::<u64>()),
                    artist,
                    rights_holder,
                    popularity: round4(
                        (popularity + rng.random_range(-0.02..0.02)).clamp(0.0, 1.0),
                    ),
                    release_age_days: age.sample(&mut rng).min(20_000.0) as u32,
                    appeal: appeal.sample(&mut rng),
                    campaign: None,
                }
            })
            .collect();

        // Attention share per holder: the popularity mass of its tracks,
        // with some noise (the 7-day window is not the whole history).
        let s = config.popularity_exponent;
        let mut mass = vec![0.0; config.rights_holders];
        for (rank, t) in tracks.iter().enumerate() {
            mass[t.rights_holder as usize] += ((rank + 1) as f64).powf(-s);
        }
        let noise = LogNormal::new(0.0, 0.15).unwrap();
        for m in &mut mass {
            *m *= noise.sample(&mut rng);
        }
        let total: f64 = mass.iter().sum();
        let holder_exposure_7d = mass.iter().map(|m| round4(m / total)).collect();

        let mut catalog = Catalog {
            popularity: zipf(n, s),
            config,
            tracks,
            campaigns: Vec::new(),
            holder_exposure_7d,
        };
        catalog.assign_campaigns(&mut rng);
        catalog
    }

    /// Puts `campaign_share` of the tracks, chosen independently of
    /// popularity, into campaigns of 1 to 6 tracks of one rights holder.
    fn assign_campaigns(&mut self, rng: &mut StdRng) {
        let n = self.tracks.len();
        let k = (self.config.campaign_share * n as f64).round() as usize;
        let mut promoted: Vec<usize> = rand::seq::index::sample(rng, n, k).into_vec();
        promoted.sort_by_key(|&t| (self.tracks[t].rights_holder, self.tracks[t].artist, t));
        let mut i = 0;
        while i < promoted.len() {
            let holder = self.tracks[promoted[i]].rights_holder;
            let size = rng.random_range(1..=6);
            let c = self.campaigns.len() as u32;
            let campaign = new_campaign(c, holder, self.config.now_ms, rng);
            self.campaigns.push(campaign);
            let mut taken = 0;
            while taken < size
                && i < promoted.len()
                && self.tracks[promoted[i]].rights_holder == holder
            {
                self.tracks[promoted[i]].campaign = Some(c);
                taken += 1;
                i += 1;
            }
        }
    }

    /// Draws a track index by popularity.
    pub fn sample_track(&self, rng: &mut StdRng) -> usize {
        draw(&self.popularity, rng).min(self.tracks.len() - 1)
    }

    /// The campaign of track `t`, if it is promoted.
    pub fn campaign_of(&self, t: usize) -> Option<&Campaign> {
        self.tracks[t].campaign.map(|c| &self.campaigns[c as usize])
    }

    /// Fraction of tracks in a campaign.
    pub fn promoted_share(&self) -> f64 {
        let k = self.tracks.iter().filter(|t| t.campaign.is_some()).count();
        k as f64 / self.tracks.len() as f64
    }
}

/// A campaign with a realistic state: mostly active (some not started yet,
/// some ended), sometimes limited to surfaces or markets, under- or
/// over-delivering against a linear schedule, with matching pacing state.
fn new_campaign(index: u32, rights_holder: u32, now_ms: i64, rng: &mut StdRng) -> Campaign {
    let length = 30 * DAY_MS;
    let phase: f64 = rng.random();
    let start_ms = if phase < 0.82 {
        now_ms - rng.random_range(DAY_MS / 4..29 * DAY_MS)
    } else if phase < 0.94 {
        now_ms - length - rng.random_range(DAY_MS / 4..20 * DAY_MS)
    } else {
        now_ms + rng.random_range(DAY_MS / 4..10 * DAY_MS)
    };
    let end_ms = start_ms + length;

    let surfaces = match rng.random_range(0..100) {
        0..60 => None,
        60..80 => Some(vec![Surface::Radio, Surface::Autoplay]),
        80..92 => Some(MIXES.to_vec()),
        _ => Some(vec![Surface::Radio]),
    };
    let markets = if rng.random_bool(0.55) {
        Vec::new()
    } else {
        CAMPAIGN_REGIONS[rng.random_range(0..CAMPAIGN_REGIONS.len())].to_vec()
    };

    let target = LogNormal::new(20_000f64.ln(), 0.8)
        .unwrap()
        .sample(rng)
        .round()
        .max(500.0);
    let elapsed = ((now_ms - start_ms) as f64 / length as f64).clamp(0.0, 1.0);
    let expected = (target * elapsed).round();
    // Ratio of delivered to scheduled: log-normal, so both under- and
    // over-delivery, mostly within ±40%.
    let ratio = LogNormal::new(0.0, 0.3).unwrap().sample(rng);
    let delivered = (expected * ratio).round();
    let error = (expected - delivered) / target;
    let integral =
        (error * rng.random_range(1.5..4.0) + rng.random_range(-0.02..0.02)).clamp(-1.0, 1.0);
    const COMMISSIONS: [u32; 5] = [2000, 2500, 3000, 3000, 3000];
    Campaign {
        id: format!("cmp-{index:05}"),
        start_ms,
        end_ms,
        surfaces,
        markets,
        delivery_target: target,
        delivered,
        expected_by_now: expected,
        pacing_integral: round4(integral),
        pacing_last_error: round4(error),
        commission_bps: COMMISSIONS[rng.random_range(0..COMMISSIONS.len())],
        rights_holder,
    }
}

/// Draws a market by share of listening.
pub fn market_sampler() -> WeightedIndex<f64> {
    WeightedIndex::new(MARKETS.iter().map(|(_, w)| *w)).expect("valid weights")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> CatalogConfig {
        CatalogConfig {
            tracks: 20_000,
            ..CatalogConfig::default()
        }
    }

    #[test]
    fn campaign_share_of_the_catalog_is_as_configured() {
        let c = Catalog::generate(small(), 7);
        assert!(
            (c.promoted_share() - 0.03).abs() < 0.001,
            "{}",
            c.promoted_share()
        );
        let active = c
            .campaigns
            .iter()
            .filter(|k| k.is_active(c.config.now_ms))
            .count();
        let frac = active as f64 / c.campaigns.len() as f64;
        assert!((0.7..0.95).contains(&frac), "active fraction {frac}");
        assert!(c.campaigns.iter().any(|k| k.delivered < k.expected_by_now));
        assert!(c.campaigns.iter().any(|k| k.delivered > k.expected_by_now));
        for k in &c.campaigns {
            assert!(k.start_ms < k.end_ms && k.delivery_target > 0.0);
        }
        // Every campaign's tracks belong to its rights holder.
        for t in &c.tracks {
            if let Some(k) = t.campaign {
                assert_eq!(c.campaigns[k as usize].rights_holder, t.rights_holder);
            }
        }
    }

    #[test]
    fn popularity_is_zipf_like() {
        let c = Catalog::generate(small(), 7);
        let mut rng = StdRng::seed_from_u64(1);
        let draws: Vec<usize> = (0..20_000).map(|_| c.sample_track(&mut rng)).collect();
        let head = draws.iter().filter(|&&t| t < 100).count() as f64 / draws.len() as f64;
        // With s = 1 and 20k tracks, the top 100 carry about 50% of plays.
        assert!((0.4..0.6).contains(&head), "head share {head}");
        assert!(c.tracks[0].popularity > c.tracks[10_000].popularity);
        let sum: f64 = c.holder_exposure_7d.iter().sum();
        assert!((sum - 1.0).abs() < 0.01);
    }
}
