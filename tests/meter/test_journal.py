"""Journal: one line per record, torn lines skipped, rotation, exact round trip."""
from __future__ import annotations

import stat

import orjson
import pytest

from kraken.meter.journal import Journal
from kraken.store.record import RequestRecord


def make(i: int, **kw) -> RequestRecord:
    values = dict(
        ts=1_700_000_000.125 + i,
        request_id=f"req-{i:06d}",
        customer_id="cust-1",
        model_requested="gpt-4o-mini",
        model_dispatched=None,
        provider="openai",
        prompt_tokens=12,
        completion_tokens=34,
        cached_tokens=None,
        reasoning_tokens=0,
        latency_ms=123.5,
        ttfb_ms=None,
        task_type="chat",
        cost_usd=0.000123,
        kraken_fee_usd=1e-05,
        fallback_used=i % 2 == 0,
        error_type=None,
        status=200,
    )
    values.update(kw)
    return RequestRecord(**values)


@pytest.fixture
def journal(tmp_path):
    j = Journal(tmp_path / "journal")
    j.open()
    yield j
    j.close()


def test_open_creates_directory_and_a_private_segment(tmp_path):
    j = Journal(tmp_path / "a" / "b")
    j.open()
    try:
        (seg,) = j.segments()
        assert seg == j.current
        assert stat.S_IMODE(seg.stat().st_mode) == 0o600
    finally:
        j.close()


def test_append_writes_exactly_one_line_per_record(journal):
    records = [make(i) for i in range(3)]
    for rec in records:
        journal.append(rec)
    data = journal.current.read_bytes()
    assert data == b"".join(orjson.dumps(r.to_dict()) + b"\n" for r in records)


def test_records_round_trip_exactly(journal):
    records = [make(i) for i in range(5)] + [make(9, customer_id=None, status=429, error_type="rate_limited")]
    for rec in records:
        journal.append(rec)
    assert Journal.read(journal.current) == records


# Lines exactly as earlier Kraken versions wrote them (orjson of the frozen dataclass; the
# oldest before byok and key_id existed). Today's append must still write the first byte for byte.
OLD_LINES = [
    b'{"ts":1700000000.125,"request_id":"req_1a2453c706ee5707bed580b6","customer_id":"cus_abc",'
    b'"model_requested":"gpt-4o-mini","model_dispatched":"gpt-4o-mini","provider":"openai",'
    b'"prompt_tokens":100,"completion_tokens":20,"cached_tokens":0,"reasoning_tokens":null,'
    b'"latency_ms":300.5,"ttfb_ms":50.2,"task_type":"chat","cost_usd":0.00123,"kraken_fee_usd":0.0001,'
    b'"fallback_used":false,"error_type":null,"status":200,"byok":false,"key_id":"key_abc"}',
    b'{"ts":1600000000.5,"request_id":"req-old","customer_id":null,"model_requested":"m",'
    b'"model_dispatched":null,"provider":null,"prompt_tokens":null,"completion_tokens":null,'
    b'"cached_tokens":null,"reasoning_tokens":null,"latency_ms":1.0,"ttfb_ms":null,'
    b'"task_type":null,"cost_usd":null,"kraken_fee_usd":null,"fallback_used":true,'
    b'"error_type":"upstream_error","status":502}',
]


def test_a_segment_written_by_an_earlier_kraken_replays_and_the_line_format_is_unchanged(journal):
    path = journal.current
    path.write_bytes(b"\n".join(OLD_LINES) + b"\n")
    new, old = Journal.read(path)
    assert (new.request_id, new.byok, new.key_id, new.cost_usd, new.status) == (
        "req_1a2453c706ee5707bed580b6", False, "key_abc", 0.00123, 200)
    assert (old.request_id, old.fallback_used, old.byok, old.key_id) == ("req-old", True, False, None)
    journal.append(new)
    assert path.read_bytes().splitlines()[-1] == OLD_LINES[0]


