"""The financial-transactions service: card checks without a network, then
the real service on the real payments database."""

import random
import stat
from dataclasses import replace
from datetime import date
from pathlib import Path

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from marketplace.payments import cards, paymentsecret
from marketplace.payments.apis import PaymentApis
from marketplace.daemon import config
from marketplace.daemon.options import AllOptions, PaymentsOptions
from tests.support import (
    PAYMENTS_SECRET,
    RunningMarketplace,
    assert_error,
    connect,
    open_database,
    payload_of,
    start_marketplace,
)

GOOD_NUMBER = "4111111111111111"


class LuhnTests(unittest.SynchronousTestCase):
    def test_valid_numbers(self):
        for number in ("4111111111111111", "5555555555554444", "378282246310005",
                       "6011111111111117", "79927398713"):
            self.assertTrue(cards.luhn_valid(number), number)

    def test_invalid_numbers(self):
        for number in ("4111111111111112", "79927398710", "1234567812345678", "", "41x1"):
            self.assertFalse(cards.luhn_valid(number), number)

    def test_digits_allow_spaces_and_dashes(self):
        self.assertEqual(cards.card_digits("4111 1111-1111 1111"), GOOD_NUMBER)
        self.assertIsNone(cards.card_digits("4111"))
        self.assertIsNone(cards.card_digits("4" * 20))
        self.assertIsNone(cards.card_digits("４１１１１１１１１１１１１１１１"))

    def test_last_four(self):
        self.assertEqual(cards.last_four("4111 1111 1111 1234"), "1234")


class ExpiryTests(unittest.SynchronousTestCase):
    def test_parse(self):
        self.assertEqual(cards.parse_expiry("07/29"), (2029, 7))
        for text in ("7/29", "13/29", "00/29", "07/2029", "07-29", ""):
            self.assertIsNone(cards.parse_expiry(text), text)

    def test_good_through_the_end_of_its_month(self):
        self.assertFalse(cards.expired(2026, 3, date(2026, 3, 31)))
        self.assertTrue(cards.expired(2026, 3, date(2026, 4, 1)))
        self.assertTrue(cards.expired(2025, 12, date(2026, 1, 1)))
        self.assertFalse(cards.expired(2027, 1, date(2026, 12, 31)))


class DeclineReasonTests(unittest.SynchronousTestCase):
    today = date(2026, 5, 17)

    def reason(self, name="Bea", number=GOOD_NUMBER, expiry="05/26", code="123"):
        return cards.decline_reason(name, number, expiry, code, self.today)

    def test_good_card(self):
        self.assertIsNone(self.reason())
        self.assertIsNone(self.reason(code="1234"))

    def test_each_flaw(self):
        self.assertIn("name", self.reason(name="  "))
        self.assertIn("Luhn", self.reason(number="4111111111111112"))
        self.assertIn("digits", self.reason(number="4111"))
        self.assertIn("MM/YY", self.reason(expiry="5/26"))
        self.assertIn("expired", self.reason(expiry="04/26"))
        for code in ("12", "12345", "12a", ""):
            self.assertIn("security code", self.reason(code=code))


class DecisionTests(unittest.SynchronousTestCase):
    """The approval draw and the clock are the service's arguments."""

    def apis(self, rate, when):
        clock = task.Clock()
        clock.advance(when)
        return PaymentApis(None, PAYMENTS_SECRET, rate, clock, random.Random(4))

    def test_rate(self):
        now = 1780000000  # 2026-05-28
        always = self.apis(1.0, now)
        never = self.apis(0.0, now)
        for _ in range(50):
            self.assertIsNone(always.decide("Bea", GOOD_NUMBER, "05/26", "123"))
            self.assertIn("declined", never.decide("Bea", GOOD_NUMBER, "05/26", "123"))

    def test_clock_decides_expiry(self):
        card = ("Bea", GOOD_NUMBER, "05/26", "123")
        self.assertIsNone(self.apis(1.0, 1780000000).decide(*card))  # May 2026
        self.assertIn("expired", self.apis(1.0, 1782000000).decide(*card))  # June 2026

    def test_some_approved_some_not(self):
        apis = self.apis(0.5, 1780000000)
        outcomes = {apis.decide("Bea", GOOD_NUMBER, "05/26", "123") is None for _ in range(50)}
        self.assertEqual(outcomes, {True, False})


def authorization(key, amount=12.5, number=GOOD_NUMBER, code="123", expiry="12/39"):
    return {
        "name": "Bea Buyer",
        "card_number": number,
        "expiration_date": expiry,
        "security_code": code,
        "amount": amount,
        "idempotency_key": key,
    }


