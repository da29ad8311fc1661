"""JSON log lines that carry the request id."""

import contextvars
import json
import logging
from datetime import UTC, datetime

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class RoutineTasksFilter(logging.Filter):
    """Drops the INFO lines of the scheduled sweeps (beat's "Sending due task", the worker's
    "received" and "succeeded"): the job sweep runs every 5 s, so a quiet `make run` wrote three
    lines every 5 s (~52,000 a day) that said nothing happened. Their warnings and failures,
    and every other task's lines, stay; a sweep that finds work logs it itself."""

    _loggers = frozenset({"celery.beat", "celery.worker.strategy", "celery.app.trace"})
    _routine: frozenset[str] | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO or record.name not in self._loggers:
            return True
        return _task_named(record) not in self.routine()

    @classmethod
    def routine(cls) -> frozenset[str]:
        if cls._routine is None:
            from django.conf import settings

            cls._routine = frozenset(e["task"] for e in settings.CELERY_BEAT_SCHEDULE.values())
        return cls._routine


class LostAckFilter(logging.Filter):
    """kombu's CRITICAL "Couldn't ack <tag>, reason: <connection error>" (Celery's logger
    `celery.worker.request`), as the WARNING it is in Engram, saying why: a task that held its
    message while Redis was lost ran to its end, and its ack went to the channel the consumer
    closed (config.celery's guard fails it as Redis unreachable).
    Nothing is lost (tests/test_faults_kills.py, the lost broker connection): a Redis that kept
    the message sends it again after the visibility timeout, from its `unacked` hash, and the
    task's claim in the database refuses work already done; a Redis that lost it has nothing to
    send, and the database's job row already says done. Only the level and the words change:
    the tag and the reason stay; the traceback (kombu's reconnect, the socket's refusal) goes."""

    def filter(self, record: logging.LogRecord) -> bool:
        if (
            record.name == "celery.worker.request"
            and record.levelno == logging.CRITICAL
            and str(record.msg).startswith("Couldn't ack")
        ):
            from django.conf import settings

            visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
            record.msg = (
                f"{record.getMessage()}: the broker connection was lost while the task ran. "
                "Its work is done and recorded in the database; a Redis that kept the message "
                f"sends it again after the visibility timeout ({visibility} s), and the task's "
                "claim refuses it (every task is safe to run twice)"
            )
            record.args = ()
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
        return True


def _task_named(record: logging.LogRecord) -> object:
    """The task a Celery INFO record is about: beat passes (entry, task), the worker a dict."""
    args = record.args
    if isinstance(args, dict):
        return args.get("name")
    if isinstance(args, tuple) and len(args) == 2:
        return args[1]
    return None


_PLAIN = (str, int, float, bool, type(None))


class JsonFormatter(logging.Formatter):
    # (uvicorn's `color_message`: its message again, with terminal colour codes.)
    _skip = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
        "request_id",
        "message",
        "color_message",
    }

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        for key, value in record.__dict__.items():
            # Only plain values: a structure passed as `extra` is a library's context, and may
            # hold what is no log's business (Celery's `data` holds a task's args and kwargs:
            # an end user's id, a document's id).
            if key not in self._skip and not key.startswith("_") and isinstance(value, _PLAIN):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)
