"""The sweep, the claim's lease and its fencing: the database as background work's source of truth.

End to end (Redis stopped, workers killed) in tests/test_faults.py; here each rule alone.
"""

from __future__ import annotations

import datetime as dt
import time

import psycopg
import pytest
from django.conf import settings as django_settings
from django.db import connection, transaction
from django.utils import timezone

from memory.models import Document, ProcessingJob
from memory.services import conversation_get_or_create, extraction_enqueue, messages_append
from memory.services.fencing import (
    job_finish,
    job_heartbeat,
    jobs_finish,
    jobs_heartbeat,
    jobs_held_locked,
)
from memory.services.processing import _take_with_queue, job_claim, jobs_claim, taken_with_queue
from memory.services.sweep import SWEEP_LOCK, jobs_sweep
from tests.factories import make_workspace

pytestmark = pytest.mark.django_db


def _queued_job(workspace, conversation: str, text: str, capture) -> ProcessingJob:
    """`text` said in `conversation` and its extraction job queued (its send captured, once)."""
    conv, _ = conversation_get_or_create(workspace=workspace, external_id=conversation, user_id="u")
    messages_append(
        workspace=workspace,
        conversation=conv,
        session=None,
        messages=[{"role": "user", "content": text}],
    )
    with capture(execute=False) as sent:
        queued = extraction_enqueue(workspace=workspace, conversation=conv)
    assert queued is not None and len(sent) == 1
    return queued


@pytest.fixture
def job(django_capture_on_commit_callbacks):
    workspace, _ = make_workspace()
    return _queued_job(workspace, "c", "I love jazz.", django_capture_on_commit_callbacks)


def _broker_queue(route: str):
    """The broker's queue of `route` (a Redis list in the suite's Redis), empty before and
    after: what the sweep sends again depends on how many messages wait there."""
    import redis

    client = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    queue = django_settings.CELERY_TASK_ROUTES[route]["queue"]
    client.delete(queue)
    yield client, queue
    client.delete(queue)


@pytest.fixture(autouse=True)
def memory_queue():
    yield from _broker_queue("memory.*")


@pytest.fixture(autouse=True)
def knowledge_queue():
    yield from _broker_queue("knowledge.*")


def age(job: ProcessingJob, seconds: float, **fields) -> None:
    ProcessingJob.objects.filter(id=job.id).update(
        updated_at=timezone.now() - dt.timedelta(seconds=seconds), **fields
    )


def sweep(capture) -> tuple:
    with capture(execute=False) as sends:
        swept = jobs_sweep()
    return swept, sends


def test_a_pending_job_is_sent_again_after_the_grace_once_per_grace(
    job, settings, django_capture_on_commit_callbacks
):
    settings.ENGRAM_JOB_GRACE_SECONDS = 15
    swept, sends = sweep(django_capture_on_commit_callbacks)
    assert swept.sent == 0  # within the grace: its first send may still be on its way

    age(job, 16)
    swept, sends = sweep(django_capture_on_commit_callbacks)
    assert swept.sent == 1 and len(sends) == 1  # sent after commit
    job.refresh_from_db()
    assert job.status == "pending" and timezone.now() - job.updated_at < dt.timedelta(seconds=5)

    swept, sends = sweep(django_capture_on_commit_callbacks)
    assert swept.sent == 0 and not sends  # re-stamped: not again until another grace


def test_pending_jobs_behind_a_backlog_are_not_sent_again_until_the_queue_is_shorter(
    job, settings, memory_queue, django_capture_on_commit_callbacks
):
    settings.ENGRAM_JOB_GRACE_SECONDS = 15
    client, queue = memory_queue
    other = ProcessingJob.objects.create(
        workspace=job.workspace,
        conversation=job.conversation,
        kind="summarize",
        upto_message_id=job.upto_message_id,
    )
    age(job, 60)
    age(other, 60)
    client.rpush(queue, "a waiting message", "another")  # as many as the pending jobs
    swept, sends = sweep(django_capture_on_commit_callbacks)
    assert (swept.sent, swept.queued, len(sends)) == (0, 2, 0)
    job.refresh_from_db()
    assert timezone.now() - job.updated_at > dt.timedelta(seconds=50)  # not re-stamped either

    client.lpop(queue)  # one taken: one pending job may have lost its message
    swept, sends = sweep(django_capture_on_commit_callbacks)
    assert (swept.sent, swept.queued, len(sends)) == (2, 0, 1)  # which one is not known: both

    client.delete(queue)  # a Redis that lost its data: an empty queue
    age(job, 60)
    swept, sends = sweep(django_capture_on_commit_callbacks)
    assert (swept.sent, len(sends)) == (1, 1)


