"""Sending one email through the configured SMTP server (``[email]``).

The standard library's smtplib, run in a worker thread: a link email (sign-up, email change)
is rare and off the metered path, so a thread per message costs nothing that matters and
needs no dependency. smtplib and the email package are imported at the first message: they
are ~2.4 MiB of a process's memory that a deployment sending no mail never uses.
Every failure becomes ``MailUnavailable`` (503) whose message names only the kind of failure:
SMTP replies often quote the recipient's address back, so they are never repeated.
"""
from __future__ import annotations

import logging
import ssl
from typing import TYPE_CHECKING

import anyio

from kraken.config.sections import EmailConfig
from kraken.errors import KrakenError

if TYPE_CHECKING:
    from email.message import EmailMessage

log = logging.getLogger("kraken.mail")


class MailUnavailable(KrakenError):
    """The SMTP server could not be reached or refused the message."""

    status = 503
    error_type = "service_unavailable"
    code = "email_unavailable"


def message(cfg: EmailConfig, to: str, subject: str, text: str) -> EmailMessage:
    """A plain-text message from the configured sender."""
    from email.message import EmailMessage
    from email.utils import formatdate, make_msgid

    msg = EmailMessage()
    msg["From"] = cfg.from_address
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = make_msgid(domain=cfg.from_address.rpartition("@")[2])
    msg.set_content(text)
    return msg


def _send_blocking(cfg: EmailConfig, msg: EmailMessage) -> None:
    import smtplib

    tls = ssl.create_default_context()
    if cfg.ssl:
        client: smtplib.SMTP = smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=cfg.timeout_s,
                                                context=tls)
    else:
        client = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout_s)
    with client:
        if cfg.starttls:
            client.starttls(context=tls)
        if cfg.username:
            client.login(cfg.username, cfg.password)
        client.send_message(msg)


_FAILURES = (OSError, ValueError)
"""What a send may raise: smtplib's SMTPException is an OSError."""


async def send(cfg: EmailConfig, to: str, subject: str, text: str) -> None:
    """Deliver one message to the SMTP server, or raise MailUnavailable."""
    msg = message(cfg, to, subject, text)
    try:
        await anyio.to_thread.run_sync(_send_blocking, cfg, msg)
    except _FAILURES as exc:
        _failed(cfg, "email", exc)
        raise MailUnavailable("The email could not be sent (the mail server is unavailable); "
                              "nothing was done, try again later") from None


async def notify(cfg: EmailConfig, to: str, subject: str, text: str, *, what: str) -> bool:
    """Deliver a notice of something already done, which its failure must not undo: False
    (and one warning line naming ``what``, never an address) if it could not be sent."""
    msg = message(cfg, to, subject, text)
    try:
        await anyio.to_thread.run_sync(_send_blocking, cfg, msg)
    except _FAILURES as exc:
        _failed(cfg, what, exc)
        return False
    return True


def _failed(cfg: EmailConfig, what: str, exc: BaseException) -> None:
    # The type only: an SMTP reply may quote the recipient's address.
    log.warning("%s not sent: SMTP %s:%d failed (%s)", what, cfg.host, cfg.port,
                type(exc).__name__)
