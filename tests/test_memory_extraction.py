"""Extraction and summarization jobs: offline and with an LLM (the loopback upstream)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.utils import timezone

from memory import tasks
from memory.models import Memory, MemoryEvent, Message, ProcessingJob
from memory.services import (
    conversation_get_or_create,
    extraction_enqueue,
    memory_update,
    messages_append,
    summary_enqueue,
)
from memory.text import memory_date
from tests.factories import FERRET_NAMES, make_workspace
from tests.upstream import Reply, openai_completion

pytestmark = pytest.mark.django_db


@pytest.fixture
def offline(settings):
    settings.OPENAI_BASE_URL = ""
    settings.ENGRAM_MEMORY_EXTRACTION = "offline"


# LLM calls resolve their route through the gateway, which may close the thread's database
# connection between calls: those tests commit for real instead of running in one transaction.
llm_db = pytest.mark.django_db(transaction=True)


def say(workspace, user, *texts, conversation="c", role="user", name=""):
    conv, _ = conversation_get_or_create(
        workspace=workspace, external_id=conversation, user_id=user
    )
    messages = [{"role": role, "content": t, **({"name": name} if name else {})} for t in texts]
    messages_append(workspace=workspace, conversation=conv, session=None, messages=messages)
    return conv


def extract(workspace, conv, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks():
        job = extraction_enqueue(workspace=workspace, conversation=conv)
    assert job is not None
    tasks.extract(job.id)
    job.refresh_from_db()
    return job


def reply(payload) -> Reply:
    return Reply(json=openai_completion(json.dumps(payload)))


def test_offline_extraction_supersedes_a_changed_fact_with_history(
    offline, django_capture_on_commit_callbacks
):
    workspace, _ = make_workspace()
    conv = say(workspace, "sam", "Hi! I live in Paris and I love jazz.")
    with django_capture_on_commit_callbacks() as sent:
        job = extraction_enqueue(workspace=workspace, conversation=conv)
    assert len(sent) == 1  # the task goes out only after commit
    tasks.extract(job.id)
    job.refresh_from_db()
    assert job.status == "done" and job.attempts == 1 and job.extractor == "offline"
    texts = sorted(Memory.objects.values_list("text", flat=True))
    assert texts == ["User lives in Paris.", "User loves jazz."]
    home = Memory.objects.get(text="User lives in Paris.")
    source = Message.objects.get(content__startswith="Hi!")
    assert list(home.sources.all()) == [source]  # provenance
    assert home.embedding is not None and "lives in Paris" in home.search_text

    say(workspace, "sam", "Big news: I moved from Paris to Berlin.")
    extract(workspace, conv, django_capture_on_commit_callbacks)
    home.refresh_from_db()
    assert home.text == "User lives in Berlin (moved from Paris)."
    assert not Memory.objects.filter(text__contains="lives in Paris").exists()
    assert Memory.objects.filter(user_id="sam").count() == 2
    events = list(
        MemoryEvent.objects.filter(memory_id=home.id).values_list("event", "old_text", "new_text")
    )
    assert events == [
        ("ADD", "", "User lives in Paris."),
        ("UPDATE", "User lives in Paris.", "User lives in Berlin (moved from Paris)."),
    ]
    assert home.sources.count() == 2


@pytest.mark.parametrize(
    ("first", "then", "updated"),
    [
        (
            "Pizza is my favourite food.",
            "Sushi is my favourite food now.",
            "Sushi is User's favourite food.",
        ),
        (
            "Pizza is my favourite food.",
            "My favourite food is sushi.",
            "User's favourite food is sushi.",
        ),
        (
            "My favorite color is blue.",
            "Green is my favorite color.",
            "Green is User's favorite color.",
        ),
    ],
)
def test_a_favourite_said_with_its_value_first_is_one_memory_updated(
    offline, django_capture_on_commit_callbacks, first, then, updated
):
    """A favourite is one-valued whichever comes first, the value or "my favourite": "Pizza is
    my favourite food" then "Sushi is my favourite food now" were two favourite foods."""
    workspace, _ = make_workspace()
    conv = say(workspace, "pia", first)
    extract(workspace, conv, django_capture_on_commit_callbacks)
    [memory] = Memory.objects.filter(user_id="pia")
    say(workspace, "pia", then)
    extract(workspace, conv, django_capture_on_commit_callbacks)
    assert list(Memory.objects.filter(user_id="pia").values_list("id", "text")) == [
        (memory.id, updated)
    ]
    assert list(
        MemoryEvent.objects.filter(memory_id=memory.id).values_list("event", flat=True)
    ) == ["ADD", "UPDATE"]


@pytest.mark.parametrize(
    ("first", "then", "updated"),
    [
        ("I'm engaged.", "We got married last weekend!", "User got married on the weekend of "),
        ("My name is Robert.", "Don't call me Robert, I go by Bob.", "User goes by Bob."),
        (
            "I work as a nurse at St Mary's hospital.",
            "I work as a midwife now.",
            "User works as a midwife.",
        ),
    ],
)
def test_a_one_valued_fact_said_in_other_words_updates_it(
    offline, django_capture_on_commit_callbacks, first, then, updated
):
    """Getting married after an engagement, going by a name, an occupation said with its
    workplace: each the slot's one memory, updated (they were two memories, or none)."""
    workspace, _ = make_workspace()
    conv = say(workspace, "ravi", first)
    extract(workspace, conv, django_capture_on_commit_callbacks)
    [memory] = Memory.objects.filter(user_id="ravi")
    say(workspace, "ravi", then)
    extract(workspace, conv, django_capture_on_commit_callbacks)
    [(memory_id, text)] = Memory.objects.filter(user_id="ravi").values_list("id", "text")
    assert memory_id == memory.id and text.startswith(updated)


def test_a_named_employer_left_updates_the_workplace(offline, django_capture_on_commit_callbacks):
    """ "I work at Deliveroo." then "Actually I left Deliveroo, I'm at Spotify now." left both
    memories standing: that User works at Deliveroo, and that they left it."""
    workspace, _ = make_workspace()
    conv = say(workspace, "omar", "I work at Deliveroo.")
    extract(workspace, conv, django_capture_on_commit_callbacks)
    [job] = Memory.objects.filter(user_id="omar")
    say(workspace, "omar", "Actually I left Deliveroo, I'm at Spotify now.")
    extract(workspace, conv, django_capture_on_commit_callbacks)
    assert list(Memory.objects.filter(user_id="omar").values_list("id", "text")) == [
        (job.id, "User left Deliveroo, they are at Spotify now.")
    ]
    say(workspace, "omar", "I'm working at Spotify now.")
    extract(workspace, conv, django_capture_on_commit_callbacks)
    texts = sorted(Memory.objects.filter(user_id="omar").values_list("text", flat=True))
    assert "User works at Spotify." in texts
    assert not any(t.startswith("User works at Deliveroo") for t in texts)


def test_a_pet_that_died_is_no_longer_had(offline, django_capture_on_commit_callbacks):
    """ "I have a cat named Mochi." then "Mochi passed away last week." left "User has a cat
    named Mochi." beside the death, both shown to the model; the death now updates it, and the
    other cat, unnamed in it, stays."""
    workspace, _ = make_workspace()
    conv = say(workspace, "lena", "I have a cat named Mochi.", "I also have a dog called Rex.")
    extract(workspace, conv, django_capture_on_commit_callbacks)
    mochi = Memory.objects.get(user_id="lena", text="User has a cat named Mochi.")
    say(workspace, "lena", "Mochi passed away last week.")
    extract(workspace, conv, django_capture_on_commit_callbacks)
    texts = dict(Memory.objects.filter(user_id="lena").values_list("id", "text"))
    assert texts.pop(mochi.id).startswith("User's cat Mochi passed away")
    assert list(texts.values()) == ["User also has a dog called Rex."]
    assert list(MemoryEvent.objects.filter(memory_id=mochi.id).values_list("event", flat=True)) == [
        "ADD",
        "UPDATE",
    ]


def test_an_age_corrected_updates_the_age(offline, django_capture_on_commit_callbacks):
    workspace, _ = make_workspace()
    conv = say(workspace, "kai", "I'm 33 and I live in Glasgow.")
    extract(workspace, conv, django_capture_on_commit_callbacks)
    age = Memory.objects.get(user_id="kai", text="User is 33 years old.")
    say(workspace, "kai", "actually I'm 34 not 33, just had my birthday")
    extract(workspace, conv, django_capture_on_commit_callbacks)
    assert sorted(Memory.objects.filter(user_id="kai").values_list("id", "text")) == sorted(
        [
            (age.id, "User is 34 years old."),
            *Memory.objects.filter(user_id="kai", text="User lives in Glasgow.").values_list(
                "id", "text"
            ),
        ]
    )


def test_one_told_of_by_name_earlier_is_the_users_when_named_alone(
    offline, django_capture_on_commit_callbacks
):
    """ "Pepper hates thunderstorms." wrote nothing (a sentence about another), though the user
    had said "I have a dog named Pepper" in an earlier conversation: it is about their dog. In
    a conversation of two speakers, one's dog is not the other's; another user's neither."""
    workspace, _ = make_workspace()
    conv = say(workspace, "dana", "I have a dog named Pepper.", conversation="first")
    extract(workspace, conv, django_capture_on_commit_callbacks)
    other = say(workspace, "eli", "Pepper hates thunderstorms.", conversation="elis")
    extract(workspace, other, django_capture_on_commit_callbacks)
    conv = say(
        workspace,
        "dana",
        "Pepper hates thunderstorms.",
        "Mochi passed away last week.",
        "Pepper, sit!",
        conversation="later",
    )
    extract(workspace, conv, django_capture_on_commit_callbacks)
    assert sorted(Memory.objects.filter(user_id="dana").values_list("text", flat=True)) == [
        "User has a dog named Pepper.",
        "User's dog Pepper hates thunderstorms.",
    ]
    assert not Memory.objects.filter(user_id="eli").exists()
    # two speakers of one user: Sam's dog is not Kim's
    pair = say(workspace, "pair", "I have a dog named Rex.", conversation="pair", name="Sam")
    say(workspace, "pair", "Rex is so cute!", conversation="pair", name="Kim")
    say(workspace, "pair", "Rex loves the beach.", conversation="pair", name="Sam")
    extract(workspace, pair, django_capture_on_commit_callbacks)
    assert sorted(Memory.objects.filter(user_id="pair").values_list("text", flat=True)) == [
        "Sam has a dog named Rex.",
        "Sam's dog Rex loves the beach.",
    ]


def test_a_name_told_in_another_conversation_of_the_same_run_is_known(
    offline, django_capture_on_commit_callbacks
):
    """Two conversations of one user sent a moment apart are taken by one run: the second's
    "Pepper hates thunderstorms." knows the dog the first told of, though the first's memory
    is not written yet when the run reads the user's memories (`make run`: it wrote nothing)."""
    workspace, _ = make_workspace()
    first = say(workspace, "dana", "I have a dog named Pepper.", conversation="one")
    second = say(workspace, "dana", "Pepper hates thunderstorms.", conversation="two")
    with django_capture_on_commit_callbacks():
        jobs = [extraction_enqueue(workspace=workspace, conversation=c) for c in (first, second)]
    tasks.extract(jobs[0].id)
    assert all(
        ProcessingJob.objects.get(pk=job.id).status == ProcessingJob.Status.DONE for job in jobs
    )
    assert sorted(Memory.objects.filter(user_id="dana").values_list("text", flat=True)) == [
        "User has a dog named Pepper.",
        "User's dog Pepper hates thunderstorms.",
    ]


@pytest.mark.parametrize(
    ("told", "said", "facts"),
    [
        (
            "User has a cat named Mochi.",
            "Mochi passed away yesterday.",
            ["User's cat Mochi passed away on 7 May 2023."],
        ),
        (
            "User's partner Alex works at Google.",
            "Oh, Alex got promoted!",
            ["User's partner Alex got promoted."],
        ),
        (
            "User and their best friend Sam went hiking.",
            "Sam's moving to Oslo.",
            ["User's best friend Sam's moving to Oslo."],
        ),
        (
            "User adopted a puppy called Biscuit.",
            "Biscuit is learning to sit.",
            ["User's puppy Biscuit is learning to sit."],
        ),
        ("User has two cats, Luna and Leo.", "Leo is so lazy.", ["User's cat Leo is so lazy."]),
        (
            "User has three kids, Ava, Ben and Cal.",
            "Cal lost his first tooth.",
            ["User's kid Cal lost his first tooth."],
        ),
        (
            "User has a son, Max.",
            "Max is learning to swim.",
            ["User's son Max is learning to swim."],
        ),
        (
            "User's husband's name is Tom.",
            "Tom got a promotion.",
            ["User's husband Tom got a promotion."],
        ),
        (
            "User has a baby girl now, her name is Rose.",
            "Rose smiled for the first time yesterday.",
            ["User's baby girl Rose smiled for the first time on 7 May 2023."],
        ),
        (
            "User adopted a new puppy called Biscuit.",
            "Biscuit chewed my shoes.",
            ["User's puppy Biscuit chewed their shoes."],
        ),
        # whatever the user has and names: a breed, a boat
        (
            "User just adopted a rescue greyhound named Bolt.",
            "Bolt is super shy around other dogs.",
            ["User's greyhound Bolt is super shy around other dogs."],
        ),
        (
            "User has a boat called Serenity.",
            "Serenity needs a new coat of paint.",
            ["User's boat Serenity needs a new coat of paint."],
        ),
        ("User read a book called Dune.", "Dune was amazing.", []),
        (
            "User got a puppy in the week of 30 November 2026, his name is Ollie.",
            "Ollie ate my shoe lol",
            ["User's puppy Ollie ate their shoe."],
        ),
        ("User's wife name is Priya.", "Priya is a doctor.", ["User's wife Priya is a doctor."]),
        (
            "User's dog is a 10 year old beagle called Max.",
            "Max has diabetes.",
            ["User's dog Max has diabetes."],
        ),
        (
            "User just adopted a kitten, she's called Pixel.",
            "Pixel knocked over my coffee again 😂",
            ["User's kitten Pixel knocked over their coffee again."],
        ),
        (
            "User has a 3 year old named Noah and a baby on the way.",
            "Noah just learned to ride his bike!",
            ["User's kid Noah just learned to ride his bike."],
        ),
        # after a word of feeling or of when, kept
        (
            "User has a cat named Mochi.",
            "Sadly, Mochi passed away yesterday.",
            ["Sadly, User's cat Mochi passed away on 7 May 2023."],
        ),
        (
            "User has a dog named Pepper.",
            "Last night Pepper slept on my bed.",
            ["User's dog Pepper slept on their bed on 7 May 2023."],
        ),
        (
            "User has a dog named Pepper.",
            "Thankfully Pepper is fine now.",
            ["Thankfully User's dog Pepper is fine now."],
        ),
        # one spoken to, one of a list, a name of the month, another's dog: nothing read as theirs
        ("User has a cat named Mochi.", "Mochi, get down!", []),
        ("User has a cat named Mochi.", "Mochi and Pepper get along.", []),
        (
            "User has a cat named May.",
            "May is my favourite month.",
            ["May is User's favourite month."],
        ),
        ("User's neighbour's dog Rex barks.", "Rex hates me.", []),
        ("Kim has a dog named Rex.", "Rex loves the beach.", []),
    ],
)
def test_a_name_told_of_reads_a_sentence_opening_on_it_as_the_users(told, said, facts):
    from memory.background.extraction.offline import Known
    from memory.background.extraction.offline import extract as offline_extract

    known = Known()
    known.told("User", told)
    found = offline_extract(said, subject="User", today=dt.date(2023, 5, 8), known=known)
    assert [f.text for f in found] == facts


def test_whom_the_user_lives_with_outlasts_a_move(offline, django_capture_on_commit_callbacks):
    workspace, _ = make_workspace()
    conv = say(workspace, "omar", "I live in Manchester with my wife Sara.")
    extract(workspace, conv, django_capture_on_commit_callbacks)
    say(workspace, "omar", "We moved to Leeds.")
    extract(workspace, conv, django_capture_on_commit_callbacks)
    assert sorted(Memory.objects.filter(user_id="omar").values_list("text", flat=True)) == [
        "User lives in Leeds.",
        "User lives with their wife Sara.",
    ]


def test_a_negation_leaves_what_it_does_not_deny(offline, django_capture_on_commit_callbacks):
    """ "I no longer live in Paris" said while living in Berlin ends nothing; nor does "I don't
    have a cat anymore" end the sister's cat."""
    workspace, _ = make_workspace()
    conv = say(workspace, "ines", "I live in Berlin.", "My sister has a cat named Tom.")
    extract(workspace, conv, django_capture_on_commit_callbacks)
    say(workspace, "ines", "I no longer live in Paris.", "I don't have a cat anymore.")
    job = extract(workspace, conv, django_capture_on_commit_callbacks)
    assert job.status == "done"
    assert set(Memory.objects.filter(user_id="ines").values_list("text", flat=True)) == {
        "User lives in Berlin.",
        "User's sister has a cat named Tom.",
        "User no longer lives in Paris.",
        "User doesn't have a cat anymore.",
    }
    assert not MemoryEvent.objects.filter(event="UPDATE").exists()


