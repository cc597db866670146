"""A Twisted client library for the marketplace's buyer and seller services.

L{BuyerClient} and L{SellerClient} have one method per API of PROTOCOL.md;
each returns a Deferred of the answer's payload or fails with
L{ClientError}.  A client keeps its session id after C{login}.  Every call
that changes something carries a fresh request key; any call is sent
again, key and all, when its connection drops, connecting fails or the
service answers UNAVAILABLE (with backoff, to the next endpoint of a
L{FailoverEndpoint}), until its deadline (30 s by default).
"""

from marketplace.clientlib.apis import BuyerClient, SellerClient, open_clients
from marketplace.clientlib.connection import Connection, endpoint_description
from marketplace.clientlib.errors import ClientError

__all__ = [
    "BuyerClient",
    "SellerClient",
    "ClientError",
    "Connection",
    "endpoint_description",
    "open_clients",
]
