"""marketplace-top: a live view of a deployment's metrics in the terminal.

It polls the C{/metrics} (and C{/health/ready}) endpoints of every daemon
and worker it is given, adds them up, and shows for the last interval the
calls per second, p50 and p99 response times and errors per service and
API, with the connections, pools, purchases and each endpoint's state.
The screen is redrawn every second with curses; C{--plain} prints a text
frame per interval instead, C{--once} prints one frame and exits.

    marketplace-top 127.0.0.1:9390-9393        # four workers' endpoints
    marketplace-top --once http://10.0.0.5:9100 10.0.0.6:9100

The figures are computed here (L{Sample}, L{frame}) from two scrapes,
without any network, so that they can be tested on recorded scrapes.
"""

import argparse
import json
import re
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from prometheus_client.parser import text_string_to_metric_families

from marketplace.frame.dispatch import OK

_RANGE = re.compile(r"^(?P<host>[^:/]+|\[[^\]]+\]):(?P<first>\d+)(?:-(?P<last>\d+))?$")


def endpoint_urls(spec: str) -> List[str]:
    """The base URLs of C{spec}: C{HOST:PORT}, C{HOST:FIRST-LAST} (a range
    of ports, one per worker) or an C{http://} URL."""
    if spec.startswith(("http://", "https://")):
        return [spec.rstrip("/").removesuffix("/metrics")]
    found = _RANGE.match(spec)
    if found is None:
        raise ValueError(f"not HOST:PORT, HOST:FIRST-LAST or an http:// URL: {spec!r}")
    first = int(found["first"])
    last = int(found["last"] or first)
    if last < first or last - first > 256:
        raise ValueError(f"a port range goes up, by at most 256: {spec!r}")
    return [f"http://{found['host']}:{port}" for port in range(first, last + 1)]


@dataclass
class Sample:
    """What one or more scrapes say, added up over the endpoints."""

    taken: float = 0.0
    #: (service, api, code) -> answers so far
    calls: Dict[Tuple[str, str, str], float] = field(default_factory=lambda: defaultdict(float))
    #: (service, api) -> {upper bound: cumulative count}
    buckets: Dict[Tuple[str, str], Dict[float, float]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(float))
    )
    #: gauges and counters without service/api labels: (name, label) -> value
    other: Dict[Tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))

    def add_text(self, text: str) -> None:
        """Add one scrape's text (the Prometheus exposition format)."""
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = s.labels
                if s.name == "marketplace_calls_total":
                    self.calls[(labels["service"], labels["api"], labels["code"])] += s.value
                elif s.name == "marketplace_response_seconds_bucket":
                    key = (labels["service"], labels["api"])
                    self.buckets[key][float(labels["le"])] += s.value
                elif s.name.startswith("marketplace_") and "_response_" not in s.name:
                    label = next(iter(labels.values()), "")
                    self.other[(s.name, label)] += s.value

    def minus(self, before: "Sample") -> "Sample":
        """What the counters of this endpoint counted since C{before} (a
        counter that went down was reset, by a restart: it counts anew),
        with the gauges as they are now."""
        delta = Sample(taken=self.taken)
        for key, value in self.calls.items():
            delta.calls[key] = _delta(value, before.calls.get(key, 0.0))
        for key, counts in self.buckets.items():
            old = before.buckets.get(key, {})
            for bound, count in counts.items():
                delta.buckets[key][bound] = _delta(count, old.get(bound, 0.0))
        for key, value in self.other.items():
            if key[0].endswith("_total"):
                value = _delta(value, before.other.get(key, 0.0))
            delta.other[key] = value
        return delta

    def add(self, other: "Sample") -> None:
        """Add another endpoint's figures to these."""
        for key, value in other.calls.items():
            self.calls[key] += value
        for key, counts in other.buckets.items():
            for bound, count in counts.items():
                self.buckets[key][bound] += count
        for key, value in other.other.items():
            self.other[key] += value


def changes(before: Dict[str, Sample], now: Dict[str, Sample], taken: float) -> Sample:
    """The deployment's figures between two polls of its endpoints (by
    URL), the second at C{taken}: each endpoint's counts since its own last
    sample, added up.  An endpoint that was down at the last poll adds only
    its gauges."""
    total = Sample(taken=taken)
    for url, sample in now.items():
        total.add(sample.minus(before.get(url, sample)))
    return total


def quantile(q: float, buckets: Dict[float, float]) -> Optional[float]:
    """The C{q} quantile of a histogram's cumulative C{buckets} (upper
    bound -> count), interpolated within its bucket as Prometheus's
    histogram_quantile does; None without observations."""
    bounds = sorted(buckets)
    if not bounds:
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def _delta(now: float, before: float) -> float:
    # A counter that went down was reset (a worker restarted): count anew.
    return now - before if now >= before else now


@dataclass
class Row:
    """One service's API over an interval."""

    service: str
    api: str
    rate: float
    p50: Optional[float]
    p99: Optional[float]
    error_rate: float
    errors: Dict[str, float]


