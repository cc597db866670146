"""The buyer service's client of the payments service
(marketplace.buyer.paymentclient), against a tiny fake server of the
framing: what it sends, and how answers, silence and lost connections come
back to its caller."""

from twisted.internet import defer, reactor
from twisted.trial import unittest

from marketplace.contract.errors import NOT_FOUND, UNAVAILABLE
from marketplace.buyer.paymentclient import (
    PaymentsClient,
    PaymentsError,
    PaymentsUnavailable,
)
from tests.test_client import FakeService
from tests.test_connection_errors import free_port


def call(payments: PaymentsClient, api: str, payload: dict) -> defer.Deferred:
    """C{payments.call} as a Deferred."""
    return defer.Deferred.fromCoroutine(payments.call(api, payload))


def client(testcase, endpoint: str, timeout: float = 10.0) -> PaymentsClient:
    payments = PaymentsClient(endpoint, reactor, timeout=timeout, secret="s3cret")
    testcase.addCleanup(payments.close)
    return payments


class PaymentsClientTests(unittest.TestCase):
    async def test_sends_the_secret_and_pipelines(self):
        fake = FakeService()
        payments = client(self, fake.start(self))
        first = call(payments, "GetPayment", {"idempotency_key": "k1"})
        second = call(payments, "VoidPayment", {"idempotency_key": "k2"})
        self.assertEqual(await first, {"n": 1})
        self.assertEqual(await second, {"n": 2})
        self.assertEqual(
            fake.requests[0],
            {
                "type": "request",
                "api": "GetPayment",
                "session_id": "s3cret",
                "payload": {"idempotency_key": "k1"},
            },
        )
        self.assertEqual(len(fake.connections), 1)

    async def test_error_answers(self):
        fake = FakeService(NOT_FOUND, UNAVAILABLE)
        payments = client(self, fake.start(self))
        e = await self.assertFailure(call(payments, "GetPayment", {}), PaymentsError)
        self.assertEqual((e.code, e.message), (NOT_FOUND, "fake"))
        # UNAVAILABLE is not an answer: the request may or may not have
        # been acted on, and is not sent again (its key settles it).
        e = await self.assertFailure(call(payments, "GetPayment", {}), PaymentsUnavailable)
        self.assertIn("answered UNAVAILABLE", str(e))
        self.assertEqual(len(fake.requests), 2)

    async def test_no_answer_in_time(self):
        """A request unanswered after the timeout fails, with every request
        behind it; the next one goes on a new connection."""
        fake = FakeService("ok", "silent")
        payments = client(self, fake.start(self), timeout=1.0)
        await call(payments, "GetPayment", {})
        started = reactor.seconds()
        stuck = call(payments, "AuthorizePayment", {})
        behind = call(payments, "GetPayment", {})
        e = await self.assertFailure(stuck, PaymentsUnavailable)
        self.assertIn("the payments service did not answer", str(e))
        await self.assertFailure(behind, PaymentsUnavailable)
        self.assertLess(reactor.seconds() - started, 5)
        self.assertEqual(await call(payments, "GetPayment", {}), {"n": 4})
        self.assertEqual(len(fake.connections), 2)

    async def test_lost_connection_and_unreachable(self):
        fake = FakeService("drop")
        payments = client(self, fake.start(self))
        e = await self.assertFailure(call(payments, "GetPayment", {}), PaymentsUnavailable)
        self.assertIn("the connection to the payments service was lost", str(e))
        self.assertEqual(len(fake.requests), 1)
        # Nothing listening: one attempt to connect, not a wait until the
        # timeout.
        nowhere = client(self, f"tcp:host=127.0.0.1:port={free_port()}")
        started = reactor.seconds()
        e = await self.assertFailure(call(nowhere, "GetPayment", {}), PaymentsUnavailable)
        self.assertIn("nothing is listening at the payments service", str(e))
        self.assertLess(reactor.seconds() - started, 5)


class SeveralPaymentsDaemonsTests(unittest.TestCase):
    async def test_the_next_daemon_when_one_refuses(self):
        """"A|B": a buyer daemon reaches the payments service while one of
        its daemons is down (restarted in a rolling upgrade)."""
        fake = FakeService()
        down = f"tcp:127.0.0.1:{free_port()}"
        payments = client(self, f"{down}|{fake.start(self)}")
        self.assertEqual(await call(payments, "GetPayment", {}), {"n": 1})
        self.assertEqual(len(fake.connections), 1)
