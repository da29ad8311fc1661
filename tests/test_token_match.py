"""Late interaction: the worker keeps each message's token vectors and /v1/search re-ranks its
candidates by how their tokens match the question's (memory.retrieval.late)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from memory.embeddings import get_embedder
from memory.models import Message, MessageTokens
from memory.retrieval import late
from tests.test_conversations import wait_processed

# A week of Alice's turns: one long turn buries the instrument she practises among chores;
# the others speak of instruments and music in general, with more of a question's words.
WEEK = [
    "I want to buy a new instrument case for the trip.",
    "My nephew's school lends every kid an instrument for the year.",
    "The music shop downtown repairs any instrument, they said.",
    "I watched a documentary about how an instrument maker works.",
    "Busy day: cleaned the garage, called mom, fixed the bike, bought groceries, paid the bills,"
    " watered the plants, and in the evening I finally practised the oboe for an hour.",
    "We talked about which music school my nephew should go to.",
    "The neighbours play music too loud on Saturdays.",
    "Concert tickets are so expensive these days.",
    "I love listening to music while I cook dinner for my family.",
    "Our choir is rehearsing for the spring concert next month.",
]
OBOE = 4
QUESTION = "What instrument does Alice practise?"
QUESTIONS = [
    QUESTION,
    "What instrument is Alice rehearsing?",
    "Which instrument does Alice play?",
    "What woodwind does Alice play?",
    "Does Alice play anything herself?",
]
_BLENDED = re.compile(r"blended score (-?[\d.]+)")
_MATCH = re.compile(r"token match rank (\d+)")


def imported(http, user_id, texts, conversation="week"):
    messages = [
        {
            "role": "user",
            "name": "Alice",
            "content": text,
            "created_at": f"2023-05-{8 + i:02d}T13:56:00Z",
        }
        for i, text in enumerate(texts)
    ]
    response = http.post(
        f"/v1/conversations/{conversation}/messages",
        json={"user_id": user_id, "messages": messages},
    )
    assert response.status_code == 201, response.text
    wait_processed(http, conversation)
    return response.json()["data"]


def searched(http, query=QUESTION, limit=5):
    response = http.post(
        "/v1/search",
        json={"user_id": "alice", "query": query, "limit": limit, "types": ["messages"]},
    )
    assert response.status_code == 200, response.text
    return response.json()["data"]


def test_pack_keeps_ids_and_signs():
    vectors, (tokens,) = get_embedder().embed_with_tokens(["I practised the oboe, then slept."])
    ids, signs = late.unpack(late.pack(tokens), 384)
    assert ids.tolist() == tokens.ids.tolist() and len(ids) >= 8
    assert np.array_equal(signs > 0, tokens.vectors > 0)
    assert np.allclose(np.linalg.norm(signs, axis=1), 1.0)
    # the same run's vector: the tokens are what the mean pooling averaged
    assert np.allclose(vectors[0], get_embedder().embed(["I practised the oboe, then slept."])[0])
    assert tokens.words.tolist()[-1] is False  # the full stop


def test_a_rare_shared_word_matches_more_than_common_ones():
    _, (query,) = get_embedder().embed_with_tokens([QUESTION])
    _, turns = get_embedder().embed_with_tokens(WEEK)
    match = late.matches(query, {str(i): late.pack(t) for i, t in enumerate(turns)})
    assert max(match, key=match.get) == str(OBOE)  # the oboe, not "instrument" or "music"
    _, (dots,) = get_embedder().embed_with_tokens(["?!"])
    assert late.matches(dots, {"0": late.pack(turns[0])}) == {}  # no word: no match


def test_matches_is_the_per_candidate_formula():
    """All candidates at once give what each one alone gives: the mean over the question's
    words of their best cosine with the candidate's tokens, weighted by idf among them."""
    _, (query,) = get_embedder().embed_with_tokens([QUESTION])
    _, turns = get_embedder().embed_with_tokens([*WEEK, "Oboe!"])
    packed = {str(i): late.pack(t) for i, t in enumerate(turns)}
    packed["empty"] = b""
    got = late.matches(query, packed)
    unpacked = {k: late.unpack(v, 384) for k, v in packed.items() if v}
    held = [set(ids.tolist()) for ids, _ in unpacked.values()]
    weights = np.array(
        [
            math.log((len(held) + 1) / (sum(i in h for h in held) + 0.5)) if word else 0.0
            for i, word in zip(query.ids.tolist(), query.words.tolist(), strict=True)
        ]
    )
    for key, (_, signs) in unpacked.items():
        best = (query.vectors @ signs.T).max(axis=1)
        assert got[key] == pytest.approx(float(best @ weights / weights.sum()), rel=1e-5)
    assert set(got) == set(unpacked)


