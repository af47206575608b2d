"""The hand-written cue lexicon of the task classifier: the prior its trained weights start from.

Nothing here runs per request except through the weights file. tools/train_classifier.py turns
these weights (rough log-odds set by hand: 3 = nearly decisive alone, 1 = a hint, 0.5 = a
tie-breaker) into the starting point and the regularisation centre of a logistic regression fitted
on tests/policy/classify_train.jsonl and classify_eval.jsonl; a cue the training rows never show
keeps its hand weight, so the lexicon is what the model knows beyond its training rows.
kraken/policy/classify_features.py reads PHRASES, LANGUAGES, HELPERS and CJK_CUES to make its features;
the word tables stay text until the trainer calls words().
"""
from __future__ import annotations

import re

CODE, CHAT, SUMM, EXTR, TRAN, REAS, OTHER = range(7)
NAMES = ("code_gen", "chat", "summarization", "extraction", "translation", "reasoning", "other")


def cues(table: dict[int, str]) -> dict[str, dict[int, float]]:
    """{label: "word:weight word ..."} -> {word: {label: weight}}; a bare word weighs 1."""
    out: dict[str, dict[int, float]] = {}
    for label, spec in table.items():
        for item in spec.split():
            word, _, weight = item.rpartition(":") if ":" in item else (item, "", "1")
            out.setdefault(word, {})[label] = float(weight)     # a repeat replaces, never adds
    return out


def words() -> tuple[dict[str, dict[int, float]], dict[str, dict[int, float]]]:
    """The word cues: WORDS_TEXT, and WORDS_MORE_TEXT's tables in order (a later table's word
    replaces an earlier one's). Parsed on call, not at import: only the trainer needs them, and as
    dicts they take ~400 KB that a serving process would carry for nothing."""
    more: dict[str, dict[int, float]] = {}
    for table in WORDS_MORE_TEXT:
        more.update(cues(table))
    return cues(WORDS_TEXT), more


# Weights are rough log-odds by hand: 3 = nearly decisive alone, 1 = a hint, 0.5 = a tie-breaker.
WORDS_TEXT = {
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
}

# Phrases, checked only when their rarest word is present, in the normalised text padded with
# spaces (punctuation is a space too, so " tl dr " matches "TL;DR:" and spaces are word boundaries).
# A negative weight takes back what a word alone would say ("sum up" is not arithmetic).
PHRASES = (
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
    ("edit", " edit this ", OTHER, 2.0), ("expected", " expected value ", REAS, 2.0),
    ("play", " role play ", OTHER, 3.0), ("subject", " subject line ", OTHER, 2.0),
    ("does", " what does ", TRAN, 0.5), ("positive", " positive or negative ", OTHER, 2.5),
    ("yes", " yes or no ", OTHER, 1.5), ("important", " most important ", SUMM, 1.5),
    ("bottom", " bottom line ", SUMM, 2.0), ("sentences", " few sentences ", SUMM, 1.0),
    ("short", " keep it short ", SUMM, 1.5), ("ideas", " main ideas ", SUMM, 2.0),
    ("dice", " se dice ", TRAN, 3.0), ("sagt", " sagt man ", TRAN, 3.0), ("dit", " dit on ", TRAN, 3.0),
    ("heißt", " was heißt ", TRAN, 2.0),
)

# Human languages: a name in the instruction says translation unless something else outweighs it,
# more so next to a helper word ("into French", "say ... in Korean").
LANGUAGES = """
    english french spanish german italian portuguese japanese chinese mandarin cantonese korean russian
    arabic hindi dutch swedish norwegian danish finnish polish turkish greek hebrew thai vietnamese
    indonesian malay latin ukrainian czech romanian hungarian bengali urdu persian farsi swahili tagalog
    inglés ingles francés frances alemán aleman español espanol italiano portugués japonés chino
    anglais français allemand espagnol italien portugais japonais chinois englisch deutsch französisch
    spanisch italienisch inglese francese tedesco spagnolo inglês francês alemão espanhol englische
    английский английском английского английскую русский немецкий французский
"""
HELPERS = re.compile(rb" (?:into|in|to|from|say|mean|means|word|please|version|speaker|native"
                      rb"|en|auf|al|au) ")


