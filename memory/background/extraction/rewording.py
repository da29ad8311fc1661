"""Whether a sentence says a forgotten fact in other words (`without_forgotten`'s second test,
beside the extracted facts' own): "They mentioned a peanut allergy." after "User is allergic to
peanuts." was deleted scores 0.83 where a restatement must reach 0.92.

A sentence rewords a fact when, the user its subject, its vector is at least REWORDED from the
fact's and it shares one of the fact's words (by the word's first STEM letters: "peanut
allergy" / "allergic to peanuts"); when the words shared are only names, it must also name the
fact's relation, if either names one ("Tom is the user's husband." of "User is married to
Tom."; not "Alice is friends with Tom.", 0.797). Not when its subject is someone else: a
relative or an acquaintance ("Alice's friend is pregnant.", 0.908; "Her son ..."), unless the
user's of the fact's relation ("Alice's husband is Tom."), or a name the fact does not hold
("Bob is allergic to peanuts."). A leading "She", "He" or "They" is the user's: a summary speaks
of its user so ("She is employed as a nurse." 0.607 as written, 0.893 read as the user's);
unless the sentence or clause before it is someone else's ("Her sister Mia visited. She is
allergic to peanuts.": read_in_turn).

Measured on bench/forgetting_rewordings.py (26 facts, 53 rewordings, 54 sentences sharing their
words; bench/bench_forgetting_rewordings.py): REWORDED chosen on the even facts, then read on the
odd ones, see bench/README.md. The relation rule and read_in_turn were written for defects
seen on both halves (the held-out "married to Tom" among them), not tuned on either.
"""

from __future__ import annotations

import re

import numpy as np

from memory.words import FUNCTION_WORDS, PERSONAL_PRONOUNS

# The lowest similarity of a rewording on the tuning half that no unrelated sentence about the
# user reached: rewordings 0.758-0.971 ("Alice does not eat meat." / "... is vegetarian"), the
# user's other sentences sharing a word at most 0.749 ("Alice plans to visit Oslo in 2025." /
# "... moved to Oslo in 2024"), 0.745 ("asked for vegetarian recipes").
REWORDED = 0.75
STEM = 5  # "allergic" and "allergy", "peanut" and "peanuts", "diabetes" and "diabetic"

_PRONOUN = re.compile(r"^(she|he|they)\b", re.IGNORECASE)
# Relations between people, by kind: a sentence and a fact that name one person say one thing
# only through the same kind ("Tom is the user's husband." says "User is married to Tom.";
# "Alice is friends with Tom." does not, 0.797). A partner is one kind (married, dating), as
# are a parent and a child (a mother of two has children).
_KINDS = {
    "partner": "husband husbands wife wives spouse spouses boyfriend girlfriend partner partners "
    "fiance fiancee",
    "friend": "friend friends",
    "sibling": "sister sisters brother brothers sibling siblings",
    "parent": "mother mum mom father dad parent parents son sons daughter daughters child "
    "children kids",
    "colleague": "colleague colleagues coworker coworkers co-worker co-workers boss manager",
    "cousin": "cousin cousins",
    "grandparent": "grandmother grandfather grandparents grandma grandpa",
    "neighbour": "neighbour neighbours neighbor neighbors",
    "roommate": "roommate roommates room-mate room-mates flatmate flatmates",
    "relative": "aunt uncle niece nephew family",
    "teacher": "teacher",
    "doctor": "doctor",
}
# ...and the words that say one without naming the person ("married to Tom")
_SAID = {
    "partner": "married marry marriage dating dated dates relationship engaged",
    "friend": "friendship",
}
_KIND = {
    word: kind
    for kinds in (_KINDS, _SAID)
    for kind, words in kinds.items()
    for word in words.split()
}
_PEOPLE = sorted((w for words in _KINDS.values() for w in words.split()), key=len, reverse=True)
_RELATION = "(?:" + "|".join(map(re.escape, _PEOPLE)) + ")"
# a pronoun is not a relative of the other gender's ("Her brother Jon visited. She ...": hers)
_MALE = frozenset(
    [
        "husband",
        "husbands",
        "boyfriend",
        "brother",
        "brothers",
        "father",
        "dad",
        "son",
        "sons",
        "grandfather",
        "grandpa",
        "uncle",
        "nephew",
        "fiance",
    ]
)
_FEMALE = frozenset(
    [
        "wife",
        "wives",
        "girlfriend",
        "sister",
        "sisters",
        "mother",
        "mum",
        "mom",
        "daughter",
        "daughters",
        "grandmother",
        "grandma",
        "aunt",
        "niece",
        "fiancee",
    ]
)
# Someone's relative or acquaintance as the subject, and their name if it follows: "Alice's
# friend", "Her son", "My sister", "The user's mother", "Her neighbour's dog", "Her sister Mia"
_SOMEONE_ELSES = re.compile(
    rf"^(?:the\s+)?(?:(?:[\w-]+['’]s|her|his|their|my|our|your)\s+){_RELATION}\b"
    r"|^(?:her|his|their|my|our|your)\s+[\w-]+['’]s\b",
    re.IGNORECASE,
)
_AND_NAME = re.compile(r",?\s+([A-Z][\w-]+)\b")
# Whose relative: the user's when they are named, or called "her", "his", "their" (as "She"
# is the user), or "my" (the user's own words)
_USERS = frozenset({"user", "her", "his", "their", "my"})
_NAMED = re.compile(r"^([A-Z][\w-]+)\s+(?:is|has|was|had|were|are)\b")
_WORD = re.compile(r"[a-z0-9]+")
# Words every fact is made of: a fact shares one of its other words with a rewording of it (a
# summary's: its pronouns, "User", negation, and the verbs of the extractor's facts)
_COMMON = (
    FUNCTION_WORDS
    | PERSONAL_PRONOUNS
    | {"user", "users", "s", "am", "being", "not", "no", "named", "called"}
    | {"works", "work", "lives", "live", "likes", "like", "loves", "love", "plays", "play"}
)


