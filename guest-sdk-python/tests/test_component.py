"""The component adapter's 0.3.0 boundary, natively: a request whose numeric
columns are little-endian byte buffers (as componentize-py hands them over)
is read through ``memoryview`` views, and a policy scores it exactly as it
scores the same request in lists; the decisions go back as the buffers the
host decodes."""

import json
import math
import struct
import sys
from array import array
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import ROOT
from oasis_sdk import InvalidRequest, Request, parse_settings
from oasis_sdk import reason as R
from oasis_sdk.component import decisions_bytes, request_view
from oasis_sdk.testing import as_host_sends, request_from_json

sys.path.insert(0, str(ROOT / "policies-python" / "guarded_boost"))
sys.path.insert(0, str(ROOT / "policies-python" / "softmax_bandit"))
from guarded_boost.policy import GuardedBoost  # noqa: E402
from softmax_bandit.policy import SoftmaxBandit  # noqa: E402


def as_0_3(raw):
    """The 0.3.0 record componentize-py would lift for ``raw`` (lists): the
    numeric columns packed little-endian, the rest as they are."""
    ctx, k, h = raw.context, raw.candidates, raw.holders
    le = lambda fmt, values: struct.pack(f"<{len(values)}{fmt}", *values)  # noqa: E731
    return SimpleNamespace(
        context=SimpleNamespace(**{**vars(ctx), "features": le("d", ctx.features)}),
        candidates=SimpleNamespace(
            count=k.count,
            relevance=le("d", k.relevance),
            feature_names=k.feature_names,
            features=le("d", k.features),
            campaign=le("i", k.campaign),
            artist=le("I", k.artist),
            rights_holder=le("I", k.rights_holder),
            impressions_24h=le("I", k.impressions_24h),
            session_promoted=le("I", k.session_promoted),
        ),
        campaigns=raw.campaigns,
        holders=SimpleNamespace(count=h.count, exposure_share_7d=le("d", h.exposure_share_7d)),
    )


def cases():
    """(policy class, settings, request) of every fixture of the two Python examples."""
    out = []
    for cls, fixtures in (
        (GuardedBoost, ROOT / "policies" / "guarded-boost" / "fixtures"),
        (SoftmaxBandit, ROOT / "policies-python" / "softmax_bandit" / "fixtures"),
    ):
        for f in sorted(fixtures.glob("*.json")):
            fx = json.loads(f.read_text())
            out.append(pytest.param(cls, fx.get("settings") or {}, fx["request"], id=f"{cls.__name__}-{f.stem}"))
    return out


@pytest.mark.parametrize("cls,settings,body", cases())
def test_a_policy_scores_byte_columns_bit_for_bit_as_lists(cls, settings, body):
    policy = cls()
    s = parse_settings(policy, json.dumps(settings))
    listed = as_host_sends(policy, request_from_json(body))
    viewed = Request(request_view(as_0_3(listed.raw)))
    viewed.check_shape()
    assert isinstance(viewed.relevance, memoryview)
    assert list(viewed.campaign) == list(listed.campaign)
    a = policy.score(s, listed)
    b = policy.score(s, viewed)
    assert decisions_bytes(a) == decisions_bytes(b)
    assert [(v.name, v.candidate, v.value) for v in a.debug] == [(v.name, v.candidate, v.value) for v in b.debug]


def test_decisions_are_packed_as_the_contract_says():
    d = SimpleNamespace(
        scores=[0.5, -2.0], eligible=[False, True], reasons=[R.ORGANIC, R.PROMOTED | R.EXPLORATION],
        propensity=[0.0, 1.0],
    )
    scores, eligible, reasons, propensity = decisions_bytes(d)
    assert scores == struct.pack("<2d", 0.5, -2.0)
    assert eligible == b"\x00\x01"
    assert reasons == struct.pack("<2H", R.ORGANIC, R.PROMOTED | R.EXPLORATION)
    assert propensity == struct.pack("<2d", 0.0, 1.0)
    nan = float("nan")
    assert math.isnan(array("d", decisions_bytes(SimpleNamespace(
        scores=[nan], eligible=[0], reasons=[0], propensity=[0.0]))[0])[0])


def test_a_buffer_that_is_not_whole_entries_is_an_invalid_request_naming_it():
    listed = request_from_json((ROOT / "examples" / "request.json").read_text())
    raw = as_0_3(listed.raw)
    raw.candidates.relevance = raw.candidates.relevance[:-3]
    with pytest.raises(InvalidRequest, match="column `relevance` is .* bytes, not a whole number of 8-byte entries"):
        request_view(raw)