def test_a_fact_edited_by_hand_is_set_again_when_the_user_restates_it(
    offline, django_capture_on_commit_callbacks
):
    """An edit of a one-valued fact's text leaves its value unknown: the user saying the old
    value again updates the memory back, instead of counting it as no change."""
    workspace, _ = make_workspace()
    conv = say(workspace, "mona", "I live in Paris.")
    extract(workspace, conv, django_capture_on_commit_callbacks)
    home = Memory.objects.get(user_id="mona")
    assert home.text == "User lives in Paris." and home.metadata["value"] == "Paris"
    edited = memory_update(workspace=workspace, memory=home, text="User lives in Rome.")
    assert "value" not in edited.metadata and edited.metadata["slot"] == home.metadata["slot"]

    say(workspace, "mona", "I live in Paris.")
    extract(workspace, conv, django_capture_on_commit_callbacks)
    home.refresh_from_db()
    assert home.text == "User lives in Paris." and home.metadata["value"] == "Paris"
    assert Memory.objects.filter(user_id="mona").count() == 1
    # an edit that sets the value with the text keeps it
    memory_update(
        workspace=workspace,
        memory=home,
        text="User lives in Oslo.",
        metadata=home.metadata | {"value": "Oslo"},
    )
    home.refresh_from_db()
    assert home.metadata["value"] == "Oslo"


def test_a_clients_metadata_edit_keeps_the_slot_a_changed_fact_updates(
    offline, django_capture_on_commit_callbacks
):
    """A client tagging a memory replaced its whole metadata: the slot went, and the move made
    a second residence memory beside the first (both recalled) instead of updating it."""
    workspace, _ = make_workspace()
    conv = say(workspace, "vera", "I live in Vienna.")
    extract(workspace, conv, django_capture_on_commit_callbacks)
    home = Memory.objects.get(user_id="vera")
    tagged = memory_update(workspace=workspace, memory=home, metadata={"pinned": True})
    assert tagged.metadata == home.metadata | {"pinned": True}

    say(workspace, "vera", "I moved to Berlin.")
    extract(workspace, conv, django_capture_on_commit_callbacks)
    [home] = Memory.objects.filter(user_id="vera")
    assert home.text.startswith("User lives in Berlin") and home.metadata["pinned"] is True


def test_offline_extraction_keeps_dated_events_plans_and_relations(
    offline, django_capture_on_commit_callbacks
):
    workspace, _ = make_workspace()
    conv, _ = conversation_get_or_create(workspace=workspace, external_id="c", user_id="u")
    from memory.services import messages_import

    with django_capture_on_commit_callbacks():
        messages_import(
            workspace=workspace,
            conversation=conv,
            messages=[
                {
                    "role": "user",
                    "name": "Caroline",
                    "content": "I went to a LGBTQ support group yesterday. It was powerful.",
                    "created_at": dt.datetime(2023, 5, 8, 13, 56, tzinfo=dt.UTC),
                },
                {
                    "role": "user",
                    "name": "Melanie",
                    "content": "Thanks, I'm glad to hear that!",
                    "created_at": dt.datetime(2023, 5, 8, 13, 57, tzinfo=dt.UTC),
                },
                {
                    "role": "user",
                    "name": "Melanie",
                    "content": "My kids and I are going camping next month.",
                    "created_at": dt.datetime(2023, 5, 8, 13, 58, tzinfo=dt.UTC),
                },
            ],
        )
    job = ProcessingJob.objects.get()
    tasks.extract(job.id)
    by_text = {m.text: m for m in Memory.objects.all()}
    event = by_text["Caroline went to a LGBTQ support group on 7 May 2023."]
    assert event.kind == "event" and event.event_date == dt.date(2023, 5, 7)
    assert event.search_text.startswith("[7 May 2023]")
    plan = next(m for t, m in by_text.items() if t.startswith("Melanie and their kids"))
    assert plan.kind in ("plan", "relation") and "June 2023" in plan.text
    # a month is no day: the plan is dated by the day it was said, as the text says the month
    # (it was "[7 June 2023]", a day no one said, in its search text and in the prompt)
    assert plan.event_date is None and plan.search_text.startswith("[8 May 2023]")
    assert memory_date(plan) == dt.date(2023, 5, 8)
    assert not any("glad" in t for t in by_text)  # small talk is not a memory
    assert all(m.embedding is not None for m in Message.objects.all())  # messages embedded too


def test_running_an_extraction_twice_creates_no_duplicate(
    offline, django_capture_on_commit_callbacks
):
    workspace, _ = make_workspace()
    conv = say(workspace, "u", "I work at Initech. My favorite food is ramen. I love climbing.")
    job = extract(workspace, conv, django_capture_on_commit_callbacks)
    first = sorted(Memory.objects.values_list("text", flat=True))
    assert len(first) == 3
    tasks.extract(job.id)  # a second delivery finds the job done: no-op
    job.refresh_from_db()
    assert job.attempts == 1
    # a redelivery after a crash mid-way re-runs the same range: still no duplicate
    ProcessingJob.objects.filter(id=job.id).update(status="pending")
    tasks.extract(job.id)
    assert sorted(Memory.objects.values_list("text", flat=True)) == first
    assert MemoryEvent.objects.filter(event="ADD").count() == 3


def test_remarks_about_the_conversation_are_not_remembered(
    offline, django_capture_on_commit_callbacks
):
    """Statements the word patterns keep, told apart by their vectors
    (memory.background.extraction.remarks): none of these sentences is among its examples."""
    workspace, _ = make_workspace()
    conv = say(
        workspace,
        "u",
        "I'm scrolling through the list now.",
        "I adopted a beagle called Biscuit in March.",
        "I'm a bit lost with these steps.",
        "I play the trumpet in a jazz band.",
        "I live in Lyon.",
    )
    extract(workspace, conv, django_capture_on_commit_callbacks)
    assert sorted(Memory.objects.values_list("text", flat=True)) == [
        "User adopted a beagle called Biscuit in March.",
        "User lives in Lyon.",
        "User plays the trumpet in a jazz band.",
    ]


def test_one_valued_facts_are_kept_whatever_they_look_like():
    import numpy as np

    from memory.background.extraction.remarks import remarks_mask, without_remarks
    from memory.embeddings import get_embedder

    vectors = get_embedder().embed(["User is not convinced.", "User is not convinced."])
    assert remarks_mask(vectors).all()  # an example of a remark, twice
    kept, kept_vectors = without_remarks(["remark", "slot"], vectors, ["", "residence"])
    assert kept == ["slot"] and np.array_equal(kept_vectors, vectors[1:])


def test_a_pool_process_embeds_the_remark_examples_as_it_starts(monkeypatch):
    import threading

    from memory.background.extraction import remarks

    monkeypatch.setattr(remarks, "_examples", {})
    tasks._warm_remark_filter()
    [warming] = [t for t in threading.enumerate() if t.name == "warm-remark-filter"]
    warming.join(timeout=60)
    [(facts, found_remarks)] = remarks._examples.values()
    assert facts.shape[0] > 200 and found_remarks.shape[0] > 50


def test_near_duplicates_are_merged_by_embedding_similarity(
    offline, django_capture_on_commit_callbacks
):
    workspace, _ = make_workspace()
    conv = say(workspace, "u", "I love climbing.")
    extract(workspace, conv, django_capture_on_commit_callbacks)
    say(workspace, "u", "I love climbing!")
    extract(workspace, conv, django_capture_on_commit_callbacks)
    memory = Memory.objects.get()
    assert memory.sources.count() == 2


def test_another_persons_move_is_theirs_and_a_birthday_is_one_valued(
    offline, django_capture_on_commit_callbacks
):
    """ "my sister moved to Oslo" is remembered of the sister and leaves where the user lives;
    "my birthday's on March 3rd" is the birthday, which a later date updates (round 11 dropped
    the move and wrote "User's birthday's on March 3rd.")."""
    workspace, _ = make_workspace()
    conv = say(workspace, "ola", "I live in Bergen.", "my sister moved to Oslo")
    say(
        workspace,
        "ola",
        "my birthday's on March 3rd",
        "I'm moving to Vienna next month, can't wait",
    )
    extract(workspace, conv, django_capture_on_commit_callbacks)
    next_month = timezone.now().date() + dt.timedelta(days=30)
    assert sorted(Memory.objects.values_list("text", flat=True)) == [
        f"User is moving to Vienna in {next_month:%B %Y}.",
        "User lives in Bergen.",
        "User's birthday is on March 3rd.",
        "User's sister moved to Oslo.",
    ]
    say(workspace, "ola", "Sorry, my birthday is on March 4th.")
    extract(workspace, conv, django_capture_on_commit_callbacks)
    birthday = Memory.objects.get(text__startswith="User's birthday")
    assert birthday.text == "User's birthday is on March 4th."
    assert list(
        MemoryEvent.objects.filter(memory_id=birthday.id).values_list("event", flat=True)
    ) == ["ADD", "UPDATE"]
    assert Memory.objects.filter(user_id="ola").count() == 4


OFFLINE_FACTS = [
    # grammatical third person: the verb agrees, later mentions are pronouns
    ("I drink oat milk in my coffee.", ["User drinks oat milk in their coffee."]),
    ("I usually watch movies on Fridays.", ["User usually watches movies on Fridays."]),
    ("I don't like spicy food.", ["User doesn't like spicy food."]),
    ("I think I'm tired of my job.", ["User thinks they are tired of their job."]),
    ("I am allergic to peanuts.", ["User is allergic to peanuts."]),
    ("I study math and I teach kids.", ["User studies math.", "User teaches kids."]),
    ("My sister and I went hiking.", ["User and their sister went hiking."]),
    ("My dog loves me.", ["User's dog loves them."]),
    ("I finally finished my degree.", ["User finally finished their degree."]),
    # "we" speaks for the user; a verb whose past is its present stays past after a past date
    ("We adopted a cat named Miso.", ["User adopted a cat named Miso."]),
    ("Our son plays the violin.", ["User's son plays the violin."]),
    ("We're thinking about getting a dog.", ["User is thinking about getting a dog."]),
    (
        "I've been a fan since I was a kid.",
        ["User has been a fan since they were a kid."],
    ),
    ("We were in Rome for a week.", ["User was in Rome for a week."]),
    ("I quit smoking last year.", ["User quit smoking in 2022."]),
    ("I quit my job whenever I get bored.", ["User quits their job whenever they get bored."]),
    # a clause of "we" is a statement of its own, as one of "I" is
    (
        "I moved to Oslo last month and we adopted a cat named Miso.",
        ["User lives in Oslo (moved there in April 2023).", "User adopted a cat named Miso."],
    ),
    (
        "I sold my car last week and now I cycle to work.",
        ["User sold their car in the week of 1 May 2023.", "User cycles to work."],
    ),
    (
        "Dancing makes me so happy, and now I get to share that with other people.",
        ["Dancing makes User so happy, and now User gets to share that with other people."],
    ),
    # a period said first goes last, so the fact starts with its subject; a clause after a
    # period keeps it
    ("Yesterday I saw Anna.", ["User saw Anna on 7 May 2023."]),
    (
        "I love hiking, and last summer I walked the Camino de Santiago.",
        ["User loves hiking.", "User walked the Camino de Santiago last summer."],
    ),
    # a command after ", so" is not part of the fact
    ("I'm allergic to nuts, so keep them out of the recipe.", ["User is allergic to nuts."]),
    # a move keeps when it happened
    ("I moved to Lisbon in 2019.", ["User lives in Lisbon (moved there in 2019)."]),
    (
        "We moved from Paris to Berlin last week.",
        ["User lives in Berlin (moved from Paris in the week of 1 May 2023)."],
    ),
    # not statements about the user: a hypothetical, a question asked indirectly, a reply
    ("If I won the lottery I would buy a boat.", []),
    ("I wonder if it will rain tomorrow.", []),
    ("I'm not sure what you mean.", []),
    # a second verb of the user's agrees too; other words after "and" are left as said
    (
        "I have type 1 diabetes and use an insulin pump.",
        ["User has type 1 diabetes and uses an insulin pump."],
    ),
    ("I have three cats and love them.", ["User has three cats and loves them."]),
    ("I like tea and coffee in the morning.", ["User likes tea and coffee in the morning."]),
    ("I love to cook and bake bread.", ["User loves to cook and bake bread."]),
    ("I can swim and play the piano.", ["User can swim and play the piano."]),
    # a memory is read alone: nothing that points back into the conversation or speaks to it
    ("We moved to Oslo, and I love it.", ["User lives in Oslo."]),
    ("Nevermind, I figured it out.", []),
    ("I'll think about it and get back to you.", []),
    ("I have a question about Python decorators.", []),
    # what is said before a statement is not part of it; a date after a preposition keeps it
    ("Ugh, my flight got cancelled again.", ["User's flight got cancelled again."]),
    (
        "Honestly I'm stuck in Frankfurt until tomorrow.",
        ["User is stuck in Frankfurt until 9 May 2023."],
    ),
    ("I saw Anna the day before yesterday.", ["User saw Anna on 6 May 2023."]),
    ("I'm just curious.", []),
    # two words: a lasting trait is a fact, a passing state is not
    ("I'm vegetarian.", ["User is vegetarian."]),
    ("I'm tired.", []),
    # an opinion of the moment is not about the user; one about themselves is
    ("I think the weather is nice today.", []),
    ("I think I'm getting better at chess.", ["User thinks they are getting better at chess."]),
    # a base form that ends like a past tense agrees; an initial or a title ends no sentence
    ("I need a new laptop for work.", ["User needs a new laptop for work."]),
    (
        "My favourite author is Ursula K. Le Guin.",
        ["User's favourite author is Ursula K. Le Guin."],
    ),
    ("My dentist is Dr. Patel.", ["User's dentist is Dr. Patel."]),
    # "one" that stands for something said before points back too
    ("I'm allergic to cats but I still have one.", ["User is allergic to cats."]),
    # requests and commands are not facts about the user
    ("Stream me something please.", []),
    ("Tell me a joke.", []),
    ("Can you recommend a book?", []),
    ("I want you to write a poem about my cat.", []),
    ("Please remember that I like tea.", []),
    # a fact said with a request after it: the fact, without the request
    ("I'm vegan, suggest a recipe.", ["User is vegan."]),
    ("I'm a nurse, tell me about night shift tips.", ["User is a nurse."]),
    # code, a traceback and a quoted line are not the user's prose; a list item's marker is
    # not part of what it says
    ("Here is my code:\n```python\nI = 3\nprint(my_list)\n```\nWhy does it fail?", []),
    (
        "I get this error:\nTraceback (most recent call last):\n"
        '  File "my_app.py", line 3, in <module>\n'
        "    raise ValueError('I am broken')\nValueError: I am broken",
        [],
    ),
    ("> I love jazz\nNo, I don't.", []),
    ("- I love jazz\n- I have two cats", ["User loves jazz.", "User has two cats."]),
    # words in quotes are someone else's, kept as said: no fact about the user, no slot set
    ("My boss said 'I hate Mondays'.", ["User's boss said 'I hate Mondays'."]),
    ('My sister wrote "I live in Paris now".', ['User\'s sister wrote "I live in Paris now".']),
    # "no longer" is an adverb, not the verb
    ("I no longer eat meat.", ["User no longer eats meat."]),
    # a hypothetical makes none of its clauses so
    ("If I won the lottery, I'd buy a house and I'd travel the world.", []),
    ("Pretend I'm a pirate and I live on a ship.", []),
    ("Assume I live in Berlin.", []),
    ("I'd live in Paris if I were rich.", []),
    # the assistant's words said back are not the user's
    ("You said: I live in Paris.", []),
    ("Assistant: My name is Sam.", []),
    (
        "I think you said I live in Paris, but I live in Lyon.",
        ["User lives in Lyon."],
    ),
    # distinct favourites in one sentence stay distinct
    (
        "My favorite color is blue, my favorite food is sushi.",
        ["User's favorite color is blue.", "User's favorite food is sushi."],
    ),
    # "US" in capitals is the country, not "us"
    ("I live in the US.", ["User lives in the US."]),
    # a place's or company's name is kept whole
    ("I moved to St. Louis in 2019.", ["User lives in St. Louis (moved there in 2019)."]),
    ("I live in Mt. Vernon, and I love jazz.", ["User lives in Mt. Vernon.", "User loves jazz."]),
    ("I work at AT&T.", ["User works at AT&T."]),
    # a greeting is an opener, not part of the fact
    ("Hey there, I'm a nurse from Ohio.", ["User is a nurse from Ohio."]),
    ("Hi, I'm Sam!", ["User's name is Sam."]),
    # a secret's value is never remembered; a fact that names none is
    ("My password is hunter2.", []),
    ("My API key is sk-abc123def456.", []),
    ("My PIN is 1234 and I live in Oslo.", ["User lives in Oslo."]),
    ("I forgot my password.", ["User forgot their password."]),
    # markdown's table rows, headings and emphasis are not what the user says
    ("| I | love | jazz |", []),
    ("**I live in Paris** and *I love jazz*.", ["User lives in Paris.", "User loves jazz."]),
    ("## My hobbies\nI love jazz.", ["User loves jazz."]),
    # a request after a dash is cut as one after a comma; a story's "I" is not the user
    ("I'm going to Japan next month - help me plan.", ["User is going to Japan in June 2023."]),
    ("In my story, I am a dragon who lives in a cave.", []),
    # a label before a statement is not part of it
    ("Quick background: I'm a nurse in Ohio.", ["User is a nurse in Ohio."]),
    # a statement before a question asked after a comma is still one
    ("I'm vegan, can you suggest a recipe?", ["User is vegan."]),
    ("I live in Berlin, what's the weather like?", ["User lives in Berlin."]),
    ("Do you think I should move to Berlin?", []),
    # web and e-mail addresses are kept as written
    ("My website is https://sam.dev/my/about.", ["User's website is https://sam.dev/my/about."]),
    (
        "My email is me.myself@my-domain.com and I live in Oslo.",
        ["User's email is me.myself@my-domain.com.", "User lives in Oslo."],
    ),
    (
        "I deployed `git push my-app main` to Heroku.",
        ["User deployed `git push my-app main` to Heroku."],
    ),
]


