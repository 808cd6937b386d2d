"""Logging through the contract's ``log`` import (the only capability a
policy gets). The host keeps at most 32 lines per call, 1 KiB of message and
16 fields per line. Natively (pytest) lines go to ``oasis_sdk.log.captured``
(a list of ``(level, message, fields)``) and stderr."""

import sys

TRACE, DEBUG, INFO, WARN, ERROR = "trace", "debug", "info", "warn", "error"
_LEVELS = {TRACE: 0, DEBUG: 1, INFO: 2, WARN: 3, ERROR: 4}

#: Lines logged natively, for tests.
captured: list = []

_wit = None


def _bindings():
    global _wit
    if _wit is None:
        try:
            from wit_world.imports import log as wit_log  # only inside a component

            _wit = wit_log
        except ImportError:
            _wit = False
    return _wit


def event(level: str, message: str, **fields) -> None:
    """Logs ``message`` at ``level`` with structured ``fields`` (values str()-ed)."""
    wit = _bindings()
    pairs = [(k, str(v)) for k, v in fields.items()]
    if wit:
        wit.log(wit.Level(_LEVELS[level]), message, [wit.Field(k, v) for k, v in pairs])
    else:
        captured.append((level, message, dict(pairs)))
        print(f"[{level}] {message} {dict(pairs) if pairs else ''}", file=sys.stderr)


def trace(message: str, **fields) -> None:
    event(TRACE, message, **fields)


def debug(message: str, **fields) -> None:
    event(DEBUG, message, **fields)


def info(message: str, **fields) -> None:
    event(INFO, message, **fields)


def warn(message: str, **fields) -> None:
    event(WARN, message, **fields)


def error(message: str, **fields) -> None:
    event(ERROR, message, **fields)
