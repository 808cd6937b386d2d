"""The gRPC code of ``proto/oasis/v1/scoring.proto``, generated into ``oasis_client/_pb``.

The generated modules are not committed: ``scripts/setup-python`` runs
this file whenever the proto changed, so the client
always speaks the server's proto. ``_pb/PROTO_SHA256`` records the digest of
the proto they were generated from (and the grpcio-tools version); importing ``oasis_client`` from a checkout
whose proto has another digest fails with the command to run (see
:func:`check_current`), and so does the package's test suite.

Run it by hand as a script (it imports nothing of the package, which needs
its output): ``python clients/python/oasis_client/generate.py [--proto PATH]``.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
OUT = PACKAGE / "_pb"
STAMP = OUT / "PROTO_SHA256"
# The checkout's proto: clients/python/oasis_client -> proto/oasis/v1/scoring.proto.
PROTO = PACKAGE.parents[2] / "proto" / "oasis" / "v1" / "scoring.proto"
# Generated names, and the absolute import protoc writes into the stubs
# (the proto's package path), rewritten to a relative one.
FILES = ("scoring_pb2.py", "scoring_pb2.pyi", "scoring_pb2_grpc.py")
ABSOLUTE_IMPORT = "from oasis.v1 import scoring_pb2"
RELATIVE_IMPORT = "from . import scoring_pb2"


class StaleError(ImportError):
    """The generated code is missing or was generated from another proto."""


def digest(proto: Path = PROTO) -> str:
    """SHA-256 (hex) of the proto file."""
    return hashlib.sha256(proto.read_bytes()).hexdigest()


def render(proto: Path = PROTO) -> dict[str, str]:
    """Runs protoc (grpcio-tools) on ``proto``: the generated files by name."""
    from grpc_tools import protoc  # a dev tool: needed to generate, not to run
    import importlib.resources

    root = proto.parents[2]  # .../proto, so the file is oasis/v1/scoring.proto
    rel = proto.relative_to(root).as_posix()
    includes = str(importlib.resources.files("grpc_tools") / "_proto")
    with tempfile.TemporaryDirectory() as tmp:
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{root}",
                f"-I{includes}",
                f"--python_out={tmp}",
                f"--pyi_out={tmp}",
                f"--grpc_python_out={tmp}",
                rel,
            ]
        )
        if code != 0:
            raise RuntimeError(f"protoc failed on {proto} (exit {code})")
        gen = Path(tmp) / Path(rel).parent
        files = {name: (gen / name).read_text() for name in FILES}
    stub = files["scoring_pb2_grpc.py"]
    if ABSOLUTE_IMPORT not in stub:
        raise RuntimeError(f"the generated stub no longer imports `{ABSOLUTE_IMPORT}`")
    files["scoring_pb2_grpc.py"] = stub.replace(ABSOLUTE_IMPORT, RELATIVE_IMPORT)
    files["__init__.py"] = f'"""Generated from oasis/v1/scoring.proto by oasis_client.generate; do not edit."""\n'
    files["PROTO_SHA256"] = f"{digest(proto)}\n{_tools_version()}\n"
    return files


def _tools_version() -> str:
    """The generator's version (grpcio-tools), recorded beside the digest."""
    from importlib.metadata import version

    return f"grpcio-tools {version('grpcio-tools')}"


def generate(proto: Path = PROTO, out: Path = OUT) -> None:
    """Writes the generated modules into ``out`` (replacing what is there)."""
    files = render(proto)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, text in files.items():
        (tmp / name).write_text(text)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def check_current(proto: Path = PROTO) -> None:
    """Raises :class:`StaleError` when the generated code is missing, or when
    the checkout's proto (if there is one beside the package) is not the one
    it was generated from."""
    if not STAMP.is_file():
        raise StaleError(
            "oasis_client's generated gRPC code is missing: run scripts/setup-python "
            "(or python clients/python/oasis_client/generate.py)"
        )
    if proto.is_file() and STAMP.read_text().split("\n")[0] != digest(proto):
        raise StaleError(
            f"oasis_client's generated gRPC code is stale: {proto} changed since it was "
            "generated; run scripts/setup-python (or python clients/python/oasis_client/generate.py)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="generate.py", description=__doc__.splitlines()[0])
    parser.add_argument("--proto", type=Path, default=PROTO, help="the scoring proto (default: the checkout's)")
    parser.add_argument("--if-stale", action="store_true", help="only when missing or generated from another proto")
    args = parser.parse_args(argv)
    if args.if_stale:
        try:
            check_current(args.proto)
            if STAMP.read_text().split("\n")[1] == _tools_version():
                return 0
        except StaleError:
            pass
    generate(args.proto)
    print(f"oasis_client: generated {OUT} from {args.proto}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
