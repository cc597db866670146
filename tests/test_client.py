"""The client library (marketplace.clientlib) against the real services.

L{CuttingProxy} sits between a client and a service to lose connections at
chosen moments: after the service has answered, before the client hears
it, which is when a retry could do a thing twice.  L{FakeService}, a tiny
server of the framing, shows what the client sends again, with which
request key and to which endpoint.
"""

import json
from decimal import Decimal
from typing import List, Optional

from twisted.internet import defer, reactor
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectingCancelledError, ConnectionDone
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure
from twisted.trial import unittest

from marketplace.clientlib import BuyerClient, ClientError, SellerClient, open_clients
from marketplace.clientlib.failover import FailoverEndpoint
from marketplace.clientlib.wire import FramedJsonClient
from marketplace.contract.errors import (
    BAD_REQUEST,
    EMPTY_CART,
    FORBIDDEN,
    INVALID_CREDENTIALS,
    INVALID_SESSION,
    NOT_FOUND,
    NOT_LOGGED_IN,
    OUT_OF_STOCK,
    UNAVAILABLE,
    UNKNOWN_API,
    USERNAME_TAKEN,
    ApiError,
)
from marketplace.frame.protocol import framed
from tests.support import start_marketplace

#: What MakePurchase and ProvideFeedback may answer while their server side
#: is being written: the real error, or UNKNOWN_API before it exists.
PURCHASE_ERRORS = {EMPTY_CART, UNKNOWN_API}
FEEDBACK_ERRORS = {FORBIDDEN, UNKNOWN_API}


class _Front(Int32StringReceiver):
    """The proxy's side facing the client."""

    MAX_LENGTH = 64 * 1024 * 1024

    def connectionMade(self) -> None:
        self.proxy = self.factory
        self.proxy.fronts.append(self)
        self.back: Optional[_Back] = None
        self.queued: List[bytes] = []
        d = connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", self.proxy.port), _Back(self)
        )
        d.addCallback(self._back_ready)
        d.addErrback(lambda _: self.transport.abortConnection())

    def _back_ready(self, back: "_Back") -> None:
        self.back = back
        for frame in self.queued:
            back.sendString(frame)
        self.queued = []

    def stringReceived(self, frame: bytes) -> None:
        self.proxy.requests.append(json.loads(frame))
        if self.back is None:
            self.queued.append(frame)
        else:
            self.back.sendString(frame)

    def connectionLost(self, reason=None) -> None:
        if self.back is not None:
            self.back.transport.abortConnection()


class _Back(Int32StringReceiver):
    """The proxy's side facing the service."""

    MAX_LENGTH = 64 * 1024 * 1024

    def __init__(self, front: _Front) -> None:
        self.front = front

    def stringReceived(self, frame: bytes) -> None:
        proxy = self.front.proxy
        if proxy.cuts > 0:
            # The service has done the request; the client never hears so.
            proxy.cuts -= 1
            self.front.transport.abortConnection()
            self.transport.abortConnection()
        else:
            self.front.sendString(frame)


class CuttingProxy(Factory):
    """A framing-aware TCP proxy to a service on loopback C{port}.

    It records every request it forwards (decoded) in L{requests}; while
    L{cuts} is above zero, each answer from the service is dropped together
    with both connections, and L{cuts} goes down by one.
    """

    protocol = _Front

    def __init__(self, port: int) -> None:
        self.port = port
        self.cuts = 0
        self.requests: List[dict] = []
        self.fronts: List[_Front] = []
        self.listening = None

    def apis(self) -> List[str]:
        """The APIs of the requests forwarded so far, in order."""
        return [r["api"] for r in self.requests]

    async def start(self, testcase) -> str:
        """Listen on a loopback port; the endpoint description to use."""
        self.listening = reactor.listenTCP(0, self, interface="127.0.0.1")
        testcase.addCleanup(self.stop)
        return f"tcp:host=127.0.0.1:port={self.listening.getHost().port}"

    def stop(self) -> defer.Deferred:
        for front in self.fronts:
            front.transport.abortConnection()
        return defer.maybeDeferred(self.listening.stopListening)


def service(market, name: str) -> str:
    """The endpoint description of one of the running services."""
    return f"tcp:host=127.0.0.1:port={market.ports[name]}"


def make_client(testcase, client_class, endpoint: str, **options):
    """A client of C{endpoint}, closed when the test ends."""
    client = client_class(endpoint, reactor=reactor, **options)
    testcase.addCleanup(client.close)
    return client


