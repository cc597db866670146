"""The single-statement APIs' SQL (marketplace/product/apisql.py): each
statement printed whole, and each one PostgreSQL accepts as it is; a
write without a request key runs its form that counts and files nothing
(marketplace/product/statements.py)."""

import io
from contextlib import redirect_stdout
from types import SimpleNamespace

from twisted.internet import defer
from twisted.trial import unittest

from marketplace.frame.dispatch import Call, Request
from marketplace.postgres.database import prepared_forms
from marketplace.product import apisql
from marketplace.product.statements import DONE, JOINED, SEPARATE, Statements
from tests.support import open_database

#: The writes, which have a form for a request without a key.
WRITES = ("AddItemToCart", "ChangeItemPrice", "UpdateUnitsForSale")

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

    def test_a_write_without_a_key_neither_counts_nor_files(self):
        for api in WRITES:
            for layout in LAYOUTS:
                text = apisql.full_text(api, layout, keyed=False)
                self.assertEqual(printed(api, layout, "unkeyed"), text + "\n")
                self.assertNotIn("request_answers", text)
                self.assertNotIn("request_key_counts", text)
                self.assertNotIn("rk_", text)
                self.assertNotIn("counted", text)
                self.assertNotEqual(text, apisql.full_text(api, layout))

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
                forms = [apisql.full_text(api, layout)]
                if api in WRITES:
                    forms.append(apisql.full_text(api, layout, keyed=False))
                for text in forms:
                    prepare, _ = prepared_forms("checked", text)
                    await db.transaction(_prepare_and_drop, prepare)


class _PreparedRecorder:
    """A product database that answers every statement DONE and records
    which prepared statement ran (what Statements.write chose, and with
    which arguments); the SQL itself runs in the tests above and in every
    API test."""

    has_replicas = False

    def __init__(self):
        self.ran = []

    def prepared(self, name, sql, args):
        self.ran.append((name, sql, dict(args)))
        return defer.succeed([(DONE, "{}")])


class WriteForms(unittest.TestCase):
    """Statements.write runs the keyed form for a request with a key and
    the unkeyed form for one without."""

    def _write(self, sessions, request_key):
        db = _PreparedRecorder()
        accounts = SimpleNamespace(
            role="buyer", session_timeout=60.0,
            limits=SimpleNamespace(request_keys_per_minute=300),
        )
        statements = Statements(db, sessions, accounts, apisql.FILED_ANSWER)
        statement = statements.write_statement("add_to_cart", "AddItemToCart")
        request = Request("AddItemToCart", "session-1", {"item_id": "3-1", "quantity": 1},
                          request_key=request_key)
        session = SimpleNamespace(key="k", user_id=7)
        args = statements.args(Call(request, session), category=3, number=1, units=1)
        self.successResultOf(statements.write(Call(request, session), statement, args, None))
        [ran] = db.ran
        return ran

    def test_without_a_key_the_unkeyed_form_runs(self):
        for sessions in (JOINED, SEPARATE):
            name, sql, args = self._write(sessions, None)
            self.assertEqual(name, f"add_to_cart_{sessions.name}_unkeyed")
            self.assertEqual(sql, apisql.full_text("AddItemToCart", sessions.name, keyed=False))
            self.assertIsNone(args["rk_id"])

    def test_with_a_key_the_keyed_form_runs(self):
        for sessions in (JOINED, SEPARATE):
            name, sql, args = self._write(sessions, "key-1")
            self.assertEqual(name, f"add_to_cart_{sessions.name}")
            self.assertEqual(sql, apisql.full_text("AddItemToCart", sessions.name))
            self.assertEqual(len(args["rk_id"]), 32)


async def _prepare_and_drop(cursor, prepare: str) -> None:
    await cursor.execute(prepare)
    await cursor.execute("DEALLOCATE checked")
