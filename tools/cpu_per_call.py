"""Where a benchmark's CPU goes, per call: the services, PostgreSQL and the
load generator (issue 29; docs/PERFORMANCE.md, "The sixth at 100+100").

Runs a C{marketplace-bench ... --json} command against a deployment that
is already up, reads once a second the CPU time (user + system, from
/proc) of the service's process tree (C{--service-pid}: twistd and its
workers), of PostgreSQL's (C{--postgres-pid}: the postmaster and its
backends) and of the bench itself, and prints, over the seconds the bench
was busiest (its measuring, not its sign-ups), the CPU microseconds each
spent per call and the cores all three kept busy:

    python tools/cpu_per_call.py --service-pid PID --postgres-pid PID -- \\
        marketplace-bench --seller ... --buyer ... --scenarios 100 --calls 500 --runs 1 --json

Run one scenario per command: the calls per second are the last
scenario's.  On a saturated machine the calls per second are the cores
divided by the total, so the split says which side a change must make
cheaper; and since the bench's own cost per call does not change with the
code measured, its figure is a yardstick of how fast the cores ran during
that run (a shared machine's vary by a sixth from minute to minute).
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

#: A second belongs to the busy stretch if the bench used at least this
#: share of its usual busy rate (the 80th percentile of its seconds).
BUSY_SHARE = 0.6
#: Seconds dropped at each end of the busy stretch (ramp up and down).
TRIM = 2

Sample = Tuple[float, Dict[str, float]]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time (s) of process C{pid} (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_of() -> Dict[int, List[int]]:
    """Every process's children, by parent (one reading of /proc)."""
    children: Dict[int, List[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(parent, []).append(int(name))
    return children


def descendants(root: int, children: Optional[Dict[int, List[int]]] = None) -> List[int]:
    """C{root} and every process below it (in C{children}, L{children_of}
    by default)."""
    if children is None:
        children = children_of()
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def rates(samples: Sequence[Sample]) -> List[Dict[str, float]]:
    """Cores used by each class in each interval between C{samples}
    (time, cumulative CPU seconds by class)."""
    out = []
    for (t0, before), (t1, after) in zip(samples, samples[1:]):
        out.append({k: (after.get(k, 0.0) - before.get(k, 0.0)) / (t1 - t0) for k in after})
    return out


def busy_stretch(intervals: Sequence[Dict[str, float]], key: str = "bench") -> List[Dict[str, float]]:
    """The intervals in which C{key} used at least BUSY_SHARE of its usual
    busy rate, without TRIM at each end."""
    if not intervals:
        return []
    ranked = sorted(i.get(key, 0.0) for i in intervals)
    usual = ranked[min(len(ranked) - 1, int(len(ranked) * 0.8))]
    busy = [i for i in intervals if usual > 0 and i.get(key, 0.0) >= BUSY_SHARE * usual]
    return busy[TRIM:len(busy) - TRIM] if len(busy) > 2 * TRIM else busy


def per_call(busy: Sequence[Dict[str, float]], calls_per_second: float) -> Dict[str, float]:
    """Mean CPU µs per call of each class over C{busy}, and C{cores}: the
    cores all of them kept busy."""
    keys = sorted({k for i in busy for k in i})
    mean = {k: sum(i.get(k, 0.0) for i in busy) / len(busy) for k in keys}
    out = {k: mean[k] * 1e6 / calls_per_second for k in keys}
    out["total"] = sum(out.values())
    out["cores"] = sum(mean.values())
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--service-pid", type=int, required=True)
    parser.add_argument("--postgres-pid", type=int, required=True)
    parser.add_argument("bench", nargs=argparse.REMAINDER, help="-- marketplace-bench ... --json")
    options = parser.parse_args(argv)
    command = [a for a in options.bench if a != "--"]
    if "--json" not in command:
        parser.error("the bench command needs --json (its calls per second are read from it)")
    roots = {"services": options.service_pid, "postgres": options.postgres_pid}
    samples: List[Sample] = []
    done = threading.Event()
    bench = subprocess.Popen(command, stdout=subprocess.PIPE)

    def sample() -> None:
        while not done.is_set():
            children = children_of()  # once for both trees
            now = {name: sum(cpu_seconds(p) for p in descendants(root, children))
                   for name, root in roots.items()}
            now["bench"] = cpu_seconds(bench.pid)
            samples.append((time.monotonic(), now))
            done.wait(1.0)

    sampler = threading.Thread(target=sample)
    sampler.start()
    out, _ = bench.communicate()
    done.set()
    sampler.join()
    if bench.returncode:
        sys.exit(f"the bench failed (exit {bench.returncode})")
    report = json.loads(out)
    calls_per_second = report["scenarios"][-1]["throughput"]["mean"]
    busy = busy_stretch(rates(samples))
    if not busy:
        sys.exit("the bench ran too briefly to measure: give it more --calls")
    split = per_call(busy, calls_per_second)
    print(f"calls/s {calls_per_second:.0f} over {len(busy)} s; CPU µs per call: "
          + ", ".join(f"{k} {split[k]:.0f}" for k in ("services", "postgres", "bench", "total"))
          + f"; cores busy {split['cores']:.2f}")


if __name__ == "__main__":
    main()
