"""The financial-transactions service: card checks without a network, then
the real service on the real payments database."""

import random
from datetime import date

from twisted.internet import task
from twisted.trial import unittest

from marketplace import cards
from marketplace.payments import PaymentApis
from tests.support import assert_error, connect, open_database, payload_of, start_marketplace

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
        return PaymentApis(None, rate, clock, random.Random(4))

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
        return await self.client.request(api, payload)

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
        rows = await self.db.query("SELECT row_to_json(a)::text FROM authorizations AS a")
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