class PaymentServiceTests(unittest.TestCase):
    async def setUp(self):
        self.market = await start_marketplace(self, services=("payments",))
        self.db = await open_database(self, "payments")
        self.client = await connect(self, self.market.ports["payments"])

    async def call(self, api, payload):
        return await self.client.request(api, payload, PAYMENTS_SECRET)

    async def test_approve_once_per_key(self):
        first = payload_of(self, await self.call("AuthorizePayment", authorization("k1")))
        self.assertTrue(first["approved"])
        self.assertFalse(first["voided"])
        again = payload_of(
            self, await self.call("AuthorizePayment", authorization("k1", amount=99))
        )
        self.assertEqual(again, first)
        other = payload_of(self, await self.call("AuthorizePayment", authorization("k2")))
        self.assertNotEqual(other["authorization_id"], first["authorization_id"])
        rows = await self.db.query("SELECT count(*) FROM authorizations")
        self.assertEqual(rows[0][0], 2)

    async def test_keeps_no_card_number_nor_code(self):
        await self.call("AuthorizePayment", authorization("k", number="4111 1111 1111 1111",
                                                           code="987"))
        # The id and the times are left out: the database makes them up,
        # and a random id holds "987" about once in 70 tries.
        rows = await self.db.query(
            "SELECT (row_to_json(a)::jsonb - 'id' - 'created_at' - 'voided_at')::text"
            " FROM authorizations AS a"
        )
        text = rows[0][0]
        self.assertIn('"1111"', text)
        self.assertNotIn("41111", text.replace(" ", ""))
        self.assertNotIn("987", text)

    async def test_decline_is_remembered(self):
        self.market.set_approval_rate(0.0)
        first = payload_of(self, await self.call("AuthorizePayment", authorization("d")))
        self.assertFalse(first["approved"])
        self.assertIn("declined", first["reason"])
        self.market.set_approval_rate(1.0)
        again = payload_of(self, await self.call("AuthorizePayment", authorization("d")))
        self.assertEqual(again, first)

    async def test_malformed_cards_declined(self):
        for key, card in [
            ("luhn", authorization("luhn", number="4111111111111112")),
            ("expired", authorization("expired", expiry="01/20")),
            ("code", authorization("code", code="12")),
        ]:
            answer = payload_of(self, await self.call("AuthorizePayment", card))
            self.assertFalse(answer["approved"], key)

    async def test_bad_requests(self):
        card = authorization("b")
        del card["amount"]
        assert_error(self, await self.call("AuthorizePayment", card), "BAD_REQUEST")
        card = authorization("b", amount=1.234)
        assert_error(self, await self.call("AuthorizePayment", card), "BAD_REQUEST")
        card = authorization("b")
        card["card_number"] = 4111111111111111
        assert_error(self, await self.call("AuthorizePayment", card), "BAD_REQUEST")
        assert_error(self, await self.call("VoidPayment", {}), "BAD_REQUEST")

    async def test_void(self):
        approved = payload_of(self, await self.call("AuthorizePayment", authorization("v")))
        voided = payload_of(
            self,
            await self.call("VoidPayment", {"authorization_id": approved["authorization_id"]}),
        )
        self.assertTrue(voided["voided"])
        found = payload_of(self, await self.call("GetPayment", {"idempotency_key": "v"}))
        self.assertTrue(found["voided"])
        answer = await self.call(
            "VoidPayment", {"authorization_id": "00000000-0000-0000-0000-000000000000"}
        )
        assert_error(self, answer, "NOT_FOUND")

    async def test_void_before_authorize_bars_the_key(self):
        """A request that arrives after its caller gave up and voided the key
        is not approved."""
        assert_error(
            self, await self.call("GetPayment", {"idempotency_key": "late"}), "NOT_FOUND"
        )
        payload_of(self, await self.call("VoidPayment", {"idempotency_key": "late"}))
        answer = payload_of(self, await self.call("AuthorizePayment", authorization("late")))
        self.assertFalse(answer["approved"])
        self.assertTrue(answer["voided"])


class CallerTests(unittest.TestCase):
    """Only a caller that shows the secret gets anything from the service:
    no decision, no decline reason, no payment read or voided."""

    async def setUp(self):
        self.market = await start_marketplace(self, services=("payments",))
        self.db = await open_database(self, "payments")
        self.client = await connect(self, self.market.ports["payments"])
        self.market.set_approval_rate(0.0)
        declined = await self.client.request(
            "AuthorizePayment", authorization("filed"), PAYMENTS_SECRET
        )
        self.filed = payload_of(self, declined)
        self.assertIn("declined", self.filed["reason"])

    async def snapshot(self):
        rows = await self.db.query(
            "SELECT row_to_json(a)::text FROM authorizations AS a ORDER BY id"
        )
        return [text for (text,) in rows]

    async def test_strangers_get_an_error_and_nothing_else(self):
        before = await self.snapshot()
        wrong_length = PAYMENTS_SECRET[:-1] + "x"
        strangers = [
            (None, "NOT_LOGGED_IN"),
            ("", "INVALID_CREDENTIALS"),
            (wrong_length, "INVALID_CREDENTIALS"),
            (PAYMENTS_SECRET[:8], "INVALID_CREDENTIALS"),
            (PAYMENTS_SECRET + " ", "INVALID_CREDENTIALS"),
            ("\udc00" * 40, "INVALID_CREDENTIALS"),
        ]
        requests = [
            ("AuthorizePayment", authorization("new")),
            ("AuthorizePayment", authorization("filed")),
            ("AuthorizePayment", authorization("bad", number="4111111111111112")),
            ("GetPayment", {"idempotency_key": "filed"}),
            ("VoidPayment", {"idempotency_key": "filed"}),
            ("VoidPayment", {"authorization_id": self.filed["authorization_id"]}),
            ("VoidPayment", {"idempotency_key": "never-seen"}),
        ]
        for secret, code in strangers:
            for api, payload in requests:
                answer = await self.client.request(api, payload, secret)
                error = assert_error(self, answer, code)
                self.assertNotIn("payload", answer)
                self.assertEqual(set(error), {"code", "message"})
                for word in ("declined", "Luhn", "voided", "approved"):
                    self.assertNotIn(word, error["message"])
        self.assertEqual(await self.snapshot(), before)

    async def test_the_buyer_service_is_served(self):
        found = await self.client.request(
            "GetPayment", {"idempotency_key": "filed"}, PAYMENTS_SECRET
        )
        self.assertEqual(payload_of(self, found), self.filed)

    async def test_a_secret_from_the_environment_is_checked(self):
        apis = PaymentApis(self.db, "another secret of the right size", 0.9, reactor)
        dispatcher = apis.dispatcher()
        request = (
            '{"type":"request","api":"GetPayment","session_id":"%s",'
            '"payload":{"idempotency_key":"filed"}}'
        )
        refused = await dispatcher.handle_frame((request % PAYMENTS_SECRET).encode())
        self.assertIn(b"INVALID_CREDENTIALS", refused)
        served = await dispatcher.handle_frame(
            (request % "another secret of the right size").encode()
        )
        self.assertIn(b'"type":"response"', served)


