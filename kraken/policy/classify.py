"""Task type of a request, a label stored with its record; the text itself is never kept or logged.

Labels: code_gen, chat, summarization, extraction, translation, reasoning, embedding, other.

- code_gen       write, fix, explain or convert code, queries, shell commands, configs
- chat           conversation, questions, advice, recommendations; the default
- summarization  shorten or recap a given text, or a known work (tl;dr, key points, gist)
- extraction     pull fields, entities or values out of a text; structured output
- translation    between human languages (code-to-code conversion is code_gen)
- reasoning      maths, logic puzzles, probability, proofs, step-by-step problem solving
- other          creative writing, rewriting/editing/tone, classification and moderation, grading
- embedding      every request on the embeddings route

How: a weighted bag of cue words (and a few gated phrases) over the system prompt and the last user
message that has text, plus the request shape (response_format, a forced tool_choice, tool names)
and a little syntax (code fences, operators, digits). A short user message is read whole. Of a long
one only the two ends are read for words (_INSTR characters each, cut at a blank line): that is
where the ask is; when only one end is set off by a blank line the other is pasted material and
counts _BODY_WEIGHT, as do the digits and punctuation of the whole bounded slice. The highest score
wins; if nothing clears _CHAT_BASELINE the label is chat. The weights were set by hand against
tests/policy/classify_eval.jsonl; a keyword classifier does best on phrasings it has seen, so
expect lower accuracy on new traffic than on that set (bench/classify_bench.py).

Cost is bounded whatever the request: at most _MAX_MESSAGES messages and _MAX_BLOCKS content blocks
are looked at, and at most the first _HEAD and last _TAIL characters of the user text (words: only
2 * _INSTR) and _SYS_HEAD + _SYS_TAIL of the system prompt are lower-cased and scanned; the text is
never copied whole. Words are found without a regex: lower-case, encode, map punctuation to spaces
with one bytes.translate, split, intersect with the cue set, all in C; only the few hits run Python.
A regex tokenizer measured 3-4x slower here (22 µs vs 6 µs for 640 characters).
"""
from __future__ import annotations

import re

from kraken.config.presets import TASK_TYPES

__all__ = ["LABELS", "task_type"]

LABELS = TASK_TYPES
CODE, CHAT, SUMM, EXTR, TRAN, REAS, OTHER = range(7)
LANG = 7                # a cue's pseudo-label: the word names a human language
_NAMES = ("code_gen", "chat", "summarization", "extraction", "translation", "reasoning", "other")

_HEAD = 2048            # characters of the user text ever read from the start
_TAIL = 512             # ... and from the end
_INSTR = 160            # the instruction zone: this many characters at each end of the user text
_SYS_HEAD = 512         # system prompts state the role first
_SYS_TAIL = 128
_MAX_MESSAGES = 8       # look back at most this many messages for the last user text
_MAX_BLOCKS = 32        # content blocks read per message
_BODY_WEIGHT = 0.4      # a cue in pasted material rather than in the ask
_CHAT_BASELINE = 0.9    # another label must score more than this to win


def _cues(table: dict[int, str]) -> dict[bytes, tuple[tuple[int, float], ...]]:
    """{label: "word:weight word ..."} -> {word: ((label, weight), ...)}; a bare word weighs 1."""
    out: dict[bytes, dict[int, float]] = {}
    for label, spec in table.items():
        for item in spec.split():
            word, _, weight = item.rpartition(":") if ":" in item else (item, "", "1")
            out.setdefault(word.encode(), {})[label] = float(weight)     # a repeat replaces, never adds
    return {word: tuple(pairs.items()) for word, pairs in out.items()}


