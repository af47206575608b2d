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

Per request: a few bytes.translate/split passes and one intersection with a table's keys per group,
all in C; only the hits run Python. Nothing is logged or kept: the only output is the label.
"""
from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import BinaryIO, Callable

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
# 32-bit fields: 7 labels make an 8-digit int (64 bytes; 40-bit fields took 80).
_SHIFT = 32
_OFFSET = 1 << 10       # -10.24 <= weight < 10.24 (checked at load): a hit adds < 2 * _OFFSET to a field
# A field of the sum holds < 5 * (hits + 1) * 2 * _OFFSET: room for 400,000 hits (a request has < 3,000).
_ENTRY = re.compile(rb'   "((?:[^"\\]|\\.)*)": \[(-?\d+(?:, -?\d+)*)\],?\n')
_SPACE = re.compile(rb'  "(\w+)": \{\n')


def _packer(width: int) -> Callable[[list[int]], int]:
    """weights -> one int of `width` offset fields (struct.pack: 3x faster to load than shifts)."""
    fields = struct.Struct(f"<{width}I")
    in_range = sum((2 * _OFFSET - 1) << (_SHIFT * k) for k in range(width))

    def pack(weights: list[int]) -> int:
        try:
            packed = int.from_bytes(fields.pack(*[w + _OFFSET for w in weights]), "little")
        except struct.error:            # not `width` integers, or one < -_OFFSET
            packed = -1
        if packed & ~in_range:
            raise ValueError(f"{WEIGHTS.name}: weights out of range or not one per label: {weights}")
        return packed
    return pack


def _header(lines: BinaryIO) -> dict:
    """The lines before the tokens ("about", "labels", "scale", "bias") as a JSON object."""
    head = b""
    for line in lines:
        if line == b' "spaces": {\n':
            return json.loads(head + b' "spaces": {}}')
        head += line
    raise ValueError(f"{WEIGHTS.name}: no \"spaces\" line")


def _load(path: Path) -> tuple[tuple[str, ...], int, tuple[Table, ...]]:
    """The weights file -> (label names, packed bias, one {token: packed weights} per namespace).
    Word tokens are bytes (the tokenizer works on bytes), CJK tokens str.

    Read a line at a time (the trainer writes one token per line), not json.loads'd whole (7,200
    lists of 7 ints made and dropped). Equal weight vectors share one int (2,600 of 7,200 are
    distinct), and a token known in several namespaces one key."""
    tables: list[Table] = [{} for _ in SPACES]
    keys: dict[object, object] = {}
    vectors: dict[bytes, int] = {}       # the text of a weight vector -> its int
    table, as_text = None, False
    with path.open("rb") as lines:
        doc = _header(lines)
        names = tuple(doc["labels"])
        if set(names) != set(LABELS) - {"embedding"}:
            raise ValueError(f"{path.name}: labels {names} are not the task types {LABELS}")
        pack = _packer(len(names))
        for line in lines:
            entry = _ENTRY.fullmatch(line)
            if entry and table is not None:
                token = entry[1] if b"\\" not in entry[1] else json.loads(b'"' + entry[1] + b'"').encode()
                token = token.decode() if as_text else token
                packed = vectors.get(entry[2])
                if packed is None:
                    packed = vectors[entry[2]] = pack([int(w) for w in entry[2].split(b",")])
                table[keys.setdefault(token, token)] = packed
            elif (space := _SPACE.fullmatch(line)) and space[1].decode() in SPACES:
                index = SPACES.index(space[1].decode())
                table, as_text = tables[index], index in (GRAMS, SYS_GRAMS, PREV_GRAMS)
            elif line.strip() not in (b"}", b"},"):
                raise ValueError(f"{path.name}: not a line the trainer writes: {line[:80]!r}")
    return names, pack(doc["bias"]), tuple(tables)


_NAMES, _BIAS, _TABLES = _load(WEIGHTS)
# Each table's keys as a set-like view: `view & tokens` is the known tokens, each once, as fast as
# a frozenset copy of the keys was (which took 0.3 MB).
_KNOWN = tuple(table.keys() for table in _TABLES)
_LOOKUP = tuple(table.__getitem__ for table in _TABLES)    # bound once, not per group and call
# The packed sum split into its fields by one struct.unpack (7 shifts and masks: 1 µs more a call).
_FIELDS = struct.Struct(f"<{len(_NAMES)}I")
_UNPACK, _SIZE = _FIELDS.unpack, _FIELDS.size


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
    known, lookup = _KNOWN, _LOOKUP
    for space, tokens, value in groups:
        found = known[space] & tokens
        if found:
            if value == 1.0:
                ask = sum(map(lookup[space], found), ask)
            else:
                body = sum(map(lookup[space], found), body)
    scores = _UNPACK((5 * ask + 2 * body).to_bytes(_SIZE, "little"))
    return _NAMES[scores.index(max(scores))]
