"""The operator subcommands of ``kraken`` beyond serve: accounts, keys, BYOK, wallet, usage,
export, erase, audit. CLI code, so it sits with cli.py at the top of the layer list."""
