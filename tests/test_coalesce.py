"""config.coalesce: one task waits per unit of work (a workspace's extraction queue offline, a
conversation's title), and no job waits for longer than it did when every turn sent its own.

Real Redis (the broker's queue and the pending marks) and a real Celery worker (threads, started
when the test says so: the turns before it make the backlog)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading
import time
from collections import Counter

import pytest
import redis
from celery import signals
from django.conf import settings as django_settings
from django.utils import timezone

from memory.models import Conversation, ProcessingJob
from tests.test_conversations_chat import ask, client

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def broker():
    """The suite's Redis, with no message queued and no pending mark left by another test."""
    from config.celery import app

    app.control.purge()
    client = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    for key in client.scan_iter("engram:pending:*"):
        client.delete(key)
    yield client
    app.control.purge()


@pytest.fixture
def offline(settings):
    settings.ENGRAM_MEMORY_EXTRACTION = "offline"  # one unit a workspace
    settings.ENGRAM_JOB_GRACE_SECONDS = 60  # the marks' TTL: longer than any wait below


def queued(broker: redis.Redis) -> Counter:
    """The memory queue's messages by task name."""
    names = Counter()
    for raw in broker.lrange(django_settings.CELERY_TASK_ROUTES["memory.*"]["queue"], 0, -1):
        names[json.loads(raw)["headers"]["task"]] += 1
    return names


@contextlib.contextmanager
def worker():
    """The conftest's worker (threads, two), started now; yields the tasks it ran by name."""
    from celery.contrib.testing.worker import start_worker

    from config.celery import app

    ran: Counter = Counter()

    def count(sender=None, **kwargs) -> None:
        ran[sender.name] += 1

    signals.task_prerun.connect(count, weak=False)
    try:
        with start_worker(
            app,
            pool="threads",
            concurrency=2,
            perform_ping_check=False,
            queues=django_settings.ENGRAM_WORKER_QUEUES.split(","),
            shutdown_timeout=30,
            loglevel="WARNING",
        ):
            yield ran
    finally:
        signals.task_prerun.disconnect(count)


