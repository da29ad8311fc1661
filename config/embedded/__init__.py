"""The embedded default (PostgreSQL + pgvector and Redis run from PyPI packages) and `make run`.

Nothing here starts on import, and settings never start anything: the entry points that may
run without DATABASE_URL / REDIS_URL — `manage.py`, `make run` (supervisor.py), the test run
(tests/embedded_services.py) and the benchmarks — call `ensure_environment()` before Django loads.
"""

from config.embedded.servers import ensure_environment, stop_owned

__all__ = ["ensure_environment", "stop_owned"]
