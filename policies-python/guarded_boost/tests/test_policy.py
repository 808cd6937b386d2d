"""Native tests of the Python guarded-boost (plain CPython, no wasm); the
same cases as the Rust policy's unit tests, and its golden fixtures."""

import math
from pathlib import Path

import pytest

from guarded_boost.policy import GuardedBoost
from oasis_sdk import metadata, reason as R, surface as S
from oasis_sdk.testing import (
    NOW_MS, CampaignSpec, CandidateSpec, RequestBuilder, assert_close, assert_settings_refused,
    check_fixture, run,
)

FIXTURES = Path(__file__).resolve().parents[3] / "policies" / "guarded-boost" / "fixtures"


def cand(s, p_skip):
    return CandidateSpec(s, p_skip=p_skip).campaign(0)


def builder():
    return RequestBuilder().features(["p_skip"]).campaign(CampaignSpec(1))


def test_boost_is_beta_times_relevance_above_s_min():
    req = builder().candidate(cand(0.8, 0.1)).candidate(CandidateSpec(0.9)).build()
    out = run(GuardedBoost, {"beta": 0.4, "s_min": 0.3}, req)
    assert_close(out.scores[0], 0.8 + 0.4 * 0.5)
    assert out.reasons[0] == R.PROMOTED and out.propensity[0] == 1.0 and out.eligible[0]
    assert (out.scores[1], out.reasons[1], out.eligible[1], out.propensity[1]) == (0.9, R.ORGANIC, False, 0.0)


def test_campaign_window_surface_and_market_gate_eligibility():
    b = (
        RequestBuilder().surface(S.AUTOPLAY).market("SE").features(["p_skip"])
        .campaign(CampaignSpec(1).window(NOW_MS - 1000, NOW_MS))
        .campaign(CampaignSpec(2).surfaces([S.RADIO]))
        .campaign(CampaignSpec(3).markets(["NO", "DK"]))
        .campaign(CampaignSpec(4).window(NOW_MS + 1, NOW_MS + 1000).surfaces([S.DAILY_MIX]).markets(["US"]))
        .campaign(CampaignSpec(5).surfaces([S.AUTOPLAY]).markets(["SE"]))
    )
    for k in range(5):
        b.candidate(cand(0.8, 0.1).campaign(k))
    out = run(GuardedBoost, None, b.build())
    assert out.reasons[:4] == [
        R.CAMPAIGN_INACTIVE, R.NOT_ELIGIBLE_SURFACE, R.NOT_ELIGIBLE_MARKET,
        R.CAMPAIGN_INACTIVE | R.NOT_ELIGIBLE_SURFACE | R.NOT_ELIGIBLE_MARKET,
    ]
    assert out.eligible[:4] == [False] * 4 and out.scores[:4] == [0.8] * 4
    assert out.reasons[4] == R.PROMOTED and out.scores[4] > 0.8


def test_p_skip_above_theta_or_missing_is_not_eligible():
    req = builder().candidate(cand(0.8, 0.35)).candidate(cand(0.8, 0.36)).candidate(CandidateSpec(0.8).campaign(0)).build()
    out = run(GuardedBoost, "", req)
    assert out.reasons == [R.PROMOTED, R.RELEVANCE_GUARDRAIL, R.RELEVANCE_GUARDRAIL | R.MISSING_FEATURE]
    assert out.eligible == [True, False, False]


def test_below_s_min_is_not_eligible_and_never_lifted():
    out = run(GuardedBoost, "", builder().candidate(cand(0.15, 0.0)).candidate(cand(0.2, 0.0)).build())
    assert out.scores == [0.15, 0.2] and out.eligible == [False, True]
    assert out.reasons == [R.RELEVANCE_GUARDRAIL, 0] and out.propensity == [0.0, 0.0]


def test_slate_cap_keeps_the_highest_boosts_and_ties_keep_request_order():
    rel = [0.5, 0.9, 0.3, 0.7, 0.8]
    b = builder()
    for s in rel:
        b.candidate(cand(s, 0.1))
    out = run(GuardedBoost, {"k_max": 2}, b.build())
    assert [i for i, r in enumerate(out.reasons) if r & R.PROMOTED] == [1, 4]
    for i in (0, 2, 3):
        assert (out.reasons[i], out.scores[i], out.propensity[i], out.eligible[i]) == (R.SLATE_CAP, rel[i], 0.0, True)
    b = builder()
    for _ in range(3):
        b.candidate(cand(0.6, 0.1))
    out = run(GuardedBoost, {"k_max": 1}, b.build())
    assert out.reasons == [R.PROMOTED, R.SLATE_CAP, R.SLATE_CAP]


def test_non_finite_relevance_never_yields_non_finite_scores():
    req = builder().candidate(cand(math.nan, 0.1)).candidate(CandidateSpec(math.inf)).build()
    out = run(GuardedBoost, "", req)
    assert out.scores == [0.0, 0.0]
    assert out.reasons[0] & R.RELEVANCE_GUARDRAIL


def test_invalid_settings_name_the_setting_and_value():
    req = builder().build()
    assert_settings_refused(GuardedBoost, req, [
        ('{"theta": 1.5}', "theta must be in [0, 1], got 1.5"),
        ('{"beta": -0.1}', "beta must be in [0, 10], got -0.1"),
        ('{"k_max": 0}', "k_max must be in [1, 1000], got 0"),
        ('{"thetta": 0.3}', "unknown field `thetta`"),
        ('{"k_max": 1.5}', "expected an integer"),
    ])
    run(GuardedBoost, {"s_min": -0.5, "k_max": 1000}, req)


def test_metadata_documents_features_and_every_setting_with_defaults():
    m = metadata(GuardedBoost())
    assert m.required_features == ["p_skip"]
    assert [(s.name, s.default_json) for s in m.settings] == [
        ("theta", "0.35"), ("beta", "0.5"), ("s_min", "0.2"), ("k_max", "3"),
    ]
    assert all(s.description for s in m.settings)


@pytest.mark.parametrize("fixture", sorted(FIXTURES.glob("*.json")), ids=lambda p: p.stem)
def test_the_rust_versions_golden_fixtures(fixture):
    assert check_fixture(GuardedBoost, fixture) == []
