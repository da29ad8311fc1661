"""Two web processes and two Celery workers on one PostgreSQL and one Redis (tests/processes.py).

What only shows with more than one process: a key revoked through one web process is refused
by the other on its very next request; a routing change made through one is used by the other
on its next request; the background work of turns spread over both web processes is done by
the workers exactly once; a job whose send was lost is sent by the sweep (beat) and done once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from django.conf import settings

from accounts.models import ApiKey
from memory.models import Memory, ProcessingJob
from tests.factories import make_workspace
from tests.processes import cluster

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def shape(tmp_path_factory, django_db_setup, django_db_blocker, _upstream_server):
    """The processes, started once for this module, all pointed at the loopback upstream."""
    env = {
        "OPENAI_BASE_URL": _upstream_server.url + "/v1",
        "OPENAI_API_KEY": "sk-upstream-test",
        "ANTHROPIC_BASE_URL": _upstream_server.url,
        "ANTHROPIC_API_KEY": "sk-ant-upstream-test",
        "ENGRAM_MEMORY_EXTRACTION": "offline",
        # the sweep, quick enough for a test (the defaults are 15 s and 5 s)
        "ENGRAM_JOB_GRACE_SECONDS": "2",
        "ENGRAM_JOB_SWEEP_SECONDS": "1",
    }
    log_dir = tmp_path_factory.mktemp("processes")
    with (
        django_db_blocker.unblock(),
        cluster(web=2, workers=2, beat=True, env=env, log_dir=log_dir) as running,
    ):
        yield running


@pytest.fixture
def upstream(_upstream_server):
    _upstream_server.reset()
    yield _upstream_server
    _upstream_server.reset()


def client(base_url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def ask(http: httpx.Client, model: str = "gpt-4o-mini", text: str = "Hi", **headers: str):
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    return http.post(CHAT, json=body, headers=headers)


def test_a_key_revoked_through_one_process_is_refused_by_the_other_at_once(shape, upstream):
    a_url, b_url = shape.web
    operator = {"Authorization": f"Bearer {settings.ENGRAM_ADMIN_KEY}"}
    with httpx.Client(base_url=a_url, headers=operator, timeout=60) as admin_a:
        workspace = admin_a.post("/v1/workspaces", json={"name": "shape"}).json()
        made = admin_a.post(f"/v1/workspaces/{workspace['id']}/api_keys", json={"name": "k"})
    key = made.json()
    with client(a_url, key["key"]) as on_a, client(b_url, key["key"]) as on_b:
        for http in (on_a, on_b, on_a, on_b):  # both processes now hold the key in cache
            assert ask(http).status_code == 200, shape.logs()
        with httpx.Client(base_url=a_url, headers=operator, timeout=60) as admin_a:
            revoked = admin_a.delete(f"/v1/workspaces/{workspace['id']}/api_keys/{key['id']}")
        assert revoked.status_code == 200
        refused_b = ask(on_b)  # the very next request, on the other process
        assert refused_b.status_code == 401, shape.logs()
        assert refused_b.json()["error"]["code"] == "invalid_api_key"
        assert ask(on_a).status_code == 401
        assert on_b.get("/v1/models").status_code == 401  # the Django door of B too
    assert ApiKey.objects.get(id=key["id"]).revoked_at is not None


def _csrf(page: str) -> str:
    found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert found, page[-2000:]
    return found.group(1)


@contextlib.contextmanager
def _admin_session(base_url: str) -> Iterator[httpx.Client]:
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_superuser("op", "op@example.com", "pw-0123456789")
    with httpx.Client(base_url=base_url, timeout=60) as session:
        token = _csrf(session.get("/admin/login/").text)
        login = session.post(
            "/admin/login/?next=/admin/",
            data={"username": "op", "password": "pw-0123456789", "csrfmiddlewaretoken": token},
        )
        assert login.status_code == 302 and login.headers["location"] == "/admin/"
        yield session


def _admin_save(session: httpx.Client, path: str, fields: dict[str, str]) -> None:
    token = _csrf(session.get(path).text)
    saved = session.post(path, data={**fields, "csrfmiddlewaretoken": token})
    assert saved.status_code == 302, saved.text[-2000:]


def test_a_routing_change_made_through_one_process_is_used_by_the_other(shape, upstream):
    from completions.models import ModelAlias
    from completions.services import model_alias_set

    workspace, raw = make_workspace("routes")
    model_alias_set(workspace=workspace, alias="fast", target_model="gpt-4o-mini")
    a_url, b_url = shape.web
    with client(a_url, raw) as on_a, client(b_url, raw) as on_b:
        for http in (on_a, on_b, on_b):  # both hold the workspace's routes in cache
            assert ask(http, "fast").status_code == 200, shape.logs()
            assert upstream.last.body["model"] == "gpt-4o-mini"
        alias = ModelAlias.objects.get(workspace=workspace, alias="fast")
        with _admin_session(a_url) as admin_a:  # the change goes through process A's admin
            _admin_save(
                admin_a,
                f"/admin/completions/modelalias/{alias.pk}/change/",
                {"target_model": "gpt-4.1", "provider": ""},
            )
        assert ModelAlias.objects.get(pk=alias.pk).target_model == "gpt-4.1"
        assert ask(on_b, "fast").status_code == 200  # the next request on B
        assert upstream.last.body["model"] == "gpt-4.1"
        assert ask(on_a, "fast").status_code == 200
        assert upstream.last.body["model"] == "gpt-4.1"


STATEMENTS = [
    "I live in Paris.",
    "I love jazz.",
    "I work as a nurse.",
    "My favorite food is ramen.",
]


def test_background_work_of_both_processes_is_done_once(shape, upstream):
    workspace, raw = make_workspace("turns")
    users = ["ana", "ben", "cy"]
    with client(shape.web[0], raw) as on_a, client(shape.web[1], raw) as on_b:
        for u, user in enumerate(users):
            for s, text in enumerate(STATEMENTS):
                http = (on_a, on_b)[(u + s) % 2]  # each user's turns alternate between processes
                answer = ask(
                    http, text=text, **{"x-user-id": user, "x-conversation-id": f"c-{user}"}
                )
                assert answer.status_code == 200, answer.text
                time.sleep(0.05)
    deadline = time.monotonic() + 120
    jobs = ProcessingJob.objects.filter(workspace=workspace, kind="extract")
    while time.monotonic() < deadline:
        if jobs.count() >= len(users) and not jobs.exclude(status="done").exists():
            break
        time.sleep(0.5)
    statuses = Counter(jobs.values_list("status", flat=True))
    assert statuses and set(statuses) == {"done"}, f"{statuses}\n{shape.logs()}"
    assert set(jobs.values_list("attempts", flat=True)) == {1}  # each job ran once
    covered = sorted(jobs.values_list("conversation__user_id", "upto_message_id"))
    assert len(covered) == len(set(covered))
    memories = list(Memory.objects.filter(workspace=workspace).values_list("user_id", "text"))
    assert len(memories) == len(set(memories)), memories  # nothing extracted twice
    for user in users:
        texts = {text for who, text in memories if who == user}
        assert "User lives in Paris." in texts and "User loves jazz." in texts, memories


def test_a_job_whose_send_was_lost_is_swept_and_done_once(shape):
    """The row without its message (a send lost with Redis): beat's sweep sends it."""
    from django.utils import timezone

    from memory.services.conversations import conversation_get_or_create, messages_append

    workspace, _ = make_workspace("swept")
    conversation, _ = conversation_get_or_create(
        workspace=workspace, external_id="lost", user_id="dee"
    )
    [message] = messages_append(
        workspace=workspace,
        conversation=conversation,
        session=None,
        messages=[{"role": "user", "content": "I live in Oslo."}],
    )
    job = ProcessingJob.objects.create(
        workspace=workspace, conversation=conversation, kind="extract", upto_message_id=message.id
    )
    ProcessingJob.objects.filter(id=job.id).update(  # older than the grace: its send was lost
        updated_at=timezone.now() - dt.timedelta(seconds=60)
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.status == "done":
            break
        time.sleep(0.5)
    assert job.status == "done", f"{job.status}\n{shape.logs()}"
    assert job.attempts == 1  # two workers, a sweep every second: still claimed once
    texts = list(Memory.objects.filter(workspace=workspace).values_list("text", flat=True))
    assert len(texts) == 1 and "Oslo" in texts[0], texts  # extracted, and only once
