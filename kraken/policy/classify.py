"""Task type of a request, a label stored with its record; the text itself is never kept or logged.

Labels: code_gen, chat, summarization, extraction, translation, reasoning, embedding, other.

- code_gen       write, fix, explain or convert code, queries, shell commands, configs
- chat           conversation, questions, advice, recommendations, support and RAG answers
- summarization  shorten or recap a given text, or a known work (tl;dr, key points, gist)
- extraction     pull fields, entities or values out of a text into structure
- translation    between human languages (code-to-code conversion is code_gen)
- reasoning      maths, logic puzzles, probability, proofs, step-by-step problem solving
- other          creative writing, rewriting/editing/tone, classification and moderation, grading
- embedding      every request on the embeddings route

How: a linear model. kraken/policy/classify_features.py reads a bounded slice of the request
(the last user message's two ends, the user message before it, the system prompt, CJK characters
and cue words, tool and schema names, response_format, a forced tool_choice, code and maths syntax)
as (namespace, tokens, value) groups; each token the weights file knows adds its per-label weights
times the value; the highest score wins. The weights (classify_weights.json, loaded once at import)
are fitted by tools/train_classifier.py on tests/policy/classify_train.jsonl and classify_eval.jsonl,
starting from and pulled towards the hand-written lexicon of classify_cues.py. Accuracy on the
held-out set tests/policy/classify_holdout.jsonl, which no weight was fitted on, is what to expect
of new traffic (bench/classify_bench.py prints both, per label and per language).

Per request: a few bytes.translate/split passes and one set intersection per group, all in C; only
the hits run Python. Nothing is logged or kept: the only output is the label.
"""
from __future__ import annotations

import json
from pathlib import Path

from kraken.config.presets import TASK_TYPES
from kraken.policy.classify_features import GRAMS, PREV_GRAMS, SPACES, SYS_GRAMS, observe

__all__ = ["LABELS", "task_type"]

LABELS = TASK_TYPES
WEIGHTS = Path(__file__).with_name("classify_weights.json")

Table = dict[object, int]

# A token's weights (integer hundredths, one per label) packed into one int, each field offset to
# be non-negative: the per-label sums of all hits are then one C-level sum() of ints, split once
# (zip(*hits) + sum per label cost ~4 µs at 30 hits; this ~1 µs). Sums stay exact: a label never
# depends on the order a set yields its hits in (and so not on the process's hash seed).
_SHIFT = 40
_OFFSET = 1 << 16       # |weight| < 655.36 (checked at load)
_MASK = (1 << _SHIFT) - 1       # a field holds < 5 * hits * 2 * _OFFSET: room for 10**6 hits


def _pack(weights: list[int]) -> int:
    if any(abs(int(w)) >= _OFFSET for w in weights):
        raise ValueError(f"{WEIGHTS.name}: a weight out of range: {weights}")
    return sum((int(w) + _OFFSET) << (_SHIFT * k) for k, w in enumerate(weights))


def _load(path: Path) -> tuple[tuple[str, ...], int, tuple[Table, ...], tuple[frozenset, ...]]:
    """The weights file -> (label names, packed bias, one {token: packed weights} per namespace,
    and the key set of each). Word tokens are bytes (the tokenizer works on bytes), CJK tokens str."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    names = tuple(doc["labels"])
    if set(names) != set(LABELS) - {"embedding"}:
        raise ValueError(f"{path.name}: labels {names} are not the task types {LABELS}")
    tables = []
    for index, space in enumerate(SPACES):
        as_text = index in (GRAMS, SYS_GRAMS, PREV_GRAMS)
        tables.append({token if as_text else token.encode(): _pack(weights)
                       for token, weights in doc["spaces"].get(space, {}).items()})
    return names, _pack(doc["bias"]), tuple(tables), tuple(frozenset(t) for t in tables)


_NAMES, _BIAS, _TABLES, _KEYS = _load(WEIGHTS)
_SHIFTS = tuple(_SHIFT * k for k in range(len(_NAMES)))


def task_type(route: str, payload: dict) -> str:
    """The task label for one request on `route` ("chat", "messages" or "embeddings")."""
    if route == "embeddings":
        return "embedding"
    if not isinstance(payload, dict):
        return "chat"
    groups = observe(payload)
    if not groups:
        return "chat"
    # Pasted material counts _BODY = 2/5: scores are 5 * ask + 2 * body, in integers. Every field
    # carries the same (5 * asked + 2 * bodied) * _OFFSET, so the fields compare as they are.
    ask, body = _BIAS, 0
    for space, tokens, value in groups:
        found = _KEYS[space].intersection(tokens)
        if found:
            if value == 1.0:
                ask += sum(map(_TABLES[space].__getitem__, found))
            else:
                body += sum(map(_TABLES[space].__getitem__, found))
    total = 5 * ask + 2 * body
    scores = [(total >> shift) & _MASK for shift in _SHIFTS]
    return _NAMES[scores.index(max(scores))]
