"""Password hashing with argon2id, done in a thread so the reactor never waits,
and the budget that admits that work.

Every CreateAccount and every Login costs one argon2id computation (64 MiB,
about a tenth of a second of a core), so the work is admitted through a
L{HashingBudget}: a few computations at a time, and a queue behind them
served one source address after the other, so a flood from one address
delays the others by at most one computation each round.  A crowd behind
one address (a class, an office behind a NAT, a load test) waits its turn
rather than being refused; only an address with far more waiting than any
crowd would have, or a full queue, is answered RATE_LIMITED.
"""

from collections import Counter, OrderedDict, deque
from dataclasses import dataclass
from typing import Awaitable, Callable, Optional, Sequence

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from twisted.internet import defer, threads

from marketplace.contract.errors import RATE_LIMITED, ApiError

DEFAULT_HASH_WORKERS = 2
DEFAULT_HASH_QUEUE = 4096
DEFAULT_HASH_PER_SOURCE = 512
DEFAULT_HASH_PER_USERNAME = 2
#: KiB of memory of one argon2id computation (argon2-cffi's default, RFC
#: 9106's second recommendation); the time and parallelism stay its defaults.
DEFAULT_HASH_MEMORY = 65536
#: The least --hash-memory: argon2 needs 8 KiB per lane, and anything near
#: this is for tests, not for protecting passwords.
MIN_HASH_MEMORY = 1024


def hasher(memory: int = DEFAULT_HASH_MEMORY) -> PasswordHasher:
    """An argon2id hasher using C{memory} KiB per computation."""
    return PasswordHasher(memory_cost=memory)


@dataclass
class HashingBudget:
    """Admission of password hashing work.

    At most C{workers} computations run at once and C{queue} more wait;
    one source address may hold C{per_source} of them (running or
    waiting), and at most C{per_username} of one username's run at once
    (the others wait).  Waiting work is started one source after the
    other.  A source of None (a caller in this process, not a connection)
    has no share of its own.  A waiting turn holds a Deferred and its
    closure, so the queue's memory is bounded by C{queue}.
    """

    workers: int = DEFAULT_HASH_WORKERS
    queue: int = DEFAULT_HASH_QUEUE
    per_source: int = DEFAULT_HASH_PER_SOURCE
    per_username: int = DEFAULT_HASH_PER_USERNAME

    def __post_init__(self) -> None:
        self.running = 0
        self._held = 0
        self._by_source: Counter = Counter()
        self._running_by_username: Counter = Counter()
        # Waiting turns, (username, Deferred), by source; sources are
        # served in turn.
        self._waiting: "OrderedDict[object, deque]" = OrderedDict()

    @property
    def waiting(self) -> int:
        """Computations waiting for a turn."""
        return self._held - self.running

    async def run(
        self,
        source: Optional[str],
        username: Optional[str],
        work: Callable[[], Awaitable],
        admit: Optional[Callable[[], Awaitable[None]]] = None,
    ):
        """C{work()}'s result once its turn comes; RATE_LIMITED beyond the
        shares.

        C{admit}, if given, is awaited once the shares have room and before
        the work waits for its turn; it may refuse by raising."""
        self._enter(source)
        started = False
        try:
            if admit is not None:
                await admit()
            if self.running < self.workers and self._may_run(username):
                self._start(username)
            else:
                turn: defer.Deferred = defer.Deferred()
                self._waiting.setdefault(source, deque()).append((username, turn))
                try:
                    await turn
                except defer.CancelledError:
                    self._forget(source, turn)
                    raise
            started = True
            return await work()
        finally:
            self._leave(source, username, started)

    def _may_run(self, username) -> bool:
        return username is None or self._running_by_username[username] < self.per_username

    def _start(self, username) -> None:
        self.running += 1
        if username is not None:
            self._running_by_username[username] += 1

    def _enter(self, source) -> None:
        if self._held >= self.workers + self.queue:
            raise ApiError(
                RATE_LIMITED, "the server is busy checking passwords; retry in a moment"
            )
        if source is not None and self._by_source[source] >= self.per_source:
            raise ApiError(
                RATE_LIMITED,
                "too many logins or sign-ups from your address at once; retry in a moment",
            )
        self._held += 1
        if source is not None:
            self._by_source[source] += 1

    def _leave(self, source, username, started: bool) -> None:
        self._held -= 1
        if source is not None:
            self._by_source[source] -= 1
            if not self._by_source[source]:
                del self._by_source[source]
        if started:
            self.running -= 1
            if username is not None:
                self._running_by_username[username] -= 1
                if not self._running_by_username[username]:
                    del self._running_by_username[username]
            self._next()

    def _forget(self, source, turn) -> None:
        turns = self._waiting.get(source)
        if turns is None:
            return
        for entry in list(turns):
            if entry[1] is turn:
                turns.remove(entry)
        if not turns:
            del self._waiting[source]

    def _next(self) -> None:
        """Start waiting computations while workers are free: of each
        source in turn, its first one whose username may run; a source
        served goes to the back of the line."""
        while self._waiting and self.running < self.workers:
            for source, turns in self._waiting.items():
                entry = next((e for e in turns if self._may_run(e[0])), None)
                if entry is not None:
                    break
            else:
                return  # everything waiting is of usernames at their share
            turns.remove(entry)
            del self._waiting[source]
            if turns:
                self._waiting[source] = turns
            username, turn = entry
            self._start(username)
            turn.callback(None)


class Passwords:
    """Hashes and verifies passwords off the reactor thread, within C{budget}.

    L{verify} with C{None} for the stored hash still does the work of a
    real verification of every candidate, so the time a failed login takes
    does not tell whether the username exists.
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
        # A wrong password costs one check per candidate, with or without an
        # account, so neither the time nor the password's form (which
        # decides how many candidates there are) tells whether it exists.
        if stored is None:
            if self._decoy is None:
                self._decoy = self._hasher.hash("a decoy: no account has it")
            for password in candidates:
                self._check(self._decoy, password)
            return False
        return any(self._check(stored, password) for password in candidates)

    def _check(self, stored: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False
