"""Least privilege (postgres/roles.py): the buyer and seller services'
role may use the marketplace's tables and nothing else, the payments
service's role only the payments tables; both on a database that holds
every part of schema.sql (one database for everything, as an external
PostgreSQL may be set up), and on make run's embedded database, whose
daemons connect as these roles."""

from pathlib import Path

import psycopg2
from psycopg2 import errors
from twisted.internet import reactor
from twisted.trial import unittest

from marketplace.postgres import roles
from marketplace.postgres.database import Database
from marketplace.postgres.embedded import role_dsn
from marketplace.postgres.schema import SchemaMissing, apply_schema
from marketplace.daemon.service import Backend
from marketplace.daemon.config import Settings
from tests.db import test_dsns

#: The database of these tests: every part of schema.sql in one.
DATABASE = "roles_test"

# What no service role may do, each statement with the error it must get.
FORBIDDEN_TO_ALL = [
    ("DROP TABLE {own}", errors.InsufficientPrivilege),
    ("ALTER TABLE {own} ADD COLUMN x int", errors.InsufficientPrivilege),
    ("TRUNCATE {own}", errors.InsufficientPrivilege),
    ("COPY (SELECT 1) TO PROGRAM 'true'", errors.InsufficientPrivilege),
    ("CREATE ROLE intruder", errors.InsufficientPrivilege),
    ("CREATE TABLE intruder (x int)", errors.InsufficientPrivilege),
    ("CREATE TEMPORARY TABLE intruder (x int)", errors.InsufficientPrivilege),
    ("ALTER ROLE {role} SUPERUSER", errors.InsufficientPrivilege),
    ("SELECT pg_read_file('postgresql.conf')", errors.InsufficientPrivilege),
]


def _connect(dsn: str, role: str, database: str = DATABASE):
    connection = psycopg2.connect(role_dsn(dsn, role), dbname=database)
    connection.autocommit = True
    return connection


class RolesTestCase(unittest.TestCase):
    """A database with every part of schema.sql, made as the test server's
    superuser, readied for the roles and filled by the owner role."""

    async def setUp(self):
        self.dsn = test_dsns()["customer"]
        admin = psycopg2.connect(self.dsn)
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if cursor.fetchone() is None:
                cursor.execute(f"CREATE DATABASE {DATABASE}")
            with admin:
                admin.autocommit = False
                roles.create_roles(cursor)
        admin.close()
        admin = psycopg2.connect(self.dsn, dbname=DATABASE)
        with admin, admin.cursor() as cursor:
            roles.prepare_database(cursor)
        admin.close()
        owner_dsn = role_dsn(psycopg2.extensions.make_dsn(self.dsn, dbname=DATABASE), roles.OWNER)
        database = Database("owner", owner_dsn, 1, reactor)
        await database.startService()
        try:
            for part in ("customer", "product", "payments"):
                await apply_schema(database, part)
        finally:
            await database.stopService()

    def as_role(self, role: str):
        connection = _connect(self.dsn, role)
        self.addCleanup(connection.close)
        return connection.cursor()

    def assert_refused(self, cursor, sql: str, error=errors.InsufficientPrivilege):
        with self.assertRaises(error, msg=sql):
            cursor.execute(sql)


