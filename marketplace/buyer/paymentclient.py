"""The buyer service's connection to the financial-transactions service.

One L{Connection} (the client library's) carries every request, pipelined:
PROTOCOL.md answers them in order.  A request is sent once: one that gets
no answer within the timeout, whose connection fails, or that is answered
C{UNAVAILABLE} raises L{PaymentsUnavailable}.  The caller then cannot know
whether it was acted on, and settles it by its idempotency key
(marketplace/buyer/purchase.py) rather than by sending it again.

Every request carries the shared secret (marketplace/payments/paymentsecret.py) in
its C{session_id}, which is how the payments service knows its caller.
"""

from typing import Optional

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger

from marketplace.clientlib.connection import Connection
from marketplace.clientlib.errors import ClientError
from marketplace.contract.errors import INVALID_CREDENTIALS, NOT_LOGGED_IN, UNAVAILABLE

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
        self.description = description
        self.secret = secret
        self._connection = Connection(
            description, reactor, deadline=timeout, max_retries=0,
            where="the payments service",
        )

    async def call(self, api: str, payload: dict) -> dict:
        """The answer payload of one request; raises L{PaymentsUnavailable}
        or L{PaymentsError}."""
        message = {"type": "request", "api": api, "session_id": self.secret, "payload": payload}
        try:
            return await self._connection.call(message)
        except ClientError as e:
            if e.code == UNAVAILABLE:
                raise PaymentsUnavailable(e.message) from None
            if e.code in (NOT_LOGGED_IN, INVALID_CREDENTIALS):
                self.log.error(
                    "the payments service refused the buyer service's secret: give both"
                    " the same MARKETPLACE_PAYMENTS_SECRET (or the same data folder)"
                )
            raise PaymentsError(e.code, e.message) from None

    def close(self) -> defer.Deferred:
        """Close the connection; no request can be made after this."""
        return self._connection.close()

    def stopService(self):
        super().stopService()
        return self.close()
