"""The bigrams of item names (schema.sql, bigrams() and
item_keywords.name_bigrams), which let search skip looking for a word in
names that cannot hold it: the same as worked out here, a subset of the
name's for every word the name holds, kept by the items' triggers, and
made for a database whose item_keywords lacks them."""

from twisted.trial import unittest

from marketplace.postgres import schema
from marketplace.product.productdb import search_statement
from tests.support import empty_databases, insert_item, open_database


def bigrams(lowered: str) -> int:
    """schema.sql's bigrams(), worked out here: one bit of 64 for each
    pair of neighbouring code points, by a multiplicative hash (as a
    signed 64-bit integer, as PostgreSQL's bigint)."""
    bits = 0
    for previous, code in zip(map(ord, lowered), map(ord, lowered[1:])):
        bits |= 1 << ((((previous * 31 + code) * 2654435761) >> 20) & 63)
    return bits - (1 << 64) if bits >= 1 << 63 else bits


NAMES = [
    "",
    "a",
    "ab",
    "red apple pie",
    "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
    "crème brûlée – 2 €",
    "日本の急須 teapot",
    "mug\tand\nnewline 'quoted' \"twice\" %s",
]

_ROWS = (
    "SELECT item_id, keyword, name, name_bigrams FROM item_keywords ORDER BY item_id, keyword"
)

# item_keywords as the version before the bigrams made it.
_OLDER_KEYWORDS = """
DROP TABLE item_keywords;
CREATE TABLE item_keywords (
    item_id bigint NOT NULL, keyword text NOT NULL, category integer NOT NULL,
    name_miss boolean NOT NULL, votes integer NOT NULL, price numeric(12, 2) NOT NULL,
    name text NOT NULL
);
INSERT INTO item_keywords VALUES (1, 'x', 0, true, 0, 1, 'x');
CREATE INDEX item_keywords_ranked ON item_keywords
    (category, keyword, name_miss, votes, price, item_id) INCLUDE (name);
"""

# The insert trigger of the version before the bigrams, as a daemon not yet
# upgraded puts it back when it starts.
_OLDER_TRIGGER = """
CREATE OR REPLACE FUNCTION item_keywords_of_new() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO item_keywords (item_id, keyword, category, name_miss, votes, price, name)
    SELECT DISTINCT ON (n.id, k) n.id, k, n.category, strpos(lower(n.name), k) = 0,
           n.thumbs_down - n.thumbs_up, n.price, lower(n.name)
    FROM new_items AS n, unnest(n.keywords) AS k
    WHERE n.quantity > 0;
    RETURN NULL;
END
$$;
"""


class BigramTests(unittest.TestCase):
    async def setUp(self):
        await empty_databases(self)
        self.product = await open_database(self, "product")

    async def add(self, name: str, keywords) -> int:
        return await insert_item(self.product, name, keywords)

    async def expected(self):
        """item_keywords' rows as the items are now, worked out here."""
        rows = await self.product.query("SELECT id, name, keywords FROM items WHERE quantity > 0")
        return sorted(
            (item_id, keyword, name.lower(), bigrams(name.lower()))
            for item_id, name, keywords in rows
            for keyword in set(keywords)
        )

    async def test_the_same_as_worked_out_here(self):
        rows = await self.product.query(
            "SELECT name, bigrams(name) FROM unnest(%s::text[]) AS name", (NAMES,)
        )
        self.assertEqual(rows, [(name, bigrams(name)) for name in NAMES])
        self.assertEqual(bigrams("a"), 0)
        self.assertEqual(bigrams("ab"), 1 << 45)  # a change would need the rows made again
        self.assertEqual(await self.product.one("SELECT bigrams(NULL)"), (None,))

    async def test_a_word_in_a_name_has_none_of_its_bits_outside(self):
        words = {
            name[start:end]
            for name in NAMES
            for start in range(len(name))
            for end in range(start + 1, len(name) + 1)
        }
        (outside,) = await self.product.one(
            "SELECT count(*) FROM unnest(%s::text[]) AS name, unnest(%s::text[]) AS word"
            " WHERE strpos(name, word) > 0 AND bigrams(word) & ~bigrams(name) <> 0",
            (NAMES, sorted(words)),
        )
        self.assertEqual(outside, 0)
        self.assertGreater(len(words), 500)

    async def test_triggers_keep_them(self):
        pie = await self.add("Red Apple Pie", ["apple", "pie"])
        await self.add("Crème brûlée", ["dessert"])
        self.assertEqual(sorted(await self.product.query(_ROWS)), await self.expected())
        for sql in [
            "UPDATE items SET name = 'Big PEAR tart' WHERE id = %s",
            "UPDATE items SET keywords = '{pear,tart,big}' WHERE id = %s",
            "UPDATE items SET price = 3 WHERE id = %s",
            "UPDATE items SET quantity = 0 WHERE id = %s",
            "UPDATE items SET quantity = 2, name = 'Small pear' WHERE id = %s",
        ]:
            await self.product.execute(sql, (pie,))
            self.assertEqual(sorted(await self.product.query(_ROWS)), await self.expected(), sql)

    async def test_older_rows_are_made_again_once(self):
        await self.add("Red Apple Pie", ["apple", "pie"])
        await self.add("Tart", ["apple", "tart"])
        await self.product.execute(_OLDER_KEYWORDS)
        await schema.apply_schema(self.product, "product")
        rows = sorted(await self.product.query(_ROWS))
        self.assertEqual(rows, await self.expected())
        self.assertEqual(len(rows), 4)
        (index,) = await self.product.one(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'item_keywords_ranked'"
        )
        self.assertIn("INCLUDE (name, name_bigrams)", index)
        (oid,) = await self.product.one("SELECT 'item_keywords'::regclass::oid")
        await schema.apply_schema(self.product, "product")
        self.assertEqual(await self.product.one("SELECT 'item_keywords'::regclass::oid"), (oid,))
        self.assertEqual(sorted(await self.product.query(_ROWS)), rows)

    async def test_rows_of_code_before_are_looked_at_by_name(self):
        await self.product.execute(_OLDER_TRIGGER)
        older = await self.add("Apple for a pie", ["apple"])
        self.assertEqual(
            await self.product.query("SELECT name_bigrams FROM item_keywords"), [(-1,)]
        )
        await schema.apply_schema(self.product, "product")
        newer = await self.add("Apple", ["apple"])
        _, sql, args = search_statement(0, ["apple", "pie"], 10, 0)
        rows = await self.product.query(sql, args)
        # 1 for the keyword, a half for each of the two words in its name.
        self.assertEqual([(row[0], row[-1]) for row in rows], [(older, 2), (newer, 1.5)])
