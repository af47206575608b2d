"""Documented commands run from the repository root of a fresh checkout: no doc or operator
script names a path that exists only on the machine it was written on."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

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
