"""A first-person statement in the third person ("I drink oat milk in my coffee" -> "User
drinks oat milk in their coffee"), and a message typed without capitals read as if it had them.
"""

from __future__ import annotations

import re

from memory.background.extraction.offline.patterns import ADVERBS, BASE_IN_ED, OPENER
from memory.background.extraction.offline.slots import a_name

_IRREGULAR = {"have": "has", "do": "does", "go": "goes", "am": "is", "don't": "doesn't"}
_IRREGULAR |= {"haven't": "hasn't", "'m": "is"}
# already in the third person, as a learner may type it ("i has two brothers" was "hases")
_IRREGULAR |= {"has": "has", "is": "is", "does": "does", "goes": "goes", "hasn't": "hasn't"}
# chat's contractions: "I wanna learn piano" -> "User wants to learn piano" ("wannas" before)
_IRREGULAR |= {"wanna": "wants to", "gotta": "has to"}
# "we" read as "I" with a word between ("who we really are", "we both were"): the verb is the
# plural's ("who Melanie really ares" in LoCoMo's facts)
_IRREGULAR |= {"are": "is", "were": "was", "aren't": "isn't", "weren't": "wasn't"}
# Words after "I" that are not a present-tense verb to conjugate: modals, past forms, adverbs.
KEEP = set(
    [
        "can",
        "can't",
        "cannot",
        "could",
        "couldn't",
        "will",
        "won't",
        "would",
        "wouldn't",
        "should",
        "shouldn't",
        "must",
        "mustn't",
        "may",
        "might",
        "shall",
        "was",
        "wasn't",
        "did",
        "didn't",
        "had",
        "hadn't",
        "used",
        "got",
        "went",
        "made",
        "took",
        "saw",
        "met",
        "found",
        "bought",
        "ran",
        "wrote",
        "began",
        "came",
        "felt",
        "left",
        "lost",
        "thought",
        "told",
        "said",
        "sold",
        "spent",
        "won",
        "gave",
        "knew",
        "heard",
        "kept",
        "built",
        "brought",
        "taught",
        "caught",
        "fell",
        "flew",
        "drove",
        "ate",
        "drank",
        "sang",
        "swam",
        "chose",
        "broke",
        "became",
        "grew",
        "threw",
        "woke",
        "wore",
        "sat",
        "stood",
        "understood",
        "forgot",
        "fought",
        "hung",
        "led",
        "meant",
        "paid",
        "rode",
        "rose",
        "sent",
        "shot",
        "slept",
        "spoke",
        "stole",
        "stuck",
        "struck",
        "swore",
        "tore",
        "wept",
        "wound",
        "held",
        "lent",
        "lit",
        "dug",
        "drew",
        "hid",
        "bit",
        "bent",
        "fed",
        # the British pasts and a verb's "re-" past (LoCoMo: "Jon learnts that…", "John
        # retooks the aptitude test")
        "learnt",
        "dreamt",
        "burnt",
        "spelt",
        "spilt",
        "leapt",
        "knelt",
        "retook",
        "rewrote",
        "rebuilt",
        "redid",
        "overcame",
        "outgrew",
    ]
)
# "-ly" words that are verbs, not adverbs
_LY_VERBS = {"apply", "rely", "reply", "fly", "supply", "multiply", "ally", "bully", "tally"}
_NOT_I = r"(?!(?:I|I'm|Im|I've|I'd|I'll)\b)"
# "no longer" is one adverb: "I no longer eat meat" -> "User no longer eats meat" (not "noes")
_SUBJECT_I = re.compile(
    r"\b(?:I am|I'm|Im|I've|I'd|I'll|I)\b"
    rf"(?:\s+{_NOT_I}(no longer|[A-Za-z']+))?(?:\s+{_NOT_I}([A-Za-z']+))?"
)
_CONTRACTIONS = {
    "i am": "am",
    "i'm": "am",
    "im": "am",
    "i've": "have",
    "i'd": "would",
    "i'll": "will",
}
_THEY = {"am": "are", "was": "were", "have": "have", "would": "would", "will": "will"}


