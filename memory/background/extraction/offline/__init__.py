"""The offline extractor: useful memories from first-person statements, without an LLM.

It keeps what a person says about themselves — facts, preferences, plans, relations and dated
events — rewritten in the third person ("I moved to Berlin" -> "Sam moved to Berlin"), with
relative dates resolved against the message's date. Facts that fill a slot (where someone lives,
works, their name...) carry it, so a newer value supersedes the older memory.

The steps, by module: `statements` splits a message into sentences, drops what is no
statement of the user's and runs the rest (`extract`); `clauses` cuts a sentence into the
user's statements; `requests` says what is asked, not
stated; `subjectless` gives a sentence that left out its "I" one back; `person` rewrites it in
the third person (and reads a message typed without capitals); `dates` resolves its relative
dates; `slots` finds the one-valued facts; `negations` what a statement says is no longer so;
`named` reads a sentence about one the user has told of by name ("Pepper hates thunderstorms")
as theirs; `fact` holds what comes out; `patterns` what several of them read.
"""

from memory.background.extraction.offline.clauses import clauses
from memory.background.extraction.offline.fact import Ends, Fact, content_words, same_fact
from memory.background.extraction.offline.named import Known, names_opening
from memory.background.extraction.offline.negations import ends
from memory.background.extraction.offline.statements import extract, sentences

__all__ = [
    "Ends",
    "Fact",
    "Known",
    "clauses",
    "content_words",
    "ends",
    "extract",
    "names_opening",
    "same_fact",
    "sentences",
]
