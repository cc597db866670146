"""Accounts and sessions, the same for buyers and sellers.

A session id is 256 random bits from L{secrets}; the database files the
session under the SHA-256 of the id (its key), never under the id itself.

Usernames are compared in their normal form, and new passwords must be
long enough and not common (L{marketplace.customer.identities}).  Password hashing
is admitted through the daemon's L{HashingBudget}; account creation is
limited per source address over time, and live sessions per user
(L{AccountLimits}).
"""

import secrets
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Dict, Optional

from twisted.python import usage

from marketplace.contract import validate
from marketplace.contract.errors import (
    INVALID_CREDENTIALS,
    INVALID_SESSION,
    RATE_LIMITED,
    USERNAME_TAKEN,
    ApiError,
)
from marketplace.customer import customerdb, identities
from marketplace.customer.passwords import (
    DEFAULT_HASH_PER_SOURCE,
    DEFAULT_HASH_PER_USERNAME,
    DEFAULT_HASH_QUEUE,
    DEFAULT_HASH_WORKERS,
    HashingBudget,
    Passwords,
)
from marketplace.postgres.database import Database
from marketplace.postgres import requestkeys
from marketplace.frame.dispatch import Api, Call, Reply, Session, session_key, username_scope
from marketplace.frame.limits import LOGIN_WINDOW, MAX_LOGIN_FAILURES

DEFAULT_SESSION_TIMEOUT = 300.0
DEFAULT_SIGNUPS_PER_ADDRESS = 20
DEFAULT_SIGNUP_WINDOW = 600.0
#: Longest signup window: counts older than this are swept away.
SIGNUP_WINDOW_MAX = customerdb.SIGNUP_WINDOW_MAX
DEFAULT_MAX_SESSIONS = 10
DEFAULT_KEYS_PER_WINDOW = requestkeys.DEFAULT_KEYS_PER_WINDOW


@dataclass
class AccountLimits:
    """The daemon's limits on accounts: the hashing budget (see
    L{HashingBudget}), account creations per source address within a
    window, live sessions per user (a login beyond it ends the oldest),
    and writes with a request key per account per minute (beyond it
    RATE_LIMITED; it bounds what one account's keys fill)."""

    hash_workers: int = DEFAULT_HASH_WORKERS
    hash_queue: int = DEFAULT_HASH_QUEUE
    hash_per_address: int = DEFAULT_HASH_PER_SOURCE
    hash_per_username: int = DEFAULT_HASH_PER_USERNAME
    signups_per_address: int = DEFAULT_SIGNUPS_PER_ADDRESS
    signup_window: float = DEFAULT_SIGNUP_WINDOW
    max_sessions: int = DEFAULT_MAX_SESSIONS
    request_keys_per_minute: int = DEFAULT_KEYS_PER_WINDOW

    def budget(self) -> HashingBudget:
        """A hashing budget of these sizes."""
        return HashingBudget(
            self.hash_workers, self.hash_queue, self.hash_per_address, self.hash_per_username
        )


OPTIONS = [
    ["hash-workers", None, str(DEFAULT_HASH_WORKERS),
     "Password hashes (argon2id, 64 MiB each) computed at once per process."],
    ["hash-queue", None, str(DEFAULT_HASH_QUEUE),
     "Password hashes that may wait for a turn; beyond it RATE_LIMITED."],
    ["hash-per-address", None, str(DEFAULT_HASH_PER_SOURCE),
     "One source address's share of the hashes running and waiting."],
    ["hash-per-username", None, str(DEFAULT_HASH_PER_USERNAME),
     "One username's share of the Login hashes running and waiting."],
    ["signups-per-address", None, str(DEFAULT_SIGNUPS_PER_ADDRESS),
     "Accounts one source address may try to create per --signup-window."],
    ["signup-window", None, str(DEFAULT_SIGNUP_WINDOW),
     "Seconds over which --signups-per-address counts (at most 7 days)."],
    ["max-sessions", None, str(DEFAULT_MAX_SESSIONS),
     "Live sessions one user may hold; a login beyond it ends the oldest."],
    ["request-keys-per-minute", None, str(DEFAULT_KEYS_PER_WINDOW),
     "Writes with a request_key one account may make per minute; beyond it"
     " RATE_LIMITED."],
]


def limits_from_options(options) -> AccountLimits:
    """The L{AccountLimits} named by the L{OPTIONS} of parsed options."""
    try:
        limits = AccountLimits(
            hash_workers=int(options["hash-workers"]),
            hash_queue=int(options["hash-queue"]),
            hash_per_address=int(options["hash-per-address"]),
            hash_per_username=int(options["hash-per-username"]),
            signups_per_address=int(options["signups-per-address"]),
            signup_window=float(options["signup-window"]),
            max_sessions=int(options["max-sessions"]),
            request_keys_per_minute=int(options["request-keys-per-minute"]),
        )
    except ValueError as e:
        raise usage.UsageError(f"an account limit is not a number: {e}")
    if (
        min(limits.hash_workers, limits.hash_per_address, limits.hash_per_username) < 1
        or limits.hash_queue < 0
        or limits.signups_per_address < 0
        or not 0 < limits.signup_window <= SIGNUP_WINDOW_MAX
        or limits.max_sessions < 1
        or limits.request_keys_per_minute < 1
    ):
        raise usage.UsageError(
            "--hash-workers, --hash-per-address, --hash-per-username,"
            " --max-sessions and --request-keys-per-minute must be at least 1, --hash-queue and"
            " --signups-per-address at least 0, --signup-window above 0 and"
            " at most 7 days"
        )
    return limits


