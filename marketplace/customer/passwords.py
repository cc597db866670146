"""Password hashing with argon2id, done in a thread so the reactor never waits,
and the budget that admits that work.

Every CreateAccount and every Login costs one argon2id computation (64 MiB,
about a tenth of a second of a core), so the work is admitted through a
L{HashingBudget}: a few computations at a time, a bounded queue behind them,
and a share of both for each source address (and, for Login, each
username).  Beyond its share a request is answered RATE_LIMITED at once,
without hashing anything; the queue is served one source after the other,
so a flood from one address delays the others by at most one computation
each round.
"""

from collections import Counter, OrderedDict, deque
from dataclasses import dataclass
from typing import Awaitable, Callable, Optional, Sequence

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from twisted.internet import defer, threads

from marketplace.contract.errors import RATE_LIMITED, ApiError

DEFAULT_HASH_WORKERS = 2
DEFAULT_HASH_QUEUE = 32
DEFAULT_HASH_PER_SOURCE = 4
DEFAULT_HASH_PER_USERNAME = 2


@dataclass
class HashingBudget:
    """Admission of password hashing work.

    At most C{workers} computations run at once and C{queue} more wait; of
    those, one source address may hold C{per_source} (running or waiting),
    and one username C{per_username}.  A source of None (a caller in this
    process, not a connection) has no share of its own.
    """

    workers: int = DEFAULT_HASH_WORKERS
    queue: int = DEFAULT_HASH_QUEUE
    per_source: int = DEFAULT_HASH_PER_SOURCE
    per_username: int = DEFAULT_HASH_PER_USERNAME

    def __post_init__(self) -> None:
        self.running = 0
        self._held = 0
        self._by_source: Counter = Counter()
        self._by_username: Counter = Counter()
        # Waiting turns, by source; sources are served in turn.
        self._waiting: "OrderedDict[object, deque]" = OrderedDict()

    async def run(
        self,
        source: Optional[str],
        username: Optional[str],
        work: Callable[[], defer.Deferred],
        admit: Optional[Callable[[], Awaitable[None]]] = None,
    ):
        """C{work()}'s result once admitted; RATE_LIMITED beyond the shares.

        C{admit}, if given, is awaited once the shares have room and before
        the work waits for its turn; it may refuse by raising."""
        self._enter(source, username)
        started = False
        try:
            if admit is not None:
                await admit()
            started = True
            if self.running >= self.workers:
                turn: defer.Deferred = defer.Deferred()
                self._waiting.setdefault(source, deque()).append(turn)
                await turn
            else:
                self.running += 1
            return await work()
        finally:
            self._leave(source, username, started)

    def _enter(self, source, username) -> None:
        if self._held >= self.workers + self.queue:
            raise ApiError(
                RATE_LIMITED, "the server is busy checking passwords; retry in a moment"
            )
        if source is not None and self._by_source[source] >= self.per_source:
            raise ApiError(
                RATE_LIMITED,
                "too many logins or sign-ups from your address at once; retry in a moment",
            )
        if username is not None and self._by_username[username] >= self.per_username:
            raise ApiError(
                RATE_LIMITED, "too many logins for this username at once; retry in a moment"
            )
        self._held += 1
        if source is not None:
            self._by_source[source] += 1
        if username is not None:
            self._by_username[username] += 1

    def _leave(self, source, username, started: bool = True) -> None:
        self._held -= 1
        if source is not None:
            self._by_source[source] -= 1
            if not self._by_source[source]:
                del self._by_source[source]
        if username is not None:
            self._by_username[username] -= 1
            if not self._by_username[username]:
                del self._by_username[username]
        if started:
            self.running -= 1
            self._next()

    def _next(self) -> None:
        """Start the next waiting computation: the first of the source
        whose turn it is, which then goes to the back of the line."""
        while self._waiting and self.running < self.workers:
            source, turns = next(iter(self._waiting.items()))
            turn = turns.popleft()
            del self._waiting[source]
            if turns:
                self._waiting[source] = turns
            self.running += 1
            turn.callback(None)


class Passwords:
    """Hashes and verifies passwords off the reactor thread, within C{budget}.

    L{verify} with C{None} for the stored hash still does the work of a
    real verification, so the time a failed login takes does not tell
    whether the username exists.
    """

    def __init__(
        self,
        hasher: Optional[PasswordHasher] = None,
        budget: Optional[HashingBudget] = None,
    ) -> None:
        self._hasher = hasher or PasswordHasher()
        self.budget = budget or HashingBudget()
        self._decoy: Optional[str] = None

    async def hash(
        self,
        password: str,
        source: Optional[str] = None,
        admit: Optional[Callable[[], Awaitable[None]]] = None,
    ) -> str:
        """The argon2id hash of C{password}; RATE_LIMITED beyond the budget
        (or if C{admit} refuses: see L{HashingBudget.run})."""
        return await self.budget.run(
            source, None, lambda: threads.deferToThread(self._hasher.hash, password), admit
        )

    async def verify(
        self,
        stored: Optional[str],
        password: str,
        source: Optional[str] = None,
        username: Optional[str] = None,
        also: Sequence[str] = (),
    ) -> bool:
        """Whether C{password} (or one of C{also}) matches the C{stored}
        hash (None: no account); RATE_LIMITED beyond the budget."""
        candidates = [password, *also]
        return await self.budget.run(
            source,
            username,
            lambda: threads.deferToThread(self._verify, stored, candidates),
        )

    def _verify(self, stored: Optional[str], candidates: Sequence[str]) -> bool:
        if stored is None:
            if self._decoy is None:
                self._decoy = self._hasher.hash("a decoy: no account has it")
            self._check(self._decoy, candidates[0])
            return False
        return any(self._check(stored, password) for password in candidates)

    def _check(self, stored: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False
