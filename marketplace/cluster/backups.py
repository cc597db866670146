"""Backups with point-in-time recovery of a cluster, by Barman, as for make
run's embedded database (marketplace/postgres/backup.py, whose
configuration and commands this reuses).

Barman runs on the operator's machine (here: this machine, as root), its
home in the cluster's folder (C{FOLDER/backups}).  Every database host's
archive_command (Patroni's dynamic configuration, so whichever node is the
primary archives, across failovers and switchovers) copies each WAL
segment into Barman's incoming folder, at least once a minute; Barman
takes full backups from the current primary with pg_basebackup (as the
replication role) and files the WAL.

L{restore} brings up a new cluster whose data is another's as it was at a
time: Barman restores the backup and the WAL it needs into a staging
folder, and the new cluster's Patroni bootstraps from it with a custom
bootstrap method (it moves the staged folder into its data folder, then
replays the WAL up to the time and promotes); the other nodes are cloned
from it as usual.
"""

import datetime
import os
import pwd
import shlex
import shutil
from pathlib import Path
from typing import List, Optional

import yaml

from marketplace.cluster import certs, launch
from marketplace.cluster.topology import POSTGRES_PORT, Plan
from marketplace.frame import secretfiles
from marketplace.postgres import backup
from marketplace.postgres.roles import pgpass_line

#: The passwords Barman connects with (the superuser's, the replication
#: role's), a libpq password file in Barman's home.
PASSFILE = "pgpass"

#: The staging folder of a restore, in the new cluster's folder.
STAGING = "restore"

#: Patroni's name for the bootstrap method of a restored cluster.
METHOD = "barman_restore"


class BackupError(launch.ClusterError):
    """What stops a backup command, said to the operator."""


def _passfile(plan: Plan) -> Path:
    path = launch.barman_home(plan) / PASSFILE
    backup.make_home_at(launch.barman_home(plan))
    secretfiles.create(path, (pgpass_line("postgres", plan.superuser_password)
                              + pgpass_line("replicator", plan.replication_password)).encode())
    return path


def _config(plan: Plan) -> str:
    """Barman's configuration: the current primary (the first database host
    when there is none, for what needs no connection)."""
    host = launch.primary(plan) or plan.by_role("database")[0]
    # Over TLS, the server checked (the cluster takes nothing else), with
    # the cluster's own PostgreSQL programs: the wheel's have no TLS.
    common = (f"host={host.address} port={POSTGRES_PORT} passfile={_passfile(plan)}"
              f" connect_timeout=5 sslmode=verify-full sslrootcert={plan.folder / certs.CA_CERT}")
    return backup.config_for(launch.barman_home(plan), f"{common} user=postgres dbname=postgres",
                             f"{common} user=replicator",
                             f"the marketplace cluster of {plan.folder}",
                             launch.postgres_bin_dir())


def barman(plan: Plan, *args: str, capture: bool = False):
    """Run C{barman ARGS} on the cluster's backups."""
    return backup.run_barman(launch.barman_home(plan), _config(plan), *args, capture=capture)


def _archive_current_wal(plan: Plan) -> None:
    """Have the primary archive the WAL segment it writes now, and file it."""
    if launch.primary(plan) is not None:
        barman(plan, "switch-wal", "--force", "--archive", "--archive-timeout", "60",
               backup.SERVER)
    barman(plan, "cron")


def take(plan: Plan) -> str:
    """A full backup now, from the current primary; its id."""
    if launch.primary(plan) is None:
        raise BackupError("no primary: a backup needs the cluster up")
    _archive_current_wal(plan)
    barman(plan, "backup", "--wait", "--wait-timeout", "120", backup.SERVER)
    barman(plan, "cron")
    return ids(plan)[-1]


def ids(plan: Plan) -> List[str]:
    """The ids of the cluster's backups, oldest first."""
    listed = barman(plan, "list-backups", "--minimal", backup.SERVER, capture=True)
    return list(reversed(listed.stdout.split()))


def listing(plan: Plan) -> List[dict]:
    """The cluster's backups, oldest first (backup.describe's dicts): a
    restore can reach any time from the end of the oldest on."""
    return [backup.describe(lambda *a: barman(plan, *a, capture=True), b) for b in ids(plan)]


