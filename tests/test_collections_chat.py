"""End to end over HTTP with the official OpenAI client: x-collection-ids grounds the answer."""

import json
import time

import pytest

from tests.test_collections_ingest import BAKERY_FACT, BAKERY_MD, LIGHTHOUSE_FACT, lighthouse_pdf


def _client(engram_server, key: str, collection_ids: list[str]):
    import openai

    return openai.OpenAI(
        base_url=f"{engram_server.url}/v1",
        api_key=key,
        max_retries=0,
        default_headers={"x-user-id": "reader-1", "x-collection-ids": json.dumps(collection_ids)},
    )


def _gateway_requests(upstream) -> list:
    """Requests the gateway relayed (not the worker's own JSON-mode memory extraction calls)."""
    return [
        r
        for r in upstream.chat_requests()
        if (r.body or {}).get("response_format", {}).get("type") != "json_object"
    ]


def _sent_text(upstream) -> str:
    body = _gateway_requests(upstream)[-1].body
    return json.dumps(body["messages"], ensure_ascii=False)


def test_chat_cites_the_uploaded_documents(
    http, engram_server, owner, outsider, upstream, celery_worker
):
    col = http.post("/v1/collections", json={"name": "Manuals"}).json()
    url = f"/v1/collections/{col['id']}/documents"
    pdf = http.post(url, files={"file": ("lighthouse.pdf", lighthouse_pdf(), "application/pdf")})
    md = http.post(url, files={"file": ("bakery.md", BAKERY_MD.encode(), "text/markdown")})
    assert pdf.status_code == md.status_code == 202
    ids = {"pdf": pdf.json()["id"], "md": md.json()["id"]}
    deadline = time.monotonic() + 180
    while True:
        docs = {d["id"]: d for d in http.get(url).json()["data"]}
        if all(docs[i]["status"] == "ready" for i in ids.values()):
            break
        assert time.monotonic() < deadline, docs
        assert not any(docs[i]["status"] == "failed" for i in ids.values()), docs
        time.sleep(0.25)

    client = _client(engram_server, owner[1], [col["id"]])
    for question, kind, fact, title in [
        ("How often is the Fresnel lens polished?", "pdf", LIGHTHOUSE_FACT, "Lighthouse manual"),
        ("When is the sourdough starter fed?", "md", BAKERY_FACT, "Bakery handbook"),
    ]:
        completion = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": question}]
        )
        assert fact in _sent_text(upstream)  # the chunk holding the answer reached the model
        sources = completion.model_extra["engram"]["sources"]
        top = sources[0]
        assert top["document_id"] == ids[kind] and top["collection_id"] == col["id"]
        assert top["title"] == title and isinstance(top["chunk_index"], int)
        assert {"score", "snippet"} <= set(top)

        # streams carry the sources in their last `engram` chunk
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": question}],
            stream=True,
        )
        extras = [c.model_extra["engram"] for c in stream if (c.model_extra or {}).get("engram")]
        assert extras and extras[-1]["sources"][0]["document_id"] == ids[kind]

    import openai

    requests_before = len(_gateway_requests(upstream))
    foreign = _client(engram_server, outsider[1], [col["id"]])
    with pytest.raises(openai.NotFoundError) as caught:
        foreign.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Fresnel lens?"}]
        )
    error = caught.value.response.json()["error"]
    assert error["param"] == "x-collection-ids" and error["code"] == "collection_not_found"
    assert col["id"] in error["message"]
    assert len(_gateway_requests(upstream)) == requests_before  # nothing went upstream
