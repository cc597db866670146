"""ProvideFeedback: only buyers of an item vote on it, one vote each, and the
item's counts and its seller's rating follow."""

from twisted.internet import defer
from twisted.trial import unittest

from tests.support import (
    assert_error,
    on_both_layouts,
    open_database,
    payload_of,
    start_marketplace,
)
from tests.test_purchase import Shop


@on_both_layouts
class FeedbackTests(unittest.TestCase):
    async def setUp(self):
        self.market = await start_marketplace(self)
        self.product = await open_database(self, "product")
        self.shop = await Shop(self, self.market).open()
        self.mug = await self.shop.item("mug", 2.5, 10)
        self.lamp = await self.shop.item("lamp", 10, 10)
        self.bea = await self.shop.buyer("bea")
        await self.bea.add(self.mug, 1)
        payload_of(self, await self.bea.buy())

    def vote(self, buyer, item_id, thumbs_up):
        return buyer.call("ProvideFeedback", {"item_id": item_id, "thumbs_up": thumbs_up})

    async def rating(self):
        answer = await self.bea.call("GetSellerRating", {"seller_id": self.shop.seller_id})
        return payload_of(self, answer)

    async def test_vote_replaces_vote(self):
        answer = payload_of(self, await self.vote(self.bea, self.mug, True))
        self.assertEqual(answer, {"item_id": self.mug, "thumbs_up": 1, "thumbs_down": 0})
        answer = payload_of(self, await self.vote(self.bea, self.mug, False))
        self.assertEqual(answer, {"item_id": self.mug, "thumbs_up": 0, "thumbs_down": 1})
        answer = payload_of(self, await self.vote(self.bea, self.mug, False))
        self.assertEqual((answer["thumbs_up"], answer["thumbs_down"]), (0, 1))
        item = payload_of(self, await self.bea.call("GetItem", {"item_id": self.mug}))
        self.assertEqual((item["thumbs_up"], item["thumbs_down"]), (0, 1))
        rating = await self.rating()
        self.assertEqual((rating["thumbs_up"], rating["thumbs_down"]), (0, 1))
        self.assertEqual(rating["items_sold"], 1)

    async def test_only_buyers_vote(self):
        assert_error(self, await self.vote(self.bea, self.lamp, True), "FORBIDDEN")
        cy = await self.shop.buyer("cy")
        assert_error(self, await self.vote(cy, self.mug, True), "FORBIDDEN")
        assert_error(self, await self.vote(self.bea, "1-999999", True), "NOT_FOUND")
        # The item exists, but not in that category.
        wrong = "7-" + self.mug.split("-")[1]
        assert_error(self, await self.vote(self.bea, wrong, True), "NOT_FOUND")
        assert_error(self, await self.vote(self.bea, self.mug, "yes"), "BAD_REQUEST")
        assert_error(
            self, await self.bea.call("ProvideFeedback", {"item_id": self.mug}), "BAD_REQUEST"
        )
        rating = await self.rating()
        self.assertEqual((rating["thumbs_up"], rating["thumbs_down"]), (0, 0))

    async def test_declined_purchase_gives_no_vote(self):
        cy = await self.shop.buyer("cy")
        await cy.add(self.lamp, 1)
        self.market.set_approval_rate(0.0)
        assert_error(self, await cy.buy(), "PAYMENT_DECLINED")
        assert_error(self, await self.vote(cy, self.lamp, True), "FORBIDDEN")

    async def test_many_buyers_counts_stay_consistent(self):
        buyers = await defer.gatherResults([
            defer.Deferred.fromCoroutine(self.shop.buyer(f"b{n}")) for n in range(6)
        ])
        for buyer in buyers:
            await buyer.add(self.lamp, 1)
        for answer in await defer.gatherResults([b.buy() for b in buyers]):
            payload_of(self, answer)
        # Everyone votes twice at once; the last vote of each counts.
        answers = await defer.gatherResults(
            [self.vote(b, self.lamp, True) for b in buyers]
            + [self.vote(b, self.lamp, n % 2 == 0) for n, b in enumerate(buyers)]
        )
        for answer in answers:
            payload_of(self, answer)
        item = payload_of(self, await self.bea.call("GetItem", {"item_id": self.lamp}))
        rows = await self.product.query(
            "SELECT count(*) FILTER (WHERE thumbs_up), count(*) FILTER (WHERE NOT thumbs_up)"
            " FROM feedback")
        self.assertEqual((item["thumbs_up"], item["thumbs_down"]), rows[0])
        self.assertEqual(item["thumbs_up"] + item["thumbs_down"], 6)
