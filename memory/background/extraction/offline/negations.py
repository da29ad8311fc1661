"""Negations and cessations: what the user says is no longer so, and which memory that
ends.
"""

from __future__ import annotations

import datetime as dt
import re

from memory.background.extraction.offline.dates import resolve_dates
from memory.background.extraction.offline.fact import Ends, Fact, content_words
from memory.background.extraction.offline.named import LEAD, RELATION
from memory.background.extraction.offline.patterns import CITY
from memory.background.extraction.offline.slots import slot_facts

# Said after what is denied, not part of it: "I don't have a cat anymore".
_TRAILING_ANYMORE = (
    "anymore", "any more", "any longer", "these days", "now", "though", "after all",
)  # fmt: skip
_ANOTHER_CLAUSE = re.compile(
    r",\s+(?=(?:I|I'm|I've|we|we're|the|my|our|it|it's|he|she|they|but|so)\b)", re.I
)
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
# "I left Deliveroo", "I quit Initech last week": a named employer left, the denied "I work at
# Deliveroo" (found trying Engram as a user: "Actually I left Deliveroo, I'm at Spotify now"
# left "User works at Deliveroo." standing beside it). A place left ("I left Paris") denies a
# workplace no slot holds; only a memory with both words ("User works at a bakery in Paris")
# would be ended by it.
_LEFT_EMPLOYER = re.compile(rf"^(?:I|We) {_SOFTENER}(?:quit|left|resigned from) " + CITY + r"$")
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
    rf"^(?:I|We) {_SOFTENER}(?:moved|relocated) (?:out of|away from) " + CITY + r"(?![\w'])"
)
# "My cat Mochi passed away", "We lost our dog Pepper": the user no longer has them — the
# denied "I have a cat Mochi" (found trying Engram as a user: "User has a cat named Mochi."
# stood beside the death told of it, both shown to the model). Named only: "My dog died" of a
# user with two dogs says not which.
_FOND = r"(?:(?:old|poor|sweet|beloved|dear|lovely|beautiful|dearest) )?"
_DIED = re.compile(
    rf"^{LEAD}?(?:[Mm]y|[Oo]ur) {_FOND}({RELATION}|[a-z]{{3,}}),? ([A-Z][a-z]+),? (?:\w+ )?"
    r"(?:passed away|passed on|died(?! (?:laughing|of (?:laughter|embarrassment|boredom|shame)))|"
    r"was put down|was put to sleep|crossed the rainbow bridge)\b"
)
_LOST = re.compile(
    rf"^{LEAD}?(?:I|[Ww]e) (?:\w+ )?lost (?:my|our) {_FOND}({RELATION}|[a-z]{{3,}}),? "
    r"([A-Z][a-z]+)\b"
)
# when it was said to have happened, after the employer ("I left Initech last week", resolved)
_WHEN_SAID = re.compile(
    r"\s+(?:on|in|last|this|a|two|three|few|several|\d+)\b.*$|\s+(?:yesterday|today|recently)$"
)
# A memory that itself denies something is not what a negation ends.
_DENIES = re.compile(r"\b(?:not|no longer|never|anymore|any more|quit|stopped|gave up)\b|n't\b")
_BE = re.compile(r"\b(?:is|are|am|was|were|been|being)\b")
_HAVE = re.compile(r"\b(?:has|have|had|having|got)\b")
_NAMED = re.compile(r"\b[A-Z][a-z]+\b")
_HAD = re.compile(r"\b(?:has|have|had|having|got|adopted|rescued)\b")


# "I sold my car", "We got rid of our old Honda": the user no longer has it, whatever the verb
# of the memory that says so ("User drives a 2015 Honda Civic.": words, not "has")
_SOLD = re.compile(
    rf"^{LEAD}?(?:I|[Ww]e) {_SOFTENER}(?:sold|gave away|got rid of|donated|traded in) "
    r"(?:my|our) (?:old |first |beloved )?((?:[a-z]+ ){0,2}[a-z]+|[A-Z][\w\-]*(?: [A-Z][\w\-]*)?)$"
)


