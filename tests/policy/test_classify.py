"""The task classifier: a label per request from its shape and a bounded slice of its text.

Accuracy is asserted on three hand-written sets (rows: id, label, lang, route, payload):
- classify_holdout.jsonl: HELD OUT. Written before the trained classifier, in its own commit, and
  never trained or tuned on: it is what the classifier does on requests it has not seen.
- classify_train.jsonl and classify_eval.jsonl: what tools/train_classifier.py fits the weights on.
Speed is measured by bench/classify_bench.py, never asserted here.
"""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from kraken.policy.classify import LABELS, task_type

HERE = Path(__file__).parent
HOLDOUT = HERE / "classify_holdout.jsonl"
TRAIN = HERE / "classify_train.jsonl"
EVAL = HERE / "classify_eval.jsonl"
LANGUAGES = {"en", "es", "ja", "de", "fr", "pt", "zh"}
MB5 = 5 * 1024 * 1024


def load(path: Path) -> list[dict]:
    """A set's rows; lines starting with '#' are comments."""
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip() and not line.startswith("#")]


def chat(*messages, **extra) -> dict:
    return {"model": "m", "messages": list(messages), **extra}


def user(content) -> dict:
    return {"role": "user", "content": content}


def recall(rows: list[dict], key: str) -> dict[str, tuple[int, int]]:
    """{value of `key`: (correct, total)} over the rows."""
    per: dict[str, list[int]] = {}
    for row in rows:
        slot = per.setdefault(row.get(key, "en"), [0, 0])
        slot[0] += task_type(row["route"], row["payload"]) == row["label"]
        slot[1] += 1
    return {k: (c, t) for k, (c, t) in per.items()}


def accuracy(rows: list[dict]) -> float:
    return sum(task_type(r["route"], r["payload"]) == r["label"] for r in rows) / len(rows)


# ---- the sets -------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [HOLDOUT, TRAIN, EVAL], ids=lambda p: p.name)
def test_set_is_well_formed_and_covers_every_label_but_embedding(path):
    rows = load(path)
    counts = Counter(row["label"] for row in rows)
    assert set(counts) == set(LABELS) - {"embedding"}
    assert min(counts.values()) >= 20
    assert {row["route"] for row in rows} == {"chat", "messages"}
    assert len({row["id"] for row in rows}) == len(rows)
    assert {row.get("lang", "en") for row in rows} <= LANGUAGES


def test_holdout_is_large_balanced_multilingual_and_shares_no_request_with_training():
    rows = load(HOLDOUT)
    counts = Counter(row["label"] for row in rows)
    assert len(rows) >= 250 and max(counts.values()) - min(counts.values()) <= 5
    langs = Counter(row["lang"] for row in rows)
    assert set(langs) == LANGUAGES and sum(n for lang, n in langs.items() if lang != "en") >= 0.2 * len(rows)
    shapes = Counter()
    for row in rows:
        p = row["payload"]
        shapes["json"] += "response_format" in p
        shapes["forced"] += "tool_choice" in p
        shapes["multi_turn"] += len(p["messages"]) >= 3
        shapes["system"] += "system" in p or p["messages"][0]["role"] == "system"
    assert min(shapes.values()) >= 10, shapes
    trained = {json.dumps(r["payload"], sort_keys=True) for r in load(TRAIN) + load(EVAL)}
    assert not [r["id"] for r in rows if json.dumps(r["payload"], sort_keys=True) in trained]


def test_holdout_accuracy_at_least_90_percent():
    rows = load(HOLDOUT)
    assert accuracy(rows) >= 0.90


def test_holdout_accuracy_at_least_85_percent_in_every_language_with_10_rows():
    per = recall(load(HOLDOUT), "lang")
    low = {lang: f"{c}/{t}" for lang, (c, t) in per.items() if t >= 10 and c / t < 0.85}
    assert not low


def test_holdout_recall_of_every_label_at_least_80_percent():
    per = recall(load(HOLDOUT), "label")
    low = {label: f"{c}/{t}" for label, (c, t) in per.items() if c / t < 0.80}
    assert not low


