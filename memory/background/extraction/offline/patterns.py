"""Patterns and word lists that more than one step of the offline extractor reads: a
place's name, the traits a two-word statement may state, what is said before a statement, the
adverbs a verb keeps beside it.
"""

from __future__ import annotations

import re

# A name's word may hold "&" ("AT&T") or end on an abbreviation's period ("St. Louis"; a
# sentence never ends there, see statements._SENTENCE).
CITY = r"([A-Z][\w'\-&]+(?:\.(?= [A-Z]))?(?:\s+[A-Z][\w'\-&]+(?:\.(?= [A-Z]))?){0,3})"
ADVERBS = set(
    [
        "no longer",
        "really",
        "least",  # "where I least expect it" (LoCoMo: "where Caroline leasts expect it")
        "almost",
        "nearly",
        "also",
        "just",
        "still",
        "usually",
        "always",
        "never",
        "often",
        "now",
        "actually",
        "definitely",
        "sometimes",
        "rarely",
        "seldom",
        "already",
        "even",
        "only",
        "mostly",
        "generally",
        "normally",
        "totally",
        "absolutely",
        "truly",
        "recently",
        "finally",
        "currently",
        "personally",
        "occasionally",
        "typically",
        "basically",
    ]
)
# Two words are too few for a statement ("I agree", "I'm tired") unless the second is a lasting
# trait of the person: diet, health, faith, situation.
TRAIT = re.compile(
    r"^(?:I'm|Im|We're|We are) (vegetarian|vegan|pescatarian|diabetic|celiac|coeliac|asthmatic|"
    r"epileptic|pregnant|retired|unemployed|married|engaged|divorced|widowed|single|sober|teetotal|"
    r"left-handed|right-handed|colou?rblind|deaf|blind|autistic|dyslexic|atheist|agnostic|"
    r"christian|catholic|muslim|jewish|hindu|buddhist|sikh|vaccinated|adopted|bilingual|"
    r"trilingual|disabled|self-employed|homeschooled|nonbinary|non-binary|gay|lesbian|bisexual|"
    r"introverted|extroverted|neurodivergent|immunocompromised)[.!]?$",
    re.I,
)
# Said before a statement, not part of it: "Ugh, my flight…", "Honestly I'm…", "Nevermind, I…",
# "Hey there, I'm…".
OPENER = re.compile(
    r"^(?:(?:ugh|oh|ok|okay|well|hmm+|haha|lol|wow|yeah|yes|sure|no(?! longer\b)|nah|honestly|"
    # "so" opens a sentence before a comma or a clause's subject or time, not where it says how
    # much: "So much has happened" was "much has happened", "So far, so good" "far, so good"
    r"so(?=[,!]|\s+(?:I|I'm|I've|I'd|I'll|i|im|my|we|we're|we've|our|yeah|yea|anyway|basically"
    r"|then|now|um|uh|this|last|yesterday|today|tonight)\b)|"
    r"actually|"
    r"anyway|anyways|nevermind|never mind|btw|by the way|fyi|sorry|oops|alright|right|wait|"
    r"quick one|funny enough|to be honest|long story short|tbh|ngl|lowkey|"
    # what only says why the rest is told: "For context I'm 52" (heldout22 wrote "For context
    # User is 52")
    r"for context|for reference|for the record|fwiw|"
    # an exclamation before a comma: "Oh great, my car broke down again" (heldout16's irony)
    r"(?:great|perfect|wonderful|fantastic|lovely|joy)(?=[,!])|"
    r"(?:hi|hello|hey|hiya|yo|greetings)(?: there| all| everyone)?)\b"
    # or a dash: "quick one — I'm allergic to shellfish" (heldout16)
    r"(?:[,:!]|\s+[-\u2013\u2014])?\s+)+",
    re.I,
)

# Base forms that end like a past tense: "I need" -> "User needs", not "User need".
BASE_IN_ED = {"need", "feed", "breed", "bleed", "speed", "succeed", "proceed", "exceed"}
BASE_IN_ED |= {"seed", "weed", "heed", "shed", "shred", "wed", "embed"}

# Said by the assistant, as a label: its "I" is not the user.
ASSISTANT_LABEL = r"(?:assistant|ai|bot|chatbot|chatgpt|gpt|claude|gemini|copilot)\s*:"
# More words than a statement about oneself has: a paste, a story.
MAX_WORDS = 80
# A word of when a statement may open on ("Yesterday I saw Anna"), and the user as a subject.
PERIOD = (
    r"(?:yesterday|today|tomorrow|tonight|this morning|this evening|last night|"
    r"(?:last|this|next) (?:summer|winter|spring|autumn|fall|year|month|week|weekend))"
)
SELF_SUBJECT = r"(?:I|I'm|I've|my|My|we|We|we're|we've|our|Our)\b"
# A label before a statement ("Quick background: I'm a nurse", "Here's a long one: I've…"),
# not the assistant's name or what it said ("Assistant: I…", "You said: I…": not the user).
LEAD_IN = re.compile(
    rf"^(?!{ASSISTANT_LABEL})(?![^:\n]*\byou\b)[^:\n]{{1,40}}:\s+(?={SELF_SUBJECT})", re.I
)

# A word that names a person, by its ending ("teacher", "pharmacist", "vegetarian", "diabetic",
# "student", "employee") or one of these; not these, which end alike ("As a result, I…", "As a
# reminder, I…", "Been a rollercoaster").
_ROLE_ENDING = re.compile(r"(?:er|or|ist|ian|ant|ent|ic|ee|eur|ess|ive)$")
_ROLE_WORDS = (
    "vegan mom mum dad parent nurse chef medic nanny vet coach cook introvert extrovert expat "
    "coeliac celiac muslim jew hindu sikh brit scot kiwi nerd geek fan widow widower"
)
_NOT_A_ROLE_WORDS = (
    "matter reminder teenager youngster starter number order letter answer favor favour "
    "precaution consequence percent whole rule result kid child baby toddler teen boy girl "
    "disaster rollercoaster lifesaver changer bummer"
)
_ROLE = set(_ROLE_WORDS.split())
_NOT_A_ROLE = set(_NOT_A_ROLE_WORDS.split())


def names_a_person(word: str) -> bool:
    low = word.lower()
    return low not in _NOT_A_ROLE and (low in _ROLE or bool(_ROLE_ENDING.search(low)))
