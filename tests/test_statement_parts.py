"""tools/statement_parts.py: each form leaves out its part and nothing
else, PostgreSQL accepts every form, and the summary's arithmetic
(docs/PERFORMANCE.md, "Request keys, part by part")."""

from twisted.trial import unittest

from marketplace.postgres.database import prepared_forms
from tests.support import open_database
from tools import statement_parts

#: Each part of the statement, as its text shows it.
COUNTING = "INSERT INTO request_key_counts"
FILING = "INSERT INTO request_answers"
REFUSAL_DETAILS = "json_build_array(i.quantity, i.price"
JOIN = "JOIN items AS i ON i.id = c.item_id"


class FormsTests(unittest.TestCase):
    def setUp(self):
        self.forms = statement_parts.forms()
        self.keyed = self.forms[statement_parts.KEYED]

    def assertLeftOut(self, name, part):
        self.assertIn(part, self.keyed)
        self.assertNotIn(part, self.forms[name])
        for other in (COUNTING, FILING, REFUSAL_DETAILS):
            if other != part:
                self.assertEqual(other in self.forms[name], other in self.keyed, other)

    def test_each_form_leaves_out_its_part_only(self):
        self.assertLeftOut("keyed, not counted", COUNTING)
        self.assertLeftOut("keyed, not filed", FILING)
        self.assertLeftOut("keyed, no refusal details", REFUSAL_DETAILS)

    def test_the_statement_sent_joins_the_cart_once_and_the_form_before_twice(self):
        self.assertEqual(self.keyed.count(JOIN), 1)
        self.assertEqual(self.forms["keyed, filed by a second join"].count(JOIN), 2)
        self.assertNotIn("FROM cart", self.forms["keyed, filed by a second join"])

    def test_a_part_the_statement_lost_is_named(self):
        with self.assertRaises(ValueError):
            statement_parts.without_counting("SELECT 1")

    async def test_postgresql_prepares_every_form(self):
        # On one database (the suite's default), the customer schema's too.
        await open_database(self, "customer")
        db = await open_database(self, "product")
        for text in self.forms.values():
            prepare, _ = prepared_forms("part", text)
            await db.transaction(_prepare_and_drop, prepare)


class SummaryTests(unittest.TestCase):
    def test_differences_are_taken_within_each_cycle(self):
        # The cores slow down in the second cycle: the form is 10 µs
        # cheaper in both, which the medians of the raw times hide.
        times = {"keyed": [100.0, 200.0, 150.0], "other": [90.0, 190.0, 140.0]}
        summary = statement_parts.summary(times)
        self.assertEqual(summary["other"]["difference_us"], -10.0)
        self.assertEqual(summary["other"]["ratio"], 0.933)
        self.assertEqual(summary["keyed"], {"median_us": 150.0, "difference_us": 0.0, "ratio": 1.0})


async def _prepare_and_drop(cursor, prepare: str) -> None:
    await cursor.execute(prepare)
    await cursor.execute("DEALLOCATE part")
