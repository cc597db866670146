"""What only the one-database layout has: both session strategies' answers
side by side, one statement per single-statement API, and the one
database going away while those statements are prepared.

Every other test runs on this layout too, the default of the tests (see
tests/support.py); the API suites run on the two-database layout as well.
"""

import json
from decimal import Decimal

from twisted.internet import reactor, task, threads
from twisted.trial import unittest

from marketplace.buyer.apis import BuyerApis
from marketplace.seller.apis import SellerApis
from marketplace.product.statements import SEPARATE
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


def _payload_bytes(frame: bytes) -> bytes:
    """The payload of an encoded success answer, as its bytes."""
    head, payload = frame.split(b',"payload":', 1)
    return payload[:-1]


class _Counted:
    """Counts the statements (and transactions) a database's pool is asked
    for, however it is asked."""

    METHODS = ("runQuery", "runOperation", "runInteraction", "run_prepared")

    def __init__(self, testcase, *databases) -> None:
        self.count = 0
        for pool in {id(db.pool): db.pool for db in databases}.values():
            for name in self.METHODS:
                testcase.patch(pool, name, self._counting(getattr(pool, name)))

    def _counting(self, method):
        def counted(*args, **kwargs):
            self.count += 1
            return method(*args, **kwargs)

        return counted


