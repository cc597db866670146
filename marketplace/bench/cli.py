"""The marketplace-bench command.

    marketplace-bench [--seller EP] [--buyer EP] [--scenarios 1,10,100]
                      [--calls 1000] [--runs 10] [--workload seed]
                      [--procs 1] [--out DIR] [--json] [--launch]

For each scenario N it creates N sellers and N buyers (each with its own
connection, account and session) on a running deployment, then runs the
workload C{--runs} times, every client making C{--calls} calls one after
the other.  A progress bar goes to stderr, with the rate as the report
gives it; the report to stdout (Markdown, or JSON with C{--json}) and to
report.md, results.json and a chart in the C{--out} folder: by default,
with C{--into DOC}, the folder C{bench} beside DOC (C{make bench}: the
committed docs/bench and docs/PERFORMANCE.md), else a folder of its own
under bench-results/, so that trying the bench out overwrites nothing.
"""

import argparse
import importlib.util
import math
import multiprocessing
import os
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

from marketplace.bench import catalogcli, report
from marketplace.bench.patience import Stopped
from marketplace.bench.runner import Plan, Progress, drive
from marketplace.bench.stats import LiveThroughput, RunResult, merge_runs, summarise
from marketplace.bench.workloads import WORKLOADS


#: Where runs go that name neither --out nor --into (not committed).
RESULTS = "bench-results"


def output_folder(out: Optional[Path], into: Optional[Path], now: Optional[float] = None) -> Path:
    """The folder of a run's report, results and chart: C{out} if given;
    else, with C{into}, the folder C{bench} beside that document; else a
    folder of its own under L{RESULTS}, named after the time C{now}."""
    if out is not None:
        return out
    if into is not None:
        return into.parent / "bench"
    return Path(RESULTS) / time.strftime("%Y%m%d-%H%M%S", time.localtime(now))


def _scenarios(text: str) -> tuple:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError("scenarios are numbers, e.g. 1,10,100")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("scenarios are numbers of at least 1")
    return values


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="marketplace-bench",
        description="Closed-loop load test of a running marketplace: N sellers and"
        " N buyers per scenario, each on its own connection and session.",
    )
    p.add_argument("--seller", default="tcp:host=127.0.0.1:port=8080",
                   help="client endpoint of the seller service, several separated by |"
                   " (default %(default)s)")
    p.add_argument("--buyer", default="tcp:host=127.0.0.1:port=8081",
                   help="client endpoint of the buyer service, several separated by |"
                   " (default %(default)s)")
    p.add_argument("--scenarios", type=_scenarios, default=(1, 10, 100),
                   help="sellers (= buyers) per scenario, comma-separated (default 1,10,100)")
    p.add_argument("--calls", type=_positive, default=1000,
                   help="calls per client per run (default %(default)s)")
    p.add_argument("--runs", type=_positive, default=10,
                   help="runs per scenario (default %(default)s)")
    p.add_argument("--workload", choices=sorted(WORKLOADS), default="seed",
                   help="what the clients call (default %(default)s): "
                   + "; ".join(f"{w.name}: {w.description}" for w in WORKLOADS.values()))
    p.add_argument("--items", type=_positive, default=5,
                   help="items each seller puts on sale (default %(default)s)")
    p.add_argument("--retry-deadline", type=_seconds, default=30.0, metavar="SECONDS",
                   help="seconds a call keeps trying (reconnecting, sending it again with"
                   " its request key) before it counts as an UNAVAILABLE error (default 30)")
    p.add_argument("--procs", type=_positive, default=1,
                   help="processes that drive the clients, each a share (default 1)")
    p.add_argument("--out", type=Path,
                   help="folder for report.md, results.json and chart.png (default: with"
                   " --into, the folder 'bench' beside that file; else"
                   f" {RESULTS}/DATE-TIME)")
    p.add_argument("--into", type=Path,
                   help="Markdown file whose bench section (between the bench markers)"
                   " is replaced by the report (make bench: docs/PERFORMANCE.md)")
    p.add_argument("--chart-name", default="chart.png", help="file name of the chart in --out")
    p.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--launch", action="store_true",
                   help="start a marketplace (twistd, throwaway embedded database, ports"
                   " --base-port and the next) for the benchmark and stop it after")
    p.add_argument("--unsafe-async-commit", action="store_true",
                   help="with --launch: start the marketplace with --unsafe-async-commit"
                   " (writes answered before their commit reaches the disk)")
    p.add_argument("--base-port", type=_positive, default=9080,
                   help="seller port with --launch; the buyer's is the next (default 9080)")
    p.add_argument("--metrics", default=None, metavar="ENDPOINT",
                   help="with --launch, the daemon serves its metrics there (worker k on"
                   " its port + k), to measure their cost or watch with marketplace-top")
    p.add_argument("--workers", type=_positive, default=os.cpu_count() or 1,
                   help="processes per service with --launch (default: the cores, %(default)s)")
    p.add_argument("--catalog", type=_positive, metavar="N",
                   help="first fill the deployment with a generated catalog of N items"
                   " (marketplace-catalog; with --launch or --product-db)")
    p.add_argument("--product-db", default=os.environ.get("MARKETPLACE_PRODUCT_DB"),
                   help="the product database, for --catalog without --launch")
    catalogcli.add_options(p)
    p.add_argument("--idle", type=int, default=0, metavar="N",
                   help="also open N idle connections to each service and report the"
                   " resident memory of the processes listening on its port")
    return p