async def seller_with_items(testcase, market, username="sam"):
    """A logged-in seller with two items on sale; (client, [item ids])."""
    seller = make_client(testcase, SellerClient, service(market, "seller"))
    await seller.create_account(username, "correct-horse-7", "Sam's Shop")
    await seller.login(username, "correct-horse-7")
    mug = await seller.register_item_for_sale(
        "Blue mug", 3, ["mug", "kitchen"], "new", Decimal("4.50"), 10
    )
    lamp = await seller.register_item_for_sale("Desk lamp", 3, ["lamp"], "used", 12, 2)
    return seller, [mug["item_id"], lamp["item_id"]]


async def logged_in_buyer(testcase, endpoint: str, username="bea", **options):
    """A buyer with an account, logged in."""
    buyer = make_client(testcase, BuyerClient, endpoint, **options)
    await buyer.create_account(username, "correct-horse-7")
    await buyer.login(username, "correct-horse-7")
    return buyer


class ClientErrorTests(unittest.SynchronousTestCase):
    """The exception type itself."""

    def test_carries_code_message_and_api(self):
        e = ClientError(OUT_OF_STOCK, "only 2 units of 3-17 left", "AddItemToCart")
        self.assertIsInstance(e, ApiError)
        self.assertEqual(
            (e.code, e.message, e.api),
            (OUT_OF_STOCK, "only 2 units of 3-17 left", "AddItemToCart"),
        )
        self.assertEqual(str(e), "OUT_OF_STOCK: only 2 units of 3-17 left")

    def test_accepts_codes_added_later(self):
        self.assertEqual(ClientError("SOMETHING_NEW", "m").code, "SOMETHING_NEW")


class SellerClientTests(unittest.TestCase):
    """Every seller API through L{SellerClient}."""

    async def test_every_method(self):
        market = await start_marketplace(self)
        seller = make_client(self, SellerClient, service(market, "seller"))
        created = await seller.create_account("sam", "correct-horse-7", "Sam's Shop")
        self.assertIsInstance(created["seller_id"], int)
        answer = await seller.login("sam", "correct-horse-7")
        self.assertEqual(seller.session_id, answer["session_id"])
        self.assertEqual(seller.user_id, created["seller_id"])
        self.assertEqual(seller.username, "sam")

        registered = await seller.register_item_for_sale(
            "Blue mug", 3, ["Mug", "kitchen"], "NEW", "4.50", 10
        )
        item_id = registered["item_id"]
        self.assertTrue(item_id.startswith("3-"), item_id)

        item = await seller.change_item_price(item_id, Decimal("3.99"))
        self.assertEqual(item["price"], Decimal("3.99"))
        item = await seller.update_units_for_sale(item_id, 4)
        self.assertEqual(item["quantity"], 6)

        items = (await seller.display_items_for_sale())["items"]
        self.assertEqual([i["item_id"] for i in items], [item_id])
        self.assertEqual(items[0]["keywords"], ["mug", "kitchen"])
        self.assertEqual(items[0]["condition"], "new")

        rating = await seller.get_seller_rating()
        self.assertEqual(
            rating,
            {
                "seller_id": created["seller_id"],
                "name": "Sam's Shop",
                "thumbs_up": 0,
                "thumbs_down": 0,
                "items_sold": 0,
            },
        )

        self.assertEqual(await seller.logout(), {})
        self.assertIsNone(seller.session_id)
        e = await self.assertFailure(seller.display_items_for_sale(), ClientError)
        self.assertEqual(e.code, NOT_LOGGED_IN)

    async def test_check_username(self):
        """CheckUsername, per role and without a session: whether
        CreateAccount could take the name."""
        market = await start_marketplace(self)
        seller = make_client(self, SellerClient, service(market, "seller"))
        buyer = make_client(self, BuyerClient, service(market, "buyer"))
        free = {"username": "sam", "available": True}
        self.assertEqual(await seller.check_username("sam"), free)
        await seller.create_account("sam", "correct-horse-7")
        taken = {"username": "sam", "available": False}
        self.assertEqual(await seller.check_username("sam"), taken)
        # Buyers and sellers are accounts of their own.
        self.assertEqual(await buyer.check_username("sam"), free)
        for bad in ("", "two words", "x" * 33):
            e = await self.assertFailure(seller.check_username(bad), ClientError)
            self.assertEqual(e.code, "BAD_REQUEST")


