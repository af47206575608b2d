"""What the task classifier sees of a request: a bounded slice of its text and its shape, as features.

`observe(payload)` returns groups of (namespace, tokens, value); the classifier adds, for every token
its weights file knows in that namespace, the token's weights times the value. Training
(tools/train_classifier.py) calls the same function, so what is learnt is exactly what is read.

Namespaces: USER (words of the last user message that has text), SYSTEM (words of the system
prompt), PREV (words of the user message before it: "and in Spanish?" needs it), GRAMS, SYS_GRAMS
and PREV_GRAMS (characters of CJK text, which has no spaces, and the cue words in it), TOOL (words
of tool names and of a JSON schema's name and property names) and META (shape and syntax:
"$rf_json", "$fence", "$numbers2", ..., and gated phrases "~tl dr").

Cost is bounded whatever the request: at most _MAX_MESSAGES messages and _MAX_BLOCKS content blocks
are looked at; of a long user text only its two ends (_INSTR characters each, cut at a blank line)
are read for words, and only its first _HEAD and last _TAIL characters for syntax; of the system
prompt _SYS_HEAD + _SYS_TAIL characters; CJK tokens come from _GRAM characters at each end. Words
are found without a regex: lower-case, encode, map punctuation to spaces with one bytes.translate,
split, all in C (a regex tokenizer measured 3-4x slower). The text is never copied whole, kept or
logged: only the label leaves the classifier.
"""
from __future__ import annotations

import re

from kraken.policy.classify_cues import CJK_CUES, CODE_TOOLS, HELPERS, LANGUAGES, PHRASES, cues

USER, SYSTEM, PREV, GRAMS, SYS_GRAMS, PREV_GRAMS, TOOL, META = range(8)
SPACES = ("user", "system", "prev", "grams", "sys_grams", "prev_grams", "tool", "meta")
_GRAMS_OF = {USER: GRAMS, SYSTEM: SYS_GRAMS, PREV: PREV_GRAMS}

_HEAD = 2048            # characters of the user text ever read from the start
_TAIL = 512             # ... and from the end
_INSTR = 96             # the instruction zone: this many characters at each end of the user text
_SYS_HEAD = 192         # system prompts state the role first
_SYS_TAIL = 64
_GRAM = 32              # CJK characters at each end of a text that are read
_MAX_MESSAGES = 8       # look back at most this many messages for the last user text
_MAX_BLOCKS = 32        # content blocks read per message
_MAX_TOOLS = 16         # tool (or schema property) names read
_BODY = 0.4             # a word in pasted material rather than in the ask (classify.py: 2/5, exactly)

# bytes.translate table: ASCII letters lower-cased, digits kept (an id like 7f3a9c stays one unknown
# word, not the cue letters f, a, c); ASCII punctuation except '+', '#' (c++, c#) and '_'
# (parse_date is an identifier, not the verb) becomes spaces, and so do the UTF-8
# lead bytes 0xC2 (U+0080-00BF: « » ¿ ¡ NBSP) and 0xE2 (U+2000-2FFF: curly quotes, dashes), which
# frees the word before them. Other bytes >= 0x80 are kept: accented Latin, Cyrillic and CJK words
# survive intact.
_NORM = bytes(b if (97 <= b <= 122 or 48 <= b <= 57 or (b >= 128 and b not in (0xC2, 0xE2)) or b in b"+#_")
              else (b + 32 if 65 <= b <= 90 else 32) for b in range(256))
# The same with every byte >= 0x80 a space: the ASCII words inside CJK text ("用Python写").
_NORM_ASCII = _NORM[:128] + b" " * 128
# Deleting these leaves only UTF-8 lead bytes of U+3000-DFFF: kana, CJK ideographs, Hangul.
_NOT_CJK = bytes(b for b in range(256) if not 0xE3 <= b <= 0xED)
# Deleting these leaves only ASCII punctuation and digits: where code and maths show.
_LETTERS = bytes(b for b in range(256) if chr(b).isalpha() or b >= 128 or b in b" \t\r\n")
# Numbers are counted as the digit runs among the punctuation (a regex findall made one bytes object
# per number: 2.5-4.5 µs of a table of prices).
_DIGIT_RUNS = bytes(49 if 48 <= b <= 57 else 32 for b in range(256))
# Syntax that prose rarely has, looked for among the punctuation only ("foo();" -> "();").
_CODE_PUNCT = re.compile(rb"\(\);|\)\{|=>|!=|==|\+=|</|::|\[\]|->|\{\}|\(\"|\('")
_NOT_MATH = bytes(b for b in range(256) if b not in b"=^+%*/")
_QUOTES = re.compile('["\u201c\u2018\u00ab\u300c\u300e]')   # " “ ‘ « 「 『
_SAMPLE = 384           # characters whose punctuation is looked at
_PUNCT = 256            # ... and at most this many punctuation characters

