"""Request keys (PROTOCOL.md, Request keys): a repeated write gets the first
answer and changes nothing, on both layouts of the databases."""

import uuid
from dataclasses import replace

from twisted.internet import defer
from twisted.trial import unittest

from marketplace.contract.errors import ApiError
from marketplace.frame import dispatch
from marketplace.frame.dispatch import session_key
from marketplace.product import apisql
from marketplace.postgres import requestkeys, schema
from tests.support import assert_error, connect, on_both_layouts, open_database, payload_of
from tests.test_buyer_api import BuyerTestCase, buyer_session
from tests.test_seller_api import PHONE_CASE


def new_key() -> str:
    return uuid.uuid4().hex


class KeyedCase(BuyerTestCase):
    """A seller with an item, a buyer, and their connections.  On one
    database AddItemToCart, ChangeItemPrice and UpdateUnitsForSale file
    their answer in their one statement."""

    async def setUp(self):
        await super().setUp()
        self.item_id = await self.item()

    def sell(self, api, payload, key, session=None):
        return self.seller.request(
            api, payload, session or self.seller_session, request_key=key
        )

    def buy(self, api, payload, key, session=None):
        return self.buyer.request(api, payload, session or self.session, request_key=key)

    async def twice(self, send) -> dict:
        """Send the same keyed request twice: the two answers must be one."""
        first = await send()
        again = await send()
        self.assertEqual(again, first)
        return first

    async def units_on_sale(self) -> int:
        answer = await self.buyer.request("GetItem", {"item_id": self.item_id}, self.session)
        return payload_of(self, answer)["quantity"]

    async def cart(self) -> dict:
        return payload_of(self, await self.buyer.request("DisplayCart", {}, self.session))



