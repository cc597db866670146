"""Non-blocking access to PostgreSQL through pools of txpostgres connections.

A pool keeps C{size} connections open.  One that breaks (a backend killed,
the server restarted, the network cut, a statement that failed and left
it in a transaction) is closed and replaced by a new one, with backoff
while the server cannot be reached, so every pool comes back to its full
size by itself.  While no connection is open, requests fail at once with
an error that L{is_unavailable} recognises (answered C{UNAVAILABLE}).

The reactor watches each open connection through a duplicate of its
socket that the pool closes itself: libpq closes its own socket as soon
as it sees the server gone, and a socket closed under the reactor's feet
leaves stale entries behind (C{EBADF}, lost readers, a crash at shutdown).

Every commit waits until it is durable and visible on the synchronous
standbys too (C{synchronous_commit = remote_apply}, which is C{on} where
there is no synchronous standby), whatever the server's default, unless the
pool is made with C{durable=False}: so a read on a synchronous standby sees
every write acknowledged before it (docs/RELIABILITY.md, Reads on the
replicas).

A database whose connection string names several hosts also gets a pool
on its standbys (L{replica_dsn}: C{target_session_attrs=prefer-standby}),
for the reads that may be answered there (L{Database.replicas}).
"""

import functools
import os
import re
from collections import deque
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Callable, List, Optional, Set, Tuple

import psycopg2
import psycopg2.errors
from psycopg2.extensions import TRANSACTION_STATUS_IDLE, make_dsn, parse_dsn
from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure
from txpostgres import reconnection, txpostgres

from marketplace.frame.quietlog import describe
from marketplace.frame.unavailable import count_as_unavailable, is_unavailable
from marketplace.postgres.outage import Outage
from marketplace.frame.deferreds import when_fired
from marketplace.frame.backoff import Backoff
from marketplace.frame.rotation import Rotation

#: Seconds a closing pool waits for a connection attempt under way.
STOP_WAIT = 5.0

#: Seconds before the first new attempt to open a connection that could
#: not be opened, and the longest wait between two attempts.
RETRY_FIRST = 0.1
RETRY_MAX = 2.0

#: Seconds a connection of a read pool serves before it is made again.
READ_CONNECTION_AGE = 30.0

#: Seconds an attempt to open a connection may take.
CONNECT_TIMEOUT = 10.0

#: TCP keepalives, so that a connection whose network is cut is noticed
#: within about half a minute (libpq ignores them on UNIX sockets).
KEEPALIVES = {
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
}


@dataclass
class PoolStats:
    """What a database's pool has been through, for marketplace.observability.metrics:
    statements that waited for a free connection, the seconds they waited,
    and connections made again after one broke."""

    waits: int = 0
    waited: float = 0.0
    reconnects: int = 0


class DatabaseDown(reconnection.ConnectionDead):
    """No connection to the database can serve the request now."""


UNAVAILABLE_ERRORS = (
    psycopg2.OperationalError,
    psycopg2.InterfaceError,
    reconnection.ConnectionDead,
    txpostgres.RollbackFailed,
)


count_as_unavailable(*UNAVAILABLE_ERRORS)


def connection_dsn(dsn: str, durable: bool = True) -> str:
    """C{dsn} with the pool's own settings: TCP keepalives where it names
    none, and C{synchronous_commit} remote_apply (off if not C{durable})."""
    params = parse_dsn(dsn)
    extra = {k: v for k, v in KEEPALIVES.items() if k not in params}
    commit = "remote_apply" if durable else "off"
    extra["options"] = f"{params.get('options', '')} -c synchronous_commit={commit}".strip()
    return make_dsn(dsn, **extra)


def replica_dsn(dsn: str) -> Optional[str]:
    """The connection string of the read pool of C{dsn}: its hosts, standbys
    preferred (C{target_session_attrs=prefer-standby}); None where C{dsn}
    names one host (no replicas: the reads stay on the one pool)."""
    params = parse_dsn(dsn)
    if len(params.get("host", "").split(",")) < 2:
        return None
    return make_dsn(dsn, target_session_attrs="prefer-standby")


