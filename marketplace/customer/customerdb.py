"""The customer database: accounts and sessions.  All of its SQL is here."""

from typing import Iterable, List, Optional, Set, Tuple

from marketplace.postgres.database import Database

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


# Usernames are stored in their normal form (marketplace.customer.identities).  An
# account made before that, whose username schema.sql could not fold, keeps
# its username as it was sent and is found by that exact spelling, before
# the normal form (a new account's name is in normal form, so only such an
# old account can match C{as_sent} but not C{username}).
async def find_login(
    db: Database, role: str, username: str, as_sent: str
) -> Optional[Tuple[int, str]]:
    """(account id, password hash) of an older account spelled exactly
    C{as_sent}, else of the username in its normal form; or None."""
    return await db.one(
        "SELECT id, password_hash FROM accounts"
        " WHERE role = %(role)s AND username IN (%(username)s, %(as_sent)s)"
        " ORDER BY username = %(as_sent)s DESC LIMIT 1",
        {"role": role, "username": username, "as_sent": as_sent},
    )


async def account_name(db: Database, role: str, account_id: int) -> Optional[str]:
    """The display name of an account, or None if there is no such account."""
    row = await db.one(
        "SELECT name FROM accounts WHERE role = %s AND id = %s", (role, account_id)
    )
    return row[0] if row else None


# The new session, then every session of the account beyond the newest
# C{max_sessions}: the oldest end first.
_END_OLDEST_SESSIONS = """
DELETE FROM sessions WHERE key IN (
    SELECT key FROM sessions WHERE role = %(role)s AND account_id = %(account)s
    ORDER BY created_at DESC, key = %(key)s DESC, key OFFSET %(max)s
) RETURNING key
"""


async def open_session(
    db: Database, key: str, role: str, account_id: int, max_sessions: Optional[int] = None
) -> List[str]:
    """File a new session under C{key}, ending the account's oldest
    sessions beyond C{max_sessions}; the keys of those ended."""
    await db.execute(
        "INSERT INTO sessions (key, role, account_id) VALUES (%s, %s, %s)",
        (key, role, account_id),
    )
    if max_sessions is None:
        return []
    rows = await db.query(
        _END_OLDEST_SESSIONS,
        {"role": role, "account": account_id, "key": key, "max": max_sessions},
    )
    return [old for (old,) in rows]


# The session is valid if it was seen within the timeout.  Its last_seen is
# moved on at most once a second (by touch_session of schema.sql, which the
# CASE calls only when that second is up), so a busy session is not a write
# on every request; an idle one may thus end up to a second early.  C{live} has one
# row (the account) for a live session and none otherwise; where customer
# and product data share a database, the single-statement APIs join their
# work onto it (marketplace/product/statements.py).
LIVE_SESSION = """
WITH live AS (
    SELECT account_id FROM sessions
    WHERE key = %(key)s AND role = %(role)s
      AND last_seen > now() - %(timeout)s * interval '1 second'
      AND CASE WHEN last_seen < now() - interval '1 second'
               THEN touch_session(key, role, %(timeout)s) ELSE true END
)"""

_TOUCH = LIVE_SESSION + "\nSELECT account_id FROM live\n"

# C{live} that writes nothing, for a standby (which cannot): the same check
# of last_seen, without the touch; the touch is sent to the primary
# separately (marketplace/customer/touches.py).
LIVE_SESSION_READ = """
WITH live AS (
    SELECT account_id FROM sessions
    WHERE key = %(key)s AND role = %(role)s
      AND last_seen > now() - %(timeout)s * interval '1 second'
)"""

_LIVE_ACCOUNT = LIVE_SESSION_READ + "\nSELECT account_id FROM live\n"


async def touch_session(
    db: Database, key: str, role: str, timeout: float
) -> Optional[int]:
    """The account of a live session of C{role}, marking it as just used."""
    row = await db.one(_TOUCH, {"key": key, "role": role, "timeout": timeout})
    return row[0] if row else None


async def live_account(db, key: str, role: str, timeout: float) -> Optional[int]:
    """The account of a live session of C{role}, without touching it: for
    a standby (C{db} a L{marketplace.postgres.database.Replicas})."""
    row = await db.one(_LIVE_ACCOUNT, {"key": key, "role": role, "timeout": timeout})
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


async def login_failures(
    db: Database, role: str, username: str, source: Optional[str], window: float
) -> Tuple[int, int]:
    """Failed logins of C{username} in their current windows: (from
    C{source}, from every address)."""
    row = await db.one(
        "SELECT"
        " (SELECT failures FROM login_failures_by_source"
        "  WHERE role = %(role)s AND username = %(username)s AND source = %(source)s"
        "  AND window_start > now() - %(window)s * interval '1 second'),"
        " (SELECT failures FROM login_failures"
        "  WHERE role = %(role)s AND username = %(username)s"
        "  AND window_start > now() - %(window)s * interval '1 second')",
        {"role": role, "username": username, "source": source or "", "window": window},
    )
    return (row[0] or 0, row[1] or 0)


