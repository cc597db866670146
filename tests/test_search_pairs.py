"""The keyword pairs of search (schema.sql, item_keyword_pairs): made and
filled when schema.sql is applied to a database that had none or had them
without the misses and keywords, left as they are when it is applied
again, and kept by the items' triggers."""

from itertools import combinations

from twisted.trial import unittest

from marketplace.postgres import schema
from marketplace.product.productdb import search_statement
from tests.support import empty_databases, insert_item, open_database

ITEMS = [
    # name, category, keywords, price, quantity
    ("Red Apple pie", 0, ["apple", "pie", "red"], "2.50", 3),
    ("Pear", 0, ["pear"], "1.00", 5),
    ("Apple and pear", 1, ["apple", "pear"], "4.00", 0),
    ("Tart", 1, ["tart", "apple", "pie", "pear", "red"], "7.00", 1),
]

_PAIRS = (
    "SELECT item_id, category, first, second, misses, votes, price::text, name, keywords"
    " FROM item_keyword_pairs ORDER BY item_id, first, second"
)

# The table as the version before the misses and the keywords made it.
_OLDER_PAIRS = """
DROP TABLE item_keyword_pairs;
CREATE TABLE item_keyword_pairs (
    item_id bigint NOT NULL, category integer NOT NULL, first text NOT NULL,
    second text NOT NULL, votes integer NOT NULL, price numeric(12, 2) NOT NULL,
    name text NOT NULL
);
INSERT INTO item_keyword_pairs VALUES (1, 0, 'a', 'b', 0, 1, 'x');
CREATE INDEX item_keyword_pairs_listed ON item_keyword_pairs
    (category, first, second) INCLUDE (item_id, votes, price, name);
"""


class KeywordPairTests(unittest.TestCase):
    async def setUp(self):
        await empty_databases(self)
        self.product = await open_database(self, "product")
        self.ids = []
        for name, category, keywords, price, quantity in ITEMS:
            self.ids.append(
                await insert_item(self.product, name, keywords, category, price, quantity)
            )

    async def expected(self):
        """The pairs of the items as they are now, worked out here."""
        rows = await self.product.query(
            "SELECT id, category, keywords, thumbs_down - thumbs_up, price::text, name,"
            " quantity FROM items"
        )
        pairs = []
        for item_id, category, keywords, votes, price, name, quantity in rows:
            if quantity > 0:
                lowered = name.lower()
                for first, second in combinations(sorted(set(keywords)), 2):
                    misses = (first not in lowered) + (second not in lowered)
                    pairs.append(
                        (item_id, category, first, second, misses, votes, price, lowered, keywords)
                    )
        return sorted(pairs)

    async def test_older_database_gets_them_and_applying_again_changes_nothing(self):
        await self.product.execute("DROP TABLE item_keyword_pairs")
        await schema.apply_schema(self.product, "product")
        pairs = await self.product.query(_PAIRS)
        self.assertEqual(sorted(pairs), await self.expected())
        self.assertEqual(len(pairs), 3 + 10)
        await schema.apply_schema(self.product, "product")
        self.assertEqual(await self.product.query(_PAIRS), pairs)

    async def test_older_pairs_are_made_again(self):
        await self.product.execute(_OLDER_PAIRS)
        await schema.apply_schema(self.product, "product")
        self.assertEqual(sorted(await self.product.query(_PAIRS)), await self.expected())
        indexes = await self.product.query(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'item_keyword_pairs'"
            " ORDER BY indexname"
        )
        self.assertEqual(
            indexes, [("item_keyword_pairs_item",), ("item_keyword_pairs_ranked",)]
        )

    async def test_triggers_keep_them(self):
        self.assertEqual(sorted(await self.product.query(_PAIRS)), await self.expected())
        pie, pear, apple_pear, tart = self.ids
        changes = [
            ("UPDATE items SET price = 3 WHERE id = %s", pie),
            ("UPDATE items SET thumbs_up = 2 WHERE id = %s", tart),
            ("UPDATE items SET quantity = 0 WHERE id = %s", pie),
            ("UPDATE items SET quantity = 2 WHERE id = %s", apple_pear),
            ("UPDATE items SET keywords = '{pear,red}' WHERE id = %s", tart),
            ("UPDATE items SET name = 'Big pear' WHERE id = %s", tart),
            ("DELETE FROM items WHERE id = %s", pear),
        ]
        for sql, item_id in changes:
            await self.product.execute(sql, (item_id,))
            self.assertEqual(
                sorted(await self.product.query(_PAIRS)), await self.expected(), sql
            )


class BoundTests(unittest.TestCase):
    """The pairs give the page only when enough items score above what an
    item sharing one keyword can: here one such item ties the pairs'."""

    async def test_item_sharing_one_keyword_ties_those_sharing_two(self):
        await empty_databases(self)
        product = await open_database(self, "product")
        ids = {}
        for label, name, keywords, price in (
            ("both, name hit", "Ab", ["ab", "cd"], "9.00"),  # 2.5
            ("one, both in name", "Ab cd", ["ab"], "1.00"),  # 1 + 0.5 + 0.5 = 2.0
            ("both", "Zz", ["ab", "cd"], "5.00"),  # 2.0
            ("both again", "Yy", ["ab", "cd"], "6.00"),  # 2.0
        ):
            ids[label] = await insert_item(product, name, keywords, price=price)
        expected = ["both, name hit", "one, both in name", "both", "both again"]
        for limit in (1, 2, 3, 4):
            _, sql, args = search_statement(0, ["ab", "cd"], limit, 0)
            rows = await product.query(sql, args)
            self.assertEqual([row[0] for row in rows], [ids[k] for k in expected[:limit]], limit)
