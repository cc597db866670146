"""One database pool and the ways its connections break.

A statement that fails, a transaction whose work fails in Python, the
network cut in the middle of a statement (a proxy between the pool and
PostgreSQL drops both sides), the server refusing connections for a
while: afterwards the pool is back to its full size and serves; calls
meanwhile fail with an error that is_unavailable recognises; the reactor
holds no closed descriptor; the log says once that the database is down.
"""

import psycopg2
from psycopg2.extensions import make_dsn, parse_dsn
from twisted.internet import defer, protocol, reactor, task, threads
from twisted.internet.endpoints import TCP4ServerEndpoint, UNIXClientEndpoint, connectProtocol
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from marketplace.postgres.database import (
    Database,
    _Pool,
    connection_dsn,
    host_candidates,
    is_unavailable,
    replica_dsn,
)
from tests.db import test_dsns, test_server
from tests.test_crash_pools import assert_reactor_clean
from tests.test_unavailable import allow_connections

SIZE = 3


def sleep(seconds: float) -> defer.Deferred:
    return task.deferLater(reactor, seconds, lambda: None)


class _Pipe(protocol.Protocol):
    """One side of a proxied connection; the other side is C{peer}."""

    peer = None

    def dataReceived(self, data):
        self.peer.transport.write(data)

    def connectionLost(self, reason=None):
        if self.peer is not None and self.peer.transport.connected:
            self.peer.transport.abortConnection()


class _Front(_Pipe):
    def connectionMade(self):
        self.transport.pauseProducing()
        self.factory.fronts.append(self)
        d = connectProtocol(UNIXClientEndpoint(reactor, self.factory.socket), _Pipe())
        d.addCallback(self._joined)

    def _joined(self, back):
        self.peer, back.peer = back, self
        self.transport.resumeProducing()


class CutProxy(protocol.Factory):
    """A TCP proxy to PostgreSQL's UNIX socket whose connections can be cut."""

    protocol = _Front

    def __init__(self, socket: str) -> None:
        self.socket = socket
        self.fronts = []

    def cut(self) -> None:
        for front in self.fronts:
            front.transport.abortConnection()
        self.fronts = []


def _socket_path(dsn: str) -> str:
    params = parse_dsn(dsn)
    return f"{params['host']}/.s.PGSQL.{params.get('port', 5432)}"