# One statement per failure, so failures sent at once all count; it counts
# the failure both for the address it came from and for the username as a
# whole.  Only failures are counted: a login with the right password never
# is.  A window that has passed starts again from this failure.
_COUNT_LOGIN_FAILURE = """
WITH by_source AS (
    INSERT INTO login_failures_by_source AS f (role, username, source, window_start, failures)
    VALUES (%(role)s, %(username)s, %(source)s, now(), 1)
    ON CONFLICT (role, username, source) DO UPDATE SET
        window_start = CASE
            WHEN f.window_start <= now() - %(window)s * interval '1 second'
            THEN now() ELSE f.window_start END,
        failures = CASE
            WHEN f.window_start <= now() - %(window)s * interval '1 second'
            THEN 1 ELSE f.failures + 1 END
    RETURNING failures
), total AS (
    INSERT INTO login_failures AS f (role, username, window_start, failures)
    VALUES (%(role)s, %(username)s, now(), 1)
    ON CONFLICT (role, username) DO UPDATE SET
        window_start = CASE
            WHEN f.window_start <= now() - %(window)s * interval '1 second'
            THEN now() ELSE f.window_start END,
        failures = CASE
            WHEN f.window_start <= now() - %(window)s * interval '1 second'
            THEN 1 ELSE f.failures + 1 END
    RETURNING failures
)
SELECT by_source.failures, total.failures FROM by_source, total
"""


async def count_login_failure(
    db: Database, role: str, username: str, source: Optional[str], window: float
) -> Tuple[int, int]:
    """Count a failed login of C{username} from C{source}; the failures of
    their windows, (from C{source}, from every address)."""
    row = await db.one(
        _COUNT_LOGIN_FAILURE,
        {"role": role, "username": username, "source": source or "", "window": window},
    )
    return (row[0], row[1])


async def expire_login_failures(db: Database, window: float) -> None:
    """Delete the counts of windows that have passed."""
    for table in ("login_failures", "login_failures_by_source"):
        await db.execute(
            f"DELETE FROM {table}"
            " WHERE window_start <= now() - %s * interval '1 second'",
            (window,),
        )


#: Longest time a rate bucket takes to fill up again; older buckets are
#: full, and swept away.
SIGNUP_WINDOW_MAX = 7 * 24 * 3600.0

# A token bucket per kind of request and source address: it holds at most
# C{burst} tokens and gains C{burst} every C{window} seconds; a request
# takes one, or is refused when there is less than one (and takes none).
_TAKE_TOKEN = """
INSERT INTO rate_buckets AS b (kind, source, tokens, updated_at, granted)
VALUES (%(kind)s, %(source)s, greatest(%(burst)s::float8 - 1, 0), now(), %(burst)s >= 1)
ON CONFLICT (kind, source) DO UPDATE SET
    tokens = CASE
        WHEN least(%(burst)s::float8, b.tokens + %(rate)s::float8
                   * extract(epoch FROM now() - b.updated_at)::float8) >= 1
        THEN least(%(burst)s::float8, b.tokens + %(rate)s::float8
                   * extract(epoch FROM now() - b.updated_at)::float8) - 1
        ELSE least(%(burst)s::float8, b.tokens + %(rate)s::float8
                   * extract(epoch FROM now() - b.updated_at)::float8) END,
    granted = least(%(burst)s::float8, b.tokens + %(rate)s::float8
                    * extract(epoch FROM now() - b.updated_at)::float8) >= 1,
    updated_at = now()
RETURNING granted, tokens
"""


async def take_token(
    db: Database, kind: str, source: str, burst: int, window: float
) -> Tuple[bool, float]:
    """Take a token of C{source}'s bucket of C{kind} (at most C{burst}
    tokens, refilled at C{burst} per C{window} seconds): whether there was
    one, and the seconds until the bucket next holds one."""
    rate = burst / window
    granted, tokens = await db.one(
        _TAKE_TOKEN, {"kind": kind, "source": source, "burst": burst, "rate": rate}
    )
    return bool(granted), max(0.0, (1 - tokens) / rate) if rate else window


async def expire_rate_buckets(db: Database) -> None:
    """Delete buckets untouched for longer than any takes to fill up."""
    await db.execute(
        "DELETE FROM rate_buckets WHERE updated_at <= now() - %s * interval '1 second'",
        (SIGNUP_WINDOW_MAX,),
    )
