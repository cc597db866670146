"""The customer database: accounts and sessions.  All of its SQL is here."""

from typing import Any, Iterable, List, Optional, Set, Tuple

from marketplace.database import Database

BUYER = "buyer"
SELLER = "seller"


async def create_account(
    db: Database, role: str, username: str, name: str, password_hash: str
) -> Optional[int]:
    """The new account's id, or None if C{role} already has C{username}."""
    row = await db.one(
        "INSERT INTO accounts (role, username, name, password_hash)"
        " VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (role, username) DO NOTHING RETURNING id",
        (role, username, name, password_hash),
    )
    return row[0] if row else None


async def find_login(
    db: Database, role: str, username: str
) -> Optional[Tuple[int, str]]:
    """(account id, password hash) of a username, or None."""
    return await db.one(
        "SELECT id, password_hash FROM accounts WHERE role = %s AND username = %s",
        (role, username),
    )


async def account_name(db: Database, role: str, account_id: int) -> Optional[str]:
    """The display name of an account, or None if there is no such account."""
    row = await db.one(
        "SELECT name FROM accounts WHERE role = %s AND id = %s", (role, account_id)
    )
    return row[0] if row else None


async def open_session(db: Database, key: str, role: str, account_id: int) -> None:
    """File a new session under C{key}."""
    await db.execute(
        "INSERT INTO sessions (key, role, account_id) VALUES (%s, %s, %s)",
        (key, role, account_id),
    )


# The session is valid if it was seen within the timeout.  Its last_seen is
# moved on at most once a second (by touch_session of schema.sql, which the
# CASE calls only when that second is up), so a busy session is not a write
# on every request; an idle one may thus end up to a second early.  C{live} has one
# row (the account) for a live session and none otherwise; the hot path
# (marketplace/hotpath.py) joins its work onto it.
LIVE_SESSION = """
WITH live AS (
    SELECT account_id FROM sessions
    WHERE key = %(key)s AND role = %(role)s
      AND last_seen > now() - %(timeout)s * interval '1 second'
      AND CASE WHEN last_seen < now() - interval '1 second'
               THEN touch_session(key, role, %(timeout)s) ELSE true END
)"""

_TOUCH = LIVE_SESSION + "\nSELECT account_id FROM live\n"


async def touch_session(
    db: Database, key: str, role: str, timeout: float
) -> Optional[int]:
    """The account of a live session of C{role}, marking it as just used."""
    row = await db.one(_TOUCH, {"key": key, "role": role, "timeout": timeout})
    return row[0] if row else None


async def close_session(db: Database, key: str, role: str) -> bool:
    """End a session; whether it was open."""
    row = await db.one(
        "DELETE FROM sessions WHERE key = %s AND role = %s RETURNING 1", (key, role)
    )
    return row is not None


async def expire_sessions(db: Database, timeout: float) -> List[str]:
    """End the sessions idle for longer than C{timeout}; their keys."""
    rows = await db.query(
        "DELETE FROM sessions WHERE last_seen < now() - %s * interval '1 second'"
        " RETURNING key",
        (timeout,),
    )
    return [key for (key,) in rows]


async def live_sessions(db: Database, keys: Iterable[str]) -> Set[str]:
    """Which of C{keys} are open sessions."""
    rows = await db.query(
        "SELECT key FROM sessions WHERE key = ANY(%s)", (list(keys),)
    )
    return {key for (key,) in rows}


# Counted before the password is checked, so that many guesses sent at once
# are counted as they come rather than all let through; a login that then
# succeeds takes its count back (forget_login_attempt).  A window that has
# passed starts again from this attempt.
_COUNT_LOGIN_ATTEMPT = """
INSERT INTO login_failures AS f (role, username, window_start, failures)
VALUES (%(role)s, %(username)s, now(), 1)
ON CONFLICT (role, username) DO UPDATE SET
    window_start = CASE
        WHEN f.window_start <= now() - %(window)s * interval '1 second'
        THEN now() ELSE f.window_start END,
    failures = CASE
        WHEN f.window_start <= now() - %(window)s * interval '1 second'
        THEN 1 ELSE f.failures + 1 END
RETURNING failures, window_start
"""


async def count_login_attempt(
    db: Database, role: str, username: str, window: float
) -> Tuple[int, Any]:
    """Count a login attempt of C{username}: (attempts not known to have
    succeeded in the current window, this one included; the window's start)."""
    row = await db.one(
        _COUNT_LOGIN_ATTEMPT, {"role": role, "username": username, "window": window}
    )
    return row[0], row[1]


async def forget_login_attempt(
    db: Database, role: str, username: str, window_start: Any
) -> None:
    """Take back an attempt counted in the window starting C{window_start}
    (it succeeded, or could not be checked)."""
    await db.execute(
        "UPDATE login_failures SET failures = failures - 1"
        " WHERE role = %s AND username = %s AND window_start = %s AND failures > 0",
        (role, username, window_start),
    )


async def expire_login_failures(db: Database, window: float) -> None:
    """Delete the counts of windows that have passed."""
    await db.execute(
        "DELETE FROM login_failures"
        " WHERE window_start <= now() - %s * interval '1 second'",
        (window,),
    )
