"""A JSON scoring request (the body of ``POST /v1/score``, as PZN sends it) as
the columnar gRPC ``oasis.v1.ScoreRequest``.

The same conversion as the server's own (``oasis_proto::json``, Rust), rule
for rule, so that a request scored over gRPC gets the answer the same JSON
gets over HTTP:

* context features: their names in the order given, values aligned to them
  (``null`` becomes NaN, "missing");
* candidate columns: ``ids`` and ``relevance`` always; ``artists``,
  ``rights_holders`` filled for every candidate (``""`` for one without) when
  any candidate has one, else left empty; ``impressions_24h`` and
  ``session_promoted`` likewise, together (``0`` for a candidate without);
* candidate features: the union of the candidates' feature names in order of
  first appearance, and one row-major matrix of values with NaN where a
  candidate has no value (absent or ``null``);
* campaigns: sent once each, the first copy of each campaign id in order of
  first appearance, referenced by index from ``candidates.campaign`` (-1 for a
  track in no campaign; the column is empty when no candidate has one);
* surfaces by name (``"daily_mix"`` -> ``SURFACE_DAILY_MIX``).

It checks what JSON's types check, as the server's parser does (required
fields, types, integer ranges, known surfaces, no unknown fields, at most 256
features) and raises :class:`ConversionError` naming the JSON path; the server
checks the rest (finiteness, ranges, market codes, unique ids), the same way
for both front ends.
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping

from ._pb import scoring_pb2 as pb

MAX_FEATURES = 256
SURFACES = ("radio", "autoplay", "daily_mix", "artist_mix", "mood_mix", "decade_mix", "genre_mix", "other")
_I64 = (-(2**63), 2**63 - 1)
_U64 = (0, 2**64 - 1)
_U32 = (0, 2**32 - 1)


class ConversionError(ValueError):
    """A body that is not JSON of the request's shape, with the JSON path of
    the offending value (``candidates[3].relevance``; ``.`` for the whole
    body). A missing field is named itself (``candidates[3].id``)."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{message} (at `{path}`)")
        self.path = path
        self.message = message


def request_from_json(body: str | bytes | Mapping[str, Any]) -> pb.ScoreRequest:
    """Converts a JSON scoring request: its text, or the parsed object.

    Raises :class:`ConversionError` naming the JSON path of a value of the
    wrong type, a missing or unknown field, or an unknown surface.

    >>> req = request_from_json('''{"context": {"request_id": "r", "listener_id": "l",
    ...   "session_id": "s", "surface": "radio", "market": "SE", "timestamp_ms": 0},
    ...   "candidates": [{"id": "a", "relevance": 0.5, "features": {"p_skip": 0.1}}]}''')
    >>> list(req.candidates.ids), list(req.candidates.feature_names)
    (['a'], ['p_skip'])
    """
    if isinstance(body, (str, bytes, bytearray)):
        try:
            body = json.loads(body, parse_constant=_no_constant)
        except ValueError as e:
            raise ConversionError(".", f"not JSON: {e}") from None
    r = _Object(body, "")
    route = r.optional("route", _string)
    context = r.required("context", _context)
    candidates = r.required("candidates", lambda v, p: _list(v, p, _candidate))
    holders = r.optional("rights_holders", _holders)
    debug = r.defaulted("debug", _bool, False)
    r.done()

    msg = pb.ScoreRequest(route=route or "", context=context, debug=bool(debug))
    if holders:
        for holder_id, share in holders:
            msg.rights_holders[holder_id].exposure_share_7d = share

    k = msg.candidates
    k.SetInParent()
    k.ids.extend(c["id"] for c in candidates)
    k.relevance.extend(c["relevance"] for c in candidates)
    if any(c["artist"] for c in candidates):
        k.artists.extend(c["artist"] for c in candidates)
    if any(c["rights_holder"] for c in candidates):
        k.rights_holders.extend(c["rights_holder"] for c in candidates)
    if any(c["impressions_24h"] is not None or c["session_promoted"] is not None for c in candidates):
        k.impressions_24h.extend(c["impressions_24h"] or 0 for c in candidates)
        k.session_promoted.extend(c["session_promoted"] or 0 for c in candidates)

    # Feature names: the union in order of first appearance; values row-major.
    column: dict[str, int] = {}
    for c in candidates:
        for name, _ in c["features"]:
            column.setdefault(name, len(column))
    width = len(column)
    values = [math.nan] * (len(candidates) * width)
    for i, c in enumerate(candidates):
        for name, value in c["features"]:
            if value is not None:
                values[i * width + column[name]] = value
    k.feature_names.extend(column)
    k.features.extend(values)

    # Campaigns once, the first copy of each id, by index.
    index: dict[str, int] = {}
    for c in candidates:
        camp = c["campaign"]
        if camp is not None and camp.id not in index:
            index[camp.id] = len(msg.campaigns)
            msg.campaigns.append(camp)
    if index:
        k.campaign.extend(-1 if c["campaign"] is None else index[c["campaign"].id] for c in candidates)
    return msg


# -- the request's parts ----------------------------------------------------


def _context(v: Any, path: str) -> pb.Context:
    o = _Object(v, path)
    ctx = pb.Context(
        request_id=o.required("request_id", _string),
        listener_id=o.required("listener_id", _string),
        session_id=o.required("session_id", _string),
        surface=o.required("surface", _surface),
        market=o.required("market", _string),
        timestamp_ms=o.required("timestamp_ms", _int(_I64)),
    )
    seed = o.optional("seed", _int(_U64))
    if seed is not None:
        ctx.seed = seed
    for name, value in o.optional("features", _features) or ():
        ctx.feature_names.append(name)
        ctx.features.append(math.nan if value is None else value)
    slate_size = o.optional("slate_size", _int(_U32))
    if slate_size is not None:
        ctx.slate_size = slate_size
    o.done()
    return ctx


