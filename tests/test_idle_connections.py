"""No lockout by idle connections.

Thousands of connections that never send a request are opened to every
port of a running marketplace while clients keep calling: the clients see
no error, a new seller connection is served, and a buyer logged in before
the flood buys on its own connection (which goes through the buyer
service's own connection to payments).  A service whose connections are
all working answers a new one RATE_LIMITED before closing it.
"""

import resource

from twisted.internet import defer, protocol, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial import unittest

from marketplace.frame.limits import Limits
from tests.support import connect, payload_of, start_marketplace
from tests.test_crash_pools import ITEM
from tests.test_purchase import CARD

#: Idle connections opened to each port; the cap of each service.
FLOOD = 2200
CAP = 1000


class _Silent(protocol.Protocol):
    """A connection that sends nothing; it notes when the server closes it."""

    def connectionMade(self):
        self.closed = False
        self.received = b""

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason=None):
        self.closed = True


def _raise_file_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


class IdleFloodTests(unittest.TestCase):
    timeout = 300

    async def setUp(self):
        # Both ends of every connection are in this process.
        _raise_file_limit(3 * FLOOD + 3 * CAP + 2000)
        self.market = await start_marketplace(self)
        self.seller = await connect(self, self.market.ports["seller"])
        account = {"username": "sam", "password": "correct-horse-7"}
        payload_of(self, await self.seller.request("CreateAccount", account))
        seller_session = payload_of(self, await self.seller.request("Login", account))[
            "session_id"
        ]
        answer = await self.seller.request("RegisterItemForSale", ITEM, seller_session)
        self.item_id = payload_of(self, answer)["item_id"]
        self.buyer = await connect(self, self.market.ports["buyer"])
        account = {"username": "bea", "password": "correct-horse-7"}
        payload_of(self, await self.buyer.request("CreateAccount", account))
        self.session = payload_of(self, await self.buyer.request("Login", account))[
            "session_id"
        ]
        answer = await self.buyer.request(
            "AddItemToCart", {"item_id": self.item_id, "quantity": 1}, self.session
        )
        payload_of(self, answer)
        self.silent = []
        self.addCleanup(self._close_silent)

    def _close_silent(self):
        for one in self.silent:
            if not one.closed:
                one.transport.abortConnection()
        return task.deferLater(reactor, 0.5, lambda: None)

    def factory(self, name: str):
        top = self.market.payments_top if name == "payments" else self.market.top
        return next(s.factory for s in top if getattr(s, "name", None) == name)

    async def flood(self, name: str, count: int) -> None:
        """Open C{count} silent connections to a service, a batch at a time,
        each batch accepted by the service before the next (a connection
        waiting in the kernel's accept queue is not open to the service)."""
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.market.ports[name])
        factory = self.factory(name)
        mine = []
        for start in range(0, count, 100):
            batch = [
                connectProtocol(endpoint, _Silent()) for _ in range(min(100, count - start))
            ]
            mine += await defer.gatherResults(batch)
            for _ in range(100):
                if len(mine) - sum(one.closed for one in mine) <= len(factory.connections):
                    break
                await task.deferLater(reactor, 0.05, lambda: None)
        self.silent += mine

    async def _load(self, running, errors) -> None:
        client = await connect(self, self.market.ports["buyer"])
        while running[0]:
            answer = await client.request("GetItem", {"item_id": self.item_id}, self.session)
            if answer["type"] != "response":
                errors.append(answer)
            await task.deferLater(reactor, 0.01, lambda: None)

    async def test_idle_flood_of_every_port(self):
        running, errors = [True], []
        load = [defer.Deferred.fromCoroutine(self._load(running, errors)) for _ in range(4)]
        # The three ports at once (each flood mostly waits for its service).
        await defer.gatherResults([
            defer.Deferred.fromCoroutine(self.flood(name, FLOOD))
            for name in ("buyer", "seller", "payments")
        ])
        # The flood pushes its own oldest connections out, not the clients.
        for _ in range(300):
            closed = sum(one.closed for one in self.silent)
            if closed >= 3 * (FLOOD - CAP):
                break
            await task.deferLater(reactor, 0.1, lambda: None)
        self.assertGreaterEqual(closed, 3 * (FLOOD - CAP))
        self.assertEqual([s.received for s in self.silent if s.received], [],
                         "a connection that gave way was sent something")

        seller = await connect(self, self.market.ports["seller"])
        answer = await seller.request("CreateAccount", {"username": "sid", "password": "correct-horse-8"})
        payload_of(self, answer)

        answer = await self.buyer.request("MakePurchase", dict(CARD), self.session)
        payload_of(self, answer)
        running[0] = False
        await defer.gatherResults(load)
        self.assertEqual(errors, [])

    async def test_refused_when_every_connection_works(self):
        """At the cap with no idle connection, a new connection gets a
        RATE_LIMITED frame, then the close."""
        await self.market.stop()
        limits = Limits(max_connections=2, clock=reactor)
        self.market.limits = limits
        await self.market.start()
        port = self.market.ports["buyer"]
        busy = []
        for _ in range(2):
            client = await connect(self, port)
            # A purchase held up by nothing: an unknown API answers at once,
            # so keep the connections busy with half a frame instead.
            client.transport.write(b"\x00\x00\x01\x00{")
            busy.append(client)
        await task.deferLater(reactor, 0.2, lambda: None)
        refused = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), _Silent())
        for _ in range(50):
            if refused.closed:
                break
            await task.deferLater(reactor, 0.1, lambda: None)
        self.assertTrue(refused.closed)
        self.assertIn(b'"RATE_LIMITED"', refused.received)
