"""A sentence cut into the user's statements: "I live in Paris and I love jazz" is two, "I'm 29,
work in marketing, and live with my boyfriend" three, "I met my husband and my best friend at
college" one (a list's tail is no clause); an introduction, a role ("As a diabetic, I…") and
what is said of one the user named ("my son is 7 and he loves Lego") each their own.
"""

from __future__ import annotations

import re

from memory.background.extraction.offline.named import RELATION
from memory.background.extraction.offline.patterns import (
    BASE_IN_ED,
    LEAD_IN,
    MAX_WORDS,
    OPENER,
    PERIOD,
    SELF_SUBJECT,
    names_a_person,
)
from memory.background.extraction.offline.person import COMMON_VERBS, KEEP, conjugate
from memory.background.extraction.offline.requests import REQUEST, SELF, TEXT_TO_WORD
from memory.background.extraction.offline.slots import (
    AFTER_NAME,
    MY_NAME_IS,
    NAME_INTRO,
    slot_facts,
)

# "… and I …", also with a word of time between: "I sold my car and now I cycle to work" (the
# word dropped), "… and last summer I walked the Camino" (the period kept with its clause).
_CLAUSE = re.compile(
    r",?\s+(?:and|but|so|while)\s+"
    # a filler after "so" joins nothing: "I finished nursing school, so yeah im a nurse now"
    r"(?:(?:now|then|also|later|since then|these days|yeah|yea|anyway|basically),?\s+)?"
    rf"(?=(?:{PERIOD},?\s+)?{SELF_SUBJECT})|;\s+"
)

# Who the user is, then a comma and another statement of theirs: "I'm 52, I had a hip replaced
# two years ago" (heldout22: the age's slot took the sentence and the hip was lost), "I'm a
# nurse, I work nights". Only after an age or what the user is (a word that names a person):
# "I'm sure, I checked", "I'm sure with my hard work, I can…", "I love that film too, I even have
# the whole collection" and "When I was 10, I moved to Spain" are one statement each (LoCoMo's
# turns, split by a first version that cut at any ", I").
_SPLICED = re.compile(r",\s+(?=(?:I|I'm|I've|I'd|I'll)\s)")
_WHO_THEY_ARE = re.compile(r"^(?:I'm|I am) an? (?:[a-z\-]+ ){0,2}([a-z\-]+)$")


def _spliced(piece: str) -> list[str]:
    first, comma, rest = piece.partition(",")
    if not comma or not _SPLICED.match(piece, len(first)):
        return [piece]
    who = _WHO_THEY_ARE.match(first)
    if not (AGE_ALONE.match(first) or (who and names_a_person(who.group(1)))):
        return [piece]
    return [first, rest.strip()]


_AGED = re.compile(
    r"^(?:I'm|I am) an? (\d{1,3})[- ]years?[- ]old "
    # what the user is, in a word or two, and where or of what: "… nurse from Leeds", "… dad of
    # three", "… student in Toronto"
    r"([a-z][a-z\-]{2,30}(?: [a-z][a-z\-]{2,30})?"
    r"(?: (?:from|in|at|of|based in) (?:[A-Z][\w'\-]*|[a-z]+)(?: [A-Z][\w'\-]*){0,2})?)[.!]*$"
)


def clauses(sentence: str) -> list[str]:
    """'I live in Paris and I love jazz' -> two facts."""
    # without its opener: the "so" of "ok so I'm a nurse and I live in York" joins nothing
    said = OPENER.sub("", sentence)
    # "I'm Lena, I'm a vet": an introduction is a statement of its own, its name one slot
    name = NAME_INTRO.match(said) or MY_NAME_IS.match(said)
    if name and (rest := AFTER_NAME.match(said, name.end())):
        return [said[: name.end()], *_clauses(said[rest.end() :])]
    # "I'm a 32 year old accountant": the age, one slot, and what the user is
    if aged := _AGED.match(said):
        what = aged.group(2)
        return [f"I'm {aged.group(1)}.", f"I'm {'an' if what[0] in 'aeiou' else 'a'} {what}."]
    if pair := _said_of_them_too(said):
        return pair
    if role := _as_a_role(said):
        return role
    if origin := _origin_first(said):
        return origin
    return _clauses(sentence)


