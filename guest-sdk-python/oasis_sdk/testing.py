"""Native tests of a policy under plain CPython (pytest), without wasm.

* ``RequestBuilder`` / ``CandidateSpec`` / ``CampaignSpec`` build requests
  as the Rust SDK's ``oasis_sdk::testing`` does (same defaults: radio, SE,
  ``NOW_MS``, seed 42, campaigns active for 30 days on every surface).
* ``run(policy, settings, request)`` scores like the host: settings parsed
  and validated, only the declared feature columns sent, the shape checked,
  and the output refused by the host's rules (``oasis_sdk.contract``).
* ``request_from_json`` and ``check_fixture`` read the host's JSON request
  and ``oasis test`` golden fixtures, so the same fixture file is checked
  natively by pytest and against the built component by ``oasis test``.
"""

import json
import math
from pathlib import Path

from . import reason as R
from . import surface as S
from .contract import check_decisions, feature_columns
from .decisions import Decisions
from .errors import PolicyError
from .policy import Policy, parse_settings
from .request import Request
from .types import Campaign, Candidates, Context, Holders
from .types import Request as RawRequest

NOW_MS = 1_781_524_800_000
DAY_MS = 86_400_000
CLOSE_TOLERANCE = 1e-12
NAN = float("nan")


class CampaignSpec:
    """A campaign for ``RequestBuilder.campaign`` (defaults as in Rust)."""

    def __init__(self, key: int):
        self.c = Campaign(
            key=key,
            start_ms=NOW_MS - 10 * DAY_MS,
            end_ms=NOW_MS + 20 * DAY_MS,
            surfaces=S.ALL_SURFACES,
            markets=[],
            delivery_target=1000.0,
            delivered=333.0,
            expected_by_now=333.0,
            pacing_updated_ms=0,
            commission_bps=3000,
        )

    def window(self, start_ms: int, end_ms: int) -> "CampaignSpec":
        self.c.start_ms, self.c.end_ms = start_ms, end_ms
        return self

    def surfaces(self, surfaces) -> "CampaignSpec":
        self.c.surfaces = S.surface_set(*surfaces)
        return self

    def markets(self, markets) -> "CampaignSpec":
        self.c.markets = [S.market_code(m) for m in markets]
        return self

    def delivery(self, target: float, delivered: float, expected_by_now: float) -> "CampaignSpec":
        self.c.delivery_target, self.c.delivered, self.c.expected_by_now = target, delivered, expected_by_now
        return self

    def pacing_state(self, integral: float, last_error: float) -> "CampaignSpec":
        self.c.pacing_integral, self.c.pacing_last_error = integral, last_error
        return self

    def pacing_updated_ms(self, ms: int) -> "CampaignSpec":
        self.c.pacing_updated_ms = ms
        return self


class CandidateSpec:
    """A candidate for ``RequestBuilder.candidate``."""

    def __init__(self, relevance: float, **features):
        self.relevance = relevance
        self.features = dict(features)
        self.campaign_index = -1
        self.artist_key = 0
        self.holder_key = 0
        self.impressions_24h = 0
        self.session_promoted = 0

    def feature(self, name: str, value: float) -> "CandidateSpec":
        self.features[name] = value
        return self

    def campaign(self, index: int) -> "CandidateSpec":
        self.campaign_index = index
        return self

    def artist(self, key: int) -> "CandidateSpec":
        self.artist_key = key
        return self

    def rights_holder(self, key: int) -> "CandidateSpec":
        self.holder_key = key
        return self

    def impressions(self, last_24h: int, this_session: int) -> "CandidateSpec":
        self.impressions_24h, self.session_promoted = last_24h, this_session
        return self


