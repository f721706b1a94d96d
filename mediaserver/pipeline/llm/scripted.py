"""An offline, deterministic stand-in for a chat model.

For development, demos and tests: no network, no model weights, the same
answer every time, in well under a millisecond a turn. It reads only the
agent's tool definitions (names, descriptions, parameter names, descriptions,
types and enums), never special cases for particular tools, and it works on
both pocketsphinx's lowercase words and Whisper's cased, punctuated text.

How it decides, for the caller's last utterance:

1. **Reading.** The text goes through `normalise_transcript` (spoken numbers
   and spellings become "583", "B7X"), then into words with their stems (a
   small suffix stripper: "shipped" ~ "ship", "deliveries" ~ "delivery") and
   concepts (a table of everyday customer-service synonyms: package, parcel
   and delivery are all *order*; where, track and arrive are *status*; rain,
   cold and outside are *weather*).
2. **Answers first.** If our previous message asked for a tool's argument, the
   utterance is read as the answer ("It's 583", "five eight three", "Paris,
   please") and the request it completes is tried again; if it asked which
   tool was meant, the answer picks among the candidates.
3. **Tool choice.** Each tool is scored against the utterance: a word of its
   name counts 2, of its description 1, of its parameters 0.5, an enum value
   1; a synonym (same concept) counts three quarters of that; generic verbs
   ("get", "tell") never count and lookup verbs ("check", "find") at most 1;
   more words of one concept add half. A value that only fits the tool (a
   code for its ID parameter) adds up to 1. The best tool is called when it
   scores at least 1.75 and leads the next by at least 1.
4. **Arguments** come from the utterance by parameter kind, the most specific
   first so that each word fills one parameter: enum values (or synonyms),
   dates and times ("tomorrow", "next Friday", "3 PM"), codes and IDs
   (digits or spelled letters, preferably right after the parameter's own
   word: "order 583"), numbers, yes/no flags, and free text: names and
   places as Whisper capitalised them ("New York") or after "in"/"for"/"at"
   (pocketsphinx). Nothing is invented: a required argument not heard is
   asked for with a question built from its description ("What is the order
   ID?"), and the answer fills it on the next turn.
5. **Follow-ups.** After a tool call, "and what about order 12?", "what about
   London?", "how about tomorrow?" or "and 731?" call the same tool again
   with the new argument and the others carried over.
6. **Talk.** Otherwise: the agent's keyword `replies`, then small talk
   (greetings, thanks, goodbye, "who are you", "can you hear me"), then, if
   the utterance is a request that some tools half match, a clarifying
   question naming them; an empty or filler-only utterance is asked again;
   anything else gets `fallback`.

After a tool ran, its result's `response` text is spoken as is.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from mediaserver.pipeline.llm.base import (
    Done,
    LlmBackend,
    LlmEvent,
    LlmOptions,
    Message,
    Token,
    ToolCall,
    ToolCalls,
    ToolSpec,
)
from mediaserver.pipeline.llm.spoken import (
    NUMBER_WORDS,
    find_numbers,
    find_spelled,
    letter_kind,
    parse_number,
    split_identifier,
    words_of,
)

# The module, not the function: normalise imports spoken from this package,
# so whichever of the two is imported first finds the other half-initialised.
from mediaserver.pipeline.stt import normalise

__all__ = ["ScriptedBackend", "ScriptedConfig", "ScriptedReply"]


def _set(words: str) -> frozenset[str]:
    return frozenset(words.split())


# ---------------------------------------------------------------- vocabulary

STOPWORDS = _set(
    """a an the and or but if then else of to in on at by for with from about into over
    is are was were be been being am do does did done have has had having i me my mine we us
    our you your yours he him his she her it its they them their this that these those what
    which who whom whose when where why how can could would should will shall may might must
    please thanks thank yes no not get got set give let make want wanted need like just some
    any all there here as so up out one s t i'm i'd i've i'll it's that's what's there's
    you're don't can't won't isn't aren't doesn't didn't wasn't let's gonna wanna going
    know tell also too very really still yet again now then well okay ok"""
)
FILLERS = _set("um umm uh uhh uhm er erm ah ahh eh hmm hm mm mmm mhm huh oh")
_POLITE = _set("please thanks thank cheers kindly sorry excuse pardon")
# Words that say nothing about which tool is meant, wherever they appear.
_GENERIC = _set(
    """get set give tell show make do have know want need like help information info detail
    details provide current customer user caller given specific specified request value
    thing something use using please able let"""
)
# Lookup verbs: a hint, never enough on their own.
_MILD = "lookup"

# Concepts: words that mean the same thing to a caller. General, not per tool.
_CONCEPTS: dict[str, str] = {
    "order": "order purchase package parcel shipment delivery item goods product buy bought",
    "status": """status where track tracking arrive arrival ship shipping shipped dispatch
        dispatched transit eta receive received progress late delay delayed whereabouts
        update news""",
    "lookup": "check look lookup find search see verify",
    "weather": """weather forecast temperature rain rainy raining sunny sun cold hot warm
        outside umbrella snow snowing windy wind cloudy storm stormy degrees humid humidity
        chilly freezing climate""",
    "place": "city town place location area country region",
    "appointment": """appointment booking book reservation reserve schedule slot visit
        consultation session meeting checkup""",
    "cancel": "cancel cancellation cancelled canceled",
    "change": "change reschedule move modify amend update switch",
    "balance": "balance funds money left available",
    "account": "account acct savings",
    "pay": "pay payment bill invoice charge charged billing owe due",
    "refund": "refund reimburse reimbursement",
    "return": "return exchange",
    "human": """human person agent representative operator someone somebody staff rep
        manager supervisor real""",
    "transfer": "transfer forward connect speak talk",
    "hours": "hours open opening close closing",
    "address": "address street postcode zip directions located",
    "phone": "phone mobile cell telephone",
    "price": "price cost costs expensive cheap pricing quote",
    "date": """date day today tomorrow tonight weekend monday tuesday wednesday thursday friday
        saturday sunday""",
    "time": "time hour clock",
    "name": "name called",
    "password": "password reset login log sign locked",
    "problem": "problem issue broken complaint fault wrong damaged missing",
    "doctor": "doctor dentist clinic physician gp nurse",
    "table": "table seat seating",
    "meal": "restaurant dinner lunch breakfast food menu dish meal",
    "flight": "flight plane fly airline",
    "hotel": "hotel room stay",
    "large": "large big huge",
    "small": "small little tiny",
    "medium": "medium regular",
    "outdoor": "outdoor outdoors outside patio terrace garden",
    "indoor": "indoor indoors inside",
    "card": "card credit debit",
    "email": "email mail",
    "people": "guests guest people persons party diners adults",
}

_YES = _set("yes yeah yep yup true sure correct affirmative ok okay absolutely definitely please")
_NO = _set("no nope nah false not don't dont without negative never none")

# Parameter names or descriptions with these words hold codes to spell, not prose.
_CODE_WORDS = _set(
    "id ids code number num no ref reference pin zip postcode phone serial sku tracking "
    "confirmation"
)
_DATE_NAMES = _set("date day when weekday")
_TIME_NAMES = _set("time hour")
_FREE_NAMES = _set(
    "query question message text note notes reason description details comment comments "
    "topic issue problem request summary feedback"
)
_PLACE_NAMES = _set("city town place location destination origin country region area airport state")
_PERSON_NAMES = _set("name person customer caller patient guest contact")

_WEEKDAYS = _set("monday tuesday wednesday thursday friday saturday sunday")
_MONTHS = _set(
    "january february march april may june july august september october november december "
    "jan feb mar apr jun jul aug sep sept oct nov dec"
)
_DAY_WORDS = _set("today tomorrow tonight yesterday weekend") | _WEEKDAYS
_PART_OF_DAY = _set("morning afternoon evening night noon midnight lunchtime")
_DATE_LEAD = _set("next this coming following")
_ORDINAL_RE = re.compile(r"^\d{1,2}(st|nd|rd|th)$")
_ORDINALS = _set(
    "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth "
    "thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth "
    "thirtieth"
)
_CLOCK_RE = re.compile(r"^(\d{1,2})(?::(\d{2}))?(am|pm)?$")
_TEMPORAL = _DAY_WORDS | _PART_OF_DAY | _set("am pm o'clock oclock week month days weeks")

# Numbers followed by these are amounts, not IDs ("3 days ago", "2 items").
_UNITS_AFTER = _set(
    "day days week weeks month months year years hour hours minute minutes second seconds "
    "dollar dollars pound pounds euro euros percent times time item items people person "
    "am pm o'clock"
)
# Words that introduce a name or a place in free text.
_PLACE_CUES = _set("in at near from to around")
_PERSON_CUES = _set("for called named under is")
_CUES = _PLACE_CUES | _PERSON_CUES | _set("about")
# Lowercase connectors inside a capitalised name: "Stratford upon Avon".
_NAME_JOINERS = _set("de del da la le van von upon el")

_QUESTION_WORDS = _set(
    "what what's where where's when when's how how's who who's which why can could would "
    "will is are do does did has have should may any"
)
_REQUEST_WORDS = _set(
    "want need like please help check tell give show find book cancel look know i'd trying "
    "looking wondering question calling about"
)
# "and what about X", "how about X": the caller changes one argument.
_FOLLOW_LEADS: tuple[tuple[str, ...], ...] = (
    ("and", "what", "about"),
    ("and", "how", "about"),
    ("what", "about"),
    ("how", "about"),
    ("what", "of"),
    ("same", "thing", "for"),
    ("same", "for"),
    ("and", "for"),
    ("and", "in"),
    ("and",),
    ("also",),
    ("now",),
    ("then",),
    ("or",),
)
_ACK = _set("ok okay great alright right thanks thank cool perfect um uh well so oh fine good")
_VERBS = _set(
    """check get look find book reserve cancel schedule transfer tell order send update change
    create make set add remove delete pay report search list show give provide return fetch
    retrieve start stop connect call request submit track verify confirm open close reset buy
    sell apply register sign log lookup compute calculate convert play move reschedule
    arrange locate""",
)

_ANYTHING_ELSE = "Is there anything else I can help with?"


@dataclass
class ScriptedReply:
    """A canned answer.

    Attributes:
        match: Keywords or phrases; the reply is used when any appears in the
            caller's utterance (case-insensitive, whole words).
        reply: What to say; "{user}" is replaced by the caller's utterance and
            "{abilities}" by what the agent's tools can do.
    """

    match: list[str]
    reply: str


def _default_small_talk() -> list[ScriptedReply]:
    return [
        ScriptedReply(
            ["can you hear me", "are you there", "are you still there", "is anyone there"],
            "Yes, I can hear you. How can I help?",
        ),
        ScriptedReply(
            [
                "who are you",
                "what are you",
                "who is this",
                "who am i speaking",
                "who am i talking",
                "are you a robot",
                "are you a bot",
                "are you human",
                "are you real",
                "are you a person",
            ],
            "I'm a virtual assistant. I can {abilities}.",
        ),
        ScriptedReply(
            [
                "what can you do",
                "how can you help",
                "what do you do",
                "can you help",
                "help me",
                "i need help",
                "i need some help",
            ],
            "I can {abilities}. What would you like to do?",
        ),
        ScriptedReply(
            ["never mind", "nevermind", "forget it", "cancel that"],
            "Okay. What else can I help you with?",
        ),
        ScriptedReply(
            [
                "bye",
                "goodbye",
                "good bye",
                "see you",
                "that's all",
                "that is all",
                "that's it",
                "nothing else",
                "have a good day",
                "have a nice day",
            ],
            "Thanks for calling. Goodbye!",
        ),
        ScriptedReply(
            ["thank you", "thanks", "cheers", "appreciate it"], f"You're welcome. {_ANYTHING_ELSE}"
        ),
        ScriptedReply(
            ["how are you", "how's it going", "how are things"],
            "I'm well, thank you. How can I help you?",
        ),
        ScriptedReply(
            ["hello", "hi", "hey", "good morning", "good afternoon", "good evening", "hiya"],
            "Hello! How can I help you today?",
        ),
    ]


@dataclass
class ScriptedConfig:
    """How the scripted engine answers.

    Attributes:
        replies: The agent's canned answers, tried in order before small talk.
        fallback: Said when no reply matches and no tool applies.
        words_per_token: Words in each streamed Token.
        token_delay: Seconds between tokens, to mimic a real model's pace.
        small_talk: Built-in answers to greetings, thanks, goodbye, "who are
            you" and the like, tried after `replies`; empty to turn them off.
        repeat: Said when the utterance held no words (silence, "um").
    """

    replies: list[ScriptedReply] = field(default_factory=list)
    fallback: str = "I'm sorry, I can't help with that."
    words_per_token: int = 1
    token_delay: float = 0.0
    small_talk: list[ScriptedReply] = field(default_factory=_default_small_talk)
    repeat: str = "Sorry, I didn't catch that. Could you say it again?"


# ---------------------------------------------------------------- words


@lru_cache(maxsize=4096)
def _stem(word: str) -> str:
    """A light suffix stripper: plurals, -ing, -ed, doubled consonants, final e."""
    w = word.lower().replace("\u2019", "'")
    if w.endswith("'s"):
        w = w[:-2]
    if len(w) <= 3 or not w.isalpha():
        return w
    if w.endswith("ies") and len(w) > 4:
        w = w[:-3] + "y"
    elif w.endswith("sses"):
        w = w[:-2]
    elif w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    for suffix in ("ing", "ed"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            w = w[: -len(suffix)]
            break
    if len(w) > 2 and w[-1] == w[-2] and w[-1] not in "aeious":
        w = w[:-1]
    if len(w) > 3 and w.endswith("e"):
        w = w[:-1]
    return w


def _build_concepts() -> dict[str, frozenset[str]]:
    table: dict[str, set[str]] = {}
    for concept, words in _CONCEPTS.items():
        for word in words.split():
            table.setdefault(_stem(word), set()).add(concept)
    return {stem: frozenset(concepts) for stem, concepts in table.items()}


_CONCEPT_OF = _build_concepts()
_STOP_STEMS = frozenset(_stem(w) for w in STOPWORDS | FILLERS | _POLITE | _GENERIC)
_COMMON = (
    STOPWORDS
    | FILLERS
    | _POLITE
    | _GENERIC
    | _QUESTION_WORDS
    | _REQUEST_WORDS
    | _VERBS
    | _TEMPORAL
    | _MONTHS
    | _YES
    | _NO
    | _ACK
    | frozenset(w for words in _CONCEPTS.values() for w in words.split())
    | _set("hi hello hey bye goodbye i")
)


def _concepts(stem: str) -> frozenset[str]:
    return _CONCEPT_OF.get(stem, frozenset())


def _scores(word: str, stem: str) -> bool:
    """Whether a word may count towards a tool: not a stopword, unless it means
    something ("where" is about status), and never a generic verb or a number."""
    if not stem or stem.isdigit() or word in _GENERIC or word in FILLERS:
        return False
    if word in STOPWORDS or stem in _STOP_STEMS:
        return bool(_concepts(stem))
    return True


_TOKEN_RE = re.compile(r"\d+(?:[.,:]\d+)+|[^\W_]+(?:['\u2019][^\W_]+)*")


@dataclass(frozen=True)
class _Word:
    surface: str
    lower: str
    stem: str
    start: int
    end: int
    #: First word of a sentence (its capital says nothing).
    initial: bool


class _Utterance:
    """One utterance, normalised and split into words with their stems."""

    def __init__(self, raw: str) -> None:
        self.raw = raw
        self.text = normalise.normalise_transcript(raw)
        words: list[_Word] = []
        initial = True
        last = 0
        for m in _TOKEN_RE.finditer(self.text):
            if words and re.search(r"[.?!]", self.text[last : m.start()]):
                initial = True
            surface = m.group()
            lower = surface.lower().replace("\u2019", "'")
            if re.fullmatch(r"\d{1,3}(?:,\d{3})+", lower):
                lower = lower.replace(",", "")
            words.append(_Word(surface, lower, _stem(lower), m.start(), m.end(), initial))
            initial = False
            last = m.end()
        self.words = words
        self.lower = [w.lower for w in words]
        #: Whisper-style text: capitals carry meaning (names, places).
        self.cased = any(c.isupper() for c in self.text) and self.text != self.text.upper()
        self.question = "?" in raw

    def span_text(self, a: int, b: int) -> str:
        return self.text[self.words[a].start : self.words[b - 1].end]

    def content(self) -> list[int]:
        """Indexes of words that carry meaning (not fillers, politeness, stopwords)."""
        return [
            n
            for n, w in enumerate(self.words)
            if w.lower not in STOPWORDS and w.lower not in FILLERS and w.lower not in _POLITE
        ]

    def empty(self) -> bool:
        return all(w in FILLERS for w in self.lower)

    def requestish(self) -> bool:
        if self.question or not self.lower:
            return self.question
        return self.lower[0] in _QUESTION_WORDS or bool(set(self.lower) & _REQUEST_WORDS)

    def matches(self, phrase: str) -> bool:
        target = words_of(phrase)
        n = len(target)
        return bool(n) and any(self.lower[a : a + n] == target for a in range(len(self.lower)))


# ---------------------------------------------------------------- tools


@dataclass(frozen=True)
class _Param:
    name: str
    schema: dict[str, Any]
    kind: str  # enum code integer number boolean date time datetime text free skip
    role: str  # for text: place, person or other
    required: bool
    words: frozenset[str]  # stems of the name (and for codes, the description's nouns)
    question: str


@dataclass(frozen=True)
class _Tool:
    spec: ToolSpec
    stems: dict[str, float]
    concepts: dict[str, float]
    params: tuple[_Param, ...]
    phrase: str  # "check the status of a customer order"
    vocabulary: frozenset[str]  # stems that only name the tool, never an argument value


def _profile(spec: ToolSpec) -> _Tool:
    return _profile_cached(spec.name, spec.description, json.dumps(spec.parameters))


@lru_cache(maxsize=256)
def _profile_cached(name: str, description: str, parameters_json: str) -> _Tool:
    parameters: dict[str, Any] = json.loads(parameters_json)
    spec = ToolSpec(name, description, parameters)
    stems: dict[str, float] = {}

    def add(words: Iterable[str], weight: float) -> None:
        for word in words:
            stem = _stem(word)
            if not _scores(word, stem):
                continue
            w = min(weight, 1.0) if _MILD in _concepts(stem) else weight
            stems[stem] = max(stems.get(stem, 0.0), w)

    props: dict[str, Any] = parameters.get("properties") or {}
    required = {str(r) for r in parameters.get("required") or []}
    add(split_identifier(name), 2.0)
    described = words_of(description)
    if described[:1] in (["returns"], ["return"]):
        described = described[1:]  # docstring style: "Returns the weather for a city."
    add(described, 1.0)
    # Words that name the tool, never an argument's value.
    own = frozenset(stems)
    params: list[_Param] = []
    for pname, pschema in props.items():
        pschema = pschema if isinstance(pschema, dict) else {}
        pdesc = str(pschema.get("description", ""))
        add(split_identifier(pname), 0.5)
        add(words_of(pdesc), 0.5)
        for option in pschema.get("enum") or []:
            add(words_of(str(option)), 1.0)
        kind, role = _kind(pname, pschema)
        pwords = frozenset(_stem(w) for w in split_identifier(pname)) - _STOP_STEMS
        params.append(
            _Param(
                pname,
                pschema,
                kind,
                role,
                pname in required,
                pwords,
                _question(pname, pschema, kind),
            )
        )
    concepts: dict[str, float] = {}
    for stem, weight in stems.items():
        for concept in _concepts(stem):
            concepts[concept] = max(concepts.get(concept, 0.0), weight)
    own_concepts = {c for stem in own for c in _concepts(stem)}
    vocabulary = own | frozenset(s for s, cs in _CONCEPT_OF.items() if cs & own_concepts)
    return _Tool(spec, stems, concepts, tuple(params), _phrase(spec), vocabulary)


def _kind(name: str, schema: dict[str, Any]) -> tuple[str, str]:
    """The parameter's kind (how to read its value) and, for text, its role."""
    if "enum" in schema:
        return "enum", ""
    kind = schema.get("type", "string")
    if isinstance(kind, list):  # ["string", "null"]
        kind = next((k for k in kind if k != "null"), "string")
    if kind in ("integer", "number", "boolean"):
        return str(kind), ""
    if kind != "string":
        return "skip", ""  # arrays and objects are beyond a scripted engine
    name_words = set(split_identifier(name))
    desc_words = set(words_of(str(schema.get("description", ""))))
    fmt = str(schema.get("format", ""))
    if fmt in ("date-time",) or (name_words & _DATE_NAMES and name_words & _TIME_NAMES):
        return "datetime", ""
    if fmt == "date" or name_words & _DATE_NAMES:
        return "date", ""
    if fmt == "time" or name_words & _TIME_NAMES:
        return "time", ""
    if name_words & _CODE_WORDS:
        return "code", ""
    if name_words & _FREE_NAMES:
        return "free", ""
    if name_words & _PLACE_NAMES:
        return "text", "place"
    if name_words & _PERSON_NAMES:
        return "text", "person"
    if desc_words & _CODE_WORDS:
        return "code", ""
    if desc_words & {"date", "day"}:
        return "date", ""
    if desc_words & _PLACE_NAMES:
        return "text", "place"
    if desc_words & _PERSON_NAMES:
        return "text", "person"
    return "text", ""


