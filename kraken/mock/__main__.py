"""``python -m kraken.mock --port 9000``: the mock provider as a standalone process."""

from kraken.mock.openai_mock import main

raise SystemExit(main())
