"""Loopback ports for the servers a test starts.

Drawn below the kernel's range of ephemeral ports
(/proc/sys/net/ipv4/ip_local_port_range): a daemon binds its port seconds
after the test chose it, and a port in that range may meanwhile become the
source port of any outgoing connection on the machine (a test that opens
thousands at once, another test's port 0).  Below it, only an explicit
bind can take one, and each is checked free when drawn.
"""

import random
import socket

_rng = random.Random()


def _lowest_ephemeral() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
            return int(ports.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_is_free(port: int) -> bool:
    """Whether a loopback port can be bound now."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port(count: int = 1) -> int:
    """A free loopback port (the first of C{count} free ports in a row)."""
    top = _lowest_ephemeral() - count
    while True:
        port = _rng.randrange(max(1024, top - 12000), top)
        if all(port_is_free(port + n) for n in range(count)):
            return port


def free_port_pair() -> int:
    """A free port whose next port is free too (a daemon with two workers
    serves its metrics on both)."""
    return free_port(2)
