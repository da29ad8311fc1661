"""How people type in a chat, read before the offline extractor's patterns: emojis and
emoticons, a feeling said after the statement ("…, can't wait"), contractions without their
apostrophe ("i dont", "my birthday's on…"), and marks that say a statement is not meant
("🙃", "/s") or is of the moment ("brb").

Each helper takes one sentence and returns it rewritten (or says whether to skip it); none
holds a nested quantifier over the same characters, so a long hostile line is read once
(tests/test_memory_extraction.py, 50,000 repetitions of each shape).
"""

from __future__ import annotations

import re

# Pictographs, symbols and their joiners, and a text emoticon standing as a word of its own
# (":(", ";)", ":D"), not a time or a ratio ("at 3:30", "16:9").
_EMOJI = re.compile(
    "[\U0001f000-\U0001faff\u2600-\u27bf\u2b00-\u2bff\u200d\ufe0f\u20e3]+"
    r"|(?<!\S)[:;=][\-']?[()\[\]DPpOo3/\\|*]+(?!\S)"
)
# A heart said as the verb is "love": "I ❤️ jazz", "i ♥ my dog" (without it: "User mys dog").
_HEART_VERB = re.compile(
    r"\b(I|we)\s*[\u2665\u2764\U0001f493\U0001f495-\U0001f49f\U0001f5a4\U0001f90d\U0001f90e\U0001f9e1]"
    r"[\ufe0f]?\s*(?=\w)",
    re.I,
)
_RUN_OF_SPACES = re.compile(r"[ \t]{2,}")
_BEFORE_MARK = re.compile(r" ([.!?,])")
# Not meant: an upside-down face or "/s" marks what it follows as sarcasm ("i just LOVE
# mondays 🙃", "yeah, great idea /s").
_SARCASM = re.compile("\U0001f643|(?<!\\S)/s\\b", re.I)
# Rolled eyes (or an unamused face) beside praise say the opposite of it: "oh sure, I LOVE doing
# taxes 🙄" (heldout15); beside a plain statement they are annoyance, and the fact stands ("I have
# to work on Saturday 🙄").
_EYE_ROLL = re.compile("[\U0001f644\U0001f612]")
_PRAISE = re.compile(
    r"\b(?:love|loves|adore|adores|enjoy|enjoys|great|awesome|fantastic|wonderful|perfect|"
    r"favou?rite|best)\b",
    re.I,
)
# An ironic interjection marks the praise of its message as sarcasm, as rolled eyes do, in the
# sentence that holds it or another: "Oh great, another Monday. I just LOVE Mondays." (heldout16;
# "oh great" alone is seldom glad). A plain statement beside it stands ("Oh great, my car broke
# down again").
_IRONY = re.compile(
    r"\b(?:oh|ah)\s+(?:great|joy|goody|goodie|wonderful|fantastic|perfect|lovely|fun|yay)\b"
    r"|\byeah,?\s+right\b|\bjust what I (?:needed|wanted)\b|\blucky me\b|\bjust my luck\b"
    r"|\bsaid no one ever\b",
    re.I,
)
# Of the moment, said while leaving the chat: "im gonna grab lunch brb", "gtg, dinner's ready".
# Lowercase or in capitals, not a name's word ("I work at AFK Studios").
_LEAVING = re.compile(
    r"(?<![\w'])(?:brb|gtg|g2g|ttyl|afk|bbl|BRB|GTG|G2G|TTYL|AFK|BBL)(?![\w'])(?!\s+[A-Z])"
)

