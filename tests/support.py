"""Test fixtures: the real databases, the real services on loopback, and a
small wire client that speaks PROTOCOL.md's framing.

Nothing here mocks the database: tests that need one get the PostgreSQL of
L{tests.db}, emptied before each test.

Layouts.  The services keep customer data (accounts, sessions) and product
data (items, carts, purchases, feedback) either in one database, the
layout of the embedded default that users run (C{make run}), or in two
(C{--customer-db} and C{--product-db} naming two).  Every test runs on the
one-database layout unless its test case says otherwise with a C{layout}
class attribute; the API suites run on both, through L{on_both_layouts}.
"""

import json
import struct
import sys
from dataclasses import replace
from typing import Any, Dict, Optional

from twisted.internet import defer, reactor
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ClientEndpoint, connectProtocol

from marketplace.clientlib.wire import FramedJsonClient
from marketplace.customer.accounts import AccountLimits
from marketplace.postgres import schema
from marketplace.postgres.database import Database
from marketplace.daemon.config import Settings
from marketplace.daemon.build import build
from tests.db import test_dsns

# Truncates only the tables that hold rows (a truncate makes new files for
# each table and its indexes, a few ms apiece), and starts every sequence
# used since again.  schema_applied stays: the schema was just applied, so
# the services a test starts need not apply it again.
_EMPTY_ALL_TABLES = """
DO $$
DECLARE
    name text;
    holding text[] := '{}';
    found boolean;
BEGIN
    FOR name IN
        SELECT quote_ident(tablename) FROM pg_tables
        WHERE schemaname = 'public' AND tablename <> 'schema_applied'
    LOOP
        EXECUTE 'SELECT EXISTS (SELECT FROM ' || name || ')' INTO found;
        IF found THEN
            holding := holding || name;
        END IF;
    END LOOP;
    IF holding <> '{}' THEN
        EXECUTE 'TRUNCATE ' || array_to_string(holding, ', ') || ' RESTART IDENTITY CASCADE';
    END IF;
    PERFORM setval(format('%I.%I', schemaname, sequencename), start_value, false)
    FROM pg_sequences WHERE schemaname = 'public' AND last_value IS NOT NULL;
END $$;
"""


#: The layout a test runs on unless its test case names another.
DEFAULT_LAYOUT = "one"


def layout_of(testcase) -> str:
    """The layout C{testcase} runs on: its C{layout} attribute ("one" or
    "two"), else L{DEFAULT_LAYOUT}."""
    return getattr(testcase, "layout", DEFAULT_LAYOUT)


def layout_dsns(layout: str = DEFAULT_LAYOUT) -> Dict[str, str]:
    """Where the customer, product and payments data are on C{layout}:
    connection strings of the test databases, by the name of the data."""
    dsns = test_dsns()
    if layout not in ("one", "two"):
        raise ValueError(f"no layout {layout!r}: one or two")
    product = dsns["customer"] if layout == "one" else dsns["product"]
    return {"customer": dsns["customer"], "product": product, "payments": dsns["payments"]}


def on_both_layouts(case: type) -> type:
    """Class decorator: C{case} runs on the one-database layout, and its
    twin C{<name>OnTwoDatabases}, which this puts beside it in its module
    for trial to find, runs the same tests on the two-database layout."""
    name = f"{case.__name__}OnTwoDatabases"
    twin = type(name, (case,), {
        "layout": "two",
        "__module__": case.__module__,
        "__qualname__": name,
        "__doc__": f"L{{{case.__name__}}} with customer and product data in two databases.",
    })
    module = sys.modules[case.__module__]
    if hasattr(module, name):
        raise TypeError(f"{case.__module__}.{name} exists already")
    setattr(module, name, twin)
    return case


async def open_database(testcase, name: str) -> Database:
    """The database of C{name} data (customer, product or payments) on the
    test case's layout, schema applied; closed when the test ends."""
    database = Database(name, layout_dsns(layout_of(testcase))[name], size=2, reactor=reactor)
    await database.startService()
    testcase.addCleanup(database.stopService)
    await schema.apply_schema(database, name)
    return database


