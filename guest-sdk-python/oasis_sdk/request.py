"""The request a policy scores: context, columnar candidates, campaigns and
the rights holders' 7-day exposure.

The view keeps the columns exactly as they arrive (in a component,
``memoryview``s over contract 0.3.0's byte buffers, see
``oasis_sdk.component``; under the test harness, the builder's lists): nothing
is converted per element. Both are sequences that index, slice, iterate and
``len`` alike. Read
columns directly (``req.relevance[i]``, ``req.campaign[i]``), resolve a
feature column once per request with ``req.feature(name)`` (one C-level
slice of the row-major matrix), and gate campaign tracks with
``req.campaign_eligibility(i)``, whose per-campaign checks are computed once
per request.
"""

from math import isfinite, isnan

from . import reason as R
from .errors import InvalidRequest
from .rng import Rng


def _bits(v) -> int:
    """A WIT enum/flags value (componentize-py) or a plain int, as an int."""
    return v if isinstance(v, int) else v.value


class Eligibility:
    """Whether a candidate's campaign may promote it here.

    ``organic``: the track is in no campaign. Otherwise ``campaign`` is the
    campaign and ``reasons`` holds every failing check among
    ``CAMPAIGN_INACTIVE``, ``NOT_ELIGIBLE_SURFACE`` and
    ``NOT_ELIGIBLE_MARKET`` (0 when ``eligible``).
    """

    __slots__ = ("campaign", "reasons")

    def __init__(self, campaign, reasons: int):
        self.campaign = campaign
        self.reasons = reasons

    @property
    def organic(self) -> bool:
        return self.campaign is None

    @property
    def eligible(self) -> bool:
        return self.campaign is not None and self.reasons == 0

    def __repr__(self) -> str:
        if self.campaign is None:
            return "Eligibility(organic)"
        if self.reasons == 0:
            return f"Eligibility(eligible, key={self.campaign.key})"
        return f"Eligibility(ineligible, {R.names(self.reasons)})"


ORGANIC = Eligibility(None, 0)


def ineligibility(campaign, timestamp_ms: int, surface: int, market: int) -> int:
    """Why ``campaign`` may not promote at ``timestamp_ms`` on ``surface`` in
    ``market``: every flag that applies among ``CAMPAIGN_INACTIVE`` (outside
    ``[start_ms, end_ms)``), ``NOT_ELIGIBLE_SURFACE`` and
    ``NOT_ELIGIBLE_MARKET`` (a non-empty market list without it); 0 when it may."""
    r = 0
    if not (campaign.start_ms <= timestamp_ms < campaign.end_ms):
        r |= R.CAMPAIGN_INACTIVE
    if not (_bits(campaign.surfaces) >> surface) & 1:
        r |= R.NOT_ELIGIBLE_SURFACE
    markets = campaign.markets
    if markets and market not in markets:
        r |= R.NOT_ELIGIBLE_MARKET
    return r


def pacing_dt_ms(campaign, timestamp_ms: int):
    """Milliseconds since ``campaign``'s pacing state was stored, as seen at
    ``timestamp_ms``: ``max(0, timestamp_ms - pacing_updated_ms)`` when
    ``pacing_updated_ms > 0``, ``None`` when it never was (as the Rust
    ``Campaign::pacing_dt_ms``)."""
    updated = campaign.pacing_updated_ms
    if updated <= 0:
        return None
    return max(0, timestamp_ms - updated)


def delivery_error(campaign) -> float:
    """Normalized delivery error, positive when under-delivering; 0 without a target."""
    if campaign.delivery_target > 0.0:
        return (campaign.expected_by_now - campaign.delivered) / campaign.delivery_target
    return 0.0