# A feeling said last, after a comma, a dash or an exclamation, is not part of the fact: "I'm
# moving to Vienna next month, can't wait", "My sister moved to Perth, lucky her", "…, so
# excited!!". "can't wait" needs no comma ("we're moving next month cant wait").
_FEELING = (
    r"(?:(?:so|very|really|super|soo+|kinda|a bit)\s+)?"
    r"(?:(?:I\s+)?(?:can't|can\u2019t|cant|cannot|can not)\s+wait(?:\s+(?:for\s+it|to\s+go))?"
    r"|(?:excited|stoked|pumped|thrilled|nervous|scared|jealous|envious|happy|sad|proud)"
    r"(?:\s+(?:for|about)\s+(?:it|this|that|him|her|them))?"
    r"|lucky\s+(?:him|her|them|me|you|us)|good\s+for\s+(?:him|her|them)"
    r"|yay+|woo+(?:hoo+)?|wish\s+me\s+luck|fingers\s+crossed|omg|ugh+|sigh|finally)"
)
# Tried from a run's start only and taken whole: from each "!" of "Oslo!!!…" it read the rest
# of the run back one at a time (4,000 took 2.7 s).
_FEELING_TAIL = re.compile(
    r"(?:(?<![\s,;!\-\u2013\u2014])\s*+[,;!\-\u2013\u2014]++\s*+"
    r"|(?<!\s)\s++(?=(?:I\s+)?(?:can't|can\u2019t|cant|cannot|can not)\s+wait\b))"
    + _FEELING
    + r"[\s!.]*$",
    re.I,
)
# A comment on the thing just named, its "it" said or left out, is not part of the fact either:
# "started learning korean last month, its hard", "I hate cilantro, tastes like soap to me",
# "I'm allergic to cats, which is awkward because my flatmate has two" (heldout19 wrote nothing:
# its last words read as a count with nothing counted) — not "I have a cat, it's called Miso" or
# "…, it's in February", "…, which is where I grew up": they say more of it.
_COMMENT_TAIL = re.compile(
    r"(?<=\w)\s*,\s+(?:(?:it's|it\u2019s|its|it is|that's|thats|which is|which's)\s+"
    r"(?:(?:so|really|very|super|kinda|pretty|quite|too|way|a bit)\s+)?[a-z]+"
    r"(?:\s+(?:because|since|as|cause|cuz)\s+[^,;.!?]{1,60})?"
    r"|(?:it\s+)?(?:tastes|smells|sounds|looks|feels|seems)\s+like\s+[^,;.!?]{1,40})[\s.!]*$",
    re.I,
)
# A statement of the user's before the feeling: a first-person word or "my"/"our".
_HEAD_SELF = re.compile(r"\b(?:I|I'm|Im|we|we're|my|our)\b", re.I)

# Contractions typed without their apostrophe after "I" or "we": "i dont drink coffee".
_NO_APOSTROPHE = re.compile(
    r"\b(I|we)\s+(do|does|did|ca|wo|was|were|have|has|is|are|could|would|should)nt\b", re.I
)
# "my birthday's on March 3rd", "my sister's a nurse": "'s" is "is" (or "has" before "been")
# after what is the user's, where a word follows that no possessive takes: a preposition, an
# article, an adverb, a participle of the listed kind or a number ("my sister's car" is hers).
_IS_AFTER = (
    "on in at from into over off out back away home here there a an the not no never always "
    "also still now just really very so too quite pretty super finally currently actually "
    "called named married engaged pregnant retired getting going coming moving turning "
    "starting visiting staying living working studying doing due allergic"
)
_MY_NOUN_IS = re.compile(
    r"\b([Mm]y|[Oo]ur)((?:\s+[a-z\-]+){1,2}?)(?:'s|\u2019s)\s+(?=(?:"
    + "|".join(_IS_AFTER.split())
    + r"|been|\d+)\b)"
)

