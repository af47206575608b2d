"""Decisions the gateway engine asks for: who the caller is (auth), whether it may go on (limits),
where it goes (routing, health, breaker) and what kind of task it is (classify)."""
