"""APIs that answer with one statement, and the session strategy they share.

Each such API (DisplayItemsForSale, ChangeItemPrice, UpdateUnitsForSale,
SearchItemsForSale, GetItem, AddItemToCart, DisplayCart) is one handler
and one statement; the statements are in marketplace/product/apisql.py,
each readable whole there.  A statement starts with a common table
expression C{live}, the session's account, and answers one row: an outcome
(L{DONE}, or why not) and the payload, written as JSON by PostgreSQL.  The
handler maps a refusal to its PROTOCOL.md error, so an error never runs
the work again.

How C{live} is made is the service's session strategy (L{SessionCheck}),
chosen once when the service is built:

- L{JOINED}, where customer and product data share a database (the
  embedded default, or settings naming one database for both): C{live}
  checks and touches the session in the statement itself, so the API costs
  one round trip.  It has no row for a session that is not live, and the
  statement then answers none (INVALID_SESSION).
- L{SEPARATE}, where they are two databases: the dispatcher checks the
  session on the customer database first, and C{live} is the account it
  found.

A write files its answer under the request's key in the same statement,
after counting it among the account's keyed writes (beyond its share the
outcome is L{TOO_MANY_KEYS}: RATE_LIMITED).  Where that fails because the
key is taken (a repeat), or the outcome is a refusal and the request has a
key, the answer filed under the key is returned if there is one: a
concurrent repeat waited for the first one's row locks, so the first is
committed by then.

Where the product database has standbys (a read pool, see
marketplace/postgres/database.py), the catalog reads run there
(L{Statements.read_catalog}) and the reads that must see the session's
writes run there when the primary cannot be reached (L{Statements.read});
on one database their C{live} is the "standby" one, which checks the
session without touching it (the touch goes to the primary afterwards).

The handlers are built with Deferred callbacks alone: they are the busiest
code of the service, and a coroutine costs more to start and resume than a
callback does to run.
"""

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

from twisted.internet import defer

from marketplace.contract.errors import ApiError
from marketplace.customer.accounts import Accounts, invalid_session
from marketplace.postgres.database import Database
from marketplace.frame import dispatch
from marketplace.postgres import requestkeys
from marketplace.frame.dispatch import Api, Call, Handler
from marketplace.frame.unavailable import is_unavailable

#: The outcome of a statement that did its work.
#: The outcome of a statement that did its work (the others say why not).
DONE = "done"
#: The outcome of a keyed write beyond the account's share of its window.
TOO_MANY_KEYS = "too many keys"


@dataclass(frozen=True)
class SessionCheck:
    """A session strategy: how a statement learns whose session it serves.

    C{name} is the layout it serves ("joined" or "separate": which
    C{live} begins every statement, see apisql.LIVE); C{joined} says
    whether it checks the session itself (the dispatcher then does not).
    """

    name: str
    joined: bool

    def args(self, call: Call, role: str, timeout: float, more: dict) -> dict:
        """The arguments C{live} takes, C{key} (the session's key) and
        C{more}."""
        if self.joined:
            key = dispatch.session_key(call.request.session_id)
            return {"key": key, "role": role, "timeout": timeout, **more}
        session = call.session
        return {"key": session.key, "role": role, "account_id": session.user_id, **more}


JOINED = SessionCheck("joined", True)

SEPARATE = SessionCheck("separate", False)


def session_check(one_database: bool) -> SessionCheck:
    """The strategy for customer and product data in one database or two."""
    return JOINED if one_database else SEPARATE


#: What a handler makes of a refusal: the row, the statement's arguments.
Refusal = Callable[[tuple, dict], ApiError]


@dataclass(frozen=True)
class Statement:
    """An API's statement in one strategy, and the name it is prepared as;
    C{standby}: the same for a standby (it writes nothing), where it has one;
    C{unkeyed}: a write's form for a request without a key, where it has one."""

    name: str
    sql: str
    standby: Optional["Statement"] = None
    unkeyed: Optional["Statement"] = None


