"""Tracing: W3C trace context in and out (``propagation``), and the OpenTelemetry span of each
finished request (``otel``, imported only when ``[otel]`` is configured)."""