def test_a_running_job_whose_lease_lapsed_is_claimable_and_swept_back_to_pending(
    job, settings, django_capture_on_commit_callbacks
):
    settings.ENGRAM_JOB_LEASE_SECONDS = 30
    claimed = job_claim(job_id=job.id)
    assert claimed is not None and claimed.attempts == 1
    assert job_claim(job_id=job.id) is None  # a live lease: a second delivery is refused
    age(job, 20)
    swept, _ = sweep(django_capture_on_commit_callbacks)
    assert swept.sent == 0  # still within its lease

    age(job, 31)
    again = job_claim(job_id=job.id)  # a redelivery takes over a lapsed lease at once
    assert again is not None and again.attempts == 2
    age(job, 31)
    swept, sends = sweep(django_capture_on_commit_callbacks)
    assert swept.sent == 1 and len(sends) == 1
    job.refresh_from_db()
    assert (job.status, job.attempts) == ("pending", 2)


def test_a_job_whose_worker_keeps_dying_is_failed_not_sent_forever(
    job, settings, django_capture_on_commit_callbacks
):
    settings.ENGRAM_JOB_MAX_ATTEMPTS = 3
    age(job, 10_000, status="running", attempts=3)
    swept, sends = sweep(django_capture_on_commit_callbacks)
    assert (swept.sent, swept.failed, len(sends)) == (0, 1, 0)
    job.refresh_from_db()
    assert job.status == "failed" and "lost 3 times" in job.error


def test_a_run_that_lost_its_lease_cannot_overwrite_the_next_run(job, settings):
    first = job_claim(job_id=job.id)
    assert first is not None and job_heartbeat(job=first)
    age(job, settings.ENGRAM_JOB_LEASE_SECONDS + 1)
    second = job_claim(job_id=job.id)
    assert second is not None and second.attempts == first.attempts + 1
    assert not job_heartbeat(job=first)  # fenced by its attempt number
    assert not job_finish(job=first, status="failed", error="late")
    assert job_finish(job=second, status="done", extractor="offline")
    job.refresh_from_db()
    assert (job.status, job.error, job.extractor) == ("done", "", "offline")


def test_a_batch_out_of_time_is_queued_again_each_to_run_alone(
    job, django_capture_on_commit_callbacks
):
    """A batch of slow turns (a slow model) that hit the soft time limit failed every one of
    its jobs for good: their memories were never extracted. Now each runs alone next, and
    only a job that does not fit its time alone fails."""
    from celery.exceptions import SoftTimeLimitExceeded

    from memory.tasks import _work

    later = [
        _queued_job(job.workspace, "c", text, django_capture_on_commit_callbacks)
        for text in ("I love tea.", "I love chess.")
    ]
    batch = jobs_claim(job_id=job.id)
    assert len(batch) == 3

    def out_of_time(jobs):
        raise SoftTimeLimitExceeded()

    _work(None, batch, out_of_time)

    for queued in (job, *later):
        queued.refresh_from_db()
        assert queued.status == "pending" and "alone" in queued.error
    alone = jobs_claim(job_id=later[0].id)
    assert [j.id for j in alone] == [later[0].id]  # not batched with the others again
    _work(None, alone, out_of_time)
    later[0].refresh_from_db()
    assert (later[0].status, later[0].error) == ("failed", "time limit exceeded")
    assert [j.id for j in jobs_claim(job_id=job.id)] == [job.id]