def test_read_skips_a_torn_last_line(journal):
    journal.append(make(1))
    journal.append(make(2))
    path = journal.current
    full = path.read_bytes()
    torn = orjson.dumps(make(3).to_dict())[:40]  # a crash mid-write
    with open(path, "ab") as f:
        f.write(torn)
    assert Journal.read(path) == [make(1), make(2)]
    assert path.read_bytes() == full + torn


def test_read_skips_garbage_and_incomplete_lines(journal):
    journal.append(make(1))
    bad = make(2).to_dict()
    del bad["status"]
    with open(journal.current, "ab") as f:
        f.write(b"not json\n[1, 2]\n" + orjson.dumps(bad) + b"\n" + orjson.dumps({**make(3).to_dict(), "request_id": None}) + b"\n\n")
    journal.append(make(4))
    assert Journal.read(journal.current) == [make(1), make(4)]


def test_rotate_returns_older_segments_sorted_and_appends_to_a_new_one(journal):
    first = journal.current
    journal.append(make(1))
    older = journal.rotate()
    assert older == [first]
    second = journal.current
    assert second != first and second > first  # names sort by creation order
    journal.append(make(2))
    assert journal.rotate() == [first, second]
    assert Journal.read(first) == [make(1)]
    assert Journal.read(second) == [make(2)]
    assert journal.segments() == [first, second, journal.current]


def test_segments_are_only_segment_files_oldest_first_and_none_without_a_directory(tmp_path, journal):
    first = journal.current
    journal.rotate()
    for name in ("notes.txt", "seg-.json", "xseg-1.jsonl", "seg-1.jsonl.tmp"):
        (journal.directory / name).write_bytes(b"")
    assert journal.segments() == [first, journal.current]
    assert Journal(tmp_path / "missing").segments() == []
    (tmp_path / "file").write_bytes(b"")
    assert Journal(tmp_path / "file").segments() == []


def test_rotate_makes_the_directory_again_if_it_was_removed(tmp_path):
    j = Journal(tmp_path / "journal")
    j.open()
    try:
        for seg in j.segments():
            seg.unlink()
        j.directory.rmdir()
        assert j.rotate() == []
        assert j.segments() == [j.current] and stat.S_IMODE(j.directory.stat().st_mode) == 0o700
    finally:
        j.close()


def test_remove_deletes_only_given_segments_and_never_the_current_one(journal):
    journal.append(make(1))
    old = journal.rotate()
    journal.remove(old + [journal.current])
    journal.remove(old)  # already gone: fine
    assert journal.segments() == [journal.current]


def test_each_open_starts_a_new_segment_so_a_torn_tail_stays_isolated(tmp_path):
    first = Journal(tmp_path)
    first.append(make(1))  # append opens lazily
    with open(first.current, "ab") as f:
        f.write(b'{"ts": 1.0, "requ')  # simulated crash mid-line
    second = Journal(tmp_path)
    second.open()
    second.append(make(2))
    try:
        a, b = second.segments()
        assert (Journal.read(a), Journal.read(b)) == ([make(1)], [make(2)])
    finally:
        first.close()
        second.close()


def test_close_removes_an_empty_segment_and_keeps_a_written_one(tmp_path):
    j = Journal(tmp_path)
    j.open()
    j.close()
    assert j.segments() == []
    j.append(make(1))  # appending after close reopens a fresh segment
    (seg,) = j.segments()
    j.close()
    assert Journal.read(seg) == [make(1)]



def _fill_until_appends_fail(j: Journal, fs, kept: list, start: int):
    """Fill the filesystem, then append until three appends failed (some half-written)."""
    from diskfull import fill

    filler = fill(fs)
    failed = 0
    for i in range(start, start + 200):  # until the segment's last page is full too
        try:
            j.append(make(i))
            kept.append(make(i))
        except OSError:
            failed += 1
            if failed == 3:
                return filler
    raise AssertionError("appends kept succeeding on a full filesystem")


