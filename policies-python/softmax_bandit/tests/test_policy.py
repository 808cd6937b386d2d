"""Native tests of softmax-bandit (plain CPython, no wasm)."""

import math
from pathlib import Path

import pytest

from oasis_sdk import metadata, reason as R
from oasis_sdk.testing import (
    CampaignSpec, CandidateSpec, RequestBuilder, assert_close, assert_settings_refused,
    check_fixture, run,
)
from softmax_bandit.policy import SoftmaxBandit

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def request(seed=42, hour=21.0):
    b = (
        RequestBuilder().seed(seed).features(["p_skip", "p_complete", "p_save"])
        .context_feature("local_hour", hour).context_feature("session_skip_rate", 0.2)
        .campaign(CampaignSpec(1)).campaign(CampaignSpec(2).markets(["NO"]))
    )
    b.candidate(CandidateSpec(0.9, p_skip=0.1))  # organic
    b.candidate(CandidateSpec(0.8, p_skip=0.1, p_complete=0.9, p_save=0.3).campaign(0))
    b.candidate(CandidateSpec(0.6, p_skip=0.2, p_complete=0.6).campaign(0))
    b.candidate(CandidateSpec(0.5, p_skip=0.3).campaign(0))
    b.candidate(CandidateSpec(0.9, p_skip=0.9).campaign(0))  # p_skip above theta
    b.candidate(CandidateSpec(0.9).campaign(0))  # p_skip missing
    b.candidate(CandidateSpec(0.9, p_skip=0.1).campaign(1))  # foreign market
    return b.build()


ARMS = [1, 2, 3]


def test_gates_and_exact_propensities_summing_to_one():
    out = run(SoftmaxBandit, None, request())
    assert out.reasons[0] == R.ORGANIC and not out.eligible[0]
    assert out.reasons[4] == R.RELEVANCE_GUARDRAIL
    assert out.reasons[5] == R.RELEVANCE_GUARDRAIL | R.MISSING_FEATURE
    assert out.reasons[6] == R.NOT_ELIGIBLE_MARKET
    assert [out.eligible[i] for i in ARMS] == [True] * 3
    assert_close(sum(out.propensity[i] for i in ARMS), 1.0)
    promoted = [i for i in ARMS if out.reasons[i] & R.PROMOTED]
    assert len(promoted) == 1
    assert out.scores[promoted[0]] == request().relevance[promoted[0]] + 0.3


def test_promotion_frequencies_match_the_logged_propensities():
    pi = run(SoftmaxBandit, {"tau": 0.2}, request()).propensity
    counts = dict.fromkeys(ARMS, 0)
    n = 3000
    for seed in range(n):
        out = run(SoftmaxBandit, {"tau": 0.2}, request(seed))
        assert [out.propensity[i] for i in ARMS] == [pi[i] for i in ARMS], "propensity depends on the draw"
        (i,) = [i for i in ARMS if out.reasons[i] & R.PROMOTED]
        counts[i] += 1
    for i in ARMS:
        sd = math.sqrt(pi[i] * (1 - pi[i]) / n)
        assert abs(counts[i] / n - pi[i]) <= 4 * sd + 1e-9, (i, counts[i] / n, pi[i])


def test_same_seed_same_decisions_and_exploration_is_marked():
    a = run(SoftmaxBandit, {"epsilon": 1.0}, request(5))
    b = run(SoftmaxBandit, {"epsilon": 1.0}, request(5))
    assert (a.scores, a.reasons, a.propensity) == (b.scores, b.reasons, b.propensity)
    for i in ARMS:
        assert_close(a.propensity[i], 1 / 3)
    seen_exploration = False
    for seed in range(20):
        out = run(SoftmaxBandit, {"epsilon": 1.0}, request(seed))
        (i,) = [i for i in ARMS if out.reasons[i] & R.PROMOTED]
        seen_exploration |= bool(out.reasons[i] & R.EXPLORATION)
        assert bool(out.reasons[i] & R.EXPLORATION) == (i != 1)  # 1 is the model's best
    assert seen_exploration


def test_the_hour_changes_the_model_not_the_gates():
    noon = run(SoftmaxBandit, None, request(hour=12.0))
    night = run(SoftmaxBandit, None, request(hour=0.0))
    r = lambda out: {v.candidate: v.value for v in out.debug if v.name == "reward"}
    assert all(r(night)[i] > r(noon)[i] for i in ARMS)
    assert noon.eligible == night.eligible


def test_settings_are_validated_and_documented():
    assert_settings_refused(SoftmaxBandit, request(), [
        ('{"tau": 0}', "tau must be in [0.001, 10], got 0"),
        ('{"epsilon": 1.5}', "epsilon must be in [0, 1], got 1.5"),
        ('{"w_rel": 1e9}', "w_rel must be finite and at most 100"),
        ('{"temperature": 1}', "unknown field `temperature`"),
    ])
    m = metadata(SoftmaxBandit())
    assert all(s.description for s in m.settings)
    assert m.context_features == ["local_hour", "session_skip_rate"]


@pytest.mark.parametrize("fixture", sorted(FIXTURES.glob("*.json")), ids=lambda p: p.stem)
def test_golden_fixtures(fixture):
    # Blessed from the component (`oasis test --bless`): native and wasm agree.
    assert check_fixture(SoftmaxBandit, fixture) == []
