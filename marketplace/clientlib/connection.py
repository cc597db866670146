"""One service's connection: made when first needed, made again when lost.

A L{Connection} sends request envelopes over a L{ClientProtocol} and turns
error answers into L{ClientError}.  Every call is sent again when its
connection drops before the answer comes, when connecting fails, or when
the service answers C{UNAVAILABLE}: the same envelope (so the same
C{request_key}, which makes a write safe to repeat), on the next endpoint
of a L{FailoverEndpoint}, after an exponential backoff with jitter, until
the call's deadline; then it fails with C{UNAVAILABLE}.
"""

import re
from typing import Callable, Optional, Union

from twisted.internet import defer, task
from twisted.internet.endpoints import clientFromString, connectProtocol
from twisted.internet.error import (
    ConnectError,
    ConnectionLost,
    ConnectionRefusedError,
    DNSLookupError,
)
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from marketplace.clientlib.errors import ClientError
from marketplace.clientlib.failover import failover_endpoint
from marketplace.clientlib.wire import ClientProtocol, SilentClose, plaintext_problem
from marketplace.contract.errors import INTERNAL, UNAVAILABLE
from marketplace.frame.descriptions import quote
from marketplace.frame.backoff import Backoff

#: Seconds a call keeps trying (connecting, sending again) by default.
DEFAULT_DEADLINE = 30.0


def endpoint_description(host: str, port: int) -> str:
    """The client endpoint description of a plain TCP connection."""
    return f"tcp:host={quote(host)}:port={int(port)}"


def _address(description: str) -> str:
    """C{host:port} of a C{tcp:}/C{tls:} description, else the description."""
    host = re.search(r"(?:^|:)host=([^:]+)", description)
    port = re.search(r":port=([0-9]+)", description)
    if host and port:
        return f"{host.group(1)}:{port.group(1)}"
    return description


def unreachable(where: str, error: Exception) -> str:
    """Why C{where} cannot be reached, in words."""
    if isinstance(error, ConnectionRefusedError):
        return (
            f"nothing is listening at {where} (the connection was refused):"
            " is the service running, and is that its port?"
        )
    if isinstance(error, DNSLookupError):
        return f"the host name of {where} cannot be found"
    return f"the service at {where} cannot be reached ({error})"