def rows(delta: Sample, seconds: float) -> List[Row]:
    """Per service and API, what happened in L{changes} over C{seconds}."""
    seconds = max(seconds, 1e-9)
    counts: Dict[Tuple[str, str], Dict[str, float]] = defaultdict(dict)
    for (service, api, code), value in delta.calls.items():
        counts[(service, api)][code] = value
    result = []
    for (service, api), by_code in sorted(counts.items()):
        total = sum(by_code.values())
        if total <= 0:
            continue
        buckets = delta.buckets.get((service, api), {})
        errors = {c: n / seconds for c, n in by_code.items() if c != OK and n > 0}
        result.append(
            Row(
                service,
                api,
                total / seconds,
                quantile(0.5, buckets),
                quantile(0.99, buckets),
                sum(errors.values()),
                errors,
            )
        )
    return result


@dataclass
class EndpointState:
    """How one endpoint answered: C{up} (metrics scraped), its readiness
    report, or why it could not be reached."""

    url: str
    up: bool
    ready: Optional[bool] = None
    report: Optional[dict] = None
    error: str = ""

    def describe(self) -> str:
        if not self.up:
            return f"DOWN ({self.error})"
        if self.ready:
            return "ready"
        if self.report is None:
            return "NOT READY"
        missing = [
            f"{name} {state}" for name, state in self.report.get("databases", {}).items()
            if state != "ok"
        ] + [
            f"{name} not listening"
            for name, on in self.report.get("listening", {}).items() if not on
        ]
        return "NOT READY: " + (", ".join(missing) or self.report.get("error", "?"))


def _ms(seconds: Optional[float]) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.2f}"


def frame(delta: Sample, seconds: float, states: Sequence[EndpointState]) -> List[str]:
    """The lines of one screen for L{changes} over C{seconds}: the table
    and the summaries."""
    seconds = max(seconds, 1e-9)

    def _rate(name: str, label: str = "") -> float:
        return delta.other.get((name, label), 0.0) / seconds

    up = sum(1 for s in states if s.up)
    ready = sum(1 for s in states if s.ready)
    lines = [
        f"marketplace-top  {time.strftime('%H:%M:%S', time.localtime(delta.taken))}"
        f"  {len(states)} endpoints: {up} up, {ready} ready  (last {seconds:.1f} s)",
        "",
        f"{'SERVICE':<9} {'API':<22} {'CALLS/S':>9} {'P50 ms':>8} {'P99 ms':>8}"
        f" {'ERR/S':>8}  ERRORS",
    ]
    table = rows(delta, seconds)
    for r in table:
        errors = ", ".join(f"{c} {n:.1f}" for c, n in sorted(r.errors.items(), key=lambda e: -e[1]))
        lines.append(
            f"{r.service:<9} {r.api[:22]:<22} {r.rate:>9.1f} {_ms(r.p50):>8} {_ms(r.p99):>8}"
            f" {r.error_rate:>8.1f}  {errors}"
        )
    if not table:
        lines.append("(no calls in the last interval)")
    lines.append(
        f"{'total':<32} {sum(r.rate for r in table):>9.1f} {'':>8} {'':>8}"
        f" {sum(r.error_rate for r in table):>8.1f}"
    )
    lines.append("")
    other = delta.other
    services = sorted({label for (name, label) in other if name == "marketplace_connections_open"})
    lines.append(
        "connections open: "
        + (", ".join(
            f"{s} {other[('marketplace_connections_open', s)]:.0f}"
            f" ({other.get(('marketplace_requests_in_flight', s), 0):.0f} in flight)"
            for s in services) or "-")
        + f"; refused {_rate('marketplace_connections_refused_total'):.1f}/s"
    )
    databases = sorted({label for (name, label) in other if name == "marketplace_db_pool_size"})
    pools = []
    for db in databases:
        waits = _rate("marketplace_db_pool_waits_total", db)
        waited = _rate("marketplace_db_pool_wait_seconds_total", db)
        pools.append(
            f"{db} {other.get(('marketplace_db_pool_busy', db), 0):.0f}"
            f"/{other[('marketplace_db_pool_size', db)]:.0f} busy,"
            f" {other.get(('marketplace_db_pool_dead', db), 0):.0f} dead,"
            f" {waits:.1f} waits/s ({waited * 1000:.1f} ms/s),"
            f" {_rate('marketplace_db_reconnects_total', db):.1f} reconnects/s"
        )
    lines.append("pools: " + ("; ".join(pools) or "-"))
    lines.append(
        "purchases/s: "
        + ", ".join(
            f"{o} {_rate('marketplace_purchases_total', o):.1f}"
            for o in ("completed", "declined", "unavailable", "swept")
        )
        + "; authorisations/s: "
        + ", ".join(
            f"{o} {_rate('marketplace_payment_authorisations_total', o):.1f}"
            for o in ("approved", "declined", "voided", "error")
        )
    )
    throttled = sum(
        _rate(name, label) for (name, label) in other
        if name == "marketplace_login_throttled_total"
    )
    unavailable = sum(
        _rate(name, label) for (name, label) in other
        if name == "marketplace_database_unavailable_answers_total"
    )
    lines.append(
        f"logins throttled/s: {throttled:.1f}; UNAVAILABLE (database)/s: {unavailable:.1f}"
    )
    lines.append("")
    for state in states:
        lines.append(f"{state.url:<32} {state.describe()}")
    return lines


