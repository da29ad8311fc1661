"""How /v1/search assembles its one list: evidence already covered is left out, and with the
episode decay, a second session's hit rises past a third turn of the first one's."""

from __future__ import annotations

import datetime as dt

from memory.models import Memory, Message
from memory.retrieval.search import Found, _assemble, episode

MONDAY = int(dt.datetime(2024, 3, 4, 18, 0, tzinfo=dt.UTC).timestamp())
FRIDAY = int(dt.datetime(2024, 3, 8, 18, 0, tzinfo=dt.UTC).timestamp())


def message(msg_id: str, score: float, when: int, conversation: str = "c") -> Found:
    source = {"message_id": msg_id, "conversation_id": conversation, "created_at": when}
    return Found("message", Message(id=msg_id), score, score, {}, [source])


def memory(mem_id: str, score: float, *sources: Found) -> Found:
    return Found(
        "memory", Memory(id=mem_id), score, score, {}, [s.sources[0] for s in sources]
    )


def ids(found: list[Found]) -> list[str]:
    return [f.id for f in found]


def test_an_episode_is_the_conversation_and_day_of_the_first_source():
    a = message("a", 0.9, MONDAY)
    assert episode(a) == ("c", "2024-03-04")
    assert episode(message("b", 0.9, MONDAY, conversation="other")) != episode(a)
    assert episode(memory("m", 0.9, message("x", 0.1, FRIDAY), a)) == ("c", "2024-03-08")
    assert episode(Found("chunk", {"id": "k"}, 0.9, 0.9, {}, [{"document_id": "d"}])) is None


def test_without_the_decay_the_list_is_the_plain_ranking():
    ranked = [message("a", 0.9, MONDAY), message("b", 0.8, MONDAY), message("f", 0.7, FRIDAY)]
    assert ids(_assemble(ranked, limit=10, decay=1.0)) == ["a", "b", "f"]
    assert ids(_assemble(ranked, limit=2, decay=1.0)) == ["a", "b"]


def test_the_decay_lifts_another_sessions_hit_past_more_of_the_first_session():
    ranked = [
        message("a", 0.90, MONDAY),
        message("b", 0.85, MONDAY),
        message("c", 0.80, MONDAY),
        message("f", 0.70, FRIDAY),
    ]
    # 0.85 * 0.8 = 0.68 < 0.70: Friday's turn comes second; then 0.68 vs 0.80 * 0.64
    assert ids(_assemble(ranked, limit=4, decay=0.8)) == ["a", "f", "b", "c"]
    assert ids(_assemble(ranked, limit=2, decay=0.8)) == ["a", "f"]
    # a milder decay keeps the close second turn ahead
    assert ids(_assemble(ranked, limit=4, decay=0.95)) == ["a", "b", "c", "f"]


def test_a_memory_whose_sources_already_rank_above_it_is_left_out_and_takes_no_share():
    a = message("a", 0.9, MONDAY)
    f = message("f", 0.5, FRIDAY)
    restated = memory("m", 0.95, a)  # weighed below its source (0.95 * 0.85 < 0.9)
    result = _assemble([restated, a, f], limit=10, decay=0.9)
    assert ids(result) == ["a", "f"]
    # a memory is weighed, not changed: its score is what search returns
    new = memory("n", 0.99, message("z", 0.1, FRIDAY))
    assert ids(_assemble([new, a], limit=10, decay=1.0)) == ["a", "n"]
    assert new.score == 0.99
