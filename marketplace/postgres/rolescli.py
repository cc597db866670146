"""The marketplace-db-roles command: the least-privilege roles on an
external PostgreSQL (postgres/roles.py).

    marketplace-db-roles --passfile FILE [--admin-db DSN]
        [--database NAME[:PARTS]]...

With a superuser's connection (C{--admin-db}, else C{MARKETPLACE_ADMIN_DB},
else libpq's own defaults: C{PGHOST}, C{PGUSER}, ~/.pgpass ...), it creates
the roles marketplace_owner, marketplace_shop and marketplace_payments, each
with a password from the libpq password file FILE, which it creates (private,
mode 0600) with new random passwords if it does not exist.  Then, in each
database named (default: the admin connection's), it readies the database
for the roles and applies the parts of schema.sql given (customer, product,
payments; default all three) as marketplace_owner, with the grants.  It
may be run again: it changes only what is missing.  No password is shown.
"""

import argparse
import os
import secrets
import sys
from pathlib import Path
from typing import Dict, List, Optional

import psycopg2
from psycopg2.extensions import make_dsn

from marketplace.postgres import roles, schema
from marketplace.frame import secretfiles

PARTS = ("customer", "product", "payments")


def passwords_in(path: Path) -> Dict[str, str]:
    """The roles' passwords in the password file C{path}, made first (with
    new random passwords, mode 0600) if it does not exist."""

    def new_file() -> bytes:
        return "".join(
            roles.pgpass_line(role, secrets.token_urlsafe(24)) for role in roles.ROLES
        ).encode()

    found = roles.parse_pgpass(secretfiles.read_or_create(path, new_file).decode())
    missing = [role for role in roles.ROLES if role not in found]
    if missing:
        raise SystemExit(f"marketplace-db-roles: {path} has no password for {', '.join(missing)}")
    return {role: found[role] for role in roles.ROLES}


def set_up(admin_dsn: str, passwords: Dict[str, str], databases: Dict[Optional[str], List[str]]):
    """Create the roles through C{admin_dsn}, then ready each database and
    apply its parts of schema.sql as the owner."""
    connection = psycopg2.connect(admin_dsn)
    try:
        with connection, connection.cursor() as cursor:
            roles.create_roles(cursor, passwords)
    finally:
        connection.close()
    sql = schema.schema_parts(schema.schema_path().read_text())
    for name, parts in databases.items():
        dsn = admin_dsn if name is None else make_dsn(admin_dsn, dbname=name)
        connection = psycopg2.connect(dsn)
        try:
            with connection, connection.cursor() as cursor:
                roles.prepare_database(cursor)
                cursor.execute(f"SET ROLE {roles.OWNER}")
                for part in parts:
                    cursor.execute(sql[part] + roles.grants(part))
                cursor.execute("RESET ROLE")
        finally:
            connection.close()


def _database(text: str):
    name, _, parts = text.partition(":")
    chosen = [p for p in parts.split(",") if p] if parts else list(PARTS)
    unknown = [p for p in chosen if p not in PARTS]
    if unknown or not name:
        raise argparse.ArgumentTypeError(f"NAME[:PARTS], PARTS among {','.join(PARTS)}")
    return name, chosen


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="marketplace-db-roles",
        description="Create the marketplace's least-privilege roles on a PostgreSQL server"
        " and apply schema.sql as their owner.",
    )
    p.add_argument("--passfile", type=Path, required=True,
                   help="libpq password file with the roles' passwords; made (mode 0600,"
                   " new random passwords) if missing")
    p.add_argument("--admin-db", default=os.environ.get("MARKETPLACE_ADMIN_DB", ""),
                   help="a superuser's connection string (default: MARKETPLACE_ADMIN_DB, else"
                   " libpq's defaults); prefer the environment to the command line")
    p.add_argument("--database", type=_database, action="append", default=[],
                   metavar="NAME[:PARTS]",
                   help="a database to ready, and the parts of schema.sql it holds"
                   " (default: the admin connection's database, every part)")
    return p


def run(argv: Optional[list] = None) -> int:
    args = parser().parse_args(argv)
    passwords = passwords_in(args.passfile)
    databases = dict(args.database) or {None: list(PARTS)}
    try:
        set_up(args.admin_db, passwords, databases)
    except psycopg2.Error as e:
        print(f"marketplace-db-roles: {str(e).strip()}", file=sys.stderr)
        return 1
    passfile = args.passfile.resolve()
    print(f"roles {', '.join(roles.ROLES)} ready; their passwords are in {passfile}.")
    print("daemons' connections (add host=, port=, dbname=):")
    print(f"  service: user={roles.SHOP} passfile={passfile}  (buyer, seller: --customer-db ...)")
    print(f"           user={roles.PAYMENTS} passfile={passfile}  (payments: --payments-db)")
    print(f"  owner:   user={roles.OWNER} passfile={passfile}  (--customer-owner-db ..., optional)")
    return 0


if __name__ == "__main__":
    sys.exit(run())