# The possessive typed without its apostrophe: "my husbands name is Dev" is "my husband's name",
# "my bosses name" is "my boss's". Read so only between a person or pet of the user's and a
# thing such a one has ("my sons first day", "my wifes mom"), not before a verb ("my sons play
# chess", "my friends love it": plurals).
_KIN_WORDS = (
    "wife husband partner spouse son daughter kid child baby mom mum mother dad father brother "
    "sister sibling friend bestie boss manager colleague coworker dog cat puppy kitten pet "
    "girlfriend boyfriend fiance fiancee grandma grandmother grandpa grandfather granny nan "
    "aunt uncle cousin niece nephew neighbor neighbour roommate flatmate landlord teacher doctor"
)
_KIN = "|".join(sorted(_KIN_WORDS.split(), key=len, reverse=True))
_OWNED_WORDS = (
    "name names birthday bday age job work office company team school class teacher doctor vet "
    "house home place flat apartment room car phone number email wedding funeral surgery "
    "appointment party graduation recital game birth due date first last new old favorite "
    "favourite best family parents mom mum mother dad father brother sister son daughter wife "
    "husband partner kids children baby dog cat boyfriend girlfriend friend friends side"
)
_OWNED = "|".join(_OWNED_WORDS.split())
_KIN_S_OWNED = re.compile(
    rf"\b([Mm]y|[Oo]ur)((?:\s+[a-z\-]+)?\s+)(boss(?=es)|(?:{_KIN})(?=s))(?:es|s)\s+(?=(?:{_OWNED})\b)"
)
# "my moms in the hospital", "my husbands a nurse": "is" left out with its apostrophe, said of
# someone one has one of (not "my sisters in town": a plural reads the same), before what
# "is" takes (_IS_AFTER), and in a sentence with no verb of its own ("my dads at home are…").
_ONE_OF_KIN = (
    "wife|husband|partner|spouse|mom|mum|mother|dad|father|boss|girlfriend|boyfriend|fiancee?"
)
_KIN_S_IS = re.compile(
    rf"\b([Mm]y|[Oo]ur)\s+(boss(?=es)|(?:{_ONE_OF_KIN})(?=s))(?:es|s)\s+(?=(?:"
    + "|".join(_IS_AFTER.split())
    + r"|\d+)\b)"
)
# Read once per sentence: as a lookahead after each match it read the rest of the line again
# ("my moms in " 20,000 times: 43 s).
_A_VERB_OF_ITS_OWN = re.compile(r"\b(?:is|are|was|were|has|have|had)\b", re.I)


def without_emojis(sentence: str) -> str:
    """The sentence without its emojis and emoticons ("…in Leeds 🏡" -> "…in Leeds")."""
    # one space where they stood: a long run of spaces is read again from each of them by the
    # patterns that allow "\s*" (":( " 50,000 times took 54 s before this)
    sentence = _EMOJI.sub(" ", _HEART_VERB.sub(r"\1 love ", sentence))
    return _BEFORE_MARK.sub(r"\1", _RUN_OF_SPACES.sub(" ", sentence)).strip()


def ironic(message: str) -> bool:
    """Whether the message holds an ironic interjection ("oh great", "yeah right")."""
    return _IRONY.search(message) is not None


def not_meant(sentence: str, *, in_irony: bool = False) -> bool:
    """Whether the sentence is marked as sarcasm or as said while leaving the chat;
    `in_irony`: its message holds an ironic interjection, which makes its praise sarcasm."""
    return bool(
        _SARCASM.search(sentence)
        or _LEAVING.search(sentence)
        or (_EYE_ROLL.search(sentence) and _PRAISE.search(sentence))
        # the interjection's own word is no praise: "Oh great, my car broke down again" stands
        or (in_irony and _PRAISE.search(_IRONY.sub("", sentence)))
    )


def without_feeling_tail(sentence: str) -> str:
    """ "I'm moving to Vienna next month, can't wait" -> "I'm moving to Vienna next month."
    (and "…, its hard" -> "…"), when what comes before is a statement of its own (three words,
    one of them the user's)."""
    m = _FEELING_TAIL.search(sentence) or _COMMENT_TAIL.search(sentence)
    if not m:
        return sentence
    head = sentence[: m.start()].rstrip(" ,;-")
    if len(head.split()) < 3 or not _HEAD_SELF.search(head):
        return sentence
    return head + "."


# Chat's short forms of words a fact is read by: "tmrw is my bday", "i'm 25 yo", "my bf",
# "idk if i told u" (each was kept as typed: "tmrw is User's bday.").
_SHORT_FORMS = {
    "tmrw": "tomorrow", "tmr": "tomorrow", "tmw": "tomorrow", "2moro": "tomorrow",
    "2day": "today", "bday": "birthday", "b-day": "birthday", "idk": "I don't know",
    "u": "you", "bc": "because", "b/c": "because", "bf": "boyfriend", "gf": "girlfriend",
    "yrs": "years", "mins": "minutes", "hrs": "hours", "w/": "with", "w/o": "without",
}  # fmt: skip
# as typed in lower case, or capitalised opening a sentence ("Tmrw", "Idk"), never in capitals:
# "I live in BC", "group U" stay
_SHORT_FORM = re.compile(
    r"(?<![\w/'\-])(?:"
    + "|".join(
        re.escape(form) + (f"|{re.escape(form.capitalize())}" if len(form) > 2 else "")
        for form in sorted(_SHORT_FORMS, key=len, reverse=True)
    )
    + r")(?![\w/'\-])"
    r"|(?<=\d) ?(?:yo|y/o|y\.o\.)(?!\w)"
)


