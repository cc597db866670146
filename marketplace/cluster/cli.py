"""The marketplace-cluster command: a replicated marketplace on this machine.

    marketplace-cluster up [--dir D]        bring it up (or back, with its data) and return
    marketplace-cluster run [--dir D]       bring it up, wait for Ctrl-C, take it down
    marketplace-cluster status [--dir D]    what each host does
    marketplace-cluster kill HOST [--dir D] SIGKILL every process of a host
    marketplace-cluster cut HOST [--dir D]  take a host's link down (--restore: up)
    marketplace-cluster start HOST          a killed host back in service
    marketplace-cluster replace HOST        a database node cloned again from the primary
    marketplace-cluster switchover [--to HOST]   a planned change of primary (Patroni)
    marketplace-cluster roll                every frontend restarted, one at a time
    marketplace-cluster down [--dir D]      stop everything, remove the network (the
                                            data and settings stay for the next up)
    marketplace-cluster backup [--dir D]    a full backup now (Barman, from the primary)
    marketplace-cluster backups [--dir D]   the backups, the oldest point a restore reaches
    marketplace-cluster --dir NEW restore --from OLD [--to TIME]
                                            a new cluster with OLD's data as at TIME
    marketplace-cluster render --hosts FILE --out DIR   the files of real hosts
    marketplace-cluster evaluate --failure CASE   the failure evaluation
    marketplace-cluster bench               marketplace-bench on a cluster and on
                                            make run's deployment
"""

import argparse
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from marketplace.cluster import certs, hosts, launch, operate, render, settings
from marketplace.cluster.topology import SETTLE_AFTER
from marketplace.postgres import rolescli

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
    commands.add_parser("down", help="stop everything and remove the network; the data"
                        " and settings stay for the next up")
    start = commands.add_parser(
        "start", help="start a killed host again and wait until it serves (a database"
        " node streaming as a replica, a frontend ready)")
    start.add_argument("host")
    replace = commands.add_parser(
        "replace", help="clone a database node again from the primary (Patroni's"
        " reinitialize) and wait until it streams")
    replace.add_argument("host")
    switch = commands.add_parser(
        "switchover", help="hand the primary's role to a replica through Patroni")
    switch.add_argument("--to", default=None,
                        help="the new primary (default: Patroni's pick, the synchronous"
                        " standby)")
    commands.add_parser("roll", help="restart every frontend, one at a time")
    commands.add_parser("backup", help="a full backup now, from the current primary (Barman;"
                        " the WAL is archived continuously)")
    commands.add_parser("backups", help="the backups, and the oldest point a restore reaches")
    restoring = commands.add_parser(
        "restore", help="bring up a new cluster (in --dir) whose data is another's as it was"
        " at a time")
    restoring.add_argument("--from", dest="source", type=Path, required=True,
                           help="the folder of the cluster whose backups are restored")
    restoring.add_argument("--to", type=_time, default=None, metavar="TIME",
                           help="ISO time, e.g. '2026-12-06 14:03:07+00' (default: the latest"
                           " point archived)")
    rendering = commands.add_parser(
        "render", help="every file a deployment on real hosts needs (Patroni and etcd"
        " configuration, the daemons' settings, systemd units)")
    rendering.add_argument("--hosts", type=Path, required=True,
                           help="the hosts file: NAME ADDRESS ROLES per line (see"
                           " docs/RELIABILITY.md)")
    rendering.add_argument("--out", type=Path, required=True,
                           help="folder for the files, one folder per host; its settings"
                           " (secrets) are made once and reused")
    defaults = render.Layout()
    for option, help_text in (
            ("config", "folder of the configuration files on the hosts"),
            ("data", "folder of the data on the hosts"),
            ("bin", "where patroni and twistd are on the hosts"),
            ("etcd_bin", "where etcd is on the hosts"),
            ("postgres_bin", "where PostgreSQL's programs are on the hosts"),
            ("archive_command", "the primary's archive_command, e.g. 'barman-wal-archive"
             " BARMAN_HOST marketplace %%p' (barman-cli); none: no WAL archiving")):
        rendering.add_argument(f"--{option.replace('_', '-')}", dest=option,
                               default=getattr(defaults, option),
                               help=f"{help_text} (default {getattr(defaults, option)})")
    kill = commands.add_parser("kill", help="SIGKILL every process of a host")
    kill.add_argument("host")
    cut = commands.add_parser("cut", help="take a host's network link down")
    cut.add_argument("host")
    cut.add_argument("--restore", action="store_true", help="bring the link back up")
    evaluation = commands.add_parser(
        "evaluate", help="the failure evaluation: a fresh cluster per case and scenario")
    evaluation.add_argument("--failure", default="all", type=_cases,
                            help="which failures or planned changes, comma-separated: none,"
                            " frontend, replica, primary, switchover, roll, browse (the"
                            " primary killed under browsing buyers), reads (browsing buyers"
                            " alone), restart (the whole-cluster restart check, after the"
                            " runs); default all")
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


