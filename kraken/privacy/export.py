"""Right of access and portability: one customer's account data and every request record,
streamed as JSON Lines or CSV.

Rows are read in keyset pages (``(ts, request_id)`` on the ``(customer_id, ts)`` index), so
an export of millions of rows holds one page in memory. The stream opens with an
``export`` record and ends with ``export_end`` carrying the counts, so a reader can tell a
complete export from a cut one.
"""
from __future__ import annotations

import csv
import io
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from kraken.privacy.tables import SECRET_COLUMN, customer_tables
from kraken.store.interface import Store
from kraken.store.record import FIELD_NAMES

FORMATS = ("jsonl", "csv")
CONTENT_TYPES = {"jsonl": b"application/x-ndjson", "csv": b"text/csv; charset=utf-8"}
CSV_COLUMNS = ("record_type", *FIELD_NAMES, "data")
"""One CSV table: request rows fill the request columns, account rows put their fields as a
JSON object in ``data``."""


async def account_records(store: Store, customer: dict[str, Any],
                          page_rows: int) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """``(record_type, fields)`` for the customer, its organisations and every row of every
    table keyed by its id, without secret columns (key hashes, ciphertexts)."""
    cid = customer["id"]
    yield "customer", customer
    for org_id, name, created_at in await store.accounts.organisations(store, cid):
        yield "organisation", {"id": org_id, "name": name, "created_at": created_at}
    for table, cols, key in await customer_tables(store, ("customer_id", "wallet_id")):
        shown = [c for c in cols if not SECRET_COLUMN.search(c)]
        offset = 0
        while True:  # per-customer account tables are small; OFFSET paging keeps memory flat
            rows = await store.privacy.account_rows(store, table, shown, key, cid,
                                                    page_rows, offset)
            for row in rows:
                yield table, dict(zip(shown, row))
            if len(rows) < page_rows:
                break
            offset += len(rows)


async def request_pages(store: Store, customer_id: str,
                        page_rows: int) -> AsyncIterator[list[tuple]]:
    """Every request row of the customer, oldest first, one keyset page at a time."""
    ts, rid = -1.0, ""
    while True:
        rows = await store.privacy.request_page(store, customer_id, (ts, rid), page_rows)
        if not rows:
            return
        yield rows
        last = rows[-1]
        ts, rid = last[0], last[1]
        if len(rows) < page_rows:
            return


async def export_stream(store: Store, customer: dict[str, Any], fmt: str, *,
                        page_rows: int = 1000) -> AsyncIterator[bytes]:
    """The export as byte chunks (a page of rows per chunk)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}")
    encode = _jsonl if fmt == "jsonl" else _csv
    head: list[tuple[str, dict[str, Any]]] = [("export", {
        "customer_id": customer["id"], "generated_at": time.time(), "format": "kraken-export-1"})]
    if fmt == "csv":
        yield _csv_header()
    accounts = 0
    async for record in account_records(store, customer, page_rows):
        head.append(record)
        accounts += 1
        if len(head) >= page_rows:
            yield encode(head, [])
            head = []
    requests = 0
    async for rows in request_pages(store, customer["id"], page_rows):
        requests += len(rows)
        yield encode(head, rows)
        head = []
    tail = [("export_end", {"customer_id": customer["id"], "account_records": accounts,
                            "requests": requests})]
    yield encode(head + tail, [])


def _jsonl(records: list[tuple[str, dict[str, Any]]], rows: list[tuple]) -> bytes:
    out = [orjson.dumps({"record_type": kind, **fields}) for kind, fields in records]
    out += [orjson.dumps({"record_type": "request", **_request(row)}) for row in rows]
    return b"".join(line + b"\n" for line in out)


def _request(row: tuple) -> dict[str, Any]:
    rec = dict(zip(FIELD_NAMES, row))
    rec["fallback_used"] = bool(rec["fallback_used"])
    return rec


def _csv_header() -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerow(CSV_COLUMNS)
    return buf.getvalue().encode()


def _csv(records: list[tuple[str, dict[str, Any]]], rows: list[tuple]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    blank = [""] * len(FIELD_NAMES)
    for kind, fields in records:
        writer.writerow([kind, *blank, orjson.dumps(fields).decode()])
    for row in rows:
        rec = _request(row)
        writer.writerow(["request", *("" if rec[f] is None else rec[f] for f in FIELD_NAMES), ""])
    return buf.getvalue().encode()
