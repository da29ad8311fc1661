"""From a message to its facts: its sentences (each cut into statements by `clauses`), what is
no statement of the user's (requests, hypotheticals, what is said to the assistant, code, pasted
text), and `extract`, which runs every step.
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
from memory.background.extraction.offline.clauses import AGE_ALONE, clauses
from memory.background.extraction.offline.dates import resolve_dates
from memory.background.extraction.offline.fact import Fact
from memory.background.extraction.offline.named import Known
from memory.background.extraction.offline.negations import denial
from memory.background.extraction.offline.patterns import (
    ASSISTANT_LABEL,
    LEAD_IN,
    MAX_WORDS,
    OPENER,
    PERIOD,
    SELF_SUBJECT,
    TRAIT,
)
from memory.background.extraction.offline.person import (
    capitalised,
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
# Said to the assistant about the conversation, or not a statement at all: a question asked
# indirectly, a counterfactual ("I'd live in Paris if I were rich"), a reply to what the
# assistant said, the assistant's words said back ("You said: I live in Paris", "Assistant: I
# live in Paris": its "I" is not the user).
_NOT_A_STATEMENT = re.compile(
    r"\bif (?:I|we) were\b|^I (?:wonder|was wondering|am wondering)\b|^I'm wondering\b"
    r"|\byou (?:said|say|wrote|write|mentioned|claimed|suggested|assumed|thought|think)\b"
    rf"|^{ASSISTANT_LABEL}"
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
_TO_ASSISTANT = re.compile(r"\b(?:you|your|yours|yourself)\b", re.I)
# The same label before a dash ("Quick note — I'm allergic to shellfish", "Update - I got the
# job": heldout18 wrote "Quick note — User is allergic…"): a few words that hold neither the
# user nor the assistant, so "I'm beat — I worked all night" keeps both of its parts.
_DASH_LEAD_IN = re.compile(
    r"^(?!(?:[a-z']+\s+){0,3}(?:i|me|my|we|us|our|you|your)(?:'[a-z]+)?[!,]?\s)"
    r"[a-z][a-z']*(?:\s+[a-z][a-z']*){0,3}[!,]?\s+(?:-{1,2}|[\u2013\u2014])\s+"
    rf"(?={SELF_SUBJECT})",
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
    rf"(?:\s+that)?\s*[,:!\-\u2013\u2014]?\s+(?={SELF_SUBJECT})",
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
    rf"(?:\s+that)?\s*,?\s+(?={SELF_SUBJECT})",
    re.I,
)
# Nor does an intensifier count toward the three-word floor: "I'm so tired" is "I'm tired".
_INTENSIFIERS = {"so", "very", "super", "soo", "sooo"}
# ... but these say how the user works or plays, the fact itself: "I work remotely" (it wrote
# nothing: two words once the adverb was set aside, as "I'm just curious" is)
_TELLING_ADVERBS = {"remotely", "professionally", "competitively", "freelance", "independently"}
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
# "Yesterday I saw Anna" -> "I saw Anna yesterday": a fact starts with its subject, and the
# period is resolved where it stands last ("User saw Anna on 7 May").
_LEADING_PERIOD = re.compile(rf"^({PERIOD}),?\s+(?={SELF_SUBJECT})", re.I)


# "Tomorrow is my birthday": the user's thing first, as "My birthday is tomorrow" says it (it
# was "On 8 December 2026 is User's birthday.")
_PERIOD_IS_MINE = re.compile(
    rf"^({PERIOD})(?:['\u2019]s|,?\s+(is|was|will be))\s+((?:my|our)\s+[^,;!?]{{1,80}}?)\s*[.!]*$",
    re.I,
)


# "Since I'm diabetic, what snacks can I eat?": the question gone, its reason is a statement of
# its own (it was "Since User is diabetic.").
_REASON_ALONE = re.compile(
    r"^(?:since|given that|because|seeing as|now that|as)\s+"
    r"((?:I|I'm|I've|I am|my|My|we|we're|our|Our)\b[^,;:?]{3,200}?),\s+"
    r"(?:what|how|can|could|should|would|which|where|when|who|any|do|does|is|are|will)\b"
    r"[^?]{0,300}\?\s*$",
    re.I,
)


def _reason_alone(sentence: str) -> str | None:
    m = _REASON_ALONE.match(sentence)
    return f"{m.group(1)}." if m else None


def _period_last(sentence: str) -> str:
    if mine := _PERIOD_IS_MINE.match(sentence):
        # "Today's my birthday" too (it was "On 8 December 2026's User's birthday.")
        owned, be, period = mine.group(3), mine.group(2) or "is", mine.group(1).lower()
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
        sentence, quotes = _set_quotes_aside(
            _reason_alone(said_sentence) or TRAILING_QUESTION.sub(".", said_sentence)
        )
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
        sentence = _period_last(_DASH_LEAD_IN.sub("", LEAD_IN.sub("", sentence)))
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
            for bare in (w.strip(",.!").lower(),)
            if (not is_adverb(bare) or bare in _TELLING_ADVERBS) and bare not in _INTENSIFIERS
        ]
        short = len(said) < 3 and not (
            # "Now I'm unemployed", "I'm single now": a trait, its adverb aside
            TRAIT.match(" ".join(said))
            or NAME_INTRO.match(sentence)
            or AGE_ALONE.match(" ".join(_NOW.sub("", sentence).split()))
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
        # a sentence begins with a capital, its opener gone or not ("Yeah, that pic was from a
        # show I went to" was "that pic was…"); not a word spelled with one inside ("iPhone")
        if rewritten[:1].islower() and not rewritten[1:2].isupper():
            rewritten = rewritten[0].upper() + rewritten[1:]
        kind = _kind(sentence, event_date, today)
        facts.append(Fact(rewritten, kind, day_said, ends=denied))
    learn()  # what the last sentences told of, for the messages after this one
    return facts