# Weights are rough log-odds by hand: 3 = nearly decisive alone, 1 = a hint, 0.5 = a tie-breaker.
_WORDS = _cues({
    CODE: """
        python:3 javascript:3 typescript:3 java:2.5 kotlin:3 swift:1.5 rust:2 rustc:3 golang:3 ruby:1.5
        php:3 perl:2 scala:2 haskell:3 elixir:2 clojure:3 lua:2 dart:1 matlab:2 c++:3 c#:3 csharp:3 cpp:3
        sql:3 mysql:3 postgres:2 postgresql:3 sqlite:3 bash:3 shell:1.5 zsh:3 powershell:3 html:1.5 css:2.5
        react:2 vue:2 angular:2 django:2.5 flask:2 fastapi:3 rails:1.5 node:1 nodejs:3 npm:3 pip:2 yarn:1
        docker:2.5 dockerfile:3 kubernetes:2.5 kubectl:3 terraform:3 ansible:3 yaml:2 nginx:2 git:2.5
        github:2 gitlab:2 regex:3 regexp:3 excel:1 formula:1 vba:3 function:2 functions:2 func:2 def:1.5
        method:1.5 class:1 struct:2 enum:1.5 interface:1 variable:1.5 variables:1.5 array:1.5 arrays:1.5
        dict:1.5 hashmap:3 loop:1.5 recursion:2 recursive:1.5 recursively:1.5 algorithm:1.5 api:1 endpoint:2
        endpoints:2 handler:2 query:1.5 queries:1.5 script:1.5 scripts:1.5 code:2.5 coding:2 program:1.5
        programming:2 compile:2.5 compiler:2.5 compiles:2.5 bug:1.5 bugs:1.5 debug:2 error:1 errors:0.5
        exception:2 traceback:3 stacktrace:3 typeerror:3 valueerror:3 nullpointerexception:3 segfault:3
        undefined:1.5 null:1 async:2.5 await:2.5 callback:2 callbacks:2 promise:1 thread:1 mutex:3
        lambda:1.5 refactor:3 implement:2 implementation:1.5 unit:1 tests:1 pytest:3 jest:3 junit:3 cli:2
        flag:0.5 repo:2 repository:2 commit:1.5 merge:1 optimize:1 select:0.8 rows:0.5 deploy:1.5 workflow:1
        migration:1.5 schema:0.5 json:0.3 component:1.5 hook:1 useeffect:3 usestate:3 pointer:2 malloc:3
        int:1.5 const:1.5 println:3 printf:3 console:1.5 import:1 return:0.5 self:0.3 cache:1 lru:3 crc:3
        binary:1 debounce:3 throttle:1.5 generics:3 idiomatic:2 file:0.5 files:0.5 docstring:3 docstrings:3
        snippet:1.5 oneliner:2 linter:3 ruff:3 webpack:3 vite:3 frontend:1 backend:1 serialize:1.5
        deserialize:2 serializes:1.5 parser:1 tokenizer:1 boilerplate:1.5 syntax:1.5 pandas:3 numpy:3
        dataframe:3 groupby:3 matplotlib:3 scipy:3 sklearn:3 pytorch:3 tensorflow:3 keras:3 jupyter:2
        cron:2.5 crontab:3 multiindex:3 pyspark:3 kafka:2 redis:2 mongodb:3 graphql:3 xml:1 toml:2
        makefile:3 cmake:3 gradle:3 maven:3 gcc:3 clang:3 jvm:3 dotnet:3 aws:1.5 gcp:1.5 nextjs:3 nestjs:3
        laravel:3 jquery:3 tailwind:2.5 selenium:3 playwright:3 puppeteer:3 oauth:2 jwt:3 cors:3 websocket:3
        grpc:3 protobuf:3 sdk:1.5 library:0.8 module:1 dependency:1 dependencies:1 install:1 iterate:1.5
        iterator:2 closure:1.5 inheritance:1.5 polymorphism:2 boolean:2 string:1.5 strings:1.5 float:1.5
        tuple:2.5 vim:2.5 vscode:3 ide:2 terminal:1.5 linux:1.5 ubuntu:1.5 ssh:2.5 sudo:3 chmod:3 grep:3
        awk:3 curl:2.5 wget:3 conda:3 venv:3 virtualenv:3 helm:2 microservice:2 microservices:2 database:1.5
        db:1.5 orm:3 sqlalchemy:3 prisma:3 deadlock:3 concurrency:2 multiprocessing:3 threading:3 asyncio:3
        goroutine:3 goroutines:3 unittest:3 mock:1.5 mocking:2 assert:2 lint:2.5 eslint:3 tsconfig:3 babel:2
        pnpm:3 deno:3 android:1.5 xcode:3 swiftui:3 flutter:3 shader:3 opengl:3 cuda:3 runtime:2 webhook:2.5
        regexes:3 función:2.5 funcion:2.5 código:2.5 codigo:2.5 programa:1 methode:2 funktion:2 fonction:2
        """,
    CHAT: """
        hi:1 hello:1 hey:0.8 thanks:1 thank:0.8 morning:0.5 evening:0.3 recommend:1 recommendation:1
        recommendations:1 advice:1 tips:1 suggestions:0.5 you:0.3 your:0.2 feel:0.5 feelings:0.8 think:0.3
        opinion:1 favorite:0.8 favourite:0.8 should:0.4 why:0.4 remember:0.5 weather:0.8 trip:0.5
        itinerary:0.5 visit:0.5 history:0.4 difference:0.4 between:0.2 pros:0.5 cons:0.5 tell:0.3
        suggest:0.8 book:0.5 books:0.5 movie:0.5 movies:0.5 support:1 customer:0.5 customers:0.5
        assistant:0.3 companion:1 conversation:0.5 chatbot:1 chat:1 hola:1 bonjour:1 hallo:1 gracias:1
        merci:1 danke:1 привет:1 спасибо:1
        """,
    SUMM: """
        summarize:3.5 summarise:3.5 summarized:3 summarised:3 summarizing:3 summarising:3 summary:3
        summaries:3 summarization:3 summariser:3 summarizer:3 summarisation:3 tldr:3.5 recap:3 gist:3
        condense:3 condensed:2.5 synopsis:3 abstract:1.5 overview:1.5 takeaways:2.5 takeaway:2 rundown:3
        digest:1.5 outline:1 recapitulate:3 essence:2 crux:2 precis:3 abridge:3 abridged:3 important:0.8
        outcomes:0.8 decisions:0.8 conclusions:1 riassumere:3.5 podsumuj:3.5 highlights:1.5 nutshell:2.5
        briefly:1.5 brief:1.2 shorten:1.5 short:0.8 shorter:0.5 bullet:1.2 bullets:1.2 points:0.8 key:0.5
        main:0.6 sentences:1 sentence:0.5 paragraph:0.4 skim:2 decided:0.6 discussed:0.8 topics:0.6
        executive:0.8 minutes:0.3 plot:0.6 chapter:0.6 resumen:3 resumir:3 resume:1 resuma:3 resúmelo:3
        résume:3 résumez:3 résumer:3 résumé:1 zusammenfassung:3.5 zusammenfassen:3.5 zusammen:1.5 fasse:2
        kurz:0.5 riassunto:3.5 riassumi:3.5 resumo:3 samenvatting:3.5 samenvatten:3.5 кратко:1.5 резюме:2.5
        суммируй:3 перескажи:3
        """,
    EXTR: """
        extract:3.5 extracts:3 extraction:3 extracting:3 extrae:3.5 extraer:3.5 extrais:3.5 extraire:3.5
        extrahiere:3.5 extrahieren:3.5 estrai:3.5 parse:2.5 parsing:1.5 pull:1.2 fields:2 field:1.2
        entities:2.5 entity:2.5 named:0.8 json:1.5 csv:1.5 table:0.8 identify:1.2 find:0.6 list:0.8
        every:0.6 all:0.3 names:0.8 dates:1.5 date:0.6 amounts:1.5 amount:0.8 addresses:1.2 address:0.6
        numbers:0.8 number:0.5 prices:1 price:0.6 emails:1 email:0.3 urls:1.5 links:0.8 phone:1
        mentioned:1.5 mentions:1 appear:1 appears:0.8 fill:1.5 template:0.5 tag:1.2 key:0.5 value:0.8
        values:1 pairs:0.8 structured:2 invoice:1 receipt:1 sku:1.5 quantity:0.8 quantities:1
        ingredients:0.8 parties:0.8 respond:0.3 quoting:1 medications:0.8 reference:0.3 seat:0.3 ibans:2
        iban:1.5 skills:0.5 employers:1 salary:0.6 location:0.3 who:0.2 which:0.2 out:0.4 nombres:0.8
        columns:1 listed:1 hashtags:2 handles:1 grab:1 scrape:2 scraping:1.5 montant:1 извлеки:3.5
        """,
    TRAN: """
        translate:4 translated:3.5 translating:3.5 translation:3.5 translations:3.5 translator:4 localize:3
        localise:3 localization:2.5 localisation:2.5 say:0.6 mean:0.5 means:0.5 word:0.5 native:0.5
        speaker:0.5 phrase:0.5 subtitles:1.5 render:0.5 traduce:4 traducir:4 traducción:4 traduzca:4
        traduis:4 traduire:4 traduction:4 traduza:4 traduzir:4 tradução:4 tradurre:4 traduci:4 traduzione:4
        übersetze:4 übersetzen:4 übersetzung:4 vertaal:4 vertaling:4 переведи:4 перевести:4 перевод:3.5
        """,
    REAS: """
        solve:2.5 solving:1.5 prove:3 proof:2.5 show:0.3 probability:3 probabilities:3 calculate:2
        compute:1.5 evaluate:1 derivative:3 differentiate:2.5 integrate:1.5 integral:3 limit:1 equation:3
        equations:3 sum:1.2 average:1 percent:1.5 percentage:1.5 puzzle:2.5 riddle:1.5 logic:2 logical:1.5
        deduce:2.5 premises:3 premise:2.5 conclusion:1 follows:1 syllogism:3 knights:2 knaves:3 liar:1
        older:1.5 younger:1.5 taller:1.5 shorter:0.5 youngest:1.5 oldest:1.5 mph:2 speed:1.2 velocity:1.5
        ratio:1.5 odds:1.5 chance:1 dice:2 roll:1 rolls:1.5 coin:1.5 coins:1.5 prime:1.5 divisible:2.5
        factorial:1 sequence:1.5 arrange:1.5 permutations:3 combinations:2 ways:0.8 perimeter:3 area:1.2
        volume:1 angle:2 angles:2 triangle:2.5 rectangle:2.5 circle:1.5 radius:2.5 hexagon:2.5 polygon:2.5
        jug:2 gallons:1.5 widgets:1.5 machines:0.8 weighings:3 irrational:3 rational:1.5 integer:1.5
        integers:2 induction:2 theorem:2.5 lemma:2.5 reason:1.5 reasoning:2 justify:2 think:0.5 step:1
        math:2.5 maths:2.5 mathematician:2.5 tutor:1 algebra:2.5 geometry:2.5 calculus:2.5 expected:1 x:0.8
        each:0.3 tip:0.5 split:0.5 total:0.3 serves:0.5 next:0.3 larger:1 greater:1 minimum:1 maximum:1
        twice:1 half:0.5 times:0.5 cost:0.5 costs:0.8 discount:1.5 original:0.5 meters:0.8 metres:0.8 km:0.8
        miles:0.8 hours:0.3 per:0.5 remainder:2 divided:2 multiplied:2 plus:1 minus:1.5 age:0.8
        necessarily:2 definitely:1 therefore:1.5 implies:2 valid:1 invalid:1 false:0.8 if:0.4 then:0.3
        divisor:2.5 divisors:2.5 gcd:3 lcm:3 multiple:0.5 multiples:1.5 factor:1 factors:1.5 factorize:3
        modulo:2 fraction:1.5 fractions:1.5 decimal:1 exponent:2 logarithm:3 sqrt:2 square:0.8 root:0.5
        odd:0.5 median:1.5 variance:2 deviation:1 matrix:1.5 determinant:3 eigenvalue:3 polynomial:3
        quadratic:3 inequality:2.5 solutions:1 arithmetic:2.5 digits:0.8 handshakes:1 replacement:0.5
        resuelve:3 resolver:2 calcula:2.5 calcular:2.5 velocidad:1.5 berechne:3 beweise:3 wie:0.3 lange:0.3
        viele:0.5 arbeiter:0.5 résous:3 calculez:3 calcule:2.5 реши:3 вычисли:3
        """,
    OTHER: """
        poem:4 poems:4 poetry:3.5 haiku:4 limerick:4 sonnet:4 lyrics:4 song:2 verse:2 rhyme:3 rhyming:3
        couplet:3 story:2 stories:1.5 fiction:2 tale:2 fairy:1.5 bedtime:1.5 character:1.5 backstory:3
        dialogue:2 dialog:2 screenplay:3 continue:1 toast:2.5 eulogy:4 speech:1.5 essay:1.5 letter:1.5
        cover:0.8 tweet:2 post:1.2 linkedin:2 caption:2 slogan:3 slogans:3 tagline:3 taglines:3 catchy:2.5
        brainstorm:3 ideas:1 names:1 creative:2 imaginative:2 funny:1 joke:2 jokes:2 quiz:3 questions:0.4
        rewrite:3 reword:3 rephrase:3 paraphrase:3.5 proofread:3.5 grammar:2.5 spelling:2.5 typos:2 tone:2.5
        formal:2 professional:1.2 friendlier:2.5 friendly:0.5 punchier:3 polish:2 improve:1 sound:1.5
        simpler:1 classify:3 classifier:3 classification:3 categorize:3 categorise:3 category:2 categories:2
        sentiment:3 spam:2.5 intent:2 label:1.5 labels:1.5 moderation:3 unsafe:2 grade:2.5 feedback:1.5
        clarity:2 concision:2 concise:0.8 readability:2 edit:0.5 rate:1 critique:2 description:1.2
        marketing:0.8 copy:0.5 write:0.4 announcing:1 announce:1 product:0.2 card:0.5 birthday:0.8
        wedding:0.8 fable:4 fables:4 parable:3.5 myth:1.5 ode:3 ballad:3 rap:2 verses:2 monologue:3 skit:3
        toxic:3 offensive:2.5 hateful:3 harassment:2 nsfw:3 inappropriate:2 profanity:3 polite:1 politer:2.5
        rude:1.5 kinder:1.5 softer:1.5 warmer:1.5 casual:1.5 humorous:2 witty:2 pun:2.5 puns:2.5 acrostic:4
        motto:2.5 headline:2.5 headlines:2.5 titles:1.5 advert:2 advertisement:2.5 jingle:3 pitch:1.5
        invitation:2 apology:1.5 bio:2 captions:2 poema:4 poème:4 gedicht:4 poesia:4 cuento:2.5 histoire:1
        geschichte:1 стих:4 стихотворение:4
        """,
})

