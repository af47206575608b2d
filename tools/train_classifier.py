"""Fit the task classifier's weights (kraken/policy/classify_weights.json) on the training rows.

    .venv/bin/python tools/train_classifier.py            # fit on train + eval sets, write the weights
    .venv/bin/python tools/train_classifier.py --cv 5     # 5-fold cross-validation on the same rows only

The model is a multinomial logistic regression over the features of
kraken/policy/classify_features.py (words per namespace, CJK characters and cue words, phrases, request
shape and syntax). It starts from the hand-written lexicon of kraken/policy/classify_cues.py and is
pulled back towards it (L2 towards the hand weights, not towards zero), so a cue the training rows
never show keeps its hand weight. Stochastic gradient descent in a fixed order (seeded shuffles),
no third-party dependency: the same rows give byte-identical weights.

Trained on tests/policy/classify_train.jsonl and tests/policy/classify_eval.jsonl. Never on
tests/policy/classify_holdout.jsonl: that set measures generalisation (bench/classify_bench.py).
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kraken.policy import classify_cues as cues  # noqa: E402
from kraken.policy.classify_features import (  # noqa: E402
    _BODY, COUNTED, GRAMS, META, PREV, PREV_GRAMS, SPACES, SYS_GRAMS, SYSTEM, USER, observe)

TRAIN_SETS = (REPO / "tests" / "policy" / "classify_train.jsonl", REPO / "tests" / "policy" / "classify_eval.jsonl")
OUT = REPO / "kraken" / "policy" / "classify_weights.json"
K = len(cues.NAMES)
EPOCHS = 30
RATE = 0.05             # learning rate, divided by (1 + epoch / 10)
PULL = 0.02             # L2 strength towards the hand weights
PRUNE = 0.05            # a token whose weights are all smaller than this is left out of the file
SCALE = 100             # weights are stored as integers in hundredths
SEED = 14

Feature = tuple[int, object]


def load(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip() and not line.startswith("#")]


def features(payload: dict) -> dict[Feature, float]:
    """What the classifier adds up for this payload: {(namespace, token): value}."""
    out: dict[Feature, float] = {}
    for space, tokens, value in observe(payload):
        for token in set(tokens):
            out[(space, token)] = out.get((space, token), 0.0) + value
    return dict(sorted(out.items()))        # a fixed order: float sums do not depend on the hash seed


def _merge(*tables: dict[str, dict[int, float]]) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for table in tables:
        for word, pairs in table.items():
            out.setdefault(word, {}).update(pairs)
    return out


def prior() -> tuple[dict[Feature, list[float]], list[float]]:
    """The hand weights as a starting point: {(namespace, token): [weight per label]}, bias."""
    w0: dict[Feature, list[float]] = {}

    def put(feature: Feature, label: int, weight: float) -> None:
        w0.setdefault(feature, [0.0] * K)[label] += weight

    for word, pairs in _merge(*cues.words()).items():
        token = word.encode()
        for label, weight in pairs.items():
            put((USER, token), label, weight)
            put((PREV, token), label, 0.5 * weight)
            if word not in cues.MANNER:
                put((SYSTEM, token), label, weight)
    for label, spec in cues.CJK_CUES.items():
        for cue, weight in cues.cues({label: spec}).items():
            for space, scale in ((GRAMS, 1.0), (SYS_GRAMS, 1.0), (PREV_GRAMS, 0.5)):
                put((space, cue), label, scale * weight[label])
    for _gate, phrase, label, weight in cues.PHRASES:
        put((META, b"~" + phrase.strip().encode()), label, weight)
    for name, pairs in cues.FLAGS.items():
        for label, weight in pairs.items():
            for token, units in _flag_tokens(name[1:]):
                put((META, token), label, weight * units)
    bias = [cues.BIAS.get(label, 0.0) for label in range(K)]
    return w0, bias


def _flag_tokens(name: str) -> list[tuple[bytes, float]]:
    """The META tokens a hand flag weight (per unit) applies to, with their units: a counted flag
    has a token per count, and syntax has a pasted-material twin ("$b_fence") worth _BODY."""
    counts = [(f"{name}{i}", float(i)) for i in range(1, COUNTED[name] + 1)] if name in COUNTED else [(name, 1.0)]
    out = [(f"${token}".encode(), units) for token, units in counts]
    if name in ("fence", "indent", "code_punct", "numbers", "math"):
        out += [(f"$b_{token}".encode(), units * _BODY) for token, units in counts]
    return out


def fit(rows: list[tuple[dict[Feature, float], int]], epochs: int = EPOCHS, rate: float = RATE,
        pull: float = PULL) -> tuple[dict[Feature, list[float]], list[float]]:
    w0, bias = prior()
    weights = {f: list(w) for f, w in w0.items()}
    zero = [0.0] * K
    order = list(range(len(rows)))
    for epoch in range(epochs):
        random.Random(SEED + epoch).shuffle(order)
        step = rate / (1 + epoch / 10)
        for i in order:
            x, y = rows[i]
            z = scores(weights, bias, x)
            top = max(z)
            e = [math.exp(s - top) for s in z]
            total = sum(e)
            grad = [p / total for p in e]
            grad[y] -= 1.0
            for k in range(K):
                bias[k] -= step * grad[k]
            for f, v in x.items():
                w = weights.setdefault(f, [0.0] * K)
                c = w0.get(f, zero)
                for k in range(K):
                    w[k] -= step * (grad[k] * v + pull * (w[k] - c[k]))
    return weights, bias


def scores(weights: dict[Feature, list[float]], bias: list[float],
           x: dict[Feature, float]) -> list[float]:
    """Each label's linear score of one row's features."""
    z = list(bias)
    for f, v in x.items():
        w = weights.get(f)
        if w is not None:
            for k in range(K):
                z[k] += w[k] * v
    return z


def predict(weights: dict[Feature, list[float]], bias: list[float], x: dict[Feature, float]) -> int:
    z = scores(weights, bias, x)
    return z.index(max(z))


def rows_of(cases: list[dict]) -> list[tuple[dict[Feature, float], int]]:
    return [(features(c["payload"]), cues.NAMES.index(c["label"])) for c in cases]


def cross_validate(cases: list[dict], folds: int) -> float:
    cases = sorted(cases, key=lambda c: c["id"])
    random.Random(SEED).shuffle(cases)
    correct = 0
    for fold in range(folds):
        test = cases[fold::folds]
        train = [c for i, c in enumerate(cases) if i % folds != fold]
        weights, bias = fit(rows_of(train))
        correct += sum(predict(weights, bias, x) == y for x, y in rows_of(test))
    return correct / len(cases)


def serialise(weights: dict[Feature, list[float]], bias: list[float]) -> str:
    """{"spaces": {namespace: {token: [weight per label, in hundredths]}}, "bias": [...]}: one line
    per token, sorted, so a retrain shows as a readable diff."""
    spaces: dict[str, dict[str, list[int]]] = {name: {} for name in SPACES}
    for (space, token), w in weights.items():
        if max(abs(x) for x in w) < PRUNE:
            continue
        if isinstance(token, bytes):
            try:
                token = token.decode("utf-8")
            except UnicodeDecodeError:      # a word cut inside a character: never matched again
                continue
        spaces[SPACES[space]][token] = [round(x * SCALE) for x in w]
    lines = ['{"about": "kraken/policy/classify.py weights, written by tools/train_classifier.py; do not edit",',
             f' "labels": {json.dumps(list(cues.NAMES))},', f' "scale": {SCALE},',
             f' "bias": {json.dumps([round(b * SCALE) for b in bias])},', ' "spaces": {']
    for i, name in enumerate(SPACES):
        rows = [f"   {json.dumps(token, ensure_ascii=False)}: {json.dumps(w)}" for token, w in sorted(spaces[name].items())]
        lines.append(f'  "{name}": {{\n' + ",\n".join(rows) + "\n  }" + ("," if i < len(SPACES) - 1 else ""))
    return "\n".join(lines) + "\n }\n}\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cv", type=int, default=0, help="k-fold cross-validation on the training rows; writes nothing")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    cases = [case for path in TRAIN_SETS for case in load(path)]
    if args.cv:
        print(f"{args.cv}-fold cross-validated accuracy on {len(cases)} training rows: {cross_validate(cases, args.cv):.3f}")
        return 0
    rows = rows_of(cases)
    weights, bias = fit(rows)
    accuracy = sum(predict(weights, bias, x) == y for x, y in rows) / len(rows)
    args.out.write_text(serialise(weights, bias), encoding="utf-8")
    print(f"trained on {len(rows)} rows, training accuracy {accuracy:.3f}; wrote {args.out.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