@pytest.mark.parametrize("path", [TRAIN, EVAL], ids=lambda p: p.name)
def test_training_sets_accuracy_at_least_95_percent_and_every_label_90(path):
    rows = load(path)
    assert accuracy(rows) >= 0.95
    low = {label: f"{c}/{t}" for label, (c, t) in recall(rows, "label").items() if c / t < 0.90}
    assert not low


def test_classifying_never_logs(caplog):
    caplog.set_level(logging.DEBUG)
    for row in load(HOLDOUT) + load(TRAIN)[:50]:
        task_type(row["route"], row["payload"])
    assert caplog.records == []


# ---- routes and shape -----------------------------------------------------------------------------
def test_embeddings_route_is_always_embedding():
    assert task_type("embeddings", {"model": "e", "input": "write a python function"}) == "embedding"
    assert task_type("embeddings", {}) == "embedding"


def test_a_greeting_is_chat():
    assert task_type("chat", chat(user("hi"))) == "chat"


def test_json_schema_response_format_is_extraction():
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    assert task_type("chat", chat(user("Acme Corp, 12 Main St, invoice 881"), response_format=fmt)) == "extraction"


def test_forced_tool_choice_is_extraction():
    tools = [{"type": "function", "function": {"name": "save_contact", "parameters": {}}}]
    choice = {"type": "function", "function": {"name": "save_contact"}}
    payload = chat(user("Ann Lee, ann@example.com"), tools=tools, tool_choice=choice)
    assert task_type("chat", payload) == "extraction"


def test_coding_agent_tools_are_code_gen():
    tools = [{"type": "function", "function": {"name": n}} for n in ("read_file", "write_file", "run_shell")]
    assert task_type("chat", chat(user("make the failing check pass"), tools=tools)) == "code_gen"


def test_code_fence_is_code_gen():
    assert task_type("chat", chat(user("why?\n```\nx = [1, 2\nprint(x)\n```"))) == "code_gen"


def test_translating_code_between_languages_is_code_gen_not_translation():
    text = "Translate this Python to JavaScript:\n```python\nprint(sum(x * x for x in range(9)))\n```"
    assert task_type("chat", chat(user(text))) == "code_gen"


@pytest.mark.parametrize("text", [
    "Translate to German: see you tomorrow",
    "How do you say 'thank you' in Korean?",
    "请把这句话翻译成英文：今天很冷。",
    "Traduce al inglés: buenos días",
])
def test_translation_cues(text):
    assert task_type("chat", chat(user(text))) == "translation"


def test_in_plain_english_is_not_translation():
    assert task_type("chat", chat(user("Explain this clause in plain English, briefly: The Licensee shall "
                                        "indemnify the Licensor against all claims."))) != "translation"


def test_system_prompt_sets_the_task():
    system = {"role": "system", "content": "You are a translator. Translate the user's text into French."}
    assert task_type("chat", chat(system, user("The shop opens at nine."))) == "translation"


def test_manner_words_in_a_system_prompt_do_not_make_the_task():
    system = {"role": "system", "content": "You are a friendly, polite and concise support agent."}
    assert task_type("chat", chat(system, user("my order never arrived"))) == "chat"


def test_only_the_last_user_message_counts():
    payload = chat(user("Summarize this article: ..."), {"role": "assistant", "content": "It says ..."},
                   user("thanks! how are you today?"))
    assert task_type("chat", payload) == "chat"


def test_ask_after_long_pasted_text_is_found():
    article = "The council met on Tuesday and discussed the new budget for parks and roads. " * 60
    assert task_type("chat", chat(user(article + "\n\ntl;dr?"))) == "summarization"


# ---- Anthropic format -----------------------------------------------------------------------------
def test_anthropic_system_string_and_block_content():
    payload = {"model": "c", "max_tokens": 10, "system": "You summarize documents.",
               "messages": [user([{"type": "text", "text": "Quarterly revenue grew 4 percent."}])]}
    assert task_type("messages", payload) == "summarization"


