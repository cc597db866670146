"""Search's ranking on a generated catalog equals a brute-force ranking
computed here, in Python, from the same rows.

The catalog (marketplace/bench/catalog.py) is big enough for a wrong index
or a wrong copy of an item's ranking keys to show: a few thousand items in
three categories, keywords from a small vocabulary (so most items tie on
score), whole prices (ties on price), votes cast through the API (ties on
net votes, and net votes that differ), keywords that occur inside other
words and names.  Items are also repriced, sold out and put back on sale
after the bulk load, so the keyword lists' upkeep is checked as well.
"""

from decimal import Decimal
from typing import List, Optional

from twisted.internet import reactor
from twisted.trial import unittest

from marketplace.bench import catalog
from tests.support import (
    assert_error,
    connect,
    on_both_layouts,
    payload_of,
    start_marketplace,
)
from tests.test_buyer_api import buyer_session
from tests.test_seller_api import seller_session

SPEC = catalog.CatalogSpec(
    items=3000, seed=7, categories=3, words=40, sellers=3, price_max=12,
    voted_items=120, voters=3,
)


def _endpoint(port: int) -> str:
    return f"tcp:host=127.0.0.1:port={port}"


def reference(rows, category: int, keywords: List[str]) -> List[dict]:
    """The whole ranking, from the rules of docs/PROTOCOL.md (Search)."""
    query = []
    for keyword in keywords:
        if keyword.lower() not in query:
            query.append(keyword.lower())
    ranked = []
    for number, cat, name, item_keywords, price, quantity, up, down in rows:
        if cat != category or quantity <= 0:
            continue
        shared = sum(k in item_keywords for k in query)
        if query and not shared:
            continue
        score = shared + 0.5 * sum(k in name.lower() for k in query)
        ranked.append(
            {"item_id": f"{cat}-{number}", "score": score, "thumbs_up": up,
             "thumbs_down": down, "price": price, "_key": (-score, down - up, price, number)}
        )
    ranked.sort(key=lambda item: item["_key"])
    for item in ranked:
        del item["_key"]
    return ranked


def _summary(items: List[dict]) -> List[tuple]:
    return [
        (i["item_id"], float(i["score"]), i["thumbs_up"], i["thumbs_down"],
         Decimal(str(i["price"])))
        for i in items
    ]


