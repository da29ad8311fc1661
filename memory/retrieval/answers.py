"""What kind of answer a question asks for, and whether a candidate holds one of that kind.

A question that asks when, how many, where, or for a name or a title is answered by a text
that holds a time, a number, a place or a name: question answering's answer type. Neither the
vectors nor the words see it — "Which cities has John been to?" shares nothing with "We spent
a week in Rome" but the city. The re-ranking (memory.retrieval.late) adds a weight for each
kind the question asks that the candidate's own text holds; the weights are the same logistic
regression's as the token match's (bench/probe_answer_type.py): fitted on four of LoCoMo's dev
conversations and scored on the fifth, R@10 81.9 -> 82.5 held out, every fold the same or
better (84.3 / 82.7 / 84.9 / 77.5 / 83.2 against 83.6 / 82.7 / 84.3 / 77.1 / 81.9), multi-hop
53.5 -> 56.3; the cue lists were written before any figure was read.

A place and a name are both read as a capitalised word that does not open a sentence and is
not a name already known: the speakers', the subject's ("User") and the question's own (the
answer is a name the question does not give).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from memory.words import MONTHS, WEEKDAYS

ASKS = {
    "time": re.compile(r"^\s*when\b|\bwhat (year|month|date|day|time)\b|\bhow long ago\b", re.I),
    "number": re.compile(r"\bhow (many|much|often|long)\b", re.I),
    "place": re.compile(
        r"^\s*where\b|\b(city|cities|country|countries|state|states|place|places|location"
        r"|locations|geographical|area|areas)\b",
        re.I,
    ),
    "name": re.compile(
        r"\bname|^\s*who\b|\b(book|books|movie|movies|film|films|game|games|band|bands|artist"
        r"|artists|series|show|shows|song|songs|author|authors|title|brand|company)\b",
        re.I,
    ),
}
# The fit's weight of each kind asked and held, in the blended score's units (late's constants
# come from the same fit, on all five conversations).
WEIGHTS = {"time": 0.281, "number": 0.494, "place": 0.576, "name": 0.430}

_TIME = re.compile(
    rf"\b({'|'.join(MONTHS)}|{'|'.join(WEEKDAYS)}|yesterday|today|tonight|tomorrow|ago|weekend|(19|20)\d\d"
    r"|(last|next|this|past) (week|month|year|night|summer|winter|spring|fall|weekend|morning))\b",
    re.I,
)
_NUMBER = re.compile(
    r"\b(\d+|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|dozen"
    r"|hundred|thousand|first|second|third|twice|once)\b",
    re.I,
)
_WORD = re.compile(r"[A-Za-z][\w'’-]*")
_CAPITALISED = re.compile(r"\b[A-Z][\w'’-]*")
_POSSESSIVE = re.compile(r"['’]")
_NOT_NAMES = frozenset(
    {"I", "I'm", "I've", "I'll", "I'd", "OK", "Hey", "Hi", "Wow", "Thanks", "Yeah"}
    | {"User", "Assistant"}  # memory.text.speaker_label's, a memory's subject
)
# A candidate's text is read this far: a pasted document's thousandth capital says nothing of
# what a turn answers, and one of 100,000 characters took 31 ms to read whole (a capital opening
# every sentence); 40 candidates of LoCoMo's turns take ~0.7 ms, 40 of 2,000 such characters 11.
READ_CHARACTERS = 2_000


def asked(question: str) -> tuple[str, ...]:
    """The kinds of answer the question asks for (none, one or several)."""
    return tuple(kind for kind, cue in ASKS.items() if cue.search(question))


def known_names(question: str, speakers: Iterable[str]) -> frozenset[str]:
    """Names that are no answer: the speakers' and the question's own capitalised words."""
    names = {s for s in speakers if s}
    names.update(_stem(w) for w in _CAPITALISED.findall(question))
    return frozenset(names)


def lift(kinds_held: tuple[str, ...]) -> float:
    """The re-ranking's lift for the kinds asked that a candidate holds (`held`'s)."""
    return sum(WEIGHTS[kind] for kind in kinds_held)


def held(kinds: tuple[str, ...], text: str, known: frozenset[str]) -> tuple[str, ...]:
    """Which of the kinds asked the text holds (its first READ_CHARACTERS)."""
    if not kinds:
        return ()
    text = text[:READ_CHARACTERS]
    nouns: bool | None = None
    found = []
    for kind in kinds:
        if kind == "time":
            holds = bool(_TIME.search(text))
        elif kind == "number":
            holds = bool(_NUMBER.search(text))
        else:
            if nouns is None:
                nouns = _holds_a_name(text, known)
            holds = nouns
        if holds:
            found.append(kind)
    return tuple(found)


def _holds_a_name(text: str, known: frozenset[str]) -> bool:
    return any(
        word[0].isupper()
        and word not in _NOT_NAMES
        and _stem(word) not in known
        and not _opens_sentence(text, m.start())
        for m in _WORD.finditer(text)
        for word in (m.group(),)
    )


def _stem(word: str) -> str:
    """A name without its possessive: "John's" is John."""
    return _POSSESSIVE.split(word, maxsplit=1)[0]


def _opens_sentence(text: str, start: int) -> bool:
    """Whether the word at `start` opens a sentence: the text's first, or after a sentence's
    end and a space, or after an opening quote or parenthesis."""
    i = start
    while i > 0 and text[i - 1].isspace():
        i -= 1
    if i == 0:
        return True
    before = text[i - 1]
    return before in '"“(' or (before in ".!?" and i < start)
