"""The ``Policy`` base class an author subclasses, and typed settings.

A policy is a class with metadata as class attributes, a ``Settings``
dataclass whose defaults are the documented defaults, an optional
``validate`` and ``score``::

    @dataclass
    class Settings:
        boost: float = 0.1

    class FixedBoost(Policy):
        name = "fixed-boost"
        version = "1.0.0"
        description = "..."
        requires = ["p_skip"]
        settings_doc = {"boost": "added to eligible tracks, in [0, 1]"}
        Settings = Settings

        def validate(self, s):
            if not 0 <= s.boost <= 1:
                return f"boost must be in [0, 1], got {s.boost}"

        def score(self, s, req):
            out = Decisions.passthrough(req)
            ...
            return out

The host calls ``score`` on a fresh instance for every request: keep no
state between calls.
"""

import dataclasses
import json
import typing

from .errors import InvalidSettings

SDK_VERSION = "0.2.0"


@dataclasses.dataclass
class NoSettings:
    """Settings of a policy that takes none."""


@dataclasses.dataclass
class SettingInfo:
    name: str
    description: str
    default_json: str


@dataclasses.dataclass
class Metadata:
    name: str
    version: str
    description: str
    required_features: list
    optional_features: list
    context_features: list
    settings: list
    sdk_version: str = SDK_VERSION


class Policy:
    """Subclass it; see the module documentation."""

    #: Policy name (a key: letters, digits, ``-``, ``_``).
    name: str = ""
    #: Semantic version of the policy.
    version: str = "0.1.0"
    #: One paragraph for operators.
    description: str = ""
    #: Candidate features the policy needs; the host sends these columns.
    requires: list = []
    #: Candidate features the policy uses when present.
    optional: list = []
    #: Context features the policy reads.
    context: list = []
    #: Settings dataclass: every field with a default.
    Settings: type = NoSettings
    #: Setting name -> what it does, with its unit and valid range.
    settings_doc: dict = {}

    def validate(self, settings) -> str | None:
        """Checks settings beyond their types; return (or raise ValueError
        with) a message to refuse the load."""
        return None

    def score(self, settings, req):
        raise NotImplementedError


def metadata(policy: Policy) -> Metadata:
    """The policy's metadata, setting defaults taken from its ``Settings``."""
    defaults = dataclasses.asdict(policy.Settings())
    settings = [
        SettingInfo(name, policy.settings_doc.get(name, ""), json.dumps(value))
        for name, value in defaults.items()
    ]
    for name, doc in policy.settings_doc.items():
        if name not in defaults:
            settings.append(SettingInfo(name, doc, ""))
    return Metadata(
        name=policy.name,
        version=policy.version,
        description=policy.description,
        required_features=list(policy.requires),
        optional_features=list(policy.optional),
        context_features=list(policy.context),
        settings=settings,
    )


def _type_error(name: str, hint, value) -> str | None:
    origin = typing.get_origin(hint) or hint
    if hint is float or hint == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else f"`{name}`: expected a number, got {json.dumps(value)}"
    if hint is int or hint == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else f"`{name}`: expected an integer, got {json.dumps(value)}"
    if hint is bool or hint == "bool":
        return None if isinstance(value, bool) else f"`{name}`: expected true or false, got {json.dumps(value)}"
    if hint is str or hint == "str":
        return None if isinstance(value, str) else f"`{name}`: expected a string, got {json.dumps(value)}"
    if origin is list:
        return None if isinstance(value, list) else f"`{name}`: expected a list, got {json.dumps(value)}"
    if origin is dict:
        return None if isinstance(value, dict) else f"`{name}`: expected an object, got {json.dumps(value)}"
    return None


_SCHEMAS: dict = {}


def settings_schema(cls) -> tuple:
    """(field names, type hints) of a settings dataclass, computed once per
    class. The component adapter computes it at build time, so it is part of
    the pre-initialized snapshot rather than of every call."""
    schema = _SCHEMAS.get(cls)
    if schema is None:
        fields = [f.name for f in dataclasses.fields(cls)]
        try:
            hints = typing.get_type_hints(cls)
        except Exception:
            hints = {f.name: f.type for f in dataclasses.fields(cls)}
        schema = _SCHEMAS[cls] = (fields, hints)
    return schema


def parse_settings(policy: Policy, settings_json: str):
    """Parses and validates settings JSON for ``policy`` (an empty string
    means defaults): unknown fields and wrong types are refused, missing
    fields take their defaults, then ``policy.validate`` runs.

    Raises ``InvalidSettings`` with the message."""
    cls = policy.Settings
    if settings_json.strip() == "":
        values = {}
    else:
        try:
            values = json.loads(settings_json)
        except ValueError as e:
            raise InvalidSettings(f"settings are not JSON: {e}") from None
        if not isinstance(values, dict):
            raise InvalidSettings("settings must be a JSON object")
    fields, hints = settings_schema(cls)
    unknown = [k for k in values if k not in fields]
    if unknown:
        expected = ", ".join(f"`{n}`" for n in fields) or "none"
        raise InvalidSettings(f"unknown field `{unknown[0]}`, expected one of {expected}")
    for k, v in values.items():
        err = _type_error(k, hints.get(k), v)
        if err:
            raise InvalidSettings(err)
    try:
        settings = cls(**values)
    except TypeError as e:
        raise InvalidSettings(str(e)) from None
    try:
        problem = policy.validate(settings)
    except ValueError as e:
        problem = str(e)
    if problem:
        raise InvalidSettings(problem)
    return settings
