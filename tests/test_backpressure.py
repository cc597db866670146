"""Bounded memory per connection: a client that pipelines large answers and
never reads them is stopped being read once its unsent answers pass
C{max_unsent}, while other clients are served.

The first tests drive the protocol over a StringTransport; the last runs the
buyer service on loopback with the real database and a client that stops
reading its socket.
"""

import json

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from marketplace.frame.limits import Limits
from marketplace.frame.protocol import FrameFactory
from marketplace.daemon.build import build
from tests.support import (
    _later,
    connect,
    empty_databases,
    frame,
    open_database,
    payload_of,
    test_settings,
)
from tests.test_protocol import framed


class ProducerTests(unittest.SynchronousTestCase):
    """The protocol as its transport's streaming producer."""

    def setUp(self):
        self.calls = []
        self.limits = Limits(max_in_flight=2, max_unsent=1000)
        self.factory = FrameFactory(self.handle, max_frame=1000, limits=self.limits)
        self.protocol = self.factory.buildProtocol(None)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def handle(self, frame: bytes, source=None) -> defer.Deferred:
        d = defer.Deferred()
        self.calls.append(d)
        return d

    def test_registered_as_streaming_producer(self):
        self.assertIs(self.transport.producer, self.protocol)
        self.assertTrue(self.transport.streaming)

    def test_paused_by_the_transport_reads_and_starts_nothing(self):
        """While the transport says its buffer is full, whole frames that
        arrive are kept unread and no request is started; they start once
        it drains."""
        self.protocol.pauseProducing()
        self.assertEqual(self.transport.producerState, "paused")
        self.protocol.dataReceived(framed(b"1"))
        self.assertEqual(self.calls, [])
        self.protocol.resumeProducing()
        self.assertEqual(self.transport.producerState, "producing")
        self.assertEqual(len(self.calls), 1)

    def test_answers_draining_do_not_resume_a_full_transport(self):
        """Reading paused for both reasons resumes only when both are over."""
        self.protocol.dataReceived(framed(b"1") + framed(b"2") + framed(b"3"))
        self.assertEqual(len(self.calls), 2)
        self.protocol.pauseProducing()
        self.calls[0].callback(b'{"a": 1}')
        self.calls[1].callback(b'{"a": 2}')
        self.assertEqual(self.transport.producerState, "paused")
        self.assertEqual(len(self.calls), 2)
        self.protocol.resumeProducing()
        self.assertEqual(self.transport.producerState, "producing")
        self.assertEqual(len(self.calls), 3)

    def test_close_stops_being_the_producer(self):
        """A transport with a producer does not close until it is
        unregistered, so closing unregisters first."""
        self.factory.close_connections()
        self.assertIsNone(self.transport.producer)
        self.assertTrue(self.transport.disconnecting)


class _SlowReader(Protocol):
    """A client that sends and never reads, until told to."""

    def __init__(self, paused: bool = True):
        self.paused_at_start = paused

    def connectionMade(self):
        if self.paused_at_start:
            self.transport.pauseProducing()
        self.received = b""
        self.answers = []
        self.done = defer.Deferred()
        self.expected = 0

    def dataReceived(self, data):
        self.received += data
        while len(self.received) >= 4:
            size = int.from_bytes(self.received[:4], "big")
            if len(self.received) < 4 + size:
                break
            self.answers.append(json.loads(self.received[4 : 4 + size]))
            self.received = self.received[4 + size :]
        if len(self.answers) >= self.expected and not self.done.called:
            self.done.callback(None)


def _unsent(transport) -> int:
    """Bytes a TCP transport holds that the socket has not taken."""
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


