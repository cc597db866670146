"""The benchmark's reports: a Markdown table, a PNG chart and JSON.

The functions take the L{ScenarioSummary}s of one benchmark and a few
facts about how it was run (L{Setup}); none of them touches the network.
The progress bar's text is made here too, so that it gives the rate as the
table does.
"""

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from marketplace.bench.stats import LiveThroughput, ScenarioSummary

BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"


@dataclass
class Setup:
    """How a benchmark was run, for the report's header."""

    workload: str
    description: str
    calls: int
    runs: int
    seller: str
    buyer: str
    procs: int = 1
    facts: Dict[str, str] = field(default_factory=dict)


def plural(count: int, singular: str, plural_form: Optional[str] = None) -> str:
    """C{count} and the noun that goes with it: 1 run, 10 runs, 1,000 calls."""
    word = singular if count == 1 else plural_form or singular + "s"
    return f"{count:,} {word}"


def scenario_name(clients: int) -> str:
    """A scenario in words: 1 seller + 1 buyer, 10 sellers + 10 buyers."""
    return f"{plural(clients, 'seller')} + {plural(clients, 'buyer')}"


def _ms(value: float) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.2f}"


def _rate(value: float) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:,.0f}"


def _errors(errors: Dict[str, int]) -> str:
    if not errors:
        return "0"
    return ", ".join(f"{code} {count}" for code, count in sorted(errors.items()))


