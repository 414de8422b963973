"""Optional OpenTelemetry spans for flag evaluations (``pip install trimtab[otel]``).

Each evaluation through OpenFeature (the OFREP server, the native provider) or GrowthBook
remote evaluation is a span named ``feature_flag.evaluation`` carrying the semantic
conventions' attributes: ``feature_flag.key``, ``feature_flag.provider.name`` (``trimtab``),
``feature_flag.set.id`` (the site id), ``feature_flag.version`` (a digest of the slots),
``feature_flag.result.variant``, ``feature_flag.result.reason`` (``static``,
``targeting_match``, ``split``, ``default``) and, on failure, ``error.type`` (the OpenFeature
error code in lower case) and ``feature_flag.error.message``. ``feature_flag.context.id`` is
never set and values are not recorded: visitor ids and content stay out of telemetry.

Without the ``opentelemetry-api`` package nothing is recorded and nothing is imported; with it,
spans go to whatever tracer provider the application configured (none: the API's no-op).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

try:
    from opentelemetry import trace
except ImportError:  # the otel extra is not installed
    trace = None  # type: ignore[assignment]  # None: the extra is absent (every use checks)

SPAN_NAME = "feature_flag.evaluation"
PROVIDER = "trimtab"


class Recorder:
    """What one evaluation tells its span (a no-op when OpenTelemetry is absent)."""

    def __init__(self, span: Any) -> None:
        self.span = span

    def result(self, variant: str, reason: str) -> None:
        if self.span is not None:
            self.span.set_attribute("feature_flag.result.variant", variant)
            self.span.set_attribute("feature_flag.result.reason", reason.lower())

    def error(self, code: str, message: str) -> None:
        if self.span is not None:
            self.span.set_attribute("error.type", code.lower())
            self.span.set_attribute("feature_flag.error.message", message)
            self.span.set_attribute("feature_flag.result.reason", "error")
            self.span.set_status(trace.Status(trace.StatusCode.ERROR, message))


@contextlib.contextmanager
def evaluation(key: str, set_id: str, version: str) -> Iterator[Recorder]:
    """A ``feature_flag.evaluation`` span around one flag's evaluation."""
    if trace is None:
        yield Recorder(None)
        return
    tracer = trace.get_tracer("trimtab")
    attributes = {
        "feature_flag.key": key,
        "feature_flag.provider.name": PROVIDER,
        "feature_flag.set.id": set_id,
        "feature_flag.version": version,
    }
    with tracer.start_as_current_span(
        SPAN_NAME, kind=trace.SpanKind.INTERNAL, attributes=attributes
    ) as span:
        yield Recorder(span)
