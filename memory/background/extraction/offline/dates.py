"""Relative dates ("last Friday", "two weeks ago", "next March") resolved against the
message's date.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from typing import NamedTuple

from memory.background.extraction.offline.patterns import BASE_IN_ED
from memory.words import MONTHS, WEEKDAYS

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
_UNIT_DAYS = {"day": 1, "week": 7, "month": 30, "year": 365}
_AGO = re.compile(
    r"\b(\d{1,9}|a couple of|a few|few|several|an?|one|two|three|four|five|six|seven|eight|nine|ten)"
    r"\s+(day|week|month|year)s?\s+ago\b",
    re.I,
)
# "My exam is in two weeks", "I start my new job in three days": a time to come, counted from
# the message (they stayed as said); not a duration ("I lost 5 pounds in two weeks": the past)
# nor a frequency ("twice in a week").
# Counted from two ("in a day", "in one week" are as often how long something took).
_IN_TIME = re.compile(
    r"(?<!once )(?<!twice )(?<!times )(?<!per )\bin\s+(\d{1,4}|a couple of|a few|two|three|four|"
    r"five|six|seven|eight|nine|ten)\s+(day|week|month|year)s\b(?!\s+(?:ago|time))",
    re.I,
)
# how long something takes or took, what one can do in a time, what has not been done in one
# ("I haven't slept in three days", LoCoMo's "hasn't talked in a few days"): no date
_TAKES = re.compile(
    r"\b(?:can|could|able to|managed to|took|takes|take|within|whole|been|haven't|hasn't|"
    r"have not|has not|havent|hasnt)\b",
    re.I,
)
_NEAR_MONTH = re.compile(r"\b(last|next) (" + "|".join(MONTHS) + r")\b(?! \d)", re.I)
_LOWER_MONTH = re.compile(
    r"\b((?:in|since|until|till|by|of|early|late|mid|mid-|every) ?)(" + "|".join(MONTHS) + r")\b"
)
_LAST_WEEKDAY = re.compile(r"\blast\s+(" + "|".join(WEEKDAYS) + r")\b", re.I)
# "on Friday", "this Friday": the coming one, or the last when the sentence tells of the past
# ("next Friday" stays as said: this week's or the next, people differ); not a habit ("on
# Fridays", "on Friday nights")
_THIS_WEEKDAY = re.compile(
    r"\b(?:on|this) ("
    + "|".join(WEEKDAYS)
    + r")\b(?!s\b|'s\b| (?:night|morning|evening|afternoon)s)",
    re.I,
)
_EXPLICIT = re.compile(
    r"\b(?:on\s+)?(\d{1,2})(?:st|nd|rd|th)?\s+(?:of\s+)?("
    + "|".join(MONTHS)
    + r")(?:,?\s+(\d{4}))?\b"
    r"|\b(" + "|".join(MONTHS) + r")\s+(\d{1,2})(?:st|nd|rd|th)?(?:,?\s+(\d{4}))?\b",
    re.I,
)

# A day said without its year is the last such day when the sentence tells of the past ("I met
# Tom on 3 January"), else the next one ("I'm flying to Rome on 3 January", "My exam is on 12
# January", said in December: next January's; it was this year's, eleven months gone, and the
# model was shown "[3 January 2026] User is flying to Rome…" as a trip taken). The past is
# told by its auxiliaries, a common irregular past, or a verb in -ed after its subject ("I
# moved", "my sister started", "the baby arrived"; not "is booked", "getting married"); what is
# booked "for" a day is still to come.
_PAST_TENSE = re.compile(
    r"\b(?:was|were|did|had|went|met|(?<!'ve )(?<!have )(?<!'s )(?<!has )got|came|saw|made|took|"
    r"left|began|bought|found|gave|ran|"
    r"won|lost|sold|told|felt|flew|drove|wrote|spent|sent|heard|brought|caught|kept|held|ate|"
    r"fell|grew|knew|wore|chose|broke|spoke|rode|swam|became|forgot|paid|said|built|woke)\b"
    r"|\b(?:I|we|he|she|they|(?:my|our|his|her|their|the) [a-z]+) "
    r"(?:[a-z]+ly |just |also |finally |first |even |never )?([a-z]+ed)\b",
    re.I,
)
_FUTURE_TENSE = re.compile(
    r"\b(?:will|shall|going to|gonna|plan(?:s|ning)? to|hop(?:e|es|ing) to|can't wait|"
    r"looking forward|(?:I'm|I am|we're|we are|he's|she's|they're|it's) (?:[a-z]+ )?[a-z]+ing)\b"
    r"|'ll\b",
    re.I,
)
# A day of the month alone, after a word of when: "My exam is on the 12th" (said in December:
# 12 December, or 12 January once the 12th has passed; the last one when told of the past), "I'm
# away until the 3rd". Not a rank: "on the 3rd floor", "for the 2nd time".
_DAY_ALONE = re.compile(
    r"\b(on|by|until|till|before|after|from|since) the ([1-9]|[12]\d|3[01])(?:st|nd|rd|th)\b"
    r"(?! of\b| (?:[a-z]+ )?(?:time|times|place|floor|grade|row|century|anniversary|birthday|"
    r"attempt|try|round|day|week|month|year|person|one)\b)",
    re.I,
)
_FOR_THE_DAY = re.compile(r"\bfor (?:the )?$", re.I)
# A day that comes again each year dates no event: "My mum's birthday is on 14 March" was an
# event of 14 March this year.
_YEARLY = re.compile(
    r"\b(?:birthday|anniversary|name ?day|born)(?:'s|s)?(?: (?:is|are|falls|comes))?(?: on)? ?$",
    re.I,
)


# A period said as the subject, once resolved: "On 20 June 2023's gonna be…", "In the week of 2
# July 2023 was wild".
_PERIOD_AS_SUBJECT = re.compile(
    r"^(?:On|In) ((?:the (?:week|weekend) of )?(?:\d{1,2} )?[A-Z][a-z]+ \d{4}|\d{4})"
    r"(['\u2019]s\b| (?:is|was|will|has|had)\b)"
)


def _tells_of_the_past(sentence: str) -> bool:
    """Whether `sentence` tells of the past, where a day said without its year is the last."""
    return not _FUTURE_TENSE.search(sentence) and any(
        m.group(1) is None or m.group(1).lower() not in BASE_IN_ED
        for m in _PAST_TENSE.finditer(sentence)
    )


def _year_of(month: int, day: int, today: dt.date, *, to_come: bool) -> int | None:
    """The year of a day said without one (a day of some year): the next such day, or the
    last (29 February: the nearest leap year's on that side, at most 8 years away); None past
    the calendar's ends (a message dated 31 December 9999 said "on 3 January")."""
    step = 1 if to_come else -1
    for year in range(today.year, today.year + 9 * step, step):
        with contextlib.suppress(ValueError):  # no such day that year, or no such year
            said = dt.date(year, month, day)
            if said == today or (said > today) == to_come:
                return year
    return None


def _day_of_month(day: int, today: dt.date, *, to_come: bool) -> dt.date | None:
    """The next (or last) day numbered `day` from today: this month's or a month on, past
    the months without it ("the 31st" in November is 31 December); None past the calendar."""
    step = 1 if to_come else -1
    year, month = today.year, today.month
    for _ in range(4):
        with contextlib.suppress(ValueError):
            said = dt.date(year, month, day)
            if said == today or (said > today) == to_come:
                return said
        month += step
        if month in (0, 13):
            year, month = year + step, 12 if month == 0 else 1
    return None


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


class Resolved(NamedTuple):
    """A sentence with its relative dates written out; `when` the first one's day (a period's:
    the day its offset lands on, "next year" a year from today), and whether that day is the
    event's own (`exact`: "yesterday", "last Friday", "3 days ago", "on 3 May"), not a day
    inside a week, a month or a year the text names ("in 2024", "in June 2027"). A memory's
    date is only ever an exact one: "[7 December 2027] User is moving to Bristol in 2027"
    told the model a day no one said."""

    text: str
    when: dt.date | None
    exact: bool


def resolve_dates(sentence: str, today: dt.date) -> Resolved:
    """Relative time words -> absolute dates (text rewritten, and the event's date); words
    whose date falls off the calendar stay as written."""
    found: list[dt.date] = []
    exact: list[bool] = []  # beside `found`: whether each is a day of its own

    def sub(pattern, repl, text, flags=re.I):
        return re.sub(pattern, repl, text, flags=flags)

    def day_of(m: re.Match, delta_days: int, prefix: str = "on ") -> str:
        day = _days_after(today, -delta_days)
        if day is None:
            return m.group(0)
        found.append(day)
        exact.append(True)
        return prefix + _label(day)

    text = sentence
    tense: list[bool] = []  # whether the sentence tells of the past: read once, if asked

    def to_come(m: re.Match) -> bool:
        """Whether the day `m` (in `text`) said without its year is to come, else past."""
        if _FOR_THE_DAY.search(text[max(0, m.start() - 10) : m.start()]):
            return True
        if not tense:
            tense.append(_tells_of_the_past(sentence))
        return not tense[0]

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

    def counted(m: re.Match, *, to_come: bool) -> str:
        """A count of days, weeks, months or years from the message, back ("two weeks ago") or
        to come ("in three days"): the day it lands on, as precise as its unit (and "a few
        days" to come is around a day, not on it)."""
        raw = m.group(1).lower()
        unit = m.group(2).lower()
        days = _UNIT_DAYS[unit] * (int(raw) if raw.isdigit() else _NUMBERS[raw])
        day = _days_after(today, days if to_come else -days)
        if day is None:
            return m.group(0)
        found.append(day)
        exact.append(unit == "day" and not (to_come and raw in ("a couple of", "a few")))
        if unit == "day":
            return ("on " if exact[-1] else "around ") + _label(day)
        if unit == "week":
            return "in the week of " + _label(day)
        if unit == "month":
            return "in " + _month_label(day)
        return f"in {day.year}"

    text = _AGO.sub(lambda m: counted(m, to_come=False), text)

    if _IN_TIME.search(text) and not _TAKES.search(sentence) and not _tells_of_the_past(sentence):
        text = _IN_TIME.sub(lambda m: counted(m, to_come=True), text)

    def last_weekday(m: re.Match) -> str:
        target = WEEKDAYS.index(m.group(1).lower())
        back = (today.weekday() - target) % 7 or 7
        return day_of(m, back)

    text = _LAST_WEEKDAY.sub(last_weekday, text)

    def this_weekday(m: re.Match) -> str:
        """Dated, and kept as said ("on Thursday"), as a day and month without a year is: the
        memory is shown with its date."""
        target = WEEKDAYS.index(m.group(1).lower())
        ahead, back = (target - today.weekday()) % 7 or 7, (today.weekday() - target) % 7 or 7
        if (day := _days_after(today, ahead if to_come(m) else -back)) is not None:
            found.append(day)
            exact.append(True)
        return m.group(0)

    text = _THIS_WEEKDAY.sub(this_weekday, text)

    def month_of(m: re.Match) -> str:
        """ "last june" said in December 2026 is June 2026; "next june" is June 2027."""
        month = MONTHS.index(m.group(2).lower()) + 1
        if m.group(1).lower() == "last":
            year = today.year if month < today.month else today.year - 1
        else:
            year = today.year if month > today.month else today.year + 1
        found.append(dt.date(year, month, 1))
        exact.append(False)
        return f"in {m.group(2).capitalize()} {year}"

    text = _NEAR_MONTH.sub(month_of, text)
    # a month named in lowercase ("in january") is written as a name
    text = _LOWER_MONTH.sub(lambda m: m.group(1) + m.group(2).capitalize(), text)

    def period(m: re.Match, delta: int, unit: str, word: str) -> str:
        day = _days_after(today, delta)
        if day is None:
            return m.group(0)
        found.append(day)
        exact.append(False)
        if unit in ("week", "weekend"):
            return f"{word} the {unit} of {_label(day)}"
        if unit == "month":
            return f"in {_month_label(day)}"
        return f"in {day.year}"

    def last_weekend(m: re.Match) -> str:
        """The Saturday of the last weekend before today's (on a weekend: the one before it).
        A period, so no day of its own: it was written "on the weekend before 7 December
        2026", whose date the day said was then read from, dating the memory today."""
        back = (today.weekday() - 5) % 7
        return period(m, -(back + 7 if back <= 1 else back), "weekend", "on")

    def this_weekend(m: re.Match) -> str:
        """The Saturday of the coming weekend (on a weekend: this one), or of the last one
        when the sentence tells of the past ("I went hiking this weekend", said on Monday)."""
        if to_come(m):
            ahead = -1 if today.weekday() == 6 else (5 - today.weekday()) % 7
            return period(m, ahead, "weekend", "on")
        return period(m, -((today.weekday() - 5) % 7), "weekend", "on")

    text = sub(r"\blast weekend\b", last_weekend, text)
    text = sub(r"\bthis weekend\b", this_weekend, text)
    text = sub(r"\blast week\b", lambda m: period(m, -7, "week", "in"), text)
    text = sub(r"\blast month\b", lambda m: period(m, -30, "month", "in"), text)
    text = sub(r"\blast year\b", lambda m: period(m, -365, "year", "in"), text)
    text = sub(r"\bnext week\b", lambda m: period(m, 7, "week", "in"), text)
    text = sub(r"\bnext month\b", lambda m: period(m, 30, "month", "in"), text)
    # a day and month, then "next year": that day of next year ("on 12 June next year" -> "on
    # 12 June 2027", a day of its own; it was "on 12 June in 2027", dated by no day)
    text = sub(
        r"\b(\d{1,2}(?:st|nd|rd|th)? (?:"
        + "|".join(MONTHS)
        + r")|(?:"
        + "|".join(MONTHS)
        + r") \d{1,2}(?:st|nd|rd|th)?) next year\b",
        lambda m: f"{m.group(1)} {today.year + 1}",
        text,
    )
    text = sub(r"\bnext year\b", lambda m: period(m, 365, "year", "in"), text)
    if not found and (m := _EXPLICIT.search(text)):
        day_s, month_s, year_s = (
            (m.group(1), m.group(2), m.group(3))
            if m.group(1)
            else (m.group(5), m.group(4), m.group(6))
        )
        month, day = MONTHS.index(month_s.lower()) + 1, int(day_s)
        with contextlib.suppress(ValueError):  # no such day ("31 February"), or past year 9999
            dt.date(2000, month, day)  # a leap year: 29 February is a day
            if year_s:
                found.append(dt.date(int(year_s), month, day))
                exact.append(True)
            elif not _YEARLY.search(text[max(0, m.start() - 40) : m.start()]) and (
                year := _year_of(month, day, today, to_come=to_come(m))
            ):
                found.append(dt.date(year, month, day))
                exact.append(True)
    if (
        not found
        and (m := _DAY_ALONE.search(text))
        and (of_month := _day_of_month(int(m.group(2)), today, to_come=to_come(m)))
    ):
        found.append(of_month)  # dated, kept as said ("on the 14th"), as "on 3 January" is
        exact.append(True)
    if sentence[:1].isupper() and text[:1].islower():  # "Last Friday I…" -> "On 4 December…"
        text = text[0].upper() + text[1:]
    if said_of := _PERIOD_AS_SUBJECT.match(text):
        # the period was the sentence's subject: "Tonight's gonna be an awesome night" was "On
        # 20 June 2023's gonna be…", "Last week was wild" "In the week of 2 July 2023 was wild"
        subject, verb = said_of.group(1), said_of.group(2)
        verb = " is" if verb[0] in "'\u2019" else verb
        text = f"{subject[0].upper()}{subject[1:]}{verb}{text[said_of.end() :]}"
    return Resolved(text, found[0] if found else None, bool(exact and exact[0]))
