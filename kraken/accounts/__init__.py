"""Customers, organisations, members and roles, Kraken API keys in the database (and BYOK
provider keys). Admin API, CLI and GDPR code go through ``kraken.accounts.service``."""
