"""x-collection-ids works with no end user (a RAG app): chunks reach the model and `engram`
cites them, nothing is remembered; an unknown or another workspace's collection is 404 naming
it, with or without a user, on every door."""

import json

import httpx
import openai
import pytest

from memory.knowledge import services
from memory.models import Conversation, Memory, Message, Session
from memory.text import count_messages
from tests.test_collections_ingest import LIGHTHOUSE_FACT

MANUAL = (
    "Lighthouse maintenance manual.\n\n"
    "The keeper logs the weather at dawn and at dusk in the station book.\n\n"
    f"{LIGHTHOUSE_FACT}\n\n"
    "The fog signal is tested on the first Monday of every month."
)
QUESTION = "How often is the Fresnel lens polished?"


@pytest.fixture
def manual(owner):
    """The owner's collection with one ready document, ingested in-process."""
    collection = services.collection_create(workspace=owner[0], name="Manuals")
    document, _ = services.document_create(
        workspace=owner[0], collection=collection, raw=MANUAL.encode(), title="Lighthouse manual"
    )
    assert services.document_ingest(document_id=document.id) == "ready"
    return collection.id, document.id


def _sdk(server, key, headers):
    return openai.OpenAI(
        base_url=f"{server.url}/v1", api_key=key, max_retries=0, default_headers=headers
    )


def _context_text(upstream) -> str:
    """The system and context text the upstream received for the last chat."""
    messages = upstream.chat_requests()[-1].body["messages"]
    return "\n".join(str(m["content"]) for m in messages if m["role"] == "system")


@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize("stream", [False, True])
def test_collections_without_a_user_ground_the_answer(
    engram_server, owner, upstream, manual, settings, fast_path, stream
):
    settings.ENGRAM_GATEWAY_FAST_PATH = fast_path
    collection_id, document_id = manual
    sdk = _sdk(engram_server, owner[1], {"x-collection-ids": json.dumps([collection_id])})
    messages = [{"role": "user", "content": QUESTION}]
    if stream:
        chunks = list(sdk.chat.completions.create(model="m", messages=messages, stream=True))
        engram = [c.model_extra["engram"] for c in chunks if (c.model_extra or {}).get("engram")]
        assert len(engram) == 1
        engram = engram[0]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        completion = sdk.chat.completions.create(model="m", messages=messages)
        assert completion.choices[0].message.content == f"echo: {QUESTION}"
        engram = completion.model_extra["engram"]
    assert LIGHTHOUSE_FACT in _context_text(upstream)  # the chunk reached the model
    top = engram["sources"][0]
    assert top["collection_id"] == collection_id and top["document_id"] == document_id
    assert top["title"] == "Lighthouse manual" and 0 < top["score"] <= 1
    assert engram["memories_used"] == 0 and engram["conversation_id"] is None
    assert engram["context_tokens"] > 0
    # nothing remembered: an anonymous turn stores no conversation, session, message or memory
    assert not Conversation.objects.exists() and not Session.objects.exists()
    assert not Message.objects.exists() and not Memory.objects.exists()


def test_context_without_a_user_shows_the_knowledge(http, manual):
    collection_id, document_id = manual
    response = http.post(
        "/v1/context",
        json={"model": "m", "messages": [{"role": "user", "content": QUESTION}]},
        headers={"x-collection-ids": json.dumps([collection_id])},
    )
    assert response.status_code == 200, response.text
    data = response.json()
    assert LIGHTHOUSE_FACT in json.dumps(data["messages"])
    assert [b["name"] for b in data["blocks"]] == ["request", "knowledge"]
    assert data["engram"]["sources"][0]["document_id"] == document_id
    assert not Conversation.objects.exists()


@pytest.mark.parametrize("user", [None, "reader-1"])
def test_an_unknown_or_foreign_collection_is_404_naming_it(
    engram_server, owner, outsider, upstream, manual, settings, user
):
    """Every door, streaming or not, with or without a user; nothing goes upstream."""
    collection_id, _ = manual
    extra = {"x-user-id": user} if user else {}
    body = {"model": "m", "messages": [{"role": "user", "content": QUESTION}]}
    for ids, missing in (
        ([collection_id], collection_id),  # the owner's collection, asked by the outsider
        (["col_does_not_exist"], "col_does_not_exist"),
    ):
        headers = {**extra, "x-collection-ids": json.dumps(ids)}
        sdk = _sdk(engram_server, outsider[1], headers)
        for fast_path in (True, False):
            settings.ENGRAM_GATEWAY_FAST_PATH = fast_path
            for stream in (False, True):
                with pytest.raises(openai.NotFoundError) as caught:
                    sdk.chat.completions.create(**body, stream=stream)
                error = caught.value.response.json()["error"]
                assert error["code"] == "collection_not_found", error
                assert error["param"] == "x-collection-ids" and missing in error["message"]
        with httpx.Client(
            base_url=engram_server.url, headers={"Authorization": f"Bearer {outsider[1]}"}
        ) as client:
            response = client.post("/v1/context", json=body, headers=headers)
        assert response.status_code == 404
        assert missing in response.json()["error"]["message"]
    # the owner's own collection next to an unknown one: the unknown one is named
    sdk = _sdk(
        engram_server,
        owner[1],
        {**extra, "x-collection-ids": json.dumps([collection_id, "col_nope"])},
    )
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.chat.completions.create(**body)
    assert "col_nope" in caught.value.response.json()["error"]["message"]
    assert upstream.chat_requests() == []
    assert not Conversation.objects.exists()


