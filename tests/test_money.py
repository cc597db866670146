"""Money is exact decimals end to end, and bounded before anything
overflows: unit tests of marketplace.contract.money, then the services at the
limits of prices and quantities, on two databases and on one."""

from decimal import Decimal

from twisted.trial import unittest

from marketplace.contract import money
from marketplace.contract.errors import ApiError
from tests.support import assert_error, on_both_layouts, open_database, payload_of
from tests.test_buyer_api import BuyerTestCase
from tests.test_purchase import CARD

PRICE_MAX = 9999999999.99
UNITS_MAX = 2**31 - 1


class MoneyTests(unittest.SynchronousTestCase):
    def test_text_has_two_decimals(self):
        self.assertEqual(money.text(Decimal("0")), "0.00")
        self.assertEqual(money.text(Decimal("4.5")), "4.50")
        self.assertEqual(money.text(Decimal("1E+2")), "100.00")

    def test_sums_are_exact(self):
        self.assertEqual(
            money.line_total(UNITS_MAX, Decimal("9999999999.99")),
            Decimal("21474836469978525163.53"),
        )
        lines = [(UNITS_MAX, Decimal("9999999999.99"))] * 10**4 + [(1, Decimal("0.01"))]
        self.assertEqual(money.total(lines), Decimal("214748364699785251635300.01"))
        self.assertTrue(money.exceeds(Decimal("10000000000000.00")))
        self.assertFalse(money.exceeds(money.TOTAL_MAX))

    def test_amounts_from_requests(self):
        for value, expected in [
            (0, "0.00"), (Decimal("0.1"), "0.10"), ("7.98", "7.98"), ("12", "12.00"),
            ("9999999999999.99", "9999999999999.99"),
        ]:
            self.assertEqual(money.text(money.amount({"a": value}, "a")), expected)
        self.assertIsNone(money.amount({}, "a", required=False))
        for value in [-1, True, 1.5, "1.001", "1e3", " 1", "-1", "", "1.", "NaN",
                      Decimal("0.001"), Decimal("1E+999999"), 10**4000,
                      Decimal("10000000000000"), "10000000000000.00", [], {}]:
            with self.assertRaises(ApiError, msg=repr(value)) as caught:
                money.amount({"a": value}, "a")
            self.assertEqual(caught.exception.code, "BAD_REQUEST")


@on_both_layouts
class LimitTests(BuyerTestCase):
    """The issue's attack: an item at 9,999,999,999.99 with 2,147,483,647
    units in the cart."""

    async def setUp(self):
        await super().setUp()
        self.product = await open_database(self, "product")
        self.payments = await open_database(self, "payments")

    async def cart(self):
        return payload_of(self, await self.call("DisplayCart"))

    async def test_a_line_over_the_limit_is_refused(self):
        big = await self.item(price=PRICE_MAX, quantity=UNITS_MAX)
        for units in (UNITS_MAX, 1001):
            answer = await self.call("AddItemToCart", {"item_id": big, "quantity": units})
            self.assertIn("quantity", assert_error(self, answer, "BAD_REQUEST")["message"])
        self.assertEqual((await self.cart())["cart"], [])
        added = await self.call("AddItemToCart", {"item_id": big, "quantity": 1000})
        self.assertEqual(payload_of(self, added)["total_decimal"], "9999999999990.00")
        self.assertEqual(payload_of(self, added)["total"], 9999999999990.0)
        answer = await self.call("AddItemToCart", {"item_id": big, "quantity": 1})
        assert_error(self, answer, "BAD_REQUEST")
        self.assertEqual((await self.cart())["cart"][0]["quantity"], 1000)

    async def test_quantities_do_not_overflow(self):
        cheap = await self.item(price=0.01, quantity=UNITS_MAX)
        added = await self.call("AddItemToCart", {"item_id": cheap, "quantity": UNITS_MAX})
        self.assertEqual(payload_of(self, added)["total_decimal"], "21474836.47")
        for units in (1, UNITS_MAX):
            answer = await self.call("AddItemToCart", {"item_id": cheap, "quantity": units})
            assert_error(self, answer, "OUT_OF_STOCK")
        self.assertEqual((await self.cart())["cart"][0]["quantity"], UNITS_MAX)

    async def test_a_total_raised_by_the_seller_is_exact_and_not_bought(self):
        cheap = await self.item(price=0.01, quantity=UNITS_MAX)
        payload_of(self, await self.call("AddItemToCart", {"item_id": cheap, "quantity": UNITS_MAX}))
        raised = await self.seller.request(
            "ChangeItemPrice", {"item_id": cheap, "price": PRICE_MAX}, self.seller_session
        )
        self.assertEqual(payload_of(self, raised)["price_decimal"], "9999999999.99")
        cart = await self.cart()
        self.assertEqual(cart["total_decimal"], "21474836469978525163.53")
        self.assertEqual(cart["cart"][0]["subtotal_decimal"], "21474836469978525163.53")
        self.assertEqual(cart["cart"][0]["price_decimal"], "9999999999.99")
        for _ in range(2):
            answer = await self.call("MakePurchase", dict(CARD, idempotency_key="k"))
            error = assert_error(self, answer, "BAD_REQUEST")
            self.assertIn("21474836469978525163.53", error["message"])
        self.assertEqual(await self.product.query("SELECT count(*) FROM purchases"), [(0,)])
        self.assertEqual(await self.payments.query("SELECT count(*) FROM authorizations"), [(0,)])
        item = payload_of(self, await self.call("GetItem", {"item_id": cheap}))
        self.assertEqual(item["quantity"], UNITS_MAX)
        self.assertEqual((await self.cart())["cart"][0]["quantity"], UNITS_MAX)

    async def test_purchase_at_the_limit(self):
        big = await self.item(price=PRICE_MAX, quantity=UNITS_MAX)
        cheap = await self.item(price=0.01, quantity=UNITS_MAX)
        for item_id, units in ((big, 999), (cheap, 999999)):
            payload_of(self, await self.call("AddItemToCart", {"item_id": item_id, "quantity": units}))
        bought = payload_of(self, await self.call("MakePurchase", CARD))
        self.assertEqual(bought["total_decimal"], "9990000009990.00")
        self.assertEqual(bought["total"], 9990000009990.0)
        self.assertEqual(
            [line["subtotal_decimal"] for line in bought["items"]],
            ["9989999999990.01", "9999.99"],
        )
        rows = await self.payments.query("SELECT amount::text FROM authorizations")
        self.assertEqual(rows, [("9990000009990.00",)])
        history = payload_of(self, await self.call("GetBuyerPurchases"))["items"]
        self.assertEqual([line["price_decimal"] for line in history], ["9999999999.99", "0.01"])
