"""The payments database: card authorisations.  All of its SQL is here.

An authorisation is filed under the caller's idempotency key, so asking
twice with one key gives the first answer.  Only the last four digits of a
card are kept, never its security code.  An authorisation comes back as a
dict: authorization_id, idempotency_key, approved, voided, reason, amount.
"""

from decimal import Decimal
from typing import Optional, Sequence

from marketplace.postgres.database import Database

_COLUMNS = "id::text, idempotency_key, approved, voided_at IS NOT NULL, reason, amount"


def _from_row(row: Sequence) -> dict:
    authorization_id, key, approved, voided, reason, amount = row
    return {
        "authorization_id": authorization_id,
        "idempotency_key": key,
        "approved": approved,
        "voided": voided,
        "reason": reason,
        "amount": amount,
    }


async def record(
    db: Database,
    key: str,
    name: str,
    card_last_four: str,
    amount: Decimal,
    approved: bool,
    reason: Optional[str],
) -> dict:
    """File a decision under C{key}, unless one is filed there already;
    the authorisation filed under C{key} either way."""
    row = await db.one(
        f"INSERT INTO authorizations (idempotency_key, name, card_last_four,"
        f" amount, approved, reason) VALUES (%s, %s, %s, %s, %s, %s)"
        f" ON CONFLICT (idempotency_key) DO NOTHING RETURNING {_COLUMNS}",
        (key, name, card_last_four, amount, approved, reason),
    )
    if row is None:
        row = await db.one(
            f"SELECT {_COLUMNS} FROM authorizations WHERE idempotency_key = %s", (key,)
        )
    return _from_row(row)


async def by_key(db: Database, key: str) -> Optional[dict]:
    """The authorisation filed under an idempotency key, or None."""
    row = await db.one(
        f"SELECT {_COLUMNS} FROM authorizations WHERE idempotency_key = %s", (key,)
    )
    return _from_row(row) if row else None


async def void_by_id(db: Database, authorization_id: str) -> Optional[dict]:
    """Void an authorisation; None if there is no such authorisation."""
    row = await db.one(
        f"UPDATE authorizations SET voided_at = coalesce(voided_at, now())"
        f" WHERE id::text = %s RETURNING {_COLUMNS}",
        (authorization_id,),
    )
    return _from_row(row) if row else None


# Voiding a key nothing is filed under yet files a voided, declined
# authorisation there, so a request that arrives late with that key (it was
# still on its way when the caller gave up) is answered "voided", never
# approved.
_VOID_BY_KEY = f"""
INSERT INTO authorizations AS a (idempotency_key, approved, reason, voided_at)
VALUES (%s, false, 'voided before it was authorised', now())
ON CONFLICT (idempotency_key) DO UPDATE
    SET voided_at = coalesce(a.voided_at, now())
RETURNING {_COLUMNS}
"""


async def void_by_key(db: Database, key: str) -> dict:
    """Void whatever is filed under an idempotency key, or bar the key."""
    return _from_row(await db.one(_VOID_BY_KEY, (key,)))