@on_both_layouts
class KeyedWrites(KeyedCase):
    """A repeated write gets the first answer and changes nothing."""

    async def test_add_to_cart_adds_once(self):
        key = new_key()
        first = await self.twice(
            lambda: self.buy("AddItemToCart", {"item_id": self.item_id, "quantity": 2}, key)
        )
        self.assertEqual(payload_of(self, first)["cart"][0]["quantity"], 2)
        self.assertEqual((await self.cart())["cart"][0]["quantity"], 2)
        # A new key is a new request.
        await self.buy("AddItemToCart", {"item_id": self.item_id, "quantity": 1}, new_key())
        self.assertEqual((await self.cart())["cart"][0]["quantity"], 3)

    async def test_remove_save_clear_once(self):
        await self.buy("AddItemToCart", {"item_id": self.item_id, "quantity": 4}, new_key())
        key = new_key()
        await self.twice(
            lambda: self.buy("RemoveItemFromCart", {"item_id": self.item_id, "quantity": 1}, key)
        )
        self.assertEqual((await self.cart())["cart"][0]["quantity"], 3)
        key = new_key()
        saved = await self.twice(lambda: self.buy("SaveCart", {}, key))
        self.assertEqual(payload_of(self, saved)["cart"][0]["quantity"], 3)
        key = new_key()
        cleared = await self.twice(lambda: self.buy("ClearCart", {}, key))
        self.assertEqual(payload_of(self, cleared)["cart"], [])

    async def test_seller_writes_once(self):
        key = new_key()
        first = await self.twice(lambda: self.sell("RegisterItemForSale", PHONE_CASE, key))
        items = payload_of(
            self, await self.seller.request("DisplayItemsForSale", {}, self.seller_session)
        )["items"]
        self.assertEqual(len(items), 2)
        self.assertIn(payload_of(self, first)["item_id"], [i["item_id"] for i in items])

        key = new_key()
        await self.twice(
            lambda: self.sell("UpdateUnitsForSale", {"item_id": self.item_id, "quantity": 3}, key)
        )
        self.assertEqual(await self.units_on_sale(), PHONE_CASE["quantity"] - 3)

        key = new_key()
        changed = await self.twice(
            lambda: self.sell("ChangeItemPrice", {"item_id": self.item_id, "price": 7.5}, key)
        )
        self.assertEqual(payload_of(self, changed)["price_decimal"], "7.50")

    async def test_a_repeat_answers_the_first_answer_after_the_state_moved_on(self):
        key = new_key()
        first = await self.buy("AddItemToCart", {"item_id": self.item_id, "quantity": 1}, key)
        await self.buy("AddItemToCart", {"item_id": self.item_id, "quantity": 1}, new_key())
        again = await self.buy("AddItemToCart", {"item_id": self.item_id, "quantity": 1}, key)
        self.assertEqual(again, first)
        self.assertEqual((await self.cart())["cart"][0]["quantity"], 2)

    async def test_a_repeat_answers_a_cart_of_several_lines_at_its_first_prices(self):
        cheaper = await self.item(item_name="Cable", price=3.25)
        await self.buy("AddItemToCart", {"item_id": cheaper, "quantity": 3}, new_key())
        key = new_key()
        first = await self.buy("AddItemToCart", {"item_id": self.item_id, "quantity": 2}, key)
        lines = payload_of(self, first)["cart"]
        self.assertEqual(sorted((l["item_id"], l["quantity"]) for l in lines),
                         sorted([(cheaper, 3), (self.item_id, 2)]))
        await self.sell("ChangeItemPrice", {"item_id": cheaper, "price": 4.5}, new_key())
        again = await self.buy("AddItemToCart", {"item_id": self.item_id, "quantity": 2}, key)
        self.assertEqual(again, first)
        self.assertEqual([l["quantity"] for l in (await self.cart())["cart"]], [2, 3])

    async def test_units_taken_off_once_even_when_too_few_are_left_for_a_second(self):
        units = PHONE_CASE["quantity"]
        key = new_key()
        await self.twice(
            lambda: self.sell("UpdateUnitsForSale", {"item_id": self.item_id, "quantity": units}, key)
        )
        self.assertEqual(await self.units_on_sale(), 0)

    async def test_create_account_once(self):
        account = {"username": "carol", "password": "secret-passphrase"}
        key = new_key()
        first = await self.twice(
            lambda: self.buyer.request("CreateAccount", account, request_key=key)
        )
        self.assertIn("buyer_id", payload_of(self, first))
        # Without the key the name is taken, as before.
        assert_error(
            self, await self.buyer.request("CreateAccount", account), "USERNAME_TAKEN"
        )

    async def test_feedback_once(self):
        await self.buy("AddItemToCart", {"item_id": self.item_id, "quantity": 1}, new_key())
        card = {"name": "Bob", "card_number": "4111111111111111",
                "expiration_date": "12/99", "security_code": "123"}
        payload_of(self, await self.buy("MakePurchase", card, new_key()))
        key = new_key()
        voted = await self.twice(
            lambda: self.buy("ProvideFeedback", {"item_id": self.item_id, "thumbs_up": True}, key)
        )
        self.assertEqual(payload_of(self, voted)["thumbs_up"], 1)

    async def test_purchase_once(self):
        await self.buy("AddItemToCart", {"item_id": self.item_id, "quantity": 2}, new_key())
        card = {"name": "Bob", "card_number": "4111111111111111",
                "expiration_date": "12/99", "security_code": "123"}
        key = new_key()
        first = await self.twice(lambda: self.buy("MakePurchase", card, key))
        self.assertEqual(await self.units_on_sale(), PHONE_CASE["quantity"] - 2)
        history = payload_of(
            self, await self.buyer.request("GetBuyerPurchases", {}, self.session)
        )
        self.assertEqual(
            {line["purchase_id"] for line in history["items"]},
            {payload_of(self, first)["purchase_id"]},
        )

    async def test_same_key_other_request_is_bad_request(self):
        key = new_key()
        payload_of(self, await self.buy("AddItemToCart", {"item_id": self.item_id, "quantity": 1}, key))
        error = assert_error(
            self,
            await self.buy("AddItemToCart", {"item_id": self.item_id, "quantity": 2}, key),
            "BAD_REQUEST",
        )
        self.assertIn("request_key", error["message"])
        assert_error(self, await self.buy("SaveCart", {}, key), "BAD_REQUEST")
        self.assertEqual((await self.cart())["cart"][0]["quantity"], 1)

    async def test_an_error_leaves_the_key_free(self):
        key = new_key()
        too_many = {"item_id": self.item_id, "quantity": PHONE_CASE["quantity"] + 1}
        assert_error(self, await self.buy("AddItemToCart", too_many, key), "OUT_OF_STOCK")
        await self.seller.request("RegisterItemForSale", PHONE_CASE, self.seller_session)
        await self.sell("UpdateUnitsForSale", {"item_id": self.item_id, "quantity": 1}, new_key())
        self.assertEqual((await self.cart())["cart"], [])
        # The key was not used up by the error.
        payload_of(self, await self.buy("AddItemToCart", {"item_id": self.item_id, "quantity": 1}, key))

    async def test_keys_are_per_account(self):
        other = await connect(self, self.market.ports["buyer"])
        _, other_session = await buyer_session(self, other, "dave")
        key = new_key()
        add = {"item_id": self.item_id, "quantity": 1}
        payload_of(self, await self.buy("AddItemToCart", add, key))
        payload_of(self, await other.request("AddItemToCart", add, other_session, request_key=key))
        answer = await other.request("DisplayCart", {}, other_session)
        self.assertEqual(payload_of(self, answer)["cart"][0]["quantity"], 1)

    async def test_a_repeat_on_another_connection_after_a_restart(self):
        key = new_key()
        add = {"item_id": self.item_id, "quantity": 1}
        first = await self.buy("AddItemToCart", add, key)
        await self.market.restart()
        self.buyer = await connect(self, self.market.ports["buyer"])
        self.assertEqual(await self.buy("AddItemToCart", add, key), first)
        self.assertEqual((await self.cart())["cart"][0]["quantity"], 1)

    async def test_concurrent_repeats_add_once(self):
        """Repeats that arrive while the first is still running (a client
        that retried on another connection) wait for it, and get its answer."""
        key = new_key()
        add = {"item_id": self.item_id, "quantity": 1}
        others = [await connect(self, self.market.ports["buyer"]) for _ in range(4)]
        answers = await defer.gatherResults(
            [c.request("AddItemToCart", add, self.session, request_key=key) for c in others]
        )
        self.assertEqual(len({str(a) for a in answers}), 1, answers)
        self.assertEqual((await self.cart())["cart"][0]["quantity"], 1)

    async def test_malformed_keys(self):
        add = {"item_id": self.item_id, "quantity": 1}
        for key in ("", "k" * 65, 17, ["k"], {"k": 1}):
            error = assert_error(self, await self.buy("AddItemToCart", add, key), "BAD_REQUEST")
            self.assertIn("request_key", error["message"])
        self.assertEqual((await self.cart())["cart"], [])
        payload_of(self, await self.buy("AddItemToCart", add, "k" * 64))

    async def test_reads_and_login_ignore_keys(self):
        key = new_key()
        for _ in range(2):
            payload_of(self, await self.buy("DisplayCart", {}, key))
            login = await self.buyer.request(
                "Login", {"username": "bob", "password": "secret-passphrase"}, request_key=key
            )
            payload_of(self, login)

    async def test_old_keys_are_swept(self):
        await self.buy("AddItemToCart", {"item_id": self.item_id, "quantity": 1}, new_key())
        backend = self.market.backend()
        for db in {backend.customer.dsn: backend.customer, backend.product.dsn: backend.product}.values():
            await db.execute("UPDATE request_answers SET created_at = created_at - interval '1 day'")
        await requestkeys.sweep(backend.customer, 300)
        await requestkeys.sweep(backend.product, 300)
        rows = await backend.product.query("SELECT count(*) FROM request_answers")
        self.assertEqual(rows[0][0], 0)


