"""How past messages are indexed and ranked: neighbour-blended vectors and the feedback pass."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from memory import tasks
from memory.embeddings import get_embedder
from memory.models import Message, ProcessingJob
from memory.retrieval import messages as message_ranking
from memory.retrieval import search as selectors
from memory.retrieval import terms
from memory.services import conversation_get_or_create, messages_import
from tests.factories import make_workspace

pytestmark = pytest.mark.django_db

DAY = dt.datetime(2024, 3, 9, 18, 0, tzinfo=dt.UTC)


@pytest.fixture
def offline(settings):
    settings.OPENAI_BASE_URL = ""
    settings.ENGRAM_MEMORY_EXTRACTION = "offline"


def imported(workspace, user, turns, django_capture_on_commit_callbacks, conversation="c"):
    """Import (speaker, text, created_at) turns and run the extraction job over them."""
    conv, _ = conversation_get_or_create(
        workspace=workspace, external_id=conversation, user_id=user
    )
    with django_capture_on_commit_callbacks(execute=False):
        messages_import(
            workspace=workspace,
            conversation=conv,
            messages=[
                {"role": "user", "name": name, "content": text, "created_at": when}
                for name, text, when in turns
            ],
        )
    job = ProcessingJob.objects.filter(conversation=conv).order_by("-upto_message_id").first()
    tasks.extract(job.id)
    return {m.content: m for m in Message.objects.filter(conversation=conv)}


def cosine(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_a_terse_reply_is_found_through_the_turn_it_answers(
    offline, django_capture_on_commit_callbacks
):
    workspace, _ = make_workspace()
    stored = imported(
        workspace,
        "u",
        [
            ("Ana", "Do you still go skiing in the Alps every winter?", DAY),
            ("Ben", "Yes, twice last season, and once more in April.", DAY),
            ("Ana", "Nice. I bought a new kettle today.", DAY + dt.timedelta(days=3)),
        ],
        django_capture_on_commit_callbacks,
    )
    reply = stored["Yes, twice last season, and once more in April."]
    later = stored["Nice. I bought a new kettle today."]
    query = get_embedder().embed_one("How often does Ben go skiing in the Alps?")
    # The reply's own words say nothing of skiing; blended with the question it answers, its
    # vector is near a question about skiing.
    assert cosine(query, reply.context_embedding) > cosine(query, reply.embedding) + 0.05
    # A turn from another day is not blended with it: alone, its vector is its own.
    assert cosine(later.context_embedding, later.embedding) > 0.999


def test_a_later_turn_widens_the_vector_of_the_one_before(
    offline, django_capture_on_commit_callbacks
):
    workspace, _ = make_workspace()
    first = imported(
        workspace,
        "u",
        [("Ana", "Which city did you move to?", DAY)],
        django_capture_on_commit_callbacks,
    )["Which city did you move to?"]
    assert cosine(first.context_embedding, first.embedding) > 0.999  # no neighbour yet
    imported(
        workspace,
        "u",
        [("Ben", "Lisbon, last spring.", DAY + dt.timedelta(minutes=1))],
        django_capture_on_commit_callbacks,
    )
    first.refresh_from_db()
    assert cosine(first.context_embedding, first.embedding) < 0.99


def test_a_runs_neighbours_are_read_as_the_orm_reads_them(
    offline, django_capture_on_commit_callbacks
):
    """The extraction run reads its messages' neighbours (the spoken turns just before it, and
    any later ones not in the run) in one raw statement with binary vectors: the same rows,
    fields and vectors as the querysets it replaced."""
    from memory.background.extraction import runner

    workspace, _ = make_workspace()
    minute = dt.timedelta(minutes=1)
    imported(
        workspace,
        "u",
        [
            ("Ana" if i % 2 else "Ben", f"Turn {i} about Lisbon.", DAY + i * minute)
            for i in range(7)
        ],
        django_capture_on_commit_callbacks,
    )
    spoken = list(Message.objects.order_by("created_at", "id"))
    Message.objects.filter(pk=spoken[1].pk).update(context_embedding=None)  # a null vector too
    run = spoken[3:5]  # two later turns (5, 6) are not in the run
    first = run[0]
    fields = ("id", "role", "name", "content", "created_at", "search_text")
    orm = Message.objects.filter(
        conversation_id=first.conversation_id, role__in=["user", "assistant"]
    )
    orm = orm.only(*fields, "embedding", "context_embedding")
    before = orm.filter(created_at__lt=first.created_at).order_by("-created_at", "-id")
    later = orm.filter(created_at__gte=first.created_at).exclude(id__in=[m.id for m in run])
    expected = list(before[: runner.READ_BEFORE].union(later, all=True))

    got = runner._neighbours(first.conversation_id, first.created_at, {m.id for m in run})

    assert [m.id for m in got] == [m.id for m in expected]
    assert [m.id for m in got] == [spoken[i].id for i in (2, 1, 0, 5, 6)]
    for new, old in zip(got, expected, strict=True):
        assert [getattr(new, f) for f in fields] == [getattr(old, f) for f in fields]
        assert new.get_deferred_fields() == old.get_deferred_fields()
        for name in ("embedding", "context_embedding"):
            a, b = getattr(new, name), getattr(old, name)
            assert (a is None) == (b is None)
            if a is not None:  # float32 values: exactly the same once in float32
                assert np.array_equal(np.float32(a), np.float32(b))
    assert got[1].context_embedding is None


def test_a_later_run_leaves_the_earlier_turns_windows_as_one_run_makes_them(
    offline, django_capture_on_commit_callbacks
):
    """A chat's turns are indexed one run per turn; each run re-indexes the two turns before
    it. The earlier of those lost the start of its window (it kept itself and the two after),
    so a chat's turns were found by less than the same conversation imported in one run."""
    from memory.background.extraction import runner

    workspace, _ = make_workspace()
    minute = dt.timedelta(minutes=1)
    turns = [
        ("Ana" if i % 2 else "Ben", f"Turn {i} about {word}.", DAY + i * minute)
        for i, word in enumerate(["Lisbon", "cellos", "ferries", "quinces", "owls", "kites"])
    ]
    imported(workspace, "u", turns, django_capture_on_commit_callbacks)
    spoken = list(Message.objects.order_by("created_at", "id"))
    whole = {m.id: (m.search_text, m.context_embedding) for m in spoken}
    assert "Lisbon" in whole[spoken[2].id][0] and "owls" in whole[spoken[2].id][0]
    # Turns 2 and 3 as they were before turn 4 and 5 came: their windows are made again.
    Message.objects.filter(pk__in=[spoken[2].pk, spoken[3].pk]).update(search_text="before")

    changed = runner.widen_search_windows(spoken[4:6])  # the last turn, as a run of its own

    assert {spoken[2].id, spoken[3].id} <= {m.id for m in changed}
    for message in changed:
        text, vector = whole[message.id]
        assert message.search_text == text, message.content
        assert np.allclose(message.context_embedding, vector, atol=1e-6), message.content


