"""marketplace-bench: its figures and reports without a network, and one
tiny benchmark against the real services."""

import json
import os
import sys
import math
import subprocess
from pathlib import Path

from twisted.internet import reactor
from twisted.trial import unittest

from marketplace.bench import report
from marketplace.bench.cli import RESULTS, output_folder
from marketplace.bench.runner import Plan, Progress, drive
from marketplace.bench.stats import (
    Latency,
    LiveThroughput,
    Recorder,
    RunResult,
    Spread,
    merge_runs,
    percentile,
    summarise,
)
from tests.support import start_marketplace
from tests.test_client import CuttingProxy

ROOT = Path(__file__).resolve().parent.parent


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
        self.assertIn("| 1 seller + 1 buyer | 10 |", text)
        self.assertIn("| 10 sellers + 10 buyers | 10 |", text)
        self.assertIn("| 10+10 | buyer | AddItemToCart | 10 | 10.00 |", text)
        self.assertIn("![throughput and response time per scenario](chart.png)", text)

    def test_json(self):
        data = json.loads(report.to_json(self.setup, self.summaries))
        self.assertEqual([s["clients"] for s in data["scenarios"]], [1, 10])
        self.assertEqual(data["scenarios"][0]["throughput"]["mean"], 10.0)

    def test_singular_and_plural(self):
        self.assertEqual(report.plural(1, "run"), "1 run")
        self.assertEqual(report.plural(1000, "call"), "1,000 calls")
        self.assertEqual(report.plural(2, "process", "processes"), "2 processes")
        self.assertEqual(report.scenario_name(1), "1 seller + 1 buyer")
        self.assertEqual(report.scenario_name(10), "10 sellers + 10 buyers")
        text = report.markdown(self.setup, self.summaries)
        self.assertIn("each client makes 10 calls per run, 1 run per scenario;", text)
        self.assertIn("load generator in 1 process.", text)
        self.assertNotIn("1 sellers", text)

    def test_chart_is_a_png(self):
        path = Path(self.mktemp() + ".png")
        report.chart(self.summaries, path, setup=self.setup)
        self.assertEqual(path.read_bytes()[:8], b"\x89PNG\r\n\x1a\n")

    def test_chart_response_times_on_a_log_scale_with_values(self):
        summaries = [
            summarise(n, [_run(0.0, 1.0, [("buyer", "AddItemToCart", seconds)] * 10)])
            for n, seconds in ((1, 0.0005), (100, 0.07))
        ]
        drawing = report.figure(summaries, self.setup)
        throughput, response = drawing.axes
        self.assertEqual(response.get_yscale(), "log")
        labels = [t.get_text() for t in response.texts]
        self.assertIn("0.50", labels)  # the 1+1 bars, half a millisecond
        self.assertIn("70", labels)
        self.assertIn("10", [t.get_text() for t in throughput.texts])

    def test_chart_says_runs_machine_and_date(self):
        self.setup.facts.update(machine="2 cores, 24 GiB RAM", date="2026-12-01 15:00 UTC")
        drawing = report.figure(self.summaries, self.setup)
        footer = " ".join(t.get_text() for t in drawing.texts)
        self.assertIn("1 run per scenario, 10 calls per client per run", footer)
        self.assertIn("2 cores, 24 GiB RAM", footer)
        self.assertIn("2026-12-01 15:00 UTC", footer)

    def test_replace_section(self):
        document = f"intro\n{report.BEGIN}\nold\n{report.END}\nafter\n"
        self.assertEqual(
            report.replace_section(document, "new"),
            f"intro\n{report.BEGIN}\nnew\n{report.END}\nafter\n",
        )
        self.assertIn("new", report.replace_section("no markers yet", "new"))