OFFLINE_FACTS += [
    # an introduction names the user; a feeling, a relation or a nationality does not
    ("I'm Sam.", ["User's name is Sam."]),
    ("I am Sam Lee and I live in Oslo.", ["User's name is Sam Lee.", "User lives in Oslo."]),
    ("Call me Sam.", ["User's name is Sam."]),
    ("Please call me Sam from now on.", ["User's name is Sam."]),
    ("I'm tired.", []),
    ("I'm happy.", []),
    ("I'm Sam's mother.", ["User is Sam's mother."]),
    ("I'm Dutch.", ["User is Dutch."]),
    ("Hey, I'm Sam and I teach maths.", ["User's name is Sam.", "User teaches maths."]),
    (
        "I'm Lena, I'm a vet and I live in Graz.",
        ["User's name is Lena.", "User is a vet.", "User lives in Graz."],
    ),
    ("Call me tomorrow.", []),
    ("Don't call me Sam.", []),
    # written all in lowercase: the pronoun and the names a slot reads
    ("i live in berlin and i work at acme", ["User lives in Berlin.", "User works at Acme."]),
    ("i moved from london to new york", ["User lives in New York (moved from London)."]),
    # the name its own statement, and what follows it too (it was dropped with the slot's)
    (
        "my name is sam, i work for a startup",
        ["User's name is Sam.", "User works for a startup."],
    ),
    ("i live in a flat with my dog", ["User lives in a flat with their dog."]),
    ("ok so i'm a nurse and i live in york", ["User is a nurse.", "User lives in York."]),
    (
        "i always name the counter `i` in my scripts",
        ["User always names the counter `i` in their scripts."],
    ),
    # a negation or cessation is written as said (what it ends: test_memory_recall_http)
    ("I no longer live in Paris.", ["User no longer lives in Paris."]),
    ("I quit my job at Acme.", ["User quit their job at Acme."]),
    ("I'm not vegetarian anymore.", ["User is not vegetarian anymore."]),
]

