"""Reads on a read pool (docs/RELIABILITY.md, Reads on the replicas),
without a cluster: connection strings that name the test server twice
give each database a second pool (libpq finds no standby there and takes
the server as "any"), and closing a database's first pool is the primary
out of reach.  The catalog is read on the read pool and the session
touched separately; with the primary away, carts, items and sessions are
still read there, and writes answer UNAVAILABLE.  (The real standbys,
their replay and a killed primary: tests/test_cluster.py.)"""

from psycopg2.extensions import make_dsn, parse_dsn
from twisted.internet import reactor, task
from twisted.trial import unittest

from marketplace.customer.touches import TOUCH_EVERY, Touches
from marketplace.postgres import database
from tests.support import assert_error, connect, layout_dsns, payload_of, start_marketplace
from tests.test_buyer_api import buyer_session
from tests.test_seller_api import PHONE_CASE, seller_session


def twice(dsn: str) -> str:
    """C{dsn} naming its one host twice (a "replicated" database)."""
    params = parse_dsn(dsn)
    params["host"] = f"{params['host']},{params['host']}"
    return make_dsn(**params)


class ReadPoolTests(unittest.TestCase):
    async def setUp(self):
        dsn = twice(layout_dsns("one")["customer"])
        self.market = await start_marketplace(self, customer_db=dsn, product_db=dsn)
        self.backend = self.market.backend()
        self.seller = await connect(self, self.market.ports["seller"])
        self.buyer = await connect(self, self.market.ports["buyer"])
        _, seller_session_id = await seller_session(self, self.seller)
        answer = await self.seller.request("RegisterItemForSale", PHONE_CASE, seller_session_id)
        self.item = payload_of(self, answer)["item_id"]
        _, self.session = await buyer_session(self, self.buyer)

    def call(self, api, payload=None):
        return self.buyer.request(api, payload or {}, self.session)

    async def last_seen_age(self) -> float:
        row = await self.backend.customer.one(
            "SELECT extract(epoch FROM now() - max(last_seen)) FROM sessions WHERE role = 'buyer'")
        return float(row[0])

    def primary_away(self) -> None:
        for db in (self.backend.customer, self.backend.product):
            db.pool.close()

    async def test_both_pools_open(self):
        self.assertTrue(self.backend.product.has_replicas)
        self.assertTrue(self.backend.customer.has_replicas)
        self.assertFalse(self.backend.payments.has_replicas)

    async def test_read_connections_are_made_again_after_a_while(self):
        # So that one on the primary (no standby was up) moves back to a
        # standby once there is one.
        self.patch(database, "READ_CONNECTION_AGE", 0.0)
        reads = self.backend.product.read_pools()[0]
        before = set(reads.connections)
        for _ in range(3):
            payload_of(self, await self.call("GetItem", {"item_id": self.item}))
        self.assertTrue(before - set(reads.connections))
        self.assertEqual(reads.stats.reconnects, 0)

    async def test_a_catalog_read_touches_the_session_separately(self):
        await self.backend.customer.execute(
            "UPDATE sessions SET last_seen = now() - interval '60 seconds'")
        payload_of(self, await self.call("GetItem", {"item_id": self.item}))
        for _ in range(50):  # the touch is not waited for
            if await self.last_seen_age() < 5:
                break
            await task.deferLater(reactor, 0.05, lambda: None)
        self.assertLess(await self.last_seen_age(), 5)

    async def test_reads_go_on_without_the_primary(self):
        cart = payload_of(self, await self.call("AddItemToCart", {"item_id": self.item,
                                                                  "quantity": 2}))
        self.primary_away()
        self.assertEqual(payload_of(self, await self.call("DisplayCart")), cart)
        found = payload_of(self, await self.call("GetItem", {"item_id": self.item}))
        self.assertEqual(found["item_id"], self.item)
        search = payload_of(
            self, await self.call("SearchItemsForSale", {"category": 3, "keywords": []}))
        self.assertEqual([i["item_id"] for i in search["items"]], [self.item])
        rating = payload_of(self, await self.call("GetSellerRating",
                                                  {"seller_id": found["seller_id"]}))
        self.assertEqual(rating["seller_id"], found["seller_id"])
        # Writes wait for the primary: UNAVAILABLE, never a half-write.
        assert_error(self, await self.call("AddItemToCart", {"item_id": self.item,
                                                             "quantity": 1}), "UNAVAILABLE")
        # A session that is not live is still refused.
        answer = await self.buyer.request("DisplayCart", {}, "no-such-session")
        assert_error(self, answer, "INVALID_SESSION")


class TouchesTests(unittest.SynchronousTestCase):
    def test_once_every_few_seconds_per_session(self):
        clock = task.Clock()
        touches = Touches(None, "buyer", 300.0, clock)
        self.assertTrue(touches.due("a"))
        self.assertFalse(touches.due("a"))
        self.assertTrue(touches.due("b"))
        clock.advance(TOUCH_EVERY)
        self.assertTrue(touches.due("a"))
