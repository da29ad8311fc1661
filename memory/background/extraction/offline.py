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

_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_FIRST_PERSON = re.compile(r"\b(I|I'm|I've|I'd|I'll|my|My|me|we|We|our|Our|us|mine)\b")
_PHATIC = re.compile(
    r"^(?:oh,?\s+|wow,?\s+|yeah,?\s+|haha,?\s+|aw+,?\s+)*(?:thanks?|thank you|i see|i agree|"
    r"i know|i think so|i hope so|i understand|i guess|i mean|me too|i bet|i can imagine|"
    r"i'?m (?:so |really )?(?:glad|happy|sorry|proud|excited) (?:for|to hear|about) (?:you|that)|"
    r"i'?m (?:doing )?(?:good|great|fine|well)|i appreciate (?:it|that|you)|"
    r"let me know|i'?ll (?:let you know|talk to you)|i love that|i'?m all ears)\b",
    re.IGNORECASE,
)
_CITY = r"([A-Z][\w'\-]+(?:\s+[A-Z][\w'\-]+){0,3})"

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
    r"\b(\d+|a couple of|a few|few|several|an?|one|two|three|four|five|six|seven|eight|nine|ten)"
    r"\s+(day|week|month|year)s?\s+ago\b",
    re.I,
)
_LAST_WEEKDAY = re.compile(r"\blast\s+(" + "|".join(_WEEKDAYS) + r")\b", re.I)
_EXPLICIT = re.compile(
    r"\b(?:on\s+)?(\d{1,2})(?:st|nd|rd|th)?\s+(" + "|".join(_MONTHS) + r")(?:,?\s+(\d{4}))?\b"
    r"|\b(" + "|".join(_MONTHS) + r")\s+(\d{1,2})(?:st|nd|rd|th)?(?:,?\s+(\d{4}))?\b",
    re.I,
)


@dataclass
class Fact:
    text: str
    kind: str = "fact"
    event_date: dt.date | None = None
    slot: str = ""
    value: str = ""


def _label(day: dt.date) -> str:
    return f"{day.day} {day:%B %Y}"


def _month_label(day: dt.date) -> str:
    return f"{day:%B %Y}"


def resolve_dates(sentence: str, today: dt.date) -> tuple[str, dt.date | None]:
    """Relative time words -> absolute dates (text rewritten, and the event's date)."""
    found: list[dt.date] = []

    def sub(pattern, repl, text, flags=re.I):
        return re.sub(pattern, repl, text, flags=flags)

    def day_of(delta_days: int, prefix: str = "on ") -> str:
        day = today - dt.timedelta(days=delta_days)
        found.append(day)
        return prefix + _label(day)

    text = sentence
    text = sub(r"\b(?:yesterday|last night)\b", lambda m: day_of(1), text)
    text = sub(r"\btoday\b|\btonight\b|\bthis morning\b", lambda m: day_of(0), text)
    text = sub(r"\bthe day before yesterday\b", lambda m: day_of(2), text)
    text = sub(r"\btomorrow\b", lambda m: day_of(-1), text)

    def ago(m: re.Match) -> str:
        raw = m.group(1).lower()
        n = int(raw) if raw.isdigit() else _NUMBERS.get(raw, 1)
        unit = m.group(2).lower()
        days = {"day": 1, "week": 7, "month": 30, "year": 365}[unit] * n
        day = today - dt.timedelta(days=days)
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
        return day_of(back)

    text = _LAST_WEEKDAY.sub(last_weekday, text)

    def period(delta: int, unit: str, word: str) -> str:
        day = today + dt.timedelta(days=delta)
        found.append(day)
        if unit == "week":
            return f"{word} the week of {_label(day)}"
        if unit == "month":
            return f"in {_month_label(day)}"
        return f"in {day.year}"

    text = sub(r"\blast weekend\b", lambda m: "on the weekend before " + _label(today), text)
    text = sub(r"\blast week\b", lambda m: period(-7, "week", "in"), text)
    text = sub(r"\blast month\b", lambda m: period(-30, "month", "in"), text)
    text = sub(r"\blast year\b", lambda m: period(-365, "year", "in"), text)
    text = sub(r"\bnext week\b", lambda m: period(7, "week", "in"), text)
    text = sub(r"\bnext month\b", lambda m: period(30, "month", "in"), text)
    text = sub(r"\bnext year\b", lambda m: period(365, "year", "in"), text)
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

_IRREGULAR = {"have": "has", "do": "does", "go": "goes", "am": "is", "'m": "is"}
_ADVERBS = {"really", "also", "just", "still", "usually", "always", "never", "often", "now"}
_BASE_VERBS = set(
    [
        "love",
        "like",
        "live",
        "work",
        "want",
        "need",
        "enjoy",
        "prefer",
        "hate",
        "think",
        "feel",
        "plan",
        "hope",
        "go",
        "have",
        "do",
        "know",
        "believe",
        "teach",
        "study",
        "play",
        "run",
        "write",
        "paint",
        "read",
        "cook",
        "own",
        "use",
        "miss",
        "visit",
        "wish",
        "try",
        "volunteer",
        "collect",
        "keep",
        "spend",
        "watch",
        "listen",
        "make",
        "take",
        "find",
        "get",
        "see",
        "care",
        "struggle",
        "remember",
        "dream",
        "sing",
        "dance",
        "swim",
        "practice",
        "attend",
        "belong",
    ]
)


