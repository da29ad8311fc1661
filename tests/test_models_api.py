"""GET /v1/models and /v1/models/{id} in OpenAI's shape, per workspace."""

import httpx
import openai
import pytest

from completions.services import model_alias_set
from tests.test_errors import assert_envelope


@pytest.fixture(autouse=True)
def _upstream_lists_not_cached():
    """The upstreams' model lists are cached for a minute per upstream, and the loopback
    upstream is the whole session's: another module's /v1/models would answer from it."""
    from completions import catalogue

    catalogue._upstream_names.clear()


@pytest.fixture
def sdk(engram_server, owner):
    return openai.OpenAI(base_url=engram_server.url + "/v1", api_key=owner[1], max_retries=0)


def test_list_has_local_aliases_and_upstream_models(sdk, owner, upstream, http):
    model_alias_set(workspace=owner[0], alias="smart", target_model="claude-3-7-sonnet")
    ids = [m.id for m in sdk.models.list()]
    assert {"local", "smart", "upstream-model-a"} <= set(ids)
    assert len(ids) == len(set(ids))
    raw = http.get("/v1/models").json()
    assert raw["object"] == "list"
    for model in raw["data"]:
        assert {"id", "object", "created", "owned_by"} <= set(model) and model["object"] == "model"
    asked = {r.path for r in upstream.requests}
    assert "/v1/models" in asked  # the OpenAI-compatible and the Anthropic upstream were asked


def test_retrieve(sdk, owner, upstream, http):
    model_alias_set(workspace=owner[0], alias="org/smart-model", target_model="gpt-4o")
    assert sdk.models.retrieve("local").id == "local"
    assert sdk.models.retrieve("upstream-model-a").owned_by == "openai"
    assert http.get("/api/v1/models/org/smart-model").json()["id"] == "org/smart-model"
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("no-such-model")


def test_upstream_models_keep_when_they_were_made(sdk, upstream, http):
    """An upstream model is listed with the `created` its upstream gave (Anthropic's
    `created_at` in Unix seconds), as OpenAI lists it: every model read `created: 0`, so an app
    that sorts models by age (the newest first) had them in no order."""
    from datetime import datetime

    from tests.upstream import ANTHROPIC_MODEL_CREATED_AT, UPSTREAM_MODEL_CREATED

    upstream.anthropic_model_pages = [["claude-sonnet-4-5"]]
    listed = {m.id: m.created for m in sdk.models.list()}
    claude = datetime.fromisoformat(ANTHROPIC_MODEL_CREATED_AT.replace("Z", "+00:00"))
    assert listed["upstream-model-a"] == UPSTREAM_MODEL_CREATED
    assert listed["claude-sonnet-4-5"] == int(claude.timestamp())
    assert sdk.models.retrieve("upstream-model-a").created == UPSTREAM_MODEL_CREATED


def test_aliases_are_per_workspace(owner, outsider, engram_server, upstream):
    model_alias_set(workspace=owner[0], alias="owners-only", target_model="gpt-4o")
    with httpx.Client(
        base_url=engram_server.url, headers={"Authorization": f"Bearer {outsider[1]}"}
    ) as other:
        ids = [m["id"] for m in other.get("/v1/models").json()["data"]]
        assert "owners-only" not in ids
        assert_envelope(other.get("/v1/models/owners-only"), 404)


def test_without_upstreams_only_engrams_own_models(http, settings, owner):
    settings.OPENAI_BASE_URL = settings.OPENAI_API_KEY = ""
    settings.ANTHROPIC_BASE_URL = settings.ANTHROPIC_API_KEY = ""
    listed = http.get("/v1/models").json()["data"]
    assert [m["id"] for m in listed] == ["local", "all-MiniLM-L6-v2"]
    # nothing to route to: the offline `local` is the default; the embedder is no chat model
    assert [m["id"] for m in listed if m.get("default")] == ["local"]
    assert listed[1]["type"] == "embedding" and listed[1]["owned_by"] == "engram"


def test_the_default_routed_model_is_marked(http, settings, owner, upstream):
    """The model the workspace's routes default to (the playground starts on it): the
    operator's ENGRAM_MEMORY_LLM_MODEL, else a small model of the configured upstream, listed
    under it when the upstream's own /models does not name it."""
    listed = http.get("/v1/models").json()["data"]
    assert [(m["id"], m["owned_by"]) for m in listed if m.get("default")] == [
        ("gpt-4o-mini", "openai")
    ]
    settings.ENGRAM_MEMORY_LLM_MODEL = "upstream-model-a"
    listed = http.get("/v1/models").json()["data"]
    assert [m["id"] for m in listed if m.get("default")] == ["upstream-model-a"]
    assert "gpt-4o-mini" not in [m["id"] for m in listed]
    # an alias to a provider that is not configured routes nowhere: the list is still served
    model_alias_set(workspace=owner[0], alias="nowhere", target_model="x", provider="anthropic")
    settings.ANTHROPIC_BASE_URL = settings.ANTHROPIC_API_KEY = ""
    settings.ENGRAM_MEMORY_LLM_MODEL = "nowhere"
    resp = http.get("/v1/models")
    assert resp.status_code == 200, resp.text
    assert not [m["id"] for m in resp.json()["data"] if m.get("default")]


def test_needs_a_workspace_key(anon_http, operator_http):
    assert_envelope(anon_http.get("/v1/models"), 401)
    assert_envelope(operator_http.get("/v1/models"), 403)


def test_anthropic_models_are_read_from_every_page(http, owner, upstream):
    """Anthropic's /v1/models comes in pages (`has_more`, then `after_id`): only the first
    was read, so the models on the later pages were missing from the list."""
    upstream.anthropic_model_pages = [["claude-a", "claude-b"], ["claude-c"]]
    ids = [m["id"] for m in http.get("/v1/models").json()["data"]]
    assert {"claude-a", "claude-b", "claude-c"} <= set(ids)
    pages = [r for r in upstream.requests if "anthropic-version" in r.headers]
    assert [r.query for r in pages] == ["limit=1000", "limit=1000&after_id=claude-b"]


def test_anthropic_models_stop_at_a_bound_of_pages(http, owner, upstream):
    """An upstream that always says has_more is not followed forever."""
    from completions.providers import anthropic

    upstream.anthropic_model_pages = [[f"claude-{i}"] for i in range(anthropic.MODEL_PAGES + 5)]
    ids = [m["id"] for m in http.get("/v1/models").json()["data"]]
    assert (
        f"claude-{anthropic.MODEL_PAGES - 1}" in ids
        and f"claude-{anthropic.MODEL_PAGES}" not in ids
    )
