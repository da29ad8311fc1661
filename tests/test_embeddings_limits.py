"""POST /v1/embeddings under a workspace's limits, as a chat completion is: the workspace's
requests per minute (one count with chat), its budget when an operator priced the embedding
model (429 `insufficient_quota`, as chat), and chat's x-ratelimit-* headers on the answers."""

from __future__ import annotations

import pytest

from completions import pricing
from completions.models import Price
from tests.test_embeddings_api import MODEL
from tests.test_errors import assert_envelope

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("limiter_awake")]

ONE = {"model": MODEL, "input": "a"}


def _workspace(operator_http, owner, body: dict) -> None:
    resp = operator_http.patch(f"/v1/workspaces/{owner[0].id}", json=body)
    assert resp.status_code == 200, resp.text


def test_embeddings_count_against_the_workspaces_requests_per_minute(http, operator_http, owner):
    _workspace(operator_http, owner, {"limits": {"rpm": 2}})
    first = http.post("/v1/embeddings", json=ONE)
    assert first.status_code == 200, first.text
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    chat = http.post(
        "/v1/chat/completions",
        json={"model": "local", "messages": [{"role": "user", "content": "Hi"}]},
    )
    assert chat.status_code == 200 and chat.headers["x-ratelimit-remaining-requests"] == "0"
    refused = http.post("/v1/embeddings", json=ONE)  # the third of the workspace's minute
    error = assert_envelope(refused, 429, code="rate_limit_exceeded")
    assert "workspace" in error["message"]
    assert int(refused.headers["retry-after"]) >= 1 and refused.headers["retry-after-ms"]
    assert refused.headers["x-ratelimit-limit-requests"] == "2"


def test_a_priced_embedding_model_spends_the_workspaces_budget(http, operator_http, owner):
    Price.objects.create(model=MODEL, input_per_million=100_000, output_per_million=0)
    pricing.prices_changed()  # "a" is 1 token: 0.1 credit
    _workspace(operator_http, owner, {"budget": {"credits": 0.2, "period": "day"}})
    for _ in range(2):
        assert http.post("/v1/embeddings", json=ONE).status_code == 200
    refused = http.post("/v1/embeddings", json=ONE)
    error = assert_envelope(refused, 429, code="insufficient_quota")
    assert error["type"] == "insufficient_quota" and "budget of the workspace" in error["message"]
    assert refused.headers["x-should-retry"] == "false"


def test_an_unpriced_embedding_model_is_served_under_a_budget(http, operator_http, owner):
    """Engram's own model, unpriced, costs nothing: a budget does not refuse it (an unpriced
    chat model is refused: it is bought upstream)."""
    pricing.prices_changed()
    _workspace(operator_http, owner, {"budget": {"credits": 0.000001, "period": "day"}})
    for _ in range(3):
        assert http.post("/v1/embeddings", json=ONE).status_code == 200