async def insert_item(
    product: Database, name: str, keywords, category: int = 0, price="1",
    quantity: int = 1, thumbs_up: int = 0, thumbs_down: int = 0,
) -> int:
    """Put an item of seller 1 straight into the product database (its
    triggers fill search's tables); its id."""
    (item_id,) = await product.one(
        "INSERT INTO items (seller_id, name, category, keywords, condition, price,"
        " quantity, thumbs_up, thumbs_down) VALUES (1, %s, %s, %s::text[], 'new', %s, %s,"
        " %s, %s) RETURNING id",
        (name, category, keywords, price, quantity, thumbs_up, thumbs_down),
    )
    return item_id


async def empty_databases(testcase) -> None:
    """Apply the schema to the test case's databases and empty their tables
    (once for a database that holds two kinds of data)."""
    emptied = set()
    for name in ("customer", "product", "payments"):
        database = await open_database(testcase, name)
        if database.dsn not in emptied:
            emptied.add(database.dsn)
            await database.execute(_EMPTY_ALL_TABLES)


# Every client of the suite connects from 127.0.0.1, and some tests sign up
# and log in dozens of users at once: the services they run give that one
# address room (as the benchmark's launcher does).  The tests of these limits
# (tests/test_hashing_budget.py) run services with the defaults.  Their
# passwords are hashed with argon2id's least memory: the same code, a
# thousandth of the work of 64 MiB (which the tests of hashing keep), and most
# of the suite's time otherwise.
TEST_HASH_MEMORY = 1024
FIXTURE_ACCOUNT_LIMITS = AccountLimits(
    hash_per_address=1000,
    hash_queue=1000,
    signups_per_address=1_000_000,
    hash_memory=TEST_HASH_MEMORY,
)

# Nothing listens on port 1: a buyer service without a payments service
# finds it unreachable at once (and never reaches a real one on 8082).
NO_PAYMENTS = "tcp:host=127.0.0.1:port=1"

# What the test buyer services show the test payments services.
PAYMENTS_SECRET = "test-payments-secret-0123456789"


def test_settings(layout: str = DEFAULT_LAYOUT, **overrides) -> Settings:
    """Settings of a service on the test databases, on C{layout}."""
    dsns = layout_dsns(layout)
    values = dict(
        customer_db=dsns["customer"],
        product_db=dsns["product"],
        payments_db=dsns["payments"],
        pool_size=2,
        approval_rate=1.0,
        payments=NO_PAYMENTS,
        payments_secret=PAYMENTS_SECRET,
    )
    values.update(overrides)
    return Settings(**values)


class RunningMarketplace:
    """The real buyer and seller services, in this process, on loopback ports.

    L{restart} stops them and starts new ones on the same ports, which is
    what a daemon restart looks like to a client.  With "payments" among
    the services, the financial-transactions service runs too, as a daemon
    of its own (L{stop_payments}, L{start_payments}), and the buyer service
    is pointed at it.
    """

    def __init__(self, settings: Settings, services=("seller", "buyer")) -> None:
        self.settings = settings
        self.names = [name for name in services if name != "payments"]
        self.with_payments = "payments" in services
        self.ports: Dict[str, int] = {name: 0 for name in services}
        self.top = None
        self.payments_top = None
        #: The services' L{Limits}; None for those of limits.py.
        self.limits = None

    async def start(self) -> None:
        settings = self.settings
        if self.with_payments:
            if self.payments_top is None or not self.payments_top.running:
                await self.start_payments()
            settings = replace(
                settings, payments=f"tcp:host=127.0.0.1:port={self.ports['payments']}"
            )
        if not self.names:
            return
        listen = {
            name: f"tcp:{self.ports[name]}:interface=127.0.0.1" for name in self.names
        }
        self.top = build(
            listen, settings, reactor, self.limits, account_limits=FIXTURE_ACCOUNT_LIMITS
        )
        await self._serving(self.top)

    async def _serving(self, top) -> None:
        top.startService()
        servers = [s for s in top if hasattr(s, "endpoint")]
        await servers[0].backend.ready()
        for server in servers:
            while server.port is None:
                await _later(0.01)
            self.ports[server.name] = server.port.getHost().port

    async def start_payments(self) -> None:
        """Start the financial-transactions service (on its earlier port)."""
        listen = {"payments": f"tcp:{self.ports['payments']}:interface=127.0.0.1"}
        self.payments_top = build(listen, self.settings, reactor, self.limits)
        await self._serving(self.payments_top)

    async def stop_payments(self) -> None:
        """Stop the financial-transactions service."""
        if self.payments_top is not None and self.payments_top.running:
            await self.payments_top.stopService()

    def set_approval_rate(self, rate: float) -> None:
        """Change the running financial-transactions service's approval rate."""
        server = next(s for s in self.payments_top if hasattr(s, "endpoint"))
        dispatcher = server.factory.handle_frame.__self__
        dispatcher.apis["AuthorizePayment"].handler.__self__.approval_rate = rate

    async def stop(self) -> None:
        if self.top is not None and self.top.running:
            await self.top.stopService()
        await self.stop_payments()

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    def backend(self):
        """The L{Backend} of the running services."""
        return next(s for s in self.top if hasattr(s, "customer"))


