"""The four-case failure evaluation and its report (docs/RELIABILITY.md).

For each case (no failure; a buyer and a seller frontend killed; a database
replica killed; the primary killed) and each scenario (N sellers + N
buyers), a fresh cluster is loaded for a fixed time with the failure
injected part-way; the report gives throughput, response time per API,
errors by code, the outage, and the invariants of L{evaluate}.
"""

import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import psycopg2
from twisted.internet import defer, task, threads

from marketplace.cluster import evaluate, hosts, launch, observe, operate
from marketplace.cluster.topology import SETTLE_AFTER, Plan

CASES = ("none", "frontend", "replica", "primary", "switchover", "roll", "browse", "reads")
#: Runs with browsing buyers (evaluate.Load's browsers, as many as the
#: scenario's clients): "browse", the primary's host killed under them and
#: the usual load ("browse during primary failure": its longest wait is the
#: browsers' reads'); "reads", no failure and the browsers alone (read
#: throughput, against make run's deployment).
BROWSING = ("browse", "reads")
#: The stale-cart invariant of the browsing runs.
STALE_CARTS = "carts shown without an acknowledged addition"
#: Planned changes, not failures: the cluster stays whole, and the wait
#: that counts is the longest across the whole change.
PLANNED = ("switchover", "roll")
#: The whole-cluster restart check (not a run under load: see L{run_restart}).
RESTART = "restart"
#: The case name of the no-failure runs on C{make run}'s deployment.
SINGLE = "make run"
#: The read-only runs ("reads") on C{make run}'s deployment.
SINGLE_READS = "make run reads"
BUCKET = 0.5  # seconds per point of the throughput-over-time chart
WRITES = ("AddItemToCart", "MakePurchase", "ChangeItemPrice")
DECLINED = " PAYMENT_DECLINED"


def victims(plan: Plan, case: str) -> List:
    """The hosts that fail in C{case}."""
    if case == "frontend":
        return [plan.by_role("buyer")[0], plan.by_role("seller")[0]]
    if case == "replica":
        # The synchronous standby: of the replicas, the one whose loss
        # the primary's commits wait on.
        standby = launch.synchronous_standby(plan)
        return [standby] if standby else []
    if case in ("primary", "browse"):
        leader = launch.primary(plan)
        return [leader] if leader else []
    return []


