"""Faults, over HTTP with real processes: Redis stopped, a worker killed, everything killed.

The database is the source of truth for background work: what the broker lost, the sweep
(`memory.sweep_jobs`, sent by Celery beat) sends again. tests/stack.py runs the processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest

from config.env import BASE_DIR
from memory.models import Memory, MemoryEvent, Message, ProcessingJob
from tests.stack import Redis, Stack, TcpProxy, wait_until
from tests.upstream import Reply, openai_completion, openai_stream

FACTS = {
    "I live in Lisbon.": "User lives in Lisbon.",
    "I love jazz.": "User loves jazz.",
    "I work at Initech.": "User works at Initech.",
    "I have a dog named Rex.": "User has a dog named Rex.",
}


@contextlib.contextmanager
def running_stack(
    tmp_path,
    *,
    host: str | None = None,
    port: int | None = None,
    append_only: bool = False,
    **env: str,
):
    """A Stack on the test database (at `host:port` instead, when given) and a Redis of its
    own (keeping its data across a kill when `append_only`), stopped at the end."""
    from django.db import connection

    db = connection.settings_dict
    where = f"{host or db['HOST']}:{port or db['PORT']}"
    redis = Redis(tmp_path, append_only=append_only).start()
    stack = Stack(
        database_url=f"postgres://{db['USER']}@{where}/{db['NAME']}",
        redis=redis,
        workdir=tmp_path,
        ENGRAM_MEMORY_EXTRACTION="offline",
        **env,
    )
    try:
        yield stack
    finally:
        stack.stop()
        redis.stop()


@pytest.fixture
def stack(transactional_db, tmp_path):
    with running_stack(tmp_path) as stack:
        yield stack


@pytest.fixture
def proxied(transactional_db, tmp_path):
    """A stack whose database is reached through a TcpProxy the test can cut: (stack, proxy)."""
    from django.db import connection

    proxy = TcpProxy(int(connection.settings_dict["PORT"])).start()
    try:
        with running_stack(
            tmp_path, host="127.0.0.1", port=proxy.port, ENGRAM_DB_POOL_TIMEOUT="2"
        ) as stack:
            yield stack, proxy
    finally:
        proxy.cut()


def client(stack: Stack, key: str, **headers: str) -> httpx.Client:
    return httpx.Client(
        base_url=stack.web_url,
        headers={"Authorization": f"Bearer {key}", **headers},
        timeout=30,
    )


def chat(http: httpx.Client, text: str) -> httpx.Response:
    return http.post(
        "/v1/chat/completions",
        json={"model": "local", "messages": [{"role": "user", "content": text}]},
    )


def jobs(conversation: str):
    return ProcessingJob.objects.filter(conversation__external_id=conversation, kind="extract")


def test_turns_taken_while_redis_is_down_are_extracted_once_it_returns(stack, owner):
    stack.web()
    stack.worker()
    stack.beat()
    stack.redis.stop()
    with client(stack, owner[1], **{"x-user-id": "ana", "x-conversation-id": "outage"}) as http:
        for text in FACTS:
            response = chat(http, text)
            assert response.status_code == 200, response.text
    stored = Message.objects.filter(conversation__external_id="outage")
    wait_until(
        lambda: stored.filter(role="assistant").count() == 4, timeout=30, what="replies stored"
    )
    assert sorted(stored.filter(role="user").values_list("content", flat=True)) == sorted(FACTS)
    with client(stack, owner[1]) as http:  # an import stores its messages too: 201
        response = http.post(
            "/v1/conversations/outage-import/messages",
            json={"user_id": "ana", "messages": [{"role": "user", "content": "I love tea."}]},
        )
    assert response.status_code == 201, response.text
    wait_until(lambda: jobs("outage").exists(), timeout=30, what="extraction jobs recorded")
    time.sleep(3)  # longer than the grace: the sweep has nothing to send through a dead Redis
    stuck = ProcessingJob.objects.values_list("status", "attempts")
    assert set(stuck) == {("pending", 0)} and len(stuck) >= 2
    assert not Memory.objects.exists()

    stack.redis.start()
    wait_until(
        lambda: (
            set(Memory.objects.filter(user_id="ana").values_list("text", flat=True))
            == {*FACTS.values(), "User loves tea."}
        ),
        timeout=60,
        what="the five facts extracted after Redis returned",
    )
    wait_until(
        lambda: set(jobs("outage").values_list("status", flat=True)) == {"done"},
        timeout=30,
        what="every job done",
    )
    assert Memory.objects.count() == 5
    assert jobs("outage-import").get().status == "done"


def test_turns_taken_while_redis_hangs_are_answered_and_extracted_once_it_resumes(stack, owner):
    """A Redis that stops answering without closing its connections (paused, a failover, a
    partition): a turn's job send must not wait on it forever, nor hold up the next turns."""
    stack.web()
    stack.worker()
    stack.beat()
    os.kill(stack.redis.proc.pid, signal.SIGSTOP)
    try:
        with client(stack, owner[1], **{"x-user-id": "ana", "x-conversation-id": "hung"}) as http:
            for text in FACTS:
                response = chat(http, text)
                assert response.status_code == 200, response.text
        stored = Message.objects.filter(conversation__external_id="hung")
        wait_until(
            lambda: stored.filter(role="assistant").count() == 4, timeout=30, what="replies stored"
        )
    finally:
        os.kill(stack.redis.proc.pid, signal.SIGCONT)
    wait_until(
        lambda: (
            set(Memory.objects.filter(user_id="ana").values_list("text", flat=True))
            == set(FACTS.values())
        ),
        timeout=90,
        what="the four facts extracted after Redis resumed",
    )
    assert Memory.objects.count() == 4


