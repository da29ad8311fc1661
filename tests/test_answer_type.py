"""The kind of answer a question asks for, and the candidates that hold one of that kind, lifted
in /v1/search's re-ranking (memory.retrieval.answers)."""

from __future__ import annotations

import pytest

from memory.retrieval import answers, late
from tests.test_token_match import imported, searched


@pytest.mark.parametrize(
    ("question", "kinds"),
    [
        ("When did Caroline go to the support group?", ("time",)),
        ("what year did I move to Leeds", ("time",)),
        ("How many kids does Melanie have?", ("number",)),
        ("How often do I run?", ("number",)),
        ("Which cities has John been to?", ("place",)),
        ("Where did I spend my honeymoon?", ("place",)),
        ("What books has Melanie read?", ("name",)),
        ("Who is my dentist?", ("name",)),
        ("What is the name of my dog?", ("name",)),
        ("Which games has Nate played in which cities?", ("place", "name")),
        ("What should I avoid eating?", ()),
        ("Does John like hiking?", ()),
        ("Somewhere nice for dinner?", ()),  # "where" inside another word asks nothing
    ],
)
def test_what_a_question_asks_for(question, kinds):
    assert answers.asked(question) == kinds


@pytest.mark.parametrize(
    ("text", "held"),
    [
        ("We spent a week in Rome last summer.", ("time", "place")),
        ("We went to the beach.", ()),
        ("I adopted two cats.", ("number",)),
        ("I read it twice.", ("number",)),
        ("It was back in 2019.", ("time", "number")),  # a year is a number too
        ("Met her yesterday at the cafe.", ("time",)),
        ("Rome was lovely.", ()),  # the first word opens a sentence: any word is capitalised
        ("It was lovely. Rome was lovely.", ()),
        ('She said "Paris" right away.', ()),  # after an opening quote
        ("Thanks, John! I loved it.", ()),  # the question's own name, and "I"
        ("I told John's sister about it.", ()),  # a known name's possessive
        ("I told Maria about it once.", ("number", "place")),  # a name the question does not give
        ("User moved to the coast; Melanie visited User there.", ()),  # speakers and subject
    ],
)
def test_what_a_text_holds(text, held):
    kinds = ("time", "number", "place")
    known = answers.known_names("When did John visit?", ["Melanie"])
    assert answers.held(kinds, text, known) == held


def test_only_the_kinds_asked_are_read_and_lifted():
    known = answers.known_names("", [])
    text = "In 2019 we moved to Porto."
    assert answers.held((), text, known) == ()
    assert answers.held(("name",), text, known) == ("name",)
    assert answers.lift(()) == 0.0
    assert answers.lift(("time", "place")) == pytest.approx(
        answers.WEIGHTS["time"] + answers.WEIGHTS["place"]
    )


def test_a_long_text_is_read_only_so_far():
    known = answers.known_names("", [])
    far = "and then " * (answers.READ_CHARACTERS // 9 + 1) + "we flew to Lima"
    assert len(far) > answers.READ_CHARACTERS
    assert answers.held(("place",), far, known) == ()
    assert answers.held(("place",), far[-20:], known) == ("place",)
    # a message of spaces, capitals and full stops reads in one pass, whatever its length
    hostile = ("A. " * 400_000) + ("\n" * 400_000)
    assert answers.held(("place", "time", "number"), hostile, known) == ()


def test_rescored_adds_the_answers_lift():
    blend, sources, match = [0.9, 0.8, 0.7], ["a", "b", "c"], {"a": 0.5, "b": 0.5, "c": 0.5}
    plain = late.rescored(blend, sources, match)
    lifted = late.rescored(blend, sources, match, [0.0, 0.0, 0.576])
    assert lifted[:2] == pytest.approx(plain[:2])
    assert lifted[2] == pytest.approx(plain[2] + 0.576)
    assert lifted[2] > lifted[1]  # the third now ranks above the second


# Alice's trips: every turn speaks of travel with more of the question's words than the one that
# names the city.
TRIPS = [
    "I want to visit somewhere warm on my next trip, maybe with my sister.",
    "Planning a trip is so stressful, I visited three travel agents already.",
    "My sister wants to visit me for my birthday trip next spring.",
    "I always get sick on long trips, so I avoid visiting far places.",
    "On that trip we mostly walked around Lisbon and ate a lot.",
    "Did you visit the museum on your trip? I never visit museums.",
]
LISBON = 4


@pytest.mark.usefixtures("celery_worker")
def test_search_lifts_the_turn_that_holds_the_kind_of_answer_asked(http, settings, monkeypatch):
    settings.OPENAI_BASE_URL = ""  # the offline extractor
    said = imported(http, "alice", TRIPS, conversation="trips")
    question = "Which city did Alice visit on her trip?"
    found = searched(http, question, limit=len(TRIPS))
    ranked = [f["id"] for f in found]
    lisbon = said[LISBON]["id"]
    assert answers.asked(question) == ("place",)
    holds = [f for f in found if "holds the place asked for" in f["why"]]
    assert [f["id"] for f in holds] == [lisbon]  # "Alice" is the question's: no other holds one

    monkeypatch.setattr(answers, "WEIGHTS", dict.fromkeys(answers.WEIGHTS, 0.0))
    unlifted = [f["id"] for f in searched(http, question, limit=len(TRIPS))]
    assert ranked.index(lisbon) < unlifted.index(lisbon)
    assert ranked.index(lisbon) == 0

    # a question that asks for no kind of answer ranks as the weights alone would
    plain = searched(http, "Does Alice enjoy her trips?", limit=len(TRIPS))
    assert not any("asked for" in f["why"] for f in plain)


def test_why_says_which_kinds_asked_for_a_candidate_holds():
    from memory.retrieval.search import Found

    found = Found("message", {"id": "m"}, 0.4, 0.5, {"vector": 1}, answers=("time", "place"))
    found.blended = 0.6
    assert "holds the time and place asked for" in found.why()
    assert "asked for" not in Found("message", {"id": "m"}, 0.4, 0.5, {"vector": 1}).why()