def _log_warnings() -> None:
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr), [predicate])],
        redirectStandardIO=False,
    )


class _Bar:
    """The progress bar: calls answered, and the scenario's throughput as
    the report's table will give it (not tqdm's own rate, which would count
    the untimed set-up too).  A line with each scenario's figure stays on
    the screen when its runs are over."""

    def __init__(self, plan: Plan, shares: int, enabled: bool) -> None:
        self.live = LiveThroughput(plan.runs, shares)
        self.bar = None
        self.shown = 0
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=plan.total_calls(), file=sys.stderr, dynamic_ncols=True,
                desc="setting up",
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} calls"
                " [{elapsed}{postfix}]",
            )

    def run_started(self, clients: int, at: float, done: int) -> None:
        self.live.run_started(clients, at, done)

    def run_ended(self, clients: int, started: float, finished: float, calls: int) -> None:
        if self.live.run_ended(clients, started, finished, calls) and self.live.scenario_done:
            line = report.scenario_done_text(self.live)
            if self.bar is not None:
                self.bar.write(line, file=sys.stderr)
            else:
                print(line, file=sys.stderr)

    def show(self, done: int) -> None:
        if self.bar is None:
            return
        description, rate = report.progress_text(self.live, time.monotonic(), done)
        self.bar.set_description_str(description, refresh=False)
        self.bar.set_postfix_str(rate, refresh=False)
        self.bar.update(done - self.shown)
        self.shown = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _ShownProgress(Progress):
    """The progress of the clients in this process, shown on a L{_Bar}."""

    def __init__(self, bar: _Bar) -> None:
        super().__init__()
        self.bar = bar

    def run_started(self, clients: int, at: float) -> None:
        self.bar.run_started(clients, at, self.done)

    def run_ended(self, clients: int, started: float, finished: float, calls: int) -> None:
        self.bar.run_ended(clients, started, finished, calls)


class _QueuedProgress(Progress):
    """The progress of one of several processes, sent to the first."""

    def __init__(self, me: int, queue) -> None:
        super().__init__()
        self.me = me
        self.queue = queue

    def run_started(self, clients: int, at: float) -> None:
        self.queue.put(("started", self.me, (clients, at)))

    def run_ended(self, clients: int, started: float, finished: float, calls: int) -> None:
        self.queue.put(("ended", self.me, (clients, started, finished, calls)))


def _run_here(plan: Plan, show_progress: bool, idle: int) -> tuple:
    """Every client in this process, in one reactor."""
    from twisted.internet import defer, reactor, task

    bar = _Bar(plan, 1, show_progress)
    progress = _ShownProgress(bar)

    def tick() -> None:
        bar.show(progress.done)

    outcome: dict = {}

    async def main() -> None:
        ticker = task.LoopingCall(tick)
        ticker.start(0.25)
        try:
            outcome["results"] = await drive(plan, reactor, progress)
            if idle:
                outcome["memory"] = await _memory(plan, idle, reactor)
        except Stopped as e:
            outcome["results"] = e.results
            outcome["throttled"] = e.line()
        finally:
            ticker.stop()
            tick()

    def finished(result):
        outcome["failure"] = result if hasattr(result, "getTraceback") else None
        reactor.stop()

    reactor.callWhenRunning(
        lambda: defer.Deferred.fromCoroutine(main()).addBoth(finished)
    )
    reactor.run()
    bar.close()
    if outcome.get("failure") is not None:
        failure = outcome["failure"]
        raise SystemExit(f"marketplace-bench: {failure.getErrorMessage()}")
    return outcome["results"], outcome.get("memory"), outcome.get("throttled")


