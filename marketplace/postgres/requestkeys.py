"""Request keys (PROTOCOL.md, Request keys): the answer of a write filed
under the client's key in the same transaction as the write, so that a
repeat of the request (after a dropped connection, on another frontend or
database primary) gets the first answer and changes nothing.

A key is filed in a scope, written here once: the session that sent it
(role and session key), or, for CreateAccount before there is an account,
the role and username.  Its row (schema.sql, request_answers) is found by
L{RequestKey.id}, the SHA-256 of scope and key (32 bytes, where the two as
text took over 100 in the row and again in the index).  A key is one
request: its row keeps the SHA-256 of the API and payload, and another
request under the key is BAD_REQUEST.

What a key may fill is bounded: an account's keyed writes are counted in
windows of L{KEY_WINDOW} seconds (request_key_counts, an unlogged table:
a count costs no write-ahead log, and one lost in a crash or a failover
only loosens the bound for the window it was in), and beyond its share a
keyed write is RATE_LIMITED and changes nothing; an answer that holds a
cart is filed as the cart's lines, not its JSON (see
marketplace/product/apisql.py, FILED_ANSWER).

A write runs with its key in one transaction that first claims the key
(an insert that waits for a concurrent claim of the same key to end), then
does the work, then files the answer.  A claim that finds the key taken
returns the answer filed there.  An error rolls everything back, the claim
too: the key stays free and a repeat really runs again.

The single-statement writes (marketplace/product/apisql.py), which must
stay one round trip, file the answer at their end instead; a repeat fails
there on the key's primary key, and then finds the first answer
(L{first_answer}).
"""

from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, Optional

import psycopg2.errors

from marketplace.contract.errors import RATE_LIMITED, ApiError, bad_request
from marketplace.frame import dispatch
from marketplace.frame.dispatch import fingerprint, key_id, session_scope

#: The shortest time a key is kept; see L{keep_for}.
KEEP_AT_LEAST = 900.0


def keep_for(session_timeout: float) -> float:
    """Seconds a key is kept: twice the session timeout, at least
    L{KEEP_AT_LEAST}: far beyond any client's retries (30 s by default),
    and as long as the session that sent it can live unused."""
    return max(2 * session_timeout, KEEP_AT_LEAST)


#: Seconds of the windows an account's keyed writes are counted in.
KEY_WINDOW = 60.0

#: The default of how many keyed writes an account may make per window.
DEFAULT_KEYS_PER_WINDOW = 300


@dataclass(frozen=True)
class RequestKey:
    """A write's key: what it is filed under (L{key_id} of its scope, whose
    keys it is among, and the client's key), the SHA-256 of the request it
    was first used for, and the account whose keyed writes it counts among
    (role and id; None: it is not counted, as CreateAccount's are not)."""

    id: bytes
    request: bytes
    role: Optional[str] = None
    account_id: Optional[int] = None


def of_request(
    request: dispatch.Request, scope: str, leave_out: Iterable[str] = ()
) -> Optional[RequestKey]:
    """The request's key in C{scope}, or None if it came without one."""
    if request.request_key is None:
        return None
    return RequestKey(
        key_id(scope, request.request_key), fingerprint(request.api, request.payload, leave_out)
    )


def of_session(
    request: dispatch.Request, role: str, session, payload: Optional[dict] = None
) -> Optional[RequestKey]:
    """The request's key among those of C{session} (a L{Session} of
    C{role}), counted among the account's; None if it came without one.
    C{payload} is what stands for the request's payload in its
    fingerprint, if not the payload itself."""
    if request.request_key is None:
        return None
    return RequestKey(
        key_id(session_scope(role, session.key), request.request_key),
        fingerprint(request.api, request.payload if payload is None else payload),
        role,
        session.user_id,
    )


_CLAIM = """
INSERT INTO request_answers (id, request, answer) VALUES (%s, %s, '')
ON CONFLICT (id) DO NOTHING RETURNING true
"""
_FILE_ANSWER = "UPDATE request_answers SET answer = %s WHERE id = %s"
_FIRST_ANSWER = "SELECT request, {answer} FROM request_answers WHERE id = %s"

#: Counts a keyed write of account %(account_id)s of %(role)s in its
#: window (one statement, so writes sent at once all count); the window's
#: count so far.  A window that has passed starts again from this write.
COUNT_KEY = f"""
INSERT INTO request_key_counts AS c (role, account_id, window_start, keys)
VALUES (%(role)s, %(account_id)s, now(), 1)
ON CONFLICT (role, account_id) DO UPDATE SET
    window_start = CASE WHEN c.window_start <= now() - interval '{KEY_WINDOW:g} seconds'
                        THEN now() ELSE c.window_start END,
    keys = CASE WHEN c.window_start <= now() - interval '{KEY_WINDOW:g} seconds'
                THEN 1 ELSE c.keys + 1 END
RETURNING keys
"""