class Connection:
    """Requests to one service over one connection at a time.

    @param endpoint: where the service is: a client endpoint description
        for L{clientFromString} (C{"tcp:host=example.com:port=8081"},
        C{"tls:example.com:8081"}) or an L{IStreamClientEndpoint}, such as
        a L{FailoverEndpoint} over several instances.
    @param deadline: seconds from the start of a call within which it is
        answered: it is sent again after a lost connection, a failed
        connect or an C{UNAVAILABLE} answer until then, and then fails
        with C{UNAVAILABLE}.  A connection on which an answer is still
        missing by then is dropped (a host gone silent), so that the calls
        after it go to a new one.
    @param initial_delay: seconds to wait before the second attempt to
        connect or to send; each further failure doubles it, up to
        C{max_delay} (with 20 % jitter either way).
    @param max_retries: at most this many repeats of one call, and this
        many attempts to connect after a first that failed (by default as
        many as the deadline allows).
    @param give_up_after: the older name of C{deadline}.
    @param where: the service's address for error messages (by default the
        endpoint description).

    A connection that reaches something other than the service (TLS
    against a plaintext port or the other way round, a certificate not
    trusted) fails at once with a L{ClientError} that says so: trying again
    would not help.
    """

    log = Logger()

    def __init__(
        self,
        endpoint: Union[str, IStreamClientEndpoint],
        reactor=None,
        *,
        deadline: float = DEFAULT_DEADLINE,
        initial_delay: float = 0.1,
        max_delay: float = 5.0,
        max_retries: Optional[int] = None,
        give_up_after: Optional[float] = None,
        where: Optional[str] = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        if isinstance(endpoint, str):
            self.description = endpoint
            if "|" in endpoint:
                # Several instances of the service: "A|B|…" (FailoverEndpoint).
                endpoint = failover_endpoint(endpoint, reactor)
            else:
                endpoint = clientFromString(reactor, endpoint)
        else:
            self.description = repr(endpoint)
        self.where = where or _address(self.description)
        self._endpoint = endpoint
        self.deadline = deadline if give_up_after is None else give_up_after
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self.max_retries = max_retries
        self._protocol: Optional[ClientProtocol] = None
        self._connecting: Optional[defer.Deferred] = None
        self._connect_waiters: list = []
        # Connection attempts and backoff waits under way, so that close()
        # can cancel them.
        self._pending: set = set()
        # Connections that take no more requests but still owe answers.
        self._retired: set = set()
        # The connection after whose failure the endpoint last moved on.
        self._moved_from: Optional[ClientProtocol] = None
        self._closed = False
        #: How many connections were made (the first one included).
        self.connections_made = 0
        #: How many times a call was sent again (after it had been sent).
        self.retries = 0
        # New connections closed in a row without a byte of answer.
        self._silent_closes = 0

    @property
    def connected(self) -> bool:
        """Whether a connection is open now."""
        return self._protocol is not None and self._protocol.open

    def connect(self, deadline: Optional[float] = None) -> "defer.Deferred[None]":
        """Connect now rather than at the first request; give up after
        C{deadline} seconds (by default, the connection's)."""
        until = self._reactor.seconds() + (
            self.deadline if deadline is None else deadline
        )
        return defer.Deferred.fromCoroutine(self._open("", until)).addCallback(
            lambda _: None
        )

    # Connecting.

    def _attempt(self) -> "defer.Deferred[ClientProtocol]":
        """One attempt to connect (over every endpoint of a failover
        endpoint), shared by every call that asks while it is under way;
        the waiter it gives may be cancelled on its own."""
        d: defer.Deferred = defer.Deferred(self._connect_waiters.remove)
        self._connect_waiters.append(d)
        if self._connecting is None:
            self._connecting = defer.Deferred.fromCoroutine(self._connect_once())
            self._pending.add(self._connecting)
            self._connecting.addBoth(self._attempted)
        return d

    async def _connect_once(self) -> ClientProtocol:
        protocol = await connectProtocol(
            self._endpoint, ClientProtocol(self.where, self._reactor)
        )
        # Over TLS, the handshake (a failed one fails with ClientError).
        await protocol.ready
        return protocol

    def _attempted(self, result) -> None:
        self._pending.discard(self._connecting)
        self._connecting = None
        if not isinstance(result, Failure):
            self.connections_made += 1
            self._protocol = result
        waiters, self._connect_waiters = self._connect_waiters, []
        for d in waiters:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)
        if isinstance(result, Failure):
            result.trap(Exception)

    async def _open(self, api: str, until: float) -> ClientProtocol:
        """The open connection, connecting first where there is none,
        again and again with backoff until C{until}."""
        backoff = self._backoff()
        failures = 0
        while True:
            protocol = self._protocol
            if protocol is not None and protocol.open:
                return protocol
            if self._closed:
                raise ClientError(UNAVAILABLE, "the client is closed", api)
            left = until - self._reactor.seconds()
            if left <= 0:
                raise self._gave_up(api, f"connecting to {self.where} took too long")
            waiter = self._attempt()
            waiter.addTimeout(left, self._reactor)
            try:
                return await waiter
            except defer.TimeoutError:
                raise self._gave_up(api, f"connecting to {self.where} took too long")
            except (ConnectError, DNSLookupError, OSError) as e:
                if self._closed:
                    raise ClientError(UNAVAILABLE, "the client is closed", api)
                failed = unreachable(self.where, e)
                failures += 1
            except ClientError:
                raise
            except Exception:
                # Cancelled: by close(), or by the caller.
                if self._closed:
                    raise ClientError(UNAVAILABLE, "the client is closed", api)
                raise
            if self.max_retries is not None and failures > self.max_retries:
                raise ClientError(UNAVAILABLE, failed, api)
            wait = backoff.next()
            if self._reactor.seconds() + wait > until:
                raise self._gave_up(api, failed)
            self.log.info(
                "cannot connect to {where} ({error}); trying again in {wait:.2f} s",
                where=self.description,
                error=failed,
                wait=wait,
            )
            await self._sleep(wait, api)

    def _backoff(self) -> Backoff:
        """The delays between a call's attempts: doubling from
        C{initial_delay} to C{max_delay}, 20 % either way."""
        return Backoff(self.initial_delay, self.max_delay, jitter=0.2)

    def _gave_up(self, api: str, failed: str) -> ClientError:
        """The error of a call whose deadline passed, C{failed} the last
        reason."""
        # A connect without a call (connect()) has no api to name.
        if api:
            failed = f"{api} got no answer within {self.deadline:g} s: {failed}"
        return ClientError(UNAVAILABLE, failed, api)

    async def _cancellable(self, d: defer.Deferred):
        """Await C{d}, letting L{close} cancel it meanwhile."""
        self._pending.add(d)
        try:
            return await d
        finally:
            self._pending.discard(d)

    async def _sleep(self, seconds: float, api: str = "") -> None:
        try:
            await self._cancellable(
                task.deferLater(self._reactor, seconds, lambda: None)
            )
        except defer.CancelledError:
            if self._closed:
                raise ClientError(UNAVAILABLE, "the client is closed", api)
            raise

    def _move_on(self, protocol: ClientProtocol, drop: bool) -> None:
        """A call failed on C{protocol}'s connection: the next attempt goes
        to the next endpoint of a failover endpoint, once per connection.
        With C{drop} (an C{UNAVAILABLE} answer, the connection still open),
        this connection takes no more requests, so that a new one is made
        to the next endpoint; where there is no other, it stays."""
        if protocol is self._moved_from:
            return
        if not getattr(self._endpoint, "several", False):
            return
        self._moved_from = protocol
        self._endpoint.advance()
        if drop and protocol.open:
            if self._protocol is protocol:
                self._protocol = None
            self._retired.add(protocol)
            protocol.when_lost().addCallback(lambda _: self._retired.discard(protocol))
            protocol.close_when_idle()

    # Calling.

    def call(
        self, message: dict, on_retry: Optional[Callable[[], None]] = None
    ) -> "defer.Deferred[dict]":
        """Send a request envelope; a Deferred of the payload of its answer.

        Fails with L{ClientError} for an error answer, and C{UNAVAILABLE}
        when the deadline passed without an answer.  A request whose
        connection was lost before the answer came, or that was answered
        C{UNAVAILABLE}, is sent again as it is, calling C{on_retry} first.
        """
        started = self._reactor.seconds()
        protocol = self._protocol
        if protocol is None or not protocol.open:
            return defer.Deferred.fromCoroutine(
                self._call(message, on_retry, started, None)
            )
        # The usual case, with callbacks alone: the connection is open and
        # the first answer is the one that counts.
        args = (message, on_retry, started, protocol)
        return protocol.send(message, started + self.deadline).addCallbacks(
            self._answered, self._lost, callbackArgs=args, errbackArgs=args
        )

    def _answered(self, answer: dict, message, on_retry, started, protocol):
        failed = self._outcome(answer, message.get("api", ""), protocol)
        if isinstance(failed, str):
            return defer.Deferred.fromCoroutine(
                self._call(message, on_retry, started, failed)
            )
        return failed

    def _lost(self, failure: Failure, message, on_retry, started, protocol):
        failure.trap(ConnectionLost)
        failed = self._lost_reason(message.get("api", ""), failure.value, protocol)
        return defer.Deferred.fromCoroutine(
            self._call(message, on_retry, started, failed)
        )

    def _outcome(self, answer: dict, api: str, protocol: ClientProtocol):
        """The payload of an answer, or why it is to be sent again (a str);
        raises L{ClientError} for any other error answer."""
        self._silent_closes = 0
        if answer.get("type") == "response":
            payload = answer.get("payload")
            return payload if isinstance(payload, dict) else {}
        error = _error_of(answer, api)
        if error.code != UNAVAILABLE or self._closed:
            raise error
        self._move_on(protocol, drop=True)
        return f"the service answered UNAVAILABLE ({error.message})"

    def _lost_reason(self, api: str, error: Exception, protocol) -> str:
        """Why a request whose connection was lost is to be sent again;
        raises L{ClientError} where it is not."""
        if isinstance(error, SilentClose):
            # Once may be a restart; twice in a row on new connections is a
            # server that does not read plain frames.
            self._silent_closes += 1
            if self._silent_closes >= 2:
                raise ClientError(
                    UNAVAILABLE,
                    plaintext_problem(self.where, sure=False),
                    api,
                )
        if self._closed:
            raise ClientError(
                UNAVAILABLE, "the client was closed before the answer came", api
            )
        self._move_on(protocol, drop=False)
        if protocol.timed_out:
            return f"{self.where} did not answer; the connection was given up"
        return f"the connection to {self.where} was lost"

    async def _call(
        self,
        message: dict,
        on_retry: Optional[Callable[[], None]],
        started: float,
        failed: Optional[str],
    ) -> dict:
        """Send C{message} until it is answered or the deadline passes,
        connecting first where needed; C{failed} says why an attempt
        already sent failed."""
        api = message.get("api", "")
        until = started + self.deadline
        retries = 0
        backoff = self._backoff()
        while True:
            if failed is not None:
                retries += 1
                if self.max_retries is not None and retries > self.max_retries:
                    attempts = "1 attempt" if retries == 1 else f"{retries} attempts"
                    raise ClientError(
                        UNAVAILABLE, f"{api} got no answer in {attempts}: {failed}", api
                    )
                # The first repeat after a lost connection goes at once (to
                # a new connection); any other waits, with jitter so that
                # the clients of a restarted service spread out.
                if self._reactor.seconds() >= until:
                    raise self._gave_up(api, failed)
                if retries > 1 or self.connected:
                    wait = backoff.next()
                    if self._reactor.seconds() + wait > until:
                        raise self._gave_up(api, failed)
                    await self._sleep(wait, api)
                self.log.info(
                    "{api} failed ({failed}); sending it again", api=api, failed=failed
                )
                self.retries += 1
                if on_retry is not None:
                    on_retry()
            protocol = await self._open(api, until)
            try:
                answer = await protocol.send(message, until)
            except ConnectionLost as e:
                failed = self._lost_reason(api, e, protocol)
                continue
            failed = self._outcome(answer, api, protocol)
            if not isinstance(failed, str):
                return failed

    def close(self) -> "defer.Deferred[None]":
        """Close the connection (requests still waiting fail with
        C{UNAVAILABLE}); no request can be made after this."""
        self._closed = True
        for d in list(self._pending):
            d.cancel()
        closing = []
        for protocol in [self._protocol, *self._retired]:
            if protocol is not None and not protocol.lost:
                protocol.transport.loseConnection()
                closing.append(protocol.when_lost())
        return defer.DeferredList(closing).addCallback(lambda _: None)


def _error_of(answer: dict, api: str) -> ClientError:
    """The L{ClientError} of an error answer (or of a malformed one)."""
    error = answer.get("error")
    if answer.get("type") != "error" or not isinstance(error, dict):
        return ClientError(
            INTERNAL, "the server sent an answer this client cannot read", api
        )
    code = error.get("code")
    message = error.get("message")
    return ClientError(
        code if isinstance(code, str) else INTERNAL,
        message if isinstance(message, str) else "the server gave no reason",
        api,
        {k: v for k, v in error.items() if k not in ("code", "message")},
    )


__all__ = ["Connection", "endpoint_description", "unreachable"]