def _spaced(name: str) -> str:
    return " ".join(split_identifier(name))


def _question(name: str, schema: dict[str, Any], kind: str) -> str:
    """A short, natural question for a parameter, from its description when it has one."""
    phrase = _noun_phrase(str(schema.get("description", ""))) or _spaced(name)
    if phrase.lower().startswith(("how many", "how much", "which", "what", "when", "where", "who")):
        return phrase[0].upper() + phrase[1:] + "?"
    if kind == "enum":
        options = [str(o) for o in schema["enum"]]
        listed = ", ".join(options[:-1]) + " or " + options[-1] if len(options) > 1 else options[0]
        return f"Which {phrase}: {listed}?"
    if kind == "boolean":
        return f"Do you want {phrase}?"
    return f"What is the {phrase}?"


_ARTICLES = _set("the a an your their caller's customer's")


def _noun_phrase(description: str) -> str:
    """ "The order ID to look up" -> "order ID"; "" when the description is not a short phrase."""
    text = re.split(r"[,;.(\n]| e\.g| such as| for example| like ", description.strip())[0]
    text = re.split(r" (?:to|that|which|we|you|the caller) ", f"{text} ")[0].strip()
    words = text.split()
    while words and words[0].lower() in _ARTICLES:
        words.pop(0)
    if not words or len(words) > 6:
        return ""
    first = words[0]
    if not (first.isupper() and len(first) > 1):  # keep acronyms: "ID", "ZIP"
        words[0] = first[0].lower() + first[1:]
    return " ".join(words)