# Phrases, checked only when their rarest word is present, in the normalised text padded with
# spaces (punctuation is a space too, so " tl dr " matches "TL;DR:" and spaces are word boundaries).
# A negative weight takes back what a word alone would say ("sum up" is not arithmetic).
_PHRASES = (
    ("step", " step by step ", REAS, 2.0), ("work", " show your work ", REAS, 2.5),
    ("show", " show that ", REAS, 2.0), ("many", " how many ", REAS, 0.6),
    ("much", " how much ", REAS, 0.6), ("would", " how long would ", REAS, 1.0),
    ("follow", " does it follow ", REAS, 2.5), ("follows", " it follows ", REAS, 1.5),
    ("say", " how do you say ", TRAN, 3.0), ("say", " how do i say ", TRAN, 3.0),
    ("english", " in english ", TRAN, 1.0), ("english", " english please ", TRAN, 2.5),
    ("word", " word for ", TRAN, 1.5), ("plain", " plain english ", SUMM, 2.0),
    ("plain", " plain english ", TRAN, -3.0), ("liner", " one liner ", CODE, 2.0),
    ("go", " in go ", CODE, 2.5), ("go", " go code ", CODE, 2.5), ("about", " is this about ", SUMM, 2.0),
    ("about", " s this about ", SUMM, 2.0), ("point", " main point ", SUMM, 1.5),
    ("points", " key points ", SUMM, 1.5), ("points", " main points ", SUMM, 1.5),
    ("version", " short version ", SUMM, 2.5), ("dr", " tl dr ", SUMM, 3.5), ("up", " sum up ", SUMM, 3.0),
    ("up", " sum up ", REAS, -1.2), ("up", " sum it up ", SUMM, 3.0), ("up", " sums up ", SUMM, 2.5),
    ("down", " boil this down ", SUMM, 2.5), ("down", " boil it down ", SUMM, 2.5),
    ("down", " boil down ", SUMM, 2.5), ("short", " in short ", SUMM, 1.5),
    ("out", " pull out ", EXTR, 1.5), ("out", " out of this ", EXTR, 0.8),
    ("items", " action items ", EXTR, 1.5), ("value", " key value ", EXTR, 2.0),
    ("edit", " edit this ", OTHER, 2.0), ("positive", " positive or negative ", OTHER, 2.5),
    ("yes", " yes or no ", OTHER, 1.5), ("important", " most important ", SUMM, 1.5),
    ("bottom", " bottom line ", SUMM, 2.0), ("sentences", " few sentences ", SUMM, 1.0),
    ("short", " keep it short ", SUMM, 1.5), ("ideas", " main ideas ", SUMM, 2.0),
    ("dice", " se dice ", TRAN, 3.0), ("sagt", " sagt man ", TRAN, 3.0), ("dit", " dit on ", TRAN, 3.0),
    ("heißt", " was heißt ", TRAN, 2.0),
)

