"""Metrics and health checks of the real daemons (--metrics): a scrape of
/metrics after known calls counts exactly those calls; /health/ready
follows the database; JSON logs hold no secrets."""

import json
from dataclasses import replace
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, protocol, reactor, task, threads
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.logger import globalLogPublisher
from twisted.trial import unittest
from twisted.web.client import Agent, readBody

from marketplace.observability.logs import json_observer
from marketplace.observability.metrics import Metrics
from marketplace.observability.monitor import MonitorServer, worker_description
from marketplace.frame.dispatch import Api, Dispatcher
from marketplace.frame.limits import Limits
from marketplace.daemon.build import build
from tests.support import (
    _later,
    assert_error,
    connect,
    empty_databases,
    layout_dsns,
    payload_of,
    start_marketplace,
    test_settings,
)
from tests.ports import free_port_pair
from tests.test_daemons import connect_when_up, free_port, start_daemon
from tests.test_purchase import CARD
from tests.test_unavailable import allow_connections

LOOPBACK = "tcp:0:interface=127.0.0.1"


async def serving(testcase, listen, settings, limits=None):
    """A daemon built as twistd would, with --metrics on a loopback port;
    (its ports by service, the port of its monitor)."""
    top = build(listen, settings, reactor, limits, metrics=LOOPBACK)
    top.startService()
    testcase.addCleanup(top.stopService)
    servers = [s for s in top if hasattr(s, "endpoint")]
    monitor = next(s for s in top if isinstance(s, MonitorServer))
    for _ in range(500):
        if monitor.port is not None and all(s.port is not None for s in servers):
            break
        await _later(0.02)
    ports = {s.name: s.port.getHost().port for s in servers}
    return ports, monitor.port.getHost().port


async def get(port: int, path: str):
    """(status, body) of an HTTP GET on a loopback port."""
    response = await Agent(reactor).request(b"GET", f"http://127.0.0.1:{port}{path}".encode())
    body = await readBody(response)
    return response.code, body.decode("utf-8")


async def scrape(port: int) -> dict:
    """Every sample of /metrics: {(name, sorted label items): value}."""
    status, text = await get(port, "/metrics")
    assert status == 200, status
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


