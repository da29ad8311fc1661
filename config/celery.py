import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterable

from celery import Celery, signals
from celery.app.amqp import AMQP
from kombu import Connection
from kombu.transport import redis as kombu_redis

from config.heartbeat import WorkerHeartbeat

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

# How long each task may run (its hard limit, seconds): one number per kind of work. The soft
# limit comes SOFT_MARGIN earlier so the task can record its outcome; the broker's visibility
# timeout (settings) derives from the longest. The database, not the broker, re-sends lost work
# (memory.sweep_jobs), so these can stay long.
HARD_TIME_LIMITS = {
    "memory.extract": 960,
    "memory.summarize": 330,
    "knowledge.ingest_document": 1900,
    "memory.sweep_jobs": 120,
    "memory.extract_unanswered": 120,
    # A run cut short is sent again by the sweep and goes on where it stopped.
    "accounts.workspace_delete": 1800,
}
SOFT_MARGIN = 60
# Redis re-delivers an unacknowledged task this long after it was sent: longer than any task may
# run, so a live task is never handed to a second worker (the claim would refuse it anyway).
VISIBILITY_TIMEOUT = max(HARD_TIME_LIMITS.values()) + 300
# A Redis that stops answering without closing its connections (paused, a failover, a
# partition) held a publish forever: kombu's sockets wait without a timeout by default, and a
# turn's jobs are sent on commit from the web process's request thread, which every turn's
# database work shares. Redis answers in microseconds: a send that waits this long fails, and
# the sweep sends its work (the database is the truth).
BROKER_SOCKET_TIMEOUT = 2.0
# One reconnect (a connection a Redis restart closed), then the send fails; after a failed
# send the next ones are not tried for BROKER_REST_SECONDS: each try costs a timeout while
# Redis hangs, and what is not sent meanwhile the sweep sends.
PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2}
BROKER_REST_SECONDS = 10.0


class _ReleasedConnectionGuard:
    """What kombu's Redis channels (plain, TLS and Sentinel alike) get from Engram: connection
    parameters that fail as Redis being unreachable (a connection error, which every cleanup
    path ignores) once their transport was released.

    Redis killed under a worker that held a message: Celery's consumer collects the broken
    connection, then closes it. The collect's close of the task channel stopped at the BRPOP
    in flight (a ConnectionError: the channel is left open), then its close of the remote-control
    channel at its fanout queue's delete (the transport's close_connection stops at the first
    failure), and it released the transport (`client = None`). The close that follows closed the
    task channel again, and its restore of the held message looked for the broker's address
    there: AttributeError("'NoneType' object has no attribute 'hostname'"), not a connection
    error, so the worker stopped ("Unrecoverable error") instead of reconnecting: in some of
    the runs where Redis is killed under a worker (1 in 3 to 1 in 6 here) — those where the
    BRPOP's own read had not failed first (tests/test_faults_kills.py).
    The same AttributeError as celery/kombu#970 and #582 (no fix upstream as of kombu 5.7).
    Nothing is lost by failing it: Redis is gone, and the database sends the job again."""

    connection: kombu_redis.Transport

    def _connparams(self, asynchronous: bool = False) -> dict[str, object]:
        if getattr(self.connection, "client", None) is None:
            from redis.exceptions import ConnectionError as RedisConnectionError

            logging.getLogger("engram.tasks").warning(
                "a broker channel used after its connection was released (Redis lost): its "
                "restore or ack is not sent; the visibility timeout and the sweep see to it"
            )
            raise RedisConnectionError("the broker connection was released (Redis lost)")
        return super()._connparams(asynchronous=asynchronous)  # type: ignore[misc]


class _QoS(kombu_redis.QoS):
    """kombu's Redis QoS, whose ack gives the message's prefetch slot back even when Redis did
    not take the ack. kombu's removed the message from Redis' unacked index first and freed
    the slot only then: an ack that timed out (Redis paused or partitioned as a task ended,
    which Celery logs as "Couldn't ack" and goes on) kept the slot taken for good, and a
    worker with a prefetch of one (`make run`'s: prefork, one pool process) never asked for
    another message — every later job waited in the database (tests/test_faults_kills.py).
    The message stays in Redis' unacked index, sent again after the visibility timeout, and
    the task's claim refuses it."""

    def ack(self, delivery_tag: str) -> None:
        try:
            super().ack(delivery_tag)
        except BaseException:
            self._quick_ack(delivery_tag)  # the slot back; kombu's own ack stopped before it
            raise


class _BrokerChannel(_ReleasedConnectionGuard, kombu_redis.Channel):
    """kombu's Redis channel (redis://, rediss://: its TLS parameters are kombu's own)."""

    QoS = _QoS