class LayoutAnswerTests(unittest.TestCase):
    """Both session strategies give the same answers, byte for byte: the
    services as the one-database layout builds them (each API's statement
    checks the session itself) and the same APIs as the two-database layout
    builds them (the session checked first on the customer database), here
    on one database so that both see the same data.  And the one-database
    layout answers each single-statement API, refusals included, in one
    round trip."""

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
        _, self.other_sid = await seller_session(self, seller, "other")
        self.item_ids = []
        for item in self.ITEMS:
            answer = await seller.request("RegisterItemForSale", item, self.seller_sid)
            self.item_ids.append(payload_of(self, answer)["item_id"])
        answer = await seller.request("RegisterItemForSale", self.ITEMS[2], self.other_sid)
        self.others_item = payload_of(self, answer)["item_id"]
        backend = self.market.backend()
        timeout = self.market.settings.session_timeout
        self.layouts = {
            "joined": _dispatchers(self.market),
            "separate": {
                "seller": SellerApis(
                    backend.customer, backend.product, backend.passwords, timeout,
                    sessions=SEPARATE,
                ).dispatcher(),
                "buyer": BuyerApis(
                    backend.customer, backend.product, backend.passwords, timeout,
                    payments=None, clock=reactor, sessions=SEPARATE,
                ).dispatcher(),
            },
        }
        self.statements = _Counted(self, backend.customer, backend.product)

    def frame(self, service, api, payload, session_id=None):
        if session_id is None:
            session_id = self.seller_sid if service == "seller" else self.buyer_sid
        message = {"type": "request", "api": api, "session_id": session_id,
                   "payload": payload, "request_id": [api, 1]}
        return json.dumps(message).encode()

    async def answer(self, layout, service, api, payload=None, session_id=None):
        """The bytes a layout answers, and the statements it took."""
        before = self.statements.count
        frame = self.frame(service, api, payload or {}, session_id)
        data = await self.layouts[layout][service].handle_frame(frame)
        return data, self.statements.count - before

    async def assert_same(self, service, api, payload=None, session_id=None, code=None):
        """Both layouts answer the same bytes, the one-database layout in
        one statement; the decoded answer."""
        joined, statements = await self.answer("joined", service, api, payload, session_id)
        separate, _ = await self.answer("separate", service, api, payload, session_id)
        self.assertEqual(joined, separate)
        self.assertEqual(statements, 1, f"{api} took {statements} statements")
        answer = json.loads(joined, parse_float=Decimal)
        if code is None:
            payload_of(self, answer)
        else:
            assert_error(self, answer, code)
        return answer

    async def test_reads(self):
        await self.assert_same("seller", "DisplayItemsForSale")
        for item_id in self.item_ids:
            await self.assert_same("buyer", "GetItem", {"item_id": item_id})
        for keywords in ([], ["mug"], ["ü", "rack"], ["nothing"]):
            search = {"category": 3, "keywords": keywords}
            found = await self.assert_same("buyer", "SearchItemsForSale", search)
        self.assertEqual(found["payload"]["items"], [])
        cart = await self.assert_same("buyer", "DisplayCart")
        self.assertEqual(cart["payload"], {"cart": [], "total": 0, "total_decimal": "0.00"})

    async def test_refusals(self):
        """Every refusal of the single-statement APIs, in one round trip in
        the one-database layout, with the same code and message in both."""
        lamp, rack = self.item_ids[3], self.item_ids[1]
        for api, payload, code in [
            ("GetItem", {"item_id": "3-999"}, "NOT_FOUND"),
            ("AddItemToCart", {"item_id": "3-999", "quantity": 1}, "NOT_FOUND"),
            ("AddItemToCart", {"item_id": rack, "quantity": 2}, "OUT_OF_STOCK"),
            ("AddItemToCart", {"item_id": lamp, "quantity": 1001}, "BAD_REQUEST"),
        ]:
            await self.assert_same("buyer", api, payload, code=code)
        for api, payload, code in [
            ("ChangeItemPrice", {"item_id": "3-999", "price": 1}, "NOT_FOUND"),
            ("ChangeItemPrice", {"item_id": self.others_item, "price": 1}, "FORBIDDEN"),
            ("UpdateUnitsForSale", {"item_id": self.others_item, "quantity": 1}, "FORBIDDEN"),
            ("UpdateUnitsForSale", {"item_id": rack, "quantity": 2}, "BAD_REQUEST"),
        ]:
            await self.assert_same("seller", api, payload, code=code)
        # The units the cart holds are in the message.
        payload_of(self, json.loads((await self.answer(
            "joined", "buyer", "AddItemToCart", {"item_id": rack, "quantity": 1}))[0]))
        answer = await self.assert_same(
            "buyer", "AddItemToCart", {"item_id": rack, "quantity": 1}, code="OUT_OF_STOCK"
        )
        self.assertIn("the cart already holds 1", answer["error"]["message"])

    async def test_sessions_before_payloads(self):
        """An invalid session is reported before a malformed payload, and a
        malformed payload of a live session is BAD_REQUEST, in both."""
        for api in ("GetItem", "AddItemToCart", "SearchItemsForSale", "DisplayCart"):
            for layout in self.layouts:
                data, _ = await self.answer(layout, "buyer", api, {"item_id": "x"}, "nope")
                assert_error(self, json.loads(data), "INVALID_SESSION")
        for api in ("GetItem", "AddItemToCart"):
            for layout in self.layouts:
                data, _ = await self.answer(layout, "buyer", api, {"item_id": "x"})
                assert_error(self, json.loads(data), "BAD_REQUEST")
        for api in ("ChangeItemPrice", "UpdateUnitsForSale", "DisplayItemsForSale"):
            for layout in self.layouts:
                data, _ = await self.answer(layout, "seller", api, {}, self.buyer_sid)
                assert_error(self, json.loads(data), "INVALID_SESSION")

    async def test_writes_answer_what_a_read_then_shows(self):
        """A write's answer in one layout is what a read shows in the other."""
        layouts = ["joined", "separate"]
        for n, item_id in enumerate(self.item_ids[:3] + self.item_ids[:1]):
            writer, reader = layouts[n % 2], layouts[1 - n % 2]
            add = {"item_id": item_id, "quantity": 1}
            added, statements = await self.answer(writer, "buyer", "AddItemToCart", add)
            shown, _ = await self.answer(reader, "buyer", "DisplayCart")
            self.assertEqual(_payload_bytes(added), _payload_bytes(shown))
            if writer == "joined":
                self.assertEqual(statements, 1)
        self.assertEqual(json.loads(_payload_bytes(added))["total_decimal"], "10.50")
        lamp = self.item_ids[3]
        for n, (api, change) in enumerate([
            ("ChangeItemPrice", {"item_id": lamp, "price": 0.01}),
            ("UpdateUnitsForSale", {"item_id": lamp, "quantity": 7}),
            ("ChangeItemPrice", {"item_id": lamp, "price": 12.3}),
            ("UpdateUnitsForSale", {"item_id": lamp, "quantity": 1}),
        ]):
            writer, reader = layouts[n % 2], layouts[1 - n % 2]
            changed, _ = await self.answer(writer, "seller", api, change)
            shown, _ = await self.answer(reader, "buyer", "GetItem", {"item_id": lamp})
            self.assertEqual(_payload_bytes(changed), _payload_bytes(shown))
        item = json.loads(_payload_bytes(changed), parse_float=Decimal)
        self.assertEqual((item["price"], item["quantity"]), (Decimal("12.30"), 2**31 - 9))

    async def test_carts_of_every_api_are_alike(self):
        """RemoveItemFromCart, SaveCart and ClearCart answer the cart as
        DisplayCart shows it, an empty one too."""
        mug = self.item_ids[2]
        await self.answer("joined", "buyer", "AddItemToCart", {"item_id": mug, "quantity": 3})
        remove = {"item_id": mug, "quantity": 1}
        for layout, api, payload in [
            ("joined", "RemoveItemFromCart", remove),
            ("separate", "RemoveItemFromCart", remove),
            ("joined", "SaveCart", {}),
            ("separate", "SaveCart", {}),
            ("joined", "RemoveItemFromCart", remove),
            ("separate", "ClearCart", {}),
            ("joined", "ClearCart", {}),
        ]:
            written, _ = await self.answer(layout, "buyer", api, payload)
            shown, _ = await self.answer(layout, "buyer", "DisplayCart")
            self.assertEqual(_payload_bytes(written), _payload_bytes(shown), api)
        self.assertEqual(json.loads(_payload_bytes(written))["cart"], [])

    async def test_exact_money_at_the_limits(self):
        """The decimal strings at the highest price and the largest line
        there may be."""
        lamp = self.item_ids[3]
        added, _ = await self.answer(
            "joined", "buyer", "AddItemToCart", {"item_id": lamp, "quantity": 1000}
        )
        added = json.loads(_payload_bytes(added))
        self.assertEqual(added["total_decimal"], "9999999999990.00")
        self.assertEqual(added["cart"][0]["subtotal_decimal"], "9999999999990.00")
        self.assertEqual(added["cart"][0]["price_decimal"], "9999999999.99")
        await self.assert_same("buyer", "DisplayCart")
        await self.assert_same("buyer", "GetItem", {"item_id": lamp})


class UnavailableTests(BuyerTestCase):
    """The one database goes away while the pool's connections are open
    and have the single-statement APIs' statements prepared."""

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
