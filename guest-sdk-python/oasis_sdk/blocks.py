"""Reusable decision rules, the same as the Rust SDK's ``oasis_sdk::blocks``
(``guest-sdk/src/blocks.rs``): the relevance guardrail, the guarded boost and
the slate cap, with the same tie-breaking, so a Python port of a Rust policy
gives identical output.
"""

from . import reason as R

#: The candidate feature holding the predicted skip probability.
P_SKIP = "p_skip"


class RelevanceGuardrail:
    """The one relevance guardrail (Rust: ``RelevanceGuardrail``): a campaign
    track is never lifted when it is not relevant enough for this listener,
    i.e. relevance below ``s_min`` (or NaN) or, when the policy uses it
    (``max_p_skip`` not None), ``p_skip`` above ``max_p_skip`` or missing.
    Such a track is not eligible, keeps its base relevance, propensity 0,
    reason ``RELEVANCE_GUARDRAIL`` (plus ``MISSING_FEATURE`` for a missing
    ``p_skip``)."""

    __slots__ = ("s_min", "max_p_skip")

    def __init__(self, s_min: float, max_p_skip: float | None = None):
        self.s_min = s_min
        self.max_p_skip = max_p_skip

    def check(self, s: float, p_skip: float | None = None) -> int:
        """The guardrail's reason bits for relevance ``s`` and ``p_skip``
        (None or NaN: missing; ignored when ``max_p_skip`` is None); 0 when
        the track may be lifted."""
        r = 0
        if not s >= self.s_min:  # NaN fails
            r |= R.RELEVANCE_GUARDRAIL
        if self.max_p_skip is not None:
            if p_skip is None or p_skip != p_skip:
                r |= R.RELEVANCE_GUARDRAIL | R.MISSING_FEATURE
            elif p_skip > self.max_p_skip:
                r |= R.RELEVANCE_GUARDRAIL
        return r

    @staticmethod
    def hold_back(out, i: int, base: float, reasons: int) -> None:
        """Records candidate ``i`` as held back for ``reasons``: not
        eligible, score ``base``, propensity 0, not ``PROMOTED``."""
        out.eligible[i] = False
        out.scores[i] = base
        out.propensity[i] = 0.0
        out.reasons[i] = (out.reasons[i] & ~R.PROMOTED) | reasons


class Guard:
    """The guarded boost: the campaign gate, the relevance guardrail with
    ``s_min`` and ``max_p_skip = theta`` (every failing condition makes the
    track ineligible) and the boost ``beta * (s - s_min)``."""

    __slots__ = ("theta", "beta", "s_min")

    def __init__(self, theta: float, beta: float, s_min: float):
        self.theta = theta
        self.beta = beta
        self.s_min = s_min

    def scaled(self, factor: float) -> "Guard":
        return Guard(self.theta, factor * self.beta, self.s_min)

    def guardrail(self) -> RelevanceGuardrail:
        return RelevanceGuardrail(self.s_min, self.theta)

    def apply_all(self, req, out, base, p_skip) -> list:
        """Evaluates every candidate and records its verdict in ``out`` the
        way a deterministic policy does (Rust: ``Guard::evaluate`` then
        ``Verdict::apply``); returns ``[(i, boost)]`` of promoted
        candidates, for ``slate_cap``. ``base`` holds the finite base
        scores, ``p_skip`` the resolved column."""
        promoted = []
        blocks = req.campaign_blocks()
        theta, beta, s_min = self.theta, self.beta, self.s_min
        reasons, eligible = out.reasons, out.eligible
        for i, c in enumerate(req.campaign):
            if c < 0:
                continue
            block = blocks[c]
            p = p_skip[i]
            s = base[i]
            # The relevance guardrail, inlined (RelevanceGuardrail.check with
            # max_p_skip = theta): this loop is the hot path.
            if not s >= s_min:
                block |= R.RELEVANCE_GUARDRAIL
            if p != p:
                block |= R.RELEVANCE_GUARDRAIL | R.MISSING_FEATURE
            elif p > theta:
                block |= R.RELEVANCE_GUARDRAIL
            if block:
                reasons[i] |= block
                continue
            eligible[i] = True
            boost = beta * (s - s_min)
            if boost > 0.0:
                out.promote(i, boost, 1.0)
                promoted.append((i, boost))
        return promoted


def slate_cap(out, base, promoted: list, k_max: int) -> None:
    """Keeps at most ``k_max`` promoted candidates: ranked by boost
    descending, ties to the higher base score, then the earlier candidate;
    the others are demoted back to ``base[i]`` with ``SLATE_CAP``
    (propensity 0, still eligible). Sorts ``promoted`` in rank order."""
    promoted.sort(key=lambda t: (-t[1], -base[t[0]], t[0]))
    for i, _ in promoted[k_max:]:
        out.demote(i, base[i], R.SLATE_CAP)


def cap_per_group(out, boosted: list, per_group: int, group, reason: int) -> None:
    """Keeps, among ``boosted`` ``(i, boost)``, at most ``per_group`` per
    ``group(i)`` (largest boosts win, ties to the earlier candidate) and
    marks the others with ``reason``; ``boosted`` ends in request order."""
    boosted.sort(key=lambda t: (-t[1], t[0]))
    taken: dict = {}
    kept = []
    for i, b in boosted:
        g = group(i)
        n = taken.get(g, 0) + 1
        taken[g] = n
        if n > per_group:
            out.mark(i, reason)
        else:
            kept.append((i, b))
    kept.sort()
    boosted[:] = kept


def rank_by_score(scores) -> list:
    """Candidate indices in slate order: scores descending, ties in request order."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


def top_by_relevance(scores, indices, k: int) -> list:
    """The ``k`` candidates among ``indices`` with the highest ``scores``, in slate order."""
    return sorted(indices, key=lambda i: (-scores[i], i))[:k]