def _candidate(v: Any, path: str) -> dict[str, Any]:
    o = _Object(v, path)
    c = {
        "id": o.required("id", _string),
        "relevance": o.required("relevance", _number),
        "artist": o.defaulted("artist", _string, ""),
        "rights_holder": o.defaulted("rights_holder", _string, ""),
        "impressions_24h": o.optional("impressions_24h", _int(_U32)),
        "session_promoted": o.optional("session_promoted", _int(_U32)),
        "campaign": o.optional("campaign", _campaign),
        "features": o.defaulted("features", _features, []),
    }
    o.done()
    return c


def _campaign(v: Any, path: str) -> pb.Campaign:
    o = _Object(v, path)
    c = pb.Campaign(
        id=o.required("id", _string),
        start_ms=o.required("start_ms", _int(_I64)),
        end_ms=o.required("end_ms", _int(_I64)),
    )
    surfaces = o.optional("surfaces", lambda v, p: _list(v, p, _surface))
    if surfaces:
        c.surfaces.extend(surfaces)
    c.markets.extend(o.defaulted("markets", lambda v, p: _list(v, p, _string), []))
    c.delivery_target = o.required("delivery_target", _number)
    for name in ("delivered", "expected_by_now", "pacing_integral", "pacing_last_error"):
        value = o.optional(name, _number)
        if value is not None:
            setattr(c, name, value)
    updated = o.optional("pacing_updated_ms", _int(_I64))
    if updated is not None:
        c.pacing_updated_ms = updated
    c.commission_bps = o.defaulted("commission_bps", _int(_U32), 0)
    o.done()
    return c


def _holders(v: Any, path: str) -> list[tuple[str, float]]:
    if not isinstance(v, dict):
        raise ConversionError(_dot(path), f"invalid type: {_kind(v)}, expected a map")
    out = []
    for holder_id, h in v.items():
        o = _Object(h, f"{path}.{holder_id}")
        out.append((holder_id, o.required("exposure_share_7d", _number)))
        o.done()
    return out


def _features(v: Any, path: str) -> list[tuple[str, float | None]]:
    if not isinstance(v, dict):
        raise ConversionError(
            _dot(path), f"invalid type: {_kind(v)}, expected an object of feature name to number (or null)"
        )
    if len(v) > MAX_FEATURES:
        raise ConversionError(path, f"more than {MAX_FEATURES} features")
    return [(name, None if value is None else _number(value, f"{path}.{name}")) for name, value in v.items()]


# -- JSON's types -----------------------------------------------------------


class _Object:
    """Reads the fields of a JSON object at ``path``, refusing unknown ones."""

    def __init__(self, v: Any, path: str):
        if not isinstance(v, dict):
            raise ConversionError(_dot(path), f"invalid type: {_kind(v)}, expected a struct")
        self.v, self.path, self.seen = v, path, set()

    def _at(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def required(self, name: str, read):
        self.seen.add(name)
        if name not in self.v:
            raise ConversionError(self._at(name), f"missing field `{name}`")
        return read(self.v[name], self._at(name))

    def optional(self, name: str, read):
        """A field that may be absent or ``null``: ``None`` then."""
        self.seen.add(name)
        value = self.v.get(name)
        return None if value is None else read(value, self._at(name))

    def defaulted(self, name: str, read, default):
        """A field that may be absent (not ``null``)."""
        self.seen.add(name)
        return read(self.v[name], self._at(name)) if name in self.v else default

    def done(self) -> None:
        for name in self.v:
            if name not in self.seen:
                raise ConversionError(self._at(name), f"unknown field `{name}`")


def _dot(path: str) -> str:
    return path or "."


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"boolean `{'true' if v else 'false'}`"
    if isinstance(v, int):
        return f"integer `{v}`"
    if isinstance(v, float):
        return f"floating point `{v}`"
    if isinstance(v, str):
        return f"string {json.dumps(v)}"
    return "sequence" if isinstance(v, list) else "map"


def _string(v: Any, path: str) -> str:
    if not isinstance(v, str):
        raise ConversionError(_dot(path), f"invalid type: {_kind(v)}, expected a string")
    return v


def _bool(v: Any, path: str) -> bool:
    if not isinstance(v, bool):
        raise ConversionError(_dot(path), f"invalid type: {_kind(v)}, expected a boolean")
    return v


def _number(v: Any, path: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConversionError(_dot(path), f"invalid type: {_kind(v)}, expected f64")
    return float(v)


def _int(bounds: tuple[int, int]):
    lo, hi = bounds

    def read(v: Any, path: str) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConversionError(_dot(path), f"invalid type: {_kind(v)}, expected an integer in [{lo}, {hi}]")
        if not lo <= v <= hi:
            raise ConversionError(_dot(path), f"invalid value: integer `{v}`, expected an integer in [{lo}, {hi}]")
        return v

    return read


def _surface(v: Any, path: str) -> int:
    name = _string(v, path)
    if name not in SURFACES:
        raise ConversionError(
            _dot(path), f"unknown variant `{name}`, expected one of {', '.join(f'`{s}`' for s in SURFACES)}"
        )
    return pb.Surface.Value(f"SURFACE_{name.upper()}")


def _list(v: Any, path: str, read) -> list:
    if not isinstance(v, list):
        raise ConversionError(_dot(path), f"invalid type: {_kind(v)}, expected a sequence")
    return [read(item, f"{path}[{i}]") for i, item in enumerate(v)]


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")