class Statements:
    """The single-statement APIs of one role on the product database."""

    def __init__(
        self, db: Database, sessions: SessionCheck, accounts: Accounts, filed_answer: str
    ) -> None:
        self.db = db
        self.sessions = sessions
        self.accounts = accounts
        self.role = accounts.role
        #: The answer of what a key's row holds (SQL over its C{answer}).
        self.filed_answer = filed_answer

    @property
    def layout(self) -> str:
        """The layout the statements must be written for (apisql.LIVE)."""
        return self.sessions.name

    def read_statement(self, name: str, api: str) -> Statement:
        """The statement of C{api} (an apisql name) that only reads, with its
        form for a standby: on one database the standby's checks the
        session without touching it."""
        from marketplace.product import apisql  # apisql imports this module

        layout = self.layout
        standby = "standby" if self.sessions.joined else layout
        return Statement(
            f"{name}_{layout}",
            apisql.full_text(api, layout),
            Statement(f"{name}_{standby}", apisql.full_text(api, standby)),
        )

    def write_statement(self, name: str, api: str) -> Statement:
        """The statement of C{api} (an apisql name) that writes, with its
        form for a request without a key (which counts and files nothing)."""
        from marketplace.product import apisql  # apisql imports this module

        layout = self.layout
        return Statement(
            f"{name}_{layout}",
            apisql.full_text(api, layout),
            unkeyed=Statement(f"{name}_{layout}_unkeyed", apisql.full_text(api, layout, keyed=False)),
        )

    def apis(self, handlers: Dict[str, Handler]) -> Dict[str, Api]:
        """The APIs of these C{handlers}, by name: the dispatcher checks
        their session only where their statement does not."""
        joined = self.sessions.joined
        return {name: Api(handler, checks_session=joined) for name, handler in handlers.items()}

    def args(self, call: Call, **more: Any) -> dict:
        """The arguments of a statement for C{call}: C{live}'s and C{more}."""
        return self.sessions.args(call, self.role, self.accounts.session_timeout, more)

    def refuse(self, call: Call, error: ApiError) -> defer.Deferred:
        """Fail with C{error} (a payload that does not validate), after the
        session check where the statement would have made it: an invalid
        session is reported before a malformed payload, in both layouts."""
        if not self.sessions.joined:
            return defer.fail(error)
        d = defer.ensureDeferred(self.accounts.authenticate(call.request.session_id))
        return d.addCallback(_raise, error)

    def read(
        self, statement: Statement, args: dict, refused: Optional[Refusal] = None
    ) -> defer.Deferred:
        """A Deferred of the payload of a statement that changes nothing and
        must see the session's own writes: on the primary; on a standby
        (L{Statement.standby}) when the primary cannot be reached (a
        synchronous standby has applied every write acknowledged)."""
        d = self.db.prepared(statement.name, statement.sql, args)
        if statement.standby is not None and self.db.has_replicas:
            d.addErrback(self._on_standby, statement.standby, args)
        return d.addCallback(self._payload, args, refused)

    def _on_standby(self, failure, standby: Statement, args: dict):
        if not is_unavailable(failure.value):
            return failure
        return self.db.replicas.prepared(standby.name, standby.sql, args)

    def read_catalog(
        self, statement: Statement, args: dict, refused: Optional[Refusal] = None
    ) -> defer.Deferred:
        """A Deferred of the payload of a catalog read (L{read}'s, but
        answered by a standby where there are any, to spread the load; the
        primary if none can be reached).  A session the standby does not
        know is looked for on the primary; one it knows is touched there
        (not waited for, L{Touches})."""
        if not self.db.has_replicas or statement.standby is None:
            return self.read(statement, args, refused)
        standby = statement.standby
        d = self.db.replicas.prepared(standby.name, standby.sql, args)
        return d.addCallback(self._catalog_rows, statement, args, refused)

    def _catalog_rows(self, rows: list, statement: Statement, args: dict, refused):
        if rows or not self.sessions.joined:
            if self.sessions.joined:
                self.accounts.touches.touch(args["key"])
            return self._payload(rows, args, refused)
        d = self.db.prepared(statement.name, statement.sql, args)
        d.addErrback(_unless_unavailable, rows)
        return d.addCallback(self._payload, args, refused)

    def write(
        self, call: Call, statement: Statement, args: dict, refused: Refusal
    ) -> defer.Deferred:
        """A Deferred of the payload of a statement that writes and files
        its answer under the request's key."""
        args.update(_key_args(call.request, self.role, args["key"]))
        args["rk_max"] = self.accounts.limits.request_keys_per_minute
        keyed = args["rk_id"] is not None
        if not keyed:
            statement = statement.unkeyed or statement
        d = self.db.prepared(statement.name, statement.sql, args)
        if not keyed:
            return d.addCallback(self._payload, args, refused)
        return d.addCallbacks(
            self._keyed_payload,
            self._keyed_failure,
            callbackArgs=(args, refused),
            errbackArgs=(args,),
        )

    def _payload(self, rows: list, args: dict, refused: Optional[Refusal]):
        if not rows:
            raise invalid_session(self.role)
        row = rows[0]
        if row[0] == DONE:
            return dispatch.JsonPayload(row[1])
        if row[0] == TOO_MANY_KEYS:
            raise requestkeys.too_many_keys()
        raise refused(row, args)

    def _keyed_payload(self, rows: list, args: dict, refused: Refusal):
        if not rows or rows[0][0] == DONE:
            return self._payload(rows, args, refused)
        # Refused: but a repeat of a request that did its work then gets
        # the first answer.
        row = rows[0]
        error = requestkeys.too_many_keys() if row[0] == TOO_MANY_KEYS else refused(row, args)
        return self._first_answer(args).addCallback(_or_raise, error)

    def _keyed_failure(self, failure, args: dict):
        if not requestkeys.is_repeat(failure.value):
            return failure
        return self._first_answer(args).addCallback(_or_fail, failure)

    def _first_answer(self, args: dict) -> defer.Deferred:
        key = requestkeys.RequestKey(args["rk_id"], args["rk_request"])
        return defer.ensureDeferred(requestkeys.first_answer(self.db, key, self.filed_answer))


def _key_args(request: dispatch.Request, role: str, session_key: str) -> dict:
    """The request-key arguments of a single statement (apisql) for a
    request of C{role}'s session C{session_key} (all None: no key): the
    digests of requestkeys.of_request, made here from dispatch's own
    functions so that an AddItemToCart walks no further file
    (tests/test_request_path.py)."""
    if request.request_key is None:
        return _NO_KEY
    scope = dispatch.session_scope(role, session_key)
    return {
        "rk_id": dispatch.key_id(scope, request.request_key),
        "rk_request": dispatch.fingerprint(request.api, request.payload),
    }


_NO_KEY = {"rk_id": None, "rk_request": None}


def _unless_unavailable(failure, rows: list):
    # The primary away: the standby's answer (no such live session) stands.
    return rows if is_unavailable(failure.value) else failure


def _raise(_, error: ApiError):
    raise error


def _or_raise(answer, error: ApiError):
    if answer is None:
        raise error
    return answer


def _or_fail(answer, failure):
    # The key's row was swept between the conflict and the look-up.
    return failure if answer is None else answer


__all__ = ["DONE", "JOINED", "SEPARATE", "TOO_MANY_KEYS", "SessionCheck", "Statements", "session_check"]