class PoolTests(unittest.TestCase):
    timeout = 120

    async def open(self, dsn=None) -> Database:
        database = Database("product", dsn or test_dsns()["product"], size=SIZE, reactor=reactor)
        await database.startService()
        self.addCleanup(database.stopService)
        return database

    async def assert_full_and_serving(self, database: Database) -> None:
        for _ in range(100):
            if database.open_connections == SIZE:
                break
            await sleep(0.1)
        self.assertEqual(database.open_connections, SIZE)
        rows = await defer.gatherResults(
            [database.query("SELECT %s::int", (n,)) for n in range(4 * SIZE)]
        )
        self.assertEqual(rows, [[(n,)] for n in range(4 * SIZE)])
        self.assertEqual(database.open_connections, SIZE)
        assert_reactor_clean(self)

    async def test_embedded_server_times_wal_flushes(self):
        # What a durable commit waits for shows in pg_stat_io (object wal).
        if test_server() is None:
            raise unittest.SkipTest("the tests run on a database of their own")
        database = await self.open()
        self.assertEqual(await database.query("SHOW track_wal_io_timing"), [("on",)])

    async def test_failed_statements_keep_the_pool(self):
        database = await self.open()
        for _ in range(2 * SIZE):
            with self.assertRaises(psycopg2.ProgrammingError):
                await database.query("SELECT no_such_column FROM no_such_table")
        await self.assert_full_and_serving(database)

    async def test_transaction_failing_in_python_is_rolled_back(self):
        database = await self.open()
        await database.execute("CREATE TEMP TABLE IF NOT EXISTS t (n int)")

        async def work(cursor):
            await cursor.execute("SELECT 1")
            raise ValueError("the work failed")

        for _ in range(2 * SIZE):
            with self.assertRaises(ValueError):
                await database.transaction(work)
        # No connection was handed back inside its transaction.
        for connection in database.pool.idle:
            self.assertEqual(connection._connection.get_transaction_status(), 0)
        await self.assert_full_and_serving(database)

    async def test_network_cut_mid_statement(self):
        proxy = CutProxy(_socket_path(test_dsns()["product"]))
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(proxy)
        self.addCleanup(port.stopListening)
        dsn = make_dsn(test_dsns()["product"], host="127.0.0.1", port=port.getHost().port)
        database = await self.open(dsn)
        self.assertEqual(database.open_connections, SIZE)
        slow = [database.query("SELECT pg_sleep(5)") for _ in range(SIZE)]
        waiting = database.query("SELECT 1")
        await sleep(0.3)
        proxy.cut()
        for d in slow + [waiting]:
            try:
                await d
            except Exception as e:
                self.assertTrue(is_unavailable(e), repr(e))
            else:
                self.assertIs(d, waiting)
        await self.assert_full_and_serving(database)

    async def test_server_refusing_then_back(self):
        messages = []

        def observe(event):
            text = event.get("log_format") or ""
            if "database" in text:
                messages.append(text)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        database = await self.open()
        await threads.deferToThread(allow_connections, "product", False)
        self.addCleanup(threads.deferToThread, allow_connections, "product", True)
        failures = 0
        for _ in range(30):
            try:
                await database.query("SELECT 1")
            except Exception as e:
                self.assertTrue(is_unavailable(e), repr(e))
                failures += 1
            await sleep(0.05)
        self.assertGreater(failures, 20)
        self.assertEqual(database.open_connections, 0)
        await threads.deferToThread(allow_connections, "product", True)
        await self.assert_full_and_serving(database)
        down = [m for m in messages if "is down" in m]
        self.assertEqual(len(down), 1, messages)
        self.assertEqual(len([m for m in messages if "is back after" in m]), 1, messages)
        self.assertTrue(database.outage is not None and not database.outage.down)


class ConnectionSettingsTests(unittest.SynchronousTestCase):
    def test_commits_wait_for_the_disk_and_the_standbys_by_default(self):
        dsn = parse_dsn(connection_dsn("dbname=x options='-c work_mem=1MB'"))
        self.assertEqual(dsn["options"], "-c work_mem=1MB -c synchronous_commit=remote_apply")
        self.assertEqual(dsn["keepalives"], "1")

    def test_unsafe_mode(self):
        dsn = parse_dsn(connection_dsn("postgresql:///x?keepalives_idle=3", durable=False))
        self.assertEqual(dsn["options"], "-c synchronous_commit=off")
        self.assertEqual(dsn["keepalives_idle"], "3")

    def test_no_read_pool_on_one_host(self):
        self.assertIsNone(replica_dsn("host=db1 dbname=x"))
        self.assertIsNone(replica_dsn("dbname=x"))

    def test_read_pool_prefers_each_standby_then_any_host(self):
        reads = replica_dsn("host=a,b port=5,6 dbname=x target_session_attrs=read-write")
        found = [(p["host"], p["port"], p["target_session_attrs"])
                 for p in map(parse_dsn, host_candidates(reads))]
        self.assertEqual(found, [("a", "5", "standby"), ("b", "6", "standby"),
                                 ("a", "5", "any"), ("b", "6", "any")])

    def test_read_pool_spreads_over_the_standbys(self):
        pool = _Pool(replica_dsn("host=a,b,c dbname=x"), 3, None, None, spread=True)
        pool._spread_from(1)  # a connection on standby b: the next tries c first
        self.assertEqual(pool.hosts.current, 2)
        pool._spread_from(2)  # then a, never a host taken as "any"
        self.assertEqual(pool.hosts.current, 0)
        pool._spread_from(5)  # on c as any: the next tries the standbys again
        self.assertEqual(pool.hosts.current, 0)