OFFLINE_FACTS += [
    # a move said with a dash is a move (it was "User moved – to Berlin.", no place set)
    ("I moved \u2013 to Berlin.", ["User lives in Berlin."]),
    ("I moved \u2014 Rome, since March.", ["User lives in Rome."]),
    ("We're moving - Lisbon next month.", ["User is moving to Lisbon in June 2023."]),
    ("i moved - to oslo", ["User lives in Oslo."]),
    # moving out of a place names where the user lives no longer; with the new place, a move
    ("I moved out of Paris to Berlin.", ["User lives in Berlin (moved from Paris)."]),
    (
        "We moved away from Leeds last year and now live in York.",
        ["User lives in York (moved from Leeds)."],
    ),
    # an introduction in lowercase names the user; a state does not
    ("i'm sam", ["User's name is Sam."]),
    ("hi i'm sam and i teach maths", ["User's name is Sam.", "User teaches maths."]),
    ("i'm bored", []),
    ("i'm chill", []),
    ("i'm hungry and i want pizza", ["User is hungry and they want pizza."]),
    # a name that ends as an adverb does ("User is Emily." before)
    ("I'm Emily.", ["User's name is Emily."]),
    # said to the assistant before or after a statement of the user's: the statement
    ("you know I hate cilantro", ["User hates cilantro."]),
    ("As you know, I'm allergic to cats.", ["User is allergic to cats."]),
    ("Like I told you, I work nights.", ["User works nights."]),
    ("I'm Kate's husband, she told me to ask you about the trip.", ["User is Kate's husband."]),
    ("I'm a teacher, in case you were wondering.", ["User is a teacher."]),
    # a reply's thanks or goodbye is no such part: the remark before it is dropped with it
    ("I had a great time, thank you so much.", []),
    ("I'm going to bed now, talk to you tomorrow.", []),
    ("Can you remind me to call my mom?", []),
    ("Can you remind me what my sister's name is", []),
    ("I love you.", []),
    # an age stands as a statement of its own ("User is 29 and they are training…" before)
    (
        "I'm 29 and I'm training for a marathon.",
        ["User is 29 years old.", "User is training for a marathon."],
    ),
    # "im" without its apostrophe ("hi im lena" wrote nothing)
    ("hi im lena", ["User's name is Lena."]),
    ("yo, im a plumber and i live in leeds", ["User is a plumber.", "User lives in Leeds."]),
    ("im a night nurse btw", ["User is a night nurse."]),
    ("im so bored lol", []),
    ("Ich bin im Büro.", []),
    # a reminder or an announcement to the assistant before the statement is not part of it
    ("Remember, I'm vegetarian, so no meat in the recipes please.", ["User is vegetarian."]),
    ("Don't forget that my son is called Leo.", ["User's son is called Leo."]),
    (
        "You might remember my dog Biscuit - he turned ten today.",
        ["User's dog Biscuit turned ten on 8 May 2023."],
    ),
    ("You may recall my aunt Rosa, she's a pilot.", ["User's aunt Rosa is a pilot."]),
    ("you'll like this: I ran my first marathon", ["User ran their first marathon."]),
    ("Guess what, I got a job at Initech!", ["User works at Initech."]),
    ("Remember to text me at noon.", []),
    # a statement asked as a question is said; a question about a thing is not
    ("Did I tell you I started rock climbing?", ["User started rock climbing."]),
    ("Have I mentioned that my brother is a chef?", ["User's brother is a chef."]),
    ("Did I tell you about my weekend?", []),
    # a move after an ellipsis is a move
    ("we finally moved… Copenhagen!", ["User lives in Copenhagen."]),
    ("I moved... to Bergen in 2020.", ["User lives in Bergen (moved there in 2020)."]),
    ("I moved... and I love it", []),
    # a command after a comma is not part of the fact
    ("I told you I hate mornings, stop suggesting 6am runs.", ["User hates mornings."]),
    ("I hate olives, never add them to my salads.", ["User hates olives."]),
    ("I have a cat, so avoid anything with lilies.", ["User has a cat."]),
    # another person's move is said of them, never as where the user lives; the feeling after
    # it is no part of it (round 11 dropped it whole)
    ("My coworker just moved to Berlin, lucky him.", ["User's coworker just moved to Berlin."]),
    ("my sister moved to Oslo", ["User's sister moved to Oslo."]),
    (
        "Our neighbours are moving to Spain next year.",
        ["User's neighbours are moving to Spain in 2024."],
    ),
    ("My husband and I moved to Graz.", ["User lives in Graz."]),
    # a plan, the feeling said after it dropped ("User is moving to Vienna …, can't wait.")
    ("I'm moving to Vienna next month, can't wait", ["User is moving to Vienna in June 2023."]),
    ("we're moving to denver next month cant wait", ["User is moving to Denver in June 2023."]),
    ("We're moving to Lyon in june, so excited!!", ["User is moving to Lyon in June."]),
    ("I'm so excited", []),
    # "'s" for "is" (or "has") after what is the user's; a birthday is one-valued
    ("my birthday's on March 3rd", ["User's birthday is on March 3rd."]),
    ("my birthdays on june 12th", ["User's birthday is on June 12th."]),
    ("my brother's a chef", ["User's brother is a chef."]),
    ("my sister's been sick all week", ["User's sister has been sick all week."]),
    ("My sister's car is red.", ["User's sister's car is red."]),
    # "im" inside a sentence; "so yeah" joins two statements
    ("honestly im a huge jazz fan", ["User is a huge jazz fan."]),
    (
        "I finished nursing school, so yeah im a nurse now",
        ["User finished nursing school.", "User is a nurse now."],
    ),
    ("Long story short im a nurse now", ["User is a nurse now."]),
    ("ich bin im büro", []),
    # how people type: emojis, a contraction without its apostrophe, sarcasm, leaving the chat,
    # a question without its mark, a month in lowercase
    ("We just bought our first house 🏡", ["User just bought their first house."]),
    ("my best friend just moved to dublin :(", ["User's best friend just moved to Dublin."]),
    ("i dont eat pork", ["User doesn't eat pork."]),
    ("I'm allergic to penicillin, just fyi", ["User is allergic to penicillin."]),
    ("i just LOVE mondays 🙃", []),
    ("im gonna grab lunch brb", []),
    ("lol im dying 😂😂", []),
    ("how do i say 'i love you' in french", []),
    ("I got married last june", ["User got married in June 2022."]),
    ("I \u2764\ufe0f jazz", ["User loves jazz."]),
    ("i \u2665 my dog", ["User loves their dog."]),
    ("I \U0001f494 Mondays", []),
    ("i wanna learn piano", ["User wants to learn piano."]),
    ("I gotta go to the dentist tomorrow", ["User has to go to the dentist on 9 May 2023."]),
    # said in the past without a date: "quit" stays ("User quits Twitter a while ago." before)
    ("I quit Twitter a while ago.", ["User quit Twitter a while ago."]),
    ("I read War and Peace last summer.", ["User read War and Peace last summer."]),
    ("I read a lot.", ["User reads a lot."]),
    # a possessive typed without its apostrophe, and "is" left out with it (heldout14)
    ("my husbands name is Dev", ["User's husband's name is Dev."]),
    ("my bosses name is Karen", ["User's boss's name is Karen."]),
    ("my moms in the hospital", ["User's mom is in the hospital."]),
    ("my sons play chess", ["User's sons play chess."]),
    # the "I" left out: a past form, "been", a doing, a present verb seldom an order
    (
        "started learning korean last month, its hard lol",
        ["User started learning korean in April 2023."],
    ),
    ("been vegan since 2019", ["User has been vegan since 2019."]),
    ("work at a bakery on weekends", ["User works at a bakery on weekends."]),
    ("living in a tiny studio in Brooklyn rn", ["User is living in a tiny studio in Brooklyn."]),
    ("hate cilantro, tastes like soap to me", ["User hates cilantro."]),
    ("Work is crazy this week", []),
    ("Running makes me happy", []),
    ("have a nice day", []),
    ("Was a long day", []),
    # nor where the sentence is not the user's doing (LoCoMo's turns)
    (
        "Lost my job as a banker yesterday, so I'm gonna start my own business.",
        [
            "User lost their job as a banker on 7 May 2023.",
            "User is gonna start their own business.",
        ],
    ),
    (
        "Hey! Been having some tough times lately.",
        ["User has been having some tough times lately."],
    ),
    ("Learning German has been tough but worth it", []),
    ("Mixed emotions - excited but anxious.", []),
    ("I've done a painting too, take a look.", ["User has done a painting too, take a look."]),
    # each verb after a comma is the user's too; a correction's "no wait" is no part of it
    (
        "im 29, work in marketing, and live with my boyfriend in austin",
        [
            "User is 29 years old.",
            "User works in marketing.",
            "User lives with their boyfriend in austin.",
        ],
    ),
    (
        "no wait, my flight is on the 14th not the 15th",
        ["User's flight is on the 14th not the 15th."],
    ),
    # what is said of the one the user named is a fact of its own, where the pronoun fits them
    ("my sons name is Arjun and he's 7", ["User's son's name is Arjun.", "User's son is 7."]),
    (
        "My mom retired last year and she paints every day",
        ["User's mom retired in 2022.", "User's mom paints every day."],
    ),
    ("my sister met a guy and he's a doctor", ["User's sister met a guy and he's a doctor."]),
    # round 14 (heldout15): a state said without "I'm", kept as it lasts
    ("Allergic to shellfish btw", ["User is allergic to shellfish."]),
    ("vegan for 5 years now", ["User has been vegan for 5 years now."]),
    (
        "gluten free since my diagnosis last year",
        ["User has been gluten free since their diagnosis in 2022."],
    ),
    ("Vegan food is great", []),
    ("Gluten free bread tastes bad", []),
    ("Feel free to reach out any time.", []),
    # what the user no longer is, not "longer at Google"; "no" alone still opens
    (
        "no longer at Google, I left in July",
        ["User is no longer at Google, they left in July."],
    ),
    ("No longer a problem for me", []),
    ("no, I live in Leeds", ["User lives in Leeds."]),
    # the user's spelling is theirs; a verb in capitals agrees like any other
    ("my favourite band is Radiohead", ["User's favourite band is Radiohead."]),
    ("I LOVE jazz", ["User loves jazz."]),
    ("I work at IBM", ["User works at IBM."]),
    # praise with rolled eyes is sarcasm; annoyance alone leaves the fact standing
    ("oh sure, I LOVE doing taxes \U0001f644", []),
    ("I have to work on Saturday \U0001f644", ["User has to work on Saturday."]),
    # a habit of speech or a shout in quotes states nothing; a count with nothing counted neither
    ("my coworker keeps saying 'I'm the best at excel' lol", []),
    ("my little brother just yelled 'im the king of the world' from the roof", []),
    ("My boss said 'I hate Mondays'.", ["User's boss said 'I hate Mondays'."]),
    ("my friend has three", []),
    ("I have two dogs", ["User has two dogs."]),
    # round 15 (heldout16): an opener before a dash, "pls" as "please"
    ("quick one \u2014 I'm allergic to shellfish", ["User is allergic to shellfish."]),
    ("I'm allergic to shellfish so pls keep that in mind", ["User is allergic to shellfish."]),
    # a title typed in lowercase ends no sentence, unless the user's next one starts there
    (
        "i saw dr. patel about my knee. i live on main st. my dog loves the park",
        [
            "User saw dr. patel about their knee.",
            "User lives on main st.",
            "User's dog loves the park.",
        ],
    ),
    # a clause whose object points back at the one before stays with it
    (
        "I used to play the cello but I haven't touched it in years",
        ["User used to play the cello but they haven't touched it in years."],
    ),
    # an ironic interjection makes its message's praise sarcasm, not its plain statements
    ("Oh great, another Monday. I just LOVE Mondays.", []),
    ("yeah right, I love waiting in line", []),
    ("Oh great, my car broke down again", ["User's car broke down again."]),
    # a hedge with a question mark is a statement; so is one after a request and a comma
    (
        "i think i might be lactose intolerant? not sure",
        ["User thinks they might be lactose intolerant."],
    ),
    ("Please stop suggesting meat dishes, I told you I'm vegan", ["User is vegan."]),
    (
        "can you find me a hotel, we're staying in Rome for 3 nights",
        ["User is staying in Rome for 3 nights."],
    ),
    # "IT" after a preposition is the trade; "did" before a thing done is the past of "do"
    (
        "I'm 34, work in IT, and live in Leeds",
        ["User is 34 years old.", "User works in IT.", "User lives in Leeds."],
    ),
    (
        "I LOVE hiking!!! did the whole Appalachian trail last year",
        ["User loves hiking.", "User did the whole Appalachian trail in 2022."],
    ),
    # "and I" after a clause of its own is no compound subject; a doing after a doing's comma
    (
        "The team is really nice and I'm having fun",
        ["The team is really nice and User is having fun."],
    ),
    (
        "I'm training for a marathon, currently running about 40 miles a week",
        ["User is training for a marathon.", "User is currently running about 40 miles a week."],
    ),
    # round 16 (heldout17): a clause that ends what the first said, or turns from it to now, is
    # one fact with it; not when it sets a slot of its own
    (
        "I used to smoke but I quit when my daughter was born.",
        ["User used to smoke but they quit when their daughter was born."],
    ),
    ("I was vegan for a while but I gave up", ["User was vegan for a while but they gave up."]),
    (
        "I was a vegetarian for years, but now I eat chicken again.",
        ["User was a vegetarian for years, but now they eat chicken again."],
    ),
    (
        "I used to work at Google but now I work at Meta",
        ["User used to work at Google.", "User works at Meta."],
    ),
    # a verb whose past is its present is past beside a clause of the past
    ("I quit when my daughter was born.", ["User quit when their daughter was born."]),
    # the moment it is said counts nothing toward the floor; an age or an event stays
    ("I'm so tired today.", []),
    ("I'm bored right now", []),
    ("I'm 30 today!", ["User is 30 on 8 May 2023."]),
    ("I got married today", ["User got married on 8 May 2023."]),
    # a disclaimer is not what the user is; what follows it is
    (
        "I wouldn't say I'm an expert, but I've been coding in Python for ten years.",
        ["User has been coding in Python for ten years."],
    ),
    ("I wouldn't call myself a runner", []),
    # round 17 (heldout18): a label before a dash is no part of the fact; a later clause's "her"
    # or "him" is the one the first clause named, where that one fits the pronoun
    ("Quick note \u2014 I'm allergic to shellfish.", ["User is allergic to shellfish."]),
    ("Update - I got the job at Spotify!", ["User got the job at Spotify."]),
    ("Big news! \u2014 I'm pregnant.", ["User is pregnant."]),
    ("You know what \u2014 I love jazz.", ["User loves jazz."]),
    ("I'm beat \u2014 I worked all night.", ["User is beat \u2014 they worked all night."]),
    (
        "I've been doing great - I just won a tournament!",
        ["User has been doing great - they just won a tournament."],
    ),
    (
        "My mom lives in Manila and I visit her every Christmas.",
        ["User's mom lives in Manila.", "User visits their mom every Christmas."],
    ),
    (
        "My sister Maya lives in Oslo and I love her cooking.",
        ["User's sister Maya lives in Oslo.", "User loves their sister Maya's cooking."],
    ),
    (
        "My dad is a pilot and I miss him a lot.",
        ["User's dad is a pilot.", "User misses their dad a lot."],
    ),
    (
        "My son loves football and I coach his team.",
        ["User's son loves football.", "User coaches their son's team."],
    ),
    # a pronoun that does not fit the one named stays as said
    (
        "My brother lives in Rome and I visit her sometimes.",
        ["User's brother lives in Rome.", "User visits her sometimes."],
    ),
    # round 18 (heldout19): "As a <role>, I …" says who the user is, then what they do as one
    # (only for a word that names a person, in the present); a comment tail with "which is";
    # "back from" with its "I" left out
    (
        "As a diabetic, I have to watch my carbs pretty closely.",
        ["User is a diabetic.", "User has to watch their carbs pretty closely."],
    ),
    ("As a vegan I avoid honey.", ["User is a vegan.", "User avoids honey."]),
    (
        "As a software engineer, I spend all day at a desk.",
        ["User is a software engineer.", "User spends all day at a desk."],
    ),
    ("As a kid, I loved Lego.", ["As a kid, User loved Lego."]),
    ("As a hobby, I paint.", ["As a hobby, User paints."]),
    ("As a nurse I worked nights for years.", ["As a nurse User worked nights for years."]),
    (
        "I'm allergic to cats, which is awkward because my flatmate has two.",
        ["User is allergic to cats."],
    ),
    ("I have two.", []),
    ("Just back from ten days in Vietnam.", ["User is just back from ten days in Vietnam."]),
    ("Back to work tomorrow.", []),
    # fortieth session (heldout20): where the user comes from, said first, then the rest; "Been
    # a <role>" for a while or since a time is the user's (both wrote half, or nothing)
    (
        "Originally from Manila, I've lived in Dubai for six years.",
        ["User is originally from Manila.", "User has lived in Dubai for six years."],
    ),
    (
        "Born in Leeds, I've never left Yorkshire.",
        ["User was born in Leeds.", "User has never left Yorkshire."],
    ),
    ("Originally I wanted to be a vet.", ["Originally User wanted to be a vet."]),
    ("Been a nurse for 12 years.", ["User has been a nurse for 12 years."]),
    (
        "Been a season ticket holder at the Celtics for a decade now.",
        ["User has been a season ticket holder at the Celtics for a decade now."],
    ),
    ("Been a vegetarian since college.", ["User has been a vegetarian since college."]),
    ("Been a disaster since Monday.", []),
    ("Been a rollercoaster for a few weeks.", []),
    ("Been a long road.", []),
    # (heldout21) what follows a semicolon or a dash is its own clause: its verb is not the
    # doing's, its "me" not the selling's object (both wrote nothing)
    ("Moving to Leeds; can't wait.", ["User is moving to Leeds."]),
    (
        "Sold the car; the tram gets me everywhere now.",
        ["User sold the car; the tram gets them everywhere now."],
    ),
    ("Been hectic for me; work is mad.", []),
    # (heldout22) "we both" / "we all" are the user's "I" (it was "User boths hate crowds",
    # and 18 LoCoMo turns "… alls made …"); "last" before a past is no verb ("since Nate lasts
    # talked", 22 turns); "For context" only says why; an age or who the user is, then a comma
    # and another statement, are two (the age's slot took the sentence); "Home from"
    ("We both hate crowds.", ["User hates crowds."]),
    ("We all went to the beach.", ["User went to the beach."]),
    ("I last spoke to my sister in May.", ["User last spoke to their sister in May."]),
    ("I last the whole game.", ["User lasts the whole game."]),
    # and "first" so, "least" an adverb, the British pasts and "retook" pasts (LoCoMo's facts read
    # "Joanna firsts watched it", "where Caroline leasts expect it", "Jon learnts", "retooks")
    ("I first met Anna at school.", ["User first met Anna at school."]),
    ("I learnt to ski in Austria.", ["User learnt to ski in Austria."]),
    ("I retook my driving test.", ["User retook their driving test."]),
    ("I least expect praise from my boss.", ["User least expects praise from their boss."]),
    # "we" read as "I" with a word between takes the singular verb ("who Melanie really ares")
    ("We really are happy here.", ["User really is happy here."]),
    ("We really aren't sure about the move.", ["User really isn't sure about the move."]),
    # "so" that says how much is no opener ("much has happened since…"), and a fact whose opener
    # was cut begins with a capital ("that pic was…"; not "iPhones")
    (
        "So much has happened since we last spoke - I went to a conference.",
        ["So much has happened since User last spoke - they went to a conference."],
    ),
    ("So I finally did it, I quit my job.", ["User finally did it, they quit their job."]),
    ("Yeah, that pic was from a show I went to.", ["That pic was from a show User went to."]),
    ("iPhones are what I collect.", ["iPhones are what User collects."]),
    # a "me" names the user as an "I" does: a later "myself" or "my" is theirs (it was "…for Jon
    # is a way to express Jon", "…told User User's car…"; 63 LoCoMo turns)
    (
        "Dancing for me is like a way to express myself and find my happy place.",
        ["Dancing for User is like a way to express themselves and find their happy place."],
    ),
    ("Tom told me my car was ready.", ["Tom told User their car was ready."]),
    # what each of "us" has one of ("a part of Nate's lives")
    (
        "Dancing has become a big part of our lives.",
        ["Dancing has become a big part of User's life."],
    ),
    ("For context I'm 52.", ["User is 52 years old."]),
    ("I'm 52, I had a hip replaced.", ["User is 52 years old.", "User had a hip replaced."]),
    ("I'm a nurse, I work nights.", ["User is a nurse.", "User works nights."]),
    (
        "I'm sure with my hard work, I can make it.",
        ["User is sure with their hard work, they can make it."],
    ),
    (
        "I love that first movie too, I even have the whole collection.",
        ["User loves that first movie too, they even have the whole collection."],
    ),
    ("Home from a week in Iceland.", ["User is home from a week in Iceland."]),
    ("Home is where the heart is.", []),
    # an adverb that is the fact: "I work remotely" wrote nothing ("I'm just curious" still none)
    ("I work remotely.", ["User works remotely."]),
    ("I'm just curious.", []),
    # how a thing moves the user, said with the thing first, is a statement of theirs; not a
    # pronoun's (it points back, or is someone), nor what scared them once
    ("Heights freak me out.", ["User is freaked out by heights."]),
    # each verb's third person: "annoys" (a form made by hand, "annoies", wrote nothing)
    ("Loud music annoys me.", ["User is annoyed by loud music."]),
    ("Public speaking terrifies me.", ["User is terrified of public speaking."]),
    ("My job stresses me out.", ["User is stressed out by their job."]),
    ("Honestly pizza is my favourite food.", ["Pizza is User's favourite food."]),
    # a workplace said as a doing, or as where a job started
    ("I'm working at Spotify now.", ["User works at Spotify."]),
    ("I started at Spotify in March.", ["User works at Spotify."]),
    # whom the user lives with is kept beside where (it was dropped with the residence's text)
    (
        "I live in Manchester with my wife Sara.",
        ["User lives in Manchester.", "User lives with their wife Sara."],
    ),
    ("I live in Oslo with roommates.", ["User lives in Oslo."]),
    # a "though" or "anyway" answers the message before; the memory is read alone
    ("I hate running in the rain though.", ["User hates running in the rain."]),
    ("I'm vegan anyway.", ["User is vegan."]),
    # a plural favourite keeps its verb; "me and my …" is the user and theirs; a day and month
    # "next year" is that day
    ("My favourite films are Alien and Heat.", ["User's favourite films are Alien and Heat."]),
    ("Me and my sister run a bakery.", ["User and their sister run a bakery."]),
    # an age said with "now", turned, or corrected: the age's slot (they were nothing, "User
    # just turned 34." and "User is 34, not 33." beside the age they meant to change)
    ("I'm 34 now.", ["User is 34 years old."]),
    ("I just turned 34.", ["User is 34 years old."]),
    ("Actually I'm 34, not 33.", ["User is 34 years old."]),
    ("I'm 34 not 33, just had my birthday.", ["User is 34 years old."]),
    ("I'm 34 minutes late.", ["User is 34 minutes late."]),
    # a past that is also a name, then its own verb: someone's doing (was "User rose smiled…")
    ("Rose smiled for the first time today.", []),
    ("Drew called me yesterday.", []),
    ("Rose early today to catch the train.", ["User rose early on 8 May 2023 to catch the train."]),
    # a move's month said without its year is kept (it was dropped: "User lives in Berlin.")
    ("I moved to Berlin in March.", ["User lives in Berlin (moved there in March)."]),
    # what was quit is the first clause's: it was "User quit in 2021." alone
    ("I used to smoke but I quit two years ago.", ["User used to smoke but they quit in 2021."]),
    # one named by the user, then "and I": a compound subject (was "User's partner Alex." and
    # "User ares going to Japan.")
    (
        "My partner Alex and I are going to Japan.",
        ["User and their partner Alex are going to Japan."],
    ),
    ("My sister Anna and I run a bakery.", ["User and their sister Anna run a bakery."]),
    # not a compound subject: a capitalised word after a verb (heldout3's, cut again)
    (
        "My partner is Japanese, so we visit Osaka every summer.",
        ["User's partner is Japanese.", "User visits Osaka every summer."],
    ),
    (
        "My sister Anna lives in Rome and I visit her often.",
        ["User's sister Anna lives in Rome.", "User visits their sister Anna often."],
    ),
    # "we are" is "I am" ("User ares vegan." before), a compound subject keeps its "are"
    ("We are vegan.", ["User is vegan."]),
    ("We were in Rome in 2019.", ["User was in Rome in 2019."]),
    ("Tom and I are moving to Leeds.", ["Tom and User are moving to Leeds."]),
    ("Our wedding is on 12 June next year.", ["User's wedding is on 12 June 2024."]),
    ("My job stresses me out.", ["User is stressed out by their job."]),
    ("Public speaking terrifies me.", ["User is terrified of public speaking."]),
    ("Flying scares me to death.", ["User is scared of flying."]),
    ("It scares me.", []),
    ("Everything stresses me out.", []),
    ("The dog scared me.", []),
    # the workplace said with the occupation is kept (it was "User works as a nurse.")
    (
        "I work as a nurse at St Mary's hospital.",
        ["User works as a nurse at St Mary's hospital."],
    ),
    ("I work for Acme as a designer.", ["User works at Acme as a designer."]),
    ("I work as a barista.", ["User works as a barista."]),
    ("I work as a nurse in Leeds.", ["User works as a nurse in Leeds."]),
    ("I work as a midwife now.", ["User works as a midwife."]),
    ("I work as a nurse in a hospital.", ["User works as a nurse in a hospital."]),
    # marriage and names said otherwise; more said, the sentence whole
    ("I got divorced in 2021.", ["User got divorced in 2021."]),
    ("I got married and moved to Leeds.", ["User got married and moved to Leeds."]),
    ("Don't call me Robert, I go by Bob.", ["User goes by Bob."]),
    # "we" with a lasting trait, two words (it wrote nothing); a list after a label
    ("We're vegetarian.", ["User is vegetarian."]),
    ("summarize this: I'm 29, work in marketing, and live with my boyfriend.", []),
    # a list of the user's verbs: "have" with whatever follows, a modal, a doing
    (
        "I'm 45, have bad knees, and can only train 3 days a week.",
        ["User is 45 years old.", "User has bad knees.", "User can only train 3 days a week."],
    ),
    (
        "I'm a teacher, have two kids, and love hiking.",
        ["User is a teacher.", "User has two kids.", "User loves hiking."],
    ),
    ("im not sure i follow, can you explain again", []),
    # text handed over (to translate, to proofread) and a part played are not the user's
    ("Translate to French: I have two cats and I live in Paris.", []),
    (
        "Can you proofread this email? 'Hi John, I will be out next week. I live in Denver and"
        " my flight leaves Monday. Best, Amy'",
        [],
    ),
    (
        "I'm writing a cover letter: \"I have 5 years of experience in Python and I am"
        ' passionate about data." Does this sound ok?',
        [],
    ),
    ("roleplay: you are a pirate. I am a sailor named Jack.", []),
    ("Let's pretend I'm a 70 year old man living in Tokyo.", []),
    # the assistant given a part, the user as they are
    (
        "Act as my trainer. I'm 45 and have bad knees.",
        ["User is 45 years old.", "User has bad knees."],
    ),
    # a quote the user tells of, nothing asked of it, stays
    (
        "There's a quote I really like: \"Turn on the light - happiness hides in the darkest"
        " of times.\" That's how I keep hope alive.",
        [
            "There's a quote User really likes: \"Turn on the light - happiness hides in the"
            " darkest of times.\" That's how they keep hope alive."
        ],
    ),
    # the "I" left out, given back
    ("Have been vegetarian since 2015.", ["User has been vegetarian since 2015."]),
    ("Can't stand country music.", ["User can't stand country music."]),
    ("Can't wait!", []),
    (
        "Thinking of switching careers to UX design.",
        ["User is thinking of switching careers to UX design."],
    ),
    ("Loving my new apartment so far.", ["User is loving their new apartment so far."]),
    ("Gonna keep chasing my dreams.", ["User is gonna keep chasing their dreams."]),
    ("Gonna be a big change.", []),
    (
        "Gonna explore more and volunteer at shelters next month.",
        ["User is gonna explore more and volunteer at shelters in June 2023."],
    ),
    ("I'm good at math but bad at spelling.", ["User is good at math but bad at spelling."]),
    ("I'm good, thanks!", []),
    # the reason given for a question is a statement
    ("Since I'm diabetic, what snacks can I eat?", ["User is diabetic."]),
    ("Because I work nights, when should I sleep?", ["User works nights."]),
    (
        "Since my divorce I've been living alone.",
        ["Since User's divorce User has been living alone."],
    ),
    # an introduction by "my name's", an age said before what the user is, a trait
    (
        "hi! my name's Tom, i'm a dentist from Cardiff",
        ["User's name is Tom.", "User is a dentist from Cardiff."],
    ),
    ("I'm a 32 year old accountant.", ["User is 32 years old.", "User is an accountant."]),
    (
        "I'm a 25-year-old nurse from Leeds.",
        ["User is 25 years old.", "User is a nurse from Leeds."],
    ),
    ("I'm a 40 year old dad of three.", ["User is 40 years old.", "User is a dad of three."]),
    ("I'm adopted.", ["User is adopted."]),
    # chat's short forms and a learner's forms
    ("tmrw is my bday", ["User's birthday is on 9 May."]),
    ("Today's my birthday!", ["User's birthday is on 8 May."]),  # was "On 8 May 2023's …"
    ("idk if i told u but im pregnant", ["User is pregnant."]),
    ("i m from india and now living in toronto", ["User is from india and now living in Toronto."]),
    ("i has two brothers", ["User has two brothers."]),
    ("I live in BC with my bf.", ["User lives in BC.", "User lives with their boyfriend."]),
    ("Yesterday was my last day at work.", ["User's last day at work was on 7 May 2023."]),
    # a period that is the sentence's subject is said as one ("In the week of 1 May 2023 was wild")
    (
        "Last week was wild, I got noticed by an editor.",
        ["The week of 1 May 2023 was wild, User got noticed by an editor."],
    ),
    (
        "I'm not pregnant anymore, the baby arrived on Tuesday!",
        ["User is not pregnant anymore, the baby arrived on Tuesday."],
    ),
    ("I got a new job at Amazon!", ["User works at Amazon."]),
    # a lasting trait with its adverb
    ("I'm unemployed now.", ["User is unemployed now."]),
    ("So now I'm single.", ["User is single."]),
    # a list's tail is no clause: one opening on the user's own holds a verb
    (
        "I met my husband and my best friend at college.",
        ["User met their husband and their best friend at college."],
    ),
    (
        "I live with my wife and our two kids (ages 5 and 8).",
        ["User lives with their wife and their two kids (ages 5 and 8)."],
    ),
    (
        "I went to Paris with my mom and my sister stayed home.",
        ["User went to Paris with their mom.", "User's sister stayed home."],
    ),
    ("we're vegetarian btw", ["User is vegetarian."]),
    (
        "About me: I'm 29, work in marketing, and live with my boyfriend.",
        ["User is 29 years old.", "User works in marketing.", "User lives with their boyfriend."],
    ),
    # after what the user is, "and" a verb of theirs ("User is 29 and live alone…")
    (
        "I'm 29 and live alone in Brooklyn.",
        ["User is 29 years old.", "User lives alone in Brooklyn."],
    ),
    ("I'm married and have two kids.", ["User is married.", "User has two kids."]),
    ("I'm a vegan and love cooking.", ["User is a vegan.", "User loves cooking."]),
    ("I'm going to cook and bake a cake.", ["User is going to cook and bake a cake."]),
    ("I'm vegan but my husband isn't.", ["User is vegan but their husband isn't."]),
    ("I'm a vegan, have been for 3 years.", ["User is a vegan, has been for 3 years."]),
]


@pytest.mark.parametrize(("said", "facts"), OFFLINE_FACTS)
def test_offline_facts_are_grammatical_and_requests_are_not_facts(said, facts):
    from memory.background.extraction.offline import extract as offline_extract

    found = offline_extract(said, subject="User", today=dt.date(2023, 5, 8))
    assert [f.text for f in found] == facts


