"""Accounts and sessions, the same for buyers and sellers.

A session id is 256 random bits from L{secrets}; the database files the
session under the SHA-256 of the id (its key), never under the id itself.

Usernames are compared in their normal form, and new passwords must be
long enough and not common (L{marketplace.customer.identities}).  Password hashing
is admitted through the daemon's L{HashingBudget}; account creation and
username checks are limited per source address by token buckets (trusted
networks exempt), failed logins per username and source address, and live
sessions per user (L{AccountLimits}, L{marketplace.customer.throttles}).
"""

import secrets
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, Optional

from twisted.internet import task
from twisted.python import usage

from marketplace.contract import validate
from marketplace.contract.errors import (
    INVALID_CREDENTIALS,
    INVALID_SESSION,
    RATE_LIMITED,
    USERNAME_TAKEN,
    ApiError,
)
from marketplace.customer import customerdb, identities, throttles
from marketplace.customer.touches import Touches
from marketplace.customer.passwords import (
    DEFAULT_HASH_MEMORY,
    DEFAULT_HASH_PER_SOURCE,
    DEFAULT_HASH_PER_USERNAME,
    DEFAULT_HASH_QUEUE,
    DEFAULT_HASH_WORKERS,
    MIN_HASH_MEMORY,
    HashingBudget,
    Passwords,
    hasher,
)
from marketplace.postgres.database import Database
from marketplace.postgres import requestkeys
from marketplace.frame.dispatch import Api, Call, Reply, Session, session_key, username_scope
from marketplace.frame.unavailable import is_unavailable
from marketplace.frame.limits import LOGIN_WINDOW, MAX_LOGIN_FAILURES

DEFAULT_SESSION_TIMEOUT = 300.0
DEFAULT_SIGNUPS_PER_ADDRESS = 20
DEFAULT_SIGNUP_WINDOW = 600.0
DEFAULT_USERNAME_CHECKS_PER_ADDRESS = 60
#: Longest signup window: counts older than this are swept away.
SIGNUP_WINDOW_MAX = customerdb.SIGNUP_WINDOW_MAX
DEFAULT_MAX_SESSIONS = 10
DEFAULT_KEYS_PER_WINDOW = requestkeys.DEFAULT_KEYS_PER_WINDOW


@dataclass
class AccountLimits:
    """The daemon's limits on accounts: the hashing budget (see
    L{HashingBudget}); account creations and username checks per source
    address, each a token bucket of C{signups_per_address} (or
    C{username_checks_per_address}) tokens that fills up again in
    C{signup_window} seconds, with C{trusted_networks} exempt; live
    sessions per user (a login beyond it ends the oldest); and writes with
    a request key per account per minute (beyond it RATE_LIMITED; it
    bounds what one account's keys fill)."""

    hash_workers: int = DEFAULT_HASH_WORKERS
    hash_queue: int = DEFAULT_HASH_QUEUE
    hash_per_address: int = DEFAULT_HASH_PER_SOURCE
    hash_per_username: int = DEFAULT_HASH_PER_USERNAME
    hash_memory: int = DEFAULT_HASH_MEMORY
    signups_per_address: int = DEFAULT_SIGNUPS_PER_ADDRESS
    signup_window: float = DEFAULT_SIGNUP_WINDOW
    max_sessions: int = DEFAULT_MAX_SESSIONS
    request_keys_per_minute: int = DEFAULT_KEYS_PER_WINDOW
    username_checks_per_address: int = DEFAULT_USERNAME_CHECKS_PER_ADDRESS
    #: Comma-separated networks (or "none").
    trusted_networks: str = throttles.DEFAULT_TRUSTED_NETWORKS

    def trusted(self) -> throttles.TrustedNetworks:
        """The trusted networks, parsed."""
        text = self.trusted_networks.strip()
        if text.lower() == "none":
            return throttles.TrustedNetworks()
        return throttles.TrustedNetworks(throttles.parse_networks(text))

    def budget(self) -> HashingBudget:
        """A hashing budget of these sizes."""
        return HashingBudget(
            self.hash_workers, self.hash_queue, self.hash_per_address, self.hash_per_username
        )

    def passwords(self) -> Passwords:
        """Password hashing with this memory and within this budget."""
        return Passwords(hasher(self.hash_memory), self.budget())