class BuyerClientTests(unittest.TestCase):
    """Every buyer API through L{BuyerClient}."""

    async def test_every_method(self):
        market = await start_marketplace(self)
        seller, (mug, lamp) = await seller_with_items(self, market)
        buyer = make_client(self, BuyerClient, service(market, "buyer"))
        created = await buyer.create_account("bea", "correct-horse-7")
        self.assertIsInstance(created["buyer_id"], int)
        await buyer.login("bea", "correct-horse-7")
        self.assertEqual(buyer.user_id, created["buyer_id"])

        found = (await buyer.search_items_for_sale(3, ["mug"]))["items"]
        self.assertEqual([i["item_id"] for i in found], [mug])
        self.assertEqual(found[0]["score"], Decimal("1.5"))
        everything = await buyer.search_items_for_sale(3, limit=1, offset=1)
        self.assertEqual(len(everything["items"]), 1)

        item = await buyer.get_item(lamp)
        self.assertEqual((item["item_name"], item["price"]), ("Desk lamp", 12))

        cart = await buyer.add_item_to_cart(mug, 3)
        self.assertEqual(cart["total"], Decimal("13.5"))
        cart = await buyer.add_item_to_cart(lamp)
        self.assertEqual(
            [(line["item_id"], line["quantity"]) for line in cart["cart"]],
            [(mug, 3), (lamp, 1)],
        )
        cart = await buyer.remove_item_from_cart(mug, 2)
        self.assertEqual(cart["total"], Decimal("16.5"))
        self.assertEqual((await buyer.save_cart())["total"], Decimal("16.5"))
        self.assertEqual(
            await buyer.clear_cart(), {"cart": [], "total": 0, "total_decimal": "0.00"}
        )
        self.assertEqual((await buyer.display_cart())["cart"], [])

        # A new session starts with the saved cart.
        await buyer.logout()
        await buyer.login("bea", "correct-horse-7")
        cart = await buyer.display_cart()
        self.assertEqual(cart["total"], Decimal("16.5"))

        rating = await buyer.get_seller_rating(seller.user_id)
        self.assertEqual(rating["name"], "Sam's Shop")
        purchases = await buyer.get_buyer_purchases()
        self.assertEqual(purchases["items_purchased"], 0)

        await buyer.logout()
        self.assertIsNone(buyer.session_id)

    async def test_purchase_and_feedback_are_sent(self):
        """MakePurchase and ProvideFeedback send PROTOCOL.md's payloads (with
        a fresh idempotency key per purchase) and their errors are mapped."""
        market = await start_marketplace(self)
        seller, (mug, lamp) = await seller_with_items(self, market)
        proxy = CuttingProxy(market.ports["buyer"])
        buyer = await logged_in_buyer(self, await proxy.start(self))

        for _ in range(2):
            e = await self.assertFailure(
                buyer.make_purchase("Bea B", "4111111111111111", "12/30", "123"),
                ClientError,
            )
            self.assertIn(e.code, PURCHASE_ERRORS)
            self.assertEqual(e.api, "MakePurchase")
        first, second = [r for r in proxy.requests if r["api"] == "MakePurchase"]
        self.assertEqual(first["session_id"], buyer.session_id)
        key = first["payload"].pop("idempotency_key")
        self.assertEqual(
            first["payload"],
            {
                "name": "Bea B",
                "card_number": "4111111111111111",
                "expiration_date": "12/30",
                "security_code": "123",
            },
        )
        self.assertTrue(key)
        self.assertNotEqual(key, second["payload"]["idempotency_key"])

        await self.assertFailure(
            buyer.make_purchase("Bea B", "4111", "12/30", "123", idempotency_key="k-1"),
            ClientError,
        )
        self.assertEqual(proxy.requests[-1]["payload"]["idempotency_key"], "k-1")

        e = await self.assertFailure(buyer.provide_feedback(mug, True), ClientError)
        self.assertIn(e.code, FEEDBACK_ERRORS)
        self.assertEqual(proxy.requests[-1]["api"], "ProvideFeedback")
        self.assertEqual(
            proxy.requests[-1]["payload"], {"item_id": mug, "thumbs_up": True}
        )


