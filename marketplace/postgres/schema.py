"""Finding schema.sql and applying its parts to the databases; L{Schema},
the daemon's service that does so when it starts."""

import hashlib
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import psycopg2.errors
from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.logger import Logger

from marketplace.postgres.database import Database, is_unavailable
from marketplace.frame.quietlog import describe
from marketplace.frame.backoff import Backoff

# Any fixed number will do: it only keeps two services that start at once
# from creating the same tables at the same time.
_SCHEMA_LOCK = 0x6D61726B

#: Seconds after which a start says that schema.sql is still being applied
#: (the first start after an upgrade may make search's tables again).
SLOW_APPLY = 5.0


def schema_path() -> Path:
    """schema.sql of this checkout, or the copy installed with the package."""
    here = Path(__file__).resolve().parents[2] / "schema.sql"
    if here.exists():
        return here
    return Path(sys.prefix) / "share" / "marketplace" / "schema.sql"


def schema_parts(text: str) -> Dict[str, str]:
    """Split schema.sql into its parts, by their "-- database: NAME" lines;
    the text after a line naming several ("-- database: A, B") goes into
    each of them."""
    parts: Dict[str, list] = {}
    current: List[str] = []
    for line in text.splitlines():
        if line.startswith("-- database:"):
            current = [name.strip() for name in line.split(":", 1)[1].split(",")]
            for name in current:
                parts.setdefault(name, [])
        else:
            for name in current:
                parts[name].append(line)
    return {name: "\n".join(lines) for name, lines in parts.items()}


#: Which text of each part was applied last (see L{apply_schema}).
_APPLIED = """CREATE TABLE IF NOT EXISTS schema_applied (
    part       text PRIMARY KEY,
    digest     text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now())"""


async def apply_schema(database: Database, part: str, unless_applied: bool = False) -> None:
    """Create what part C{part} of schema.sql describes, if it is missing,
    and give its tables to the part's service role (roles.grants).

    With C{unless_applied}, nothing is done when this very text of the part
    was applied last: a daemon that starts beside others under load (a
    rolling restart) does not queue its CREATE INDEX ... IF NOT EXISTS, which
    locks the table first and looks second, behind their writes (and them
    behind it, into deadlocks).

    Done through C{database.owner_dsn} when the database has one (the role
    that owns the tables), else through the database's own pool.  A pool
    whose role may not change the schema (a service role, roles.py) does
    not need to: if the part's tables are all there, that is enough."""
    from marketplace.postgres import roles

    sql = schema_parts(schema_path().read_text())[part] + roles.grants(part)
    digest = hashlib.sha256(sql.encode()).hexdigest()

    async def create(cursor):
        await cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        await cursor.execute(_APPLIED)
        if unless_applied:
            await cursor.execute("SELECT digest FROM schema_applied WHERE part = %s", (part,))
            row = cursor.fetchone()
            if row is not None and row[0] == digest:
                return
        await cursor.execute(sql)
        await cursor.execute(
            "INSERT INTO schema_applied (part, digest) VALUES (%s, %s) ON CONFLICT (part)"
            " DO UPDATE SET digest = excluded.digest, applied_at = now()", (part, digest))

    owner_dsn = database.owner_dsn
    if owner_dsn is not None and owner_dsn != database.dsn:
        owner = Database(f"{database.name} (owner)", owner_dsn, 1, database.reactor)
        await owner.startService()
        try:
            await owner.transaction(create)
        finally:
            await owner.stopService()
        return
    try:
        await database.transaction(create)
    except psycopg2.errors.InsufficientPrivilege:
        missing = await missing_tables(database, roles.tables(part))
        if missing:
            raise SchemaMissing(
                f"the {database.name} database lacks the tables {', '.join(missing)}, and its"
                " role may not create them: apply schema.sql as the owner role (the daemon's"
                f" --{database.name}-owner-db, or marketplace-db-roles)"
            ) from None


class SchemaMissing(Exception):
    """The tables are not there and this connection may not create them."""


async def missing_tables(database: Database, names) -> list:
    """Those of the tables C{names} that the database does not have."""
    rows = await database.query(
        "SELECT name FROM unnest(%s::text[]) AS name WHERE to_regclass(name) IS NULL",
        (list(names),),
    )
    return [name for (name,) in rows]


class Schema(Service):
    """Applies schema.sql to C{databases} when started, each its own part
    (named after it), waiting with backoff for a database that cannot be
    reached yet rather than giving up; the Deferred that L{startService}
    returns fires once all are done.  Applying it again changes nothing.
    """

    log = Logger()

    def __init__(self, databases: Iterable[Database], reactor) -> None:
        self.name = "schema"
        self.databases = list(databases)
        self.reactor = reactor
        self._sleep: Optional[defer.Deferred] = None

    def startService(self) -> defer.Deferred:
        super().startService()
        return defer.Deferred.fromCoroutine(self._apply_all())

    async def _apply_all(self) -> None:
        for database in self.databases:
            await self._apply_when_reachable(database)

    async def _apply_when_reachable(self, database: Database) -> None:
        backoff = Backoff(0.5, 10.0)
        while True:
            try:
                await self._apply_telling_if_slow(database)
                return
            except Exception as e:
                if not is_unavailable(e) or not self.running:
                    raise
                if backoff.attempts == 0:
                    # Once: the pool tells the outage and its end.
                    self.log.info(
                        "waiting for the {name} database to apply schema.sql ({error})",
                        name=database.name,
                        error=describe(e),
                    )
                self._sleep = task.deferLater(self.reactor, backoff.next(), lambda: None)
                try:
                    await self._sleep
                finally:
                    self._sleep = None

    async def _apply_telling_if_slow(self, database: Database) -> None:
        """Apply the database's part; if that takes more than L{SLOW_APPLY}
        seconds, say so then, and how long it took when it is done."""
        started = self.reactor.seconds()
        notice = self.reactor.callLater(
            SLOW_APPLY,
            lambda: self.log.info(
                "still applying schema.sql to the {name} database (after an upgrade"
                " it may make search's tables again: about 30 s a million items)",
                name=database.name,
            ),
        )
        try:
            await apply_schema(database, database.name, unless_applied=True)
        finally:
            if notice.active():
                notice.cancel()
            else:
                self.log.info(
                    "schema.sql applied to the {name} database in {seconds:.0f} s",
                    name=database.name,
                    seconds=self.reactor.seconds() - started,
                )

    def stopService(self) -> None:
        super().stopService()
        if self._sleep is not None:
            self._sleep.cancel()  # the start fails: the daemon is stopping
