"""Thin wrapper so ``.venv/bin/python bench/mock_provider.py --port 9000`` works from a checkout."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from kraken.mock import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
