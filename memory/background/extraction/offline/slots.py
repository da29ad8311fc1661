"""Slots: facts with one current value (where the user lives, works, their name...), so that a
newer value supersedes the older memory.
"""

from __future__ import annotations

import re

from memory.background.extraction.offline.patterns import ADVERBS, CITY, TRAIT
from memory.words import MONTHS, WEEKDAYS

# A first name, perhaps with a second one or a surname ("Anne-Marie", "Sam Lee"); no apostrophe,
# so "I'm Sam's mother" names no one.
_NAME = r"([A-Z][a-z]+(?:-[A-Z][a-z]+)?(?: [A-Z][a-z]+(?:-[A-Z][a-z]+)?)?)"
# "I'm Sam" introduces the speaker only where the name ends the statement or its first part
# ("I'm Sam, a nurse", "I'm Sam from Leeds"); "I'm Sam's mother" or "I'm Dutch" does not.
_NAME_ENDS = r"(?=\s*(?:[.!,;]|$)|\s+(?:and|from|here|btw|by the way)\b)"
NAME_INTRO = re.compile(r"^(?:I'm|I am|Im) " + _NAME + _NAME_ENDS)
# "My name is Tom", "my name's Tom" (its "'s" was no name's: "User's name's Tom, User is…")
MY_NAME_IS = re.compile(r"\b[Mm]y name(?: is|'s) ([A-Z][\w\-]+(?: [A-Z][\w\-]+)?)")
# what follows an introduction's name as a statement of its own: "I'm Lena, I'm a vet"
AFTER_NAME = re.compile(r"\s*[,;]\s+(?=(?:I|I'm|I've|my|My|we|We|we're|we've|our|Our)\b)")
# "Call me Sam", "Please call me Sam", "My friends call me Sam": said before the filters that
# drop a request or a statement without "I" or "my".
CALL_ME = re.compile(
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
_NOT_NAMES = set(_NOT_NAME_WORDS.split()) | set(WEEKDAYS) | set(MONTHS)


def a_name(value: str) -> bool:
    first = value.split()[0].lower()
    return not (
        first in _NOT_NAMES
        or first.endswith(("ish", "ese"))
        or TRAIT.match(f"I'm {first}")
        # only the listed adverbs: "Emily", "Holly" end as many adverbs do
        or first in ADVERBS
    )


_MONTH_NAME = r"(?i:" + "|".join(MONTHS) + r")"
_DAY_OF_MONTH = (
    rf"((?:the )?\d{{1,2}}(?:st|nd|rd|th)?(?: of)? {_MONTH_NAME}"
    rf"|{_MONTH_NAME} (?:the )?\d{{1,2}}(?:st|nd|rd|th)?)\b"
)

# A workplace is a name, and may end on what it is: "St Mary's hospital", "Lincoln high school"
# (it was "St Mary's", the hospital dropped).
_WORKPLACE_NAME = (
    CITY[1:-1]  # the name's words, without CITY's group
    + r"(?: (?:hospital|clinic|school|high school|university|college|library|hotel|bank|"
    r"restaurant|cafe|café|bakery|bar|pub|store|shop|gym|office|studio|lab|museum|theatre|"
    r"theater|agency|firm|factory|warehouse|airport|church|centre|center))?"
)
_WORKPLACE = f"({_WORKPLACE_NAME})"

# The occupation said with the workplace, kept in the slot's text: "I work as a nurse at St
# Mary's hospital" is "User works as a nurse at St Mary's hospital." (it was "… as a nurse."),
# "in Leeds" likewise; "I work for Acme as a designer", "User works at Acme as a designer." (it
# was "… at Acme.").
_ALSO_WORKPLACE = re.compile(
    r" (?:at|for|in) (?:(?:a|an|the) [a-z]+(?: [a-z]+)?(?=[.,!;]|$)|" + _WORKPLACE_NAME + ")"
)
_ALSO_OCCUPATION = re.compile(r" as an? [a-z][a-z \-]{2,40}?(?=[.,!;]|$| in | at )")

_SLOTS = [
    (
        "residence",
        re.compile(
            r"\b(?:I|[Ww]e) (?:just |recently |finally )?(?:moved|relocated) "
            r"(?:from|out of|away from) " + CITY + r" to " + CITY
        ),
    ),
    (
        # "We moved out of Manchester last spring and now live in York"
        "residence",
        re.compile(
            r"\b(?:I|[Ww]e) (?:just |recently |finally )?(?:moved|relocated) "
            r"(?:from|out of|away from) "
            + CITY
            + r"[^.;!?]{0,40}? and (?:now |currently )?live in "
            + CITY
        ),
    ),
    (
        "residence",
        re.compile(r"\b(?:I|[Ww]e) (?:just |recently |finally )?(?:moved|relocated) to " + CITY),
    ),
    ("residence", re.compile(r"\b(?:I|[Ww]e) (?:now |currently |still )?live in " + CITY)),
    (
        "residence",
        re.compile(
            r"\b(?:I'm|I am|[Ww]e're|[Ww]e are) (?:now |currently )?(?:living|based) in " + CITY
        ),
    ),
    ("workplace", re.compile(r"\bI (?:now |currently |still )?work (?:at|for) " + _WORKPLACE)),
    (
        # "I'm working at Spotify now", as "I'm living in" is a residence
        "workplace",
        re.compile(r"\b(?:I'm|I am) (?:now |currently |still )?working (?:at|for) " + _WORKPLACE),
    ),
    (
        "workplace",
        re.compile(
            r"\bI (?:just )?(?:got a (?:new )?job|started (?:a new job|working)) (?:at|for|with) "
            + _WORKPLACE
            + r"|\bI (?:just )?started (?:a new job )?at "
            + _WORKPLACE
        ),
    ),
    # the value ends before a place, a workplace or a word of when ("… as a midwife now": its
    # value was "midwife now")
    (
        "occupation",
        re.compile(
            r"\bI work as an? ([a-z][a-z \-]{2,40}?)(?=[.,!;]|$| (?:at|for|in|now|these days|"
            r"currently|full[- ]time|part[- ]time)\b)"
        ),
    ),
    ("name", MY_NAME_IS),
    ("name", NAME_INTRO),
    # "Don't call me Robert, I go by Bob" (it was "Don't call User Robert, User goes by Bob.")
    ("name", re.compile(r"\bI (?:usually |just |now |mostly )?go by " + _NAME + _NAME_ENDS)),
    # "I got married in June", "I got divorced in 2021": the status, the day kept
    (
        "relationship",
        re.compile(r"\b(?:I|[Ww]e) (?:just |recently |finally )?got (married|engaged|divorced)\b"),
    ),
    ("age", re.compile(r"\b(?:I'm|I am) (\d{1,3}) years? old\b")),
    # "I'm 29", a clause alone, or with "now", or a correction: "Actually I'm 34, not 33" (it
    # was a fact of its own, "User is 34, not 33.", beside the age it meant to correct)
    (
        "age",
        re.compile(
            r"^(?:I'm|I am|Im) (?:now |only |just )?(\d{1,3})(?: now| already)?"
            r"(?:,? not \d{1,3})?(?=\s*(?:[.!,;]|$))"
        ),
    ),
    ("age", re.compile(r"^I (?:just |recently |finally )?turned (\d{1,3})(?=\s*(?:[.!,;]|on |$))")),
    # "my birthday's on March 3rd", "my birthdays on june 12th" (its apostrophe left out)
    ("birthday", re.compile(r"\b[Mm]y birthday(?: is|s)? (?:on )?" + _DAY_OF_MONTH)),
    (
        "relationship",
        re.compile(
            r"\b(?:I'm|I am|[Ww]e're|[Ww]e are) (?:now |currently )?"
            r"(single|married|engaged|divorced|widowed)\b"
        ),
    ),
]
# The value runs to the sentence's end; an initial's period is part of it ("Ursula K. Le Guin").
_FAVORITE = re.compile(
    r"\b[Mm]y (favou?rite) ([a-z]+(?: [a-z]+)?) (is|are) ((?:\b[A-Z]\.(?= [A-Z])|[^.,!;])+)"
)
# Whom the user lives with, said with where ("I live in Manchester with my wife Sara"): the
# residence's own text is the place alone ("User lives in Manchester."), so this is a fact of its
# own ("User lives with their wife Sara."), which a move does not end. It was dropped.
LIVES_WITH = re.compile(
    r"\b(?:I|[Ww]e) (?:now |currently |still )?live in "
    + CITY
    + r"\s+with\s+((?:my|our)\s+(?:[\w'\-]+\s+){0,4}[\w'\-]+)(?=\s*[.,;!?]|\s*$)"
)
# The value said first: "Pizza is my favourite food", "Cats are my favorite animals" — the same
# slot, so "Sushi is my favourite food now" updates it (it was a fact of its own beside the
# pizza: two favourite foods). Written as said; only the sentence whole, a value of at most
# five words.
_LATELY = r"now|these days|at the moment|right now|ever|of all time"
_FAVORITE_FIRST = re.compile(
    r"^((?:[A-Za-z0-9'\-]+ ){0,4}[A-Za-z0-9'\-]+) (is|are) [Mm]y (favou?rite) "
    r"([a-z]+(?: (?!" + _LATELY + r")[a-z]+)?)(?: (?:" + _LATELY + r"))?[.!]*$"
)
_NOT_A_VALUE = {"it", "this", "that", "these", "those", "they", "he", "she", "what", "which", "who"}


# When a move happened, as said right after its place ("to Lisbon in 2019", "last week" resolved).
_WHEN_AFTER = re.compile(
    r"^\s*,?\s*((?:back )?(?:(?:in|on|since|during) (?:the (?:week|weekend) (?:of|before) )?"
    r"(?:\d{1,2} )?(?:[A-Z][a-z]+ )?\d{4}"
    # a month without its year too: "I moved to Berlin in March" (it was dropped)
    r"|(?:in|on) (?:\d{1,2} )?(?:" + "|".join(m.capitalize() for m in MONTHS) + r")))\b"
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
        if slot == "name" and not a_name(value):
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
            if (also := _ALSO_OCCUPATION.match(sentence[m.end() :])) and "occupation" not in found:
                text += also.group(0)
        elif slot == "occupation":
            text = f"{subject} works as a {value}"
            if (also := _ALSO_WORKPLACE.match(sentence[m.end() :])) and "workplace" not in found:
                text += also.group(0)
        elif slot == "name":
            text = f"{subject}'s name is {value}"
            if " go by " in m.group(0):
                text = f"{subject} goes by {value}"
        elif slot == "age":
            if not 0 < int(value) < 125:
                continue
            text = f"{subject} is {value} years old"
        elif slot == "birthday":
            value = re.sub(_MONTH_NAME, lambda m: m.group(0).capitalize(), value)
            text = f"{subject}'s birthday is on {value}"
        elif slot == "relationship" and " got " in m.group(0):
            after = sentence[m.end() :]
            when = _WHEN_AFTER.match(after)
            if after[when.end() if when else 0 :].strip(" .!?"):
                continue  # more was said ("… and moved to Leeds"): the sentence as said
            text = f"{subject} got {value}{' ' + when.group(1) if when else ''}"
        else:
            text = f"{subject} is {value}"
        found[slot] = (slot, value, text + ".")
    # each favourite its own: "My favorite color is blue, my favorite food is sushi"
    # (one slot whichever the spelling; the fact in the user's: "favourite band")
    for m in _FAVORITE.finditer(sentence):
        spelled, thing, be, value = m.group(1), m.group(2).lower(), m.group(3), m.group(4).strip()
        # as said: "My favourite films are Alien and Heat" (it was "… films is …")
        found.setdefault(
            f"favorite:{thing}",
            (f"favorite:{thing}", value, f"{subject}'s {spelled} {thing} {be} {value}."),
        )
    if (m := _FAVORITE_FIRST.match(sentence.strip())) and m.group(1).lower() not in _NOT_A_VALUE:
        value, be, spelled, thing = m.group(1), m.group(2), m.group(3), m.group(4).lower()
        found.setdefault(
            f"favorite:{thing}",
            (
                f"favorite:{thing}",
                value,
                f"{value[0].upper()}{value[1:]} {be} {subject}'s {spelled} {thing}.",
            ),
        )
    return list(found.values())
