"""The component adapter: turns a ``Policy`` subclass into the exports of
``oasis:policy/policy@0.3.0`` for componentize-py.

``scripts/build-python-policy`` generates the app module::

    from oasis_sdk.component import export
    from guarded_boost.policy import GuardedBoost
    Policy = export(GuardedBoost)

Only the boundary converts, and never element by element in Python.
Contract 0.3.0 carries the per-candidate numeric columns as little-endian
byte buffers (``list<u8>``, which componentize-py lifts to one ``bytes`` in
one copy, where a ``list<f64>`` became one Python float per element). The
request's columns are read in place through ``memoryview(b).cast(...)``
views (``"d"`` f64, ``"I"`` u32, ``"i"`` s32; WebAssembly is little-endian,
as the contract's buffers), which index, slice, iterate and ``len`` like the
lists the native test harness passes, so a policy reads both alike. The
decisions go back as bytes: ``array(...).tobytes()`` of the SDK's lists
(a C loop, no Python objects made), ``bytes`` of the eligibility flags.
"""

from array import array

from . import types as T
from .errors import Internal, InvalidRequest, PolicyError
from .policy import metadata, parse_settings, settings_schema
from .request import Request


def _column(buf: bytes, fmt: str, name: str):
    """The 0.3.0 buffer ``buf`` of column ``name`` as a sequence view of
    ``fmt`` items (no copy)."""
    try:
        return memoryview(buf).cast(fmt)
    except TypeError:
        raise InvalidRequest(
            f"column `{name}` is {len(buf)} bytes, not a whole number of {array(fmt).itemsize}-byte entries"
        ) from None


def request_view(raw):
    """A 0.3.0 request as the records ``Request`` reads (``oasis_sdk.types``),
    with each numeric column a ``memoryview`` over its buffer."""
    ctx = raw.context
    k = raw.candidates
    h = raw.holders
    return T.Request(
        context=T.Context(
            request_id=ctx.request_id,
            listener_id=ctx.listener_id,
            session_id=ctx.session_id,
            surface=ctx.surface,
            market=ctx.market,
            timestamp_ms=ctx.timestamp_ms,
            seed=ctx.seed,
            feature_names=ctx.feature_names,
            features=_column(ctx.features, "d", "context features"),
            slate_size=ctx.slate_size,
        ),
        candidates=T.Candidates(
            count=k.count,
            relevance=_column(k.relevance, "d", "relevance"),
            feature_names=k.feature_names,
            features=_column(k.features, "d", "features"),
            campaign=_column(k.campaign, "i", "campaign"),
            artist=_column(k.artist, "I", "artist"),
            rights_holder=_column(k.rights_holder, "I", "rights-holder"),
            impressions_24h=_column(k.impressions_24h, "I", "impressions-24h"),
            session_promoted=_column(k.session_promoted, "I", "session-promoted"),
        ),
        campaigns=raw.campaigns,
        holders=T.Holders(count=h.count, exposure_share_7d=_column(h.exposure_share_7d, "d", "exposure-share-7d")),
    )


def decisions_bytes(d) -> tuple:
    """The columns of decisions ``d`` as 0.3.0 buffers: scores and
    propensity f64, eligible one byte each (0/1), reasons u16 bits."""
    return (
        array("d", d.scores).tobytes(),
        bytes(d.eligible),
        array("H", d.reasons).tobytes(),
        array("d", d.propensity).tobytes(),
    )


def export(policy_cls):
    from componentize_py_types import Err
    from wit_world.imports import types as wit

    policy = policy_cls()
    # Work done here is done once, at build time: componentize-py snapshots
    # the interpreter after importing the app module, and every instance
    # starts from that snapshot. So: the settings schema, the default
    # settings and the metadata.
    settings_schema(policy.Settings)
    parse_settings(policy, "")
    metadata(policy)

    def to_wit_error(e: PolicyError):
        if e.kind == "invalid-settings":
            return Err(wit.PolicyError_InvalidSettings(e.message))
        if e.kind == "invalid-request":
            return Err(wit.PolicyError_InvalidRequest(e.message))
        return Err(wit.PolicyError_Internal(e.message))

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
                req = Request(request_view(request))
                req.check_shape()
                d = policy.score(settings, req)
                scores, eligible, reasons, propensity = decisions_bytes(d)
            except PolicyError as e:
                raise to_wit_error(e)
            except Err:
                raise
            except Exception as e:  # a bug in the policy: reported, not a trap
                raise to_wit_error(Internal(f"{type(e).__name__}: {e}"))
            return wit.Decisions(
                scores=scores,
                eligible=eligible,
                reasons=reasons,
                propensity=propensity,
                debug=[wit.DebugValue(v.name, v.candidate, v.value) for v in d.debug],
                campaign_updates=[
                    wit.CampaignUpdate(u.campaign, u.pacing_integral, u.pacing_last_error)
                    for u in d.campaign_updates
                ],
            )

    Policy.__name__ = "Policy"
    return Policy
