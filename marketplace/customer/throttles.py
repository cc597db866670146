"""What tells a crowd from an attack: the trusted networks, the delay of a
username under attack, and one attempt at a time per username and address.

The counts these act on live in the customer database
(L{marketplace.customer.customerdb}); this module holds the rules, which
need no network to test.
"""

import ipaddress
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
    L{marketplace.server.protocol.source_of}), or "local" (a UNIX socket,
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


class OneAtATime:
    """A lock per key, kept only while someone holds or waits for it, so
    memory follows the attempts in progress, not every key ever seen."""

    def __init__(self) -> None:
        self._locks: Dict[Hashable, Tuple[defer.DeferredLock, int]] = {}

    async def run(self, key: Hashable, work):
        """C{await work()} once no other work of C{key} is running."""
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = defer.DeferredLock()
        self._locks[key] = (lock, users + 1)
        try:
            await lock.acquire()
            try:
                return await work()
            finally:
                lock.release()
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)