# Human languages: a name in the instruction says translation unless something else outweighs it,
# more so next to a helper word ("into French", "say ... in Korean").
_LANGUAGES = """
    english french spanish german italian portuguese japanese chinese mandarin cantonese korean russian
    arabic hindi dutch swedish norwegian danish finnish polish turkish greek hebrew thai vietnamese
    indonesian malay latin ukrainian czech romanian hungarian bengali urdu persian farsi swahili tagalog
    inglés ingles francés frances alemán aleman español espanol italiano portugués japonés chino
    anglais français allemand espagnol italien portugais japonais chinois englisch deutsch französisch
    spanisch italienisch inglese francese tedesco spagnolo inglês francês alemão espanhol englische
    английский английском английского английскую русский немецкий французский
"""
_HELPERS = re.compile(rb" (?:into|in|to|from|say|mean|means|word|please|version|speaker|native"
                      rb"|en|auf|al|au) ")

# One lookup per word found: ((label, weight, phrase or None), ...).
_CUES: dict[bytes, tuple[tuple[int, float, bytes | None], ...]] = {}
for _word, _pairs in _WORDS.items():
    _CUES[_word] = tuple((label, w, None) for label, w in _pairs)
for _word in _LANGUAGES.split():
    _CUES[_word.encode()] = _CUES.get(_word.encode(), ()) + ((LANG, 1.0, None),)