CARD = {"name": "Bob", "card_number": "4111111111111111",
        "expiration_date": "12/99", "security_code": "123"}


def service_apis(market, name: str):
    """The APIs object (BuyerApis, SellerApis) behind a running service."""
    server = next(s for s in market.top if getattr(s, "name", None) == name)
    dispatcher = server.factory.handle_frame.__self__
    return dispatcher.apis["GetSellerRating"].handler.__self__


@on_both_layouts
class AbuseOfKeys(KeyedCase):
    """What a security review of the request keys found (issue 28): the
    table a key fills stays bounded, a key is checked like any text, one
    key is one request on every API, and a key belongs to its session."""

    async def fill_cart(self, lines: int) -> list:
        """Items with long random names, C{lines} of them in the active
        cart (written straight into the tables: quicker than the APIs)."""
        product = self.market.backend().product
        rows = await product.query(
            "INSERT INTO items (seller_id, name, category, keywords, condition, price, quantity)"
            " SELECT %s, md5(random()::text), 3, '{}', 'new', 1.25, 1000"
            " FROM generate_series(1, %s) RETURNING id",
            (self.seller_id, lines),
        )
        await product.execute(
            "INSERT INTO active_cart_lines (session_key, buyer_id, item_id, quantity)"
            " SELECT %s, %s, id, 1 FROM unnest(%s::bigint[]) AS id",
            (session_key(self.session), self.buyer_id, [r[0] for r in rows]),
        )
        return [f"3-{r[0]}" for r in rows]

    def limit_keys(self, per_window: int) -> None:
        for name in ("buyer", "seller"):
            accounts = service_apis(self.market, name).accounts
            accounts.limits = replace(accounts.limits, request_keys_per_minute=per_window)

    async def key_table(self) -> tuple:
        """(rows, bytes) of request_answers on the product database."""
        rows = await self.market.backend().product.query(
            "SELECT count(*), coalesce(sum(pg_column_size(k.*)), 0) FROM request_answers AS k"
        )
        return rows[0]

    async def test_a_flood_of_fresh_keys_stays_bounded(self):
        """Fresh keys on a cart of the most lines a cart may hold: no more
        keys than the account's share of a window are filed, each a
        compact answer; beyond it the writes are RATE_LIMITED."""
        items = await self.fill_cart(apisql.MAX_CART_LINES - 1)
        self.limit_keys(8)
        add = {"item_id": items[0], "quantity": 1}
        answers = [await self.buy("AddItemToCart", add, new_key()) for _ in range(12)]
        codes = [a["error"]["code"] if a["type"] == "error" else "OK" for a in answers]
        self.assertEqual(codes, ["OK"] * 8 + ["RATE_LIMITED"] * 4)
        self.assertEqual(len(payload_of(self, answers[0])["cart"]), apisql.MAX_CART_LINES - 1)
        rows, size = await self.key_table()
        self.assertEqual(rows, 8)
        # The cart's answer is over 12 KB; what is filed, a few bytes a line.
        self.assertGreater(len(str(answers[0])), 12_000)
        self.assertLess(size, 8 * (apisql.MAX_CART_LINES * 24 + 300))

    async def test_the_limit_counts_every_keyed_write_of_the_account(self):
        self.limit_keys(2)
        payload_of(self, await self.buy("AddItemToCart", {"item_id": self.item_id, "quantity": 1}, new_key()))
        payload_of(self, await self.buy("SaveCart", {}, new_key()))
        assert_error(self, await self.buy("ClearCart", {}, new_key()), "RATE_LIMITED")
        # Nothing changed, and writes without a key are not counted.
        self.assertEqual(len((await self.cart())["cart"]), 1)
        payload_of(self, await self.buy("ClearCart", {}, None))
        # The seller's keys are counted apart.
        payload_of(self, await self.sell("ChangeItemPrice", {"item_id": self.item_id, "price": 3}, new_key()))

    async def test_a_cart_holds_at_most_max_lines(self):
        items = await self.fill_cart(apisql.MAX_CART_LINES)
        error = assert_error(
            self, await self.buy("AddItemToCart", {"item_id": self.item_id, "quantity": 1}, None),
            "BAD_REQUEST",
        )
        self.assertIn(str(apisql.MAX_CART_LINES), error["message"])
        # More units of a line it holds are fine.
        answer = await self.buy("AddItemToCart", {"item_id": items[0], "quantity": 1}, new_key())
        self.assertEqual(payload_of(self, answer)["cart"][0]["quantity"], 2)

    async def test_a_repeat_of_a_big_cart_is_the_first_answer_after_prices_change(self):
        items = await self.fill_cart(40)
        key = new_key()
        add = {"item_id": items[3], "quantity": 2}
        first = await self.buy("AddItemToCart", add, key)
        payload_of(self, await self.sell("ChangeItemPrice", {"item_id": items[3], "price": 9}, new_key()))
        payload_of(self, await self.buy("RemoveItemFromCart", {"item_id": items[5], "quantity": 1}, new_key()))
        self.assertEqual(await self.buy("AddItemToCart", add, key), first)
        self.assertEqual(payload_of(self, first)["cart"][3]["price_decimal"], "1.25")

    async def test_a_key_with_nul_or_a_lone_surrogate_is_bad_request(self):
        for key in ("a\u0000b", "a\ud800b"):
            answer = await self.buyer.request(
                "CreateAccount", {"username": "erin", "password": "secret-passphrase"},
                request_key=key,
            )
            self.assertIn("request_key", assert_error(self, answer, "BAD_REQUEST")["message"])
            answer = await self.buy("AddItemToCart", {"item_id": self.item_id, "quantity": 1}, key)
            assert_error(self, answer, "BAD_REQUEST")
        self.assertEqual((await self.cart())["cart"], [])

    async def test_make_purchase_refuses_a_key_of_another_request(self):
        key = new_key()
        payload_of(self, await self.buy("AddItemToCart", {"item_id": self.item_id, "quantity": 1}, key))
        error = assert_error(self, await self.buy("MakePurchase", CARD, key), "BAD_REQUEST")
        self.assertIn("request_key", error["message"])
        history = payload_of(self, await self.buyer.request("GetBuyerPurchases", {}, self.session))
        self.assertEqual(history["items"], [])
        # One purchase under a key; the same key with another card and name
        # is another request.
        key = new_key()
        bought = payload_of(self, await self.buy("MakePurchase", CARD, key))
        other_card = dict(CARD, name="Mallory", card_number="5555555555554444")
        error = assert_error(self, await self.buy("MakePurchase", other_card, key), "BAD_REQUEST")
        self.assertIn("request_key", error["message"])
        again = payload_of(self, await self.buy("MakePurchase", CARD, key))
        self.assertEqual(again["purchase_id"], bought["purchase_id"])

    async def test_keys_belong_to_the_session(self):
        """Another session of the same buyer sending a key of the first
        one's with the same payload gets an answer of its own."""
        login = await self.buyer.request("Login", {"username": "bob", "password": "secret-passphrase"})
        other = payload_of(self, login)["session_id"]
        key = new_key()
        add = {"item_id": self.item_id, "quantity": 1}
        payload_of(self, await self.buy("AddItemToCart", add, key))
        payload_of(self, await self.buy("AddItemToCart", add, new_key()))
        payload_of(self, await self.buyer.request("Logout", {}, self.session))
        theirs = payload_of(self, await self.buy("AddItemToCart", add, key, session=other))
        self.assertEqual(theirs["cart"][0]["quantity"], 1)
        answer = await self.buyer.request("DisplayCart", {}, other)
        self.assertEqual(payload_of(self, answer)["cart"][0]["quantity"], 1)

    async def test_a_repeat_after_logout_is_invalid_session(self):
        key = new_key()
        add = {"item_id": self.item_id, "quantity": 1}
        payload_of(self, await self.buy("AddItemToCart", add, key))
        payload_of(self, await self.buyer.request("Logout", {}, self.session))
        assert_error(self, await self.buy("AddItemToCart", add, key), "INVALID_SESSION")

    async def test_buyer_and_seller_keys_are_apart(self):
        key = new_key()
        payload_of(self, await self.buy("AddItemToCart", {"item_id": self.item_id, "quantity": 1}, key))
        answer = await self.sell("ChangeItemPrice", {"item_id": self.item_id, "price": 2}, key)
        self.assertEqual(payload_of(self, answer)["price_decimal"], "2.00")


