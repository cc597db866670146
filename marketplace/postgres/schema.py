"""Finding schema.sql and applying its parts to the databases."""

import sys
from pathlib import Path
from typing import Dict

from marketplace.postgres.database import Database

CUSTOMER = "customer"
PRODUCT = "product"
PAYMENTS = "payments"

# Any fixed number will do: it only keeps two services that start at once
# from creating the same tables at the same time.
_SCHEMA_LOCK = 0x6D61726B


def schema_path() -> Path:
    """schema.sql of this checkout, or the copy installed with the package."""
    here = Path(__file__).resolve().parents[2] / "schema.sql"
    if here.exists():
        return here
    return Path(sys.prefix) / "share" / "marketplace" / "schema.sql"


def schema_parts(text: str) -> Dict[str, str]:
    """Split schema.sql into its parts, by their "-- database: NAME" lines."""
    parts: Dict[str, list] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("-- database:"):
            current = line.split(":", 1)[1].strip()
            parts.setdefault(current, [])
        elif current is not None:
            parts[current].append(line)
    return {name: "\n".join(lines) for name, lines in parts.items()}


async def apply_schema(database: Database, part: str) -> None:
    """Create what part C{part} of schema.sql describes, if it is missing."""
    sql = schema_parts(schema_path().read_text())[part]

    def create(cursor):
        d = cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        return d.addCallback(lambda _: cursor.execute(sql))

    await database.transaction(create)