OPTIONS = [
    ["hash-workers", None, str(DEFAULT_HASH_WORKERS),
     "Password hashes (argon2id, 64 MiB each) computed at once per process."],
    ["hash-queue", None, str(DEFAULT_HASH_QUEUE),
     "Password hashes that may wait for a turn; beyond it RATE_LIMITED."],
    ["hash-per-address", None, str(DEFAULT_HASH_PER_SOURCE),
     "Hashes one source address may have running and waiting; beyond it"
     " RATE_LIMITED."],
    ["hash-per-username", None, str(DEFAULT_HASH_PER_USERNAME),
     "Login hashes of one username run at once; the others wait."],
    ["hash-memory", None, str(DEFAULT_HASH_MEMORY),
     "KiB of memory per password hash (argon2id). Less makes guessing"
     " stolen hashes cheaper: lower it only for tests. Hashes made with"
     " other values still verify."],
    ["signups-per-address", None, str(DEFAULT_SIGNUPS_PER_ADDRESS),
     "Accounts one source address may create at once (a token bucket's"
     " size); it fills up again over --signup-window."],
    ["signup-window", None, str(DEFAULT_SIGNUP_WINDOW),
     "Seconds in which an empty bucket of sign-ups or username checks fills"
     " up again (at most 7 days)."],
    ["username-checks-per-address", None, str(DEFAULT_USERNAME_CHECKS_PER_ADDRESS),
     "CheckUsername calls one source address may make at once (a token"
     " bucket's size); it fills up again over --signup-window."],
    ["trusted-networks", None, throttles.DEFAULT_TRUSTED_NETWORKS,
     "Comma-separated networks exempt from the sign-up and username-check"
     " limits, or none."],
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
            hash_memory=int(options["hash-memory"]),
            signups_per_address=int(options["signups-per-address"]),
            signup_window=float(options["signup-window"]),
            max_sessions=int(options["max-sessions"]),
            username_checks_per_address=int(options["username-checks-per-address"]),
            trusted_networks=options["trusted-networks"],
            request_keys_per_minute=int(options["request-keys-per-minute"]),
        )
    except ValueError as e:
        raise usage.UsageError(f"an account limit is not a number: {e}")
    try:
        limits.trusted()
    except ValueError as e:
        raise usage.UsageError(f"--trusted-networks: {e}")
    if (
        min(limits.hash_workers, limits.hash_per_address, limits.hash_per_username) < 1
        or limits.hash_queue < 0
        or limits.hash_memory < MIN_HASH_MEMORY
        or limits.signups_per_address < 0
        or limits.username_checks_per_address < 0
        or not 0 < limits.signup_window <= SIGNUP_WINDOW_MAX
        or limits.max_sessions < 1
        or limits.request_keys_per_minute < 1
    ):
        raise usage.UsageError(
            "--hash-workers, --hash-per-address, --hash-per-username,"
            " --max-sessions and --request-keys-per-minute must be at least 1,"
            " --hash-queue, --signups-per-address and"
            " --username-checks-per-address at least 0, --signup-window above 0"
            f" and at most 7 days, --hash-memory at least {MIN_HASH_MEMORY}"
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
    one username from one source address within C{login_window} seconds,
    Login answers RATE_LIMITED to that address until the window has
    passed; a username with many failures from every address is slowed
    down (L{throttles.login_delay}), never refused.  The counts are in the
    customer database, so every instance of the service shares them.
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
    #: The IReactorTime of the login delay; None for the global reactor.
    clock: Any = None

    def __post_init__(self) -> None:
        self._trusted = self.limits.trusted()
        # Logins of one username from one address are checked one after the
        # other, so that guesses sent at once meet the failure limit exactly.
        self._one_at_a_time = throttles.OneAtATime()
        # A bucket's tokens are taken one at a time per address, and one
        # found empty is refused from memory until it has a token again, so
        # a flood costs the database a statement per token, not per request.
        self._bucket_turns = throttles.OneAtATime()
        self._empty_buckets = throttles.EmptyBuckets(self.clock)
        #: Touches of sessions whose reads a standby answered.
        self.touches = Touches(self.customer, self.role, self.session_timeout, self._clock())

    @property
    def id_field(self) -> str:
        return f"{self.role}_id"

    async def authenticate(self, session_id: str) -> Session:
        """The live session of this role with this id, or INVALID_SESSION."""
        key = session_key(session_id)
        try:
            account_id = await customerdb.touch_session(
                self.customer, key, self.role, self.session_timeout
            )
        except Exception as e:
            # The primary cannot be reached: a standby has every session
            # acknowledged (remote_apply), and checks it without a touch.
            if not (is_unavailable(e) and self.customer.has_replicas):
                raise
            account_id = await customerdb.live_account(
                self.customer.replicas, key, self.role, self.session_timeout
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
        await self._take_token(
            "check", call.source, self.limits.username_checks_per_address,
            "too many usernames checked from your address; try again in a minute",
        )
        found = await customerdb.find_login(self.customer, self.role, username, username)
        return {"username": username, "available": found is None}

    async def _count_signup(self, source: Optional[str]) -> None:
        """Take a sign-up token of C{source}; RATE_LIMITED if it has none."""
        await self._take_token(
            "signup", source, self.limits.signups_per_address,
            "too many accounts created from your address; try again later",
        )

    async def _take_token(self, kind: str, source: Optional[str], burst: int, refusal: str) -> None:
        """Take a token of C{source}'s bucket of C{kind}; RATE_LIMITED with
        C{refusal} if it has none.  Trusted sources (and None, a caller in
        this process) take none."""
        if source in self._trusted:
            return
        key = (kind, source)
        if self._empty_buckets.empty(key):
            raise ApiError(RATE_LIMITED, refusal)

        async def take() -> None:
            if self._empty_buckets.empty(key):
                raise ApiError(RATE_LIMITED, refusal)
            granted, wait = await customerdb.take_token(
                self.customer, kind, source, burst, self.limits.signup_window
            )
            if not granted:
                self._empty_buckets.note(key, wait)
                raise ApiError(RATE_LIMITED, refusal)

        await self._bucket_turns.run(key, take)

    async def login(self, call: Call) -> Reply:
        # The old rules still let an existing account log in (see
        # customerdb.find_login); the normal form finds every new one.
        raw = validate.text(call.payload, "username", 1, 32, spaces=False)
        password = validate.text(call.payload, "password", 1, identities.PASSWORD_MAX)
        username = identities.username_key(raw) or raw
        _, everywhere = await self._failures(username, call.source)
        delay = throttles.login_delay(everywhere)
        if delay:
            await task.deferLater(self._clock(), delay, lambda: None)
        found = await self._one_at_a_time.run(
            (username, call.source), lambda: self._check_password(call, raw, username, password)
        )
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

    async def _failures(self, username: str, source: Optional[str]):
        """(failures from C{source}, from everywhere) of C{username};
        RATE_LIMITED if C{source} has had too many."""
        here, everywhere = await customerdb.login_failures(
            self.customer, self.role, username, source, self.login_window
        )
        if here >= self.max_login_failures:
            raise ApiError(
                RATE_LIMITED,
                "too many failed logins for this username from your address;"
                " try again in a few minutes",
            )
        return here, everywhere

    async def _check_password(self, call: Call, raw: str, username: str, password: str):
        """The account (id, hash) if C{password} is its password, else
        INVALID_CREDENTIALS (and the failure counted).  Run one at a time
        per username and address, so the count read here is up to date."""
        await self._failures(username, call.source)
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
                self.customer, self.role, username, call.source, self.login_window
            )
            raise ApiError(INVALID_CREDENTIALS, "wrong username or password")
        return found

    def _clock(self):
        if self.clock is not None:
            return self.clock
        from twisted.internet import reactor

        return reactor

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
