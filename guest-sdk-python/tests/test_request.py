"""The request view, eligibility, decisions, settings and the harness."""

import json
import math
from dataclasses import dataclass

import pytest

from conftest import ROOT
from oasis_sdk import Decisions, InvalidRequest, Policy, PolicyError, metadata, parse_settings
from oasis_sdk import log, reason as R, surface as S
from oasis_sdk.contract import Violation
from oasis_sdk.testing import (
    NOW_MS, CampaignSpec, CandidateSpec, RequestBuilder, as_host_sends, check_fixture,
    request_from_json, run,
)


def check(spec):
    req = (
        RequestBuilder().surface(S.AUTOPLAY).market("SE").campaign(spec)
        .candidate(CandidateSpec(0.5).campaign(0)).build()
    )
    e = req.campaign_eligibility(0)
    assert not e.organic
    return e.campaign.key if e.eligible else e.reasons


def test_eligibility_mirrors_the_rust_sdk():
    assert check(CampaignSpec(9).surfaces([S.RADIO, S.AUTOPLAY]).markets(["NO", "SE"])) == 9
    assert check(CampaignSpec(1)) == 1
    assert check(CampaignSpec(2).markets(["se"])) == 2
    # Start inclusive, end exclusive.
    assert check(CampaignSpec(1).window(NOW_MS, NOW_MS + 1)) == 1
    assert check(CampaignSpec(1).window(NOW_MS - 10, NOW_MS)) == R.CAMPAIGN_INACTIVE
    assert check(CampaignSpec(1).window(NOW_MS + 1, NOW_MS + 10)) == R.CAMPAIGN_INACTIVE
    assert check(CampaignSpec(1).surfaces([S.RADIO])) == R.NOT_ELIGIBLE_SURFACE
    assert check(CampaignSpec(1).markets(["NO"])) == R.NOT_ELIGIBLE_MARKET
    every = R.CAMPAIGN_INACTIVE | R.NOT_ELIGIBLE_SURFACE | R.NOT_ELIGIBLE_MARKET
    assert check(CampaignSpec(1).window(NOW_MS + 1, NOW_MS + 2).surfaces([]).markets(["US"])) == every
    req = RequestBuilder().campaign(CampaignSpec(1)).candidate(CandidateSpec(0.5)).build()
    assert req.campaign_eligibility(0).organic and req.campaign_of(0) is None


def test_features_are_sliced_columns_and_undeclared_ones_are_named():
    req = (
        RequestBuilder().features(["a", "b"])
        .candidate(CandidateSpec(0.1, a=1.0, b=2.0)).candidate(CandidateSpec(0.2, b=4.0)).build()
    )
    assert req.feature("b") == [2.0, 4.0]
    a = req.feature("a")
    assert a[0] == 1.0 and math.isnan(a[1])
    with pytest.raises(InvalidRequest, match="candidate feature `c` is not in the request"):
        req.feature("c")
    one = RequestBuilder().features(["p"]).candidate(CandidateSpec(0.1, p=0.5)).build()
    assert one.feature("p") == [0.5]


def test_context_features_and_the_shape_check():
    req = RequestBuilder().context_feature("hour", 13.0).context_feature("skip", math.nan).build()
    assert req.context_feature("hour") == 13.0
    assert req.context_feature("skip") is None and req.context_feature("nope") is None
    bad = RequestBuilder().candidate(CandidateSpec(0.5)).build()
    bad.artist.append(3)
    with pytest.raises(InvalidRequest, match="column `artist` has 2 entries for 1 candidates"):
        bad.check_shape()
    bad = RequestBuilder().candidate(CandidateSpec(0.5)).build()
    bad.campaign[0] = 4
    with pytest.raises(InvalidRequest, match="candidate 0 refers to campaign 4 of 0"):
        bad.check_shape()


def test_passthrough_reads_non_finite_relevance_as_zero_and_decisions_edit():
    req = (
        RequestBuilder().campaign(CampaignSpec(1)).candidate(CandidateSpec(0.4))
        .candidate(CandidateSpec(math.nan).campaign(0)).candidate(CandidateSpec(math.inf)).build()
    )
    d = Decisions.passthrough(req)
    assert d.scores == [0.4, 0.0, 0.0] and d.reasons == [R.ORGANIC, 0, R.ORGANIC]
    d.check(req)
    d.promote(1, 0.3, 0.5)
    assert (d.scores[1], d.eligible[1], d.reasons[1], d.propensity[1]) == (0.3, True, R.PROMOTED, 0.5)
    d.demote(1, 0.0, R.SLATE_CAP)
    assert (d.scores[1], d.eligible[1], d.reasons[1], d.propensity[1]) == (0.0, True, R.SLATE_CAP, 0.0)
    d.promote(0, 0.1, 1.0)
    with pytest.raises(Violation, match="candidate 0 has no campaign"):
        d.check(req)
    # The relevance list is not modified by decisions built from it.
    assert req.relevance[0] == 0.4