def as_the_users(sentence: str) -> str:
    """The sentence with a leading "She", "He" or "They" made "User"."""
    return _PRONOUN.sub("User", sentence.strip())


def read_in_turn(sentences: list[str], subjects: frozenset[str]) -> list[str]:
    """A line's sentences (or clauses) in order, each with a leading "She", "He" or "They" made
    whom it names: the previous one's subject when that is someone else ("Her sister Mia
    visited. She is allergic to peanuts." is Mia's allergy) and may be called so (not "she" for
    a brother), else the user (as_the_users)."""
    out = []
    previous: str | None = None
    for sentence in sentences:
        sentence = sentence.strip()
        if (pronoun := _PRONOUN.match(sentence)) is not None:
            who = previous if previous and _called(pronoun.group(1), previous) else "User"
            sentence = who + sentence[pronoun.end() :]
        out.append(sentence)
        previous = _subject(sentence, subjects)
    return out


# A capitalized first word that names no one: a pronoun resolves past it to the user
_NOT_NAMES = frozenset(
    [
        "yesterday",
        "today",
        "tomorrow",
        "later",
        "then",
        "now",
        "recently",
        "also",
        "last",
        "next",
        "after",
        "before",
        "during",
        "when",
        "while",
        "since",
        "meanwhile",
        "there",
        "here",
        "what",
    ]
)
_LEADING_NAME = re.compile(r"^([A-Z][\w-]+)\s+[a-z]")


def _subject(sentence: str, subjects: frozenset[str]) -> str | None:
    """The sentence's subject as written when it is someone else (a relative, with the name that
    follows; a name), and the rest of the sentence does not name the user ("Dairy upsets
    Alice's stomach; she ..." is hers)."""
    if (relative := _SOMEONE_ELSES.match(sentence)) is not None:
        end = relative.end()
        if (name := _AND_NAME.match(sentence, end)) and name.group(1).lower() not in _COMMON:
            end = name.end()
    elif (named := _LEADING_NAME.match(sentence)) is not None:
        if named.group(1).lower() in subjects | _COMMON | _NOT_NAMES:
            return None
        end = named.end(1)
    else:
        return None
    users = {"user", *(w for subject in subjects for w in _WORD.findall(subject))}
    if users & set(_WORD.findall(sentence[end:].lower())):
        return None
    return sentence[:end]


def _called(pronoun: str, someone: str) -> bool:
    words = set(_WORD.findall(someone.lower()))
    pronoun = pronoun.lower()
    return not (pronoun == "she" and words & _MALE or pronoun == "he" and words & _FEMALE)


def _stems(text: str) -> set[str]:
    return {w[:STEM] for w in _WORD.findall(text.lower()) if w not in _COMMON}


def _names(sentence: str) -> set[str]:
    """The stems of the sentence's capitalized words (a sentence's first word too: "Tom is")."""
    return {w.lower()[:STEM] for w in re.findall(r"\b[A-Z][\w-]*", sentence)} - _COMMON


def _kinds(text: str) -> set[str]:
    return {_KIND[w] for w in _WORD.findall(text.lower()) if w in _KIND}


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


def _the_facts(who: str, words: set[str], kinds: set[str], subjects: frozenset[str]) -> bool:
    """Whether someone_else's `who` is the person of the fact (its `words` and relation
    `kinds`): a name it holds ("Anna is the user's sister."), or the user's relative of the kind
    it names ("Alice's husband is Tom." of "User is married to Tom.")."""
    said = _WORD.findall(who)
    relations = [w for w in said if w in _KIND]
    if not relations:
        return bool(set(said) & words)
    owner = said[1] if said[0] == "the" else said[0]
    mine = owner in subjects or owner in _USERS
    return mine and any(w in words or _KIND[w] in kinds for w in relations)


def reworded(
    sentences: list[str],
    vectors: np.ndarray,
    known: list[str],
    known_vectors: np.ndarray,
    subjects: frozenset[str],
) -> np.ndarray:
    """sentences x known: whether each sentence (as written, read_in_turn; its vector of its
    normalized text read as the user's) rewords each forgotten fact (normalized)."""
    similar = vectors @ known_vectors.T >= REWORDED
    out = np.zeros_like(similar)
    known_stems = [_stems(k) for k in known]
    known_words = [set(_WORD.findall(k)) - _COMMON for k in known]
    known_kinds = [_kinds(k) for k in known]
    for i, sentence in enumerate(sentences):
        if not similar[i].any():
            continue
        who = someone_else(sentence, subjects)
        stems, names, kinds = _stems(sentence), _names(sentence), _kinds(sentence)
        for j in np.flatnonzero(similar[i]):
            if who is not None and not _the_facts(who, known_words[j], known_kinds[j], subjects):
                continue
            shared = stems & known_stems[j]
            # a name shared says the fact only through the same relation, or with none on
            # either side ("Alice is based in Berlin."): "Alice is friends with Tom." is not
            # "User is married to Tom."
            if shared <= names and (kinds or known_kinds[j]) and not kinds & known_kinds[j]:
                continue
            out[i, j] = bool(shared)
    return out