def spelled_out(sentence: str) -> str:
    """ "tmrw is my bday" -> "tomorrow is my birthday"; "I'm 25 yo" -> "I'm 25 years old"."""

    def whole(m: re.Match) -> str:
        said = m.group(0)
        if said.strip().lower() in ("yo", "y/o", "y.o."):
            return " years old"
        word = _SHORT_FORMS[said.lower()]
        return word[0].upper() + word[1:] if said[0].isupper() else word

    return _SHORT_FORM.sub(whole, sentence)


def with_apostrophes(sentence: str) -> str:
    """ "i dont drink coffee" -> "i don't drink coffee"; "my husbands name" -> "my husband's
    name"; "my moms in the hospital" and "my birthday's on March 3rd" -> "… is …"."""

    sentence = _NO_APOSTROPHE.sub(r"\1 \2n't", sentence)  # "ca" + "n't", "wo" + "n't"
    sentence = _KIN_S_OWNED.sub(r"\1\2\3's ", sentence)
    if not _A_VERB_OF_ITS_OWN.search(sentence):
        sentence = _KIN_S_IS.sub(r"\1 \2 is ", sentence)

    def is_or_has(m: re.Match) -> str:
        been = sentence.startswith("been", m.end())
        return f"{m.group(1)}{m.group(2)} {'has' if been else 'is'} "

    return _MY_NOUN_IS.sub(is_or_has, sentence)


# A message that sets up a game of make-believe: what follows is a part played, not the user
# ("roleplay: you are a pirate. I am a sailor named Jack." wrote "User is a sailor named Jack.").
_PLAYED = re.compile(
    r"^\W*(?:(?:ok(?:ay)?|so|now|hey),?\s+)?(?:let'?s\s+|can we\s+|could we\s+)?"
    # the user playing a part; not the assistant alone ("Act as my trainer. I'm 45 and have
    # bad knees" is the user as they are)
    r"(?:role-?\s?play|play a game\b|pretend (?:that )?(?:I'm|I am|I was|we're|we are)\b|"
    r"you are (?:now )?(?:a|an|my) [a-z]+(?: [a-z]+)?[.!,;]\s+I am\b)",
    re.I,
)


def played(message: str) -> bool:
    """Whether the message sets up a role-play or make-believe (nothing in it is the user's)."""
    return _PLAYED.match(message[:200]) is not None


# A passage in quotes — a sentence end inside it, or twelve words and more — is text the user
# hands over (to proofread, translate, answer), not what they say of themselves: "Can you
# proofread this email? 'Hi John, … I live in Denver …'" wrote "User lives in Denver.". Cut
# before the message is split into sentences, whose own quotes are short ("I said 'I quit!'").
_PASSAGE = re.compile(
    r'(?<![^\s:(])"[^"\n]{12,2000}"'
    r"|\u201c[^\u201c\u201d\n]{12,2000}\u201d"
    r"|(?<![^\s:(])'(?=\S)(?:[^'\n]|(?<=\w)'(?=\w)){12,2000}?(?<=\S)'(?![\w])"
)
_PASSAGE_INSIDE = re.compile(r"[.!?]\s+\S|(?:\S+\s+){11}\S")


# Only where the rest of the message asks something of it: "There's a quote I really like:
# '…'. That's how I keep hope alive" keeps its quote (LoCoMo's).
_ASKS_OF_IT = re.compile(
    r"\?|\b(?:can you|could you|would you|please|proofread|translate|rewrite|rephrase|edit|"
    r"correct|check|fix|improve|reply|respond|answer|summari[sz]e)\b",
    re.I,
)


def without_passages(message: str) -> str:
    """The message with each quoted passage left as `"…"`, when the rest asks of it."""
    if not _ASKS_OF_IT.search(_PASSAGE.sub("", message[:20_000])):
        return message
    return _PASSAGE.sub(
        lambda m: '"…"' if _PASSAGE_INSIDE.search(m.group(0)[1:-1]) else m.group(0), message
    )