# "As a diabetic, I have to watch my carbs": who the user is, then what they do as one
# (heldout19 wrote "As a diabetic, User has to watch…", a fact that opens on no subject). Only
# for a word that names a person (patterns.names_a_person) and a statement in the present: "As
# a kid I loved Lego" says nothing of now; "As a result, I …", "As a reminder, I …" name no one.
_AS_A = re.compile(
    r"^[Aa]s (an?) ((?:[A-Za-z][a-z\-]{0,29} ){0,2}([A-Za-z][a-z\-]{0,29})),?\s+"
    r"(?=(?:I|I'm|I've|we|we're)\b)"
)
_NOW_MODALS = {"can", "can't", "cannot", "will", "won't", "would", "wouldn't", "should"}
_NOW_MODALS |= {"shouldn't", "must", "mustn't", "may", "might", "shall"}
_FIRST_VERB = re.compile(
    r"(?:I|we)\s+(?:(?:always|never|also|still|just|really|usually|often)\s+)?([a-z']+)"
)


def _as_a_role(said: str) -> list[str] | None:
    if not (m := _AS_A.match(said)):
        return None
    if not names_a_person(m.group(3)):
        return None
    rest = said[m.end() :]
    verb = _FIRST_VERB.match(rest)
    if verb and (
        (verb.group(1) in KEEP and verb.group(1) not in _NOW_MODALS)
        or (verb.group(1).endswith("ed") and verb.group(1) not in BASE_IN_ED)
    ):
        return None
    return [f"I'm {m.group(1)} {m.group(2)}.", *_clauses(rest)]


# "Originally from Manila, I've lived in Dubai for six years": where the user comes from, then
# the rest (heldout20 wrote "Originally from Manila, User has lived…", and "Born and raised in
# Ohio, I moved to Texas" only the move). A place's name only: "Born in a small town, I…" and
# "Originally I wanted to be a vet" stay as said.
_ORIGIN_FIRST = re.compile(
    r"^((?:[Oo]riginally|[Bb]orn and raised|[Bb]orn|[Rr]aised|[Gg]rew up) (?:from|in)"
    r" (?:the )?[A-Z][\w.'\u2019-]*(?: [A-Z][\w.'\u2019-]*){0,3}),?\s+"
    r"(?=(?:I|I'm|I've|we|we're|we've)\b)"
)
_ORIGIN_SAID = {"originally": "I'm", "born": "I was", "raised": "I was", "grew": "I"}


def _origin_first(said: str) -> list[str] | None:
    if not (m := _ORIGIN_FIRST.match(said)):
        return None
    origin = m.group(1)
    opener = _ORIGIN_SAID[origin.split()[0].lower()]
    return [f"{opener} {origin[0].lower()}{origin[1:]}.", *_clauses(said[m.end() :])]