async def _memory(plan: Plan, count: int, reactor) -> List[dict]:
    from marketplace.bench.memory import idle_connections

    measured = []
    for role, endpoint in (("seller", plan.seller), ("buyer", plan.buyer)):
        port = _port_of(endpoint)
        measured.append(await idle_connections(role, endpoint, port, count, reactor))
    return measured


def _port_of(endpoint: str) -> int:
    for part in endpoint.split(":"):
        if part.startswith("port="):
            return int(part[5:])
    return int(endpoint.rsplit(":", 1)[1])


def _child(plan: Plan, me: int, processes: int, barrier, queue) -> None:
    """One process of C{--procs}: its share of the clients."""
    from twisted.internet import defer, reactor, task, threads

    progress = _QueuedProgress(me, queue)
    reported = [0]

    def tick() -> None:
        if progress.done != reported[0]:
            queue.put(("progress", me, progress.done - reported[0]))
            reported[0] = progress.done

    def sync() -> defer.Deferred:
        return threads.deferToThread(barrier.wait, 600)

    async def main() -> None:
        ticker = task.LoopingCall(tick)
        ticker.start(0.25)
        try:
            results = await drive(plan, reactor, progress, (me, processes), sync)
        except Stopped as e:
            # The other processes stop at their next meeting point.
            barrier.abort()
            queue.put(("throttled", me, e.line()))
            return
        finally:
            ticker.stop()
            tick()
        queue.put(("results", me, results))

    def finished(result) -> None:
        if hasattr(result, "getTraceback"):
            barrier.abort()
            if result.check(threading.BrokenBarrierError):
                queue.put(("stopped", me, None))  # another process stopped
            else:
                queue.put(("failed", me, result.getTraceback()))
        reactor.stop()

    reactor.callWhenRunning(lambda: defer.Deferred.fromCoroutine(main()).addBoth(finished))
    reactor.run()


