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