def host_candidates(dsn: str) -> List[str]:
    """C{dsn} once per host it names (libpq's C{host=a,b,c}), in order.

    libpq can try several hosts itself, but on a non-blocking connection it
    swaps the socket under the reactor's feet when it moves to the next
    host; so the pool tries the hosts one connection each.  Settings such
    as C{target_session_attrs} apply to each; C{prefer-standby}, which on
    one host means any, becomes each host as a C{standby}, then each as
    C{any}.
    """
    params = parse_dsn(dsn)
    hosts = params.get("host", "").split(",")
    if len(hosts) < 2:
        return [dsn]
    if params.get("target_session_attrs") == "prefer-standby":
        return [
            one
            for attrs in ("standby", "any")
            for one in host_candidates(make_dsn(dsn, target_session_attrs=attrs))
        ]
    ports = params.get("port", "").split(",")
    addresses = params.get("hostaddr", "").split(",")
    candidates = []
    for i, host in enumerate(hosts):
        one = {"host": host}
        if ports != [""]:
            one["port"] = ports[i] if len(ports) > 1 else ports[0]
        if addresses != [""]:
            one["hostaddr"] = addresses[i]
        candidates.append(make_dsn(dsn, **one))
    return candidates


class _Cursor(txpostgres.Cursor):
    """A txpostgres cursor that the reactor watches through its
    connection's duplicate socket."""

    def fileno(self) -> int:
        return self._connection.fileno()


class _StatementCursor(txpostgres.Cursor):
    """A txpostgres cursor for one statement, waited for through its
    connection's own place among the reactor's readers.

    txpostgres's cursor takes its connection out of the reactor's readers,
    adds itself, takes itself out again when the answer is in, puts the
    connection back, and fires its Deferred on the reactor's next turn:
    four epoll changes and one more turn per statement, about a third of
    what a hot API costs the service.  This one leaves the connection a
    reader (txpostgres keeps every idle connection one) and has the
    connection pass its reads on; the Deferred fires as soon as the answer
    is in.
    """

    def _doit(self, name, *args, **kwargs):
        try:
            getattr(self._cursor, name)(*args, **kwargs)
        except Exception:
            return defer.fail()
        self._connection.under_way = self
        return self.poll()

    def finish(self) -> defer.Deferred:
        """End this statement on its connection; the Deferred to fire.

        Done before firing it: its callbacks may start the next statement
        on the same connection.
        """
        self._connection.under_way = None
        d, self._pollingD = self._pollingD, None
        return d

    def continuePolling(self, swallowErrors=False):  # noqa: N802 (txpostgres name)
        connection = self._connection
        try:
            state = self.pollable().poll()
        except Exception:
            failure = Failure()
            if connection.pollable().closed:
                # The duplicate socket is still open: taking it out of the
                # reactor is safe; the pool closes it.
                self.reactor.removeReader(connection)
            self.finish().errback(failure)
            return
        if state == psycopg2.extensions.POLL_OK:
            self.finish().callback(self)
        elif state == psycopg2.extensions.POLL_WRITE:
            # The connection, not this cursor: the reactor keeps one object
            # per file descriptor.
            self.reactor.addWriter(connection)
        elif state != psycopg2.extensions.POLL_READ:
            self.finish().errback(txpostgres.UnexpectedPollResult())
        # POLL_READ: the connection is a reader and passes its reads on.


