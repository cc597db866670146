"""Timings of benchmark runs and the figures made of them.

Nothing here touches the network: a L{Recorder} collects the response
time of each call by role and API (and errors by code), a L{RunResult} is
one run of every client, and L{summarise} turns the runs of one scenario
into the figures of the report.
"""

import math
import statistics
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

Key = Tuple[str, str]  # (role, api)


class Recorder:
    """Response times (seconds) by (role, api), and errors by code."""

    def __init__(self) -> None:
        self.latencies: Dict[Key, array] = {}
        self.errors: Counter = Counter()

    def record(self, role: str, api: str, seconds: float) -> None:
        """One call answered with success after C{seconds}."""
        samples = self.latencies.get((role, api))
        if samples is None:
            samples = self.latencies[(role, api)] = array("d")
        samples.append(seconds)

    def error(self, role: str, api: str, code: str, seconds: float) -> None:
        """One call answered with the error C{code} after C{seconds}."""
        self.errors[(role, api, code)] += 1
        self.record(role, api, seconds)

    @property
    def calls(self) -> int:
        """How many calls were answered, errors included."""
        return sum(len(samples) for samples in self.latencies.values())

    def merge(self, other: "Recorder") -> None:
        """Add the timings of C{other} to these."""
        for key, samples in other.latencies.items():
            self.latencies.setdefault(key, array("d")).extend(samples)
        self.errors.update(other.errors)


@dataclass
class RunResult:
    """One run: when it started and ended (a monotonic clock shared by the
    processes of one machine), and what each call took."""

    started: float
    finished: float
    recorder: Recorder = field(default_factory=Recorder)
    #: CPU seconds the load generator used during the run.
    cpu: float = 0.0
    #: How many times the client library sent a call again (after a lost
    #: connection or an UNAVAILABLE answer); each call counts once in
    #: C{recorder} however often it was sent.
    retries: int = 0

    @property
    def calls(self) -> int:
        return self.recorder.calls

    @property
    def seconds(self) -> float:
        return self.finished - self.started

    @property
    def throughput(self) -> float:
        """Calls answered per second of the run."""
        return self.calls / self.seconds if self.seconds > 0 else 0.0


def merge_runs(parts: Iterable[RunResult]) -> RunResult:
    """One run from the shares of several processes that ran it together."""
    parts = list(parts)
    merged = RunResult(
        started=min(p.started for p in parts), finished=max(p.finished for p in parts)
    )
    for part in parts:
        merged.recorder.merge(part.recorder)
        merged.cpu += part.cpu
        merged.retries += part.retries
    return merged


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """The C{fraction} quantile of sorted values, interpolated linearly
    between the closest ranks (as numpy's default does)."""
    if not ordered:
        return math.nan
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    weight = position - low
    return ordered[low] * (1 - weight) + ordered[high] * weight


@dataclass(frozen=True)
class Latency:
    """Response times of a set of calls, in milliseconds."""

    count: int
    mean: float
    p50: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, seconds: Iterable[float]) -> "Latency":
        """The figures of response times given in seconds."""
        ordered = sorted(seconds)
        if not ordered:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan)
        ms = 1000.0
        return cls(
            count=len(ordered),
            mean=math.fsum(ordered) / len(ordered) * ms,
            p50=percentile(ordered, 0.50) * ms,
            p95=percentile(ordered, 0.95) * ms,
            p99=percentile(ordered, 0.99) * ms,
            max=ordered[-1] * ms,
        )


@dataclass(frozen=True)
class Spread:
    """How a figure varied from run to run."""

    mean: float
    stdev: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> "Spread":
        if not values:
            return cls(math.nan, math.nan, math.nan, math.nan)
        stdev = statistics.stdev(values) if len(values) > 1 else 0.0
        return cls(statistics.fmean(values), stdev, min(values), max(values))


@dataclass(frozen=True)
class ScenarioSummary:
    """The figures of one scenario: C{clients} sellers and as many buyers."""

    clients: int
    runs: int
    calls: int
    throughput: Spread
    overall: Latency
    per_api: Dict[Key, Latency]
    errors: Dict[str, int]
    errors_by_api: Dict[Tuple[str, str, str], int]
    #: CPU the load generator used per call, in microseconds.
    bench_cpu_per_call_us: float
    #: The load generator's CPU use as a share of one core over the runs.
    bench_cpu_share: float
    #: Calls the client library sent again, over the runs (see RunResult).
    retries: int = 0

    def to_json(self) -> dict:
        """The summary as plain JSON values."""
        return {
            "clients": self.clients,
            "runs": self.runs,
            "calls": self.calls,
            "throughput": vars_of(self.throughput),
            "latency_ms": vars_of(self.overall),
            "per_api": [
                {"role": role, "api": api, **vars_of(latency)}
                for (role, api), latency in sorted(self.per_api.items())
            ],
            "errors": dict(sorted(self.errors.items())),
            "errors_by_api": [
                {"role": role, "api": api, "code": code, "count": count}
                for (role, api, code), count in sorted(self.errors_by_api.items())
            ],
            "bench_cpu_per_call_us": _finite(self.bench_cpu_per_call_us),
            "bench_cpu_share": _finite(self.bench_cpu_share),
            "retries": self.retries,
        }