def _phrase(spec: ToolSpec) -> str:
    """What the tool does, as a verb phrase: "check the status of a customer order"."""
    text = spec.description.strip().split("\n")[0]
    text = re.split(r"(?<=[a-z0-9])\. ", text)[0].rstrip(". ")
    words = text.split()
    if len(words) > 14:
        words = re.split(r"[,;:]", text)[0].split()[:14]
    name_words = split_identifier(spec.name)
    if not words:
        return _spaced(spec.name)
    first = words[0].lower()
    base = first[:-1] if first.endswith("s") and not first.endswith("ss") else first
    if first in _VERBS or first == (name_words[:1] or [""])[0]:
        words[0] = first
    elif base in _VERBS or base == (name_words[:1] or [""])[0]:
        words[0] = base
    else:
        if first not in ("the", "a", "an"):
            words.insert(0, "the")
        words[1] = words[1][0].lower() + words[1][1:] if words[1] else words[1]
        return "give you " + " ".join(words)
    return " ".join(words)


def _abilities(tools: Sequence[_Tool]) -> str:
    phrases = [t.phrase for t in tools]
    if not phrases:
        return ""
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


# ---------------------------------------------------------------- scoring


def _score(tool: _Tool, utt: _Utterance) -> float:
    """How well the utterance asks for this tool (see the module docstring)."""
    groups: dict[str, list[float]] = {}
    seen: set[str] = set()
    for word in utt.words:
        stem = word.stem
        if stem in seen or not _scores(word.lower, stem):
            continue
        seen.add(stem)
        exact = tool.stems.get(stem, 0.0)
        best_concept = ""
        via = 0.0
        for concept in _concepts(stem):
            weight = tool.concepts.get(concept, 0.0) * 0.75
            if weight > via:
                via, best_concept = weight, concept
        if exact >= via and exact > 0:
            key = next(iter(sorted(_concepts(stem) & set(tool.concepts))), stem)
            groups.setdefault(key, []).append(exact)
        elif via > 0:
            groups.setdefault(best_concept, []).append(via)
    total = 0.0
    for hits in groups.values():
        hits.sort(reverse=True)
        total += hits[0] + 0.5 * sum(hits[1:])
    return total + _value_bonus(tool, utt)


