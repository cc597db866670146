"""Security properties over the real services and databases: passwords and
session ids that give nothing away, the failed-login limit, every API acting
only on its own session's data, and logs that hold no secrets."""

import ast
import hashlib
import json
from pathlib import Path

from argon2 import PasswordHasher
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from marketplace.customer.accounts import Accounts
from marketplace.customer.passwords import Passwords
from marketplace.frame import dispatch
from marketplace.frame.dispatch import Call
from tests.support import (
    assert_error,
    connect,
    empty_databases,
    open_database,
    payload_of,
    start_marketplace,
)

PASSWORD = "correct horse battery staple"
CARD = {
    "name": "Bea Buyer",
    "card_number": "4111111111111111",
    "expiration_date": "12/99",
    "security_code": "123",
}
ITEM = {
    "item_name": "Lamp",
    "category": 2,
    "keywords": ["lamp"],
    "condition": "new",
    "price": 10,
    "quantity": 10,
}


class CountingPasswords(Passwords):
    """Passwords with a cheap hash that count every real verification."""

    def __init__(self):
        super().__init__(PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
        self.checks = []

    def _check(self, stored, password):
        self.checks.append(stored)
        return super()._check(stored, password)


async def account(testcase, client, username, password=PASSWORD):
    """Create an account and log in; (account id, session id)."""
    created = payload_of(
        testcase,
        await client.request("CreateAccount", {"username": username, "password": password}),
    )
    login = payload_of(
        testcase,
        await client.request("Login", {"username": username, "password": password}),
    )
    return next(iter(created.values())), login["session_id"]


class PasswordTests(unittest.TestCase):
    """Passwords: argon2 in a thread; an unknown username costs a
    verification too, so failing takes as long either way."""

    async def setUp(self):
        await empty_databases(self)
        self.customer = await open_database(self, "customer")
        self.passwords = CountingPasswords()
        self.accounts = Accounts("buyer", self.customer, self.passwords)

    def call(self, api, payload):
        return Call(dispatch.Request(api=api, session_id=None, payload=payload))

    async def test_unknown_username_still_verifies(self):
        await self.accounts.create_account(
            self.call("CreateAccount", {"username": "known", "password": PASSWORD})
        )
        for username in ("known", "nobody"):
            self.passwords.checks.clear()
            with self.assertRaises(Exception) as caught:
                await self.accounts.login(
                    self.call("Login", {"username": username, "password": "wrong"})
                )
            self.assertEqual(caught.exception.code, "INVALID_CREDENTIALS")
            self.assertEqual(len(self.passwords.checks), 1, username)
            self.assertTrue(self.passwords.checks[0].startswith("$argon2id$"))

    async def test_stored_hash_is_argon2id_not_the_password(self):
        await self.accounts.create_account(
            self.call("CreateAccount", {"username": "known", "password": PASSWORD})
        )
        rows = await self.customer.query("SELECT * FROM accounts")
        self.assertEqual(len(rows), 1)
        self.assertNotIn(PASSWORD, json.dumps(rows, default=str))
        (stored,) = await self.customer.one("SELECT password_hash FROM accounts")
        self.assertTrue(stored.startswith("$argon2id$"))


class SessionIdTests(unittest.TestCase):
    async def setUp(self):
        self.market = await start_marketplace(self, services=("seller", "buyer"))
        self.buyer = await connect(self, self.market.ports["buyer"])

    async def test_database_holds_no_usable_session_id(self):
        _, session_id = await account(self, self.buyer, "bea")
        # 256 bits from secrets.token_urlsafe(32): 43 URL-safe characters.
        self.assertEqual(len(session_id), 43)
        customer = self.market.backend().customer
        product = self.market.backend().product
        dumped = json.dumps(
            [
                await customer.query("SELECT * FROM sessions"),
                await product.query("SELECT * FROM active_cart_lines"),
            ],
            default=str,
        )
        self.assertNotIn(session_id, dumped)
        (key,) = await customer.one("SELECT key FROM sessions")
        self.assertEqual(key, hashlib.sha256(session_id.encode()).hexdigest())
        # The key itself opens nothing.
        answer = await self.buyer.request("DisplayCart", {}, key)
        assert_error(self, answer, "INVALID_SESSION")

    def test_no_python_comparison_of_secrets(self):
        """Session ids are looked up by their hash in the database; the
        server never compares a secret in Python, where == would leak its
        length of common prefix through timing.  Should one appear, it must
        be hmac.compare_digest."""
        secret_names = ("session_id", "session_key", "password", "key")
        server = Path(__file__).parent.parent / "marketplace"
        found = []
        for path in server.glob("*/*.py"):
            if path.parent.name in ("clientlib", "bench", "cluster"):
                continue
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if not isinstance(node, ast.Compare):
                    continue
                if not any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
                    continue
                for operand in [node.left, *node.comparators]:
                    name = getattr(operand, "id", None) or getattr(operand, "attr", None)
                    if name in secret_names:
                        found.append(f"{path.name}:{node.lineno}")
        self.assertEqual(found, [])


class LoginLimitTests(unittest.TestCase):
    """Five failed logins of a username (per role) from one address within
    five minutes: Login answers that address RATE_LIMITED until the window
    has passed.  (tests/test_hashing_budget.py: other addresses.)"""

    async def setUp(self):
        self.market = await start_marketplace(self, services=("seller", "buyer"))
        self.seller = await connect(self, self.market.ports["seller"])
        self.buyer = await connect(self, self.market.ports["buyer"])
        for client in (self.seller, self.buyer):
            await client.request("CreateAccount", {"username": "sam", "password": PASSWORD})

    def login(self, client, password, username="sam"):
        return client.request("Login", {"username": username, "password": password})

    async def fail(self, client, times, username="sam"):
        for _ in range(times):
            assert_error(self, await self.login(client, "wrong", username), "INVALID_CREDENTIALS")

    async def test_sixth_attempt_is_limited_even_with_the_password(self):
        await self.fail(self.seller, 5)
        assert_error(self, await self.login(self.seller, PASSWORD), "RATE_LIMITED")
        assert_error(self, await self.login(self.seller, "wrong"), "RATE_LIMITED")
        # The other role, and other usernames, are not held up.
        payload_of(self, await self.login(self.buyer, PASSWORD))
        assert_error(self, await self.login(self.seller, "x", "other"), "INVALID_CREDENTIALS")

    async def test_unknown_usernames_are_limited_alike(self):
        """Whether a username exists does not show in the limit either."""
        await self.fail(self.buyer, 5, "ghost")
        assert_error(self, await self.login(self.buyer, "wrong", "ghost"), "RATE_LIMITED")

    async def test_successes_do_not_count(self):
        await self.fail(self.buyer, 4)
        for _ in range(3):
            payload_of(self, await self.login(self.buyer, PASSWORD))
        await self.fail(self.buyer, 1)
        assert_error(self, await self.login(self.buyer, PASSWORD), "RATE_LIMITED")

    async def test_limit_holds_across_restarts_and_ends_with_the_window(self):
        await self.fail(self.seller, 5)
        await self.market.restart()
        self.seller = await connect(self, self.market.ports["seller"])
        assert_error(self, await self.login(self.seller, PASSWORD), "RATE_LIMITED")
        # Five minutes on (the window is counted by the database's clock).
        for table in ("login_failures", "login_failures_by_source"):
            await self.market.backend().customer.execute(
                f"UPDATE {table} SET window_start = window_start - interval '301 seconds'"
            )
        payload_of(self, await self.login(self.seller, PASSWORD))
        await self.fail(self.seller, 4)
        payload_of(self, await self.login(self.seller, PASSWORD))

    async def test_guesses_sent_at_once_are_all_counted(self):
        """Guesses sent at once from one address wait their turn and are
        checked one after the other; every guess checked counts, so exactly
        5 are checked and the rest are RATE_LIMITED."""
        answers = [self.login(self.seller, "guess %d" % i) for i in range(12)]
        codes = [(await a)["error"]["code"] for a in answers]
        self.assertEqual(codes.count("INVALID_CREDENTIALS"), 5, codes)
        self.assertEqual(codes.count("RATE_LIMITED"), 7, codes)
        for i in range(12):
            answer = await self.login(self.seller, "one more guess %d" % i)
            codes.append(answer["error"]["code"])
        self.assertEqual(codes.count("INVALID_CREDENTIALS"), 5, codes)


class AuthorisationTests(unittest.TestCase):
    """Every API acts only on its own session's data."""

    async def setUp(self):
        self.market = await start_marketplace(self)
        self.seller = await connect(self, self.market.ports["seller"])
        self.buyer = await connect(self, self.market.ports["buyer"])
        self.seller_a, self.sa = await account(self, self.seller, "seller-a")
        self.seller_b, self.sb = await account(self, self.seller, "seller-b")
        self.item_a = payload_of(
            self, await self.seller.request("RegisterItemForSale", ITEM, self.sa)
        )["item_id"]
        self.item_b = payload_of(
            self, await self.seller.request("RegisterItemForSale", ITEM, self.sb)
        )["item_id"]
        self.buyer_a, self.ba = await account(self, self.buyer, "buyer-a")
        self.buyer_b, self.bb = await account(self, self.buyer, "buyer-b")

    async def items(self, session):
        answer = await self.seller.request("DisplayItemsForSale", {}, session)
        return payload_of(self, answer)["items"]

    async def test_seller_cannot_change_anothers_item(self):
        change = {"item_id": self.item_b, "price": 0}
        assert_error(
            self, await self.seller.request("ChangeItemPrice", change, self.sa), "FORBIDDEN"
        )
        take = {"item_id": self.item_b, "quantity": 10}
        assert_error(
            self, await self.seller.request("UpdateUnitsForSale", take, self.sa), "FORBIDDEN"
        )
        (item,) = await self.items(self.sb)
        self.assertEqual((item["price"], item["quantity"]), (10, 10))

    async def test_display_shows_only_own_items(self):
        self.assertEqual([i["item_id"] for i in await self.items(self.sa)], [self.item_a])
        self.assertEqual([i["item_id"] for i in await self.items(self.sb)], [self.item_b])

    async def test_seller_rating_is_the_sessions_own(self):
        answer = await self.seller.request(
            "GetSellerRating", {"seller_id": self.seller_b}, self.sa
        )
        self.assertEqual(payload_of(self, answer)["seller_id"], self.seller_a)

    async def test_sessions_are_invalid_on_the_other_service(self):
        for api in ("DisplayItemsForSale", "GetSellerRating", "Logout"):
            answer = await self.seller.request(api, {}, self.ba)
            assert_error(self, answer, "INVALID_SESSION")
        for api in ("DisplayCart", "GetBuyerPurchases", "Logout"):
            answer = await self.buyer.request(api, {}, self.sa)
            assert_error(self, answer, "INVALID_SESSION")
        # Neither session was ended by that.
        payload_of(self, await self.buyer.request("DisplayCart", {}, self.ba))
        payload_of(self, await self.seller.request("DisplayItemsForSale", {}, self.sa))

    async def test_buyers_carts_are_their_own(self):
        request = self.buyer.request
        add = {"item_id": self.item_a, "quantity": 2}
        payload_of(self, await request("AddItemToCart", add, self.ba))
        payload_of(self, await request("SaveCart", {}, self.ba))
        # B sees an empty cart, and what B does leaves A's carts be.
        self.assertEqual(payload_of(self, await request("DisplayCart", {}, self.bb))["cart"], [])
        remove = {"item_id": self.item_a, "quantity": 2}
        assert_error(self, await request("RemoveItemFromCart", remove, self.bb), "NOT_FOUND")
        payload_of(self, await request("ClearCart", {}, self.bb))
        payload_of(self, await request("SaveCart", {}, self.bb))
        cart = payload_of(self, await request("DisplayCart", {}, self.ba))["cart"]
        self.assertEqual([(c["item_id"], c["quantity"]) for c in cart], [(self.item_a, 2)])
        # A's saved cart is still A's: a new session of A starts from it.
        login = await request("Login", {"username": "buyer-a", "password": PASSWORD})
        again = payload_of(self, login)["session_id"]
        cart = payload_of(self, await request("DisplayCart", {}, again))["cart"]
        self.assertEqual([(c["item_id"], c["quantity"]) for c in cart], [(self.item_a, 2)])
        login = await request("Login", {"username": "buyer-b", "password": PASSWORD})
        again = payload_of(self, login)["session_id"]
        self.assertEqual(payload_of(self, await request("DisplayCart", {}, again))["cart"], [])

    async def test_purchases_and_feedback_are_per_buyer(self):
        request = self.buyer.request
        add = {"item_id": self.item_a, "quantity": 1}
        payload_of(self, await request("AddItemToCart", add, self.ba))
        payload_of(self, await request("MakePurchase", CARD, self.ba))
        mine = payload_of(self, await request("GetBuyerPurchases", {}, self.ba))
        self.assertEqual([i["item_id"] for i in mine["items"]], [self.item_a])
        theirs = payload_of(self, await request("GetBuyerPurchases", {}, self.bb))
        self.assertEqual((theirs["items"], theirs["items_purchased"]), ([], 0))
        # B never bought it, so B cannot rate it.
        vote = {"item_id": self.item_a, "thumbs_up": False}
        assert_error(self, await request("ProvideFeedback", vote, self.bb), "FORBIDDEN")
        # B's empty cart buys nothing, whatever A's holds.
        payload_of(self, await request("AddItemToCart", add, self.ba))
        assert_error(self, await request("MakePurchase", CARD, self.bb), "EMPTY_CART")


class LogTests(unittest.TestCase):
    """One log line per failed request, with its code; never a password,
    session id or card number."""

    async def setUp(self):
        self.market = await start_marketplace(self)
        self.seller = await connect(self, self.market.ports["seller"])
        self.buyer = await connect(self, self.market.ports["buyer"])
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def logged(self) -> str:
        lines = []
        for event in self.events:
            lines.append(formatEvent(event))
            lines.append(repr(event))
            failure = event.get("log_failure")
            if failure is not None:
                lines.append(failure.getTraceback())
        return "\n".join(lines)

    async def test_no_secrets_in_logs(self):
        secret = "p4ss-Word-never-logged"
        card = "4000056655665556"
        _, session_id = await account(self, self.buyer, "bea", secret)
        _, seller_session = await account(self, self.seller, "sal", secret)
        requests = [
            ("Login", {"username": "bea", "password": secret + "!"}, None),
            ("Login", {"username": "no one", "password": secret}, None),
            ("Login", {"username": "bea", "password": secret * 10}, None),
            ("CreateAccount", {"username": "bea", "password": secret}, None),
            ("CreateAccount", {"username": 7, "password": secret}, None),
            ("Nonsense", {"password": secret}, session_id),
            ("DisplayCart", {}, session_id + "x"),
            ("DisplayItemsForSale", {}, session_id),
            ("MakePurchase", dict(CARD, card_number=card), session_id),
            ("MakePurchase", dict(CARD, card_number=card, security_code=5), session_id),
        ]
        answers = []
        for api, payload, session in requests:
            client = self.seller if api == "DisplayItemsForSale" else self.buyer
            answers.append(await client.request(api, payload, session))
        answers.append(
            await self.buyer.send_frame(
                b'{"type": "request", "api": "Login", "payload": {"password": "%s"'
                % secret.encode()
            )
        )
        self.assertTrue(all(a["type"] == "error" for a in answers), answers)
        logged = self.logged()
        for code in ("INVALID_CREDENTIALS", "USERNAME_TAKEN", "UNKNOWN_API", "INVALID_SESSION"):
            self.assertIn(code, logged)
        for needle in (secret, session_id, seller_session, card, card[:12]):
            self.assertNotIn(needle, logged)
        for answer in answers:
            self.assertNotIn(secret, json.dumps(answer))
            self.assertNotIn(card, json.dumps(answer))

    async def test_one_line_per_failed_request(self):
        before = len(self.events)
        answer = await self.buyer.request("DisplayCart", {}, "no such session")
        assert_error(self, answer, "INVALID_SESSION")
        lines = [formatEvent(e) for e in self.events[before:]]
        failed = [line for line in lines if "INVALID_SESSION" in line]
        self.assertEqual(len(failed), 1, lines)
        self.assertIn("DisplayCart", failed[0])