class LiveThroughputTests(unittest.SynchronousTestCase):
    """The progress bar's rate is the table's throughput."""

    RUNS = [
        _run(0.0, 2.0, [("buyer", "AddItemToCart", 0.002)] * 3337),
        _run(5.0, 6.5, [("buyer", "AddItemToCart", 0.002)] * 2000),
        _run(9.0, 9.7, [("buyer", "AddItemToCart", 0.002)] * 1000),
    ]

    def table_rate(self) -> str:
        summary = summarise(1, self.RUNS)
        row = report.markdown(report.Setup("seed", "", 1, 3, "", ""), [summary]).split(
            "| 1 seller + 1 buyer | ")[1]
        return row.split(" |")[0]

    def test_bar_shows_the_table_s_figure(self):
        live = LiveThroughput(runs=3)
        done = 0
        for run in self.RUNS:
            live.run_started(1, run.started, done)
            done += run.calls
            live.run_ended(1, run.started, run.finished, run.calls)
        self.assertTrue(live.scenario_done)
        _, rate = report.progress_text(live, 100.0, done)
        self.assertEqual(rate, f"{self.table_rate()} calls/s")
        self.assertEqual(
            report.scenario_done_text(live),
            f"1 seller + 1 buyer: {self.table_rate()} calls/s, mean of 3 runs",
        )

    def test_shares_of_several_processes_are_merged(self):
        live = LiveThroughput(runs=3, shares=2)
        for run in self.RUNS:
            # Two processes, each with half of the calls and part of the time.
            live.run_started(1, run.started, 0)
            live.run_started(1, run.started + 0.1, 0)
            half = run.calls // 2
            self.assertFalse(live.run_ended(1, run.started + 0.1, run.finished, half))
            self.assertTrue(live.run_ended(1, run.started, run.finished - 0.1, run.calls - half))
        _, rate = report.progress_text(live, 100.0, 0)
        self.assertEqual(rate, f"{self.table_rate()} calls/s")

    def test_first_run_shows_its_rate_so_far(self):
        live = LiveThroughput(runs=10)
        self.assertEqual(report.progress_text(live, 0.0, 0), ("setting up", ""))
        live.run_started(10, 100.0, 40)  # 40 calls were made before, untimed
        self.assertEqual(
            report.progress_text(live, 102.0, 3040), ("10+10 run 1/10", "1,500 calls/s")
        )
        live.run_ended(10, 100.0, 102.0, 3000)
        live.run_started(10, 103.0, 3040)
        self.assertEqual(
            report.progress_text(live, 200.0, 3041), ("10+10 run 2/10", "1,500 calls/s")
        )

    def test_a_new_scenario_starts_afresh(self):
        live = LiveThroughput(runs=1)
        live.run_started(1, 0.0, 0)
        live.run_ended(1, 0.0, 1.0, 100)
        live.run_started(10, 2.0, 100)
        self.assertEqual(live.ended, [])
        self.assertEqual(report.progress_text(live, 2.0, 100), ("10+10 run 1/1", ""))


