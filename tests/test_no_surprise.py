"""No surprise charges: the client library's expected_total and the buyer
program's purchase, when the seller changes a price while the buyer is
typing in the card."""

from decimal import Decimal

from twisted.internet import reactor, task
from twisted.trial import unittest

from marketplace.clientlib import ClientError
from tests.support import open_database, start_marketplace
from tests.test_cli import buyer_shell
from tests.test_client import logged_in_buyer, seller_with_items, service

CARD = ("Bea B", "4111111111111111", "12/30", "123")


class ClientLibraryTests(unittest.TestCase):
    async def test_price_changed_carries_the_cart(self):
        market = await start_marketplace(self)
        seller, (mug, _) = await seller_with_items(self, market)
        buyer = await logged_in_buyer(self, service(market, "buyer"))
        shown = await buyer.add_item_to_cart(mug, 2)
        self.assertEqual(shown["total_decimal"], "9.00")
        await seller.change_item_price(mug, Decimal("5.01"))
        with self.assertRaises(ClientError) as caught:
            await buyer.make_purchase(*CARD, expected_total=shown["total"])
        self.assertEqual(caught.exception.code, "PRICE_CHANGED")
        now = caught.exception.extra["cart"]
        self.assertEqual(now["total_decimal"], "10.02")
        self.assertEqual(now["total"], Decimal("10.02"))
        bought = await buyer.make_purchase(*CARD, expected_total=now["total_decimal"])
        self.assertEqual(bought["total"], Decimal("10.02"))


class BuyerProgramTests(unittest.TestCase):
    timeout = 60

    async def until(self, text, *lines):
        """Feed lines to the program; its output, once C{text} is in it (the
        command is then still waiting for an answer)."""
        for line in lines:
            self.cli.shell.dataReceived(line.encode() + b"\n")
        out = ""
        for _ in range(200):
            out += self.cli.output()
            if text in out:
                return out
            await task.deferLater(reactor, 0.05, lambda: None)
        self.fail(f"{text!r} never came: {out!r}")

    async def setUp(self):
        self.market = await start_marketplace(self)
        self.payments = await open_database(self, "payments")
        self.seller, (self.mug, _) = await seller_with_items(self, self.market)
        self.cli = buyer_shell(self, self.market, interactive=True)
        await self.cli.run("register bea -p pw-passphrase", "login bea -p pw-passphrase", f"add {self.mug} 2")
        # The buyer starts to buy, sees 9.00, and the price changes while
        # they type the card in.
        shown = await self.until("Name on the card:", "buy")
        self.assertIn("9.00", shown)
        await self.seller.change_item_price(self.mug, Decimal("5.01"))

    async def charged(self):
        return await self.payments.query("SELECT amount::text FROM authorizations")

    async def test_shows_the_new_total_and_asks_again(self):
        out = await self.until("(yes/no): ", *CARD)
        self.assertIn("The prices have changed since the cart was shown:", out)
        self.assertIn("10.02", out)
        self.assertTrue(out.endswith("Buy it for 10.02? (yes/no): "), out)
        self.assertEqual(await self.charged(), [])
        out = await self.cli.run("yes")
        self.assertRegex(out, r"Purchase \d+ done: 2 units for 10.02.")
        self.assertEqual(await self.charged(), [("10.02",)])

    async def test_no_buys_nothing(self):
        await self.until("(yes/no): ", *CARD)
        out = await self.cli.run("no")
        self.assertIn("error: the prices changed; nothing was bought", out)
        self.assertEqual(await self.charged(), [])
        cart = await self.cli.run("cart")
        self.assertIn("10.02", cart)
