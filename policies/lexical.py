"""The semantic cache's lexical guard: two messages close in meaning may still be different asks.

An embedding puts "enable 2FA" next to "disable 2FA", "17×23" next to "17×24" and
"USD to EUR" next to "EUR to USD": they share almost every character and word. The
guard reads what an embedding blurs and refuses a pair where any of it differs:

- quantities: numbers with their unit, spelled out or not ("three days" is "3 days",
  not "3 weeks"), and periods ("per second", "every day", "daily");
- negations: how many ("not", "n't", "never", "no", "without", ...);
- polarity: words on opposite poles of one axis (enable/disable, turn on/off,
  add/remove, before/after, min/max, ...), and one stem under opposite prefixes
  (lock/unlock, upload/download, overcook/undercook);
- direction: a pair read one way round in one message and the other way in the other
  ("from A to B"/"from B to A", "X faster than Y"), or the same words in another
  order that is not a moved phrase ("can a list contain a tuple"/"a tuple ... a list");
  "X and Y", "X or Y", "X vs Y" read either way;
- entities: capitalised and mixed-case words, code identifiers, file names, flags,
  paths, URLs, versions and quoted strings, each of which must appear in the other.

It errs towards refusing: a refused paraphrase costs one upstream call, a false hit
serves a wrong answer. `features` is the costly half and reads one text only, so a
cache keeps it with each entry and calls `compatible` for each candidate.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import NamedTuple


@lru_cache(maxsize=16384)
def _stem(word: str) -> str:
    """A crude stem, applied alike to the tables and to messages (enabled, enabling: enabl)."""
    for suffix in ("ations", "ation", "ings", "ing", "ions", "ion", "ed", "es", "s", "ly"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            if suffix == "s" and word.endswith("ss"):
                break
            word = word[: -len(suffix)]
            if len(word) >= 4 and word[-1] == word[-2] and word[-1] not in "aeiouls":
                word = word[:-1]  # stopped: stop
            break
    return word[:-1] if word.endswith("e") and len(word) > 3 else word


def _table(text: str) -> list[tuple[str, list[list[str]]]]:
    """Lines of `name: words | words | ...` as (name, [words, words, ...])."""
    rows = []
    for line in text.strip().splitlines():
        name, rest = line.split(":", 1)
        rows.append((name.strip(), [side.split() for side in rest.split("|")]))
    return rows


def _pole_table(text: str) -> dict[str, tuple[str, int]]:
    table = {}
    for axis, (plus, minus) in _table(text):
        for sign, words in ((1, plus), (-1, minus)):
            for word in words:
                table[word] = table[_stem(word)] = (axis, sign)
    return table


def _particle_table(text: str) -> tuple[dict[tuple[str, str], tuple[str, int]], dict[str, int]]:
    poles: dict[tuple[str, str], tuple[str, int]] = {}
    reach: dict[str, int] = {}
    for head, (verbs, ends) in _table(text):
        axis, distance = head.split()
        for verb in map(_stem, verbs):
            reach[verb] = max(reach.get(verb, 0), int(distance))
            for particle, sign in zip(ends[::2], ends[1::2], strict=True):
                poles[verb, particle] = (axis, 1 if sign == "+" else -1)
    return poles, reach


# Each axis: words at one pole | words at the other.
_POLES = _pole_table("""
toggle: enable activate | disable deactivate off
session: login logon signin | logout logoff signout
amount: increase raise boost grow enlarge extend more | decrease reduce shrink cut less fewer lessen
size: big bigger biggest large larger largest huge | small smaller smallest tiny little
height: high higher highest greater greatest above | low lower lowest below
length: long longer longest lengthen | short shorter shortest shorten
speed: fast faster fastest quick quicker quickest quickly | slow slower slowest slowly
temperature: hot hotter warm warmer heat boil | cold colder cool cooler chill freeze frozen
price: cheap cheaper cheapest inexpensive affordable | expensive costly pricey
quality: good better best | bad worse worst
merit: pro pros advantage benefit | con cons disadvantage drawback downside
safety: safe safely safer | unsafe dangerous harmful risky insecure
edit: add insert append include create plus | remove delete drop erase exclude subtract minus purge
run: start begin launch resume boot startup | stop end halt kill terminate shutdown finish quit
run: | pause
open: open reopen | close shut closed
visible: show display reveal unhide visible shown | hide hidden conceal invisible
access: allow permit grant accept approve whitelist allowlist unblock | deny forbid block revoke
access: | reject refuse decline ban blacklist blocklist prohibit disallow
install: install reinstall installation | uninstall
lock: lock | unlock
mute: mute | unmute
follow: follow subscribe | unfollow unsubscribe
mount: mount | unmount
time: before prior | after
timing: early earlier earliest | late later latest
age: old older oldest legacy | new newer newest
sequence: previous prev | next
rank: first | last final
vertical: top | bottom
updown: up upward upwards upgrade upvote uppercase | down downward downwards downgrade downvote
updown: | lowercase
order: ascending asc | descending desc
extreme: min minimum minimal minimize minimise | max maximum maximal maximize maximise
most: most | least fewest
crypt: encrypt encryption | decrypt decryption
code: encode | decode
pack: compress zip pack | decompress unzip unpack extract
transfer: import | export
load: upload | download
sync: push | pull
link: connect | disconnect
attach: attach plug | detach unplug
fold: expand unfold | collapse fold
io: input | output
way: inbound incoming ingress | outbound outgoing egress
mode: light | dark
scope: public | private
place: internal inner inside interior | external outer outside exterior
side: left | right
axis: horizontal horizontally | vertical vertically
table: row | column
call: sync synchronous synchronously | async asynchronous asynchronously
truth: true | false
outcome: pass succeed success successful | fail failure
correct: correct | wrong incorrect
parity: even | odd
sign: positive | negative
arith: multiply multiplied times product | divide divided division quotient
rw: read reading | write written wrote
message: send sent | receive received
trip: arrive arrival | depart departure
trade: buy bought purchase | sell sold
score: gain win won | lose lost loss
wet: wet | dry
fill: full | empty
""")
# A verb and its particle ("turn it off", "log me out"), the particle read with a
# verb at most `reach` words before it: `axis reach: verbs | particle sign ...`.
_PARTICLES, _REACH = _particle_table("""
toggle 3: turn switch power flip toggle | on + off -
toggle 1: is it's are was were be been stay stays keep kept leave left | on +
session 2: log sign | in + into + on + out - off -
zoom 1: zoom | in + out -
opt 1: opt | in + out -
speed 1: speed | up +
speed 1: slow | down -
updown 2: scale | out + in -
run 1: shut | down -
""")
_PARTICLE_WORDS = frozenset(p for _, p in _PARTICLES)

_NEGATING_PREFIXES = ("un", "dis", "de", "non", "in", "im", "ir", "il", "anti", "mis")
_OPPOSITE_PREFIXES = (("over", "under"), ("up", "down"), ("in", "out"), ("in", "ex"),
                      ("im", "ex"), ("en", "de"), ("in", "de"), ("max", "min"),
                      ("upper", "lower"))
_NEGATIONS = frozenset(str.split(
    "not no never none nothing nobody nowhere neither nor without cannot non nope "
    "dont doesnt didnt isnt arent wasnt werent cant couldnt wouldnt shouldnt wont "
    "havent hasnt hadnt aint"))

# Directional words, by family: "A to B" and "B into A" are one pair read both ways.
_MARKERS = {"to": "to", "into": "to", "onto": "to", "->": "to", "→": "to", "=>": "to",
            "than": "than", "over": "than", "instead": "instead", "from": "from",
            "before": "before", "after": "after", "in": "in", "on": "on", "with": "with",
            "as": "as", "for": "for", "/": "/", "÷": "/", "divided": "/", "^": "^",
            "minus": "-"}
_COORDINATORS = frozenset(("and", "or", "vs", "versus"))  # X and Y is Y and X
_STOPWORDS = frozenset(str.split("""
a an the of and or but if so is are was were be been being am do does did doing done
i me my mine we us our you your yours he him his she her it its they them their this that
these those there here what which who whom whose when where why how can could would should
will shall may might must have has had having get got please just also very really any all
some each every about at by up way vs versus kindly tell show me like want need know
"""))
_SYMBOLS = frozenset("$€£¥%°×÷*^=<>+-~/→")

_NUMBER_WORDS = {w: i for i, w in enumerate(str.split(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"))}
_NUMBER_WORDS |= {w: 10 * i for i, w in enumerate(
    str.split("twenty thirty forty fifty sixty seventy eighty ninety"), start=2)}
_NUMBER_WORDS |= {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9,
                  "dozen": 12}
_ORDINALS = {w: i for i, w in enumerate(str.split(
    "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth "
    "thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth"),
    start=1)}
_ORDINAL_SUFFIXES = frozenset(("st", "nd", "rd", "th"))
_MULTIPLES = {"twice": 2, "thrice": 3}
_ONE_AS_PRONOUN = frozenset(str.split(
    "which this that the each any every no some another new old right wrong other only"))

# Units by canonical name: `name: forms | name: forms | ...`.
_UNITS = {form: name.strip() for name, forms in (
    part.split(":") for part in """
