"""MakePurchase on the real services and databases: all or nothing, never
oversold, never charged twice, and nothing held after a crash."""

from twisted.internet import defer
from twisted.trial import unittest

from marketplace.product import purchasedb
from tests.support import (
    PAYMENTS_SECRET,
    _later,
    assert_error,
    connect,
    open_database,
    payload_of,
    start_marketplace,
)

CARD = {
    "name": "Bea Buyer",
    "card_number": "4111111111111111",
    "expiration_date": "12/39",
    "security_code": "123",
}


class Shop:
    """A seller with items, and helpers to make logged-in buyers."""

    def __init__(self, testcase, market):
        self.testcase = testcase
        self.market = market

    async def open(self):
        self.seller = await connect(self.testcase, self.market.ports["seller"])
        await self.seller.request("CreateAccount", {"username": "sam", "password": "pw-passphrase"})
        answer = await self.seller.request("Login", {"username": "sam", "password": "pw-passphrase"})
        self.seller_session = payload_of(self.testcase, answer)["session_id"]
        self.seller_id = payload_of(self.testcase, answer)["seller_id"]
        return self

    async def item(self, name="mug", price=2.5, quantity=10):
        answer = await self.seller.request(
            "RegisterItemForSale",
            {"item_name": name, "category": 1, "keywords": [name[:8]],
             "condition": "new", "price": price, "quantity": quantity},
            self.seller_session,
        )
        return payload_of(self.testcase, answer)["item_id"]

    async def seller_call(self, api, payload=None):
        return await self.seller.request(api, payload or {}, self.seller_session)

    async def stock(self, item_id):
        answer = await self.seller_call("DisplayItemsForSale")
        items = payload_of(self.testcase, answer)["items"]
        return next(i["quantity"] for i in items if i["item_id"] == item_id)

    async def items_sold(self):
        answer = await self.seller_call("GetSellerRating")
        return payload_of(self.testcase, answer)["items_sold"]

    async def buyer(self, username="bea"):
        client = await connect(self.testcase, self.market.ports["buyer"])
        await client.request("CreateAccount", {"username": username, "password": "pw-passphrase"})
        answer = await client.request("Login", {"username": username, "password": "pw-passphrase"})
        return Buyer(self.testcase, client, payload_of(self.testcase, answer)["session_id"])


class Buyer:
    def __init__(self, testcase, client, session_id):
        self.testcase = testcase
        self.client = client
        self.session_id = session_id

    def call(self, api, payload=None):
        return self.client.request(api, payload or {}, self.session_id)

    async def add(self, item_id, quantity=1):
        payload_of(self.testcase, await self.call(
            "AddItemToCart", {"item_id": item_id, "quantity": quantity}))

    def buy(self, **extra):
        return self.call("MakePurchase", {**CARD, **extra})

    async def cart(self):
        return payload_of(self.testcase, await self.call("DisplayCart"))["cart"]

    async def purchases(self):
        return payload_of(self.testcase, await self.call("GetBuyerPurchases"))


