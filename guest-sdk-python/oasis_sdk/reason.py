"""Reason bits: why a candidate got its score.

Bit ``i`` is the ``i``-th flag of WIT's ``flags reason``; the values are the
contract's (``contract/src/reason.rs``), pinned by ``tests/test_contract.py``
against that file. Reasons are plain ``int`` bit sets in the SDK (cheap to
combine per candidate); the component adapter converts them once at the end.
"""

ORGANIC = 1 << 0
PROMOTED = 1 << 1
NOT_ELIGIBLE_SURFACE = 1 << 2
NOT_ELIGIBLE_MARKET = 1 << 3
CAMPAIGN_INACTIVE = 1 << 4
FREQ_CAPPED = 1 << 5
PACING_THROTTLED = 1 << 6
RELEVANCE_GUARDRAIL = 1 << 7
DIVERSITY_PENALTY = 1 << 8
FAIRNESS_ADJUST = 1 << 9
EXPLORATION = 1 << 10
SLATE_CAP = 1 << 11
MISSING_FEATURE = 1 << 12

#: Every reason bit with its name, in WIT order.
REASONS = [
    (ORGANIC, "organic"),
    (PROMOTED, "promoted"),
    (NOT_ELIGIBLE_SURFACE, "not_eligible_surface"),
    (NOT_ELIGIBLE_MARKET, "not_eligible_market"),
    (CAMPAIGN_INACTIVE, "campaign_inactive"),
    (FREQ_CAPPED, "freq_capped"),
    (PACING_THROTTLED, "pacing_throttled"),
    (RELEVANCE_GUARDRAIL, "relevance_guardrail"),
    (DIVERSITY_PENALTY, "diversity_penalty"),
    (FAIRNESS_ADJUST, "fairness_adjust"),
    (EXPLORATION, "exploration"),
    (SLATE_CAP, "slate_cap"),
    (MISSING_FEATURE, "missing_feature"),
]

ALL = (1 << len(REASONS)) - 1


def names(bits: int) -> list[str]:
    """The names of the bits set in ``bits``, in WIT order."""
    return [name for bit, name in REASONS if bits & bit]


def from_name(name: str) -> int | None:
    """The bit named ``name``, if any."""
    for bit, n in REASONS:
        if n == name:
            return bit
    return None
