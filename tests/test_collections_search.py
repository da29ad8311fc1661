"""Collection search ranks by meaning and by rare words: the chunk that answers comes first."""

import importlib
import inspect

import pytest

from memory.knowledge import services
from memory.knowledge.search import knowledge_search
from tests.factories import make_workspace

pytestmark = pytest.mark.django_db

MODULES = ["heapq", "difflib", "csv", "sched", "calendar", "statistics", "secrets"]


@pytest.fixture
def stdlib_docs():
    """One ready document per standard-library module docstring, ingested in-process."""
    workspace, _ = make_workspace()
    collection = services.collection_create(workspace=workspace, name="stdlib")
    for name in MODULES:
        text = inspect.getdoc(importlib.import_module(name))
        document, _ = services.document_create(
            workspace=workspace, collection=collection, raw=text.encode(), title=name
        )
        assert services.document_ingest(document_id=document.id) == "ready"
    return workspace, collection


QUESTIONS = [
    ("How do I make an unguessable token for a password reset link?", "secrets"),
    ("Which helper suggests the nearest spellings of a mistyped word?", "difflib"),
    ("On which weekday do the printed month grids begin?", "calendar"),
    ("How can I arrange for callbacks to run at chosen times later on?", "sched"),
    ("How do I get the middle value of a list of numbers?", "statistics"),
]


def test_a_paraphrased_question_ranks_the_answering_chunk_first(stdlib_docs):
    workspace, collection = stdlib_docs
    for question, module in QUESTIONS:
        hits = knowledge_search(
            workspace=workspace, collection_ids=[collection.id], query=question, limit=3
        )
        assert hits[0]["title"] == module, question
        assert 0 <= hits[-1]["score"] <= hits[0]["score"] <= 1


@pytest.mark.django_db(transaction=True)
def test_a_document_added_or_deleted_changes_the_term_statistics_of_every_process():
    """Every process kept a collection's term statistics for ten minutes: a deleted document's
    words went on weighing (and thinning) its searches, a new one's were not weighed."""
    from config.common import coherence
    from memory.retrieval import terms

    workspace, _ = make_workspace()
    collection = services.collection_create(workspace=workspace, name="notes")

    def add(text: str):
        document, _ = services.document_create(
            workspace=workspace, collection=collection, raw=text.encode()
        )
        assert services.document_ingest(document_id=document.id) == "ready"
        return document

    def stats() -> terms.TermStats:
        coherence.check_sync()  # what the next request of any process does first
        return terms.collection_stats(workspace_id=workspace.id, collection_ids=[collection.id])

    zeppelin = add("The zeppelin moored over the harbour at dawn.")
    assert stats().rows == 1 and "zeppelin" in stats().df
    add("A quokka smiled at the ferry passengers.")
    assert stats().rows == 2 and "quokka" in stats().df
    services.document_delete(workspace=workspace, document=zeppelin)
    assert stats().rows == 1 and "zeppelin" not in stats().df
