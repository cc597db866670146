"""Sessions live in the database: across connections, restarts and expiry."""

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from marketplace.customer.accounts import session_key
from marketplace.daemon.housekeeping import sweep_sessions
from tests.support import (
    assert_error,
    connect,
    frame,
    on_both_layouts,
    payload_of,
    start_marketplace,
)
from tests.test_buyer_api import BuyerTestCase, buyer_session
from tests.test_seller_api import PHONE_CASE, seller_session


@on_both_layouts
class StatelessTests(BuyerTestCase):
    async def test_session_on_another_connection(self):
        item_id = await self.item()
        await self.call("AddItemToCart", {"item_id": item_id, "quantity": 2})
        other = await connect(self, self.market.ports["buyer"])
        cart = payload_of(self, await other.request("DisplayCart", {}, self.session))
        self.assertEqual(cart["cart"][0]["quantity"], 2)

    async def test_restart_loses_no_session_and_no_cart(self):
        item_id = await self.item()
        await self.call("AddItemToCart", {"item_id": item_id, "quantity": 2})
        await self.market.restart()
        client = await connect(self, self.market.ports["buyer"])
        cart = payload_of(self, await client.request("DisplayCart", {}, self.session))
        self.assertEqual(cart["cart"][0]["quantity"], 2)
        seller = await connect(self, self.market.ports["seller"])
        answer = await seller.request("DisplayItemsForSale", {}, self.seller_session)
        self.assertEqual(len(payload_of(self, answer)["items"]), 1)

    async def test_two_sessions_two_active_carts_one_saved(self):
        first, second = await self.item(), await self.item()
        login = await self.buyer.request("Login", {"username": "bob", "password": "secret-passphrase"})
        other = login["session_id"]
        await self.call("AddItemToCart", {"item_id": first, "quantity": 1})
        await self.call("AddItemToCart", {"item_id": second, "quantity": 2}, other)
        mine = payload_of(self, await self.call("DisplayCart"))
        theirs = payload_of(self, await self.call("DisplayCart", session_id=other))
        self.assertEqual([line["item_id"] for line in mine["cart"]], [first])
        self.assertEqual([line["item_id"] for line in theirs["cart"]], [second])
        await self.call("SaveCart")
        await self.call("SaveCart", session_id=other)
        login = await self.buyer.request("Login", {"username": "bob", "password": "secret-passphrase"})
        third = payload_of(self, await self.call("DisplayCart", session_id=login["session_id"]))
        self.assertEqual(third, theirs, "the last SaveCart is the one saved cart")

    async def test_concurrent_adds_add_up(self):
        item_id = await self.item(quantity=1000)
        clients = [await connect(self, self.market.ports["buyer"]) for _ in range(5)]
        requests = [
            clients[n % 5].request("AddItemToCart", {"item_id": item_id, "quantity": 3}, self.session)
            for n in range(100)
        ]
        answers = await defer.gatherResults(requests)
        for answer in answers:
            payload_of(self, answer)
        cart = payload_of(self, await self.call("DisplayCart"))
        self.assertEqual(cart["cart"][0]["quantity"], 300)

    async def test_concurrent_adds_never_exceed_stock(self):
        item_id = await self.item(quantity=10)
        requests = [
            self.buyer.request("AddItemToCart", {"item_id": item_id, "quantity": 1}, self.session)
            for _ in range(30)
        ]
        answers = await defer.gatherResults(requests)
        codes = [a["error"]["code"] if a["type"] == "error" else "ok" for a in answers]
        self.assertEqual(codes.count("ok"), 10)
        self.assertEqual(codes.count("OUT_OF_STOCK"), 20)