class ScrapeTests(unittest.TestCase):
    """Known calls, then one scrape: exactly those calls, by API and code."""

    async def setUp(self):
        await empty_databases(self)
        settings = test_settings()
        ports, self.payments_monitor = await serving(
            self, {"payments": LOOPBACK}, settings
        )
        settings = replace(settings, payments=f"tcp:host=127.0.0.1:port={ports['payments']}")
        self.ports, self.monitor = await serving(
            self, {"seller": LOOPBACK, "buyer": LOOPBACK}, settings
        )
        self.seller = await connect(self, self.ports["seller"])
        self.buyer = await connect(self, self.ports["buyer"])

    async def session(self, client, username):
        await client.request("CreateAccount", {"username": username, "password": "pw-passphrase"})
        answer = await client.request("Login", {"username": username, "password": "pw-passphrase"})
        return payload_of(self, answer)["session_id"]

    async def test_calls_counted_by_api_and_code(self):
        seller = await self.session(self.seller, "sam")
        buyer = await self.session(self.buyer, "bea")
        item = {"item_name": "mug", "category": 1, "keywords": ["mug"],
                "condition": "new", "price": 2.5, "quantity": 10}
        answer = await self.seller.request("RegisterItemForSale", item, seller)
        item_id = payload_of(self, answer)["item_id"]
        for _ in range(3):
            payload_of(self, await self.buyer.request(
                "SearchItemsForSale", {"category": 1, "keywords": ["mug"]}, buyer))
        assert_error(self, await self.buyer.request("GetItem", {"item_id": "x"}, buyer),
                     "BAD_REQUEST")
        assert_error(self, await self.buyer.request("Nope", {}, buyer), "UNKNOWN_API")
        assert_error(self, await self.buyer.request("Nope2", {}, buyer), "UNKNOWN_API")
        assert_error(self, await self.buyer.send_frame(b"[1]"), "BAD_REQUEST")
        assert_error(self, await self.buyer.request("DisplayCart", {}, "stale"),
                     "INVALID_SESSION")
        add = {"item_id": item_id, "quantity": 1}
        payload_of(self, await self.buyer.request("AddItemToCart", add, buyer))
        payload_of(self, await self.buyer.request("MakePurchase", CARD, buyer))
        payload_of(self, await self.buyer.request("AddItemToCart", add, buyer))
        bad_card = dict(CARD, card_number="4111111111111112")
        assert_error(self, await self.buyer.request("MakePurchase", bad_card, buyer),
                     "PAYMENT_DECLINED")
        for _ in range(6):
            await self.seller.request("Login", {"username": "sam", "password": "wrong"})

        s = await scrape(self.monitor)
        calls = "marketplace_calls_total"
        expected = {
            ("seller", "CreateAccount", "OK"): 1,
            ("seller", "Login", "OK"): 1,
            ("seller", "Login", "INVALID_CREDENTIALS"): 5,
            ("seller", "Login", "RATE_LIMITED"): 1,
            ("seller", "RegisterItemForSale", "OK"): 1,
            ("buyer", "CreateAccount", "OK"): 1,
            ("buyer", "Login", "OK"): 1,
            ("buyer", "SearchItemsForSale", "OK"): 3,
            ("buyer", "GetItem", "BAD_REQUEST"): 1,
            ("buyer", "GetItem", "OK"): 0,
            ("buyer", "unknown", "UNKNOWN_API"): 2,
            ("buyer", "none", "BAD_REQUEST"): 1,
            ("buyer", "DisplayCart", "INVALID_SESSION"): 1,
            ("buyer", "AddItemToCart", "OK"): 2,
            ("buyer", "MakePurchase", "OK"): 1,
            ("buyer", "MakePurchase", "PAYMENT_DECLINED"): 1,
        }
        for (service, api, code), count in expected.items():
            self.assertEqual(
                value(s, calls, service=service, api=api, code=code), count, (service, api, code)
            )
        total = sum(v for (name, _), v in s.items() if name == calls)
        self.assertEqual(total, sum(expected.values()), "no other call was counted")
        hist = "marketplace_response_seconds_count"
        self.assertEqual(value(s, hist, service="buyer", api="SearchItemsForSale"), 3)
        self.assertEqual(value(s, hist, service="buyer", api="AddItemToCart"), 2)
        self.assertEqual(value(s, hist, service="seller", api="Login"), 7)
        self.assertEqual(
            value(s, "marketplace_response_seconds_bucket",
                  service="buyer", api="SearchItemsForSale", le="+Inf"), 3)
        self.assertGreater(value(s, "marketplace_response_seconds_sum",
                                 service="buyer", api="MakePurchase"), 0)
        self.assertEqual(value(s, "marketplace_purchases_total", outcome="completed"), 1)
        self.assertEqual(value(s, "marketplace_purchases_total", outcome="declined"), 1)
        self.assertEqual(value(s, "marketplace_purchases_total", outcome="unavailable"), 0)
        self.assertEqual(value(s, "marketplace_login_throttled_total", service="seller"), 1)
        self.assertEqual(value(s, "marketplace_login_throttled_total", service="buyer"), 0)
        self.assertEqual(value(s, "marketplace_connections_open", service="buyer"), 1)
        self.assertEqual(value(s, "marketplace_connections_open", service="seller"), 1)
        self.assertEqual(value(s, "marketplace_requests_in_flight", service="buyer"), 0)
        self.assertEqual(value(s, "marketplace_db_pool_size", database="product"), 2)
        self.assertEqual(value(s, "marketplace_db_pool_busy", database="product"), 0)
        self.assertIn(("process_cpu_seconds_total", ()), s)

        p = await scrape(self.payments_monitor)
        self.assertEqual(value(p, "marketplace_payment_authorisations_total",
                               outcome="approved"), 1)
        self.assertEqual(value(p, "marketplace_payment_authorisations_total",
                               outcome="declined"), 1)
        self.assertEqual(value(p, calls, service="payments", api="AuthorizePayment",
                               code="OK"), 2)

    async def test_health_live_and_index(self):
        self.assertEqual(await get(self.monitor, "/health/live"), (200, '{"live": true}\n'))
        status, body = await get(self.monitor, "/health/ready")
        self.assertEqual(status, 200, body)
        self.assertEqual(
            json.loads(body),
            {"ready": True, "listening": {"seller": True, "buyer": True},
             "databases": {"customer": "ok", "product": "ok"}},
        )
        self.assertEqual((await get(self.monitor, "/nothing"))[0], 404)


