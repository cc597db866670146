"""The buyer service's connection to the financial-transactions service.

One connection, opened when first needed and again after it is lost, carries
every request (pipelined: PROTOCOL.md answers them in order).  A request
that gets no answer within the timeout, or whose connection fails, raises
L{PaymentsUnavailable}: the caller then cannot know whether it was acted on,
which is what the idempotency keys are for.

Every request carries the shared secret (marketplace/payments/paymentsecret.py) in
its C{session_id}, which is how the payments service knows its caller.
"""

import json
from typing import Optional

from twisted.application.service import Service
from twisted.internet import defer, error
from twisted.internet.endpoints import clientFromString, connectProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from marketplace.clientlib.failover import failover_endpoint
from marketplace.clientlib.wire import FramedJsonClient
from marketplace.contract.errors import INVALID_CREDENTIALS, NOT_LOGGED_IN

DEFAULT_PAYMENTS = "tcp:host=127.0.0.1:port=8082"
DEFAULT_TIMEOUT = 10.0


class PaymentsUnavailable(Exception):
    """The payments service could not be reached, or did not answer in time."""


class PaymentsError(Exception):
    """The payments service answered a request with an error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


class _Connection(FramedJsonClient):
    """Requests out, answers back in the order they were sent; the requests
    waiting when it is lost fail with L{PaymentsUnavailable}."""

    # The payments service's answers are small.
    MAX_LENGTH = 1024 * 1024
    decoder = json.JSONDecoder()

    def lost_error(self, reason: Failure) -> Failure:
        if self.timed_out:
            # Answers come in order, so one that is stuck held up the rest:
            # the connection was dropped, failing them all, to start afresh.
            self.log.warn("the payments service did not answer in time; reconnecting")
            return Failure(PaymentsUnavailable("the payments service did not answer in time"))
        return Failure(PaymentsUnavailable(f"the connection was lost: {reason.value}"))


class PaymentsClient(Service):
    """Calls the payments service at a client endpoint C{description} (or
    at the first of several, "A|B", that accepts).

    As a service, stopping it closes its connection.
    """

    log = Logger()

    def __init__(
        self,
        description: str,
        reactor,
        timeout: float = DEFAULT_TIMEOUT,
        secret: Optional[str] = None,
    ) -> None:
        self.reactor = reactor
        self.description = description
        self.timeout = timeout
        self.secret = secret
        self._connection: Optional[_Connection] = None
        self._connecting: Optional[defer.Deferred] = None
        self._failover = None

    def _endpoint(self):
        if "|" in self.description:
            # Several payments daemons ("A|B"): the first that accepts.
            if self._failover is None:
                self._failover = failover_endpoint(self.description, self.reactor)
            return self._failover
        return clientFromString(self.reactor, self.description)

    async def _connect(self) -> _Connection:
        if self._connection is not None and not self._connection.lost:
            return self._connection
        if self._connecting is None:
            endpoint = self._endpoint()
            self._connecting = connectProtocol(endpoint, _Connection(self.reactor))
            self._connecting.addTimeout(self.timeout, self.reactor)
            try:
                self._connection = await self._connecting
            finally:
                self._connecting = None
            return self._connection
        # Someone else is connecting: share their connection.
        waiter: defer.Deferred = defer.Deferred()
        self._connecting.addBoth(lambda result: (waiter.callback(None), result)[1])
        await waiter
        if self._connection is None or self._connection.lost:
            raise PaymentsUnavailable("the payments service cannot be reached")
        return self._connection

    async def call(self, api: str, payload: dict) -> dict:
        """The answer payload of one request; raises L{PaymentsUnavailable}
        or L{PaymentsError}."""
        try:
            connection = await self._connect()
        except (error.ConnectError, error.TimeoutError, defer.CancelledError, OSError) as e:
            raise PaymentsUnavailable(f"the payments service cannot be reached: {e}")
        answer = await connection.send(
            {"type": "request", "api": api, "session_id": self.secret, "payload": payload},
            until=self.reactor.seconds() + self.timeout,
        )
        if answer.get("type") == "error":
            problem = answer.get("error") or {}
            code = problem.get("code", "INTERNAL")
            if code in (NOT_LOGGED_IN, INVALID_CREDENTIALS):
                self.log.error(
                    "the payments service refused the buyer service's secret: give both"
                    " the same MARKETPLACE_PAYMENTS_SECRET (or the same data folder)"
                )
            raise PaymentsError(code, problem.get("message", ""))
        payload = answer.get("payload")
        if answer.get("type") != "response" or not isinstance(payload, dict):
            raise PaymentsUnavailable("the payments service answered garbage")
        return payload

    def close(self) -> defer.Deferred:
        """Close the connection, if one is open; fires once it is closed."""
        connection, self._connection = self._connection, None
        if connection is None or connection.lost:
            return defer.succeed(None)
        connection.transport.loseConnection()
        return connection.closed

    def stopService(self):
        super().stopService()
        return self.close()