def test_feedback_rescores_candidates_by_the_words_the_best_matches_share(
    offline, django_capture_on_commit_callbacks
):
    workspace, _ = make_workspace()
    filler = [
        ("Ana", f"Meeting notes number {i}: the quarterly budget review went fine.", DAY)
        for i in range(12)
    ]
    turns = [
        ("Ana", "My garden is full of heirloom tomatoes and basil this year.", DAY),
        ("Ana", "From the garden I made tomatoes with basil pesto.", DAY),
        ("Ana", "More heirloom tomatoes and basil went into a sauce tonight.", DAY),
        *filler,
    ]
    imported(workspace, "u", turns, django_capture_on_commit_callbacks)
    query = "What grows in Ana's garden?"
    vector = get_embedder().embed_one(query)
    plain = message_ranking.ranked(
        workspace_id=workspace.id, user_id="u", query=query, vector=vector, exclude_ids=[]
    )
    fed = message_ranking.ranked(
        workspace_id=workspace.id,
        user_id="u",
        query=query,
        vector=vector,
        exclude_ids=[],
        feedback=True,
    )
    assert {h.id for h in fed} == {h.id for h in plain}  # re-scored, never widened
    rank = {h.row["content"]: h.ranks["blend"] for h in fed}
    sauce = "More heirloom tomatoes and basil went into a sauce tonight."
    # It shares no word with the question ("garden"), but "tomatoes", "basil" and "heirloom"
    # with the best matches: the feedback pass puts it above every filler line.
    assert rank[sauce] < min(rank[text] for _, text, _ in filler)
    assert rank[sauce] <= {h.row["content"]: h.ranks["blend"] for h in plain}[sauce]


