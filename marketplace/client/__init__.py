"""A Twisted client library for the marketplace's buyer and seller services.

L{BuyerClient} and L{SellerClient} have one method per API of PROTOCOL.md;
each returns a Deferred of the answer's payload or fails with
L{ClientError}.  A client keeps its session id after C{login}, reconnects
(with backoff) when the connection drops or the service restarts, and
carries on in the same session; it retries a request on a new connection
only where doing it twice cannot matter.
"""

from marketplace.client.apis import BuyerClient, SellerClient, open_clients
from marketplace.client.connection import Connection, endpoint_description
from marketplace.client.errors import ClientError

__all__ = [
    "BuyerClient",
    "SellerClient",
    "ClientError",
    "Connection",
    "endpoint_description",
    "open_clients",
]