def test_a_batch_claim_keeps_each_jobs_lease_and_fence(
    job, settings, django_capture_on_commit_callbacks
):
    later = [
        _queued_job(job.workspace, "c", text, django_capture_on_commit_callbacks)
        for text in ("I love tea.", "I love chess.")
    ]
    batch = jobs_claim(job_id=later[0].id)
    assert [j.id for j in batch] == [later[0].id, job.id, later[1].id]  # its own first
    assert all(j.status == "running" and j.attempts == 1 for j in batch)
    assert jobs_claim(job_id=job.id) == []  # a second delivery of any of them: refused
    assert jobs_heartbeat(jobs=batch) == 3
    # one of them lapses (its run stalled) and another run takes it over: fenced off
    age(job, django_settings.ENGRAM_JOB_LEASE_SECONDS + 1)
    again = job_claim(job_id=job.id)
    assert again is not None and again.attempts == 2
    assert jobs_heartbeat(jobs=batch) == 2
    with transaction.atomic():  # the run's write sees the same two still its own
        assert jobs_held_locked(jobs=batch) == {later[0].id, later[1].id}
        assert jobs_held_locked(jobs=[again]) == {job.id}
    assert jobs_finish(jobs=batch, status="done") == 2
    assert ProcessingJob.objects.get(id=job.id).status == "running"  # the new run's
    assert job_finish(job=again, status="done")


def test_a_claim_sees_what_else_is_queued_in_its_own_conversation_and_workspace_only(
    job, django_capture_on_commit_callbacks
):
    """The claim's flags (taken_with_queue) decide whether a run takes more jobs: another
    workspace's backlog is never its own, and the job itself is not 'something else'."""
    capture = django_capture_on_commit_callbacks
    busy, _ = make_workspace()
    for n in range(3):
        _queued_job(busy, f"b{n}", "I love tea.", capture)

    def flags(of: ProcessingJob) -> tuple[bool, bool]:
        row = taken_with_queue(job_id=of.id, now=timezone.now(), around=True).get()
        # the claim's own statement (jobs_claim) says the same, and claims the job
        ProcessingJob.objects.filter(id=of.id).update(status="pending")
        taken = _take_with_queue(job_id=of.id, now=timezone.now(), around=True)
        assert taken is not None and taken[1:] == (row.queued, row.queued_around)
        claimed, _, _ = taken
        assert (claimed.id, claimed.status, claimed.attempts) == (of.id, "running", 1)
        assert (claimed.conversation.id, claimed.workspace.id) == (
            of.conversation_id,
            of.workspace_id,
        )
        assert _take_with_queue(job_id=of.id, now=timezone.now(), around=True) is None  # taken
        ProcessingJob.objects.filter(id=of.id).update(status="pending", attempts=0)
        return row.queued, row.queued_around

    assert flags(job) == (False, False)  # alone in its workspace, whatever the other holds
    same_conversation = _queued_job(job.workspace, "c", "I love chess.", capture)
    assert flags(job) == (True, True)
    ProcessingJob.objects.filter(id=same_conversation.id).update(status="done")
    assert flags(job) == (False, False)
    _queued_job(job.workspace, "c2", "I love go.", capture)
    assert flags(job) == (False, True)
    row = taken_with_queue(job_id=job.id, now=timezone.now(), around=False).get()
    assert (row.queued, row.queued_around) == (False, False)  # not asked: not looked for


def test_one_sweeper_at_a_time(job, django_capture_on_commit_callbacks):
    age(job, 10_000)
    db = connection.settings_dict
    with psycopg.connect(
        host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"], autocommit=True
    ) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [SWEEP_LOCK])
        swept, sends = sweep(django_capture_on_commit_callbacks)
        assert swept.locked and swept.sent == 0 and not sends
        other.execute("SELECT pg_advisory_unlock(%s)", [SWEEP_LOCK])
    swept, sends = sweep(django_capture_on_commit_callbacks)
    assert not swept.locked and swept.sent == 1


