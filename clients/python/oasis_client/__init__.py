"""oasis_client: call Oasis's gRPC scoring API from Python.

The messages and stub are generated from ``proto/oasis/v1/scoring.proto`` by
``scripts/setup-python`` (see :mod:`oasis_client.generate`);
:func:`request_from_json` turns the JSON request PZN sends to ``POST
/v1/score`` into the columnar gRPC request, the same conversion as the
server's, and :class:`Client` / :func:`score` send it.

::

    import oasis_client
    answer = oasis_client.score("127.0.0.1:50051", open("examples/request.json").read())
    print(oasis_client.scores(answer)[0])   # {"id": ..., "score": ..., "eligible": ..., ...}

Or from the shell: ``python -m oasis_client score --target 127.0.0.1:50051 examples/request.json``.
"""

from .generate import StaleError, check_current

check_current()  # a clear error, not an obscure one, when the proto moved on

from ._pb import scoring_pb2 as pb  # noqa: E402
from ._pb import scoring_pb2_grpc as pb_grpc  # noqa: E402
from .client import Client, OasisError, response_to_json, score, scores  # noqa: E402
from .convert import ConversionError, request_from_json  # noqa: E402

__all__ = [
    "Client",
    "ConversionError",
    "OasisError",
    "StaleError",
    "pb",
    "pb_grpc",
    "request_from_json",
    "response_to_json",
    "score",
    "scores",
]