_LANGS = frozenset(w.encode() for w in LANGUAGES.split())
# CJK has no spaces: its tokens are its characters plus the multi-character cues found in it with
# one alternation (one C pass). Character bigrams would need no cue list but cost ~150 ns each.
_CJK = re.compile("|".join(sorted((c for c in cues(CJK_CUES) if len(c) > 1), key=len, reverse=True)))
# Counted features and their caps: "$numbers1" .. "$numbers4" (a token per count, no scaling).
COUNTED = {"code_punct": 5, "numbers": 4, "math": 3, "lang": 3}
_COUNTS = {name.encode(): [f"{name}{i}".encode() for i in range(cap + 1)] for name, cap in COUNTED.items()}
_LANG_COUNT = [b"$" + token for token in _COUNTS[b"lang"]]
_GATES: dict[bytes, tuple[tuple[bytes, bytes], ...]] = {}
for _gate, _phrase, _label, _w in PHRASES:
    _item = (_phrase.encode(), b"~" + _phrase.strip().encode())
    if _item not in _GATES.get(_gate.encode(), ()):
        _GATES[_gate.encode()] = _GATES.get(_gate.encode(), ()) + (_item,)
_GATE_KEYS = frozenset(_GATES)
_SPECIAL = _GATE_KEYS | _LANGS
_SHAPE_KEYS = frozenset(("response_format", "tool_choice", "tools"))     # what _shape reads
del _gate, _phrase, _label, _w, _item

Group = tuple[int, list, float]


def observe(payload: dict) -> list[Group]:
    """The feature groups of one chat-shaped request (OpenAI chat, Anthropic messages, or a legacy
    `prompt`); a malformed payload yields fewer groups, never an exception."""
    groups: list[Group] = []
    meta: list[bytes] = []                      # shape and syntax: one group, each token worth 1
    messages = payload.get("messages")
    user, prev, turns = _user_texts(messages) if isinstance(messages, list) else ("", "", 0)
    if not user:
        prompt = payload.get("prompt")          # legacy completions shape
        user = prompt if isinstance(prompt, str) else ""
    n = len(user)
    if 0 < n <= 2 * _INSTR:
        raw = _words(user, USER, 1.0, groups, meta)
        # find, not `in`: bytes.__contains__ tries the operand as an int first and formats the
        # TypeError it then clears (3.11)
        _punct(raw, raw.find(b"```") >= 0, raw.find(b"\n    ") >= 0, b"$", meta)
    elif n:
        head, tail, head_cut, tail_cut = _ends(user, n)
        _words(head, USER, 1.0 if head_cut or not tail_cut else _BODY, groups, meta)
        _words(tail, USER, 1.0 if tail_cut or not head_cut else _BODY, groups, meta)
        _syntax(user, meta)
        meta.append(b"$long" if n <= 1500 else b"$very_long")
    if n:
        end = user[-3:].rstrip()
        if end.endswith(("?", "\uff1f")):
            meta.append(b"$question")
        if n < 40:
            meta.append(b"$short")
        if n <= 2 * _INSTR and (user.count("'") >= 2 or '"' in user or (not user.isascii() and _QUOTES.search(user))):
            meta.append(b"$quoted")           # a quoted term: to translate, define, classify, extract
    if prev:
        _words(prev if len(prev) <= 2 * _INSTR else prev[:_INSTR] + "\n" + prev[-_INSTR:], PREV, 1.0, groups, meta)
    if turns >= 3:
        meta.append(b"$multi_turn")
    system = _system_text(payload, messages)
    if system:
        if len(system) > 400:
            meta.append(b"$system_long")
        if len(system) > _SYS_HEAD + _SYS_TAIL:
            system = system[:_SYS_HEAD] + "\n" + system[-_SYS_TAIL:]
        _words(system, SYSTEM, 1.0, groups, meta)
    if not _SHAPE_KEYS.isdisjoint(payload):
        _shape(payload, groups, meta)
    if meta:
        groups.append((META, meta, 1.0))
    return groups


