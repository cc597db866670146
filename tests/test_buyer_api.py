"""Every buyer API (but purchases and feedback) over a real connection."""

from twisted.trial import unittest

from tests.support import assert_error, connect, on_both_layouts, payload_of, start_marketplace
from tests.test_seller_api import PHONE_CASE, seller_session


async def buyer_session(testcase, client, username="bob"):
    """Create a buyer account and log in; (buyer_id, session_id)."""
    account = {"username": username, "password": "secret-passphrase"}
    buyer_id = payload_of(testcase, await client.request("CreateAccount", account))["buyer_id"]
    login = await client.request("Login", account)
    return buyer_id, payload_of(testcase, login)["session_id"]


class BuyerTestCase(unittest.TestCase):
    """A running marketplace with a seller, a buyer and their connections."""

    async def setUp(self):
        self.market = await start_marketplace(self)
        self.seller = await connect(self, self.market.ports["seller"])
        self.buyer = await connect(self, self.market.ports["buyer"])
        self.seller_id, self.seller_session = await seller_session(self, self.seller)
        self.buyer_id, self.session = await buyer_session(self, self.buyer)

    async def item(self, **changes) -> str:
        answer = await self.seller.request(
            "RegisterItemForSale", dict(PHONE_CASE, **changes), self.seller_session
        )
        return payload_of(self, answer)["item_id"]

    async def call(self, api, payload=None, session_id=None):
        return await self.buyer.request(api, payload or {}, session_id or self.session)


@on_both_layouts
class AccountTests(BuyerTestCase):
    async def test_login_answers_buyer_id(self):
        login = await self.buyer.request("Login", {"username": "bob", "password": "secret-passphrase"})
        self.assertEqual(payload_of(self, login)["buyer_id"], self.buyer_id)

    async def test_seller_session_is_invalid_here(self):
        answer = await self.call("DisplayCart", session_id=self.seller_session)
        assert_error(self, answer, "INVALID_SESSION")

    async def test_not_logged_in(self):
        for api in ("Logout", "SearchItemsForSale", "GetItem", "AddItemToCart",
                    "RemoveItemFromCart", "SaveCart", "ClearCart", "DisplayCart",
                    "GetSellerRating", "GetBuyerPurchases"):
            assert_error(self, await self.buyer.request(api, {}), "NOT_LOGGED_IN")

    async def test_logout_ends_only_that_session(self):
        login = await self.buyer.request("Login", {"username": "bob", "password": "secret-passphrase"})
        other = login["session_id"]
        payload_of(self, await self.call("Logout"))
        assert_error(self, await self.call("DisplayCart"), "INVALID_SESSION")
        payload_of(self, await self.call("DisplayCart", session_id=other))


