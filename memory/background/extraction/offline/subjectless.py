"""Statements with the subject left out ("started learning korean last month", "been
vegan since 2019"), given back their "I"; and statements of what moves the user ("Heights freak
me out"), said with the user first.
"""

from __future__ import annotations

import re

from memory.background.extraction.offline.patterns import BASE_IN_ED, OPENER, names_a_person
from memory.background.extraction.offline.person import KEEP, conjugate, is_adverb

# A chat message often drops its "I": a sentence that opens on a past form ("started…", "got
# promoted…"), "been", a doing ("living in Brooklyn") or one of these present verbs, which are
# seldom an order to the assistant ("work at a bakery on weekends", "hate cilantro"; not "write",
# "play", "make", "have": "have a nice day" is a wish).
_SUBJECTLESS_PRESENT_WORDS = (
    "work live love hate enjoy prefer own speak teach study volunteer commute rent"
)
_SUBJECTLESS_PRESENT = set(_SUBJECTLESS_PRESENT_WORDS.split())
# "-ed" words that say how one feels, not what one did: "tired of this" is no "I tired of this".
_FEELING_ED_WORDS = (
    "tired bored excited worried scared stressed annoyed confused interested obsessed "
    "exhausted pissed amazed shocked surprised disappointed embarrassed frustrated relieved "
    "thrilled stoked impressed convinced ashamed blessed"
)
_FEELING_ED = set(_FEELING_ED_WORDS.split())
# a state said with "be": "married with two kids", "based in Leeds" -> "I'm …"
_STATE_ED = {"married", "engaged", "divorced", "based", "located", "retired", "employed"}
# A doing said without "I'm" ("living in Brooklyn rn", "still working on my thesis"): these
# verbs only, since many more open a sentence as its subject or a remark ("Knowing another
# language opens doors", "Speaking of which", "Exciting times ahead": LoCoMo's turns).
_SUBJECTLESS_DOING_WORDS = """
    living working learning studying training moving planning trying looking heading staying
    getting going doing reading watching taking waiting saving hoping finishing starting
    leaving visiting preparing applying recovering spending building writing practicing
    practising teaching volunteering rehearsing chilling thinking considering loving enjoying
    """
_SUBJECTLESS_DOING = set(_SUBJECTLESS_DOING_WORDS.split())
# After the first word, a verb of its own makes that word the subject ("Work is crazy",
# "Running makes me happy", "Meeting went well"), not a verb of the user's.
_SUBJECT_THEN_VERB = re.compile(
    r"\b(?:is|isn't|was|wasn't|are|were|has|had|have|makes|made|helps|sucks|gets|keeps|takes|"
    r"feels|seems|looks|went|goes|starts|started|ends|ended|will|would|can|could)\b",
    re.I,
)
_FIRST_WORD = re.compile(r"[A-Za-z][a-z']*")


# A verb of its own later in the sentence makes a doing its subject: "Running a business isn't
# easy", "Learning German has been tough", "Having my family around helps" (LoCoMo's turns).
_LATER_FINITE = re.compile(
    r"\b(?:is|isn't|was|wasn't|are|aren't|were|has|have|had|does|did|must|can|can't|could|will|won't|"
    r"would|should|"
    r"may|might|makes|made|helps|helped|brings|brought|keeps|reminds|seems|sounds|feels|looks|"
    r"gives|lets|takes|warms|fills|means)\b|'s\b|\u2019s\b",
    re.I,
)
# What follows a verb in the past that the user did: its object's first word, a preposition,
# a particle, a doing ("started learning"), a participle ("got promoted"), a time. Not a bare
# noun: "Mixed emotions - …", "Limited options" are not things done.
_AFTER_A_PAST_WORDS = """
    a an the my our his her their some all every each this that these those them him
    one two three four five six several lots lot to in on at for with from up out off back down
    over by into about around through across after before since last yesterday again together
    """
