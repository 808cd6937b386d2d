"""What a policy returns: a score, eligibility, reasons (int bits) and a
propensity per candidate, aligned with the request by index, plus named
debug values."""

from math import isfinite

from . import reason as R


class DebugValue:
    __slots__ = ("name", "candidate", "value")

    def __init__(self, name: str, candidate: int | None, value: float):
        self.name = name
        self.candidate = candidate
        self.value = value

    def __repr__(self) -> str:
        return f"DebugValue({self.name!r}, {self.candidate!r}, {self.value!r})"


class CampaignUpdate:
    """New pacing-controller state for campaign ``campaign`` (an index into
    ``req.campaigns``)."""

    __slots__ = ("campaign", "pacing_integral", "pacing_last_error")

    def __init__(self, campaign: int, pacing_integral: float, pacing_last_error: float):
        self.campaign = campaign
        self.pacing_integral = pacing_integral
        self.pacing_last_error = pacing_last_error

    def __repr__(self) -> str:
        return f"CampaignUpdate({self.campaign!r}, {self.pacing_integral!r}, {self.pacing_last_error!r})"


class Decisions:
    """The decisions for one request, column by column: ``scores``,
    ``eligible``, ``reasons`` (int bit sets, see ``oasis_sdk.reason``),
    ``propensity`` and ``debug``, plus ``campaign_updates`` (new pacing
    state, at most one per campaign). Start from ``Decisions.passthrough(req)``."""

    __slots__ = ("scores", "eligible", "reasons", "propensity", "debug", "campaign_updates")

    def __init__(self, scores, eligible, reasons, propensity, debug=None, campaign_updates=None):
        self.scores = scores
        self.eligible = eligible
        self.reasons = reasons
        self.propensity = propensity
        self.debug = [] if debug is None else debug
        self.campaign_updates = [] if campaign_updates is None else campaign_updates

    @classmethod
    def passthrough(cls, req) -> "Decisions":
        """Relevance as score, nobody eligible, propensity 0, ``ORGANIC`` for
        tracks without a campaign. A non-finite relevance reads as 0, so
        scores built from these stay finite."""
        n = req.count
        rel = req.relevance
        # One C-level sum detects any NaN or infinity (or an overflow, which
        # takes the exact per-element path too); the fix-up only when needed.
        total = sum(rel)
        if total - total != 0.0:
            scores = [s if isfinite(s) else 0.0 for s in rel]
        else:
            scores = list(rel)
        org = R.ORGANIC
        reasons = [org if c < 0 else 0 for c in req.campaign]
        return cls(scores, [False] * n, reasons, [0.0] * n)

    def __len__(self) -> int:
        return len(self.scores)

    def mark(self, i: int, reason: int) -> None:
        """Adds ``reason`` to candidate ``i``."""
        self.reasons[i] |= reason

    def promote(self, i: int, boost: float, propensity: float) -> None:
        """Adds ``boost`` to candidate ``i``'s score, marks it eligible and
        ``PROMOTED`` with ``propensity``."""
        self.scores[i] += boost
        self.eligible[i] = True
        self.reasons[i] |= R.PROMOTED
        self.propensity[i] = propensity

    def demote(self, i: int, base: float, reason: int) -> None:
        """Withdraws a promotion (score back to ``base``), keeping the
        candidate eligible, and records why."""
        self.scores[i] = base
        self.reasons[i] = (self.reasons[i] & ~R.PROMOTED) | reason
        self.propensity[i] = 0.0

    def add_debug(self, name: str, candidate: int | None, value: float) -> None:
        """Records a named debug value (request-level when ``candidate`` is None)."""
        self.debug.append(DebugValue(name, candidate, float(value)))

    debug_value = add_debug

    def update_campaign(self, campaign: int, pacing_integral: float, pacing_last_error: float) -> None:
        """Hands back new pacing-controller state for campaign ``campaign``
        (an index into ``req.campaigns``), as the Rust
        ``Decisions::update_campaign``: the host stores it for the served
        policy only, at most one controller step per campaign per pacing
        tick. At most once per campaign, finite values (``check`` refuses
        the rest, as the host does)."""
        self.campaign_updates.append(CampaignUpdate(campaign, float(pacing_integral), float(pacing_last_error)))

    def check(self, req) -> None:
        """The host's output rules (``oasis_sdk.contract.check_decisions``);
        raises ``Violation``."""
        from .contract import check_decisions

        check_decisions(req.count, req.campaign, self, len(req.campaigns))

    def __repr__(self) -> str:
        return (
            f"Decisions(scores={self.scores}, eligible={self.eligible}, "
            f"reasons={[R.names(r) for r in self.reasons]}, propensity={self.propensity}, debug={self.debug})"
        )
