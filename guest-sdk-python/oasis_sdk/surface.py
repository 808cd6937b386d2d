"""Surfaces and markets, as the contract defines them (``contract/src``).

A surface is its index in WIT order (``RADIO`` = 0 ...); a surface set is a
bit set where bit ``i`` is surface ``i``. A market is an ISO 3166-1 alpha-2
code packed as ``(b0 << 8) | b1`` of its upper-case ASCII letters.
"""

RADIO, AUTOPLAY, DAILY_MIX, ARTIST_MIX, MOOD_MIX, DECADE_MIX, GENRE_MIX, OTHER = range(8)

#: Names in contract order, as in the JSON API.
NAMES = ["radio", "autoplay", "daily_mix", "artist_mix", "mood_mix", "decade_mix", "genre_mix", "other"]

ALL_SURFACES = 0xFF
#: Surfaces a campaign may promote on when it lists none: all but ``other``.
DEFAULT_CAMPAIGN_SURFACES = ALL_SURFACES & ~(1 << OTHER)


def bit(surface: int) -> int:
    """The surface-set bit of ``surface``."""
    return 1 << surface


def surface_set(*surfaces: int) -> int:
    """A surface set holding ``surfaces``."""
    bits = 0
    for s in surfaces:
        bits |= 1 << s
    return bits


def from_name(name: str) -> int | None:
    """The surface named ``name`` (``daily_mix``), if any."""
    try:
        return NAMES.index(name)
    except ValueError:
        return None


def market_code(code: str) -> int | None:
    """Packs a two-letter ISO 3166-1 alpha-2 code (any case); ``None`` if not two ASCII letters."""
    if len(code) != 2 or not code.isascii() or not code.isalpha():
        return None
    b = code.upper().encode("ascii")
    return (b[0] << 8) | b[1]
