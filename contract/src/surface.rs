//! Surfaces: where the listening happens.
//!
//! The order is the WIT order of `enum surface` and of `flags surface-set`:
//! bit `i` of a surface set is `Surface::ALL[i]`. The names are the ones the
//! JSON API and the reports use.

/// Where the listening happens. Promotion is meant for algorithmic sessions
/// (radio, autoplay, the mixes), never editorial playlists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Surface {
    /// Radio: an endless stream seeded by a track, artist or playlist.
    Radio,
    /// Autoplay: what plays on after an album or playlist ends.
    Autoplay,
    /// A personalized daily mix.
    DailyMix,
    /// A mix built around an artist.
    ArtistMix,
    /// A mix built around a mood.
    MoodMix,
    /// A mix built around a decade.
    DecadeMix,
    /// A mix built around a genre.
    GenreMix,
    /// Anything else. A campaign that does not list its surfaces is allowed
    /// every surface but this one ([`DEFAULT_CAMPAIGN_SURFACES`]).
    Other,
}

/// Surfaces a campaign may promote on when it lists none: all but `other`.
pub const DEFAULT_CAMPAIGN_SURFACES: u8 = ALL_SURFACES & !Surface::Other.bit();

/// Every surface bit.
pub const ALL_SURFACES: u8 = u8::MAX;

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

    /// The names, in contract order (as in JSON: `daily_mix`).
    pub const NAMES: [&'static str; 8] = [
        "radio",
        "autoplay",
        "daily_mix",
        "artist_mix",
        "mood_mix",
        "decade_mix",
        "genre_mix",
        "other",
    ];

    /// The surface's name.
    ///
    /// ```
    /// assert_eq!(oasis_contract::Surface::GenreMix.name(), "genre_mix");
    /// ```
    pub const fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// The surface named `name`, if any.
    pub fn from_name(name: &str) -> Option<Surface> {
        Self::NAMES
            .iter()
            .position(|n| *n == name)
            .map(|i| Self::ALL[i])
    }

    /// The surface at position `index` of the contract order.
    pub fn from_index(index: u8) -> Option<Surface> {
        Self::ALL.get(index as usize).copied()
    }

    /// This surface's bit in a surface set.
    pub const fn bit(self) -> u8 {
        1 << self as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_bits_and_order_agree() {
        for (i, s) in Surface::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
            assert_eq!(Surface::from_name(s.name()), Some(*s));
            assert_eq!(Surface::from_index(i as u8), Some(*s));
            assert_eq!(s.bit(), 1 << i);
        }
        assert_eq!(Surface::from_name("playlist"), None);
        assert_eq!(DEFAULT_CAMPAIGN_SURFACES, 0x7f);
    }
}
