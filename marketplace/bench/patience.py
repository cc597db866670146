"""How the benchmark's tools wait out a deployment's limits: a call tried
again while the service answers RATE_LIMITED (L{patiently}), and what stops
a bench when a limit does not let it through (L{Stopped}, L{Throttled})."""

from typing import Callable, Dict, List, Tuple

from twisted.internet import defer, task

from marketplace.bench.stats import RunResult
from marketplace.clientlib import ClientError
from marketplace.contract.errors import RATE_LIMITED


class Stopped(ClientError):
    """A call of a scenario's set-up failed, so the bench stops: C{results}
    holds the runs measured before, C{unmeasured} the scenarios left."""

    def __init__(self, error: ClientError) -> None:
        super().__init__(error.code, error.message, error.api, error.extra)
        self.results: Dict[int, List[RunResult]] = {}
        self.unmeasured: Tuple[int, ...] = ()

    def _not_measured(self) -> str:
        unmeasured = ",".join(str(n) for n in self.unmeasured)
        return f"; scenarios not measured: {unmeasured}" if unmeasured else ""

    def line(self) -> str:
        """One line for a person: what stopped the bench."""
        return (
            f"marketplace-bench: {self.api or 'a call'} failed while setting up:"
            f" {self.code}: {self.message}" + self._not_measured()
        )


class Throttled(Stopped):
    """A service answered RATE_LIMITED for longer than the bench waits: a
    limit of the deployment stops the bench's clients (which all come from
    one address)."""

    def __init__(self, error: ClientError, waited: float) -> None:
        super().__init__(error)
        self.waited = waited

    def option(self) -> str:
        """The deployment's option that would let the bench through."""
        message = self.message.lower()
        if "accounts created" in message:
            return "--signups-per-address (or add this machine to --trusted-networks)"
        if "usernames checked" in message:
            return "--username-checks-per-address (or --trusted-networks)"
        if "at once" in message:
            return "--hash-per-address"
        if "busy checking passwords" in message:
            return "--hash-queue"
        if "connections" in message:
            return "--max-connections"
        if "request_key" in message:
            return "--request-keys-per-minute"
        return "the limit it names"

    def line(self) -> str:
        """One line for a person: what stopped the bench and what to raise."""
        return (
            f"marketplace-bench: {self.api or 'a call'} was answered RATE_LIMITED"
            f" for {self.waited:.0f} s ({self.message}); raise {self.option()}"
            " on the deployment" + self._not_measured()
        )


async def patiently(reactor, call: Callable[[], defer.Deferred], tries: int = 50):
    """C{call()}, tried again while a service answers RATE_LIMITED (a
    bench's many sign-ups and sign-ins come from one address), every 0.2 s
    and C{tries} times in all; then L{Throttled}."""
    started = reactor.seconds()
    for _ in range(tries - 1):
        try:
            return await call()
        except ClientError as e:
            if e.code != RATE_LIMITED:
                raise
        await task.deferLater(reactor, 0.2, lambda: None)
    try:
        return await call()
    except ClientError as e:
        if e.code != RATE_LIMITED:
            raise
        raise Throttled(e, reactor.seconds() - started) from None
