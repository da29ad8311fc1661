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