for _gate, _phrase, _label, _w in _PHRASES:
    _CUES[_gate.encode()] = _CUES.get(_gate.encode(), ()) + ((_label, _w, _phrase.encode()),)
_KEYS = frozenset(_CUES)
# In a system prompt these describe the assistant's manner, not the task ("be concise and polite").
_SYS_KEYS = _KEYS - frozenset(w.encode() for w in """
    friendly friendlier polite politer professional formal casual concise tone warm warmer kind kinder
    humorous witty funny creative brief briefly short shorter simple simpler clear clarity
""".split())
del _word, _pairs, _gate, _phrase, _label, _w

# bytes.translate table: ASCII letters lower-cased; digits and ASCII punctuation except '+', '#'
# (c++, c#) and '_' (parse_date is an identifier, not the verb) become spaces, and so do the UTF-8
# lead bytes 0xC2 (U+0080-00BF: « » ¿ ¡ NBSP) and 0xE2 (U+2000-2FFF: curly quotes, dashes), which
# frees the word before them (the orphaned continuation bytes stick to the next word; a regex
# substitution to drop them cost ~6 µs). Other bytes >= 0x80 are kept: accented Latin, Cyrillic and
# CJK words survive intact.
_NORM = bytes(b if (97 <= b <= 122 or (b >= 128 and b not in (0xC2, 0xE2)) or b in b"+#_")
              else (b + 32 if 65 <= b <= 90 else 32) for b in range(256))
