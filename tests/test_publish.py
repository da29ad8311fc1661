"""config.publish: the message a send publishes without apply_async is Celery's own, and a real
worker runs it (a remembered turn's extraction job, sent on commit from the web's request)."""

from __future__ import annotations

import base64
import json

import pytest
import redis
from django.conf import settings as django_settings

from tests.test_conversations_chat import ask, client, wait_processed
from tests.upstream import Reply, openai_completion


def _tasks():
    """Every task Engram sends through config.celery.send."""
    from accounts.tasks import workspace_delete_task
    from memory import tasks
    from memory.background.titles import title_conversation
    from memory.knowledge.tasks import ingest_document

    return [
        tasks.extract,
        tasks.summarize,
        title_conversation,
        ingest_document,
        workspace_delete_task,
    ]


def _refused(*args, **kwargs):
    raise AssertionError("sent through apply_async, not config.publish")


def _popped(broker: redis.Redis, queue: str) -> dict:
    """The queue's one message, decoded, with what differs from send to send left out."""
    [raw] = broker.lrange(queue, 0, -1)
    broker.delete(queue)
    message = json.loads(raw)
    message["body"] = json.loads(base64.b64decode(message["body"]))
    task_id = message["headers"].pop("id")
    assert message["headers"].pop("root_id") == task_id
    assert message["properties"].pop("correlation_id") == task_id
    assert message["properties"].pop("delivery_tag") not in ("", task_id)
    return message


@pytest.mark.parametrize("index", range(5))
def test_the_published_message_is_the_one_apply_async_publishes(index, monkeypatch):
    from config.celery import PUBLISH_RETRY_POLICY, app
    from config.publish import publish

    task = _tasks()[index]
    broker = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    queue = app.amqp.router.route({}, task.name, (), {}, task)["queue"].name
    broker.delete(queue)

    task.apply_async(("an-id-1",), retry_policy=PUBLISH_RETRY_POLICY)
    theirs = _popped(broker, queue)
    with monkeypatch.context() as patched:
        patched.setattr(task, "apply_async", _refused)
        publish(task, ("an-id-1",), PUBLISH_RETRY_POLICY)
    ours = _popped(broker, queue)

    assert ours == theirs
    assert ours["headers"]["task"] == task.name
    assert ours["properties"]["delivery_info"] == {"exchange": "", "routing_key": queue}
    assert ours["body"] == [["an-id-1"], {}, {"callbacks": None, "errbacks": None,
                                               "chain": None, "chord": None}]  # fmt: skip


def test_a_wrong_argument_count_is_refused_before_anything_is_sent():
    from config.celery import PUBLISH_RETRY_POLICY
    from config.publish import publish
    from memory import tasks

    with pytest.raises(TypeError):
        publish(tasks.extract, ("a", "b", "c"), PUBLISH_RETRY_POLICY)


def test_a_remembered_turns_jobs_are_published_lean_and_run_by_a_real_worker(
    engram_server, owner, upstream, celery_worker, settings, monkeypatch
):
    from memory import tasks
    from memory.background.titles import title_conversation

    settings.ENGRAM_MEMORY_EXTRACTION = "offline"
    for task in (tasks.extract, tasks.summarize, title_conversation):
        monkeypatch.setattr(task, "apply_async", _refused)
    _, key = owner
    alice = client(engram_server, key, **{"x-user-id": "alice", "x-conversation-id": "lean"})
    upstream.script(Reply(json=openai_completion("Lisbon is lovely!")))
    ask(alice, "I live in Lisbon and I work at Acme.")

    body = wait_processed(engram_server, key, "lean")
    assert body["processing"]["done"] >= 1 and body["processing"]["failed"] == 0