class RequestBuilder:
    """Builds a columnar request; ``build()`` returns an ``oasis_sdk.Request``."""

    def __init__(self):
        self.ctx = Context(surface=S.RADIO, market=S.market_code("SE"), timestamp_ms=NOW_MS, seed=42)
        self.names: list = []
        self.cands: list = []
        self.camps: list = []
        self.slate = None
        self.exposure: list = []

    def slate_size(self, k: int) -> "RequestBuilder":
        """The ranks the caller shows; without it, the candidate count (as the host sends it)."""
        self.slate = k
        return self

    def holder_exposure_share_7d(self, holder: int, share: float) -> "RequestBuilder":
        """Rights holder ``holder``'s 7-day exposure share; holders not set are unknown (NaN)."""
        self.exposure.append((holder, share))
        return self

    def surface(self, surface: int) -> "RequestBuilder":
        self.ctx.surface = surface
        return self

    def market(self, market: str) -> "RequestBuilder":
        self.ctx.market = S.market_code(market)
        return self

    def timestamp_ms(self, ts: int) -> "RequestBuilder":
        self.ctx.timestamp_ms = ts
        return self

    def seed(self, seed: int) -> "RequestBuilder":
        self.ctx.seed = seed
        return self

    def context_feature(self, name: str, value: float) -> "RequestBuilder":
        self.ctx.feature_names.append(name)
        self.ctx.features.append(value)
        return self

    def features(self, names) -> "RequestBuilder":
        self.names = list(names)
        return self

    def campaign(self, spec: CampaignSpec) -> "RequestBuilder":
        self.camps.append(spec.c)
        return self

    def candidate(self, spec: CandidateSpec) -> "RequestBuilder":
        self.cands.append(spec)
        return self

    def build(self) -> Request:
        width, n = len(self.names), len(self.cands)
        k = Candidates(count=n, feature_names=list(self.names), features=[NAN] * (n * width))
        for i, c in enumerate(self.cands):
            if c.campaign_index >= len(self.camps):
                raise AssertionError(
                    f"candidate {i} refers to campaign {c.campaign_index} but only {len(self.camps)} were added"
                )
            for name, v in c.features.items():
                if name not in self.names:
                    raise AssertionError(f"candidate {i} sets feature `{name}`, not declared with .features()")
                k.features[i * width + self.names.index(name)] = float(v)
            k.relevance.append(float(c.relevance))
            k.campaign.append(c.campaign_index)
            k.artist.append(c.artist_key)
            k.rights_holder.append(c.holder_key)
            k.impressions_24h.append(c.impressions_24h)
            k.session_promoted.append(c.session_promoted)
        ctx = Context(**vars(self.ctx))
        ctx.feature_names, ctx.features = list(ctx.feature_names), list(ctx.features)
        ctx.slate_size = n if self.slate is None else self.slate
        count = max([h + 1 for h in k.rights_holder] + [h + 1 for h, _ in self.exposure] + [0])
        share = [NAN] * count
        for h, v in self.exposure:
            share[h] = float(v)
        return Request(RawRequest(ctx, k, list(self.camps), Holders(count, share)))


def _policy(policy) -> Policy:
    return policy() if isinstance(policy, type) else policy


def as_host_sends(policy, req: Request) -> Request:
    """The request as the host sends it to ``policy``: exactly its declared
    candidate columns (required, then optional; NaN where missing) and
    context features."""
    policy = _policy(policy)
    raw = req.raw
    k = raw.candidates
    cols = feature_columns(policy.requires, policy.optional)
    n, width = k.count, len(k.feature_names)
    src = [k.feature_names.index(c) if c in k.feature_names else None for c in cols]
    feats = [NAN] * (n * len(cols))
    for i in range(n):
        for j, s in enumerate(src):
            if s is not None:
                feats[i * len(cols) + j] = k.features[i * width + s]
    ctx = raw.context
    cvals = [
        ctx.features[ctx.feature_names.index(name)] if name in ctx.feature_names else NAN
        for name in policy.context
    ]
    new_k = Candidates(**{**vars(k), "feature_names": cols, "features": feats})
    new_ctx = Context(**{**vars(ctx), "feature_names": list(policy.context), "features": cvals})
    return Request(RawRequest(new_ctx, new_k, raw.campaigns, raw.holders))


