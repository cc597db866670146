"""The marketplace-cluster command: a replicated marketplace on this machine.

    marketplace-cluster up [--dir D]        bring it up and return
    marketplace-cluster run [--dir D]       bring it up, wait for Ctrl-C, take it down
    marketplace-cluster status [--dir D]    what each host does
    marketplace-cluster kill HOST [--dir D] SIGKILL every process of a host
    marketplace-cluster cut HOST [--dir D]  take a host's link down (--restore: up)
    marketplace-cluster down [--dir D]      stop everything, remove the network
    marketplace-cluster evaluate --failure CASE   the failure evaluation
    marketplace-cluster bench               marketplace-bench on a cluster and on
                                            make run's deployment
"""

import argparse
import signal
import sys
import threading
from pathlib import Path

from marketplace.cluster import hosts, launch
from marketplace.cluster.topology import SETTLE_AFTER

DEFAULT_FOLDER = Path("var/cluster")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="marketplace-cluster",
        description="A replicated marketplace on this machine: three PostgreSQL nodes "
        "under Patroni and etcd, two buyer, seller and payments daemons, each host "
        "a network namespace of its own. Needs root.",
    )
    parser.add_argument("--dir", type=Path, default=DEFAULT_FOLDER,
                        help=f"the cluster's files (default {DEFAULT_FOLDER})")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="bring the cluster up and return")
    commands.add_parser("run", help="bring it up, wait for Ctrl-C or SIGTERM, take it down")
    commands.add_parser("status", help="what each host does now")
    commands.add_parser("down", help="stop everything and remove the network")
    kill = commands.add_parser("kill", help="SIGKILL every process of a host")
    kill.add_argument("host")
    cut = commands.add_parser("cut", help="take a host's network link down")
    cut.add_argument("host")
    cut.add_argument("--restore", action="store_true", help="bring the link back up")
    evaluation = commands.add_parser(
        "evaluate", help="the failure evaluation: a fresh cluster per case and scenario")
    evaluation.add_argument("--failure", default="all",
                            choices=("all", "none", "frontend", "replica", "primary"),
                            help="which failure (default all four)")
    evaluation.add_argument("--scenarios", default="1,10,100",
                            help="sellers (= buyers) per run, comma-separated (default 1,10,100)")
    # 6 + 35: the primary's failure (about 22 s) is over before the run is.
    evaluation.add_argument("--seconds", type=float, default=35.0,
                            help="length of each run (default 35)")
    evaluation.add_argument("--failure-at", type=float, default=6.0,
                            help="seconds into each run of the failure (default 6)")
    evaluation.add_argument("--single-port", type=int, default=9380,
                            help="the no-failure runs also on make run's deployment (every"
                            " service on this machine) on this port and the two after it;"
                            " 0: not (default 9380)")
    evaluation.add_argument("--settle-after", type=float, default=SETTLE_AFTER,
                            help="the buyer daemons' --settle-after: seconds after which a"
                            " purchase left pending by a dead daemon is settled"
                            f" (default {SETTLE_AFTER:g})")
    evaluation.add_argument("--out", default="docs/reliability",
                            help="folder for results.json, report.md and the chart")
    evaluation.add_argument("--into", default=None,
                            help="Markdown file whose evaluation section is replaced")
    evaluation.add_argument("--scaling", default=None,
                            help="Markdown file whose measured section (docs/SCALING.md's"
                            " figures) is replaced")
    bench = commands.add_parser(
        "bench", help="marketplace-bench's workload on a fresh cluster and on make run's"
        " deployment, back to back")
    bench.add_argument("--scenarios", default="1,10,100",
                       help="sellers (= buyers) per scenario (default 1,10,100)")
    bench.add_argument("--calls", type=int, default=200,
                       help="calls per client per run (default 200)")
    bench.add_argument("--runs", type=int, default=1, help="runs per scenario (default 1)")
    bench.add_argument("--workload", default="seed", help="the workload (default seed)")
    bench.add_argument("--single-port", type=int, default=9380,
                       help="make run's deployment on this port and the two after it"
                       " (default 9380)")
    bench.add_argument("--out", default="docs/reliability",
                       help="folder for bench.json and bench.md")
    bench.add_argument("--into", default=None,
                       help="Markdown file whose bench section is replaced")
    return parser


def _run(folder: Path) -> None:
    launch.up(folder)
    print("Ctrl-C or SIGTERM takes the cluster down.", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        print("taking the cluster down", flush=True)
        launch.down(folder)


def main(argv=None) -> int:
    """Entry point of marketplace-cluster; its exit status."""
    arguments = _parser().parse_args(argv)
    try:
        if arguments.command == "evaluate":
            from twisted.internet import task

            from marketplace.cluster import report

            task.react(report.main, [arguments])
        elif arguments.command == "bench":
            from twisted.internet import task

            from marketplace.cluster import benchmark

            task.react(benchmark.main, [arguments])
        elif arguments.command == "up":
            launch.up(arguments.dir)
        elif arguments.command == "run":
            _run(arguments.dir)
        elif arguments.command == "down":
            launch.down(arguments.dir)
        elif arguments.command == "status":
            for name, state in launch.status(arguments.dir).items():
                print(f"{name:<9} {state}")
        else:
            plan = launch.load_plan(arguments.dir)
            host = plan.host(arguments.host)
            if arguments.command == "kill":
                print(f"killed {len(hosts.kill(plan, host))} processes on {host.name}")
            else:
                hosts.cut(plan, host, up=arguments.restore)
    except (launch.ClusterError, KeyError) as e:
        print(f"marketplace-cluster: {e}", file=sys.stderr)
        return 1
    return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
