"""The component adapter: turns a ``Policy`` subclass into the exports of
``oasis:policy/policy@0.2.0`` for componentize-py.

``scripts/build-python-policy`` generates the app module::

    from oasis_sdk.component import export
    from guarded_boost.policy import GuardedBoost
    Policy = export(GuardedBoost)

Only the boundary converts: requests are wrapped, not copied; reasons (int
bits) become WIT flags through a per-value cache.
"""

from . import reason as R
from .errors import Internal, PolicyError
from .policy import metadata, parse_settings, settings_schema
from .request import Request


def export(policy_cls):
    from componentize_py_types import Err
    from wit_world.imports import types as wit

    policy = policy_cls()
    # Work done here is done once, at build time: componentize-py snapshots
    # the interpreter after importing the app module, and every instance
    # starts from that snapshot. So: the settings schema, the default
    # settings, the metadata and the WIT flags of common reason sets.
    settings_schema(policy.Settings)
    parse_settings(policy, "")
    metadata(policy)
    bits = [b for b, _ in R.REASONS]
    reason_cache: dict = {0: wit.Reason(0)}
    for a in bits:
        for b in bits:
            reason_cache.setdefault(a | b, wit.Reason(a | b))

    def to_wit_error(e: PolicyError):
        if e.kind == "invalid-settings":
            return Err(wit.PolicyError_InvalidSettings(e.message))
        if e.kind == "invalid-request":
            return Err(wit.PolicyError_InvalidRequest(e.message))
        return Err(wit.PolicyError_Internal(e.message))

    def reasons_to_wit(bits: list) -> list:
        cache = reason_cache
        out = []
        append = out.append
        for b in bits:
            r = cache.get(b)
            if r is None:
                r = cache[b] = wit.Reason(b)
            append(r)
        return out

    class Policy:
        def describe(self):
            m = metadata(policy)
            return wit.Metadata(
                name=m.name,
                version=m.version,
                description=m.description,
                required_features=m.required_features,
                optional_features=m.optional_features,
                context_features=m.context_features,
                settings=[wit.SettingInfo(s.name, s.description, s.default_json) for s in m.settings],
                sdk_version=m.sdk_version,
            )

        def validate_settings(self, settings_json: str) -> None:
            try:
                parse_settings(policy, settings_json)
            except PolicyError as e:
                raise to_wit_error(e)

        def score(self, settings_json: str, request):
            try:
                settings = parse_settings(policy, settings_json)
                req = Request(request)
                req.check_shape()
                d = policy.score(settings, req)
            except PolicyError as e:
                raise to_wit_error(e)
            except Err:
                raise
            except Exception as e:  # a bug in the policy: reported, not a trap
                raise to_wit_error(Internal(f"{type(e).__name__}: {e}"))
            return wit.Decisions(
                scores=d.scores,
                eligible=d.eligible,
                reasons=reasons_to_wit(d.reasons),
                propensity=d.propensity,
                debug=[wit.DebugValue(v.name, v.candidate, v.value) for v in d.debug],
                campaign_updates=[
                    wit.CampaignUpdate(u.campaign, u.pacing_integral, u.pacing_last_error)
                    for u in d.campaign_updates
                ],
            )

    Policy.__name__ = "Policy"
    return Policy
