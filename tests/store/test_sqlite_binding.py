"""Kraken registers sqlite3 adapters for None, bool and bytes (kraken/store/sqlite.py): the
module's own path for them formats an AttributeError per value. They must bind exactly what
the module binds without them: NULL, an integer 0/1, a blob."""
from __future__ import annotations

import sqlite3

from kraken.store import sqlite as store_sqlite


def test_none_bool_and_bytes_have_adapters_and_bind_as_sqlite3_binds_them():
    for kind in (type(None), bool, bytes):
        assert (kind, sqlite3.PrepareProtocol) in sqlite3.adapters
    assert store_sqlite._bind_null(None) is None
    db = sqlite3.connect(":memory:")
    try:
        row = db.execute("SELECT ?, typeof(?), ?, typeof(?), ?, ?, typeof(?)",
                         (None, None, True, False, False, b"\x00k", b"\x00k")).fetchone()
        db.execute("CREATE TABLE t (flag INTEGER NOT NULL, blob BLOB, gone TEXT)")
        db.executemany("INSERT INTO t VALUES (?, ?, ?)", [(True, b"ab", None), (False, b"", None)])
        stored = db.execute("SELECT flag, typeof(flag), blob, typeof(blob), gone IS NULL "
                            "FROM t ORDER BY flag").fetchall()
    finally:
        db.close()
    assert row == (None, "null", 1, "integer", 0, b"\x00k", "blob")
    assert stored == [(0, "integer", b"", "blob", 1), (1, "integer", b"ab", "blob", 1)]
