"""trimtab: real-time micro-adjustments of web content, with every adjustment measured.

The public face for embedding the engine in a Python program (see ``docs/embedding.md``)::

    from trimtab import FeatureProcessor, Engine, parse_config

* config: :func:`load_config`, :func:`parse_config`, :class:`SiteConfig`, :class:`ConfigError`;
* events: :func:`decode_batch` and the event types (:class:`PageView`, :class:`Scroll`, …);
* features: :class:`FeatureProcessor`, :class:`FeatureSpec`;
* decisions: :class:`Engine`, :class:`Decision`;
* the whole embedded pipeline (event log, state, decision log in a data directory):
  :class:`Runtime`.

Names are imported on first use, so ``import trimtab`` stays cheap (the command line starts
from here too).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "ConfigError": "trimtab.validation",
    "SiteConfig": "trimtab.config",
    "load_config": "trimtab.config",
    "parse_config": "trimtab.config",
    "AnyEvent": "trimtab.events",
    "BatchError": "trimtab.events",
    "Click": "trimtab.events",
    "Consent": "trimtab.events",
    "Context": "trimtab.events",
    "Custom": "trimtab.events",
    "Exposure": "trimtab.events",
    "Hover": "trimtab.events",
    "PageView": "trimtab.events",
    "Scroll": "trimtab.events",
    "Visible": "trimtab.events",
    "decode_batch": "trimtab.events",
    "FeatureProcessor": "trimtab.features",
    "FeatureSpec": "trimtab.features",
    "Decision": "trimtab.decide",
    "Engine": "trimtab.decide",
    "Runtime": "trimtab.runtime",
    "StorageError": "trimtab.store.sqlite",
}

__all__ = [
    "AnyEvent",
    "BatchError",
    "Click",
    "ConfigError",
    "Consent",
    "Context",
    "Custom",
    "Decision",
    "Engine",
    "Exposure",
    "FeatureProcessor",
    "FeatureSpec",
    "Hover",
    "PageView",
    "Runtime",
    "Scroll",
    "SiteConfig",
    "StorageError",
    "Visible",
    "__version__",
    "decode_batch",
    "load_config",
    "parse_config",
]

if TYPE_CHECKING:
    from trimtab.config import SiteConfig, load_config, parse_config
    from trimtab.decide import Decision, Engine
    from trimtab.events import (
        AnyEvent,
        BatchError,
        Click,
        Consent,
        Context,
        Custom,
        Exposure,
        Hover,
        PageView,
        Scroll,
        Visible,
        decode_batch,
    )
    from trimtab.features import FeatureProcessor, FeatureSpec
    from trimtab.runtime import Runtime
    from trimtab.store.sqlite import StorageError
    from trimtab.validation import ConfigError


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'trimtab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
