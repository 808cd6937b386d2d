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


class Decisions:
    """The decisions for one request, column by column: ``scores``,
    ``eligible``, ``reasons`` (int bit sets, see ``oasis_sdk.reason``),
    ``propensity`` and ``debug``. Start from ``Decisions.passthrough(req)``."""

    __slots__ = ("scores", "eligible", "reasons", "propensity", "debug")

    def __init__(self, scores, eligible, reasons, propensity, debug=None):
        self.scores = scores
        self.eligible = eligible
        self.reasons = reasons
        self.propensity = propensity
        self.debug = [] if debug is None else debug

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

    def check(self, req) -> None:
        """The host's output rules (``oasis_sdk.contract.check_decisions``);
        raises ``Violation``."""
        from .contract import check_decisions

        check_decisions(req.count, req.campaign, self)

    def __repr__(self) -> str:
        return (
            f"Decisions(scores={self.scores}, eligible={self.eligible}, "
            f"reasons={[R.names(r) for r in self.reasons]}, propensity={self.propensity}, debug={self.debug})"
        )
