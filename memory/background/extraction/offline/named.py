"""Someone the user has told of by name, later named alone: after "I have a dog named Pepper",
"Pepper hates thunderstorms" is about the user's dog and written "User's dog Pepper hates
thunderstorms." (it wrote nothing: a sentence about another is no statement of the user's).

Who is whose is read from facts, in the third person — the user's stored memories and the facts
of the messages before — by `told` into a `Known` (a subject's names, each with its relation),
and a sentence that opens on one of those names is said again as the user would have said it
in full (`said_in_full`: "My dog Pepper hates thunderstorms."), for the rest of the extractor.
"""

from __future__ import annotations

import functools
import re

from memory.background.extraction.offline.patterns import OPENER
from memory.background.extraction.offline.person import COMMON_VERBS
from memory.background.extraction.offline.slots import a_name
from memory.words import FUNCTION_WORDS, MONTHS, PERSONAL_PRONOUNS, WEEKDAYS

# Whom one tells of as one's own and by name: people and pets.
RELATIONS = {
    "wife", "husband", "partner", "spouse", "fiance", "fiancee", "fiancé", "fiancée",
    "girlfriend", "boyfriend", "son", "daughter", "kid", "child", "baby", "mom", "mum", "mother",
    "dad", "father", "brother", "sister", "sibling", "twin", "friend", "bestie", "boss",
    "manager", "colleague", "coworker", "roommate", "flatmate", "housemate", "neighbour",
    "neighbor", "grandma", "grandmother", "grandpa", "grandfather", "granny", "aunt", "uncle",
    "cousin", "niece", "nephew", "stepson", "stepdaughter", "stepmom", "stepdad",
    "dog", "cat", "puppy", "kitten", "pup", "pet", "rabbit", "bunny", "hamster", "parrot",
    "ferret", "horse", "pony", "bird", "turtle", "tortoise", "snake", "lizard", "fish", "budgie",
    "cockatiel", "gerbil", "girl", "boy",
}  # fmt: skip
RELATION = r"(?:(?:best|little|big|older|younger|baby|late|eldest|youngest) )?(?:{})".format(
    "|".join(sorted(RELATIONS, key=len, reverse=True))
)
_NAME = r"([A-Z][a-z]{1,20})"
_NOT_NAMES = (
    FUNCTION_WORDS
    | PERSONAL_PRONOUNS
    | set(MONTHS)
    | set(WEEKDAYS)
    | {"user", "mom", "mum", "dad", "god", "christmas", "easter"}
)


# "two cats", "three kids": each one's relation is the word's singular
_SINGULAR = {"children": "child", "puppies": "puppy", "bunnies": "bunny", "grannies": "granny"}
_SINGULAR |= {"year old": "kid", "year-old": "kid"}
_SINGULAR |= {
    word + ("es" if word.endswith(("s", "sh", "ch")) else "s"): word for word in RELATIONS
}
_RELATIONS_OF_A_COUNT = "|".join(sorted(_SINGULAR, key=len, reverse=True))


@functools.lru_cache(maxsize=256)
def _told_by(subject: str) -> re.Pattern[str]:
    """A fact of `subject`'s that names one of theirs or more: "Sam's dog Pepper", "Sam and
    their partner Alex", "Sam has a cat named Mochi", "Sam's husband's name is Tom", "Sam has
    a son, Max", "Sam has a baby girl now, her name is Rose", "Sam has two cats, Luna and
    Leo", "Sam adopted a rescue greyhound named Bolt". Its groups: the relation, then names."""
    who = re.escape(subject)
    has = rf"^{who} (?:\w+ ){{0,2}}(?:has|had|got|adopted|rescued|bought|gets|is getting)"
    return re.compile(
        rf"\b{who}'s ({RELATION}),? {_NAME}\b"
        rf"|\b{who}'s ({RELATION})(?:'s)? name is {_NAME}\b"
        # "Sam's dog is called Max", "Sam's dog is a 10 year old beagle called Max"
        rf"|\b{who}'s ({RELATION}) is (?:(?:a|an) [^.,;]{{0,40}}? )?(?:named|called) {_NAME}\b"
        rf"|^{who}\b.*?\btheir ({RELATION}),? {_NAME}\b"
        rf"|{has} (?:a|an|one|their) (?:[a-z]+ )??({RELATION}),? (?:named |called )?{_NAME}\b"
        # "a 3 year old named Noah": a child
        rf"|{has} (?:a|an) \d{{1,2}}[- ](year[- ]old),? (?:named |called )?{_NAME}\b"
        # whatever one has and names is one's own: "a rescue greyhound named Bolt", "a boat
        # called Serenity" (Bolt was no one's: "Bolt is super shy" wrote nothing)
        rf"|{has} (?:a|an|one|their) (?:[a-z]+ ){{0,2}}?([a-z]{{3,}}),? (?:named|called) {_NAME}\b"
        rf"|{has} (?:a|an|one|their) (?:[a-z]+ )??({RELATION})\b[^.,;]{{0,50}}, "
        rf"(?:(?:his|her|its|their) name is|(?:he|she|it|they)(?:'s| is| are) (?:called|named)) "
        rf"{_NAME}\b"
        rf"|{has} (?:two|three|four|five|\d) (?:[a-z]+ )?({_RELATIONS_OF_A_COUNT}),? "
        rf"(?:named |called )?{_NAME}(?:, {_NAME})?,? and {_NAME}\b"
    )


