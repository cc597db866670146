"""The hot APIs in one statement each, where customer and product data
share a database.

With two databases a session API costs two round trips: the session check
(and touch) on the customer database, then the work on the product
database.  When both are one database (the embedded default, or settings
that name one database for both) the statements here check the session
and do the work together, in one round trip: the session check is the
same C{live} common table expression as L{customerdb.touch_session} (so
the touch is still a write at most once a second), and the work joins on
C{live}, which has one row for a live
session of the role and none otherwise.  No row at all therefore means
INVALID_SESSION.

Only the successful paths are here: where the work finds nothing to do
(an item that is not there, not on sale enough, not the seller's), the
dispatcher's usual path (session check, then the API's own handler) runs
again and gives the same answer and error code as with two databases.
A payload that does not validate takes the usual path too, so an invalid
session is still reported before a malformed payload.
"""

from typing import Any, Callable, Dict

from twisted.internet import defer

from marketplace.contract import validate
from marketplace.contract.errors import INVALID_SESSION, ApiError
from marketplace.customer import customerdb
from marketplace.customer.accounts import session_key
from marketplace.postgres.database import Database
from marketplace.product import productdb
from marketplace.server import envelope, requestkeys
from marketplace.server.dispatch import USUAL_PATH, Call

FusedHandler = Callable[[Call], "defer.Deferred[Any]"]

_LIVE = customerdb.LIVE_SESSION

# Every statement answers one row for a live session and none otherwise:
# the account, whether the work found something to do, and the answer's
# payload as JSON text, written by PostgreSQL (productdb.item_json).

_SELLER_ITEMS = f"""{_LIVE}
SELECT s.account_id, true, json_build_object('items', coalesce((
    SELECT json_agg({productdb.item_json('i')} ORDER BY i.id)
    FROM items AS i WHERE i.seller_id = s.account_id
), '[]'))::text
FROM live AS s
"""

# A write's answer is filed under its request key (if it has one) by the
# same statement, where the work was done (marketplace/server/requestkeys.py).
_KEY_SCOPE = "%(role)s::text || ':' || a.account_id"
_RECORDED = requestkeys.record_cte(_KEY_SCOPE, "a.payload", "answer AS a", "a.done")

_CHANGE_PRICE = f"""{_LIVE}, changed AS (
    UPDATE items AS i SET price = %(price)s
    WHERE i.id = %(number)s AND i.category = %(category)s
      AND i.seller_id = (SELECT account_id FROM live)
    RETURNING i.*
), answer AS (
    SELECT s.account_id, i.id IS NOT NULL AS done, {productdb.item_json('i')}::text AS payload
    FROM live AS s LEFT JOIN changed AS i ON true
), {_RECORDED}
SELECT account_id, done, payload FROM answer
"""

_GET_ITEM = f"""{_LIVE}
SELECT s.account_id, i.id IS NOT NULL, {productdb.item_json('i')}::text
FROM live AS s LEFT JOIN items AS i ON i.id = %(number)s AND i.category = %(category)s
"""



def _search(sql: str) -> str:
    """One of productdb's search statements, for a live session."""
    return f"""{_LIVE}
SELECT s.account_id, true, json_build_object('items', coalesce((
    SELECT json_agg({productdb.item_json('m', "'score', m.score")}
                    ORDER BY m.score DESC, m.thumbs_down - m.thumbs_up, m.price, m.id)
    FROM ({sql}) AS m
), '[]'))::text
FROM live AS s
"""


_SEARCHES = {
    "all": _search(productdb.SEARCH_ALL),
    "one": _search(productdb.SEARCH_ONE),
    "many": _search(productdb.SEARCH_MANY),
}

_CART_LINES = "SELECT item_id, quantity FROM active_cart_lines WHERE session_key = %(key)s"

_DISPLAY_CART = f"""{_LIVE}
SELECT s.account_id, true, {productdb.cart_json(_CART_LINES)}::text
FROM live AS s
"""

# The cart after adding: the line the statement wrote (as RETURNING gives
# it) and the cart's other lines as they were when it began, since the rest
# of a statement cannot see its own writes.  Where nothing was written the
# payload is not used (the usual path answers), so "other" can simply mean
# "not this item".
_LINES_AFTER_ADDING = """
    SELECT item_id, quantity FROM added
    UNION ALL
    SELECT item_id, quantity FROM active_cart_lines
    WHERE session_key = %(key)s AND item_id <> %(number)s"""

# productdb's AddItemToCart upsert, for a live session only.
_ADD_TO_CART = f"""{_LIVE}, {productdb.ADD_ITEM}, added AS ({productdb.add_line(
    "s.account_id", "item AS i, live AS s")}), answer AS (
    SELECT s.account_id, EXISTS (SELECT FROM added) AS done,
           {productdb.cart_json(_LINES_AFTER_ADDING)}::text AS payload
    FROM live AS s
), {_RECORDED}
SELECT account_id, done, payload FROM answer
"""