class ServiceRoleTests(RolesTestCase):

    def test_the_owner_owns_every_table(self):
        cursor = self.as_role(roles.OWNER)
        cursor.execute("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")
        self.assertEqual(cursor.fetchall(), [(roles.OWNER,)])

    def test_every_table_is_one_service_roles(self):
        cursor = self.as_role(roles.OWNER)
        cursor.execute(
            "SELECT tablename, has_table_privilege(%s, tablename, 'SELECT'),"
            " has_table_privilege(%s, tablename, 'SELECT')"
            " FROM pg_tables WHERE schemaname = 'public'"
            " AND tablename <> 'schema_applied'",  # the owner's own record
            (roles.SHOP, roles.PAYMENTS)
        )
        rows = cursor.fetchall()
        self.assertGreater(len(rows), 10)
        for table, shop, payments in rows:
            self.assertTrue(shop != payments, f"{table}: shop {shop}, payments {payments}")

    def test_shop_uses_its_tables(self):
        cursor = self.as_role(roles.SHOP)
        cursor.execute(
            "INSERT INTO accounts (role, username, name, password_hash)"
            " VALUES ('buyer', 'roles-test', 'n', 'h') ON CONFLICT DO NOTHING"
        )
        cursor.execute("SELECT count(*) FROM items")
        cursor.execute("DELETE FROM accounts WHERE username = 'roles-test'")
        self.assertEqual(cursor.rowcount, 1)

    def test_payments_uses_its_tables(self):
        cursor = self.as_role(roles.PAYMENTS)
        cursor.execute(
            "INSERT INTO authorizations (idempotency_key, approved) VALUES ('roles-test', true)"
        )
        cursor.execute("DELETE FROM authorizations WHERE idempotency_key = 'roles-test'")
        self.assertEqual(cursor.rowcount, 1)

    def test_shop_may_do_nothing_else(self):
        cursor = self.as_role(roles.SHOP)
        for sql, error in FORBIDDEN_TO_ALL:
            self.assert_refused(cursor, sql.format(own="items", role=roles.SHOP), error)
        for other in roles.tables("payments"):
            self.assert_refused(cursor, f"SELECT * FROM {other}")
            self.assert_refused(cursor, f"DELETE FROM {other}")

    def test_payments_may_do_nothing_else(self):
        cursor = self.as_role(roles.PAYMENTS)
        for sql, error in FORBIDDEN_TO_ALL:
            self.assert_refused(cursor, sql.format(own="authorizations", role=roles.PAYMENTS), error)
        for other in roles.tables("customer") + roles.tables("product"):
            self.assert_refused(cursor, f"SELECT * FROM {other}")

    def test_the_owner_is_no_superuser(self):
        cursor = self.as_role(roles.OWNER)
        for sql in ("COPY (SELECT 1) TO PROGRAM 'true'", "CREATE ROLE intruder",
                    "ALTER ROLE marketplace_owner SUPERUSER"):
            self.assert_refused(cursor, sql)

    def test_no_role_may_create_roles_or_log_in_as_more(self):
        cursor = self.as_role(roles.SHOP)
        cursor.execute(
            "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls"
            " FROM pg_roles WHERE rolname = ANY(%s) ORDER BY rolname", (list(roles.ROLES),)
        )
        rows = cursor.fetchall()
        self.assertEqual(len(rows), 3)
        for row in rows:
            self.assertEqual(row[1:], (False,) * 5, row[0])

    def test_a_password_is_sent_as_a_verifier(self):
        verifier = roles.scram_verifier("correct horse")
        self.assertTrue(verifier.startswith("SCRAM-SHA-256$4096:"))
        self.assertNotIn("correct horse", verifier)
        self.assertNotEqual(verifier, roles.scram_verifier("correct horse"))  # salted

    async def test_a_service_connection_alone_finds_the_schema_there(self):
        shop = role_dsn(psycopg2.extensions.make_dsn(self.dsn, dbname=DATABASE), roles.SHOP)
        database = Database("product", shop, 1, reactor)
        await database.startService()
        self.addCleanup(database.stopService)
        await apply_schema(database, "product")  # may not apply it, needs not
        admin = psycopg2.connect(self.dsn)
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute("DROP DATABASE IF EXISTS roles_empty")
            cursor.execute("CREATE DATABASE roles_empty")
        admin.close()
        empty = Database("product", psycopg2.extensions.make_dsn(shop, dbname="roles_empty"), 1,
                         reactor)
        await empty.startService()
        self.addCleanup(empty.stopService)
        with self.assertRaises(SchemaMissing) as caught:
            await apply_schema(empty, "product")
        self.assertIn("--product-owner-db", str(caught.exception))

    def test_password_file_lines(self):
        text = roles.pgpass_line(roles.SHOP, "a:b\\c") + roles.pgpass_line(roles.OWNER, "x")
        self.assertEqual(roles.parse_pgpass(text), {roles.SHOP: "a:b\\c", roles.OWNER: "x"})