def test_feedback_reads_only_the_users_own_rows(offline, django_capture_on_commit_callbacks):
    workspace, _ = make_workspace()
    other, _ = make_workspace("other")
    imported(
        workspace,
        "u",
        [("Ana", "Our garden has tomatoes.", DAY)],
        django_capture_on_commit_callbacks,
    )
    imported(
        other,
        "u",
        [("Ana", "The garden party had tomatoes and jazz.", DAY)],
        django_capture_on_commit_callbacks,
    )
    found = selectors.search(
        workspace=workspace,
        user_id="u",
        query="What is in the garden?",
        vector=get_embedder().embed_one("What is in the garden?"),
        limit=10,
    )
    texts = [f.obj.text if f.kind == "memory" else f.obj.content for f in found]
    assert texts and all("jazz" not in t for t in texts)
    stats = terms.term_stats(workspace_id=workspace.id, user_id="u")
    assert "jazz" not in stats.df and stats.rows == 1


def test_erasing_a_user_drops_what_this_process_derived_from_them(
    offline, django_capture_on_commit_callbacks
):
    from memory.services.users import user_delete

    workspace, _ = make_workspace()
    imported(
        workspace,
        "u",
        [("Ana", "I keep bees in the garden.", DAY)],
        django_capture_on_commit_callbacks,
    )
    assert terms.speaker_names(workspace_id=workspace.id, user_id="u") == {"ana"}
    assert terms.term_stats(workspace_id=workspace.id, user_id="u").df
    with django_capture_on_commit_callbacks(execute=True):
        user_delete(workspace=workspace, user_id="u")
    assert terms.speaker_names(workspace_id=workspace.id, user_id="u") == set()
    assert terms.term_stats(workspace_id=workspace.id, user_id="u").rows == 0


def test_a_memory_newer_than_the_cached_statistics_is_found_by_its_words():
    from memory.services.memories import memory_create

    workspace, _ = make_workspace()
    for i in range(12):
        memory_create(workspace=workspace, user_id="u", text=f"Ana's budget note number {i}.")

    def search(query):
        return selectors.memory_search(
            workspace=workspace, user_id="u", query=query, vector=None, limit=5
        )

    assert search("Ana's pottery and budget") == []  # nothing has the one selective word
    assert terms.term_stats(table="memory_memory", workspace_id=workspace.id, user_id="u").rows
    memory_create(workspace=workspace, user_id="u", text="Ana started a pottery class.")
    found = search("Ana's pottery and budget")
    assert found[0].obj.text == "Ana started a pottery class."


