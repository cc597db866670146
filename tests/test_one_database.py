"""What only the one-database layout has: the hot path's answers, and the
one database going away while the hot path's statements are prepared.

Every other test runs on this layout too, the default of the tests (see
tests/support.py); the API suites run on the two-database layout as well.
"""

import json
from decimal import Decimal

from twisted.internet import reactor, task, threads
from twisted.trial import unittest

from marketplace.server import envelope
from marketplace.server.dispatch import Call, Dispatcher
from tests.support import assert_error, connect, payload_of, start_marketplace
from tests.test_buyer_api import BuyerTestCase, buyer_session
from tests.test_seller_api import seller_session
from tests.test_unavailable import allow_connections


def _dispatchers(market) -> dict:
    """The running services' dispatchers, by service name."""
    return {
        server.name: server.factory.handle_frame.__self__
        for server in market.top
        if hasattr(server, "endpoint")
    }


class HotPathAnswerTests(unittest.TestCase):
    """The hot path's answers, which PostgreSQL writes as JSON, are the
    answers of the usual path, which the service writes, to the byte's
    meaning: same fields, same values, numbers equal as decimals."""

    ITEMS = [
        {"item_name": 'Tasse "groß" \\ 😀 <b>', "category": 3, "keywords": ["mug", "ü"],
         "condition": "used", "price": 0, "quantity": 7},
        {"item_name": "Mug rack", "category": 3, "keywords": ["mug", "rack"],
         "condition": "new", "price": 0.5, "quantity": 1},
        {"item_name": "mug", "category": 3, "keywords": ["cup"],
         "condition": "new", "price": 10, "quantity": 99999},
        {"item_name": "Lamp", "category": 4, "keywords": [],
         "condition": "new", "price": 9999999999.99, "quantity": 2**31 - 1},
    ]

    async def setUp(self):
        self.market = await start_marketplace(self)
        seller = await connect(self, self.market.ports["seller"])
        buyer = await connect(self, self.market.ports["buyer"])
        _, self.seller_sid = await seller_session(self, seller)
        _, self.buyer_sid = await buyer_session(self, buyer)
        self.item_ids = []
        for item in self.ITEMS:
            answer = await seller.request("RegisterItemForSale", item, self.seller_sid)
            self.item_ids.append(payload_of(self, answer)["item_id"])
        self.hot = _dispatchers(self.market)
        self.usual = {
            name: Dispatcher(d.name, d.apis, d.authenticate) for name, d in self.hot.items()
        }

    async def answer(self, dispatchers, service, api, payload, request_id=None):
        message = {
            "type": "request",
            "api": api,
            "session_id": self.seller_sid if service == "seller" else self.buyer_sid,
            "payload": payload,
        }
        if request_id is not None:
            message["request_id"] = request_id
        data = await dispatchers[service].handle_frame(json.dumps(message).encode())
        return json.loads(data, parse_float=Decimal)

    async def fused(self, service, api, payload):
        """What the hot path's handler alone answers: a JSON payload, not a
        fall back to the usual path."""
        message = {
            "type": "request",
            "api": api,
            "session_id": self.seller_sid if service == "seller" else self.buyer_sid,
            "payload": payload,
        }
        request = envelope.parse_request(json.dumps(message).encode())
        result = await self.hot[service].fused[api](Call(request))
        self.assertIsInstance(result, envelope.JsonPayload)
        return json.loads(result.text, parse_float=Decimal)

    async def assert_same(self, service, api, payload=None):
        await self.fused(service, api, payload or {})
        hot = await self.answer(self.hot, service, api, payload or {}, request_id=[api, 1])
        usual = await self.answer(self.usual, service, api, payload or {}, request_id=[api, 1])
        self.assertEqual(hot["type"], "response", hot)
        self.assertEqual(hot, usual)
        return hot

    async def test_reads(self):
        await self.assert_same("seller", "DisplayItemsForSale")
        for item_id in self.item_ids:
            await self.assert_same("buyer", "GetItem", {"item_id": item_id})
        for keywords in (["mug"], ["ü", "rack"], ["nothing"]):
            search = {"category": 3, "keywords": keywords}
            found = await self.assert_same("buyer", "SearchItemsForSale", search)
        self.assertEqual(found["payload"]["items"], [])
        cart = await self.assert_same("buyer", "DisplayCart")
        self.assertEqual(cart["payload"], {"cart": [], "total": 0, "total_decimal": "0.00"})

    async def test_writes_answer_what_a_read_then_shows(self):
        for item_id in self.item_ids[:3] + self.item_ids[:1]:
            add = {"item_id": item_id, "quantity": 1}
            added = await self.fused("buyer", "AddItemToCart", add)
            shown = await self.answer(self.usual, "buyer", "DisplayCart", {})
            self.assertEqual(added, shown["payload"])
        self.assertEqual(added["total"], Decimal("10.50"))
        change = {"item_id": self.item_ids[3], "price": 0.01}
        changed = await self.fused("seller", "ChangeItemPrice", change)
        shown = await self.answer(self.usual, "buyer", "GetItem", {"item_id": self.item_ids[3]})
        self.assertEqual(changed, shown["payload"])
        self.assertEqual(changed["price"], Decimal("0.01"))

    async def test_exact_money_at_the_limits(self):
        """The decimal strings of both paths are the same text, at the
        highest price and the largest line there may be."""
        lamp = self.item_ids[3]
        added = await self.fused("buyer", "AddItemToCart", {"item_id": lamp, "quantity": 1000})
        shown = await self.answer(self.usual, "buyer", "DisplayCart", {})
        self.assertEqual(added, shown["payload"])
        self.assertEqual(added["total_decimal"], "9999999999990.00")
        self.assertEqual(added["cart"][0]["subtotal_decimal"], "9999999999990.00")
        self.assertEqual(added["cart"][0]["price_decimal"], "9999999999.99")
        await self.assert_same("buyer", "DisplayCart")
        await self.assert_same("buyer", "GetItem", {"item_id": lamp})


class UnavailableTests(BuyerTestCase):
    """The one database goes away while the hot path's connections are
    open and have their statements prepared."""

    async def test_gone_then_back(self):
        item_id = await self.item()
        add = {"item_id": item_id, "quantity": 1}
        for _ in range(5):
            payload_of(self, await self.call("DisplayCart"))
        await threads.deferToThread(allow_connections, "customer", False)
        self.addCleanup(threads.deferToThread, allow_connections, "customer", True)
        for _ in range(3):
            assert_error(self, await self.call("AddItemToCart", add), "UNAVAILABLE")
            assert_error(self, await self.call("DisplayCart"), "UNAVAILABLE")
        await threads.deferToThread(allow_connections, "customer", True)
        for _ in range(150):
            answer = await self.call("AddItemToCart", add)
            if answer["type"] == "response":
                break
            assert_error(self, answer, "UNAVAILABLE")
            await task.deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(payload_of(self, answer)["cart"][0]["quantity"], 1,
                         "the refused requests changed nothing")
        self.assertEqual(payload_of(self, await self.call("DisplayCart"))["cart"][0]["quantity"], 1)
