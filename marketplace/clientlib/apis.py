"""L{BuyerClient} and L{SellerClient}: one method per API of PROTOCOL.md.

Every method returns a Deferred of the answer's payload (a dict, with prices
and totals as Decimal) or fails with L{ClientError}.  Use them from
callbacks or C{await} them in coroutines.

Every call that changes something carries a fresh C{request_key}
(PROTOCOL.md, "Request keys"), and every call is sent again as it is, key
and all, when its connection drops or the service answers UNAVAILABLE (see
L{Connection}): the service carries out a write once however often it
hears it.  Login is sent again too: at worst that opens a second session
that nobody uses, which expires by itself.  A Logout sent again that finds
its session already ended counts as done.
"""

import uuid
from decimal import Decimal
from typing import Any, Callable, Iterable, List, Optional, Type, TypeVar, Union

from twisted.internet import defer
from twisted.internet.interfaces import IStreamClientEndpoint

from marketplace.clientlib.connection import Connection, endpoint_description
from marketplace.clientlib.errors import ClientError
from marketplace.contract.errors import INVALID_SESSION, NOT_LOGGED_IN, UNKNOWN_API

Price = Union[Decimal, int, str]

#: Of each role's service, an API that only it has and that needs a session:
#: asked without one, that service answers NOT_LOGGED_IN and any other
#: service UNKNOWN_API (PROTOCOL.md's first version).
_ROLE_APIS = {"buyer": "DisplayCart", "seller": "DisplayItemsForSale"}

_C = TypeVar("_C", bound="_ServiceClient")

#: The APIs that change something: each call of one carries a fresh
#: request key, so that sending it again cannot do it twice.
WRITES = frozenset(
    {
        "CreateAccount",
        "RegisterItemForSale",
        "ChangeItemPrice",
        "UpdateUnitsForSale",
        "AddItemToCart",
        "RemoveItemFromCart",
        "SaveCart",
        "ClearCart",
        "ProvideFeedback",
        "MakePurchase",
    }
)


def new_request_key() -> str:
    """A fresh request key: 32 hexadecimal digits."""
    return uuid.uuid4().hex


def _price(value: Price) -> Union[Decimal, int]:
    """A price as sent: Decimal (from text too) or int, never a float."""
    if isinstance(value, str):
        return Decimal(value)
    return value


