"""The request lifecycle as phases: authenticate, limit, parse, route, dispatch, relay, record."""
