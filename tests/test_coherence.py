"""Caches coherent across processes (config.common.coherence), seen from one process.

"Another process" is played by writing the database directly (which voids nothing here) and
then publishing as that process's commit would; tests/test_production_shape.py runs real ones.
"""

import asyncio
import socket
import threading
import time

import pytest
import redis
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


def registered(monkeypatch, name: str, clear) -> None:
    """`coherence.register(name, clear)`, undone after the test."""
    monkeypatch.setattr(coherence, "_clearers", dict(coherence._clearers))
    monkeypatch.setattr(coherence, "_registered", coherence._registered)
    coherence.register(name, clear)


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


@pytest.mark.parametrize("fast_path", [True, False], ids=["asgi", "django"])
def test_a_publish_lost_in_an_outage_this_process_never_saw_is_sent_when_redis_answers(
    http, owner, upstream, settings, fast_path
):
    """Redis restarted (with its append-only file: the old token came back) while another
    process revoked a key: that process's publish failed, and a process with no request during
    the outage still holds the token it saw. The publisher sends it again once Redis answers."""
    settings.ENGRAM_GATEWAY_FAST_PATH = fast_path
    real = settings.REDIS_URL
    assert ask(http).status_code == 200  # cached here, the token seen
    revoke_elsewhere(owner[1])
    settings.REDIS_URL = dead_redis_url()
    coherence._publish_now("keys")  # the revoking process's commit, during the restart
    settings.REDIS_URL = real  # back, with the token it had: nothing says "changed"
    assert ask(http).status_code == 401
    assert not coherence._owed


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


def test_an_extraction_job_checks_the_routes_once_and_sees_a_change_made_elsewhere(
    owner, upstream, monkeypatch
):
    """runs_offline (asked by every extraction job) takes one snapshot for the default model
    and its route: one coherence check, not one for each (a Redis round trip, ~15 µs of the
    worker's CPU a job), and a route another process changed is still seen once published."""
    from completions.services import model_alias_set
    from memory.background.extraction.runner import runs_offline

    checks = []
    check = coherence.check_sync
    monkeypatch.setattr(coherence, "check_sync", lambda: checks.append(1) or check())
    model_alias_set(workspace=owner[0], alias="gpt-4o-mini", target_model="m", provider="local")
    assert runs_offline(owner[0]) is True
    assert len(checks) == 1
    ModelAlias.objects.filter(workspace=owner[0], alias="gpt-4o-mini").update(provider="")
    assert runs_offline(owner[0]) is True  # cached, unpublished
    coherence._publish_now("routing")
    assert runs_offline(owner[0]) is False  # the OpenAI-compatible upstream now
    assert len(checks) == 3


BUSY_SCRIPT = """
local start = redis.call('TIME')
local from_us = start[1] * 1000000 + start[2]
while true do
  local now = redis.call('TIME')
  if now[1] * 1000000 + now[2] - from_us >= tonumber(ARGV[1]) then return 1 end
end
"""


def test_a_slow_redis_is_waited_for_off_the_event_loop(db, settings):
    """A reply that takes longer than INLINE_WAIT is read on a thread: the check still sees
    the change, and the event loop runs other tasks meanwhile."""
    from config.common import inline_redis

    coherence.check_sync()
    coherence._publish_now("keys")
    other = redis.Redis.from_url(settings.REDIS_URL)

    async def scenario():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        running = asyncio.ensure_future(ticker())
        await asyncio.sleep(0)
        # Redis busy for 0.2 s (it runs one script at a time): the MGET waits behind it, within
        # the check's TIMEOUT_SECONDS (0.25 s).
        sleeper = threading.Thread(target=other.eval, args=(BUSY_SCRIPT, 0, 200_000))
        sleeper.start()
        await asyncio.sleep(0.03)
        before, started = ticks, time.monotonic()
        fresh = await coherence.check_async()
        during, waited = ticks - before, time.monotonic() - started
        running.cancel()
        sleeper.join()
        return fresh, during, waited

    # On a loaded machine the thread may reach Redis only after the check has run; such a try
    # proves nothing, so it is made again (the check must have waited for the script).
    for _attempt in range(5):
        fresh, ticks_during_check, waited = asyncio.run(scenario())
        assert fresh is True
        if waited >= 0.1:
            break
    assert waited >= 0.1, f"the busy script never held the check up ({waited:.3f} s)"
    # the loop was not blocked while the check waited
    assert ticks_during_check >= 5, (ticks_during_check, waited)
    assert inline_redis.pool(settings.REDIS_URL).open <= inline_redis.MAX_CONNECTIONS


def test_the_wire_selects_the_database_of_redis_url(db, settings):
    """A REDIS_URL naming another database (and a password, when set) is read where written."""
    settings.REDIS_URL = settings.REDIS_URL.rsplit("/", 1)[0] + "/5"
    coherence._publish_now("keys")
    written = redis.Redis.from_url(settings.REDIS_URL).get(coherence.PREFIX + "keys")
    assert written is not None
    pool = coherence._pool()

    async def read():
        return await pool.call("MGET", coherence.PREFIX + "keys", timeout=1)

    assert asyncio.run(read()) == [written]
    coherence._publish_now("keys")
    assert asyncio.run(read()) != [written]


def test_checks_of_one_loop_turn_share_a_read_and_a_later_turn_reads_again(db, monkeypatch):
    """A burst of requests starting in one turn costs one MGET; a check in a later turn (which
    may have arrived after a change) reads again and sees the change."""
    cleared = []
    registered(monkeypatch, "test-shared", lambda: cleared.append(1))
    pool = coherence._pool()
    reads = []
    real_call = pool.call_many

    async def counted(commands, **kwargs):
        reads.extend(commands)
        return await real_call(commands, **kwargs)

    monkeypatch.setattr(pool, "call_many", counted)

    async def scenario():
        await coherence.check_async()  # learn the current tokens
        before = len(reads)
        assert all(await asyncio.gather(*(coherence.check_async() for _ in range(10))))
        burst = len(reads) - before
        cleared.clear()
        coherence._publish_now("test-shared")
        assert await coherence.check_async()
        return burst, len(reads) - before - burst

    burst, later = asyncio.run(scenario())
    assert burst == 1
    assert later == 1 and cleared == [1]


def test_a_name_registered_after_the_first_check_is_checked_too(db, monkeypatch):
    """The names are read once per registration, not per check: one registered after checks
    began (a module imported late) is in every later check's read, and its change clears it."""
    assert coherence.check_sync()  # the names so far, read
    cleared = []
    registered(monkeypatch, "test-late", lambda: cleared.append(1))
    assert coherence.check_sync()  # learns test-late's token
    cleared.clear()
    coherence._publish_now("test-late")
    assert coherence.check_sync()
    assert cleared == [1]
