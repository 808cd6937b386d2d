"""The output contract, as ``contract/src/output.rs`` states it.

The host stays the authority: it checks every answer with
``oasis_contract::check_decisions``. This is a line-by-line port so that
``oasis_sdk.testing.run`` refuses, under pytest, what the host would refuse;
``contract/testdata/output-cases.json`` holds cases with the expected
violation that both the Rust function (a test in guest-sdk) and this one
(``tests/test_contract.py``) must reproduce, message for message.

The rules, in the order they are checked: every column has one entry per
candidate; every score is finite; every propensity is in [0, 1]; only
campaign tracks may be eligible or promoted; at most ``4n + 64`` debug
values, each named with 1 to 64 bytes, referring to a candidate in range,
and finite; (contract 0.2.0) campaign updates name a campaign of the
request, carry finite state and update each campaign at most once.
"""

from math import isfinite

from .reason import PROMOTED

MAX_NAME_BYTES = 64
MAX_MAGNITUDE = 1e9


def max_debug_values(candidates: int) -> int:
    return candidates * 4 + 64


def feature_columns(required, optional) -> list:
    """The candidate feature columns a policy receives: required, then optional not already required."""
    cols = list(required)
    for f in optional:
        if f not in cols:
            cols.append(f)
    return cols


def _fmt(v: float) -> str:
    # Rust's Display for f64: NaN, inf, -inf, shortest round-trip digits.
    if v != v:
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "inf" if v > 0 else "-inf"
    if v == int(v) and abs(v) < 1e16:
        return str(int(v))
    return repr(v)


class Violation(Exception):
    """The first rule a policy's output breaks; ``kind`` names the rule as
    the Rust enum variant does."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message

    def __str__(self) -> str:
        return self.message


def check_decisions(candidates: int, campaign, d, campaigns: int = 0) -> None:
    """Raises the first ``Violation`` of decisions ``d`` (with ``scores``,
    ``eligible``, ``reasons``, ``propensity``, ``debug`` and optionally
    ``campaign_updates``) for ``candidates`` candidates whose campaign column
    is ``campaign``, in a request with ``campaigns`` campaigns."""
    for column, col in (
        ("scores", d.scores),
        ("eligible", d.eligible),
        ("reasons", d.reasons),
        ("propensity", d.propensity),
    ):
        if len(col) != candidates:
            raise Violation("ColumnLength", f"`{column}` has {len(col)} entries for {candidates} candidates")
    for i, s in enumerate(d.scores):
        if not isfinite(s):
            raise Violation("NonFiniteScore", f"score of candidate {i} is not finite ({_fmt(s)})")
    for i, p in enumerate(d.propensity):
        if not (0.0 <= p <= 1.0):
            raise Violation("PropensityOutOfRange", f"propensity of candidate {i} is outside [0, 1] ({_fmt(p)})")
    for i in range(candidates):
        organic = i >= len(campaign) or campaign[i] < 0
        if organic and (d.eligible[i] or int(d.reasons[i]) & PROMOTED):
            raise Violation("OrganicPromoted", f"candidate {i} has no campaign but is marked eligible or promoted")
    debug = d.debug
    most = max_debug_values(candidates)
    if len(debug) > most:
        raise Violation(
            "TooManyDebugValues", f"{len(debug)} debug values (at most {most} for {candidates} candidates)"
        )
    for v in debug:
        size = len(v.name.encode("utf-8"))
        if size == 0 or size > MAX_NAME_BYTES:
            raise Violation(
                "DebugNameLength",
                f"a debug value name is {size} bytes; names must be 1-{MAX_NAME_BYTES} bytes",
            )
        if v.candidate is not None and v.candidate >= candidates:
            raise Violation(
                "DebugCandidateOutOfRange",
                f"debug value `{v.name}` refers to candidate {v.candidate} of {candidates} (out of range)",
            )
        if not isfinite(v.value):
            raise Violation("NonFiniteDebugValue", f"debug value `{v.name}` is not finite ({_fmt(v.value)})")
    seen = set()
    for u in getattr(d, "campaign_updates", None) or ():
        c = u.campaign
        if not 0 <= c < campaigns:
            raise Violation(
                "CampaignUpdateOutOfRange", f"campaign update for campaign {c} of {campaigns} (out of range)"
            )
        for field, value in (("pacing_integral", u.pacing_integral), ("pacing_last_error", u.pacing_last_error)):
            if not isfinite(value):
                raise Violation(
                    "NonFiniteCampaignUpdate",
                    f"campaign update for campaign {c}: `{field}` is not finite ({_fmt(value)})",
                )
        if c in seen:
            raise Violation(
                "DuplicateCampaignUpdate",
                f"campaign {c} is updated more than once (at most one update per campaign)",
            )
        seen.add(c)