def test_ranked_items_are_their_rows_as_stored(
    offline, django_capture_on_commit_callbacks, django_assert_num_queries
):
    """Search builds its memories and messages from the ranking rows (positional model
    construction, psycopg's own timestamp loader): every field it fills is the stored one."""
    from memory.models import Memory

    workspace, _ = make_workspace()
    imported(
        workspace,
        "u",
        [
            ("Ana", "I keep bees in the garden behind the house.", DAY),
            ("Ana", "My bees made twelve jars of honey this summer.", DAY + dt.timedelta(hours=2)),
        ],
        django_capture_on_commit_callbacks,
    )
    query = "What does Ana keep in the garden?"
    asked = {"workspace": workspace, "user_id": "u", "query": query, "limit": 10}
    vector = get_embedder().embed_one(query)
    found = [
        *selectors.memory_search(**asked, vector=vector, with_sources=True),
        *selectors.message_search(**asked, vector=vector),
    ]
    assert {f.kind for f in found} == {"memory", "message"}
    for item in found:
        obj = item.obj
        stored = type(obj).objects.get(id=obj.id)
        names = (
            ["user_id", "text", "kind", "event_date", "metadata", "created_at", "updated_at"]
            if isinstance(obj, Memory)
            else ["user_id", "role", "name", "content", "metadata", "created_at", "conversation_id"]
        )
        for name in [*names, "workspace_id"]:
            assert getattr(obj, name) == getattr(stored, name), name
        assert obj.created_at.utcoffset() == dt.timedelta(0)
        assert not obj._state.adding
        with django_assert_num_queries(0):  # related objects come with it, as before
            assert obj.workspace == workspace
            if isinstance(obj, Message):
                assert obj.conversation.external_id == "c"
                assert obj.conversation.workspace == workspace


def test_vectors_are_written_as_the_same_nine_digit_text_whatever_they_are_given_as():
    """vector_text formats a whole vector at once: the text is the per-value 9-digit form
    (exact for float32) for lists, float32 and float64 arrays, and the empty vector."""
    from memory.services.indexing import vector_text

    rng = np.random.default_rng(3)
    vector = rng.standard_normal(384).astype(np.float32)
    vector /= np.linalg.norm(vector)
    for given in (vector, vector.tolist(), vector.astype(np.float64), [0.0, -0.0, 1e-9, 3.5]):
        expected = "[" + ",".join(format(float(v), ".9g") for v in given) + "]"
        assert vector_text(given) == expected
    assert vector_text([]) == "[]" and vector_text(None) is None
    text = vector_text(vector)
    assert text is not None
    parsed = np.array(text[1:-1].split(","), dtype=np.float32)
    assert np.array_equal(parsed, vector)  # exact once read back as float32


def test_binary_vectors_are_the_same_values_as_the_nine_digit_text():
    """vector_binary (a bound parameter read by vector_recv) stores what vector_text's text
    would: the same pgvector text back, for float32, float64 and list input; None stays NULL."""
    from config.common.vectors import binding_cursor, vector_binary
    from memory.services.indexing import vector_text

    rng = np.random.default_rng(5)
    vector = rng.standard_normal(384).astype(np.float32)
    vector /= np.linalg.norm(vector)
    for given in (vector, vector.tolist(), vector.astype(np.float64), [0.0, -0.0, 1e-9, 3.5]):
        with binding_cursor() as cursor:
            cursor.execute(
                "SELECT %b::vector::text, %s::vector::text",
                [vector_binary(given), vector_text(given)],
            )
            binary, text = cursor.fetchone()
        assert binary == text
    with binding_cursor() as cursor:
        cursor.execute("SELECT %b::vector IS NULL", [vector_binary(None)])
        assert cursor.fetchone() == (True,)