class ReadinessTests(unittest.TestCase):
    """/health/ready: ready, not ready while a database is cut off, ready
    again once it is back; the pool's reconnects and UNAVAILABLE answers
    are counted."""

    #: The product database is cut off while the customer database stays.
    layout = "two"

    async def setUp(self):
        await empty_databases(self)
        self.ports, self.monitor = await serving(
            self, {"buyer": LOOPBACK}, test_settings(self.layout)
        )

    async def ready_becomes(self, expected: bool):
        for _ in range(150):
            status, body = await get(self.monitor, "/health/ready")
            if (status == 200) == expected:
                return json.loads(body)
            await _later(0.1)
        self.fail(f"/health/ready did not become {'ready' if expected else 'not ready'}")

    async def test_ready_follows_the_database(self):
        buyer = await connect(self, self.ports["buyer"])
        await buyer.request("CreateAccount", {"username": "bea", "password": "pw-passphrase"})
        answer = await buyer.request("Login", {"username": "bea", "password": "pw-passphrase"})
        session = payload_of(self, answer)["session_id"]
        report = await self.ready_becomes(True)
        self.assertEqual(report["databases"]["product"], "ok")
        await threads.deferToThread(allow_connections, "product", False)
        self.addCleanup(threads.deferToThread, allow_connections, "product", True)
        report = await self.ready_becomes(False)
        self.assertFalse(report["ready"])
        self.assertIn(report["databases"]["product"], ("unreachable", "timeout"))
        self.assertEqual(report["databases"]["customer"], "ok")
        self.assertEqual((await get(self.monitor, "/health/live"))[0], 200)
        answer = await buyer.request("GetItem", {"item_id": "1-1"}, session)
        assert_error(self, answer, "UNAVAILABLE")
        await threads.deferToThread(allow_connections, "product", True)
        report = await self.ready_becomes(True)
        self.assertEqual(report["databases"], {"customer": "ok", "product": "ok"})
        s = await scrape(self.monitor)
        self.assertEqual(value(s, "marketplace_database_unavailable_answers_total",
                               service="buyer"), 1)
        self.assertEqual(value(s, "marketplace_calls_total", service="buyer",
                               api="GetItem", code="UNAVAILABLE"), 1)
        self.assertGreaterEqual(value(s, "marketplace_db_reconnects_total",
                                      database="product"), 1)

    async def test_not_ready_before_listening(self):
        top = build({"buyer": LOOPBACK}, test_settings(self.layout), reactor, metrics=LOOPBACK)
        monitor = next(s for s in top if isinstance(s, MonitorServer))
        monitor.startService()  # the monitor alone: nothing listens
        self.addCleanup(monitor.stopService)
        while monitor.port is None:
            await _later(0.01)
        status, body = await get(monitor.port.getHost().port, "/health/ready")
        self.assertEqual(status, 503)
        self.assertEqual(json.loads(body)["listening"], {"buyer": False})
        self.assertEqual(json.loads(body)["databases"]["customer"], "unreachable")


