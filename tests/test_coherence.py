"""Caches coherent across processes (config.common.coherence), seen from one process.

"Another process" is played by writing the database directly (which voids nothing here) and
then publishing as that process's commit would; tests/test_production_shape.py runs real ones.
"""

import asyncio
import socket

import pytest
from django.utils import timezone

from accounts.keys import key_prefix
from accounts.models import ApiKey
from completions.models import ModelAlias
from config.common import coherence

URL = "/v1/chat/completions"


def ask(http, model="gpt-4o-mini"):
    return http.post(URL, json={"model": model, "messages": [{"role": "user", "content": "Hi"}]})


def revoke_elsewhere(raw_key: str) -> None:
    """The row changes as another process's api_key_revoke would change it; nothing here hears."""
    ApiKey.objects.filter(prefix=key_prefix(raw_key)).update(revoked_at=timezone.now())


def dead_redis_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"redis://127.0.0.1:{sock.getsockname()[1]}/0"


def test_a_revocation_published_elsewhere_is_refused_on_the_next_request(http, owner, upstream):
    assert ask(http).status_code == 200  # the key is now cached here
    revoke_elsewhere(owner[1])
    assert ask(http).status_code == 200  # unpublished: this process still trusts its cache
    coherence._publish_now("keys")  # what the other process's commit does
    denied = ask(http)
    assert denied.status_code == 401 and denied.json()["error"]["code"] == "invalid_api_key"


def test_a_revocation_in_this_process_is_refused_at_once(http, owner, upstream):
    from accounts.services import api_key_revoke

    assert ask(http).status_code == 200
    api_key_revoke(workspace=owner[0], key_id=ApiKey.objects.get(prefix=key_prefix(owner[1])).id)
    assert ask(http).status_code == 401


def test_deleting_a_workspace_stops_its_keys_at_once(http, owner, upstream):
    from accounts.services import workspace_delete

    assert ask(http).status_code == 200
    workspace_delete(workspace=owner[0])
    assert ask(http).status_code == 401


@pytest.mark.parametrize("fast_path", [True, False], ids=["asgi", "django"])
def test_redis_unreachable_means_the_database_not_a_5xx(http, owner, upstream, settings, fast_path):
    settings.ENGRAM_GATEWAY_FAST_PATH = fast_path
    assert ask(http).status_code == 200  # cached while Redis answered
    settings.REDIS_URL = dead_redis_url()
    assert ask(http).status_code == 200  # served, from the database
    revoke_elsewhere(owner[1])  # and no publish can reach anyone
    assert ask(http).status_code == 401
    assert http.get("/v1/models").status_code == 401  # the Django door too


def test_after_an_outage_what_was_cached_before_is_dropped(http, owner, upstream, settings):
    real = settings.REDIS_URL
    assert ask(http).status_code == 200
    settings.REDIS_URL = dead_redis_url()
    assert ask(http).status_code == 200
    revoke_elsewhere(owner[1])  # its publish was lost in the outage
    settings.REDIS_URL = real
    coherence._state["down_until"] = 0.0  # the retry pause is over
    assert ask(http).status_code == 401


def test_a_routing_change_published_elsewhere_routes_the_next_request(http, owner, upstream):
    from completions.services import model_alias_set

    model_alias_set(workspace=owner[0], alias="fast", target_model="gpt-4o-mini")
    assert ask(http, "fast").status_code == 200
    assert upstream.last.body["model"] == "gpt-4o-mini"
    ModelAlias.objects.filter(workspace=owner[0], alias="fast").update(target_model="gpt-4.1")
    assert ask(http, "fast").status_code == 200
    assert upstream.last.body["model"] == "gpt-4o-mini"  # cached, unpublished
    coherence._publish_now("routing")
    assert ask(http, "fast").status_code == 200
    assert upstream.last.body["model"] == "gpt-4.1"


def test_workers_check_before_using_a_snapshot(owner):
    from completions import routing
    from completions.services import model_alias_set

    model_alias_set(workspace=owner[0], alias="fast", target_model="one")
    assert routing.snapshot_sync(owner[0].id).aliases["fast"].model == "one"
    ModelAlias.objects.filter(workspace=owner[0], alias="fast").update(target_model="two")
    assert routing.snapshot_sync(owner[0].id).aliases["fast"].model == "one"
    coherence._publish_now("routing")
    assert routing.snapshot_sync(owner[0].id).aliases["fast"].model == "two"


def test_concurrent_checks_share_reads_that_start_after_they_arrive(db):
    """Every caller's answer comes from an MGET sent after it called; callers that arrive
    together share one."""

    async def scenario():
        reader = coherence._reader()
        real_mget = reader.wire.mget
        reads = 0
        arrived = 0

        async def marked_mget(keys, after=None):
            nonlocal reads
            reads += 1
            at_start = arrived
            await real_mget(keys, after)
            await asyncio.sleep(0.01)  # a slow Redis: many callers arrive during each read
            return [at_start]  # which callers had arrived when this read began

        reader.wire.mget = marked_mget  # type: ignore[method-assign]

        async def caller():
            nonlocal arrived
            arrived += 1
            me = arrived
            (at_start,) = await reader.tokens(["keys"])
            assert at_start >= me

        tasks = []
        for _ in range(5):  # five groups of ten callers, each group arriving together
            tasks += [asyncio.ensure_future(caller()) for _ in range(10)]
            await asyncio.sleep(0.002)  # while the group's read is still in flight
        await asyncio.gather(*tasks)
        return reads, arrived

    reads, callers = asyncio.run(scenario())
    assert callers == 50 and reads == 5


def test_the_wire_selects_the_database_of_redis_url(db, settings):
    """A REDIS_URL naming another database (and a password, when set) is read where written."""
    settings.REDIS_URL = settings.REDIS_URL.rsplit("/", 1)[0] + "/5"
    coherence._publish_now("keys")
    written = coherence._sync_client().get(coherence.PREFIX + "keys")

    async def read():
        return await coherence._reader().tokens(["keys"])

    assert asyncio.run(read()) == [written]
    coherence._publish_now("keys")
    assert asyncio.run(read()) != [written]
