"""The process log's guard (kraken/logs.py ``setup_process_logging``) in a real interpreter:
libraries cannot log below WARNING whatever ``[logging] level`` says, an unknown library not
below INFO, asyncio's debug mode prints no callback argument, and in ``text`` format every
record stays on one line whatever the message or the exception holds."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

SECRET = "Bearer kr_live_k1_SECRETSECRETSECRET0123456789"
STAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+ ")


def run(body: str, *, fmt: str = "json", env: dict[str, str] | None = None) -> str:
    """``body`` run after ``setup_process_logging`` at DEBUG in a fresh interpreter; its stderr."""
    code = textwrap.dedent(f"""
        import logging
        from kraken.config import LoggingConfig
        from kraken.logs import setup_process_logging
        setup_process_logging(LoggingConfig(level="DEBUG", format={fmt!r}))
        SECRET = {SECRET!r}
    """) + textwrap.dedent(body)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr
    return done.stderr


LIBRARIES = ["hpack", "hpack.hpack", "h2", "h2.connection", "hyperframe", "h11", "asyncio",
             "aiosqlite", "redis", "redis.asyncio.connection", "anyio", "uvloop", "orjson",
             "cryptography", "bcrypt", "prometheus_client", "prometheus_async", "urllib3",
             "trustme", "concurrent.futures"]


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_libraries_say_nothing_below_warning_at_debug(fmt):
    err = run(f"""
        for name in {LIBRARIES!r}:
            logging.getLogger(name).debug("header %s", SECRET)
            logging.getLogger(name).info("header %s", SECRET)
        logging.getLogger("kraken.test").debug("kraken's own debug line")
    """, fmt=fmt)
    assert SECRET not in err
    assert "kraken's own debug line" in err  # DEBUG still holds for Kraken itself


def test_an_unlisted_library_is_held_at_info_even_if_it_lowers_its_own_level():
    err = run("""
        for name in ("brand_new_lib", "hpack"):
            logging.getLogger(name).setLevel(logging.DEBUG)  # at runtime, after the caps
            logging.getLogger(name).debug("header %s", SECRET)
        logging.getLogger("brand_new_lib").info("started")
    """)
    assert SECRET not in err
    assert '"logger":"brand_new_lib","msg":"started"' in err


def test_library_warnings_and_tracebacks_never_quote_a_value():
    err = run("""
        logging.getLogger("redis").warning("command %r failed", ("AUTH", SECRET))
        try:
            raise ValueError(f"bad header value {SECRET.encode()!r}")
        except ValueError:
            logging.getLogger("h2").exception("stream failed: %s", SECRET.encode())
        logging.getLogger("h2").error("unformattable %s %s", SECRET)
    """)
    assert SECRET not in err and "SECRETSECRET" not in err
    assert "command ('***', '***') failed" in err and "stream failed: b'***'" in err
    assert "builtins.ValueError (message withheld)" in err and 'File \\"<string>\\"' in err
    assert "unformattable message" in err


def test_opentelemetry_trace_warnings_are_held_back():
    """The trace API warns quoting a client's tracestate; a quote inside the value would end
    the blanked literal that starts at "doesn't", so the cap, not the blanking, keeps it out."""
    err = run("""
        logging.getLogger("opentelemetry.trace.span").warning(
            "Member doesn't match the w3c identifiers format %s", "x'" + SECRET)
        logging.getLogger("opentelemetry.trace.span").error("held at error and above")
    """)
    assert SECRET not in err and "SECRETSECRET" not in err
    assert "held at error and above" in err


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_asyncio_debug_mode_prints_no_callback_argument(loop):
    """PYTHONASYNCIODEBUG: slow callbacks are reported with their arguments' repr (stock
    loop), exceptions in callbacks with theirs: the report stays, the values go."""
    err = run(f"""
        import asyncio, time

        def slow(data):
            time.sleep(0.02)

        def broken(data):
            raise RuntimeError(data.decode())

        async def main():
            loop = asyncio.get_running_loop()
            assert loop.get_debug()
            loop.slow_callback_duration = 0.001
            loop.call_soon(slow, b"authorization: " + SECRET.encode())
            loop.call_soon(broken, b"x-api-key: " + SECRET.encode())
            await asyncio.sleep(0.05)

        if {loop!r} == "uvloop":
            import uvloop
            uvloop.run(main())
        else:
            asyncio.run(main())
    """, env={"PYTHONASYNCIODEBUG": "1"})
    assert SECRET not in err and "SECRETSECRET" not in err
    assert "Executing" in err and "took" in err  # the slow callback is still reported
    assert "Exception in callback" in err and "RuntimeError" in err


def test_text_format_keeps_every_record_on_one_line():
    err = run("""
        log = logging.getLogger("kraken.test")
        forged = "2026-01-01 00:00:00,000 ERROR kraken forged line"
        log.warning("model %s not found", "x\\n" + forged + "\\r\\u2028\\x1b[2K")
        try:
            raise KeyError("x\\n" + forged)
        except KeyError:
            log.exception("request failed")
        logging.getLogger("asyncio").error("in callback\\n%s", forged)
    """, fmt="text")
    lines = err.splitlines()
    assert len(lines) == 3 and all(STAMP.match(line) for line in lines), err
    forged = "2026-01-01 00:00:00,000 ERROR kraken forged line"
    assert f"model x\\n{forged}\\r\\u2028\\x1b[2K not found" in lines[0]
    assert "request failed\\nTraceback (most recent call last):" in lines[1]


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_krakens_own_exception_lines_keep_the_message_but_quote_no_value(fmt):
    """A bug that fails on client text (``int("...")``, a ``KeyError`` of a client's key)
    logs its type and message shape for the operator, never the value it quoted."""
    err = run("""
        log = logging.getLogger("kraken.gateway")
        try:
            int("ClientText-" + SECRET)
        except ValueError:
            log.exception("request handler failed")
        try:
            {}[SECRET]
        except KeyError:
            log.error("lookup failed", exc_info=True)
    """, fmt=fmt)
    assert SECRET not in err and "ClientText" not in err
    assert "invalid literal for int() with base 10" in err and "KeyError" in err
    assert "request handler failed" in err and "lookup failed" in err