# The same tasks in the other languages Kraken's customers write in (es, pt, de, fr), beyond the
# cues above: the verbs and nouns that name each task.
WORDS_MORE_TEXT = ({
    CODE: """
        programación:2 programacion:2 programação:2 programmierung:2 programmation:2 funções:2.5
        funciones:2.5 fonctions:2 funktionen:2 consulta:1 consultas:1 requête:2 requete:2 abfrage:2
        método:2 metodo:2 méthode:2 componente:1.5 composant:1.5 komponente:1.5 skript:2 variável:1.5
        erreur:0.8 fehler:0.8 fehlermeldung:2 repositorio:2 repositório:2 dépôt:1 servidor:0.8 serveur:0.8
        biblioteca:0.8 bibliothèque:0.8 bibliothek:0.8 compilar:2.5 kompilieren:2.5 compiler:2.5
        """,
    CHAT: """
        recomiendas:1 recomienda:0.8 recomendación:1 consejo:1 consejos:1 empfiehlst:1 empfehlen:0.8
        empfehlung:1 tipps:1 tipp:1 conseil:1 conseils:1 conseilles:1 recommandes:1 recomenda:1
        recomendação:1 dica:1 dicas:1 oi:1 olá:1 ola:1 salut:1 tudo:0.5 ciao:1 buenas:0.8 guten:0.8
        bonsoir:1 obrigado:1 obrigada:1 vale:0.3 pena:0.3 visitar:0.5 besuchen:0.5 voyage:0.5 viaje:0.5
        viagem:0.5 reise:0.5
        """,
    SUMM: """
        resumen:3 resume:1 resumir:3 resumo:3 resuma:3 resumo:3 resumido:2.5 resúmeme:3.5 résumé:1
        essentiel:1.5 kern:1 wesentliche:1.5 wesentlichen:1.5 kurzfassung:3.5 stichpunkten:1.5
        stichpunkte:1.5 zusammengefasst:3 idea:0.4 ideia:0.4 principal:0.6 brevemente:1 bref:1
        sintetiza:3 síntesis:3 síntese:3 synthèse:3 synthétise:3
        """,
    EXTR: """
        extraia:3.5 extraiga:3.5 extrai:3 extraer:3.5 relève:2 relever:2 relevez:2 campos:1.5 felder:1.5
        champs:1.5 fechas:1.5 datas:1 importes:1.5 beträge:1.5 montants:1.5 valores:0.8 namen:0.8
        noms:0.8 nomes:0.8 teléfono:1 telefon:1 téléphone:1 telefone:1 cpf:1.5 correo:0.3 aparecen:1
        aparecem:1 erwähnt:1 mencionados:1 mentionnés:1 saca:1.2 zieh:1
        """,
    TRAN: """
        tradúceme:4 traduce:4 traduz:4 traduzca:4 übersetz:4 übersetzt:3 übersetzen:4 traduisez:4
        traduzir:4 significa:1 bedeutet:1 signifie:1 dizer:0.5 decir:0.5 sagen:0.3 dire:0.3
        """,
    REAS: """
        probabilidad:3 probabilidade:3 wahrscheinlichkeit:3 probabilité:3 cuántos:1 cuántas:1 quantos:1
        quantas:1 combien:1 löse:3 resolva:3 resolve:1.5 ecuación:3 equação:3 gleichung:3 équation:3
        área:1.5 fläche:1.5 aire:1 suma:0.8 somme:0.8 soma:0.8 edad:1 idade:1 âge:0.8 promedio:1.5
        média:1 moyenne:1.5 durchschnitt:1.5 porcentaje:1.5 porcentagem:1.5 prozent:1.5 pourcentage:1.5
        triángulo:2.5 triângulo:2.5 dreieck:2.5 minutos:0.5 horas:0.3 stunden:0.5 heures:0.3 kilómetros:1
        """,
    OTHER: """
        poema:4 poème:4 gedicht:4 poesia:4 poesía:4 história:1.5 historia:1 conto:2 eslogan:3 formell:2
        höflich:2 höflicher:2.5 poli:1.5 polie:1.5 educada:1.5 educado:1.5 reescribe:3 reformula:3
        reformule:3 formuliere:3 réécris:3 reescreva:3 reescreve:3 corrige:2 corrija:2 korrigiere:2
        sentimiento:3 sentimento:3 positivo:1.5 negativo:1.5 positiv:1.5 negativ:1.5 positif:1.5
        négatif:1.5 clasifica:3 classifique:3 klassifiziere:3 ofensivo:2.5 beleidigend:2.5
        offensant:2.5 comentario:1 kommentar:1 commentaire:1 comentário:1 lustigen:1.5 lustig:1.5
        drôle:1.5 gracioso:1.5 engraçada:1.5 engraçado:1.5 geburtstagskarte:2 aniversário:0.8
        cumpleaños:0.8 anniversaire:0.8
        """,
},

# Cues the training rows showed missing (cross-validation errors on classify_train/eval only).
{
    CODE: "dedupe:2 div:2.5 flexbox:3 flex:1 pipefail:3 centre:0.3 center:0.3 duplicates:0.5",
    TRAN: "meaning:1.5 literally:1 translates:3.5",
    REAS: """weighs:1 heavier:1 diagonals:2.5 diagonales:2.5 diagonais:2.5 anagrams:2.5 anagramas:2.5
             consecutive:1.5 monty:2 manche:1 algunos:0.8 certains:0.8 alguns:0.8""",
    OTHER: "phishing:2.5 rubric:3 score:1 roleplay:3 aggressive:1.5 passive:1",
    EXTR: "tracking:1 allergens:1 allergies:1",
},

# Common task words of es, pt, de and fr beyond the verbs above (general vocabulary, not tuned).
{
    OTHER: """schreib:0.5 schreibe:0.5 escribe:0.5 escreve:0.5 escreva:0.5 écris:0.5 reim:3 reime:3
              werbetext:3 kreativ:2 creativo:2 créatif:2 criativo:2 lustige:1.5 witz:2 chiste:2 blague:2
              piada:2 histoire:1.5 freundlicher:2.5 amigable:1 gentil:0.8 kategorie:2 categoría:2
              catégorie:2 categoria:2 ordne:1 bewerte:2 evalúa:1 slogans:3 werbung:1.5 publicidad:1.5""",
    EXTR: """datumsangaben:2 genannt:1 aparece:1 apparaissent:1 présentes:0.8 lista:0.5 liste:0.5
             auflisten:1.5 enumera:1 listez:1""",
    REAS: "wieviel:1 viel:0.3 cuánto:0.8 quanto:0.8 folgt:1.5 folgern:2 lógica:2 logik:2 logique:2",
})

