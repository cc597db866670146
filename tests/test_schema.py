"""schema.sql applied by a daemon that starts beside others under load (a
rolling restart): it must not queue behind their writes."""

import psycopg2
from psycopg2.extensions import make_dsn
from twisted.internet import reactor
from twisted.trial import unittest

from marketplace.postgres import schema
from marketplace.postgres.database import Database
from tests.support import layout_dsns, layout_of, open_database


class AppliedOnceTests(unittest.TestCase):
    async def test_a_starting_daemon_does_not_wait_for_live_writes(self):
        dsn = layout_dsns(layout_of(self))["product"]
        await open_database(self, "product")
        # A write in flight on the items (as a purchase or a repricing holds).
        writer = psycopg2.connect(dsn)
        self.addCleanup(writer.close)
        writer.cursor().execute("LOCK TABLE items IN ROW EXCLUSIVE MODE")
        # Statements that give up on a lock after half a second.
        impatient = Database("product", make_dsn(dsn, options="-c lock_timeout=500"),
                             size=1, reactor=reactor)
        await impatient.startService()
        self.addCleanup(impatient.stopService)

        # This text of the part was applied last: nothing to do, no lock.
        await schema.apply_schema(impatient, "product", unless_applied=True)
        # Applied regardless, it waits for the write (CREATE INDEX IF NOT
        # EXISTS takes its lock before it looks).
        with self.assertRaises(Exception) as raised:
            await schema.apply_schema(impatient, "product")
        self.assertIn("lock", str(raised.exception).lower())

    async def test_a_changed_part_is_applied(self):
        database = await open_database(self, "product")
        await database.execute("UPDATE schema_applied SET digest = 'older' WHERE part = 'product'")
        await database.execute("DROP INDEX items_seller")
        await schema.apply_schema(database, "product", unless_applied=True)
        (found,) = await database.one(
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'items_seller'")
        self.assertEqual(found, 1)




class PartsTests(unittest.SynchronousTestCase):
    def test_a_section_of_several_parts_goes_into_each(self):
        """A "-- database:" line may name several parts (schema.sql's
        request keys are in both the customer and the product database);
        a part named again goes on where it stopped."""
        parts = schema.schema_parts(
            "-- database: customer\nA;\n-- database: product\nB;\n"
            "-- database: customer, product\nC;\n-- database: product\nD;\n"
        )
        self.assertEqual(parts, {"customer": "A;\nC;", "product": "B;\nC;\nD;"})

    def test_schema_sql_files_request_keys_in_both(self):
        parts = schema.schema_parts(schema.schema_path().read_text())
        for part in ("customer", "product"):
            self.assertIn("CREATE TABLE IF NOT EXISTS request_answers", parts[part])
        self.assertNotIn("request_answers", parts["payments"])
        self.assertIn("request_key_counts", parts["product"])
        self.assertNotIn("request_key_counts", parts["customer"])
