"""A files or batches list pages through Kraken as the OpenAI SDK expects, although every
tenant's objects share one provider account: two customers' objects interleaved in it, each
customer's SDK auto-pagination (small limits) lists each of its own objects exactly once and
none of the other's; each answer holds ``limit`` of the caller's objects unless none follow;
a call reads a bounded number of provider pages, and never answers an empty page while more of
the caller's objects follow (kraken/gateway/endpoints/owned_lists.py)."""
from __future__ import annotations

import openai
import orjson
import pytest
from harness import http
from tenantkit import BATCH, JSONL, kraken_with, sdk_client

from kraken.gateway.endpoints import owned_lists
from kraken.gateway.endpoints.owned_lists import ListQuery, OwnedPages

pytestmark = pytest.mark.anyio

TURNS = "BBABBBBBBBBBBBBAABABBBBBBBBAAABBBBBBBBBBBBBBBBBBBBBBBBAB"
"""Who creates the next object, oldest first: runs of the other tenant's longer than a page."""


async def _pages(listing) -> list[list[str]]:
    """The ids of each page the SDK fetches, following ``has_more`` as its auto-pagination
    does; the last page says nothing more follows."""
    page = await listing
    pages = [[x.id for x in page.data]]
    while page.has_next_page():
        page = await page.get_next_page()
        pages.append([x.id for x in page.data])
    assert page.has_more is False
    return pages


async def _full_pages(listing, limit: int) -> list[list[str]]:
    """``_pages``, each but the last holding ``limit`` objects (the last may be empty: the one
    before said more may follow, which was as far as it had read)."""
    pages = await _pages(listing)
    assert all(len(p) == limit for p in pages[:-1]), [len(p) for p in pages]
    return pages


async def test_each_tenant_lists_each_of_its_files_once_and_none_of_the_others(tmp_path):
    async with kraken_with(tmp_path, "page-a", "page-b") as (mock, k, ((_, a_key), (_, b_key))):
        clients = {"A": sdk_client(k.port, a_key), "B": sdk_client(k.port, b_key)}
        made: dict[str, list[str]] = {"A": [], "B": []}
        for who in TURNS:
            f = await clients[who].files.create(file=(f"{who}.jsonl", JSONL), purpose="batch")
            made[who].append(f.id)

        for who, limit in (("A", 3), ("A", 1), ("B", 4)):
            newest_first = made[who][::-1]
            listed = [f.id async for f in clients[who].files.list(limit=limit)]
            assert listed == newest_first, (who, limit)
            pages = await _full_pages(clients[who].files.list(limit=limit), limit)
            assert sum(pages, []) == newest_first
        oldest_first = [f.id async for f in clients["A"].files.list(limit=2, order="asc")]
        assert oldest_first == made["A"]
        assert mock.files_api.lists[-1]["order"] == "asc", "other parameters go on as given"
        assert [f.id async for f in clients["A"].files.list(limit=5, purpose="fine-tune")] == []

        page = await clients["A"].files.list()  # OpenAI's default limit: all of them at once
        assert [f.id for f in page.data] == made["A"][::-1] and page.has_more is False
        assert (page.first_id, page.last_id) == (made["A"][-1], made["A"][0])


async def test_each_tenant_lists_each_of_its_batches_once_and_none_of_the_others(tmp_path):
    async with kraken_with(tmp_path, "batch-a", "batch-b") as (_, k, ((_, a_key), (_, b_key))):
        clients = {"A": sdk_client(k.port, a_key), "B": sdk_client(k.port, b_key)}
        inputs = {who: (await c.files.create(file=("in.jsonl", JSONL), purpose="batch")).id
                  for who, c in clients.items()}
        made: dict[str, list[str]] = {"A": [], "B": []}
        for who in TURNS:
            batch = await clients[who].batches.create(input_file_id=inputs[who], **BATCH)
            made[who].append(batch.id)

        for who, limit in (("A", 2), ("B", 3)):
            listed = [b.id async for b in clients[who].batches.list(limit=limit)]
            assert listed == made[who][::-1], (who, limit)
            pages = await _full_pages(clients[who].batches.list(limit=limit), limit)
            assert sum(pages, []) == made[who][::-1]
        page = await clients["A"].batches.list()  # OpenAI's default limit: 20 of them
        assert len(page.data) == min(20, len(made["A"])) == len(made["A"])