def _time(text: str):
    from marketplace.postgres.backup import parse_time

    try:
        return parse_time(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO time: {text!r}") from None


def _backups(arguments) -> None:
    from marketplace.cluster import backups

    if arguments.command == "restore":
        started = time.monotonic()
        backups.restore(arguments.dir, arguments.source, arguments.to)
        point = arguments.to.isoformat() if arguments.to else "the latest point archived"
        print(f"{arguments.dir}: a new cluster with the data of {arguments.source} as at"
              f" {point}, up in {time.monotonic() - started:.1f} s")
        return
    plan = launch.load_plan(arguments.dir)
    if arguments.command == "backup":
        started = time.monotonic()
        print(f"backup {backups.take(plan)} taken in {time.monotonic() - started:.1f} s")
        return
    found = backups.listing(plan)
    for entry in found:
        print(f"{entry['id']}  began {entry['begin']:%Y-%m-%d %H:%M:%S%z}"
              f"  ended {entry['end']:%Y-%m-%d %H:%M:%S%z}  {entry['size']} with its WAL")
    print(backups.describe_restore_point(found))


def _cases(text: str) -> tuple:
    from marketplace.cluster.report import CASES, RESTART

    if text == "all":
        return CASES + (RESTART,)
    cases = tuple(word.strip() for word in text.split(",") if word.strip())
    unknown = [c for c in cases if c not in CASES + (RESTART,)]
    if unknown or not cases:
        raise argparse.ArgumentTypeError(f"unknown case {unknown[0] if unknown else text!r}")
    return cases


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


def _render(arguments) -> None:
    machines, network = render.parse_hosts(arguments.hosts.read_text())
    arguments.out.mkdir(parents=True, exist_ok=True)
    kept = settings.load_or_create(arguments.out, network=network)
    layout = render.Layout(**{option: getattr(arguments, option) for option in (
        "config", "data", "bin", "etcd_bin", "postgres_bin", "archive_command")})
    # The service roles' passwords, made once beside the settings; create
    # the roles with them: marketplace-db-roles --passfile OUT/roles.pgpass.
    passwords = rolescli.passwords_in(arguments.out / launch.ROLE_PASSWORDS)
    written, unchanged = render.write(
        render.render(kept, machines, layout, passwords=passwords,
                      authority=certs.load_or_create(arguments.out)), arguments.out)
    for name in written:
        print(f"wrote {arguments.out / name}")
    for name in unchanged:
        print(f"kept  {arguments.out / name} (already there)")


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
        elif arguments.command == "render":
            _render(arguments)
        elif arguments.command in ("backup", "backups", "restore"):
            _backups(arguments)
        elif arguments.command in ("switchover", "roll"):
            plan = launch.load_plan(arguments.dir)
            if arguments.command == "roll":
                took = operate.roll(plan, say=print)
                print(f"every frontend restarted; longest {max(took):.1f} s")
            else:
                to = plan.host(arguments.to) if arguments.to else None
                started = time.monotonic()
                leader = operate.switchover(plan, to)
                print(f"primary now on {leader.name} ({time.monotonic() - started:.1f} s)")
        elif arguments.command == "status":
            for name, state in launch.status(arguments.dir).items():
                print(f"{name:<9} {state}")
        else:
            plan = launch.load_plan(arguments.dir)
            host = plan.host(arguments.host)
            if arguments.command == "kill":
                print(f"killed {len(hosts.kill(plan, host))} processes on {host.name}")
            elif arguments.command == "start":
                took = operate.start_host(plan, host)
                print(f"{host.name} back in service in {took:.1f} s")
            elif arguments.command == "replace":
                took = operate.replace_host(plan, host)
                print(f"{host.name} cloned from the primary and streaming in {took:.1f} s")
            else:
                hosts.cut(plan, host, up=arguments.restore)
    except (launch.ClusterError, render.HostsFileError, KeyError, OSError,
            subprocess.CalledProcessError) as e:
        print(f"marketplace-cluster: {e}", file=sys.stderr)
        return 1
    return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
