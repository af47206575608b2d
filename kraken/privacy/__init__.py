"""GDPR rights over the store: export (access, portability), erasure, retention purge."""