@on_both_layouts
class RankingTests(unittest.TestCase):
    """The ranking, on both layouts (the same statements, the session
    checked in them on one database)."""

    timeout = 300

    async def setUp(self):
        self.market = await start_marketplace(self)
        ports = self.market.ports
        self.product = self.market.backend().product
        built = await catalog.build(
            SPEC, _endpoint(ports["seller"]), _endpoint(ports["buyer"]),
            self.product.dsn, reactor,
        )
        self.assertEqual(built.voted, SPEC.voted_items)
        self.words = catalog.vocabulary(SPEC.seed, SPEC.words)
        self.seller = await connect(self, ports["seller"])
        self.buyer = await connect(self, ports["buyer"])
        _, self.seller_session = await seller_session(self, self.seller)
        _, self.session = await buyer_session(self, self.buyer)
        await self._changes_after_loading(built)
        self.rows = await self.product.query(
            "SELECT id, category, name, keywords, price, quantity, thumbs_up, thumbs_down"
            " FROM items"
        )

    async def _changes_after_loading(self, built) -> None:
        """Reprice, sell out and put back on sale some of the loaded items,
        and register a few through the API, so that the keyword lists must
        follow each kind of change."""
        first = built.first_id
        await self.product.execute(
            "UPDATE items SET price = price + 3 WHERE id %% 7 = 0 AND id >= %s", (first,)
        )
        await self.product.execute(
            "UPDATE items SET quantity = 0 WHERE id %% 11 = 0 AND id >= %s", (first,)
        )
        # Units back on sale, as after a declined purchase.
        await self.product.execute(
            "UPDATE items SET quantity = 4 WHERE id %% 22 = 0 AND id >= %s", (first,)
        )
        words = self.words
        for n in range(12):
            answer = await self.seller.request(
                "RegisterItemForSale",
                {"item_name": f"{words[n].capitalize()}{words[0]}", "category": n % 3,
                 "keywords": [words[0], words[n + 1]], "condition": "new",
                 "price": 5, "quantity": 3},
                self.seller_session,
            )
            payload_of(self, answer)

    async def search(self, category: int, keywords: List[str], **paging) -> List[dict]:
        answer = await self.buyer.request(
            "SearchItemsForSale", {"category": category, "keywords": keywords, **paging},
            self.session,
        )
        return payload_of(self, answer)["items"]

    def queries(self):
        words = self.words
        # Short words are found in longer words and names.
        short = sorted(words, key=len)[:3]
        for category in range(SPEC.categories):
            for keywords in (
                [],
                [words[0]],
                [words[-1]],
                [words[1].upper()],
                [words[0], words[1]],
                [words[2], words[5], words[30]],
                short,
                words[:5],
                [words[3], "zzzz"],
                ["zzzz"],
            ):
                yield category, keywords

    async def test_first_pages(self):
        for category, keywords in self.queries():
            expected = reference(self.rows, category, keywords)
            if keywords != ["zzzz"]:
                self.assertTrue(expected, (category, keywords))
            for limit in (1, 50, 500):
                got = await self.search(category, keywords, limit=limit)
                self.assertEqual(
                    _summary(got), _summary(expected[:limit]), (category, keywords, limit)
                )

    async def test_every_page_by_offset_and_by_cursor(self):
        for category, keywords in self.queries():
            expected = _summary(reference(self.rows, category, keywords))
            by_offset: list = []
            while True:
                page = await self.search(category, keywords, limit=97, offset=len(by_offset))
                by_offset += page
                if len(page) < 97:
                    break
            self.assertEqual(_summary(by_offset), expected, (category, keywords))
            by_cursor: list = []
            after: Optional[dict] = None
            while True:
                paging = {"limit": 97} if after is None else {"limit": 97, "after": after}
                page = await self.search(category, keywords, **paging)
                by_cursor += page
                if len(page) < 97:
                    break
                after = page[-1]
            self.assertEqual(_summary(by_cursor), expected, (category, keywords))

    async def test_cursor_with_offset_and_made_up_cursors(self):
        for keywords in ([], [self.words[0]], [self.words[0], self.words[1]]):
            category = 1
            expected = _summary(reference(self.rows, category, keywords))
            tenth = (await self.search(category, keywords, limit=10))[-1]
            page = await self.search(category, keywords, limit=5, offset=3, after=tenth)
            self.assertEqual(_summary(page), expected[13:18], keywords)
            # A cursor need not be an item that exists: a page starts after
            # its place in the ranking.
            for score in (1e30, 9, 2.25, 1.5, 1.2, 1, 0.5, 0, -1, -1e30):
                for up, down, price, number in ((0, 0, 0, 0), (1, 3, 6.49, 10**6)):
                    cursor = {"score": score, "thumbs_up": up, "thumbs_down": down,
                              "price": price, "item_id": f"1-{number}"}
                    place = (-score, down - up, Decimal(str(price)), number)
                    shown = sum(
                        1 for item in expected
                        if (-item[1], item[3] - item[2], item[4], int(item[0].split("-")[1]))
                        <= place
                    )
                    page = await self.search(category, keywords, limit=500, after=cursor)
                    self.assertEqual(
                        _summary(page), expected[shown:shown + 500], (keywords, cursor)
                    )

    async def test_bad_cursors(self):
        good = {"score": 1, "thumbs_up": 0, "thumbs_down": 0, "price": 1, "item_id": "1-1"}
        for after in (
            "1-1",
            [],
            {**good, "score": "1"},
            {**good, "score": True},
            {**good, "thumbs_up": -1},
            {**good, "price": 1.001},
            {**good, "item_id": "x"},
            {key: value for key, value in good.items() if key != "item_id"},
        ):
            answer = await self.buyer.request(
                "SearchItemsForSale", {"category": 1, "keywords": [], "after": after},
                self.session,
            )
            assert_error(self, answer, "BAD_REQUEST")