_AFTER_A_PAST = set(_AFTER_A_PAST_WORDS.split())
# "Been" opens a statement of the user's before a doing, a state or a place ("been vegan since
# 2019", "been having a rough week", "been to Peru"), not before these ("Been a long road",
# "Been there, done that", "Been ages").
_NOT_AFTER_BEEN_WORDS = "a an the there here ages forever so such too what quite"
_NOT_AFTER_BEEN = set(_NOT_AFTER_BEEN_WORDS.split())
# ... but "a" before who the user has been for a while is theirs: "Been a nurse for 12 years",
# "Been a season ticket holder at the Celtics for a decade now" (heldout20 wrote nothing) —
# a word that names a person (patterns.names_a_person), then since when or how long.
_BEEN_A_ROLE = re.compile(
    r"\s+an?\s+(?:[a-z\-]+\s+){0,2}([a-z\-]+)\b(?:\s+(?:at|in|with|of|on)\s+[^,.;!?]{1,40}?)?"
    r"\s+(?:since\s|for\s+(?:a|an|the|about|over|almost|nearly|\d+|[a-z]+teen|two|three|four"
    r"|five|six|seven|eight|nine|ten|twenty|thirty|forty|years|ages)\b)"
)


_THE_USER_AS_OBJECT = re.compile(r"\b(?:me|us)\b", re.I)
_NEXT_CLAUSE = re.compile(r";|\s[-\u2013\u2014]\s")

# A lasting state said without "I'm", followed only by what qualifies it: "Allergic to shellfish
# btw", "gluten free since my diagnosis", "vegan for 5 years", "lactose intolerant" (not "Vegan
# food is great", "Gluten free bread tastes bad", "Diabetic cats need insulin").
_SUBJECTLESS_STATE_WORDS = (
    "allergic intolerant vegan vegetarian pescatarian diabetic pregnant sober"
)
_SUBJECTLESS_STATE = set(_SUBJECTLESS_STATE_WORDS.split())
_STATE_QUALIFIED = re.compile(
    r"\s+(?:to|since|for|now|btw|and|so|because|anymore|again|though)\b|\s*[,.!;]|\s*$"
)
# what one lives "free" of: "gluten free", "sugar free" (not "Feel free to reach out": LoCoMo)
_FREE_OF_WORDS = "gluten dairy sugar alcohol smoke nut meat debt cancer drug caffeine soy egg"
_FREE_OF = set(_FREE_OF_WORDS.split())
# "no longer at Google", "no longer working there": what the user no longer is or does (not "No
# longer a problem").
_NO_LONGER = re.compile(
    r"\s+longer\s+(?:at|in|with|on|working|living|employed|married|single|engaged|dating|vegan|"
    r"vegetarian|part)\b"
)


def _state_said(low: str, following: str, rest: str, after_following: int) -> str | None:
    """What a state said without its subject takes: "I'm", or "I've been" for one that lasts
    since a time or for a while ("vegan for 5 years" -> "I've been vegan for 5 years")."""
    if low in _SUBJECTLESS_STATE:
        qualified = _STATE_QUALIFIED.match(rest)
    elif (following == "free" and low in _FREE_OF) or following == "intolerant":
        qualified = _STATE_QUALIFIED.match(rest, after_following)
    else:
        return None
    if qualified is None:
        return None
    return "I've been" if qualified.group(0).split() in (["since"], ["for"]) else "I'm"