class SecretTests(unittest.SynchronousTestCase):
    def test_matches(self):
        self.assertTrue(paymentsecret.matches("s" * 20, "s" * 20))
        for given in (None, 7, "", "s" * 19, "s" * 21, "t" * 20, "\udc00"):
            self.assertFalse(paymentsecret.matches(given, "s" * 20), given)

    def test_one_file_per_folder_owner_only(self):
        folder = Path(self.mktemp())
        first = paymentsecret.load_or_create(folder)
        self.assertGreaterEqual(len(first), 32)
        self.assertEqual(paymentsecret.load_or_create(folder), first)
        path = folder / paymentsecret.FILE_NAME
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600)
        self.assertEqual([p.name for p in folder.iterdir()], [paymentsecret.FILE_NAME])
        self.assertNotEqual(paymentsecret.load_or_create(Path(self.mktemp())), first)

    def test_too_short_a_secret_is_refused(self):
        with self.assertRaises(ValueError):
            config.load({"payments_secret": "short"}, env={})
        settings = config.load({}, env={"MARKETPLACE_PAYMENTS_SECRET": "x" * 16})
        self.assertEqual(settings.payments_secret, "x" * 16)
        self.assertNotIn("x" * 16, repr(settings))

    def test_listens_on_loopback_by_default(self):
        for options, name in ((PaymentsOptions(), "listen"), (AllOptions(), "payments-listen")):
            options.parseOptions([])
            self.assertEqual(options[name], ["tcp:8082:interface=127.0.0.1"])


class OutOfTheBoxTests(unittest.TestCase):
    """With no secret configured, a buyer service and a payments service
    started from one data folder find each other's secret (make run)."""

    async def buy(self, market):
        """Sign up a seller and a buyer, put an item in the cart and buy it;
        MakePurchase's answer."""
        seller = await connect(self, market.ports["seller"])
        buyer = await connect(self, market.ports["buyer"])
        sessions = []
        for client in (seller, buyer):
            await client.request("CreateAccount", {"username": "u", "password": "pw-passphrase"})
            login = await client.request("Login", {"username": "u", "password": "pw-passphrase"})
            sessions.append(payload_of(self, login)["session_id"])
        item = {"item_name": "Mug", "category": 1, "keywords": ["mug"],
                "condition": "new", "price": 2.5, "quantity": 3}
        answer = await seller.request("RegisterItemForSale", item, sessions[0])
        add = {"item_id": payload_of(self, answer)["item_id"], "quantity": 1}
        payload_of(self, await buyer.request("AddItemToCart", add, sessions[1]))
        card = authorization("x")
        del card["amount"], card["idempotency_key"]
        return await buyer.request("MakePurchase", card, sessions[1])

    async def test_purchase_with_the_generated_secret(self):
        folder = Path(self.mktemp())
        market = await start_marketplace(self, payments_secret=None, data_dir=folder)
        self.assertTrue((folder / paymentsecret.FILE_NAME).exists())
        self.assertEqual(payload_of(self, await self.buy(market))["total"], 2.5)

    async def test_a_buyer_service_with_another_secret_charges_nothing(self):
        payments = await start_marketplace(self, services=("payments",))
        db = await open_database(self, "payments")
        settings = replace(
            payments.settings,
            payments_secret="z" * 32,
            payments=f"tcp:host=127.0.0.1:port={payments.ports['payments']}",
        )
        market = RunningMarketplace(settings)
        await market.start()
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(market.stop()))
        assert_error(self, await self.buy(market), "UNAVAILABLE")
        self.assertEqual(await db.query("SELECT count(*) FROM authorizations"), [(0,)])
