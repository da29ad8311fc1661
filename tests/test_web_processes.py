"""Several web processes on one port, as `make run` and docker-compose serve (config/web.py).

`python -m config.web --processes 2` on a free port against this test run's database and Redis:
the kernel spreads connections over both processes (SO_REUSEPORT). Which process answered is
read from `x-request-id` (the chat door's ids start with a random prefix per process). What must
hold on each: a revoked key is refused by every process on its next request, a streamed reply
is stored whole, and a process that dies is restarted while the other keeps serving the port.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import httpx
import psutil
import pytest
from django.conf import settings

from memory.models import Message
from tests.factories import make_workspace
from tests.processes import ROOT, service_env
from tests.stack import free_port, wait_until
from tests.upstream import Reply, openai_stream

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = "/v1/chat/completions"
PROCESSES = 2


class Web:
    def __init__(self, proc: subprocess.Popen, url: str, log: str) -> None:
        self.proc, self.url, self.log = proc, url, log

    def tail(self) -> str:
        with open(self.log, errors="replace") as file:
            return file.read()[-4000:]

    def children(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children()


@pytest.fixture(scope="module")
def web(tmp_path_factory, django_db_setup, django_db_blocker, _upstream_server):
    port = free_port()
    env = service_env(
        OPENAI_BASE_URL=_upstream_server.url + "/v1",
        OPENAI_API_KEY="sk-upstream-test",
        ENGRAM_WEB_PROCESSES=str(PROCESSES),
    )
    log = tmp_path_factory.mktemp("web") / "web.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "config.web", "--host", "127.0.0.1", "--port", str(port)]
            + ["--log-level", "warning"],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = Web(proc, f"http://127.0.0.1:{port}", str(log))
    try:
        with django_db_blocker.unblock():
            # Every process listening, not one answering: a process binds its socket after its
            # imports, and a test that kills the one that answered (xdist may run it first in
            # this module) found no other listener under a loaded suite: connection refused.
            wait_until(
                lambda: _every_process_listens(running, port) and _answers(running.url),
                timeout=120,
                what="the web processes answering",
            )
        yield running
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def upstream(_upstream_server):
    _upstream_server.reset()
    yield _upstream_server
    _upstream_server.reset()


def _every_process_listens(running: Web, port: int) -> bool:
    children = running.children()
    return len(children) == PROCESSES and all(
        any(
            c.status == psutil.CONN_LISTEN and c.laddr.port == port
            for c in child.net_connections("tcp")
        )
        for child in children
    )


def _answers(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url + "/healthz", timeout=2).status_code == 200
    return False


def process_of(response: httpx.Response) -> str:
    """Which web process answered: the per-process prefix of the chat door's request id."""
    request_id = response.headers["x-request-id"]
    assert request_id.startswith("req_"), request_id
    return request_id[4:20]


def on_every_process(send: Callable[[httpx.Client], httpx.Response]) -> dict[str, list]:
    """`send` on new connections until each process has answered at least once; the
    responses by process. The kernel picks the process by the connection's source port."""
    seen: dict[str, list] = {}
    for _ in range(200):
        with httpx.Client(timeout=60) as fresh:  # a new connection: a new source port
            response = send(fresh)
        seen.setdefault(process_of(response), []).append(response)
        if len(seen) == PROCESSES:
            return seen
    raise AssertionError(f"only {len(seen)} of {PROCESSES} processes answered 200 connections")


def chat(http: httpx.Client, url: str, key: str, **extra) -> httpx.Response:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], **extra}
    return http.post(url + CHAT, json=body, headers={"Authorization": f"Bearer {key}"})


def test_a_revoked_key_is_refused_by_every_process(web, upstream):
    operator = {"Authorization": f"Bearer {settings.ENGRAM_ADMIN_KEY}"}
    with httpx.Client(base_url=web.url, headers=operator, timeout=60) as admin:
        workspace = admin.post("/v1/workspaces", json={"name": "cores"}).json()
        key = admin.post(f"/v1/workspaces/{workspace['id']}/api_keys", json={"name": "k"}).json()
    served = on_every_process(lambda http: chat(http, web.url, key["key"]))
    for responses in served.values():  # every process now holds the key in its cache
        assert {r.status_code for r in responses} == {200}, web.tail()
    with httpx.Client(base_url=web.url, headers=operator, timeout=60) as admin:
        revoked = admin.delete(f"/v1/workspaces/{workspace['id']}/api_keys/{key['id']}")
    assert revoked.status_code == 200
    refused = on_every_process(lambda http: chat(http, web.url, key["key"]))
    for responses in refused.values():
        assert {r.status_code for r in responses} == {401}, web.tail()
        assert responses[0].json()["error"]["code"] == "invalid_api_key"


