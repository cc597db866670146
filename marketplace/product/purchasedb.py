"""The product database's purchases and feedback.  All of their SQL is here.

A purchase goes through these states (column purchases.state):

- pending: its units are taken off sale and its lines recorded, in the one
  transaction that also files it under the buyer's idempotency key; the
  payment's outcome is not known yet.
- completed: the payment was approved; the units count as sold and the
  carts are emptied.  Final.
- declined: the payment was declined; the units are back on sale.  Final.
- aborted: the payment could not be had (or was voided); the units are back
  on sale and the idempotency key is free for another try.  If the payments
  service may still hold an authorisation, void_needed says that it must be
  voided.

Every change of state is one conditional UPDATE (WHERE state = 'pending'),
so of a request handler and a sweeper settling one purchase at once, one
wins and the other sees what it did.
"""

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Awaitable, Callable, List, Optional, Sequence

from marketplace.contract import money
from marketplace.contract.validate import format_item_id
from marketplace.postgres.database import Database, Transaction
from marketplace.product.apisql import CART_LINES, cart_json

PENDING = "pending"
COMPLETED = "completed"
DECLINED = "declined"
ABORTED = "aborted"


@dataclass
class Purchase:
    """One purchase, as the buyer service needs it."""

    id: int
    buyer_id: int
    state: str
    payment_key: str
    total: Decimal
    lines: List[dict]
    reason: Optional[str] = None

    def answer(self) -> dict:
        """MakePurchase's answer payload for a completed purchase."""
        return {
            "purchase_id": self.id,
            "items": self.lines,
            "total": self.total,
            "total_decimal": money.text(self.total),
        }


class Shortage(Exception):
    """An item of the cart has fewer units on sale than the cart holds."""

    def __init__(self, item_id: str, on_sale: int, wanted: int) -> None:
        super().__init__(item_id, on_sale, wanted)
        self.item_id = item_id
        self.on_sale = on_sale
        self.wanted = wanted


class EmptyCart(Exception):
    """The active cart holds nothing."""


class OverLimit(Exception):
    """The cart comes to more than one purchase may charge."""

    def __init__(self, total: Decimal) -> None:
        super().__init__(total)
        self.total = total


class PriceChanged(Exception):
    """The cart does not come to the total the buyer expected; C{cart} is
    the cart as it is now (PROTOCOL.md's cart)."""

    def __init__(self, cart: dict) -> None:
        super().__init__(cart)
        self.cart = cart


_PURCHASE_COLUMNS = "id, buyer_id, state, payment_key, total, reason"


def purchase_line(category: int, number: int, name: str, quantity: int, price: Decimal) -> dict:
    """One line of a purchase as PROTOCOL.md returns it: a cart line, as
    it was bought."""
    return {
        "item_id": format_item_id(category, number),
        "item_name": name,
        "quantity": quantity,
        "price": price,
        "price_decimal": money.text(price),
        "subtotal_decimal": money.text(money.line_total(quantity, price)),
    }

_LINES = """
SELECT category, item_id, item_name, quantity, price FROM purchase_lines
WHERE purchase_id = %s ORDER BY item_id
"""


def _lines_from_rows(rows: Sequence[Sequence]) -> List[dict]:
    return [purchase_line(*row) for row in rows]


async def _purchase(cursor, row: Sequence) -> Purchase:
    await cursor.execute(_LINES, (row[0],))
    return Purchase(*row[:5], lines=_lines_from_rows(cursor.fetchall()), reason=row[5])


async def find(db: Database, buyer_id: int, key: str) -> Optional[Purchase]:
    """The purchase a buyer filed under an idempotency key (aborted ones
    aside: their key is free again), or None."""

    async def read(cursor) -> Optional[Purchase]:
        await cursor.execute(
            f"SELECT {_PURCHASE_COLUMNS} FROM purchases WHERE buyer_id = %s"
            f" AND idempotency_key = %s AND state <> 'aborted'",
            (buyer_id, key),
        )
        row = cursor.fetchone()
        return await _purchase(cursor, row) if row else None

    return await db.transaction(read)


async def get(db: Database, purchase_id: int) -> Purchase:
    """A purchase by its id."""

    async def read(cursor) -> Purchase:
        await cursor.execute(
            f"SELECT {_PURCHASE_COLUMNS} FROM purchases WHERE id = %s", (purchase_id,)
        )
        return await _purchase(cursor, cursor.fetchone())

    return await db.transaction(read)


# Each line's units are taken with one conditional UPDATE, so stock never
# goes below zero whatever else runs at once; the lines are taken in item
# order so that two purchases never wait for each other in a circle.
_TAKE_UNITS = """
UPDATE items SET quantity = quantity - %(units)s
WHERE id = %(item)s AND quantity >= %(units)s
RETURNING category, name, price
"""