# Deleting these leaves only ASCII punctuation and digits: where code and maths show.
_LETTERS = bytes(b for b in range(256) if chr(b).isalpha() or b >= 128 or b in b" \t\r\n")
_NUMBER = re.compile(rb"\d+")
# The same with every byte >= 0x80 a space: the ASCII words inside CJK text ("用Python写").
_NORM_ASCII = _NORM[:128] + b" " * 128
# Deleting these leaves only UTF-8 lead bytes of U+3000-DFFF: kana, CJK ideographs, Hangul.
_NOT_CJK = bytes(b for b in range(256) if not 0xE3 <= b <= 0xED)

# Syntax that prose rarely has, looked for among the punctuation only ("foo();" -> "();").
_CODE_PUNCT = re.compile(rb"\(\);|\)\{|=>|!=|==|\+=|</|::|\[\]|->|\{\}|\(\"|\('")
_NOT_MATH = bytes(b for b in range(256) if b not in b"=^+%*/")
_SAMPLE = 1024          # characters whose punctuation is looked at
_PUNCT = 256            # ... and at most this many punctuation characters: enough to tell code from prose

# CJK and Hangul have no spaces: substring cues, found with one alternation (one C pass, ~2 µs)
# and only in text that is not ASCII.
_CJK_CUES = {cue: (label, w) for cue, label, w in (
    ("翻译", TRAN, 4.0), ("翻譯", TRAN, 4.0), ("翻訳", TRAN, 4.0), ("译成", TRAN, 3.0), ("英語に", TRAN, 2.0),
    ("英文", TRAN, 1.5), ("英语", TRAN, 1.5), ("日语", TRAN, 1.5), ("日文", TRAN, 1.5), ("中文", TRAN, 1.0),
    ("번역", TRAN, 4.0), ("영어로", TRAN, 2.0), ("总结", SUMM, 3.5), ("總結", SUMM, 3.5), ("概括", SUMM, 3.0),
    ("摘要", SUMM, 3.0), ("要約", SUMM, 3.5), ("まとめ", SUMM, 2.5), ("要点", SUMM, 2.0), ("요약", SUMM, 3.5),
    ("提取", EXTR, 3.5), ("抽出", EXTR, 3.5), ("抽取", EXTR, 3.5), ("추출", EXTR, 3.5), ("代码", CODE, 3.0),
    ("程序", CODE, 2.0), ("函数", CODE, 3.0), ("コード", CODE, 3.0), ("関数", CODE, 3.0), ("プログラム", CODE, 2.0),
    ("코드", CODE, 3.0), ("证明", REAS, 3.0), ("计算", REAS, 2.5), ("多少", REAS, 1.0), ("等于", REAS, 2.0),
    ("方程", REAS, 3.0), ("概率", REAS, 3.0), ("計算", REAS, 2.5), ("証明", REAS, 3.0), ("诗", OTHER, 3.5),
    ("詩", OTHER, 3.5), ("故事", OTHER, 2.5), ("物語", OTHER, 2.5), ("改写", OTHER, 3.0),
)}
_CJK = re.compile("|".join(_CJK_CUES))