def _backup_before(plan: Plan, to: Optional[datetime.datetime]) -> str:
    try:
        return backup.backup_before(
            listing(plan), to,
            f"the cluster in {plan.folder} has no backup yet: marketplace-cluster backup",
        )
    except backup.NoBackupFits as e:
        raise BackupError(str(e)) from None


def _stage(old: Plan, new: Plan, backup_id: str, to: Optional[datetime.datetime]) -> Path:
    """Barman's restore of C{backup_id} and the WAL up to C{to} into the
    new cluster's staging folder, the database hosts' user's; Barman's
    recovery settings taken out again (Patroni's bootstrap method gives
    its own)."""
    staging = new.folder / STAGING
    staging.mkdir(mode=0o700)
    target = staging / "postgresql"
    # Every timeline: the WAL goes on across the old cluster's failovers.
    args = ["restore", "--target-tli", "latest"]
    if to is not None:
        args += ["--target-time", to.isoformat(), "--target-action", "promote"]
    barman(old, *args, backup.SERVER, backup_id, str(target))
    auto = target / "postgresql.auto.conf"
    origin = target / "postgresql.auto.conf.origin"
    if origin.exists():
        origin.replace(auto)
    for name in ("recovery.signal", "standby.signal", "postmaster.pid"):
        (target / name).unlink(missing_ok=True)
    user = pwd.getpwnam(launch.SYSTEM_USER)
    os.chown(staging, user.pw_uid, user.pw_gid)
    backup.server_user_owns(target, launch.SYSTEM_USER)
    target.chmod(0o700)
    return target


def bootstrap_method(staged: Path, to: Optional[datetime.datetime]) -> dict:
    """Patroni's custom bootstrap method of a restored cluster: the node
    that bootstraps moves the staged data into its data folder, replays
    the restored WAL (up to C{to}) and is promoted."""
    script = (f'for a; do case "$a" in --datadir=*) d="${{a#--datadir=}}";; esac; done;'
              f' rm -rf "$d" && mv {shlex.quote(str(staged))} "$d"')
    recovery = {"restore_command": "cp barman_wal/%f %p",
                "recovery_target_timeline": "latest"}
    if to is not None:
        recovery.update(recovery_target_time=to.isoformat(), recovery_target_action="promote")
    return {"command": f"sh -c {shlex.quote(script)} restore", "keep_existing_recovery_conf":
            False, "recovery_conf": recovery}


def _bootstrap_from(plan: Plan, staged: Path, to: Optional[datetime.datetime]) -> None:
    """Point every database host's Patroni at the staged data."""
    for host in plan.by_role("database"):
        path = plan.folder / host.name / "patroni.yml"
        config = yaml.safe_load(path.read_text())
        config["bootstrap"]["method"] = METHOD
        config["bootstrap"][METHOD] = bootstrap_method(staged, to)
        status = path.stat()
        draft = path.with_name(f".{path.name}.restore")
        secretfiles.create(draft, yaml.safe_dump(config, sort_keys=False).encode())
        os.chown(draft, status.st_uid, status.st_gid)
        draft.replace(path)


def restore(new_folder: Path, old_folder: Path,
            to: Optional[datetime.datetime] = None, **up) -> Plan:
    """Bring up a new cluster in C{new_folder} whose data is that of the
    cluster in C{old_folder} as it was at C{to} (the latest point archived
    without it); its plan.  The old cluster may be up (its current WAL is
    archived first) or down."""
    old = launch.load_plan(Path(old_folder).resolve())
    new_folder = Path(new_folder).resolve()
    if new_folder.exists() and any(new_folder.iterdir()):
        raise BackupError(f"{new_folder} is not empty: a restore makes a new cluster")
    _archive_current_wal(old)
    backup_id = _backup_before(old, to)

    def stage(plan: Plan) -> None:
        staged = _stage(old, plan, backup_id, to)
        _bootstrap_from(plan, staged, to)

    plan = launch.up(new_folder, like=old.folder, before_start=stage, **up)
    # (Moved into the data folder by the node that bootstrapped.)
    shutil.rmtree(new_folder / STAGING, ignore_errors=True)
    return plan


def describe_restore_point(found: List[dict]) -> str:
    """The oldest point a restore reaches, in words."""
    if not found:
        return "no backup yet"
    return f"a restore can reach any time from {found[0]['end'].isoformat()} on"

