"""marketplace-top: figures from recorded scrapes, and one frame of a live
daemon's endpoint while calls are made."""

import contextlib
import io
import re

from prometheus_client import generate_latest
from twisted.internet import threads
from twisted.trial import unittest

from marketplace.observability import top
from marketplace.observability.metrics import Metrics
from marketplace.frame.dispatch import Api, Dispatcher
from tests.support import _later, connect, empty_databases, payload_of, test_settings
from tests.test_metrics import LOOPBACK, serving


def _recorded():
    """Two scrapes of a dispatcher's metrics, 2 s apart: 10 Ping OK and 2
    UNKNOWN_API before, 30 Ping OK, 4 UNKNOWN_API after."""
    async def ping(call):
        return {}

    metrics = Metrics()
    dispatcher = Dispatcher("seller", {"Ping": Api(ping, needs_session=False)}, None)
    metrics.watch_dispatcher(dispatcher)

    def calls(n, api):
        for _ in range(n):
            dispatcher.handle_frame(b'{"type": "request", "api": "%s"}' % api.encode())

    calls(10, "Ping")
    calls(2, "Nope")
    before = generate_latest(metrics.registry).decode()
    calls(20, "Ping")
    calls(2, "Nope")
    return before, generate_latest(metrics.registry).decode()


class RecordedTests(unittest.SynchronousTestCase):
    def changes(self):
        """The changes between the recorded scrapes, as if of two workers
        (each scraped twice) and of one that was down at the first poll."""
        first, second = _recorded()
        before, now = {}, {}
        for url in ("a", "b"):
            before[url], now[url] = top.Sample(taken=100.0), top.Sample(taken=102.0)
            before[url].add_text(first)
            now[url].add_text(second)
        now["c"] = top.Sample(taken=102.0)
        now["c"].add_text(second)
        return top.changes(before, now, 102.0)

    def test_rates_and_errors_per_api(self):
        rows = {(r.service, r.api): r for r in top.rows(self.changes(), 4.0)}
        self.assertEqual(set(rows), {("seller", "Ping"), ("seller", "unknown")})
        self.assertEqual(rows["seller", "Ping"].rate, 10.0)
        self.assertEqual(rows["seller", "Ping"].error_rate, 0.0)
        self.assertEqual(rows["seller", "unknown"].rate, 1.0)
        self.assertEqual(rows["seller", "unknown"].errors, {"UNKNOWN_API": 1.0})
        # A percentile read off the histogram's buckets: positive, and not
        # beyond the bucket of the slowest call (how fast the calls ran
        # depends on the machine, so no bound tighter than that).
        self.assertGreater(rows["seller", "Ping"].p99, 0.0)
        self.assertLessEqual(rows["seller", "Ping"].p99, 10.0)

    def test_frame_text(self):
        state = top.EndpointState("http://127.0.0.1:9390", True, True, {"ready": True})
        down = top.EndpointState("http://127.0.0.1:9391", False, error="Connection refused")
        text = "\n".join(top.frame(self.changes(), 4.0, [state, down]))
        self.assertIn("2 endpoints: 1 up, 1 ready", text)
        self.assertRegex(text, r"seller +Ping +10\.0 +[0-9.]+ +[0-9.]+ +0\.0")
        self.assertRegex(text, r"seller +unknown +1\.0 .* 1\.0  UNKNOWN_API 1\.0")
        self.assertRegex(text, r"total +11\.0 +1\.0")
        self.assertRegex(text, r"http://127.0.0.1:9391 +DOWN \(Connection refused\)")

    def test_quantile_interpolates_within_a_bucket(self):
        buckets = {0.001: 50.0, 0.01: 90.0, 0.1: 100.0, float("inf"): 100.0}
        self.assertAlmostEqual(top.quantile(0.5, buckets), 0.001)
        self.assertAlmostEqual(top.quantile(0.7, buckets), 0.0055)
        self.assertAlmostEqual(top.quantile(0.99, buckets), 0.091)
        self.assertIsNone(top.quantile(0.5, {float("inf"): 0.0}))

    def test_endpoint_specs(self):
        self.assertEqual(top.endpoint_urls("127.0.0.1:9390-9392"), [
            "http://127.0.0.1:9390", "http://127.0.0.1:9391", "http://127.0.0.1:9392"])
        self.assertEqual(top.endpoint_urls("http://h:1/metrics"), ["http://h:1"])
        self.assertRaises(ValueError, top.endpoint_urls, "nonsense")