# A sentence opening on a name (after an opener: "Oh, Pepper…"), then a verb of what it does:
# "Pepper hates", "Mochi passed", "Pepper's been", "Alex got"; not one spoken to ("Pepper,
# sit!"), a list ("Pepper and…") or a word that opens a remark ("Thanks for", "Awesome job",
# "Congrats on": 400 words of LoCoMo's openings, of which a name read before each lone turn's
# extraction cost a statement over the user's memories, 22.5 -> 56 ms a job at 2,000 of them).
_DOES = (
    r"(?:'s|'ll|'d|[a-z]{2,}(?:s|ed)|is|was|has|had|got|gets|can|could|will|would|did|does|"
    r"just|never|always|finally|still|really|also|ran|went|came|made|took|left|ate|fell|bit|"
    r"broke|won|lost|drew|grew|threw|sat|slept|woke|met|saw|told|said|bought|caught|flew|"
    r"swam|kept|became|began|chose|wrote|knew|gave|found)\b"
)
_OPENS_ON_A_NAME = re.compile(rf"^{_NAME}(?=(?:'s|'ll|'d)\b| {_DOES})")
# A word of feeling or of when before the name, kept: "Sadly, Mochi passed away", "Last night
# Pepper…" (said so, the name was not read: the user's cat's death wrote nothing).
LEAD = (
    r"(?:(?:[Ss]adly|[Uu]nfortunately|[Tt]ragically|[Ll]uckily|[Tt]hankfully|[Yy]esterday|"
    r"[Tt]oday|[Tt]onight|[Ll]ast (?:night|week|weekend)|[Tt]his (?:morning|afternoon|evening)|"
    r"[Ee]arlier today|[Oo]ver the weekend),? )"
)
_LEAD = re.compile(LEAD)


def _opening(sentence: str) -> tuple[str, str]:
    """A sentence's word of feeling or of when, if any, and the rest after it (and after
    an opener: "Oh, Pepper…")."""
    said = OPENER.sub("", sentence)
    lead = m.group(0) if (m := _LEAD.match(said)) else ""
    return lead, said[len(lead) :]


class Known:
    """The names a user's subject has told of, each with its relation ("Pepper" -> "dog"),
    per subject: in a conversation of two people, one's dog is not the other's."""

    __slots__ = ("_of",)

    def __init__(self) -> None:
        self._of: dict[str, dict[str, str]] = {}

    def told(self, subject: str, text: str) -> None:
        """Learn the names `text` (a fact of `subject`'s, in the third person) tells of."""
        if not text.startswith(subject) and f"{subject}'s " not in text:
            return
        for m in _told_by(subject).finditer(text[:500]):
            relation, *names = [group for group in m.groups() if group]  # one alternative's
            for name in names:
                if name.lower() not in _NOT_NAMES:
                    self._of.setdefault(subject, {})[name] = _SINGULAR.get(relation, relation)

    def said_in_full(self, sentence: str, subject: str) -> str:
        """`sentence` as the user would have said it in full, when it opens on one of theirs
        named alone: "Pepper hates thunderstorms." -> "My dog Pepper hates thunderstorms."."""
        names = self._of.get(subject)
        if not names:
            return sentence
        lead, said = _opening(sentence)
        if (m := _OPENS_ON_A_NAME.match(said)) and (relation := names.get(m.group(1))):
            return f"{lead}{'my' if lead else 'My'} {relation} {said}"
        return sentence


# Capitalised words that open a chat's sentences and are no one's name (LoCoMo's, mostly): not
# looked up. Only the cost depends on them — a name is read as one's own only if a memory told
# of it — so a word missing here costs a look-up that finds nothing.
_OPENING_WORDS = {
    "also", "just", "really", "maybe", "never", "even", "much", "mostly", "here", "there",
    "what", "when", "where", "which", "while", "who", "why", "how", "some", "any", "anything",
    "everything", "everyone", "someone", "something", "nothing", "one", "mine", "plus", "let",
    "thank", "thanks", "good", "great", "nice", "cool", "love", "loved", "made", "met", "read",
    "take", "stay", "check", "sounds", "looks", "tomorrow", "yesterday", "today", "tonight",
    "lots", "tons", "super", "little", "big", "small", "life", "time", "family", "art", "music",
    "nature", "movies", "books", "pets", "success", "progress", "quality", "rest", "words",
    "gotta", "not", "wow", "awesome", "congrats", "congratulations", "cute", "crazy", "tough",
    "epic", "interesting", "exciting", "difficult", "positive", "competitive", "seven", "three",
    "two", "four", "five", "six", "eight", "nine", "ten", "both", "each", "every", "all",
}  # fmt: skip


def _maybe_a_name(word: str) -> bool:
    low = word.lower()
    return not (
        low in _NOT_NAMES
        or low in _OPENING_WORDS
        or low in COMMON_VERBS
        or low.endswith(("ing", "ly"))
        or not a_name(word)
    )


def names_opening(text: str) -> set[str]:
    """The words a message's sentences open on that may be names (only those are looked up
    among the user's memories): 54 of LoCoMo's 2,760 turns have one."""
    return {
        m.group(1)
        for line in re.split(r"(?<=[.!?\n])\s+", text[:20_000])
        if (m := _OPENS_ON_A_NAME.match(_opening(line.strip())[1])) and _maybe_a_name(m.group(1))
    }