def test_a_document_stuck_queued_or_processing_is_sent_again(
    settings, django_capture_on_commit_callbacks
):
    from memory.knowledge.services import collection_create, document_create, document_lease

    settings.ENGRAM_JOB_GRACE_SECONDS = 15
    workspace, _ = make_workspace()
    collection = collection_create(workspace=workspace, name="docs")
    with django_capture_on_commit_callbacks(execute=False):
        queued, _ = document_create(workspace=workspace, collection=collection, raw=b"alpha text")
        processing, _ = document_create(workspace=workspace, collection=collection, raw=b"beta")
        fresh, _ = document_create(workspace=workspace, collection=collection, raw=b"gamma")
    past = timezone.now() - document_lease() - dt.timedelta(seconds=1)
    Document.objects.filter(id=queued.id).update(updated_at=past)
    Document.objects.filter(id=processing.id).update(status="processing", updated_at=past)
    swept, sends = sweep(django_capture_on_commit_callbacks)
    assert swept.documents == 2 and len(sends) == 1
    statuses = dict(Document.objects.values_list("id", "status"))
    assert statuses == {queued.id: "queued", processing.id: "queued", fresh.id: "queued"}


def test_queued_documents_behind_a_backlog_are_not_sent_again_until_the_queue_is_shorter(
    settings, knowledge_queue, django_capture_on_commit_callbacks
):
    from memory.knowledge.services import collection_create, document_create

    settings.ENGRAM_JOB_GRACE_SECONDS = 15
    client, queue = knowledge_queue
    workspace, _ = make_workspace()
    collection = collection_create(workspace=workspace, name="uploads")
    with django_capture_on_commit_callbacks(execute=False):
        for text in (b"alpha text", b"beta text"):
            document_create(workspace=workspace, collection=collection, raw=text)
    Document.objects.update(updated_at=timezone.now() - dt.timedelta(seconds=60))
    client.rpush(queue, "a waiting message", "another")  # as many as the queued documents
    swept, sends = sweep(django_capture_on_commit_callbacks)
    assert (swept.documents, swept.documents_queued, len(sends)) == (0, 2, 0)

    client.lpop(queue)  # one taken: one queued document may have lost its message
    swept, sends = sweep(django_capture_on_commit_callbacks)
    assert (swept.documents, swept.documents_queued, len(sends)) == (2, 0, 1)


@pytest.mark.django_db(transaction=True)
def test_a_running_job_renews_its_lease_while_it_works(settings):
    from memory import tasks

    settings.ENGRAM_JOB_LEASE_SECONDS = 1.5  # renewed every 0.5 s
    workspace, _ = make_workspace()
    conv, _ = conversation_get_or_create(workspace=workspace, external_id="c", user_id="u")
    messages_append(
        workspace=workspace, conversation=conv, session=None, messages=[{"role": "user"}]
    )
    job = ProcessingJob.objects.create(
        workspace=workspace, conversation=conv, kind="extract", upto_message_id="z"
    )
    claimed = job_claim(job_id=job.id)
    assert claimed is not None
    stamps = []
    with tasks._leased([claimed]):  # the work: four seconds, longer than two leases
        for _ in range(8):
            time.sleep(0.5)
            stamps.append(ProcessingJob.objects.get(id=job.id).updated_at)
    assert len(set(stamps)) >= 2 and stamps[-1] > claimed.updated_at
    renewed = ProcessingJob.objects.get(id=job.id).updated_at  # a beat may land after the last read
    time.sleep(1)
    assert ProcessingJob.objects.get(id=job.id).updated_at == renewed  # the heartbeat stopped