class ErrorMappingTests(unittest.TestCase):
    """Error answers become L{ClientError} with the server's code."""

    async def assert_code(self, d: defer.Deferred, code: str) -> ClientError:
        e = await self.assertFailure(d, ClientError)
        self.assertEqual(e.code, code, e.message)
        self.assertIsInstance(e.message, str)
        self.assertTrue(e.message)
        return e

    async def test_codes(self):
        market = await start_marketplace(self)
        seller, (mug, lamp) = await seller_with_items(self, market)
        other = make_client(self, SellerClient, service(market, "seller"))
        await self.assert_code(other.create_account("sam", "x-passphrase"), USERNAME_TAKEN)
        await self.assert_code(other.login("sam", "wrong"), INVALID_CREDENTIALS)
        self.assertIsNone(other.session_id)
        await other.create_account("otto", "correct-horse-7")
        await other.login("otto", "correct-horse-7")
        await self.assert_code(other.change_item_price(mug, 1), FORBIDDEN)
        await self.assert_code(seller.update_units_for_sale(lamp, 3), BAD_REQUEST)

        buyer = await logged_in_buyer(self, service(market, "buyer"))
        e = await self.assert_code(buyer.get_item("3-999999"), NOT_FOUND)
        self.assertEqual(e.api, "GetItem")
        await self.assert_code(buyer.add_item_to_cart(lamp, 3), OUT_OF_STOCK)
        await self.assert_code(buyer.add_item_to_cart(lamp, 0), BAD_REQUEST)
        await self.assert_code(buyer.call("NoSuchApi", {}), UNKNOWN_API)

        # A seller's session is not a buyer's; the dead session is forgotten.
        buyer.session_id = seller.session_id
        await self.assert_code(buyer.display_cart(), INVALID_SESSION)
        self.assertIsNone(buyer.session_id)
        await self.assert_code(buyer.display_cart(), NOT_LOGGED_IN)

    async def test_unreachable_service(self):
        """With nothing listening, a call fails with UNAVAILABLE once the
        client gives up connecting."""
        market = await start_marketplace(self)
        endpoint = service(market, "buyer")
        await market.stop()
        buyer = make_client(
            self, BuyerClient, endpoint, initial_delay=0.01, deadline=2
        )
        e = await self.assertFailure(
            buyer.create_account("bea", "correct-horse-7"), ClientError
        )
        self.assertEqual(e.code, UNAVAILABLE)
        self.assertIn(
            f"nothing is listening at 127.0.0.1:{endpoint.split('=')[-1]}", e.message
        )

    async def test_closed_client(self):
        market = await start_marketplace(self)
        buyer = await logged_in_buyer(self, service(market, "buyer"))
        await buyer.close()
        e = await self.assertFailure(buyer.display_cart(), ClientError)
        self.assertEqual(e.code, UNAVAILABLE)


class PipeliningTests(unittest.TestCase):
    """Many requests in flight on one connection, answered in order."""

    async def test_answers_match_requests(self):
        market = await start_marketplace(self)
        seller = make_client(self, SellerClient, service(market, "seller"))
        await seller.create_account("sam", "correct-horse-7")
        await seller.login("sam", "correct-horse-7")
        names = [f"thing {n}" for n in range(20)]
        # All twenty registrations are on the wire before any answer.
        pending = [
            seller.register_item_for_sale(name, 1, [], "new", n, 1)
            for n, name in enumerate(names)
        ]
        self.assertEqual(len(seller.connection._protocol.pending), 20)
        ids = [answer["item_id"] for answer in await defer.gatherResults(pending)]

        buyer = await logged_in_buyer(self, service(market, "buyer"))
        pending = [buyer.get_item(item_id) for item_id in reversed(ids)]
        pending.append(buyer.display_cart())
        answers = await defer.gatherResults(pending)
        self.assertEqual([a["item_name"] for a in answers[:-1]], list(reversed(names)))
        self.assertEqual(answers[-1]["cart"], [])
        self.assertEqual(seller.connection.connections_made, 1)
        self.assertEqual(buyer.connection.connections_made, 1)

    async def test_open_clients(self):
        """open_clients connects each client on its own connection."""
        market = await start_marketplace(self)
        buyers = await open_clients(BuyerClient, 3, service(market, "buyer"), reactor)
        for buyer in buyers:
            self.addCleanup(buyer.close)
        self.assertTrue(all(b.connection.connected for b in buyers))
        protocols = {id(b.connection._protocol) for b in buyers}
        self.assertEqual(len(protocols), 3)
        await defer.gatherResults(
            [b.create_account(f"b{n}", "correct-horse-7") for n, b in enumerate(buyers)]
        )
        await defer.gatherResults(
            [b.login(f"b{n}", "correct-horse-7") for n, b in enumerate(buyers)]
        )
        self.assertEqual(len({b.session_id for b in buyers}), 3)