class PurchaseTests(unittest.TestCase):
    async def setUp(self):
        self.market = await start_marketplace(self)
        self.payments_db = await open_database(self, "payments")
        self.shop = await Shop(self, self.market).open()

    async def authorizations(self):
        rows = await self.payments_db.query("SELECT count(*) FROM authorizations")
        return rows[0][0]

    async def test_buys_the_whole_cart(self):
        mug = await self.shop.item("mug", 2.5, 10)
        lamp = await self.shop.item("lamp", 10, 3)
        bea = await self.shop.buyer()
        await bea.add(mug, 4)
        await bea.add(lamp, 1)
        payload_of(self, await bea.call("SaveCart"))
        answer = payload_of(self, await bea.buy())
        self.assertEqual(answer["total"], 20)
        self.assertEqual(
            [(line["item_id"], line["quantity"], line["price"]) for line in answer["items"]],
            [(mug, 4, 2.5), (lamp, 1, 10)],
        )
        self.assertEqual(await self.shop.stock(mug), 6)
        self.assertEqual(await self.shop.stock(lamp), 2)
        self.assertEqual(await self.shop.items_sold(), 5)
        self.assertEqual(await bea.cart(), [])
        # The saved cart is empty too: a new session starts with nothing.
        again = await self.shop.buyer("bea")
        self.assertEqual(await again.cart(), [])
        history = await bea.purchases()
        self.assertEqual(history["items_purchased"], 5)
        self.assertEqual(
            sorted((i["item_id"], i["quantity"], i["price"], i["purchase_id"])
                   for i in history["items"]),
            sorted([(mug, 4, 2.5, answer["purchase_id"]), (lamp, 1, 10, answer["purchase_id"])]),
        )
        self.assertEqual({i["item_name"] for i in history["items"]}, {"mug", "lamp"})
        self.assertTrue(all(i["purchased_at"] for i in history["items"]))
        self.assertEqual(await self.authorizations(), 1)

    async def test_current_price(self):
        mug = await self.shop.item("mug", 2.5, 10)
        bea = await self.shop.buyer()
        await bea.add(mug, 2)
        payload_of(self, await self.shop.seller_call(
            "ChangeItemPrice", {"item_id": mug, "price": 3}))
        answer = payload_of(self, await bea.buy())
        self.assertEqual(answer["total"], 6)
        self.assertEqual((await bea.purchases())["items"][0]["price"], 3)

    async def test_price_changed_charges_nothing(self):
        """The issue's case: added at 1.00, the seller asks 500 now; the
        buyer who expected 2.00 is told the new total and charged nothing."""
        mug = await self.shop.item("mug", 1, 10)
        bea = await self.shop.buyer()
        await bea.add(mug, 2)
        shown = payload_of(self, await bea.call("DisplayCart"))
        self.assertEqual(shown["total_decimal"], "2.00")
        payload_of(self, await self.shop.seller_call(
            "ChangeItemPrice", {"item_id": mug, "price": 500}))
        answer = await bea.buy(expected_total=shown["total"], idempotency_key="k")
        error = assert_error(self, answer, "PRICE_CHANGED")
        self.assertIn("1000.00", error["message"])
        self.assertEqual(error["cart"], payload_of(self, await bea.call("DisplayCart")))
        self.assertEqual(error["cart"]["total_decimal"], "1000.00")
        self.assertEqual(error["cart"]["cart"][0]["price_decimal"], "500.00")
        self.assertNotIn("payload", answer)
        self.assertEqual(await self.authorizations(), 0)
        self.assertEqual(await self.shop.stock(mug), 10)
        self.assertEqual(len(await bea.cart()), 1)
        self.assertEqual((await bea.purchases())["items_purchased"], 0)
        # Agreeing to the new total (as the exact string, under the same
        # key, which PRICE_CHANGED left free) buys the cart.
        bought = payload_of(self, await bea.buy(expected_total="1000.00", idempotency_key="k"))
        self.assertEqual(bought["total_decimal"], "1000.00")
        self.assertEqual(await self.shop.stock(mug), 8)

    async def test_expected_total_that_matches_or_is_malformed(self):
        mug = await self.shop.item("mug", 2.5, 10)
        bea = await self.shop.buyer()
        await bea.add(mug, 3)
        for bad in (-1, "7.5.0", 7.505, True, "", [7.5], 10**30):
            error = assert_error(self, await bea.buy(expected_total=bad), "BAD_REQUEST")
            self.assertIn("expected_total", error["message"])
        self.assertEqual(await self.authorizations(), 0)
        for cheaper in (7.49, 0, "7.51"):
            assert_error(self, await bea.buy(expected_total=cheaper), "PRICE_CHANGED")
        self.assertEqual(payload_of(self, await bea.buy(expected_total=7.5))["total"], 7.5)

    async def test_empty_cart(self):
        bea = await self.shop.buyer()
        assert_error(self, await bea.buy(), "EMPTY_CART")
        self.assertEqual(await self.authorizations(), 0)

    async def test_out_of_stock_changes_nothing(self):
        mug = await self.shop.item("mug", 2.5, 10)
        lamp = await self.shop.item("lamp", 10, 3)
        bea = await self.shop.buyer()
        await bea.add(mug, 4)
        await bea.add(lamp, 3)
        payload_of(self, await self.shop.seller_call(
            "UpdateUnitsForSale", {"item_id": lamp, "quantity": 2}))
        error = assert_error(self, await bea.buy(), "OUT_OF_STOCK")
        self.assertIn(lamp, error["message"])
        self.assertEqual(await self.shop.stock(mug), 10)
        self.assertEqual(await self.shop.stock(lamp), 1)
        self.assertEqual(len(await bea.cart()), 2)
        self.assertEqual(await self.authorizations(), 0)
        self.assertEqual((await bea.purchases())["items_purchased"], 0)

    async def test_decline_changes_nothing(self):
        self.market.set_approval_rate(0.0)
        mug = await self.shop.item("mug", 2.5, 10)
        bea = await self.shop.buyer()
        await bea.add(mug, 4)
        assert_error(self, await bea.buy(idempotency_key="d"), "PAYMENT_DECLINED")
        self.assertEqual(await self.shop.stock(mug), 10)
        self.assertEqual(await self.shop.items_sold(), 0)
        self.assertEqual(len(await bea.cart()), 1)
        self.assertEqual((await bea.purchases())["items_purchased"], 0)
        # The same key gives the same answer, without asking again...
        self.market.set_approval_rate(1.0)
        assert_error(self, await bea.buy(idempotency_key="d"), "PAYMENT_DECLINED")
        self.assertEqual(await self.authorizations(), 1)
        # ...and a new key is a new try.
        payload_of(self, await bea.buy(idempotency_key="e"))
        self.assertEqual(await self.shop.stock(mug), 6)

    async def test_malformed_card_declined(self):
        mug = await self.shop.item("mug", 2.5, 10)
        bea = await self.shop.buyer()
        await bea.add(mug, 1)
        error = assert_error(self, await bea.buy(card_number="4111111111111112"),
                             "PAYMENT_DECLINED")
        self.assertIn("Luhn", error["message"])
        assert_error(self, await bea.buy(expiration_date="01/21"), "PAYMENT_DECLINED")
        self.assertEqual(await self.shop.stock(mug), 10)
        assert_error(self, await bea.buy(security_code=123), "BAD_REQUEST")

    async def test_retry_charges_once(self):
        mug = await self.shop.item("mug", 2.5, 10)
        bea = await self.shop.buyer()
        await bea.add(mug, 3)
        first = payload_of(self, await bea.buy(idempotency_key="k"))
        # Again, on another connection, with a new cart: the first answer.
        other = await connect(self, self.market.ports["buyer"])
        await bea.add(mug, 1)
        again = await other.request("MakePurchase", {**CARD, "idempotency_key": "k"},
                                    bea.session_id)
        self.assertEqual(payload_of(self, again), first)
        self.assertEqual(await self.shop.stock(mug), 7)
        self.assertEqual(await self.shop.items_sold(), 3)
        self.assertEqual(await self.authorizations(), 1)
        # Keys are the buyer's own: another buyer's "k" is another purchase.
        cy = await self.shop.buyer("cy")
        await cy.add(mug, 1)
        self.assertNotEqual(payload_of(self, await cy.buy(idempotency_key="k")), first)

    async def test_concurrent_retries_charge_once(self):
        mug = await self.shop.item("mug", 2.5, 10)
        bea = await self.shop.buyer()
        await bea.add(mug, 2)
        clients = [await connect(self, self.market.ports["buyer"]) for _ in range(5)]
        answers = await defer.gatherResults([
            c.request("MakePurchase", {**CARD, "idempotency_key": "same"}, bea.session_id)
            for c in clients
        ])
        payloads = [payload_of(self, a) for a in answers]
        self.assertEqual(len({p["purchase_id"] for p in payloads}), 1)
        self.assertEqual(await self.shop.stock(mug), 8)
        self.assertEqual(await self.authorizations(), 1)

    async def test_payments_down(self):
        mug = await self.shop.item("mug", 2.5, 10)
        bea = await self.shop.buyer()
        await bea.add(mug, 2)
        await self.market.stop_payments()
        assert_error(self, await bea.buy(idempotency_key="p"), "UNAVAILABLE")
        self.assertEqual(await self.shop.stock(mug), 10)
        self.assertEqual(len(await bea.cart()), 1)
        self.assertEqual((await bea.purchases())["items_purchased"], 0)
        await self.market.start_payments()
        # Nothing was changed, so the same key may be tried again.
        answer = payload_of(self, await bea.buy(idempotency_key="p"))
        self.assertEqual(answer["total"], 5)
        self.assertEqual(await self.shop.stock(mug), 8)
        self.assertEqual(await self.authorizations(), 1)

    async def test_race_for_the_last_units(self):
        """50 buyers on their own connections race for 10 units."""
        mug = await self.shop.item("mug", 1, 10)
        buyers = await defer.gatherResults([
            defer.Deferred.fromCoroutine(self.shop.buyer(f"b{n}")) for n in range(50)
        ])
        for n, buyer in enumerate(buyers):
            await buyer.add(mug, 1 + n % 2)
        answers = await defer.gatherResults([b.buy() for b in buyers])
        bought = 0
        for n, answer in enumerate(answers):
            if answer["type"] == "response":
                bought += answer["payload"]["items"][0]["quantity"]
            else:
                self.assertEqual(answer["error"]["code"], "OUT_OF_STOCK", answer)
        stock = await self.shop.stock(mug)
        self.assertGreaterEqual(stock, 0)
        self.assertLessEqual(stock, 1)
        self.assertEqual(bought, 10 - stock)
        self.assertEqual(await self.shop.items_sold(), bought)
        histories = await defer.gatherResults([
            defer.Deferred.fromCoroutine(b.purchases()) for b in buyers])
        self.assertEqual(sum(h["items_purchased"] for h in histories), bought)