async def take_units(
    db: Database,
    buyer_id: int,
    key: str,
    session_key: str,
    expected_total: Optional[Decimal] = None,
    claim: Optional[Callable[[Any], Awaitable[Any]]] = None,
) -> Optional[Purchase]:
    """Take the units of a session's active cart off sale and file a pending
    purchase of them under C{key}, all in one transaction.

    Returns None (and changes nothing) if the buyer already has a purchase
    under C{key}; raises L{EmptyCart}, L{Shortage}, L{OverLimit}, or
    L{PriceChanged} where C{expected_total} is given and the cart comes to
    another total, changing nothing.  The prices are those of the item rows
    this transaction locks, so the total checked is the total charged.
    C{claim}, if given, runs first in the transaction (the request key's
    claim: L{requestkeys.claim}); what it raises ends it.
    """

    async def take(cursor) -> Optional[Purchase]:
        if claim is not None:
            await claim(Transaction(cursor))
        await cursor.execute(
            "INSERT INTO purchases (buyer_id, idempotency_key, session_key)"
            " VALUES (%s, %s, %s)"
            " ON CONFLICT (buyer_id, idempotency_key) WHERE state <> 'aborted'"
            " DO NOTHING RETURNING id, payment_key",
            (buyer_id, key, session_key),
        )
        row = cursor.fetchone()
        if row is None:
            return None
        purchase_id, payment_key = row
        await cursor.execute(
            "SELECT item_id, quantity FROM active_cart_lines WHERE session_key = %s"
            " ORDER BY item_id FOR UPDATE",
            (session_key,),
        )
        cart = cursor.fetchall()
        if not cart:
            raise EmptyCart()
        lines = []
        for number, units in cart:
            await cursor.execute(_TAKE_UNITS, {"units": units, "item": number})
            taken = cursor.fetchone()
            if taken is None:
                await cursor.execute(
                    "SELECT category, quantity FROM items WHERE id = %s", (number,)
                )
                category, on_sale = cursor.fetchone()
                raise Shortage(format_item_id(category, number), on_sale, units)
            category, name, price = taken
            await cursor.execute(
                "INSERT INTO purchase_lines (purchase_id, item_id, category,"
                " item_name, quantity, price) VALUES (%s, %s, %s, %s, %s, %s)",
                (purchase_id, number, category, name, units, price),
            )
            lines.append((category, number, name, units, price))
        total = money.total((units, price) for *_, units, price in lines)
        if money.exceeds(total):
            raise OverLimit(total)
        if expected_total is not None and total != expected_total:
            # The cart as every answer shows one; its items are locked, so
            # its prices are those just read.
            await cursor.execute(f"SELECT {cart_json(CART_LINES)}::text", {"key": session_key})
            raise PriceChanged(json.loads(cursor.fetchone()[0], parse_float=Decimal))
        await cursor.execute(
            "UPDATE purchases SET total = %s WHERE id = %s", (total, purchase_id)
        )
        return Purchase(
            purchase_id, buyer_id, PENDING, payment_key, total, _lines_from_rows(lines)
        )

    return await db.transaction(take)


async def _lock_items(cursor, purchase_id: int) -> None:
    # In item order, as take_units locks them.
    await cursor.execute(
        "SELECT i.id FROM items AS i JOIN purchase_lines AS l ON l.item_id = i.id"
        " WHERE l.purchase_id = %s ORDER BY i.id FOR UPDATE OF i",
        (purchase_id,),
    )


async def complete(db: Database, purchase_id: int, authorization_id: str) -> bool:
    """Settle a pending purchase as paid: its units count as sold, the
    session's active cart and the buyer's saved cart are emptied.  False if
    it was no longer pending."""

    async def settle(cursor) -> bool:
        await cursor.execute(
            "UPDATE purchases SET state = 'completed', authorization_id = %s,"
            " settled_at = now() WHERE id = %s AND state = 'pending'"
            " RETURNING buyer_id, session_key",
            (authorization_id, purchase_id),
        )
        row = cursor.fetchone()
        if row is None:
            return False
        buyer_id, session_key = row
        await _lock_items(cursor, purchase_id)
        await cursor.execute(
            "UPDATE items SET units_sold = items.units_sold + l.quantity"
            " FROM purchase_lines AS l WHERE l.purchase_id = %s AND l.item_id = items.id",
            (purchase_id,),
        )
        await cursor.execute(
            "DELETE FROM active_cart_lines WHERE session_key = %s", (session_key,)
        )
        await cursor.execute(
            "DELETE FROM saved_cart_lines WHERE buyer_id = %s", (buyer_id,)
        )
        return True

    return await db.transaction(settle)


