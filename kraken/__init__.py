"""Kraken: a self-hosted, low-latency LLM API gateway."""

__version__ = "0.1.0"