class _Connection(txpostgres.Connection):
    """One connection of a L{_Pool}.

    Once connected, the reactor watches it through a duplicate of its
    socket (L{watch_fd}), closed by L{close} after the connection is out of
    the reactor.  It can run a statement on a L{_StatementCursor}.  When it
    breaks it closes itself, fails what was under way on it, and tells
    its pool.
    """

    cursorFactory = _Cursor

    #: The L{_StatementCursor} whose statement is under way, if any.
    under_way: Optional[_StatementCursor] = None
    #: The descriptor the reactor watches once connected.
    watch_fd: Optional[int] = None
    #: Whether the connection is closed (or broke).
    dead = False

    def __init__(self, reactor, pool: Optional["_Pool"] = None) -> None:
        super().__init__(reactor)
        self.pool = pool
        #: Names of the statements prepared on this connection.
        self.prepared_statements: Set[str] = set()
        #: When it was made (the reactor's seconds).
        self.made_at = reactor.seconds()

    def connect(self, dsn: str) -> defer.Deferred:  # type: ignore[override]
        """Open the connection; a Deferred of this connection."""
        try:
            self._connection = psycopg2.connect(dsn, async_=True)
        except Exception:
            return defer.fail()
        return self.poll().addCallback(self._connected)

    def _connected(self, _) -> "_Connection":
        if self.dead:
            raise DatabaseDown("the connection was closed while it was being opened")
        # Out of the reactor under the socket's own descriptor, in under the
        # duplicate's.
        self.reactor.removeReader(self)
        self.reactor.removeWriter(self)
        self.watch_fd = os.dup(self._connection.fileno())
        self.reactor.addReader(self)
        return self

    def fileno(self) -> int:
        if self.watch_fd is not None:
            return self.watch_fd
        connection = self._connection
        if connection is None or connection.closed:
            return -1
        return connection.fileno()

    @property
    def usable(self) -> bool:
        """Whether the connection may serve the next request: open, nothing
        under way on it, and not in a transaction."""
        connection = self._connection
        return not (
            self.dead
            or connection.closed
            or self.under_way is not None
            or self._cursors
            or self.lock.locked
            or connection.get_transaction_status() != TRANSACTION_STATUS_IDLE
        )

    def run_statement(self, sql: str, args: Any) -> defer.Deferred:
        """Run one statement on a L{_StatementCursor}; a Deferred of the cursor."""
        try:
            cursor = _StatementCursor(self._connection.cursor(), self)
        except Exception:
            return defer.fail()
        return cursor.execute(sql, args)

    def _runInteraction(self, interaction, *args, **kwargs):  # noqa: N802
        # txpostgres's, but a rollback that fails (the connection broke) is
        # not logged as an error and leaves the original failure be: the
        # transaction did not commit, and the pool replaces the connection.
        cursor = self.cursor()
        d = cursor.execute("begin")
        d.addCallback(interaction, *args, **kwargs)
        d.addCallback(self._commit, cursor)
        return d.addErrback(self._roll_back, cursor)

    @staticmethod
    def _commit(result, cursor):
        return cursor.execute("commit").addCallback(lambda _: result)

    def _roll_back(self, failure, cursor):
        if self.dead or self._connection.closed:
            return failure
        d = defer.maybeDeferred(cursor.execute, "rollback")
        return d.addBoth(lambda _: failure)

    def doWrite(self):  # noqa: N802 (Twisted name)
        if self.under_way is not None:
            self.reactor.removeWriter(self)
            self.under_way.continuePolling()
        else:
            super().doWrite()

    def doRead(self):  # noqa: N802 (Twisted name)
        if self.under_way is not None:
            self.under_way.continuePolling()
            return
        if self.watch_fd is None:
            # Still connecting: txpostgres's connection would become a
            # reader under the socket's own descriptor here.
            txpostgres._PollingMixin.doRead(self)
            return
        try:
            super().doRead()
        except Exception:
            self.broke(Failure())
            return
        if self.watch_fd is not None and self._connection.closed:
            self.broke(Failure(DatabaseDown("the server closed the connection")))

    def connectionLost(self, reason):  # noqa: N802 (Twisted name)
        # The reactor gave up on the connection (a hang-up, or an error).
        self.broke(reason)

    def broke(self, reason) -> None:
        """The connection is gone: close it and tell the pool."""
        if self.dead:
            return
        self.close(DatabaseDown(describe(reason)))
        if self.pool is not None:
            self.pool.connection_broke(self, reason)

    def close(self, error: Optional[Exception] = None) -> None:  # type: ignore[override]
        """Close the connection (again is harmless); what was under way on
        it fails with C{error}."""
        self.dead = True
        self.reactor.removeReader(self)
        self.reactor.removeWriter(self)
        connection = self._connection
        if connection is not None and not connection.closed:
            try:
                connection.close()
            except Exception:
                pass
        if self.watch_fd is not None:
            fd, self.watch_fd = self.watch_fd, None
            os.close(fd)
        error = error or DatabaseDown("the connection was closed")
        if self.under_way is not None:
            d = self.under_way.finish()
            if d is not None:
                d.errback(error)
        for cursor in list(self._cursors):
            d, cursor._pollingD = cursor._pollingD, None
            if d is not None:
                d.errback(error)
        d, self._pollingD = self._pollingD, None
        if d is not None:
            d.errback(error)


