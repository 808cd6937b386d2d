"""A Python policy's source scored natively, for ``oasis run`` and ``oasis test``.

The inner loop of a Python author should not wait for componentize-py and a
component compile: ``oasis run DIR`` and ``oasis test DIR FIXTURES`` on a
policy package (a directory whose ``pyproject.toml`` names the policy in
``[tool.oasis] policy = "module:Class"``) start this module under CPython::

    python -m oasis_sdk.native policies-python/guarded_boost

It imports the policy from the directory, answers one line of JSON
(``{"ready": {"name": …, "version": …}}``) and then scores each job it reads
from stdin, one JSON object per line (``{"settings": {…} | null, "request":
{host JSON request}}``), exactly as ``oasis_sdk.testing.run`` does (settings
parsed and validated, only the declared feature columns sent, the output
checked by the host's rules). Each answer is one line: ``{"ok": decisions,
"cpu_ms": …}`` or ``{"error": {"kind": …, "message": …}}``. The host then
prints and compares the decisions with the same code it uses for the built
component, so a fixture means the same thing both ways; the component build
is only needed to ship (and ``oasis test`` on the ``.wasm`` stays the check
that the component agrees).
"""

import importlib
import json
import math
import sys
import time
import tomllib
from pathlib import Path

from .contract import Violation
from .errors import PolicyError
from .testing import request_from_json, run


def load_policy(directory):
    """The Policy class named by ``directory``'s ``[tool.oasis] policy``."""
    directory = Path(directory).resolve()
    project = directory / "pyproject.toml"
    try:
        spec = tomllib.loads(project.read_text())["tool"]["oasis"]["policy"]
    except FileNotFoundError:
        raise SystemExit(f"{project}: no pyproject.toml (a Python policy names itself in [tool.oasis])")
    except (KeyError, TypeError):
        raise SystemExit(f'{project}: no [tool.oasis] policy = "module:Class"')
    module, _, cls = spec.partition(":")
    if not module or not cls:
        raise SystemExit(f'{project}: [tool.oasis] policy must be "module:Class", got {spec!r}')
    sys.path.insert(0, str(directory))
    return getattr(importlib.import_module(module), cls)


def _finite(v):
    # The host refuses non-finite scores and propensities before this point
    # (``check_decisions``); debug values may be anything a float holds, and
    # JSON has no NaN: send them as null, as the host's JSON response does.
    return v if math.isfinite(v) else None


def _decisions(out) -> dict:
    return {
        "scores": list(out.scores),
        "eligible": [bool(e) for e in out.eligible],
        "reasons": [int(r) for r in out.reasons],
        "propensity": list(out.propensity),
        "debug": [
            {"candidate": d.candidate, "name": d.name, "value": _finite(d.value)} for d in out.debug
        ],
        "campaign_updates": [
            {
                "campaign": u.campaign,
                "pacing_integral": u.pacing_integral,
                "pacing_last_error": u.pacing_last_error,
            }
            for u in out.campaign_updates
        ],
    }


def answer(policy, job: dict) -> dict:
    """Scores one job; the answer the host reads."""
    started = time.process_time()
    try:
        out = run(policy, job.get("settings"), request_from_json(job["request"]))
    except PolicyError as e:
        return {"error": {"kind": e.kind, "message": e.message}}
    except Violation as e:
        return {"error": {"kind": "invalid-output", "message": str(e)}}
    except Exception as e:  # the policy's own bug: the component would trap
        return {"error": {"kind": "exception", "message": f"{type(e).__name__}: {e}"}}
    return {"ok": _decisions(out), "cpu_ms": (time.process_time() - started) * 1e3}


def main(argv) -> int:
    if len(argv) != 2:
        print("usage: python -m oasis_sdk.native POLICY_DIR", file=sys.stderr)
        return 2
    policy = load_policy(argv[1])
    out = sys.stdout
    out.write(json.dumps({"ready": {"name": policy.name, "version": policy.version}}) + "\n")
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        out.write(json.dumps(answer(policy, json.loads(line)), allow_nan=False) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