def test_documents_uploaded_while_redis_hangs_are_accepted_and_ingested_once_it_resumes(
    stack, owner
):
    """Redis paused (SIGSTOP) through an upload: the upload is accepted (its send fails in
    BROKER_SOCKET_TIMEOUT), the next ones too, and the sweep sends each once Redis answers;
    every document ends ready with all its chunks, none twice."""
    from memory.models import Chunk, Document

    stack.web()
    stack.worker()
    stack.beat()
    sections = [f"## Part {i}\n\n" + " ".join(FACTS) + f" Part {i} is here." for i in range(40)]
    with client(stack, owner[1]) as http:
        collection = http.post("/v1/collections", json={"name": "Hung"}).json()
        url = f"/v1/collections/{collection['id']}/documents"
        os.kill(stack.redis.proc.pid, signal.SIGSTOP)
        try:
            for n in range(3):
                raw = "\n\n".join(sections[: 20 + n]).encode()
                response = http.post(url, files={"file": (f"d{n}.md", raw, "text/markdown")})
                assert response.status_code == 202, response.text
            assert http.get(url).status_code == 200
            assert set(Document.objects.values_list("status", flat=True)) == {"queued"}
        finally:
            os.kill(stack.redis.proc.pid, signal.SIGCONT)
    wait_until(
        lambda: Document.objects.filter(status="ready").count() == 3,
        timeout=120,
        what="the three documents ready after Redis resumed",
    )
    for document in Document.objects.all():
        chunks = Chunk.objects.filter(document=document)
        assert chunks.count() == document.chunks_total == document.chunks_done > 0
        assert not chunks.filter(embedding__isnull=True).exists()


IMPORT_FACTS = [
    "I live in Lisbon.",
    "I love jazz.",
    "I work at Initech.",
    "I have a dog named Rex.",
    "I play the violin.",
    "My favorite food is ramen.",
]


def test_a_database_restart_answers_503_while_down_and_nothing_fails_after(proxied, owner):
    stack, proxy = proxied
    stack.web()
    headers = {"x-user-id": "ana", "x-conversation-id": "restart"}
    with client(stack, owner[1], **headers) as http:
        assert [chat(http, f"Warm-up {i}.").status_code for i in range(3)] == [200] * 3
        # Requests side by side: the pool grows, and after them holds many idle connections.
        with ThreadPoolExecutor(16) as side_by_side:
            users = list(side_by_side.map(lambda _: http.get("/v1/users").status_code, range(160)))
        assert users == [200] * 160
        assert proxy.forwarded() >= 10

        # A restart between two turns: every connection the web process holds is dead; the next
        # turn must not be the one that finds out (it answered 500 before; then 503 while the
        # pool waited 1 s, 2 s... between two dead connections it checked).
        proxy.cut()
        proxy.start()
        statuses = [chat(http, f"After the restart {i}.").status_code for i in range(5)]
        assert statuses == [200] * 5
        assert http.get("/v1/users").status_code == 200

        # Down: both doors answer a retryable 503 in the envelope, not a 500.
        proxy.cut()
        for response in (chat(http, "While it is down."), http.get("/v1/users")):
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == "1"
            error = response.json()["error"]
            assert error["code"] == "database_unavailable"
            assert error["type"] == "service_unavailable"
            assert "127.0.0.1" not in error["message"]  # the driver's text stays in the log

        proxy.start()
        statuses = [chat(http, f"Back {i}.").status_code for i in range(5)]
        assert statuses == [200] * 5
        assert http.get("/v1/users").status_code == 200
    stored = Message.objects.filter(conversation__external_id="restart", role="user")
    assert stored.count() == 13  # every turn answered 200, none of the refused one


