"""The JSON -> columnar conversion, rule by rule (the same rules as the
server's oasis_proto::json; tests/integration/python_client.rs checks that
both give the same message for the bundled request)."""

import copy
import json
import math
from pathlib import Path

import pytest

from oasis_client import ConversionError, pb, request_from_json

ROOT = Path(__file__).resolve().parents[3]

GOOD = {
    "route": "radio",
    "debug": True,
    "context": {
        "request_id": "r", "listener_id": "l", "session_id": "s", "surface": "daily_mix",
        "market": "SE", "timestamp_ms": 5, "seed": 9, "features": {"hour": 20, "skip": None},
    },
    "candidates": [
        {"id": "a", "relevance": 0.5, "features": {"p_skip": 0.1, "pop": None},
         "campaign": {"id": "c1", "start_ms": 0, "end_ms": 9, "delivery_target": 3,
                      "surfaces": ["radio"], "markets": ["SE"], "delivered": 1}},
        {"id": "b", "relevance": 0.4, "rights_holder": "h", "impressions_24h": 2, "features": {"pop": 3}},
        {"id": "c", "relevance": 0.3, "campaign": {"id": "c1", "start_ms": 0, "end_ms": 9, "delivery_target": 3}},
    ],
    "rights_holders": {"h": {"exposure_share_7d": 0.25}},
}


def shown(values):
    return [None if math.isnan(v) else v for v in values]


def test_the_request_is_converted_column_by_column():
    m = request_from_json(json.dumps(GOOD))
    assert (m.route, m.debug) == ("radio", True)
    ctx = m.context
    assert ctx.surface == pb.SURFACE_DAILY_MIX
    assert (ctx.seed, ctx.HasField("slate_size")) == (9, False)
    assert list(ctx.feature_names) == ["hour", "skip"]
    assert shown(ctx.features) == [20.0, None]
    k = m.candidates
    assert list(k.ids) == ["a", "b", "c"]
    assert list(k.relevance) == [0.5, 0.4, 0.3]
    assert list(k.feature_names) == ["p_skip", "pop"]
    assert shown(k.features) == [0.1, None, None, 3.0, None, None]
    assert list(k.artists) == [], "no candidate names an artist: the column stays empty"
    assert list(k.rights_holders) == ["", "h", ""]
    assert list(k.impressions_24h) == [0, 2, 0]
    assert list(k.session_promoted) == [0, 0, 0], "the two counters go together"
    assert list(k.campaign) == [0, -1, 0]
    assert len(m.campaigns) == 1, "a campaign is sent once"
    c = m.campaigns[0]
    assert list(c.surfaces) == [pb.SURFACE_RADIO]
    assert list(c.markets) == ["SE"]
    assert (c.HasField("delivered"), c.delivered, c.HasField("expected_by_now")) == (True, 1.0, False)
    assert m.rights_holders["h"].exposure_share_7d == 0.25


def test_defaults_leave_columns_and_options_empty():
    body = copy.deepcopy(GOOD)
    del body["route"], body["debug"], body["rights_holders"], body["context"]["seed"]
    body["candidates"] = [{"id": "x", "relevance": 1}]
    m = request_from_json(body)
    assert (m.route, m.debug, len(m.rights_holders)) == ("", False, 0)
    assert not m.context.HasField("seed")
    k = m.candidates
    assert (list(k.ids), list(k.relevance)) == (["x"], [1.0])
    for column in (k.artists, k.rights_holders, k.impressions_24h, k.session_promoted, k.campaign, k.feature_names, k.features):
        assert list(column) == []
    assert len(m.campaigns) == 0


@pytest.mark.parametrize(
    "change, path, message",
    [
        (lambda b: b["candidates"][1].pop("id"), "candidates[1].id", "missing field `id`"),
        (lambda b: b["context"].pop("market"), "context.market", "missing field `market`"),
        (lambda b: b["candidates"][2]["campaign"].pop("end_ms"), "candidates[2].campaign.end_ms", "missing field"),
        (lambda b: b.pop("context"), "context", "missing field `context`"),
        (lambda b: b["candidates"][1].update(relevance="high"), "candidates[1].relevance", "invalid type: string"),
        (lambda b: b["candidates"][1].update(relevance=True), "candidates[1].relevance", "invalid type: boolean"),
        (lambda b: b["context"].update(timestamp_ms=1.5), "context.timestamp_ms", "invalid type: floating point"),
        (lambda b: b["candidates"][1].update(impressions_24h=-1), "candidates[1].impressions_24h", "invalid value"),
        (lambda b: b["context"].update(surface="playlist"), "context.surface", "unknown variant `playlist`"),
        (lambda b: b["candidates"][0]["campaign"].update(surfaces=["radio", "x"]), "candidates[0].campaign.surfaces[1]", "unknown variant"),
        (lambda b: b["candidates"][0]["campaign"].update(markets=[46]), "candidates[0].campaign.markets[0]", "invalid type: integer"),
        (lambda b: b["candidates"][1].update(colour=1), "candidates[1].colour", "unknown field `colour`"),
        (lambda b: b["candidates"][1]["features"].update(pop="x"), "candidates[1].features.pop", "invalid type"),
        (lambda b: b["candidates"][1].update(features={f"f{i}": 1 for i in range(257)}), "candidates[1].features", "more than 256 features"),
        (lambda b: b["rights_holders"]["h"].pop("exposure_share_7d"), "rights_holders.h.exposure_share_7d", "missing field"),
        (lambda b: b.update(candidates={}), "candidates", "expected a sequence"),
    ],
)
def test_a_wrong_value_is_named_by_its_json_path(change, path, message):
    body = copy.deepcopy(GOOD)
    change(body)
    with pytest.raises(ConversionError) as e:
        request_from_json(body)
    assert e.value.path == path
    assert message in e.value.message
    assert str(e.value).endswith(f"(at `{path}`)")


@pytest.mark.parametrize("text", ["{", "[]", '{"candidates": [], "context": NaN}'])
def test_text_that_is_not_a_json_request_is_refused(text):
    with pytest.raises(ConversionError) as e:
        request_from_json(text)
    assert e.value.path in (".", "context")


def test_the_bundled_request_converts():
    body = (ROOT / "examples" / "request.json").read_bytes()
    v = json.loads(body)
    m = request_from_json(body)
    n = len(v["candidates"])
    assert len(m.candidates.ids) == n == len(m.candidates.relevance)
    assert len(m.candidates.features) == n * len(m.candidates.feature_names)
    ids = {c["campaign"]["id"] for c in v["candidates"] if "campaign" in c}
    assert sorted(c.id for c in m.campaigns) == sorted(ids)
    # A round trip through the wire format keeps it whole.
    assert pb.ScoreRequest.FromString(m.SerializeToString()).candidates.ids == m.candidates.ids