def test_a_streamed_reply_is_stored_whole_by_every_process(web, upstream):
    workspace, key = make_workspace("streams")
    pieces = [f"piece {i}; " for i in range(30)]
    for _ in range(200):
        upstream.script(Reply(stream=openai_stream(pieces), delay=0.002))
    conversations: dict[str, str] = {}

    def stream(http: httpx.Client) -> httpx.Response:
        conversation = f"c-{len(conversations)}-{time.monotonic_ns()}"
        headers = {
            "Authorization": f"Bearer {key}",
            "x-user-id": "ada",
            "x-conversation-id": conversation,
        }
        body = {"model": "gpt-4o-mini", "stream": True}
        body["messages"] = [{"role": "user", "content": "Tell me a long story."}]
        with http.stream("POST", web.url + CHAT, json=body, headers=headers) as response:
            text = "".join(response.iter_text())
        assert response.status_code == 200 and text.endswith("data: [DONE]\n\n"), text[-500:]
        conversations[conversation] = process_of(response)
        return response

    on_every_process(stream)
    assert len(set(conversations.values())) == PROCESSES
    for conversation in conversations:
        stored = Message.objects.filter(
            workspace=workspace, conversation__external_id=conversation, role="assistant"
        ).get()  # stored before the client saw [DONE]: no waiting here
        assert stored.content == "".join(pieces) and not stored.incomplete


def test_a_dead_process_is_restarted_and_the_port_stays_served(web, upstream):
    workspace, key = make_workspace("restart")
    victim, survivor = web.children()
    victim.kill()
    victim.wait(timeout=10)
    for _ in range(10):  # meanwhile every new connection goes to the process still listening
        with httpx.Client(timeout=60) as http:
            assert chat(http, web.url, key).status_code == 200, web.tail()

    def replaced() -> bool:
        pids = {child.pid for child in web.children()}
        return len(pids) == PROCESSES and victim.pid not in pids and survivor.pid in pids

    wait_until(replaced, timeout=30, what="the dead web process restarted")
    assert "web1 exited (signal 9)" in web.tail() or "web2 exited (signal 9)" in web.tail()
    served = on_every_process(lambda http: chat(http, web.url, key))  # the new one serves too
    assert all(r.status_code == 200 for responses in served.values() for r in responses)


def test_metrics_count_the_requests_of_every_process(web, upstream):
    """/metrics answered by any one process sums what all of them served."""
    workspace, key = make_workspace("metrics")
    operator = {"Authorization": f"Bearer {settings.ENGRAM_ADMIN_KEY}"}

    def served_200() -> float:
        with httpx.Client(timeout=60) as http:
            text = http.get(web.url + "/metrics", headers=operator).text
        for line in text.splitlines():
            if line.startswith('engram_requests_total{status="200"}'):
                return float(line.split()[-1])
        return 0.0

    before = served_200()
    answered = on_every_process(lambda http: chat(http, web.url, key))
    sent = sum(len(responses) for responses in answered.values())
    assert len(answered) == PROCESSES and all(
        r.status_code == 200 for responses in answered.values() for r in responses
    )
    # each scrape lands on one process or the other: each must report both processes' requests
    readings = [served_200() - before for _ in range(6)]
    assert readings == [sent] * 6, (readings, sent)


@pytest.mark.parametrize(
    "bad",
    [
        b"x-user-id: alice\x01\r\n",  # a control character in a header value
        b"x-user\x00-id: alice\r\n",  # a NUL in a header name
        b"x-user-id alice\r\n",  # a header without its colon
    ],
)
def test_what_the_http_parser_refuses_is_a_400_in_the_error_envelope(web, bad):
    """The parser's refusals never reach Django; they are answered in OpenAI's envelope all the
    same (config.common.http_protocol), not in uvicorn's plain text."""
    import json
    import socket

    host, port = web.url.removeprefix("http://").split(":")
    body = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}'
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: engram\r\ncontent-type: application/json\r\n"
        + bad
        + b"content-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):  # the server closes the connection after it
            received += chunk
    head, _, payload = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), received
    assert b"content-type: application/json" in head.lower()
    error = json.loads(payload)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_http")