# Tool names that mean an agent editing code.
_CODE_TOOLS = ("file", "bash", "shell", "exec", "run", "terminal", "edit", "git", "repo", "python", "code")


def task_type(route: str, payload: dict) -> str:
    """The task label for one request on `route` ("chat", "messages" or "embeddings")."""
    if route == "embeddings":
        return "embedding"
    if not isinstance(payload, dict):
        return "chat"
    messages = payload.get("messages")
    user = _last_user_text(messages) if isinstance(messages, list) else ""
    if not user:
        prompt = payload.get("prompt")          # legacy completions shape
        user = prompt if isinstance(prompt, str) else ""
    system = _system_text(payload, messages)
    scores = [0.0] * 7

    n = len(user)
    if 0 < n <= 2 * _INSTR:
        _score_text(user, scores, 1.0, 1.0)
    elif n:
        # Words are read from the two ends, where the ask is. When only one end is set off by a blank
        # line, the other end is pasted material and counts as body. The digits and punctuation of a
        # long message are mostly the material's, so its syntax counts as body everywhere.
        head, tail, head_cut, tail_cut = _ends(user, n)
        _score_text(head, scores, 1.0 if head_cut or not tail_cut else _BODY_WEIGHT, 0.0)
        _score_text(tail, scores, 1.0 if tail_cut or not head_cut else _BODY_WEIGHT, 0.0)
        _score_syntax(user, scores, _BODY_WEIGHT)
        if n > 1500:        # a long paste with a short ask is more often condensed than answered
            scores[SUMM] += 0.5
    if system:
        if len(system) > _SYS_HEAD + _SYS_TAIL:
            system = system[:_SYS_HEAD] + "\n" + system[-_SYS_TAIL:]
        _score_text(system, scores, 1.0, 0.0, _SYS_KEYS)
    _score_shape(payload, scores)

    top = max(scores)
    if top <= _CHAT_BASELINE or top == scores[CHAT]:
        return "chat"
    return _NAMES[scores.index(top)]


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


