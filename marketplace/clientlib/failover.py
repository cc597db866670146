"""A client endpoint over several instances of one service.

A service may run on several hosts (a replicated deployment); any instance
serves any session.  L{FailoverEndpoint} connects to the instance that
answered last, and when it does not answer, to the next one, so a client's
L{Connection} moves to a live instance by itself after a host fails.  When
a call fails on an instance (its connection dropped, or it answered
C{UNAVAILABLE}), the L{Connection} calls L{FailoverEndpoint.advance}, so
that the call is sent again to the next instance first.
"""

from typing import Sequence, Union

from twisted.internet import defer
from twisted.internet.endpoints import clientFromString
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.interfaces import IStreamClientEndpoint
from zope.interface import implementer

from marketplace.frame.rotation import Rotation


@implementer(IStreamClientEndpoint)
class FailoverEndpoint:
    """Connects to the first of C{endpoints} that accepts, starting with
    the one that accepted last (or with the one at C{start})."""

    def __init__(
        self,
        endpoints: Sequence[Union[str, IStreamClientEndpoint]],
        reactor=None,
        start: int = 0,
    ) -> None:
        if not endpoints:
            raise ValueError("a failover endpoint needs at least one endpoint")
        if reactor is None:
            from twisted.internet import reactor
        self.endpoints: Rotation[IStreamClientEndpoint] = Rotation(
            [clientFromString(reactor, e) if isinstance(e, str) else e for e in endpoints], start
        )
        self.descriptions = [e if isinstance(e, str) else repr(e) for e in endpoints]

    def __repr__(self) -> str:
        return f"FailoverEndpoint({', '.join(self.descriptions)})"

    @property
    def several(self) -> bool:
        """Whether there is another endpoint to move to."""
        return len(self.endpoints) > 1

    @property
    def current(self) -> int:
        """The index of the endpoint tried first."""
        return self.endpoints.current

    def advance(self) -> None:
        """Start the next connection with the endpoint after the current
        one: the current one has just failed a call."""
        self.endpoints.advance()

    def connect(self, protocol_factory) -> defer.Deferred:
        """Try each endpoint once, from the current one; the first protocol
        connected, or the last failure.  Cancelling stops at once."""
        return defer.Deferred.fromCoroutine(self._connect(protocol_factory))

    async def _connect(self, protocol_factory):
        failure = None
        for index, endpoint in self.endpoints.in_turn():
            try:
                protocol = await endpoint.connect(protocol_factory)
            except (defer.CancelledError, ConnectingCancelledError):
                raise
            except Exception as e:  # any failure to connect: try the next
                failure = e
                continue
            self.endpoints.worked(index)
            return protocol
        raise failure


def failover_endpoint(descriptions: str, reactor=None, start: int = 0) -> FailoverEndpoint:
    """A L{FailoverEndpoint} from endpoint descriptions separated by C{|}."""
    return FailoverEndpoint(
        [d.strip() for d in descriptions.split("|") if d.strip()], reactor, start
    )