class ReconnectTests(unittest.TestCase):
    """Restarts and lost connections keep the session."""

    async def test_restart_keeps_the_session(self):
        market = await start_marketplace(self)
        seller, (mug, lamp) = await seller_with_items(self, market)
        buyer = await logged_in_buyer(self, service(market, "buyer"))
        await buyer.add_item_to_cart(mug, 2)
        session = buyer.session_id

        await market.restart()

        cart = await buyer.display_cart()
        self.assertEqual(
            [(line["item_id"], line["quantity"]) for line in cart["cart"]], [(mug, 2)]
        )
        self.assertEqual(buyer.session_id, session)
        self.assertEqual(buyer.connection.connections_made, 2)
        # Not in flight when the connection went, so sent once, normally.
        cart = await buyer.add_item_to_cart(lamp)
        self.assertEqual(len(cart["cart"]), 2)
        items = (await seller.display_items_for_sale())["items"]
        self.assertEqual(len(items), 2)
        self.assertEqual(seller.connection.connections_made, 2)

    async def test_waits_for_a_stopped_service(self):
        """A call made while the service is down is answered once it is up."""
        market = await start_marketplace(self)
        buyer = await logged_in_buyer(
            self, service(market, "buyer"), initial_delay=0.02
        )
        await market.stop()
        d = buyer.display_cart()
        await market.start()
        self.assertEqual((await d)["cart"], [])

    async def test_reads_are_sent_again(self):
        market = await start_marketplace(self)
        proxy = CuttingProxy(market.ports["buyer"])
        buyer = await logged_in_buyer(self, await proxy.start(self))
        proxy.cuts = 1
        self.assertEqual((await buyer.display_cart())["cart"], [])
        self.assertEqual(proxy.apis()[-2:], ["DisplayCart", "DisplayCart"])
        self.assertEqual(buyer.connection.connections_made, 2)

    async def test_logout_sent_again(self):
        """A Logout that took effect before its answer was lost succeeds."""
        market = await start_marketplace(self)
        proxy = CuttingProxy(market.ports["buyer"])
        buyer = await logged_in_buyer(self, await proxy.start(self))
        proxy.cuts = 1
        self.assertEqual(await buyer.logout(), {})
        self.assertEqual(proxy.apis()[-2:], ["Logout", "Logout"])
        self.assertIsNone(buyer.session_id)

    async def test_purchase_sent_again_with_its_key(self):
        market = await start_marketplace(self)
        proxy = CuttingProxy(market.ports["buyer"])
        buyer = await logged_in_buyer(self, await proxy.start(self))
        proxy.cuts = 1
        e = await self.assertFailure(
            buyer.make_purchase("Bea B", "4111111111111111", "12/30", "123"),
            ClientError,
        )
        self.assertIn(e.code, PURCHASE_ERRORS)
        first, second = proxy.requests[-2:]
        self.assertEqual(first["api"], "MakePurchase")
        self.assertEqual(first, second)

    async def test_writes_whose_answer_was_lost_happen_once(self):
        """CreateAccount, RegisterItemForSale and AddItemToCart whose
        answers were lost are sent again with the same key: the caller gets
        the answer, and the service did each once."""
        market = await start_marketplace(self)
        seller_proxy = CuttingProxy(market.ports["seller"])
        seller = make_client(self, SellerClient, await seller_proxy.start(self))
        seller_proxy.cuts = 1
        created = await seller.create_account("sam", "correct-horse-7")
        self.assertIsInstance(created["seller_id"], int)
        await seller.login("sam", "correct-horse-7")
        self.assertEqual(seller.user_id, created["seller_id"])
        seller_proxy.cuts = 1
        registered = await seller.register_item_for_sale("Blue mug", 3, [], "new", 4, 5)
        items = (await seller.display_items_for_sale())["items"]
        self.assertEqual([i["item_id"] for i in items], [registered["item_id"]])
        self.assertEqual(
            seller_proxy.apis(),
            ["CreateAccount", "CreateAccount", "Login", "RegisterItemForSale",
             "RegisterItemForSale", "DisplayItemsForSale"],
        )
        first, again = [r for r in seller_proxy.requests if r["api"] == "CreateAccount"]
        self.assertEqual(first, again)

        buyer_proxy = CuttingProxy(market.ports["buyer"])
        buyer = await logged_in_buyer(self, await buyer_proxy.start(self))
        buyer_proxy.cuts = 1
        cart = await buyer.add_item_to_cart(registered["item_id"], 2)
        self.assertEqual(cart["cart"][0]["quantity"], 2)
        self.assertEqual((await buyer.display_cart())["cart"][0]["quantity"], 2)
        self.assertEqual(buyer_proxy.apis().count("AddItemToCart"), 2)

    async def test_writes_survive_a_restart(self):
        """Writes made while the service is down (their connect refused)
        are carried out once it is up again, within the deadline."""
        market = await start_marketplace(self)
        seller, (mug, lamp) = await seller_with_items(self, market)
        buyer = await logged_in_buyer(
            self, service(market, "buyer"), initial_delay=0.02
        )
        await market.stop()
        added = buyer.add_item_to_cart(mug, 2)
        registered = seller.register_item_for_sale("Vase", 3, [], "new", 7, 1)
        other = make_client(self, BuyerClient, service(market, "buyer"))
        created = other.create_account("cy", "correct-horse-7")
        await market.start()
        cart = await added
        self.assertEqual([(l["item_id"], l["quantity"]) for l in cart["cart"]], [(mug, 2)])
        self.assertTrue((await registered)["item_id"].startswith("3-"))
        self.assertIsInstance((await created)["buyer_id"], int)
        items = (await seller.display_items_for_sale())["items"]
        self.assertEqual(len(items), 3)