@on_both_layouts
class ExpiryTests(unittest.TestCase):
    async def test_idle_session_expires_with_its_cart(self):
        # Margins wide enough for a loaded machine: each request may take
        # a while, but the gaps stay well inside the timeout.
        market = await start_marketplace(self, session_timeout=3.0)
        seller = await connect(self, market.ports["seller"])
        buyer = await connect(self, market.ports["buyer"])
        _, seller_sid = await seller_session(self, seller)
        item = await seller.request("RegisterItemForSale", PHONE_CASE, seller_sid)
        item_id = payload_of(self, item)["item_id"]
        _, session = await buyer_session(self, buyer)
        await buyer.request("AddItemToCart", {"item_id": item_id, "quantity": 1}, session)
        await buyer.request("SaveCart", {}, session)
        # Requests keep a session alive past the timeout...
        for _ in range(3):
            await task.deferLater(reactor, 1.2, lambda: None)
            payload_of(self, await buyer.request("DisplayCart", {}, session))
        # ...and idleness ends it.
        await task.deferLater(reactor, 4.0, lambda: None)
        assert_error(self, await buyer.request("DisplayCart", {}, session), "INVALID_SESSION")
        assert_error(self, await seller.request("DisplayItemsForSale", {}, seller_sid), "INVALID_SESSION")
        backend = market.backend()
        await sweep_sessions(backend.customer, backend.product, 1.5)
        rows = await backend.product.query("SELECT count(*) FROM active_cart_lines")
        self.assertEqual(rows[0][0], 0, "the expired session's active cart is gone")
        rows = await backend.product.query("SELECT count(*) FROM saved_cart_lines")
        self.assertEqual(rows[0][0], 1, "the saved cart stays")

    async def test_session_is_written_at_most_once_a_second(self):
        market = await start_marketplace(self, session_timeout=60)
        buyer = await connect(self, market.ports["buyer"])
        _, session = await buyer_session(self, buyer)
        customer = market.backend().customer
        key = session_key(session)

        async def row_version():
            rows = await customer.query(
                "SELECT xmin::text, last_seen FROM sessions WHERE key = %s", (key,)
            )
            return rows[0]

        await customer.execute("UPDATE sessions SET last_seen = now() WHERE key = %s", (key,))
        before = await row_version()
        for _ in range(20):
            payload_of(self, await buyer.request("DisplayCart", {}, session))
        self.assertEqual(await row_version(), before, "seen just now: no write")

        await customer.execute(
            "UPDATE sessions SET last_seen = now() - interval '2 seconds' WHERE key = %s", (key,)
        )
        stale = await row_version()
        payload_of(self, await buyer.request("DisplayCart", {}, session))
        touched = await row_version()
        self.assertNotEqual(touched[0], stale[0], "seen 2 s ago: touched")
        self.assertGreater(touched[1], stale[1])

        await customer.execute(
            "UPDATE sessions SET last_seen = now() - interval '61 seconds' WHERE key = %s", (key,)
        )
        expired = await row_version()
        assert_error(self, await buyer.request("DisplayCart", {}, session), "INVALID_SESSION")
        self.assertEqual(await row_version(), expired, "an expired session is not revived")

    async def test_sweep_drops_orphan_carts(self):
        market = await start_marketplace(self, session_timeout=0.5)
        backend = market.backend()
        await backend.product.execute(
            "INSERT INTO items (seller_id, name, category, condition, price, quantity)"
            " VALUES (1, 'x', 1, 'new', 1, 1)"
        )
        await backend.product.execute(
            "INSERT INTO active_cart_lines (session_key, buyer_id, item_id, quantity, added_at)"
            " VALUES ('no-such-session', 1, 1, 1, now() - interval '1 minute')"
        )
        await sweep_sessions(backend.customer, backend.product, 0.5)
        rows = await backend.product.query("SELECT count(*) FROM active_cart_lines")
        self.assertEqual(rows[0][0], 0)


@on_both_layouts
class WireTests(BuyerTestCase):
    async def test_pipelined_answers_in_order(self):
        item_id = await self.item()
        requests = [
            self.buyer.request("GetItem", {"item_id": item_id}, self.session, request_id=n)
            if n % 2
            else self.buyer.request("DisplayCart", {}, self.session, request_id=n)
            for n in range(20)
        ]
        answers = await defer.gatherResults(requests)
        self.assertEqual([a["request_id"] for a in answers], list(range(20)))

    async def test_bad_frames_keep_the_connection(self):
        for raw in (b"\xff\xff", b"not json", b"[]", b'"x"', b"{}"):
            answer = await self.buyer.send_frame(raw)
            assert_error(self, answer, "BAD_REQUEST")
        payload_of(self, await self.call("DisplayCart"))

    async def test_frame_too_large_closes(self):
        answer = await self.buyer.send_bytes(frame({"pad": "x" * (1024 * 1024 + 10)}))
        assert_error(self, answer, "FRAME_TOO_LARGE")
        await self.buyer.closed
        other = await connect(self, self.market.ports["buyer"])
        payload_of(self, await other.request("DisplayCart", {}, self.session))

    async def test_request_id_is_echoed_on_errors(self):
        answer = await self.buyer.request("Nope", {}, None, request_id={"any": "value"})
        assert_error(self, answer, "UNKNOWN_API")
        self.assertEqual(answer["request_id"], {"any": "value"})