@pytest.mark.parametrize(
    ("said", "text", "event_date"),
    [
        ("I saw Anna yesterday.", "User saw Anna on 7 May 2023.", dt.date(2023, 5, 7)),
        ("I ran a 10k last Friday.", "User ran a 10k on 5 May 2023.", dt.date(2023, 5, 5)),
        (
            "I started a new job three days ago.",
            "User started a new job on 5 May 2023.",
            dt.date(2023, 5, 5),
        ),
        ("I ran a 10k on 3 May 2023.", "User ran a 10k on 3 May 2023.", dt.date(2023, 5, 3)),
        # a period is in the text, and no day is made up for it
        (
            "We're thinking about moving to Bristol next year.",
            "User is thinking about moving to Bristol in 2024.",
            None,
        ),
        ("I went to Paris last month.", "User went to Paris in April 2023.", None),
        ("We got married last june.", "User got married in June 2022.", None),
        ("I started yoga two weeks ago.", "User started yoga in the week of 24 April 2023.", None),
        # a weekend is no day (it was written "… before 8 May 2023", and dated that day, today)
        ("I went hiking last weekend.", "User went hiking on the weekend of 6 May 2023.", None),
        (
            "My brother is visiting this weekend.",
            "User's brother is visiting on the weekend of 13 May 2023.",
            None,
        ),
        ("I went hiking this weekend.", "User went hiking on the weekend of 6 May 2023.", None),
        ("I moved to Leeds two years ago.", "User lives in Leeds (moved there in 2021).", None),
        (
            "Our wedding is on 12 June next year.",
            "User's wedding is on 12 June 2024.",
            dt.date(2024, 6, 12),
        ),
        # a day without its year: the next such day, or the last one when told of the past
        (
            "I'm flying to Rome on 3 January.",
            "User is flying to Rome on 3 January.",
            dt.date(2024, 1, 3),
        ),
        (
            "I booked flights for 3 January.",
            "User booked flights for 3 January.",
            dt.date(2024, 1, 3),
        ),
        ("I met Tom on 3 January.", "User met Tom on 3 January.", dt.date(2023, 1, 3)),
        (
            "We got engaged on 29 February.",
            "User got engaged on 29 February.",
            dt.date(2020, 2, 29),
        ),
        # a day that comes each year dates nothing
        ("My mum's birthday is on 14 March.", "User's mum's birthday is on 14 March.", None),
        ("Our anniversary was on 3 May.", "User's anniversary was on 3 May.", dt.date(2023, 5, 3)),
        ("I met her on the 3rd of May.", "User met her on the 3rd of May.", dt.date(2023, 5, 3)),
        # a day of the month alone, after a word of when: dated, kept as said; not a rank
        ("My flight is on the 14th.", "User's flight is on the 14th.", dt.date(2023, 5, 14)),
        ("My exam is on the 3rd.", "User's exam is on the 3rd.", dt.date(2023, 6, 3)),
        ("I met her on the 3rd.", "User met her on the 3rd.", dt.date(2023, 5, 3)),
        ("I live on the 3rd floor.", "User lives on the 3rd floor.", None),
        ("Our anniversary is June 5.", "User's anniversary is June 5.", None),
        ("I was born on 2 May 1990.", "User was born on 2 May 1990.", dt.date(1990, 5, 2)),
        # a weekday: the coming one, or the last when told of the past (a habit is no day)
        ("I have a meeting on Friday.", "User has a meeting on Friday.", dt.date(2023, 5, 12)),
        ("I'm off this Friday.", "User is off this Friday.", dt.date(2023, 5, 12)),
        ("I saw her on Saturday.", "User saw her on Saturday.", dt.date(2023, 5, 6)),
        ("I play tennis on Fridays.", "User plays tennis on Fridays.", None),
        # "I've got" is "I have", no past ("… on Thursday, wish me luck" was last Thursday)
        (
            "I've got a job interview on Thursday.",
            "User has got a job interview on Thursday.",
            dt.date(2023, 5, 11),
        ),
        (
            "I got a parking ticket on Thursday.",
            "User got a parking ticket on Thursday.",
            dt.date(2023, 5, 4),
        ),
        ("Last Friday I ran a 10k.", "On 5 May 2023 User ran a 10k.", dt.date(2023, 5, 5)),
        # a time to come counted from the message; not how long something took, nor a
        # frequency, nor what has not been done
        (
            "I start my new job in three days.",
            "User starts their new job on 11 May 2023.",
            dt.date(2023, 5, 11),
        ),
        ("My exam is in two weeks.", "User's exam is in the week of 22 May 2023.", None),
        ("My visa expires in 6 months.", "User's visa expires in November 2023.", None),
        ("We're moving in a few days.", "User is moving around 11 May 2023.", None),
        ("I lost 5 pounds in two weeks.", "User lost 5 pounds in two weeks.", None),
        ("I haven't slept in three days.", "User hasn't slept in three days.", None),
        ("I can run 5k in 25 minutes.", "User can run 5k in 25 minutes.", None),
        ("I go to the gym twice in a week.", "User goes to the gym twice in a week.", None),
    ],
)
def test_a_memory_is_dated_only_by_a_day_said(said, text, event_date):
    from memory.background.extraction.offline import extract as offline_extract

    [fact] = offline_extract(said, subject="User", today=dt.date(2023, 5, 8))
    assert (fact.text, fact.event_date) == (text, event_date)


@pytest.mark.parametrize(
    ("said", "memory", "ends"),
    [
        ("I no longer live in Paris.", "User lives in Paris (moved there in 2019).", True),
        ("I no longer live in Paris.", "User lives in Berlin.", False),
        ("I don't have a cat anymore.", "User has a cat named Miso.", True),
        ("I don't have a cat anymore.", "User is allergic to cats.", False),
        ("I don't have a cat anymore.", "User's sister has a cat.", False),
        ("I don't have a cat anymore.", "User doesn't have a cat anymore.", False),
        ("I'm not vegetarian anymore.", "User is vegetarian.", True),
        ("I'm not vegetarian anymore.", "User loves vegetarian food.", False),
        ("I stopped eating meat.", "User eats meat every day.", True),
        ("I'm no longer working at Initech.", "User works at Initech.", True),
        ("I don't know.", "User knows.", False),
        ("I moved out of Paris.", "User lives in Paris.", True),
        ("We finally moved away from Paris.", "User lives in Paris (moved there in 2019).", True),
        ("I moved out of Paris.", "User lives in Berlin.", False),
        # a named employer left ends the workplace; a place left does not
        ("I left Deliveroo.", "User works at Deliveroo.", True),
        ("I quit Initech last week.", "User works at Initech.", True),
        ("I left Deliveroo, I'm at Spotify now.", "User works at Deliveroo.", True),
        ("I left Paris.", "User works at Deliveroo.", False),
        # a death or loss told of one named ends that one's having, not another's
        ("My cat Mochi passed away last week.", "User has a cat named Mochi.", True),
        ("Sadly we lost our dog Pepper.", "User has a dog called Pepper.", True),
        ("Unfortunately, my old dog Rex died.", "User got a dog, Rex, in 2019.", True),
        ("My cat Luna died.", "User has two cats, Luna and Leo.", False),
        ("My cat Luna died.", "User has a cat named Mochi.", False),
        ("My cat Luna died.", "User's sister has a cat named Luna.", False),
        ("My cat Luna died.", "User is allergic to cats like Luna.", False),
        ("My friend Alex died laughing at my joke.", "User has a friend Alex.", False),
        ("My dog died.", "User has a dog named Rex.", False),
        ("My greyhound Bolt died.", "User adopted a rescue greyhound named Bolt.", True),
        ("My greyhound Bolt died.", "User has a greyhound named Bolt.", True),
        # a denial's first clause, when another follows; a time said after it
        ("I'm not with Tom anymore, we split up.", "User is dating Tom.", True),
        ("I'm not a teacher anymore, I'm a principal now.", "User is a teacher.", True),
        ("I'm not pregnant anymore, the baby arrived!", "User is pregnant.", True),
        ("We're not moving to Denver after all.", "User is moving to Denver in May.", True),
        ("I quit my job last week.", "User works at Initech.", True),
        ("I don't eat meat, fish or eggs.", "User eats meat.", False),
        # what the user sold or gave away, whatever the verb that said they had it
        ("I sold my car.", "User has a car.", True),
        ("We got rid of our old Honda.", "User drives a 2015 Honda Civic.", True),
        # its kind read from the clause that denies, not the whole sentence (was "have")
        ("I sold my car, it was too old.", "User drives a red car.", True),
        ("I sold my car.", "User's sister has a car.", False),
        ("I sold my car.", "User loves cats.", False),
    ],
)
def test_a_negation_ends_only_the_memory_that_says_what_it_denies(said, memory, ends):
    from memory.background.extraction import offline

    [fact] = offline.extract(said, subject="User", today=dt.date(2023, 5, 8)) or [offline.Fact("")]
    assert offline.ends(fact, memory, "User") is ends


# Text built to make a regex try again from every position (each nested quantifier over the same
# characters did, before: 100,000 letters took 26 s), each with how many facts it holds; one test
# each, so that the workers share them (together ~60 s of CPU).
_N = 50_000
ONE_PASS_COUNTS = {
    "i " * _N: 0,
    "i live in " * _N: 0,
    "i live in " + "berlin " * _N: 0,
    "I'm " + "Sam " * _N: 0,
    "I'm S" + "a" * 2 * _N: 1,
    "I'm " + "Sam-" * _N: 0,
    "please " * _N + "call me Sam": 0,
    "call me " * _N: 0,
    "I don't " * _N: 0,
    # round 20's: quoted passages, "I'm X and <verb>", a list's modals, a tail of the user's
    # own, words of feeling before a name
    "' a " * _N + "?": 0,
    '"' + "w " * _N + '" can you check it?': 0,
    "I'm a " + "and love " * _N: 0,
    "I'm 29" + ", can only " * _N: 0,
    "I met my husband" + " and my friend" * _N: 0,
    "Sadly, " * _N + "Mochi died": 0,
    "Since I " + "a, " * _N + "?": 0,
    "I'm a 25 year old " + "nurse " * _N: 0,
    "My exam is " + "in two " * _N + "weeks": 0,
    "I don't have a cat" + " anymore" * _N: 0,
    "I'm not vegan" + ", now" * _N: 0,
    "I'm not " * _N: 0,
    "I stopped " * _N: 0,
    "I quit my job at " + "A" * 2 * _N: 1,
    "I'm Sam, " * _N + "I'm 40.": 1,  # an introduction is split off once
    "i'm sam, " * _N: 1,
    "hi " * _N + "i'm sam": 0,
    "I moved - " * _N: 0,
    "I moved out of " + "Paris " * _N: 0,
    "I love jazz - " * _N + "you": 0,
    "you know " * _N + "I love jazz": 0,
    "hi im " * _N: 0,
    "im " * _N + "lena": 0,
    "I moved" + "." * 2 * _N + " to": 0,
    "I moved\u2026 " * _N: 0,
    "I hate olives, stop" + " giving" * _N: 1,
    "I have a cat" + ", so" * _N: 0,
    "I have a cat, so no" + " no" * _N: 1,
    "Remember, " * _N + "I'm vegan": 0,
    "you might remember " * _N: 0,
    "Did I tell you " * _N + "I ski?": 0,
    "Did I tell you I ski" + "?" * _N: 0,
    "My " + "friend " * _N + "moved to Oslo": 0,
    "I work at Acme" + ", lol" * _N + "!": 0,
    "my friend goes " + " ," * _N + " 'hi'": 1,
    "I have " + "two " * _N: 0,
    "allergic" + " to" * _N: 0,
    "gluten free" + " since" * _N: 0,
    ", " * _N + "lol": 0,
    "my dog Rex, " + "he " * _N: 0,
    "I quit" + " ago" * _N: 0,
    # round 12's patterns
    "I moved to Oslo" + ", so" * _N + " excited": 0,
    "I moved to Oslo" + " cant" * _N + " wait": 0,
    "I moved to Oslo" + "!" * _N + " yay": 1,  # 4,000 took 2.7 s before its fix
    "my " + "sister " * _N + "'s a chef": 0,
    "my sister's " * _N: 0,
    "so " + "im " * _N + "a nurse": 0,
    "I love jazz " + ":( " * _N + "\U0001f3e1" * _N: 1,
    "how do " * _N + "i say": 0,
    "I " + "\u2764" * _N + " jazz": 0,
    "I got married " + "last june " * _N: 0,
    "my birthday is on " + "the " * _N + "3rd of March": 0,
    # round 13's: a possessive or "is" without its apostrophe, the "I" left out, verbs
    # listed after commas ("my moms in " 20,000 times took 43 s in its first version)
    "my moms in " * _N: 0,
    "my husbands name " * _N: 0,
    "started learning korean" + ", its" * _N: 0,
    "I'm 29" + ", work at" * _N: 0,
    "I hate cilantro" + ", tastes like" * _N: 0,
    "been " * _N: 0,
    "my son is " + "and he is " * _N: 0,
    "my sister lives in Oslo and she" + " is" * _N: 0,
    # a run of spaces: 4,000 took 12 s before
    "I have a cat" + " " * _N + "x": 1,
}
# Round 15's and later rounds' patterns (heldout16 on), with NULs, emojis and nested quotes: the
# facts each should give.
ONE_PASS_FACTS = {
    "quick one \u2014 " * _N + "I'm vegan": ["User is vegan."],
    "I'm allergic to nuts so pls" + " pls" * _N: ["User is allergic to nuts."],
    "i work nights at st. " + "st. " * _N: [],
    "I play the cello but I haven't touched it" + " in it" * _N: [],
    "Oh great, another Monday" + ". " * _N + "I \"LOVE\" 'Mondays'": [],
    "i think i might be lactose intolerant" + "?" * _N: [
        "User thinks they might be lactose intolerant."
    ],
    "Please stop, " * _N + "I'm vegan": ["User is vegan."],
    "I work in IT" + "." * _N: ["User works in IT."],
    "did a 10k" + " \U0001f3c3" * _N: ["User did a 10k."],
    "I'm training for a marathon, currently running 40 miles a week" + "!" * _N: [
        "User is training for a marathon.",
        "User is currently running 40 miles a week.",
    ],
    "The team is really nice and I'm having fun" + "!" * _N: [
        "The team is really nice and User is having fun."
    ],
    "quick one \u2014 I'm vegan\x00": [],
    # round 16's (heldout17)
    "I quit when " + "my " * _N + "was born": [],
    "I used to smoke but I quit in 2020" + "!" * _N: ["User used to smoke but they quit in 2020."],
    "I was vegan but now I eat fish" + "!" * _N: ["User was vegan but now they eat fish."],
    "I was vegan but now" + " now" * _N: [],
    "I'm tired" + " today" * _N: [],
    "I wouldn't say" + " say" * _N: [],
    # round 17's (heldout18)
    "Update " * _N + "\u2014 I'm vegan": [],
    "a" * _N + " \u2014 I'm vegan": ["User is vegan."],
    "My mom lives in Rome and I visit her" + " her" * _N: ["User's mom lives in Rome."],
    "My mom lives in Rome and I love" + " her" * _N + " cooking": ["User's mom lives in Rome."],
    "My mom " * _N + "lives here and I visit her": ["User visits their mom."],
    # round 18's (heldout19)
    "As a " + "nurse " * _N + "I work nights": [],
    "As a " + "very " * _N + "nurse, I work nights": [],
    "As a nurse, I " + "always " * _N + "work nights": ["User is a nurse."],
    "As a nurse, I work nights" + ", which is " * _N: ["User is a nurse."],
    "I'm allergic to cats, which is awkward because " + "my " * _N: [],
    "back " * _N + "from Oslo": [],
    "Heights " + "freak " * _N + "me out": [],
    "Heights freak me" + " out" * _N: [],
    "My " * _N + "job stresses me out": [],
    "Pizza " * _N + "is my favourite food": [],
    "Pizza is my favourite " + "food " * _N: [],
    "I'm vegan" + " though" * _N: [],
    "Me and my " + "sister " * _N + "run a bakery": [],
    "Our wedding is on 12 June" + " next year" * _N: [],
}


def _short(text: str) -> str:
    return text[:30].encode("unicode_escape").decode()


@pytest.mark.parametrize(
    ("text", "count"), list(ONE_PASS_COUNTS.items()), ids=[_short(t) for t in ONE_PASS_COUNTS]
)
def test_the_offline_extractor_reads_long_hostile_text_in_one_pass(text, count):
    """The patterns of names, lowercase and negations on text built to make a regex try again
    from every position. What matters is that each returns; what it finds is checked too."""
    from memory.background.extraction.offline import extract as offline_extract

    assert len(offline_extract(text, subject="User", today=dt.date(2023, 5, 8))) == count


@pytest.mark.parametrize(
    ("text", "facts"), list(ONE_PASS_FACTS.items()), ids=[_short(t) for t in ONE_PASS_FACTS]
)
def test_round_15s_patterns_read_long_hostile_text_in_one_pass(text, facts):
    """Round 15's and later patterns on text built to make them try again from every position:
    each returns, and finds what it should."""
    from memory.background.extraction.offline import extract as offline_extract

    found = offline_extract(text, subject="User", today=dt.date(2023, 5, 8))
    assert [f.text for f in found] == facts


@pytest.mark.parametrize(
    ("said", "today"),
    [
        ("I'm flying on 3 January.", dt.date(9999, 12, 31)),
        ("I have a meeting on Friday.", dt.date(9999, 12, 31)),
        ("I met Tom on 3 January.", dt.date(1, 1, 1)),
        ("I went out this weekend.", dt.date(1, 1, 1)),
    ],
)
def test_a_day_past_the_calendars_ends_dates_nothing(said, today):
    """A message dated at the calendar's ends (an import may say so): the day said without its
    year would be in year 10000 or 0. The first version of the year's reading looked for it
    for ever."""
    from memory.background.extraction.offline.dates import resolve_dates

    assert resolve_dates(said, today) == (said, None, False)


# A day said without its year or a weekday, read by the tense of the whole sentence: the
# sentence is read once, not again at each day said.
ONE_PASS_DATES = {
    "I met Tom on Friday " * _N: dt.date(2023, 5, 5),
    "I booked flights for 3 January " * _N: dt.date(2024, 1, 3),
    "I " + "really " * _N + "moved on 3 May": dt.date(2024, 5, 3),
    "my " * _N + "birthday is on 3 May": None,
}