def _last_user_text(messages: list) -> str:
    # An agent loop's last user turn may hold only tool results: look back a little for the ask.
    for message in reversed(messages[-_MAX_MESSAGES:]):
        if isinstance(message, dict) and message.get("role") == "user":
            text = _content_text(message.get("content"))
            if text and not (text[:_TAIL].isspace() and text[-_TAIL:].isspace()):
                return text
    return ""


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


# ---- scoring --------------------------------------------------------------------------------------
def _score_text(text: str, scores: list[float], weight: float, syntax: float,
                keys: frozenset[bytes] = _KEYS) -> None:
    """Add the cues of `text` (already bounded), scaled by `weight`; code/maths syntax by `syntax`."""
    text = text.lower()
    raw = text.encode("utf-8", "replace")
    norm = b" " + raw.translate(_NORM) + b" "
    words = norm.split()
    if len(raw) != len(text) and raw.translate(None, _NOT_CJK):
        for cue in set(_CJK.findall(text)):
            label, w = _CJK_CUES[cue]
            scores[label] += w * weight
        words += raw.translate(_NORM_ASCII).split()
    languages = 0
    for word in keys.intersection(words):
        for label, w, phrase in _CUES[word]:
            if label == LANG:
                languages += 1
            elif phrase is None or phrase in norm:
                scores[label] += w * weight
    if languages:
        helper = 1.0 if _HELPERS.search(norm) else 0.0
        scores[TRAN] += (1.0 + 0.5 * languages + helper) * weight
    if syntax:                                  # a short text: all of it is at hand already
        _score_punct(raw, b"```" in raw, b"\n    " in raw, scores, syntax)


def _score_syntax(text: str, scores: list[float], weight: float) -> None:
    """Syntax of a long text: only its first _HEAD and last _TAIL characters are searched (bounded
    finds, no copy), and only the punctuation of its first _SAMPLE characters is counted."""
    tail = max(_HEAD, len(text) - _TAIL)
    fence = text.find("```", 0, _HEAD) >= 0 or text.find("```", tail) >= 0
    indent = text.find("\n    ", 0, _HEAD) >= 0 or text.find("\n    ", tail) >= 0
    _score_punct(text[:_SAMPLE].encode("utf-8", "replace"), fence, indent, scores, weight)


def _score_punct(raw: bytes, fence: bool, indent: bool, scores: list[float], weight: float) -> None:
    """Code and maths show in punctuation: fences, indented lines, operators, digits."""
    if fence:
        scores[CODE] += 3.0 * weight
    if indent:
        scores[CODE] += 0.6 * weight
    punct = raw.translate(None, _LETTERS)[:_PUNCT]     # only ASCII punctuation and digits are left
    if len(punct) < 2:
        return
    code = len(set(_CODE_PUNCT.findall(punct)))
    if code:
        scores[CODE] += 0.6 * min(code, 5) * weight
    numbers = len(_NUMBER.findall(punct))
    if numbers:
        math = len(set(punct.translate(None, _NOT_MATH)))
        scores[REAS] += (0.3 * min(numbers, 4) + 0.4 * min(math, 3)) * weight


def _score_shape(payload: dict, scores: list[float]) -> None:
    fmt = payload.get("response_format")
    if isinstance(fmt, dict):
        kind = fmt.get("type")
        if kind == "json_schema":
            scores[EXTR] += 3.0
        elif kind == "json_object":
            scores[EXTR] += 2.0
    choice = payload.get("tool_choice")
    if choice == "required" or choice == "any" or (
            isinstance(choice, dict) and choice.get("type") in ("function", "tool", "any")):
        scores[EXTR] += 2.5                     # forcing a tool call is how structured output is asked
    tools = payload.get("tools")
    if isinstance(tools, list) and tools:
        names = []
        for tool in tools[:16]:
            if isinstance(tool, dict):
                fn = tool.get("function")
                name = fn.get("name") if isinstance(fn, dict) else tool.get("name")
                if isinstance(name, str):
                    names.append(name[:64].lower())
        joined = " ".join(names)
        if sum(1 for cue in _CODE_TOOLS if cue in joined) >= 2:
            scores[CODE] += 2.0
        else:
            scores[CHAT] += 0.5
