"""The fault-injecting proxy of tests/faultproxy.py: it passes bytes through
unchanged, and cuts where it is told, once."""

import psycopg2
from twisted.internet import defer, protocol, reactor, task, threads
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.protocols.basic import Int32StringReceiver
from twisted.trial import unittest

from tests.db import test_dsns
from tests.faultproxy import (
    DOWN,
    HALF,
    UP,
    FrameCut,
    Int32Frames,
    PostgresMessages,
    QueryCut,
    postgres_target,
    proxied_dsn,
    query_text,
    service_target,
    sql_shape,
    start_proxy,
)
from tests.support import frame


class SplitTests(unittest.SynchronousTestCase):
    def test_int32_frames_across_chunks(self):
        frames = Int32Frames()
        data = frame({"a": 1}) + frame("b" * 300) + frame([])
        got = []
        for i in range(0, len(data), 7):
            got += frames.split(UP, data[i : i + 7])
        self.assertEqual(b"".join(got), data)
        self.assertEqual(len(got), 3)
        self.assertEqual(frames.split(DOWN, b"\0\0"), [])

    def test_postgres_startup_then_typed_messages(self):
        messages = PostgresMessages()
        ssl = b"\0\0\0\x08\x04\xd2\x16\x2f"
        startup = b"\0\0\0\x09\0\x03\0\0\0"
        query = b"Q\0\0\0\x0dSELECT 1\0"
        up = ssl + startup + query
        got = [m for i in range(len(up)) for m in messages.split(UP, up[i : i + 1])]
        self.assertEqual(got, [ssl, startup, query])
        down = b"N" + b"R\0\0\0\x08\0\0\0\0" + b"Z\0\0\0\x05I"
        self.assertEqual(
            messages.split(DOWN, down), [b"N", b"R\0\0\0\x08\0\0\0\0", b"Z\0\0\0\x05I"]
        )
        self.assertEqual(query_text(query), "SELECT 1")
        self.assertIsNone(query_text(startup))

    def test_sql_shape(self):
        self.assertEqual(
            sql_shape("EXECUTE add_1('s''k', 3,\n  2.50, E'x', t2.id)"),
            sql_shape("EXECUTE add_1('other',  17, 0.1, E'y', t2.id)"),
        )
        self.assertNotEqual(sql_shape("SELECT a FROM t"), sql_shape("SELECT b FROM t"))


class _Echo(Int32StringReceiver):
    """Answers every frame with the same body, reversed."""

    MAX_LENGTH = 1 << 20

    def stringReceived(self, body: bytes) -> None:  # noqa: N802 (Twisted name)
        self.factory.received.append(body)
        self.sendString(body[::-1])


class _Raw(protocol.Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.lost: defer.Deferred = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted name)
        self.data += data

    def connectionLost(self, reason=None) -> None:  # noqa: N802 (Twisted name)
        self.lost.callback(None)


def _answer(body: bytes) -> bytes:
    return frame_bytes(body[::-1])


