"""softmax-bandit: a small contextual bandit with exact propensities.

Why Python: the reward model is the one the ML team trains offline in
Python; its feature code (here the hour of day on the circle, the session's
skip rate, interactions) is the same code, and the weights come from the
training notebook as settings. Replay and off-policy evaluation work because
every eligible track's probability of being promoted is logged exactly.

**Eligible set ``A``.** Campaign tracks passing the campaign gate (active
window, surface, market) and the SDK's relevance guardrail
(``oasis_sdk.blocks.RelevanceGuardrail`` with ``s_min`` and ``max_p_skip =
theta``): relevance below ``s_min`` or ``p_skip > theta`` makes a track
ineligible with ``RELEVANCE_GUARDRAIL``, a missing ``p_skip`` with
``RELEVANCE_GUARDRAIL`` and ``MISSING_FEATURE``.

**Reward model.** For a track with relevance ``s`` and features ``x``,
``r = sigmoid(w0 + w_rel * s + w_complete * p_complete + w_save * p_save
- w_skip * p_skip * (1 + session_skip_rate) + w_evening * evening)``, where
``evening = (1 + cos(2 pi hour / 24)) / 2`` (1 at midnight, 0 at noon) and
a missing optional feature counts as 0.

**Choice.** One slot: ``pi_i = (1 - epsilon) * softmax(r / tau)_i + epsilon
/ |A|``, and one draw ``u = rng.next_f64()`` (the request's seed) picks the
first ``i`` in request order whose cumulative ``pi`` exceeds ``u``. The chosen
track gets ``+boost`` and ``PROMOTED`` (``EXPLORATION`` too when it is not
the model's best); every track of ``A`` is eligible with propensity
``pi_i`` (they sum to 1). Debug: ``reward`` per track of ``A``, ``entropy``
of ``pi`` and the draw ``u``.
"""

import math
from dataclasses import dataclass

from oasis_sdk import Decisions, Policy, reason as R
from oasis_sdk.blocks import RelevanceGuardrail


@dataclass
class Settings:
    tau: float = 0.1
    epsilon: float = 0.05
    boost: float = 0.3
    theta: float = 0.5
    s_min: float = 0.2
    w0: float = -1.0
    w_rel: float = 2.0
    w_complete: float = 1.5
    w_save: float = 2.0
    w_skip: float = 2.5
    w_evening: float = 0.3


class SoftmaxBandit(Policy):
    name = "softmax-bandit"
    version = "0.2.0"
    description = (
        "Contextual bandit: promotes one campaign track drawn by softmax over a logistic "
        "reward model (relevance, p_complete, p_save, p_skip, session skip rate, hour), "
        "with epsilon-uniform exploration; logs exact propensities for every eligible track."
    )
    requires = ["p_skip"]
    optional = ["p_complete", "p_save"]
    context = ["local_hour", "session_skip_rate"]
    Settings = Settings
    settings_doc = {
        "tau": "softmax temperature over predicted rewards, in [0.001, 10]",
        "epsilon": "share of uniform exploration over eligible tracks, in [0, 1]",
        "boost": "added to the chosen track's score, in [0, 10]",
        "theta": "relevance guardrail: highest p_skip an eligible track may have, in [0, 1]",
        "s_min": "relevance guardrail: campaign tracks below it are not eligible (finite)",
        "w0": "reward model intercept",
        "w_rel": "reward weight of relevance",
        "w_complete": "reward weight of p_complete",
        "w_save": "reward weight of p_save",
        "w_skip": "reward penalty of p_skip, scaled by 1 + the session's skip rate",
        "w_evening": "reward weight of the evening indicator (1 at midnight, 0 at noon)",
    }

    def validate(self, s):
        if not 0.001 <= s.tau <= 10.0:
            return f"tau must be in [0.001, 10], got {s.tau}"
        if not 0.0 <= s.epsilon <= 1.0:
            return f"epsilon must be in [0, 1], got {s.epsilon}"
        if not 0.0 <= s.boost <= 10.0:
            return f"boost must be in [0, 10], got {s.boost}"
        if not 0.0 <= s.theta <= 1.0:
            return f"theta must be in [0, 1], got {s.theta}"
        if not math.isfinite(s.s_min):
            return f"s_min must be finite, got {s.s_min}"
        for name in ("w0", "w_rel", "w_complete", "w_save", "w_skip", "w_evening"):
            v = getattr(s, name)
            if not (math.isfinite(v) and abs(v) <= 100.0):
                return f"{name} must be finite and at most 100 in magnitude, got {v}"

    def score(self, s, req):
        out = Decisions.passthrough(req)
        p_skip = req.feature("p_skip")
        p_complete = req.feature("p_complete")
        p_save = req.feature("p_save")
        hour = req.context_feature("local_hour")
        skip_rate = req.context_feature("session_skip_rate") or 0.0
        evening = 0.0 if hour is None else (1.0 + math.cos(2.0 * math.pi * hour / 24.0)) / 2.0
        bias = s.w0 + s.w_evening * evening
        skip_w = s.w_skip * (1.0 + skip_rate)
        blocks = req.campaign_blocks()
        guardrail = RelevanceGuardrail(s.s_min, s.theta)
        arms, rewards = [], []
        for i, c in enumerate(req.campaign):
            if c < 0:
                continue
            p = p_skip[i]
            block = blocks[c] | guardrail.check(out.scores[i], p)
            if block:
                out.reasons[i] |= block
                continue
            pc, ps = p_complete[i], p_save[i]
            z = bias + s.w_rel * out.scores[i] - skip_w * p
            if pc == pc:
                z += s.w_complete * pc
            if ps == ps:
                z += s.w_save * ps
            arms.append(i)
            rewards.append(1.0 / (1.0 + math.exp(-z)))
        if not arms:
            return out
        top = max(rewards)
        weights = [math.exp((r - top) / s.tau) for r in rewards]
        total = sum(weights)
        n = len(arms)
        pi = [(1.0 - s.epsilon) * w / total + s.epsilon / n for w in weights]
        u = req.rng().next_f64()
        chosen, acc = n - 1, 0.0
        for k, p in enumerate(pi):
            acc += p
            if u < acc:
                chosen = k
                break
        best = rewards.index(top)
        for k, i in enumerate(arms):
            out.eligible[i] = True
            out.propensity[i] = min(1.0, pi[k])
            out.add_debug("reward", i, rewards[k])
        i = arms[chosen]
        out.promote(i, s.boost, min(1.0, pi[chosen]))
        if chosen != best:
            out.mark(i, R.EXPLORATION)
        out.add_debug("entropy", None, -sum(p * math.log(p) for p in pi if p > 0.0))
        out.add_debug("u", None, u)
        return out
