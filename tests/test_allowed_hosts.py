"""ALLOWED_HOSTS on the API (config/common/hosts.py): a forged Host is Django's 400, on every
door, before the key is read.

Django checks the Host only when something calls `get_host()` (CommonMiddleware, CSRF), late in
the chain: ApiKeyMiddleware answered /v1/ before that (401 without a key) and the gateway's own
ASGI doors (chat completions, /v1/models) run no Django middleware (200 with a key).
"""

import pytest

from tests.test_errors import assert_envelope

pytestmark = pytest.mark.django_db(transaction=True)

SERVED = "engram.example.com"
FORGED = "attacker.example"
CHAT = {"model": "local", "messages": [{"role": "user", "content": "Hi"}]}


@pytest.fixture
def named_hosts(settings):
    """Production's shape: DEBUG off, the operator's host names and loopback (config/settings/
    base.py adds it, for the container's healthcheck)."""
    settings.DEBUG = False
    settings.ALLOWED_HOSTS = [SERVED, "127.0.0.1", "localhost", "[::1]"]


ROUTES = [
    ("post", "/v1/chat/completions", CHAT),  # the gateway's ASGI door
    ("get", "/v1/models", None),  # its Django handler with the async middleware only
    ("get", "/v1/memories?user_id=alice", None),  # the Django stack
    ("post", "/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": "hi"}),
]


@pytest.mark.parametrize("method, path, body", ROUTES)
@pytest.mark.parametrize("with_key", [True, False])
def test_a_forged_host_is_a_400_on_every_api_door(
    named_hosts, http, anon_http, method, path, body, with_key
):
    client = http if with_key else anon_http
    kwargs = {"json": body} if body is not None else {}
    refused = getattr(client, method)(path, headers={"host": FORGED}, **kwargs)
    error = assert_envelope(refused, 400, code="disallowed_host")
    assert error["type"] == "invalid_request_error"
    assert FORGED not in error["message"]  # nothing of the request echoed


@pytest.mark.parametrize("method, path, body", ROUTES)
def test_the_served_host_and_loopback_are_answered(named_hosts, http, method, path, body):
    kwargs = {"json": body} if body is not None else {}
    for headers in ({"host": SERVED}, {"host": f"{SERVED}:8000"}, {}):  # {}: 127.0.0.1:<port>
        answered = getattr(http, method)(path, headers=headers, **kwargs)
        assert answered.status_code == 200, (headers, answered.text)


def test_a_forged_host_is_refused_by_the_django_stack_alone(named_hosts, client, owner):
    """Django's chain without the ASGI wrapper (WSGI, the test client): the host is checked
    before the key, so no 401 says the route exists and wants one."""
    for auth in ({}, {"HTTP_AUTHORIZATION": f"Bearer {owner[1]}"}):
        refused = client.get("/v1/models", HTTP_HOST=FORGED, **auth)
        assert refused.status_code == 400, refused.content
        assert refused.json()["error"]["code"] == "disallowed_host"
        assert refused.headers.get("x-request-id")
        served = client.get("/v1/models", HTTP_HOST=SERVED, **auth)
        assert served.status_code == (200 if auth else 401)


def test_any_host_is_served_when_none_is_named(settings, http):
    """The default (`DJANGO_ALLOWED_HOSTS` unset: `*`) serves every Host, as before."""
    settings.DEBUG = False
    settings.ALLOWED_HOSTS = ["*"]
    assert http.get("/v1/models", headers={"host": FORGED}).status_code == 200


def test_a_forged_host_is_refused_unread_and_the_connection_closed(named_hosts, engram_server):
    """At the ASGI door (config.common.hosts.with_allowed_hosts): the 400 says `Connection:
    close` and the server closes the socket without reading the declared 10 MB body."""
    import socket

    host, port = engram_server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST /v1/embeddings HTTP/1.1\r\nHost: {FORGED}\r\nContent-Type: application/json"
            f"\r\nContent-Length: {10 * 1024 * 1024}\r\nx-request-id: req-forged-1\r\n\r\n"
            "{".encode()
        )
        answer = b""
        while chunk := sock.recv(65536):  # the server closes: recv returns b""
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), head
    assert b"connection: close" in head.lower()
    assert b"x-request-id: req-forged-1" in head.lower()
    assert b'"disallowed_host"' in body