async def give_back(
    db: Database,
    purchase_id: int,
    state: str,
    reason: str,
    authorization_id: Optional[str] = None,
    void_needed: bool = False,
) -> bool:
    """Settle a pending purchase as not paid (C{state} declined or aborted):
    its units go back on sale.  False if it was no longer pending."""

    async def settle(cursor) -> bool:
        await cursor.execute(
            "UPDATE purchases SET state = %s, reason = %s, authorization_id = %s,"
            " void_needed = %s, settled_at = now()"
            " WHERE id = %s AND state = 'pending' RETURNING id",
            (state, reason, authorization_id, void_needed, purchase_id),
        )
        if cursor.fetchone() is None:
            return False
        await _lock_items(cursor, purchase_id)
        await cursor.execute(
            "UPDATE items SET quantity = items.quantity + l.quantity"
            " FROM purchase_lines AS l WHERE l.purchase_id = %s AND l.item_id = items.id",
            (purchase_id,),
        )
        return True

    return await db.transaction(settle)


async def stale_pending(db: Database, older_than: float) -> List[int]:
    """Pending purchases begun more than C{older_than} seconds ago."""
    rows = await db.query(
        "SELECT id FROM purchases WHERE state = 'pending'"
        " AND created_at < now() - %s * interval '1 second' ORDER BY id",
        (older_than,),
    )
    return [purchase_id for (purchase_id,) in rows]


async def voids_needed(db: Database) -> List[tuple]:
    """(id, payment key) of aborted purchases whose payment must be voided."""
    return await db.query(
        "SELECT id, payment_key FROM purchases WHERE void_needed ORDER BY id"
    )


async def voided(db: Database, purchase_id: int) -> None:
    """Note that an aborted purchase's payment has been voided."""
    await db.execute(
        "UPDATE purchases SET void_needed = false WHERE id = %s", (purchase_id,)
    )


# History

_HISTORY = """
SELECT p.id, l.category, l.item_id, l.item_name, l.quantity, l.price, p.settled_at
FROM purchases AS p JOIN purchase_lines AS l ON l.purchase_id = p.id
WHERE p.buyer_id = %s AND p.state = 'completed'
ORDER BY p.settled_at, p.id, l.item_id
"""


async def history(db: Database, buyer_id: int) -> dict:
    """GetBuyerPurchases's answer: every line the buyer has bought."""
    rows = await db.query(_HISTORY, (buyer_id,))
    items = [
        {
            "purchase_id": purchase_id,
            **purchase_line(category, number, name, quantity, price),
            "purchased_at": purchased_at,
        }
        for purchase_id, category, number, name, quantity, price, purchased_at in rows
    ]
    return {"items": items, "items_purchased": sum(i["quantity"] for i in items)}


# Feedback

FEEDBACK_NO_ITEM = "no item"
FEEDBACK_NOT_BOUGHT = "not bought"

_BOUGHT = """
SELECT 1 FROM purchases AS p JOIN purchase_lines AS l ON l.purchase_id = p.id
WHERE p.buyer_id = %s AND p.state = 'completed' AND l.item_id = %s LIMIT 1
"""

# The item row stays locked from the first statement to the commit, so
# votes on one item are counted one at a time and the counts on the item
# always equal the votes.
_RECOUNT = """
UPDATE items SET
    thumbs_up = (SELECT count(*) FROM feedback WHERE item_id = %(item)s AND thumbs_up),
    thumbs_down = (SELECT count(*) FROM feedback WHERE item_id = %(item)s AND NOT thumbs_up)
WHERE id = %(item)s RETURNING thumbs_up, thumbs_down
"""


async def vote(
    db: Database, buyer_id: int, category: int, number: int, thumbs_up: bool
) -> "dict | str":
    """File a buyer's vote on an item they bought, replacing any earlier
    one; the item's new counts, or FEEDBACK_NO_ITEM / FEEDBACK_NOT_BOUGHT."""

    async def file(cursor):
        await cursor.execute(
            "SELECT id FROM items WHERE id = %s AND category = %s FOR UPDATE",
            (number, category),
        )
        if cursor.fetchone() is None:
            return FEEDBACK_NO_ITEM
        await cursor.execute(_BOUGHT, (buyer_id, number))
        if cursor.fetchone() is None:
            return FEEDBACK_NOT_BOUGHT
        await cursor.execute(
            "INSERT INTO feedback (buyer_id, item_id, thumbs_up) VALUES (%s, %s, %s)"
            " ON CONFLICT (buyer_id, item_id) DO UPDATE"
            " SET thumbs_up = excluded.thumbs_up, voted_at = now()",
            (buyer_id, number, thumbs_up),
        )
        await cursor.execute(_RECOUNT, {"item": number})
        up, down = cursor.fetchone()
        return {"thumbs_up": up, "thumbs_down": down}

    return await db.transaction(file)
