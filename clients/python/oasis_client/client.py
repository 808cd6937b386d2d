"""A thin client of ``oasis.v1.Scoring/Score``: a JSON request in, the
response out, and the server's error kind and field when it refuses.

::

    from oasis_client import Client, OasisError, scores
    with Client("127.0.0.1:50051") as oasis:
        try:
            answer = oasis.score(open("examples/request.json").read(), route="radio")
        except OasisError as e:           # e.kind "invalid_request", e.field "candidates[3].relevance"
            ...
        top = scores(answer)[:3]
"""

from __future__ import annotations

from typing import Any, Mapping

import grpc

from ._pb import scoring_pb2 as pb
from ._pb import scoring_pb2_grpc as pb_grpc
from .convert import request_from_json


class OasisError(Exception):
    """The server refused the request: the gRPC status code, and the HTTP
    API's error ``kind`` (``invalid_request``, ``unknown_route``, ...) and
    offending ``field`` (``candidates[3].relevance``), from the response's
    ``oasis-error-kind`` / ``oasis-error-field`` metadata."""

    def __init__(self, code: grpc.StatusCode, message: str, kind: str | None, field: str | None):
        super().__init__(f"{kind or code.name}: {message}")
        self.code, self.message, self.kind, self.field = code, message, kind, field

    @classmethod
    def from_rpc(cls, e: grpc.RpcError) -> "OasisError":
        meta = dict(e.trailing_metadata() or ())
        return cls(e.code(), e.details() or "", meta.get("oasis-error-kind"), meta.get("oasis-error-field"))


class Client:
    """A channel to one Oasis server's gRPC listener (``host:port``).

    ``score`` takes a JSON request (text, bytes or the parsed object,
    converted by :func:`~oasis_client.request_from_json`) or a ready
    ``ScoreRequest``; ``route`` overrides the request's route.
    """

    def __init__(self, target: str, *, channel: grpc.Channel | None = None):
        self.channel = channel or grpc.insecure_channel(target)
        self._stub = pb_grpc.ScoringStub(self.channel)

    def score(
        self,
        request: str | bytes | Mapping[str, Any] | pb.ScoreRequest,
        *,
        route: str | None = None,
        timeout: float | None = None,
    ) -> pb.ScoreResponse:
        """Scores one request. Raises :class:`OasisError` when the server
        refuses it, :class:`~oasis_client.ConversionError` when the JSON is not
        a request."""
        msg = request if isinstance(request, pb.ScoreRequest) else request_from_json(request)
        if route is not None:
            msg.route = route
        try:
            return self._stub.Score(msg, timeout=timeout)
        except grpc.RpcError as e:
            raise OasisError.from_rpc(e) from None

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def score(target: str, request, *, route: str | None = None, timeout: float | None = None) -> pb.ScoreResponse:
    """Scores one request on the server at ``target`` (``host:port``) over a
    channel of its own; for many requests keep a :class:`Client`."""
    with Client(target) as client:
        return client.score(request, route=route, timeout=timeout)


def scores(response: pb.ScoreResponse) -> list[dict[str, Any]]:
    """The response's columns as the HTTP API's ``scores``: one
    ``{"id", "score", "eligible", "reasons", "propensity"}`` per candidate,
    in request order, with the reason bits as names."""
    s = response.scores
    names = list(s.reason_names)
    return [
        {
            "id": s.ids[i],
            "score": s.scores[i],
            "eligible": s.eligible[i],
            "reasons": [n for b, n in enumerate(names) if s.reasons[i] >> b & 1],
            "propensity": s.propensity[i],
        }
        for i in range(len(s.ids))
    ]


def response_to_json(response: pb.ScoreResponse) -> dict[str, Any]:
    """The response in the HTTP API's JSON shape (without ``timing`` and
    ``debug``): what ``POST /v1/score`` answers for the same request."""

    def policy(p: pb.PolicyRef) -> dict[str, Any]:
        out = {"name": p.name, "version": p.version, "digest": p.digest}
        if p.settings_sha256:
            out["settings_sha256"] = p.settings_sha256
        return out

    out: dict[str, Any] = {
        "request_id": response.request_id,
        "route": response.route,
        "policy": policy(response.policy),
        "variant": response.variant,
        "arm": response.arm,
        "scores": scores(response),
    }
    if response.HasField("fallback"):
        f = response.fallback
        out["fallback"] = {"failed": policy(f.failed), "error_kind": f.error_kind, "error": f.error}
    return out