def _fetch(url: str, timeout: float) -> Tuple[Optional[str], EndpointState]:
    """The metrics text of one endpoint (None if down) and its state."""
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=timeout) as answer:
            text = answer.read().decode("utf-8")
    except (OSError, urllib.error.URLError) as e:
        return None, EndpointState(url, False, error=str(getattr(e, "reason", e)))
    state = EndpointState(url, True)
    try:
        with urllib.request.urlopen(url + "/health/ready", timeout=timeout) as answer:
            state.ready, state.report = True, json.load(answer)
    except urllib.error.HTTPError as e:
        state.ready = False
        try:
            state.report = json.load(e)
        except ValueError:
            pass
    except (OSError, ValueError):
        state.ready = False
    return text, state


def poll(urls: Sequence[str], timeout: float, pool: ThreadPoolExecutor):
    """A L{Sample} of each endpoint that answered (by URL), and the states
    of all."""
    taken = time.time()
    samples = {}
    states = []
    for url, (text, state) in zip(urls, pool.map(lambda u: _fetch(u, timeout), urls)):
        if text is not None:
            samples[url] = sample = Sample(taken=taken)
            sample.add_text(text)
        states.append(state)
    return taken, samples, states


def _arguments(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="marketplace-top",
        description="Live calls/s, p50/p99 and errors per service and API of a"
        " marketplace deployment, from its --metrics endpoints.",
    )
    parser.add_argument(
        "endpoints", nargs="*", default=["127.0.0.1:9180"],
        help="HOST:PORT, HOST:FIRST-LAST (one port per worker) or http://… URLs"
        " of the daemons' --metrics (default 127.0.0.1:9180)",
    )
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
    parser.add_argument("--once", action="store_true",
                        help="print one frame (two polls an interval apart) and exit")
    parser.add_argument("--plain", action="store_true",
                        help="print a text frame every interval instead of the live screen")
    parser.add_argument("--count", type=int, default=0,
                        help="with --plain, stop after this many frames (0: never)")
    args = parser.parse_args(argv)
    try:
        args.urls = [url for spec in args.endpoints for url in endpoint_urls(spec)]
    except ValueError as e:
        parser.error(str(e))
    if args.interval <= 0:
        parser.error("--interval must be above 0")
    return args


#: Seconds an endpoint has to answer a poll: a busy daemon on a loaded
#: machine may take a while, and is not down for it.
POLL_TIMEOUT = 3.0


#: What a line cut short to fit the screen ends in.
ELLIPSIS = "…"


def fit(lines: Sequence[str], width: int) -> List[str]:
    """C{lines} made to fit C{width} columns: a longer line goes on over
    indented lines, broken between words (a table row's errors, a summary's
    parts), and only a word longer than a whole line is cut, with an
    ellipsis, so that nothing is cut without a sign."""
    fitted: List[str] = []
    for line in lines:
        if len(line) <= width:
            fitted.append(line)
            continue
        pieces = textwrap.wrap(
            line,
            width,
            subsequent_indent="    ",
            break_long_words=False,
            break_on_hyphens=False,
        )
        fitted.extend(
            piece if len(piece) <= width else piece[: width - 1] + ELLIPSIS
            for piece in pieces
        )
    return fitted


def frames(urls: Sequence[str], interval: float):
    """An endless sequence of frames, one per interval."""
    timeout = max(interval, POLL_TIMEOUT)
    with ThreadPoolExecutor(max_workers=min(32, len(urls))) as pool:
        then, before, _ = poll(urls, timeout, pool)
        while True:
            time.sleep(max(0.0, then + interval - time.time()))
            now, samples, states = poll(urls, timeout, pool)
            yield frame(changes(before, samples, now), now - then, states)
            then, before = now, samples


def _live(stdscr, urls: Sequence[str], interval: float) -> None:
    import curses

    curses.curs_set(0)
    stdscr.nodelay(True)
    for lines in frames(urls, interval):
        stdscr.erase()
        height, width = stdscr.getmaxyx()
        # (The last column stays empty: curses cannot write the corner.)
        lines = fit(lines, width - 1)
        if len(lines) > height - 1:
            lines = lines[: height - 2] + [ELLIPSIS]
        for y, line in enumerate(lines):
            stdscr.addnstr(y, 0, line, width - 1)
        stdscr.addnstr(height - 1, 0, "q: quit", width - 1)
        stdscr.refresh()
        if stdscr.getch() in (ord("q"), ord("Q")):
            return


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The console command."""
    args = _arguments(argv)
    try:
        if args.once or args.plain or not sys.stdout.isatty():
            shown = 0
            for lines in frames(args.urls, args.interval):
                print("\n".join(lines), flush=True)
                shown += 1
                if args.once or (args.count and shown >= args.count):
                    break
                print(flush=True)
        else:
            import curses

            curses.wrapper(_live, args.urls, args.interval)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