def invalid_session(role: str) -> ApiError:
    """The error of a session that is not a live one of C{role}."""
    return ApiError(
        INVALID_SESSION,
        f"the session is unknown, logged out or expired, or not a {role}'s; log in again",
    )


def new_session_id() -> str:
    """A fresh session id."""
    return secrets.token_urlsafe(32)


@dataclass
class Accounts:
    """The account APIs of one role, on the customer database.

    C{on_login} and C{on_logout} let the buyer service set up and drop a
    session's active cart.  After C{max_login_failures} failed logins of
    one username within C{login_window} seconds, Login answers RATE_LIMITED
    until the window has passed; the count is in the customer database, so
    every instance of the service shares it.
    """

    role: str
    customer: Database
    passwords: Passwords
    session_timeout: float = DEFAULT_SESSION_TIMEOUT
    on_login: Optional[Callable[[str, int], Awaitable[None]]] = None
    on_logout: Optional[Callable[[str], Awaitable[None]]] = None
    max_login_failures: int = MAX_LOGIN_FAILURES
    login_window: float = LOGIN_WINDOW
    limits: AccountLimits = field(default_factory=AccountLimits)

    @property
    def id_field(self) -> str:
        return f"{self.role}_id"

    async def authenticate(self, session_id: str) -> Session:
        """The live session of this role with this id, or INVALID_SESSION."""
        key = session_key(session_id)
        account_id = await customerdb.touch_session(
            self.customer, key, self.role, self.session_timeout
        )
        if account_id is None:
            raise invalid_session(self.role)
        return Session(account_id, key)

    async def create_account(self, call: Call) -> dict:
        raw = validate.text(call.payload, "username", 1, 32, spaces=False)
        username = identities.new_username(raw)
        password = identities.new_password(
            validate.text(call.payload, "password", 1, identities.PASSWORD_MAX)
        )
        name = validate.text(call.payload, "name", 1, 32, required=False) or raw
        # The password is left out of the key's request: it is never filed,
        # not even as a fast hash.  A repeat is answered before hashing.
        key = requestkeys.of_request(
            call.request, username_scope(self.role, username), ("password",)
        )
        if key is not None:
            first = await requestkeys.first_answer(self.customer, key)
            if first is not None:
                return first
        password_hash = await self.passwords.hash(
            password, call.source, admit=lambda: self._count_signup(call.source)
        )

        async def create(db) -> dict:
            account_id = await customerdb.create_account(
                db, self.role, username, name, password_hash
            )
            if account_id is None:
                raise ApiError(
                    USERNAME_TAKEN, f"there is already a {self.role} called {username!r}"
                )
            return {self.id_field: account_id}

        return await requestkeys.run(self.customer, key, create)

    async def check_username(self, call: Call) -> dict:
        """CheckUsername: whether an account of this role could take the
        name (CreateAccount would say as much, after the password).  The
        answer's username is the name's normal form, the one it would get."""
        raw = validate.text(call.payload, "username", 1, 32, spaces=False)
        username = identities.new_username(raw)
        found = await customerdb.find_login(self.customer, self.role, username, username)
        return {"username": username, "available": found is None}

    async def _count_signup(self, source: Optional[str]) -> None:
        """Count an account creation from C{source}; RATE_LIMITED past the
        limit of its window.  (None: a caller in this process.)"""
        if source is None:
            return
        limits = self.limits
        count = await customerdb.count_signup(self.customer, source, limits.signup_window)
        if count > limits.signups_per_address:
            raise ApiError(
                RATE_LIMITED,
                "too many accounts created from your address; try again later",
            )

    async def login(self, call: Call) -> Reply:
        # The old rules still let an existing account log in (see
        # customerdb.find_login); the normal form finds every new one.
        raw = validate.text(call.payload, "username", 1, 32, spaces=False)
        password = validate.text(call.payload, "password", 1, identities.PASSWORD_MAX)
        username = identities.username_key(raw) or raw
        failures = await customerdb.login_failures(
            self.customer, self.role, username, self.login_window
        )
        if failures >= self.max_login_failures:
            raise ApiError(
                RATE_LIMITED,
                "too many failed logins for this username; try again in a few minutes",
            )
        found = await customerdb.find_login(self.customer, self.role, username, raw)
        stored = found[1] if found else None
        form = identities.password_form(password)
        # Accounts made before passwords were normalised hashed them as sent.
        verified = await self.passwords.verify(
            stored, form, call.source, (self.role, username), also=tuple({password} - {form})
        )
        if not verified:
            # Only failures count, each in one statement: a right password
            # never brings the account nearer to the limit.
            await customerdb.count_login_failure(
                self.customer, self.role, username, self.login_window
            )
            raise ApiError(INVALID_CREDENTIALS, "wrong username or password")
        account_id = found[0]
        session_id = new_session_id()
        key = session_key(session_id)
        if self.on_login is not None:
            await self.on_login(key, account_id)
        ended = await customerdb.open_session(
            self.customer, key, self.role, account_id, self.limits.max_sessions
        )
        if ended and self.on_logout is not None:
            for old in ended:
                await self.on_logout(old)
        return Reply(
            {"session_id": session_id, self.id_field: account_id}, session_id
        )

    async def logout(self, call: Call) -> Reply:
        await customerdb.close_session(self.customer, call.session.key, self.role)
        if self.on_logout is not None:
            await self.on_logout(call.session.key)
        return Reply({}, None)

    def apis(self) -> Dict[str, Api]:
        """The account APIs, by name."""
        return {
            "CreateAccount": Api(self.create_account, needs_session=False),
            "Login": Api(self.login, needs_session=False),
            "CheckUsername": Api(self.check_username, needs_session=False),
            "Logout": Api(self.logout),
        }