def percentile(values: List[float], fraction: float) -> float:
    """The C{fraction} quantile of C{values} (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def summarise(load: evaluate.Load, failed_at: Optional[float], invariants: Dict) -> Dict:
    """The figures of one run."""
    calls = load.calls
    ok = [c for c in calls if c.code == "OK" and c.started >= load.started]
    duration = load.ended - load.started
    apis = {}
    for api in sorted({c.api for c in calls}):
        times = [1000 * (c.ended - c.started) for c in ok if c.api == api]
        apis[api] = {
            "calls": len(times),
            "mean_ms": statistics.fmean(times) if times else 0.0,
            "p99_ms": percentile(times, 0.99),
            "max_ms": max(times, default=0.0),
        }
    errors: Dict[str, int] = {}
    for c in calls:
        if c.code != "OK" and c.started >= load.started:
            errors[f"{c.api} {c.code}"] = errors.get(f"{c.api} {c.code}", 0) + 1
    outage = {}
    if failed_at is not None:
        after = [c.ended for c in ok if c.started >= failed_at]
        outage["first_success_s"] = (min(after) - failed_at) if after else None
        writes = [c.ended for c in ok if c.started >= failed_at and c.api in WRITES]
        outage["first_write_s"] = (min(writes) - failed_at) if writes else None
        longest = 0.0
        for client in {c.client for c in calls}:
            mine = sorted(c.ended for c in ok if c.client == client)
            previous = load.started
            for ended in mine:
                if ended >= failed_at:
                    longest = max(longest, ended - max(previous, failed_at))
                    break
                previous = ended
        outage["longest_wait_s"] = longest
    timeline = [0] * (int(duration / BUCKET) + 1)
    for c in ok:
        timeline[min(len(timeline) - 1, int((c.ended - load.started) / BUCKET))] += 1
    return {
        "clients": load.clients,
        "seconds": duration,
        "throughput": len(ok) / duration,
        "apis": apis,
        "errors": errors,
        "outage": outage,
        "failure_at_s": (failed_at - load.started) if failed_at else None,
        "timeline": [n / BUCKET for n in timeline],
        "invariants": invariants,
    }


def settle_wait(settle_after: float) -> float:
    """Seconds after a run by which the buyer daemons' sweep (every half
    C{settle_after}, at least every 0.5 s) has settled what it left pending,
    with room for the payments service and the databases to come back (it is
    waited only while something does not hold yet)."""
    return 2 * settle_after + 20


async def settled_invariants(reactor, load: evaluate.Load, product_dsn: str,
                             payments_dsn: str, limit: float) -> Dict[str, int]:
    """The invariants of L{evaluate.check_invariants} once they all hold,
    or as they are when C{limit} seconds have passed (the time the buyer
    daemons' sweep has to settle what a failure left pending)."""
    deadline = time.monotonic() + limit
    while True:
        carts = await load.carts_now()
        found = await threads.deferToThread(
            evaluate.check_invariants, load.ledger, carts, product_dsn, payments_dsn)
        if not any(found.values()) or time.monotonic() >= deadline:
            return found
        await task.deferLater(reactor, 1.0, lambda: None)


async def run_case(reactor, plan: Plan, population: evaluate.Population, case: str,
                   clients: int, seconds: float, failure_at: float) -> Dict:
    """One run of one case on the cluster of C{plan}; the hosts that were
    killed are started again afterwards."""
    load = _load(reactor, population, case, clients)
    await load.set_up()
    targets = await threads.deferToThread(victims, plan, case)
    quiet = case in ("none", "reads")

    def inject():
        if case == "switchover":
            operate.switchover(plan)
        elif case == "roll":
            operate.roll(plan)
        for host in targets:
            hosts.kill(plan, host)

    watching = {"on": quiet}
    observed = defer.Deferred.fromCoroutine(
        _observe(reactor, plan.database_dsn("postgres"), watching))
    try:
        try:
            failed_at = await load.run(seconds, None if quiet else failure_at, inject)
            failed_at_end = failed_at
        finally:
            watching["on"] = False
        samples = await observed

        def restart():
            for host in targets:
                launch.restart_host(plan, host)

        restarted = threads.deferToThread(restart)
        invariants = await settled_invariants(
            reactor, load, plan.database_dsn("marketplace"), plan.database_dsn("payments"),
            settle_wait(plan.settle_after))
        await restarted
    finally:
        await load.close()
    if case in PLANNED:
        # From the start of the change, over all of it.
        failed_at = load.failure_started
    result = summarise(load, failed_at, invariants)
    _browsing(result, load, case, failed_at)
    if case in PLANNED:
        result["outage"]["longest_wait_s"] = load.longest_gap(failed_at)
        result["change_s"] = failed_at_end - failed_at
    result["failed_hosts"] = [h.name for h in targets]
    result["case"] = case
    if samples:
        result["observed"] = observe.summarise(
            samples, {plan.gateway: "sampler", **{h.address: h.name for h in plan.hosts}})
    return result


def _load(reactor, population: evaluate.Population, case: str, clients: int) -> evaluate.Load:
    """The load of a run of C{case} at C{clients} (see L{BROWSING})."""
    if case == "reads":
        return evaluate.Load(reactor, population, 0, browsers=clients)
    return evaluate.Load(reactor, population, clients,
                         browsers=clients if case in BROWSING else 0)


def _browsing(result: Dict, load: evaluate.Load, case: str, failed_at: Optional[float]) -> None:
    """A browsing run's own figures in C{result}: its scenario, its reads per
    second, the browsers' longest wait and the stale-cart invariant."""
    if not load.browsers:
        return
    result["clients"] = load.browsers
    reads = [c for c in load.calls if c.client.startswith("r") and c.code == "OK"]
    result["reads_per_s"] = len(reads) / (load.ended - load.started)
    if failed_at is not None:
        result["outage"]["longest_wait_s"] = load.browse_gap(failed_at)
    result["invariants"][STALE_CARTS] = load.stale_carts


async def run_restart(reactor, plan: Plan, folder: Path, population: evaluate.Population,
                      clients: int, seconds: float) -> List[Dict]:
    """The whole-cluster restart check: a short run, then the cluster taken
    down (C{down}) and brought up again, then every process killed at once
    (a power cut) and brought up again; each time, how long C{up} took and
    whether every write the clients were told of is there."""
    load = evaluate.Load(reactor, population, clients)
    await load.set_up()
    try:
        await load.run(seconds, None, lambda: None)
        await settled_invariants(reactor, load, plan.database_dsn("marketplace"),
                                 plan.database_dsn("payments"), settle_wait(plan.settle_after))
    finally:
        await load.close()

    def kill_everything():
        for host in plan.hosts:
            hosts.kill(plan, host)

    results = []
    for how, stop in (("down, then up", lambda: launch.down(folder)),
                      ("every process killed, then up", kill_everything)):
        await threads.deferToThread(stop)
        started = time.monotonic()
        await threads.deferToThread(launch.up, folder)
        took = time.monotonic() - started
        # The same buyers on new connections, their carts as they were.
        load.sellers = []
        load.buyers = [population.client("buyer", i) for i in range(clients)]
        try:
            carts = await load.carts_now()
        finally:
            await load.close()
        found = await threads.deferToThread(
            evaluate.check_invariants, load.ledger, carts, plan.database_dsn("marketplace"),
            plan.database_dsn("payments"))
        results.append({"case": RESTART, "how": how, "clients": clients, "up_s": took,
                        "purchases": len(load.ledger.purchases),
                        "cart_units": sum(line[0] for cart in load.ledger.carts.values()
                                          for line in cart.values()),
                        "invariants": found})
    return results


async def _observe(reactor, dsn: str, watching: Dict) -> List[Dict]:
    """Samples of L{observe.sample} while C{watching["on"]}."""
    samples = []
    while watching["on"]:
        try:
            samples.append(await threads.deferToThread(observe.sample, dsn))
        except psycopg2.Error:
            pass
        await task.deferLater(reactor, observe.EVERY, lambda: None)
    return samples


async def run_single(reactor, single, population: evaluate.Population, clients: int,
                     seconds: float, settle_after: float, reads: bool = False) -> Dict:
    """The no-failure run on C{make run}'s deployment (L{LocalMarketplace});
    with C{reads}, of browsing buyers alone (the "reads" case)."""
    from marketplace.bench.catalogcli import embedded_dsn

    load = _load(reactor, population, "reads" if reads else "none", clients)
    await load.set_up()
    try:
        await load.run(seconds, None, lambda: None)
        data = single.folder / "data"
        invariants = await settled_invariants(
            reactor, load, embedded_dsn(data, "marketplace"), embedded_dsn(data, "payments"),
            settle_wait(settle_after))
    finally:
        await load.close()
    result = summarise(load, None, invariants)
    result["failed_hosts"] = []
    result["case"] = SINGLE_READS if reads else SINGLE
    _browsing(result, load, "reads" if reads else "none", None)
    return result


def discard(folder: Path) -> None:
    """Take the cluster in C{folder} down and delete its files."""
    launch.down(folder)
    shutil.rmtree(folder, ignore_errors=True)


def _report(result: Dict, say) -> None:
    say(f"  {result['throughput']:.0f} calls/s, errors {result['errors']}, "
        f"outage {result['outage']}, invariants {result['invariants']}")


async def evaluate_all(reactor, cases, scenarios, seconds, failure_at, folder: Path,
                       say=print, single_port: Optional[int] = None,
                       settle_after: float = SETTLE_AFTER) -> List[Dict]:
    """Every case at every scenario on one cluster whose failed hosts are
    started again after each run (a fresh cluster where they do not come
    back); with C{single_port}, the no-failure runs on C{make run}'s
    deployment as well, on that port and the two after it."""
    results = []
    plan = population = where = None
    started = time.monotonic()
    try:
        for clients in scenarios:
            for case in cases:
                if plan is not None:
                    try:
                        took = await threads.deferToThread(launch.wait_healthy, plan)
                        say(f"cluster healthy again after {took:.1f} s")
                    except launch.ClusterError as e:
                        say(f"{e}: taking the cluster down for a fresh one")
                        await threads.deferToThread(discard, where)
                        plan = None
                if plan is None:
                    say("bringing a cluster up")
                    where = Path(tempfile.mkdtemp(prefix="eval-", dir=folder))
                    # load_testing: the evaluation's clients all sign up
                    # from this machine, past the per-address limits.
                    plan = await threads.deferToThread(
                        launch.up, where, settle_after=settle_after, load_testing=True)
                    population = evaluate.Population(
                        reactor, [plan.endpoint(h) for h in plan.by_role("seller")],
                        [plan.endpoint(h) for h in plan.by_role("buyer")])
                if case == RESTART:
                    continue  # after every run (below)
                say(f"[{time.monotonic() - started:.0f} s] "
                    f"{case if case in PLANNED else case + ' failure'}, "
                    f"{clients}+{clients} clients")
                result = await run_case(reactor, plan, population, case, clients,
                                        seconds, failure_at)
                _report(result, say)
                results.append(result)
        if RESTART in cases and plan is not None:
            await threads.deferToThread(launch.wait_healthy, plan)
            say(f"[{time.monotonic() - started:.0f} s] whole-cluster restart")
            restarts = await run_restart(reactor, plan, where, population,
                                         min(scenarios), min(seconds, 10.0))
            for r in restarts:
                say(f"  {r['how']}: up in {r['up_s']:.1f} s, invariants {r['invariants']}")
            results += restarts
    finally:
        if plan is not None:
            await threads.deferToThread(discard, where)
    single_cases = [case for case in ("none", "reads") if case in cases]
    if single_port is not None and single_cases:
        results += await evaluate_single(reactor, scenarios, seconds, single_port,
                                         settle_after, say, single_cases)
    say(f"evaluation done in {time.monotonic() - started:.0f} s")
    return results


async def evaluate_single(reactor, scenarios, seconds, port: int,
                          settle_after: float = SETTLE_AFTER, say=print,
                          cases=("none",)) -> List[Dict]:
    """The no-failure load on C{make run}'s deployment: every service on
    this machine, one embedded PostgreSQL, as many worker processes per
    service as cores, measured the same way (same clients, workload and
    length of run)."""
    from marketplace.bench.deploy import LocalMarketplace

    single = LocalMarketplace(port, os.cpu_count() or 1,
                              extra=[f"--settle-after={settle_after:g}"])
    say(f"make run's deployment: {' '.join(single.command())}")
    await threads.deferToThread(single.start)
    results = []
    try:
        population = evaluate.Population(reactor, [single.seller], [single.buyer])
        for clients in scenarios:
            for case in cases:
                say(f"make run, {case}, {clients}+{clients} clients")
                result = await run_single(reactor, single, population, clients, seconds,
                                          settle_after, reads=case == "reads")
                _report(result, say)
                results.append(result)
    finally:
        await threads.deferToThread(single.stop)
    return results


def _ordered(results: List[Dict]) -> List[Dict]:
    """By case (the no-failure runs on make run's deployment last), then clients."""
    order = CASES + (SINGLE, SINGLE_READS)
    results = [r for r in results if r["case"] != RESTART]
    return sorted(results, key=lambda r: (order.index(r["case"]), r["clients"]))


def _against_make_run(results: List[Dict], case: str, single_case: str, figure: str,
                      intro: str, header: str) -> List[str]:
    """A table of C{figure} of the C{case} runs against the C{single_case}
    runs (make run's deployment) with the same clients (empty without runs
    of both)."""
    cluster = {r["clients"]: r for r in results if r["case"] == case}
    single = {r["clients"]: r for r in results if r["case"] == single_case}
    both = sorted(set(cluster) & set(single))
    if not both:
        return []
    lines = ["", intro, "", header, "| --- | --- | --- | --- |"]
    for n in both:
        mine, theirs = cluster[n][figure], single[n][figure]
        label = f"{n}+{n}" if figure == "throughput" else f"{n}"
        lines.append(f"| {label} | {mine:,.0f} | {theirs:,.0f} | {mine / theirs:.2f} |")
    return lines


def comparison(results: List[Dict]) -> List[str]:
    """The table of no-failure throughput: the cluster against make run's
    deployment (empty without runs of both)."""
    return _against_make_run(
        results, "none", SINGLE, "throughput",
        "No failure, the cluster against `make run`'s deployment (the same clients,"
        " workload and length of run):",
        "| clients | cluster calls/s | make run calls/s | cluster / make run |")


def read_comparison(results: List[Dict]) -> List[str]:
    """The table of read throughput (the "reads" runs: browsing buyers
    alone), the cluster, whose standbys serve catalog reads, against make
    run's deployment (empty without runs of both)."""
    return _against_make_run(
        results, "reads", SINGLE_READS, "reads_per_s",
        "Reads alone (browsing buyers: DisplayCart, SearchItemsForSale, GetItem,"
        " and an addition to the cart every 0.25 s each), the cluster, whose standbys"
        " answer the catalog reads, against `make run`'s deployment:",
        "| browsing buyers | cluster reads/s | make run reads/s | cluster / make run |")


def _clients(result: Dict) -> str:
    """A run's clients in few words: sellers and buyers, or browsing buyers."""
    n = result["clients"]
    return f"{n} browsing" if result["case"] == "reads" else f"{n}+{n}"


def scaling_markdown(results: List[Dict]) -> str:
    """docs/SCALING.md's measured figures: no-failure throughput against
    make run's deployment, how far behind the replicas were, and the
    server connections each frontend held."""
    lines = (comparison(results) + read_comparison(results))[1:] or [
        "(no no-failure runs on both deployments)"]
    observed = [r for r in _ordered(results) if r.get("observed")]
    if observed:
        lines += ["", "Replicas and connections during the cluster's runs"
                  " without a failure (\"none\": sellers and buyers; \"reads\": browsing"
                  " buyers alone), sampled on the primary every second (`pg_stat_replication`,"
                  " `pg_stat_activity`):", "",
                  "| run | clients | replica | replay lag mean | replay lag max | most bytes behind |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for r in observed:
            for kind, f in sorted(r["observed"]["replicas"].items()):
                lines.append(
                    f"| {r['case']} | {_clients(r)} | {kind} | {f['mean_lag_ms']:.1f} ms "
                    f"| {f['max_lag_ms']:.1f} ms | {f['max_behind_bytes']:,} |")
        lines += ["", "| run | clients | server connections held (most at once) |",
                  "| --- | --- | --- |"]
        for r in observed:
            held = r["observed"]["connections"]
            text = ", ".join(f"{name} {n}" for name, n in sorted(held.items()))
            lines.append(f"| {r['case']} | {_clients(r)} | {text} |")
    return "\n".join(lines) + "\n"


def markdown(results: List[Dict]) -> str:
    """The report's tables."""
    restarts = [r for r in results if r["case"] == RESTART]
    results = _ordered([r for r in results if r["case"] != RESTART])
    lines = [
        "| case | clients | calls/s | errors | declined cards | first success after failure"
        " | first write | longest wait | lost or doubled |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        outage = r["outage"]
        first = outage.get("first_success_s")
        # A declined card is the payments service's answer, not a failure.
        declined = sum(n for k, n in r["errors"].items() if k.endswith(DECLINED))
        errors = sum(r["errors"].values()) - declined
        broken = sum(r["invariants"].values())
        if not outage:
            first_text = write_text = wait_text = "—"
        else:
            first_text = "never" if first is None else f"{first:.2f} s"
            write = outage.get("first_write_s")
            write_text = "never" if write is None else f"{write:.2f} s"
            wait_text = f"{outage['longest_wait_s']:.2f} s"
        lines.append(
            f"| {r['case']} | {r['clients']}+{r['clients']} | {r['throughput']:,.0f} | {errors} "
            f"| {declined} | {first_text} | {write_text} | {wait_text} | {broken} |"
        )
    lines += comparison(results) + read_comparison(results)
    if restarts:
        lines += ["", "The whole cluster restarted after a run (on the same folder: its"
                  " settings, files and data), then the run's acknowledged writes checked:", "",
                  "| how | up again after | acknowledged purchases | units left in carts"
                  " | lost or doubled |", "| --- | --- | --- | --- | --- |"]
        for r in restarts:
            lines.append(f"| {r['how']} | {r['up_s']:.1f} s | {r['purchases']:,} "
                         f"| {r['cart_units']:,} | {sum(r['invariants'].values())} |")
    lines += ["", "Response time per API (ms: mean / p99 / max):", "",
              "| case | clients | api | calls | mean | p99 | max |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        for api, figures in r["apis"].items():
            lines.append(
                f"| {r['case']} | {r['clients']}+{r['clients']} | {api} | {figures['calls']:,} "
                f"| {figures['mean_ms']:.1f} | {figures['p99_ms']:.1f} | {figures['max_ms']:.1f} |"
            )
    lines += ["", "Errors by API and code (declined cards included):", ""]
    for r in results:
        if r["errors"]:
            detail = ", ".join(f"{k} × {v}" for k, v in sorted(r["errors"].items()))
            lines.append(f"- {r['case']}, {r['clients']}+{r['clients']}: {detail}")
    lines += ["", "Invariants checked after each run (counts of violations):", ""]
    for r in results:
        lines.append(f"- {r['case']}, {r['clients']}+{r['clients']} "
                     f"(failed: {', '.join(r['failed_hosts']) or 'nothing'}): "
                     + ", ".join(f"{k} {v}" for k, v in r["invariants"].items()))
    return "\n".join(lines) + "\n"


def chart(results: List[Dict], path: Path) -> None:
    """Throughput over time around each failure, one panel per case."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    cases = [c for c in CASES if any(r["case"] == c for r in results)]
    if not cases:
        return  # (only the restart check)
    figure, axes = pyplot.subplots(len(cases), 1, figsize=(9, 2.6 * len(cases)), squeeze=False)
    for axis, case in zip(axes[:, 0], cases):
        # The none panel shows make run's deployment too, dashed.
        shown = (case, SINGLE) if case == "none" else (case,)
        for r in (r for r in _ordered(results) if r["case"] in shown):
            xs = [i * BUCKET for i in range(len(r["timeline"]))]
            single = r["case"] == SINGLE
            axis.plot(xs, r["timeline"], linestyle="--" if single else "-",
                      label=f"{r['clients']}+{r['clients']}" + (" make run" if single else ""))
            if r["failure_at_s"] is not None:
                axis.axvline(r["failure_at_s"], color="red", linestyle="--")
        axis.set_title(f"failure: {case}")
        axis.set_ylabel("calls/s")
        axis.legend(loc="upper right", fontsize="small")
    axes[-1, 0].set_xlabel("seconds since the start of the run (red: the failure)")
    figure.tight_layout()
    figure.savefig(path, dpi=90)


def replace_section(path: Path, name: str, text: str) -> None:
    """Replace what is between C{<!-- NAME begins -->} and C{<!-- NAME ends -->}."""
    begin, end = f"<!-- {name} begins -->", f"<!-- {name} ends -->"
    head, rest = path.read_text().split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{text}{end}{tail}")


def write(results: List[Dict], out: Path, into: Optional[Path],
          scaling: Optional[Path] = None) -> None:
    """results.json, the chart and (with C{into}) the report's section;
    with C{scaling}, the measured section of docs/SCALING.md."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    chart(results, out / "throughput.png")
    table = markdown(results)
    (out / "report.md").write_text(table)
    if into is not None:
        replace_section(into, "evaluation", table)
    if scaling is not None:
        replace_section(scaling, "measured", scaling_markdown(results))


def main(reactor, arguments) -> defer.Deferred:
    """marketplace-cluster evaluate."""
    cases = arguments.failure
    scenarios = [int(n) for n in arguments.scenarios.split(",")]
    folder = Path(arguments.dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)

    async def go():
        results = await evaluate_all(reactor, cases, scenarios, arguments.seconds,
                                     arguments.failure_at, folder,
                                     single_port=arguments.single_port or None,
                                     settle_after=arguments.settle_after)
        write(results, Path(arguments.out), Path(arguments.into) if arguments.into else None,
              Path(arguments.scaling) if arguments.scaling else None)

    return defer.Deferred.fromCoroutine(go())