@pytest.mark.parametrize(
    ("text", "when"), list(ONE_PASS_DATES.items()), ids=[_short(t) for t in ONE_PASS_DATES]
)
def test_days_said_are_read_in_one_pass_of_long_hostile_text(text, when):
    from memory.background.extraction.offline.dates import resolve_dates

    assert resolve_dates(text, dt.date(2023, 5, 8)).when == when


def test_distinct_facts_stay_distinct_and_restatements_merge(
    offline, django_capture_on_commit_callbacks
):
    names = FERRET_NAMES
    assert len(set(names)) == 40
    workspace, _ = make_workspace()
    conv = say(workspace, "u", *(f"I have a pet ferret called {n}." for n in names))
    extract(workspace, conv, django_capture_on_commit_callbacks)
    texts = set(Memory.objects.values_list("text", flat=True))
    assert texts == {f"User has a pet ferret called {n}." for n in names}
    # the same fact said again, or with nothing new, joins the memory it restates
    say(workspace, "u", f"I have a pet ferret called {names[0]}!", "I love climbing.")
    extract(workspace, conv, django_capture_on_commit_callbacks)
    say(workspace, "u", "I really love climbing.")
    extract(workspace, conv, django_capture_on_commit_callbacks)
    assert Memory.objects.count() == 41
    assert Memory.objects.get(text__endswith=f"called {names[0]}.").sources.count() == 2


@llm_db
def test_llm_extraction_adds_then_updates_with_history(
    upstream, settings, django_capture_on_commit_callbacks
):
    workspace, _ = make_workspace()
    conv = say(workspace, "sam", "I live in Paris.")
    upstream.script(
        reply({"facts": [{"text": "Sam lives in Paris", "kind": "fact", "sources": [1]}]})
    )
    job = extract(workspace, conv, django_capture_on_commit_callbacks)
    assert job.status == "done", job.error
    memory = Memory.objects.get()
    assert memory.text == "Sam lives in Paris"
    assert list(memory.sources.values_list("content", flat=True)) == ["I live in Paris."]
    prompt = upstream.chat_requests()[0].body
    assert "I live in Paris." in prompt["messages"][1]["content"]
    assert prompt["response_format"] == {"type": "json_object"}

    say(workspace, "sam", "I moved from Paris to Berlin.")
    upstream.script(
        reply(
            {"facts": [{"text": "Sam moved from Paris to Berlin", "kind": "fact", "sources": [1]}]}
        ),
        reply(
            {
                "actions": [
                    {"event": "UPDATE", "id": "0", "text": "Sam lives in Berlin (moved from Paris)"}
                ]
            }
        ),
    )
    job = extract(workspace, conv, django_capture_on_commit_callbacks)
    assert job.status == "done", job.error
    decision = json.loads(upstream.chat_requests()[-1].body["messages"][1]["content"])
    assert decision["existing_memories"] == [{"id": "0", "text": "Sam lives in Paris"}]
    memory.refresh_from_db()
    assert memory.text == "Sam lives in Berlin (moved from Paris)"
    assert Memory.objects.count() == 1
    history = list(MemoryEvent.objects.filter(memory_id=memory.id).values_list("event", "actor"))
    assert history == [("ADD", "extractor:llm"), ("UPDATE", "extractor:llm")]


@llm_db
def test_llm_updates_in_a_row_are_written_together_as_memory_update_wrote_each(
    upstream, django_capture_on_commit_callbacks
):
    """The model's consecutive UPDATEs are written in one memories_supersede (as the offline
    runs' supersedes), where each was a memory_update of its own: the same rows (text, search
    text on the memory's own day, its vector, sources, history), one UPDATE statement for the
    two in a row, and a second UPDATE of one of them written after them, as it was decided."""
    import re

    import numpy as np
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from memory.embeddings import get_embedder
    from memory.text import memory_date, memory_search_text

    workspace, _ = make_workspace()
    conv = say(workspace, "sam", "I live in Paris, work at Acme and have a cat.")
    facts = ["Sam lives in Paris", "Sam works at Acme", "Sam has a cat"]
    upstream.script(reply({"facts": [{"text": t, "sources": [1]} for t in facts]}))
    assert extract(workspace, conv, django_capture_on_commit_callbacks).status == "done"
    assert Memory.objects.count() == 3
    say(workspace, "sam", "I moved to Berlin and joined Initech; my cat is Tom.")
    new = ["Sam moved to Berlin", "Sam joined Initech", "Sam's cat is Tom"]
    upstream.script(reply({"facts": [{"text": t, "sources": [1]} for t in new]}))
    # the ids the model is shown follow the facts' neighbours; read back from the prompt
    upstream.script(reply({"actions": []}))
    job = extract(workspace, conv, django_capture_on_commit_callbacks)
    assert job.status == "done", job.error
    shown = json.loads(upstream.chat_requests()[-1].body["messages"][1]["content"])
    ids = {m["text"]: m["id"] for m in shown["existing_memories"]}
    assert set(ids) == set(facts)

    say(workspace, "sam", "Yes: Berlin, Initech, and Tom the cat.")
    upstream.script(
        reply({"facts": [{"text": t, "sources": [1]} for t in new]}),
        reply(
            {
                "actions": [
                    {"event": "UPDATE", "id": ids[facts[0]], "text": "Sam lives in Berlin"},
                    {"event": "UPDATE", "id": ids[facts[1]], "text": "Sam works at Initech"},
                    {"event": "UPDATE", "id": ids[facts[0]], "text": "Sam lives in Berlin now"},
                    {"event": "NONE", "id": ids[facts[2]], "fact": 2},
                ]
            }
        ),
    )
    with CaptureQueriesContext(connection) as queries:
        job = extract(workspace, conv, django_capture_on_commit_callbacks)
    assert job.status == "done", job.error
    assert job.extractor == "llm"
    updates = [q["sql"] for q in queries if re.match(r"\s*UPDATE\s+\"?memory_memory\b", q["sql"])]
    assert len(updates) == 2, updates  # the first two together, then the third
    last = Message.objects.filter(content__startswith="Yes:").get()
    for old, texts in (
        (facts[0], ["Sam lives in Berlin", "Sam lives in Berlin now"]),
        (facts[1], ["Sam works at Initech"]),
    ):
        memory = Memory.objects.get(text=texts[-1])
        said = memory_search_text(text=memory.text, when=memory_date(memory))
        assert memory.search_text == said
        assert np.allclose(np.asarray(memory.embedding), get_embedder().embed_one(said), atol=1e-6)
        assert last.id in set(memory.sources.values_list("id", flat=True))
        events = MemoryEvent.objects.filter(memory_id=memory.id).order_by("created_at", "id")
        assert [(e.event, e.old_text, e.new_text, e.actor) for e in events] == [
            ("ADD", "", old, "extractor:llm"),
            *(
                ("UPDATE", before, after, "extractor:llm")
                for before, after in zip([old, *texts[:-1]], texts, strict=True)
            ),
        ]
        for event in events[1:]:
            assert event.reason == "the model found newer information"
            assert event.source_message_ids == [last.id]
            assert set(event.changes) == {"text"}
    assert Memory.objects.get(text=facts[2]).sources.filter(id=last.id).exists()
    assert Memory.objects.count() == 3


@llm_db
def test_an_llm_event_is_embedded_on_the_day_its_search_text_says(
    upstream, django_capture_on_commit_callbacks
):
    """A dated fact the model adds is found by "[its date] ..." (memory_date), and its vector
    is that text's: it was the vector of "[the day it was said] ...", another text."""
    import numpy as np

    from memory.embeddings import get_embedder

    workspace, _ = make_workspace()
    conv = say(workspace, "sam", "I ran the Lisbon marathon on 1 May 2022.")
    fact = {"text": "Sam ran the Lisbon marathon", "kind": "event", "date": "2022-05-01"}
    upstream.script(reply({"facts": [{**fact, "sources": [1]}]}))
    assert extract(workspace, conv, django_capture_on_commit_callbacks).status == "done"
    memory = Memory.objects.get()
    assert memory.search_text == "[1 May 2022] Sam ran the Lisbon marathon"
    said = get_embedder().embed_one(memory.search_text)
    assert np.allclose(np.asarray(memory.embedding), said, atol=1e-6)


@llm_db
def test_llm_delete_and_none_decisions(upstream, django_capture_on_commit_callbacks):
    workspace, _ = make_workspace()
    conv = say(workspace, "u", "I have a dog named Rex. I drink coffee.")
    upstream.script(reply({"facts": [{"text": "Has a dog named Rex"}, {"text": "Drinks coffee"}]}))
    extract(workspace, conv, django_capture_on_commit_callbacks)
    assert Memory.objects.count() == 2
    say(workspace, "u", "I gave up coffee, and yes Rex is still with me.")
    upstream.script(
        reply({"facts": [{"text": "No longer drinks coffee"}, {"text": "Has a dog named Rex"}]}),
        reply({"actions": [{"event": "DELETE", "id": "1"}, {"event": "NONE", "id": "0"}]}),
    )
    job = extract(workspace, conv, django_capture_on_commit_callbacks)
    assert job.status == "done", job.error
    existing = json.loads(upstream.chat_requests()[-1].body["messages"][1]["content"])
    ids = {m["text"]: m["id"] for m in existing["existing_memories"]}
    assert set(ids) == {"Has a dog named Rex", "Drinks coffee"}
    # the test scripted ids 0/1 in the order memories were offered
    remaining = list(Memory.objects.values_list("text", flat=True))
    deleted = [t for t, i in ids.items() if i == "1"]
    assert remaining == [t for t in ids if t not in deleted]
    assert MemoryEvent.objects.filter(event="DELETE").count() == 1


@llm_db
def test_malformed_llm_output_is_retried_then_falls_back_to_the_offline_extractor(
    upstream, django_capture_on_commit_callbacks
):
    workspace, _ = make_workspace()
    conv = say(workspace, "u", "I live in Rome.")
    upstream.script(
        *[Reply(json=openai_completion("Sure! Here are the facts: Rome.")) for _ in range(3)]
    )
    job = extract(workspace, conv, django_capture_on_commit_callbacks)
    assert len(upstream.chat_requests()) == 3
    assert job.status == "done" and job.extractor == "offline-fallback"
    assert "malformed model output" in job.error
    memory = Memory.objects.get()
    assert memory.text == "User lives in Rome."
    assert MemoryEvent.objects.get(memory_id=memory.id).actor == "extractor:offline"


@llm_db
def test_the_offline_fallback_takes_only_the_chunks_the_llm_left_undone(
    upstream, django_capture_on_commit_callbacks, monkeypatch
):
    from memory.background.extraction import llm

    monkeypatch.setattr(llm, "CHUNK_MESSAGES", 1)
    workspace, _ = make_workspace()
    conv = say(workspace, "u", "I live in Rome.", "I love jazz.")
    upstream.script(
        reply({"facts": [{"text": "Lives in Rome"}]}),
        *[Reply(json=openai_completion("no")) for _ in range(3)],
    )
    job = extract(workspace, conv, django_capture_on_commit_callbacks)
    assert job.status == "done" and job.extractor == "offline-fallback"
    texts = sorted(Memory.objects.values_list("text", flat=True))
    assert texts == ["Lives in Rome", "User loves jazz."]  # no offline copy of the first chunk


@llm_db
def test_malformed_then_valid_output_succeeds(upstream, django_capture_on_commit_callbacks):
    workspace, _ = make_workspace()
    conv = say(workspace, "u", "I live in Rome.")
    upstream.script(
        Reply(json=openai_completion("not json")),
        reply({"facts": [{"text": "Lives in Rome"}]}),
    )
    job = extract(workspace, conv, django_capture_on_commit_callbacks)
    assert job.status == "done" and Memory.objects.get().text == "Lives in Rome"
    assert job.extractor == "llm" and job.error == ""


def test_rolling_summary_offline_is_extractive(
    offline, settings, django_capture_on_commit_callbacks
):
    settings.ENGRAM_SUMMARY_TRIGGER_TOKENS = 20
    settings.ENGRAM_SUMMARY_KEEP_MESSAGES = 2
    workspace, _ = make_workspace()
    conv = say(
        workspace,
        "u",
        "I am training for the Berlin marathon in September.",
        "My coach is called Ana.",
        "What should I eat before long runs?",
        "Thanks!",
    )
    with django_capture_on_commit_callbacks():
        job = summary_enqueue(workspace=workspace, conversation=conv)
    assert job is not None
    tasks.summarize(job.id)
    conv.refresh_from_db()
    assert "marathon" in conv.summary and "Ana" in conv.summary
    assert "Thanks" not in conv.summary  # the two newest stay out: they travel verbatim
    assert conv.summary_upto == job.upto_message_id


@llm_db
def test_rolling_summary_with_an_llm(upstream, settings, django_capture_on_commit_callbacks):
    settings.ENGRAM_SUMMARY_TRIGGER_TOKENS = 20
    settings.ENGRAM_SUMMARY_KEEP_MESSAGES = 1
    workspace, _ = make_workspace()
    conv = say(workspace, "u", "We are planning the launch for March.", "Budget is 10k.", "ok")
    upstream.script(Reply(json=openai_completion("Launch planned for March with a 10k budget.")))
    with django_capture_on_commit_callbacks():
        job = summary_enqueue(workspace=workspace, conversation=conv)
    tasks.summarize(job.id)
    conv.refresh_from_db()
    assert conv.summary == "Launch planned for March with a 10k budget."
    sent = upstream.chat_requests()[0].body["messages"][1]["content"]
    assert "Budget is 10k." in sent and "ok" not in sent.split("New messages:")[1]


def wait_job(job, timeout=60.0):
    import time

    deadline = time.monotonic() + timeout
    while True:
        job.refresh_from_db()
        if job.status in ("done", "failed"):
            return job
        assert time.monotonic() < deadline, (job.status, job.error)
        time.sleep(0.2)


@llm_db
def test_the_worker_retries_a_failing_upstream(upstream, celery_worker):
    workspace, _ = make_workspace()
    conv = say(workspace, "u", "I live in Quito.")
    failure = Reply(status=500, json={"error": {"message": "overloaded", "type": "server_error"}})
    upstream.script(*[failure] * 3, reply({"facts": [{"text": "Lives in Quito"}]}))
    job = extraction_enqueue(workspace=workspace, conversation=conv)  # sent on commit
    job = wait_job(job)
    assert job.status == "done" and job.attempts >= 2
    assert Memory.objects.get().text == "Lives in Quito"


@llm_db
def test_a_run_that_meets_a_row_deleted_under_it_is_run_again(offline, celery_worker, monkeypatch):
    """A memory its user deletes while a run links a source to it fails the run's commit on the
    foreign key (memory_delete locks the memory, so the run's link waits, then fails): the run
    is tried again with the memories as they are then, instead of failing the turn's job."""
    from django.db import IntegrityError

    from memory.background.extraction import runner

    real, calls = runner._apply_offline, []

    def deleted_the_first_time(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise IntegrityError(
                'insert on table "memory_memory_sources" violates foreign key constraint'
            )
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "_apply_offline", deleted_the_first_time)
    workspace, _ = make_workspace()
    conv = say(workspace, "u", "I live in Quito.")
    job = wait_job(extraction_enqueue(workspace=workspace, conversation=conv))
    assert job.status == "done" and job.attempts == 2, job.error
    assert Memory.objects.get().text == "User lives in Quito."


@llm_db
def test_an_upstream_that_keeps_failing_falls_back_after_the_retries(upstream, celery_worker):
    workspace, _ = make_workspace()
    conv = say(workspace, "u", "I live in Quito.")
    failure = Reply(status=500, json={"error": {"message": "overloaded", "type": "server_error"}})
    upstream.script(*[failure] * 40)
    job = wait_job(extraction_enqueue(workspace=workspace, conversation=conv))
    assert job.status == "done" and job.attempts == 4  # the LLM had every retry first
    assert job.extractor == "offline-fallback" and "LLMError" in job.error
    assert Memory.objects.get().text == "User lives in Quito."


def test_memory_tasks_run_on_their_own_queue():
    from config.celery import app

    for name in ("memory.extract", "memory.summarize"):
        assert name in app.tasks
        assert app.amqp.router.route({}, name)["queue"].name == "memory"
    assert tasks.extract.acks_late and tasks.extract.ignore_result
    assert tasks.extract.soft_time_limit < tasks.extract.time_limit


# --- several queued turns, one run ------------------------------------------------------------


def queue(workspace, user, *turns, conversation="c", capture):
    """Each turn stored and its extraction job queued (sent on commit: captured, not run)."""
    jobs = []
    for text in turns:
        conv = say(workspace, user, text, conversation=conversation)
        with capture(execute=False):
            jobs.append(extraction_enqueue(workspace=workspace, conversation=conv))
    assert all(jobs) and len({j.id for j in jobs}) == len(turns)
    return jobs


def states(jobs):
    return [
        (j.status, j.attempts)
        for j in ProcessingJob.objects.filter(id__in=[j.id for j in jobs]).order_by("created_at")
    ]


