"""Non-blocking access to PostgreSQL through txpostgres connection pools.

Each pool connection watches itself with txpostgres's
L{DeadConnectionDetector}: when the server goes away the connection fails
fast (the request is answered C{UNAVAILABLE}) and reconnects in the
background, so the service serves again by itself once the server is back.
"""

import functools
import re
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Callable, List, Optional, Tuple

import psycopg2
import psycopg2.errors
from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from txpostgres import reconnection, retrying, txpostgres

from marketplace.deferreds import when_fired

#: Seconds a closing pool waits for a connection attempt under way.
STOP_WAIT = 5.0

UNAVAILABLE_ERRORS = (
    psycopg2.OperationalError,
    psycopg2.InterfaceError,
    reconnection.ConnectionDead,
    txpostgres.RollbackFailed,
)


@dataclass
class PoolStats:
    """What a database's pool has been through, for marketplace.metrics:
    statements that waited for a free connection, the seconds they waited,
    and connections made again after the server went away."""

    waits: int = 0
    waited: float = 0.0
    reconnects: int = 0


class _TimedSemaphore(defer.DeferredSemaphore):
    """A pool's semaphore that counts the waits for a connection into
    C{stats}; a statement that finds a connection free costs nothing more."""

    def __init__(self, tokens: int, stats: PoolStats) -> None:
        super().__init__(tokens)
        self.stats = stats

    def acquire(self) -> defer.Deferred:
        if self.tokens > 0:
            return super().acquire()
        self.stats.waits += 1
        return super().acquire().addCallback(self._acquired, perf_counter())

    def _acquired(self, result, since: float):
        self.stats.waited += perf_counter() - since
        return result


def is_unavailable(error: BaseException) -> bool:
    """Whether C{error} means the database could not be reached (or gave
    up on the statement), so the request may simply be retried."""
    return isinstance(error, UNAVAILABLE_ERRORS)


def _is_dead(failure) -> bool:
    """Whether a failed statement means its connection is gone.

    Errors with an SQLSTATE outside the connection classes (a deadlock, a
    statement timeout) leave the connection usable.
    """
    if failure.check(psycopg2.InterfaceError, txpostgres.RollbackFailed):
        return True
    if failure.check(psycopg2.OperationalError):
        code = failure.value.pgcode
        return code is None or code.startswith("08") or code.startswith("57P")
    return False


class _Detector(reconnection.DeadConnectionDetector):
    """A dead-connection detector whose reconnection attempts can be stopped,
    for a pool that is closing."""

    _retrying: Optional[defer.Deferred] = None
    _stopped = False
    stats: Optional[PoolStats] = None

    def startReconnecting(self, f):  # noqa: N802 (txpostgres name)
        call = retrying.RetryingCall(self.reconnect)
        call.reactor = self.reactor
        self._retrying = call.start(self.reconnectionIterator())
        self._retrying.addCallbacks(self._reconnected, self._gave_up)

    def _reconnected(self, _) -> None:
        if self._stopped:
            self._close()
        else:
            if self.stats is not None:
                self.stats.reconnects += 1
            self.connectionRecovered()

    def _gave_up(self, failure) -> None:
        if not self._stopped:
            # Only stop() ends the retrying: its backoff never runs out.
            failure.trap(defer.CancelledError)

    def _close(self) -> None:
        try:
            self.reconnectable.close()
        except Exception:
            pass

    def stop(self) -> defer.Deferred:
        """Give up reconnecting; fires once no attempt is under way."""
        self._stopped = True
        retrying = self._retrying
        if retrying is None or retrying.called:
            return defer.succeed(None)
        try:
            retrying.cancel()
        except psycopg2.Error:
            # psycopg2 cannot cancel a connection attempt that is under
            # way: it ends by itself, and _reconnected closes what it made.
            pass
        return when_fired(retrying)