class _SentinelBrokerChannel(_ReleasedConnectionGuard, kombu_redis.SentinelChannel):
    """kombu's Sentinel channel (sentinel://)."""

    QoS = _QoS


class RedisTransport(kombu_redis.Transport):
    """kombu's Redis transport with `_BrokerChannel`."""

    Channel = _BrokerChannel


class SentinelTransport(kombu_redis.SentinelTransport):
    """kombu's Sentinel transport with `_SentinelBrokerChannel`."""

    Channel = _SentinelBrokerChannel


# kombu's choice for the broker URL's scheme -> Engram's. By class, not by scheme: kombu's
# alias table decides (redis:// and rediss:// -> its Transport, sentinel:// -> SentinelTransport).
_GUARDED_TRANSPORTS: dict[type, type] = {
    kombu_redis.Transport: RedisTransport,
    kombu_redis.SentinelTransport: SentinelTransport,
}


class BrokerConnection(Connection):
    """kombu's connection (Celery's, through `BrokerAMQP`) with the guarded transport of the
    class kombu chose. Naming the transport in settings instead (CELERY_BROKER_TRANSPORT, as
    before) replaced the URL's scheme in the connection: a rediss:// broker lost kombu's TLS
    default (its `ssl` is set for the scheme `rediss` only: without broker_use_ssl the worker
    spoke plain TCP to a TLS port), and the logs' URI read `config.celery:RedisTransport://`;
    so rediss:// and sentinel:// were left kombu's transport, and its defect."""

    def get_transport_cls(self) -> type:
        chosen = super().get_transport_cls()
        return _GUARDED_TRANSPORTS.get(chosen, chosen)


class BrokerAMQP(AMQP):
    """Celery's AMQP with `BrokerConnection`: every broker connection Celery makes (the
    worker's consumer, its pidbox, the producer pool of every send) is made by it."""

    Connection = BrokerConnection
    BrokerConnection = BrokerConnection


def time_limits(name: str) -> dict[str, int]:
    """`soft_time_limit` and `time_limit` for the task `name`, from HARD_TIME_LIMITS."""
    hard = HARD_TIME_LIMITS[name]
    return {"soft_time_limit": hard - SOFT_MARGIN, "time_limit": hard}


@signals.setup_logging.connect
def _keep_django_logging(**kwargs: object) -> None:
    """The worker and beat log as the web does (settings.LOGGING: one JSON object a line, with
    the level and the logger). Left to itself Celery replaced the root logger's handlers with
    its own format: a failed task's traceback spread over many lines no log pipeline could
    read as one event. A receiver here is what tells Celery to leave logging alone."""


app = Celery("engram", amqp=BrokerAMQP)
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# The worker's heartbeat file, for docker-compose's healthcheck (config/heartbeat.py).
app.steps["consumer"].add(WorkerHeartbeat)


