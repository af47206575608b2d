"""Client side: per-origin connection pools to providers (HTTP/1.1 keep-alive on h11)."""