class _Refused(protocol.Protocol):
    def connectionMade(self):
        self.received = b""
        self.closed = defer.Deferred()

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason=None):
        self.closed.callback(None)


class RefusedConnectionTests(unittest.TestCase):
    async def test_refused_and_open_connections(self):
        await empty_databases(self)
        ports, monitor = await serving(
            self, {"seller": LOOPBACK}, test_settings(), Limits(max_connections=2)
        )
        # Connections working on a request (half a frame sent) never give
        # way to a new one (limits.py): the third is refused.
        clients = [await connect(self, ports["seller"]) for _ in range(2)]
        for client in clients:
            client.transport.write(b"\x00\x00\x01\x00{")
        await task.deferLater(reactor, 0.3, lambda: None)
        refused = await connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", ports["seller"]), _Refused()
        )
        await refused.closed
        self.assertIn(b"RATE_LIMITED", refused.received)
        s = await scrape(monitor)
        self.assertEqual(value(s, "marketplace_connections_refused_total"), 1)
        self.assertEqual(value(s, "marketplace_connections_open", service="seller"), 2)


class ObserverTests(unittest.SynchronousTestCase):
    """The dispatcher's observer, without a network."""

    def test_labels_stay_bounded(self):
        async def ok(call):
            return {}

        metrics = Metrics()
        dispatcher = Dispatcher("seller", {"Ping": Api(ok, needs_session=False)}, None)
        metrics.watch_dispatcher(dispatcher)
        for api in ["Ping", "Ping"] + [f"random {n}" for n in range(50)]:
            frame = json.dumps({"type": "request", "api": api, "payload": {}})
            self.successResultOf(dispatcher.handle_frame(frame.encode()))
        self.successResultOf(dispatcher.handle_frame(b"not json"))
        calls = {
            tuple(sorted(s.labels.items())): s.value
            for f in metrics.registry.collect() if f.name == "marketplace_calls"
            for s in f.samples if s.name.endswith("_total")
        }
        self.assertEqual(calls, {
            (("api", "Ping"), ("code", "OK"), ("service", "seller")): 2,
            (("api", "unknown"), ("code", "OK"), ("service", "seller")): 0,
            (("api", "unknown"), ("code", "UNKNOWN_API"), ("service", "seller")): 50,
            (("api", "none"), ("code", "OK"), ("service", "seller")): 0,
            (("api", "none"), ("code", "BAD_REQUEST"), ("service", "seller")): 1,
        })

    def test_worker_ports(self):
        self.assertEqual(worker_description("tcp:9390:interface=127.0.0.1", 0),
                         "tcp:9390:interface=127.0.0.1")
        self.assertEqual(worker_description("tcp:9390:interface=127.0.0.1", 2),
                         "tcp:9392:interface=127.0.0.1")
        self.assertEqual(worker_description("tcp:0", 3), "tcp:0")
        self.assertRaises(ValueError, worker_description, "unix:/tmp/m.sock", 1)