class _Fake(Int32StringReceiver):
    """One connection to a L{FakeService}."""

    def connectionMade(self) -> None:
        self.factory.connections.append(self)

    def stringReceived(self, frame: bytes) -> None:
        fake = self.factory
        request = json.loads(frame)
        fake.requests.append(request)
        what = fake.script.pop(0) if fake.script else "ok"
        if what == "silent" or getattr(self, "stuck", False):
            # Answers go in order: none comes after one that is stuck.
            self.stuck = True
            return
        if what == "drop":
            self.transport.abortConnection()
            return
        if what == "ok":
            answer = {"type": "response", "payload": {"n": len(fake.requests)}}
        else:
            answer = {"type": "error", "error": {"code": what, "message": "fake"}}
        self.sendString(json.dumps(answer).encode())


class FakeService(Factory):
    """A tiny server of the framing, for what the client sends: it records
    each request and answers by its L{script}: for each request in turn,
    "ok" (a success answer), "drop" (close the connection unanswered),
    "silent" (no answer to it or to any later request on its connection, as
    from a host cut off) or an error code;
    "ok" once the script is used up."""

    protocol = _Fake

    def __init__(self, *script: str) -> None:
        self.script = list(script)
        self.requests: List[dict] = []
        self.connections: List[_Fake] = []

    def start(self, testcase) -> str:
        """Listen on a loopback port; the endpoint description to use."""
        port = reactor.listenTCP(0, self, interface="127.0.0.1")
        self.port = port

        def stop():
            for c in self.connections:
                c.transport.abortConnection()
            return port.stopListening()

        testcase.addCleanup(stop)
        return f"tcp:host=127.0.0.1:port={port.getHost().port}"


class RequestKeyTests(unittest.TestCase):
    """What the client sends again, and with which key (against a fake
    server of the framing, which answers as a script says)."""

    async def test_same_key_on_every_retry_fresh_key_per_call(self):
        fake = FakeService("drop", UNAVAILABLE, "ok", "ok")
        buyer = make_client(self, BuyerClient, fake.start(self), initial_delay=0.01)
        buyer.session_id = "s-1"
        self.assertEqual(await buyer.add_item_to_cart("3-1", 2), {"n": 3})
        await buyer.add_item_to_cart("3-1", 2)
        first, again, third, other = fake.requests
        key = first["request_key"]
        self.assertRegex(key, "^[0-9a-f]{32}$")
        self.assertEqual(first, again)
        self.assertEqual(first, third)
        self.assertEqual(
            {k: v for k, v in other.items() if k != "request_key"},
            {k: v for k, v in first.items() if k != "request_key"},
        )
        self.assertNotEqual(other["request_key"], key)
        # A new connection after the drop; the UNAVAILABLE answer was
        # retried on the same one (there is no other endpoint).
        self.assertEqual(buyer.connection.connections_made, 2)
        self.assertEqual(buyer.connection.retries, 2)

    async def test_every_write_carries_a_key(self):
        fake = FakeService()
        endpoint = fake.start(self)
        seller = make_client(self, SellerClient, endpoint)
        buyer = make_client(self, BuyerClient, endpoint)
        seller.session_id = buyer.session_id = "s-1"
        await seller.create_account("sam", "correct-horse-7")
        await seller.register_item_for_sale("Mug", 3, [], "new", 4, 5)
        await seller.change_item_price("3-1", 5)
        await seller.update_units_for_sale("3-1", 1)
        await buyer.add_item_to_cart("3-1")
        await buyer.remove_item_from_cart("3-1")
        await buyer.save_cart()
        await buyer.clear_cart()
        await buyer.provide_feedback("3-1", True)
        await buyer.make_purchase("Bea B", "4111111111111111", "12/30", "123")
        writes = [r["api"] for r in fake.requests]
        await buyer.display_cart()
        await buyer.get_item("3-1")
        await seller.display_items_for_sale()
        await buyer.call("GetBuyerPurchases")
        keys = [r.get("request_key") for r in fake.requests]
        self.assertEqual(len(set(keys[: len(writes)])), len(writes))
        self.assertTrue(all(keys[: len(writes)]))
        self.assertEqual(keys[len(writes) :], [None] * 4)
        # A key of the caller's choosing.
        await buyer.call("AddItemToCart", {"item_id": "3-1"}, request_key="k-9")
        self.assertEqual(fake.requests[-1]["request_key"], "k-9")

    async def test_logout_whose_retry_finds_the_session_ended(self):
        """A Logout sent again that answers INVALID_SESSION counts as done:
        the first attempt reached the service; a Logout whose only attempt
        answers INVALID_SESSION does not."""
        fake = FakeService("drop", INVALID_SESSION, INVALID_SESSION)
        buyer = make_client(self, BuyerClient, fake.start(self), initial_delay=0.01)
        buyer.session_id = "s-1"
        self.assertEqual(await buyer.logout(), {})
        self.assertIsNone(buyer.session_id)
        buyer.session_id = "s-2"
        e = await self.assertFailure(buyer.logout(), ClientError)
        self.assertEqual(e.code, INVALID_SESSION)

    async def test_other_errors_are_not_sent_again(self):
        fake = FakeService(OUT_OF_STOCK)
        buyer = make_client(self, BuyerClient, fake.start(self))
        e = await self.assertFailure(buyer.add_item_to_cart("3-1"), ClientError)
        self.assertEqual(e.code, OUT_OF_STOCK)
        self.assertEqual(len(fake.requests), 1)


