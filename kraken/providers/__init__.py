"""One module per provider wire family: endpoint, auth header, request shaping, usage, errors."""