def _value_bonus(tool: _Tool, utt: _Utterance) -> float:
    """A value that fits the tool (an ID for its ID parameter, a place after "in"
    for its city) is evidence too."""
    bonus = 0.0
    for param in tool.params:
        if param.kind == "code":
            codes = _codes(utt, [False] * len(utt.words))
            if codes:
                bonus = max(bonus, 1.0 if max(len(c[2]) for c in codes) >= 3 else 0.5)
        elif param.kind == "text" and param.role == "place":
            spans = _Filler(tool, utt).text_spans(answer=False)
            if any(cue in _PLACE_CUES for _, _, cue in spans):
                bonus = max(bonus, 0.5)
    return bonus


def _ranked(tools: Sequence[_Tool], utt: _Utterance) -> list[tuple[float, int, _Tool]]:
    scored = [(_score(t, utt), n, t) for n, t in enumerate(tools)]
    return sorted(scored, key=lambda s: (-s[0], s[1]))


_CONFIDENT = 1.75
_MARGIN = 1.0
_HINT = 0.75


def _confident(ranked: list[tuple[float, int, _Tool]], utt: _Utterance) -> _Tool | None:
    # A request ("what's the forecast?") needs a little less than a bare word.
    needed = _CONFIDENT - 0.25 if utt.requestish() else _CONFIDENT
    if not ranked or ranked[0][0] < needed:
        return None
    second = ranked[1][0] if len(ranked) > 1 else 0.0
    return ranked[0][2] if ranked[0][0] - second >= _MARGIN else None


