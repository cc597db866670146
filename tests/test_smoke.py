"""A first end-to-end check: both services answer over real sockets."""

from twisted.trial import unittest

from tests.support import connect, payload_of, start_marketplace


class SmokeTests(unittest.TestCase):
    async def test_seller_and_buyer_answer(self):
        market = await start_marketplace(self)
        seller = await connect(self, market.ports["seller"])
        answer = await seller.request("CreateAccount", {"username": "s", "password": "p-passphrase"})
        self.assertIn("seller_id", payload_of(self, answer))
        buyer = await connect(self, market.ports["buyer"])
        answer = await buyer.request("CreateAccount", {"username": "b", "password": "p-passphrase"})
        self.assertIn("buyer_id", payload_of(self, answer))