def _run_in_processes(plan: Plan, processes: int, show_progress: bool) -> Dict[int, List[RunResult]]:
    """The clients shared out over C{processes} child processes."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    queue = context.Queue()
    children = [
        context.Process(target=_child, args=(plan, me, processes, barrier, queue), daemon=True)
        for me in range(processes)
    ]
    for child in children:
        child.start()
    bar = _Bar(plan, processes, show_progress)
    done = 0
    shares: List[Dict[int, List[RunResult]]] = []
    ended = 0
    throttled = ""
    try:
        while ended < processes:
            kind, me, value = queue.get()
            if kind == "progress":
                done += value
                bar.show(done)
            elif kind == "started":
                bar.run_started(*value, done)
            elif kind == "ended":
                bar.run_ended(*value)
            elif kind == "results":
                shares.append(value)
                ended += 1
            elif kind == "throttled":
                throttled = throttled or value
                ended += 1
            elif kind == "stopped":
                ended += 1
            else:
                raise SystemExit(f"marketplace-bench: process {me} failed:\n{value}")
    finally:
        bar.close()
        for child in children:
            child.join(10)
            if child.is_alive():
                child.terminate()
    if throttled:
        raise SystemExit(throttled)
    return {
        clients: [
            merge_runs(share[clients][run] for share in shares)
            for run in range(plan.runs)
        ]
        for clients in plan.scenarios
    }


def _fill_catalog(args, launched) -> str:
    """Run marketplace-catalog (a process of its own, with its own reactor)
    on the deployment; its summary line."""
    import subprocess

    dsn = launched.product_dsn() if launched is not None else args.product_db
    if not dsn:
        raise SystemExit("marketplace-bench: --catalog needs --launch or --product-db")
    command = [
        sys.executable, "-m", "marketplace.bench.catalogcli", str(args.catalog),
        "--seller", args.seller, "--buyer", args.buyer, "--product-db", dsn,
        "--seed", str(args.seed), "--categories", str(args.categories),
        "--words", str(args.words), "--sellers", str(args.sellers),
        "--voters", str(args.voters),
    ]
    if args.voted is not None:
        command += ["--voted", str(args.voted)]
    if args.no_progress:
        command.append("--no-progress")
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    return done.stdout.strip()


def _facts(args, launched) -> Dict[str, str]:
    facts = {
        "machine": f"{os.cpu_count()} cores, {_memory_total()}, Python {sys.version.split()[0]}",
        "deployment": (
            "launched by the bench: twistd marketplace,"
            f" {report.plural(args.workers, 'worker process', 'worker processes')}"
            " per service, embedded PostgreSQL"
            + (", --unsafe-async-commit" if getattr(args, "unsafe_async_commit", False) else "")
            if launched else f"seller {args.seller}, buyer {args.buyer}"
        ),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }
    return facts


def _memory_total() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB RAM"
    except OSError:
        pass
    return "RAM unknown"


def install_bench_command() -> str:
    """The command that installs the bench extras into the environment this
    program runs in: its own pip (C{.venv/bin/pip} after make run), named
    relative to the current folder when inside it."""
    pip = os.path.join(os.path.dirname(sys.executable), "pip")
    relative = os.path.relpath(pip)
    if not relative.startswith(".."):
        pip = relative if os.sep in relative else os.path.join(".", relative)
    return f"{shlex.quote(pip)} install '.[bench]'"


def main(argv: Optional[List[str]] = None) -> int:
    """Run the benchmark; the exit status (1 if any call failed)."""
    args = parser().parse_args(argv)
    missing = [name for name in ("matplotlib", "tqdm") if importlib.util.find_spec(name) is None]
    if missing:
        raise SystemExit(
            f"marketplace-bench needs {' and '.join(missing)}: {install_bench_command()}"
            " in the marketplace's folder (make bench does)"
        )
    args.out = output_folder(args.out, args.into)
    launched = None
    if args.launch:
        from marketplace.bench.deploy import LocalMarketplace

        extra = [f"--metrics={args.metrics}"] if args.metrics else []
        if args.unsafe_async_commit:
            extra.append("--unsafe-async-commit")
        launched = LocalMarketplace(args.base_port, args.workers, extra=extra)
        print(f"starting: {' '.join(launched.command())}", file=sys.stderr)
        launched.start()
        args.seller, args.buyer = launched.seller, launched.buyer
    catalog_made = ""
    if args.catalog:
        try:
            catalog_made = _fill_catalog(args, launched)
        except BaseException:
            if launched is not None:
                launched.stop()
            raise
        print(catalog_made, file=sys.stderr)
    plan = Plan(
        seller=args.seller,
        buyer=args.buyer,
        scenarios=args.scenarios,
        calls=args.calls,
        runs=args.runs,
        workload=args.workload,
        items=args.items,
        catalog_seed=args.seed,
        catalog_words=args.words,
        catalog_categories=args.categories,
        retry_deadline=args.retry_deadline,
    ).with_tag()
    show_progress = not args.no_progress
    memory = None
    try:
        throttled = None
        if args.procs == 1:
            _log_warnings()
            results, memory, throttled = _run_here(plan, show_progress, args.idle)
        else:
            results = _run_in_processes(plan, args.procs, show_progress)
            if args.idle:
                _log_warnings()
                _, memory, _ = _run_here(
                    Plan(**{**vars(plan), "scenarios": ()}), False, args.idle
                )
    finally:
        if launched is not None:
            launched.stop()
    if throttled and not results:
        print(throttled, file=sys.stderr)
        return 1
    summaries = [
        summarise(clients, results[clients]) for clients in plan.scenarios if clients in results
    ]
    setup = report.Setup(
        workload=plan.workload,
        description=WORKLOADS[plan.workload].description,
        calls=plan.calls,
        runs=plan.runs,
        seller=plan.seller,
        buyer=plan.buyer,
        procs=args.procs,
        facts=_facts(args, launched),
    )
    if catalog_made:
        setup.facts["catalog"] = catalog_made.removeprefix("catalog: ")
    if memory:
        for m in memory:
            setup.facts[f"memory, {m['role']} service with {m['connections']} idle connections"] = (
                ", ".join(
                    f"process {pid}: {m['rss_before_mb'][pid]:.1f} MiB before,"
                    f" {rss:.1f} MiB with them"
                    for pid, rss in m["rss_with_connections_mb"].items()
                )
                or "no listening process found on this machine"
            )
    args.out.mkdir(parents=True, exist_ok=True)
    report.chart(summaries, args.out / args.chart_name, setup=setup)
    chart_name = args.chart_name
    (args.out / "results.json").write_text(report.to_json(setup, summaries, memory) + "\n")
    (args.out / "report.md").write_text(report.markdown(setup, summaries, chart_name))
    print(f"report, results and chart in {args.out}/", file=sys.stderr)
    if args.into:
        section = report.markdown(setup, summaries, _relative(args.out, args.into, chart_name))
        text = args.into.read_text() if args.into.exists() else ""
        args.into.write_text(report.replace_section(text, section))
    if args.json:
        print(report.to_json(setup, summaries, memory))
    else:
        print(report.markdown(setup, summaries, chart_name))
    if throttled:
        print(throttled, file=sys.stderr)
        return 1
    return 1 if any(s.errors for s in summaries) else 0


def _relative(out: Optional[Path], document: Path, name: str) -> str:
    if not out or not name:
        return ""
    return os.path.relpath(out.resolve() / name, document.resolve().parent)


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