class _QuickCursor(txpostgres.Cursor):
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
        self._connection.quick = self
        return self.poll()

    def finish(self) -> defer.Deferred:
        """End this statement on its connection; the Deferred to fire.

        Done before firing it: its callbacks may start the next statement
        on the same connection.
        """
        self._connection.quick = None
        d, self._pollingD = self._pollingD, None
        return d

    def continuePolling(self, swallowErrors=False):  # noqa: N802 (txpostgres name)
        connection = self._connection
        try:
            state = self.pollable().poll()
        except Exception:
            failure = Failure()
            if connection.pollable().closed:
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
    """A txpostgres connection that reports a server gone away while the
    connection was idle to its detector, instead of as an unhandled error,
    and that can run a statement on a L{_QuickCursor}."""

    #: The L{_QuickCursor} whose statement is under way, if any.
    quick: Optional[_QuickCursor] = None

    def run_quick(self, sql: str, args: Any) -> defer.Deferred:
        """Run one statement on a L{_QuickCursor}; a Deferred of the cursor."""
        try:
            cursor = _QuickCursor(self._connection.cursor(), self)
        except Exception:
            return defer.fail()
        return cursor.execute(sql, args)

    def doWrite(self):  # noqa: N802 (Twisted name)
        if self.quick is not None:
            self.reactor.removeWriter(self)
            self.quick.continuePolling()
        else:
            super().doWrite()

    def doRead(self):  # noqa: N802 (Twisted name)
        if self.quick is not None:
            self.quick.continuePolling()
            return
        try:
            super().doRead()
        except psycopg2.Error:
            self.reactor.removeReader(self)
            if self.detector is not None:
                self.detector.checkForDeadConnection(Failure())

    def connectionLost(self, reason):  # noqa: N802 (Twisted name)
        if self.quick is not None:
            # Let the statement under way fail with the connection's error.
            self.quick.continuePolling()
            if self.quick is not None:
                self.quick.finish().errback(reason)
        super().connectionLost(reason)


class _Pool(txpostgres.ConnectionPool):
    """A txpostgres pool whose connections reconnect by themselves and
    which hands out a live connection before a dead one."""

    def __init__(self, dsn: str, size: int, reactor, stats: Optional[PoolStats] = None) -> None:
        self.reactor = reactor
        self.stats = stats or PoolStats()
        super().__init__(None, dsn, min=size)
        self._semaphore = _TimedSemaphore(size, self.stats)

    def connectionFactory(self, reactor, cooperator):  # noqa: N802 (txpostgres name)
        detector = _Detector(deathChecker=_is_dead, reactor=reactor)
        detector.stats = self.stats
        return _Connection(reactor, cooperator, detector=detector)

    def start(self):
        log = Logger()
        connections = list(self.connections)

        def connect(connection):
            d = connection.connect(*self.connargs, **self.connkw)

            def failed(failure):
                log.warn(
                    "cannot connect to the database yet ({error}); retrying",
                    error=failure.getErrorMessage().strip(),
                )
                connection.detector.checkForDeadConnection(failure)

            return d.addErrback(failed)

        return defer.DeferredList([connect(c) for c in connections]).addCallback(
            lambda _: self
        )

    def _take(self):
        for connection in self.connections:
            if not connection.detector.connectionIsDead:
                self.connections.remove(connection)
                return connection
        return self.connections.pop()

    def _runQuery(self, *args, **kwargs):
        c = self._take()
        return c.runQuery(*args, **kwargs).addBoth(self._putBackAndPassthrough, c)

    def _runOperation(self, *args, **kwargs):
        c = self._take()
        return c.runOperation(*args, **kwargs).addBoth(self._putBackAndPassthrough, c)

    def _runInteraction(self, interaction, *args, **kwargs):
        c = self._take()
        return c.runInteraction(interaction, *args, **kwargs).addBoth(
            self._putBackAndPassthrough, c
        )

    def close(self) -> defer.Deferred:
        """Close the connections; fires once no reconnection is under way,
        or after L{STOP_WAIT} seconds (a connection attempt to a host that
        does not answer can take minutes)."""
        stopped = defer.gatherResults([c.detector.stop() for c in self.connections])
        super().close()
        stopped.addTimeout(STOP_WAIT, self.reactor)
        return stopped.addErrback(lambda f: f.trap(defer.TimeoutError))

    def run_prepared(self, name: str, prepare: str, execute: str, args: Any):
        semaphore = self._semaphore
        if not semaphore.tokens:
            return semaphore.run(self._run_prepared, name, prepare, execute, args)
        # A connection is free: what semaphore.run does, without its
        # Deferred layers.
        semaphore.tokens -= 1
        return self._run_prepared(name, prepare, execute, args).addBoth(self._release)

    def _release(self, result):
        self._semaphore.release()
        return result

    def _run_prepared(self, name, prepare, execute, args):
        c = self._take()
        prepared = c.__dict__.get("prepared_statements", ())
        if name in prepared and not c.detector.connectionIsDead and not c.lock.locked:
            # The usual case, in one statement: the EXECUTE straight on a
            # cursor.  The pool lends the connection to this call alone, so
            # the connection's lock has nothing to guard; what the
            # detector's callChecking adds is done by _prepared_failed.
            d = c.run_quick(execute, args)
            d.addCallbacks(
                _fetch_all, self._prepared_failed, errbackArgs=(c, name, prepare, execute, args)
            )
        else:
            d = defer.Deferred.fromCoroutine(
                _execute_prepared(c, name, prepare, execute, args)
            )
        return d.addBoth(self._putBackAndPassthrough, c)

    def _prepared_failed(self, failure, c, name, prepare, execute, args):
        c.detector.checkForDeadConnection(failure)
        if failure.check(psycopg2.errors.InvalidSqlStatementName):
            # The connection was made anew since it was prepared there.
            c.prepared_statements.clear()
            return defer.Deferred.fromCoroutine(
                _execute_prepared(c, name, prepare, execute, args)
            )
        return failure