# ---------------------------------------------------------------- argument filling


class _Filler:
    """Reads one tool's arguments out of an utterance; each word fills one parameter."""

    def __init__(self, tool: _Tool, utt: _Utterance) -> None:
        self.tool = tool
        self.utt = utt
        self.used = [False] * len(utt.words)

    def free(self, a: int, b: int) -> bool:
        return not any(self.used[a:b])

    def claim(self, a: int, b: int) -> None:
        self.used[a:b] = [True] * (b - a)

    def fill(self, params: Sequence[_Param], *, answer: bool = False) -> dict[str, Any]:
        # The most specific readers go first and claim their words, so that free
        # text and numbers do not swallow a date, a code or an enum value.
        order = ["enum", "datetime", "date", "time", "code", "boolean", "integer", "number"]
        order += ["text", "free"]
        args: dict[str, Any] = {}
        for kind in order:
            group = [p for p in params if p.kind == kind]
            if kind == "text":
                args.update(self.texts(group, answer=answer))
                continue
            for param in group:
                value = self.read(param, answer=answer)
                if value is not None:
                    args[param.name] = value
        return args

    def read(self, param: _Param, *, answer: bool) -> Any:
        kind = param.kind
        if kind == "enum":
            return self.enum(param)
        if kind in ("date", "time", "datetime"):
            return self.when(kind)
        if kind == "code":
            return self.code(param, answer=answer)
        if kind in ("integer", "number"):
            return self.number(param, integer=kind == "integer")
        if kind == "boolean":
            return self.boolean(param, answer=answer)
        if kind == "free":
            return self.free_text(answer=answer)
        return None

    # -- enums

    def enum(self, param: _Param) -> Any:
        words = self.utt.words
        options = sorted(param.schema["enum"], key=lambda v: -len(words_of(str(v))))
        for option in options:
            target = [_stem(w) for w in (words_of(str(option)) or split_identifier(str(option)))]
            n = len(target)
            for a in range(len(words) - n + 1):
                if n and [w.stem for w in words[a : a + n]] == target and self.free(a, a + n):
                    self.claim(a, a + n)
                    return option
        # A synonym of a one-word value: "big" for "large".
        for option in options:
            target = words_of(str(option))
            if len(target) != 1:
                continue
            concepts = _concepts(_stem(target[0]))
            for a, word in enumerate(words):
                if concepts & _concepts(word.stem) and self.free(a, a + 1):
                    self.claim(a, a + 1)
                    return option
        return None

    # -- dates and times

    def when(self, kind: str) -> str | None:
        date = self.date_span() if kind in ("date", "datetime") else None
        if date is not None:
            self.claim(*date)
        time = self.time_span(include_parts=kind != "date") if kind != "date" else None
        if time is not None:
            self.claim(time[0], time[1])
        if kind == "date" and date is None:
            # A day given as a part of the day alone: "tonight", "this evening".
            return None
        parts = []
        if date is not None:
            parts.append(self.utt.span_text(*date))
        if time is not None:
            parts.append(time[2])
        return " at ".join(parts) if parts else None

    def date_span(self) -> tuple[int, int] | None:
        lw = self.utt.lower
        n = len(lw)
        for i, word in enumerate(lw):
            if not self.free(i, i + 1):
                continue
            anchor = word in _DAY_WORDS or word in ("weekdays",)
            month = word in _MONTHS and (
                word not in ("may", "march", "sep", "dec", "jan", "mar")
                or (i + 1 < n and _day_number(lw[i + 1]))
                or (i > 0 and _day_number(lw[i - 1]))
                or (i > 1 and lw[i - 1] == "of" and _day_number(lw[i - 2]))
            )
            ordinal = _day_number(word) and i > 0 and lw[i - 1] == "the" and (not word.isdigit())
            relative = word in ("week", "month", "weekend") and i > 0 and lw[i - 1] in _DATE_LEAD
            in_days = (
                word in ("day", "days", "week", "weeks")
                and i > 1
                and lw[i - 2] == "in"
                and (lw[i - 1].isdigit() or lw[i - 1] in NUMBER_WORDS or lw[i - 1] == "a")
            )
            if not (anchor or month or ordinal or relative or in_days):
                continue
            a, b = i, i + 1
            if in_days:
                a = i - 2
            while (
                a > 0
                and self.free(a - 1, a)
                and (
                    lw[a - 1] in _DATE_LEAD | {"the", "day", "after", "of"}
                    or (month and a == i and _day_number(lw[a - 1]))
                )
            ):
                a -= 1
            while (
                b < n
                and self.free(b, b + 1)
                and (lw[b] in _MONTHS or lw[b] == "of" or _day_number(lw[b]))
            ):
                b += 1
            while b > a + 1 and lw[b - 1] == "of":
                b -= 1
            # "on Friday", "the 5th": the article is not part of the value,
            # but "the day after tomorrow" keeps its words.
            while a < i and lw[a] in ("the", "of") and lw[a + 1] != "day":
                a += 1
            return a, b
        return None

    def time_span(self, *, include_parts: bool) -> tuple[int, int, str] | None:
        lw = self.utt.lower
        n = len(lw)
        for i, word in enumerate(lw):
            if not self.free(i, i + 1):
                continue
            if word in ("noon", "midday", "midnight"):
                return i, i + 1, word
            if word in ("half", "quarter") and i + 2 < n and lw[i + 1] in ("past", "to"):
                hour = _hour(lw[i + 2])
                if hour is not None:
                    minutes = 30 if word == "half" else 15
                    if lw[i + 1] == "to":
                        hour, minutes = (hour - 1) % 12 or 12, 60 - minutes
                    return i, i + 3, f"{hour}:{minutes:02d}"
            clock = _CLOCK_RE.match(word)
            hour = _hour(word) if clock is None else int(clock.group(1))
            if hour is None or hour > 24:
                continue
            minute = clock.group(2) if clock else None
            suffix = clock.group(3) if clock else None
            cued = i > 0 and lw[i - 1] in ("at", "around", "by", "from", "until")
            b = i + 1
            two_digits = b < n and re.fullmatch(r"\d{2}", lw[b]) is not None and int(lw[b]) < 60
            if (
                minute is None
                and two_digits
                and (cued or (b + 1 < n and lw[b + 1] in ("am", "pm", "a", "p")))
            ):
                minute, b = lw[b], b + 1  # "at 3 30", "3 30 pm"
            oclock = False
            if suffix is None and b < n and lw[b] in ("am", "pm"):
                suffix, b = lw[b], b + 1
            elif suffix is None and b + 1 < n and lw[b] in ("a", "p") and lw[b + 1] == "m":
                suffix, b = lw[b] + "m", b + 2
            elif b < n and lw[b] in ("o'clock", "oclock"):
                oclock, b = True, b + 1
            if not (suffix or oclock or minute or (cued and hour <= 12)):
                continue
            text = str(hour) + (f":{minute}" if minute else "")
            if suffix:
                text += " " + suffix.upper()
            return i, b, text
        if include_parts:
            for i, word in enumerate(lw):
                if word in _PART_OF_DAY and self.free(i, i + 1):
                    return i, i + 1, word
        return None

    # -- codes and numbers

    def code(self, param: _Param, *, answer: bool) -> str | None:
        found = _codes(self.utt, self.used)
        if not found:
            return None
        # The code right after the parameter's own word ("order 583") comes first.
        mentions = self.mentions(param)
        near = [c for c in found if c[0] - 1 in mentions or c[0] - 2 in mentions]
        a, b, code = (near or [max(reversed(found), key=lambda c: len(c[2]))])[0]
        self.claim(a, b)
        return code

    def mentions(self, param: _Param) -> set[int]:
        concepts: set[str] = set()
        for stem in param.words:
            concepts |= _concepts(stem)
        words = set(param.words) | {"number", "id", "code", "reference", "ref"}
        return {
            n
            for n, w in enumerate(self.utt.words)
            if w.stem in words or (_concepts(w.stem) & concepts)
        }

    def number(self, param: _Param, *, integer: bool) -> int | float | None:
        lw = self.utt.lower
        spans = find_numbers(lw)
        mentions = self.mentions(param)
        spans.sort(key=lambda s: 0 if s[0] - 1 in mentions else 1)
        for a, b, value in spans:
            if not self.free(a, b):
                continue
            if integer and isinstance(value, float):
                if not value.is_integer():
                    continue
                value = int(value)
            self.claim(a, b)
            return value
        return None

    def boolean(self, param: _Param, *, answer: bool) -> bool | None:
        lw = self.utt.lower
        if answer:
            for a, word in enumerate(lw):
                if word in _NO and self.free(a, a + 1):
                    self.claim(a, a + 1)
                    return False
                if word in _YES and self.free(a, a + 1):
                    self.claim(a, a + 1)
                    return True
        concepts: set[str] = set()
        for stem in param.words:
            concepts |= _concepts(stem)
        for a, said in enumerate(self.utt.words):
            if not self.free(a, a + 1) or said.lower in STOPWORDS:
                continue
            if said.stem in param.words or (_concepts(said.stem) & concepts):
                # "no outdoor", "not outside", "without cheese"
                negated = any(w in _NO for w in lw[max(0, a - 3) : a])
                self.claim(a, a + 1)
                return not negated
        return None

    # -- free text: names and places

    def texts(self, params: Sequence[_Param], *, answer: bool) -> dict[str, str]:
        if not params:
            return {}
        spans = self.text_spans(answer=answer)
        args: dict[str, str] = {}
        for param in params:
            cues = _PLACE_CUES if param.role == "place" else _PERSON_CUES if param.role else _CUES
            pick = next((s for s in spans if s[2] in cues), spans[0] if spans else None)
            if pick is None:
                continue
            spans.remove(pick)
            self.claim(pick[0], pick[1])
            args[param.name] = self.utt.span_text(pick[0], pick[1])
        return args

    def name_word(self, n: int) -> bool:
        """Whether the word could be part of a name or place."""
        word = self.utt.words[n]
        return (
            self.free(n, n + 1)
            and word.lower not in _COMMON
            and word.stem not in self.tool.vocabulary
            and not any(c.isdigit() for c in word.lower)
            and word.lower not in NUMBER_WORDS
            and len(word.lower) > 1
        )

    def text_spans(self, *, answer: bool) -> list[tuple[int, int, str]]:
        """Candidate (start, end, cue) spans, best first."""
        words = self.utt.words
        n = len(words)
        spans: list[tuple[int, int, str]] = []
        if self.utt.cased:
            i = 0
            while i < n:
                w = words[i]
                if not (w.surface[:1].isupper() and self.name_word(i)):
                    i += 1
                    continue
                j = i + 1
                while j < n and j - i < 4:
                    nxt = words[j]
                    if nxt.surface[:1].isupper() and self.name_word(j) and not nxt.initial:
                        j += 1
                    elif (
                        nxt.lower in _NAME_JOINERS
                        and j + 1 < n
                        and words[j + 1].surface[:1].isupper()
                        and self.name_word(j + 1)
                    ):
                        j += 2
                    else:
                        break
                cue = words[i - 1].lower if i > 0 else ""
                spans.append((i, j, cue))
                i = j
            if spans:
                return spans
        # Lowercase text: the words after a cue ("in paris", "for john smith").
        for i in range(n):
            if words[i].lower not in _CUES:
                continue
            j = i + 1
            while j < n and j - i <= 4 and self.name_word(j):
                j += 1
            if j > i + 1:
                spans.append((i + 1, j, words[i].lower))
        if spans or not (answer or not self.utt.cased):
            return spans
        # An answer, or a bare "weather paris": the meaningful words left.
        run: list[int] = [k for k in range(n) if self.name_word(k)]
        if run and run[-1] - run[0] == len(run) - 1 and len(run) <= 4:
            spans.append((run[0], run[-1] + 1, ""))
        return spans

    def free_text(self, *, answer: bool) -> str | None:
        words = self.utt.words
        keep = [
            n
            for n, w in enumerate(words)
            if self.free(n, n + 1)
            and w.lower not in FILLERS
            and w.lower not in _POLITE
            and (answer or w.stem not in self.tool.vocabulary)
        ]
        while keep and words[keep[0]].lower in STOPWORDS:
            keep.pop(0)
        if not keep:
            return None
        self.claim(keep[0], keep[-1] + 1)
        return self.utt.span_text(keep[0], keep[-1] + 1)