async def start_marketplace(
    testcase, services=("seller", "buyer", "payments"), **overrides
) -> RunningMarketplace:
    """Start the services (by default seller, buyer and payments, which
    approves every well-formed card) on the emptied test databases, on the
    test case's layout, for one test."""
    await empty_databases(testcase)
    market = RunningMarketplace(test_settings(layout_of(testcase), **overrides), services)
    await market.start()
    testcase.addCleanup(lambda: defer.Deferred.fromCoroutine(market.stop()))
    return market


async def start_plain_and_tls(
    testcase, services, certs: Dict[str, str], settings: Settings
) -> Dict[tuple, int]:
    """C{services}, built as the daemons build them, each listening on a
    plaintext and a TLS loopback port (C{certs} from make_dev_certs) and
    stopped after the test; their ports by (service, "tcp" or "tls")."""
    ssl = f"ssl:0:interface=127.0.0.1:privateKey={certs['key']}:certKey={certs['cert']}"
    top = build({name: ["tcp:0:interface=127.0.0.1", ssl] for name in services}, settings, reactor)
    top.startService()
    testcase.addCleanup(top.stopService)
    servers = [s for s in top if hasattr(s, "endpoint")]
    await servers[0].backend.ready()
    ports = {}
    for server in servers:
        while server.port is None:
            await _later(0.01)
        kind = "tls" if isinstance(server.endpoint, SSL4ServerEndpoint) else "tcp"
        ports[server.name.split()[0], kind] = server.port.getHost().port
    return ports


def _later(seconds: float) -> defer.Deferred:
    d: defer.Deferred = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


class WireClient(FramedJsonClient):
    """A bare client of the framing, on the project's one framed-JSON
    client: requests out, answers back in order, read as plain JSON (so
    numbers with a fraction are floats, as any JSON client reads them)."""

    decoder = json.JSONDecoder()

    def send_bytes(self, data: bytes) -> defer.Deferred:
        """Send raw bytes, framing included; the next answer."""
        d: defer.Deferred = defer.Deferred()
        self.pending.append(d)
        self.transport.write(data)
        return d

    def request(
        self,
        api: str,
        payload: Optional[dict] = None,
        session_id: Optional[str] = None,
        **extra: Any,
    ) -> defer.Deferred:
        """Send one request envelope; the decoded answer."""
        message = {
            "type": "request",
            "api": api,
            "session_id": session_id,
            "payload": {} if payload is None else payload,
        }
        message.update(extra)
        return self.send_frame(json.dumps(message).encode("utf-8"))


async def connect(testcase, port: int) -> WireClient:
    """A L{WireClient} connected to a loopback port; closed after the test."""
    client = await connectProtocol(
        TCP4ClientEndpoint(reactor, "127.0.0.1", port), WireClient()
    )
    close_after_test(testcase, client)
    return client


def close_after_test(testcase, client: WireClient) -> None:
    """Close C{client}'s connection, if still open, once the test is over
    (the test waits until it is closed)."""

    def close():
        if client.transport.connected:
            client.transport.loseConnection()
            return client.closed

    testcase.addCleanup(close)


def frame(message: Any) -> bytes:
    """Length-prefixed bytes of a JSON message."""
    body = json.dumps(message).encode("utf-8")
    return struct.pack(">I", len(body)) + body


def payload_of(testcase, answer: dict) -> dict:
    """The payload of a success answer; fails the test on an error answer."""
    testcase.assertEqual(answer["type"], "response", answer)
    return answer["payload"]


def assert_error(testcase, answer: dict, code: str) -> dict:
    """Check that C{answer} is an error with C{code}; its error object."""
    testcase.assertEqual(answer["type"], "error", answer)
    testcase.assertEqual(answer["error"]["code"], code, answer)
    testcase.assertIsInstance(answer["error"]["message"], str)
    return answer["error"]
