"""One bounded load run: bench/loadgen.py in its own process (so its CPU never counts against
a target), with the request every bench script sends by default. Used by ``run.py`` and its
scenarios, and through ``run``'s names by the other bench scripts."""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
DEMO_KEY = "kr_test_demo_krakendemokeyfordocs0000"
AUTH = f"Authorization: Bearer {DEMO_KEY}"
PATH = "/v1/chat/completions"
BODY = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}


def run_load(url: str, stream: bool, concurrency: int, requests: int, max_seconds: float,
             warmup: int = 0, body: dict | None = None, timeline: bool = False) -> dict:
    """bench/loadgen.py in its own process; returns its JSON summary."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", encoding="utf-8") as body_file:
        json.dump(body or BODY, body_file)  # a file: a long conversation exceeds one argument
        body_file.flush()
        cmd = [sys.executable, str(BENCH / "loadgen.py"), "--url", url, "--concurrency",
               str(concurrency), "--requests", str(requests), "--max-seconds", str(max_seconds),
               "--warmup", str(warmup), "--header", AUTH, "--body", "@" + body_file.name,
               "--json", "-"]
        if stream:
            cmd.append("--stream")
        if timeline:
            cmd.append("--timeline")
        try:
            out = subprocess.run(cmd, capture_output=True, timeout=2 * max_seconds + 30, cwd=BENCH)
        except subprocess.TimeoutExpired:
            return {"completed": 0, "errors": 1, "error": "loadgen timed out"}
    try:
        return json.loads(out.stdout.decode().strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"completed": 0, "errors": 1, "error": out.stderr.decode()[-500:]}
