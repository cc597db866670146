"""The embedded PostgreSQL killed with SIGKILL (issue 17): the daemon that
owns it starts it again by itself, calls meanwhile are UNAVAILABLE (never
INTERNAL), the first call succeeds within 15 s, 10 s later 40 concurrent
clients see no error on any API, and SIGTERM still stops everything.

A real daemon: C{twistd marketplace --workers 2} on loopback ports with an
embedded PostgreSQL of its own.  Measured times go to the test log.
"""

import os
import signal
import time
from collections import Counter

import psutil
from twisted.internet import defer
from twisted.logger import Logger
from twisted.trial import unittest

from tests.crashes import Daemon, alive, call_fresh, connect, running, sleep
from tests.support import payload_of
from tests.test_purchase import CARD
from tests.test_seller_api import PHONE_CASE

log = Logger()

#: A password the account rules accept.
PASSWORD = "crash-test-Pw-2026"

CLIENTS = 40


class _Seller:
    def __init__(self, testcase, port: int, name: str) -> None:
        self.testcase = testcase
        self.port = port
        self.name = name

    async def sign_up(self) -> None:
        self.client = await connect(self.port)
        self.testcase.addCleanup(self.client.transport.loseConnection)
        account = {"username": self.name, "password": PASSWORD}
        self.id = (await self.ok("CreateAccount", account, None)).get("seller_id")

    async def ok(self, api: str, payload: dict, session="mine") -> dict:
        answer = await self.client.request(
            api, payload, self.session if session == "mine" else session
        )
        return payload_of(self.testcase, answer)

    async def every_api(self):
        """Every seller API once (but CreateAccount, done at sign-up); the
        id of a new item with units on sale, and the seller's."""
        account = {"username": self.name, "password": PASSWORD}
        self.session = (await self.ok("Login", account, None))["session_id"]
        item_id = (await self.ok("RegisterItemForSale", dict(PHONE_CASE, quantity=50)))["item_id"]
        await self.ok("ChangeItemPrice", {"item_id": item_id, "price": 5})
        await self.ok("UpdateUnitsForSale", {"item_id": item_id, "quantity": 1})
        await self.ok("DisplayItemsForSale", {})
        await self.ok("GetSellerRating", {})
        await self.ok("Logout", {})
        return item_id, self.id


class _Buyer(_Seller):
    async def every_api(self, item) -> None:
        """Every buyer API once (but CreateAccount, done at sign-up) on
        C{item}, an item id and its seller's id."""
        item_id, seller_id = item
        account = {"username": self.name, "password": PASSWORD}
        answer = await self.ok("Login", account, None)
        self.session = answer["session_id"]
        await self.ok("SearchItemsForSale", {"category": 3, "keywords": ["phone"]})
        await self.ok("GetItem", {"item_id": item_id})
        await self.ok("AddItemToCart", {"item_id": item_id, "quantity": 2})
        await self.ok("RemoveItemFromCart", {"item_id": item_id, "quantity": 1})
        await self.ok("SaveCart", {})
        await self.ok("DisplayCart", {})
        await self.ok("MakePurchase", dict(CARD))
        await self.ok("ProvideFeedback", {"item_id": item_id, "thumbs_up": True})
        await self.ok("GetSellerRating", {"seller_id": seller_id})
        await self.ok("GetBuyerPurchases", {})
        await self.ok("AddItemToCart", {"item_id": item_id, "quantity": 1})
        await self.ok("ClearCart", {})
        await self.ok("Logout", {})


class DatabaseCrashTests(unittest.TestCase):
    timeout = 300

    async def test_killed_embedded_postgres_comes_back(self):
        daemon = Daemon(self).start()
        await daemon.serving()
        seller_port, buyer_port = daemon.ports["seller"], daemon.ports["buyer"]
        sellers = [_Seller(self, seller_port, f"s{n}") for n in range(CLIENTS // 2)]
        buyers = [_Buyer(self, buyer_port, f"b{n}") for n in range(CLIENTS // 2)]
        for one in sellers + buyers:
            await one.sign_up()
        await buyers[0].every_api(await sellers[0].every_api())
        probe = buyers[1]
        account = {"username": probe.name, "password": PASSWORD}
        probe.session = (await probe.ok("Login", account, None))["session_id"]
        await sleep(1)  # the last commits are on disk

        postmaster = daemon.postmaster()
        os.kill(postmaster, signal.SIGKILL)
        killed = time.monotonic()
        # Nobody acts: calls (on fresh connections and on an open one) are
        # answered UNAVAILABLE until the first succeeds.
        codes = Counter()
        first = None
        while time.monotonic() - killed < 30:
            answers = [
                await probe.client.request("DisplayCart", {}, probe.session),
                await call_fresh(seller_port, "Login", {"username": "s0", "password": PASSWORD}),
            ]
            for answer in answers:
                codes[answer["error"]["code"] if answer["type"] == "error" else "OK"] += 1
            if all(a["type"] == "response" for a in answers):
                first = time.monotonic() - killed
                break
            await sleep(0.1)
        log.info(
            "measured: embedded PostgreSQL SIGKILL -> first success in {seconds:.2f} s;"
            " answers meanwhile: {codes}",
            seconds=first or -1, codes=dict(codes),
        )
        for line in daemon.log().splitlines():
            if "embedded PostgreSQL" in line:
                log.info("daemon: {line}", line=line)
        self.assertIsNotNone(first, "no success within 30 s:\n" + daemon.log())
        self.assertLess(first, 15.0)
        self.assertEqual(set(codes) - {"OK", "UNAVAILABLE"}, set(), daemon.log())
        restarted = daemon.postmaster()
        self.assertNotEqual(restarted, postmaster)
        restarted_process = psutil.Process(restarted)
        self.assertTrue(running(restarted_process))
        self.assertIn("the embedded PostgreSQL (pid", daemon.log())
        self.assertIn("runs again", daemon.log())
        self.assertEqual([p for p in daemon.handles() if not alive(p)], [],
                         "the handle list keeps dead processes")

        # 10 s later: 40 clients at once, every API, not one error.
        await sleep(max(0.0, first + 10 - (time.monotonic() - killed)))
        items = await defer.gatherResults(
            [defer.Deferred.fromCoroutine(s.every_api()) for s in sellers]
        )
        await defer.gatherResults(
            [defer.Deferred.fromCoroutine(b.every_api(i)) for b, i in zip(buyers, items)]
        )

        for one in sellers + buyers:
            one.client.transport.loseConnection()
        self.assertEqual(await daemon.stop(), 0, daemon.log())
        self.assertEqual(await daemon.gone(), set(), "processes left after SIGTERM")
        self.assertFalse(running(restarted_process), "the restarted PostgreSQL outlived the daemon")
        self.assertEqual(daemon.handles(), [])
        self.assertNotIn("Traceback", daemon.log())