async def test_a_call_reads_a_bounded_number_of_provider_pages(tmp_path, monkeypatch):
    """Holding one of the caller's objects, a call reads at most MAX_PAGES provider pages and
    answers it with ``has_more``; holding none, it reads on (to SEARCH_PAGES): the SDK's next
    call goes on after the last object it got, and every object is listed."""
    monkeypatch.setattr(owned_lists, "MAX_PAGES", 3)
    monkeypatch.setattr(owned_lists, "SEARCH_PAGES", 6)
    async with kraken_with(tmp_path, "sparse-a") as (mock, k, ((_, a_key),)):
        a = sdk_client(k.port, a_key)

        async def mine() -> str:
            return (await a.files.create(file=("a.jsonl", JSONL), purpose="batch")).id

        def others(n: int) -> None:  # the account's objects that are no customer's of Kraken's
            for _ in range(n):
                mock.files_api.add(b"{}\n", "batch", "other.jsonl")

        oldest = await mine()
        files = mock.files_api
        others(40)
        middle = await mine()
        others(20)
        newest = await mine()

        asked, pages = len(files.lists), []
        page = await a.files.list(limit=2)
        while True:
            pages.append(([f.id for f in page.data], page.has_more, len(files.lists) - asked))
            asked = len(files.lists)
            if not page.has_next_page():
                break
            page = await page.get_next_page()
    # sizes asked: 2, 4, 8, 16, 32 (each page twice the one before, a new call from 2 again)
    assert pages == [([newest], True, 3),  # found on page 1, then MAX_PAGES read: 2+4+8
                     ([middle], True, 4),  # 20 others: 2+4+8 read, found on page 4 (16)
                     ([oldest], False, 5)]  # 40 others: 2+4+8+16, found on page 5 (32)


async def test_nothing_found_within_the_bound_is_an_error_the_sdk_does_not_retry(
        tmp_path, monkeypatch):
    """An empty page would end the SDK's listing with one of the caller's files still to come."""
    monkeypatch.setattr(owned_lists, "SEARCH_PAGES", 3)
    async with kraken_with(tmp_path, "lost-a") as (mock, k, ((_, a_key),)):
        a = sdk_client(k.port, a_key, max_retries=2)
        await a.files.create(file=("a.jsonl", JSONL), purpose="batch")
        files = mock.files_api
        for _ in range(7):  # 1 + 2 + 4: the three pages a call reads
            files.add(b"{}\n", "batch", "other.jsonl")
        newest = (await a.files.create(file=("a.jsonl", JSONL), purpose="batch")).id

        first = await a.files.list(limit=1)
        assert [f.id for f in first.data] == [newest] and first.has_more is True
        asked = len(files.lists)
        with pytest.raises(openai.InternalServerError) as caught:
            await first.get_next_page()
        assert len(files.lists) - asked == 3, "read up to the bound, once: not retried"
        assert caught.value.status_code == 503
        assert caught.value.response.headers["x-should-retry"] == "false"
        assert caught.value.body["code"] == "list_too_sparse"