def _finite(value):
    """NaN as None: JSON has no NaN."""
    return None if isinstance(value, float) and math.isnan(value) else value


def vars_of(figures) -> dict:
    """The fields of a L{Latency} or L{Spread}, NaN as None."""
    return {name: _finite(value) for name, value in vars(figures).items()}


def summarise(clients: int, runs: List[RunResult]) -> ScenarioSummary:
    """The figures of a scenario from its runs (response times pooled)."""
    total = Recorder()
    for run in runs:
        total.merge(run.recorder)
    per_api = {key: Latency.of(samples) for key, samples in total.latencies.items()}
    everything = array("d")
    for samples in total.latencies.values():
        everything.extend(samples)
    errors: Counter = Counter()
    for (_, _, code), count in total.errors.items():
        errors[code] += count
    calls = total.calls
    cpu = sum(run.cpu for run in runs)
    wall = sum(run.seconds for run in runs)
    return ScenarioSummary(
        clients=clients,
        runs=len(runs),
        calls=calls,
        throughput=Spread.of([run.throughput for run in runs]),
        overall=Latency.of(everything),
        per_api=per_api,
        errors=dict(errors),
        errors_by_api=dict(total.errors),
        bench_cpu_per_call_us=cpu / calls * 1e6 if calls else math.nan,
        bench_cpu_share=cpu / wall if wall > 0 else math.nan,
        retries=sum(run.retries for run in runs),
    )


class LiveThroughput:
    """The report's throughput figure of the scenario being run, while it runs.

    The report gives for each scenario the mean, over its runs, of the calls
    answered in a run divided by the run's wall time.  This keeps that
    figure as runs end (the shares of several processes are merged as
    L{merge_runs} does), so that a progress bar can show the very number
    the table will show; before the scenario's first run has ended, the
    rate of that run so far.  Times are those of C{time.monotonic}.
    """

    def __init__(self, runs: int, shares: int = 1) -> None:
        #: Runs per scenario, and processes that each run a share of a run.
        self.runs = runs
        self.shares = shares
        #: The scenario being run (its sellers, as many as buyers), and
        #: the throughput of each of its runs that has ended.
        self.clients: Optional[int] = None
        self.ended: List[float] = []
        self._parts: List[Tuple[float, float, int]] = []
        self._started: Optional[Tuple[float, int]] = None

    def run_started(self, clients: int, at: float, done: int) -> None:
        """A share of a run of scenario C{clients} started C{at}, when
        C{done} calls had been answered in all."""
        if clients != self.clients:
            self.clients = clients
            self.ended = []
        if self._started is None:
            self._started = (at, done)

    def run_ended(self, clients: int, started: float, finished: float, calls: int) -> bool:
        """A share of a run ended after C{calls} calls; whether that was
        the last share, so that the run's throughput is in L{ended}."""
        self._parts.append((started, finished, calls))
        if len(self._parts) < self.shares:
            return False
        seconds = max(p[1] for p in self._parts) - min(p[0] for p in self._parts)
        answered = sum(p[2] for p in self._parts)
        self._parts = []
        self._started = None
        # As RunResult.throughput of the merged run.
        self.ended.append(answered / seconds if seconds > 0 else 0.0)
        return True

    @property
    def scenario_done(self) -> bool:
        """Whether every run of the scenario has ended."""
        return len(self.ended) >= self.runs

    @property
    def mean(self) -> float:
        """The mean throughput of the scenario's runs that have ended."""
        return statistics.fmean(self.ended) if self.ended else math.nan

    def rate(self, now: float, done: int) -> float:
        """Calls per second as the report will give them for this scenario
        (NaN before anything can be said)."""
        if self.ended:
            return self.mean
        if self._started is None or now <= self._started[0]:
            return math.nan
        at, done_then = self._started
        return (done - done_then) / (now - at)


__all__ = [
    "Recorder",
    "RunResult",
    "merge_runs",
    "percentile",
    "Latency",
    "Spread",
    "ScenarioSummary",
    "summarise",
    "LiveThroughput",
]
