"""From a message to its facts: its sentences and clauses, what is no statement of the
user's (requests, hypotheticals, what is said to the assistant, code, pasted text), and
`extract`, which runs every step.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator

from memory.background.extraction.chat import (
    ironic,
    not_meant,
    played,
    spelled_out,
    with_apostrophes,
    without_emojis,
    without_feeling_tail,
    without_passages,
)
from memory.background.extraction.offline.dates import resolve_dates
from memory.background.extraction.offline.fact import Fact
from memory.background.extraction.offline.named import RELATION, Known
from memory.background.extraction.offline.negations import denial
from memory.background.extraction.offline.patterns import BASE_IN_ED, OPENER, TRAIT
from memory.background.extraction.offline.person import (
    COMMON_VERBS,
    KEEP,
    capitalised,
    conjugate,
    dash_moves,
    is_adverb,
    third_person,
)
from memory.background.extraction.offline.requests import (
    ASKED,
    HEDGED,
    REQUEST,
    REQUEST_THEN,
    SELF,
    TRAILING_QUESTION,
    TRAILING_REQUEST,
    WORDING,
)
from memory.background.extraction.offline.slots import (
    AFTER_NAME,
    CALL_ME,
    LIVES_WITH,
    NAME_INTRO,
    a_name,
    slot_facts,
)
from memory.background.extraction.offline.subjectless import felt_by_the_user, subject_supplied

# Not after an initial, a title or a place's abbreviation: "Ursula K. Le Guin", "Dr. Patel",
# "Mt. Vernon" ("I." ends a sentence). Typed in lowercase, such a title ends no sentence either
# where a lowercase word follows that opens none of the user's ("a nurse at st. mary's", "saw
# dr. patel"; heldout16), while "i live on main st. my dog…" is two.
_SENTENCE = re.compile(
    r"(?<=[.!?])(?<!\b[A-HJ-Z]\.)(?<!\b(?:Mr|Ms|Dr|St|Mt|Ft)\.)(?<!\bMrs\.)"
    r"(?!(?:(?<=\b(?:mr|ms|dr|st|mt|ft)\.)|(?<=\bmrs\.))\s+"
    r"(?!(?:i|i'm|im|i've|my|we|we're|our|and|but|so)\b)[a-z])\s+|\n+"
)
_PHATIC = re.compile(
    r"^(?:oh,?\s+|wow,?\s+|yeah,?\s+|haha,?\s+|aw+,?\s+)*(?:thanks?|thank you|i see|i agree|"
    r"i know|i think so|i hope so|i understand|i guess|i mean|me too|i bet|i can imagine|"
    r"i'?m (?:so |really )?(?:glad|happy|sorry|proud|excited) (?:for|to hear|about) (?:you|that)|"
    # "I'm good" answers how one is; "I'm good at math" is a fact
    r"i'?m (?:doing )?(?:good|great|fine|well)(?!\s+(?:at|with)\b)|i appreciate (?:it|that|you)|"
    r"let me know|i'?ll (?:let you know|talk to you)|i love that|i'?m all ears)\b",
    re.IGNORECASE,
)

_KIND_PATTERNS = [
    (
        "preference",
        re.compile(
            r"\b(?:like|love|enjoy|prefer|hate|dislike|can't stand|into|favou?rite|fan of|"
            r"passionate about|obsessed with)\b",
            re.I,
        ),
    ),
    (
        "plan",
        re.compile(
            r"\b(?:going to|gonna|plan(?:ning)? to|will|intend to|hope to|want to|"
            r"would like to|looking forward|thinking (?:of|about)|next (?:week|month|year)|"
            r"tomorrow|soon)\b",
            re.I,
        ),
    ),
    (
        "relation",
        re.compile(
            r"\bmy (?:wife|husband|partner|spouse|son|daughter|kids?|children|child|mom|mother|"
            r"dad|father|parents|brother|sister|siblings?|friends?|best friend|boss|colleagues?|"
            r"coworkers?|dog|cat|pets?|girlfriend|boyfriend|family|grandma|grandmother|grandpa|"
            r"grandfather|aunt|uncle|cousin|neighbou?r|roommate|fianc[ée]e?)\b",
            re.I,
        ),
    ),
]


def _kind(sentence: str, event_date: dt.date | None, today: dt.date) -> str:
    for kind, pattern in _KIND_PATTERNS:
        if pattern.search(sentence):
            if kind == "plan" and event_date and event_date < today:
                continue
            return kind
    return "event" if event_date else "fact"


# A secret's value is never remembered: a memory is shown in later prompts, sent upstream and
# listed to whoever reads the user's memories ("My password is hunter2", "my API key: sk-…");
# "I forgot my password" names no value and stays.
_CREDENTIAL = re.compile(
    r"\b(?:password|passcode|passphrase|pin(?: code)?|api[ -]?key|(?:access |auth |api )?token|"
    r"secret(?: key)?|private key|ssn|social security number|(?:credit |debit )?card number|"
    r"cvv|cvc|iban|account number)s?\s*(?:is|was|=|:)\s*\S",
    re.I,
)
# A hypothetical: nothing in it is so, in any of its clauses ("Imagine I live in Paris and I
# love jazz", "If I won the lottery, I'd buy a house and I'd travel").
_HYPOTHETICAL = re.compile(
    r"^(?:if|suppose|supposing|imagine|pretend|assume|assuming|say|let's say|let us say|"
    r"hypothetically|what if|in theory|"
    r"in (?:my|a|the|this|our) (?:story|novel|book|game|dream|script|role-?play|campaign))\b",
    re.I,
)
_ASSISTANT_LABEL = r"(?:assistant|ai|bot|chatbot|chatgpt|gpt|claude|gemini|copilot)\s*:"
# Said to the assistant about the conversation, or not a statement at all: a question asked
# indirectly, a counterfactual ("I'd live in Paris if I were rich"), a reply to what the
# assistant said, the assistant's words said back ("You said: I live in Paris", "Assistant: I
# live in Paris": its "I" is not the user).
_NOT_A_STATEMENT = re.compile(
    r"\bif (?:I|we) were\b|^I (?:wonder|was wondering|am wondering)\b|^I'm wondering\b"
    r"|\byou (?:said|say|wrote|write|mentioned|claimed|suggested|assumed|thought|think)\b"
    rf"|^{_ASSISTANT_LABEL}"
    r"|^I (?:have|had|got) (?:a |one |another |some |a few |a couple of )?(?:quick |small )?"
    r"(?:questions?|doubts?|requests?)\b"
    r"|\b(?:what|how) you (?:mean|meant|said|say|wrote|write)\b"
    r"|\byour (?:answer|response|reply|suggestion|explanation|question|point)\b"
    # a disclaimer, what the user would not say of themselves ("I wouldn't say I'm an expert,
    # but…", "I wouldn't call myself a runner": heldout17), not what they are
    r"|^I (?:wouldn't|wouldnt|would not|won't|will not) (?:say|call|describe|claim)\b",
    re.I,
)
# An opinion of the moment, not about the person: "I think the weather is nice today".
_OPINION_OF_NOW = re.compile(
    r"^I (?:think|believe|guess|suppose|feel like|reckon)\b(?!.*\b(?:I|I'm|I've|my|me)\b)"
    r".*\b(?:today|tonight|right now|this morning|this evening|at the moment)\b",
    re.I,
)
# A memory is read alone, later: a short statement that ends on what the conversation pointed
# at ("I love it", "Maybe I should try that sometime", "I meant the other one", "I figured it
# out") says nothing then; in a longer one the thing is usually named ("I have three cats and
# love them"). Nor does one that speaks to the assistant ("… and get back to you").
_POINTS_BACK = re.compile(
    r"\b(?:it|that|this|these|those|them|the other one|that one|this one"
    r"|(?:have|has|had|got|get|bought|buy|want|need) one)"
    r"(?: (?:out|up|down|off|over|through|yet|sometime|someday|again|too|as well|anymore|now|"
    r"later|then))?[.!]$",
    re.I,
)
POINTS_BACK_MAX_WORDS = 6
# "IT" after a preposition is the trade, not "it" shouted: "I work in IT" (heldout16) names it.
_IT_TRADE = re.compile(r"\b(in|into|for|of|at|from) IT\b")
# More words than a statement about oneself has: a paste, a story.
MAX_WORDS = 80
_TO_ASSISTANT = re.compile(r"\b(?:you|your|yours|yourself)\b", re.I)
_PERIOD = (
    r"(?:yesterday|today|tomorrow|tonight|this morning|this evening|last night|"
    r"(?:last|this|next) (?:summer|winter|spring|autumn|fall|year|month|week|weekend))"
)
_SELF_SUBJECT = r"(?:I|I'm|I've|my|My|we|We|we're|we've|our|Our)\b"
# A label before a statement ("Quick background: I'm a nurse", "Here's a long one: I've…"),
# not the assistant's name or what it said ("Assistant: I…", "You said: I…": not the user).
_LEAD_IN = re.compile(
    rf"^(?!{_ASSISTANT_LABEL})(?![^:\n]*\byou\b)[^:\n]{{1,40}}:\s+(?={_SELF_SUBJECT})", re.I
)
# The same label before a dash ("Quick note — I'm allergic to shellfish", "Update - I got the
# job": heldout18 wrote "Quick note — User is allergic…"): a few words that hold neither the
# user nor the assistant, so "I'm beat — I worked all night" keeps both of its parts.
_DASH_LEAD_IN = re.compile(
    r"^(?!(?:[a-z']+\s+){0,3}(?:i|me|my|we|us|our|you|your)(?:'[a-z]+)?[!,]?\s)"
    r"[a-z][a-z']*(?:\s+[a-z][a-z']*){0,3}[!,]?\s+(?:-{1,2}|[\u2013\u2014])\s+"
    rf"(?={_SELF_SUBJECT})",
    re.I,
)
# Said to the assistant before a statement of the user's, not part of it: "you know I hate
# cilantro", "As you know, I'm allergic to nuts", "Like I told you, I work nights", "Just so you
# know, my sister…" (a request to the assistant, "can you remind me…", is no statement).
_TO_YOU_LEAD_IN = re.compile(
    r"^(?:(?:as|like)\s+)?(?:you\s+(?:probably\s+|already\s+|might\s+|may\s+)?know"
    r"|I\s+(?:already\s+)?(?:told|said to)\s+you(?:\s+(?:before|earlier|already))?"
    r"|just\s+so\s+you\s+know|for\s+your\s+information"
    # "Remember, I'm vegetarian", "Don't forget that my…", "You might remember my dog Biscuit"
    r"|(?:remember|don't\s+forget|do\s+not\s+forget|never\s+forget)"
    r"|you(?:'ll|\s+will|\s+might|\s+may|\s+probably|\s+may\s+well)?\s+(?:remember|recall)"
    # "you'll like this: I ran…", "You won't believe it, I won…", "Guess what, I…"
    r"|you(?:'ll|\s+will|'re\s+going\s+to)\s+(?:like|love|enjoy|laugh\s+at)\s+this"
    r"|you\s+won't\s+believe\s+(?:this|it|what\s+happened)|guess\s+what|you\s+know\s+what)"
    rf"(?:\s+that)?\s*[,:!\-\u2013\u2014]?\s+(?={_SELF_SUBJECT})",
    re.I,
)
# "Did I tell you I started rock climbing?", "Have I mentioned that I play the cello?", "Did you
# know I can juggle?": a statement asked as a question; what follows the ask is said.
_TOLD_YOU = re.compile(
    r"^(?:(?:did|have)\s+(?:I|we)\s+(?:ever\s+|already\s+)?(?:tell|told|mention|mentioned)"
    r"(?:\s+to)?(?:\s+you)?|did\s+you\s+know"
    # "idk if i told u but im pregnant"
    r"|(?:I\s+)?(?:don't\s+know|dunno|am\s+not\s+sure|'m\s+not\s+sure)\s+if\s+I\s+(?:ever\s+|"
    r"already\s+)?(?:told|mentioned)(?:\s+(?:it|this)\s+to|\s+to)?(?:\s+you)?,?\s+but)"
    rf"(?:\s+that)?\s*,?\s+(?={_SELF_SUBJECT})",
    re.I,
)
# Nor does an intensifier count toward the three-word floor: "I'm so tired" is "I'm tired".
_INTENSIFIERS = {"so", "very", "super", "soo", "sooo"}
# Nor the moment it is said: "I'm so tired today", "I'm bored right now" are "I'm tired" of the
# day (heldout17 wrote "User is so tired on 5 December 2026."); "I'm 30 today" is an age still.
_NOW = re.compile(
    r"\b(?:today|tonight|this (?:morning|afternoon|evening)|right now|at the moment)\b[.!,]*", re.I
)
# A chat word said last is not part of the statement: "im a night nurse btw", "so tired lol",
# "living in Brooklyn rn" (what is so "right now" is said by the tense); nor a "though" or
# "anyway" that answers the message before ("I hate running in the rain though": the memory,
# read alone later, was "User hates running in the rain though.").
# (from the run's start, taken whole: ", " 4,000 times took 11 s when tried from every comma)
_CHAT_TAIL = re.compile(
    r"(?<![\s,])[\s,]++(?:just\s+)?(?:lol|lmao|haha+|hehe+|btw|tbh|fyi|xd|rn|atm|though|tho|"
    r"anyway|anyways)[\s.!]*$",
    re.I,
)
# "my dog Biscuit - he turned ten", "my sister Maya, she's a vet": the one named, then what is
# said of them ("User's dog Biscuit turned ten", not "User's dog Biscuit - he turned ten").
_NAMED_THEN_PRONOUN = re.compile(
    r"^((?:[Mm]y|[Oo]ur) [a-z]+ [A-Z][a-z]+)(?:,|\s+[-\u2013\u2014])\s+(?:he|she)(?:'s|\u2019s|\s+is)?\s+"
)


def _said_of_the_named(sentence: str) -> str:
    if not (m := _NAMED_THEN_PRONOUN.match(sentence)):
        return sentence
    be = " is " if m.group(0).rstrip().endswith(("'s", "\u2019s", " is")) else " "
    return m.group(1) + be + sentence[m.end() :]


def _without_chat_tail(sentence: str) -> str:
    for _ in range(3):  # "lol btw"; a bounded number, each a search of the sentence
        if not (m := _CHAT_TAIL.search(sentence)):
            break
        sentence = sentence[: m.start()] + "."
    return sentence


# Said in the past without a date: "I quit Twitter a while ago" ("quit", "read", "put" stay).
_PAST_SAID = re.compile(
    r"\b(?:ago|back then|a while back|(?:years|months|weeks|ages) back|"
    r"last (?:summer|winter|spring|autumn|fall|time))\b"
    # or by a clause of the past beside it: "I quit when my daughter was born" (heldout17: "User
    # quits when…"); bounded, tried at each "when" of a sentence
    r"|\b(?:when|after|before|once|until)\s[^,.;!?]{0,40}?\b(?:was|were|had|did)\b",
    re.I,
)
# "I'm Kate's husband, she told me to ask you about it": the statement before a last part said
# to the assistant, after a comma or a dash, stands alone when that part is another's doing or
# a reminder ("…, as you know"); not a reply's thanks or goodbye ("I had a great time, thank
# you", "I'm going to bed now, talk to you tomorrow": remarks, dropped whole).
_PART = re.compile(r"(?:\s*,|\s+[-\u2013\u2014])\s+")
_OTHERS_PART = re.compile(
    r"(?:she|he|they|my [a-z]+|(?:as |like )?you (?:know|may know|might know)|in case you)\b",
    re.I,
)
# "… and I …", also with a word of time between: "I sold my car and now I cycle to work" (the
# word dropped), "… and last summer I walked the Camino" (the period kept with its clause).
_CLAUSE = re.compile(
    r",?\s+(?:and|but|so|while)\s+"
    # a filler after "so" joins nothing: "I finished nursing school, so yeah im a nurse now"
    r"(?:(?:now|then|also|later|since then|these days|yeah|yea|anyway|basically),?\s+)?"
    rf"(?=(?:{_PERIOD},?\s+)?{_SELF_SUBJECT})|;\s+"
)
# "Yesterday I saw Anna" -> "I saw Anna yesterday": a fact starts with its subject, and the
# period is resolved where it stands last ("User saw Anna on 7 May").
_LEADING_PERIOD = re.compile(rf"^({_PERIOD}),?\s+(?={_SELF_SUBJECT})", re.I)


# "Tomorrow is my birthday": the user's thing first, as "My birthday is tomorrow" says it (it
# was "On 8 December 2026 is User's birthday.")
_PERIOD_IS_MINE = re.compile(
    rf"^({_PERIOD}),?\s+(is|was|will be)\s+((?:my|our)\s+[^,;!?]{{1,80}}?)\s*[.!]*$", re.I
)


def _period_last(sentence: str) -> str:
    if mine := _PERIOD_IS_MINE.match(sentence):
        owned, be, period = mine.group(3), mine.group(2), mine.group(1).lower()
        return f"{owned[0].upper()}{owned[1:]} {be} {period}."
    m = _LEADING_PERIOD.match(sentence)
    if not m:
        return sentence
    rest = sentence[m.end() :].rstrip(" .!")
    return f"{rest} {m.group(1).lower()}."


# Not prose of the user's: a fenced code block, a Python traceback (its header, the indented
# frames, the exception's line), a quoted line ("> …", usually the assistant's words pasted
# back). "I = 3" in code or "ValueError: I am broken" is no fact about anyone.
_NOT_PROSE = re.compile(
    r"^[ \t]*(```|~~~).*?(?:^[ \t]*\1[^\n]*$|\Z)"
    r"|^Traceback \(most recent call last\):[^\n]*(?:\n[ \t][^\n]*)*(?:\n[^\n]*)?"
    r"|^[ \t]*>[^\n]*$"
    r"|^[ \t]*\|[^\n]*$",  # a table's row: "| I | love | jazz |"
    re.M | re.S,
)
# A list item's marker is not part of what it says: "- I love jazz", "2. I have two cats".
_LIST_MARKER = re.compile(r"^[ \t]*(?:[-*+•]|\d{1,3}[.)]|#{1,6})[ \t]+", re.M)
# Nor is emphasis, a pair of markers around words: "**I live in Paris** and *I love jazz*".
# A span of at most 200 characters: unbounded, each "*" of a line without its closing one read
# the rest of the line (" *a" 20,000 times: 11 s).
_EMPHASIS = re.compile(r"(\*\*|__|(?<![\w*])\*)(?=\S)([^\n]{1,200}?)(?<=\S)\1(?![\w*])")

# A dash left opening a sentence by the one before it ("Big news! — I'm pregnant").
_DASH_OPENING = re.compile(r"^(?:-{1,2}|[\u2013\u2014])\s+")


def sentences(text: str) -> list[str]:
    prose = _EMPHASIS.sub(r"\2", _LIST_MARKER.sub("", _NOT_PROSE.sub("\n", text or "")))
    said = (_DASH_OPENING.sub("", s.strip()) for s in _SENTENCE.split(prose) if s)
    return [s for s in said if s]


def clauses(sentence: str) -> list[str]:
    """'I live in Paris and I love jazz' -> two facts."""
    # without its opener: the "so" of "ok so I'm a nurse and I live in York" joins nothing
    said = OPENER.sub("", sentence)
    # "I'm Lena, I'm a vet": an introduction is a statement of its own, its name one slot
    if (name := NAME_INTRO.match(said)) and (rest := AFTER_NAME.match(said, name.end())):
        return [said[: name.end()], *_clauses(said[rest.end() :])]
    if pair := _said_of_them_too(said):
        return pair
    if role := _as_a_role(said):
        return role
    return _clauses(sentence)


# "As a diabetic, I have to watch my carbs": who the user is, then what they do as one
# (heldout19 wrote "As a diabetic, User has to watch…", a fact that opens on no subject). Only
# for a word that names a person — by its ending ("teacher", "pharmacist", "vegetarian",
# "diabetic", "student", "employee") or one of these — and a statement in the present: "As a
# kid I loved Lego" says nothing of now; "As a result, I …", "As a reminder, I …" name no one.
_AS_A = re.compile(
    r"^[Aa]s (an?) ((?:[A-Za-z][a-z\-]{0,29} ){0,2}([A-Za-z][a-z\-]{0,29})),?\s+"
    r"(?=(?:I|I'm|I've|we|we're)\b)"
)
_ROLE_ENDING = re.compile(r"(?:er|or|ist|ian|ant|ent|ic|ee|eur|ess|ive)$")
_ROLE_WORDS = (
    "vegan mom mum dad parent nurse chef medic nanny vet coach cook introvert extrovert expat "
    "coeliac celiac muslim jew hindu sikh brit scot kiwi nerd geek fan widow widower"
)
_NOT_A_ROLE_WORDS = (
    "matter reminder teenager youngster starter number order letter answer favor favour "
    "precaution consequence percent whole rule result kid child baby toddler teen boy girl"
)
_ROLE = set(_ROLE_WORDS.split())
_NOT_A_ROLE = set(_NOT_A_ROLE_WORDS.split())
_NOW_MODALS = {"can", "can't", "cannot", "will", "won't", "would", "wouldn't", "should"}
_NOW_MODALS |= {"shouldn't", "must", "mustn't", "may", "might", "shall"}
_FIRST_VERB = re.compile(
    r"(?:I|we)\s+(?:(?:always|never|also|still|just|really|usually|often)\s+)?([a-z']+)"
)


def _as_a_role(said: str) -> list[str] | None:
    if not (m := _AS_A.match(said)):
        return None
    last = m.group(3).lower()
    if last in _NOT_A_ROLE or not (last in _ROLE or _ROLE_ENDING.search(last)):
        return None
    rest = said[m.end() :]
    verb = _FIRST_VERB.match(rest)
    if verb and (
        (verb.group(1) in KEEP and verb.group(1) not in _NOW_MODALS)
        or (verb.group(1).endswith("ed") and verb.group(1) not in BASE_IN_ED)
    ):
        return None
    return [f"I'm {m.group(1)} {m.group(2)}.", *_clauses(rest)]


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
_AGE_ALONE = re.compile(r"^(?:I'm|I am|Im) (?:now |only |just )?\d{1,3}(?: now| already)?[.!]?$")

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


_TEXT_TO_WORD = re.compile(
    r"^(?:(?:please|pls|kindly|can you|could you|would you|will you|can u)\s+)*"
    r"(?:translate|proofread|rewrite|rephrase|paraphrase|reword|edit|correct|polish|shorten|"
    r"summari[sz]e|fix the (?:grammar|spelling))\b",
    re.I,
)


def _clauses(sentence: str) -> list[str]:
    said = OPENER.sub("", sentence)
    # what follows an order to word something is the text to word, no clause of the user's:
    # "Translate to French: I have two cats and I live in Paris." ("User lives in Paris.")
    if _TEXT_TO_WORD.match(said):
        return [sentence]
    # after a label too: "quick background: I'm a product manager, live in Seattle…" (not an
    # order's: "summarize this: I joined…" is no statement)
    if not REQUEST.search(said):
        said = _LEAD_IN.sub("", said)
    parts = [
        listed
        for p in _CLAUSE.split(said)
        if p and p.strip()
        for listed in _listed_verbs(p.strip())
    ]
    if len(parts) > 1 and _NAMED_ONE.fullmatch(parts[0]):
        parts = [f"{parts[0]} and {parts[1]}", *parts[2:]]
    # Only when each part is a statement of the user's own: "Dancing makes me so happy, and
    # now I get to share that" stays whole (its first part alone would be dropped, and its
    # second points back). An introduction stands in two words ("I'm Sam and I teach").
    each_stands = all(
        (
            len(p.split()) >= 3
            or NAME_INTRO.match(p)
            or _AGE_ALONE.match(p)
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


# Words in quotes are someone's own, kept as said: in "My boss said 'I hate Mondays'" the "I"
# is the boss, and "'I live in Paris', she wrote" sets no place for the user. A single quote
# opens after a space and closes before one; an apostrophe between letters stays inside. A web
# address, an e-mail address or inline code is kept as written too ("…/I/live/in/Paris" is no
# "they").
_QUOTED = re.compile(
    r"`[^`\n]+`|\b(?:https?://|www\.)[^\s]*[^\s.,;:!?)\]'\"]"
    # an address starts where its run of characters does: tried from inside a long run of
    # letters it read to the run's end and back at every position (100,000: 26 s)
    r"|(?<![\w.+\-])[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+"
    # a quote ends at the next opening one: each of many unclosed ones read to the line's end
    r'|"[^"\n]*"|\u201c[^\u201c\u201d\n]*\u201d'
    r"|(?<!\w)'(?=\S)(?:[^'\n]|(?<=\w)'(?=\w))*?(?<=\S)'(?!\w)"
)
_QUOTE_MARK = re.compile("\ue000(\\d+)\ue001")


def _set_quotes_aside(sentence: str) -> tuple[str, list[str]]:
    quotes: list[str] = []

    def mark(m: re.Match) -> str:
        quotes.append(m.group(0))
        return f"\ue000{len(quotes) - 1}\ue001"

    return _QUOTED.sub(mark, sentence), quotes


def _with_quotes(text: str, quotes: list[str]) -> str:
    return _QUOTE_MARK.sub(lambda m: quotes[int(m.group(1))], text)


def _without_tail_to_you(sentence: str) -> str:
    """The statement before a last part said to the assistant ("I'm Kate's husband, she told
    me to ask you…" -> "I'm Kate's husband"), when it says nothing to the assistant itself."""
    if not _TO_ASSISTANT.search(sentence):
        return sentence
    cuts = list(_PART.finditer(sentence))
    if not cuts or not _OTHERS_PART.match(sentence, cuts[-1].end()):
        return sentence
    if _TO_ASSISTANT.search(head := sentence[: cuts[-1].start()]):
        return sentence
    return head + "."


_SPACES = re.compile(r"(?<=\S)[ \t]{2,}")
# Quoted words are kept as said ("User's boss said 'I hate Mondays'." is about the boss), but not
# when they are a habit of speech or an exclamation of the moment, which state nothing: "my
# coworker keeps saying 'I'm the best at excel'", "my brother just yelled 'im the king of the
# world'", "and he goes 'whatever'" (heldout13, heldout14).
_SAID_THEN_QUOTE = re.compile(
    r"\b(?:(?:keeps|kept|always|constantly)\s+(?:saying|says|said)|yelled|yells|shouted|shouts|"
    r"screamed|screams|goes|went)\s*[,:]?\s*\ue000(\d+)\ue001"
)
# A count with nothing counted ("but she has three": the things were named in another clause,
# or in a quote) says nothing.
_DANGLING_COUNT = re.compile(
    r"\b(?:has|have|had|got|owns|own)\s+(?:\d+|one|two|three|four|five|six|seven|eight|nine|ten|"
    r"a few|several|many|lots)\s*[.!]*$",
    re.I,
)


def _reported(sentence: str, quotes: list[str]) -> bool:
    return any(
        quotes[int(m.group(1))][:1] in ("'", '"', "\u201c")
        for m in _SAID_THEN_QUOTE.finditer(sentence)
    )


def extract(text: str, *, subject: str, today: dt.date, known: Known | None = None) -> list[Fact]:
    """The memories one message holds (possibly none). `known`: the names the subject has told
    of before ("my dog Pepper"), a sentence opening on one of them read as theirs; it learns
    those this message tells of, for its later sentences and the messages after it."""
    facts: list[Fact] = []
    known = Known() if known is None else known
    # a run of spaces is one: patterns that allow "\s*" around a word were tried again from each
    # space of a long run ("I have a cat" and 4,000 spaces took 12 s); a line's indent stays
    text = without_passages(capitalised(dash_moves(_SPACES.sub(" ", text or ""))))
    if played(text):
        return facts
    in_irony = ironic(text)

    learnt = 0  # of `facts`, those whose names `known` has read

    def learn() -> None:
        nonlocal learnt
        for fact in facts[learnt:]:
            known.told(subject, fact.text)
        learnt = len(facts)

    def in_full(said: list[str]) -> Iterator[str]:
        """Each sentence, one opening on a name told of read as the user's own; what the
        sentences before it told of is learnt first ("I have a dog named Pepper. Pepper…")."""
        for sentence in said:
            learn()
            yield known.said_in_full(sentence, subject)

    statements = (
        with_apostrophes(spelled_out(without_emojis(s)))
        for s in in_full(sentences(text))
        if not _HYPOTHETICAL.match(OPENER.sub("", s)) and not not_meant(s, in_irony=in_irony)
    )
    for said_sentence in (
        c for s in statements if s for c in clauses(subject_supplied(felt_by_the_user(s)))
    ):
        sentence, quotes = _set_quotes_aside(TRAILING_QUESTION.sub(".", said_sentence))
        # a count with nothing counted ("I have two."), its comment aside ("…, which is awkward
        # because my flatmate has two" counts cats); the comment read only where a count ends it
        if _reported(sentence, quotes) or (
            _DANGLING_COUNT.search(sentence)
            and _DANGLING_COUNT.search(without_feeling_tail(sentence))
        ):
            continue
        if told := _TOLD_YOU.match(opened := OPENER.sub("", sentence)):
            sentence = opened[told.end() :].rstrip(" ?!.") + "."
        if called := CALL_ME.match(OPENER.sub("", sentence)):
            if a_name(called.group(1)):
                name = called.group(1)
                facts.append(Fact(f"{subject}'s name is {name}.", "fact", None, "name", name))
            continue
        if HEDGED.match(opened := OPENER.sub("", sentence)):
            sentence = opened.rstrip("?") + "."
        elif (
            REQUEST.match(opened)
            and not WORDING.match(opened)
            and (cut := REQUEST_THEN.search(opened))
        ):
            sentence = opened[cut.end() :]
        # a question; or a line that ends on ":" and so introduces what follows (code, an
        # error, a list), saying nothing alone ("Here is my code:")
        if (
            sentence.endswith(("?", ":"))
            or REQUEST.search(sentence)
            or ASKED.match(OPENER.sub("", sentence))
        ):
            continue
        if _CREDENTIAL.search(sentence):
            continue
        sentence = TRAILING_REQUEST.sub("", sentence)
        sentence = _TO_YOU_LEAD_IN.sub("", OPENER.sub("", sentence))
        sentence = _period_last(_DASH_LEAD_IN.sub("", _LEAD_IN.sub("", sentence)))
        sentence = _said_of_the_named(
            without_feeling_tail(_without_chat_tail(_without_tail_to_you(sentence)))
        )
        # Another person's move is said of them ("User's sister moved to Oslo."): a residence
        # slot is only ever the user's ("I"/"we" moved), so it never competes with theirs.
        if not SELF.search(sentence):
            continue
        words = sentence.split()
        # "I'm just curious" is two words to the floor: an adverb says nothing of its own
        said = [
            w
            for w in _NOW.sub("", sentence).split()
            if not is_adverb(w.strip(",.!")) and w.strip(",.!").lower() not in _INTENSIFIERS
        ]
        short = len(said) < 3 and not (
            # "Now I'm unemployed", "I'm single now": a trait, its adverb aside
            TRAIT.match(" ".join(said))
            or NAME_INTRO.match(sentence)
            or _AGE_ALONE.match(" ".join(_NOW.sub("", sentence).split()))
        )
        if short or len(words) > MAX_WORDS:
            continue
        if (
            _HYPOTHETICAL.match(sentence)
            or _OPINION_OF_NOW.search(sentence)
            or _NOT_A_STATEMENT.search(sentence)
        ):
            continue
        if _PHATIC.match(sentence) and len(words) < 10:
            continue
        resolved, event_date, on_the_day = resolve_dates(sentence, today)
        # the memory's own date: a day said, never one inside a period the text names
        day_said = event_date if on_the_day else None
        slots = slot_facts(resolved, subject)
        if slots:
            facts += [
                Fact(
                    _with_quotes(text, quotes),
                    "fact",
                    day_said,
                    name,
                    _with_quotes(value, quotes),
                )
                for name, value, text in slots
            ]
            if together := LIVES_WITH.search(resolved):
                said_with = f"I live with {together.group(2)}."
                facts.append(Fact(third_person(said_with, subject), "relation", None))
            continue
        past = (event_date is not None and event_date < today) or bool(_PAST_SAID.search(sentence))
        # as said: in the rewrite "them" is also the user ("My dog loves me" -> "… loves them")
        if _TO_ASSISTANT.search(sentence) or (
            len(said) <= POINTS_BACK_MAX_WORDS
            and _POINTS_BACK.search(_IT_TRADE.sub(r"\1 tech", sentence).rstrip(" .!") + ".")
        ):
            continue
        # "I no longer live in Paris": written as said, and superseding what it denies
        denied, said_past = denial(sentence, subject, today)
        rewritten = _with_quotes(
            third_person(resolved, subject, past=past or said_past).rstrip(" .!") + ".", quotes
        )
        kind = _kind(sentence, event_date, today)
        facts.append(Fact(rewritten, kind, day_said, ends=denied))
    learn()  # what the last sentences told of, for the messages after this one
    return facts
