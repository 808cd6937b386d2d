"""oasis_sdk: write Oasis promotion-scoring policies in Python.

The Python twin of the Rust guest SDK (``guest-sdk/``): subclass ``Policy``,
score a ``Request`` view of the columnar candidates into ``Decisions``, test
natively with ``oasis_sdk.testing``, build a component with
``scripts/build-python-policy``. See docs/python.md.
"""

from . import blocks, log, reason, surface
from .decisions import CampaignUpdate, DebugValue, Decisions
from .errors import Internal, InvalidRequest, InvalidSettings, PolicyError
from .policy import SDK_VERSION, Metadata, NoSettings, Policy, metadata, parse_settings
from .request import Eligibility, Request, delivery_error, ineligibility, pacing_dt_ms
from .rng import Rng
from .surface import market_code

__all__ = [
    "CampaignUpdate", "DebugValue", "Decisions", "Eligibility", "Internal", "InvalidRequest", "InvalidSettings",
    "Metadata", "NoSettings", "Policy", "PolicyError", "Request", "Rng", "SDK_VERSION",
    "blocks", "delivery_error", "ineligibility", "log", "market_code", "metadata",
    "pacing_dt_ms", "parse_settings", "reason", "surface",
]