class _Pool:
    """C{size} connections to one database, each lent to one request at a
    time, and replaced when it breaks."""

    def __init__(
        self,
        dsn: str,
        size: int,
        reactor,
        outage: Outage,
        stats: Optional[PoolStats] = None,
        spread: bool = False,
    ) -> None:
        self.dsn = dsn
        #: The hosts to try, one connection each; the last that took first.
        self.hosts = Rotation(host_candidates(dsn))
        # (How many hosts the connection string names: a read pool's
        # candidates are each of them as a standby, then each as any.)
        self._host_count = len(parse_dsn(dsn).get("host", "").split(","))
        #: Whether each new connection starts from the host after the one
        #: the last went to (a read pool, over the standbys), rather than
        #: from the same one (the primary); such a pool also makes each
        #: connection again after L{READ_CONNECTION_AGE} seconds, so that
        #: one that landed on the primary (no standby was up) or on a
        #: standby since promoted moves back to a standby.
        self.spread = spread
        self.size = size
        self.reactor = reactor
        self.outage = outage
        self.stats = stats or PoolStats()
        #: Open connections, lent or not.
        self.connections: Set[_Connection] = set()
        #: Open connections not lent out, the most recently used last.
        self.idle: deque = deque()
        #: Requests waiting for a connection.
        self.waiters: deque = deque()
        self.closed = False
        self._connecting: Set[_Connection] = set()
        self._openers: Set[defer.Deferred] = set()
        self._sleeps: Set[defer.Deferred] = set()

    def start(self) -> defer.Deferred:
        """Open the connections; fires once each is open or retrying."""
        firsts = [self._open() for _ in range(self.size)]
        return defer.gatherResults(firsts).addCallback(lambda _: self)

    def _open(self, replacing: bool = False) -> defer.Deferred:
        """Open one connection (in place of one that broke, if C{replacing}),
        trying until it opens; a Deferred that fires after the first attempt."""
        first: defer.Deferred = defer.Deferred()
        opener = defer.Deferred.fromCoroutine(self._keep_opening(first, replacing))
        self._openers.add(opener)
        opener.addBoth(lambda _: self._openers.discard(opener))
        return first

    async def _open_one(self) -> "_Connection":
        """A connection to the first candidate host that accepts one,
        starting with the one that did last; raises the last failure."""
        failure: Optional[Exception] = None
        for index, candidate in self.hosts.in_turn():
            connection = _Connection(self.reactor, self)
            self._connecting.add(connection)
            timer = self.reactor.callLater(
                CONNECT_TIMEOUT,
                connection.close,
                DatabaseDown(f"no answer within {CONNECT_TIMEOUT:.0f} s"),
            )
            try:
                await connection.connect(candidate)
            except Exception as e:
                connection.close()
                failure = e
                if self.closed:
                    break
                continue
            finally:
                self._connecting.discard(connection)
                if timer.active():
                    timer.cancel()
            self.hosts.worked(index)
            if self.spread:
                self._spread_from(index)
            return connection
        raise failure if failure is not None else DatabaseDown("the pool is closed")

    def _spread_from(self, index: int) -> None:
        # The next connection starts with the standby after this one; after
        # a host taken as "any" (no standby answered), with the first
        # standby again (host_candidates: each host as a standby, then each
        # as any).
        hosts = self._host_count
        self.hosts.worked((index + 1) % hosts if index < hosts else 0)

    async def _keep_opening(self, first: defer.Deferred, replacing: bool) -> None:
        backoff = Backoff(RETRY_FIRST, RETRY_MAX)
        while not self.closed:
            try:
                connection = await self._open_one()
            except Exception as e:
                if self.closed:
                    break
                if self.connections:
                    # Others are open: the database is up, this one is not.
                    self.outage.cannot_open(describe(e))
                else:
                    self.outage.unreachable(describe(e))
                    self._fail_waiters()
                if not first.called:
                    first.callback(None)
                try:
                    await self._sleep(backoff.next())
                except defer.CancelledError:
                    break
                continue
            if self.closed:
                connection.close()
                break
            self.connections.add(connection)
            if replacing:
                self.stats.reconnects += 1
            self.outage.reachable()
            self._lend_or_keep(connection)
            break
        if not first.called:
            first.callback(None)

    def _sleep(self, seconds: float) -> defer.Deferred:
        d = task.deferLater(self.reactor, seconds, lambda: None)
        self._sleeps.add(d)
        return d.addBoth(self._slept, d)

    def _slept(self, result, d):
        self._sleeps.discard(d)
        return result

    def connection_broke(self, connection: _Connection, reason) -> None:
        """C{connection} closed itself: open another in its place."""
        if connection in self.connections:
            self._replace(connection, describe(reason))

    def _replace(self, connection: _Connection, reason: str) -> None:
        self.connections.discard(connection)
        try:
            self.idle.remove(connection)
        except ValueError:
            pass
        connection.close()
        if self.closed:
            return
        self.outage.connection_lost(reason)
        if not self.connections:
            self._fail_waiters()
        self._open(replacing=True)

    def _old(self, connection: _Connection) -> bool:
        return self.reactor.seconds() - connection.made_at > READ_CONNECTION_AGE

    def _make_again(self, connection: _Connection) -> None:
        """Close C{connection}, which works, and open another in its place
        (the read pool's rebalancing: no outage, no reconnect counted)."""
        self.connections.discard(connection)
        connection.close()
        if not self.closed:
            self._open()

    def _fail_waiters(self) -> None:
        waiters, self.waiters = self.waiters, deque()
        for d in waiters:
            self.outage.call_failed()
            d.errback(self._down())

    def _down(self) -> DatabaseDown:
        name = self.outage.name
        if self.closed:
            return DatabaseDown(f"the {name} database is closed")
        if self.outage.down:
            return DatabaseDown(f"the {name} database is down ({self.outage.reason})")
        return DatabaseDown(f"no connection to the {name} database is open yet")

    def _lend_or_keep(self, connection: _Connection) -> None:
        if self.waiters:
            self.waiters.popleft().callback(connection)
        else:
            self.idle.append(connection)

    def _wait(self) -> defer.Deferred:
        """A Deferred of the next connection given back."""
        if self.closed or not self.connections:
            self.outage.call_failed()
            return defer.fail(self._down())
        d: defer.Deferred = defer.Deferred()
        self.waiters.append(d)
        self.stats.waits += 1
        return d.addCallback(self._waited, perf_counter())

    def _waited(self, connection, since: float):
        self.stats.waited += perf_counter() - since
        return connection

    def _put_back(self, result, connection: _Connection):
        if connection in self.connections:
            if connection.usable and self.spread and self._old(connection):
                self._make_again(connection)
            elif connection.usable:
                self._lend_or_keep(connection)
            else:
                reason = describe(result) if isinstance(result, Failure) else "left busy"
                self._replace(connection, reason)
        if isinstance(result, Failure) and is_unavailable(result.value):
            self.outage.call_failed()
        return result

    def _run(self, method: str, args, kwargs) -> defer.Deferred:
        if self.idle:
            return self._run_on(self.idle.pop(), method, args, kwargs)
        return self._wait().addCallback(self._run_on, method, args, kwargs)

    def _run_on(self, connection: _Connection, method: str, args, kwargs):
        try:
            d = getattr(connection, method)(*args, **kwargs)
        except Exception:
            d = defer.fail()
        return d.addBoth(self._put_back, connection)

    def runQuery(self, *args, **kwargs) -> defer.Deferred:  # noqa: N802 (txpostgres name)
        """Rows of one statement."""
        return self._run("runQuery", args, kwargs)

    def runOperation(self, *args, **kwargs) -> defer.Deferred:  # noqa: N802
        """Run one statement for its effect."""
        return self._run("runOperation", args, kwargs)

    def runInteraction(self, interaction, *args, **kwargs) -> defer.Deferred:  # noqa: N802
        """Run C{interaction(cursor, …)} in one transaction."""
        return self._run("runInteraction", (interaction,) + args, kwargs)

    def run_prepared(self, name: str, prepare: str, execute: str, args: Any):
        """Rows of a statement prepared on each connection as C{name}."""
        idle = self.idle
        if idle:
            return self._run_prepared(idle.pop(), name, prepare, execute, args)
        return self._wait().addCallback(self._run_prepared, name, prepare, execute, args)

    def _run_prepared(self, connection, name, prepare, execute, args):
        if name in connection.prepared_statements:
            # The usual case, in one statement: the EXECUTE straight on a
            # cursor.  The pool lends the connection to this call alone, so
            # the connection's lock has nothing to guard.
            d = connection.run_statement(execute, args).addCallback(_fetch_all)
        else:
            d = defer.Deferred.fromCoroutine(
                _execute_prepared(connection, name, prepare, execute, args)
            )
        return d.addBoth(self._put_back, connection)

    def close(self) -> defer.Deferred:
        """Close the connections and stop opening new ones; fires once no
        attempt is under way, or after L{STOP_WAIT} seconds."""
        self.closed = True
        for d in list(self._sleeps):
            d.cancel()
        closing = DatabaseDown(f"the {self.outage.name} database is closed")
        for connection in list(self._connecting) + list(self.connections):
            connection.close(closing)
        self.connections.clear()
        self.idle.clear()
        self._fail_waiters()
        stopped = defer.DeferredList([when_fired(d) for d in self._openers])
        stopped.addTimeout(STOP_WAIT, self.reactor)
        return stopped.addErrback(lambda f: f.trap(defer.TimeoutError))