class Request:
    """A view of one scoring request.

    Columns (sequences aligned by candidate index): ``relevance``, ``campaign``
    (index into ``campaigns`` or -1), ``artist``, ``rights_holder``,
    ``impressions_24h``, ``session_promoted``. Context: ``surface`` (int, see
    ``oasis_sdk.surface``), ``market`` (packed), ``timestamp_ms``, ``seed``,
    ``request_id``, ``listener_id``, ``session_id``.
    """

    __slots__ = (
        "raw", "context", "campaigns", "count", "relevance", "campaign", "artist",
        "rights_holder", "impressions_24h", "session_promoted", "feature_names",
        "features", "surface", "market", "timestamp_ms", "seed", "_eligibility",
        "holders", "exposure_share_7d_column",
    )

    def __init__(self, raw):
        self.raw = raw
        ctx = raw.context
        k = raw.candidates
        self.context = ctx
        self.campaigns = raw.campaigns
        self.count = k.count
        self.relevance = k.relevance
        self.campaign = k.campaign
        self.artist = k.artist
        self.rights_holder = k.rights_holder
        self.impressions_24h = k.impressions_24h
        self.session_promoted = k.session_promoted
        self.feature_names = k.feature_names
        self.features = k.features
        self.surface = _bits(ctx.surface)
        self.market = ctx.market
        self.timestamp_ms = ctx.timestamp_ms
        self.seed = ctx.seed
        self.holders = raw.holders
        self.exposure_share_7d_column = raw.holders.exposure_share_7d
        self._eligibility = None

    def __len__(self) -> int:
        return self.count

    @property
    def request_id(self) -> str:
        return self.context.request_id

    @property
    def listener_id(self) -> str:
        return self.context.listener_id

    @property
    def session_id(self) -> str:
        return self.context.session_id

    @property
    def slate_size(self) -> int:
        """How many top-ranked candidates the caller shows: ``context.slate_size``
        kept within ``0..=count``, the whole request when it is 0."""
        k = self.context.slate_size
        return self.count if k == 0 else min(k, self.count)

    def exposure_share_7d(self, holder: int) -> float | None:
        """Rights holder ``holder``'s share of all attention over the last 7
        days; ``None`` when unknown (NaN, not finite, or no such holder)."""
        col = self.exposure_share_7d_column
        if not 0 <= holder < len(col):
            return None
        v = col[holder]
        return v if isfinite(v) else None

    def holder_exposure_share_7d(self, i: int) -> float | None:
        """``exposure_share_7d`` of candidate ``i``'s rights holder."""
        return self.exposure_share_7d(self.rights_holder[i])

    def check_shape(self) -> None:
        """Checks that the columns line up (the SDK runs it before ``score``).

        Raises ``InvalidRequest`` naming the column."""
        n = self.count
        for name, col in (
            ("relevance", self.relevance),
            ("campaign", self.campaign),
            ("artist", self.artist),
            ("rights-holder", self.rights_holder),
            ("impressions", self.impressions_24h),
            ("session-promoted", self.session_promoted),
        ):
            if len(col) != n:
                raise InvalidRequest(f"column `{name}` has {len(col)} entries for {n} candidates")
        width = len(self.feature_names)
        if len(self.features) != n * width:
            raise InvalidRequest(
                f"`features` has {len(self.features)} values for {n} candidates x {width} features"
            )
        m = len(self.campaigns)
        if n and (min(self.campaign) < -1 or max(self.campaign) >= m):
            i = next(i for i, c in enumerate(self.campaign) if c < -1 or c >= m)
            raise InvalidRequest(f"candidate {i} refers to campaign {self.campaign[i]} of {m}")
        h = self.holders
        if len(h.exposure_share_7d) != h.count:
            raise InvalidRequest(
                f"holders' `exposure-share-7d` has {len(h.exposure_share_7d)} entries for {h.count} rights holders"
            )
        if n and max(self.rights_holder) >= h.count:
            i = next(i for i, r in enumerate(self.rights_holder) if r >= h.count)
            raise InvalidRequest(f"candidate {i} refers to rights holder {self.rights_holder[i]} of {h.count}")
        if len(self.context.features) != len(self.context.feature_names):
            raise InvalidRequest("context features and their names differ in length")

    def feature(self, name: str) -> list:
        """The candidate feature column ``name``: a list of ``count`` floats,
        NaN where a candidate lacks it (test with ``math.isnan`` or
        ``v != v``).

        The host sends exactly the columns the policy declared (required,
        then optional); an undeclared feature raises ``InvalidRequest``
        saying how to declare it, under ``oasis_sdk.testing.run`` as in
        production."""
        names = self.feature_names
        try:
            j = names.index(name)
        except ValueError:
            raise InvalidRequest(
                f"candidate feature `{name}` is not in the request: the host sends only the "
                f"features a policy declares (this request carries {list(names)}); declare it "
                f"in the policy's `requires` (or `optional` if candidates may lack it)"
            ) from None
        width = len(names)
        if width == 1:
            return self.features
        return self.features[j::width]

    optional_feature = feature

    def context_feature(self, name: str) -> float | None:
        """A context feature by name; ``None`` when absent or NaN."""
        ctx = self.context
        try:
            i = ctx.feature_names.index(name)
        except ValueError:
            return None
        v = ctx.features[i]
        return None if isnan(v) else v

    def campaign_of(self, i: int):
        """Candidate ``i``'s campaign, ``None`` for organic tracks."""
        c = self.campaign[i]
        return self.campaigns[c] if c >= 0 else None

    def campaign_blocks(self) -> list:
        """Per campaign, its ineligibility bits in this request's context
        (computed once per request)."""
        blocks = self._eligibility
        if blocks is None:
            ts, surface, market = self.timestamp_ms, self.surface, self.market
            blocks = [ineligibility(c, ts, surface, market) for c in self.campaigns]
            self._eligibility = blocks
        return blocks

    def campaign_eligibility(self, i: int) -> Eligibility:
        """The campaign gate every promoting policy applies, as in the Rust
        SDK: is candidate ``i`` in a campaign that is active at
        ``timestamp_ms`` (start inclusive, end exclusive) and allows the
        request's surface and market? See ``Eligibility``."""
        c = self.campaign[i]
        if c < 0:
            return ORGANIC
        return Eligibility(self.campaigns[c], self.campaign_blocks()[c])

    def rng(self) -> Rng:
        """A generator seeded from the request's seed (same sequence as the Rust SDK)."""
        return Rng(self.seed)
