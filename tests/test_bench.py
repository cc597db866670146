"""marketplace-bench: its figures and reports without a network, and one
tiny benchmark against the real services."""

import json
import math
from pathlib import Path

from twisted.internet import reactor
from twisted.trial import unittest

from marketplace.bench import report
from marketplace.bench.runner import Plan, Progress, drive
from marketplace.bench.stats import (
    Latency,
    Recorder,
    RunResult,
    Spread,
    merge_runs,
    percentile,
    summarise,
)
from tests.support import start_marketplace


def _run(started, finished, samples, errors=()):
    recorder = Recorder()
    for role, api, seconds in samples:
        recorder.record(role, api, seconds)
    for role, api, code in errors:
        recorder.error(role, api, code, 0.001)
    return RunResult(started, finished, recorder, cpu=0.5)


class PercentileTests(unittest.SynchronousTestCase):
    def test_interpolates_between_ranks(self):
        values = [1.0, 2.0, 3.0, 4.0]
        self.assertEqual(percentile(values, 0.0), 1.0)
        self.assertEqual(percentile(values, 1.0), 4.0)
        self.assertAlmostEqual(percentile(values, 0.5), 2.5)
        self.assertAlmostEqual(percentile(values, 0.99), 3.97)

    def test_one_and_none(self):
        self.assertEqual(percentile([7.0], 0.95), 7.0)
        self.assertTrue(math.isnan(percentile([], 0.5)))


class LatencyTests(unittest.SynchronousTestCase):
    def test_milliseconds_from_seconds(self):
        latency = Latency.of([0.001 * n for n in range(1, 101)])
        self.assertEqual(latency.count, 100)
        self.assertAlmostEqual(latency.mean, 50.5)
        self.assertAlmostEqual(latency.p50, 50.5)
        self.assertAlmostEqual(latency.p95, 95.05)
        self.assertAlmostEqual(latency.p99, 99.01)
        self.assertAlmostEqual(latency.max, 100.0)

    def test_empty(self):
        self.assertEqual(Latency.of([]).count, 0)


class SpreadTests(unittest.SynchronousTestCase):
    def test_spread(self):
        spread = Spread.of([100.0, 200.0, 300.0])
        self.assertEqual((spread.mean, spread.min, spread.max), (200.0, 100.0, 300.0))
        self.assertAlmostEqual(spread.stdev, 100.0)

    def test_one_run_has_no_stdev(self):
        self.assertEqual(Spread.of([5.0]).stdev, 0.0)


class SummaryTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.runs = [
            _run(0.0, 2.0, [("buyer", "AddItemToCart", 0.002)] * 3
                 + [("seller", "DisplayItemsForSale", 0.001)]),
            _run(10.0, 11.0, [("buyer", "AddItemToCart", 0.004)],
                 errors=[("buyer", "AddItemToCart", "OUT_OF_STOCK")]),
        ]
        self.summary = summarise(1, self.runs)

    def test_throughput_per_run(self):
        # 4 calls in 2 s, then 2 calls (one an error) in 1 s.
        self.assertEqual(self.summary.throughput.min, 2.0)
        self.assertEqual(self.summary.throughput.max, 2.0)
        self.assertEqual(self.summary.calls, 6)

    def test_latency_per_api_and_role(self):
        add = self.summary.per_api[("buyer", "AddItemToCart")]
        self.assertEqual(add.count, 5)
        self.assertAlmostEqual(add.max, 4.0)
        self.assertEqual(self.summary.per_api[("seller", "DisplayItemsForSale")].count, 1)

    def test_errors_by_code(self):
        self.assertEqual(self.summary.errors, {"OUT_OF_STOCK": 1})

    def test_bench_cpu(self):
        self.assertAlmostEqual(self.summary.bench_cpu_per_call_us, 1.0 / 6 * 1e6)
        self.assertAlmostEqual(self.summary.bench_cpu_share, 1.0 / 3)

    def test_merge_runs_of_processes(self):
        a = _run(1.0, 3.0, [("buyer", "GetItem", 0.001)] * 2)
        b = _run(0.5, 2.0, [("seller", "DisplayItemsForSale", 0.001)])
        merged = merge_runs([a, b])
        self.assertEqual((merged.started, merged.finished, merged.calls), (0.5, 3.0, 3))
        self.assertAlmostEqual(merged.throughput, 3 / 2.5)
        self.assertEqual(merged.cpu, 1.0)

    def test_json_has_no_nan(self):
        text = json.dumps(summarise(1, [_run(0.0, 1.0, [])]).to_json(), allow_nan=False)
        self.assertIn('"calls": 0', text)


class ReportTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.summaries = [
            summarise(n, [_run(0.0, 1.0, [("buyer", "AddItemToCart", 0.001 * n)] * 10)])
            for n in (1, 10)
        ]
        self.setup = report.Setup("seed", "buyers add", 10, 1, "tcp:a", "tcp:b")

    def test_markdown_has_a_row_per_scenario(self):
        text = report.markdown(self.setup, self.summaries, "chart.png")
        self.assertIn("| 1 sellers + 1 buyers | 10 |", text)
        self.assertIn("| 10 sellers + 10 buyers | 10 |", text)
        self.assertIn("| 10+10 | buyer | AddItemToCart | 10 | 10.00 |", text)
        self.assertIn("![throughput and response time per scenario](chart.png)", text)

    def test_json(self):
        data = json.loads(report.to_json(self.setup, self.summaries))
        self.assertEqual([s["clients"] for s in data["scenarios"]], [1, 10])
        self.assertEqual(data["scenarios"][0]["throughput"]["mean"], 10.0)

    def test_chart_is_a_png(self):
        path = Path(self.mktemp() + ".png")
        report.chart(self.summaries, path)
        self.assertEqual(path.read_bytes()[:8], b"\x89PNG\r\n\x1a\n")

    def test_replace_section(self):
        document = f"intro\n{report.BEGIN}\nold\n{report.END}\nafter\n"
        self.assertEqual(
            report.replace_section(document, "new"),
            f"intro\n{report.BEGIN}\nnew\n{report.END}\nafter\n",
        )
        self.assertIn("new", report.replace_section("no markers yet", "new"))


class EndToEndTests(unittest.TestCase):
    """Two clients of each role, 20 calls each, one run, on the real services."""

    async def test_tiny_benchmark(self):
        market = await start_marketplace(self)
        for workload in ("seed", "browse"):
            plan = Plan(
                seller=f"tcp:host=127.0.0.1:port={market.ports['seller']}",
                buyer=f"tcp:host=127.0.0.1:port={market.ports['buyer']}",
                scenarios=(2,),
                calls=20,
                runs=1,
                workload=workload,
            ).with_tag()
            progress = Progress()
            results = await drive(plan, reactor, progress)
            summary = summarise(2, results[2])
            self.assertEqual(summary.errors, {}, summary.errors_by_api)
            self.assertEqual(summary.calls, 2 * 2 * 20)
            self.assertEqual(progress.done, 80)
            roles = {role for role, _ in summary.per_api}
            self.assertEqual(roles, {"buyer", "seller"})
            self.assertGreater(summary.throughput.mean, 0)
            text = report.markdown(report.Setup(workload, "", 20, 1, "", ""), [summary])
            self.assertIn("| 2 sellers + 2 buyers |", text)
