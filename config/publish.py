"""A task's message published as Celery's `apply_async` publishes it, without its layers.

Every remembered turn sends its extraction job on commit (and a new conversation its title),
from the web process's request thread. Celery's apply_async -> send_task -> as_task_v2 ->
send_task_message -> kombu's Producer.publish ran 1,205 Python calls a send (the routing,
the execution options merged, its settings read through Celery's ChainMap, the queue's
declaration bound again, the result object) around one Redis LPUSH: 459 µs of CPU a send
against 28 µs for a bare LPUSH (bench/bench_publish_cpu.py, alternating runs). `publish`
builds the same protocol-2 message (the same headers, properties, body and queue; the same
producer pool, kombu channel and retry policy) in 553 calls, 180 µs: a remembered turn's
request thread 13.68M -> 10.94M instructions (callgrind, two sends a turn there;
bench/README.md, the twenty-fifth session).

Only what Engram sends goes this way: a task whose options and settings are those the
message below assumes (checked once per task, `_route`), sent outside a worker task (a task
sent from a task carries its parent's ids) and with no receiver of Celery's publish signals;
anything else goes through `apply_async` as before. tests/test_publish.py compares both
messages field by field and has a real worker run the lean one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from celery import signals
from celery.app.task import Task
from celery.utils.nodenames import anon_nodename
from celery.utils.saferepr import saferepr
from kombu.common import maybe_declare
from kombu.entity import maybe_delivery_mode
from kombu.exceptions import LimitExceeded, OperationalError
from kombu.serialization import dumps
from kombu.utils.uuid import uuid

if TYPE_CHECKING:
    from kombu import Queue

# What as_task_v2 puts in a message's body after the arguments when nothing is linked.
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


class _Route(NamedTuple):
    task: Task  # the task itself: the name Engram imports may be a Proxy (shared_task)
    queue: Queue  # declared (once per connection) as Celery does
    delivery_mode: int
    retry_policy: dict
    acquire_timeout: float | None


_routes: dict[str, _Route | None] = {}  # task name -> its route, None: not for the lean path


def publish(task: Task, args: tuple, retry_policy: dict) -> None:
    """Publish `task(*args)` as `task.apply_async(args, retry_policy=retry_policy)` does; its
    failures are apply_async's (kombu's OperationalError once the retries are spent)."""
    name = task.name
    route = _routes[name] if name in _routes else _routes.setdefault(name, _route(task))
    if route is None:
        task.apply_async(args, retry_policy=retry_policy)
        return
    task = route.task
    app = task.app
    if (
        app.current_worker_task is not None  # its ids go in the message: Celery's way
        or signals.before_task_publish.receivers
        or signals.after_task_publish.receivers
        or signals.task_sent.receivers
    ):
        task.apply_async(args, retry_policy=retry_policy)
        return
    if task.typing:  # apply_async's check of the arguments against the task's signature
        task.__header__(*args)
    task_id = uuid()
    headers = {
        "lang": "py",
        "task": name,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [task.time_limit, task.soft_time_limit],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": saferepr(args, app.amqp.argsrepr_maxsize, maxlevels=3),
        "kwargsrepr": "{}",
        "origin": anon_nodename(),
        "ignore_result": True,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    properties = {
        "correlation_id": task_id,
        "reply_to": app.thread_oid,
        "delivery_mode": route.delivery_mode,
    }
    content_type, encoding, body = dumps((args, {}, _EMBED), serializer="json")
    queue = route.queue
    policy = {**route.retry_policy, **retry_policy}  # as send_task_message merges them

    def put(producer) -> None:  # Producer._publish's part, on the producer's channel now
        channel = producer.channel
        if hash(queue) not in channel.connection.client.declared_entities:
            maybe_declare(queue, channel, retry=True, **policy)
        message = channel.prepare_message(body, 0, content_type, encoding, headers, properties)
        channel.basic_publish(message, exchange="", routing_key=queue.name)

    try:
        producer = app.producer_pool.acquire(block=True, timeout=route.acquire_timeout)
    except LimitExceeded as exc:  # as Celery's _acquire_producer
        raise OperationalError(f"Timed out waiting for a broker producer: {exc}") from exc
    try:
        connection = producer.connection
        # Producer.publish's: also the bounds of a reconnect its default channel makes
        connection.transport_options.update(policy)
        with connection._reraise_as_library_errors():
            connection.ensure(producer, put, **policy)(producer)
    finally:
        producer.release()


def _route(task: Task) -> _Route | None:
    """Where `task` goes and how, when its message is the one `publish` builds: otherwise None
    (apply_async sends it)."""
    task = task.app.tasks[task.name]
    app = task.app
    conf = app.conf
    options = {
        key: value
        for key, value in task._get_exec_options().items()
        if value is not None and key not in ("time_limit", "soft_time_limit")
    }
    routed = app.amqp.router.route(options, task.name, (), {}, task)
    queue = routed.get("queue")
    plain = (
        conf.task_protocol == 2
        and conf.task_publish_retry
        and not conf.task_always_eager
        and not conf.task_send_sent_event
        and not conf.task_compression
        and not conf.task_inherit_parent_priority
        and task.ignore_result
        and task._dump_pydantic_arguments is None
        and type(task).shadow_name is Task.shadow_name
        and not getattr(task, "__v2_compat__", False)
        and set(routed) <= {"queue", "serializer"}
        and routed.get("serializer", conf.task_serializer) == "json"
        and queue is not None
        and type(queue).__name__ == "Queue"  # not a Broadcast
        and queue.exchange.type == "direct"
    )
    if not plain:
        return None
    return _Route(
        task=task,
        queue=queue,
        delivery_mode=maybe_delivery_mode(
            queue.exchange.delivery_mode or conf.task_default_delivery_mode
        ),
        retry_policy=dict(conf.task_publish_retry_policy),
        acquire_timeout=conf.broker_pool_acquire_timeout,
    )