ms: ms millisecond msec | s: s sec second | min: min minute | h: h hr hour | day: day
week: week wk | month: month mo | year: year yr | decade: decade
b: b byte | kb: kb kilobyte | mb: mb megabyte | gb: gb gigabyte | tb: tb terabyte
kib: kib | mib: mib mi | gib: gib gi | bit: bit
mm: mm millimeter millimetre | cm: cm centimeter centimetre | m: m meter metre
km: km kilometer kilometre | mile: mile | ft: ft foot feet | inch: inch inches
mg: mg milligram | g: g gram | kg: kg kilo kilogram | lb: lb lbs pound | oz: oz ounce
ml: ml milliliter millilitre | l: l liter litre | cup: cup | tbsp: tbsp tablespoon
tsp: tsp teaspoon | celsius: c celsius | fahrenheit: f fahrenheit | degree: degree deg
usd: usd dollar buck | eur: eur euro | gbp: gbp | jpy: jpy yen | cent: cent
%: % percent pct | px: px pixel | times: times x | am: am | pm: pm | gbit: gbps mbps
""".replace("\n", " | ").split("|") if part.strip()) for form in forms.split()}
_TIME_UNITS = frozenset(str.split("ms s min h day week month year decade"))
_PERIODIC = {"hourly": "h", "daily": "day", "weekly": "week", "monthly": "month",
             "yearly": "year", "annually": "year", "annual": "year"}
_RATE_WORDS = frozenset(("a", "an", "per", "every", "each"))
_CURRENCY = {"$": "usd", "€": "eur", "£": "gbp", "¥": "jpy"}
_NOT_NAMES = frozenset(str.split("i i'm i've i'd i'll ok okay hi hello hey thanks e.g i.e etc"))


class Features(NamedTuple):
    """What the guard compares, read from one message."""

    quantities: tuple[tuple[str, str], ...]  # (value, unit), sorted
    negations: int
    poles: frozenset[tuple[str, int]]  # (axis, +1 | -1)
    pairs: frozenset[tuple[str, str, str]]  # (family, before, after) a directional word
    content: tuple[str, ...]  # content words in order, "X and Y" sorted
    bag: tuple[str, ...]  # the same, sorted
    entities: frozenset[str]  # words the other message must contain
    phrases: tuple[str, ...]  # quoted strings, code, flags, paths, URLs: the other's substrings
    words: frozenset[str]  # every word, lowercased, plural and possessive stripped
    text: str  # normalised, lowercased


# A message is read in chunks between spaces, each chunk's tokens cached: chunks repeat
# ("How", "do", "Python?"). Only a quoted string or code span may hold spaces.
_SPECIAL_KINDS = frozenset(("url", "quote", "flag", "path"))
_TOKEN = re.compile(
    r"""(?P<url>https?://[^\s<>"'`]*[^\s<>"'`.,;:!?)])
      | (?P<quote>"[^"\n]+"|(?<!\w)'[^'\n]+'(?!\w)|`[^`\n]+`)
      | (?P<flag>(?<![\w-])--?[A-Za-z][\w-]*)
      | (?P<path>(?<![\w./])/[\w.-]+(?:/[\w.-]+)*)
      | (?P<word>\w(?:\w|['.](?=\w))*(?:\+\+|\#)?)
      | (?P<symbol>->|=>|[^\w\s]|\n)""",
    re.VERBOSE,
)
_TIMES = re.compile(r"(\d)\s*[x×*]\s*(?=\d)")
_THOUSANDS = re.compile(r"(\d),(?=\d{3}\b)")
_DIGIT = re.compile(r"\d")
_CODE_LIKE = re.compile(r"[._+#\d]")
_NUMBER = re.compile(r"(\d+(?:\.\d+)*)([a-z%°]*)")
_QUOTES = str.maketrans({"‘": "'", "’": "'", "“": '"', "”": '"', "—": "-", "–": "-"})
_STOPS = frozenset(".,;:!?()[]{}|\n")
_SENTENCE_END = frozenset(".!?:\n")
_NUMERIC = frozenset((*_NUMBER_WORDS, *_ORDINALS, *_MULTIPLES, *_PERIODIC, *_RATE_WORDS))

_WORD, _SYMBOL, _STOP, _OTHER = range(4)
_ALWAYS, _CAPITAL = 1, 2  # an entity anywhere; one unless it opens a sentence


class _Info(NamedTuple):
    """What the guard reads from one token on its own, cached per distinct token."""

    kind: int
    low: str
    plain: str
    entity: int
    negation: bool
    content: bool
    coordinator: bool
    pole: tuple[str, int] | None
    particle: bool
    marker: bool
    numeric: bool


@lru_cache(maxsize=65536)
def _info(raw: str) -> _Info:
    low = raw.lower()
    if raw[0].isalnum() or raw[0] == "_":
        plain = _plain(low, raw.isupper())
        return _Info(_WORD, low, plain, _entity(raw, low),
                     low in _NEGATIONS or low.endswith("n't"),
                     low not in _STOPWORDS, low in _COORDINATORS,
                     _POLES.get(low) or _POLES.get(_stem(low)), low in _PARTICLE_WORDS,
                     low in _MARKERS, low[0].isdigit() or low in _NUMERIC)
    kind = _STOP if raw in _STOPS else _SYMBOL if raw in _SYMBOLS or len(raw) == 2 else _OTHER
    return _Info(kind, low, "", 0, False, False, False, None, False,
                 kind == _SYMBOL and low in _MARKERS, False)


def _plain(word: str, acronym: bool) -> str:
    """A lowercased word without its possessive or plural (an acronym's S stays: HTTPS)."""
    if word.endswith("'s"):
        word = word[:-2]
    if len(word) > 3 and word[-1] == "s" and word[-2] != "s" and not acronym:
        word = word[:-1]
    return word


def _entity(raw: str, low: str) -> int:
    if low in _NOT_NAMES or (raw == low and not _CODE_LIKE.search(raw)):
        return 0
    if _CODE_LIKE.search(raw):
        return 0 if _NUMBER.fullmatch(low) else _ALWAYS  # main.py, S3; not 3.11 or 7pm
    if not raw[1:].islower():
        return _ALWAYS  # AWS, GitHub, iPhone, eBay
    return _CAPITAL


def _normalise(text: str) -> str:
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    if _DIGIT.search(text):
        text = _THOUSANDS.sub(r"\1", _TIMES.sub(r"\1 × ", text))
    return text


_Token = tuple[str, "_Info | None"]  # its text, and what it says unless it is a phrase


def _quoted(text: str) -> bool:
    """Whether a quote opens in the text (an apostrophe after a letter does not)."""
    if '"' in text or "`" in text:
        return True
    i = text.find("'")
    while i != -1:
        if not i or not (text[i - 1].isalnum() or text[i - 1] == "_"):
            return True
        i = text.find("'", i + 1)
    return False


def _tokens(text: str) -> list[_Token]:
    if _quoted(text):
        return _read(text)
    out: list[_Token] = []
    for number, line in enumerate(text.splitlines()):
        if number:
            out.append(("\n", _info("\n")))
        for chunk in line.split():
            out.extend(_chunk(chunk))
    return out


@lru_cache(maxsize=65536)
def _chunk(chunk: str) -> tuple[_Token, ...]:
    return tuple(_read(chunk))


def _read(text: str) -> list[_Token]:
    return [(m.group(), None if m.lastgroup in _SPECIAL_KINDS else _info(m.group()))
            for m in _TOKEN.finditer(text)]


@lru_cache(maxsize=1024)
def features(text: str) -> Features:
    """Everything `compatible` compares, read once from one message."""
    text = _normalise(text)
    words: list[str] = []  # lowercased words and symbols, "" for anything else
    plain: list[str] = []
    content: list[str] = []
    joined: list[int] = []  # places in `content` coordinated with the word before
    entities: set[str] = set()
    seen: set[str] = set()
    poles: set[tuple[str, int]] = set()
    phrases: list[str] = []
    markers: list[int] = []
    numeric: list[int] = []
    negations, initial, coordinated = 0, True, False
    for raw, info in _tokens(text):
        if info is None:
            phrase = " ".join(raw.lower().strip("`'\"").split())
            if phrase:
                phrases.append(phrase)
            words.append("")
            plain.append("")
            initial = coordinated = False
            continue
        kind, low, word, entity, negation, is_content, coordinator, pole, particle, marker, \
            number = info
        i = len(words)
        words.append(low if kind in (_WORD, _SYMBOL) else "")
        plain.append(word)
        if marker:
            markers.append(i)
        if number:
            numeric.append(i)
        if kind != _WORD:
            if kind == _STOP:
                initial = initial or raw in _SENTENCE_END
                coordinated = False
            continue
        seen.add(word)
        if entity == _ALWAYS or (entity == _CAPITAL and not initial):
            entities.add(word)
        initial = False
        negations += negation
        if pole:
            poles.add(pole)
        if particle:
            _particle(words, i, poles)
        if coordinator:
            coordinated = bool(content)
        elif is_content:
            if coordinated:
                joined.append(len(content))
            content.append(word)
            coordinated = False
    for k in joined:  # "X and Y" reads as "Y and X"
        if content[k - 1] > content[k]:
            content[k - 1], content[k] = content[k], content[k - 1]
    return Features(
        _quantities(words, numeric) if numeric else (),
        negations,
        frozenset(poles),
        _pairs(words, plain, markers) if markers else frozenset(),
        tuple(content),
        tuple(sorted(content)),
        frozenset(entities),
        tuple(phrases),
        frozenset(seen),
        " ".join(text.lower().split()),
    )


def _particle(words: list[str], i: int, poles: set[tuple[str, int]]) -> None:
    """The pole of "turn ... off", "log ... out": a verb at most its reach before."""
    for back in range(i - 1, max(i - 4, -1), -1):
        verb = _stem(words[back])
        pole = _PARTICLES.get((verb, words[i]))
        if pole and i - back <= _REACH[verb]:
            poles.add(pole)
            return


def _quantities(words: list[str], candidates: list[int]) -> tuple[tuple[str, str], ...]:
    """(value, unit) of each number and period, read at the places that may start one."""
    found: list[tuple[str, str]] = []
    after = 0
    for i in candidates:
        if i < after:
            continue  # inside a number read already: "twenty five"
        value, unit, width = _number_at(words, i)
        if value is not None:
            unit = unit or _unit_after(words, i + width)
            if i and words[i - 1] in _CURRENCY:
                unit = _CURRENCY[words[i - 1]]
            found.append((value, unit))
            after = i + width
            continue
        word = words[i]
        following = words[i + 1] if i + 1 < len(words) else ""
        if word in _PERIODIC:  # daily, every day, a day, per day: one period
            found.append(("1", _PERIODIC[word]))
        elif word in _RATE_WORDS and _unit(following) in _TIME_UNITS:
            found.append(("1", _unit(following)))
        elif word == "per" and following:
            found.append(("1", _unit(following) or _plain(following, False)))
    return tuple(sorted(found))


def _unit(word: str) -> str:
    return _UNITS.get(word) or _UNITS.get(word[:-1] if word.endswith("s") else word, "")


def _number_at(words: list[str], i: int) -> tuple[str | None, str, int]:
    """The number starting at words[i] (digits or words), its glued unit and its width."""
    word = words[i]
    match = _NUMBER.fullmatch(word)
    if match:
        digits, suffix = match.groups()
        if suffix in _ORDINAL_SUFFIXES:
            return "#" + digits, "", 1
        return digits, _unit(suffix) or suffix, 1
    if word in _ORDINALS:
        return (f"#{_ORDINALS[word]}", "", 1) if _is_ordinal(words, i) else (None, "", 0)
    if word in _MULTIPLES:
        return str(_MULTIPLES[word]), "times", 1
    if word not in _NUMBER_WORDS or (word == "one" and _is_pronoun(words, i)):
        return None, "", 0
    total = current = 0
    j = i
    while j < len(words):
        n = _NUMBER_WORDS.get(words[j])
        following = _NUMBER_WORDS.get(words[j + 1], 0) if j + 1 < len(words) else 0
        if n is None and ((words[j] == "and" and current >= 100 and following)
                          or (words[j] == "-" and current % 100 >= 20 and 0 < following < 10)):
            j += 1  # one hundred and five, twenty-five
            continue
        if n is None:
            break
        if n in (12, 100):
            current = max(current, 1) * n
        elif n >= 1000:
            total, current = total + max(current, 1) * n, 0
        else:
            current += n
        j += 1
    return str(total + current), "", j - i


def _is_ordinal(words: list[str], i: int) -> bool:
    before = words[i - 1] if i else ""
    after = words[i + 1] if i + 1 < len(words) else ""
    if words[i] == "first":  # "the first 14 days" counts days; "first" only orders them
        return not _NUMBER.fullmatch(after) and after not in _NUMBER_WORDS
    if words[i] == "second":  # a second, per second
        return before not in _RATE_WORDS and before not in ("one", "1")
    return True


def _is_pronoun(words: list[str], i: int) -> bool:
    before = words[i - 1] if i else ""
    after = words[i + 1] if i + 1 < len(words) else ""
    return before in _ONE_AS_PRONOUN or after in ("of", "another")


def _unit_after(words: list[str], j: int) -> str:
    if j < len(words) and words[j] == "-":  # 3-day
        j += 1
    if j >= len(words):
        return ""
    following = words[j + 1] if j + 1 < len(words) else ""
    if words[j] == "°":
        return _unit(following) or "degree"
    unit = _unit(words[j])
    if unit == "degree":
        return _unit(following) or unit
    if unit == "times" and (_NUMBER.fullmatch(following) or following in _NUMBER_WORDS):
        return ""  # 17 times 23 is an operator
    return unit


def _pairs(words: list[str], plain: list[str], markers: list[int],
           ) -> frozenset[tuple[str, str, str]]:
    """(family, x, y) for content words x before and y after each directional word."""
    found: set[tuple[str, str, str]] = set()
    for i in markers:
        family = _MARKERS[words[i]]
        left = _window(words, plain, i - 1, -1)
        if words[i] == "divided" and i + 1 < len(words) and words[i + 1] == "by":
            i += 1
        if left:
            for y in _window(words, plain, i + 1, 1):
                for x in left:
                    if x != y:
                        found.add((family, x, y))
    return frozenset(found)


def _window(words: list[str], plain: list[str], start: int, step: int) -> list[str]:
    out: list[str] = []
    i = start
    while 0 <= i < len(words) and len(out) < 3:
        word = words[i]
        if not word or word in _MARKERS:
            break
        if word not in _STOPWORDS and word not in _SYMBOLS:
            out.append(plain[i])
        i += step
    return out


@lru_cache(maxsize=65536)
def _opposites(word: str) -> frozenset[str]:
    """The word under an opposite prefix: lock: unlock; unlock: lock; upload: download."""
    out = set()
    for p in _NEGATING_PREFIXES:
        if len(word) >= 4:
            out.add(p + word)
        if word.startswith(p) and len(word) - len(p) >= 4:
            out.add(word[len(p):])
    for p, q in _OPPOSITE_PREFIXES:
        for mine, theirs in ((p, q), (q, p)):
            if word.startswith(mine) and len(word) - len(mine) >= 4:
                out.add(theirs + word[len(mine):])
    return frozenset(out)


def _reordered(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Whether b has a's words in another order that is not a phrase moved to the end.

    "In Python, how do I reverse a list" moves one phrase; "is a square a rectangle"
    swaps the only two words, and "list contain tuple" puts "contain" between others.
    """
    if len(a) <= 2:
        return True
    return not any(a[k:] + a[:k] == b for k in range(1, len(a)))


def compatible(a: Features, b: Features) -> bool:
    """Whether nothing the guard reads tells the two messages apart."""
    if a.quantities != b.quantities or a.negations != b.negations:
        return False
    if a.poles != b.poles:
        for axis in {x for x, _ in a.poles} & {x for x, _ in b.poles}:
            if {s for x, s in a.poles if x == axis} != {s for x, s in b.poles if x == axis}:
                return False
    if a.pairs and b.pairs and any((f, y, x) in b.pairs and (f, x, y) not in b.pairs
                                   and (f, y, x) not in a.pairs for f, x, y in a.pairs):
        return False
    if a.content != b.content and a.bag == b.bag and _reordered(a.content, b.content):
        return False
    if not (a.entities <= b.words and b.entities <= a.words):
        return False
    if (a.phrases or b.phrases) and (any(p not in b.text for p in a.phrases)
                                     or any(p not in a.text for p in b.phrases)):
        return False
    b_only = b.words - a.words
    return not (b_only and any(not _opposites(x).isdisjoint(b_only)
                               for x in a.words - b.words))


def same_ask(a: str, b: str) -> bool:
    """Whether a cached answer to `a` may answer `b`, as far as their words tell."""
    return compatible(features(a), features(b))