@pytest.mark.django_db(transaction=True)
def test_runs_share_one_lease_thread_and_each_is_renewed(settings):
    """The process's one lease thread renews every run's leases: no thread started per run
    (~60 µs of a pool process's CPU a task, bench/README.md "Twenty-fifth session"), and two
    runs at once are both renewed, a run that ended no more."""
    import threading

    from memory import tasks

    settings.ENGRAM_JOB_LEASE_SECONDS = 1.5  # renewed every 0.5 s
    workspace, _ = make_workspace()
    claimed = []
    for name in ("a", "b"):
        conv, _ = conversation_get_or_create(workspace=workspace, external_id=name, user_id=name)
        job = ProcessingJob.objects.create(
            workspace=workspace, conversation=conv, kind="extract", upto_message_id="z"
        )
        claimed.append(job_claim(job_id=job.id))
    first, second = claimed
    before = set(threading.enumerate())
    started = set()
    for _ in range(3):  # three short runs, each over before its first renewal
        with tasks._leased([first]):
            started |= set(threading.enumerate()) - before
    assert len(started) <= 1, started
    with tasks._leased([first]), tasks._leased([second]):
        time.sleep(1.2)
        stamps = dict(
            ProcessingJob.objects.filter(id__in=[first.id, second.id]).values_list(
                "id", "updated_at"
            )
        )
        assert stamps[first.id] > first.updated_at and stamps[second.id] > second.updated_at
        started |= set(threading.enumerate()) - before
    assert len(started) <= 1, started
    renewed = ProcessingJob.objects.get(id=first.id).updated_at
    time.sleep(1)
    assert ProcessingJob.objects.get(id=first.id).updated_at == renewed  # ended: not renewed


def test_time_limits_visibility_timeout_and_beat_agree():
    from completions.sweep import sweep_jobs
    from config.celery import HARD_TIME_LIMITS, SOFT_MARGIN, VISIBILITY_TIMEOUT, app
    from memory import tasks
    from memory.knowledge.tasks import ingest_document

    every = (tasks.extract, tasks.summarize, sweep_jobs, tasks.extract_unanswered)
    for task in (*every, ingest_document):
        assert task.time_limit == HARD_TIME_LIMITS[task.name]
        assert task.soft_time_limit == task.time_limit - SOFT_MARGIN
        # Redis must never re-deliver a task that may still be running
        assert task.time_limit < VISIBILITY_TIMEOUT
    assert django_settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] == (
        VISIBILITY_TIMEOUT
    )
    entry = django_settings.CELERY_BEAT_SCHEDULE["sweep-jobs"]
    assert entry["task"] == "memory.sweep_jobs" and entry["task"] in app.tasks
    assert app.amqp.router.route({}, "memory.sweep_jobs")["queue"].name == "default"
    assert entry["schedule"] < django_settings.ENGRAM_JOB_GRACE_SECONDS
    assert django_settings.CELERY_BEAT_SCHEDULE_FILENAME.endswith("celerybeat-schedule")
    assert ".engram" in django_settings.CELERY_BEAT_SCHEDULE_FILENAME  # not the repo root


def test_a_worker_keeps_its_connection_pool_from_task_to_task(monkeypatch):
    """Celery's Django fixup closed the pool around every task of a prefork worker (2-3 new
    PostgreSQL backends a task); with CELERY_DB_REUSE_MAX it leaves the pool, and each task
    hands its connection back as a request does, except an eager one (its caller's)."""
    from types import SimpleNamespace

    from celery.fixups.django import DjangoWorkerFixup

    from config.celery import _connections_as_a_request, app

    fixup = DjangoWorkerFixup(app)
    assert fixup.db_reuse_max == django_settings.CELERY_DB_REUSE_MAX
    recycled = []
    monkeypatch.setattr(fixup, "_close_database", lambda: recycled.append(1))
    for _ in range(1000):  # the fixup's prerun and postrun of 500 tasks
        fixup.close_database()
    assert recycled == []
    handed_back = []
    monkeypatch.setattr("django.db.close_old_connections", lambda: handed_back.append(1))
    _connections_as_a_request(sender=SimpleNamespace(request=SimpleNamespace(is_eager=True)))
    assert handed_back == []
    _connections_as_a_request(sender=SimpleNamespace(request=SimpleNamespace(is_eager=False)))
    assert handed_back == [1]


def test_the_jobs_table_is_analyzed_after_a_thousand_changes_whatever_its_size():
    """Its statistics follow a backlog within an autovacuum round: at PostgreSQL's default
    (10 % of the rows) a table of finished jobs kept showing nothing queued, and claims read
    every queued job (migration memory.0013, bench/probe_claim_plans.py)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reloptions FROM pg_class WHERE oid = %s::regclass",
            [ProcessingJob._meta.db_table],
        )
        options = set(cursor.fetchone()[0] or [])
    assert {"autovacuum_analyze_scale_factor=0", "autovacuum_analyze_threshold=1000"} <= options
