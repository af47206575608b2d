"""/v1/files and /v1/batches through Kraken: the real openai SDK, the mock holding files and
batches in OpenAI's wire formats; answers byte for byte, one record per call, and a batch's
results download recorded once with its summed usage at half the model's price."""
from __future__ import annotations

import json

import pytest
from harness import auth_headers, http, kraken_mapping, openai_client, running_kraken, running_mock, wait_rows

pytestmark = pytest.mark.anyio

LINES = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
          "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}}
         for i in range(3)]
JSONL = b"".join(json.dumps(line).encode() + b"\n" for line in LINES)


def doc(tmp_path, mock):
    d = kraken_mapping(tmp_path, mock.port)
    d["providers"]["mockai"].update({"kind": "openai", "models": ["gpt-4o-mini"]})
    return d


async def test_file_upload_list_retrieve_content_delete(tmp_path):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        client = openai_client(k)
        raw = await client.files.with_raw_response.create(
            file=("in.jsonl", JSONL, "application/jsonl"), purpose="batch")
        created = raw.parse()
        assert raw.content == mock.responses[-1].body
        assert created.bytes == len(JSONL) and created.purpose == "batch"
        assert mock.files_api.files[created.id][1] == JSONL, "uploaded byte for byte"
        listed = await client.files.list()
        assert [f.id for f in listed.data] == [created.id]
        got = await client.files.retrieve(created.id)
        assert got.filename == "in.jsonl"
        content = await client.files.content(created.id)
        assert content.content == JSONL
        deleted = await client.files.delete(created.id)
        assert deleted.deleted is True
        with pytest.raises(Exception) as err:
            await client.files.retrieve(created.id)
        assert getattr(err.value, "status_code", None) == 404
        rows = await wait_rows(k.db_path, 6)
        assert sorted(r["status"] for r in rows) == [200] * 5 + [404]
        assert all(r["prompt_tokens"] is None for r in rows), "an input file is not a batch result"


async def test_batch_create_retrieve_cancel(tmp_path):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        client = openai_client(k)
        f = await client.files.create(file=("in.jsonl", JSONL), purpose="batch")
        raw = await client.batches.with_raw_response.create(
            input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        batch = raw.parse()
        assert raw.content == mock.responses[-1].body and batch.status == "validating"
        assert (await client.batches.retrieve(batch.id)).status == "in_progress"
        assert [b.id for b in (await client.batches.list()).data] == [batch.id]
        other = await client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                            completion_window="24h")
        assert (await client.batches.cancel(other.id)).status == "cancelling"
        assert (await client.batches.retrieve(other.id)).status == "cancelled"
        assert mock.requests[-1].path == f"/v1/batches/{other.id}"


async def test_batch_results_download_one_record_summed_usage_half_price(tmp_path):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        client = openai_client(k)
        f = await client.files.create(file=("in.jsonl", JSONL), purpose="batch")
        batch = await client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                            completion_window="24h")
        await client.batches.retrieve(batch.id)
        done = await client.batches.retrieve(batch.id)
        assert done.status == "completed" and done.output_file_id
        raw = await client.files.with_raw_response.content(done.output_file_id)
        assert raw.content == mock.files_api.files[done.output_file_id][1], "unchanged"
        again = await client.files.with_raw_response.content(done.output_file_id)
        rows = await wait_rows(k.db_path, 6)
        by_id = {r["request_id"]: r for r in rows}
        row = by_id[raw.headers["x-request-id"]]
        assert row["prompt_tokens"] == 10 + 11 + 12 and row["completion_tokens"] == 15
        assert row["model_dispatched"] == "gpt-4o-mini-2024-07-18"
        full = (33 * 0.15 + 15 * 0.60) / 1e6
        assert row["cost_usd"] == pytest.approx(full / 2)
        assert by_id[again.headers["x-request-id"]]["prompt_tokens"] is None, "metered once"
        metered = [r for r in rows if r["prompt_tokens"] is not None]
        assert len(metered) == 1


async def test_unknown_paths_and_methods(tmp_path):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        reply = await http(k.port, "PUT", "/v1/files/file-1", b"", auth_headers())
        assert reply.status == 405
        reply = await http(k.port, "GET", "/v1/files/bad$id", b"", auth_headers())
        assert reply.status == 404
        reply = await http(k.port, "GET", "/v1/files", b"",
                           {**auth_headers(), "x-kraken-provider": "nope"})
        assert reply.status == 404 and "x-kraken-provider" in reply.json()["error"]["message"]
        assert not mock.requests


async def test_no_file_bytes_in_db_journal_or_logs(tmp_path, capfd):
    marker = b'{"custom_id": "KRAKEN-FILE-MARKER-51be", "body": {"model": "gpt-4o-mini"}}\n'
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        client = openai_client(k)
        f = await client.files.create(file=("secret-file.jsonl", marker), purpose="batch")
        assert (await client.files.content(f.id)).content == marker
        await wait_rows(k.db_path, 2)
    out, err = capfd.readouterr()
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files
    for blob in [p.read_bytes() for p in files] + [out.encode(), err.encode()]:
        assert b"KRAKEN-FILE-MARKER" not in blob and b"secret-file" not in blob
