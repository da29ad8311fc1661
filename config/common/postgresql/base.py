"""Django's PostgreSQL backend whose connection pool hands out a live connection at once after
the database restarted (settings.DATABASES' ENGINE).

After a restart (or a failover, or `pg_terminate_backend` of every session) every connection
idle in the pool is dead. psycopg_pool checks the one it takes out (CONN_HEALTH_CHECKS) and,
when it is broken, takes the next, but waits between two broken ones as between two failed
connects: 0 s, then 1 s, 2 s, 4 s... So the first request after a restart that met three or
more of them in a row waited seconds and, past the pool's timeout, was answered 503
database_unavailable with the database up: tests/test_faults.py's restart answered
[503, 503, 503, 503, 200] once 160 requests side by side had grown its pool. Here a broken connection is
discarded (the pool opens its replacement in the background) and the next one taken at once;
the request waits only for a connection that does not exist yet, as long as the pool's timeout.
A check failing costs no wait either: the connection is closed, so it is never taken again.

A request that came while the database was down waits in slices of WAIT_SLICE_SECONDS: the
pool tries to connect for `reconnect_timeout` (settings: 2 s) and then stops until a request
asks again, and a request already waiting did not ask again, so it waited out its timeout (10 s)
and was answered 503 although the database had been back for seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from time import monotonic
from typing import Any

import psycopg
from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.postgresql import base
from psycopg_pool import ConnectionPool, PoolTimeout

WAIT_SLICE_SECONDS = 1.0


class RestartTolerantPool(ConnectionPool):
    """A pool that checks what it hands out (`check`) without waiting between broken ones."""

    def __init__(self, *, check: Callable[[psycopg.Connection], None] | None, **kwargs: Any):
        super().__init__(check=None, **kwargs)  # its own check loop would wait
        self.checked = check

    def getconn(self, timeout: float | None = None) -> psycopg.Connection:
        timeout = self.timeout if timeout is None else timeout
        deadline = monotonic() + timeout
        while True:
            try:
                conn = super().getconn(min(deadline - monotonic(), WAIT_SLICE_SECONDS))
            except PoolTimeout:
                if monotonic() < deadline:
                    continue  # asking again starts a connect if the pool had given up
                raise PoolTimeout(f"couldn't get a connection after {timeout:.2f} sec") from None
            if self.checked is None:
                return conn
            try:
                self.checked(conn)
            except psycopg.Error:
                conn.close()  # returned closed, the pool discards it and opens another
                self.putconn(conn)
            else:
                return conn


class DatabaseWrapper(base.DatabaseWrapper):
    @property
    def pool(self) -> ConnectionPool | None:
        """Django's own (django.db.backends.postgresql.base), made a RestartTolerantPool."""
        options = self.settings_dict["OPTIONS"].get("pool")
        if self.alias == NO_DB_ALIAS or not options:
            return None
        if self.alias not in self._connection_pools:
            if self.settings_dict.get("CONN_MAX_AGE", 0) != 0:
                return super().pool  # Django refuses a pool with persistent connections
            connect_kwargs = self.get_connection_params()
            connect_kwargs["autocommit"] = True  # Django sets what it needs after
            pool = RestartTolerantPool(
                kwargs=connect_kwargs,
                open=False,  # opened at the first use (Django's get_new_connection)
                configure=self._configure_connection,
                check=(
                    ConnectionPool.check_connection
                    if self.settings_dict["CONN_HEALTH_CHECKS"]
                    else None
                ),
                **({} if options is True else options),
            )
            # Two threads may make one each: the first kept wins, the other is never opened.
            self._connection_pools.setdefault(self.alias, pool)
        return self._connection_pools[self.alias]
