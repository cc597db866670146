"""The single-statement APIs' SQL (marketplace/product/apisql.py): each
statement printed whole, and each one PostgreSQL accepts as it is."""

import io
from contextlib import redirect_stdout

from twisted.trial import unittest

from marketplace.postgres.database import prepared_forms
from marketplace.product import apisql
from tests.support import open_database

LAYOUTS = ("joined", "separate")


def printed(*argv: str) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        apisql.main(list(argv))
    return out.getvalue()


class PrintedWhole(unittest.TestCase):
    def test_any_statement_prints_in_full(self):
        for api in apisql.STATEMENTS:
            for layout in LAYOUTS:
                text = printed(api, layout)
                self.assertEqual(text, apisql.full_text(api, layout) + "\n")
                self.assertTrue(text.lstrip().startswith("WITH live AS ("), text)
                # Nothing is left to fill in but the arguments.
                self.assertNotIn("{", text.replace("'{}'", ""))

    def test_a_write_files_its_answer_and_counts_its_key_in_the_same_statement(self):
        for api in ("AddItemToCart", "ChangeItemPrice", "UpdateUnitsForSale"):
            text = apisql.full_text(api)
            self.assertIn("INSERT INTO request_answers", text)
            self.assertIn("INSERT INTO request_key_counts", text)
            self.assertIn("%(rk_id)s", text)

    def test_without_an_api_it_names_them(self):
        self.assertEqual(printed().split(), list(apisql.STATEMENTS))


class AcceptedByPostgres(unittest.TestCase):
    async def test_every_statement_prepares(self):
        db = await open_database(self, "product")
        customer = await open_database(self, "customer")
        for api in apisql.STATEMENTS:
            for layout in LAYOUTS:
                if layout == "joined" and customer.dsn != db.dsn:
                    continue
                prepare, _ = prepared_forms("checked", apisql.full_text(api, layout))
                await db.transaction(_prepare_and_drop, prepare)


async def _prepare_and_drop(cursor, prepare: str) -> None:
    await cursor.execute(prepare)
    await cursor.execute("DEALLOCATE checked")