async def test_after_must_name_one_of_the_callers_own_objects(tmp_path):
    async with kraken_with(tmp_path, "after-a", "after-b") as (
            mock, k, ((_, a_key), (_, b_key))):
        a, b = sdk_client(k.port, a_key), sdk_client(k.port, b_key)
        mine = (await a.files.create(file=("a.jsonl", JSONL), purpose="batch")).id
        theirs = (await b.files.create(file=("b.jsonl", JSONL), purpose="batch")).id
        asked = len(mock.files_api.lists)
        answers = []
        for after in (theirs, "file-never-made", "file.x"):
            reply = await http(k.port, "GET", f"/v1/files?limit=2&after={after}",
                               headers={"authorization": f"Bearer {a_key}"})
            answers.append((reply.status, reply.json()["error"]["param"]))
        assert answers == [(404, "after")] * 3, "another tenant's id is as unknown as any"
        assert len(mock.files_api.lists) == asked, "nothing of it reached the provider"
        assert (await a.files.list(limit=2, after=mine)).data == []


@pytest.mark.parametrize("path", ["/v1/files?limit=0", "/v1/files?limit=10001",
                                  "/v1/files?limit=ten", "/v1/batches?limit=101",
                                  "/v1/batches?limit=%C2%B2"])
async def test_a_limit_out_of_openais_range_is_400(tmp_path, path):
    async with kraken_with(tmp_path, "limit-a") as (mock, k, ((_, a_key),)):
        reply = await http(k.port, "GET", path, headers={"authorization": f"Bearer {a_key}"})
        assert reply.status == 400 and reply.json()["error"]["param"] == "limit"
        assert mock.files_api is None or mock.files_api.lists == []


async def test_an_answer_keeps_a_bounded_number_of_bytes(tmp_path, monkeypatch):
    async with kraken_with(tmp_path, "bytes-a") as (mock, k, ((_, a_key),)):
        a = sdk_client(k.port, a_key)
        made = [(await a.files.create(file=("a.jsonl", JSONL), purpose="batch")).id
                for _ in range(5)]
        one = len(orjson.dumps(mock.files_api.files[made[0]][0]))  # each as long
        monkeypatch.setattr(owned_lists, "MAX_KEPT", 2 * one + one // 2)
        pages = await _pages(a.files.list(limit=10))
    assert [len(p) for p in pages] == [2, 2, 1] and sum(pages, []) == made[::-1]


async def test_a_page_the_provider_fails_gives_what_was_found_or_no_other_tenants_id(tmp_path):
    """A later page's failure: the objects found so far, with ``has_more`` (the SDK goes on
    after them); none found, a 502 that does not relay the provider's body (it names the id
    Kraken read on after, another's)."""
    async with kraken_with(tmp_path, "fail-a") as (mock, k, ((_, a_key),)):
        a = sdk_client(k.port, a_key)
        oldest = (await a.files.create(file=("a.jsonl", JSONL), purpose="batch")).id
        files = mock.files_api
        other = files.add(b"{}\n", "batch", "other.jsonl")["id"]
        newest = (await a.files.create(file=("a.jsonl", JSONL), purpose="batch")).id
        files.refused_after[other] = 400

        found = await a.files.list(limit=2)  # page 1: newest and other; page 2 refused
        assert [f.id for f in found.data] == [newest] and found.has_more is True
        reply = await http(k.port, "GET", f"/v1/files?limit=1&after={newest}",
                           headers={"authorization": f"Bearer {a_key}"})
        assert reply.status == 502 and other.encode() not in reply.body
        assert files.lists[-1]["after"] == other, "it was the page after the other's that failed"

        del files.refused_after[other]
        assert [f.id async for f in a.files.list(limit=2)] == [newest, oldest]


def test_a_page_with_no_id_to_read_on_after_ends_the_answer_without_has_more():
    """``has_more`` with an empty answer would stop the SDK all the same, saying more follow."""
    pages = OwnedPages(ListQuery.parse("limit=2", "file"))
    odd = {"object": "list", "data": [{"id": ["not", "a", "string"]}, 7], "has_more": True}
    assert pages.take(odd, set()) is None
    assert orjson.loads(pages.body()) == {"object": "list", "data": [], "first_id": None,
                                          "last_id": None, "has_more": False}