def test_anthropic_system_as_blocks():
    payload = {"model": "c", "max_tokens": 10,
               "system": [{"type": "text", "text": "You are a patient math tutor."},
                          {"type": "text", "text": "Think step by step.", "cache_control": {"type": "ephemeral"}}],
               "messages": [user("A tank holds 40 liters and leaks 3 liters per hour; when is it empty?")]}
    assert task_type("messages", payload) == "reasoning"


def test_anthropic_ask_in_a_block_after_a_long_document_block():
    doc = {"type": "text", "text": "Revenue rose and costs fell in every region this quarter. " * 200}
    payload = {"model": "c", "max_tokens": 10, "messages": [user([doc, {"type": "text", "text": "Summarize this."}])]}
    assert task_type("messages", payload) == "summarization"


def test_a_turn_of_only_tool_results_looks_back_to_the_ask():
    payload = {"model": "c", "max_tokens": 10, "messages": [
        user("Translate the README into Spanish"),
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "read", "input": {}}]},
        user([{"type": "tool_result", "tool_use_id": "t1", "content": "# Project\nInstall with pip."}]),
    ]}
    assert task_type("messages", payload) == "translation"


# ---- malformed and empty input: always a label, never an exception --------------------------------
@pytest.mark.parametrize("payload", [
    {},
    {"messages": []},
    {"messages": None},
    {"messages": "hello"},
    {"messages": [None, 3, "x", []]},
    {"messages": [{"role": "user"}]},
    {"messages": [{"role": "user", "content": None}]},
    {"messages": [{"role": "user", "content": 42}]},
    {"messages": [{"role": "user", "content": ""}]},
    {"messages": [{"role": "user", "content": "   \n  "}]},
    {"messages": [{"role": "user", "content": [1, None, {"type": "text"}, {"type": "text", "text": 5}]}]},
    {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]},
    {"messages": [{"role": "assistant", "content": "only an assistant turn"}]},
    {"messages": [{"role": "user", "content": "hi"}], "system": 7},
    {"messages": [{"role": "user", "content": "hi"}], "system": [None, {"type": "text", "text": None}]},
    {"messages": [{"role": "user", "content": "hi"}], "tools": "nope", "tool_choice": 3, "response_format": "x"},
    {"messages": [{"role": "user", "content": "hi"}], "tools": [None, {"function": None}, {"name": 5}]},
    {"prompt": "Write a haiku about the sea"},
    {"prompt": ["not", "a", "string"]},
])
def test_malformed_or_empty_payload_still_gets_a_label(payload):
    assert task_type("chat", payload) in LABELS
    assert task_type("messages", payload) in LABELS


def test_no_text_at_all_is_chat():
    assert task_type("chat", {"messages": []}) == "chat"
    assert task_type("messages", {"messages": [{"role": "user", "content": [{"type": "image"}]}]}) == "chat"


def test_payload_that_is_not_a_dict_is_chat():
    assert task_type("chat", None) == "chat"          # type: ignore[arg-type]
    assert task_type("chat", ["x"]) == "chat"         # type: ignore[arg-type]


def test_surrogates_and_control_characters_do_not_break_it():
    assert task_type("chat", chat(user("\ud800 translate to French: \x00\x1b[0m bonjour \udfff"))) in LABELS


