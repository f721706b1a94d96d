"""The scripted engine's vocabulary: word tables, stemming and concepts.

Everything the engine knows about English lives here, as plain tables: words
that never say which tool is meant (stopwords, fillers, politeness, generic
verbs), everyday synonyms grouped into concepts, yes and no, the words that
mark a parameter's kind (codes, dates, times, places, persons), date and time
words, the cues before a name or a place, and follow-up leads. None of it is
about a particular tool.
"""

from __future__ import annotations

import re
from functools import lru_cache


def _set(words: str) -> frozenset[str]:
    return frozenset(words.split())


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
POLITE = _set("please thanks thank cheers kindly sorry excuse pardon")
# Words that say nothing about which tool is meant, wherever they appear.
GENERIC = _set(
    """get set give tell show make do have know want need like help information info detail
    details provide current customer user caller given specific specified request value
    thing something use using please able let"""
)
# Lookup verbs: a hint, never enough on their own.
MILD = "lookup"

# Concepts: words that mean the same thing to a caller. General, not per tool.
CONCEPTS: dict[str, str] = {
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
    "math": """math maths mathematical arithmetic calculate calculation calculator compute
        computation plus minus multiply multiplied multiplication divide divided division
        squared cubed power sum subtract subtraction addition equal equals percent""",
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

YES = _set("yes yeah yep yup true sure correct affirmative ok okay absolutely definitely please")
NO = _set("no nope nah false not don't dont without negative never none")

# Parameter names or descriptions with these words hold codes to spell, not prose.
CODE_WORDS = _set(
    "id ids code number num no ref reference pin zip postcode phone serial sku tracking "
    "confirmation"
)
DATE_NAMES = _set("date day when weekday")
TIME_NAMES = _set("time hour")
FREE_NAMES = _set(
    "query question message text note notes reason description details comment comments "
    "topic issue problem request summary feedback"
)
# Parameters that hold arithmetic to evaluate, and the words arithmetic is said with.
MATH_NAMES = _set("expression equation formula calculation arithmetic sum")
MATH_OPS = _set(
    "plus minus times x multiplied divided by over to the power of raised squared cubed mod modulo"
)
PLACE_NAMES = _set("city town place location destination origin country region area airport state")
PERSON_NAMES = _set("name person customer caller patient guest contact")

_WEEKDAYS = _set("monday tuesday wednesday thursday friday saturday sunday")
MONTHS = _set(
    "january february march april may june july august september october november december "
    "jan feb mar apr jun jul aug sep sept oct nov dec"
)
DAY_WORDS = _set("today tomorrow tonight yesterday weekend") | _WEEKDAYS
PART_OF_DAY = _set("morning afternoon evening night noon midnight lunchtime")
DATE_LEAD = _set("next this coming following")
ORDINAL_RE = re.compile(r"^\d{1,2}(st|nd|rd|th)$")
ORDINALS = _set(
    "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth "
    "thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth "
    "thirtieth"
)
CLOCK_RE = re.compile(r"^(\d{1,2})(?::(\d{2}))?(am|pm)?$")
_TEMPORAL = DAY_WORDS | PART_OF_DAY | _set("am pm o'clock oclock week month days weeks")

# Numbers followed by these are amounts, not IDs ("3 days ago", "2 items").
UNITS_AFTER = _set(
    "day days week weeks month months year years hour hours minute minutes second seconds "
    "dollar dollars pound pounds euro euros percent times time item items people person "
    "am pm o'clock"
)
# Words that introduce a name or a place in free text.
PLACE_CUES = _set("in at near from to around")
PERSON_CUES = _set("for called named under is")
CUES = PLACE_CUES | PERSON_CUES | _set("about")
# Lowercase connectors inside a capitalised name: "Stratford upon Avon".
NAME_JOINERS = _set("de del da la le van von upon el")

QUESTION_WORDS = _set(
    "what what's where where's when when's how how's who who's which why can could would "
    "will is are do does did has have should may any"
)
REQUEST_WORDS = _set(
    "want need like please help check tell give show find book cancel look know i'd trying "
    "looking wondering question calling about"
)
# "and what about X", "how about X": the caller changes one argument.
FOLLOW_LEADS: tuple[tuple[str, ...], ...] = (
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
ACK = _set("ok okay great alright right thanks thank cool perfect um uh well so oh fine good")
VERBS = _set(
    """check get look find book reserve cancel schedule transfer tell order send update change
    create make set add remove delete pay report search list show give provide return fetch
    retrieve start stop connect call request submit track verify confirm open close reset buy
    sell apply register sign log lookup compute calculate convert play move reschedule
    arrange locate""",
)

# Dropped from the front of a parameter's description to make its question.
ARTICLES = _set("the a an your their caller's customer's")


# ---------------------------------------------------------------- stems and concepts


@lru_cache(maxsize=4096)
def stem_of(word: str) -> str:
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
    for concept, words in CONCEPTS.items():
        for word in words.split():
            table.setdefault(stem_of(word), set()).add(concept)
    return {stem: frozenset(concepts) for stem, concepts in table.items()}


CONCEPT_OF = _build_concepts()
STOP_STEMS = frozenset(stem_of(w) for w in STOPWORDS | FILLERS | POLITE | GENERIC)
COMMON = (
    STOPWORDS
    | FILLERS
    | POLITE
    | GENERIC
    | QUESTION_WORDS
    | REQUEST_WORDS
    | VERBS
    | _TEMPORAL
    | MONTHS
    | YES
    | NO
    | ACK
    | frozenset(w for words in CONCEPTS.values() for w in words.split())
    | _set("hi hello hey bye goodbye i")
)


def concepts_of(stem: str) -> frozenset[str]:
    """The concepts a stem belongs to ("parcel" -> {"order"}); empty for most words."""
    return CONCEPT_OF.get(stem, frozenset())


def scores(word: str, stem: str) -> bool:
    """Whether a word may count towards a tool: not a stopword, unless it means
    something ("where" is about status), and never a generic verb or a number."""
    if not stem or stem.isdigit() or word in GENERIC or word in FILLERS:
        return False
    if word in STOPWORDS or stem in STOP_STEMS:
        return bool(concepts_of(stem))
    return True
