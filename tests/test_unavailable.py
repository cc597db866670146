"""A database that goes away: UNAVAILABLE while it is gone, service after."""

import psycopg2
from psycopg2.extensions import make_dsn
from twisted.internet import reactor, task, threads

from tests.db import test_dsns
from tests.support import assert_error, connect, payload_of
from tests.test_buyer_api import BuyerTestCase


def _admin(sql: str, database: str) -> None:
    """Run one statement on the server's maintenance database (blocking)."""
    connection = psycopg2.connect(make_dsn(test_dsns()[database], dbname="postgres"))
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(sql)
    finally:
        connection.close()


def allow_connections(database: str, allow: bool) -> None:
    """Let the test database take connections, or refuse them and end the
    ones it has."""
    name = psycopg2.extensions.parse_dsn(test_dsns()[database])["dbname"]
    _admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allow).lower()}', database)
    if not allow:
        _admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            f" WHERE datname = '{name}' AND pid <> pg_backend_pid()",
            database,
        )


class UnavailableTests(BuyerTestCase):
    """One of two databases goes away (for the one database of the default
    layout, see tests/test_one_database.py)."""

    layout = "two"

    async def cut_off(self, database: str) -> None:
        await threads.deferToThread(allow_connections, database, False)
        self.addCleanup(threads.deferToThread, allow_connections, database, True)

    async def test_product_database_gone_then_back(self):
        item_id = await self.item()
        await self.cut_off("product")
        for _ in range(3):
            answer = await self.call("AddItemToCart", {"item_id": item_id, "quantity": 1})
            assert_error(self, answer, "UNAVAILABLE")
        # what needs only the customer database is still served
        seller = await connect(self, self.market.ports["seller"])
        answer = await seller.request("CreateAccount", {"username": "dora", "password": "pw-passphrase"})
        payload_of(self, answer)
        await threads.deferToThread(allow_connections, "product", True)
        answer = await self._until_served({"item_id": item_id, "quantity": 1})
        self.assertEqual(payload_of(self, answer)["cart"][0]["quantity"], 1,
                         "the refused requests changed nothing")

    async def test_customer_database_gone_then_back(self):
        await self.cut_off("customer")
        answer = await self.call("DisplayCart")
        assert_error(self, answer, "UNAVAILABLE")
        answer = await self.buyer.request("Login", {"username": "bob", "password": "secret-passphrase"})
        assert_error(self, answer, "UNAVAILABLE")
        await threads.deferToThread(allow_connections, "customer", True)
        for _ in range(150):
            answer = await self.call("DisplayCart")
            if answer["type"] == "response":
                break
            assert_error(self, answer, "UNAVAILABLE")
            await task.deferLater(reactor, 0.1, lambda: None)
        payload_of(self, answer)

    async def _until_served(self, payload):
        for _ in range(150):
            answer = await self.call("AddItemToCart", payload)
            if answer["type"] == "response":
                return answer
            assert_error(self, answer, "UNAVAILABLE")
            await task.deferLater(reactor, 0.1, lambda: None)
        self.fail("the service did not recover within 15 seconds")

    async def test_other_connections_keep_working(self):
        await self.cut_off("product")
        other = await connect(self, self.market.ports["buyer"])
        answer = await other.request("GetItem", {"item_id": "3-1"}, self.session)
        assert_error(self, answer, "UNAVAILABLE")
        answer = await other.request("Nope", {}, self.session)
        assert_error(self, answer, "UNKNOWN_API")
