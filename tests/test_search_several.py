"""A search with several keywords (apisql.SEARCH_MANY) gives the page of a
brute-force ranking however few rows of its pairs' lists it reads first.

The statement reads the first rows of its pairs' lists, and takes its page
from them only when nothing unread can rank ahead of the page's last item;
otherwise it reads the rest of the lists, then the keywords' lists.  Here
the first read is made as short as one row and as long as every list, on a
catalog where most items tie (few words, some found inside others and in
the names, few prices and votes), so that each way to the page is taken
and each bound is tried at its edge.  A bound one half too low, or a
frontier compared the wrong way, gives a wrong page here.
"""

import random
from decimal import Decimal
from itertools import combinations

from twisted.trial import unittest

from marketplace.product.productdb import pair_rows, search_statement
from tests.support import empty_databases, insert_item, open_database
from tests.test_search_ranking import reference

WORDS = ["ab", "abc", "cd", "bcd", "e", "de", "fab", "zz"]
CATEGORIES = 2
ITEMS = 700

# How many rows of the pairs' lists are read first, from one to all, and
# then of each list: from none (every list with a row more is open) to all.
READS = ((1, 0), (2, 64), (5, 2), (17, 0), (60, 2), (250, 64), (100_000, 0))


def _catalog(rng: random.Random):
    """(name, category, keywords, price, quantity, thumbs_up, thumbs_down)."""
    for _ in range(ITEMS):
        name_words = [rng.choice(WORDS + ["x", "yy", "q"]) for _ in range(rng.randint(1, 3))]
        name = " ".join(word.capitalize() if rng.random() < 0.5 else word for word in name_words)
        keywords = rng.sample(WORDS, rng.choice((1, 2, 2, 3, 3, 4, 5)))
        yield (
            name, rng.randrange(CATEGORIES), keywords,
            Decimal(rng.choice((1, 2, 3))), rng.choice((0, 1, 1, 1, 4)),
            rng.choice((0, 0, 1)), rng.choice((0, 0, 1, 2)),
        )


class SeveralKeywordsTests(unittest.TestCase):
    """The first pages in one category for every pair and triple of the
    words and some longer queries, at every length of the first read; in
    the other, pages by offset and by cursor."""

    timeout = 300

    async def setUp(self):
        await empty_databases(self)
        self.product = await open_database(self, "product")
        await self.product.execute(
            "INSERT INTO items (seller_id, name, category, keywords, condition, price,"
            " quantity, thumbs_up, thumbs_down)"
            " SELECT 1, name, category, keywords::text[], 'new', price, quantity, up, down"
            " FROM unnest(%s::text[], %s::int[], %s::text[], %s::numeric[], %s::int[],"
            " %s::int[], %s::int[]) AS t (name, category, keywords, price, quantity, up, down)",
            self._columns(list(_catalog(random.Random(29)))),
        )
        # Votes and prices changed after the insert move the pairs' rows too.
        await self.product.execute(
            "UPDATE items SET thumbs_up = thumbs_up + 1, price = price + 1 WHERE id % 9 = 0"
        )
        self.rows = await self.product.query(
            "SELECT id, category, name, keywords, price, quantity, thumbs_up, thumbs_down"
            " FROM items"
        )

    @staticmethod
    def _columns(items):
        names, categories, keywords, prices, quantities, ups, downs = zip(*items)
        # A text[] per item, passed as the text of an array literal each.
        literals = ["{" + ",".join(k) + "}" for k in keywords]
        return (list(names), list(categories), literals, list(prices), list(quantities),
                list(ups), list(downs))

    async def page(self, category, keywords, limit, offset=0, cursor=None, first=None,
                   beyond=64):
        _, sql, args = search_statement(
            category, keywords, limit, offset, cursor, first, beyond
        )
        rows = await self.product.query(sql, args)
        return [(row[0], Decimal(row[-1])) for row in rows]

    def expected(self, category, keywords):
        return [
            (int(item["item_id"].split("-")[1]), Decimal(str(item["score"])))
            for item in reference(self.rows, category, keywords)
        ]

    def queries(self):
        for size in (2, 3):
            for keywords in combinations(WORDS, size):
                yield list(keywords)
        yield WORDS[:4]
        yield WORDS[2:7]
        yield ["ab", "zz", "nothing"]

    async def test_first_pages_at_every_first_read(self):
        for keywords in self.queries():
            expected = self.expected(0, keywords)
            for first, beyond in READS:
                for limit in (1, 12):
                    got = await self.page(0, keywords, limit, first=first, beyond=beyond)
                    self.assertEqual(got, expected[:limit], (keywords, first, beyond, limit))

    async def test_pages_by_offset_and_by_cursor(self):
        rows = {row[0]: row for row in self.rows}
        for keywords in (["ab", "cd"], ["ab", "abc", "bcd"], ["e", "de", "fab"], WORDS[:5]):
            expected = self.expected(1, keywords)
            for first in (1, 5, 60):
                for offset in (0, 3, 25):
                    got = await self.page(1, keywords, 9, offset=offset, first=first, beyond=1)
                    self.assertEqual(got, expected[offset:offset + 9], (keywords, first, offset))
                for place in (0, 4, 20, len(expected) // 2):
                    if place >= len(expected):
                        continue
                    number, score = expected[place]
                    row = rows[number]
                    cursor = (score, row[7] - row[6], row[4], number)
                    got = await self.page(1, keywords, 9, cursor=cursor, first=first, beyond=1)
                    self.assertEqual(
                        got, expected[place + 1:place + 10], (keywords, first, place)
                    )

    async def test_an_item_not_read_outscores_all_read(self):
        """The first rows read are of items that score 8 and 6 halves with
        both keywords of their pairs in their names, and the next row of each
        list is of another such item; the item not read has all three
        keywords in its name and scores 9: it is the page."""
        ids = {}
        for label, name, keywords, up, down in (
            ("8", "ab cd", ["ab", "cd", "e"], 5, 0),
            ("6", "ab cd", ["ab", "cd"], 4, 0),
            ("7", "ab cd e", ["ab", "cd"], 0, 0),
            ("6 too", "ab e", ["ab", "e"], 0, 0),
            ("6 again", "cd e", ["cd", "e"], 0, 0),
            ("9", "ab cd e", ["ab", "cd", "e"], 0, 3),
        ):
            ids[label] = await insert_item(
                self.product, name, keywords, 7, 9, thumbs_up=up, thumbs_down=down
            )
        for first in (1, 2, 3):
            got = await self.page(7, ["ab", "cd", "e"], 1, first=first, beyond=0)
            self.assertEqual(got, [(ids["9"], Decimal("4.5"))], first)


class FirstReadTests(unittest.TestCase):
    """How many rows of the pairs' lists a search reads first."""

    def test_twenty_rows_an_item_of_the_page_within_bounds(self):
        self.assertEqual(pair_rows(3, 50, 0), 1000)
        self.assertEqual(pair_rows(2, 1, 0), 200)
        self.assertEqual(pair_rows(3, 50, 150), 4000)

    def test_none_for_pages_further_down_or_more_keywords(self):
        self.assertEqual(pair_rows(3, 50, 151), 0)
        self.assertEqual(pair_rows(3, 500, 0), 0)
        self.assertEqual(pair_rows(4, 50, 0), 0)
        self.assertEqual(pair_rows(5, 1, 0), 0)