class JsonLogTests(unittest.TestCase):
    """--log-json: one JSON object per line, and no password, session id or
    card number in it (tests/test_security.py checks the text format)."""

    async def test_no_secrets_in_json_logs(self):
        market = await start_marketplace(self)
        seller = await connect(self, market.ports["seller"])
        buyer = await connect(self, market.ports["buyer"])
        path = Path(self.mktemp())
        observer = json_observer(str(path))
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        secret = "p4ss-Word-never-logged"
        card = "4000056655665556"
        sessions = []
        for client in (seller, buyer):
            await client.request("CreateAccount", {"username": "bea", "password": secret})
            answer = await client.request("Login", {"username": "bea", "password": secret})
            sessions.append(payload_of(self, answer)["session_id"])
        session = sessions[1]
        requests = [
            ("Login", {"username": "bea", "password": secret + "!"}, None),
            ("Login", {"username": "noone", "password": secret}, None),
            ("CreateAccount", {"username": "bea", "password": secret}, None),
            ("CreateAccount", {"username": 7, "password": secret}, None),
            ("Nonsense", {"password": secret}, session),
            ("DisplayCart", {}, session + "x"),
            ("MakePurchase", dict(CARD, card_number=card), session),
            ("MakePurchase", dict(CARD, card_number=card, security_code=5), session),
        ]
        for api, payload, session_id in requests:
            assert_error(self, await buyer.request(api, payload, session_id),
                         _expected_code(api, payload))
        await buyer.send_frame(
            b'{"type": "request", "api": "Login", "payload": {"password": "%s"'
            % secret.encode()
        )
        globalLogPublisher.removeObserver(observer)
        text = path.read_text("utf-8")
        events = [json.loads(line) for line in text.splitlines()]
        codes = {e.get("code") for e in events}
        self.assertLessEqual(
            {"INVALID_CREDENTIALS", "USERNAME_TAKEN", "UNKNOWN_API", "INVALID_SESSION",
             "BAD_REQUEST", "EMPTY_CART"}, codes, "every failed request is logged")
        for needle in (secret, card, card[:12], *sessions):
            self.assertNotIn(needle, text)


def _expected_code(api: str, payload: dict) -> str:
    if api == "Login":
        return "INVALID_CREDENTIALS"
    if api == "CreateAccount":
        return "USERNAME_TAKEN" if payload["username"] == "bea" else "BAD_REQUEST"
    if api == "Nonsense":
        return "UNKNOWN_API"
    if api == "DisplayCart":
        return "INVALID_SESSION"
    return "EMPTY_CART" if payload["security_code"] == "123" else "BAD_REQUEST"


class DaemonTests(unittest.TestCase):
    """The real twistd plugin with --workers 2: each worker serves its own
    metrics (the given port, then the next), and --log-json replaces the
    text log with one JSON object per line, the other worker's included."""

    timeout = 180

    async def test_workers_metrics_and_json_log(self):
        await empty_databases(self)
        cwd = Path(self.mktemp()).resolve()
        cwd.mkdir(parents=True)
        seller_port, metrics_port = free_port(), free_port_pair()
        dsns = layout_dsns()
        daemon = start_daemon(
            self, cwd, "marketplace-seller", "--workers=2",
            f"--listen=tcp:{seller_port}:interface=127.0.0.1",
            f"--customer-db={dsns['customer']}", f"--product-db={dsns['product']}",
            f"--metrics=tcp:{metrics_port}:interface=127.0.0.1",
            "--log-json=log.json",
        )
        client = await connect_when_up(seller_port, daemon)
        for port in (metrics_port, metrics_port + 1):
            for _ in range(300):
                try:
                    status, _ = await get(port, "/health/ready")
                except Exception:
                    status = None
                if status == 200:
                    break
                await _later(0.1)
            self.assertEqual(status, 200, daemon.log())
        for n in range(3):
            await client.request("CreateAccount", {"username": f"u{n}", "password": "pw-passphrase"})
        counted = 0
        for port in (metrics_port, metrics_port + 1):
            s = await scrape(port)
            counted += value(s, "marketplace_calls_total", service="seller",
                             api="CreateAccount", code="OK")
        self.assertEqual(counted, 3, "the workers' counts add up to the calls")
        client.transport.loseConnection()
        daemon.process.signalProcess("TERM")
        self.assertTrue(await daemon.ended, daemon.log())
        events = [json.loads(line) for line in (cwd / "log.json").read_text().splitlines()]
        formats = [e.get("log_format", "") for e in events]
        self.assertIn("{name} service listening on {address}", formats)
        # (relayed by twisted.runner.procmon, which tags each line)
        self.assertTrue(any(e.get("tag") == "worker 1" and "line" in e for e in events), formats)
        self.assertNotIn(dsns["customer"], (cwd / "log.json").read_text())
        self.assertEqual(daemon.log(), "", "nothing is logged as text")
