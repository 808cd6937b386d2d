"""The generator's draws are the Rust SDK's: both check the shared golden file."""

import json

from conftest import ROOT
from oasis_sdk.rng import Rng
from oasis_sdk.testing import RequestBuilder

GOLDEN = json.loads((ROOT / "guest-sdk" / "testdata" / "rng-golden.json").read_text())


def test_the_shared_golden_draws():
    assert len(GOLDEN["seeds"]) >= 5
    for s in GOLDEN["seeds"]:
        r = Rng(s["seed"])
        draws = [r.next_f64() * 2**53 for _ in s["f64_x2p53"]]
        assert draws == s["f64_x2p53"], s["seed"]
        assert [r.below(n) for n in GOLDEN["n"]] == s["below"], s["seed"]


def test_the_rust_sdks_pinned_sequence():
    # guest-sdk/src/rng.rs, the_sequence_of_a_seed_is_pinned
    r = Rng(42)
    assert [int(r.next_f64() * 1e12) for _ in range(3)] == [573591580908, 133306632504, 355935840284]
    assert [r.below(1000) for _ in range(3)] == [225, 117, 355]


def test_the_request_seeds_it_and_draws_are_in_range():
    req = RequestBuilder().seed(7).build()
    a, b = req.rng(), req.rng()
    for _ in range(100):
        x = a.next_f64()
        assert x == b.next_f64() and 0.0 <= x < 1.0
        assert a.below(3) == b.below(3) < 3
    assert Rng(7).next_f64() != Rng(8).next_f64()