def _invalid(role: str) -> ApiError:
    # The words of Accounts.authenticate, for the same error.
    return ApiError(
        INVALID_SESSION,
        f"the session is unknown, logged out or expired, or not a {role}'s; log in again",
    )


class _Fused:
    """What the fused handlers of one role share.

    The handlers return Deferreds built with callbacks alone: they are the
    busiest code of the service, and a coroutine costs more to start and
    resume than a callback does to run.
    """

    def __init__(self, role: str, customer: Database, product: Database, timeout: float):
        self.role = role
        self.customer = customer
        self.product = product
        self.timeout = timeout

    def enabled(self) -> bool:
        """Whether customer and product data are in one database."""
        dsn = self.product.dsn
        return dsn is not None and dsn == self.customer.dsn

    def _args(self, call: Call, **more: Any) -> dict:
        return {
            "key": session_key(call.request.session_id),
            "role": self.role,
            "timeout": self.timeout,
            **more,
        }

    def _answer(self, name: str, sql: str, args: dict) -> defer.Deferred:
        """The answer of a fused statement: its payload as JSON text
        (L{envelope.JsonPayload}), or L{USUAL_PATH} where the work found
        nothing to do or its request key was taken (the usual path finds
        the first answer); no row means the session is not live."""
        return self.product.prepared(name, sql, args).addCallbacks(
            self._payload, self._key_taken
        )

    @staticmethod
    def _key_taken(failure):
        if requestkeys.is_repeat(failure.value):
            return USUAL_PATH
        return failure

    def _payload(self, rows: list) -> Any:
        if not rows:
            raise _invalid(self.role)
        _, done, payload = rows[0]
        return envelope.JsonPayload(payload) if done else USUAL_PATH


def _usual_path():
    return defer.succeed(USUAL_PATH)


class SellerHotPath(_Fused):
    """DisplayItemsForSale and ChangeItemPrice in one statement each."""

    def display_items(self, call: Call) -> defer.Deferred:
        return self._answer("hot_seller_items", _SELLER_ITEMS, self._args(call))

    def change_price(self, call: Call) -> defer.Deferred:
        try:
            category, number = validate.item_id(call.payload)
            price = validate.price(call.payload)
        except ApiError:
            return _usual_path()
        args = self._args(call, category=category, number=number, price=price)
        args.update(requestkeys.statement_args(call.request))
        return self._answer("hot_change_price", _CHANGE_PRICE, args)

    def handlers(self) -> Dict[str, FusedHandler]:
        return {
            "DisplayItemsForSale": self.display_items,
            "ChangeItemPrice": self.change_price,
        }


class BuyerHotPath(_Fused):
    """SearchItemsForSale, GetItem, AddItemToCart and DisplayCart in one
    statement each."""

    def __init__(self, *args, search_limits=(50, 500)) -> None:
        super().__init__(*args)
        self.default_limit, self.max_limit = search_limits

    def search(self, call: Call) -> defer.Deferred:
        payload = call.payload
        try:
            category = validate.integer(payload, "category", 0)
            keywords = validate.keywords(payload)
            limit = validate.integer(
                payload, "limit", 1, self.max_limit, default=self.default_limit
            )
            offset = validate.integer(payload, "offset", 0, default=0)
            after = validate.search_cursor(payload)
        except ApiError:
            return _usual_path()
        shape, _, args = productdb.search_statement(category, keywords, limit, offset, after)
        return self._answer(f"hot_search_{shape}", _SEARCHES[shape], self._args(call, **args))

    def get_item(self, call: Call) -> defer.Deferred:
        try:
            category, number = validate.item_id(call.payload)
        except ApiError:
            return _usual_path()
        args = self._args(call, category=category, number=number)
        return self._answer("hot_get_item", _GET_ITEM, args)

    def add_to_cart(self, call: Call) -> defer.Deferred:
        try:
            category, number = validate.item_id(call.payload)
            units = validate.quantity(call.payload)
        except ApiError:
            return _usual_path()
        args = self._args(call, category=category, number=number, units=units)
        args.update(requestkeys.statement_args(call.request))
        return self._answer("hot_add_to_cart", _ADD_TO_CART, args)

    def display_cart(self, call: Call) -> defer.Deferred:
        return self._answer("hot_display_cart", _DISPLAY_CART, self._args(call))

    def handlers(self) -> Dict[str, FusedHandler]:
        return {
            "SearchItemsForSale": self.search,
            "GetItem": self.get_item,
            "AddItemToCart": self.add_to_cart,
            "DisplayCart": self.display_cart,
        }


__all__ = ["USUAL_PATH", "SellerHotPath", "BuyerHotPath"]
