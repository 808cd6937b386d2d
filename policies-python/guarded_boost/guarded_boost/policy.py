"""guarded-boost in Python: lift relevant, low-skip campaign tracks, a few per slate.

The same rules as the Rust policy (policies/guarded-boost/src/lib.rs), on the
same SDK building blocks, so both give identical output on its fixtures:

1. Eligibility: an active campaign allowing the surface and market, and the
   SDK's relevance guardrail (``oasis_sdk.blocks.RelevanceGuardrail`` with
   ``s_min`` and ``max_p_skip = theta``): relevance below ``s_min`` or
   ``p_skip > theta`` makes a track ineligible with ``RELEVANCE_GUARDRAIL``,
   a missing ``p_skip`` with ``RELEVANCE_GUARDRAIL`` and ``MISSING_FEATURE``;
   every failing condition is reported.
2. Boost ``beta * (s - s_min)``, promoting when positive.
3. At most ``k_max`` promoted per slate, highest boosts first; the others
   back to ``s`` with ``SLATE_CAP``.
"""

from dataclasses import dataclass

from oasis_sdk import Decisions, Policy
from oasis_sdk.blocks import P_SKIP, Guard, slate_cap


@dataclass
class Settings:
    theta: float = 0.35
    beta: float = 0.5
    s_min: float = 0.2
    k_max: int = 3


class GuardedBoost(Policy):
    name = "guarded-boost-py"
    version = "1.1.0"
    description = (
        "Promotes active campaign tracks allowed on this surface and market that pass "
        "the relevance guardrail (relevance >= s_min, p_skip <= theta), by "
        "beta * (relevance - s_min); at most k_max promoted per slate (highest boost wins). "
        "Python port of guarded-boost."
    )
    requires = [P_SKIP]
    Settings = Settings
    settings_doc = {
        "theta": "relevance guardrail: highest predicted skip probability a promoted track may have, in [0, 1]",
        "beta": "boost per unit of relevance above s_min, in [0, 10]",
        "s_min": "relevance guardrail: campaign tracks below it are not eligible, never lifted (finite)",
        "k_max": "most promoted tracks per slate, in [1, 1000]",
    }

    def validate(self, s):
        if not 0.0 <= s.theta <= 1.0:
            return f"theta must be in [0, 1], got {s.theta}"
        if not 0.0 <= s.beta <= 10.0:
            return f"beta must be in [0, 10], got {s.beta}"
        if s.s_min != s.s_min or s.s_min in (float("inf"), float("-inf")):
            return f"s_min must be finite, got {s.s_min}"
        if not 1 <= s.k_max <= 1000:
            return f"k_max must be in [1, 1000], got {s.k_max}"

    def score(self, s, req):
        p_skip = req.feature(P_SKIP)
        out = Decisions.passthrough(req)
        base = list(out.scores)
        promoted = Guard(s.theta, s.beta, s.s_min).apply_all(req, out, base, p_skip)
        slate_cap(out, base, promoted, s.k_max)
        return out
