"""Accounts and sessions, the same for buyers and sellers.

A session id is 256 random bits from L{secrets}; the database files the
session under the SHA-256 of the id (its key), never under the id itself.
"""

import hashlib
import secrets
from dataclasses import dataclass
from typing import Awaitable, Callable, Dict, Optional

from marketplace import customerdb, validate
from marketplace.database import Database
from marketplace.dispatch import Api, Call, Reply, Session
from marketplace.errors import (
    INVALID_CREDENTIALS,
    INVALID_SESSION,
    RATE_LIMITED,
    USERNAME_TAKEN,
    ApiError,
)
from marketplace.limits import LOGIN_WINDOW, MAX_LOGIN_FAILURES
from marketplace.passwords import Passwords

DEFAULT_SESSION_TIMEOUT = 300.0


def session_key(session_id: str) -> str:
    """The key a session is filed under: the SHA-256 of its id."""
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()


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
            raise ApiError(
                INVALID_SESSION,
                f"the session is unknown, logged out or expired, or not a {self.role}'s;"
                " log in again",
            )
        return Session(account_id, key)

    async def create_account(self, call: Call) -> dict:
        username = validate.text(call.payload, "username", 1, 32, spaces=False)
        password = validate.text(call.payload, "password", 1, 128)
        name = validate.text(call.payload, "name", 1, 32, required=False) or username
        password_hash = await self.passwords.hash(password)
        account_id = await customerdb.create_account(
            self.customer, self.role, username, name, password_hash
        )
        if account_id is None:
            raise ApiError(
                USERNAME_TAKEN, f"there is already a {self.role} called {username!r}"
            )
        return {self.id_field: account_id}

    async def check_username(self, call: Call) -> dict:
        """CheckUsername: whether an account of this role could take the
        name (CreateAccount would say as much, after the password)."""
        username = validate.text(call.payload, "username", 1, 32, spaces=False)
        found = await customerdb.find_login(self.customer, self.role, username)
        return {"username": username, "available": found is None}

    async def login(self, call: Call) -> Reply:
        username = validate.text(call.payload, "username", 1, 32, spaces=False)
        password = validate.text(call.payload, "password", 1, 128)
        attempts, window_start = await customerdb.count_login_attempt(
            self.customer, self.role, username, self.login_window
        )
        if attempts > self.max_login_failures:
            raise ApiError(
                RATE_LIMITED,
                "too many failed logins for this username; try again in a few minutes",
            )
        try:
            found = await customerdb.find_login(self.customer, self.role, username)
            stored = found[1] if found else None
            verified = await self.passwords.verify(stored, password)
        except Exception:
            # Not a failed login: the attempt could not be checked.
            await self._forget_attempt(username, window_start)
            raise
        if not verified:
            raise ApiError(INVALID_CREDENTIALS, "wrong username or password")
        await customerdb.forget_login_attempt(
            self.customer, self.role, username, window_start
        )
        account_id = found[0]
        session_id = new_session_id()
        key = session_key(session_id)
        if self.on_login is not None:
            await self.on_login(key, account_id)
        await customerdb.open_session(self.customer, key, self.role, account_id)
        return Reply(
            {"session_id": session_id, self.id_field: account_id}, session_id
        )

    async def _forget_attempt(self, username: str, window_start) -> None:
        try:
            await customerdb.forget_login_attempt(
                self.customer, self.role, username, window_start
            )
        except Exception:
            pass  # the database is gone too; the count errs on the safe side

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