class RecoveryTests(unittest.TestCase):
    """A buyer daemon that dies between taking the units and settling the
    payment: simulated here by filing the pending purchase directly, as the
    daemon's first transaction does (test_recovery kills a real daemon)."""

    async def setUp(self):
        self.market = await start_marketplace(self, settle_after=0.2)
        self.product = await open_database(self, "product")
        self.shop = await Shop(self, self.market).open()
        self.mug = await self.shop.item("mug", 2.5, 10)
        self.bea = await self.shop.buyer()
        await self.bea.add(self.mug, 3)

    async def pending(self, key):
        """File a pending purchase of Bea's cart, as a dying daemon would."""
        rows = await self.product.query(
            "SELECT session_key, buyer_id FROM active_cart_lines LIMIT 1")
        session_key, buyer_id = rows[0]
        return await purchasedb.take_units(self.product, buyer_id, key, session_key)

    async def settled(self, purchase_id):
        for _ in range(100):
            purchase = await purchasedb.get(self.product, purchase_id)
            if purchase.state != purchasedb.PENDING:
                return purchase
            await _later(0.05)
        self.fail("the purchase was never settled")

    async def test_unpaid_purchase_is_undone(self):
        purchase = await self.pending("k")
        self.assertEqual(await self.shop.stock(self.mug), 7)
        settled = await self.settled(purchase.id)
        self.assertEqual(settled.state, purchasedb.ABORTED)
        self.assertEqual(await self.shop.stock(self.mug), 10)
        self.assertEqual(await self.shop.items_sold(), 0)
        self.assertEqual(len(await self.bea.cart()), 1)
        # The key is free again, and the barred payment key stays barred.
        payload_of(self, await self.bea.buy(idempotency_key="k"))
        self.assertEqual(await self.shop.stock(self.mug), 7)

    async def test_paid_purchase_is_completed(self):
        await self.market.stop()
        purchase = await self.pending("k")
        # The dead daemon's payment went through before it died.
        await self.market.start_payments()
        payments = await connect(self, self.market.ports["payments"])
        answer = await payments.request("AuthorizePayment", {
            **CARD, "amount": 7.5, "idempotency_key": purchase.payment_key}, PAYMENTS_SECRET)
        self.assertTrue(payload_of(self, answer)["approved"])
        await self.market.start()
        self.shop.seller = await connect(self, self.market.ports["seller"])
        settled = await self.settled(purchase.id)
        self.assertEqual(settled.state, purchasedb.COMPLETED)
        self.assertEqual(await self.shop.stock(self.mug), 7)
        self.assertEqual(await self.shop.items_sold(), 3)
        # A retry of the request that never got its answer gets it now.
        bea = self.bea
        bea.client = await connect(self, self.market.ports["buyer"])
        self.assertEqual(payload_of(self, await bea.buy(idempotency_key="k"))["purchase_id"],
                         purchase.id)
        self.assertEqual((await bea.purchases())["items_purchased"], 3)