def test_rescored_leaves_candidates_without_tokens_where_the_blend_put_them():
    blend = [0.9, 0.8, 0.7]
    places = [0.9, 0.8 + late.RANK_WEIGHT * np.log(2), 0.7 + late.RANK_WEIGHT * np.log(3)]
    assert late.rescored(blend, [None, None, None], {}) == pytest.approx(places)
    assert late.rescored(blend, ["a", None, None], {"a": 0.9}) == pytest.approx(places)
    scores = late.rescored(blend, ["a", "b", None], {"a": 0.2, "b": 0.6})
    assert scores[1] > scores[0]  # b's match lifts it over a
    assert scores[2] == pytest.approx(0.7 + late.RANK_WEIGHT * np.log(3))  # a chunk: no match term


@pytest.mark.usefixtures("celery_worker")
def test_the_worker_stores_tokens_and_search_reranks_by_them(http, settings, monkeypatch):
    settings.OPENAI_BASE_URL = ""  # the offline extractor
    said = imported(http, "alice", WEEK)
    stored = MessageTokens.objects.filter(message_id__in=[m["id"] for m in said])
    assert stored.count() == len(WEEK)

    moved = 0
    for question in QUESTIONS:
        found = searched(http, question, limit=len(WEEK))
        assert [f["score"] for f in found] == sorted((f["score"] for f in found), reverse=True)
        assert all(0 <= f["score"] <= 1 and "re-ranked" in f["why"] for f in found)
        blended = [float(_BLENDED.search(f["why"])[1]) for f in found]
        places = [int(_MATCH.search(f["why"])[1]) for f in found]
        assert sorted(places) == list(range(1, len(WEEK) + 1))
        # wherever the re-ranking put an item above one the blend preferred, its tokens match
        # the question better
        for upper in range(len(found)):
            for lower in range(upper + 1, len(found)):
                if blended[upper] < blended[lower]:
                    moved += 1
                    assert places[upper] < places[lower], (question, found[upper]["text"])
        settings.ENGRAM_SEARCH_TOKEN_MATCH = False
        plain = searched(http, question, limit=len(WEEK))
        settings.ENGRAM_SEARCH_TOKEN_MATCH = True
        assert all("token match" not in f["why"] and "re-ranked" not in f["why"] for f in plain)
        assert sorted(f["id"] for f in plain) == sorted(f["id"] for f in found)
        assert [f["id"] for f in plain] == [
            f["id"] for f in sorted(found, key=lambda f: -float(_BLENDED.search(f["why"])[1]))
        ]
    assert moved  # the match re-ordered some of them

    # only the first late.POOL of each kind are matched; the rest rank by blend and place
    monkeypatch.setattr(late, "POOL", 3)
    found = searched(http, limit=len(WEEK))
    assert sum("token match rank" in f["why"] for f in found) == 3
    assert [f["score"] for f in found] == sorted((f["score"] for f in found), reverse=True)

    # a message deleted takes its tokens with it
    oboe = said[OBOE]["id"]
    Message.objects.filter(id=oboe).delete()
    assert not MessageTokens.objects.filter(message_id=oboe).exists()


@pytest.mark.usefixtures("celery_worker")
def test_backfill_gives_older_messages_the_tokens_the_worker_would_have(http, settings):
    from io import StringIO

    from django.core.management import CommandError, call_command

    settings.OPENAI_BASE_URL = ""
    settings.ENGRAM_SEARCH_TOKEN_MATCH = False  # embedded before tokens were kept
    said = imported(http, "alice", WEEK)
    ids = [m["id"] for m in said]
    assert not MessageTokens.objects.filter(message_id__in=ids).exists()
    with pytest.raises(CommandError, match="ENGRAM_SEARCH_TOKEN_MATCH"):
        call_command("backfilltokens")

    settings.ENGRAM_SEARCH_TOKEN_MATCH = True
    assert "token match" not in searched(http, limit=len(WEEK))[0]["why"]  # none stored yet
    out = StringIO()
    call_command("backfilltokens", "--batch", "3", stdout=out)
    assert f"for {len(WEEK)} messages" in out.getvalue()
    stored = dict(
        MessageTokens.objects.filter(message_id__in=ids).values_list("message_id", "packed")
    )
    assert len(stored) == len(WEEK)
    from memory.text import message_search_text

    first = Message.objects.get(id=ids[0])
    text = message_search_text(
        role=first.role, name=first.name, content=first.content, created_at=first.created_at
    )
    _, (tokens,) = get_embedder().embed_with_tokens([text])
    assert bytes(stored[ids[0]]) == late.pack(tokens)  # what the worker stores
    assert all("token match" in f["why"] for f in searched(http, limit=len(WEEK)))

    out = StringIO()
    call_command("backfilltokens", stdout=out)  # again: nothing left to do
    assert "for 0 messages" in out.getvalue()
