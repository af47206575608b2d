"""The admin HTTP API on its own listener (``listener.start_admin``, ``routes.build``) and
the ``kraken`` subcommands that share its functions (``cli``)."""
