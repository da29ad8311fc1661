"""Whether a sentence says a forgotten fact in other words (`without_forgotten`'s second test,
beside the extracted facts' own): "They mentioned a peanut allergy." after "User is allergic to
peanuts." was deleted scores 0.83 where a restatement must reach 0.92.

A sentence rewords a fact when, the user its subject, its vector is at least REWORDED from the
fact's and it shares one of the fact's words (by the word's first STEM letters: "peanut
allergy" / "allergic to peanuts"). Not when its subject is someone else: a relative or an
acquaintance of someone's ("Alice's friend is pregnant.", 0.908; "Her son ..."), or a name the
fact does not hold ("Bob is allergic to peanuts."). A leading "She", "He" or "They" is the
user's: a summary speaks of its user so ("She is employed as a nurse." 0.607 as written, 0.893
read as the user's).

Measured on bench/forgetting_rewordings.py (22 facts, 44 rewordings, 44 sentences sharing their
words; bench/bench_forgetting_rewordings.py): REWORDED chosen on the even facts, then read on the
odd ones, see bench/README.md.
"""

from __future__ import annotations

import re

import numpy as np

# The lowest similarity of a rewording on the tuning half that no unrelated sentence about the
# user reached: rewordings 0.758-0.971 ("Alice does not eat meat." / "... is vegetarian"), the
# user's other sentences sharing a word at most 0.749 ("Alice plans to visit Oslo in 2025." /
# "... moved to Oslo in 2024"), 0.745 ("asked for vegetarian recipes").
REWORDED = 0.75
STEM = 5  # "allergic" and "allergy", "peanut" and "peanuts", "diabetes" and "diabetic"

_PRONOUN = re.compile(r"^(?:she|he|they)\b", re.IGNORECASE)
_RELATION = (
    r"(?:friends?|sisters?|brothers?|mother|mum|mom|father|dad|sons?|daughters?|husband|wife|"
    r"partner|boss|colleagues?|co-?workers?|cousins?|grand(?:mother|father|parents)|"
    r"neighbou?rs?|room-?mates?|aunt|uncle|niece|nephew|child|children|kids|parents|family|"
    r"girlfriend|boyfriend|manager|teacher|doctor)"
)
# Someone's relative or acquaintance as the subject: "Alice's friend", "Her son", "My sister",
# "The user's mother", "Her neighbour's dog"
_SOMEONE_ELSES = re.compile(
    rf"^(?:(?:[\w-]+['’]s|her|his|their|my|our|your)\s+){_RELATION}\b"
    r"|^(?:her|his|their|my|our|your)\s+[\w-]+['’]s\b",
    re.IGNORECASE,
)
_NAMED = re.compile(r"^([A-Z][\w-]+)\s+(?:is|has|was|had|were|are)\b")
_WORD = re.compile(r"[a-z0-9]+")
# Words every fact is made of: a fact shares one of its other words with a rewording of it
_COMMON = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "of",
        "to",
        "in",
        "on",
        "at",
        "for",
        "with",
        "from",
        "by",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "am",
        "has",
        "have",
        "had",
        "do",
        "does",
        "did",
        "not",
        "no",
        "user",
        "s",
        "users",
        "they",
        "she",
        "he",
        "her",
        "his",
        "their",
        "them",
        "it",
        "its",
        "this",
        "that",
        "named",
        "called",
        "works",
        "work",
        "lives",
        "live",
        "likes",
        "like",
        "loves",
        "love",
        "plays",
        "play",
    ]
)


def as_the_users(sentence: str) -> str:
    """The sentence with a leading "She", "He" or "They" made "User"."""
    return _PRONOUN.sub("User", sentence.strip())


def _stems(text: str) -> set[str]:
    return {w[:STEM] for w in _WORD.findall(text.lower()) if w not in _COMMON}


def someone_else(sentence: str, subjects: frozenset[str]) -> str | None:
    """Who the sentence is about when it is not the user: "relative" (someone's), a name (the
    user's own names aside, `subjects` lower-cased), else None."""
    sentence = as_the_users(sentence)
    if (relative := _SOMEONE_ELSES.match(sentence)) is not None:
        return relative.group(0).lower()
    named = _NAMED.match(sentence)
    if named is None or named.group(1).lower() in subjects | {"user", "the"}:
        return None
    return named.group(1).lower()


def reworded(
    sentences: list[str],
    vectors: np.ndarray,
    known: list[str],
    known_vectors: np.ndarray,
    subjects: frozenset[str],
) -> np.ndarray:
    """sentences x known: whether each sentence (as written, its vector of its normalized text
    read as the user's) rewords each forgotten fact (normalized)."""
    similar = vectors @ known_vectors.T >= REWORDED
    out = np.zeros_like(similar)
    known_stems = [_stems(k) for k in known]
    known_words = [set(_WORD.findall(k)) for k in known]
    for i, sentence in enumerate(sentences):
        if not similar[i].any():
            continue
        who = someone_else(sentence, subjects)
        stems = _stems(sentence)
        for j in np.flatnonzero(similar[i]):
            # the fact's own person ("Anna is the user's sister.", "Alice's sister ..." of
            # "User's sister is called Anna.") is not someone else
            other = who is not None and not set(_WORD.findall(who)) & known_words[j]
            out[i, j] = not other and bool(stems & known_stems[j])
    return out
