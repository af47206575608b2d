from kraken.cli import main

raise SystemExit(main())