def _day_number(word: str) -> bool:
    if _ORDINAL_RE.match(word) or word in _ORDINALS:
        return True
    return word.isdigit() and 1 <= int(word) <= 31


def _hour(word: str) -> int | None:
    value = parse_number([word])
    if isinstance(value, int) and 0 <= value <= 24:
        return value
    return None


def _codes(utt: _Utterance, used: list[bool]) -> list[tuple[int, int, str]]:
    """Codes and IDs said in the utterance, as (start, end, code) word spans."""
    lw = utt.lower
    out: list[tuple[int, int, str]] = []
    for a, b, code in find_spelled(lw):
        if any(used[a:b]):
            continue
        if not any(c.isdigit() for c in code):
            # Letters alone are an ID only when clearly spelled ("a b c") or typed.
            single = [letter_kind(w) for w in lw[a:b]]
            if b - a < 2 or any(k is None or k[1] in ("nato", "name") for k in single):
                continue
        if b < len(lw) and lw[b] in _UNITS_AFTER:
            continue  # "3 days", "2 items"
        out.append((a, b, code))
    return out


# ---------------------------------------------------------------- the conversation


@dataclass
class _Pending:
    """A tool we were filling in: the request, and answers to our questions so far."""

    tool: _Tool
    request: _Utterance
    answers: dict[str, _Utterance]
    asked: _Param