# ---- reading the payload (bounded) ---------------------------------------------------------------
def _content_text(content: object) -> str:
    """A message's text: a string as is (sliced later), or its text blocks, each clipped to its two
    ends, from the first and last _MAX_BLOCKS // 2 blocks (an ask often follows a pasted block)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    half = _MAX_BLOCKS // 2
    blocks = content if len(content) <= _MAX_BLOCKS else content[:half] + content[-half:]
    parts = []
    for block in blocks:
        if isinstance(block, dict) and block.get("type") in ("text", "input_text"):
            text = block.get("text")
        elif isinstance(block, str):
            text = block
        else:
            continue
        if isinstance(text, str) and text:
            parts.append(text if len(text) <= _HEAD + _TAIL else text[:_HEAD] + "\n" + text[-_TAIL:])
    return parts[0] if len(parts) == 1 else "\n\n".join(parts)     # a block is a paragraph


def _user_texts(messages: list) -> tuple[str, str, int]:
    """The last user text, the user text before it, and how many turns there are. An agent loop's
    last user turn may hold only tool results: look back a little for the ask."""
    found: list[str] = []
    for message in reversed(messages[-_MAX_MESSAGES:]):
        if isinstance(message, dict) and message.get("role") == "user":
            text = _content_text(message.get("content"))
            if text and not (text[:_TAIL].isspace() and text[-_TAIL:].isspace()):
                found.append(text)
                if len(found) == 2:
                    break
    return (found[0] if found else "", found[1] if len(found) > 1 else "", len(messages))


def _system_text(payload: dict, messages: object) -> str:
    system = payload.get("system")              # Anthropic: a string or a list of text blocks
    if system is not None:
        return _content_text(system)
    if isinstance(messages, list):              # OpenAI: a leading system/developer message
        for message in messages[:2]:
            if isinstance(message, dict) and message.get("role") in ("system", "developer"):
                return _content_text(message.get("content"))
    return ""


def _ends(user: str, n: int) -> tuple[str, str, bool, bool]:
    """The first and last _INSTR characters of a long user text, each cut at a blank line (or, at
    the start, a colon and a newline) if there is one, and whether it was."""
    cut = user.find("\n\n", 0, _INSTR)
    if 0 <= cut < 24:                   # a greeting or a title first: the ask may be the next paragraph
        cut = user.find("\n\n", cut + 2, _INSTR)
    if cut < 0:
        cut = user.find(":\n", 0, _INSTR)
    start = user.rfind("\n\n", n - _INSTR)
    return (user[:cut] if cut > 0 else user[:_INSTR], user[start:] if start >= 0 else user[-_INSTR:],
            cut > 0, start >= 0)


# ---- features -------------------------------------------------------------------------------------
def _words(text: str, space: int, value: float, groups: list[Group], meta: list[bytes]) -> bytes:
    """Words of `text` (already bounded) into `space`; CJK characters and cues into GRAMS; the
    gated phrases and language names of the ask into META. Returns the text as UTF-8 (lower-cased
    unless ASCII: _NORM lower-cases ASCII letters itself, so ASCII text skips str.lower)."""
    if text.isascii():
        raw = text.encode()
        norm = raw.translate(_NORM)
        words = norm.split()
    else:
        text = text.lower()
        raw = text.encode("utf-8", "replace")
        norm = raw.translate(_NORM)
        words = norm.split()
        if raw.translate(None, _NOT_CJK):
            words += raw.translate(_NORM_ASCII).split()
            cjk = text if len(text) <= 2 * _GRAM else text[:_GRAM] + text[-_GRAM:]
            grams = list(cjk)
            cues = _CJK.findall(cjk)
            if cues:
                grams += cues
            groups.append((_GRAMS_OF[space], grams, value))
    groups.append((space, words, value))
    if space != USER or value != 1.0:           # phrases and language names count in the ask only
        return raw
    special = _SPECIAL.intersection(words)
    if not special:
        return raw
    norm = b" " + norm + b" "                   # spaces are word boundaries for phrases
    for gate in _GATE_KEYS.intersection(special):
        for phrase, name in _GATES[gate]:
            if phrase in norm:
                meta.append(name)
    languages = len(_LANGS.intersection(special))
    if languages:
        meta.append(_LANG_COUNT[min(languages, 3)])
        if HELPERS.search(norm):
            meta.append(b"$lang_helper")
    return raw


def _syntax(text: str, meta: list[bytes]) -> None:
    """Syntax of a long text: only its first _HEAD and last _TAIL characters are searched (bounded
    finds, no copy), and only the punctuation of its first _SAMPLE characters is counted; it is
    mostly the pasted material's, so it counts as body."""
    fence = text.find("```", 0, _HEAD) >= 0
    indent = text.find("\n    ", 0, _HEAD) >= 0
    if len(text) > _HEAD:
        tail = max(_HEAD, len(text) - _TAIL)
        fence = fence or text.find("```", tail) >= 0
        indent = indent or text.find("\n    ", tail) >= 0
    _punct(text[:_SAMPLE].encode("utf-8", "replace"), fence, indent, b"$b_", meta)