# Verbs whose past form is their present: after a past date ("I quit smoking last year") they
# are past, and stay as said.
_SAME_IN_PAST = {
    "quit", "put", "set", "cut", "hit", "let", "hurt", "shut", "cost", "bet", "split",
    "spread", "read", "burst", "cast", "upset", "broadcast", "forecast",
}  # fmt: skip
# "we" speaks for the user too ("We adopted a cat" is about them): its forms are read as "I"'s.
_WE = {
    "we": "I", "we're": "I'm", "we've": "I've", "we'd": "I'd", "we'll": "I'll",
    "our": "my", "ours": "mine", "us": "me", "ourselves": "myself",
    # the verb with it: "We are moving" was "I are moving", written "User ares moving"
    "we are": "I am", "we were": "I was",
    # and the word that counts them: "We both hate crowds" was "User boths hate crowds"
    "we both": "I", "we all": "I",
    # and what each of "us" has one of: "a part of our lives" was "a part of Nate's lives"
    "our lives": "my life", "our own lives": "my own life", "our true selves": "my true self",
}  # fmt: skip
# the longest first: "we" alone would take "We're" and leave "'re" ("User're")
_WE_FORMS = re.compile(
    r"\b(?:" + "|".join(re.escape(w) for w in sorted(_WE, key=len, reverse=True)) + r")\b", re.I
)
# "My wife and I": the user first, the other by a pronoun ("User and their wife").


def _compound_before(sentence: str, at: int) -> bool:
    """Whether the text before the "I" at `at` ends on a compound subject's first part: "and"
    after at most three words since the sentence's start or a comma ("My kids and I", "Tom,
    Anna and I"; not "My mom lives in Lisbon and I"). Read from the 60 characters before it
    only: it is asked at each "I" of the sentence."""
    tail = sentence[max(0, at - 60) : at].rstrip()
    if not tail.lower().endswith(" and"):
        return False
    comma = tail.rfind(",")
    if comma < 0 and at > 60:
        return False
    return 1 < len(tail[comma + 1 :].split()) <= 4  # not ", and I": a clause's "and"


# "My wife and I", "My partner Alex and I" (the user first: "User and their partner Alex")
_COMPOUND_I = re.compile(r"\b[Mm]y ((?:[a-z'\-]+ ){0,2}[a-z'\-]+(?: [A-Z][a-z]+)?) and I\b")
# "Me and my sister run a bakery", "me and Tom went hiking": chat's compound subject, the user
# first (it was "Me and User's sister run a bakery.").
_ME_AND = re.compile(
    r"^[Mm]e and ((?:my|our) (?:[a-z'\-]+ ){0,2}[a-z'\-]+|[A-Z][a-z]+)\b(?= [a-z])"
)


def is_adverb(word: str) -> bool:
    low = word.lower()
    return low in ADVERBS or (low.endswith("ly") and low not in _LY_VERBS and len(low) > 4)


def _last_before_a_past(words: list[str]) -> bool:
    """ "last" or "first" before a past is an adverb: "since I last talked" (LoCoMo's "since we
    last spoke", 22 of its turns, was "since Nate lasts spoke"; "Joanna firsts watched it")."""
    after = words[1].lower()
    return words[0].lower() in ("last", "first") and (after.endswith("ed") or after in KEEP)


def conjugate(verb: str, past: bool = False) -> str:
    """A present-tense verb after "I" -> its third-person singular form ("drink" -> "drinks");
    `past`: the sentence is dated before today, so a verb whose past is its present stays."""
    low = verb.lower()
    if low in _IRREGULAR:
        return _IRREGULAR[low]
    # said in capitals for emphasis ("I LOVE jazz"), not a name: it agrees, in lower case
    if verb.isupper() and low in COMMON_VERBS:
        verb = low
    if (
        low in KEEP
        or (past and low in _SAME_IN_PAST)
        or not low.isalpha()
        or not verb.islower()
        or (low.endswith("ed") and low not in BASE_IN_ED)
        or len(low) < 2
    ):
        return verb
    if low.endswith(("s", "sh", "ch", "x", "z", "o")):
        return verb + "es"
    if len(low) > 2 and low.endswith("y") and low[-2] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


# Common verbs in their base form. After "and"/"or" in a statement whose first verb agreed with
# the user, such a verb shares that subject and agrees too ("I have diabetes and use a pump" ->
# "User has diabetes and uses a pump"); a word not listed here is left as said ("I like tea and
# coffee in the morning").
_COMMON_VERB_WORDS = (
    "use have take make go get play work live eat drink watch read write run walk drive ride "
    "cook bake teach study love like hate enjoy prefer need want own keep collect build grow "
    "practice practise visit volunteer coach train swim paint draw sing dance speak wear bring "
    "buy sell help care spend travel hike climb knit sew listen follow support manage lead "
    "attend organize organise host fix do try plan save share raise adopt foster mentor "
    "tutor design code program develop restore repair brew ferment grill bike cycle ski surf "
    "skate row jog lift meditate pray blog stream record film shoot edit"
)
COMMON_VERBS = set(_COMMON_VERB_WORDS.split())
_SECOND_VERB = re.compile(
    r"\b(and|or) ([a-z]+)\b(?= (?:a|an|the|my|some|to|in|on|at|with|for|from|about|every|all|"
    r"two|three|several|lots|most|our|it|them|him|her)\b)"
)