def _user_at(messages: Sequence[Message], at: int) -> bool:
    return 0 <= at < len(messages) and messages[at].role == "user"


def _assistant_text(messages: Sequence[Message], at: int) -> str:
    if 0 <= at < len(messages) and messages[at].role == "assistant":
        return (messages[at].content or "").strip()
    return ""


def _asked(text: str, tools: Sequence[_Tool]) -> list[tuple[_Tool, _Param]]:
    """The (tool, parameter) pairs whose question ends our message."""
    if not text:
        return []
    return [(t, p) for t in tools for p in t.params if text.endswith(p.question)]


def _pending(messages: Sequence[Message], at: int, tools: Sequence[_Tool]) -> _Pending | None:
    """If our last message asked for an argument: what we were filling in."""
    asked = _asked(_assistant_text(messages, at - 1), tools)
    if not asked or not _user_at(messages, at - 2):
        return None
    answers: dict[str, _Utterance] = {}
    chain = [(asked, at)]
    k = at - 2
    while True:
        earlier = _asked(_assistant_text(messages, k - 1), tools)
        if not earlier or not _user_at(messages, k - 2):
            break
        chain.append((earlier, k))
        k -= 2
    request = _Utterance(messages[k].content or "")
    # The tool: one the whole chain asked about, the best for the request on a tie.
    names = {t.spec.name for t, _ in chain[-1][0]}
    for pairs, _ in chain:
        names &= {t.spec.name for t, _ in pairs}
    candidates = [t for t in tools if t.spec.name in names] or [p[0] for p in asked]
    tool = _ranked(candidates, request)[0][2]
    for pairs, where in reversed(chain):
        for t, p in pairs:
            if t is tool:
                # Newer answers override older ones for the same parameter.
                answers[p.name] = _Utterance(messages[where].content or "")
    last = next(p for t, p in asked if t is tool)
    del answers[last.name]  # the current utterance is the answer being read
    return _Pending(tool, request, answers, last)


def _clarifying(tools: Sequence[_Tool]) -> str:
    if len(tools) == 1:
        return f"Do you want me to {tools[0].phrase}?"
    phrases = [t.phrase for t in tools]
    return f"Do you want me to {', '.join(phrases[:-1])}, or {phrases[-1]}?"


def _clarified(
    messages: Sequence[Message], at: int, tools: Sequence[_Tool]
) -> tuple[list[_Tool], _Utterance] | None:
    """If our last message asked which tool was meant: the candidates and the request."""
    text = _assistant_text(messages, at - 1)
    if not text.startswith("Do you want me to ") or not _user_at(messages, at - 2):
        return None
    found = sorted((text.find(t.phrase), n, t) for n, t in enumerate(tools) if t.phrase in text)
    candidates = [t for _, _, t in found]
    if not candidates or _clarifying(candidates) != text:
        return None
    return candidates, _Utterance(messages[at - 2].content or "")


def _previous_call(messages: Sequence[Message], at: int) -> ToolCall | None:
    for k in range(at - 1, -1, -1):
        if messages[k].role == "assistant" and messages[k].tool_calls:
            return messages[k].tool_calls[-1]
    return None


def _follow_lead(utt: _Utterance) -> int | None:
    """Where the new value starts in a follow-up ("what about London?"), else None."""
    lw = utt.lower
    i = 0
    while i < len(lw) and lw[i] in _ACK:
        i += 1
    for lead in _FOLLOW_LEADS:
        if tuple(lw[i : i + len(lead)]) == lead:
            return i + len(lead)
    if lw and lw[-1] in ("then", "instead", "too"):
        return i
    return None