def run(policy, settings, request: Request) -> Decisions:
    """Scores ``request`` with ``policy`` (a class or instance) and
    ``settings`` (JSON text, a dict, or ``None``/"" for defaults) as the
    host does; raises ``PolicyError`` (settings, request, or a policy
    error) or ``oasis_sdk.contract.Violation`` (output the host refuses)."""
    policy = _policy(policy)
    if settings is None:
        settings = ""
    elif not isinstance(settings, str):
        settings = json.dumps(settings)
    s = parse_settings(policy, settings)
    request.check_shape()
    req = as_host_sends(policy, request)
    out = policy.score(s, req)
    check_decisions(req.count, req.campaign, out, len(req.campaigns))
    return out


def is_close(actual: float, expected: float, tolerance: float = CLOSE_TOLERANCE) -> bool:
    """Whether two finite values differ by at most ``tolerance`` (absolute)."""
    return math.isfinite(actual) and math.isfinite(expected) and abs(actual - expected) <= tolerance


def assert_close(actual: float, expected: float, tolerance: float = CLOSE_TOLERANCE) -> None:
    assert is_close(actual, expected, tolerance), f"{actual} != {expected} (tolerance {tolerance})"


def assert_settings_refused(policy, request: Request, cases) -> None:
    """Each ``(settings_json, message_part)`` is refused at load with a message containing the part."""
    for settings, part in cases:
        try:
            run(policy, settings, request)
        except PolicyError as e:
            assert e.kind == "invalid-settings", f"{settings}: {e}"
            assert part in e.message, f"{settings}: {e.message!r} does not contain {part!r}"
        else:
            raise AssertionError(f"settings {settings} were accepted")


# --- The host's JSON request and `oasis test` fixtures --------------------


def _seed_of(ctx: dict) -> int:
    if ctx.get("seed") is not None:
        return ctx["seed"]
    h = 0xCBF29CE484222325
    for b in ctx["request_id"].encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def _intern(keys: dict, counter: list, ident: str) -> int:
    # As the host: keys in order of first appearance; an empty id gets its own.
    nxt = counter[0]
    if not ident:
        counter[0] += 1
        return nxt
    if ident not in keys:
        keys[ident] = nxt
        counter[0] += 1
    return keys[ident]


def request_from_json(body) -> Request:
    """A host JSON request (``POST /v1/score`` body, as in
    ``examples/request.json`` and fixtures) in columnar form, with every
    feature any candidate carries (``run`` then keeps the declared ones).
    Packing follows the host (``host/src/columnar.rs``); the host validates
    far more, and stays the authority."""
    if isinstance(body, (str, bytes)):
        body = json.loads(body)
    ctx = body["context"]
    cands = body["candidates"]
    names: list = []
    for c in cands:
        for name in c.get("features") or {}:
            if name not in names:
                names.append(name)
    width, n = len(names), len(cands)
    k = Candidates(count=n, feature_names=names, features=[NAN] * (n * width))
    camps: list = []
    seen: dict = {}
    artists, holders = ({}, [0]), ({}, [0])
    holder_ids: list = []
    for i, c in enumerate(cands):
        for name, v in (c.get("features") or {}).items():
            if v is not None:
                k.features[i * width + names.index(name)] = float(v)
        k.relevance.append(float(c["relevance"]))
        camp = c.get("campaign")
        if camp is None:
            k.campaign.append(-1)
        else:
            if camp["id"] not in seen:
                surfaces = camp.get("surfaces")
                seen[camp["id"]] = len(camps)
                camps.append(
                    Campaign(
                        key=len(camps),
                        start_ms=camp["start_ms"],
                        end_ms=camp["end_ms"],
                        surfaces=S.DEFAULT_CAMPAIGN_SURFACES
                        if surfaces is None
                        else S.surface_set(*(S.from_name(s) for s in surfaces)),
                        markets=[S.market_code(m) for m in camp.get("markets") or []],
                        delivery_target=float(camp["delivery_target"]),
                        delivered=float(camp.get("delivered", 0.0)),
                        expected_by_now=float(camp.get("expected_by_now", 0.0)),
                        pacing_integral=float(camp.get("pacing_integral", 0.0)),
                        pacing_last_error=float(camp.get("pacing_last_error", 0.0)),
                        pacing_updated_ms=camp.get("pacing_updated_ms") or 0,
                        commission_bps=camp.get("commission_bps", 0),
                    )
                )
            k.campaign.append(seen[camp["id"]])
        k.artist.append(_intern(*artists, c.get("artist", "")))
        holder = c.get("rights_holder", "")
        key = _intern(*holders, holder)
        if key == len(holder_ids):
            holder_ids.append(holder)
        k.rights_holder.append(key)
        k.impressions_24h.append(c.get("impressions_24h", 0))
        k.session_promoted.append(c.get("session_promoted", 0))
    cf = ctx.get("features") or {}
    context = Context(
        request_id=ctx["request_id"],
        listener_id=ctx["listener_id"],
        session_id=ctx["session_id"],
        surface=S.from_name(ctx["surface"]),
        market=S.market_code(ctx["market"]),
        timestamp_ms=ctx["timestamp_ms"],
        seed=_seed_of(ctx),
        feature_names=list(cf),
        features=[NAN if v is None else float(v) for v in cf.values()],
        slate_size=n if ctx.get("slate_size") is None else ctx["slate_size"],
    )
    table = body.get("rights_holders") or {}
    share = []
    for h in holder_ids:
        v = (table.get(h) or {}).get("exposure_share_7d")
        share.append(NAN if v is None else float(v))
    return Request(RawRequest(context, k, camps, Holders(len(holder_ids), share)))