@signals.task_prerun.connect
@signals.task_postrun.connect
def _connections_as_a_request(sender=None, **kwargs: object) -> None:
    """Around each task, what Django does around a request: a connection that broke or outlived
    CONN_MAX_AGE goes (back to the pool, settings.CELERY_DB_REUSE_MAX), the next is checked.
    Not for an eager task (apply()): it runs inside its caller's connection and transaction."""
    if getattr(getattr(sender, "request", None), "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()


@signals.celeryd_init.connect
def _unbounded(**kwargs: object) -> None:
    """The worker's connections without the statement and lock bounds a request has: its tasks
    are bounded by their hard time limits (config.common.database says why). `celery worker`
    only, before its pool processes start and before any connection is made."""
    from config.common import database

    database.lift()


@signals.celeryd_init.connect
def _warnings_logged(**kwargs: object) -> None:
    """A Python warning (Celery's SecurityWarning for a worker run as root, a library's
    deprecation) as a log line like the rest (settings.LOGGING, configured by now): warnings
    came before Celery's own logging set-up routes them to logging, and Python printed them on
    stderr, over several lines no log pipeline could read as one event."""
    logging.captureWarnings(True)


@signals.celeryd_init.connect
def _said_as_json(**kwargs: object) -> None:
    """Celery's own lines from its signal handlers ("worker: Warm shutdown (MainProcess)", the
    Ctrl+C warnings, SIGUSR1's stack dump) as JSON lines like the rest: Celery writes them with
    `safe_say`, straight to the file descriptor between two blank lines, past logging."""
    from celery.apps import worker

    worker.safe_say = _say


def _say(msg: str, f: object = None) -> None:
    """`celery.apps.worker.safe_say`, as one JSON line of the log's formatter (INFO, the logger
    `celery.apps.worker`, at LOG_LEVEL like its other lines) on stderr with the rest (Celery
    chose stdout for most). Still one os.write of a whole line, as Celery's: a signal handler
    must not enter a stream's buffer that the code it interrupted may be writing into."""
    from celery.apps import worker

    from config.common.logging import JsonFormatter

    log = logging.getLogger("celery.apps.worker")
    if sys.__stderr__ is None or not log.isEnabledFor(logging.INFO):
        return
    record = log.makeRecord(log.name, logging.INFO, __file__, 0, msg.strip(), (), None)
    line = JsonFormatter().format(record) + "\n"
    write = getattr(worker, "_original_os_write", os.write)  # not eventlet's, as Celery's
    with contextlib.suppress(OSError, ValueError):  # a closed stream: lost, as Celery's was
        write(sys.__stderr__.fileno(), line.encode("utf-8", "backslashreplace"))


@signals.celeryd_after_setup.connect
def _prints_logged(sender: str, instance, **kwargs: object) -> None:
    """What a task or a library prints (Celery's own CELERY_BENCH figures, a progress bar) as
    log lines of the logger `celery.redirected`, as Celery does when it sets logging up itself,
    which `_keep_django_logging` tells it not to: so it printed them as they came, plain. Before
    the pool starts: its processes inherit the redirection."""
    if instance.redirect_stdouts:
        instance.app.log.redirect_stdouts(instance.redirect_stdouts_level)


@signals.celeryd_after_setup.connect
def _banner_logged(sender: str, instance, **kwargs: object) -> None:
    """The worker's start as one log line with what its banner said (the banner, ASCII art
    and 20-odd plain lines on stdout amid the JSON ones, is not printed: as `--quiet`)."""
    import celery

    app = instance.app
    pool = instance.pool_cls if isinstance(instance.pool_cls, str) else instance.pool_cls.__module__
    instance.quiet = True  # read right after this signal: no banner
    logging.getLogger("celery.apps.worker").info(
        "%s starting",
        sender,
        extra={
            "celery": celery.__version__,
            "transport": app.connection().as_uri(),  # its password masked
            "concurrency": instance.concurrency,
            "pool": pool.rsplit(".", 1)[-1],
            "queues": ",".join(sorted(app.amqp.queues.consume_from)),
            "tasks": ",".join(sorted(n for n in app.tasks if not n.startswith("celery."))),
        },
    )


@signals.worker_process_init.connect
def _warm_up(**kwargs: object) -> None:
    """Each pool process loads what its tasks use (the embedding model, the tokenizer) as it
    starts, as a web process does: on the warm-ups' own thread, so the process is up at once
    and its first task waits only for what it needs (the embedder's lock). Loaded lazily
    instead, the tokenizer came with a conversation's first summary: in the soak the pool's
    RSS stepped 213 → 249 MB minutes into the run (tiktoken's cl100k is ~60 MB in a bare
    process) and the first extraction paid the model's load."""
    from config.common import health

    health.warm_all()


_broker = {"rest_until": 0.0}


def broker_resting() -> bool:
    """Whether a send failed within BROKER_REST_SECONDS (nothing is tried meanwhile)."""
    return time.monotonic() < _broker["rest_until"]


def send(task, *args: object, then: str) -> bool:
    """Send `task(*args)` now. A broker failure (Redis down or hanging) is logged, never raised:
    the work's row in the database is the truth, and `then` says what sends it later. Within
    BROKER_REST_SECONDS of a failure nothing is tried. Published by config.publish: apply_async's
    message without its layers (459 -> 180 µs of the sender's CPU a send)."""
    from kombu.exceptions import OperationalError as BrokerError
    from redis import RedisError

    from config.publish import publish

    log = logging.getLogger("engram.tasks")
    if broker_resting():  # the failure was logged as a warning
        log.info("%s%r not sent (Redis failed a moment ago); %s", task.name, args, then)
        return False
    try:
        publish(task, args, PUBLISH_RETRY_POLICY)
    except (BrokerError, RedisError, OSError) as exc:
        _broker["rest_until"] = time.monotonic() + BROKER_REST_SECONDS
        log.warning("%s%r not sent (%s: %s); %s", task.name, args, type(exc).__name__, exc, then)
        return False
    return True


def queue_lengths(queues: Iterable[str]) -> dict[str, int]:
    """How many messages wait in each broker queue (a Redis list each, in one round trip); {}
    when Redis does not answer (logged)."""
    import redis
    from django.conf import settings

    names = list(queues)
    try:
        client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=1)
        with client.pipeline(transaction=False) as pipe:
            for queue in names:
                pipe.llen(queue)
            sizes = pipe.execute()
    except (redis.RedisError, OSError) as exc:
        logging.getLogger("engram.tasks").warning(
            "queue lengths unavailable (%s)", type(exc).__name__
        )
        return {}
    return dict(zip(names, sizes, strict=True))