def test_a_turn_waiting_through_a_database_restart_is_answered_once_it_is_back(
    transactional_db, tmp_path, owner
):
    """A turn that came while the database was down, still waiting for a connection when the
    pool gave its tries up (reconnect_timeout), is answered once the database is back: it
    waited out its ENGRAM_DB_POOL_TIMEOUT and was answered 503 with the database up."""
    from django.db import connection

    proxy = TcpProxy(int(connection.settings_dict["PORT"])).start()
    try:
        with running_stack(
            tmp_path, host="127.0.0.1", port=proxy.port, ENGRAM_DB_POOL_TIMEOUT="20"
        ) as stack:
            stack.web()
            headers = {"x-user-id": "ana", "x-conversation-id": "waiting"}
            with client(stack, owner[1], **headers) as http:
                assert chat(http, "Before.").status_code == 200
                proxy.cut()
                answered: list[httpx.Response] = []
                turn = threading.Thread(target=lambda: answered.append(chat(http, "Now.")))
                turn.start()
                wait_until(
                    lambda: "reconnection attempt in pool" in stack.log("web"),
                    timeout=30,
                    what="the pool giving its tries up",
                )
                proxy.start()
                turn.join(timeout=60)
            assert [r.status_code for r in answered] == [200], answered[0].text
    finally:
        proxy.cut()
    stored = Message.objects.filter(conversation__external_id="waiting", role="user")
    assert sorted(stored.values_list("content", flat=True)) == ["Before.", "Now."]