def test_one_run_extracts_every_queued_turn_of_the_conversation(
    offline, django_capture_on_commit_callbacks
):
    workspace, _ = make_workspace()
    capture = django_capture_on_commit_callbacks
    jobs = queue(
        workspace,
        "sam",
        "I live in Paris and I love jazz.",
        "I have a pet ferret called Biscuit.",
        "I have a pet ferret called Pepper.",
        "Big news: I moved from Paris to Berlin.",
        "I love jazz!",
        capture=capture,
    )
    elsewhere, _ = make_workspace()
    [other] = queue(elsewhere, "kim", "I work at Initech.", conversation="k", capture=capture)
    tasks.extract(jobs[2].id)  # the broker may deliver any of them first
    assert states(jobs) == [("done", 1)] * 5
    assert states([other]) == [("pending", 0)]  # another workspace's: its own run
    # as job by job: distinct facts stay distinct, the move updates, the restatement merges
    assert sorted(Memory.objects.filter(user_id="sam").values_list("text", flat=True)) == [
        "User has a pet ferret called Biscuit.",
        "User has a pet ferret called Pepper.",
        "User lives in Berlin (moved from Paris).",
        "User loves jazz.",
    ]
    home = Memory.objects.get(text__startswith="User lives in Berlin")
    assert list(MemoryEvent.objects.filter(memory_id=home.id).values_list("event", "new_text")) == [
        ("ADD", "User lives in Paris."),
        ("UPDATE", "User lives in Berlin (moved from Paris)."),
    ]
    assert Memory.objects.get(text="User loves jazz.").sources.count() == 2
    assert not Message.objects.filter(
        conversation__external_id="c", embedding__isnull=True
    ).exists()
    # the other deliveries find their jobs done; a redelivery of the lot changes nothing
    for job in jobs:
        tasks.extract(job.id)
    assert states(jobs) == [("done", 1)] * 5
    ProcessingJob.objects.filter(id__in=[j.id for j in jobs]).update(status="pending")
    tasks.extract(jobs[0].id)
    assert states(jobs) == [("done", 2)] * 5
    assert Memory.objects.filter(user_id="sam").count() == 4
    assert MemoryEvent.objects.filter(user_id="sam", event="ADD").count() == 4


def test_an_offline_run_takes_the_other_conversations_of_its_workspace(
    offline, monkeypatch, django_capture_on_commit_callbacks
):
    """Many users' single turns, one run: each user's memories are their own, as run by run —
    a user's facts merge and update across their conversations, never across users — and a
    user erased during the run loses everything while the others keep theirs."""
    from memory.background.extraction import runner

    workspace, _ = make_workspace()
    capture = django_capture_on_commit_callbacks
    [sam_paris] = queue(workspace, "sam", "I live in Paris.", conversation="s1", capture=capture)
    [kim] = queue(
        workspace, "kim", "I live in Paris and I love jazz.", conversation="k", capture=capture
    )
    [sam_jazz] = queue(workspace, "sam", "I love jazz.", conversation="s2", capture=capture)
    [gone] = queue(
        workspace, "lee", "I have a pet ferret called Biscuit.", conversation="l", capture=capture
    )
    [sam_berlin] = queue(
        workspace,
        "sam",
        "Big news: I moved to Berlin.",
        conversation="s3",
        capture=capture,
    )
    elsewhere, _ = make_workspace()
    [other] = queue(elsewhere, "kim", "I work at Initech.", conversation="k", capture=capture)
    _erased_during(monkeypatch, runner, "embed_messages", workspace, "lee")

    tasks.extract(kim.id)
    assert states([sam_paris, kim, sam_jazz, sam_berlin]) == [("done", 1)] * 4
    assert not ProcessingJob.objects.filter(id=gone.id).exists()  # erased with its user
    assert states([other]) == [("pending", 0)]
    texts = dict.fromkeys(["sam", "kim", "lee"])
    for user in texts:
        texts[user] = sorted(Memory.objects.filter(user_id=user).values_list("text", flat=True))
    assert texts == {
        "sam": ["User lives in Berlin.", "User loves jazz."],
        "kim": ["User lives in Paris.", "User loves jazz."],
        "lee": [],
    }
    home = Memory.objects.get(user_id="sam", text__startswith="User lives in Berlin")
    assert list(MemoryEvent.objects.filter(memory_id=home.id).values_list("event", "new_text")) == [
        ("ADD", "User lives in Paris."),
        ("UPDATE", "User lives in Berlin."),
    ]
    assert {s.conversation.external_id for s in home.sources.all()} == {"s1", "s3"}
    assert not Message.objects.filter(workspace=workspace, embedding__isnull=True).exists()
    assert not Message.objects.filter(user_id="lee").exists()
    # each job's own delivery finds it done
    for job in (sam_paris, sam_jazz, sam_berlin):
        tasks.extract(job.id)
    assert states([sam_paris, kim, sam_jazz, sam_berlin]) == [("done", 1)] * 4


@llm_db
def test_with_an_llm_each_conversation_is_its_own_run(upstream, django_capture_on_commit_callbacks):
    workspace, _ = make_workspace()
    capture = django_capture_on_commit_callbacks
    [first] = queue(workspace, "sam", "I love chess.", conversation="a", capture=capture)
    [second] = queue(workspace, "kim", "I love golf.", conversation="b", capture=capture)
    upstream.script(reply({"facts": [{"text": "Sam loves chess", "sources": [1]}]}))
    tasks.extract(first.id)
    assert states([first, second]) == [("done", 1), ("pending", 0)]
    [request] = upstream.chat_requests()
    assert "golf" not in json.dumps(request.body)


@llm_db
def test_a_model_route_that_appears_after_a_wide_claim_asks_it_per_conversation(
    upstream, monkeypatch, django_capture_on_commit_callbacks
):
    """Claimed across conversations for the offline extractor, run once a model is reachable:
    each conversation is its own call, and every job is done."""
    from memory.background.extraction import runner

    answers = iter([True])  # offline when the run claims, a model by the time it runs
    monkeypatch.setattr(runner, "runs_offline", lambda workspace: next(answers, False))
    workspace, _ = make_workspace()
    capture = django_capture_on_commit_callbacks
    [first] = queue(workspace, "sam", "I love chess.", conversation="a", capture=capture)
    [second] = queue(workspace, "kim", "I love golf.", conversation="b", capture=capture)
    upstream.script(
        reply({"facts": [{"text": "Sam loves chess", "sources": [1]}]}),
        reply({"facts": [{"text": "Kim loves golf", "sources": [1]}]}),
    )
    tasks.extract(first.id)
    assert states([first, second]) == [("done", 1), ("done", 1)]
    assert set(
        ProcessingJob.objects.filter(id__in=[first.id, second.id]).values_list(
            "extractor", flat=True
        )
    ) == {"llm"}
    chess, golf = (json.dumps(r.body) for r in upstream.chat_requests())
    assert "chess" in chess and "golf" not in chess and "golf" in golf and "chess" not in golf
    assert dict(Memory.objects.values_list("user_id", "text")) == {
        "sam": "Sam loves chess",
        "kim": "Kim loves golf",
    }


def test_the_memories_a_run_loads_answer_as_all_the_users_would(
    offline, django_capture_on_commit_callbacks
):
    """An offline run loads each new fact's nearest memories and its slots' memories, not the
    user's every memory: what it asks of them answers as over all of them."""
    from memory.background.extraction.store import UserMemories
    from memory.embeddings import get_embedder

    workspace, _ = make_workspace()
    said = [f"I have a pet ferret called {name}." for name in FERRET_NAMES[:30]]
    said += ["I live in Paris.", "I work at Initech.", "I love jazz.", "I work as a nurse."]
    extract(workspace, say(workspace, "u", *said), django_capture_on_commit_callbacks)
    whole = UserMemories(workspace, "u")
    assert len(whole.memories) == 34
    asked = [
        "User has a pet ferret called Biscuit.",
        "User lives in Berlin.",
        "User loves opera.",
        "User works at Globex.",
    ]
    vectors = get_embedder().embed(asked)
    loaded = UserMemories.around(
        workspace, "u", vectors=vectors, k=3, slots={"residence", "workplace"}
    )
    assert len(loaded.memories) < 14  # 4 x 3 nearest, and the two slots' memories among them
    for vector in vectors:
        assert [(m.id, round(s, 5)) for m, s in loaded.nearest(vector, k=3)] == [
            (m.id, round(s, 5)) for m, s in whole.nearest(vector, k=3)
        ]
    for slot in ("residence", "workplace"):
        found, expected = loaded.by_slot(slot, "User"), whole.by_slot(slot, "User")
        assert found is not None and expected is not None and found.id == expected.id


def test_a_run_takes_only_the_jobs_no_live_run_holds(
    offline, settings, django_capture_on_commit_callbacks
):
    from memory.services.processing import job_claim

    workspace, _ = make_workspace()
    jobs = queue(
        workspace,
        "u",
        "I love climbing.",
        "I drink oat milk in my coffee.",
        "I am allergic to peanuts.",
        capture=django_capture_on_commit_callbacks,
    )
    held = job_claim(job_id=jobs[1].id)  # another worker's, its lease alive
    assert held is not None
    tasks.extract(jobs[0].id)
    assert states(jobs) == [("done", 1), ("running", 1), ("done", 1)]
    assert not Memory.objects.filter(text__contains="oat milk").exists()
    # that worker died: past its lease, the next run takes its job over
    ProcessingJob.objects.filter(id=held.id).update(
        updated_at=timezone.now() - dt.timedelta(seconds=settings.ENGRAM_JOB_LEASE_SECONDS + 1)
    )
    ProcessingJob.objects.filter(id=jobs[2].id).update(status="pending")
    tasks.extract(jobs[2].id)
    assert states(jobs) == [("done", 1), ("done", 2), ("done", 2)]
    assert Memory.objects.filter(text__contains="oat milk").count() == 1


def test_a_run_takes_a_bounded_batch(offline, monkeypatch, django_capture_on_commit_callbacks):
    from memory.services import processing

    monkeypatch.setattr(processing, "BATCH_JOBS", 3)
    workspace, _ = make_workspace()
    turns = [f"I have a pet ferret called {name}." for name in FERRET_NAMES[:5]]
    jobs = queue(workspace, "u", *turns, capture=django_capture_on_commit_callbacks)
    tasks.extract(jobs[4].id)  # itself and the two oldest others
    assert states(jobs) == [("done", 1)] * 2 + [("pending", 0)] * 2 + [("done", 1)]
    tasks.extract(jobs[2].id)
    assert states(jobs) == [("done", 1)] * 5
    assert Memory.objects.count() == 5


@llm_db
def test_a_turn_that_fails_its_batch_fails_alone(
    upstream, django_capture_on_commit_callbacks, monkeypatch
):
    """A failure that is not transient (here a fact the database refuses) is recorded on the
    turn's own job; its batch-mate is extracted."""
    from django.db import DataError

    from memory.background.extraction import llm

    def refused(*, text, when):
        if "chess" in text:
            raise DataError("a value the column cannot hold")
        return real(text=text, when=when)

    real = llm.memory_search_text
    monkeypatch.setattr(llm, "memory_search_text", refused)
    workspace, _ = make_workspace()
    jobs = queue(
        workspace, "u", "Hello there.", "I love chess.", capture=django_capture_on_commit_callbacks
    )
    unstorable = reply({"facts": [{"text": "Loves chess", "sources": [2]}]})
    upstream.script(
        unstorable,  # the batch: both turns in one chunk, nothing stored
        reply({"facts": []}),  # then each turn alone
        unstorable,
    )
    tasks.extract(jobs[1].id)
    first, second = ProcessingJob.objects.filter(id__in=[j.id for j in jobs]).order_by("created_at")
    assert (first.status, first.extractor, first.error) == ("done", "llm", "")
    assert second.status == "failed" and "DataError" in second.error
    assert not Memory.objects.exists()
    assert not Message.objects.filter(embedding__isnull=True).exists()  # both turns embedded
    transcripts = [r.body["messages"][1]["content"] for r in upstream.chat_requests()]
    assert len(transcripts) == 3 and "Hello there." in transcripts[0]
    assert "chess" in transcripts[0] and "chess" not in transcripts[1]


@llm_db
def test_a_fact_a_model_wrote_with_a_nul_is_kept_without_it(
    upstream, django_capture_on_commit_callbacks
):
    """A model may write what PostgreSQL cannot store: the fact is cleaned and kept."""
    workspace, _ = make_workspace()
    jobs = queue(workspace, "u", "I love chess.", capture=django_capture_on_commit_callbacks)
    upstream.script(
        reply({"facts": [{"text": "Loves \x00chess \ud800now", "sources": [1]}]}),
        reply({"actions": [{"event": "ADD", "fact": 0, "text": "Loves \x00chess \ud800now"}]}),
    )
    tasks.extract(jobs[0].id)
    assert ProcessingJob.objects.get(id=jobs[0].id).status == "done"
    assert list(Memory.objects.values_list("text", flat=True)) == ["Loves chess \ufffdnow"]


def _erased_during(monkeypatch, module, name: str, workspace, user_id: str) -> None:
    """`module.name` erases the user once it has run: the erasure lands mid-run, after the
    run read the messages and before it writes."""
    from memory.services import user_delete

    real = getattr(module, name)

    def erasing(*args, **kwargs):
        result = real(*args, **kwargs)
        user_delete(workspace=workspace, user_id=user_id)
        return result

    monkeypatch.setattr(module, name, erasing)


