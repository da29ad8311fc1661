"""The shared mechanisms: admin saves through services (routes and keys change at once), the
one retry policy, the one background-task holder, the one tokenizer."""

from __future__ import annotations

import asyncio
import logging
import re

import pytest

from accounts.authentication import resolve_sync
from completions import routing
from completions.models import ModelAlias
from completions.services import model_alias_set

# --- the admin writes through the services --------------------------------------------------


def test_an_alias_saved_in_the_admin_routes_at_once(owner, admin_client):
    workspace = owner[0]
    assert routing.resolve_sync(workspace.id, "fast").model == "fast"  # cached now

    added = admin_client.post(
        "/admin/completions/modelalias/add/",
        {"workspace": workspace.id, "alias": "fast", "target_model": "gpt-4o-mini", "provider": ""},
    )
    assert added.status_code == 302
    assert routing.resolve_sync(workspace.id, "fast").model == "gpt-4o-mini"

    alias = ModelAlias.objects.get(workspace=workspace, alias="fast")
    changed = admin_client.post(
        f"/admin/completions/modelalias/{alias.id}/change/",
        {"target_model": "gpt-4o", "provider": ""},
    )
    assert changed.status_code == 302
    assert routing.resolve_sync(workspace.id, "fast").model == "gpt-4o"

    deleted = admin_client.post(
        f"/admin/completions/modelalias/{alias.id}/delete/", {"post": "yes"}
    )
    assert deleted.status_code == 302 and not ModelAlias.objects.filter(id=alias.id).exists()
    assert routing.resolve_sync(workspace.id, "fast").model == "fast"


def test_the_alias_service_invalidates_this_process_at_once(owner):
    workspace = owner[0]
    assert routing.resolve_sync(workspace.id, "smart").model == "smart"
    model_alias_set(workspace=workspace, alias="smart", target_model="gpt-4o")
    assert routing.resolve_sync(workspace.id, "smart").model == "gpt-4o"


def test_a_key_revoked_in_the_admin_is_refused_at_once(owner, admin_client):
    workspace, raw = owner
    principal = resolve_sync(raw)
    assert principal is not None and principal.workspace == workspace  # cached now
    resp = admin_client.post(
        "/admin/accounts/apikey/",
        {"action": "revoke", "_selected_action": [principal.key_id]},
    )
    assert resp.status_code == 302
    assert resolve_sync(raw) is None


def test_a_key_added_in_the_admin_is_shown_once_and_works(owner, admin_client):
    from accounts.models import ApiKey

    form = admin_client.get("/admin/accounts/apikey/add/").content.decode()
    token = re.search(r'name="form_token" value="([^"]+)"', form)
    assert token is not None  # the form's one-time token: a form sent again makes no second key
    resp = admin_client.post(
        "/admin/accounts/apikey/add/",
        {"workspace": owner[0].id, "name": "from-admin", "form_token": token.group(1)},
    )
    # shown in the answer's body only (never a message, which Django keeps in a cookie)
    shown = re.search(r'<code id="new-api-key"[^>]*>([^<]+)</code>', resp.content.decode())
    assert shown is not None
    raw = shown.group(1)
    key = ApiKey.objects.get(name="from-admin")
    assert raw.startswith(key.prefix)
    principal = resolve_sync(raw)
    assert principal is not None and principal.key_id == key.id


# --- the one retry policy ---------------------------------------------------------------------


def test_one_retry_policy_for_every_upstream_call(settings):
    from completions.providers.upstream_errors import retry_wait

    settings.ENGRAM_UPSTREAM_RETRIES = 2
    settings.ENGRAM_UPSTREAM_RETRY_BACKOFF = 0.5
    settings.ENGRAM_UPSTREAM_RETRY_MAX_WAIT = 20.0
    assert retry_wait(0, retryable=False) is None
    assert 0.25 <= retry_wait(0, retryable=True) <= 0.5
    assert 0.5 <= retry_wait(1, retryable=True) <= 1.0
    assert retry_wait(2, retryable=True) is None  # the budget is spent
    assert retry_wait(0, retryable=True, retry_after="3") == 3.0
    assert retry_wait(0, retryable=True, retry_after="60") is None  # asks for too long
    assert 0.25 <= retry_wait(0, retryable=True, retry_after="soon") <= 0.5


# --- the one background-task holder -----------------------------------------------------------


def test_spawn_holds_the_task_and_logs_its_failure(caplog):
    from config.common import background

    async def fails():
        raise ValueError("boom")

    async def scenario():
        task = background.spawn(fails(), name="doomed")
        assert task in background._running
        await asyncio.wait({task})
        await asyncio.sleep(0)
        assert task not in background._running

    with caplog.at_level(logging.ERROR, logger="engram.background"):
        asyncio.run(scenario())
    assert "background task doomed failed" in caplog.text


def test_wait_for_waits_for_the_holders_of_a_key():
    from config.common import background

    order = []

    async def holder():
        with background.holding(("turn", "u")):
            await asyncio.sleep(0.05)
            order.append("finished")

    async def scenario():
        background.spawn(holder(), name="holder")
        await asyncio.sleep(0)
        await background.wait_for(("turn", "other"), timeout=1)  # nobody holds it
        order.append("other")
        await background.wait_for(("turn", "u"), timeout=1)
        order.append("next")

    asyncio.run(scenario())
    assert order == ["other", "finished", "next"]


# --- the one tokenizer ------------------------------------------------------------------------


@pytest.mark.parametrize("module", ["memory.text", "memory.knowledge.chunking"])
def test_one_tokenizer_loaded_once(module):
    import importlib

    from config.common import tokens

    counter = importlib.import_module(module)
    count = getattr(counter, "count_text", None) or counter.count_tokens
    assert count is tokens.count
    assert tokens.encoding() is tokens.encoding()
    assert tokens.count("Hello, world!") == 4
    assert "".join(tokens.windows("one two three four", 2)) == "one two three four"
    assert tokens.tail("one two three four", 1) == " four"


def test_token_counts_kept_for_recent_texts_match_the_encoder():
    """Counts served from the cache of recent texts are the encoder's, short texts and long
    (past the cached size) alike, and a text counted twice is encoded once."""
    from config.common import tokens

    enc = tokens.encoding()
    short = "Paris is the capital of France. " * 3
    long = "word " * (tokens.CACHED_TEXT_CHARS // 4)
    assert len(long) > tokens.CACHED_TEXT_CHARS
    for text in (short, long, short + "<|endoftext|>"):
        assert tokens.count(text) == len(enc.encode(text, disallowed_special=()))
    hits = tokens._count_cached.cache_info().hits
    assert tokens.count(short) == tokens.count(short)
    assert tokens._count_cached.cache_info().hits == hits + 2
