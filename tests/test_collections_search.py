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


def _ready_texts(http, texts: list[str], **body) -> tuple[str, list[str]]:
    """A collection of these texts, sent over HTTP and ingested in-process."""
    collection = http.post("/v1/collections", json={"name": "Codes"}).json()["id"]
    ids = []
    for text in texts:
        resp = http.post(f"/v1/collections/{collection}/documents", json={"text": text, **body})
        assert resp.status_code == 202, resp.text
        ids.append(resp.json()["id"])
        assert services.document_ingest(document_id=ids[-1]) == "ready"
    return collection, ids


CODE_WORDS = ["apple", "harbor", "violet", "granite", "meadow", "copper", "falcon", "lantern"]


def test_a_chunk_holding_the_querys_number_ranks_first(http):
    """ "code word item 5" ranked by meaning alone: its other words are in every chunk (too
    common to search by) and a lone digit was no word, so the chunk of item 5 came after
    those of items 31 and 11 that only resembled the query."""
    texts = [
        f"The code word for item number {i * 10 + 1} is {word}."
        for i, word in enumerate(CODE_WORDS, 1)
        if i != 5
    ]
    texts.append("Item 5. Remember meadow; the shipment leaves on Tuesday from the north dock.")
    collection, _ = _ready_texts(http, texts)
    query = "code word item 5"
    hits = http.post(
        "/v1/collections/search", json={"collection_ids": [collection], "query": query}
    ).json()["data"]
    assert hits[0]["text"].startswith("Item 5."), hits
    assert "full-text rank 1" in hits[0]["why"]
    found = http.post(
        "/v1/search", json={"collection_ids": [collection], "query": query, "types": ["chunks"]}
    ).json()["data"]
    assert found[0]["text"].startswith("Item 5."), found


def test_an_untitled_text_is_named_by_its_id_in_every_search(http):
    """A text sent without a title (no file name, no heading) was `title: ""` in the hits of
    /v1/collections/search and /v1/search, and its id in chat's sources."""
    collection, (document,) = _ready_texts(http, ["The ferry to the island leaves at noon."])
    body = {"collection_ids": [collection], "query": "When does the ferry leave?"}
    hits = http.post("/v1/collections/search", json=body).json()["data"]
    assert [h["title"] for h in hits] == [document]
    found = http.post("/v1/search", json={**body, "types": ["chunks"]}).json()["data"]
    assert [(f["title"], f["sources"][0]["title"]) for f in found] == [(document, document)]
    stored = http.get(f"/v1/collections/{collection}/documents/{document}").json()
    assert stored["title"] == ""  # the stored field stays what was sent


def test_a_documents_name_is_its_title_else_file_name_else_id():
    from memory.knowledge.models import document_name

    assert document_name(title="Policy", filename="p.md", document_id="doc_1") == "Policy"
    assert document_name(title="", filename="p.md", document_id="doc_1") == "p.md"
    assert document_name(title="", filename="", document_id="doc_1") == "doc_1"
