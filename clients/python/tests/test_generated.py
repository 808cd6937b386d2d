"""The generated gRPC code is the proto's: regenerating it gives the same
files, and a client generated from another proto refuses to import."""

import shutil

import pytest

from oasis_client import generate


def test_the_generated_code_is_current_with_the_proto():
    # Fails when proto/oasis/v1/scoring.proto changed and scripts/setup-python
    # did not run: the stamp names another digest.
    generate.check_current()
    assert generate.STAMP.read_text().split("\n")[0] == generate.digest()


def test_regenerating_gives_the_files_in_the_package():
    fresh = generate.render()
    for name, text in fresh.items():
        assert (generate.OUT / name).read_text() == text, f"{name} differs from a fresh generation"


def test_a_changed_proto_makes_the_client_stale(tmp_path):
    proto = tmp_path / "proto" / "oasis" / "v1" / "scoring.proto"
    proto.parent.mkdir(parents=True)
    shutil.copy(generate.PROTO, proto)
    generate.check_current(proto)  # the same proto: current
    with proto.open("a") as f:
        f.write("\nmessage Added { string x = 1; }\n")
    with pytest.raises(generate.StaleError, match="stale.*run scripts/setup-python"):
        generate.check_current(proto)
    # The generator still works on it, into a directory of its own.
    out = tmp_path / "pb"
    generate.generate(proto, out)
    assert "Added" in (out / "scoring_pb2.pyi").read_text()
    assert (out / "PROTO_SHA256").read_text().split("\n")[0] == generate.digest(proto)