def test_a_line_torn_by_a_full_disk_never_swallows_the_next_record(tmp_path):
    """On a real full filesystem: appends fail (some half-written), then room comes back;
    every record whose append succeeded reads back, before and after the failures."""
    from diskfull import free, tiny_filesystem

    with tiny_filesystem(tmp_path / "fs", "256k") as fs:
        j = Journal(fs / "journal")
        j.open()
        try:
            kept = [make(i) for i in range(5)]
            for rec in kept:
                j.append(rec)
            free(_fill_until_appends_fail(j, fs, kept, 5))
            for i in range(300, 303):
                j.append(make(i))
                kept.append(make(i))
            assert Journal.read(j.current) == kept
        finally:
            j.close()


def test_probe_fails_while_the_disk_is_full_and_leaves_only_blank_lines(tmp_path):
    from diskfull import free, tiny_filesystem

    with tiny_filesystem(tmp_path / "fs", "256k") as fs:
        j = Journal(fs / "journal")
        j.open()
        try:
            kept = [make(0)]
            j.append(kept[0])
            filler = _fill_until_appends_fail(j, fs, kept, 1)
            with pytest.raises(OSError):
                j.probe()
            free(filler)
            j.probe()
            j.append(make(400))
            kept.append(make(400))
            assert Journal.read(j.current) == kept
        finally:
            j.close()


def _storable_reference(rec: RequestRecord) -> bool:
    """storable as it was written first (isinstance checks, a helper per number)."""
    import math

    def number(value):
        return isinstance(value, (int, float)) and not isinstance(value, bool) \
            and math.isfinite(value)

    return ({type(v) for v in rec} <= {str, int, float, bool, type(None)}
            and isinstance(rec.request_id, str) and number(rec.ts) and number(rec.latency_ms)
            and isinstance(rec.fallback_used, bool)
            and isinstance(rec.status, int) and not isinstance(rec.status, bool))


def test_storable_decides_as_the_isinstance_checks_did_for_every_field_and_value():
    import enum
    from kraken.meter.journal import storable
    from kraken.store.record import FIELD_NAMES

    class Text(str):
        pass

    class Code(enum.IntEnum):
        OK = 200

    values = [None, "x", Text("x"), 0, 7, -3, True, False, 1.5, float("nan"), float("inf"),
              -float("inf"), 10 ** 400, Code.OK, b"x", [1], 0.0]
    base = make(1)
    assert storable(base)
    for name in FIELD_NAMES:
        for value in values:
            rec = base._replace(**{name: value})
            try:
                expected = _storable_reference(rec)
            except OverflowError:  # an int too large for a float: raised by both
                with pytest.raises(OverflowError):
                    storable(rec)
                continue
            assert storable(rec) is expected, (name, value)


def test_an_append_writes_the_record_as_its_dict_in_one_line(journal):
    journal.open()
    recs = [make(1), make(2, byok=True, key_id="key_1", customer_id=None)]
    for rec in recs:
        journal.append(rec)
    data = journal.current.read_bytes()
    assert data == b"".join(orjson.dumps(r.to_dict()) + b"\n" for r in recs)


def test_a_short_append_is_terminated_reported_and_the_next_record_kept(journal, monkeypatch):
    import errno
    import os

    from kraken.meter import journal as journal_module

    journal.open()
    journal.append(make(1))

    def half(fd, data):
        return os.write(fd, data[: len(data) // 2])

    monkeypatch.setattr(journal_module, "_os_write", half)
    with pytest.raises(OSError) as short:
        journal.append(make(2))
    assert short.value.errno == errno.ENOSPC
    monkeypatch.undo()
    journal.append(make(3))
    assert Journal.read(journal.current) == [make(1), make(3)]
    assert journal.current.read_bytes().count(b"\n") == 3
