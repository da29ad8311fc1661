"""A turn whose web process died before its answer: the user's message is extracted all the
same, by the sweep of unanswered turns (memory.extract_unanswered, Celery beat)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db.models import F

from memory import tasks
from memory.models import Memory, Message, ProcessingJob
from memory.services.unanswered import unanswered_extract
from tests.factories import make_workspace
from tests.test_memory_turns import ctx, prepare, turn

pytestmark = pytest.mark.django_db

SAID = [{"role": "user", "content": "I am allergic to peanuts."}]


@pytest.fixture
def offline(settings):
    settings.OPENAI_BASE_URL = ""
    settings.ENGRAM_MEMORY_EXTRACTION = "offline"


def aged(minutes: float) -> None:
    """The messages stored `minutes` earlier than they were."""
    Message.objects.update(created_at=F("created_at") - dt.timedelta(minutes=minutes))


def sweep(capture) -> int:
    with capture(execute=False):
        return unanswered_extract()


def test_a_message_whose_answer_never_came_is_extracted_once(
    offline, django_capture_on_commit_callbacks
):
    workspace, _ = make_workspace()
    prepare(ctx(workspace, SAID, user_id="alice"))  # stored; then the process died: no finish
    [message] = Message.objects.all()
    assert not ProcessingJob.objects.exists()
    assert sweep(django_capture_on_commit_callbacks) == 0  # its turn may still be running
    aged(6)
    assert sweep(django_capture_on_commit_callbacks) == 1
    job = ProcessingJob.objects.get()
    assert (job.kind, job.upto_message_id, job.after_message_id) == ("extract", message.id, "")
    assert sweep(django_capture_on_commit_callbacks) == 0  # the database says it is done
    tasks.extract(job.id)
    assert list(Memory.objects.values_list("user_id", "text")) == [
        ("alice", "User is allergic to peanuts.")
    ]


def test_answered_turns_and_turns_of_an_agent_without_extraction_are_left_alone(
    offline, django_capture_on_commit_callbacks
):
    workspace, _ = make_workspace()
    with django_capture_on_commit_callbacks():
        turn(ctx(workspace, SAID, user_id="alice", conversation_id="answered"))
    prepare(ctx(workspace, SAID, user_id="bob", conversation_id="off", extraction=False))
    aged(6)
    assert ProcessingJob.objects.count() == 1  # the answered turn's own
    assert sweep(django_capture_on_commit_callbacks) == 0


def test_a_later_turn_of_the_conversation_covers_it_and_the_sweep_does_nothing(
    offline, django_capture_on_commit_callbacks
):
    workspace, _ = make_workspace()
    prepare(ctx(workspace, SAID, user_id="alice", conversation_id="c"))
    aged(6)
    with django_capture_on_commit_callbacks():
        turn(
            ctx(
                workspace,
                [{"role": "user", "content": "Hello?"}],
                user_id="alice",
                conversation_id="c",
            )
        )
    job = ProcessingJob.objects.get()
    assert job.after_message_id == "" and job.upto_message_id == Message.objects.last().id
    aged(6)
    assert sweep(django_capture_on_commit_callbacks) == 0


def test_the_beat_runs_it_every_minute_on_the_default_queue(settings):
    from config.celery import app

    entry = settings.CELERY_BEAT_SCHEDULE["extract-unanswered"]
    assert entry["task"] == "memory.extract_unanswered" and entry["task"] in app.tasks
    assert entry["schedule"] == settings.ENGRAM_UNANSWERED_SWEEP_SECONDS == 60
    assert app.amqp.router.route({}, "memory.extract_unanswered")["queue"].name == "default"
    assert tasks.extract_unanswered.soft_time_limit < tasks.extract_unanswered.time_limit