def _conjugate(verb: str) -> str:
    low = verb.lower()
    if low in _IRREGULAR:
        return _IRREGULAR[low]
    if low not in _BASE_VERBS:
        return verb
    if low.endswith(("s", "sh", "ch", "x", "z", "o")):
        return verb + "es"
    if len(low) > 2 and low.endswith("y") and low[-2] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


def third_person(sentence: str, subject: str) -> str:
    possessive = f"{subject}'s"
    text = sentence
    text = re.sub(r"\bI am\b|\bI'm\b|\bIm\b", f"{subject} is", text)
    text = re.sub(r"\bI've\b", f"{subject} has", text)
    text = re.sub(r"\bI'd\b", f"{subject} would", text)
    text = re.sub(r"\bI'll\b", f"{subject} will", text)

    def i_verb(m: re.Match) -> str:
        words = m.group(1).split()
        if words[0].lower() in _ADVERBS and len(words) > 1:
            return f"{subject} {words[0]} {_conjugate(words[1])}"
        return f"{subject} {_conjugate(words[0])}" + (
            " " + " ".join(words[1:]) if len(words) > 1 else ""
        )

    text = re.sub(r"\bI ((?:\w+)(?: \w+)?)", i_verb, text)
    text = re.sub(r"\bI\b", subject, text)
    text = re.sub(r"\b[Mm]y\b", possessive, text)
    text = re.sub(r"\bmine\b", possessive, text)
    text = re.sub(r"\bmyself\b", subject, text)
    text = re.sub(r"\bme\b", subject, text)
    return text


# --- slots: facts with one current value ---------------------------------------------------------

_SLOTS = [
    (
        "residence",
        re.compile(
            r"\b(?:I|we) (?:just |recently |finally )?(?:moved|relocated) from "
            + _CITY
            + r" to "
            + _CITY
        ),
    ),
    (
        "residence",
        re.compile(r"\b(?:I|we) (?:just |recently |finally )?(?:moved|relocated) to " + _CITY),
    ),
    ("residence", re.compile(r"\b(?:I|we) (?:now |currently |still )?live in " + _CITY)),
    (
        "residence",
        re.compile(r"\b(?:I'm|I am|we're|we are) (?:now |currently )?(?:living|based) in " + _CITY),
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
    ("age", re.compile(r"\b(?:I'm|I am) (\d{1,3}) years? old\b")),
    (
        "relationship",
        re.compile(
            r"\b(?:I'm|I am) (?:now |currently )?(single|married|engaged|divorced|widowed)\b"
        ),
    ),
]
_FAVORITE = re.compile(r"\b[Mm]y favou?rite ([a-z]+(?: [a-z]+)?) (?:is|are) ([^.,!;]+)")


def slot_facts(sentence: str, subject: str) -> list[tuple[str, str, str]]:
    """(slot, value, canonical text) for each one-valued fact the sentence sets."""
    found: dict[str, tuple[str, str, str]] = {}
    for slot, pattern in _SLOTS:
        m = pattern.search(sentence)
        if not m or slot in found:
            continue
        groups = [g for g in m.groups() if g]
        value = groups[-1].strip()
        if slot == "residence":
            text = f"{subject} lives in {value}"
            if len(groups) == 2:
                text += f" (moved from {groups[0].strip()})"
        elif slot == "workplace":
            text = f"{subject} works at {value}"
        elif slot == "occupation":
            text = f"{subject} works as a {value}"
        elif slot == "name":
            text = f"{subject}'s name is {value}"
        elif slot == "age":
            text = f"{subject} is {value} years old"
        else:
            text = f"{subject} is {value}"
        found[slot] = (slot, value, text)
    m = _FAVORITE.search(sentence)
    if m:
        thing, value = m.group(1).lower(), m.group(2).strip()
        found["favorite"] = (f"favorite:{thing}", value, f"{subject}'s favorite {thing} is {value}")
    return list(found.values())


def _kind(sentence: str, event_date: dt.date | None, today: dt.date) -> str:
    for kind, pattern in _KIND_PATTERNS:
        if pattern.search(sentence):
            if kind == "plan" and event_date and event_date < today:
                continue
            return kind
    return "event" if event_date else "fact"


_CLAUSE = re.compile(r",?\s+(?:and|but|so|while)\s+(?=(?:I|I'm|I've|my|My)\b)|;\s+")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text or "") if s and s.strip()]


def clauses(sentence: str) -> list[str]:
    """'I live in Paris and I love jazz' -> two facts."""
    parts = [p.strip() for p in _CLAUSE.split(sentence) if p and p.strip()]
    return parts if all(len(p.split()) >= 3 for p in parts) else [sentence]


def extract(text: str, *, subject: str, today: dt.date) -> list[Fact]:
    """The memories one message holds (possibly none)."""
    facts: list[Fact] = []
    for sentence in (c for s in sentences(text) for c in clauses(s)):
        if sentence.endswith("?") or not _FIRST_PERSON.search(sentence):
            continue
        words = sentence.split()
        if len(words) < 3 or len(words) > 80:
            continue
        if _PHATIC.match(sentence) and len(words) < 10:
            continue
        slots = slot_facts(sentence, subject)
        resolved, event_date = resolve_dates(sentence, today)
        if slots:
            facts += [Fact(text, "fact", event_date, name, value) for name, value, text in slots]
            continue
        rewritten = third_person(resolved, subject).rstrip(" .!") + "."
        facts.append(Fact(rewritten, _kind(sentence, event_date, today), event_date))
    return facts