def frame_bytes(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


class ServiceSideTests(unittest.TestCase):
    """Between a client and an echoing service."""

    async def setUp(self):
        factory = protocol.Factory.forProtocol(_Echo)
        factory.received = []
        self.received = factory.received
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.proxy = await start_proxy(self, reactor, service_target(reactor, port.getHost().port))

    async def connect(self) -> _Raw:
        client = await connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", self.proxy.port.getHost().port), _Raw()
        )
        self.addCleanup(lambda: client.lost if client.transport.connected else None)
        self.addCleanup(client.transport.loseConnection)
        return client

    async def until(self, condition) -> None:
        for _ in range(1000):
            if condition():
                return
            await task.deferLater(reactor, 0.01, lambda: None)
        self.fail("timed out")

    async def test_passes_bytes_through(self):
        client = await self.connect()
        bodies = [b"x" * 100_000, b"", b"hello"] + [bytes([n]) * n for n in range(50)]
        # In pieces that cut across the frames.
        data = b"".join(frame_bytes(b) for b in bodies)
        for i in range(0, len(data), 999):
            client.transport.write(data[i : i + 999])
        expected = b"".join(_answer(b) for b in bodies)
        await self.until(lambda: len(client.data) >= len(expected))
        self.assertEqual(client.data, expected)
        self.assertEqual(self.received, bodies)
        self.assertEqual(self.proxy.fired, [])

    async def cut(self, rule, request=b"0123456789"):
        """Arm C{rule}, send two requests; what came back before the cut."""
        self.proxy.arm(rule)
        client = await self.connect()
        client.transport.write(frame_bytes(b"first") + frame_bytes(request))
        await client.lost
        self.assertEqual(self.proxy.fired, [rule])
        # One fault: the next connection passes.
        again = await self.connect()
        again.transport.write(frame_bytes(b"again"))
        await self.until(lambda: again.data == _answer(b"again"))
        return client.data

    async def test_up_half_way_through_a_request(self):
        self.proxy.arm(FrameCut(UP, 0))
        self.proxy.disarm()
        got = await self.cut(FrameCut(UP, HALF))
        self.assertEqual(got, b"")
        # The service saw half of the first frame, never a request.
        self.assertEqual(self.received, [b"again"])

    async def test_down_before_the_answer(self):
        got = await self.cut(FrameCut(DOWN, 0))
        self.assertEqual(got, b"")
        await self.until(lambda: len(self.received) == 3)
        self.assertEqual(self.received[:2], [b"first", b"0123456789"])

    async def test_down_half_way_through_the_answer(self):
        got = await self.cut(FrameCut(DOWN, HALF))
        self.assertEqual(got, _answer(b"first")[: (4 + 5) // 2])

    async def test_down_after_some_bytes(self):
        got = await self.cut(FrameCut(DOWN, 6))
        self.assertEqual(got, _answer(b"first")[:6])


class PostgresSideTests(unittest.TestCase):
    """Between psycopg2 and the test PostgreSQL."""

    timeout = 60

    async def test_commits_then_cuts_the_answer(self):
        dsn = test_dsns()["product"]
        proxy = await start_proxy(self, reactor, postgres_target(reactor, dsn), PostgresMessages)
        through = proxied_dsn(dsn, proxy)

        def run(target: str, *statements: str) -> list:
            connection = psycopg2.connect(target)
            try:
                connection.autocommit = True
                with connection.cursor() as cursor:
                    for sql in statements:
                        cursor.execute(sql)
                    return cursor.fetchall() if cursor.description else []
            finally:
                connection.close()

        def call(target: str, *statements: str) -> defer.Deferred:
            return threads.deferToThread(run, target, *statements)

        await call(dsn, "CREATE TABLE IF NOT EXISTS proxy_test (n int)", "TRUNCATE proxy_test")
        self.addCleanup(call, dsn, "DROP TABLE proxy_test", "SELECT 1")
        self.assertEqual(await call(through, "SELECT 41 + 1"), [(42,)])

        proxy.arm(QueryCut.shaped_like("INSERT INTO proxy_test VALUES (0) RETURNING n", 2))
        with self.assertRaises(psycopg2.OperationalError):
            await call(
                through,
                "INSERT INTO proxy_test VALUES (1) RETURNING n",
                "INSERT INTO proxy_test VALUES (2) RETURNING n",
            )
        self.assertEqual(len(proxy.fired), 1)
        # Both statements were committed; the answer of the second was lost.
        self.assertEqual(
            await call(dsn, "SELECT n FROM proxy_test ORDER BY n"), [(1,), (2,)]
        )
        self.assertIn("INSERT INTO proxy_test VALUES (2) RETURNING n", proxy.queries)
        self.assertEqual(
            await call(through, "INSERT INTO proxy_test VALUES (3) RETURNING n"), [(3,)]
        )