class OutputFolderTests(unittest.SynchronousTestCase):
    """A run other than make bench's does not overwrite the committed figures."""

    def test_out_wins(self):
        self.assertEqual(output_folder(Path("x"), Path("docs/PERFORMANCE.md")), Path("x"))

    def test_into_writes_beside_the_document(self):
        self.assertEqual(output_folder(None, Path("docs/PERFORMANCE.md")), Path("docs/bench"))

    def test_otherwise_a_folder_of_its_own(self):
        folder = output_folder(None, None, now=0.0)
        self.assertEqual(folder.parent, Path(RESULTS))
        self.assertNotEqual(output_folder(None, None, now=3600.0), folder)
        ignored = subprocess.run(
            ["git", "check-ignore", "-q", str(folder / "chart.png")], cwd=ROOT
        )
        self.assertEqual(ignored.returncode, 0, f"{folder} is not in .gitignore")

    def make_bench(self, *args: str) -> str:
        lines = subprocess.run(
            ["make", "-n", "bench", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.replace("\\\n", " ")
        (command,) = [line for line in lines.splitlines() if "marketplace-bench" in line]
        return command

    def test_make_bench_writes_the_committed_figures(self):
        command = self.make_bench()
        self.assertIn("--into docs/PERFORMANCE.md", command)
        self.assertNotIn("--out", command)

    def test_make_bench_with_arguments_does_not(self):
        command = self.make_bench("BENCH_ARGS=--runs 1 --scenarios 1")
        self.assertNotIn("--into", command)
        self.assertNotIn("--out", command)
        self.assertIn("--runs 1 --scenarios 1", command)


class BenchExtraTests(unittest.SynchronousTestCase):
    """The bench's libraries are an extra: the daemons do not carry them."""

    def test_setup_cfg(self):
        import configparser

        setup = configparser.ConfigParser()
        setup.read(ROOT / "setup.cfg")
        required = setup["options"]["install_requires"]
        bench = setup["options.extras_require"]["bench"]
        for library in ("matplotlib", "tqdm"):
            self.assertNotIn(library, required)
            self.assertIn(library, bench)

    def pip_lines(self, target: str) -> list:
        # -B: as if nothing were installed yet; -n: only print the commands.
        lines = subprocess.run(
            ["make", "-n", "-B", target], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.splitlines()
        return [line for line in lines if "pip install" in line]

    def pip_installs(self, target: str) -> list:
        """The marketplace's installs of C{target}, by their extras."""
        return [line.split()[-1] for line in self.pip_lines(target) if "--no-deps" not in line]

    def installs_barman_alone(self, target: str) -> bool:
        """Whether C{target} installs Barman without its dependencies (its
        psycopg2 would be built from source)."""
        return any("--no-deps" in line and "barman" in line for line in self.pip_lines(target))

    def test_make_installs_it_for_bench_and_test_only(self):
        self.assertEqual(self.pip_installs("bench"), ["'.[bench]'"])
        self.assertEqual(self.pip_installs("test"), ["'.[test,bench,cluster,backup]'"])
        self.assertEqual(self.pip_installs("backup"), ["'.[backup]'"])
        self.assertEqual(self.pip_installs("run"), ["'.'"])
        self.assertEqual(self.pip_installs("cluster"), ["'.[cluster,bench,backup]'"])
        for target, barman in (("test", True), ("backup", True), ("cluster", True),
                               ("run", False), ("bench", False)):
            self.assertEqual(self.installs_barman_alone(target), barman, target)


class EndToEndTests(unittest.TestCase):
    """Two clients of each role, 20 calls each, one run, on the real services."""

    async def test_tiny_benchmark(self):
        market = await start_marketplace(self)
        for workload in ("seed", "seed-unkeyed", "browse"):
            plan = Plan(
                seller=f"tcp:host=127.0.0.1:port={market.ports['seller']}",
                buyer=f"tcp:host=127.0.0.1:port={market.ports['buyer']}",
                scenarios=(2,),
                calls=20,
                runs=1,
                workload=workload,
            ).with_tag()
            live = LiveThroughput(runs=1)
            progress = _LiveProgress(live)
            results = await drive(plan, reactor, progress)
            summary = summarise(2, results[2])
            self.assertEqual(live.mean, summary.throughput.mean)
            self.assertEqual(summary.errors, {}, summary.errors_by_api)
            self.assertEqual(summary.calls, 2 * 2 * 20)
            self.assertEqual(progress.done, 80)
            roles = {role for role, _ in summary.per_api}
            self.assertEqual(roles, {"buyer", "seller"})
            self.assertGreater(summary.throughput.mean, 0)
            text = report.markdown(report.Setup(workload, "", 20, 1, "", ""), [summary])
            self.assertIn("| 2 sellers + 2 buyers |", text)


    async def test_a_retried_call_counts_once(self):
        """Answers lost mid-run: the calls are sent again, each counts once
        (calls, progress, no error), and the report says how many were
        sent again."""
        market = await start_marketplace(self)
        proxy = CuttingProxy(market.ports["buyer"])
        buyer = await proxy.start(self)
        plan = Plan(
            seller=f"tcp:host=127.0.0.1:port={market.ports['seller']}",
            buyer=buyer,
            scenarios=(2,),
            calls=20,
            runs=1,
            workload="seed",
            retry_deadline=10.0,
        ).with_tag()
        progress = _CuttingProgress(proxy, 3)
        results = await drive(plan, reactor, progress)
        summary = summarise(2, results[2])
        self.assertEqual(proxy.cuts, 0)
        self.assertEqual(summary.errors, {}, summary.errors_by_api)
        self.assertEqual(summary.calls, 2 * 2 * 20)
        self.assertEqual(progress.done, 80)
        self.assertEqual(summary.retries, 3)
        during = proxy.apis()[progress.requests_before :]
        self.assertEqual(during.count("AddItemToCart"), 2 * 20 + 3)
        setup = report.Setup("seed", "", 20, 1, "", "")
        text = report.markdown(setup, [summary])
        self.assertIn("sent again after a lost connection", text)
        self.assertIn("2+2: 3.", text)
        figures = json.loads(report.to_json(setup, [summary]))
        self.assertEqual(figures["scenarios"][0]["retries"], 3)


class _CuttingProgress(Progress):
    """Has C{proxy} lose C{cuts} answers once the run starts."""

    def __init__(self, proxy, cuts: int) -> None:
        super().__init__()
        self.proxy = proxy
        self.cuts = cuts

    def run_started(self, clients, at):
        self.requests_before = len(self.proxy.requests)
        self.proxy.cuts = self.cuts


class _LiveProgress(Progress):
    def __init__(self, live: LiveThroughput) -> None:
        super().__init__()
        self.live = live

    def run_started(self, clients, at):
        self.live.run_started(clients, at, self.done)

    def run_ended(self, clients, started, finished, calls):
        self.live.run_ended(clients, started, finished, calls)


class InstallHintTests(unittest.SynchronousTestCase):
    def test_the_pip_of_this_environment(self):
        """marketplace-bench without its extras names a command that works:
        this environment's pip (.venv/bin/pip), not a bare pip."""
        from marketplace.bench.cli import install_bench_command
        from tests.test_cli import ROOT

        here = os.getcwd()
        self.addCleanup(os.chdir, here)
        os.chdir(ROOT)
        venv = os.path.relpath(os.path.dirname(sys.executable), ROOT)
        self.assertEqual(
            install_bench_command(), f"{os.path.join(venv, 'pip')} install '.[bench]'"
        )
        self.assertTrue(os.path.exists(os.path.join(ROOT, venv, "pip")))


class ThrottledOptionTests(unittest.SynchronousTestCase):
    def test_each_limit_names_its_option(self):
        """A bench stopped by a limit names the deployment's option that
        lets it through, the request keys' share of an account included."""
        from marketplace.bench.patience import Throttled
        from marketplace.clientlib import ClientError
        from marketplace.postgres.requestkeys import too_many_keys

        keys = too_many_keys()
        error = ClientError(keys.code, keys.message, "AddItemToCart")
        self.assertIn("--request-keys-per-minute", Throttled(error, 80.0).line())
