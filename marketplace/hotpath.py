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

from marketplace import customerdb, productdb, validate
from marketplace.accounts import session_key
from marketplace.database import Database
from marketplace.dispatch import USUAL_PATH, Call
from marketplace.errors import INVALID_SESSION, ApiError

FusedHandler = Callable[[Call], "defer.Deferred[Any]"]

_LIVE = customerdb.LIVE_SESSION

_ITEM = ", ".join(f"i.{c.strip()}" for c in productdb.ITEM_COLUMNS.split(","))

_SELLER_ITEMS = f"""{_LIVE}
SELECT s.account_id, {_ITEM}
FROM live AS s LEFT JOIN items AS i ON i.seller_id = s.account_id
ORDER BY i.id
"""

_CHANGE_PRICE = f"""{_LIVE}, changed AS (
    UPDATE items AS i SET price = %(price)s
    WHERE i.id = %(number)s AND i.category = %(category)s
      AND i.seller_id = (SELECT account_id FROM live)
    RETURNING {_ITEM}
)
SELECT s.account_id, i.* FROM live AS s LEFT JOIN changed AS i ON true
"""

_GET_ITEM = f"""{_LIVE}
SELECT s.account_id, {_ITEM}
FROM live AS s LEFT JOIN items AS i ON i.id = %(number)s AND i.category = %(category)s
"""

# productdb's search, joined to the session; the outer ORDER BY repeats
# the search's order, which a join need not keep.
_SEARCH = f"""{_LIVE}
SELECT s.account_id, m.*
FROM live AS s LEFT JOIN LATERAL ({productdb.SEARCH}) AS m ON true
ORDER BY m.score DESC, m.thumbs_up - m.thumbs_down DESC, m.price, m.id
"""

_CART_LINES = """
SELECT s.account_id, i.category, c.item_id, i.name, c.quantity, i.price
FROM live AS s
LEFT JOIN active_cart_lines AS c ON c.session_key = %(key)s
LEFT JOIN items AS i ON i.id = c.item_id
ORDER BY c.item_id
"""

_DISPLAY_CART = _LIVE + _CART_LINES

# productdb's AddItemToCart upsert, for a live session only; the cart that
# follows is the lines the statement did not touch (as they were when it
# began) and the line it wrote (as RETURNING gives it), since the rest of
# a statement cannot see its own writes.
_ADD_TO_CART = f"""{_LIVE}, added AS (
    INSERT INTO active_cart_lines AS l (session_key, buyer_id, item_id, quantity)
    SELECT %(key)s, s.account_id, i.id, %(units)s FROM items AS i, live AS s
    WHERE i.id = %(number)s AND i.category = %(category)s AND i.quantity >= %(units)s
    ON CONFLICT (session_key, item_id) DO UPDATE
        SET quantity = l.quantity + excluded.quantity
        WHERE l.quantity + excluded.quantity
              <= (SELECT quantity FROM items WHERE id = excluded.item_id)
    RETURNING l.item_id, l.quantity
), lines AS (
    SELECT item_id, quantity FROM added
    UNION ALL
    SELECT item_id, quantity FROM active_cart_lines
    WHERE session_key = %(key)s AND item_id NOT IN (SELECT item_id FROM added)
)
SELECT s.account_id, (SELECT count(*) FROM added), i.category, c.item_id, i.name,
       c.quantity, i.price
FROM live AS s
LEFT JOIN lines AS c ON true
LEFT JOIN items AS i ON i.id = c.item_id
ORDER BY c.item_id
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

    def _rows(self, name: str, sql: str, args: dict, then: Callable[[list], Any]):
        """The rows of a fused statement, given to C{then}; no rows means
        the session is not live."""
        return self.product.prepared(name, sql, args).addCallback(self._live, then)

    def _live(self, rows: list, then: Callable[[list], Any]) -> Any:
        if not rows:
            raise _invalid(self.role)
        return then(rows)


def _first_item(rows: list) -> Any:
    # The work's row, or the usual path where the work found nothing to do.
    row = rows[0]
    if row[1] is None:
        return USUAL_PATH
    return productdb.item_from_row(row[1:])


def _seller_items(rows: list) -> dict:
    return {"items": [productdb.item_from_row(row[1:]) for row in rows if row[1] is not None]}


def _search_results(rows: list) -> dict:
    items = []
    for row in rows:
        if row[1] is None:
            continue
        item = productdb.item_from_row(row[1:])
        item["score"] = float(row[11])
        items.append(item)
    return {"items": items}


def _cart_after_adding(rows: list) -> Any:
    if not rows[0][1]:
        return USUAL_PATH
    return productdb.cart_from_rows([row[2:] for row in rows if row[3] is not None])


def _cart(rows: list) -> dict:
    return productdb.cart_from_rows([row[1:] for row in rows if row[2] is not None])


def _usual_path():
    return defer.succeed(USUAL_PATH)


class SellerHotPath(_Fused):
    """DisplayItemsForSale and ChangeItemPrice in one statement each."""

    def display_items(self, call: Call) -> defer.Deferred:
        return self._rows("hot_seller_items", _SELLER_ITEMS, self._args(call), _seller_items)

    def change_price(self, call: Call) -> defer.Deferred:
        try:
            category, number = validate.item_id(call.payload)
            price = validate.price(call.payload)
        except ApiError:
            return _usual_path()
        args = self._args(call, category=category, number=number, price=price)
        return self._rows("hot_change_price", _CHANGE_PRICE, args, _first_item)

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
        except ApiError:
            return _usual_path()
        args = self._args(
            call, category=category, keywords=keywords, limit=limit, offset=offset
        )
        return self._rows("hot_search", _SEARCH, args, _search_results)

    def get_item(self, call: Call) -> defer.Deferred:
        try:
            category, number = validate.item_id(call.payload)
        except ApiError:
            return _usual_path()
        args = self._args(call, category=category, number=number)
        return self._rows("hot_get_item", _GET_ITEM, args, _first_item)

    def add_to_cart(self, call: Call) -> defer.Deferred:
        try:
            category, number = validate.item_id(call.payload)
            units = validate.quantity(call.payload)
        except ApiError:
            return _usual_path()
        args = self._args(call, category=category, number=number, units=units)
        return self._rows("hot_add_to_cart", _ADD_TO_CART, args, _cart_after_adding)

    def display_cart(self, call: Call) -> defer.Deferred:
        return self._rows("hot_display_cart", _DISPLAY_CART, self._args(call), _cart)

    def handlers(self) -> Dict[str, FusedHandler]:
        return {
            "SearchItemsForSale": self.search,
            "GetItem": self.get_item,
            "AddItemToCart": self.add_to_cart,
            "DisplayCart": self.display_cart,
        }


__all__ = ["USUAL_PATH", "SellerHotPath", "BuyerHotPath"]
