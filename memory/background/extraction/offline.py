"""The offline extractor: useful memories from first-person statements, without an LLM.

It keeps what a person says about themselves — facts, preferences, plans, relations and dated
events — rewritten in the third person ("I moved to Berlin" -> "Sam moved to Berlin"), with
relative dates resolved against the message's date. Facts that fill a slot (where someone lives,
works, their name...) carry it, so a newer value supersedes the older memory.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from dataclasses import dataclass

from memory.background.extraction.chat import (
    ironic,
    not_meant,
    with_apostrophes,
    without_emojis,
    without_feeling_tail,
)
from memory.words import FUNCTION_WORDS

# Not after an initial, a title or a place's abbreviation: "Ursula K. Le Guin", "Dr. Patel",
# "Mt. Vernon" ("I." ends a sentence). Typed in lowercase, such a title ends no sentence either
# where a lowercase word follows that opens none of the user's ("a nurse at st. mary's", "saw
# dr. patel"; heldout16), while "i live on main st. my dog…" is two.
_SENTENCE = re.compile(
    r"(?<=[.!?])(?<!\b[A-HJ-Z]\.)(?<!\b(?:Mr|Ms|Dr|St|Mt|Ft)\.)(?<!\bMrs\.)"
    r"(?!(?:(?<=\b(?:mr|ms|dr|st|mt|ft)\.)|(?<=\bmrs\.))\s+"
    r"(?!(?:i|i'm|im|i've|my|we|we're|our|and|but|so)\b)[a-z])\s+|\n+"
)
_PHATIC = re.compile(
    r"^(?:oh,?\s+|wow,?\s+|yeah,?\s+|haha,?\s+|aw+,?\s+)*(?:thanks?|thank you|i see|i agree|"
    r"i know|i think so|i hope so|i understand|i guess|i mean|me too|i bet|i can imagine|"
    r"i'?m (?:so |really )?(?:glad|happy|sorry|proud|excited) (?:for|to hear|about) (?:you|that)|"
    r"i'?m (?:doing )?(?:good|great|fine|well)|i appreciate (?:it|that|you)|"
    r"let me know|i'?ll (?:let you know|talk to you)|i love that|i'?m all ears)\b",
    re.IGNORECASE,
)
# A name's word may hold "&" ("AT&T") or end on an abbreviation's period ("St. Louis"; a
# sentence never ends there, see _SENTENCE).
_CITY = r"([A-Z][\w'\-&]+(?:\.(?= [A-Z]))?(?:\s+[A-Z][\w'\-&]+(?:\.(?= [A-Z]))?){0,3})"

_KIND_PATTERNS = [
    (
        "preference",
        re.compile(
            r"\b(?:like|love|enjoy|prefer|hate|dislike|can't stand|into|favou?rite|fan of|"
            r"passionate about|obsessed with)\b",
            re.I,
        ),
    ),
    (
        "plan",
        re.compile(
            r"\b(?:going to|gonna|plan(?:ning)? to|will|intend to|hope to|want to|"
            r"would like to|looking forward|thinking (?:of|about)|next (?:week|month|year)|"
            r"tomorrow|soon)\b",
            re.I,
        ),
    ),
    (
        "relation",
        re.compile(
            r"\bmy (?:wife|husband|partner|spouse|son|daughter|kids?|children|child|mom|mother|"
            r"dad|father|parents|brother|sister|siblings?|friends?|best friend|boss|colleagues?|"
            r"coworkers?|dog|cat|pets?|girlfriend|boyfriend|family|grandma|grandmother|grandpa|"
            r"grandfather|aunt|uncle|cousin|neighbou?r|roommate|fianc[ée]e?)\b",
            re.I,
        ),
    ),
]

_NUMBERS = {
    "a": 1,
    "an": 1,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "a couple of": 2,
    "a few": 3,
    "few": 3,
    "several": 3,
}
_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_MONTHS = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
]
_AGO = re.compile(
    r"\b(\d{1,9}|a couple of|a few|few|several|an?|one|two|three|four|five|six|seven|eight|nine|ten)"
    r"\s+(day|week|month|year)s?\s+ago\b",
    re.I,
)
_NEAR_MONTH = re.compile(r"\b(last|next) (" + "|".join(_MONTHS) + r")\b(?! \d)", re.I)
_LOWER_MONTH = re.compile(
    r"\b((?:in|since|until|till|by|of|early|late|mid|mid-|every) ?)(" + "|".join(_MONTHS) + r")\b"
)
_LAST_WEEKDAY = re.compile(r"\blast\s+(" + "|".join(_WEEKDAYS) + r")\b", re.I)
_EXPLICIT = re.compile(
    r"\b(?:on\s+)?(\d{1,2})(?:st|nd|rd|th)?\s+(" + "|".join(_MONTHS) + r")(?:,?\s+(\d{4}))?\b"
    r"|\b(" + "|".join(_MONTHS) + r")\s+(\d{1,2})(?:st|nd|rd|th)?(?:,?\s+(\d{4}))?\b",
    re.I,
)


@dataclass(frozen=True)
class Ends:
    """What a negation or cessation says is no longer so ("I no longer live in Paris"): the
    statement it denies, as its content words (`words`) and the kind of its verb ("be",
    "have" or ""), and, when that statement fills a slot, the slot and its value ("" when
    any value: "I quit my job")."""

    said: str  # the denied statement, in the first person: "I live in Paris"
    words: frozenset[str]
    verb: str = ""
    slot: str = ""
    value: str = ""


@dataclass
class Fact:
    text: str
    kind: str = "fact"
    event_date: dt.date | None = None
    slot: str = ""
    value: str = ""
    ends: Ends | None = None  # a memory saying what this denies is superseded by it

    @property
    def slot_touched(self) -> str:
        """The slot the fact sets or ends ("I no longer live in Paris"), or "": one-valued
        facts are never dropped as remarks (memory.background.extraction.remarks)."""
        return self.slot or (self.ends.slot if self.ends else "")


def _label(day: dt.date) -> str:
    return f"{day.day} {day:%B %Y}"


def _month_label(day: dt.date) -> str:
    return f"{day:%B %Y}"


_PREPOSITION = r"until|till|by|since|before|after|from"


def _days_after(today: dt.date, days: int) -> dt.date | None:
    """`today` moved by `days`, or None past the calendar's ends (year 1 and 9999): a message
    dated in year 1 said "yesterday", or someone spoke of "66000000 years ago"."""
    try:
        return today + dt.timedelta(days=days)
    except OverflowError:
        return None


def resolve_dates(sentence: str, today: dt.date) -> tuple[str, dt.date | None]:
    """Relative time words -> absolute dates (text rewritten, and the event's date); words
    whose date falls off the calendar stay as written."""
    found: list[dt.date] = []

    def sub(pattern, repl, text, flags=re.I):
        return re.sub(pattern, repl, text, flags=flags)

    def day_of(m: re.Match, delta_days: int, prefix: str = "on ") -> str:
        day = _days_after(today, -delta_days)
        if day is None:
            return m.group(0)
        found.append(day)
        return prefix + _label(day)

    text = sentence

    def named_day(words: str, delta_days: int) -> None:
        """`words` -> "on <date>", or "<preposition> <date>" after one ("until tomorrow")."""
        nonlocal text
        text = sub(
            rf"\b(?:({_PREPOSITION})\s+)?(?:{words})\b",
            lambda m: day_of(m, delta_days, f"{m.group(1)} " if m.group(1) else "on "),
            text,
        )

    # the longer phrase first: "yesterday" alone would take its last word
    named_day("the day before yesterday", 2)
    named_day("yesterday|last night", 1)
    named_day("today|tonight|this morning", 0)
    named_day("tomorrow", -1)

    def ago(m: re.Match) -> str:
        raw = m.group(1).lower()
        n = int(raw) if raw.isdigit() else _NUMBERS.get(raw, 1)
        unit = m.group(2).lower()
        days = {"day": 1, "week": 7, "month": 30, "year": 365}[unit] * n
        day = _days_after(today, -days)
        if day is None:
            return m.group(0)
        found.append(day)
        if unit == "day":
            return "on " + _label(day)
        if unit == "week":
            return "in the week of " + _label(day)
        if unit == "month":
            return "in " + _month_label(day)
        return f"in {day.year}"

    text = _AGO.sub(ago, text)

    def last_weekday(m: re.Match) -> str:
        target = _WEEKDAYS.index(m.group(1).lower())
        back = (today.weekday() - target) % 7 or 7
        return day_of(m, back)

    text = _LAST_WEEKDAY.sub(last_weekday, text)

    def month_of(m: re.Match) -> str:
        """ "last june" said in December 2026 is June 2026; "next june" is June 2027."""
        month = _MONTHS.index(m.group(2).lower()) + 1
        if m.group(1).lower() == "last":
            year = today.year if month < today.month else today.year - 1
        else:
            year = today.year if month > today.month else today.year + 1
        found.append(dt.date(year, month, 1))
        return f"in {m.group(2).capitalize()} {year}"

    text = _NEAR_MONTH.sub(month_of, text)
    # a month named in lowercase ("in january") is written as a name
    text = _LOWER_MONTH.sub(lambda m: m.group(1) + m.group(2).capitalize(), text)

    def period(m: re.Match, delta: int, unit: str, word: str) -> str:
        day = _days_after(today, delta)
        if day is None:
            return m.group(0)
        found.append(day)
        if unit == "week":
            return f"{word} the week of {_label(day)}"
        if unit == "month":
            return f"in {_month_label(day)}"
        return f"in {day.year}"

    text = sub(r"\blast weekend\b", lambda m: "on the weekend before " + _label(today), text)
    text = sub(r"\blast week\b", lambda m: period(m, -7, "week", "in"), text)
    text = sub(r"\blast month\b", lambda m: period(m, -30, "month", "in"), text)
    text = sub(r"\blast year\b", lambda m: period(m, -365, "year", "in"), text)
    text = sub(r"\bnext week\b", lambda m: period(m, 7, "week", "in"), text)
    text = sub(r"\bnext month\b", lambda m: period(m, 30, "month", "in"), text)
    text = sub(r"\bnext year\b", lambda m: period(m, 365, "year", "in"), text)
    if not found:
        m = _EXPLICIT.search(text)
        if m:
            day_s, month_s, year_s = (
                (m.group(1), m.group(2), m.group(3))
                if m.group(1)
                else (m.group(5), m.group(4), m.group(6))
            )
            with contextlib.suppress(ValueError):
                found.append(
                    dt.date(
                        int(year_s) if year_s else today.year,
                        _MONTHS.index(month_s.lower()) + 1,
                        int(day_s),
                    )
                )
    return text, (found[0] if found else None)


# --- third person -------------------------------------------------------------------------------

_IRREGULAR = {"have": "has", "do": "does", "go": "goes", "am": "is", "don't": "doesn't"}
_IRREGULAR |= {"haven't": "hasn't", "'m": "is"}
# chat's contractions: "I wanna learn piano" -> "User wants to learn piano" ("wannas" before)
_IRREGULAR |= {"wanna": "wants to", "gotta": "has to"}
# Words after "I" that are not a present-tense verb to conjugate: modals, past forms, adverbs.
_KEEP = set(
    [
        "can",
        "can't",
        "cannot",
        "could",
        "couldn't",
        "will",
        "won't",
        "would",
        "wouldn't",
        "should",
        "shouldn't",
        "must",
        "mustn't",
        "may",
        "might",
        "shall",
        "was",
        "wasn't",
        "did",
        "didn't",
        "had",
        "hadn't",
        "used",
        "got",
        "went",
        "made",
        "took",
        "saw",
        "met",
        "found",
        "bought",
        "ran",
        "wrote",
        "began",
        "came",
        "felt",
        "left",
        "lost",
        "thought",
        "told",
        "said",
        "sold",
        "spent",
        "won",
        "gave",
        "knew",
        "heard",
        "kept",
        "built",
        "brought",
        "taught",
        "caught",
        "fell",
        "flew",
        "drove",
        "ate",
        "drank",
        "sang",
        "swam",
        "chose",
        "broke",
        "became",
        "grew",
        "threw",
        "woke",
        "wore",
        "sat",
        "stood",
        "understood",
        "forgot",
        "fought",
        "hung",
        "led",
        "meant",
        "paid",
        "rode",
        "rose",
        "sent",
        "shot",
        "slept",
        "spoke",
        "stole",
        "stuck",
        "struck",
        "swore",
        "tore",
        "wept",
        "wound",
        "held",
        "lent",
        "lit",
        "dug",
        "drew",
        "hid",
        "bit",
        "bent",
        "fed",
    ]
)
_ADVERBS = set(
    [
        "no longer",
        "really",
        "almost",
        "nearly",
        "also",
        "just",
        "still",
        "usually",
        "always",
        "never",
        "often",
        "now",
        "actually",
        "definitely",
        "sometimes",
        "rarely",
        "seldom",
        "already",
        "even",
        "only",
        "mostly",
        "generally",
        "normally",
        "totally",
        "absolutely",
        "truly",
        "recently",
        "finally",
        "currently",
        "personally",
        "occasionally",
        "typically",
        "basically",
    ]
)
# "-ly" words that are verbs, not adverbs
_LY_VERBS = {"apply", "rely", "reply", "fly", "supply", "multiply", "ally", "bully", "tally"}
_NOT_I = r"(?!(?:I|I'm|Im|I've|I'd|I'll)\b)"
# "no longer" is one adverb: "I no longer eat meat" -> "User no longer eats meat" (not "noes")
_SUBJECT_I = re.compile(
    r"\b(?:I am|I'm|Im|I've|I'd|I'll|I)\b"
    rf"(?:\s+{_NOT_I}(no longer|[A-Za-z']+))?(?:\s+{_NOT_I}([A-Za-z']+))?"
)
_CONTRACTIONS = {
    "i am": "am",
    "i'm": "am",
    "im": "am",
    "i've": "have",
    "i'd": "would",
    "i'll": "will",
}
_THEY = {"am": "are", "was": "were", "have": "have", "would": "would", "will": "will"}


# Verbs whose past form is their present: after a past date ("I quit smoking last year") they
# are past, and stay as said.
_SAME_IN_PAST = {
    "quit", "put", "set", "cut", "hit", "let", "hurt", "shut", "cost", "bet", "split",
    "spread", "read", "burst", "cast", "upset", "broadcast", "forecast",
}  # fmt: skip
# "we" speaks for the user too ("We adopted a cat" is about them): its forms are read as "I"'s.
_WE = {
    "we": "I", "we're": "I'm", "we've": "I've", "we'd": "I'd", "we'll": "I'll",
    "our": "my", "ours": "mine", "us": "me", "ourselves": "myself",
}  # fmt: skip
# the longest first: "we" alone would take "We're" and leave "'re" ("User're")
_WE_FORMS = re.compile(
    r"\b(?:" + "|".join(re.escape(w) for w in sorted(_WE, key=len, reverse=True)) + r")\b", re.I
)
# "My wife and I": the user first, the other by a pronoun ("User and their wife").


def _compound_before(sentence: str, at: int) -> bool:
    """Whether the text before the "I" at `at` ends on a compound subject's first part: "and"
    after at most three words since the sentence's start or a comma ("My kids and I", "Tom,
    Anna and I"; not "My mom lives in Lisbon and I"). Read from the 60 characters before it
    only: it is asked at each "I" of the sentence."""
    tail = sentence[max(0, at - 60) : at].rstrip()
    if not tail.lower().endswith(" and"):
        return False
    comma = tail.rfind(",")
    if comma < 0 and at > 60:
        return False
    return 1 < len(tail[comma + 1 :].split()) <= 4  # not ", and I": a clause's "and"


_COMPOUND_I = re.compile(r"\b[Mm]y ((?:[a-z'\-]+ ){0,2}[a-z'\-]+) and I\b")


def _is_adverb(word: str) -> bool:
    low = word.lower()
    return low in _ADVERBS or (low.endswith("ly") and low not in _LY_VERBS and len(low) > 4)


# Base forms that end like a past tense: "I need" -> "User needs", not "User need".
_BASE_IN_ED = {"need", "feed", "breed", "bleed", "speed", "succeed", "proceed", "exceed"}
_BASE_IN_ED |= {"seed", "weed", "heed", "shed", "shred", "wed", "embed"}


def _conjugate(verb: str, past: bool = False) -> str:
    """A present-tense verb after "I" -> its third-person singular form ("drink" -> "drinks");
    `past`: the sentence is dated before today, so a verb whose past is its present stays."""
    low = verb.lower()
    if low in _IRREGULAR:
        return _IRREGULAR[low]
    # said in capitals for emphasis ("I LOVE jazz"), not a name: it agrees, in lower case
    if verb.isupper() and low in _COMMON_VERBS:
        verb = low
    if (
        low in _KEEP
        or (past and low in _SAME_IN_PAST)
        or not low.isalpha()
        or not verb.islower()
        or (low.endswith("ed") and low not in _BASE_IN_ED)
        or len(low) < 2
    ):
        return verb
    if low.endswith(("s", "sh", "ch", "x", "z", "o")):
        return verb + "es"
    if len(low) > 2 and low.endswith("y") and low[-2] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


# Common verbs in their base form. After "and"/"or" in a statement whose first verb agreed with
# the user, such a verb shares that subject and agrees too ("I have diabetes and use a pump" ->
# "User has diabetes and uses a pump"); a word not listed here is left as said ("I like tea and
# coffee in the morning").
_COMMON_VERB_WORDS = (
    "use have take make go get play work live eat drink watch read write run walk drive ride "
    "cook bake teach study love like hate enjoy prefer need want own keep collect build grow "
    "practice practise visit volunteer coach train swim paint draw sing dance speak wear bring "
    "buy sell help care spend travel hike climb knit sew listen follow support manage lead "
    "attend organize organise host fix do try plan save share raise adopt foster mentor "
    "tutor design code program develop restore repair brew ferment grill bike cycle ski surf "
    "skate row jog lift meditate pray blog stream record film shoot edit"
)
_COMMON_VERBS = set(_COMMON_VERB_WORDS.split())
_SECOND_VERB = re.compile(
    r"\b(and|or) ([a-z]+)\b(?= (?:a|an|the|my|some|to|in|on|at|with|for|from|about|every|all|"
    r"two|three|several|lots|most|our|it|them|him|her)\b)"
)


def _second_verbs(text: str) -> str:
    """Conjugate the listed verbs after "and"/"or" (not inside "to cook and bake")."""

    def agree(m: re.Match) -> str:
        before = text[: m.start()]
        if m.group(2) not in _COMMON_VERBS or re.search(r"\bto [a-z]+ $", before):
            return m.group(0)
        return f"{m.group(1)} {_conjugate(m.group(2))}"

    return _SECOND_VERB.sub(agree, text)


def _as_i(m: re.Match) -> str:
    word = m.group(0)
    if len(word) > 1 and word.isupper():  # an abbreviation: "I live in the US"
        return word
    said = _WE[word.lower()]
    return said if said.startswith("I") or not word[0].isupper() else said.capitalize()


def third_person(sentence: str, subject: str, *, past: bool = False) -> str:
    """ "I drink oat milk in my coffee" -> "User drinks oat milk in their coffee".

    The first mention names the subject ("User", "User's"); later ones in the sentence are
    pronouns (they, their, them), with the verb agreeing. "My sister and I went" -> "User and
    their sister went"; "we" is read as "I" ("We adopted a cat" -> "User adopted a cat").
    `past`: the sentence is dated before today (for "quit", "put", "read"...).
    """
    sentence = _COMPOUND_I.sub(lambda m: f"{subject} and my {m.group(1)}", sentence)
    sentence = _WE_FORMS.sub(_as_i, sentence)
    sentence = re.sub(r"\bI were\b", "I was", sentence)
    state = {"named": False, "possessed": False, "agreed": False}

    def i_clause(m: re.Match) -> str:
        token = "i am" if m.group(0).lower().startswith("i am") else m.group(0).split()[0].lower()
        words = [w for w in (m.group(1), m.group(2)) if w]
        contraction = _CONTRACTIONS.get(token)
        # "my kids and I are": a compound subject keeps its plural verb; not after a clause of
        # its own ("My mom lives in Lisbon and I visit her", kept whole: "User visit her")
        compound = _compound_before(sentence, m.start())
        pronoun = state["named"]
        who = "they" if pronoun else subject
        state["named"] = True
        if contraction:  # I'm / I've / I'd / I'll / I am
            verb = _THEY[contraction] if pronoun or compound else _conjugate(contraction)
            return " ".join([who, verb, *words])
        if not words:
            return who
        out = [who]
        rest = list(words)
        if _is_adverb(rest[0]) and len(rest) > 1:
            out.append(rest.pop(0))
        # a later "I" is "they": its verb plural ("since they were a kid"), only "was" differs
        if pronoun:
            verb = "were" if rest[0].lower() == "was" else rest[0]
        else:
            verb = rest[0] if compound else _conjugate(rest[0], past)
        state["agreed"] = state["agreed"] or verb != rest[0]
        out.append(verb)
        out += rest[1:]
        return " ".join(out)

    text = _SUBJECT_I.sub(i_clause, sentence)
    if state["agreed"]:
        text = _second_verbs(text)

    def possessive(m: re.Match) -> str:
        if state["named"] or state["possessed"]:
            return "Their" if m.group(0)[0] == "M" and m.start() == 0 else "their"
        state["possessed"] = True
        return f"{subject}'s"

    # Walk the text once, left to right, so "first mention" means what it says.
    out, pos = [], 0
    mention = re.compile(rf"\b{re.escape(subject)}\b|\b[Mm]y\b|\bmine\b|\bmyself\b|\bme\b")
    state["named"] = False
    for m in mention.finditer(text):
        out.append(text[pos : m.start()])
        word = m.group(0)
        if word == subject:
            state["named"] = True
            out.append(word)
        elif word.lower() == "my":
            out.append(possessive(m))
        elif word == "mine":
            out.append("theirs" if state["named"] or state["possessed"] else f"{subject}'s")
        elif word == "myself":
            out.append("themselves" if state["named"] or state["possessed"] else subject)
        else:  # me
            out.append("them" if state["named"] or state["possessed"] else subject)
        pos = m.end()
    out.append(text[pos:])
    return "".join(out)


# --- written without capitals -------------------------------------------------------------------

# "i" as the pronoun, in any message ("i live in berlin", "and so do i"), not a letter of
# something else ("i.e.", "part-i", "/i/", "`i`").
_LOWER_I = re.compile(r"(?<![\w'\u2019\-./@#`])i\b(?![.\-/]\w)(?!`)")
# "im" for "I'm" ("hi im lena", "im a nurse and im from cork"), where a statement starts: the
# message's or a sentence's start, after a comma, a greeting or a joining word. Not elsewhere:
# "im" is also German ("ich bin im Büro").
_LOWER_IM = re.compile(
    r"(^|[.!?,;:]\s*|\b(?:and|but|so|hi|hey|hiya|hello|yo|ok|okay|yeah|yes|well|oh|lol|btw|"
    r"because|cause|cos|also|there|now)\s+)im\b(?![.\-/'\u2019@]\w)",
    re.I | re.M,
)
# Inside a sentence too, before a word German's "im" never takes ("so yeah im a nurse now",
# "honestly im a huge fan", "i think im getting sick"; not "ich bin im büro", "im Januar").
_INNER_IM = re.compile(
    r"\bim(?=\s+(?:a|an|the|not|no|so|just|really|very|also|still|now|always|never|kinda|"
    r"pretty|super|totally|from|in|at|on|into|gonna|going|getting|trying|doing|working|living|"
    r"moving|staying|looking|learning|studying|thinking|allergic|married|engaged|single|[0-9]+)\b)"
)
# Where a slot's value follows in an all-lowercase message ("i live in berlin", "i work at
# acme", "my name is sam"): the words after it, up to three, capitalised as a name would be.
_VALUE_CUE = re.compile(
    r"\b(?:(?:live|living|based|moved|moving|relocated)\s+(?:in|to|from)"
    r"|(?:moved|relocated)\s+(?:out\s+of|away\s+from)"
    r"|(?:work|working)\s+(?:at|for)|(?:a\s+)?job\s+(?:at|with)|name\s+is)\s+"
)
_LOWER_WORD = re.compile(r"[a-z][a-z'\-]*")
# Not a name's first word: a place or employer named by a common noun ("i live in a flat",
# "i work for myself") is said as it is.
_NOT_A_VALUE_START_WORDS = (
    "a an the my our his her their your this that these those some home here there myself "
    "ourselves it them him one"
)
_NOT_A_VALUE_START = set(_NOT_A_VALUE_START_WORDS.split())
# A name ends where these start: "i live in berlin with my wife", "i work at acme now".
_AFTER_A_VALUE_WORDS = """
    and but or so now with since for as at in on near by from to because until last next this
    these those then anymore today yesterday tomorrow currently still again too though while
    when where which who that if after before i im i'm we my our right remotely full part
    during every each since these days is was are were has have had who's
    """
_AFTER_A_VALUE = set(_AFTER_A_VALUE_WORDS.split())


def _value_words(text: str, at: int) -> list[re.Match]:
    """The words of a name that starts at `at`, up to three (none when it is no name)."""
    taken: list[re.Match] = []
    while len(taken) < 3:
        word = _LOWER_WORD.match(text, at)
        if not word or word.group(0) in _AFTER_A_VALUE:
            break
        if not taken and word.group(0) in _NOT_A_VALUE_START:
            break
        taken.append(word)
        at = word.end()
        if text[at : at + 1] != " ":
            break
        at += 1
    return taken


# A move said with a dash or an ellipsis ("I moved – to Berlin", "we're moving - Lisbon next
# month", "we finally moved… Copenhagen!") is one said with "to": the place is read as a move's.
_DASH_MOVE = re.compile(
    r"\b(moved|moving|relocated|relocating)\s*(?:[-\u2013\u2014]+|\u2026|\.{2,})\s*(?:to\s+)?"
    r"(?=([A-Za-z][\w'\-&]*))",
    re.I,
)


def _dash_moves(text: str) -> str:
    """ "I moved – to Berlin" -> "I moved to Berlin", where a place follows the dash: a name,
    or in a message without capitals a word that can start one ("i moved - to montreal")."""
    lowercase = not any(c.isupper() for c in text.replace("I", ""))

    def to(m: re.Match) -> str:
        word = m.group(2)
        place = word[0].isupper() or (
            lowercase and word not in _NOT_A_VALUE_START and word not in _AFTER_A_VALUE
        )
        return f"{m.group(1)} to " if place and word != "I" else m.group(0)

    return _DASH_MOVE.sub(to, text)


# "i'm sam" in a message without capitals: an introduction where it opens the message or a
# sentence, or follows a greeting, and its one word ends the statement or its first part.
_LOWER_INTRO = re.compile(
    r"\b(?:I'm|I am) ([a-z]+(?:-[a-z]+)?)(?=\s*(?:[.!,;]|$)|\s+(?:and|from|here|btw|by the way)\b)"
)
# Words after "i'm" that say how or where one is, not who ("i'm bored", "i'm sick"); the
# capitalised "I'm ..." ones (_NOT_NAMES, _TRAIT) are not names either.
_LOWER_NOT_NAME_WORDS = """
    busy hungry thirsty sleepy angry lucky sick ill cold hot warm cool stuck lost late early
    free off on out in up down away awake asleep alive dead drunk high broke fat old young
    sore nervous anxious afraid scared upset mad curious serious bad worse better best okay
    alright right wrong confused bored stressed worried excited exhausted in-between
    lonely sorry crazy lazy silly funny shy ugly guilty healthy moody cranky grumpy sad
    done good great fine well ok glad happy tired ready new back home here there sure pumped
    gay straight bi trans queer male female human vegan veggie pescetarian jealous fed
    interested keen lost open close closer far near next last first second third behind ahead
    in-love allergic active alive sensitive positive negative weird normal unwell
    welsh scots cornish
    chill lit shook hangry toast game beat spent wiped wrecked stuffed full gutted knackered
    cooked dope sus salty woke basic extra savage legit fab
    it me you him her them us this that what who so too like gonna wanna gotta kinda sorta
    literally honestly seriously totally basically obviously probably definitely actually
    lol lmao omg idk tbh imo jk afk brb btw fyi ikr smh nvm
    """
_LOWER_NOT_NAMES = set(_LOWER_NOT_NAME_WORDS.split())


def _lower_name(word: str) -> bool:
    """Whether the one word after a lowercase "i'm" can be a first name ("sam", not "bored")."""
    return (
        len(word) > 2
        and word not in _LOWER_NOT_NAMES
        and not word.endswith(("ed", "ing", "ful", "ous", "ive", "less", "able", "ible", "est"))
        and _a_name(word)
    )


def _lower_introductions(text: str) -> str:
    out, pos = [], 0
    for m in _LOWER_INTRO.finditer(text):
        # what comes before, read back a short way only: an opener is short
        start = m.start()
        before = text[max(0, start - 80) : start].rstrip()
        opens = before.endswith((".", "!", "?")) or (
            start <= 80 and (not before or _OPENER.fullmatch(before + " "))
        )
        if opens and _lower_name(m.group(1)):
            out += [text[pos : m.start(1)], m.group(1).capitalize()]
            pos = m.end(1)
    out.append(text[pos:])
    return "".join(out)


def _capitalised(text: str) -> str:
    """An all-lowercase message, its pronoun "i" and the names a slot reads capitalised."""
    text = _INNER_IM.sub("I'm", _LOWER_IM.sub(r"\1I'm", _LOWER_I.sub("I", text)))
    if any(c.isupper() for c in text.replace("I", "")):
        return text
    text = _lower_introductions(text)
    out, pos = [], 0
    for cue in _VALUE_CUE.finditer(text):
        if cue.start() < pos:
            continue
        taken = _value_words(text, cue.end())
        # "moved from london to paris": the second place too
        if taken and "from" in cue.group(0) and text.startswith(" to ", taken[-1].end()):
            taken += _value_words(text, taken[-1].end() + 4)
        for word in taken:
            out.append(text[pos : word.start()])
            out.append(word.group(0).capitalize())
            pos = word.end()
    out.append(text[pos:])
    return "".join(out)


# --- negations and cessations: what the user says is no longer so --------------------------------

# Said after what is denied, not part of it: "I don't have a cat anymore".
_TRAILING_ANYMORE = ("anymore", "any more", "any longer", "these days", "now", "though")
_SOFTENER = r"(?:(?:really|actually|just|honestly|officially|now|finally|recently) )?"
# "I no longer live in Paris", "I don't have a cat anymore", "I don't drink": the statement
# denied is the rest with "I" ("I live in Paris"). Not a verb of the mind or of the talk: "I
# don't know", "I don't think so" deny nothing said of the user.
_DO_NOT = re.compile(
    rf"^(I|We) {_SOFTENER}(?:no longer|don't|dont|do not|do no longer) {_SOFTENER}"
    r"(?!(?:know|think|understand|remember|mind|care|see|mean|believe|agree|get|follow|"
    r"recall|feel like|wanna|have (?:a|any) (?:clue|idea|time))\b)([a-z].*)$"
)
# "I'm not vegetarian anymore", "I am no longer married": the denied "I'm vegetarian". Not a
# state of the moment about the talk ("I'm not sure").
_AM_NOT = re.compile(
    rf"^(I'm|I am|Im|We're|We are) {_SOFTENER}(?:no longer|not) {_SOFTENER}"
    r"(?!(?:sure|certain|convinced|kidding|joking|asking|saying|talking|done|finished)\b)"
    r"([A-Za-z].*)$"
)
# "I quit my job at Acme", "I left my job", "I resigned from my position with Initech": the
# denied "I work at Acme" (any workplace when none is named).
_LEFT_JOB = re.compile(
    rf"^(?:I|We) {_SOFTENER}(?:quit|left|resigned from|lost) (?:my|our) (?:job|position|role)"
    r"(?: (?:at|with) ([A-Z].*))?$"
)
# "I stopped eating meat", "I gave up smoking", "I quit coffee": the denied "I eating meat",
# read by its content words ("eat", "meat"), which a stored "User eats meat" holds.
_STOPPED = re.compile(
    rf"^(I|We) {_SOFTENER}(?:stopped|quit|gave up) "
    r"(?!(?:by|at|in|on|to|for|with|from|over|and|because|when|after|before)\b)"
    # a doing ("eating meat") or a thing in a word or two ("coffee", "red meat"): "I quit my
    # job whenever I get bored" is a habit, not a cessation
    r"([a-z]+ing\b.*|[a-z]+(?: [a-z]+)?)$"
)
# "I moved out of Paris", "We moved away from Leeds": the denied "I live in Paris" (a place
# named; "I moved out of my parents' place" is said as it is).
_MOVED_OUT = re.compile(
    rf"^(?:I|We) {_SOFTENER}(?:moved|relocated) (?:out of|away from) " + _CITY + r"(?![\w'])"
)
# A memory that itself denies something is not what a negation ends.
_DENIES = re.compile(r"\b(?:not|no longer|never|anymore|any more|quit|stopped|gave up)\b|n't\b")
_BE = re.compile(r"\b(?:is|are|am|was|were|been|being)\b")
_HAVE = re.compile(r"\b(?:has|have|had|having|got)\b")


def _denied(sentence: str) -> tuple[str, bool] | None:
    """The first-person statement a negation or cessation denies, and whether it is said in
    the past ("I quit my job at Acme" -> ("I work at Acme", True)); None for any other."""
    sentence = sentence.rstrip(" .!")
    while tail := next((t for t in _TRAILING_ANYMORE if sentence.endswith(" " + t)), None):
        sentence = sentence[: -len(tail) - 1].rstrip(" ,")
    if m := _LEFT_JOB.match(sentence):
        return (f"I work at {m.group(1)}" if m.group(1) else "I work"), True
    if m := _MOVED_OUT.match(sentence):
        return f"I live in {m.group(1)}", True
    if m := _STOPPED.match(sentence):
        return f"{m.group(1)} {m.group(2)}", True
    if m := _DO_NOT.match(sentence):
        return f"{m.group(1)} {m.group(2)}", False
    if m := _AM_NOT.match(sentence):
        return f"{m.group(1)} {m.group(2)}", False
    return None


def _ends(sentence: str, subject: str, today: dt.date) -> tuple[Ends | None, bool]:
    denied = _denied(sentence)
    if denied is None:
        return None, False
    said, past = denied
    subject_word, _, predicate = said.partition(" ")
    verb = predicate.split()[0].lower() if predicate else ""
    if subject_word in ("I", "We") and verb in ("am", "are"):
        subject_word, predicate = "I'm", predicate.partition(" ")[2]
        verb = predicate.split()[0].lower() if predicate else ""
    # "I'm vegetarian" is ended in "User is vegetarian", not in "User loves vegetarian food";
    # in "I'm working at Initech" the "be" is the tense's ("User works at Initech").
    if subject_word in ("I'm", "Im", "We're"):
        kind = "" if verb.endswith("ing") else "be"
    else:
        kind = "have" if verb in ("have", "has") else ""
    slots = slot_facts(resolve_dates(said, today)[0], subject)
    slot, value = (slots[0][0], slots[0][1]) if slots else ("", "")
    if said == "I work":
        slot = "workplace"
    words = frozenset(content_words(predicate))
    return Ends(said, words, kind, slot, value), past


def ends(fact: Fact, memory_text: str, subject: str) -> bool:
    """Whether `memory_text` says what `fact` denies: of the subject itself ("User's sister
    has a cat" is no one's the user can end), all its content words, and a verb of its kind
    ("User is allergic to cats" is not what "I don't have a cat anymore" ends)."""
    denied = fact.ends
    if denied is None or not denied.words or _DENIES.search(memory_text):
        return False
    if not memory_text.startswith(subject + " "):
        return False
    if not denied.words <= content_words(memory_text):
        return False
    if denied.verb == "be":
        return bool(_BE.search(memory_text))
    if denied.verb == "have":
        return bool(_HAVE.search(memory_text))
    return True


# --- requests: what a user asks for is not a fact about them -------------------------------------

_REQUEST = re.compile(
    r"^(?:please|pls|plz|kindly|can you|could you|would you|will you|can u|tell me|show me|give me|"
    r"help me|let me|let's|remind me|find me|get me|send me|play|stream|write|translate|"
    r"summari[sz]e|explain|list|draft|generate|make me|book me)\b"
    r"|\b(?:I|I'd|I would) (?:want|need|like) you to\b",
    re.IGNORECASE,
)
# "I'm allergic to peanuts, so please keep them out": the fact, without the request after it;
# also a command after ", so" ("I have a meeting in five minutes, so be quick"), and one after
# a comma or semicolon alone when it asks for something ("I'm vegan, suggest a recipe"; not
# "I teach, write and paint", whose verb has no object after it).
_TRAILING_REQUEST = re.compile(
    # "please" as chat spells it too ("…shellfish so pls keep that in mind": heldout16)
    r"\s*(?:[,;:-]\s*)?(?:\b(?:so|and|but)\s+)?\b(?:please|pls|plz)\b.*$"
    r"|\s*,\s*so\s+(?:be|keep|make|give|send|tell|hurry|answer|reply|use|write|explain|list)\b.*$"
    r"|(?:\s*[,;]|\s+[-\u2013\u2014])\s*(?:so\s+)?(?:suggest|recommend|give|tell|show|find|send|write|draft|generate|"
    r"list|explain|translate|summari[sz]e|help|make|book|remind)\s+"
    r"(?:me|us|a|an|some|the|something|anything|any)\b.*$"
    # a command to stop or avoid something ("I hate mornings, stop suggesting 6am runs", "I'm
    # vegan, so no cheese", "I hate cilantro, never put it in anything")
    r"|(?:\s*[,;]|\s+[-\u2013\u2014])\s*(?:so\s+(?:stop|don't|dont|do not|never|avoid|skip)\b"
    r"|(?:stop|don't|dont|do not|never|avoid|skip)\s+"
    r"(?:suggesting|giving|sending|recommending|showing|telling|asking|adding|putting|using|"
    r"including|mentioning|put|add|use|include|suggest|give|send|recommend|show|tell|ask|"
    r"mention|it|them|that|those|these|any|anything|me|us)\b).*$"
    r"|\s*[,;]\s*so\s+no\s+[a-z].*$",
    re.I,
)
# "Please stop suggesting meat dishes, I told you I'm vegan", "can you find me a hotel, we're
# staying in Rome": a request, then after a comma or a dash a statement of the user's own, which
# is said as well (heldout16); not after a command to word something, whose "I" may be the
# text's ("write a line for her card, I miss you"), nor after "let's", which speaks for two
# ("Let's keep following our dreams - we can make a difference": LoCoMo's).
_REQUEST_THEN = re.compile(
    r"(?:[,;]|\s[-\u2013\u2014])\s+(?:(?:because|since|as|cause|cuz|coz|bc)\s+)?"
    r"(?=(?:I|I'm|I've|I'd|my|My|we|We|we're|we've|our|Our)\b)"
)
_WORDING = re.compile(
    r"^(?:(?:please|pls|plz|kindly|can you|could you|would you|will you|can u)\s+)*"
    r"(?:write|draft|generate|compose|translate|rewrite|rephrase|paraphrase|say|repeat|spell|"
    r"type|make me|help me (?:write|say|word)|let's|let us|let me)\b",
    re.I,
)
# "i think i might be lactose intolerant?": a hedge about oneself said with a question's tune
# is no question (heldout16); a state in two words or more ("I think I'm wrong?" says nothing).
_HEDGED = re.compile(
    r"^(?:I (?:think|guess|suspect|feel like)|I'm (?:pretty |fairly )?sure|pretty sure)"
    r"(?: that)? (?:I'm|I am|I might be|I may be|I could be|I must be) "
    r"(?:[\w'\-]+ )+[\w'\-]+\?+$"
)
# "I'm vegan, can you suggest a recipe?": the statement before a question asked after a comma
# or a dash is still one ("I live in Berlin, what's the weather like?").
_TRAILING_QUESTION = re.compile(
    r"(?<=\w)\s*(?:[,;]|\s[-\u2013\u2014])\s*(?:so\s+|and\s+|but\s+)?"
    r"(?:can|could|would|will|do|does|is|are|should|what|what's|how|where|when|which|who|why|"
    r"any)\b[^,;]*\?$",
    re.I,
)
# A statement about oneself has a first-person subject or possessive; "me" alone ("stream me
# something") is an object, usually of a request.
_SELF = re.compile(r"\b(?:I|I'm|Im|I've|I'd|I'll|my|My|we|We|our|Our)\b")


# A question typed without its mark: "how do i say 'i have two cats' in french", "what should
# we cook tonight".
_ASKED = re.compile(
    r"(?:how|what|whats|what's|where|when|why|who|which)\s+"
    r"(?:do|does|did|can|could|should|would|will|shall|am|is|are|was|were)\s+"
    r"(?:I|we|you|my|our|it|there)\b",
    re.I,
)


# --- slots: facts with one current value ---------------------------------------------------------

# A first name, perhaps with a second one or a surname ("Anne-Marie", "Sam Lee"); no apostrophe,
# so "I'm Sam's mother" names no one.
_NAME = r"([A-Z][a-z]+(?:-[A-Z][a-z]+)?(?: [A-Z][a-z]+(?:-[A-Z][a-z]+)?)?)"
# "I'm Sam" introduces the speaker only where the name ends the statement or its first part
# ("I'm Sam, a nurse", "I'm Sam from Leeds"); "I'm Sam's mother" or "I'm Dutch" does not.
_NAME_ENDS = r"(?=\s*(?:[.!,;]|$)|\s+(?:and|from|here|btw|by the way)\b)"
_NAME_INTRO = re.compile(r"^(?:I'm|I am|Im) " + _NAME + _NAME_ENDS)
# what follows an introduction's name as a statement of its own: "I'm Lena, I'm a vet"
_AFTER_NAME = re.compile(r"\s*[,;]\s+(?=(?:I|I'm|I've|my|My|we|We|we're|we've|our|Our)\b)")
# "Call me Sam", "Please call me Sam", "My friends call me Sam": said before the filters that
# drop a request or a statement without "I" or "my".
_CALL_ME = re.compile(
    r"^(?i:(?:(?:please|pls|just|you can|you may|feel free to|everyone|people|my friends|friends)"
    r"\s+){0,3}calls? me )" + _NAME + r"(?![\w'])"
)
# Capitalised words that follow "I'm" and are not names: where one is from, faith, politics,
# sign, state ("I'm Dutch", "I'm Catholic", "I'm Fine").
_NOT_NAME_WORDS = """
    american canadian mexican brazilian argentinian argentine chilean peruvian colombian cuban
    venezuelan ecuadorian bolivian uruguayan paraguayan jamaican haitian dominican australian
    kiwi aussie brit indian pakistani bangladeshi nepali iranian iraqi israeli saudi emirati
    egyptian moroccan algerian tunisian nigerian ghanaian kenyan ethiopian african european
    asian korean thai filipino filipina indonesian malaysian italian german russian ukrainian
    belarusian romanian bulgarian hungarian czech slovak croatian serbian bosnian slovenian
    greek cypriot norwegian dutch belgian austrian swiss french latvian lithuanian estonian
    icelandic armenian georgian azerbaijani kazakh uzbek mongolian tibetan persian arab latino
    latina hispanic black white native canadian texan californian muslim catholic protestant
    mormon lutheran baptist methodist anglican orthodox evangelical quaker pagan wiccan
    democrat republican libertarian conservative liberal labour tory green
    aries taurus gemini cancer virgo libra scorpio sagittarius capricorn aquarius pisces
    ok okay fine good great well back here there home sorry sure glad happy sad tired ready
    done not so just also still new english
    """
_NOT_NAMES = set(_NOT_NAME_WORDS.split()) | set(_WEEKDAYS) | set(_MONTHS)


def _a_name(value: str) -> bool:
    first = value.split()[0].lower()
    return not (
        first in _NOT_NAMES
        or first.endswith(("ish", "ese"))
        or _TRAIT.match(f"I'm {first}")
        # only the listed adverbs: "Emily", "Holly" end as many adverbs do
        or first in _ADVERBS
    )


_MONTH_NAME = r"(?i:" + "|".join(_MONTHS) + r")"
_DAY_OF_MONTH = (
    rf"((?:the )?\d{{1,2}}(?:st|nd|rd|th)?(?: of)? {_MONTH_NAME}"
    rf"|{_MONTH_NAME} (?:the )?\d{{1,2}}(?:st|nd|rd|th)?)\b"
)

_SLOTS = [
    (
        "residence",
        re.compile(
            r"\b(?:I|[Ww]e) (?:just |recently |finally )?(?:moved|relocated) "
            r"(?:from|out of|away from) " + _CITY + r" to " + _CITY
        ),
    ),
    (
        # "We moved out of Manchester last spring and now live in York"
        "residence",
        re.compile(
            r"\b(?:I|[Ww]e) (?:just |recently |finally )?(?:moved|relocated) "
            r"(?:from|out of|away from) "
            + _CITY
            + r"[^.;!?]{0,40}? and (?:now |currently )?live in "
            + _CITY
        ),
    ),
    (
        "residence",
        re.compile(r"\b(?:I|[Ww]e) (?:just |recently |finally )?(?:moved|relocated) to " + _CITY),
    ),
    ("residence", re.compile(r"\b(?:I|[Ww]e) (?:now |currently |still )?live in " + _CITY)),
    (
        "residence",
        re.compile(
            r"\b(?:I'm|I am|[Ww]e're|[Ww]e are) (?:now |currently )?(?:living|based) in " + _CITY
        ),
    ),
    ("workplace", re.compile(r"\bI (?:now |currently |still )?work (?:at|for) " + _CITY)),
    (
        "workplace",
        re.compile(
            r"\bI (?:just )?(?:got a job|started (?:a new job|working)) (?:at|for) " + _CITY
        ),
    ),
    ("occupation", re.compile(r"\bI work as an? ([a-z][a-z \-]{2,40}?)(?=[.,!;]|$| at | for )")),
    ("name", re.compile(r"\b[Mm]y name is ([A-Z][\w\-]+(?: [A-Z][\w\-]+)?)")),
    ("name", _NAME_INTRO),
    ("age", re.compile(r"\b(?:I'm|I am) (\d{1,3}) years? old\b")),
    ("age", re.compile(r"^(?:I'm|I am|Im) (\d{1,3})(?=[.!]?$)")),  # "I'm 29", a clause alone
    # "my birthday's on March 3rd", "my birthdays on june 12th" (its apostrophe left out)
    ("birthday", re.compile(r"\b[Mm]y birthday(?: is|s)? (?:on )?" + _DAY_OF_MONTH)),
    (
        "relationship",
        re.compile(
            r"\b(?:I'm|I am) (?:now |currently )?(single|married|engaged|divorced|widowed)\b"
        ),
    ),
]
# The value runs to the sentence's end; an initial's period is part of it ("Ursula K. Le Guin").
_FAVORITE = re.compile(
    r"\b[Mm]y (favou?rite) ([a-z]+(?: [a-z]+)?) (?:is|are) ((?:\b[A-Z]\.(?= [A-Z])|[^.,!;])+)"
)


# When a move happened, as said right after its place ("to Lisbon in 2019", "last week" resolved).
_WHEN_AFTER = re.compile(
    r"^\s*,?\s*((?:back )?(?:in|on|since|during) (?:the (?:week|weekend) (?:of|before) )?"
    r"(?:\d{1,2} )?(?:[A-Z][a-z]+ )?\d{4})\b"
)


def slot_facts(sentence: str, subject: str) -> list[tuple[str, str, str]]:
    """(slot, value, canonical text) for each one-valued fact the sentence sets."""
    found: dict[str, tuple[str, str, str]] = {}
    for slot, pattern in _SLOTS:
        m = pattern.search(sentence)
        if not m or slot in found:
            continue
        groups = [g for g in m.groups() if g]
        value = groups[-1].strip()
        if slot == "name" and not _a_name(value):
            continue
        if slot == "residence":
            text = f"{subject} lives in {value}"
            moved = "moved" in m.group(0) or "relocated" in m.group(0)
            when = _WHEN_AFTER.match(sentence[m.end() :]) if moved else None
            if len(groups) == 2 or when:
                origin = f" from {groups[0].strip()}" if len(groups) == 2 else " there"
                text += f" (moved{origin}{' ' + when.group(1) if when else ''})"
        elif slot == "workplace":
            text = f"{subject} works at {value}"
        elif slot == "occupation":
            text = f"{subject} works as a {value}"
        elif slot == "name":
            text = f"{subject}'s name is {value}"
        elif slot == "age":
            text = f"{subject} is {value} years old"
        elif slot == "birthday":
            value = re.sub(_MONTH_NAME, lambda m: m.group(0).capitalize(), value)
            text = f"{subject}'s birthday is on {value}"
        else:
            text = f"{subject} is {value}"
        found[slot] = (slot, value, text + ".")
    # each favourite its own: "My favorite color is blue, my favorite food is sushi"
    # (one slot whichever the spelling; the fact in the user's: "favourite band")
    for m in _FAVORITE.finditer(sentence):
        spelled, thing, value = m.group(1), m.group(2).lower(), m.group(3).strip()
        found.setdefault(
            f"favorite:{thing}",
            (f"favorite:{thing}", value, f"{subject}'s {spelled} {thing} is {value}."),
        )
    return list(found.values())


# Words that do not change a fact ("User really likes tea" is "User likes tea")
_STOP = FUNCTION_WORDS | {"very", "really", "also", "just", "still", "too"}


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s", "e"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> set[str]:
    return {_stem(w) for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOP}


def same_fact(a: str, b: str) -> bool:
    """Whether two close facts say one thing: one's content words are all in the other.

    Embedding similarity alone merged "has a pet ferret called Biscuit" with "... called
    Nibbles" (one word apart, cosine > 0.9); a name, number or thing only one of them has makes
    them two facts, while a restatement with more detail stays one.
    """
    left, right = content_words(a), content_words(b)
    return left <= right or right <= left


def _kind(sentence: str, event_date: dt.date | None, today: dt.date) -> str:
    for kind, pattern in _KIND_PATTERNS:
        if pattern.search(sentence):
            if kind == "plan" and event_date and event_date < today:
                continue
            return kind
    return "event" if event_date else "fact"


# Two words are too few for a statement ("I agree", "I'm tired") unless the second is a lasting
# trait of the person: diet, health, faith, situation.
_TRAIT = re.compile(
    r"^(?:I'm|Im) (vegetarian|vegan|pescatarian|diabetic|celiac|coeliac|asthmatic|epileptic|"
    r"pregnant|retired|unemployed|married|engaged|divorced|widowed|single|sober|teetotal|"
    r"left-handed|right-handed|colou?rblind|deaf|blind|autistic|dyslexic|atheist|agnostic|"
    r"christian|catholic|muslim|jewish|hindu|buddhist|sikh|vaccinated)[.!]?$",
    re.I,
)
# A secret's value is never remembered: a memory is shown in later prompts, sent upstream and
# listed to whoever reads the user's memories ("My password is hunter2", "my API key: sk-…");
# "I forgot my password" names no value and stays.
_CREDENTIAL = re.compile(
    r"\b(?:password|passcode|passphrase|pin(?: code)?|api[ -]?key|(?:access |auth |api )?token|"
    r"secret(?: key)?|private key|ssn|social security number|(?:credit |debit )?card number|"
    r"cvv|cvc|iban|account number)s?\s*(?:is|was|=|:)\s*\S",
    re.I,
)
# A hypothetical: nothing in it is so, in any of its clauses ("Imagine I live in Paris and I
# love jazz", "If I won the lottery, I'd buy a house and I'd travel").
_HYPOTHETICAL = re.compile(
    r"^(?:if|suppose|supposing|imagine|pretend|assume|assuming|say|let's say|let us say|"
    r"hypothetically|what if|in theory|"
    r"in (?:my|a|the|this|our) (?:story|novel|book|game|dream|script|role-?play|campaign))\b",
    re.I,
)
_ASSISTANT_LABEL = r"(?:assistant|ai|bot|chatbot|chatgpt|gpt|claude|gemini|copilot)\s*:"
# Said to the assistant about the conversation, or not a statement at all: a question asked
# indirectly, a counterfactual ("I'd live in Paris if I were rich"), a reply to what the
# assistant said, the assistant's words said back ("You said: I live in Paris", "Assistant: I
# live in Paris": its "I" is not the user).
_NOT_A_STATEMENT = re.compile(
    r"\bif (?:I|we) were\b|^I (?:wonder|was wondering|am wondering)\b|^I'm wondering\b"
    r"|\byou (?:said|say|wrote|write|mentioned|claimed|suggested|assumed|thought|think)\b"
    rf"|^{_ASSISTANT_LABEL}"
    r"|^I (?:have|had|got) (?:a |one |another |some |a few |a couple of )?(?:quick |small )?"
    r"(?:questions?|doubts?|requests?)\b"
    r"|\b(?:what|how) you (?:mean|meant|said|say|wrote|write)\b"
    r"|\byour (?:answer|response|reply|suggestion|explanation|question|point)\b",
    re.I,
)
# An opinion of the moment, not about the person: "I think the weather is nice today".
_OPINION_OF_NOW = re.compile(
    r"^I (?:think|believe|guess|suppose|feel like|reckon)\b(?!.*\b(?:I|I'm|I've|my|me)\b)"
    r".*\b(?:today|tonight|right now|this morning|this evening|at the moment)\b",
    re.I,
)
# A memory is read alone, later: a short statement that ends on what the conversation pointed
# at ("I love it", "Maybe I should try that sometime", "I meant the other one", "I figured it
# out") says nothing then; in a longer one the thing is usually named ("I have three cats and
# love them"). Nor does one that speaks to the assistant ("… and get back to you").
_POINTS_BACK = re.compile(
    r"\b(?:it|that|this|these|those|them|the other one|that one|this one"
    r"|(?:have|has|had|got|get|bought|buy|want|need) one)"
    r"(?: (?:out|up|down|off|over|through|yet|sometime|someday|again|too|as well|anymore|now|"
    r"later|then))?[.!]$",
    re.I,
)
POINTS_BACK_MAX_WORDS = 6
# "IT" after a preposition is the trade, not "it" shouted: "I work in IT" (heldout16) names it.
_IT_TRADE = re.compile(r"\b(in|into|for|of|at|from) IT\b")
# More words than a statement about oneself has: a paste, a story.
MAX_WORDS = 80
_TO_ASSISTANT = re.compile(r"\b(?:you|your|yours|yourself)\b", re.I)
# Said before a statement, not part of it: "Ugh, my flight…", "Honestly I'm…", "Nevermind, I…",
# "Hey there, I'm…".
_OPENER = re.compile(
    r"^(?:(?:ugh|oh|ok|okay|well|so|hmm+|haha|lol|wow|yeah|yes|sure|no(?! longer\b)|nah|honestly|"
    r"actually|"
    r"anyway|anyways|nevermind|never mind|btw|by the way|fyi|sorry|oops|alright|right|wait|"
    r"quick one|funny enough|to be honest|long story short|tbh|ngl|lowkey|"
    # an exclamation before a comma: "Oh great, my car broke down again" (heldout16's irony)
    r"(?:great|perfect|wonderful|fantastic|lovely|joy)(?=[,!])|"
    r"(?:hi|hello|hey|hiya|yo|greetings)(?: there| all| everyone)?)\b"
    # or a dash: "quick one — I'm allergic to shellfish" (heldout16)
    r"(?:[,:!]|\s+[-\u2013\u2014])?\s+)+",
    re.I,
)
_PERIOD = (
    r"(?:yesterday|today|tonight|this morning|this evening|last night|"
    r"(?:last|this|next) (?:summer|winter|spring|autumn|fall|year|month|week|weekend))"
)
_SELF_SUBJECT = r"(?:I|I'm|I've|my|My|we|We|we're|we've|our|Our)\b"
# A label before a statement ("Quick background: I'm a nurse", "Here's a long one: I've…"),
# not the assistant's name or what it said ("Assistant: I…", "You said: I…": not the user).
_LEAD_IN = re.compile(
    rf"^(?!{_ASSISTANT_LABEL})(?![^:\n]*\byou\b)[^:\n]{{1,40}}:\s+(?={_SELF_SUBJECT})", re.I
)
# Said to the assistant before a statement of the user's, not part of it: "you know I hate
# cilantro", "As you know, I'm allergic to nuts", "Like I told you, I work nights", "Just so you
# know, my sister…" (a request to the assistant, "can you remind me…", is no statement).
_TO_YOU_LEAD_IN = re.compile(
    r"^(?:(?:as|like)\s+)?(?:you\s+(?:probably\s+|already\s+|might\s+|may\s+)?know"
    r"|I\s+(?:already\s+)?(?:told|said to)\s+you(?:\s+(?:before|earlier|already))?"
    r"|just\s+so\s+you\s+know|for\s+your\s+information"
    # "Remember, I'm vegetarian", "Don't forget that my…", "You might remember my dog Biscuit"
    r"|(?:remember|don't\s+forget|do\s+not\s+forget|never\s+forget)"
    r"|you(?:'ll|\s+will|\s+might|\s+may|\s+probably|\s+may\s+well)?\s+(?:remember|recall)"
    # "you'll like this: I ran…", "You won't believe it, I won…", "Guess what, I…"
    r"|you(?:'ll|\s+will|'re\s+going\s+to)\s+(?:like|love|enjoy|laugh\s+at)\s+this"
    r"|you\s+won't\s+believe\s+(?:this|it|what\s+happened)|guess\s+what)"
    rf"(?:\s+that)?\s*[,:!\-\u2013\u2014]?\s+(?={_SELF_SUBJECT})",
    re.I,
)
# "Did I tell you I started rock climbing?", "Have I mentioned that I play the cello?", "Did you
# know I can juggle?": a statement asked as a question; what follows the ask is said.
_TOLD_YOU = re.compile(
    r"^(?:(?:did|have)\s+(?:I|we)\s+(?:ever\s+|already\s+)?(?:tell|told|mention|mentioned)"
    r"(?:\s+to)?(?:\s+you)?|did\s+you\s+know)"
    rf"(?:\s+that)?\s*,?\s+(?={_SELF_SUBJECT})",
    re.I,
)
# Nor does an intensifier count toward the three-word floor: "I'm so tired" is "I'm tired".
_INTENSIFIERS = {"so", "very", "super", "soo", "sooo"}
# A chat word said last is not part of the statement: "im a night nurse btw", "so tired lol",
# "living in Brooklyn rn" (what is so "right now" is said by the tense).
# (from the run's start, taken whole: ", " 4,000 times took 11 s when tried from every comma)
_CHAT_TAIL = re.compile(
    r"(?<![\s,])[\s,]++(?:just\s+)?(?:lol|lmao|haha+|hehe+|btw|tbh|fyi|xd|rn|atm)[\s.!]*$", re.I
)
# "my dog Biscuit - he turned ten", "my sister Maya, she's a vet": the one named, then what is
# said of them ("User's dog Biscuit turned ten", not "User's dog Biscuit - he turned ten").
_NAMED_THEN_PRONOUN = re.compile(
    r"^((?:[Mm]y|[Oo]ur) [a-z]+ [A-Z][a-z]+)(?:,|\s+[-\u2013\u2014])\s+(?:he|she)(?:'s|\u2019s|\s+is)?\s+"
)


def _said_of_the_named(sentence: str) -> str:
    if not (m := _NAMED_THEN_PRONOUN.match(sentence)):
        return sentence
    be = " is " if m.group(0).rstrip().endswith(("'s", "\u2019s", " is")) else " "
    return m.group(1) + be + sentence[m.end() :]


def _without_chat_tail(sentence: str) -> str:
    for _ in range(3):  # "lol btw"; a bounded number, each a search of the sentence
        if not (m := _CHAT_TAIL.search(sentence)):
            break
        sentence = sentence[: m.start()] + "."
    return sentence


# Said in the past without a date: "I quit Twitter a while ago" ("quit", "read", "put" stay).
_PAST_SAID = re.compile(
    r"\b(?:ago|back then|a while back|(?:years|months|weeks|ages) back|"
    r"last (?:summer|winter|spring|autumn|fall|time))\b",
    re.I,
)
# "I'm Kate's husband, she told me to ask you about it": the statement before a last part said
# to the assistant, after a comma or a dash, stands alone when that part is another's doing or
# a reminder ("…, as you know"); not a reply's thanks or goodbye ("I had a great time, thank
# you", "I'm going to bed now, talk to you tomorrow": remarks, dropped whole).
_PART = re.compile(r"(?:\s*,|\s+[-\u2013\u2014])\s+")
_OTHERS_PART = re.compile(
    r"(?:she|he|they|my [a-z]+|(?:as |like )?you (?:know|may know|might know)|in case you)\b",
    re.I,
)
# "… and I …", also with a word of time between: "I sold my car and now I cycle to work" (the
# word dropped), "… and last summer I walked the Camino" (the period kept with its clause).
_CLAUSE = re.compile(
    r",?\s+(?:and|but|so|while)\s+"
    # a filler after "so" joins nothing: "I finished nursing school, so yeah im a nurse now"
    r"(?:(?:now|then|also|later|since then|these days|yeah|yea|anyway|basically),?\s+)?"
    rf"(?=(?:{_PERIOD},?\s+)?{_SELF_SUBJECT})|;\s+"
)
# "Yesterday I saw Anna" -> "I saw Anna yesterday": a fact starts with its subject, and the
# period is resolved where it stands last ("User saw Anna on 7 May").
_LEADING_PERIOD = re.compile(rf"^({_PERIOD}),?\s+(?={_SELF_SUBJECT})", re.I)


def _period_last(sentence: str) -> str:
    m = _LEADING_PERIOD.match(sentence)
    if not m:
        return sentence
    rest = sentence[m.end() :].rstrip(" .!")
    return f"{rest} {m.group(1).lower()}."


# Not prose of the user's: a fenced code block, a Python traceback (its header, the indented
# frames, the exception's line), a quoted line ("> …", usually the assistant's words pasted
# back). "I = 3" in code or "ValueError: I am broken" is no fact about anyone.
_NOT_PROSE = re.compile(
    r"^[ \t]*(```|~~~).*?(?:^[ \t]*\1[^\n]*$|\Z)"
    r"|^Traceback \(most recent call last\):[^\n]*(?:\n[ \t][^\n]*)*(?:\n[^\n]*)?"
    r"|^[ \t]*>[^\n]*$"
    r"|^[ \t]*\|[^\n]*$",  # a table's row: "| I | love | jazz |"
    re.M | re.S,
)
# A list item's marker is not part of what it says: "- I love jazz", "2. I have two cats".
_LIST_MARKER = re.compile(r"^[ \t]*(?:[-*+•]|\d{1,3}[.)]|#{1,6})[ \t]+", re.M)
# Nor is emphasis, a pair of markers around words: "**I live in Paris** and *I love jazz*".
# A span of at most 200 characters: unbounded, each "*" of a line without its closing one read
# the rest of the line (" *a" 20,000 times: 11 s).
_EMPHASIS = re.compile(r"(\*\*|__|(?<![\w*])\*)(?=\S)([^\n]{1,200}?)(?<=\S)\1(?![\w*])")


def sentences(text: str) -> list[str]:
    prose = _EMPHASIS.sub(r"\2", _LIST_MARKER.sub("", _NOT_PROSE.sub("\n", text or "")))
    return [s.strip() for s in _SENTENCE.split(prose) if s and s.strip()]


def clauses(sentence: str) -> list[str]:
    """'I live in Paris and I love jazz' -> two facts."""
    # without its opener: the "so" of "ok so I'm a nurse and I live in York" joins nothing
    said = _OPENER.sub("", sentence)
    # "I'm Lena, I'm a vet": an introduction is a statement of its own, its name one slot
    if (name := _NAME_INTRO.match(said)) and (rest := _AFTER_NAME.match(said, name.end())):
        return [said[: name.end()], *_clauses(said[rest.end() :])]
    if pair := _said_of_them_too(said):
        return pair
    return _clauses(sentence)


_HE = "husband son dad father brother boyfriend grandpa grandfather uncle nephew fiance"
_SHE = "wife daughter mom mum mother sister girlfriend grandma grandmother aunt niece fiancee"
_EITHER = "partner boss friend cat dog kid child baby cousin roommate neighbor neighbour coworker"
_OWNER_NOUNS = {
    "he": set(_HE.split()) | set(_EITHER.split()),
    "she": set(_SHE.split()) | set(_EITHER.split()),
}
# "my son's name is Arjun and he's 7", "my boss is Karen and she micromanages everything": a
# second statement about the one the first named, written of them ("User's son is 7."), not
# kept inside the first ("… and he's 7." answered one fact of two). Only where the pronoun
# fits that one and no one else is named between ("my sister met a guy and he's a doctor").
_OF_THEM_TOO = re.compile(
    r"^((?:[Mm]y|[Oo]ur) (?:[a-z]+ )?("
    + "|".join(sorted(_OWNER_NOUNS["he"] | _OWNER_NOUNS["she"], key=len, reverse=True))
    + r")(?: [A-Z][a-z]+)?)((?:'s|\u2019s)? [^,;]{3,60}?),?"
    r" (?:and|but|so) (he|she)(?:('s|\u2019s| is)| (?!is\b))([^,;]{2,80})$"
)
_SOMEONE_ELSE = re.compile(
    r"\b(?:a|an|the|this|that|some|one)\s+(?:\w+\s+)?(?:guy|girl|man|woman|boy|lady|dude|person|"
    r"friend|kid|child|baby|nurse|doctor|teacher)\b|\b(?:someone|somebody|him|her)\b|\b[A-Z][a-z]+ [A-Z]",
)


def _said_of_them_too(sentence: str) -> list[str] | None:
    m = _OF_THEM_TOO.match(sentence.rstrip(" .!"))
    if not m or m.group(2) not in _OWNER_NOUNS[m.group(4)] or _SOMEONE_ELSE.search(m.group(3)):
        return None
    owner, is_ = m.group(1), " is" if m.group(5) else ""
    return [f"{owner}{m.group(3)}.", f"{owner}{is_} {m.group(6).strip()}."]


# "I'm 29 and I'm training for a marathon": an age stands in two words too.
_AGE_ALONE = re.compile(r"^(?:I'm|I am|Im) \d{1,3}[.!]?$")

# --- the subject left out: "started learning korean last month", "been vegan since 2019" ---------

# A chat message often drops its "I": a sentence that opens on a past form ("started…", "got
# promoted…"), "been", a doing ("living in Brooklyn") or one of these present verbs, which are
# seldom an order to the assistant ("work at a bakery on weekends", "hate cilantro"; not "write",
# "play", "make", "have": "have a nice day" is a wish).
_SUBJECTLESS_PRESENT_WORDS = (
    "work live love hate enjoy prefer own speak teach study volunteer commute rent"
)
_SUBJECTLESS_PRESENT = set(_SUBJECTLESS_PRESENT_WORDS.split())
# "-ed" words that say how one feels, not what one did: "tired of this" is no "I tired of this".
_FEELING_ED_WORDS = (
    "tired bored excited worried scared stressed annoyed confused interested obsessed "
    "exhausted pissed amazed shocked surprised disappointed embarrassed frustrated relieved "
    "thrilled stoked impressed convinced ashamed blessed"
)
_FEELING_ED = set(_FEELING_ED_WORDS.split())
# a state said with "be": "married with two kids", "based in Leeds" -> "I'm …"
_STATE_ED = {"married", "engaged", "divorced", "based", "located", "retired", "employed"}
# A doing said without "I'm" ("living in Brooklyn rn", "still working on my thesis"): these
# verbs only, since many more open a sentence as its subject or a remark ("Knowing another
# language opens doors", "Speaking of which", "Exciting times ahead": LoCoMo's turns).
_SUBJECTLESS_DOING_WORDS = """
    living working learning studying training moving planning trying looking heading staying
    getting going doing reading watching taking waiting saving hoping finishing starting
    leaving visiting preparing applying recovering spending building writing practicing
    practising teaching volunteering rehearsing chilling
    """
_SUBJECTLESS_DOING = set(_SUBJECTLESS_DOING_WORDS.split())
# After the first word, a verb of its own makes that word the subject ("Work is crazy",
# "Running makes me happy", "Meeting went well"), not a verb of the user's.
_SUBJECT_THEN_VERB = re.compile(
    r"\b(?:is|isn't|was|wasn't|are|were|has|had|have|makes|made|helps|sucks|gets|keeps|takes|"
    r"feels|seems|looks|went|goes|starts|started|ends|ended|will|would|can|could)\b",
    re.I,
)
_FIRST_WORD = re.compile(r"[A-Za-z][a-z']*")


# A verb of its own later in the sentence makes a doing its subject: "Running a business isn't
# easy", "Learning German has been tough", "Having my family around helps" (LoCoMo's turns).
_LATER_FINITE = re.compile(
    r"\b(?:is|isn't|was|wasn't|are|aren't|were|has|have|had|does|did|must|can|can't|could|will|won't|"
    r"would|should|"
    r"may|might|makes|made|helps|helped|brings|brought|keeps|reminds|seems|sounds|feels|looks|"
    r"gives|lets|takes|warms|fills|means)\b|'s\b|\u2019s\b",
    re.I,
)
# What follows a verb in the past that the user did: its object's first word, a preposition,
# a particle, a doing ("started learning"), a participle ("got promoted"), a time. Not a bare
# noun: "Mixed emotions - …", "Limited options" are not things done.
_AFTER_A_PAST_WORDS = """
    a an the my our his her their some all every each this that these those them him
    one two three four five six several lots lot to in on at for with from up out off back down
    over by into about around through across after before since last yesterday again together
    """
_AFTER_A_PAST = set(_AFTER_A_PAST_WORDS.split())
# "Been" opens a statement of the user's before a doing, a state or a place ("been vegan since
# 2019", "been having a rough week", "been to Peru"), not before these ("Been a long road",
# "Been there, done that", "Been ages").
_NOT_AFTER_BEEN_WORDS = "a an the there here ages forever so such too what quite"
_NOT_AFTER_BEEN = set(_NOT_AFTER_BEEN_WORDS.split())


_THE_USER_AS_OBJECT = re.compile(r"\b(?:me|us)\b", re.I)

# A lasting state said without "I'm", followed only by what qualifies it: "Allergic to shellfish
# btw", "gluten free since my diagnosis", "vegan for 5 years", "lactose intolerant" (not "Vegan
# food is great", "Gluten free bread tastes bad", "Diabetic cats need insulin").
_SUBJECTLESS_STATE_WORDS = (
    "allergic intolerant vegan vegetarian pescatarian diabetic pregnant sober"
)
_SUBJECTLESS_STATE = set(_SUBJECTLESS_STATE_WORDS.split())
_STATE_QUALIFIED = re.compile(
    r"\s+(?:to|since|for|now|btw|and|so|because|anymore|again|though)\b|\s*[,.!;]|\s*$"
)
# what one lives "free" of: "gluten free", "sugar free" (not "Feel free to reach out": LoCoMo)
_FREE_OF_WORDS = "gluten dairy sugar alcohol smoke nut meat debt cancer drug caffeine soy egg"
_FREE_OF = set(_FREE_OF_WORDS.split())
# "no longer at Google", "no longer working there": what the user no longer is or does (not "No
# longer a problem").
_NO_LONGER = re.compile(
    r"\s+longer\s+(?:at|in|with|on|working|living|employed|married|single|engaged|dating|vegan|"
    r"vegetarian|part)\b"
)


def _state_said(low: str, following: str, rest: str, after_following: int) -> str | None:
    """What a state said without its subject takes: "I'm", or "I've been" for one that lasts
    since a time or for a while ("vegan for 5 years" -> "I've been vegan for 5 years")."""
    if low in _SUBJECTLESS_STATE:
        qualified = _STATE_QUALIFIED.match(rest)
    elif (following == "free" and low in _FREE_OF) or following == "intolerant":
        qualified = _STATE_QUALIFIED.match(rest, after_following)
    else:
        return None
    if qualified is None:
        return None
    return "I've been" if qualified.group(0).split() in (["since"], ["for"]) else "I'm"


def _subject_supplied(sentence: str) -> str:
    """ "started learning korean last month" -> "I started learning korean last month";
    "been vegan since 2019" -> "I've been vegan since 2019"; "living in Brooklyn" -> "I'm
    living in Brooklyn". Any other sentence is returned as it is."""
    opener = _OPENER.match(sentence)
    at = opener.end() if opener else 0
    start = at
    while (word := _FIRST_WORD.match(sentence, at)) and _is_adverb(word.group(0)):
        at = word.end() + 1
    if not word or word.group(0) in ("I", "I'm", "I've", "I'd", "I'll"):
        return sentence
    first = word.group(0)
    low = first.lower()
    if not (first.islower() or first[1:].islower()):
        return sentence
    rest = sentence[word.end() :]
    then = re.match(r"\s+([A-Za-z']+)", rest)
    # "Work is crazy": the word is the subject; nor a word alone ("Started.")
    if not then or _SUBJECT_THEN_VERB.match(then.group(1)):
        return sentence
    following = then.group(1).lower()
    of_its_own = _LATER_FINITE.search(rest) is not None
    # the user as the object, before any comma, is not its subject: "Really made me think",
    # "Been hectic for me", "Seeing old towns fascinates me" ("hate cilantro, tastes like soap
    # to me" is the user's)
    if _THE_USER_AS_OBJECT.search(rest.partition(",")[0]):
        return sentence
    if low == "been":
        if following in _NOT_AFTER_BEEN:
            return sentence
        said = "I've"
    elif state := _state_said(low, following, rest, then.end()):
        said = state
    elif low in _STATE_ED or (low == "no" and _NO_LONGER.match(rest)):
        said = "I'm"
    elif low in _FEELING_ED or low in _BASE_IN_ED:
        return sentence
    elif (
        (low in _KEEP and low not in _AUXILIARIES)
        or (low.endswith("ed") and len(low) > 4)
        or (low == "did" and _DID_A_THING.match(rest))
    ):
        if not (
            following in _AFTER_A_PAST
            or following.isdigit()
            or following.endswith(("ing", "ed", "ly"))
        ):
            return sentence
        said = "I"
    elif low in _SUBJECTLESS_DOING and not of_its_own:
        said = "I'm"
    elif low in _SUBJECTLESS_PRESENT and not of_its_own:
        said = "I"
    else:
        return sentence
    said_first = sentence[start:at] + first + rest
    return f"{sentence[:start]}{said} {said_first[0].lower()}{said_first[1:]}"


# Not the first word of a statement whose "I" was left out: a modal or an auxiliary opens a
# question ("Did I tell you…", "Can't wait") or a sentence about something else ("Was a long
# day"). "used to", "got" and "had" say what the user did.
_AUXILIARIES_WORDS = (
    "can can't cannot could couldn't will won't would wouldn't should shouldn't must mustn't "
    "may might shall did didn't was wasn't"
)
_AUXILIARIES = set(_AUXILIARIES_WORDS.split())
# "did" before a count or a whole thing is the past of "do", not a question's auxiliary: "did
# the whole Appalachian trail in 2022" (heldout16), "did a 10k on Sunday" (not "did the package
# come", "did my mom call").
_DID_A_THING = re.compile(r"\s+(?:a|an|\d+|the (?:whole|entire)|all (?:the|of|my))\b")
# A verb after a comma that is an order, or no verb, starts no statement of the user's: "I
# have a dog, write a poem about him", "I've done a painting, take a look", "I want things
# we'll enjoy, like a walk in the park" (LoCoMo's turns).
_NOT_LISTED_WORDS = (
    "suggest recommend give tell show find send write draft generate list explain translate "
    "summarize summarise help make book remind take use go get do try keep bring buy follow "
    "listen share save fix plan watch read like"
)
_LISTED_VERBS = _COMMON_VERBS - set(_NOT_LISTED_WORDS.split())
# "I'm 29, work in marketing, and live with my boyfriend": each verb after a comma is the
# user's too, a statement of its own ("I work in marketing"), where an object or a place
# follows it ("I teach, write and paint" stays whole).
_LISTED_VERB = re.compile(
    r",\s+(?:and\s+)?(?=([a-z]+) (?:a|an|the|my|some|in|on|at|with|for|from|as|every|two|three|"
    r"several|our)\b)"
)


# "I'm training for the Chicago marathon, currently running about 40 miles a week": a doing
# after a comma shares the "I'm" of the doing before it (heldout16), where an object, a place
# or a count follows it; "Im a software engineer, mostly doing python" has no doing before.
_LISTED_DOING = re.compile(
    r",\s+(?:and\s+)?(?=(?:(?:currently|now|also|still|usually|mostly)\s+)?[a-z]+ing "
    r"(?:a|an|the|my|some|in|on|at|with|for|from|about|around|every|\d+)\b)"
)
_DOING_FIRST = re.compile(r"(?:I'm|I am) (?:[a-z]+ly |still |now |also )?[a-z]{2,}ing\b")


def _listed_verbs(sentence: str) -> list[str]:
    # a sentence too long to be a statement stays one (and is dropped whole), not one per comma
    if not re.match(r"(?:I|I'm|I am|I've)\b", sentence) or len(sentence.split()) > MAX_WORDS:
        return [sentence]
    cuts = [
        (m.start(), m.end(), "I")
        for m in _LISTED_VERB.finditer(sentence)
        if m.group(1) in _LISTED_VERBS
    ]
    if _DOING_FIRST.match(sentence):
        cuts += [(m.start(), m.end(), "I'm") for m in _LISTED_DOING.finditer(sentence)]
    if not cuts:
        return [sentence]
    parts, pos, said = [], 0, ""
    for start, end, subject in sorted(cuts):
        if start < pos:
            continue
        parts.append(f"{said} {sentence[pos:start]}".strip())
        pos, said = end, subject
    parts.append(f"{said} {sentence[pos:]}")
    return parts


def _clauses(sentence: str) -> list[str]:
    said = _OPENER.sub("", sentence)
    parts = [
        listed
        for p in _CLAUSE.split(said)
        if p and p.strip()
        for listed in _listed_verbs(p.strip())
    ]
    # Only when each part is a statement of the user's own: "Dancing makes me so happy, and
    # now I get to share that" stays whole (its first part alone would be dropped, and its
    # second points back). An introduction stands in two words ("I'm Sam and I teach").
    each_stands = all(
        (len(p.split()) >= 3 or _NAME_INTRO.match(p) or _AGE_ALONE.match(p)) and _SELF.search(p)
        for p in parts
    )
    # a first part of three words or more can have named what a later one points back at
    points_back = len(_WORDS.findall(parts[0])) >= 3 and any(
        _OBJECT_BEFORE.search(p) for p in parts[1:]
    )
    return parts if each_stands and not points_back else [sentence]


# A later clause whose object is a pronoun for the thing the earlier one named says nothing
# alone ("I used to play the cello but I haven't touched it in years" wrote "User hasn't touched
# it in years.": heldout16): the sentence stays whole. Only the pronoun last or before a time, a
# place or a reason: "and I find it hard to make friends" says something of its own. Not "him"
# or "her", often someone the first part did not name as its object ("she told me … but i dont
# believe her": heldout13's, written "User doesn't believe her." alone).
_WORDS = re.compile(r"[\w']+")
_OBJECT_BEFORE = re.compile(
    r"\b(?:it|them)(?:\s+(?:in|for|on|at|every|each|a|so|all|again|too|anymore|since|"
    r"twice|once|with|when|because|more|less|much|daily|weekly|here|there|now|already|still|"
    # a bounded tail, taken whole: unbounded, each "it" of "it in it in …" read to the end
    r"lately|ever|yet)\b[^,;]{0,60}+)?[.!]*$"
)


# Words in quotes are someone's own, kept as said: in "My boss said 'I hate Mondays'" the "I"
# is the boss, and "'I live in Paris', she wrote" sets no place for the user. A single quote
# opens after a space and closes before one; an apostrophe between letters stays inside. A web
# address, an e-mail address or inline code is kept as written too ("…/I/live/in/Paris" is no
# "they").
_QUOTED = re.compile(
    r"`[^`\n]+`|\b(?:https?://|www\.)[^\s]*[^\s.,;:!?)\]'\"]"
    # an address starts where its run of characters does: tried from inside a long run of
    # letters it read to the run's end and back at every position (100,000: 26 s)
    r"|(?<![\w.+\-])[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+"
    # a quote ends at the next opening one: each of many unclosed ones read to the line's end
    r'|"[^"\n]*"|\u201c[^\u201c\u201d\n]*\u201d'
    r"|(?<!\w)'(?=\S)(?:[^'\n]|(?<=\w)'(?=\w))*?(?<=\S)'(?!\w)"
)
_QUOTE_MARK = re.compile("\ue000(\\d+)\ue001")


def _set_quotes_aside(sentence: str) -> tuple[str, list[str]]:
    quotes: list[str] = []

    def mark(m: re.Match) -> str:
        quotes.append(m.group(0))
        return f"\ue000{len(quotes) - 1}\ue001"

    return _QUOTED.sub(mark, sentence), quotes


def _with_quotes(text: str, quotes: list[str]) -> str:
    return _QUOTE_MARK.sub(lambda m: quotes[int(m.group(1))], text)


def _without_tail_to_you(sentence: str) -> str:
    """The statement before a last part said to the assistant ("I'm Kate's husband, she told
    me to ask you…" -> "I'm Kate's husband"), when it says nothing to the assistant itself."""
    if not _TO_ASSISTANT.search(sentence):
        return sentence
    cuts = list(_PART.finditer(sentence))
    if not cuts or not _OTHERS_PART.match(sentence, cuts[-1].end()):
        return sentence
    if _TO_ASSISTANT.search(head := sentence[: cuts[-1].start()]):
        return sentence
    return head + "."


_SPACES = re.compile(r"(?<=\S)[ \t]{2,}")
# Quoted words are kept as said ("User's boss said 'I hate Mondays'." is about the boss), but not
# when they are a habit of speech or an exclamation of the moment, which state nothing: "my
# coworker keeps saying 'I'm the best at excel'", "my brother just yelled 'im the king of the
# world'", "and he goes 'whatever'" (heldout13, heldout14).
_SAID_THEN_QUOTE = re.compile(
    r"\b(?:(?:keeps|kept|always|constantly)\s+(?:saying|says|said)|yelled|yells|shouted|shouts|"
    r"screamed|screams|goes|went)\s*[,:]?\s*\ue000(\d+)\ue001"
)
# A count with nothing counted ("but she has three": the things were named in another clause,
# or in a quote) says nothing.
_DANGLING_COUNT = re.compile(
    r"\b(?:has|have|had|got|owns|own)\s+(?:\d+|one|two|three|four|five|six|seven|eight|nine|ten|"
    r"a few|several|many|lots)\s*[.!]*$",
    re.I,
)


def _reported(sentence: str, quotes: list[str]) -> bool:
    return any(
        quotes[int(m.group(1))][:1] in ("'", '"', "\u201c")
        for m in _SAID_THEN_QUOTE.finditer(sentence)
    )


def extract(text: str, *, subject: str, today: dt.date) -> list[Fact]:
    """The memories one message holds (possibly none)."""
    facts: list[Fact] = []
    # a run of spaces is one: patterns that allow "\s*" around a word were tried again from each
    # space of a long run ("I have a cat" and 4,000 spaces took 12 s); a line's indent stays
    text = _capitalised(_dash_moves(_SPACES.sub(" ", text or "")))
    in_irony = ironic(text)
    statements = (
        with_apostrophes(without_emojis(s))
        for s in sentences(text)
        if not _HYPOTHETICAL.match(_OPENER.sub("", s)) and not not_meant(s, in_irony=in_irony)
    )
    for said_sentence in (c for s in statements if s for c in clauses(_subject_supplied(s))):
        sentence, quotes = _set_quotes_aside(_TRAILING_QUESTION.sub(".", said_sentence))
        if _reported(sentence, quotes) or _DANGLING_COUNT.search(sentence):
            continue
        if told := _TOLD_YOU.match(opened := _OPENER.sub("", sentence)):
            sentence = opened[told.end() :].rstrip(" ?!.") + "."
        if called := _CALL_ME.match(_OPENER.sub("", sentence)):
            if _a_name(called.group(1)):
                name = called.group(1)
                facts.append(Fact(f"{subject}'s name is {name}.", "fact", None, "name", name))
            continue
        if _HEDGED.match(opened := _OPENER.sub("", sentence)):
            sentence = opened.rstrip("?") + "."
        elif (
            _REQUEST.match(opened)
            and not _WORDING.match(opened)
            and (cut := _REQUEST_THEN.search(opened))
        ):
            sentence = opened[cut.end() :]
        # a question; or a line that ends on ":" and so introduces what follows (code, an
        # error, a list), saying nothing alone ("Here is my code:")
        if (
            sentence.endswith(("?", ":"))
            or _REQUEST.search(sentence)
            or _ASKED.match(_OPENER.sub("", sentence))
        ):
            continue
        if _CREDENTIAL.search(sentence):
            continue
        sentence = _TRAILING_REQUEST.sub("", sentence)
        sentence = _period_last(
            _LEAD_IN.sub("", _TO_YOU_LEAD_IN.sub("", _OPENER.sub("", sentence)))
        )
        sentence = _said_of_the_named(
            without_feeling_tail(_without_chat_tail(_without_tail_to_you(sentence)))
        )
        # Another person's move is said of them ("User's sister moved to Oslo."): a residence
        # slot is only ever the user's ("I"/"we" moved), so it never competes with theirs.
        if not _SELF.search(sentence):
            continue
        words = sentence.split()
        # "I'm just curious" is two words to the floor: an adverb says nothing of its own
        said = [
            w
            for w in words
            if not _is_adverb(w.strip(",.!")) and w.strip(",.!").lower() not in _INTENSIFIERS
        ]
        short = len(said) < 3 and not (
            _TRAIT.match(sentence) or _NAME_INTRO.match(sentence) or _AGE_ALONE.match(sentence)
        )
        if short or len(words) > MAX_WORDS:
            continue
        if (
            _HYPOTHETICAL.match(sentence)
            or _OPINION_OF_NOW.search(sentence)
            or _NOT_A_STATEMENT.search(sentence)
        ):
            continue
        if _PHATIC.match(sentence) and len(words) < 10:
            continue
        resolved, event_date = resolve_dates(sentence, today)
        slots = slot_facts(resolved, subject)
        if slots:
            facts += [
                Fact(
                    _with_quotes(text, quotes),
                    "fact",
                    event_date,
                    name,
                    _with_quotes(value, quotes),
                )
                for name, value, text in slots
            ]
            continue
        past = (event_date is not None and event_date < today) or bool(_PAST_SAID.search(sentence))
        # as said: in the rewrite "them" is also the user ("My dog loves me" -> "… loves them")
        if _TO_ASSISTANT.search(sentence) or (
            len(said) <= POINTS_BACK_MAX_WORDS
            and _POINTS_BACK.search(_IT_TRADE.sub(r"\1 tech", sentence).rstrip(" .!") + ".")
        ):
            continue
        # "I no longer live in Paris": written as said, and superseding what it denies
        denied, said_past = _ends(sentence, subject, today)
        rewritten = _with_quotes(
            third_person(resolved, subject, past=past or said_past).rstrip(" .!") + ".", quotes
        )
        kind = _kind(sentence, event_date, today)
        facts.append(Fact(rewritten, kind, event_date, ends=denied))
    return facts