def subject_supplied(sentence: str) -> str:
    """ "started learning korean last month" -> "I started learning korean last month";
    "been vegan since 2019" -> "I've been vegan since 2019"; "living in Brooklyn" -> "I'm
    living in Brooklyn". Any other sentence is returned as it is."""
    opener = OPENER.match(sentence)
    at = opener.end() if opener else 0
    start = at
    while (word := _FIRST_WORD.match(sentence, at)) and is_adverb(word.group(0)):
        at = word.end() + 1
    if not word or word.group(0) in ("I", "I'm", "I've", "I'd", "I'll"):
        return sentence
    first = word.group(0)
    low = first.lower()
    if not (first.islower() or first[1:].islower()):
        return sentence
    rest = sentence[word.end() :]
    then = re.match(r"\s+([A-Za-z']+)", rest)
    # "Work is crazy": the word is the subject; nor a word alone ("Started.")
    if not then or _SUBJECT_THEN_VERB.match(then.group(1)):
        return sentence
    following = then.group(1).lower()
    # what follows a semicolon or a dash is a clause of its own: "Moving to Leeds next month;
    # can't wait" (heldout21: its "can't" read as the doing's own verb, and "Sold the car last
    # year; the tram gets me everywhere" its "me" as the selling's object: both wrote nothing)
    clause = _NEXT_CLAUSE.split(rest, maxsplit=1)[0]
    of_its_own = _LATER_FINITE.search(clause) is not None
    # the user as the object, before any comma, is not its subject: "Really made me think",
    # "Been hectic for me", "Seeing old towns fascinates me" ("hate cilantro, tastes like soap
    # to me" is the user's)
    if _THE_USER_AS_OBJECT.search(clause.partition(",")[0]):
        return sentence
    if low == "been":
        role = _BEEN_A_ROLE.match(rest) if following in ("a", "an") else None
        if following in _NOT_AFTER_BEEN and not (role and names_a_person(role.group(1))):
            return sentence
        said = "I've"
    elif low == "have" and following in _AFTER_HAVE:
        said = "I"  # "Have been vegetarian since 2015" (not a wish: "have a nice day")
    elif low == "gonna" and not of_its_own and _GONNA_DO.match(rest):
        said = "I'm"  # "Gonna be in London next week for work" (not "Gonna be a big change")
    elif low in ("can't", "cannot") and following in _CANNOT_DO:
        said = "I"  # "Can't stand country music" (not "Can't wait", "Can't believe it")
    elif state := _state_said(low, following, rest, then.end()):
        said = state
    elif (
        low in _STATE_ED
        or (low == "no" and _NO_LONGER.match(rest))
        or (low == "back" and following in ("from", "home"))
        or (low == "home" and following == "from")
    ):
        # "back from Vietnam" (heldout19: "Just back from ten days in Vietnam" wrote nothing;
        # heldout22: "Home from a week in Iceland")
        said = "I'm"
    elif low in _FEELING_ED or low in BASE_IN_ED:
        return sentence
    elif (
        (low in KEEP and low not in _AUXILIARIES)
        or (low.endswith("ed") and len(low) > 4)
        or (low == "did" and _DID_A_THING.match(rest))
    ):
        if not (
            following in _AFTER_A_PAST
            or following.isdigit()
            or following.endswith(("ing", "ed", "ly"))
        ) or (low in _NAMES_AS_PASTS and following.endswith(("ed", "s"))):
            return sentence
        said = "I"
    elif low in _SUBJECTLESS_DOING and not of_its_own:
        said = "I'm"
    elif low in _SUBJECTLESS_PRESENT and not of_its_own:
        said = "I"
    else:
        return sentence
    said_first = sentence[start:at] + first + rest
    return f"{sentence[:start]}{said} {said_first[0].lower()}{said_first[1:]}"


