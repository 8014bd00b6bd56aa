"""Services of a test's own, that it may read directly, stop and break without touching others.

``OwnDatabase``: the platform's SQLite file, or a PostgreSQL database created for the test on
the shared server (``DATABASE_URL``'s), that can refuse connections and is dropped at the end.
``OwnRedis``: a ``redis-server`` on a free port, without persistence.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sqlite3
import subprocess
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.run_isolation import RUN_ID
from tests.servers import free_port, stop_process
from tests.waiting import until_sync

# The PostgreSQL server when the run itself is not on PostgreSQL (DATABASE_URL unset).
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/postgres"

needs_postgresql = pytest.mark.skipif(
    not os.environ.get("DATABASE_URL"), reason="needs PostgreSQL: set DATABASE_URL"
)


class OwnDatabase:
    """The platform's database as the test reaches it directly.

    ``kind`` "sqlite": the embedded file in ``data_dir``. "postgresql": a database created here,
    named after ``purpose`` and the run, on the server of ``DATABASE_URL``; ``environ`` points the
    platform at it and ``drop`` removes it.
    """

    def __init__(self, kind: str, data_dir: Path, purpose: str = "test") -> None:
        self.kind = kind
        self.environ: dict[str, str] = {}
        self._lock: sqlite3.Connection | None = None
        self._reader = None
        if kind == "sqlite":
            self.path = Path(data_dir) / "voiceplatform.sqlite3"
            return
        import psycopg

        server = urllib.parse.urlsplit(os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL)
        self.name = f"vp_{purpose}_{RUN_ID}_{secrets.token_hex(3)}"
        self.admin_url = urllib.parse.urlunsplit(server._replace(path="/postgres"))
        self.url = urllib.parse.urlunsplit(server._replace(path=f"/{self.name}"))
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {self.name}")
        self.environ = {"DATABASE_URL": self.url}

    def rows(self, query: str) -> list[tuple]:
        if self.kind == "sqlite":
            with contextlib.closing(sqlite3.connect(self.path, timeout=20)) as connection:
                return connection.execute(query).fetchall()
        import psycopg

        # One connection for the test's polling (cut by refuse_connections, then opened again).
        for attempt in range(2):
            try:
                if self._reader is None or self._reader.closed:
                    self._reader = psycopg.connect(self.url, autocommit=True)
                return self._reader.execute(query).fetchall()
            except psycopg.OperationalError:
                self._reader = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def execute(self, statement: str) -> None:
        if self.kind == "sqlite":
            with contextlib.closing(sqlite3.connect(self.path, timeout=20)) as connection:
                connection.execute(statement)
                connection.commit()
            return
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(statement)

    def refuse_connections(self) -> None:
        """No new connection succeeds and every open one is cut, as when the server stops."""
        if self.kind == "sqlite":
            # The platform's writes wait on the lock (busy timeout), then fail: never stored.
            self._lock = sqlite3.connect(self.path, timeout=20, isolation_level=None)
            self._lock.execute("BEGIN EXCLUSIVE")
            return
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(f"ALTER DATABASE {self.name} ALLOW_CONNECTIONS false")
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (self.name,),
            )

            def backends() -> int:
                query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
                return admin.execute(query, (self.name,)).fetchone()[0]

            # A terminated backend takes a moment to exit; until then its session still works.
            until_sync(lambda: backends() == 0, "the database's connections gone")

    def allow_connections(self) -> None:
        if self.kind == "sqlite":
            if self._lock is not None:
                self._lock.execute("ROLLBACK")
                self._lock.close()
                self._lock = None
            return
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(f"ALTER DATABASE {self.name} ALLOW_CONNECTIONS true")

    def drop(self) -> None:
        self.allow_connections()
        if self._reader is not None:
            self._reader.close()
        if self.kind == "sqlite":
            return
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")


def timestamp(value: object) -> datetime | None:
    """A timestamp as either database returns it (SQLite: naive UTC text), None as None."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class OwnRedis:
    """A private redis-server on a free port, without persistence: a restart forgets everything.

    Started at once; skips the test when there is no ``redis-server`` binary."""

    def __init__(self, tmp_path: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.binary = binary
        self.port = free_port()
        self.tmp_path = tmp_path
        self.process: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--dir", str(self.tmp_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        until_sync(self.answers, "redis-server to answer")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    def client(self):
        import redis

        return redis.Redis(port=self.port, socket_timeout=1)

    def answers(self) -> bool:
        import redis

        try:
            with self.client() as client:
                return bool(client.ping())
        except redis.RedisError:
            return False
