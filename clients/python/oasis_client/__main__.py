"""``python -m oasis_client``: convert or score a JSON request from the shell.

    python -m oasis_client convert [REQUEST.json] > request.binpb   # the gRPC request, serialized
    python -m oasis_client convert --text [REQUEST.json]            # ... in protobuf text format
    python -m oasis_client score --target 127.0.0.1:50051 [--route radio] [REQUEST.json]

``score`` prints the answer in the HTTP API's JSON shape. The request is read
from the file, or from standard input. Exit status: 0 answered, 1 refused by
the server (its kind, field and message on stderr), 2 not a JSON request.
"""

from __future__ import annotations

import argparse
import json
import sys

from google.protobuf import text_format

from . import ConversionError, OasisError, request_from_json, response_to_json, score


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m oasis_client", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    convert = sub.add_parser("convert", help="print the gRPC ScoreRequest of a JSON request")
    convert.add_argument("request", nargs="?", help="JSON request file (default: stdin)")
    convert.add_argument("--text", action="store_true", help="protobuf text format instead of binary")
    scoring = sub.add_parser("score", help="score a JSON request over gRPC")
    scoring.add_argument("request", nargs="?", help="JSON request file (default: stdin)")
    scoring.add_argument("--target", required=True, help="the server's gRPC address, host:port")
    scoring.add_argument("--route", help="route to score on (overrides the request's)")
    scoring.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    args = parser.parse_args(argv)

    body = open(args.request, "rb").read() if args.request else sys.stdin.buffer.read()
    try:
        if args.command == "convert":
            msg = request_from_json(body)
            if args.text:
                sys.stdout.write(text_format.MessageToString(msg))
            else:
                sys.stdout.buffer.write(msg.SerializeToString())
            return 0
        answer = score(args.target, body, route=args.route, timeout=args.timeout)
    except ConversionError as e:
        print(f"not a scoring request: {e}", file=sys.stderr)
        return 2
    except OasisError as e:
        print(f"refused: {e.kind} field={e.field} code={e.code.name}: {e.message}", file=sys.stderr)
        return 1
    json.dump(response_to_json(answer), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