def import_messages(count: int) -> list[dict]:
    messages = []
    for i in range(count // 2):
        fact = IMPORT_FACTS[i // 10] if i % 10 == 0 and i // 10 < len(IMPORT_FACTS) else ""
        messages.append({"role": "user", "content": fact or f"What happened next in part {i}?"})
        messages.append({"role": "assistant", "content": f"Part {i} continues here."})
    return messages


def test_a_worker_killed_mid_import_is_replaced_and_the_job_completes_once(stack, owner):
    stack.web()
    worker = stack.worker()
    stack.beat()
    with client(stack, owner[1]) as http:
        response = http.post(
            "/v1/conversations/imported/messages",
            json={"user_id": "ivy", "messages": import_messages(200)},
        )
    assert response.status_code == 201, response.text
    job = jobs("imported").get()
    wait_until(
        lambda: jobs("imported").filter(status="running").exists(),
        timeout=60,
        what="the import's job claimed",
        every=0.05,
    )
    Stack.kill(worker)
    job.refresh_from_db()
    assert (job.status, job.attempts) == ("running", 1)  # stranded with its dead worker

    stack.worker()
    wait_until(
        lambda: jobs("imported").filter(status="done").exists(),
        timeout=60,
        what="the job done within a minute of the restart",
    )
    job.refresh_from_db()
    assert job.attempts == 2 and job.error == ""
    texts = list(Memory.objects.filter(user_id="ivy").values_list("text", flat=True))
    assert len(texts) == len(set(texts)) >= len(IMPORT_FACTS) - 1  # no memory twice
    assert MemoryEvent.objects.filter(event="ADD").count() == len(texts)
    # every stated fact is the source of a memory; no filler is
    sources = set(
        Memory.sources.through.objects.values_list("message__content", flat=True).distinct()
    )
    assert sources == set(IMPORT_FACTS)
    embedded = Message.objects.filter(conversation__external_id="imported", embedding__isnull=False)
    assert embedded.count() == 200


def test_every_turn_answered_200_is_stored_when_web_and_worker_are_killed(stack, owner):
    web = stack.web()
    stack.worker(group=web.pid)  # one process group: the SIGKILL takes both at once
    answered: list[tuple[str, str]] = []
    other: list[object] = []  # what came back that was not a 200: shown if traffic stalls
    stop = threading.Event()

    def talk(conversation: str) -> None:
        headers = {"x-user-id": "kai", "x-conversation-id": conversation}
        with client(stack, owner[1], **headers) as http:
            for i in range(1000):
                if stop.is_set():
                    return
                text = f"Turn {i} of {conversation}: I love topic {conversation}-{i}."
                try:
                    response = chat(http, text)
                except httpx.HTTPError as exc:
                    other.append(exc)
                    return  # the server died under this request
                if response.status_code == 200:
                    answered.append((conversation, text))
                else:
                    other.append(response.text[:300])

    talkers = [threading.Thread(target=talk, args=(f"kill-{n}",)) for n in range(3)]
    for thread in talkers:
        thread.start()
    try:
        wait_until(lambda: len(answered) >= 12, timeout=60, what="traffic flowing")
    finally:
        stop.set()
    assert not other, other[:3]
    Stack.kill(web)
    stop.set()
    for thread in talkers:
        thread.join(timeout=30)

    stored = set(
        Message.objects.filter(role="user").values_list("conversation__external_id", "content")
    )
    missing = [turn for turn in answered if turn not in stored]
    assert not missing, missing
    assert len(answered) >= 12
    # An answer's last bytes wait for its commit (completions.turn.Turn.reply_committed): every
    # answer a client received is stored, the one in flight at the kill included.
    for conversation in {c for c, _ in answered}:
        replies = Message.objects.filter(
            conversation__external_id=conversation, role="assistant"
        ).count()
        assert replies >= sum(1 for c, _ in answered if c == conversation)

    # Restarted, the worker finishes every job the kill stranded (pending or running).
    stack.web()
    stack.worker()
    stack.beat()
    wait_until(
        lambda: not ProcessingJob.objects.exclude(status="done").exists(),
        timeout=60,
        what="every job done after the restart",
    )


@pytest.mark.django_db(transaction=True)
def test_malformed_llm_extraction_falls_back_to_the_offline_extractor(
    upstream, http, celery_worker
):
    """The loopback upstream answers the turn, then three non-JSON extraction replies."""
    malformed = Reply(json=openai_completion("Sure! You live in Rome, I think."))
    upstream.script(Reply(json=openai_completion("Noted.")), malformed, malformed, malformed)
    response = http.post(
        "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "I live in Rome."}]},
        headers={"x-user-id": "rui", "x-conversation-id": "fallback"},
    )
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"]
    job = wait_until(
        lambda: jobs("fallback").filter(status__in=["done", "failed"]).first(),
        timeout=60,
        what="the extraction job finished",
    )
    assert job.status == "done" and job.extractor == "offline-fallback"
    assert "malformed model output" in job.error
    extraction_calls = [r for r in upstream.chat_requests() if r.body.get("response_format")]
    assert len(extraction_calls) == 3  # the LLM had its attempts first
    memory = Memory.objects.get(user_id="rui")
    assert memory.text == "User lives in Rome."
    assert MemoryEvent.objects.get(memory_id=memory.id).actor == "extractor:offline"


@contextlib.contextmanager
def embedded_postgres(data: Path):
    """An embedded PostgreSQL kept in `data`, started (or recovered) by the code `make run`
    uses, in a process of its own that stops it on leaving; yields (url, the server's pid)."""
    starter = (
        "import sys; from config.embedded.servers import ensure_postgres; "
        "print(ensure_postgres(), flush=True); sys.stdin.read()"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", starter],
        env={**os.environ, "ENGRAM_DATA_DIR": str(data)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None
        url = owner.stdout.readline().strip()
        assert url.startswith("postgres://"), "the embedded PostgreSQL did not start"
        yield url, json.loads((data / "postgres.json").read_text())["pid"]
    finally:
        owner.communicate(timeout=60)  # its stdin closed: it stops the server (if alive)


def test_an_answer_finished_while_the_database_is_down_is_stored_once_it_returns(
    proxied, owner, upstream
):
    stack, proxy = proxied
    stack.env["OPENAI_BASE_URL"] = upstream.url + "/v1"
    stack.web()
    pieces = [f"piece {i} " for i in range(8)]
    upstream.script(Reply(stream=openai_stream(pieces), delay=0.1))
    headers = {"x-user-id": "ana", "x-conversation-id": "midway"}
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "Go"}]}
    restored = threading.Timer(3.5, proxy.start)  # down longer than a connection is waited for
    with client(stack, owner[1], **headers) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            frames = []
            for line in response.iter_lines():
                if line.startswith("data: "):
                    frames.append(line)
                    if len(frames) == 3:  # the turn's request is stored; its answer is coming
                        proxy.cut()
                        restored.start()
        assert response.status_code == 200 and frames[-1] == "data: [DONE]"
    restored.join()
    answers = Message.objects.filter(conversation__external_id="midway", role="assistant")
    wait_until(answers.exists, timeout=30, what="the answer stored after the database returned")
    assert list(answers.values_list("content", flat=True)) == ["".join(pieces)]


def _manage(stack: Stack, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        env=stack.env,
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_an_answer_received_is_stored_when_the_database_is_killed_right_after(tmp_path):
    # A PostgreSQL of the test's own (not the suite's), SIGKILLed the moment the last answer
    # arrives, then recovered from its WAL: every turn whose answer the client received is
    # there. The turn's first commit does not wait for the disk; its last one does, and the
    # WAL is one sequence, so that flush carries the first too.
    data = tmp_path / "data"
    redis = Redis(tmp_path).start()
    with embedded_postgres(data) as (url, pid):
        stack = Stack(
            database_url=url, redis=redis, workdir=tmp_path, ENGRAM_MEMORY_EXTRACTION="offline"
        )
        try:
            _manage(stack, "migrate", "-v0")
            created = _manage(stack, "createworkspace", "crash", "--key")
            key = re.search(r"API key: (\S+)", created)
            assert key is not None
            stack.web()
            headers = {"x-user-id": "ana", "x-conversation-id": "crash"}
            with client(stack, key.group(1), **headers) as http:
                for i in range(6):
                    assert chat(http, f"Entry {i}: I keep a diary.").status_code == 200
                os.killpg(pid, signal.SIGKILL)  # the server and every backend, at once
        finally:
            stack.stop()
    redis.stop()
    # Recovery: the server replays its WAL.
    with (
        embedded_postgres(data) as (url, _),
        psycopg.connect(url.replace("postgres://", "postgresql://", 1)) as db,
    ):
        rows = db.execute(
            "SELECT role, count(*) FROM memory_message GROUP BY role ORDER BY role"
        ).fetchall()
    assert rows == [("assistant", 6), ("user", 6)]


def test_a_web_process_killed_mid_stream_frees_its_user_s_slot_within_a_few_leases(
    tmp_path, owner, _upstream_server
):
    """A user of max_concurrent 1 whose stream was cut by the SIGKILL of the process serving it
    (a crash, a deploy's hard stop) was locked out for ENGRAM_LIMITS_LEASE_SECONDS, 11 minutes.
    The lease is short and renewed by the living process (accounts.limits.leases): the stream
    keeps its slot past its lease while it lives, and once its process is dead the user is
    served again by another process within a few leases."""
    import redis

    from accounts.limits.models import Subject
    from accounts.limits.services import limit_update
    from accounts.models import ApiKey

    lease = 2.0
    workspace, raw_key = owner
    key_id = ApiKey.objects.get(workspace=workspace).id
    limit_update(
        workspace=workspace,
        subject=Subject.API_KEY,
        key_id=key_id,
        limits={"max_concurrent": 1},
    )
    _upstream_server.reset()
    pieces = [f"piece {i} " for i in range(600)]
    _upstream_server.script(Reply(stream=openai_stream(pieces), delay=0.1))  # a minute long
    with running_stack(
        tmp_path,
        OPENAI_BASE_URL=_upstream_server.url + "/v1",
        OPENAI_API_KEY="sk-upstream-test",
        ENGRAM_LIMITS_LEASE_SECONDS=str(lease),
    ) as stack:
        serving = stack.web()
        serving_url = stack.web_url
        stack.web()  # the one left serving after the kill
        other_url = stack.web_url
        store = redis.Redis.from_url(stack.redis.url)
        leases = f"engram:lim:{{{workspace.id}}}:key:{key_id}:conc"
        body = {"model": "gpt-4o-mini", "stream": True}
        body["messages"] = [{"role": "user", "content": "Tell me a long story."}]
        headers = {"Authorization": f"Bearer {raw_key}"}
        streamed: list[str] = []

        def listen() -> None:
            url = serving_url + "/v1/chat/completions"
            with (
                contextlib.suppress(httpx.HTTPError),
                httpx.Client(timeout=120) as http,
                http.stream("POST", url, json=body, headers=headers) as response,
            ):
                for text in response.iter_text():
                    streamed.append(text)

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        wait_until(lambda: "piece 1 " in "".join(streamed), timeout=30, what="the stream")
        ((_, first_expiry),) = store.zrange(leases, 0, -1, withscores=True)

        def ask() -> httpx.Response:
            with client(stack, raw_key) as http:
                http.base_url = httpx.URL(other_url)
                return chat(http, "Hi")

        wait_until(
            lambda: time.time() * 1000 > first_expiry + 500, timeout=10, what="a lease gone by"
        )
        refused = ask()
        assert refused.status_code == 429, refused.text  # held: renewed by the living process
        assert "concurrent requests" in refused.json()["error"]["message"]

        Stack.kill(serving)
        listener.join(timeout=30)
        assert not listener.is_alive()
        wait_until(
            lambda: ask().status_code == 200,
            timeout=5 * lease,
            what="the dead process's slot freed",
            every=0.5,
        )