_HE = "husband son dad father brother boyfriend grandpa grandfather uncle nephew fiance"
_SHE = "wife daughter mom mum mother sister girlfriend grandma grandmother aunt niece fiancee"
_EITHER = "partner boss friend cat dog kid child baby cousin roommate neighbor neighbour coworker"
_OWNER_NOUNS = {
    "he": set(_HE.split()) | set(_EITHER.split()),
    "she": set(_SHE.split()) | set(_EITHER.split()),
}
# any of them, the longest first ("grandmother" before "mother")
_OWNER_NOUN = "|".join(sorted(_OWNER_NOUNS["he"] | _OWNER_NOUNS["she"], key=len, reverse=True))
# "my son's name is Arjun and he's 7", "my boss is Karen and she micromanages everything": a
# second statement about the one the first named, written of them ("User's son is 7."), not
# kept inside the first ("… and he's 7." answered one fact of two). Only where the pronoun
# fits that one and no one else is named between ("my sister met a guy and he's a doctor").
_OF_THEM_TOO = re.compile(
    r"^((?:[Mm]y|[Oo]ur) (?:[a-z]+ )?("
    + _OWNER_NOUN
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
AGE_ALONE = re.compile(r"^(?:I'm|I am|Im) (?:now |only |just )?\d{1,3}(?: now| already)?[.!]?$")

# A verb after a comma that is an order, or no verb, starts no statement of the user's: "I
# have a dog, write a poem about him", "I've done a painting, take a look", "I want things
# we'll enjoy, like a walk in the park" (LoCoMo's turns).
_NOT_LISTED_WORDS = (
    "suggest recommend give tell show find send write draft generate list explain translate "
    "summarize summarise help make book remind take use go get do try keep bring buy follow "
    "listen share save fix plan watch read like"
)
_LISTED_VERBS = COMMON_VERBS - set(_NOT_LISTED_WORDS.split())
# "I'm 29, work in marketing, and live with my boyfriend": each verb after a comma is the
# user's too, a statement of its own ("I work in marketing"), where an object or a place
# follows it ("I teach, write and paint" stays whole).
_WHAT_FOLLOWS_A_VERB = (
    r"(?:a|an|the|my|some|in|on|at|with|for|from|as|every|two|three|several|our|alone|together|"
    r"abroad|remotely|nearby|downtown|full-time|part-time)\b"
)
_LISTED_VERB = re.compile(
    # "have" whatever follows, and a modal before a verb: "I'm 45, have bad knees, and can only
    # train 3 days a week" (it was "User is 45 years old." alone); not ", have been for years",
    # and the modal's verb a listed one (not "…, can you", "…, can't wait")
    rf",\s+(?:and\s+)?(?=([a-z]+) (?:{_WHAT_FOLLOWS_A_VERB}|[a-z]{{3,}}ing\b)"
    r"|have (?!been|done)[a-z]+|(?:can|can't|cannot|could|will|would|should|must) "
    r"(?:only |also |still |never |not |really )?([a-z]+)\b)"
)
# "I'm 29 and live alone in Brooklyn", "I'm married and have two kids": after what the user
# is, "and" a verb of theirs is a statement of its own too (it was "User is 29 and live alone
# in Brooklyn.", no age and no home); not in "I'm going to cook and bake", nor after a doing,
# nor where what follows "I'm" opens a clause of another's ("I'm sure people will … and love
# the book": LoCoMo's), in at most five words after it.
_BE_FIRST = re.compile(
    r"(?:I'm|I am) (?![a-z]+ing\b|(?:sure|glad|sorry|afraid|certain|hoping|so|gonna|about)\b)"
    r"(?:(?!\bto\b)[^ ,;]+ ?){1,5}$"
)
_VERB_AFTER_AND = re.compile(
    rf"\s+and\s+(?=([a-z]+) (?:{_WHAT_FOLLOWS_A_VERB}|[a-z]{{3,}}ing\b)|have (?!been|done)[a-z]+)"
)
# "I'm married", "I'm retired": what the user is stands in two words before "and" such a verb
# (not before another clause: "I'm vegan but my husband isn't" stays whole)
_STATE_ALONE = re.compile(r"^(?:I'm|I am) [a-z]{3,}$")
_AND_A_VERB = r"\s+and\s+[a-z]"


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
        if (m.group(1) or m.group(2) or "have") in _LISTED_VERBS
    ]
    if _DOING_FIRST.match(sentence):
        cuts += [(m.start(), m.end(), "I'm") for m in _LISTED_DOING.finditer(sentence)]
    cuts += [
        (m.start(), m.end(), "I")
        for m in _VERB_AFTER_AND.finditer(sentence)
        if (m.group(1) or "have") in _LISTED_VERBS and _BE_FIRST.match(sentence[: m.start()])
    ]
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


# "My partner Alex and I are going to Japan": one named by the user, then "and I", is a
# compound subject, no clause of its own (it was cut there: "User's partner Alex." and "User
# ares going to Japan.")
_NAMED_ONE = re.compile(rf"(?:[Mm]y|[Oo]ur) {RELATION} [A-Z][a-z]+")


# A later clause opening on one of the user's ("…, and my sister stayed home") holds a verb;
# without one it is the tail of a list, cut off: "I met my husband and my best friend at
# college" was "User met their husband." and "User's best friend at college.", "with my wife
# and our two kids (ages 5 and 8)" "User's two kids (ages 5 and 8)." — now kept whole.
_OWNED_OPENING = re.compile(r"(?:[Mm]y|[Oo]ur)\b")
_VERB_WORDS = COMMON_VERBS | {conjugate(verb) for verb in COMMON_VERBS}
_FINITE = re.compile(
    r"\b(?:is|are|was|were|has|have|had|do|does|did|will|would|can|could|should|must|might|"
    r"may|got|gets|goes|went|came|comes|made|took|left|saw|met|said|told|ran|ate|fell|grew|"
    r"knew|gave|found|won|lost|bought|sold|broke|became|began|kept|felt|feels|thinks|seems|looks|"
    r"[a-z]{3,}ed)\b|'(?:s|re|ve|ll|d)\b|n't\b"
)


def _holds_a_verb(part: str) -> bool:
    return bool(_FINITE.search(part)) or any(
        word in _VERB_WORDS for word in re.findall(r"[a-z]+", part)
    )