class FailoverTests(unittest.TestCase):
    """A call sent again goes to the next endpoint of a FailoverEndpoint."""

    async def test_next_endpoint_after_a_drop_and_after_unavailable(self):
        first = FakeService("drop")
        second = FakeService("ok", UNAVAILABLE)
        endpoint = FailoverEndpoint(
            [first.start(self), second.start(self)], reactor
        )
        buyer = make_client(self, BuyerClient, endpoint, initial_delay=0.01)
        # The first instance is up, but it dropped the call: the call goes
        # to the second.
        self.assertEqual(await buyer.display_cart(), {"n": 1})
        self.assertEqual(len(first.requests), 1)
        self.assertEqual(first.requests, second.requests)
        # The second answers UNAVAILABLE: the call goes back to the first,
        # and the second's connection is closed.
        self.assertEqual(await buyer.add_item_to_cart("3-1"), {"n": 2})
        self.assertEqual(second.requests[-1], first.requests[-1])
        self.assertEqual(second.requests[-1]["api"], "AddItemToCart")
        self.assertEqual(buyer.connection.connections_made, 3)
        for _ in range(200):
            if not second.connections[0].transport.connected:
                break
            await deferLater(reactor, 0.01, lambda: None)
        self.assertFalse(second.connections[0].transport.connected)


    async def test_several_instances_in_one_description(self):
        """"A|B": the client library (and so the terminal programs' --connect
        and marketplace-bench's --buyer) takes several instances of a
        service in one endpoint description."""
        first = FakeService("drop")
        second = FakeService("ok")
        both = f"{first.start(self)}|{second.start(self)}"
        buyer = make_client(self, BuyerClient, both, initial_delay=0.01)
        self.assertEqual(await buyer.display_cart(), {"n": 1})
        self.assertEqual((len(first.requests), len(second.requests)), (1, 1))


class _Hanging:
    """An endpoint whose connect never completes; cancelling it fails it
    with ConnectingCancelledError, as TCP endpoints do."""

    def __init__(self) -> None:
        self.attempts = 0

    def connect(self, factory) -> defer.Deferred:
        self.attempts += 1
        return defer.Deferred(
            lambda d: d.errback(ConnectingCancelledError(IPv4Address("TCP", "h", 1)))
        )


class FramedJsonClientTests(unittest.SynchronousTestCase):
    """The one framed-JSON client, byte by byte over a StringTransport."""

    def setUp(self):
        self.clock = Clock()
        self.client = FramedJsonClient(self.clock)
        self.transport = StringTransport()
        self.client.makeConnection(self.transport)

    def answer(self, message) -> None:
        self.client.dataReceived(framed(json.dumps(message).encode()))

    def test_answers_in_order(self):
        first = self.client.send({"api": "A"})
        second = self.client.send_frame(b'{"api":"B"}')
        self.assertEqual(
            self.transport.value(),
            framed(b'{"api":"A"}') + framed(b'{"api":"B"}'),
        )
        self.answer({"n": 1.5})
        self.answer({"n": 2})
        self.assertEqual(self.successResultOf(first), {"n": Decimal("1.5")})
        self.assertEqual(self.successResultOf(second), {"n": 2})

    def test_cancelled_request(self):
        """A request its caller cancelled still takes its answer's place."""
        first = self.client.send({"api": "A"})
        second = self.client.send({"api": "B"})
        first.cancel()
        self.failureResultOf(first, defer.CancelledError)
        self.answer({"n": 1})
        self.answer({"n": 2})
        self.assertEqual(self.successResultOf(second), {"n": 2})
        self.assertFalse(self.transport.disconnecting)

    def test_not_an_object_closes(self):
        d = self.client.send({"api": "A"})
        self.client.dataReceived(framed(b"[1]"))
        self.assertTrue(self.transport.disconnecting)
        self.client.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(d, ConnectionDone)
        self.successResultOf(self.client.closed)

    def test_late_answer_drops_the_connection(self):
        early = self.client.send({"api": "A"}, until=5)
        self.client.send({"api": "B"}, until=9)
        self.clock.advance(4)
        self.answer({})
        self.successResultOf(early)
        self.clock.advance(4.5)
        self.assertFalse(self.client.timed_out)
        self.clock.advance(1)
        self.assertTrue(self.client.timed_out)

    def test_close_when_idle(self):
        d = self.client.send({"api": "A"})
        self.client.close_when_idle()
        self.assertFalse(self.transport.disconnecting)
        self.answer({})
        self.successResultOf(d)
        self.assertTrue(self.transport.disconnecting)