RETRY_MD = """# Retry helper

Use this function to retry a flaky call:

```python
def retry(fn, attempts=3):
    for i in range(attempts):
        try:
            return fn()
        except IOError:
            if i == attempts - 1:
                raise
```

## Options table

| option   | default |
| -------- | ------- |
| attempts | 3       |
| backoff  | 0.5     |
"""
RETRY_CODE = """def retry(fn, attempts=3):
    for i in range(attempts):
        try:
            return fn()
        except IOError:
            if i == attempts - 1:
                raise"""


def test_the_knowledge_block_keeps_each_chunks_lines(engram_server, owner, upstream, http):
    """A chunk went upstream squashed onto one line: a code block lost its newlines (Python
    its indentation) and a table its rows. Its lines are kept, with its section's heading, and
    /v1/context shows the text the upstream received, counted as sent."""
    collection = services.collection_create(workspace=owner[0], name="Code docs")
    document, _ = services.document_create(
        workspace=owner[0], collection=collection, raw=RETRY_MD.encode(), filename="retry.md"
    )
    assert services.document_ingest(document_id=document.id) == "ready"
    headers = {"x-collection-ids": json.dumps([collection.id])}
    messages = [{"role": "user", "content": "How do I retry a flaky call? Options table?"}]
    _sdk(engram_server, owner[1], headers).chat.completions.create(model="m", messages=messages)
    sent = _context_text(upstream)
    assert RETRY_CODE in sent, sent
    assert "| attempts | 3       |\n| backoff  | 0.5     |" in sent, sent
    assert '<document title="Retry helper" heading="Retry helper > Options table"' in sent, sent

    shown = http.post("/v1/context", json={"model": "m", "messages": messages}, headers=headers)
    assert shown.status_code == 200, shown.text
    data = shown.json()
    assert data["messages"] == upstream.chat_requests()[-1].body["messages"]
    knowledge = next(b for b in data["blocks"] if b["name"] == "knowledge")
    assert any(RETRY_CODE in item["text"] for item in knowledge["items"])
    assert data["context_tokens"] == count_messages(data["messages"])


def test_a_source_names_the_title_the_model_was_told_to_cite(engram_server, owner, upstream):
    """A document sent as JSON text without a title reached the model as
    `<document title="doc_…">` ("cite their titles"), while `engram.sources` said `"title": ""`:
    the model's citation matched no source's title."""
    collection = services.collection_create(workspace=owner[0], name="Notes")
    untitled, _ = services.document_create(
        workspace=owner[0], collection=collection, raw=MANUAL.encode()
    )
    assert services.document_ingest(document_id=untitled.id) == "ready"
    headers = {"x-collection-ids": json.dumps([collection.id])}
    answer = _sdk(engram_server, owner[1], headers).chat.completions.create(
        model="m", messages=[{"role": "user", "content": QUESTION}]
    )
    sources = answer.model_extra["engram"]["sources"]
    assert [s["document_id"] for s in sources] == [untitled.id]
    sent = _context_text(upstream)
    assert f'<document title="{sources[0]["title"]}" chunk="0">' in sent, (sources, sent)


def test_a_chunk_says_why_it_was_used(engram_server, owner, upstream, http, manual):
    """A memory in `engram` says why it was chosen; a chunk said nothing (`engram.sources`) or
    the constant "knowledge collection match" (/v1/context). Each now says how it ranked, as
    /v1/search words it."""
    collection_id, document_id = manual
    headers = {"x-collection-ids": json.dumps([collection_id])}
    messages = [{"role": "user", "content": QUESTION}]
    answer = _sdk(engram_server, owner[1], headers).chat.completions.create(
        model="m", messages=messages
    )
    (source,) = answer.model_extra["engram"]["sources"]
    assert source["document_id"] == document_id
    assert source["why"].startswith("vector rank 1 (similarity "), source
    assert f"blended score {source['score']:.4f}" in source["why"], source
    shown = http.post("/v1/context", json={"model": "m", "messages": messages}, headers=headers)
    knowledge = next(b for b in shown.json()["blocks"] if b["name"] == "knowledge")
    assert [item["why"] for item in knowledge["items"]] == [source["why"]]
    found = http.post(
        "/v1/collections/search", json={"collection_ids": [collection_id], "query": QUESTION}
    ).json()["data"]
    assert found[0]["why"] == source["why"]