def _clauses(sentence: str) -> list[str]:
    said = OPENER.sub("", sentence)
    # what follows an order to word something is the text to word, no clause of the user's:
    # "Translate to French: I have two cats and I live in Paris." ("User lives in Paris.")
    if TEXT_TO_WORD.match(said):
        return [sentence]
    # after a label too: "quick background: I'm a product manager, live in Seattle…" (not an
    # order's: "summarize this: I joined…" is no statement)
    if not REQUEST.search(said):
        said = LEAD_IN.sub("", said)
    pieces = [q for p in _CLAUSE.split(said) if p for q in _spliced(p)]
    parts = [listed for p in pieces if p and p.strip() for listed in _listed_verbs(p.strip())]
    if len(parts) > 1 and _NAMED_ONE.fullmatch(parts[0]):
        parts = [f"{parts[0]} and {parts[1]}", *parts[2:]]
    # Only when each part is a statement of the user's own: "Dancing makes me so happy, and
    # now I get to share that" stays whole (its first part alone would be dropped, and its
    # second points back). An introduction stands in two words ("I'm Sam and I teach").
    each_stands = all(
        (
            len(p.split()) >= 3
            or NAME_INTRO.match(p)
            or AGE_ALONE.match(p)
            or (_STATE_ALONE.match(p) and re.search(re.escape(p) + _AND_A_VERB, said))
        )
        and SELF.search(p)
        for p in parts
    ) and all(_holds_a_verb(p) for p in parts[1:] if _OWNED_OPENING.match(p))
    # a first part of three words or more can have named what a later one points back at
    points_back = len(_WORDS.findall(parts[0])) >= 3 and any(
        _OBJECT_BEFORE.search(p) for p in parts[1:]
    )
    if not (each_stands and not points_back and not _turns(said, parts)):
        return [sentence]
    return [parts[0], *(_named_again(parts[0], p) for p in parts[1:])]


# "My mom lives in Manila and I visit her every Christmas": a later clause's "her" or "him" is
# the one the first clause opened with, when that one fits the pronoun (heldout18 wrote "User
# visits her every Christmas."): written "I visit my mom every Christmas", and "I love her
# cooking" "I love my mom's cooking" ("his" likewise). Another clause's pronoun ("she told me
# … but I don't believe her") is left as said.
_OPENS_WITH_OWNED = re.compile(
    rf"^((?:[Mm]y|[Oo]ur) (?:[a-z]+ )?({_OWNER_NOUN})(?: (?!My\b|Our\b)[A-Z][a-z]+)?)\b"
)
_OBJECT_PRONOUN = re.compile(
    r"\b(him|her)\b(?=\s*(?:[.!,;]|$|\s(?:every|each|on|at|in|for|with|about|to|from|a|the|"
    r"once|twice|sometimes|often|again|too|more|less|all|whenever|when|because|so|and|but)\b))"
)
_OWNING_PRONOUN = re.compile(r"\b(?:her|his)\b(?=\s[a-z])")
_PRONOUN_OF = {"him": "he", "his": "he", "her": "she"}
_THIRD_PERSON = re.compile(r"\b(?:him|his|her)\b")


def _named_again(first: str, later: str) -> str:
    if not (m := _OPENS_WITH_OWNED.match(first)):
        return later
    owner, noun = m.group(1), m.group(2)
    fits = {p for p in ("he", "she") if noun in _OWNER_NOUNS[p]}
    found = {_PRONOUN_OF[w] for w in _THIRD_PERSON.findall(later)}
    if len(found) != 1 or not found <= fits:
        return later
    owner = owner[0].lower() + owner[1:]
    return _OWNING_PRONOUN.sub(f"{owner}'s", _OBJECT_PRONOUN.sub(owner, later))


# A later clause that ends what the first said, or turns from it to now, says it only with it
# ("I used to smoke but I quit when my daughter was born" wrote "User used to smoke." and "User
# quits when…", what was quit lost; "I was a vegetarian for years, but now I eat chicken again":
# heldout17): the change is one fact. Not a later clause that sets a slot ("I used to live in
# Rome but now I live in Madrid": the residence is its own, superseding the older one).
_BUT_NOW = re.compile(r"\bbut,?\s+(?:now|nowadays|these days)\b", re.I)
_CEASED = re.compile(
    r"^(?:I|we)\s+(?:finally\s+|eventually\s+|then\s+)?(?:quit|stopped|gave up)"
    r"(?:\s+(?:in|on|at|when|after|before|because|since|last|this|about|around|years|months|"
    r"weeks|a|\d+|one|two|three|four|five|six|seven|eight|nine|ten|few|several|ages|"
    r"recently|yesterday|today)\b[^,;]*)?[.!]*$",
    re.I,
)


def _turns(said: str, parts: list[str]) -> bool:
    if len(parts) < 2 or not (_BUT_NOW.search(said) or any(_CEASED.match(p) for p in parts[1:])):
        return False
    return not any(slot_facts(p, "User") for p in parts[1:])


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
