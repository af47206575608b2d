"""Inbound transport: listeners and protocol objects (HTTP/1.1 now, HTTP/2 next)."""