def test_the_index_update_binds_its_vectors_instead_of_writing_them_as_text(
    offline, django_capture_on_commit_callbacks
):
    """A run's index update (messages_index_update) sends each vector as a binary parameter:
    as text in the statement, PostgreSQL parsed two 384-float texts a message, half the
    UPDATE's CPU. The statement is then short, and every message has both vectors."""
    from django.db import connection

    from config.common.vectors import VectorBytes

    workspace, _ = make_workspace()
    conv, _ = conversation_get_or_create(workspace=workspace, external_id="c", user_id="u")
    with django_capture_on_commit_callbacks(execute=False):
        messages_import(
            workspace=workspace,
            conversation=conv,
            messages=[
                {"role": "user", "name": "Ann", "content": text, "created_at": DAY}
                for text in ("I adopted a cat.", "She is called Miso.", "Miso likes boxes.")
            ],
        )
    job = ProcessingJob.objects.get(conversation=conv)
    # What is sent: the statement and its parameters (Django's query log shows the statement
    # with its parameters written in when they are bound on the server).
    sent: list[tuple[str, list]] = []

    def capture(execute, sql, params, many, context):
        sent.append((sql, list(params or [])))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        tasks.extract(job.id)
    updates = [(sql, params) for sql, params in sent if 'UPDATE "memory_message"' in sql]
    assert len(updates) == 1, [sql[:80] for sql, _ in sent]
    sql, params = updates[0]
    # the messages' token vectors stored in the same statement (memory.services.indexing)
    assert sql.startswith('WITH stored_tokens AS (INSERT INTO "memory_messagetokens"'), sql[:80]
    assert sum(type(p) is bytes for p in params) == 3  # (VectorBytes is bytes too)
    update = sql[sql.index('UPDATE "memory_message"') :]
    assert update.count("::vector") == 6 and len(update) < 600, update[:300]
    assert sum(isinstance(p, VectorBytes) for p in params) == 6
    stored = Message.objects.filter(conversation=conv)
    assert len(stored) == 3
    for message in stored:
        assert len(message.embedding) == len(message.context_embedding) == 384
        assert abs(float(np.linalg.norm(message.embedding)) - 1) < 1e-3


def test_memories_and_their_source_links_carry_only_the_indexes_statements_use():
    """Migration 0019: memory_memory's GIN of `search` (the ranking never used it), its
    workspace index and the pattern twins, and the source links' memory_id index and twins are
    gone; each was one more index entry for every row version. What the ranking, the cascades
    and the lookups use stays."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tablename, indexdef FROM pg_indexes "
            "WHERE tablename IN ('memory_memory', 'memory_memory_sources')"
        )
        found = {(table, definition.split(" USING ")[1]) for table, definition in cursor.fetchall()}
    assert found == {
        ("memory_memory", "btree (id)"),
        ("memory_memory", "btree (workspace_id, user_id, updated_at)"),
        ("memory_memory", "btree (workspace_id, user_id) INCLUDE (id, embedding)"),
        ("memory_memory_sources", "btree (id)"),
        ("memory_memory_sources", "btree (memory_id, message_id)"),
        ("memory_memory_sources", "btree (message_id)"),
    }


def test_jobs_and_messages_carry_only_the_indexes_statements_use():
    """Migration 0020: a job's conversation index and the pattern twins of its primary key,
    workspace and conversation indexes, and of a message's session index, are gone (three row
    versions of a job and two or more of each message a turn paid for them)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'memory_processingjob' "
            "OR (tablename = 'memory_message' AND indexdef LIKE '%%session_id%%')"
        )
        found = {definition.split(" USING ")[1] for (definition,) in cursor.fetchall()}
    assert found == {
        "btree (id)",
        "btree (workspace_id)",
        "btree (conversation_id, status)",
        "btree (conversation_id, kind, upto_message_id)",
        "btree (updated_at) WHERE ((status)::text = ANY ((ARRAY['pending'::character varying, "
        "'running'::character varying])::text[]))",
        "btree (workspace_id, kind, upto_message_id) WHERE ((status)::text = ANY "
        "((ARRAY['pending'::character varying, 'running'::character varying])::text[]))",
        "btree (session_id)",
    }


def test_excluded_ids_as_array_text_are_the_ids_psycopg_would_have_sent():
    """A turn's excluded message ids go as one array text (message_ranking.id_array) instead
    of a list psycopg dumps id by id: the same array, whatever an id holds (none, one, three
    hundred Engram ids; a quote, a backslash, a comma, a brace, white space, the word NULL,
    the empty string)."""
    from django.db import connection

    from config.common.ids import new_id

    odd = ["NULL", "null", "a b", " x ", 'q"uote', "back\\slash", "{br}", "c,omma", "", "é"]
    for ids in ([], ["msg_a"], [new_id("msg") for _ in range(300)], odd, ['"'], ["\\"]):
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT %s::varchar[] IS NOT DISTINCT FROM %s::varchar[]",
                [ids, message_ranking.id_array(ids)],
            )
            assert cursor.fetchone() == (True,), ids
