"""A cluster's secrets and settings, made once and kept.

They are written at the first C{up} (or C{render}) into the cluster's
folder, in a file only its owner can read, and every later C{up} reads
them back: the data folders hold the passwords of that first start
(PostgreSQL's roles, Patroni's), so new ones would lock the nodes out of
each other.  Every private file is created with mode 0600 from the start
(never made private afterwards), and never overwritten.
"""

import json
import os
import secrets
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Optional

#: Seconds after which a buyer daemon settles a purchase left pending by a
#: buyer daemon that died, unless a retry of it settles it first (after
#: half a second: see marketplace/buyer/purchase.py).  Shorter would also settle
#: live purchases that are slow under load, whose buyers would then be
#: asked to try again.
SETTLE_AFTER = 10.0

FILE = "settings.json"


def _token(size: int):
    return field(default_factory=lambda: secrets.token_hex(size))


@dataclass(kw_only=True)
class Settings:
    """What every host of one cluster must agree on."""

    #: Patroni's scope and etcd's cluster token.
    scope: str = "marketplace"
    settle_after: float = SETTLE_AFTER
    #: The network the cluster's hosts and clients are on ("10.0.0.0/24").
    network: Optional[str] = None
    #: Where the operator connects from ("10.0.0.5/32"): PostgreSQL lets
    #: the superuser and the tables' owner in from there (else from the
    #: C{network}) and from the database hosts.
    admin_network: Optional[str] = None
    #: The clients are a load generator on the same machine (the cluster on
    #: one machine): the daemons' per-address sign-up and hashing shares and
    #: per-account share of keyed writes, meant for strangers on the
    #: internet, are raised.
    load_testing: bool = False
    superuser_password: str = _token(16)
    replication_password: str = _token(16)
    rest_password: str = _token(16)
    #: What the buyer daemons show the payments daemons (every host the same).
    payments_secret: str = _token(24)


def create_private(path: Path, text: str) -> bool:
    """Write C{text} to a new file at C{path} that only its owner can read
    or write; False (and nothing written) if the file exists already."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w") as output:
        output.write(text)
    return True


def save(folder: Path, values: dict) -> bool:
    """Write C{values} as the settings file of C{folder}, unless there is
    one already (False then)."""
    return create_private(Path(folder) / FILE, json.dumps(values, indent=2) + "\n")


def load(folder: Path) -> Optional[dict]:
    """The values of C{folder}'s settings file, or None if it has none."""
    path = Path(folder) / FILE
    if not path.exists():
        return None
    return json.loads(path.read_text())


def load_or_create(folder: Path, **defaults) -> Settings:
    """The settings kept in C{folder}, made (with C{defaults}) if there are
    none yet."""
    known = {f.name for f in fields(Settings)}
    values = load(folder)
    if values is None:
        made = Settings(**defaults)
        save(folder, asdict(made))
        values = load(folder)
    return Settings(**{k: v for k, v in values.items() if k in known})
