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
    assert json.loads(raw.text) == scripted and raw.parse()._request_id.startswith("req_")
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