def markdown(setup: Setup, summaries: Sequence[ScenarioSummary], chart: str = "") -> str:
    """The report as Markdown; C{chart} is the chart's path relative to it."""
    lines: List[str] = [
        f"Workload `{setup.workload}` ({setup.description}); each client makes"
        f" {plural(setup.calls, 'call')} per run, {plural(setup.runs, 'run')} per scenario;"
        f" load generator in {plural(setup.procs, 'process', 'processes')}.",
        "",
    ]
    for name, value in setup.facts.items():
        lines.append(f"- {name}: {value}")
    if setup.facts:
        lines.append("")
    lines += [
        "| scenario | throughput (calls/s) | run-to-run stdev | min – max"
        " | mean (ms) | p50 (ms) | p95 (ms) | p99 (ms) | p99/mean | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for s in summaries:
        t, o = s.throughput, s.overall
        ratio = o.p99 / o.mean if o.mean and not math.isnan(o.mean) else math.nan
        lines.append(
            f"| {scenario_name(s.clients)} | {_rate(t.mean)} | {_rate(t.stdev)}"
            f" | {_rate(t.min)} – {_rate(t.max)} | {_ms(o.mean)} | {_ms(o.p50)}"
            f" | {_ms(o.p95)} | {_ms(o.p99)} | {_ms(ratio)} | {_errors(s.errors)} |"
        )
    lines += [
        "",
        "Response time per API and role (milliseconds, all runs pooled):",
        "",
        "| scenario | role | api | calls | mean | p50 | p95 | p99 | max |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in summaries:
        for (role, api), lat in sorted(s.per_api.items()):
            lines.append(
                f"| {s.clients}+{s.clients} | {role} | {api} | {lat.count:,} | {_ms(lat.mean)}"
                f" | {_ms(lat.p50)} | {_ms(lat.p95)} | {_ms(lat.p99)} | {_ms(lat.max)} |"
            )
    lines += [
        "",
        "Load generator: CPU per call and share of one core, by scenario: "
        + "; ".join(
            f"{s.clients}+{s.clients}: {s.bench_cpu_per_call_us:.0f} µs,"
            f" {s.bench_cpu_share * 100:.0f} %"
            for s in summaries
        )
        + ".",
    ]
    if any(s.retries for s in summaries):
        lines += [
            "",
            "Calls the client library sent again after a lost connection or an"
            " UNAVAILABLE answer (each call counts once above, its time from the"
            " first attempt to the answer): "
            + "; ".join(f"{s.clients}+{s.clients}: {s.retries:,}" for s in summaries)
            + ".",
        ]
    if any(s.errors_by_api for s in summaries):
        lines += ["", "Errors by API:", ""]
        for s in summaries:
            for (role, api, code), count in sorted(s.errors_by_api.items()):
                lines.append(f"- {s.clients}+{s.clients} {role} {api}: {code} × {count}")
    if chart:
        lines += ["", f"![throughput and response time per scenario]({chart})"]
    return "\n".join(lines) + "\n"


def to_json(
    setup: Setup, summaries: Sequence[ScenarioSummary], memory: Optional[list] = None
) -> str:
    """The report as JSON, for programs."""
    return json.dumps(
        {
            "workload": setup.workload,
            "calls_per_client": setup.calls,
            "runs": setup.runs,
            "seller": setup.seller,
            "buyer": setup.buyer,
            "procs": setup.procs,
            "facts": setup.facts,
            "scenarios": [s.to_json() for s in summaries],
            "memory": memory or [],
        },
        indent=2,
    )


def progress_text(live: LiveThroughput, now: float, done: int) -> Tuple[str, str]:
    """The progress bar's description (scenario and run) and its rate: the
    figure the table will give for the scenario, as far as it is known."""
    if live.clients is None:
        return "setting up", ""
    scenario = f"{live.clients}+{live.clients}"
    if live.scenario_done:
        description = f"{scenario} done"
    else:
        description = f"{scenario} run {len(live.ended) + 1}/{live.runs}"
    rate = live.rate(now, done)
    return description, "" if math.isnan(rate) else f"{_rate(rate)} calls/s"


def scenario_done_text(live: LiveThroughput) -> str:
    """The line printed when a scenario's runs are over: its throughput as
    the table gives it."""
    return (
        f"{scenario_name(live.clients)}: {_rate(live.mean)} calls/s,"
        f" mean of {plural(len(live.ended), 'run')}"
    )


def _short_ms(value: float) -> str:
    """Milliseconds with two or three significant digits, for a chart."""
    if value is None or math.isnan(value):
        return ""
    if value < 10:
        return f"{value:.2f}" if value < 1 else f"{value:.1f}"
    return f"{value:,.0f}"


def figure(summaries: Sequence[ScenarioSummary], setup: Optional[Setup] = None,
           title: str = ""):
    """The chart as a matplotlib Figure: throughput (with its run-to-run
    range) and response times (log scale) per scenario, each bar labelled
    with its value, and how the figures were made along the bottom."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, NullFormatter

    labels = [f"{s.clients}+{s.clients}" for s in summaries]
    positions = list(range(len(summaries)))
    drawing = Figure(figsize=(11, 4.8))
    left, right = drawing.subplots(1, 2)
    means = [s.throughput.mean for s in summaries]
    below = [s.throughput.mean - s.throughput.min for s in summaries]
    above = [s.throughput.max - s.throughput.mean for s in summaries]
    left.bar(positions, means, yerr=[below, above], capsize=6, color="#4c72b0")
    for position, summary in zip(positions, summaries):
        # The mean, above the whisker of the best run.
        left.annotate(_rate(summary.throughput.mean), (position, summary.throughput.max),
                      xytext=(0, 3), textcoords="offset points", ha="center", va="bottom",
                      fontsize=9)
    left.margins(y=0.12)
    left.set_xticks(positions, labels)
    left.set_xlabel("sellers + buyers")
    left.set_ylabel("calls per second")
    left.set_title("Throughput (whiskers: min – max of the runs)")
    width = 0.2
    for offset, (name, colour) in enumerate(
        [("mean", "#4c72b0"), ("p50", "#55a868"), ("p95", "#dd8452"), ("p99", "#c44e52")]
    ):
        values = [getattr(s.overall, name) for s in summaries]
        bars = right.bar(
            [p + (offset - 1.5) * width for p in positions], values, width,
            label=name, color=colour,
        )
        right.bar_label(bars, labels=[_short_ms(v) for v in values], fontsize=7, padding=1)
    # Response times span orders of magnitude (under a millisecond alone,
    # tens with a hundred clients): on a linear scale the small ones vanish.
    right.set_yscale("log")
    right.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    right.yaxis.set_minor_formatter(NullFormatter())
    right.margins(y=0.15)
    right.set_xticks(positions, labels)
    right.set_xlabel("sellers + buyers")
    right.set_ylabel("milliseconds (log scale)")
    right.set_title("Response time")
    right.legend(fontsize=8)
    heading = title or (f"workload {setup.workload}" if setup else "")
    if heading:
        drawing.suptitle(heading)
    if setup is not None:
        facts = [
            f"{plural(setup.runs, 'run')} per scenario, {plural(setup.calls, 'call')}"
            " per client per run"
        ]
        facts += [setup.facts[k] for k in ("machine", "date") if k in setup.facts]
        drawing.text(0.5, 0.01, " · ".join(facts), ha="center", va="bottom", fontsize=8,
                     color="#444444")
    drawing.tight_layout(rect=(0, 0.05 if setup is not None else 0, 1, 1))
    return drawing


def chart(summaries: Sequence[ScenarioSummary], path: Path, title: str = "",
          setup: Optional[Setup] = None) -> None:
    """The chart of L{figure} as a PNG file."""
    figure(summaries, setup, title).savefig(path, dpi=100)


def replace_section(document: str, section: str) -> str:
    """C{document} with the text between the bench markers replaced by
    C{section} (the markers are added at the end if missing)."""
    block = f"{BEGIN}\n{section.rstrip()}\n{END}"
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if pattern.search(document):
        return pattern.sub(lambda _: block, document, count=1)
    return document.rstrip() + "\n\n" + block + "\n"


__all__ = [
    "Setup",
    "plural",
    "scenario_name",
    "markdown",
    "to_json",
    "progress_text",
    "scenario_done_text",
    "figure",
    "chart",
    "replace_section",
]