def _fetch_all(cursor):
    return cursor.fetchall()


async def _execute_prepared(connection, name: str, prepare: str, execute: str, args: Any):
    prepared = connection.__dict__.setdefault("prepared_statements", set())
    if name not in prepared:
        await connection.runOperation(prepare)
        prepared.add(name)
    try:
        return await connection.runQuery(execute, args)
    except psycopg2.errors.InvalidSqlStatementName:
        # The connection was made anew since it was prepared there.
        prepared.clear()
        await connection.runOperation(prepare)
        prepared.add(name)
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

    The connection string may be given now or later (L{set_dsn}), for a
    database that is started by the service itself.
    """

    log = Logger()

    def __init__(self, name: str, dsn: Optional[str] = None, size: int = 4, reactor=None):
        self.name = name
        self.dsn = dsn
        self.size = size
        self._reactor = reactor
        self._pool: Optional[_Pool] = None
        #: Waits and reconnects of its pools, over restarts (metrics.py).
        self.stats = PoolStats()

    def start(self) -> defer.Deferred:
        """Open the pool; fires once each connection is up or retrying."""
        if self.dsn is None:
            raise RuntimeError(f"no connection string for the {self.name} database")
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        self._pool = _Pool(self.dsn, self.size, self._reactor, self.stats)
        return self._pool.start()

    def pool_counts(self) -> Tuple[int, int]:
        """How many of the pool's connections are lent out now, and how
        many of the idle ones are known to be dead (0, 0 when closed)."""
        pool = self._pool
        if pool is None:
            return 0, 0
        idle = list(pool.connections)
        dead = sum(1 for c in idle if c.detector.connectionIsDead)
        return max(0, pool.min - len(idle)), dead

    def stopService(self):
        super().stopService()
        if self._pool is None:
            return None
        pool, self._pool = self._pool, None
        return pool.close()

    @property
    def pool(self) -> _Pool:
        if self._pool is None:
            raise psycopg2.InterfaceError(f"the {self.name} database is not open")
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
        Deferred or be a coroutine function.

        The transaction's commit waits for the disk even where the database
        lets single statements commit asynchronously (the embedded default,
        see embedded.py): purchases, votes and saved carts are made here.
        """

        def work_now(_, cursor):
            result = work(cursor, *args)
            if hasattr(result, "__await__") and not isinstance(result, defer.Deferred):
                return defer.Deferred.fromCoroutine(result)
            return result

        def run(cursor):
            d = cursor.execute("SET LOCAL synchronous_commit = on")
            return d.addCallback(work_now, cursor)

        return self.pool.runInteraction(run)
