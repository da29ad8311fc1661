"""POST /v1/embeddings leaves usage records: it counted against the limits but was missing
from GET /v1/usage. Its model, prompt tokens, no completion tokens, and credits at the price
table's input price when an operator priced the model (unpriced: Engram's own, free)."""

from __future__ import annotations

import pytest

from completions import pricing
from completions.models import Price, UsageRecord
from completions.usage import buffer
from tests.test_embeddings_api import MODEL, TEXTS


def _embed(http, user: str):
    resp = http.post(
        "/v1/embeddings", json={"model": MODEL, "input": TEXTS}, headers={"x-user-id": user}
    )
    assert resp.status_code == 200, resp.text
    return resp.json()["usage"]["prompt_tokens"]


@pytest.mark.parametrize("price", [None, 2])
def test_embeddings_are_in_the_usage_report_with_their_filters(http, key_id, price):
    if price is not None:
        Price.objects.create(model=MODEL, input_per_million=price, output_per_million=0)
    pricing.prices_changed()
    tokens = _embed(http, "emb-user")
    buffer.flush()

    record = UsageRecord.objects.get()
    assert (record.model, record.status_code, record.api_key_id) == (MODEL, 200, key_id)
    assert (record.prompt_tokens, record.completion_tokens) == (tokens, 0)
    assert record.user_id == "emb-user" and not record.stream
    credits = tokens * (price or 0) / 1_000_000
    assert record.credits == pytest.approx(credits)

    report = http.get("/v1/usage", params={"model": MODEL}).json()
    totals = report["totals"]
    assert (totals["requests"], totals["prompt_tokens"], totals["completion_tokens"]) == (
        1,
        tokens,
        0,
    )
    assert totals["credits"] == pytest.approx(credits)
    by_model = http.get("/v1/usage", params={"group_by": "model"}).json()["data"]
    assert [(g["group"], g["requests"]) for g in by_model] == [(MODEL, 1)]
    for narrow in ({"user_id": "emb-user"}, {"key_id": key_id}):
        assert http.get("/v1/usage", params=narrow).json()["totals"]["requests"] == 1
    assert http.get("/v1/usage", params={"user_id": "other"}).json()["totals"]["requests"] == 0


def test_a_refused_embedding_is_recorded_as_refused(http):
    """Past a bound the tokenizer finds (too many tokens): a 400 in the report's errors, no
    tokens charged, as a refused chat completion is."""
    resp = http.post("/v1/embeddings", json={"model": MODEL, "input": ["word " * 9000]})
    assert resp.status_code == 400, resp.text
    buffer.flush()
    record = UsageRecord.objects.get()
    assert (record.model, record.status_code, record.prompt_tokens) == (MODEL, 400, None)
    assert http.get("/v1/usage").json()["totals"]["errors"] == 1