class _ServiceClient:
    """What both clients share: the connection and the session.

    @param endpoint: a client endpoint description
        (C{"tcp:host=localhost:port=8081"}, C{"tls:…"}) or an
        L{IStreamClientEndpoint}; when left out, C{host} and C{port}.
    @param connection_options: passed on to L{Connection}: C{deadline}
        (seconds a call keeps trying, 30 by default), the backoff delays.
    """

    role = ""
    default_port = 0

    def __init__(
        self,
        endpoint: Union[str, IStreamClientEndpoint, None] = None,
        *,
        host: str = "localhost",
        port: Optional[int] = None,
        reactor=None,
        **connection_options: Any,
    ) -> None:
        if endpoint is None:
            endpoint = endpoint_description(
                host, self.default_port if port is None else port
            )
        self.connection = Connection(endpoint, reactor, **connection_options)
        #: The session of the last successful login, until logout.
        self.session_id: Optional[str] = None
        #: The buyer or seller id of that session.
        self.user_id: Optional[int] = None
        #: The username of that session.
        self.username: Optional[str] = None

    @property
    def id_field(self) -> str:
        """The answer field of the account id: buyer_id or seller_id."""
        return f"{self.role}_id"

    def connect(self, deadline: Optional[float] = None) -> "defer.Deferred[None]":
        """Connect now rather than at the first request; fail with
        L{ClientError} after C{deadline} seconds (by default the client's),
        or at once when the other end does not speak the protocol (see
        L{Connection})."""
        return self.connection.connect(deadline)

    def close(self) -> "defer.Deferred[None]":
        """Close the connection; the session stays open on the server."""
        return self.connection.close()

    def call(
        self,
        api: str,
        payload: Optional[dict] = None,
        session: bool = True,
        request_key: Optional[str] = None,
    ) -> "defer.Deferred[dict]":
        """Call any API by name; the answer's payload.

        The session id goes with the request when C{session} is true.  A
        call of an API that changes something carries C{request_key}, by
        default a fresh one.
        """
        return self._call(api, payload, session, request_key)

    def _call(
        self,
        api: str,
        payload: Optional[dict],
        session: bool = True,
        request_key: Optional[str] = None,
        on_retry: Optional[Callable[[], None]] = None,
    ) -> "defer.Deferred[dict]":
        session_id = self.session_id if session else None
        message = {
            "type": "request",
            "api": api,
            "session_id": session_id,
            "payload": {} if payload is None else payload,
        }
        if request_key is None and api in WRITES:
            request_key = new_request_key()
        if request_key is not None:
            message["request_key"] = request_key
        d = self.connection.call(message, on_retry)
        return d.addErrback(self._failed, session_id)

    def _failed(self, failure, session_id: Optional[str]):
        error = failure.value
        if (
            isinstance(error, ClientError)
            and error.code == INVALID_SESSION
            and session_id == self.session_id
        ):
            # The session is over (logged out elsewhere or expired).
            self._forget_session()
        return failure

    def _forget_session(self) -> None:
        self.session_id = None
        self.user_id = None
        self.username = None

    def create_account(
        self, username: str, password: str, name: Optional[str] = None
    ) -> "defer.Deferred[dict]":
        """CreateAccount: C{{"buyer_id"}} or C{{"seller_id"}}."""
        payload = {"username": username, "password": password}
        if name is not None:
            payload["name"] = name
        return self.call("CreateAccount", payload, session=False)

    def check_username(self, username: str) -> "defer.Deferred[dict]":
        """CheckUsername: C{{"username", "available"}}, whether CreateAccount
        could take the name now."""
        return self.call("CheckUsername", {"username": username}, session=False)

    def which_service(self) -> "defer.Deferred[Optional[str]]":
        """Which service answers at the endpoint: C{"buyer"}, C{"seller"}, or
        None for neither (the financial-transactions service, say).

        Told from answers of the protocol's first version, so any server
        tells it: the two roles' own session APIs are asked without a
        session, at once; a service answers NOT_LOGGED_IN for its own and
        UNKNOWN_API for the other's."""
        return defer.Deferred.fromCoroutine(self._which_service())

    async def _which_service(self) -> Optional[str]:
        asked = [
            self._call(api, None, session=False).addCallbacks(
                lambda _: True, _has_api
            )
            for api in _ROLE_APIS.values()
        ]
        try:
            has = await defer.gatherResults(asked, consumeErrors=True)
        except defer.FirstError as e:
            error = e.subFailure.value
            if isinstance(error, ClientError) and error.message.startswith(error.api):
                # Nobody asked for DisplayCart: the service did not answer.
                message = "the service" + error.message[len(error.api) :]
                raise ClientError(error.code, message, error.api, error.extra)
            e.subFailure.raiseException()
        found = [role for role, there in zip(_ROLE_APIS, has) if there]
        return found[0] if len(found) == 1 else None

    def login(self, username: str, password: str) -> "defer.Deferred[dict]":
        """Login, keeping the new session for the calls that follow."""
        return defer.Deferred.fromCoroutine(self._login(username, password))

    async def _login(self, username: str, password: str) -> dict:
        payload = await self._call(
            "Login", {"username": username, "password": password}, session=False
        )
        self.session_id = payload["session_id"]
        self.user_id = payload.get(self.id_field)
        self.username = username
        return payload

    def logout(self) -> "defer.Deferred[dict]":
        """Logout; the session is forgotten here whatever the answer."""
        return defer.Deferred.fromCoroutine(self._logout())

    async def _logout(self) -> dict:
        retried = []
        try:
            return await self._call(
                "Logout", None, on_retry=lambda: retried.append(True)
            )
        except ClientError as e:
            if retried and e.code == INVALID_SESSION:
                # An earlier attempt reached the service and logged out;
                # its answer was lost.
                return {}
            raise
        finally:
            self._forget_session()


def _has_api(failure) -> bool:
    """Whether an error answer to a call without a session says the service
    has the API (NOT_LOGGED_IN) or not (UNKNOWN_API); other errors pass."""
    error = failure.value
    if isinstance(error, ClientError) and error.code in (NOT_LOGGED_IN, UNKNOWN_API):
        return error.code == NOT_LOGGED_IN
    return failure


class SellerClient(_ServiceClient):
    """A client of the seller service (default port 8080)."""

    role = "seller"
    default_port = 8080

    def get_seller_rating(self) -> "defer.Deferred[dict]":
        """GetSellerRating: this seller's rating."""
        return self.call("GetSellerRating")

    def register_item_for_sale(
        self,
        item_name: str,
        category: int,
        keywords: Iterable[str],
        condition: str,
        price: Price,
        quantity: int,
    ) -> "defer.Deferred[dict]":
        """RegisterItemForSale: C{{"item_id"}}."""
        payload = {
            "item_name": item_name,
            "category": category,
            "keywords": list(keywords),
            "condition": condition,
            "price": _price(price),
            "quantity": quantity,
        }
        return self.call("RegisterItemForSale", payload)

    def change_item_price(self, item_id: str, price: Price) -> "defer.Deferred[dict]":
        """ChangeItemPrice: the item."""
        payload = {"item_id": item_id, "price": _price(price)}
        return self.call("ChangeItemPrice", payload)

    def update_units_for_sale(
        self, item_id: str, quantity: int
    ) -> "defer.Deferred[dict]":
        """UpdateUnitsForSale: take C{quantity} units off sale; the item."""
        payload = {"item_id": item_id, "quantity": quantity}
        return self.call("UpdateUnitsForSale", payload)

    def display_items_for_sale(self) -> "defer.Deferred[dict]":
        """DisplayItemsForSale: C{{"items"}}, sold-out ones included."""
        return self.call("DisplayItemsForSale")