@on_both_layouts
class SearchTests(BuyerTestCase):
    async def search(self, **payload):
        return payload_of(self, await self.call("SearchItemsForSale", payload))["items"]

    async def test_only_the_category_and_on_sale(self):
        wanted = await self.item()
        await self.item(category=4)
        sold_out = await self.item()
        await self.seller.request(
            "UpdateUnitsForSale", {"item_id": sold_out, "quantity": 5}, self.seller_session
        )
        items = await self.search(category=3, keywords=[])
        self.assertEqual([i["item_id"] for i in items], [wanted])
        self.assertEqual(items[0]["score"], 0)

    async def test_keywords_must_share_one(self):
        phone = await self.item(item_name="Phone", keywords=["phone"])
        await self.item(item_name="Lamp", keywords=["lamp"])
        items = await self.search(category=3, keywords=["PHONE", "radio"])
        self.assertEqual([i["item_id"] for i in items], [phone])

    async def test_score_and_order(self):
        # score: shared keywords + 0.5 per query keyword in the name
        one = await self.item(item_name="Lamp", keywords=["red", "lamp"], price=5)
        two = await self.item(item_name="Red lamp", keywords=["red", "lamp"], price=5)
        three = await self.item(item_name="Cheap", keywords=["red"], price=1)
        four = await self.item(item_name="Dear", keywords=["red"], price=2)
        five = await self.item(item_name="Liked", keywords=["red"], price=9)
        six = await self.item(item_name="Twin", keywords=["red"], price=9)
        number = int(five.split("-")[1])
        await self.market.backend().product.execute(
            "UPDATE items SET thumbs_up = 2 WHERE id = %s", (number,)
        )
        items = await self.search(category=3, keywords=["red", "lamp"])
        self.assertEqual(
            [(i["item_id"], i["score"]) for i in items],
            [(two, 3.0), (one, 2.5), (five, 1.0), (three, 1.0), (four, 1.0), (six, 1.0)],
        )

    async def test_limit_and_offset(self):
        ids = [await self.item(price=p) for p in (1, 2, 3)]
        items = await self.search(category=3, keywords=[], limit=2, offset=1)
        self.assertEqual([i["item_id"] for i in items], ids[1:])

    async def test_bad_search(self):
        for payload, field in [
            ({"keywords": []}, "category"),
            ({"category": 3, "keywords": ["x"] * 6}, "keywords"),
            ({"category": 3, "keywords": [], "limit": 501}, "limit"),
            ({"category": 3, "keywords": [], "limit": 0}, "limit"),
            ({"category": 3, "keywords": [], "offset": -1}, "offset"),
        ]:
            answer = await self.call("SearchItemsForSale", payload)
            self.assertIn(field, assert_error(self, answer, "BAD_REQUEST")["message"])


@on_both_layouts
class ItemTests(BuyerTestCase):
    async def test_get_item(self):
        item_id = await self.item()
        item = payload_of(self, await self.call("GetItem", {"item_id": item_id}))
        self.assertEqual(item["item_id"], item_id)
        self.assertEqual(item["seller_id"], self.seller_id)
        self.assertEqual(item["keywords"], ["phone", "case"])

    async def test_get_item_errors(self):
        assert_error(self, await self.call("GetItem", {"item_id": "3-424242"}), "NOT_FOUND")
        assert_error(self, await self.call("GetItem", {"item_id": "3_1"}), "BAD_REQUEST")
        assert_error(self, await self.call("GetItem", {}), "BAD_REQUEST")

    async def test_seller_rating(self):
        answer = await self.call("GetSellerRating", {"seller_id": self.seller_id})
        self.assertEqual(
            payload_of(self, answer),
            {"seller_id": self.seller_id, "name": "alice", "thumbs_up": 0,
             "thumbs_down": 0, "items_sold": 0},
        )

    async def test_seller_rating_errors(self):
        answer = await self.call("GetSellerRating", {"seller_id": self.buyer_id})
        assert_error(self, answer, "NOT_FOUND")
        answer = await self.call("GetSellerRating", {"seller_id": "1"})
        assert_error(self, answer, "BAD_REQUEST")

    async def test_purchases_start_empty(self):
        answer = payload_of(self, await self.call("GetBuyerPurchases"))
        self.assertEqual(answer["items"], [])
        self.assertEqual(answer["items_purchased"], 0)