class FailoverEndpointTests(unittest.SynchronousTestCase):
    def test_advance_and_cancel(self):
        first, second = _Hanging(), _Hanging()
        endpoint = FailoverEndpoint([first, second])
        self.assertTrue(endpoint.several)
        endpoint.advance()
        d = endpoint.connect(Factory())
        self.assertEqual((first.attempts, second.attempts), (0, 1))
        # Cancelling stops there: the next endpoint is not tried.
        d.cancel()
        self.failureResultOf(d, ConnectingCancelledError)
        self.assertEqual((first.attempts, second.attempts), (0, 1))
        endpoint.advance()
        self.assertEqual(endpoint.current, 0)
        self.assertFalse(FailoverEndpoint([first]).several)


class DeadlineTests(unittest.TestCase):
    """After the deadline a call fails with UNAVAILABLE, saying why."""

    async def test_a_host_gone_silent(self):
        """No answer by the deadline: the call fails and the connection is
        dropped; a call still waiting on it with time left goes to the next
        endpoint, and so do later calls."""
        silent = FakeService("silent", "silent")
        live = FakeService()
        endpoint = FailoverEndpoint([silent.start(self), live.start(self)], reactor)
        buyer = make_client(self, BuyerClient, endpoint, deadline=1)
        started = reactor.seconds()
        first = buyer.display_cart()
        # Half a second later, so that its deadline is clearly still ahead
        # when the first one's passes (with the same deadline, which of the
        # two fails would hang on how late the reactor's timer fires).
        await deferLater(reactor, 0.5, lambda: None)
        second = buyer.get_item("3-1")
        e = await self.assertFailure(first, ClientError)
        self.assertEqual(e.code, UNAVAILABLE)
        self.assertIn("DisplayCart got no answer within 1 s:", e.message)
        self.assertIn("did not answer; the connection was given up", e.message)
        self.assertLess(reactor.seconds() - started, 10)
        self.assertEqual(await second, {"n": 1})
        self.assertEqual(await buyer.display_cart(), {"n": 2})
        self.assertEqual([r["api"] for r in live.requests], ["GetItem", "DisplayCart"])
        self.assertEqual([r["api"] for r in silent.requests], ["DisplayCart", "GetItem"])

    async def test_nothing_listening(self):
        market = await start_marketplace(self, services=("buyer",))
        endpoint = service(market, "buyer")
        await market.stop()
        buyer = make_client(self, BuyerClient, endpoint, deadline=2, initial_delay=0.05)
        started = reactor.seconds()
        e = await self.assertFailure(buyer.add_item_to_cart("3-1"), ClientError)
        self.assertEqual((e.code, e.api), (UNAVAILABLE, "AddItemToCart"))
        self.assertIn("AddItemToCart got no answer within 2 s", e.message)
        self.assertIn("nothing is listening at 127.0.0.1:", e.message)
        self.assertLess(reactor.seconds() - started, 10)

    async def test_unavailable_until_the_deadline(self):
        fake = FakeService(*[UNAVAILABLE] * 100)
        buyer = make_client(
            self, BuyerClient, fake.start(self), deadline=1, initial_delay=0.02
        )
        e = await self.assertFailure(buyer.display_cart(), ClientError)
        self.assertEqual(e.code, UNAVAILABLE)
        self.assertIn("DisplayCart got no answer within 1 s", e.message)
        self.assertIn("answered UNAVAILABLE (fake)", e.message)
        self.assertGreater(len(fake.requests), 2)
        self.assertLess(len(fake.requests), 20)
