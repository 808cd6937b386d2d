"""The SDK's copies of the contract's rules agree with contract/ (the one
home of the rules): the output check reproduces the shared cases that the
Rust function also passes, and the reason bits, surfaces and bounds are read
from the Rust sources and compared."""

import json
import re

from conftest import ROOT
from oasis_sdk import contract, reason, surface
from oasis_sdk.contract import Violation, check_decisions
from oasis_sdk.decisions import CampaignUpdate, DebugValue

CASES = json.loads((ROOT / "contract" / "testdata" / "output-cases.json").read_text())["cases"]
UPDATE_CASES = json.loads((ROOT / "guest-sdk" / "testdata" / "campaign-update-cases.json").read_text())["cases"]


class _D:
    pass


def _num(v):
    return float(v) if isinstance(v, str) else v


def test_the_output_check_reproduces_every_shared_case():
    assert len(CASES) >= 20
    for c in CASES:
        d = _D()
        d.scores = [_num(x) for x in c["scores"]]
        d.propensity = [_num(x) for x in c["propensity"]]
        d.eligible, d.reasons = c["eligible"], c["reasons"]
        d.debug = [DebugValue(n, k, _num(v)) for n, k, v in c["debug"]]
        try:
            check_decisions(c["candidates"], c["campaign"], d)
            got = None
        except Violation as v:
            got = {"kind": v.kind, "message": v.message}
        assert got == c["expected"], c["name"]


def test_the_campaign_update_check_reproduces_every_shared_case():
    assert len(UPDATE_CASES) >= 8
    for c in UPDATE_CASES:
        d = _D()
        d.scores, d.propensity, d.eligible, d.reasons, d.debug = [0.5], [0.0], [False], [reason.ORGANIC], []
        d.campaign_updates = [CampaignUpdate(k, _num(i), _num(e)) for k, i, e in c["updates"]]
        try:
            check_decisions(1, [-1], d, c["campaigns"])
            got = None
        except Violation as v:
            got = {"kind": v.kind, "message": v.message}
        assert got == c["expected"], c["name"]


def test_reason_bits_are_the_contracts():
    src = (ROOT / "contract" / "src" / "reason.rs").read_text()
    rust = {m[0]: int(m[1]) for m in re.findall(r"pub const ([A-Z_]+): u16 = 1 << (\d+);", src)}
    assert len(rust) == len(reason.REASONS) == 13
    for bit, name in reason.REASONS:
        assert 1 << rust[name.upper()] == bit == getattr(reason, name.upper())
    order = re.findall(r'\(([A-Z_]+), "([a-z_]+)"\)', src)
    assert [(getattr(reason, c), n) for c, n in order] == reason.REASONS
    assert reason.ALL == 0x1FFF


def test_surfaces_and_bounds_are_the_contracts():
    src = (ROOT / "contract" / "src" / "surface.rs").read_text()
    body = src[src.index("pub const ALL: [Surface; 8]"):]
    variants = re.findall(r"Surface::([A-Za-z]+),", body[: body.index("];")])
    snake = [re.sub(r"(?<!^)([A-Z])", r"_\1", v).lower() for v in variants]
    assert snake == surface.NAMES
    lib = (ROOT / "contract" / "src" / "lib.rs").read_text()
    assert f"MAX_NAME_BYTES: usize = {contract.MAX_NAME_BYTES};" in lib
    assert "candidates.saturating_mul(4).saturating_add(64)" in lib
    assert contract.max_debug_values(10) == 104


def test_market_codes_pack_like_the_contract():
    assert surface.market_code("se") == surface.market_code("SE") == 0x5345
    assert surface.market_code("S") is None and surface.market_code("S1") is None
    assert surface.market_code("ÉS") is None
