"""An OpenFeature provider for trimtab's slots, in-process (`pip install trimtab[openfeature]`).

>>> from openfeature import api
>>> from openfeature.evaluation_context import EvaluationContext
>>> from trimtab.config import parse_config
>>> config = parse_config({"slots": {"dark": {"default": "off", "variants": {
...     "off": {"value": False}, "on": {"value": True}},
...     "rules": [{"condition": {"plan": "pro"}, "force": "on"}]}}})
>>> api.set_provider(TrimtabProvider(config), domain="doctest")
>>> client = api.get_client(domain="doctest")
>>> client.get_boolean_value("dark", False, EvaluationContext("u1", {"plan": "pro"}))
True
>>> client.get_string_details("dark", "?", EvaluationContext("u1")).error_code
<ErrorCode.TYPE_MISMATCH: 'TYPE_MISMATCH'>

The provider takes a config, a config file, a :class:`trimtab.runtime.Runtime` (it then follows
the runtime's reloads) or a function returning the current config. Flags, values, variants and
reasons are those of :mod:`trimtab.flags`: the evaluation context's ``targeting_key`` is the
``id`` attribute and its attributes are trimtab attributes of the same names. Each resolver
checks the value's type: a string flag asked for as a boolean is a ``TYPE_MISMATCH`` error (the
client then returns the caller's default); integers are accepted where a float is asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from trimtab.config import SiteConfig, load_config
from trimtab.extras import missing

try:
    from openfeature.evaluation_context import EvaluationContext
    from openfeature.exception import (
        FlagNotFoundError,
        GeneralError,
        InvalidContextError,
        TargetingKeyMissingError,
        TypeMismatchError,
    )
    from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType, Reason
    from openfeature.provider import AbstractProvider, Metadata
except ModuleNotFoundError as exc:
    raise missing(exc, "openfeature", "the OpenFeature provider") from None

from trimtab.flags import (
    FLAG_NOT_FOUND,
    INVALID_CONTEXT,
    TARGETING_KEY_MISSING,
    FlagError,
    LiveFlags,
)

_ERRORS = {
    FLAG_NOT_FOUND: FlagNotFoundError,
    TARGETING_KEY_MISSING: TargetingKeyMissingError,
    INVALID_CONTEXT: InvalidContextError,
}


class _Reloading(Protocol):
    """What the provider reads from a runtime: its current config, which a reload replaces."""

    @property
    def config(self) -> SiteConfig: ...


ConfigSource = SiteConfig | str | Path | Callable[[], SiteConfig] | _Reloading


def _source(source: ConfigSource) -> Callable[[], SiteConfig]:
    if isinstance(source, SiteConfig):
        return lambda: source
    if isinstance(source, str | Path):
        config = load_config(source)
        return lambda: config
    if callable(source):
        return source
    if hasattr(source, "config"):  # a Runtime: follow its reloads
        return lambda: source.config
    raise TypeError("TrimtabProvider takes a SiteConfig, a config path, a Runtime or a callable")


class TrimtabProvider(AbstractProvider):
    """trimtab's slots as OpenFeature flags (see the module docstring)."""

    def __init__(self, source: ConfigSource) -> None:
        self._flags = LiveFlags(_source(source))

    def get_metadata(self) -> Metadata:
        return Metadata(name="trimtab")

    def _resolve(
        self, key: str, context: EvaluationContext | None, check: Callable[[Any], Any], kind: str
    ) -> FlagResolutionDetails[Any]:
        attrs: dict[str, Any] = {}
        if context is not None:
            attrs = {str(k): v for k, v in context.attributes.items()}
            if context.targeting_key:
                attrs["id"] = context.targeting_key
        try:
            result = self._flags.get().evaluate(key, attrs)
        except FlagError as exc:
            raise _ERRORS.get(exc.code, GeneralError)(exc.details) from None
        try:
            value = check(result.value)
        except TypeError:
            raise TypeMismatchError(
                f"{key!r} is {type(result.value).__name__} {result.value!r}, not {kind}"
            ) from None
        return FlagResolutionDetails(
            value=value,
            reason=Reason(result.reason),
            variant=result.variant,
            flag_metadata=result.metadata,
        )

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        return self._resolve(flag_key, evaluation_context, _boolean, "a boolean")

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        return self._resolve(flag_key, evaluation_context, _string, "a string")

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        return self._resolve(flag_key, evaluation_context, _integer, "an integer")

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        return self._resolve(flag_key, evaluation_context, _float, "a number")

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        return self._resolve(flag_key, evaluation_context, _object, "an object or a list")


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise TypeError


def _string(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise TypeError


def _integer(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise TypeError


def _float(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise TypeError


def _object(value: Any) -> Any:
    if isinstance(value, dict | list):
        return value
    raise TypeError