# ---- bounded reading ------------------------------------------------------------------------------
def test_five_megabyte_message_classifies():
    text = "Summarize the following log:\n\n" + ("lorem ipsum dolor sit amet " * (MB5 // 27 + 1))[:MB5]
    assert task_type("chat", chat(user(text))) == "summarization"


def test_five_megabyte_block_and_system_prompt_classify():
    big = "x" * MB5
    payload = {"model": "c", "max_tokens": 1, "system": [{"type": "text", "text": big}] * 3,
               "messages": [user([{"type": "text", "text": big}, {"type": "text", "text": big}])]}
    assert task_type("messages", payload) in LABELS


def test_only_a_bounded_slice_is_read():
    # A cue in the middle of 5 MB is outside every slice the classifier reads, so it has no effect.
    filler = "the weather was mild and the market was quiet that day. " * (MB5 // 112)
    text = filler + " Translate into French, summarize, extract the fields, write a python function. " + filler
    assert len(text) > MB5
    assert task_type("chat", chat(user(text))) == task_type("chat", chat(user(filler + filler)))


def test_many_messages_and_blocks_are_bounded():
    messages = [user("Write a poem about rain")] + [{"role": "assistant", "content": "ok"}] * 100_000
    assert task_type("chat", chat(*messages)) == "chat"     # the ask is beyond the look-back window
    blocks = [{"type": "text", "text": "hello there"}] * 100_000
    assert task_type("messages", {"messages": [user(blocks)]}) in LABELS


# ---- the shipped weights --------------------------------------------------------------------------
ROOT = HERE.parent.parent


def test_shipped_weights_are_what_the_training_script_makes(tmp_path):
    # Deterministic training, and no edit of the training rows (or the lexicon) without a retrain.
    out = tmp_path / "weights.json"
    subprocess.run([sys.executable, str(ROOT / "tools" / "train_classifier.py"), "--out", str(out)],
                   check=True, capture_output=True, timeout=300, env={**os.environ, "PYTHONHASHSEED": "7"})
    assert out.read_bytes() == (ROOT / "kraken" / "policy" / "classify_weights.json").read_bytes()


def test_labels_do_not_depend_on_the_hash_seed():
    script = ("import json, sys; from kraken.policy.classify import task_type; "
              "rows = [json.loads(l) for l in open(sys.argv[1], encoding='utf-8') if l.strip() and not l.startswith('#')]; "
              "print(json.dumps([task_type(r['route'], r['payload']) for r in rows]))")
    here = [task_type(r["route"], r["payload"]) for r in load(HOLDOUT)]
    for seed in ("1", "2"):
        done = subprocess.run([sys.executable, "-c", script, str(HOLDOUT)], check=True, capture_output=True,
                              timeout=120, cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": seed})
        assert json.loads(done.stdout) == here


def test_the_loaded_classifier_takes_under_one_megabyte():
    # Weights, features and cue lexicon as a serving process holds them: 0.78 MB traced. Equal weight
    # vectors share one int, namespaces share keys, no set copies the keys, and the hand lexicon's
    # word tables stay text until the trainer asks (1.89 MB when each token had its own 80-byte int,
    # a frozenset stood beside each table and the lexicon was parsed at import).
    script = ("import tracemalloc, gc, json, re, struct, kraken.config.presets; tracemalloc.start(); "
              "import kraken.policy.classify; gc.collect(); print(tracemalloc.get_traced_memory()[0])")
    done = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=120, cwd=ROOT)
    assert int(done.stdout) < 1024 * 1024


FIRST_WEIGHT = r'(\n   "[^"\n]*": \[)-?\d+'      # the first weight of the first token


@pytest.mark.parametrize("pattern, replacement", [
    (r'"bias": \[', '"bias": [2000, '),                  # eight weights for seven labels
    (FIRST_WEIGHT, r"\g<1>1024"),                       # out of the packed field's range
    (FIRST_WEIGHT, r"\g<1>-1025"),
    (FIRST_WEIGHT, r"\g<1>20.5"),
    (r'\n  "tool": \{', '\n  "tools": {'),               # a namespace the features do not have
    (r'\n   (?="[^"\n]*": \[)', '\n  '),                 # not a line the trainer writes
], ids=["width", "high", "low", "float", "space", "line"])
def test_a_weights_file_the_trainer_did_not_write_is_refused(tmp_path, pattern, replacement):
    from kraken.policy.classify import WEIGHTS, _load
    text = WEIGHTS.read_text(encoding="utf-8")
    edited, count = re.subn(pattern, replacement, text, count=1)
    assert count == 1
    bad = tmp_path / "weights.json"
    bad.write_text(edited, encoding="utf-8")
    with pytest.raises(ValueError):
        _load(bad)
    assert set(_load(WEIGHTS)[0]) == set(LABELS) - {"embedding"}