@dataclass
class BoostSettings:
    boost: float = 0.1
    slots: int = 3


class FixedBoost(Policy):
    name = "fixed-boost"
    version = "1.2.0"
    requires = ["p_skip"]
    optional = ["energy", "p_skip"]
    context = ["hour"]
    Settings = BoostSettings
    settings_doc = {"boost": "added to campaign tracks, in [0, 1]"}

    def validate(self, s):
        if not 0 <= s.boost <= 1:
            return f"boost must be in [0, 1], got {s.boost}"

    def score(self, s, req):
        out = Decisions.passthrough(req)
        for i, c in enumerate(req.campaign):
            if c >= 0 and req.campaign_eligibility(i).eligible:
                out.promote(i, s.boost, 1.0)
                out.add_debug("boost", i, s.boost)
        log.info("scored", candidates=req.count)
        return out


def test_settings_are_typed_defaulted_and_validated():
    p = FixedBoost()
    assert parse_settings(p, "") == BoostSettings()
    assert parse_settings(p, '{"boost": 1}') == BoostSettings(boost=1, slots=3)
    for text, part in [
        ('{"boost": 2}', "boost must be in [0, 1], got 2"),
        ('{"bost": 0.2}', "unknown field `bost`"),
        ('{"slots": 1.5}', "`slots`: expected an integer"),
        ('{"boost": "x"}', "`boost`: expected a number"),
        ('{"slots": true}', "`slots`: expected an integer"),
        ("[1]", "must be a JSON object"),
        ("{", "not JSON"),
    ]:
        with pytest.raises(PolicyError, match=".*") as e:
            parse_settings(p, text)
        assert e.value.kind == "invalid-settings" and part in e.value.message, text
    m = metadata(p)
    assert [(s.name, s.default_json, s.description) for s in m.settings] == [
        ("boost", "0.1", "added to campaign tracks, in [0, 1]"), ("slots", "3", ""),
    ]
    assert (m.name, m.version, m.required_features, m.context_features) == ("fixed-boost", "1.2.0", ["p_skip"], ["hour"])


def test_run_sends_only_declared_features_and_checks_output():
    req = (
        RequestBuilder().features(["zzz", "p_skip"]).context_feature("other", 1.0)
        .campaign(CampaignSpec(1)).candidate(CandidateSpec(0.5, p_skip=0.2, zzz=9.0).campaign(0)).build()
    )
    sent = as_host_sends(FixedBoost, req)
    assert sent.feature_names == ["p_skip", "energy"]
    assert sent.features[0] == 0.2 and math.isnan(sent.features[1])
    assert sent.context.feature_names == ["hour"] and math.isnan(sent.context.features[0])
    log.captured.clear()
    out = run(FixedBoost, {"boost": 0.2}, req)
    assert out.scores == [0.7] and out.debug[0].name == "boost"
    assert log.captured == [("info", "scored", {"candidates": "1"})]

    class Broken(FixedBoost):
        def score(self, s, req):
            out = Decisions.passthrough(req)
            out.scores[0] = math.nan
            return out

    with pytest.raises(Violation, match="score of candidate 0 is not finite"):
        run(Broken, None, req)


def test_host_json_requests_pack_like_the_host():
    body = json.loads((ROOT / "examples" / "request.json").read_text())
    req = request_from_json(body)
    assert req.count == len(body["candidates"])
    req.check_shape()
    camps = [c.get("campaign") for c in body["candidates"]]
    ids = list(dict.fromkeys(c["id"] for c in camps if c))
    assert [c.key for c in req.campaigns] == list(range(len(ids)))
    assert all((req.campaign[i] == -1) == (c is None) for i, c in enumerate(camps))
    assert req.surface == S.from_name(body["context"]["surface"])
    # An unseeded request is seeded from its id (FNV-1a), as the host does.
    del body["context"]["seed"]
    body["context"]["request_id"] = "a"
    assert request_from_json(body).seed == 0xAF63DC4C8601EC8C  # FNV-1a 64 of "a"