class BuyerClient(_ServiceClient):
    """A client of the buyer service (default port 8081)."""

    role = "buyer"
    default_port = 8081

    def search_items_for_sale(
        self,
        category: int,
        keywords: Iterable[str] = (),
        limit: Optional[int] = None,
        offset: Optional[int] = None,
    ) -> "defer.Deferred[dict]":
        """SearchItemsForSale: C{{"items"}}, each with a C{score}."""
        payload: dict = {"category": category, "keywords": list(keywords)}
        if limit is not None:
            payload["limit"] = limit
        if offset is not None:
            payload["offset"] = offset
        return self.call("SearchItemsForSale", payload)

    def get_item(self, item_id: str) -> "defer.Deferred[dict]":
        """GetItem: the item."""
        return self.call("GetItem", {"item_id": item_id})

    def add_item_to_cart(
        self, item_id: str, quantity: int = 1
    ) -> "defer.Deferred[dict]":
        """AddItemToCart: the active cart."""
        payload = {"item_id": item_id, "quantity": quantity}
        return self.call("AddItemToCart", payload)

    def remove_item_from_cart(
        self, item_id: str, quantity: int = 1
    ) -> "defer.Deferred[dict]":
        """RemoveItemFromCart: the active cart."""
        payload = {"item_id": item_id, "quantity": quantity}
        return self.call("RemoveItemFromCart", payload)

    def save_cart(self) -> "defer.Deferred[dict]":
        """SaveCart: the cart, now also the saved cart."""
        return self.call("SaveCart")

    def clear_cart(self) -> "defer.Deferred[dict]":
        """ClearCart: the (empty) active cart."""
        return self.call("ClearCart")

    def display_cart(self) -> "defer.Deferred[dict]":
        """DisplayCart: the active cart."""
        return self.call("DisplayCart")

    def make_purchase(
        self,
        name: str,
        card_number: str,
        expiration_date: str,
        security_code: str,
        idempotency_key: Optional[str] = None,
        expected_total: Optional[Price] = None,
    ) -> "defer.Deferred[dict]":
        """MakePurchase: C{{"purchase_id", "items", "total"}}.

        A fresh idempotency key is sent unless one is given (besides the
        request key every write carries); give the key of a purchase that
        failed with UNAVAILABLE to try that purchase again.
        With C{expected_total} (the total the buyer was shown), a cart that
        now comes to another total is not bought: L{ClientError}
        PRICE_CHANGED, with the cart as it is now in its C{extra["cart"]}.
        """
        payload = {
            "name": name,
            "card_number": card_number,
            "expiration_date": expiration_date,
            "security_code": security_code,
            "idempotency_key": idempotency_key or uuid.uuid4().hex,
        }
        if expected_total is not None:
            # As the exact decimal string: no binary float in between.
            payload["expected_total"] = format(Decimal(str(expected_total)), "f")
        return self.call("MakePurchase", payload)

    def provide_feedback(self, item_id: str, thumbs_up: bool) -> "defer.Deferred[dict]":
        """ProvideFeedback: C{{"item_id", "thumbs_up", "thumbs_down"}}."""
        payload = {"item_id": item_id, "thumbs_up": bool(thumbs_up)}
        return self.call("ProvideFeedback", payload)

    def get_seller_rating(self, seller_id: int) -> "defer.Deferred[dict]":
        """GetSellerRating: that seller's rating."""
        return self.call("GetSellerRating", {"seller_id": seller_id})

    def get_buyer_purchases(self) -> "defer.Deferred[dict]":
        """GetBuyerPurchases: C{{"items", "items_purchased"}}."""
        return self.call("GetBuyerPurchases")


async def open_clients(
    client_class: Type[_C],
    count: int,
    endpoint: Union[str, IStreamClientEndpoint],
    reactor=None,
    **connection_options: Any,
) -> List[_C]:
    """C{count} clients of one service, each connected on its own connection.

    For load tests: the connections are made at once, and calls on a
    connected client cost one frame each way.
    """
    clients = [
        client_class(endpoint, reactor=reactor, **connection_options)
        for _ in range(count)
    ]
    try:
        await defer.gatherResults([c.connect() for c in clients], consumeErrors=True)
    except defer.FirstError as e:
        await defer.gatherResults([c.close() for c in clients])
        e.subFailure.raiseException()
    return clients


__all__ = ["BuyerClient", "SellerClient", "open_clients"]
