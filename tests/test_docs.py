"""Documented commands run from the repository root of a fresh checkout: no doc or operator
script names a path that exists only on the machine it was written on."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MACHINE_PATH = re.compile(r"/(?:work|home|root)/")
CHECKED_DIRS = ("bench/", "tools/", "systemd/", "certbot/")


def tracked_files() -> list[str]:
    """Tracked files (git), or every file outside .git and virtualenvs without a checkout."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True, timeout=30).stdout
        return [name for name in out.decode().split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        return [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(ROOT).parts)]


def test_docs_and_operator_scripts_name_no_machine_paths():
    names = [n for n in tracked_files() if n.endswith(".md") or n.startswith(CHECKED_DIRS)]
    assert "README.md" in names and "bench/README.md" in names and "bench/slowhttp.sh" in names
    hits = []
    for name in names:
        path = ROOT / name
        if not path.is_file():
            continue  # deleted in the work tree
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if MACHINE_PATH.search(line):
                hits.append(f"{name}:{number}: {line.strip()}")
    assert not hits, "paths of one machine in docs/scripts:\n" + "\n".join(hits)


def test_readme_python_example_says_how_to_install_the_openai_package():
    readme = (ROOT / "README.md").read_text()
    example = readme.index("import openai")
    assert ".venv/bin/pip install openai" in readme[:example]


# ---- the README names every route Kraken serves and every provider kind ----------------------

_METHODS = r"(?:GET|POST|PUT|PATCH|DELETE)"
_METHOD_LIST = re.compile(rf"({_METHODS}(?:(?:/|\||\\\|){_METHODS})*) (/[^\s`?\[]*)")
"""``GET/PATCH /admin/customers/{id}``, ``PUT|DELETE /...``: (methods, path) as the README
writes a route."""


def _template(pattern: str) -> str:
    """A route regex back to its ``{name}`` template (admin and account API tables)."""
    return re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern)


def _documented_routes(readme: str) -> set[tuple[str, str]]:
    """Every (method, path) the README writes as ``METHOD[/METHOD...] /path``."""
    found = set()
    for methods, path in _METHOD_LIST.findall(readme):
        for method in re.split(r"\\?\||/", methods):
            found.add((method, path))
    return found


def _mentions(readme: str, path: str) -> bool:
    """``path`` appears as a whole path (not only as the start of a longer one)."""
    return re.search(re.escape(path) + r"(?![\w/{-])", readme) is not None


def _is_asset(path: str) -> bool:
    """A page's script or style file (``/usage/app.js``): the page itself is what is listed."""
    return "." in path.rsplit("/", 1)[-1]


async def _registered_routes(tmp: Path) -> tuple[list[str], list[tuple[str, str]], list[str]]:
    """What a Kraken with every optional route on registers at startup, read from its live
    tables: (client listener paths, ``/prefix/*`` as ``/prefix/``; (method, path) of the admin
    API and the account API; the admin listener's public paths)."""
    import gc

    from adminkit import admin_doc
    from harness import free_port, running_kraken
    from kraken.admin.server import AdminApp
    from kraken.gateway.endpoints.account import AccountApi, routes
    from kraken.gateway.pipeline import Gateway

    def live(kind: type) -> list:
        gc.unfreeze()  # the app freezes what start-up built (app.py): make it visible again
        return [o for o in gc.get_objects() if isinstance(o, kind)]

    before = {id(o) for o in live(Gateway) + live(AdminApp) + live(AccountApi)}
    doc = admin_doc(tmp, free_port(), free_port(),
                    stripe={"webhook_secret": "whsec_" + "w" * 24},
                    email={"signup": True, "host": "127.0.0.1", "port": free_port(),
                           "starttls": False, "from_address": "kraken@example.com",
                           "base_url": "https://kraken.example.com"})
    async with running_kraken(doc):
        gateway, = [o for o in live(Gateway) if id(o) not in before]
        admin, = [o for o in live(AdminApp) if id(o) not in before]
        account, = [o for o in live(AccountApi) if id(o) not in before]
        client = [*gateway.paths.exact, *(prefix for prefix, _ in gateway.paths._prefixes)]
        routed = [(r.method, _template(r.pattern.pattern)) for r in admin._routes]
        routed += [(method, _template(pattern.pattern))
                   for method, pattern, _, _ in [*routes(), *account.extra]]
        return client, routed, list(admin._public)


@pytest.mark.anyio
async def test_readme_lists_every_route_kraken_serves(tmp_path):
    readme = (ROOT / "README.md").read_text()
    client, routed, public = await _registered_routes(tmp_path)
    assert "/v1/chat/completions" in client and ("GET", "/admin/usage") in routed
    documented = _documented_routes(readme)
    missing = [p for p in client if not p.endswith("/") and not _mentions(readme, p)]
    missing += [p + "…" for p in client if p.endswith("/")
                and re.search(re.escape(p) + r"[^\s`]", readme) is None]
    missing += [f"{m} {p}" for m, p in routed if (m, p) not in documented]
    missing += [p for p in public if not _is_asset(p) and not _mentions(readme, p)]
    assert not missing, "routes served but not in README.md:\n" + "\n".join(missing)


def test_readme_says_what_every_provider_kind_meters():
    from kraken.config import PROVIDER_PRESETS

    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("What each provider kind meters"):]
    table = table[: table.index("\n\n", table.index("| kind |"))]
    rows = {kind for line in table.splitlines() if line.startswith("| `")
            for kind in re.findall(r"`(\w+)`", line.split(" | ")[0])}
    assert sorted(set(PROVIDER_PRESETS) - rows) == []
    assert sorted(rows - set(PROVIDER_PRESETS)) == []  # no kind the code does not have
