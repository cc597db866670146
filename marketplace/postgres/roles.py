"""Least-privilege roles: who owns the marketplace's tables and who may
only use them.

- L{OWNER} (C{marketplace_owner}) owns the tables and functions and
  applies schema.sql; it is no superuser and may create no role.
- L{SHOP} (C{marketplace_shop}), the buyer and seller services' role, may
  read and write the rows of the customer and product tables, and nothing
  else: it cannot change or drop a table, read the payments tables, create
  a role or run a program.
- L{PAYMENTS} (C{marketplace_payments}), the financial-transactions
  service's role, may read and write the rows of the payments tables only.

L{create_roles} makes the roles (given a connection that may, a superuser
or a role with CREATEROLE) and L{prepare_database} readies one database
for them; L{grants} is the SQL that gives each service role its tables,
which the schema step runs after schema.sql (marketplace/postgres/schema.py),
so new tables get their grants with the schema that makes them.  Where the
roles do not exist (a deployment whose daemons connect as a superuser), the
grants do nothing and everything works as before.
"""

import base64
import hashlib
import hmac
import re
import secrets
from typing import Dict, List, Mapping, Optional

from marketplace.postgres import schema

OWNER = "marketplace_owner"
SHOP = "marketplace_shop"
PAYMENTS = "marketplace_payments"
ROLES = (OWNER, SHOP, PAYMENTS)

#: The role of the service that uses each part of schema.sql.
SERVICE_ROLES = {"customer": SHOP, "product": SHOP, "payments": PAYMENTS}

# Any fixed number: it keeps two processes from creating one role at once.
_ROLES_LOCK = 0x726F6C65

# Every table a part creates, at the top level or within a DO block.
_TABLE = re.compile(r"\bCREATE (?:UNLOGGED )?TABLE (?:IF NOT EXISTS )?(\w+)")


def tables(part: str) -> List[str]:
    """The tables that part C{part} of schema.sql creates."""
    found = _TABLE.findall(schema.schema_parts(schema.schema_path().read_text())[part])
    return list(dict.fromkeys(found))


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for C{password}: what
    C{ALTER ROLE ... PASSWORD} is given, so the password itself never
    crosses the wire nor reaches the server's log (as psql's \\password)."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def create_roles(cursor, passwords: Optional[Mapping[str, str]] = None) -> None:
    """Create the three roles if missing and make sure they may do no more
    than log in (no superuser, no CREATEROLE, CREATEDB, replication or
    row-security bypass), on a psycopg2 C{cursor} of a connection that may
    create roles.  A role named in C{passwords} gets that password (sent
    as a SCRAM verifier); the others keep theirs, or none (peer
    authentication, as the embedded server uses)."""
    cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_ROLES_LOCK,))
    for role in ROLES:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
        if cursor.fetchone() is None:
            cursor.execute(f"CREATE ROLE {role}")
        cursor.execute(
            f"ALTER ROLE {role} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE"
            " NOREPLICATION NOBYPASSRLS NOINHERIT"
        )
        password = (passwords or {}).get(role)
        if password is not None:
            cursor.execute(f"ALTER ROLE {role} PASSWORD %s", (scram_verifier(password),))


def prepare_database(cursor) -> None:
    """Ready the database of C{cursor} (a superuser's, or its owner's) for
    the roles: only the owner may create objects in its schema (public
    loses CREATE, and TEMPORARY on the database), the service roles may use
    the schema, and tables or functions made earlier by another role (an
    older version ran everything as the superuser) pass to the owner."""
    cursor.execute("SELECT current_database()")
    (database,) = cursor.fetchone()
    quoted = '"' + database.replace('"', '""') + '"'
    cursor.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    cursor.execute(f"REVOKE TEMPORARY ON DATABASE {quoted} FROM PUBLIC")
    cursor.execute(f"GRANT USAGE, CREATE ON SCHEMA public TO {OWNER}")
    cursor.execute(f"GRANT USAGE ON SCHEMA public TO {SHOP}, {PAYMENTS}")
    cursor.execute(
        f"""
        DO $$
        DECLARE r record;
        BEGIN
            FOR r IN SELECT c.oid::regclass AS name FROM pg_class AS c
                     JOIN pg_namespace AS n ON n.oid = c.relnamespace
                     WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
                       AND c.relowner <> '{OWNER}'::regrole LOOP
                EXECUTE format('ALTER TABLE %s OWNER TO {OWNER}', r.name);
            END LOOP;
            FOR r IN SELECT p.oid::regprocedure AS name FROM pg_proc AS p
                     JOIN pg_namespace AS n ON n.oid = p.pronamespace
                     WHERE n.nspname = 'public' AND p.proowner <> '{OWNER}'::regrole LOOP
                EXECUTE format('ALTER ROUTINE %s OWNER TO {OWNER}', r.name);
            END LOOP;
        END $$
        """
    )


def grants(part: str) -> str:
    """SQL that gives the service role of part C{part} of schema.sql the
    rows of its tables (SELECT, INSERT, UPDATE, DELETE), if that role
    exists; run by the tables' owner after the part itself."""
    role = SERVICE_ROLES[part]
    names = ", ".join(tables(part))
    return f"""
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
        GRANT USAGE ON SCHEMA public TO {role};
        GRANT SELECT, INSERT, UPDATE, DELETE ON {names} TO {role};
    END IF;
END $$;
"""


def pgpass_line(role: str, password: str) -> str:
    """A line of a libpq password file giving C{role}'s password for every
    host and database."""

    def escaped(text: str) -> str:
        return text.replace("\\", "\\\\").replace(":", "\\:")

    return f"*:*:*:{escaped(role)}:{escaped(password)}\n"


def parse_pgpass(text: str) -> Dict[str, str]:
    """The passwords of a password file written by L{pgpass_line}, by role."""
    found = {}
    for line in text.splitlines():
        fields, current, escaping = [], "", False
        for char in line:
            if escaping:
                current, escaping = current + char, False
            elif char == "\\":
                escaping = True
            elif char == ":":
                fields.append(current)
                current = ""
            else:
                current += char
        fields.append(current)
        if len(fields) == 5:
            found[fields[3]] = fields[4]
    return found