def check_fixture(policy, path) -> list:
    """Runs an ``oasis test`` fixture file natively; returns the differences
    (empty when it passes), compared as ``oasis test`` compares them."""
    fx = json.loads(Path(path).read_text())
    tol = fx.get("tolerance", 1e-9)
    cands = fx["request"]["candidates"]
    out = run(policy, fx.get("settings") or {}, request_from_json(fx["request"]))
    expected = fx.get("expected")
    if expected is None:
        return ["the fixture has no `expected` output yet"]
    diffs = []
    if len(expected) != len(cands):
        diffs.append(f"{len(expected)} expected entries for {len(cands)} candidates")
    dbg = {(v.candidate, v.name): v.value for v in out.debug}
    for i, e in enumerate(expected[: len(cands)]):
        cid = cands[i]["id"]
        if e["id"] != cid:
            diffs.append(f"candidate {i}: expected id {e['id']!r}, got {cid!r}")
        if abs(out.scores[i] - e["score"]) > tol:
            diffs.append(f"{cid}: score {out.scores[i]} != {e['score']}")
        if out.eligible[i] != e["eligible"]:
            diffs.append(f"{cid}: eligible {out.eligible[i]} != {e['eligible']}")
        if R.names(out.reasons[i]) != list(e["reasons"]):
            diffs.append(f"{cid}: reasons {R.names(out.reasons[i])} != {e['reasons']}")
        if abs(out.propensity[i] - e["propensity"]) > tol:
            diffs.append(f"{cid}: propensity {out.propensity[i]} != {e['propensity']}")
        for name, v in (e.get("debug") or {}).items():
            got = dbg.get((i, name))
            if got is None or abs(got - v) > tol:
                diffs.append(f"{cid}: debug {name} {got} != {v}")
    for name, v in (fx.get("expected_debug") or {}).items():
        got = dbg.get((None, name))
        if got is None or abs(got - v) > tol:
            diffs.append(f"debug {name} {got} != {v}")
    want = fx.get("expected_campaign_updates")
    if want is not None:
        ids: list = []
        for c in cands:
            cid = (c.get("campaign") or {}).get("id")
            if cid is not None and cid not in ids:
                ids.append(cid)
        got = {ids[u.campaign]: u for u in out.campaign_updates}
        if len(out.campaign_updates) != len(want):
            diffs.append(f"{len(out.campaign_updates)} campaign updates, expected {len(want)}")
        for w in want:
            u = got.get(w["campaign"])
            if u is None:
                diffs.append(f"no campaign update for {w['campaign']!r}")
            elif abs(u.pacing_integral - w["pacing_integral"]) > tol or abs(
                u.pacing_last_error - w["pacing_last_error"]
            ) > tol:
                diffs.append(f"campaign update {u} != {w}")
    return diffs