def _sold(sentence: str) -> re.Match[str] | None:
    return _SOLD.match(_WHEN_SAID.sub("", sentence))


def _lost(sentence: str) -> re.Match[str] | None:
    """A death or loss of one of the user's, named: its relation, then its name."""
    return _DIED.match(sentence) or _LOST.match(sentence)


def _denied(sentence: str) -> tuple[str, bool, str | None] | None:
    """The first-person statement a negation or cessation denies, whether it is said in the
    past, and the kind of verb that ends it when the statement does not tell it ("lost" for a
    death, "" for what was sold: any verb); None for any other ("I quit my job at Acme" ->
    ("I work at Acme", True, None))."""
    # its first clause when another follows: "I'm not with Tom anymore, we split up" denies
    # "I'm with Tom" (the words of both were the denied statement's, and ended nothing)
    sentence = sentence.rstrip(" .!")
    if len((first := _ANOTHER_CLAUSE.split(sentence, maxsplit=1)[0]).split()) >= 3:
        sentence = first  # not after a word alone: "Unfortunately, my old dog Rex died"
    while tail := next((t for t in _TRAILING_ANYMORE if sentence.endswith(" " + t)), None):
        sentence = sentence[: -len(tail) - 1].rstrip(" ,")
    # "I quit my job last week"
    if m := _LEFT_JOB.match(_WHEN_SAID.sub("", sentence)):
        return (f"I work at {m.group(1)}" if m.group(1) else "I work"), True, None
    # its first clause: "I left Deliveroo, I'm at Spotify now"
    if m := _LEFT_EMPLOYER.match(_WHEN_SAID.sub("", sentence.partition(",")[0])):
        return f"I work at {m.group(1)}", True, None
    if m := _lost(sentence):
        return f"I have a {m.group(1).split()[-1]} {m.group(2)}", True, "lost"
    if m := _sold(sentence):
        return f"I have {m.group(1)}", True, ""
    if m := _MOVED_OUT.match(sentence):
        return f"I live in {m.group(1)}", True, None
    if m := _STOPPED.match(sentence):
        return f"{m.group(1)} {m.group(2)}", True, None
    if m := _DO_NOT.match(sentence):
        return f"{m.group(1)} {m.group(2)}", False, None
    if m := _AM_NOT.match(sentence):
        return f"{m.group(1)} {m.group(2)}", False, None
    return None


def denial(sentence: str, subject: str, today: dt.date) -> tuple[Ends | None, bool]:
    """What a negation or cessation in `sentence` ends, and whether it is said in the past;
    (None, False) for a sentence that denies nothing."""
    denied = _denied(sentence)
    if denied is None:
        return None, False
    said, past, kind = denied
    subject_word, _, predicate = said.partition(" ")
    verb = predicate.split()[0].lower() if predicate else ""
    if subject_word in ("I", "We") and verb in ("am", "are"):
        subject_word, predicate = "I'm", predicate.partition(" ")[2]
        verb = predicate.split()[0].lower() if predicate else ""
    # "I'm vegetarian" is ended in "User is vegetarian", not in "User loves vegetarian food";
    # in "I'm working at Initech" the "be" is the tense's ("User works at Initech"). A death's
    # or a sale's kind is the denial's own, read from the same clause.
    if kind is None and subject_word in ("I'm", "Im", "We're"):
        kind = "" if verb.endswith("ing") else "be"
    elif kind is None:
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
    if denied.verb == "lost":
        # of that one alone: "User has two cats, Luna and Leo." still has Leo
        names = set(_NAMED.findall(memory_text[len(subject) :]))
        return bool(_HAD.search(memory_text)) and names <= set(_NAMED.findall(denied.said))
    return True