def _fetch_all(cursor):
    return cursor.fetchall()


async def _execute_prepared(connection, name: str, prepare: str, execute: str, args: Any):
    await connection.runOperation(prepare)
    connection.prepared_statements.add(name)
    return await connection.runQuery(execute, args)


_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


@functools.lru_cache(maxsize=None)
def prepared_forms(name: str, sql: str) -> Tuple[str, str]:
    """PREPARE and EXECUTE statements for C{sql}, whose placeholders are
    all named (C{%(key)s}); EXECUTE takes the same arguments as C{sql}."""
    names: List[str] = []
    for found in _PLACEHOLDER.findall(sql):
        if found not in names:
            names.append(found)
    body = _PLACEHOLDER.sub(lambda m: f"${names.index(m.group(1)) + 1}", sql)
    arguments = ", ".join(f"%({n})s" for n in names)
    return f"PREPARE {name} AS {body}", f"EXECUTE {name}({arguments})"


class Database(Service):
    """One PostgreSQL database, reached through a pool of C{size} connections.

    Starting the service opens the pool, stopping it closes the pool; with
    C{replicas}, a second pool on the standbys as well (L{Replicas}).  The
    connection string may be given now or later (L{set_dsn}), before the
    start, for a database that is started by the daemon itself
    (L{marketplace.postgres.embedded.EmbeddedServer}).
    """

    log = Logger()

    def __init__(
        self,
        name: str,
        dsn: Optional[str],
        size: int,
        reactor,
        durable: bool = True,
        owner_dsn: Optional[str] = None,
        replicas: bool = False,
    ):
        self.name = name
        #: Whether to open a pool on the standbys too, where the connection
        #: string names several hosts (L{replica_dsn}).
        self.read_replicas = replicas
        self.dsn = dsn
        #: The connection of the role that owns the tables, which applies
        #: schema.sql (postgres/roles.py); None: the pool's own.
        self.owner_dsn = owner_dsn
        self.size = size
        #: Whether every commit waits for the disk (see the module's doc).
        self.durable = durable
        self._reactor = reactor
        self._pool: Optional[_Pool] = None
        self._outage: Optional[Outage] = None
        #: Waits and reconnects of its pools, over restarts (metrics.py).
        self.stats = PoolStats()
        #: The pool on the standbys (None: no replicas, see L{replica_dsn}).
        self._read_pool: Optional[_Pool] = None
        self._read_outage: Optional[Outage] = None
        self.replicas = Replicas(self)

    def startService(self) -> defer.Deferred:
        """Open the pool; fires once each connection is up or retrying."""
        if self.dsn is None:
            raise RuntimeError(f"no connection string for the {self.name} database")
        super().startService()
        if self._outage is None:
            self._outage = Outage(self.name, self._reactor)
        dsn = connection_dsn(self.dsn, self.durable)
        self._pool = _Pool(dsn, self.size, self._reactor, self._outage, self.stats)
        started = [self._pool.start()]
        reads = replica_dsn(dsn) if self.read_replicas else None
        if reads is not None:
            if self._read_outage is None:
                self._read_outage = Outage(f"{self.name} (replicas)", self._reactor)
            self._read_pool = _Pool(
                reads, self.size, self._reactor, self._read_outage, spread=True
            )
            started.append(self._read_pool.start())
        return defer.gatherResults(started).addCallback(lambda _: None)

    @property
    def reactor(self):
        """The reactor the pool runs on."""
        return self._reactor

    def pool_counts(self) -> Tuple[int, int]:
        """How many of the pool's connections are lent out now, and how
        many are being made again (0, 0 when closed)."""
        pool = self._pool
        if pool is None:
            return 0, 0
        return len(pool.connections) - len(pool.idle), max(0, pool.size - len(pool.connections))

    def set_dsn(self, dsn: str) -> None:
        """Connect to C{dsn} from now on (connections open now stay)."""
        self.dsn = dsn
        if self._pool is not None:
            self._pool.dsn = connection_dsn(dsn, self.durable)
            self._pool.hosts = Rotation(host_candidates(self._pool.dsn))

    @property
    def open_connections(self) -> int:
        """How many of the pool's connections are open now."""
        return 0 if self._pool is None else len(self._pool.connections)

    @property
    def outage(self) -> Optional[Outage]:
        """What the log is told about this database's reachability."""
        return self._outage

    def stopService(self):
        super().stopService()
        pools = [p for p in (self._pool, self._read_pool) if p is not None]
        self._pool = self._read_pool = None
        if not pools:
            return None
        return defer.gatherResults([p.close() for p in pools]).addCallback(lambda _: None)

    @property
    def has_replicas(self) -> bool:
        """Whether this database has a pool on its standbys."""
        return self._read_pool is not None

    def read_pools(self) -> List[_Pool]:
        """The pools a read that may be answered by a standby tries, in
        turn: the standbys', then the primary's."""
        pools = [p for p in (self._read_pool, self._pool) if p is not None]
        if not pools:
            raise DatabaseDown(f"the {self.name} database is not open")
        return pools

    @property
    def pool(self) -> _Pool:
        if self._pool is None:
            raise DatabaseDown(f"the {self.name} database is not open")
        return self._pool

    def query(self, sql: str, args: Any = None) -> "defer.Deferred[List[tuple]]":
        """Rows of one statement."""
        return self.pool.runQuery(sql, args)

    async def one(self, sql: str, args: Any = None) -> Optional[tuple]:
        """The first row of one statement, or None."""
        rows = await self.pool.runQuery(sql, args)
        return rows[0] if rows else None

    def prepared(self, name: str, sql: str, args: dict) -> "defer.Deferred[List[tuple]]":
        """Rows of one statement that each connection prepares (as C{name})
        the first time it runs it, so PostgreSQL parses and plans it once
        per connection rather than on every call.  C{sql} names all its
        placeholders: C{%(key)s}."""
        prepare, execute = prepared_forms(name, sql)
        return self.pool.run_prepared(name, prepare, execute, args)

    def execute(self, sql: str, args: Any = None) -> defer.Deferred:
        """Run one statement for its effect."""
        return self.pool.runOperation(sql, args)

    def transaction(self, work: Callable, *args: Any) -> defer.Deferred:
        """Run C{work(cursor, *args)} in one transaction; it may return a
        Deferred or be a coroutine function."""

        def work_now(cursor):
            result = work(cursor, *args)
            if hasattr(result, "__await__") and not isinstance(result, defer.Deferred):
                return defer.Deferred.fromCoroutine(result)
            return result

        return self.pool.runInteraction(work_now)

    def run_in_transaction(self, work: Callable[["Transaction"], Any]) -> defer.Deferred:
        """Run C{work(transaction)} in one transaction: C{transaction} has
        this class's statement methods (L{Transaction}), so the functions
        that take a database can run inside it."""
        return self.transaction(lambda cursor: work(Transaction(cursor)))


