"""Both doors to /v1/chat/completions behave the same: the lean ASGI app (default) and the
Django view (ENGRAM_GATEWAY_FAST_PATH=false)."""

import json
import socket
import time

import openai
import pytest

from tests.completions_support import wait_for
from tests.test_errors import assert_envelope
from tests.upstream import Reply, openai_completion, openai_stream

URL = "/v1/chat/completions"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}


@pytest.fixture(params=[True, False], ids=["asgi", "django"])
def door(request, settings):
    settings.ENGRAM_GATEWAY_FAST_PATH = request.param
    return request.param


def test_answers_and_streams_alike(door, engram_server, owner, upstream):
    sdk = openai.OpenAI(base_url=engram_server.url + "/v1", api_key=owner[1], max_retries=0)
    scripted = openai_completion("same")
    upstream.script(Reply(json=scripted))
    raw = sdk.chat.completions.with_raw_response.create(**BODY)
    answer = json.loads(raw.text)
    assert answer.pop("engram")["request_id"] == raw.headers["x-request-id"]
    assert answer == scripted and raw.parse()._request_id.startswith("req_")
    assert int(raw.headers["x-engram-upstream-ms"]) >= 0
    upstream.script(Reply(stream=openai_stream(["a", "b"])))
    chunks = list(
        sdk.chat.completions.create(**BODY, stream=True, stream_options={"include_usage": True})
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "ab"
    assert chunks[-1].usage.total_tokens == 7


def test_denials_alike(door, http, anon_http, upstream, settings):
    assert_envelope(anon_http.post(URL, json=BODY), 401, code="invalid_api_key")
    assert_envelope(http.get(URL), 405, code="method_not_allowed")
    resp = http.post(URL, content=b"{oops", headers={"content-type": "application/json"})
    assert_envelope(resp, 400, code="invalid_json")
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    assert_envelope(http.post(URL, json={**BODY, "pad": "x" * 5000}), 413)
    assert (
        http.post(URL, json=BODY, headers={"x-request-id": "trace-1"}).headers["x-request-id"]
        == "trace-1"
    )


def test_disconnect_closes_upstream_alike(door, engram_server, owner, upstream):
    upstream.script(Reply(stream=openai_stream([f"w{i} " for i in range(100)]), delay=0.1))
    host, port = engram_server.url.removeprefix("http://").split(":")
    body = json.dumps({**BODY, "stream": True}).encode()
    sock = socket.create_connection((host, int(port)))
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {owner[1]}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    received = b""
    while received.count(b"data: ") < 3:
        received += sock.recv(65536)
    sock.close()
    gone = time.monotonic()
    wait_for(lambda: upstream.disconnects, timeout=3)
    assert upstream.disconnects[0] - gone < 1.0


def test_non_stream_disconnect_closes_upstream_alike(door, engram_server, owner, upstream):
    import httpx

    upstream.script(Reply(json=openai_completion(), delay=10))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            engram_server.url + URL,
            json=BODY,
            headers={"Authorization": f"Bearer {owner[1]}"},
            timeout=httpx.Timeout(0.5),
        )
    gone = time.monotonic()
    wait_for(lambda: upstream.disconnects, timeout=3)
    assert upstream.disconnects[0] - gone < 1.0


def test_revoked_key_is_refused_at_once(door, http, owner, upstream, settings):
    from accounts.services import api_key_revoke

    assert http.post(URL, json=BODY).status_code == 200
    for _ in range(3):  # busy key: refreshed ahead of expiry, never waiting on the database
        assert http.post(URL, json=BODY).status_code == 200
    key = owner[0].api_keys.get()
    api_key_revoke(workspace=owner[0], key_id=key.id)
    assert_envelope(http.post(URL, json=BODY), 401, code="invalid_api_key")


def test_a_cold_key_is_looked_up_once_for_concurrent_requests(
    engram_server, owner, upstream, monkeypatch
):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    from django.db.backends.utils import CursorWrapper

    from accounts.authentication import key_cache

    lookups = []
    real_execute = CursorWrapper.execute

    def spy(self, sql, params=None):
        if "accounts_apikey" in sql and "SELECT" in sql:
            lookups.append(threading.current_thread().name)
            time.sleep(0.3)  # a slow database: every request arrives during the lookup
        return real_execute(self, sql, params)

    upstream.script(*[Reply(json=openai_completion(), delay=0.2)] * 8)
    key_cache.clear()
    monkeypatch.setattr(CursorWrapper, "execute", spy)

    def ask(_):
        return httpx.post(
            engram_server.url + URL,
            json=BODY,
            headers={"Authorization": f"Bearer {owner[1]}"},
            timeout=10,
        ).status_code

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(ask, range(8))) == [200] * 8
    assert len(lookups) == 1