# What the user is going to do, said without "I'm": a place to be, or a verb not of a remark
# ("Gonna be a big change", "Gonna give it a go" are of something else, or of nothing).
_GONNA_DO = re.compile(
    r"\s+(?:be (?:in|at|on|away|back|home|out|off)\b|(?!be\b|give\b|need\b|have\b|take\b|"
    r"try\b|say\b|miss\b|go\b|get\b|make\b)[a-z]+\b)"
)
# After "have", what makes it the user's perfect, not a wish or an order ("have a nice day").
_AFTER_HAVE = {"been", "had", "never", "always", "lived", "worked", "known", "loved", "done"}
# What the user cannot do, said without the "I": a lasting fact of theirs.
_CANNOT_DO = {
    "stand", "eat", "drink", "swim", "drive", "handle", "tolerate", "afford", "sleep", "cook",
    "ride", "read", "dance", "sing", "digest",
}  # fmt: skip
# A past that is also a name, then a verb of its own: "Rose smiled for the first time" was "User
# rose smiled…" ("Rose early today" is still the user's).
_NAMES_AS_PASTS = {"rose", "drew"}
# Not the first word of a statement whose "I" was left out: a modal or an auxiliary opens a
# question ("Did I tell you…", "Can't wait") or a sentence about something else ("Was a long
# day"). "used to", "got" and "had" say what the user did.
_AUXILIARIES_WORDS = (
    "can can't cannot could couldn't will won't would wouldn't should shouldn't must mustn't "
    "may might shall did didn't was wasn't"
)
_AUXILIARIES = set(_AUXILIARIES_WORDS.split())
# "did" before a count or a whole thing is the past of "do", not a question's auxiliary: "did
# the whole Appalachian trail in 2022" (heldout16), "did a 10k on Sunday" (not "did the package
# come", "did my mom call").
_DID_A_THING = re.compile(r"\s+(?:a|an|\d+|the (?:whole|entire)|all (?:the|of|my))\b")


# "Heights freak me out", "My job stresses me out", "Crowds make me nervous": how the user feels
# about a thing, said with the thing first (heldout19: "Heights freak me out." wrote nothing).
# Said with the user first ("I'm freaked out by heights") it is a statement of theirs, which the
# rest of the extractor writes ("User is freaked out by heights."). Only these verbs, in the
# present (what scared the user once is an event, not how they feel), after a thing of one to
# four words — not a pronoun, which points back ("It scares me", "That annoys me") or is someone.
_FELT = {
    "scare": "scared of",
    "terrify": "terrified of",
    "frighten": "frightened of",
    "freak": "freaked out by",
    "stress": "stressed out by",
    "annoy": "annoyed by",
    "irritate": "irritated by",
    "bore": "bored by",
    "relax": "relaxed by",
    "calm": "calmed by",
    "fascinate": "fascinated by",
    "overwhelm": "overwhelmed by",
    "exhaust": "exhausted by",
    "drain": "drained by",
    "depress": "depressed by",
}

# each form of each verb ("scare", "scares"; "annoy", "annoys"), and what the user is when it
# moves them; the third person is person's own conjugation (a copy of it here made "annoies",
# and "Loud music annoys me" wrote nothing)
_FELT_FORMS = {form: felt for verb, felt in _FELT.items() for form in (verb, conjugate(verb))}
_FELT_VERB = "(" + "|".join(sorted(_FELT_FORMS, key=len, reverse=True)) + ")"
_FEELING_SAID = re.compile(
    r"^((?:[Mm]y |[Oo]ur )?[A-Za-z][\w'\-]*(?: [a-z][\w'\-]*){0,3}) "
    + _FELT_VERB
    + r" me(?: (?:out|down))?(?: (?:so much|a lot|to death|a bit|sometimes|every time))?[.!]*$"
)
_NOT_A_THING = {
    "it",
    "that",
    "this",
    "he",
    "she",
    "they",
    "you",
    "everything",
    "everyone",
    "nothing",
    "something",
    "someone",
    "somebody",
    "what",
    "which",
    "who",
    "there",
    "here",
    "she's",
}


def felt_by_the_user(sentence: str) -> str:
    """ "Heights freak me out" -> "I'm freaked out by heights"; any other sentence as it is."""
    m = _FEELING_SAID.match(sentence.strip())
    if not m or m.group(1).split()[0].lower() in _NOT_A_THING:
        return sentence
    thing = m.group(1)
    if not thing[1:2].isupper():  # "Heights" -> "heights", "My job" -> "my job" (not "NASA")
        thing = thing[0].lower() + thing[1:]
    return f"I'm {_FELT_FORMS[m.group(2)]} {thing}."