def _second_verbs(text: str) -> str:
    """Conjugate the listed verbs after "and"/"or" (not inside "to cook and bake")."""

    def agree(m: re.Match) -> str:
        before = text[: m.start()]
        if m.group(2) not in COMMON_VERBS or re.search(r"\bto [a-z]+ $", before):
            return m.group(0)
        return f"{m.group(1)} {conjugate(m.group(2))}"

    return _SECOND_VERB.sub(agree, text)


# "I'm a vegan, have been for 3 years": the user's again, said without the "I" (it was "User
# is a vegan, have been for 3 years.")
_HAVE_BEEN_SINCE = re.compile(r"(, (?:and )?)(?:have|'ve) (been|done)\b(?= (?:for|since|ever)\b)")


def _as_i(m: re.Match) -> str:
    word = m.group(0)
    if len(word) > 1 and word.isupper():  # an abbreviation: "I live in the US"
        return word
    said = _WE[word.lower()]
    return said if said.startswith("I") or not word[0].isupper() else said.capitalize()


def third_person(sentence: str, subject: str, *, past: bool = False) -> str:
    """ "I drink oat milk in my coffee" -> "User drinks oat milk in their coffee".

    The first mention names the subject ("User", "User's"); later ones in the sentence are
    pronouns (they, their, them), with the verb agreeing. "My sister and I went" -> "User and
    their sister went"; "we" is read as "I" ("We adopted a cat" -> "User adopted a cat").
    `past`: the sentence is dated before today (for "quit", "put", "read"...).
    """
    sentence = _COMPOUND_I.sub(lambda m: f"{subject} and my {m.group(1)}", sentence)
    sentence = _ME_AND.sub(lambda m: f"{subject} and {m.group(1)}", sentence)
    sentence = _WE_FORMS.sub(_as_i, sentence)
    sentence = re.sub(r"\bI were\b", "I was", sentence)
    state = {"named": False, "possessed": False, "agreed": False}

    def i_clause(m: re.Match) -> str:
        token = "i am" if m.group(0).lower().startswith("i am") else m.group(0).split()[0].lower()
        words = [w for w in (m.group(1), m.group(2)) if w]
        contraction = _CONTRACTIONS.get(token)
        # "my kids and I are": a compound subject keeps its plural verb; not after a clause of
        # its own ("My mom lives in Lisbon and I visit her", kept whole: "User visit her")
        compound = _compound_before(sentence, m.start())
        pronoun = state["named"]
        who = "they" if pronoun else subject
        state["named"] = True
        if contraction:  # I'm / I've / I'd / I'll / I am
            verb = _THEY[contraction] if pronoun or compound else conjugate(contraction)
            return " ".join([who, verb, *words])
        if not words:
            return who
        out = [who]
        rest = list(words)
        if len(rest) > 1 and (is_adverb(rest[0]) or _last_before_a_past(rest)):
            out.append(rest.pop(0))
        # a later "I" is "they": its verb plural ("since they were a kid"), only "was" differs
        if pronoun:
            verb = "were" if rest[0].lower() == "was" else rest[0]
        else:
            verb = rest[0] if compound else conjugate(rest[0], past)
        state["agreed"] = state["agreed"] or verb != rest[0]
        out.append(verb)
        out += rest[1:]
        return " ".join(out)

    text = _SUBJECT_I.sub(i_clause, sentence)
    if state["agreed"]:
        text = _second_verbs(text)
    if text.startswith(subject + " "):
        text = _HAVE_BEEN_SINCE.sub(r"\1has \2", text)

    def possessive(m: re.Match) -> str:
        if state["named"] or state["possessed"]:
            return "Their" if m.group(0)[0] == "M" and m.start() == 0 else "their"
        state["possessed"] = True
        return f"{subject}'s"

    # Walk the text once, left to right, so "first mention" means what it says.
    out, pos = [], 0
    mention = re.compile(rf"\b{re.escape(subject)}\b|\b[Mm]y\b|\bmine\b|\bmyself\b|\bme\b")
    state["named"] = False
    for m in mention.finditer(text):
        out.append(text[pos : m.start()])
        word = m.group(0)
        if word == subject:
            state["named"] = True
            out.append(word)
        elif word.lower() == "my":
            out.append(possessive(m))
        elif word == "mine":
            out.append("theirs" if state["named"] or state["possessed"] else f"{subject}'s")
            state["possessed"] = True
        else:  # me, myself
            if state["named"] or state["possessed"]:
                out.append("themselves" if word == "myself" else "them")
            else:
                out.append(subject)
            # named now: a later "myself" or "my" is theirs ("Dancing for me is a way to
            # express myself" was "… for Jon is a way to express Jon")
            state["named"] = True
        pos = m.end()
    out.append(text[pos:])
    return "".join(out)