def test_fixtures_compare_like_oasis_test(tmp_path):
    fx = {
        "request": {
            "context": {"request_id": "r", "listener_id": "l", "session_id": "s", "surface": "radio",
                        "market": "SE", "timestamp_ms": NOW_MS, "seed": 1},
            "candidates": [{"id": "a", "relevance": 0.5}],
        },
        "expected": [{"id": "a", "score": 0.5, "eligible": False, "reasons": ["organic"], "propensity": 0.0}],
    }
    f = tmp_path / "f.json"
    f.write_text(json.dumps(fx))
    assert check_fixture(FixedBoost, f) == []
    fx["expected"][0]["score"] = 0.6
    f.write_text(json.dumps(fx))
    assert check_fixture(FixedBoost, f) == ["a: score 0.5 != 0.6"]


def test_slate_size_holders_and_pacing_time_as_in_rust():
    from oasis_sdk import pacing_dt_ms
    from oasis_sdk.testing import NOW_MS, CampaignSpec, CandidateSpec, RequestBuilder

    b = (
        RequestBuilder()
        .campaign(CampaignSpec(1).pacing_updated_ms(NOW_MS - 60_000))
        .campaign(CampaignSpec(2))
        .candidate(CandidateSpec(0.9).rights_holder(2).campaign(0))
        .candidate(CandidateSpec(0.5).rights_holder(0))
        .holder_exposure_share_7d(0, 0.25)
    )
    req = b.build()
    assert req.slate_size == 2 and req.context.slate_size == 2
    assert req.holders.count == 3
    assert req.exposure_share_7d(0) == 0.25 and req.exposure_share_7d(2) is None
    assert req.exposure_share_7d(9) is None
    assert req.holder_exposure_share_7d(1) == 0.25
    assert pacing_dt_ms(req.campaigns[0], NOW_MS) == 60_000
    assert pacing_dt_ms(req.campaigns[0], NOW_MS - 90_000) == 0
    assert pacing_dt_ms(req.campaigns[1], NOW_MS) is None
    req.check_shape()
    assert b.slate_size(1).build().slate_size == 1
    req.holders.count = 2
    req.holders.exposure_share_7d.pop()
    try:
        req.check_shape()
    except Exception as e:  # InvalidRequest
        assert "candidate 0 refers to rights holder 2 of 2" in str(e)
    else:
        raise AssertionError("a rights holder outside the table was accepted")


def test_request_from_json_reads_the_new_fields():
    from oasis_sdk.testing import request_from_json

    req = request_from_json({
        "context": {"request_id": "r", "listener_id": "l", "session_id": "s", "surface": "radio",
                    "market": "SE", "timestamp_ms": 5, "slate_size": 1},
        "candidates": [
            {"id": "a", "relevance": 0.9, "rights_holder": "label-1",
             "campaign": {"id": "c", "start_ms": 0, "end_ms": 10, "delivery_target": 10.0,
                          "pacing_updated_ms": 3}},
            {"id": "b", "relevance": 0.4, "rights_holder": "label-2"},
        ],
        "rights_holders": {"label-2": {"exposure_share_7d": 0.3}, "label-9": {"exposure_share_7d": 0.1}},
    })
    assert req.slate_size == 1
    assert req.exposure_share_7d_column[1] == 0.3 and req.holder_exposure_share_7d(0) is None
    assert req.holders.count == 2
    assert req.campaigns[0].pacing_updated_ms == 3 and req.campaigns[0].delivered == 0.0


def test_the_guardrail_has_one_meaning():
    from oasis_sdk import reason as R
    from oasis_sdk.blocks import RelevanceGuardrail

    g = R.RELEVANCE_GUARDRAIL
    alone, skip = RelevanceGuardrail(0.2), RelevanceGuardrail(0.2, 0.35)
    for s, p, a, k in [
        (0.2, 0.35, 0, 0), (0.19, 0.1, g, g), (float("nan"), 0.1, g, g), (0.8, 0.36, 0, g),
        (0.8, float("nan"), 0, g | R.MISSING_FEATURE), (0.8, None, 0, g | R.MISSING_FEATURE),
    ]:
        assert alone.check(s, p) == a and skip.check(s, p) == k, (s, p)