def _punct(raw: bytes, fence: bool, indent: bool, prefix: bytes, meta: list[bytes]) -> None:
    """Code and maths show in punctuation: fences, indented lines, operators, digits. Counts are
    tokens of their own ("$numbers3"), and so is the syntax of pasted material ("$b_fence")."""
    if fence:
        meta.append(prefix + b"fence")
    if indent:
        meta.append(prefix + b"indent")
    punct = raw.translate(None, _LETTERS)[:_PUNCT]     # only ASCII punctuation and digits are left
    if len(punct) < 2:
        return
    code = len(set(_CODE_PUNCT.findall(punct)))
    if code:
        meta.append(prefix + _COUNTS[b"code_punct"][min(code, 5)])
    runs = punct.translate(_DIGIT_RUNS)          # b"1" per digit, b" " per other byte
    numbers = runs.count(b" 1") + runs.startswith(b"1")     # digit runs: no bytes object per number
    if numbers:
        meta.append(prefix + _COUNTS[b"numbers"][min(numbers, 4)])
        math = len(set(punct.translate(None, _NOT_MATH)))
        if math:
            meta.append(prefix + _COUNTS[b"math"][min(math, 3)])


def _shape(payload: dict, groups: list[Group], meta: list[bytes]) -> None:
    """response_format, a forced tool, and the words of tool and schema names."""
    names: list[str] = []
    fmt = payload.get("response_format")
    if isinstance(fmt, dict):
        kind = fmt.get("type")
        if kind == "json_schema":
            meta.append(b"$rf_schema")
            spec = fmt.get("json_schema")
            if isinstance(spec, dict):
                _schema_names(spec, names)
        elif kind == "json_object":
            meta.append(b"$rf_json")
    choice = payload.get("tool_choice")
    if choice == "required" or choice == "any" or (
            isinstance(choice, dict) and choice.get("type") in ("function", "tool", "any")):
        meta.append(b"$forced")     # forcing a tool call is how structured output is asked
    tools = payload.get("tools")
    if isinstance(tools, list) and tools:
        meta.append(b"$tools")
        tool_names = []
        for tool in tools[:_MAX_TOOLS]:
            if isinstance(tool, dict):
                fn = tool.get("function")
                name = fn.get("name") if isinstance(fn, dict) else tool.get("name")
                if isinstance(name, str):
                    tool_names.append(name[:64].lower())
        joined = " ".join(tool_names)
        if sum(1 for cue in CODE_TOOLS if cue in joined) >= 2:
            meta.append(b"$code_tools")
        names += tool_names
    if names:
        words = " ".join(names).encode("utf-8", "replace").replace(b"_", b" ").translate(_NORM).split()
        groups.append((TOOL, words, 1.0))


def _schema_names(spec: dict, names: list[str]) -> None:
    name = spec.get("name")
    if isinstance(name, str):
        names.append(name[:64].lower())
    schema = spec.get("schema")
    props = schema.get("properties") if isinstance(schema, dict) else None
    if isinstance(props, dict):
        for key in list(props)[:_MAX_TOOLS]:
            if isinstance(key, str):
                names.append(key[:64].lower())