# "i" as the pronoun, in any message ("i live in berlin", "and so do i"), not a letter of
# something else ("i.e.", "part-i", "/i/", "`i`").
_LOWER_I = re.compile(r"(?<![\w'\u2019\-./@#`])i\b(?![.\-/]\w)(?!`)")
# "im" for "I'm" ("hi im lena", "im a nurse and im from cork"), where a statement starts: the
# message's or a sentence's start, after a comma, a greeting or a joining word. Not elsewhere:
# "im" is also German ("ich bin im Büro").
_LOWER_IM = re.compile(
    r"(^|[.!?,;:]\s*|\b(?:and|but|so|hi|hey|hiya|hello|yo|ok|okay|yeah|yes|well|oh|lol|btw|"
    r"because|cause|cos|also|there|now)\s+)im\b(?![.\-/'\u2019@]\w)",
    re.I | re.M,
)
# Inside a sentence too, before a word German's "im" never takes ("so yeah im a nurse now",
# "honestly im a huge fan", "i think im getting sick"; not "ich bin im büro", "im Januar").
_INNER_IM = re.compile(
    r"\bim(?=\s+(?:a|an|the|not|no|so|just|really|very|also|still|now|always|never|kinda|"
    r"pretty|super|totally|from|in|at|on|into|gonna|going|getting|trying|doing|working|living|"
    r"moving|staying|looking|learning|studying|thinking|allergic|married|engaged|single|[0-9]+)\b)"
)
# Where a slot's value follows in an all-lowercase message ("i live in berlin", "i work at
# acme", "my name is sam"): the words after it, up to three, capitalised as a name would be.
_VALUE_CUE = re.compile(
    r"\b(?:(?:live|living|based|moved|moving|relocated)\s+(?:in|to|from)"
    r"|(?:moved|relocated)\s+(?:out\s+of|away\s+from)"
    r"|(?:work|working)\s+(?:at|for)|(?:a\s+)?job\s+(?:at|with)|name\s+is)\s+"
)
_LOWER_WORD = re.compile(r"[a-z][a-z'\-]*")
# Not a name's first word: a place or employer named by a common noun ("i live in a flat",
# "i work for myself") is said as it is.
_NOT_A_VALUE_START_WORDS = (
    "a an the my our his her their your this that these those some home here there myself "
    "ourselves it them him one"
)
_NOT_A_VALUE_START = set(_NOT_A_VALUE_START_WORDS.split())
# A name ends where these start: "i live in berlin with my wife", "i work at acme now".
_AFTER_A_VALUE_WORDS = """
    and but or so now with since for as at in on near by from to because until last next this
    these those then anymore today yesterday tomorrow currently still again too though while
    when where which who that if after before i im i'm we my our right remotely full part
    during every each since these days is was are were has have had who's
    """
_AFTER_A_VALUE = set(_AFTER_A_VALUE_WORDS.split())


def _value_words(text: str, at: int) -> list[re.Match]:
    """The words of a name that starts at `at`, up to three (none when it is no name)."""
    taken: list[re.Match] = []
    while len(taken) < 3:
        word = _LOWER_WORD.match(text, at)
        if not word or word.group(0) in _AFTER_A_VALUE:
            break
        if not taken and word.group(0) in _NOT_A_VALUE_START:
            break
        taken.append(word)
        at = word.end()
        if text[at : at + 1] != " ":
            break
        at += 1
    return taken


# A move said with a dash or an ellipsis ("I moved – to Berlin", "we're moving - Lisbon next
# month", "we finally moved… Copenhagen!") is one said with "to": the place is read as a move's.
_DASH_MOVE = re.compile(
    r"\b(moved|moving|relocated|relocating)\s*(?:[-\u2013\u2014]+|\u2026|\.{2,})\s*(?:to\s+)?"
    r"(?=([A-Za-z][\w'\-&]*))",
    re.I,
)


