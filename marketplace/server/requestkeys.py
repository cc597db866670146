"""Request keys (PROTOCOL.md, Request keys): the answer of a write filed
under the client's key in the same transaction as the write, so that a
repeat of the request (after a dropped connection, on another frontend or
database primary) gets the first answer and changes nothing.

A write runs with its key in one transaction that first claims the key
(an insert that waits for a concurrent claim of the same key to end), then
does the work, then files the answer.  A claim that finds the key taken
returns the answer filed there.  An error rolls everything back, the claim
too: the key stays free and a repeat really runs again.

The single-statement writes (marketplace/server/statements.py), which
must stay one round trip, file the answer at their end instead
(L{record_cte}); a repeat fails there on the key's primary key, and then
finds the first answer (L{first_answer_of}).
"""

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, Optional

import psycopg2.errors

from marketplace.contract.errors import bad_request
from marketplace.frame import envelope

#: The shortest time a key is kept; see L{keep_for}.
KEEP_AT_LEAST = 900.0


def keep_for(session_timeout: float) -> float:
    """Seconds a key is kept: twice the session timeout, at least
    L{KEEP_AT_LEAST}: far beyond any client's retries (30 s by default),
    and as long as the session that sent it can live unused."""
    return max(2 * session_timeout, KEEP_AT_LEAST)


@dataclass(frozen=True)
class RequestKey:
    """A write's key: its scope (whose keys it is among), the client's
    key, and the SHA-256 of the request it was first used for."""

    scope: str
    key: str
    request: str


def account_scope(role: str, account_id: int) -> str:
    """The scope of an account's keys."""
    return f"{role}:{account_id}"


def username_scope(role: str, username: str) -> str:
    """The scope of CreateAccount's keys, before there is an account."""
    return f"{role}:username:{username}"


def fingerprint(api: str, payload: dict, leave_out: Iterable[str] = ()) -> str:
    """The SHA-256 (hex) of an API and its payload, the fields C{leave_out}
    left out (a password is never filed, not even as a fast hash)."""
    kept = {name: value for name, value in payload.items() if name not in leave_out}
    text = json.dumps([api, kept], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def of_request(
    request: envelope.Request, scope: str, leave_out: Iterable[str] = ()
) -> Optional[RequestKey]:
    """The request's key in C{scope}, or None if it came without one."""
    if request.request_key is None:
        return None
    return RequestKey(
        scope, request.request_key, fingerprint(request.api, request.payload, leave_out)
    )


def of_account(request: envelope.Request, role: str, account_id: int) -> Optional[RequestKey]:
    """The request's key among an account's, or None if it came without one."""
    return of_request(request, account_scope(role, account_id))


_CLAIM = """
INSERT INTO request_keys (scope, key, request, answer) VALUES (%s, %s, %s, '')
ON CONFLICT (scope, key) DO NOTHING RETURNING true
"""
_FILE_ANSWER = "UPDATE request_keys SET answer = %s WHERE scope = %s AND key = %s"
_FIRST_ANSWER = "SELECT request, answer FROM request_keys WHERE scope = %s AND key = %s"


def _first(row: tuple, key: RequestKey) -> envelope.JsonPayload:
    request, answer = row
    if request != key.request:
        raise bad_request(
            'field "request_key": this key was used for another request'
            " (another API or payload); send a new key with a new request"
        )
    return envelope.JsonPayload(answer)


async def first_answer(db, key: RequestKey) -> Optional[envelope.JsonPayload]:
    """The answer filed under C{key}, or None; BAD_REQUEST if the key was
    used for another request."""
    row = await db.one(_FIRST_ANSWER, (key.scope, key.key))
    return None if row is None else _first(row, key)


def first_answer_sql(live: str, scope: str) -> str:
    """SQL of the answer filed under the key of L{statement_args} in
    C{scope} (an SQL expression over C{a}, the row of C{live}: a common
    table expression whose one row has the account_id)."""
    return f"""{live}
SELECT k.request, k.answer FROM live AS a
JOIN request_keys AS k ON k.scope = {scope} AND k.key = %(rk_key)s::text
"""


async def first_answer_of(db, sql: str, args: dict) -> Optional[envelope.JsonPayload]:
    """The answer filed under the key of C{args} (L{statement_args}, and
    those of C{sql}, a L{first_answer_sql}), or None; BAD_REQUEST if the
    key was used for another request."""
    row = await db.one(sql, args)
    return None if row is None else _first(row, RequestKey("", args["rk_key"], args["rk_request"]))


Work = Callable[[Any], Awaitable[Any]]


async def run(db, key: Optional[RequestKey], work: Work) -> Any:
    """The answer of C{work(db)}, a write on C{db} (a L{Database}).

    Without a key C{work} simply runs.  With one it runs inside a
    transaction that claims the key first and files the answer after; if
    the key was taken, C{work} does not run and the first answer is
    returned (or BAD_REQUEST: the key was used for another request).
    """
    if key is None:
        return await work(db)

    async def keyed(transaction) -> Any:
        claimed = await transaction.one(_CLAIM, (key.scope, key.key, key.request))
        if claimed is None:
            return _first(await transaction.one(_FIRST_ANSWER, (key.scope, key.key)), key)
        answer = await work(transaction)
        text = envelope.payload_text(answer)
        await transaction.execute(_FILE_ANSWER, (text, key.scope, key.key))
        return answer

    return await db.run_in_transaction(keyed)


def record_cte(scope: str, answer: str, source: str, done: str) -> str:
    """SQL of a common table expression, C{recorded}, for a statement that
    writes its answer in SQL: it files C{answer} (an SQL text expression
    over C{source}) under the key in C{scope} (an SQL expression) where
    C{done} holds.  Its arguments are L{statement_args}'s."""
    return f"""recorded AS (
    INSERT INTO request_keys (scope, key, request, answer)
    SELECT {scope}, %(rk_key)s::text, %(rk_request)s::text, {answer} FROM {source}
    WHERE %(rk_key)s::text IS NOT NULL AND {done}
)"""


def statement_args(request: envelope.Request) -> dict:
    """The arguments of L{record_cte} for a request (None: no key)."""
    if request.request_key is None:
        return {"rk_key": None, "rk_request": None}
    return {
        "rk_key": request.request_key,
        "rk_request": fingerprint(request.api, request.payload),
    }


def is_repeat(error: BaseException) -> bool:
    """Whether a statement failed because its request key was taken."""
    return (
        isinstance(error, psycopg2.errors.UniqueViolation)
        and error.diag.constraint_name == "request_keys_pkey"
    )


async def sweep(db, session_timeout: float) -> None:
    """Delete the keys older than L{keep_for}."""
    await db.execute(
        "DELETE FROM request_keys WHERE created_at < now() - %s * interval '1 second'",
        (keep_for(session_timeout),),
    )
