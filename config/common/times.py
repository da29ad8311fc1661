"""Times at the API's edge: the one reader of a time a client names in a query (`/v1/usage`'s
`start` / `end`, the memory list's `created_after` / `created_before`), and the one writer of a
time an answer shows (`unix_seconds`)."""

import datetime as dt
import math

from config.common.errors import Invalid


def query_time(raw: str | None, name: str) -> dt.datetime | None:
    """Unix seconds or an ISO 8601 date or time (UTC unless it says otherwise), in UTC; None
    when absent; Invalid naming `name` for anything else."""
    if raw is None or raw == "":
        return None
    try:
        digits = raw.removeprefix("-")
        if digits.isascii() and digits.isdigit():
            return dt.datetime.fromtimestamp(int(raw), dt.UTC)
        moment = dt.datetime.fromisoformat(raw)
        return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)
    except (ValueError, OverflowError, OSError):
        raise Invalid(
            f"{name} must be Unix seconds or an ISO 8601 date or time, e.g. 2026-12-01.",
            field=name,
        ) from None


def unix_seconds(value: dt.datetime | None) -> int | None:
    """A time as the API shows it: Unix seconds, rounded down as clocks read them (int() rounded
    a message said at 1969-12-31T23:59:59.5Z up to 0, 1970-01-01)."""
    return math.floor(value.timestamp()) if value is not None else None
