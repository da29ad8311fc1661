"""Statements prepared on their connection (config.env.prepared_statements), the rankings never
(config.common.statements): the same rows, scores and order as when Django wrote the values
into the statement's text."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from django.db import connection
from django.db.backends.utils import CursorWrapper

from accounts.models import Workspace
from config.env import PREPARE_THRESHOLD
from memory import tasks
from memory.embeddings import get_embedder
from memory.models import Memory, ProcessingJob
from memory.retrieval import fusion
from memory.retrieval import memories as memory_ranking
from memory.retrieval import messages as message_ranking
from memory.services import conversation_get_or_create, messages_import
from tests.factories import make_workspace

pytestmark = pytest.mark.django_db

DAY = dt.datetime(2024, 3, 9, 18, 0, tzinfo=dt.UTC)


def prepared() -> list[str]:
    """The statements prepared on this connection, as PostgreSQL holds them."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


def test_a_statement_run_again_and_again_is_prepared_on_its_connection():
    """Past the threshold an ORM statement is prepared, parameters bound on the server: it is
    planned no more (Django wrote the values into its text, every run planned afresh)."""
    workspace, _ = make_workspace()
    for _ in range(PREPARE_THRESHOLD + 2):
        assert Workspace.objects.filter(pk=workspace.pk).exists()
    held = [s for s in prepared() if 'FROM "accounts_workspace"' in s and "LIMIT 1" in s]
    assert held and all("$1" in s for s in held), prepared()


def test_raw_statements_with_untyped_values_run_bound_on_the_server():
    """The term statistics' ts_stat(format(...)): its values went into format's "any"
    arguments, whose type PostgreSQL cannot infer from a bound parameter (every remembered
    turn failed with `could not determine data type of parameter $2`)."""
    from memory.retrieval import terms
    from memory.services.memories import memory_create

    workspace, _ = make_workspace()
    memory_create(workspace=workspace, user_id="u", text="Ana keeps bees.")
    stats = terms._load_stats("memory_memory", workspace.id, "u")
    assert stats.rows == 1 and "bee" in stats.df


def _turns(workspace, django_capture_on_commit_callbacks) -> None:
    """Statements over several conversations: memories by the offline extractor, one run a
    conversation (each run's nearest memories, the extractor's ranking, more than the
    threshold's count of times)."""
    said = [
        "I keep bees in the garden behind the house.",
        "My bees made twelve jars of honey this summer.",
        "I live in Lisbon near the river.",
        "I love jazz and play the saxophone on Sundays.",
        "My sister Ana is a nurse in Porto.",
        "I am allergic to peanuts.",
        "I bought a red bicycle for the commute.",
        "The garden has tomatoes, basil and a small pond.",
    ]
    for i, text in enumerate(said):
        conv, _ = conversation_get_or_create(workspace=workspace, external_id=f"c{i}", user_id="u")
        with django_capture_on_commit_callbacks(execute=False):
            messages_import(
                workspace=workspace,
                conversation=conv,
                messages=[
                    {"role": "user", "content": text, "created_at": DAY + dt.timedelta(hours=i)}
                ],
            )
        tasks.extract(ProcessingJob.objects.get(conversation=conv).id)


def _as_text_cursor() -> CursorWrapper:
    """The old path: the values written into the statement's text (psycopg's ClientCursor,
    what Django's cursors were)."""
    connection.ensure_connection()
    return CursorWrapper(psycopg.ClientCursor(connection.connection), connection)


def _ranked(workspace, query: str) -> list[tuple]:
    vector = get_embedder().embed_one(query)
    asked = {"workspace_id": workspace.id, "user_id": "u", "query": query, "vector": vector}
    found = [
        *memory_ranking.ranked(**asked, with_sources=True),
        *message_ranking.ranked(**asked, exclude_ids=[], feedback=True),
    ]
    return [(h.id, h.similarity, h.bm25, h.score, h.ranks, h.row) for h in found]


def test_rankings_are_never_prepared_and_rank_as_when_their_values_were_text(
    settings, django_capture_on_commit_callbacks, monkeypatch
):
    """A ranking's generic plan changed its results (bench/README.md, "Search latency, stage
    by stage"): each run is planned with its values instead, and ranks exactly as the
    statement with its values in its text did: rows, similarities, BM25 (its length
    normalization in numeric, as with the average length written as a literal) and order."""
    settings.OPENAI_BASE_URL = ""
    settings.ENGRAM_MEMORY_EXTRACTION = "offline"
    workspace, _ = make_workspace()
    _turns(workspace, django_capture_on_commit_callbacks)
    assert Memory.objects.filter(workspace=workspace).count() >= 6
    queries = ["What does the user keep in the garden?", "Where does the user live?"]
    runs = [_ranked(workspace, q) for _ in range(PREPARE_THRESHOLD + 2) for q in queries]
    statements = prepared()
    assert any("memory_" in s for s in statements), statements  # the run's others are
    assert not [s for s in statements if "<=>" in s]
    assert runs[0] == runs[-2] and runs[1] == runs[-1]
    assert any(row[2] > 0 for row in runs[0]) and any(row[1] is not None for row in runs[0])

    monkeypatch.setattr(fusion, "ranking_cursor", _as_text_cursor)
    assert [_ranked(workspace, q) for q in queries] == runs[:2]


def test_without_prepared_statements_the_values_are_written_into_the_text(monkeypatch):
    """ENGRAM_DB_PREPARED_STATEMENTS=false, for a transaction-pooling pgbouncer before 1.21:
    Django's own binding (its ClientCursor), nothing prepared."""
    from config.env import prepared_statements

    monkeypatch.setenv("ENGRAM_DB_PREPARED_STATEMENTS", "false")
    assert prepared_statements() == {}
    monkeypatch.setenv("ENGRAM_DB_PREPARED_STATEMENTS", "true")
    assert prepared_statements() == {
        "server_side_binding": True,
        "prepare_threshold": PREPARE_THRESHOLD,
    }
    monkeypatch.delenv("ENGRAM_DB_PREPARED_STATEMENTS")
    assert prepared_statements()["prepare_threshold"] == PREPARE_THRESHOLD
