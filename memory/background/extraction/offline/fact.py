"""What the extractor yields (a Fact, and what a negation Ends), and when two facts say the
same.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from memory.words import FUNCTION_WORDS


@dataclass(frozen=True)
class Ends:
    """What a negation or cessation says is no longer so ("I no longer live in Paris"): the
    statement it denies, as its content words (`words`) and the kind of its verb ("be", "have",
    "lost" — had, and lost by a death — or ""), and, when that statement fills a slot, the slot
    and its value ("" when any value: "I quit my job")."""

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