#: request_keys as the code before request_answers made it (scope, key and
#: a hex fingerprint as text), and its logged request_key_counts.
_TABLES_OF_THE_CODE_BEFORE = """
CREATE TABLE request_keys (
    scope      text NOT NULL,
    key        text NOT NULL,
    request    text NOT NULL,
    answer     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
ALTER TABLE request_key_counts SET LOGGED;
"""


class UpgradeFromTheCodeBefore(unittest.TestCase):
    """A database the code before request_answers used: schema.sql,
    applied again, keeps the keys filed there and makes the counts
    unlogged; the sweep empties the older table too."""

    async def test_keys_filed_before_an_upgrade_keep_their_answers(self):
        db = await open_database(self, "product")
        self.addCleanup(db.execute, "DROP TABLE IF EXISTS request_keys")
        await db.execute(_TABLES_OF_THE_CODE_BEFORE)
        scope = dispatch.session_scope("buyer", "ab" * 32)
        request = dispatch.fingerprint("AddItemToCart", {"item_id": "3-1", "quantity": 1})
        for key, answer in (("kéy-1", '{"cart": 1}'), ("key-2", '{"cart": 2}')):
            await db.execute(
                "INSERT INTO request_keys (scope, key, request, answer) VALUES (%s, %s, %s, %s)",
                (scope, key, request.hex(), answer),
            )
        await db.execute("UPDATE schema_applied SET digest = 'older' WHERE part = 'product'")

        await schema.apply_schema(db, "product", unless_applied=True)
        first = await requestkeys.first_answer(
            db, requestkeys.RequestKey(dispatch.key_id(scope, "kéy-1"), request)
        )
        self.assertEqual(first.text, '{"cart": 1}')
        other = dispatch.fingerprint("AddItemToCart", {"item_id": "3-1", "quantity": 2})
        with self.assertRaises(ApiError) as raised:
            await requestkeys.first_answer(
                db, requestkeys.RequestKey(dispatch.key_id(scope, "key-2"), other)
            )
        self.assertEqual(raised.exception.code, "BAD_REQUEST")
        (persistence,) = await db.one(
            "SELECT relpersistence FROM pg_class WHERE relname = 'request_key_counts'"
        )
        self.assertEqual(persistence, "u")

        await db.execute("UPDATE request_keys SET created_at = now() - interval '1 day'")
        await requestkeys.sweep(db, 300)
        self.assertEqual(await db.one("SELECT count(*) FROM request_keys"), (0,))


class KeyHelpers(unittest.TestCase):
    def test_fingerprint_leaves_out(self):
        with_password = dispatch.fingerprint("CreateAccount", {"username": "a", "password": "p"})
        without = dispatch.fingerprint(
            "CreateAccount", {"username": "a", "password": "q"}, ("password",)
        )
        self.assertNotEqual(with_password, without)
        self.assertEqual(
            without,
            dispatch.fingerprint("CreateAccount", {"username": "a"}, ("password",)),
        )

    def test_fingerprint_tells_apis_apart(self):
        self.assertNotEqual(
            dispatch.fingerprint("SaveCart", {}), dispatch.fingerprint("ClearCart", {})
        )

    def test_keys_are_kept_beyond_sessions(self):
        self.assertEqual(requestkeys.keep_for(300), requestkeys.KEEP_AT_LEAST)
        self.assertEqual(requestkeys.keep_for(3600), 7200)
