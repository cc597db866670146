"""The chart of search time against catalog size in docs/PERFORMANCE.md:
median and p99 of each API of search-shapes runs (marketplace-bench
--workload search-shapes --json) made on catalogs of growing size.

    python -m tools.sizechart OUT.png SIZE=results.json ...

(for example C{1000=1k.json 10000=10k.json}); it also prints the figures
as a Markdown table.
"""

import json
import sys
from typing import Dict, List, Optional


def _load(arguments: List[str]) -> Dict[int, Dict[str, dict]]:
    by_size: Dict[int, Dict[str, dict]] = {}
    for argument in arguments:
        size, path = argument.split("=", 1)
        with open(path) as f:
            results = json.load(f)
        apis = by_size.setdefault(int(size), {})
        for scenario in results["scenarios"]:
            for api in scenario["per_api"]:
                if api["role"] == "buyer":
                    apis[api["api"]] = api
    return by_size


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out, by_size = argv[0], _load(argv[1:])
    sizes = sorted(by_size)
    apis = sorted({api for per in by_size.values() for api in per})
    print("| api | " + " | ".join(f"{size:,} items: p50 / p99 (ms)" for size in sizes) + " |")
    print("| --- | " + " | ".join("---:" for _ in sizes) + " |")
    for api in apis:
        cells = [
            f"{by_size[s][api]['p50']:.2f} / {by_size[s][api]['p99']:.2f}"
            if api in by_size[s] else "" for s in sizes
        ]
        print(f"| {api} | " + " | ".join(cells) + " |")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    for axis, statistic in zip(axes, ("p50", "p99")):
        for api in apis:
            points = [(s, by_size[s][api][statistic]) for s in sizes if api in by_size[s]]
            axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=api)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("items in the catalog (20 categories)")
        axis.set_title(f"{statistic} response time, one client")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("milliseconds")
    axes[1].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    return 0


if __name__ == "__main__":
    sys.exit(main())
