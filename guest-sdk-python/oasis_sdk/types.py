"""Plain-Python mirrors of the WIT records, for native tests.

Inside a component the SDK receives componentize-py's generated dataclasses;
these have the same field names (surfaces and surface sets as ints), so the
request view reads either without converting anything.
"""

from dataclasses import dataclass, field


@dataclass
class Context:
    request_id: str = "test-request"
    listener_id: str = "listener-1"
    session_id: str = "session-1"
    surface: int = 0
    market: int = 0
    timestamp_ms: int = 0
    seed: int = 0
    feature_names: list = field(default_factory=list)
    features: list = field(default_factory=list)
    slate_size: int = 0


@dataclass
class Campaign:
    key: int = 0
    start_ms: int = 0
    end_ms: int = 0
    surfaces: int = 0xFF
    markets: list = field(default_factory=list)
    delivery_target: float = 0.0
    delivered: float = 0.0
    expected_by_now: float = 0.0
    pacing_integral: float = 0.0
    pacing_last_error: float = 0.0
    pacing_updated_ms: int = 0
    commission_bps: int = 0


@dataclass
class Candidates:
    count: int = 0
    relevance: list = field(default_factory=list)
    feature_names: list = field(default_factory=list)
    features: list = field(default_factory=list)
    campaign: list = field(default_factory=list)
    artist: list = field(default_factory=list)
    rights_holder: list = field(default_factory=list)
    impressions_24h: list = field(default_factory=list)
    session_promoted: list = field(default_factory=list)


@dataclass
class Holders:
    count: int = 0
    exposure_share_7d: list = field(default_factory=list)


@dataclass
class CampaignUpdate:
    campaign: int = 0
    pacing_integral: float = 0.0
    pacing_last_error: float = 0.0


@dataclass
class Request:
    context: Context
    candidates: Candidates
    campaigns: list = field(default_factory=list)
    holders: Holders = field(default_factory=Holders)