def dash_moves(text: str) -> str:
    """ "I moved – to Berlin" -> "I moved to Berlin", where a place follows the dash: a name,
    or in a message without capitals a word that can start one ("i moved - to montreal")."""
    lowercase = not any(c.isupper() for c in text.replace("I", ""))

    def to(m: re.Match) -> str:
        word = m.group(2)
        place = word[0].isupper() or (
            lowercase and word not in _NOT_A_VALUE_START and word not in _AFTER_A_VALUE
        )
        return f"{m.group(1)} to " if place and word != "I" else m.group(0)

    return _DASH_MOVE.sub(to, text)


# "i'm sam" in a message without capitals: an introduction where it opens the message or a
# sentence, or follows a greeting, and its one word ends the statement or its first part.
_LOWER_INTRO = re.compile(
    r"\b(?:I'm|I am) ([a-z]+(?:-[a-z]+)?)(?=\s*(?:[.!,;]|$)|\s+(?:and|from|here|btw|by the way)\b)"
)
# Words after "i'm" that say how or where one is, not who ("i'm bored", "i'm sick"); the
# capitalised "I'm ..." ones (slots._NOT_NAMES, TRAIT) are not names either.
_LOWER_NOT_NAME_WORDS = """
    busy hungry thirsty sleepy angry lucky sick ill cold hot warm cool stuck lost late early
    free off on out in up down away awake asleep alive dead drunk high broke fat old young
    sore nervous anxious afraid scared upset mad curious serious bad worse better best okay
    alright right wrong confused bored stressed worried excited exhausted in-between
    lonely sorry crazy lazy silly funny shy ugly guilty healthy moody cranky grumpy sad
    done good great fine well ok glad happy tired ready new back home here there sure pumped
    gay straight bi trans queer male female human vegan veggie pescetarian jealous fed
    interested keen lost open close closer far near next last first second third behind ahead
    in-love allergic active alive sensitive positive negative weird normal unwell
    welsh scots cornish
    chill lit shook hangry toast game beat spent wiped wrecked stuffed full gutted knackered
    cooked dope sus salty woke basic extra savage legit fab
    it me you him her them us this that what who so too like gonna wanna gotta kinda sorta
    literally honestly seriously totally basically obviously probably definitely actually
    lol lmao omg idk tbh imo jk afk brb btw fyi ikr smh nvm
    """
_LOWER_NOT_NAMES = set(_LOWER_NOT_NAME_WORDS.split())


def _lower_name(word: str) -> bool:
    """Whether the one word after a lowercase "i'm" can be a first name ("sam", not "bored")."""
    return (
        len(word) > 2
        and word not in _LOWER_NOT_NAMES
        and not word.endswith(("ed", "ing", "ful", "ous", "ive", "less", "able", "ible", "est"))
        and a_name(word)
    )


def _lower_introductions(text: str) -> str:
    out, pos = [], 0
    for m in _LOWER_INTRO.finditer(text):
        # what comes before, read back a short way only: an opener is short
        start = m.start()
        before = text[max(0, start - 80) : start].rstrip()
        opens = before.endswith((".", "!", "?")) or (
            start <= 80 and (not before or OPENER.fullmatch(before + " "))
        )
        if opens and _lower_name(m.group(1)):
            out += [text[pos : m.start(1)], m.group(1).capitalize()]
            pos = m.end(1)
    out.append(text[pos:])
    return "".join(out)


# "i m from india": the apostrophe typed as a space
_I_M = re.compile(r"\bI m\b(?= [a-z])")


def capitalised(text: str) -> str:
    """An all-lowercase message, its pronoun "i" and the names a slot reads capitalised."""
    text = _INNER_IM.sub("I'm", _LOWER_IM.sub(r"\1I'm", _LOWER_I.sub("I", text)))
    text = _I_M.sub("I'm", text)
    if any(c.isupper() for c in text.replace("I", "")):
        return text
    text = _lower_introductions(text)
    out, pos = [], 0
    for cue in _VALUE_CUE.finditer(text):
        if cue.start() < pos:
            continue
        taken = _value_words(text, cue.end())
        # "moved from london to paris": the second place too
        if taken and "from" in cue.group(0) and text.startswith(" to ", taken[-1].end()):
            taken += _value_words(text, taken[-1].end() + 4)
        for word in taken:
            out.append(text[pos : word.start()])
            out.append(word.group(0).capitalize())
            pos = word.end()
    out.append(text[pos:])
    return "".join(out)