# CJK and Hangul have no spaces: these cues are found as substrings (classify_features.py), beside
# each character.
CJK_CUES = {
    TRAN: "翻译:4 翻譯:4 翻訳:4 译成:3 訳して:3.5 どう言:2 英語で:2 英語に:2 英文:1.5 英语:1.5 日语:1.5 日文:1.5 法语:1.5 "
          "怎么说:2.5 何て言う:2.5 번역:4 영어로:2",
    SUMM: "总结:3.5 總結:3.5 概括:3 摘要:3 要約:3.5 まとめ:2.5 要点:2 重点:1.5 主要讲:2 大意:2 요약:3.5",
    EXTR: "哪些:1 人名:2 列出:2 挙げ:1.5 金额:1 金額:1 日期:1 日付:1 提取:3.5 抽出:3.5 抽取:3.5 抜き出:3.5 取り出:2 추출:3.5",
    CODE: "查找:1 命令:1.5 服务器:1.5 数据库:2 コマンド:2 サーバー:1.5 代码:3 程序:2 函数:3 コード:3 関数:3 プログラム:2 报错:2 脚本:2.5 エラー:1.5 코드:3",
    REAS: "角度:2 原价:2 整数:1.5 連続:1 证明:3 计算:2.5 多少:1 等于:2 方程:3 概率:3 計算:2.5 証明:3 確率:3 求め:1.5 いくつ:1 几:0.5 速度:1",
    OTHER: "祝福:2 キャッチコピー:3 文案:2.5 作文:1 评分:2 分类:3 分類:3 情感:2 ポジティブ:2 ネガティブ:2 誤字:3 脱字:3 诗:3.5 詩:3.5 故事:2.5 物語:2.5 改写:3 润色:3 俳句:4 正式:1.5 丁寧:1.5 评论:1 正面:1.5 负面:1.5",
    CHAT: "推荐:1 おすすめ:1 建议:1 你好:1 こんにちは:1",
}

# Tool names that mean an agent editing code.
CODE_TOOLS = ("file", "bash", "shell", "exec", "run", "terminal", "edit", "git", "repo", "python", "code",
              "patch", "directory", "tests")

# In a system prompt these describe the assistant's manner, not the task ("be concise and polite").
MANNER = frozenset("""
    friendly friendlier polite politer professional formal casual concise tone warm warmer kind kinder
    humorous witty funny creative brief briefly short shorter simple simpler clear clarity
""".split())

# Request shape and syntax (kraken/policy/classify_features.py names them), per unit of value.
FLAGS = {
    "$rf_schema": {EXTR: 3.0}, "$rf_json": {EXTR: 2.0}, "$forced": {EXTR: 2.5}, "$tools": {CHAT: 0.5},
    "$code_tools": {CODE: 3.0}, "$fence": {CODE: 4.0}, "$indent": {CODE: 0.6}, "$code_punct": {CODE: 0.6},
    "$numbers": {REAS: 0.3}, "$math": {REAS: 0.4}, "$very_long": {SUMM: 0.5}, "$lang": {TRAN: 1.2},
    "$lang_helper": {TRAN: 1.0},
}
BIAS = {CHAT: 0.9}