class EmbeddedRolesTests(unittest.TestCase):
    """make run's embedded database: the daemon's pools connect as the
    service roles, schema.sql is applied by the owner, and only this
    system user (and root) may connect, by peer authentication."""

    async def test_the_daemon_connects_as_its_roles(self):
        folder = Path(self.mktemp())
        settings = Settings(data_dir=folder, pool_size=1)
        backend = Backend(settings, reactor, ("customer", "product", "payments"))
        backend.startService()
        self.addCleanup(backend.stopService)
        await backend.ready()
        for database, role in ((backend.customer, roles.SHOP), (backend.product, roles.SHOP),
                               (backend.payments, roles.PAYMENTS)):
            self.assertEqual(await database.query("SELECT current_user"), [(role,)])
        (owner,) = await backend.product.query(
            "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'"
        )
        self.assertEqual(owner, (roles.OWNER,))
        for database, table in ((backend.product, "items"), (backend.payments, "authorizations")):
            with self.assertRaises(errors.InsufficientPrivilege):
                await database.execute(f"DROP TABLE {table}")
            with self.assertRaises(errors.InsufficientPrivilege):
                await database.execute("COPY (SELECT 1) TO PROGRAM 'true'")
        with self.assertRaises(errors.InsufficientPrivilege):
            await backend.customer.execute("CREATE ROLE intruder")
        hba = (folder / "postgres" / "pg_hba.conf").read_text().splitlines()
        rules = [line.split() for line in hba if line.strip() and not line.startswith("#")]
        self.assertEqual({rule[-2:][0] for rule in rules}, {"peer"})
        self.assertEqual({rule[0] for rule in rules}, {"local"})


def _matches(verifier: str, password: str) -> bool:
    """Whether a stored SCRAM-SHA-256 verifier is that of C{password}."""
    import base64
    import hashlib
    import hmac

    head, keys = verifier.split("$", 1)[1].split("$")
    iterations, salt = head.split(":")
    stored = base64.b64decode(keys.split(":")[0])
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(salt), int(iterations)
    )
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return hashlib.sha256(client_key).digest() == stored


class RolesCommandTests(unittest.TestCase):
    """marketplace-db-roles, for an external PostgreSQL: the roles with the
    passwords of a private password file, the schema applied as the owner."""

    def test_roles_passwords_and_schema(self):
        import io
        import stat
        from contextlib import redirect_stdout

        from marketplace.postgres import rolescli
        from marketplace.frame import secretfiles

        dsn = test_dsns()["customer"]
        admin = psycopg2.connect(dsn)
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute("DROP DATABASE IF EXISTS roles_cli")
            cursor.execute("CREATE DATABASE roles_cli")
        passfile = Path(self.mktemp())
        shown = io.StringIO()
        for _ in range(2):  # again: nothing changes
            with redirect_stdout(shown):
                code = rolescli.run([
                    "--passfile", str(passfile), "--admin-db", dsn,
                    "--database", "roles_cli:customer,product",
                ])
            self.assertEqual(code, 0)
        self.assertEqual(stat.S_IMODE(passfile.stat().st_mode), 0o600)
        passwords = roles.parse_pgpass(secretfiles.read(passfile).decode())
        with admin.cursor() as cursor:
            cursor.execute(
                "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY(%s)",
                (list(roles.ROLES),),
            )
            stored = dict(cursor.fetchall())
        admin.close()
        for role in roles.ROLES:
            self.assertTrue(_matches(stored[role], passwords[role]), role)
            self.assertNotIn(passwords[role], shown.getvalue())
        cursor = _connect(dsn, roles.SHOP, "roles_cli").cursor()
        cursor.execute("SELECT count(*) FROM accounts")
        cursor.execute("SELECT to_regclass('authorizations')")
        self.assertEqual(cursor.fetchone(), (None,))
        self.assertRaises(errors.InsufficientPrivilege, cursor.execute, "DROP TABLE items")
        cursor.connection.close()

    def test_a_wide_password_file_is_refused(self):
        from marketplace.postgres import rolescli
        from marketplace.frame import secretfiles

        passfile = Path(self.mktemp())
        passfile.write_text(roles.pgpass_line(roles.SHOP, "x"))
        passfile.chmod(0o644)
        self.assertRaises(secretfiles.UnsafeSecretFile, rolescli.run, ["--passfile", str(passfile)])
