"""marketplace-bench's own workload on a cluster and on C{make run}'s
deployment, back to back (C{marketplace-cluster bench}): the benchmark's
throughput figures for both, measured the same way in the same session.

The benchmark's clients reach the cluster through a L{Spread} endpoint per
service: each new connection goes to the next frontend in turn (and to the
other when that one does not answer), so the load is shared by both.
"""

import json
import os
import tempfile
from pathlib import Path
from typing import List, Sequence

from twisted.internet import defer, threads
from twisted.internet.interfaces import IStreamClientEndpoint
from zope.interface import implementer

from marketplace.bench import runner, stats
from marketplace.bench.workloads import WORKLOADS
from marketplace.clientlib.failover import FailoverEndpoint
from marketplace.cluster import evaluate, launch, report


@implementer(IStreamClientEndpoint)
class Spread:
    """Connections to several frontends of one service, each new one
    starting with the next frontend in turn."""

    def __init__(self, endpoints: Sequence, reactor) -> None:
        self.endpoints = list(endpoints)
        self.reactor = reactor
        self.turn = 0

    def __repr__(self) -> str:
        return " | ".join(str(e) for e in self.endpoints)

    def connect(self, protocol_factory) -> defer.Deferred:
        """Connect, starting with the frontend whose turn it is."""
        start, self.turn = self.turn, self.turn + 1
        return FailoverEndpoint(self.endpoints, self.reactor, start).connect(protocol_factory)


async def measure(reactor, seller, buyer, scenarios: Sequence[int], calls: int, runs: int,
                  workload: str) -> List[stats.ScenarioSummary]:
    """The benchmark's scenarios against one deployment."""
    plan = runner.Plan(seller=seller, buyer=buyer, scenarios=tuple(scenarios), calls=calls,
                       runs=runs, workload=workload).with_tag()
    results = await runner.drive(plan, reactor)
    return [stats.summarise(n, results[n]) for n in plan.scenarios]


def _timed_out(endpoints: Sequence[str]) -> List[str]:
    return [f"{e}:timeout={evaluate.CONNECT_TIMEOUT}" for e in endpoints]


async def on_cluster(reactor, folder: Path, **how) -> List[stats.ScenarioSummary]:
    """The benchmark on a fresh cluster (taken down and deleted after)."""
    where = Path(tempfile.mkdtemp(prefix="bench-", dir=folder))
    # load_testing: every client of the benchmark signs up from this one
    # machine's address, past the default per-address sign-up limit.
    plan = await threads.deferToThread(launch.up, where, load_testing=True)
    try:
        return await measure(
            reactor,
            Spread(_timed_out([plan.endpoint(h) for h in plan.by_role("seller")]), reactor),
            Spread(_timed_out([plan.endpoint(h) for h in plan.by_role("buyer")]), reactor),
            **how,
        )
    finally:
        await threads.deferToThread(report.discard, where)


async def on_single(reactor, port: int, **how) -> List[stats.ScenarioSummary]:
    """The benchmark on make run's deployment (every service on this
    machine, one process per core and service) on C{port} and the two
    after it."""
    from marketplace.bench.deploy import LocalMarketplace

    single = LocalMarketplace(port, os.cpu_count() or 1)
    await threads.deferToThread(single.start)
    try:
        return await measure(reactor, single.seller, single.buyer, **how)
    finally:
        await threads.deferToThread(single.stop)


def markdown(cluster: Sequence[stats.ScenarioSummary], single: Sequence[stats.ScenarioSummary],
             workload: str, calls: int, runs: int) -> str:
    """Throughput of both, scenario by scenario (mean of the runs)."""
    lines = [f"`marketplace-bench`'s workload `{workload}` ({WORKLOADS[workload].description});"
             f" {calls} calls per client per run, {runs} run(s) per scenario:", "",
             "| clients | cluster calls/s | make run calls/s | cluster / make run"
             " | cluster errors | make run errors |",
             "| --- | --- | --- | --- | --- | --- |"]
    for mine, theirs in zip(cluster, single):
        a, b = mine.throughput.mean, theirs.throughput.mean
        lines.append(f"| {mine.clients}+{mine.clients} | {a:,.0f} | {b:,.0f} | {a / b:.2f} "
                     f"| {sum(mine.errors.values())} | {sum(theirs.errors.values())} |")
    return "\n".join(lines) + "\n"


def main(reactor, arguments) -> defer.Deferred:
    """marketplace-cluster bench."""
    how = dict(scenarios=[int(n) for n in arguments.scenarios.split(",")],
               calls=arguments.calls, runs=arguments.runs, workload=arguments.workload)
    folder = Path(arguments.dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)

    async def go():
        cluster = await on_cluster(reactor, folder, **how)
        single = await on_single(reactor, arguments.single_port, **how)
        text = markdown(cluster, single, arguments.workload, arguments.calls, arguments.runs)
        out = Path(arguments.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(
            {"cluster": [s.to_json() for s in cluster], "make run": [s.to_json() for s in single],
             **how}, indent=1))
        (out / "bench.md").write_text(text)
        if arguments.into:
            report.replace_section(Path(arguments.into), "bench", text)
        print(text)

    return defer.Deferred.fromCoroutine(go())


__all__ = ["Spread", "measure", "markdown", "main"]