class ScriptedBackend(LlmBackend):
    """The offline deterministic engine (registry name "scripted").

    Args:
        config: Replies, fallback and pacing; defaults to `ScriptedConfig()`.
    """

    name = "scripted"

    def __init__(self, config: ScriptedConfig | None = None) -> None:
        self.config = config or ScriptedConfig()
        self._calls = 0

    async def stream(
        self,
        messages: list[Message],
        tools: list[ToolSpec],
        options: LlmOptions | None = None,
    ) -> AsyncIterator[LlmEvent]:
        """Stream the deterministic answer to the conversation.

        Args:
            messages: The conversation; only its tail matters.
            tools: Tools the engine may call.
            options: Ignored (the engine is deterministic).

        Yields:
            Tokens then Done("stop"), or ToolCalls then Done("tool_calls").
        """
        if messages and messages[-1].role == "tool":
            decision: ToolCall | str = self._tool_result(messages)
        else:
            decision = self._decide(messages, [_profile(t) for t in tools])
        if isinstance(decision, ToolCall):
            yield ToolCalls((decision,))
            yield Done("tool_calls")
            return
        async for event in self._speak(decision):
            yield event

    # ------------------------------------------------------------ answers

    @staticmethod
    def _tool_result(messages: list[Message]) -> str:
        """What to say about the trailing tool results (several if calls ran in parallel)."""
        results: list[str] = []
        for message in reversed(messages):
            if message.role != "tool":
                break
            content = message.content or ""
            try:
                data = json.loads(content)
            except ValueError:
                data = None
            if isinstance(data, dict) and "response" in data:
                content = str(data["response"])
            elif isinstance(data, str):
                content = data
            results.append(content.strip())
        text = " ".join(r for r in reversed(results) if r)
        return text or "Done."

    async def _speak(self, text: str) -> AsyncIterator[LlmEvent]:
        # Each token carries its words and the whitespace after them, so
        # joining the tokens gives the text back exactly.
        pieces = re.findall(r"\S+\s*", text.strip())
        step = max(1, self.config.words_per_token)
        for n in range(0, len(pieces), step):
            if n and self.config.token_delay > 0:
                await asyncio.sleep(self.config.token_delay)
            yield Token("".join(pieces[n : n + step]))
        yield Done("stop")

    # ------------------------------------------------------------ deciding

    def _decide(self, messages: list[Message], tools: list[_Tool]) -> ToolCall | str:
        """A tool call or what to say (see the module docstring for the order)."""
        at = len(messages) - 1
        if at < 0 or messages[at].role != "user":
            return self.config.fallback.replace("{user}", "")
        raw = messages[at].content or ""
        utt = _Utterance(raw)
        pending = _pending(messages, at, tools)
        if utt.empty():
            # Still asking: ask the same question, so the answer is read as one.
            if pending is not None:
                return f"Sorry, I didn't catch that. {pending.asked.question}"
            return self.config.repeat

        # 2. An answer to our question for an argument, or for which tool.
        if pending is not None:
            value = _Filler(pending.tool, utt).fill([pending.asked], answer=True)
            if value:
                return self._complete(
                    pending.tool, pending.request, {**pending.answers, pending.asked.name: utt}
                )
        clarified = _clarified(messages, at, tools)
        if clarified is not None:
            decided = self._after_clarifying(clarified[0], clarified[1], utt)
            if decided is not None:
                return decided

        # 3. A tool named by this utterance.
        ranked = _ranked(tools, utt)
        previous = _previous_call(messages, at)
        lead = _follow_lead(utt)
        chosen = _confident(ranked, utt)
        if chosen is not None:
            carry = {}
            if previous is not None and previous.name == chosen.spec.name and lead is not None:
                carry = dict(previous.arguments)
            return self._complete(chosen, utt, {}, carry)

        # 5. A follow-up: the previous tool with a new argument.
        if previous is not None:
            followed = self._follow_up(previous, tools, utt, lead)
            if followed is not None:
                return followed

        # 6. Talk: the agent's replies, small talk unless this is a request a
        # tool half matches ("hello, can you check ..."), then clarify.
        hinted = [t for s, _, t in ranked if s >= max(_HINT, ranked[0][0] - _MARGIN)]
        unsure = bool(hinted) and utt.requestish()
        said = self._talk(utt, raw, tools, messages, at, pending is not None, unsure)
        if said is not None:
            return said
        if pending is not None:
            return f"Sorry, I didn't catch that. {pending.asked.question}"
        if unsure:
            return _clarifying(hinted[:3])
        return self.config.fallback.replace("{user}", raw)

    def _complete(
        self,
        tool: _Tool,
        request: _Utterance,
        answers: dict[str, _Utterance],
        carry: dict[str, Any] | None = None,
    ) -> ToolCall | str:
        """Call the tool with what was heard, or ask for the first missing argument."""
        args: dict[str, Any] = {}
        for param in tool.params:
            answer = answers.get(param.name)
            if answer is not None:
                args.update(_Filler(tool, answer).fill([param], answer=True))
        rest = [p for p in tool.params if p.name not in args]
        args.update(_Filler(tool, request).fill(rest))
        for name, value in (carry or {}).items():
            if name not in args and any(p.name == name for p in tool.params):
                args[name] = value
        missing = next((p for p in tool.params if p.required and p.name not in args), None)
        if missing is not None:
            return missing.question
        self._calls += 1
        ordered = {p.name: args[p.name] for p in tool.params if p.name in args}
        return ToolCall(f"call_{self._calls}", tool.spec.name, ordered)

    def _after_clarifying(
        self, candidates: list[_Tool], request: _Utterance, utt: _Utterance
    ) -> ToolCall | str | None:
        lw = utt.lower
        if len(candidates) == 1 and lw and lw[0] in _YES | _ACK:
            both = _Utterance(f"{request.raw} {utt.raw}")
            return self._complete(candidates[0], both, {})
        if lw and lw[0] in _NO - {"not"} and len(lw) <= 3:
            return "Okay. What can I help you with?"
        ranked = _ranked(candidates, utt)
        best = ranked[0]
        second = ranked[1][0] if len(ranked) > 1 else 0.0
        if best[0] >= _HINT and best[0] - second >= _HINT:
            return self._complete(best[2], _Utterance(f"{request.raw} {utt.raw}"), {})
        return None

    def _follow_up(
        self, previous: ToolCall, tools: list[_Tool], utt: _Utterance, lead: int | None
    ) -> ToolCall | None:
        tool = next((t for t in tools if t.spec.name == previous.name), None)
        if tool is None:
            return None
        short = len(utt.content()) <= 3
        if lead is None and not short:
            return None
        params = [p for p in tool.params if p.kind not in ("boolean", "skip", "free")]
        found = _Filler(tool, utt).fill(params, answer=True)
        new = {k: v for k, v in found.items() if previous.arguments.get(k) != v}
        if not new:
            return None
        args = {**previous.arguments, **new}
        self._calls += 1
        ordered = {p.name: args[p.name] for p in tool.params if p.name in args}
        return ToolCall(f"call_{self._calls}", tool.spec.name, ordered)

    def _talk(
        self,
        utt: _Utterance,
        raw: str,
        tools: list[_Tool],
        messages: list[Message],
        at: int,
        asking: bool,
        unsure: bool,
    ) -> str | None:
        replies = (
            [*self.config.replies] if unsure else [*self.config.replies, *self.config.small_talk]
        )
        for reply in replies:
            if any(utt.matches(phrase) for phrase in reply.match):
                text = reply.reply.replace("{user}", raw)
                if "{abilities}" in text:
                    abilities = _abilities(tools)
                    # With no tools there is nothing to list: just offer help.
                    text = (
                        text.replace("{abilities}", abilities)
                        if abilities
                        else "How can I help you?"
                    )
                return text
        lw = [w for w in utt.lower if w not in FILLERS]
        short_answer = all(w in _NO | _YES | _ACK | _POLITE for w in lw)
        if lw and len(lw) <= 3 and short_answer and not asking:
            previous = _assistant_text(messages, at - 1)
            if lw[0] in _NO and previous.endswith(_ANYTHING_ELSE):
                return "Thanks for calling. Goodbye!"
            if self.config.small_talk:
                return "Okay. What can I help you with?"
        return None
