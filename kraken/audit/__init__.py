"""The append-only, hash-chained log of admin actions (API and CLI)."""
from kraken.audit.log import (
                              AuditEntry,
                              AuditTampered,
                              VerifyResult,
                              append,
                              cli_actor,
                              customer_actors,
                              list_entries,
                              purge_before,
                              record,
                              redact_subject,
                              verify,
)

__all__ = ["AuditEntry", "AuditTampered", "VerifyResult", "append", "cli_actor",
           "customer_actors", "list_entries", "purge_before", "record", "redact_subject", "verify"]