def _run_extraction(workspace, conv, django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks():
        job = extraction_enqueue(workspace=workspace, conversation=conv)
    assert job is not None
    tasks.extract(job.id)
    assert not ProcessingJob.objects.filter(pk=job.pk).exists()  # gone with the conversation


def test_an_erasure_during_an_offline_run_leaves_nothing_of_the_user(
    offline, monkeypatch, django_capture_on_commit_callbacks
):
    from memory.background.extraction import runner

    workspace, _ = make_workspace()
    conv = say(workspace, "u1", "I live in Paris.", "My sister is called Anna.")
    _erased_during(monkeypatch, runner, "embed_messages", workspace, "u1")
    _run_extraction(workspace, conv, django_capture_on_commit_callbacks)
    assert not Memory.objects.filter(user_id="u1").exists()
    assert not MemoryEvent.objects.filter(user_id="u1").exists()
    assert not Message.objects.filter(user_id="u1").exists()


@llm_db
def test_an_erasure_while_the_model_extracts_leaves_nothing_of_the_user(
    upstream, monkeypatch, django_capture_on_commit_callbacks
):
    from memory.background.extraction import llm

    workspace, _ = make_workspace()
    conv = say(workspace, "sam", "I live in Paris.")
    upstream.script(
        reply({"facts": [{"text": "Sam lives in Paris", "kind": "fact", "sources": [1]}]})
    )
    _erased_during(monkeypatch, llm, "ask_json", workspace, "sam")  # the model's seconds
    _run_extraction(workspace, conv, django_capture_on_commit_callbacks)
    assert not Memory.objects.filter(user_id="sam").exists()
    assert not MemoryEvent.objects.filter(user_id="sam").exists()


def _edited_during_the_decision(monkeypatch, edit) -> None:
    """The model's ADD / UPDATE / DELETE decision is asked for only once `edit()` (a person's
    edit over HTTP) is made: it lands while the run waits on the model, after it read the
    user's memories."""
    from memory.background.extraction import llm

    real = llm.ask_json

    def editing(*args, **kwargs):
        if kwargs.get("system") == llm.UPDATE_PROMPT:
            edit()
        return real(*args, **kwargs)

    monkeypatch.setattr(llm, "ask_json", editing)


@pytest.mark.parametrize("decision", ["UPDATE", "DELETE"])
def test_a_memory_edited_by_hand_while_the_model_decides_keeps_the_edit(
    decision, upstream, owner, http, monkeypatch, django_capture_on_commit_callbacks
):
    """The run decided on the text it read; a person's edit made meanwhile wins. It was
    overwritten whole: the edit's text, and its metadata with the text read before it, and the
    history named that older text as the one replaced (or the edited memory was deleted)."""
    workspace, _ = owner
    made = http.post(
        "/v1/memories",
        json={"user_id": "sam", "text": "Sam lives in Paris", "metadata": {"note": "onboarding"}},
    ).json()
    conv = say(workspace, "sam", "I moved to Berlin.")
    action = {"event": decision, "id": "0", "text": "Sam lives in Berlin"}
    upstream.script(
        reply({"facts": [{"text": "Sam moved to Berlin", "kind": "fact", "sources": [1]}]}),
        reply({"actions": [action]}),
    )
    edit = {"text": "Sam lives in Lyon", "metadata": {"note": "onboarding", "verified": "yes"}}

    def patch() -> None:
        assert http.patch(f"/v1/memories/{made['id']}", json=edit).status_code == 200

    _edited_during_the_decision(monkeypatch, patch)
    job = extract(workspace, conv, django_capture_on_commit_callbacks)
    assert job.status == "done", job.error

    memory = http.get(f"/v1/memories/{made['id']}")
    assert memory.status_code == 200, "the edited memory is still there"
    assert (memory.json()["text"], memory.json()["metadata"]) == (edit["text"], edit["metadata"])
    history = http.get(f"/v1/memories/{made['id']}/history").json()["data"]
    assert [(e["event"], e["actor"]) for e in history] == [("ADD", "api"), ("UPDATE", "api")]


@llm_db
def test_a_run_whose_lease_lapsed_while_the_model_answered_writes_nothing_twice(
    upstream, settings, monkeypatch, django_capture_on_commit_callbacks
):
    """A worker stopped (SIGSTOP, a pause) past its lease while the model answers: the sweep
    gives its job to another run, which extracts the turn; the first, resumed, must not write
    the same memories again. It wrote them: each memory twice, the job done once."""
    from memory.background.extraction import llm

    workspace, _ = make_workspace()
    conv = say(workspace, "sam", "I have a cat named Miso.")
    facts = reply({"facts": [{"text": "Sam has a cat named Miso", "sources": [1]}]})
    upstream.script(facts, facts)
    with django_capture_on_commit_callbacks():
        job = extraction_enqueue(workspace=workspace, conversation=conv)
    assert job is not None
    real, taken_over = llm.ask_json, []

    def lapsed_meanwhile(*args, **kwargs):
        if not taken_over:  # the first run waits on the model: its lease lapses, the job is
            taken_over.append(True)  # claimed again and run to the end by another run
            stale = timezone.now() - dt.timedelta(seconds=settings.ENGRAM_JOB_LEASE_SECONDS + 1)
            ProcessingJob.objects.filter(pk=job.pk).update(updated_at=stale)
            tasks.extract(job.id)
        return real(*args, **kwargs)

    monkeypatch.setattr(llm, "ask_json", lapsed_meanwhile)
    tasks.extract(job.id)
    assert list(Memory.objects.values_list("text", flat=True)) == ["Sam has a cat named Miso"]
    assert MemoryEvent.objects.filter(event="ADD").count() == 1
    job.refresh_from_db()
    assert (job.status, job.attempts) == ("done", 2)


@llm_db
def test_a_long_backlog_is_summarized_in_slices_that_fit_the_models_window(
    upstream, settings, django_capture_on_commit_callbacks
):
    """A bulk import of hundreds of messages was one summary prompt, far past a small model's
    window (vLLM with --max-model-len 2048 refuses it), and the summary was never made. The
    messages now go in slices that fit the memory model's window, each folded into the
    summary so far."""
    from memory.text import count_messages

    settings.ENGRAM_SUMMARY_TRIGGER_TOKENS = 20
    settings.ENGRAM_SUMMARY_KEEP_MESSAGES = 1
    settings.ENGRAM_SUMMARY_MAX_TOKENS = 200
    settings.ENGRAM_CONTEXT_WINDOWS = {"gpt-4o-mini": 2048}
    workspace, _ = make_workspace()
    said = [f"Note {i}: the shipment of crate {i} left the Oslo depot on time." for i in range(300)]
    conv = say(workspace, "u", *said)
    upstream.script(*(Reply(json=openai_completion(f"Summary {n}.")) for n in range(1, 20)))
    with django_capture_on_commit_callbacks():
        job = summary_enqueue(workspace=workspace, conversation=conv)
    tasks.summarize(job.id)

    calls = upstream.chat_requests()
    conv.refresh_from_db()
    assert len(calls) >= 3 and conv.summary == f"Summary {len(calls)}."
    for call in calls:  # each prompt and its answer fit the window
        assert count_messages(call.body["messages"]) + call.body["max_tokens"] <= 2048
    assert "Previous summary:\nSummary 1." in calls[1].body["messages"][1]["content"]
    sent = "".join(c.body["messages"][1]["content"] for c in calls)
    assert all(f"crate {i} " in sent for i in range(299))  # every message read, once


def test_a_memorys_sources_are_only_its_users_own_messages():
    """memory_create, memory_update and memory_add_sources link the messages named by id, and
    only those of the memory's user in its workspace (ids of another user's message or of
    another workspace's are left out), whatever they are handed."""
    from memory.services.memories import memory_add_sources, memory_create

    workspace, _ = make_workspace()
    other_workspace, _ = make_workspace()
    say(workspace, "sam", "I live in Paris.", "I love jazz.", "I work as a nurse.")
    say(workspace, "kim", "I live in Rome.", conversation="k")
    say(other_workspace, "sam", "I live in Oslo.")
    own = list(
        Message.objects.filter(workspace=workspace, user_id="sam")
        .order_by("id")
        .values_list("id", flat=True)
    )
    strangers = [
        Message.objects.get(workspace=workspace, user_id="kim").id,
        Message.objects.get(workspace=other_workspace).id,
    ]
    memory = memory_create(
        workspace=workspace,
        user_id="sam",
        text="User lives in Paris.",
        source_message_ids=[own[0], *strangers, "msg_missing"],
    )
    assert sorted(memory.sources.values_list("id", flat=True)) == [own[0]]
    memory_update(
        workspace=workspace,
        memory=memory,
        text="User lives in Paris and loves jazz.",
        source_message_ids=[own[1], *strangers],
        actor="extractor:offline",
    )
    assert sorted(memory.sources.values_list("id", flat=True)) == own[:2]
    memory_add_sources(
        workspace=workspace, memory=memory, source_message_ids=[own[2], own[0], *strangers]
    )
    assert sorted(memory.sources.values_list("id", flat=True)) == own
    event = MemoryEvent.objects.filter(memory_id=memory.id).order_by("created_at").first()
    assert event is not None and event.source_message_ids[0] == own[0]


def test_a_turns_extraction_job_is_one_insert_and_a_taken_range_none(
    offline, django_capture_on_commit_callbacks
):
    """extraction_enqueue reads the covered range and inserts the job: two statements, no
    savepoint; a range another job already took (a race) gives None, sends nothing and leaves
    the caller's transaction usable."""
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from memory.services import processing

    workspace, _ = make_workspace()
    conv = say(workspace, "sam", "I live in Paris.")
    newest = Message.objects.filter(conversation=conv).latest("id").id
    with (
        transaction.atomic(),
        django_capture_on_commit_callbacks() as sent,
        CaptureQueriesContext(connection) as q,
    ):
        job = extraction_enqueue(workspace=workspace, conversation=conv, upto=newest)
    assert len(q.captured_queries) == 2, [x["sql"][:60] for x in q.captured_queries]
    assert job is not None and len(sent) == 1
    stored = ProcessingJob.objects.get(pk=job.pk)
    assert (stored.kind, stored.status, stored.after_message_id, stored.upto_message_id) == (
        "extract",
        "pending",
        "",
        newest,
    )
    assert stored.attempts == 0 and stored.created_at is not None and not job._state.adding
    assert extraction_enqueue(workspace=workspace, conversation=conv, upto=newest) is None

    say(workspace, "sam", "I love jazz.")
    later = Message.objects.filter(conversation=conv).latest("id").id
    with transaction.atomic(), django_capture_on_commit_callbacks() as sent:
        # another finish took this range first
        assert (
            processing._create(
                workspace=workspace, conversation=conv, kind="extract", after="", upto=newest
            )
            is None
        )
        assert Message.objects.filter(conversation=conv).count() == 2  # still usable
        job = extraction_enqueue(workspace=workspace, conversation=conv, upto=later)
    assert job is not None and job.after_message_id == newest and len(sent) == 1
    assert ProcessingJob.objects.filter(conversation=conv).count() == 2


def test_a_lone_turns_extraction_job_sends_its_known_statements(
    offline, django_capture_on_commit_callbacks
):
    """The worker's CPU per remembered turn is mostly its statements' building (bench/README,
    "Twenty-fifth session"): a lone turn's job — with a new fact, with one that supersedes a
    stored memory (the soak's turns: bench_soak.statement), without a fact — sends these
    many; one more added back fails here (raise the figure only for a reason worth its
    cost)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    workspace, _ = make_workspace()
    extract(workspace, say(workspace, "sam", "Hello."), django_capture_on_commit_callbacks)
    counts = []
    for text in ("I live in Paris.", "I live in Lisbon.", "Thanks, that helps."):
        conv = say(workspace, "sam", text)
        with django_capture_on_commit_callbacks():
            job = extraction_enqueue(workspace=workspace, conversation=conv)
        assert job is not None
        with CaptureQueriesContext(connection) as q:
            tasks.extract(job.id)
        job.refresh_from_db()
        assert job.status == "done"
        counts.append([x["sql"][:50] for x in q.captured_queries])
    (memory,) = Memory.objects.filter(workspace=workspace, user_id="sam")
    assert memory.text == "User lives in Lisbon." and memory.sources.count() == 2
    events = MemoryEvent.objects.filter(memory_id=memory.id).order_by("created_at")
    assert [e.event for e in events] == ["ADD", "UPDATE"]
    assert [len(c) for c in counts] == [14, 15, 9], counts


def test_a_run_of_many_users_single_turns_sends_as_many_statements_for_more_users(
    offline, django_capture_on_commit_callbacks
):
    """The soak's backlog: one run takes many users' single turns (bench/README, "Thirty-second
    session"). Their neighbours, suppressions, new memories, sources and history are each
    written for the whole run, not once per conversation: a run of six users' turns sends the
    statements of a run of three, and writes what each user's turn alone would."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    workspace, _ = make_workspace()
    capture = django_capture_on_commit_callbacks
    counts = []
    for users in (["ann", "bob", "cat"], ["dan", "eve", "fay", "gus", "hal", "ivy"]):
        jobs = [
            job
            for n, user in enumerate(users)
            for job in queue(
                workspace,
                user,
                "I live in Paris." if n % 2 else "I love jazz and I live in Oslo.",
                conversation=user,
                capture=capture,
            )
        ]
        with CaptureQueriesContext(connection) as q:
            tasks.extract(jobs[0].id)
        assert states(jobs) == [("done", 1)] * len(users)
        counts.append(len(q.captured_queries))
        for n, user in enumerate(users):
            texts = sorted(Memory.objects.filter(user_id=user).values_list("text", flat=True))
            assert texts == (
                ["User lives in Paris."] if n % 2 else ["User lives in Oslo.", "User loves jazz."]
            ), user
            for memory in Memory.objects.filter(user_id=user):
                assert [m.conversation.user_id for m in memory.sources.all()] == [user]
                events = MemoryEvent.objects.filter(memory_id=memory.id)
                assert list(events.values_list("event", "user_id")) == [("ADD", user)]
    assert counts[1] == counts[0], counts


def test_a_run_of_many_users_supersedes_sends_as_many_statements_for_more_users(
    offline, django_capture_on_commit_callbacks, monkeypatch
):
    """Users with a history: most turns of the soak's backlog supersede a memory ("I live in
    …" again). The run's supersedes are written together (memories_supersede), not four
    statements each: a run of six users' supersedes sends the statements of a run of three,
    and writes what each memory_update wrote (text, slot's value, vector, sources, history
    with its changes, after the ADD). A memory edited since the run read it keeps the edit
    (unless_changed), one deleted meanwhile stays deleted, within the same run."""
    import numpy as np
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from memory.background.extraction import store as store_module
    from memory.embeddings import get_embedder
    from memory.text import memory_date, memory_search_text

    workspace, _ = make_workspace()
    capture = django_capture_on_commit_callbacks
    counts = []
    for users in (["ann", "bob", "cat"], ["dan", "eve", "fay", "gus", "hal", "ivy"]):
        first = [
            job
            for user in users
            for job in queue(
                workspace, user, "I live in Paris.", conversation=user, capture=capture
            )
        ]
        tasks.extract(first[0].id)
        assert states(first) == [("done", 1)] * len(users)
        jobs = [
            job
            for user in users
            for job in queue(
                workspace, user, "I live in Berlin.", conversation=user, capture=capture
            )
        ]
        with CaptureQueriesContext(connection) as q:
            tasks.extract(jobs[0].id)
        assert states(jobs) == [("done", 1)] * len(users)
        counts.append(len(q.captured_queries))
        for user in users:
            (memory,) = Memory.objects.filter(user_id=user)
            assert memory.text == "User lives in Berlin."
            assert memory.metadata["value"] == "Berlin" and memory.metadata["slot"]
            said = memory_search_text(text=memory.text, when=memory_date(memory))
            assert memory.search_text == said
            assert np.allclose(
                np.asarray(memory.embedding), get_embedder().embed_one(said), atol=1e-6
            )
            texts = [m.content for m in memory.sources.order_by("id")]
            assert texts == ["I live in Paris.", "I live in Berlin."]
            events = MemoryEvent.objects.filter(memory_id=memory.id).order_by("created_at")
            assert [(e.event, e.old_text, e.new_text) for e in events] == [
                ("ADD", "", "User lives in Paris."),
                ("UPDATE", "User lives in Paris.", "User lives in Berlin."),
            ]
            update = events[1]
            assert update.changes["text"] == {
                "old": "User lives in Paris.",
                "new": "User lives in Berlin.",
            }
            assert update.changes["metadata"]["new"]["value"] == "Berlin"
            assert update.reason == "residence changed from 'Paris' to 'Berlin'"
            assert update.source_message_ids == [memory.sources.order_by("id").last().id]
    assert counts[1] == counts[0], counts

    # Read by the run, then edited by someone else and deleted, before the run writes.
    for user in ("jan", "kim", "lea"):
        tasks.extract(
            queue(workspace, user, "I live in Rome.", conversation=user, capture=capture)[0].id
        )
    real = store_module.UserMemories.around_many

    def then_changed(*args, **kwargs):
        stores = real(*args, **kwargs)
        Memory.objects.filter(user_id="jan").update(
            text="User lives in Rome, Italy.", updated_at=timezone.now()
        )
        Memory.objects.filter(user_id="kim").delete()
        return stores

    monkeypatch.setattr(store_module.UserMemories, "around_many", then_changed)
    from memory.background.extraction import runner

    results = []
    real_run = runner.extraction_run

    def recorded(**kwargs):
        results.append(real_run(**kwargs))
        return results[-1]

    monkeypatch.setattr(runner, "extraction_run", recorded)
    jobs = [
        job
        for user in ("jan", "kim", "lea")
        for job in queue(workspace, user, "I live in Madrid.", conversation=user, capture=capture)
    ]
    tasks.extract(jobs[0].id)
    assert states(jobs) == [("done", 1)] * 3
    assert list(Memory.objects.filter(user_id="jan").values_list("text", flat=True)) == [
        "User lives in Rome, Italy."
    ]
    assert not Memory.objects.filter(user_id="kim").exists()
    assert list(Memory.objects.filter(user_id="lea").values_list("text", flat=True)) == [
        "User lives in Madrid."
    ]
    assert [(r["updated"], r["unchanged"]) for r in results] == [(1, 1)], results
    (rome,) = Memory.objects.filter(user_id="jan")
    assert [e.event for e in MemoryEvent.objects.filter(memory_id=rome.id)] == ["ADD"]


class _Killed(BaseException):
    """The worker's process dying: nothing after it runs (not an Exception a task handles)."""


def _killed_after_the_run(monkeypatch) -> None:
    """The worker dies as the run returns: after every commit the run made, before anything
    the task does after it."""
    from memory.background.extraction import runner

    real = runner.extraction_run

    def killed(**kwargs):
        real(**kwargs)
        raise _Killed

    monkeypatch.setattr(runner, "extraction_run", killed)


def _swept_and_delivered_again(job, settings, capture) -> None:
    """What follows a worker's death: its lease lapses, the sweep sends what it held again,
    and a worker runs what was sent."""
    from memory.services.sweep import jobs_sweep

    stale = timezone.now() - dt.timedelta(seconds=settings.ENGRAM_JOB_LEASE_SECONDS + 1)
    ProcessingJob.objects.filter(pk=job.pk, status="running").update(updated_at=stale)
    with capture():
        jobs_sweep()
    tasks.extract(job.id)


def _written() -> tuple:
    from memory.models import Memory as M

    sources = sorted(M.sources.through.objects.values_list("memory_id", "message_id"))
    events = sorted(MemoryEvent.objects.values_list("memory_id", "event", "new_text"))
    return sorted(Memory.objects.values_list("id", "text")), sources, events


def test_an_offline_run_whose_worker_dies_after_its_commit_is_not_run_again(
    offline, settings, monkeypatch, django_capture_on_commit_callbacks
):
    """The run's memories and its jobs' done are one commit: a worker killed right after it
    (or a commit whose reply was lost) leaves the job done, not running for the sweep to give
    to another run, which extracted the turn a second time."""
    workspace, _ = make_workspace()
    conv = say(workspace, "sam", "I live in Paris. I love jazz. I have a cat named Miso.")
    extract(workspace, conv, django_capture_on_commit_callbacks)
    conv = say(workspace, "sam", "I moved to Berlin. I love jazz. I no longer have a cat.")
    with django_capture_on_commit_callbacks():
        job = extraction_enqueue(workspace=workspace, conversation=conv)
    assert job is not None
    _killed_after_the_run(monkeypatch)
    with pytest.raises(_Killed):
        tasks.extract(job.id)
    monkeypatch.undo()
    written = _written()
    assert any("Berlin" in text for _, text in written[0])
    _swept_and_delivered_again(job, settings, django_capture_on_commit_callbacks)

    job.refresh_from_db()
    assert (job.status, job.attempts, job.extractor) == ("done", 1, "offline")
    assert _written() == written


@llm_db
def test_an_llm_run_whose_worker_dies_after_its_commit_does_not_ask_the_model_again(
    upstream, settings, monkeypatch, django_capture_on_commit_callbacks
):
    """As the offline run's: the model's memories and the job's done are one commit. Run
    again, the model was asked again and may word the same fact otherwise, a second memory
    beside the first (as here: "called" for "named")."""
    workspace, _ = make_workspace()
    conv = say(workspace, "sam", "I have a cat named Miso.")
    upstream.script(reply({"facts": [{"text": "Sam has a cat named Miso", "sources": [1]}]}))
    with django_capture_on_commit_callbacks():
        job = extraction_enqueue(workspace=workspace, conversation=conv)
    assert job is not None
    _killed_after_the_run(monkeypatch)
    with pytest.raises(_Killed):
        tasks.extract(job.id)
    monkeypatch.undo()
    written = _written()
    asked = len(upstream.chat_requests())
    upstream.script(
        reply({"facts": [{"text": "Sam has a cat called Miso", "sources": [1]}]}),
        reply({"actions": [{"event": "ADD", "fact": 0, "text": "Sam has a cat called Miso"}]}),
    )
    _swept_and_delivered_again(job, settings, django_capture_on_commit_callbacks)

    job.refresh_from_db()
    assert (job.status, job.attempts, job.extractor) == ("done", 1, "llm"), job.error
    assert len(upstream.chat_requests()) == asked
    assert _written() == written
    assert list(Memory.objects.values_list("text", flat=True)) == ["Sam has a cat named Miso"]
