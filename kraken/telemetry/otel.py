"""One OpenTelemetry SERVER span per finished request, exported over OTLP/HTTP.

Imported only when ``[otel]`` is configured (the SDK is an optional extra). The span is built
once, from the request's record when it is pushed (never per chunk), with the GenAI semantic
convention attributes Kraken already records: operation, provider, requested and dispatched
model, token counts, status, ttfb, cost, request id, error type. Never prompt or completion
text, keys or emails: every attribute comes from ``RequestRecord``, which holds none.

Export is the SDK's ``BatchSpanProcessor``: ``span.end()`` appends to a bounded deque and a
thread of its own posts batches; a full queue drops spans (counted in
``kraken_otel_spans_dropped_total``), the event loop never waits for the collector.
"""
from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.trace.status import Status, StatusCode

from kraken import metrics
from kraken.config.sections import OtelConfig, ProviderConfig
from kraken.store.record import RequestRecord
from kraken.telemetry.propagation import Propagation, TraceContext, incoming

__all__ = ["Tracing"]

OPERATIONS = {
    "chat_completions": "chat", "messages": "chat", "responses": "chat",
    "gemini_generate_content": "generate_content", "completions": "text_completion",
    "embeddings": "embeddings",
}
"""Route -> ``gen_ai.operation.name`` (semantic conventions); other routes keep their name."""

CLOSE_TIMEOUT_S = 2.0
"""At shutdown, queued spans are exported for at most this long: a collector that is down or
stuck must not hold Kraken's stop (the SDK alone waits up to 30 s, after the drain)."""

SYSTEMS = {"openai": "openai", "azure_openai": "azure.ai.openai", "anthropic": "anthropic",
           "gemini": "gcp.gemini", "vertex": "gcp.vertex_ai", "cohere": "cohere",
           "perplexity": "perplexity"}
"""Provider kind -> ``gen_ai.provider.name`` where the conventions name it; else the kind."""


class _PresetIds(IdGenerator):
    """Hands the SDK the ids drawn when the request arrived (they were already sent upstream
    in ``traceparent``). Only the event loop thread starts spans, so two fields suffice."""

    def __init__(self) -> None:
        self.trace_id = 0
        self.span_id = 0

    def generate_span_id(self) -> int:
        return self.span_id

    def generate_trace_id(self) -> int:
        return self.trace_id


class _CountingProcessor(BatchSpanProcessor):
    """The SDK's batch processor, counting the spans its full queue drops."""

    def on_end(self, span: ReadableSpan) -> None:
        inner = getattr(self, "_batch_processor", None)
        queue = getattr(inner, "_queue", None)
        if queue is not None and len(queue) >= inner._max_queue_size:
            metrics.OTEL_SPANS_DROPPED.inc()
        super().on_end(span)


class Tracing:
    """Trace context for each request, and its span once the record exists."""

    def __init__(self, cfg: OtelConfig, providers: tuple[ProviderConfig, ...]):
        self.propagation = Propagation(cfg.propagate_to)
        self._bound = round(cfg.sample_ratio * (1 << 64))
        self._servers = {p.name: _server(p) for p in providers}
        self._ids = _PresetIds()
        # The SDK warns once per dropped span; the metric counts them instead of a log flood.
        logging.getLogger("opentelemetry.sdk._shared_internal").setLevel(logging.ERROR)
        exporter = OTLPSpanExporter(endpoint=cfg.endpoint.rstrip("/") + "/v1/traces",
                                    headers=dict(cfg.headers) or None)
        self._processor = _CountingProcessor(
            exporter, max_queue_size=cfg.max_queue, schedule_delay_millis=cfg.schedule_delay_ms,
            max_export_batch_size=min(512, cfg.max_queue))
        # Sampling is decided when the request arrives (``incoming``): only sampled spans are
        # built, so the SDK keeps every span it is given.
        self._provider = TracerProvider(
            resource=Resource.create({"service.name": cfg.service_name}),
            sampler=ALWAYS_ON, id_generator=self._ids)
        self._provider.add_span_processor(self._processor)
        self._tracer = self._provider.get_tracer("kraken")

    def begin(self, traceparent: bytes | None, tracestate: bytes | None) -> TraceContext:
        """The request's trace context (continues the client's trace when it sent one)."""
        return incoming(traceparent, tracestate, self._bound)

    def finish(self, ctx: TraceContext, route: str, provider_kind: str, rec: RequestRecord) -> None:
        """Build and end the request's span from its record (queued for export, not sent)."""
        if not ctx.sampled:
            return
        operation = OPERATIONS.get(route, route)
        parent = None
        if ctx.parent_span_id is not None:
            remote = SpanContext(ctx.trace_id, ctx.parent_span_id, is_remote=True,
                                 trace_flags=TraceFlags(TraceFlags.SAMPLED),
                                 trace_state=_state(ctx.tracestate))
            parent = trace.set_span_in_context(NonRecordingSpan(remote))
        start_ns = int(rec.ts * 1e9)
        self._ids.trace_id, self._ids.span_id = ctx.trace_id, ctx.span_id
        span = self._tracer.start_span(
            f"{operation} {rec.model_requested}" if rec.model_requested else operation,
            context=parent, kind=SpanKind.SERVER, start_time=start_ns,
            attributes=self._attributes(operation, route, provider_kind, rec))
        if rec.error_type is not None:
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=start_ns + int(rec.latency_ms * 1e6))

    def _attributes(self, operation: str, route: str, provider_kind: str,
                    rec: RequestRecord) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "kraken.route": route,
            "kraken.request_id": rec.request_id,
            "http.response.status_code": rec.status,
        }
        if provider_kind:
            system = SYSTEMS.get(provider_kind, provider_kind)
            attrs["gen_ai.system"] = attrs["gen_ai.provider.name"] = system
        optional = (
            ("gen_ai.request.model", rec.model_requested),
            ("gen_ai.response.model", rec.model_dispatched),
            ("gen_ai.usage.input_tokens", rec.prompt_tokens),
            ("gen_ai.usage.output_tokens", rec.completion_tokens),
            ("kraken.provider", rec.provider),
            ("kraken.ttfb_ms", rec.ttfb_ms),
            ("kraken.cost_usd", rec.cost_usd),
            ("error.type", rec.error_type),
        )
        attrs.update((k, v) for k, v in optional if v is not None)
        server = self._servers.get(rec.provider or "")
        if server is not None:
            attrs["server.address"], attrs["server.port"] = server
        return attrs

    def close(self) -> None:
        """Export what is queued for at most ``CLOSE_TIMEOUT_S`` and stop the export thread
        (blocking: run it in a thread)."""
        inner = getattr(self._processor, "_batch_processor", None)  # its shutdown() has no bound
        if inner is not None:
            inner.shutdown(timeout_millis=CLOSE_TIMEOUT_S * 1000)
        self._provider.shutdown()


def _server(provider: ProviderConfig) -> tuple[str, int]:
    parts = urlsplit(provider.base_url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def _state(raw: bytes | None) -> TraceState:
    if not raw:
        return TraceState()
    return TraceState.from_header([raw.decode("ascii")])
