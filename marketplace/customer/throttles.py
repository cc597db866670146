"""What tells a crowd from an attack: the trusted networks, the delay of a
username under attack, and one attempt at a time per username and address.

The counts these act on live in the customer database
(L{marketplace.customer.customerdb}); this module holds the rules, which
need no network to test.
"""

import ipaddress
from collections import deque
from typing import Dict, Hashable, Iterable, Tuple, Union

from twisted.internet import defer

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

#: Loopback: a deployment's own machine (make run, the course's evaluation).
DEFAULT_TRUSTED_NETWORKS = "127.0.0.0/8,::1/128"

#: Failed logins of one username from all addresses, within the failure
#: window, before its Logins are slowed down; then each further
#: SLOW_DOUBLING failures double the delay, from FIRST_DELAY up to
#: MAX_DELAY seconds.
SLOW_AFTER = 10
SLOW_DOUBLING = 10
FIRST_DELAY = 0.5
MAX_DELAY = 10.0


def login_delay(failures: int) -> float:
    """Seconds a Login of a username waits before it is checked, given the
    username's failed logins from every address in the current window."""
    if failures < SLOW_AFTER:
        return 0.0
    return min(MAX_DELAY, FIRST_DELAY * 2 ** ((failures - SLOW_AFTER) / SLOW_DOUBLING))


def parse_networks(text: str) -> Tuple[Network, ...]:
    """The networks of a comma-separated list (an address alone is a
    network of one); ValueError if one is not a network."""
    return tuple(
        ipaddress.ip_network(part.strip(), strict=False)
        for part in text.split(",")
        if part.strip()
    )


class TrustedNetworks:
    """Source addresses exempt from the per-address limits of sign-ups and
    username checks.  A source is an address, an IPv6 /64 network (see
    L{marketplace.frame.protocol.source_of}), or "local" (a UNIX socket,
    trusted with loopback)."""

    def __init__(self, networks: Iterable[Network] = ()) -> None:
        self.networks = tuple(networks)

    def __contains__(self, source) -> bool:
        if source is None:
            return True
        if source == "local":
            source = "127.0.0.1"
        try:
            network = ipaddress.ip_network(source, strict=False)
        except ValueError:
            return False
        return any(
            network.version == trusted.version and network.subnet_of(trusted)
            for trusted in self.networks
        )

    def __str__(self) -> str:
        return ",".join(str(n) for n in self.networks)


class _Turns:
    __slots__ = ("held", "waking", "waiting")

    def __init__(self) -> None:
        self.held = False
        self.waking = False
        self.waiting: deque = deque()


class OneAtATime:
    """A lock per key, kept only while someone holds or waits for it, so
    memory follows the attempts in progress, not every key ever seen.

    Unlike a chain of DeferredLocks, a long line of waiters that each finish
    at once (a flood refused from memory) is woken in a loop, not by
    recursion."""

    def __init__(self) -> None:
        self._turns: Dict[Hashable, _Turns] = {}

    async def run(self, key: Hashable, work):
        """C{await work()} once no other work of C{key} is running."""
        turns = self._turns.get(key)
        if turns is None:
            turns = self._turns[key] = _Turns()
        if turns.held:
            turn: defer.Deferred = defer.Deferred()
            turns.waiting.append(turn)
            try:
                await turn
            except defer.CancelledError:
                if turn in turns.waiting:
                    turns.waiting.remove(turn)
                    self._forget(key, turns)
                else:
                    self._release(key, turns)
                raise
        else:
            turns.held = True
        try:
            return await work()
        finally:
            self._release(key, turns)

    def _release(self, key, turns: _Turns) -> None:
        turns.held = False
        if turns.waking:
            return  # the loop below wakes the next one
        turns.waking = True
        try:
            while not turns.held and turns.waiting:
                turns.held = True
                turns.waiting.popleft().callback(None)
        finally:
            turns.waking = False
        self._forget(key, turns)

    def _forget(self, key, turns: _Turns) -> None:
        if not turns.held and not turns.waiting and self._turns.get(key) is turns:
            del self._turns[key]

    def __len__(self) -> int:
        return len(self._turns)


class EmptyBuckets:
    """The token buckets (see L{marketplace.customer.customerdb.take_token})
    this process found empty, and until when: a flood from one address is
    then refused without a query each.  At most C{size} are remembered."""

    def __init__(self, clock=None, size: int = 100_000) -> None:
        self._clock = clock
        self.size = size
        self._until: Dict[Hashable, float] = {}

    def _now(self) -> float:
        clock = self._clock
        if clock is None:
            from twisted.internet import reactor as clock
        return clock.seconds()

    def empty(self, key: Hashable) -> bool:
        """Whether C{key}'s bucket was found empty and has no token yet."""
        until = self._until.get(key)
        if until is None:
            return False
        if until > self._now():
            return True
        del self._until[key]
        return False

    def note(self, key: Hashable, seconds: float) -> None:
        """C{key}'s bucket is empty for C{seconds}."""
        now = self._now()
        if len(self._until) >= self.size:
            self._until = {k: t for k, t in self._until.items() if t > now}
            if len(self._until) >= self.size:
                return
        self._until[key] = now + seconds