class RetryOfPendingTests(unittest.TestCase):
    """A purchase sent again while the first one is still pending (its
    daemon died paying for it) is settled by the retry after half a second
    (purchase.RECOVER_AFTER), not only by the sweep, which here would wait
    an hour."""

    async def setUp(self):
        self.market = await start_marketplace(self, settle_after=3600)
        self.product = await open_database(self, "product")
        self.shop = await Shop(self, self.market).open()
        self.mug = await self.shop.item("mug", 2.5, 10)
        self.bea = await self.shop.buyer()
        await self.bea.add(self.mug, 3)

    pending = RecoveryTests.pending

    async def test_unpaid_purchase_is_undone_and_bought_again(self):
        purchase = await self.pending("k")
        assert_error(self, await self.bea.buy(idempotency_key="k"), "UNAVAILABLE")
        settled = await purchasedb.get(self.product, purchase.id)
        self.assertEqual(settled.state, purchasedb.ABORTED)
        self.assertEqual(await self.shop.stock(self.mug), 10)
        # Nothing was bought; the same key again buys the cart.
        payload_of(self, await self.bea.buy(idempotency_key="k"))
        self.assertEqual(await self.shop.stock(self.mug), 7)
        self.assertEqual(await self.shop.items_sold(), 3)

    async def test_paid_purchase_is_completed(self):
        purchase = await self.pending("k")
        # The dead daemon's payment went through before it died.
        payments = await connect(self, self.market.ports["payments"])
        answer = await payments.request("AuthorizePayment", {
            **CARD, "amount": 7.5, "idempotency_key": purchase.payment_key}, PAYMENTS_SECRET)
        self.assertTrue(payload_of(self, answer)["approved"])
        answer = await self.bea.buy(idempotency_key="k")
        self.assertEqual(payload_of(self, answer)["purchase_id"], purchase.id)
        self.assertEqual(await self.shop.stock(self.mug), 7)
        self.assertEqual(await self.shop.items_sold(), 3)
