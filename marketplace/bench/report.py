"""The benchmark's reports: a Markdown table, a PNG chart and JSON.

The functions take the L{ScenarioSummary}s of one benchmark and a few
facts about how it was run (L{Setup}); none of them touches the network.
"""

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from marketplace.bench.stats import ScenarioSummary

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
        f" {setup.calls} calls per run, {setup.runs} runs per scenario;"
        f" load generator in {setup.procs} process{'es' if setup.procs != 1 else ''}.",
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
            f"| {s.clients} sellers + {s.clients} buyers | {_rate(t.mean)} | {_rate(t.stdev)}"
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


def chart(summaries: Sequence[ScenarioSummary], path: Path, title: str = "") -> None:
    """A PNG of throughput (with its run-to-run range) and response times
    per scenario."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    labels = [f"{s.clients}+{s.clients}" for s in summaries]
    positions = range(len(summaries))
    figure, (left, right) = pyplot.subplots(1, 2, figsize=(10, 4))
    means = [s.throughput.mean for s in summaries]
    below = [s.throughput.mean - s.throughput.min for s in summaries]
    above = [s.throughput.max - s.throughput.mean for s in summaries]
    left.bar(positions, means, yerr=[below, above], capsize=6, color="#4c72b0")
    left.set_xticks(list(positions), labels)
    left.set_xlabel("sellers + buyers")
    left.set_ylabel("calls per second")
    left.set_title("Throughput (bars: min – max of the runs)")
    width = 0.2
    for offset, (name, colour) in enumerate(
        [("mean", "#4c72b0"), ("p50", "#55a868"), ("p95", "#dd8452"), ("p99", "#c44e52")]
    ):
        right.bar(
            [p + (offset - 1.5) * width for p in positions],
            [getattr(s.overall, name) for s in summaries],
            width,
            label=name,
            color=colour,
        )
    right.set_xticks(list(positions), labels)
    right.set_xlabel("sellers + buyers")
    right.set_ylabel("milliseconds")
    right.set_title("Response time")
    right.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def replace_section(document: str, section: str) -> str:
    """C{document} with the text between the bench markers replaced by
    C{section} (the markers are added at the end if missing)."""
    block = f"{BEGIN}\n{section.rstrip()}\n{END}"
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if pattern.search(document):
        return pattern.sub(lambda _: block, document, count=1)
    return document.rstrip() + "\n\n" + block + "\n"


__all__ = ["Setup", "markdown", "to_json", "chart", "replace_section"]