class Replicas:
    """The statements of a L{Database} that only read, on its standbys
    where it has any: L{query}, L{one} and L{prepared} as L{Database} has
    them.  A statement that fails there because the standbys cannot be
    reached runs on the primary; without standbys, on the primary alone.
    What runs here may be as old as the standby's replay lag (see
    docs/RELIABILITY.md, Reads on the replicas)."""

    def __init__(self, database: "Database") -> None:
        self.database = database

    def _run(self, method: str, args: tuple) -> defer.Deferred:
        try:
            pools = self.database.read_pools()
        except DatabaseDown:
            return defer.fail()
        return run_in_turn(pools, method, args)

    def query(self, sql: str, args: Any = None) -> "defer.Deferred[List[tuple]]":
        """Rows of one statement."""
        return self._run("runQuery", (sql, args))

    async def one(self, sql: str, args: Any = None) -> Optional[tuple]:
        """The first row of one statement, or None."""
        rows = await self.query(sql, args)
        return rows[0] if rows else None

    def prepared(self, name: str, sql: str, args: dict) -> "defer.Deferred[List[tuple]]":
        """L{Database.prepared}, on a standby."""
        return self._run("run_prepared", (name,) + prepared_forms(name, sql) + (args,))


def run_in_turn(pools: List[_Pool], method: str, args: tuple) -> defer.Deferred:
    """C{method(*args)} of the first of C{pools}; on the next where it
    fails because its database cannot be reached (L{is_unavailable})."""
    d = getattr(pools[0], method)(*args)
    if len(pools) > 1:
        d.addErrback(_next_pool, pools[1:], method, args)
    return d


