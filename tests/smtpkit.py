"""A real local SMTP server (aiosmtpd) that keeps what it receives, for the tests of the
emails Kraken sends (sign-up links, email change links).

    from smtpkit import Sink, smtp, smtp_server  # smtp: a module-scoped fixture
"""
from __future__ import annotations

import contextlib
import email
import email.policy
import threading
from typing import Iterator

import pytest
from aiosmtpd.controller import Controller

from harness import free_port, wait_for


class Sink:
    """aiosmtpd's handler: every message it accepts, parsed, in arrival order."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self._lock:
            self.messages.append(msg)
        return "250 OK"

    def to(self, address: str) -> list[email.message.EmailMessage]:
        with self._lock:
            return [m for m in self.messages if m["To"] == address]

    async def next_for(self, address: str, seen: int = 0) -> email.message.EmailMessage:
        """The (seen+1)-th message to ``address``, waiting (bounded) for it to arrive."""
        return (await wait_for(lambda: len(self.to(address)) > seen and self.to(address)))[seen]


@contextlib.contextmanager
def smtp_server() -> Iterator[tuple[int, Sink]]:
    """(port, sink) of a server on loopback, stopped on exit."""
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller.port, sink
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def smtp():
    """(port, sink) of one server for a test module."""
    with smtp_server() as (port, sink):
        yield port, sink
