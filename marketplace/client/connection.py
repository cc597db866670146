"""One service's connection: made when first needed, made again when lost.

A L{Connection} sends request envelopes over a L{ClientProtocol} and turns
error answers into L{ClientError}.  When the connection is lost, the next
request connects again, waiting between attempts with exponential backoff.
A request that was on the wire when the connection went is sent again only
if the caller says that doing it twice cannot matter (C{retry=True});
otherwise it fails with C{UNAVAILABLE}, since it may or may not have been
carried out.
"""

import random
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

from marketplace.client.errors import ClientError
from marketplace.client.wire import ClientProtocol, SilentClose, plaintext_problem
from marketplace.contract.errors import INTERNAL, UNAVAILABLE


def _quote(value: str) -> str:
    """Escape a value for an endpoint description."""
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def endpoint_description(host: str, port: int) -> str:
    """The client endpoint description of a plain TCP connection."""
    return f"tcp:host={_quote(host)}:port={int(port)}"


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
        C{"tls:example.com:8081"}) or an L{IStreamClientEndpoint}.
    @param initial_delay: seconds to wait after the first failed attempt to
        connect; each further failure doubles it, up to C{max_delay}.
    @param give_up_after: seconds of failed attempts after which a request
        fails with C{UNAVAILABLE}.
    @param max_retries: how many times one request is sent again after
        losing its connection or being answered C{UNAVAILABLE}.
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
        initial_delay: float = 0.1,
        max_delay: float = 5.0,
        give_up_after: float = 30.0,
        max_retries: int = 5,
        where: Optional[str] = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        if isinstance(endpoint, str):
            self.description = endpoint
            endpoint = clientFromString(reactor, endpoint)
        else:
            self.description = repr(endpoint)
        self.where = where or _address(self.description)
        self._endpoint = endpoint
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self.give_up_after = give_up_after
        self.max_retries = max_retries
        self._protocol: Optional[ClientProtocol] = None
        self._connect_waiters: Optional[list] = None
        # Connection attempts and backoff waits under way, so that close()
        # can cancel them.
        self._pending: set = set()
        self._closed = False
        #: How many connections were made (the first one included).
        self.connections_made = 0
        # New connections closed in a row without a byte of answer.
        self._silent_closes = 0

    @property
    def connected(self) -> bool:
        """Whether a connection is open now."""
        return self._protocol is not None and self._protocol.open

    def connect(self, give_up_after: Optional[float] = None) -> "defer.Deferred[None]":
        """Connect now rather than at the first request; give up after
        C{give_up_after} seconds (by default, the connection's)."""
        return self._connection(give_up_after).addCallback(lambda _: None)

    def _connection(
        self, give_up_after: Optional[float] = None
    ) -> "defer.Deferred[ClientProtocol]":
        """The open connection, connecting first if there is none."""
        protocol = self._protocol
        if protocol is not None and protocol.open:
            return defer.succeed(protocol)
        if self._closed:
            return defer.fail(ClientError(UNAVAILABLE, "the client is closed"))
        d: defer.Deferred = defer.Deferred()
        if self._connect_waiters is None:
            # One attempt serves every request that waits for it; they are
            # sent in the order they asked, which keeps the answers in order.
            self._connect_waiters = [d]
            defer.Deferred.fromCoroutine(self._reconnect(give_up_after)).addBoth(
                self._connected
            )
        else:
            self._connect_waiters.append(d)
        return d

    def _connected(self, result) -> None:
        waiters, self._connect_waiters = self._connect_waiters, None
        for d in waiters:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)

    async def _reconnect(self, give_up_after: Optional[float] = None) -> ClientProtocol:
        clock = self._reactor
        if give_up_after is None:
            give_up_after = self.give_up_after
        deadline = clock.seconds() + give_up_after
        delay = self.initial_delay
        while True:
            try:
                protocol = await self._cancellable(
                    connectProtocol(self._endpoint, ClientProtocol(self.where))
                )
                # Over TLS, the handshake; a failed one is no use retrying.
                await self._cancellable(protocol.ready)
            except defer.CancelledError:
                raise ClientError(UNAVAILABLE, "the client is closed")
            except (ConnectError, DNSLookupError, OSError) as e:
                # Jitter keeps many clients of a restarted service from
                # coming back all at the same moment.
                wait = delay * random.uniform(0.8, 1.2)
                if clock.seconds() + wait > deadline:
                    raise ClientError(UNAVAILABLE, unreachable(self.where, e))
                self.log.info(
                    "cannot connect to {where} ({error}); trying again in {wait:.2f} s",
                    where=self.description,
                    error=e,
                    wait=wait,
                )
                await self._sleep(wait)
                delay = min(delay * 2, self.max_delay)
            else:
                self.connections_made += 1
                self._protocol = protocol
                return protocol

    async def _cancellable(self, d: defer.Deferred):
        """Await C{d}, letting L{close} cancel it meanwhile."""
        self._pending.add(d)
        try:
            return await d
        finally:
            self._pending.discard(d)

    async def _sleep(self, seconds: float) -> None:
        try:
            await self._cancellable(
                task.deferLater(self._reactor, seconds, lambda: None)
            )
        except defer.CancelledError:
            raise ClientError(UNAVAILABLE, "the client is closed")

    def call(
        self,
        message: dict,
        retry: bool,
        on_retry: Optional[Callable[[], None]] = None,
    ) -> "defer.Deferred[dict]":
        """Send a request envelope; a Deferred of the payload of its answer.

        Fails with L{ClientError} for an error answer, and C{UNAVAILABLE}
        when the service cannot be reached.  With C{retry}, a request whose
        connection was lost before the answer came (or that was answered
        C{UNAVAILABLE}) is sent again, calling C{on_retry} first; without
        it that is an C{UNAVAILABLE} error.
        """
        protocol = self._protocol
        if protocol is None or not protocol.open:
            return defer.Deferred.fromCoroutine(
                self._call(message, retry, on_retry, None)
            )
        # The usual case, with callbacks alone: the connection is open and
        # the first answer is the one that counts.
        args = (message, retry, on_retry)
        return protocol.request(message).addCallbacks(
            self._answered, self._lost, callbackArgs=args, errbackArgs=args
        )

    def _answered(self, answer: dict, message: dict, retry: bool, on_retry):
        failed = self._outcome(answer, message.get("api", ""), retry)
        if isinstance(failed, str):
            return defer.Deferred.fromCoroutine(
                self._call(message, retry, on_retry, failed)
            )
        return failed

    def _lost(self, failure: Failure, message: dict, retry: bool, on_retry):
        failure.trap(ConnectionLost)
        failed = self._lost_reason(message.get("api", ""), retry, failure.value)
        return defer.Deferred.fromCoroutine(
            self._call(message, retry, on_retry, failed)
        )

    def _outcome(self, answer: dict, api: str, retry: bool):
        """The payload of an answer, or why it is to be sent again (a str);
        raises L{ClientError} for any other error answer."""
        self._silent_closes = 0
        if answer.get("type") == "response":
            payload = answer.get("payload")
            return payload if isinstance(payload, dict) else {}
        error = _error_of(answer, api)
        if error.code != UNAVAILABLE or not retry or self._closed:
            raise error
        return error.message

    def _lost_reason(self, api: str, retry: bool, error: Exception) -> str:
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
        if not retry:
            raise ClientError(
                UNAVAILABLE,
                f"the connection was lost before {api} was answered;"
                " it may or may not have been carried out",
                api,
            )
        return "the connection was lost"

    async def _call(
        self,
        message: dict,
        retry: bool,
        on_retry: Optional[Callable[[], None]],
        failed: Optional[str],
    ) -> dict:
        """Send C{message} until it is answered, connecting first where
        needed; C{failed} says why an attempt already made failed."""
        api = message.get("api", "")
        retries = 0
        while True:
            if failed is not None:
                retries += 1
                if retries > self.max_retries:
                    raise ClientError(
                        UNAVAILABLE, f"{api} failed {retries} times: {failed}", api
                    )
                self.log.info(
                    "{api} failed ({failed}); sending it again", api=api, failed=failed
                )
                if on_retry is not None:
                    on_retry()
                if retries > 1 or self.connected:
                    await self._sleep(
                        min(self.initial_delay * 2 ** (retries - 1), self.max_delay)
                    )
            protocol = await self._connection()
            try:
                answer = await protocol.request(message)
            except ConnectionLost as e:
                failed = self._lost_reason(api, retry, e)
                continue
            failed = self._outcome(answer, api, retry)
            if not isinstance(failed, str):
                return failed

    def close(self) -> "defer.Deferred[None]":
        """Close the connection (requests still waiting fail with
        C{UNAVAILABLE}); no request can be made after this."""
        self._closed = True
        for d in list(self._pending):
            d.cancel()
        protocol = self._protocol
        if protocol is not None and protocol.open:
            protocol.transport.loseConnection()
            return protocol.when_lost()
        return defer.succeed(None)


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