def _next_pool(failure, pools, method: str, args: tuple):
    # A standby cancels a query that holds up its replay for too long
    # (max_standby_streaming_delay) as a serialization failure: a read,
    # so it is simply run on the next pool.
    if not (is_unavailable(failure.value) or failure.check(psycopg2.errors.SerializationFailure)):
        return failure
    return run_in_turn(pools, method, args)


class Transaction:
    """The statements of one transaction, through the methods L{Database}
    has for one statement each, so code written for a database runs inside
    a transaction unchanged."""

    def __init__(self, cursor) -> None:
        self.cursor = cursor

    async def query(self, sql: str, args: Any = None) -> List[tuple]:
        """Rows of one statement."""
        await self.cursor.execute(sql, args)
        return self.cursor.fetchall()

    async def one(self, sql: str, args: Any = None) -> Optional[tuple]:
        """The first row of one statement, or None."""
        rows = await self.query(sql, args)
        return rows[0] if rows else None

    def prepared(self, name: str, sql: str, args: dict) -> "defer.Deferred[List[tuple]]":
        """L{Database.prepared}: here simply the statement."""
        return defer.Deferred.fromCoroutine(self.query(sql, args))

    async def execute(self, sql: str, args: Any = None) -> None:
        """Run one statement for its effect."""
        await self.cursor.execute(sql, args)

    async def transaction(self, work: Callable, *args: Any) -> Any:
        """L{Database.transaction}: inside this one, C{work} simply runs."""
        result = work(self.cursor, *args)
        if hasattr(result, "__await__"):
            result = await result
        return result
