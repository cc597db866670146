"""Every seller API over a real connection: success paths and error codes."""

from twisted.trial import unittest

from tests.support import assert_error, connect, on_both_layouts, payload_of, start_marketplace

PHONE_CASE = {
    "item_name": "Phone case",
    "category": 3,
    "keywords": ["phone", "Case"],
    "condition": "New",
    "price": 9.99,
    "quantity": 5,
}


async def seller_session(testcase, client, username="alice", name=None):
    """Create a seller account and log in; (seller_id, session_id)."""
    account = {"username": username, "password": "secret-passphrase"}
    if name:
        account["name"] = name
    seller_id = payload_of(testcase, await client.request("CreateAccount", account))["seller_id"]
    login = await client.request("Login", {"username": username, "password": "secret-passphrase"})
    return seller_id, payload_of(testcase, login)["session_id"]


@on_both_layouts
class SellerApiTests(unittest.TestCase):
    async def setUp(self):
        self.market = await start_marketplace(self)
        self.client = await connect(self, self.market.ports["seller"])

    async def register(self, session_id, **changes):
        item = dict(PHONE_CASE, **changes)
        answer = await self.client.request("RegisterItemForSale", item, session_id)
        return payload_of(self, answer)["item_id"]

    async def test_create_account_and_login(self):
        seller_id, session_id = await seller_session(self, self.client, name="Alice's")
        self.assertIsInstance(seller_id, int)
        self.assertIsInstance(session_id, str)
        login = await self.client.request("Login", {"username": "alice", "password": "secret-passphrase"})
        self.assertEqual(login["session_id"], login["payload"]["session_id"])
        self.assertEqual(login["payload"]["seller_id"], seller_id)
        self.assertNotEqual(login["session_id"], session_id)

    async def test_username_taken(self):
        await seller_session(self, self.client)
        answer = await self.client.request("CreateAccount", {"username": "alice", "password": "x-passphrase"})
        assert_error(self, answer, "USERNAME_TAKEN")

    async def test_same_username_other_role(self):
        await seller_session(self, self.client)
        buyer = await connect(self, self.market.ports["buyer"])
        answer = await buyer.request("CreateAccount", {"username": "alice", "password": "x-passphrase"})
        payload_of(self, answer)

    async def test_create_account_bad_fields(self):
        for payload, field in [
            ({"password": "x-passphrase"}, "username"),
            ({"username": "has space", "password": "x-passphrase"}, "username"),
            ({"username": "u" * 33, "password": "x-passphrase"}, "username"),
            ({"username": "u", "password": ""}, "password"),
            ({"username": "u", "password": "p" * 129}, "password"),
            ({"username": "u", "password": "p-passphrase", "name": ""}, "name"),
            ({"username": "u", "password": "p-passphrase", "name": 5}, "name"),
        ]:
            answer = await self.client.request("CreateAccount", payload)
            self.assertIn(field, assert_error(self, answer, "BAD_REQUEST")["message"])

    async def test_invalid_credentials(self):
        await seller_session(self, self.client)
        for username, password in [("alice", "wrong"), ("nobody", "secret")]:
            answer = await self.client.request(
                "Login", {"username": username, "password": password}
            )
            assert_error(self, answer, "INVALID_CREDENTIALS")

    async def test_logout(self):
        _, session_id = await seller_session(self, self.client)
        answer = await self.client.request("Logout", {}, session_id)
        self.assertEqual(payload_of(self, answer), {})
        self.assertIsNone(answer["session_id"])
        again = await self.client.request("DisplayItemsForSale", {}, session_id)
        assert_error(self, again, "INVALID_SESSION")

    async def test_session_apis_need_a_session(self):
        for api in ("Logout", "GetSellerRating", "RegisterItemForSale", "ChangeItemPrice",
                    "UpdateUnitsForSale", "DisplayItemsForSale"):
            assert_error(self, await self.client.request(api, {}), "NOT_LOGGED_IN")
            answer = await self.client.request(api, {}, "made-up")
            assert_error(self, answer, "INVALID_SESSION")

    async def test_buyer_session_is_invalid_here(self):
        buyer = await connect(self, self.market.ports["buyer"])
        await buyer.request("CreateAccount", {"username": "bob", "password": "pw-passphrase"})
        login = await buyer.request("Login", {"username": "bob", "password": "pw-passphrase"})
        answer = await self.client.request("DisplayItemsForSale", {}, login["session_id"])
        assert_error(self, answer, "INVALID_SESSION")

    async def test_unknown_api(self):
        answer = await self.client.request("SearchItemsForSale", {})
        assert_error(self, answer, "UNKNOWN_API")

    async def test_register_and_display(self):
        seller_id, session_id = await seller_session(self, self.client)
        item_id = await self.register(session_id)
        self.assertRegex(item_id, r"^3-[0-9]+$")
        answer = await self.client.request("DisplayItemsForSale", {}, session_id)
        self.assertEqual(
            payload_of(self, answer)["items"],
            [
                {
                    "item_id": item_id,
                    "item_name": "Phone case",
                    "category": 3,
                    "keywords": ["phone", "case"],
                    "condition": "new",
                    "price": 9.99,
                    "price_decimal": "9.99",
                    "quantity": 5,
                    "seller_id": seller_id,
                    "thumbs_up": 0,
                    "thumbs_down": 0,
                }
            ],
        )

    async def test_register_bad_fields_change_nothing(self):
        _, session_id = await seller_session(self, self.client)
        for change, field in [
            ({"item_name": ""}, "item_name"),
            ({"item_name": "x" * 33}, "item_name"),
            ({"category": -1}, "category"),
            ({"category": "3"}, "category"),
            ({"keywords": ["a", "b", "c", "d", "e", "f"]}, "keywords"),
            ({"keywords": ["ninechars"]}, "keywords"),
            ({"condition": "mint"}, "condition"),
            ({"price": -1}, "price"),
            ({"price": 1.234}, "price"),
            ({"quantity": 0}, "quantity"),
            ({"quantity": 2.5}, "quantity"),
        ]:
            answer = await self.client.request(
                "RegisterItemForSale", dict(PHONE_CASE, **change), session_id
            )
            self.assertIn(field, assert_error(self, answer, "BAD_REQUEST")["message"])
        answer = await self.client.request("DisplayItemsForSale", {}, session_id)
        self.assertEqual(payload_of(self, answer)["items"], [])

    async def test_change_price(self):
        _, session_id = await seller_session(self, self.client)
        item_id = await self.register(session_id)
        answer = await self.client.request(
            "ChangeItemPrice", {"item_id": item_id, "price": 12.5}, session_id
        )
        self.assertEqual(payload_of(self, answer)["price"], 12.5)

    async def test_change_price_errors(self):
        _, alice = await seller_session(self, self.client, "alice")
        _, carol = await seller_session(self, self.client, "carol")
        item_id = await self.register(alice)
        cases = [
            ({"item_id": item_id, "price": 1}, carol, "FORBIDDEN"),
            ({"item_id": "3-999999", "price": 1}, alice, "NOT_FOUND"),
            ({"item_id": "4-" + item_id.split("-")[1], "price": 1}, alice, "NOT_FOUND"),
            ({"item_id": "nonsense", "price": 1}, alice, "BAD_REQUEST"),
            ({"item_id": item_id, "price": "1"}, alice, "BAD_REQUEST"),
        ]
        for payload, session_id, code in cases:
            answer = await self.client.request("ChangeItemPrice", payload, session_id)
            assert_error(self, answer, code)
        items = await self.client.request("DisplayItemsForSale", {}, alice)
        self.assertEqual(payload_of(self, items)["items"][0]["price"], 9.99)

    async def test_update_units(self):
        _, session_id = await seller_session(self, self.client)
        item_id = await self.register(session_id)
        answer = await self.client.request(
            "UpdateUnitsForSale", {"item_id": item_id, "quantity": 5}, session_id
        )
        self.assertEqual(payload_of(self, answer)["quantity"], 0)
        items = await self.client.request("DisplayItemsForSale", {}, session_id)
        self.assertEqual(len(payload_of(self, items)["items"]), 1, "sold out is listed")

    async def test_update_units_errors(self):
        _, alice = await seller_session(self, self.client, "alice")
        _, carol = await seller_session(self, self.client, "carol")
        item_id = await self.register(alice)
        cases = [
            ({"item_id": item_id, "quantity": 6}, alice, "BAD_REQUEST"),
            ({"item_id": item_id, "quantity": 0}, alice, "BAD_REQUEST"),
            ({"item_id": item_id, "quantity": 1}, carol, "FORBIDDEN"),
            ({"item_id": "3-999999", "quantity": 1}, alice, "NOT_FOUND"),
        ]
        for payload, session_id, code in cases:
            answer = await self.client.request("UpdateUnitsForSale", payload, session_id)
            assert_error(self, answer, code)
        items = await self.client.request("DisplayItemsForSale", {}, alice)
        self.assertEqual(payload_of(self, items)["items"][0]["quantity"], 5)

    async def test_rating_starts_at_zero(self):
        seller_id, session_id = await seller_session(self, self.client, name="Alice A")
        answer = await self.client.request("GetSellerRating", {}, session_id)
        self.assertEqual(
            payload_of(self, answer),
            {"seller_id": seller_id, "name": "Alice A", "thumbs_up": 0,
             "thumbs_down": 0, "items_sold": 0},
        )