def all_done(jobs, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not jobs.exclude(status=ProcessingJob.Status.DONE).exists():
            return True
        time.sleep(0.1)
    return False


def turn(workspace, conversation: str, text: str) -> ProcessingJob:
    """`text` stored in `conversation` and its extraction job queued, committed (its send, if
    any, on commit) as a turn's finish does."""
    from memory.services import conversation_get_or_create, extraction_enqueue, messages_append

    conv, _ = conversation_get_or_create(
        workspace=workspace, external_id=conversation, user_id=conversation
    )
    messages_append(
        workspace=workspace,
        conversation=conv,
        session=None,
        messages=[{"role": "user", "content": text}],
    )
    job = extraction_enqueue(workspace=workspace, conversation=conv)
    assert job is not None
    return job


def mark(broker: redis.Redis, workspace) -> None:
    """A pending mark for the workspace's extraction whose task was lost (never queued)."""
    broker.set(f"engram:pending:memory.extract:w:{workspace.id}", "1", px=60_000)


def test_a_backlog_of_turns_sends_one_task_a_unit_and_every_job_is_done(
    engram_server, owner, upstream, broker, offline, monkeypatch
):
    """Twelve turns of four users while the worker is behind (here: not started): one
    extraction task for the workspace and one title task a conversation wait in the queue, not
    twelve of each; a run that leaves jobs behind (the batch's cap, four here) sends the task
    again, so every job is done with three runs."""
    from memory.services import processing

    monkeypatch.setattr(processing, "BATCH_JOBS", 4)
    workspace, key = owner
    users = ["ana", "ben", "cy", "dee"]
    for n in range(3):
        for user in users:
            chat = client(engram_server, key, **{"x-user-id": user, "x-conversation-id": user})
            ask(chat, f"I live in city number {n} and my name is {user}.")
    jobs = ProcessingJob.objects.filter(workspace=workspace, kind="extract")
    assert jobs.count() == 12

    assert queued(broker) == {"memory.extract": 1, "memory.title_conversation": 4}

    with worker() as ran:
        assert all_done(jobs)
    assert ran["memory.extract"] == 3  # 4 + 4 + 4 jobs
    titled = Conversation.objects.filter(workspace=workspace).exclude(title="")
    assert titled.count() == 4


def test_a_job_committed_while_a_run_works_is_sent_and_done_without_the_sweep(
    owner, broker, offline, monkeypatch
):
    """The run deletes its unit's mark before it claims: a turn committed while it works finds
    none and sends its own task (no sweep runs here; the mark's TTL is 60 s)."""
    from memory.background.extraction import runner

    workspace, _ = owner
    started, release = threading.Event(), threading.Event()
    real = runner.extraction_run

    def held(*, jobs, **kwargs):
        if not started.is_set():
            started.set()
            assert release.wait(30)
        return real(jobs=jobs, **kwargs)

    monkeypatch.setattr(runner, "extraction_run", held)
    with worker():
        first = turn(workspace, "ana", "I live in Lisbon.")
        assert started.wait(30)  # its run holds its claim and works
        second = turn(workspace, "ben", "I work at Acme.")
        jobs = ProcessingJob.objects.filter(id__in=[first.id, second.id])
        assert all_done(jobs.filter(id=second.id), timeout=15)  # the other worker thread
        release.set()
        assert all_done(jobs)


def test_a_task_whose_own_job_was_taken_claims_its_units_other_jobs(owner, broker, offline):
    """Its job taken by another run since it was sent, the task still claims the jobs that
    counted on it (committed while its mark was set, they sent nothing)."""
    from memory.services.fencing import job_finish
    from memory.services.processing import job_claim

    workspace, _ = owner
    first = turn(workspace, "ana", "I live in Lisbon.")
    second = turn(workspace, "ben", "I work at Acme.")
    assert queued(broker)["memory.extract"] == 1  # the first's; the second sent none
    taken = job_claim(job_id=first.id)  # another run took the first alone
    assert taken is not None
    job_finish(job=taken, status=ProcessingJob.Status.DONE)

    with worker() as ran:
        assert all_done(ProcessingJob.objects.filter(id=second.id))
    assert ran["memory.extract"] == 1


def test_a_mark_whose_task_was_lost_is_overridden_by_the_sweep(
    owner, broker, offline, settings, django_capture_on_commit_callbacks
):
    """A pending mark left without its task (the message lost): turns send nothing meanwhile,
    and the sweep sends the unit's due jobs all the same."""
    from memory.services.sweep import jobs_sweep

    workspace, _ = owner
    mark(broker, workspace)
    job = turn(workspace, "ana", "I live in Lisbon.")
    assert queued(broker)["memory.extract"] == 0

    with worker():
        time.sleep(1)
        assert ProcessingJob.objects.get(id=job.id).status == "pending"
        ProcessingJob.objects.filter(id=job.id).update(
            updated_at=timezone.now() - dt.timedelta(seconds=61)
        )
        with django_capture_on_commit_callbacks(execute=True):
            swept = jobs_sweep()
        assert swept.sent == 1
        assert all_done(ProcessingJob.objects.filter(id=job.id))


def test_a_mark_whose_task_was_lost_lapses_and_the_next_turn_sends(
    owner, broker, offline, settings
):
    """The mark's TTL (the grace) bounds a lost task without the sweep: the first turn after it
    sends, and its task claims the jobs queued meanwhile."""
    from config.celery import app

    settings.ENGRAM_JOB_GRACE_SECONDS = 1
    workspace, _ = owner
    first = turn(workspace, "ana", "I live in Lisbon.")
    app.control.purge()  # its message lost; its mark stays
    second = turn(workspace, "ben", "I work at Acme.")
    assert queued(broker)["memory.extract"] == 0
    time.sleep(1.2)
    third = turn(workspace, "cy", "I have a cat.")
    assert queued(broker)["memory.extract"] == 1
    with worker():
        assert all_done(ProcessingJob.objects.filter(id__in=[first.id, second.id, third.id]))


def test_a_title_task_is_not_sent_again_while_one_waits(
    engram_server, owner, upstream, broker, offline
):
    """Three turns of an untitled conversation before the worker writes its title: one title
    task (every turn sent one); once it ran, the title is there."""
    workspace, key = owner
    chat = client(engram_server, key, **{"x-user-id": "ana", "x-conversation-id": "trip"})
    for text in ("Plan my trip to Porto.", "In May.", "For two."):
        ask(chat, text)
    assert queued(broker)["memory.title_conversation"] == 1

    with worker():
        deadline = time.monotonic() + 30
        while not Conversation.objects.filter(workspace=workspace, title__startswith="Plan"):
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_a_redis_that_fails_the_mark_still_gets_every_send(owner, broker, offline, monkeypatch):
    """The mark's SET failing (an error of this process's connections, Redis itself up): each
    turn sends as before coalescing."""
    from config import coalesce

    class Failing:
        def call_sync(self, *args, **kwargs):
            raise redis.ConnectionError("every redis connection is busy")

    monkeypatch.setattr(coalesce, "_pool", Failing)
    workspace, _ = owner
    turn(workspace, "ana", "I live in Lisbon.")
    turn(workspace, "ben", "I work at Acme.")
    assert queued(broker)["memory.extract"] == 2