class LiveTests(unittest.TestCase):
    async def test_plain_mode_renders_a_live_endpoint(self):
        await empty_databases(self)
        ports, monitor = await serving(self, {"seller": LOOPBACK}, test_settings())
        seller = await connect(self, ports["seller"])
        await seller.request("CreateAccount", {"username": "sam", "password": "pw-passphrase"})
        answer = await seller.request("Login", {"username": "sam", "password": "pw-passphrase"})
        session = payload_of(self, answer)["session_id"]
        out = io.StringIO()

        def once():
            with contextlib.redirect_stdout(out):
                return top.main(["--once", "--interval", "1.5", f"127.0.0.1:{monitor}"])

        shown = threads.deferToThread(once)
        await _later(0.3)  # after the first poll
        for n in range(30):
            payload_of(self, await seller.request("DisplayItemsForSale", {}, session))
        for n in range(5):
            await seller.request("Nope", {})
        self.assertEqual(await shown, 0)
        text = out.getvalue()
        self.assertIn("1 endpoints: 1 up, 1 ready", text)
        row = re.search(r"seller +DisplayItemsForSale +([0-9.]+) +[0-9.]+ +[0-9.]+ +0\.0", text)
        self.assertIsNotNone(row, text)
        # 30 calls, nearly all between the two polls 1.5 s apart.
        self.assertTrue(5 <= float(row.group(1)) <= 20.0, text)
        self.assertRegex(text, r"seller +unknown +[0-9.]+ .*UNKNOWN_API [0-9.]+")
        self.assertIn("connections open: seller 1 (0 in flight)", text)
        self.assertIn("pools: customer 0/2 busy", text)


class FitTests(unittest.SynchronousTestCase):
    def test_long_lines_go_on_and_are_never_cut_silently(self):
        lines = top.fit(["short", "a b " * 30, "x" * 50], 40)
        self.assertEqual(lines[0], "short")
        self.assertTrue(all(len(line) <= 40 for line in lines), lines)
        self.assertEqual("".join(lines[1:-1]).replace(" ", ""), "ab" * 30)
        self.assertTrue(lines[2].startswith("    a"))
        self.assertEqual(lines[-1], "x" * 39 + "…")


class ScreenTests(unittest.TestCase):
    async def test_the_live_view_at_80_columns(self):
        """The curses view on a pseudo-terminal: the long summaries go on
        over a second line, whole, within the 80 columns."""
        from tests.test_terminal import start

        await empty_databases(self)
        ports, monitor = await serving(self, {"seller": LOOPBACK}, test_settings())
        seller = await connect(self, ports["seller"])
        home = self.mktemp()
        term = start(self, "marketplace-top", ["--interval", "0.5", f"127.0.0.1:{monitor}"], home)
        await term.expect("authorisations/s:")
        for n in range(100):  # calls until an interval shows them
            await seller.request("Nope", {})
            await _later(0.05)
            if "UNKNOWN_API" in term.text():
                break
        screen = await term.expect("UNKNOWN_API")
        for line in screen.splitlines():
            self.assertLessEqual(len(line), 79, screen)
        for whole in ("reconnects/s", "voided 0.0, error 0.0", "refused 0.0/s"):
            self.assertIn(whole, " ".join(screen.split()))
        term.send("q")
        await term.ended
