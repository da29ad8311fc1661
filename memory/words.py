"""Common English words that say nothing of what a text is about, for the readers that compare
texts by their other words: the offline extractor's facts (offline.content_words), a query's
search terms (retrieval.terms), a forgotten fact's rewordings (extraction.rewording). Each adds
the words of its own kind of text to these. And the names of the days and months, which the
offline extractor's dates and names read and the search's kind of answer asked (a time)."""

from __future__ import annotations

# Articles, conjunctions, prepositions, auxiliaries and modals, demonstratives, "it" and "they"
FUNCTION_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "so",
        "to",
        "of",
        "in",
        "on",
        "at",
        "for",
        "with",
        "from",
        "by",
        "about",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "has",
        "have",
        "had",
        "do",
        "does",
        "did",
        "will",
        "would",
        "can",
        "could",
        "this",
        "that",
        "these",
        "those",
        "it",
        "its",
        "their",
        "they",
        "them",
    ]
)
# The people a question or a summary speaks of. Not in the offline extractor's comparisons: its
# facts name the user in the third person ("User walks her dog"), and it was never measured
# with them left out.
PERSONAL_PRONOUNS = frozenset(
    ["i", "me", "my", "you", "your", "he", "she", "her", "his", "we", "our"]
)

# The days and the months, in lower case and in order.
WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
MONTHS = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
]
