"""tools/search_ab.py: the queries it draws, its summary's arithmetic, and
a comparison on the test database that passes for the same statement and
stops at different rows."""

from twisted.internet import threads
from twisted.trial import unittest

from marketplace.product import apisql
from tests.support import empty_databases, layout_dsns, open_database
from tools import search_ab

WORDS = ["ab", "abc", "cd", "bcd", "e", "de"]


class QueriesTests(unittest.TestCase):
    def test_groups_and_their_sizes(self):
        found = search_ab.queries(WORDS, drawn=4)
        groups = [group for group, _, _ in found]
        self.assertEqual(
            [groups.count(g) for g in ("three most common", "three drawn",
                                      "five most common", "five drawn")],
            [10, 4, 3, 5])
        self.assertEqual(found[0], ("three most common", 0, ["ab", "abc", "cd"]))
        self.assertEqual(search_ab.queries(WORDS, drawn=4), found)
        for _, _, keywords in found:
            self.assertEqual(len(set(keywords)), len(keywords))

    def test_summary(self):
        times = {"g": {"before": [3.0, 1.0, 2.0, 10.0], "after": [1.0, 1.0, 1.0, 1.0]}}
        self.assertEqual(search_ab.summary(times),
                         {"g": {"before": (2.5, 10.0, 10.0), "after": (1.0, 1.0, 1.0)}})

    def test_the_statement_of_a_file(self):
        self.assertEqual(search_ab.load_statement(apisql.__file__), apisql.SEARCH_MANY)


class CompareTests(unittest.TestCase):
    async def setUp(self):
        await empty_databases(self)
        product = await open_database(self, "product")
        await product.execute(
            "INSERT INTO items (seller_id, name, category, keywords, condition, price, quantity)"
            " SELECT 1, 'Ab cd ' || n, n % 2, ARRAY['ab', 'cd', 'e'], 'new', n, 1"
            " FROM generate_series(1, 30) AS n")

    def compare(self, before: str):
        import psycopg2

        connection = psycopg2.connect(layout_dsns()["product"])
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                return search_ab.compare(cursor, before, apisql.SEARCH_MANY,
                                         search_ab.queries(WORDS, drawn=2), 1, (0, 10))
        finally:
            connection.close()

    async def test_the_same_statement(self):
        times = await threads.deferToThread(self.compare, apisql.SEARCH_MANY)
        self.assertEqual(sorted(times), ["five drawn", "five most common", "three drawn",
                                         "three most common"])
        # Each query at both offsets, for each statement.
        self.assertEqual(len(times["three most common"]["before"]), 20)
        self.assertEqual(len(times["three most common"]["after"]), 20)

    async def test_other_rows(self):
        last = "ORDER BY m.halves DESC, m.votes, m.price, m.item_id\n"
        self.assertTrue(apisql.SEARCH_MANY.endswith(last))
        reversed_order = apisql.SEARCH_MANY.replace(last, "ORDER BY m.item_id DESC\n")
        with self.assertRaises(search_ab.RowsDiffer):
            await threads.deferToThread(self.compare, reversed_order)