class SlowReaderTests(unittest.TestCase):
    """Thousands of pipelined searches with large answers on one connection
    that is not read: the server's buffer for it stays within the bound."""

    timeout = 240
    REQUESTS = 2000
    ITEMS = 150
    MAX_UNSENT = 64 * 1024
    MAX_IN_FLIGHT = 16

    async def setUp(self):
        await empty_databases(self)
        self.limits = Limits(
            clock=reactor, max_in_flight=self.MAX_IN_FLIGHT, max_unsent=self.MAX_UNSENT
        )
        self.top = build(
            {"buyer": "tcp:0:interface=127.0.0.1", "seller": "tcp:0:interface=127.0.0.1"},
            test_settings(),
            reactor,
            self.limits,
        )
        self.top.startService()
        self.addCleanup(self.top.stopService)
        servers = {s.name: s for s in self.top if hasattr(s, "endpoint")}
        await servers["buyer"].backend.ready()
        for server in servers.values():
            while server.port is None:
                await _later(0.01)
        self.buyer = servers["buyer"]
        port = self.buyer.port.getHost().port
        client = await connect(self, port)
        payload_of(
            self,
            await client.request(
                "CreateAccount", {"username": "reader", "password": "a long passphrase"}
            ),
        )
        login = payload_of(
            self,
            await client.request(
                "Login", {"username": "reader", "password": "a long passphrase"}
            ),
        )
        self.session = login["session_id"]
        self.client = client
        # Many items with long names and keywords make each answer large.
        product = await open_database(self, "product")
        await product.execute(
            "INSERT INTO items (seller_id, name, category, keywords, condition, price, quantity)"
            " SELECT 1, repeat('x', 28) || lpad(n::text, 4, '0'), 7,"
            " ARRAY['aaaaaaa1', 'aaaaaaa2', 'aaaaaaa3', 'aaaaaaa4', 'aaaaaaa5'],"
            " 'used', 1234567.89, 1000000 FROM generate_series(1, %s) AS n",
            (self.ITEMS,),
        )
        self.port = port

    def search(self, limit: int) -> bytes:
        return frame(
            {
                "type": "request",
                "api": "SearchItemsForSale",
                "session_id": self.session,
                "payload": {"category": 7, "keywords": [], "limit": limit},
            }
        )

    def flood_connection(self):
        """The server's protocol of the slow reader's connection."""
        mine = [
            p for p in self.buyer.factory.connections
            if p.transport.getPeer().port == self.reader.transport.getHost().port
        ]
        return mine[0] if mine else None

    async def test_unsent_answers_stay_within_the_bound(self):
        answer_size = len(
            json.dumps(await self.client.request(*self._search_args(500)))
        )
        self.assertGreater(answer_size, 30_000)
        self.reader = await connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), _SlowReader()
        )
        self.addCleanup(self.reader.transport.abortConnection)
        self.reader.expected = self.REQUESTS
        request = self.search(500)
        self.reader.transport.write(request * self.REQUESTS)

        # Wait until the server stops taking requests of that connection.
        server = None
        most_unsent = 0
        last_frames, still = -1, 0
        for _ in range(1200):
            await _later(0.1)
            server = server or self.flood_connection()
            if server is None:
                continue
            most_unsent = max(most_unsent, _unsent(server.transport))
            if server._frames == last_frames:
                still += 1
                if still >= 15:
                    break
            else:
                last_frames, still = server._frames, 0
        self.assertIsNotNone(server)
        # The bound: what the transport may hold before it pauses us, plus
        # the answers of requests already started, plus one answer's worth
        # of slack (the buffer is checked after a write).
        bound = self.MAX_UNSENT + (self.MAX_IN_FLIGHT + 1) * answer_size
        self.assertLessEqual(most_unsent, bound)
        self.assertLess(server._frames, self.REQUESTS)
        self.assertTrue(server.paused)

        # Another client is served normally meanwhile.
        other = await connect(self, self.port)
        self.assertEqual(
            len(payload_of(self, await other.request(*self._search_args(5)))["items"]), 5
        )
        payload_of(self, await other.request("DisplayCart", {}, self.session))

        # Once the slow reader reads, every answer arrives, in order.
        self.reader.transport.resumeProducing()
        await self.reader.done
        self.assertEqual(len(self.reader.answers), self.REQUESTS)
        self.assertTrue(all(a["type"] == "response" for a in self.reader.answers))
        self.assertTrue(all(len(a["payload"]["items"]) == self.ITEMS for a in self.reader.answers))

    def _search_args(self, limit):
        return (
            "SearchItemsForSale",
            {"category": 7, "keywords": [], "limit": limit},
            self.session,
        )


class FastPathTests(unittest.TestCase):
    """Being the transport's producer keeps answers going straight to the
    socket when nothing is queued (writes.write_now)."""

    async def test_answers_skip_the_transport_buffer(self):
        factory = FrameFactory(
            lambda frame, source=None: defer.succeed(b'{"ok": true}'),
            limits=Limits(clock=reactor),
        )
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = await connect(self, port.getHost().port)
        (server,) = factory.connections
        self.assertIs(server.transport.producer, server)
        buffered = []
        original = server.transport.write
        server.transport.write = lambda data: (buffered.append(data), original(data))
        for _ in range(3):
            self.assertEqual(await client.send_frame(b"{}"), {"ok": True})
        self.assertEqual(buffered, [])
        server.transport.write = original


class TlsSlowReaderTests(unittest.TestCase):
    """The same bound under TLS, where the bytes wait in the TCP transport
    beneath the TLS layer; and closing still works with the producer."""

    REQUESTS = 500
    MAX_UNSENT = 64 * 1024
    ANSWER = b'{"pad": "' + b"x" * 50_000 + b'"}'

    async def test_unsent_answers_stay_within_the_bound_under_tls(self):
        from twisted.internet.endpoints import serverFromString

        from marketplace.clientlib import tls
        from marketplace.daemon.devcerts import make_dev_certs

        certs = make_dev_certs(self.mktemp())
        limits = Limits(clock=reactor, max_in_flight=4, max_unsent=self.MAX_UNSENT)
        factory = FrameFactory(lambda frame, source=None: defer.succeed(self.ANSWER), limits=limits)
        endpoint = serverFromString(
            reactor,
            f"ssl:0:interface=127.0.0.1:privateKey={certs['key']}:certKey={certs['cert']}",
        )
        port = await endpoint.listen(factory)
        self.addCleanup(port.stopListening)
        reader = await connectProtocol(
            tls.client_endpoint(reactor, "localhost", port.getHost().port, certs["ca_cert"]),
            _SlowReader(paused=False),
        )
        self.addCleanup(reader.transport.abortConnection)
        # One answer first, so the TLS handshake is over before the client
        # stops reading.
        reader.expected = 1
        reader.transport.write(framed(b"{}"))
        await reader.done
        reader.done = defer.Deferred()
        reader.answers = []
        reader.transport.pauseProducing()
        reader.expected = self.REQUESTS
        reader.transport.write(framed(b"{}") * self.REQUESTS)
        (server,) = factory.connections
        most_unsent, last, still = 0, -1, 0
        for _ in range(600):
            await _later(0.05)
            most_unsent = max(most_unsent, _unsent(server.transport.transport))
            if server._frames == last:
                still += 1
                if still >= 20:
                    break
            else:
                last, still = server._frames, 0
        self.assertLess(server._frames, self.REQUESTS)
        self.assertLessEqual(most_unsent, self.MAX_UNSENT + 6 * len(self.ANSWER))
        reader.transport.resumeProducing()
        await reader.done
        self.assertEqual(len(reader.answers), self.REQUESTS)
        # Closing from the server ends a TLS connection with a producer.
        closed = defer.Deferred()
        reader.connectionLost = lambda reason: closed.callback(None)
        factory.close_connections()
        await closed