def too_many_keys() -> ApiError:
    """The error of a keyed write beyond the account's share of a window."""
    return ApiError(
        RATE_LIMITED,
        "too many writes with a request_key from this account in the last"
        f" {KEY_WINDOW:g} seconds; nothing was changed, try again later",
    )


def another_request() -> ApiError:
    """The error of a key sent again with another API or payload."""
    return bad_request(
        'field "request_key": this key was used for another request'
        " (another API or payload); send a new key with a new request"
    )


def _first(row: tuple, request: bytes) -> dispatch.JsonPayload:
    filed_for, answer = row
    if bytes(filed_for) != request:
        raise another_request()
    return dispatch.JsonPayload(answer)


async def first_answer(
    db, key: RequestKey, answer_sql: str = "answer"
) -> Optional[dispatch.JsonPayload]:
    """The answer filed under C{key}, or None; BAD_REQUEST if the key was
    used for another request.  C{answer_sql} makes the answer of what is
    filed (an SQL expression over the column C{answer})."""
    row = await db.one(_FIRST_ANSWER.format(answer=answer_sql), (key.id,))
    return None if row is None else _first(row, key.request)


async def count(transaction, key: RequestKey, keys_per_window: int) -> None:
    """Count a keyed write of C{key}'s account; RATE_LIMITED beyond
    C{keys_per_window} (the caller's transaction then changes nothing)."""
    if key.account_id is None:
        return
    row = await transaction.one(COUNT_KEY, {"role": key.role, "account_id": key.account_id})
    if row[0] > keys_per_window:
        raise too_many_keys()


async def claim(
    transaction, key: RequestKey, keys_per_window: int, answer_sql: str = "answer"
) -> Optional[dispatch.JsonPayload]:
    """Claim C{key} in C{transaction}: None if it was free (it is this
    transaction's now, counted among the account's: RATE_LIMITED beyond
    C{keys_per_window}), else the answer filed under it (empty while the
    request is not done), or BAD_REQUEST if it was used for another
    request."""
    claimed = await transaction.one(_CLAIM, (key.id, key.request))
    if claimed is None:
        sql = _FIRST_ANSWER.format(answer=answer_sql)
        return _first(await transaction.one(sql, (key.id,)), key.request)
    await count(transaction, key, keys_per_window)
    return None


Work = Callable[[Any], Awaitable[Any]]


async def run(
    db,
    key: Optional[RequestKey],
    work: Work,
    keys_per_window: int = DEFAULT_KEYS_PER_WINDOW,
    answer_sql: str = "answer",
) -> Any:
    """The answer of C{work(db)}, a write on C{db} (a L{Database}).

    Without a key C{work} simply runs.  With one it runs inside a
    transaction that claims the key first and files the answer after; if
    the key was taken, C{work} does not run and the first answer is
    returned (or BAD_REQUEST: the key was used for another request).  An
    answer with a C{filed} attribute is filed as that text (a cart as its
    lines), which C{answer_sql} turns back into the answer.
    """
    if key is None:
        return await work(db)

    async def keyed(transaction) -> Any:
        first = await claim(transaction, key, keys_per_window, answer_sql)
        if first is not None:
            return first
        answer = await work(transaction)
        text = getattr(answer, "filed", None) or dispatch.payload_text(answer)
        await transaction.execute(_FILE_ANSWER, (text, key.id))
        return answer

    return await db.run_in_transaction(keyed)


def is_repeat(error: BaseException) -> bool:
    """Whether a statement failed because its request key was taken."""
    return (
        isinstance(error, psycopg2.errors.UniqueViolation)
        and error.diag.constraint_name == "request_answers_pkey"
    )


#: The table of the code before request_answers (scope, key and request
#: as text), left for its daemons during a rolling upgrade; see L{sweep}.
_OLDER_TABLE = "request_keys"


async def sweep(db, session_timeout: float, counted: bool = False) -> None:
    """Delete the keys older than L{keep_for}, and (C{counted}: on the
    database that counts them) the counts of windows that have passed.
    The older table of keys, while there is one, is swept as well."""
    # created_at is the second it was filed in, rounded down: one more
    # second, and every key is kept at least keep_for.
    keep = keep_for(session_timeout) + 1
    await db.execute(
        "DELETE FROM request_answers WHERE created_at < now() - %s * interval '1 second'", (keep,)
    )
    (older,) = await db.one("SELECT to_regclass(%s) IS NOT NULL", (_OLDER_TABLE,))
    if older:
        await db.execute(
            f"DELETE FROM {_OLDER_TABLE} WHERE created_at < now() - %s * interval '1 second'",
            (keep,),
        )
    if counted:
        await db.execute(
            "DELETE FROM request_key_counts WHERE window_start < now() - %s * interval '1 second'",
            (KEY_WINDOW,),
        )
