"""OpenTelemetry spans, when the ``otel`` extra (opentelemetry-api) is installed; else nothing.

A run has a span (``run PIPELINE``), each task attempt a child span (``task NAME``) and each commit
unit a child of its task's (``commit NAME``), all with the run id. The run's span context travels on
the bus in ``RunStarted.trace`` and ``TaskAssigned.trace`` (W3C ``traceparent``), so an agent in
another process parents its task spans under the run. Exporting is the application's choice: set up
an SDK ``TracerProvider`` (or run under ``opentelemetry-instrument``); without one, spans cost a
no-op call. Nothing imports opentelemetry until a run starts, and not at all when it is missing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

_tracer: Any = None  # None: not looked up yet; False: opentelemetry is not installed
_unset: Any = None  # opentelemetry's placeholder provider class (no SDK provider set up yet)


def tracer() -> Any:
    """Our tracer, or None: without opentelemetry, or while no provider is set up (then a span would
    be a no-op, and skipping it saves its context switching: ~7 us per task)."""
    global _tracer, _unset
    if _tracer is None:
        try:
            from opentelemetry import trace
        except ImportError:
            _tracer = False
        else:
            from opentelemetry.trace import ProxyTracerProvider

            from agent_etl import __version__

            _unset = ProxyTracerProvider
            _tracer = trace.get_tracer("agent_etl", __version__)
    if not _tracer:
        return None
    from opentelemetry import trace

    return None if isinstance(trace.get_tracer_provider(), _unset) else _tracer


@contextlib.contextmanager
def span(name: str, parent: dict[str, str] | None = None, **attributes: Any) -> Iterator[Any]:
    """A span, current inside the block; its parent is ``parent`` (a carried context) if given,
    else the current span. Yields None without opentelemetry."""
    t = tracer()
    if t is None:
        yield None
        return
    context = None
    if parent:
        from opentelemetry.propagate import extract

        context = extract(parent)
    attrs = {f"agent_etl.{k}": v for k, v in attributes.items() if v is not None}
    with t.start_as_current_span(name, context=context, attributes=attrs) as s:
        yield s


def carrier() -> dict[str, str] | None:
    """The current span's context as W3C headers, to carry on an event (None without a span)."""
    if tracer() is None:
        return None
    from opentelemetry.propagate import inject

    out: dict[str, str] = {}
    inject(out)
    return out or None


def annotate(s: Any, **attributes: Any) -> None:
    if s is not None:
        s.set_attributes({f"agent_etl.{k}": v for k, v in attributes.items() if v is not None})


def failed(s: Any, error_type: str, message: str) -> None:
    """Mark a span as failed, with the (redacted) message the run reports."""
    if s is None:
        return
    from opentelemetry.trace import Status, StatusCode

    s.set_attribute("agent_etl.error_type", error_type)
    s.set_status(Status(StatusCode.ERROR, message[:500]))