@on_both_layouts
class CartTests(BuyerTestCase):
    async def cart(self, api="DisplayCart", payload=None, session_id=None):
        return payload_of(self, await self.call(api, payload, session_id))

    async def test_add_and_display(self):
        item_id = await self.item(price=2.5)
        cart = await self.cart("AddItemToCart", {"item_id": item_id, "quantity": 2})
        expected = {
            "cart": [{"item_id": item_id, "item_name": "Phone case", "quantity": 2, "price": 2.5,
                      "price_decimal": "2.50", "subtotal_decimal": "5.00"}],
            "total": 5.0,
            "total_decimal": "5.00",
        }
        self.assertEqual(cart, expected)
        self.assertEqual(await self.cart(), expected)

    async def test_add_up_to_stock_then_out_of_stock(self):
        item_id = await self.item(quantity=3)
        await self.cart("AddItemToCart", {"item_id": item_id, "quantity": 2})
        answer = await self.call("AddItemToCart", {"item_id": item_id, "quantity": 2})
        self.assertIn(item_id, assert_error(self, answer, "OUT_OF_STOCK")["message"])
        self.assertEqual((await self.cart())["cart"][0]["quantity"], 2)
        cart = await self.cart("AddItemToCart", {"item_id": item_id, "quantity": 1})
        self.assertEqual(cart["cart"][0]["quantity"], 3)

    async def test_add_errors(self):
        item_id = await self.item()
        for payload, code in [
            ({"item_id": "3-424242", "quantity": 1}, "NOT_FOUND"),
            ({"item_id": item_id, "quantity": 0}, "BAD_REQUEST"),
            ({"item_id": item_id}, "BAD_REQUEST"),
            ({"item_id": item_id, "quantity": 6}, "OUT_OF_STOCK"),
        ]:
            assert_error(self, await self.call("AddItemToCart", payload), code)
        self.assertEqual((await self.cart())["cart"], [])

    async def test_remove(self):
        item_id = await self.item()
        await self.cart("AddItemToCart", {"item_id": item_id, "quantity": 3})
        cart = await self.cart("RemoveItemFromCart", {"item_id": item_id, "quantity": 1})
        self.assertEqual(cart["cart"][0]["quantity"], 2)
        cart = await self.cart("RemoveItemFromCart", {"item_id": item_id, "quantity": 9})
        self.assertEqual(cart, {"cart": [], "total": 0, "total_decimal": "0.00"})

    async def test_remove_errors(self):
        item_id = await self.item()
        answer = await self.call("RemoveItemFromCart", {"item_id": item_id, "quantity": 1})
        assert_error(self, answer, "NOT_FOUND")
        answer = await self.call("RemoveItemFromCart", {"item_id": item_id, "quantity": -1})
        assert_error(self, answer, "BAD_REQUEST")

    async def test_clear(self):
        item_id = await self.item()
        await self.cart("AddItemToCart", {"item_id": item_id, "quantity": 1})
        self.assertEqual(await self.cart("ClearCart"), {"cart": [], "total": 0, "total_decimal": "0.00"})
        self.assertEqual(await self.cart(), {"cart": [], "total": 0, "total_decimal": "0.00"})

    async def test_cart_shows_current_price(self):
        item_id = await self.item(price=3)
        await self.cart("AddItemToCart", {"item_id": item_id, "quantity": 2})
        await self.seller.request(
            "ChangeItemPrice", {"item_id": item_id, "price": 4}, self.seller_session
        )
        self.assertEqual((await self.cart())["total"], 8.0)

    async def test_saved_cart_is_copied_at_login(self):
        item_id = await self.item()
        await self.cart("AddItemToCart", {"item_id": item_id, "quantity": 2})
        saved = await self.cart("SaveCart")
        await self.cart("ClearCart")
        login = await self.buyer.request("Login", {"username": "bob", "password": "secret-passphrase"})
        self.assertEqual(await self.cart(session_id=login["session_id"]), saved)
        self.assertEqual((await self.cart())["cart"], [], "the other session is untouched")

    async def test_logout_drops_active_cart_keeps_saved(self):
        first, second = await self.item(), await self.item()
        await self.cart("AddItemToCart", {"item_id": first, "quantity": 1})
        await self.cart("SaveCart")
        await self.cart("AddItemToCart", {"item_id": second, "quantity": 1})
        await self.call("Logout")
        login = await self.buyer.request("Login", {"username": "bob", "password": "secret-passphrase"})
        cart = await self.cart(session_id=login["session_id"])
        self.assertEqual([line["item_id"] for line in cart["cart"]], [first])
