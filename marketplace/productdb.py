"""The product database: items, carts (and later purchases and feedback).

All of its SQL is here.  Items come back as the dicts PROTOCOL.md describes.
"""

from decimal import Decimal
from typing import List, Optional, Sequence

from marketplace import money
from marketplace.database import Database
from marketplace.validate import format_item_id

ITEM_COLUMNS = (
    "id, category, name, keywords, condition, price, quantity,"
    " seller_id, thumbs_up, thumbs_down"
)


def item_from_row(row: Sequence) -> dict:
    """An item as PROTOCOL.md returns it, from a row of ITEM_COLUMNS."""
    number, category, name, keywords, condition, price, quantity = row[:7]
    seller_id, thumbs_up, thumbs_down = row[7:10]
    return {
        "item_id": format_item_id(category, number),
        "item_name": name,
        "category": category,
        "keywords": list(keywords),
        "condition": condition,
        "price": price,
        "price_decimal": money.text(price),
        "quantity": quantity,
        "seller_id": seller_id,
        "thumbs_up": thumbs_up,
        "thumbs_down": thumbs_down,
    }


def item_json(row: str, *extra: str) -> str:
    """SQL for the JSON object that L{item_from_row} makes, of the items
    row C{row} (a table alias), with the C{extra} key/value pairs after it.

    The hot path (marketplace/hotpath.py) has PostgreSQL write its answers
    this way, sparing the service the rows, the dicts and their encoding.
    """
    pairs = "".join(f", {pair}" for pair in extra)
    return (
        f"json_build_object('item_id', {row}.category || '-' || {row}.id,"
        f" 'item_name', {row}.name, 'category', {row}.category,"
        f" 'keywords', {row}.keywords, 'condition', {row}.condition,"
        f" 'price', {row}.price, 'price_decimal', {row}.price::text,"
        f" 'quantity', {row}.quantity,"
        f" 'seller_id', {row}.seller_id, 'thumbs_up', {row}.thumbs_up,"
        f" 'thumbs_down', {row}.thumbs_down{pairs})"
    )


def cart_json(lines: str) -> str:
    """SQL for the JSON cart that L{cart_from_rows} makes, of C{lines}: a
    query of (item_id, quantity) rows.  PostgreSQL's numeric is exact, and
    its text of a numeric(12, 2) or of a sum of them has two decimals, as
    L{money.text} writes them."""
    return f"""(
    SELECT json_build_object(
        'cart', coalesce(json_agg(json_build_object(
            'item_id', i.category || '-' || i.id, 'item_name', i.name,
            'quantity', c.quantity, 'price', i.price, 'price_decimal', i.price::text,
            'subtotal_decimal', (c.quantity * i.price)::text) ORDER BY c.item_id), '[]'),
        'total', coalesce(sum(c.quantity * i.price), 0),
        'total_decimal', round(coalesce(sum(c.quantity * i.price), 0), 2)::text)
    FROM ({lines}) AS c JOIN items AS i ON i.id = c.item_id
)"""


# Items


async def register_item(
    db: Database,
    seller_id: int,
    name: str,
    category: int,
    keywords: List[str],
    condition: str,
    price: Decimal,
    quantity: int,
) -> str:
    """Put a new item up for sale; its item id."""
    row = await db.one(
        "INSERT INTO items (seller_id, name, category, keywords, condition,"
        " price, quantity) VALUES (%s, %s, %s, %s::text[], %s, %s, %s)"
        " RETURNING id",
        (seller_id, name, category, keywords, condition, price, quantity),
    )
    return format_item_id(category, row[0])


async def get_item(db: Database, category: int, number: int) -> Optional[dict]:
    """The item with this id, or None."""
    row = await db.one(
        f"SELECT {ITEM_COLUMNS} FROM items WHERE id = %s AND category = %s",
        (number, category),
    )
    return item_from_row(row) if row else None


async def item_owner(db: Database, category: int, number: int) -> Optional[int]:
    """The seller of an item, or None if there is no such item."""
    row = await db.one(
        "SELECT seller_id FROM items WHERE id = %s AND category = %s",
        (number, category),
    )
    return row[0] if row else None


async def change_price(
    db: Database, seller_id: int, category: int, number: int, price: Decimal
) -> Optional[dict]:
    """Set the price of a seller's own item; None if it is not theirs."""
    row = await db.one(
        f"UPDATE items SET price = %s WHERE id = %s AND category = %s"
        f" AND seller_id = %s RETURNING {ITEM_COLUMNS}",
        (price, number, category, seller_id),
    )
    return item_from_row(row) if row else None


async def take_off_sale(
    db: Database, seller_id: int, category: int, number: int, units: int
) -> Optional[dict]:
    """Take C{units} of a seller's own item off sale, if it has that many."""
    row = await db.one(
        f"UPDATE items SET quantity = quantity - %s WHERE id = %s AND category = %s"
        f" AND seller_id = %s AND quantity >= %s RETURNING {ITEM_COLUMNS}",
        (units, number, category, seller_id, units),
    )
    return item_from_row(row) if row else None


async def seller_items(db: Database, seller_id: int) -> List[dict]:
    """Every item of a seller, sold-out ones included."""
    rows = await db.query(
        f"SELECT {ITEM_COLUMNS} FROM items WHERE seller_id = %s ORDER BY id",
        (seller_id,),
    )
    return [item_from_row(row) for row in rows]


async def seller_counts(db: Database, seller_id: int) -> dict:
    """The feedback and sales counts over all of a seller's items."""
    row = await db.one(
        "SELECT coalesce(sum(thumbs_up), 0), coalesce(sum(thumbs_down), 0),"
        " coalesce(sum(units_sold), 0) FROM items WHERE seller_id = %s",
        (seller_id,),
    )
    return {
        "thumbs_up": int(row[0]),
        "thumbs_down": int(row[1]),
        "items_sold": int(row[2]),
    }


# Search: see PROTOCOL.md (Search) and the README for the scoring.  The hot
# path (marketplace/hotpath.py) joins this same statement onto the session.
SEARCH = f"""
SELECT {ITEM_COLUMNS}, score FROM (
    SELECT i.*,
        (SELECT count(*) FROM unnest(%(keywords)s::text[]) AS k
          WHERE k = ANY (i.keywords))
        + 0.5 * (SELECT count(*) FROM unnest(%(keywords)s::text[]) AS k
          WHERE strpos(lower(i.name), k) > 0) AS score
    FROM items AS i
    WHERE i.category = %(category)s AND i.quantity > 0
      AND (cardinality(%(keywords)s::text[]) = 0 OR i.keywords && %(keywords)s::text[])
) AS matches
ORDER BY score DESC, thumbs_up - thumbs_down DESC, price, id
LIMIT %(limit)s OFFSET %(offset)s
"""


async def search(
    db: Database, category: int, keywords: List[str], limit: int, offset: int
) -> List[dict]:
    """Items on sale in C{category} that share a keyword, best first."""
    rows = await db.query(
        SEARCH,
        {"category": category, "keywords": keywords, "limit": limit, "offset": offset},
    )
    items = []
    for row in rows:
        item = item_from_row(row)
        item["score"] = float(row[10])
        items.append(item)
    return items


# Carts

_ACTIVE_CART = """
SELECT i.category, l.item_id, i.name, l.quantity, i.price
FROM active_cart_lines AS l JOIN items AS i ON i.id = l.item_id
WHERE l.session_key = %s ORDER BY l.item_id
"""

_SAVED_CART = """
SELECT i.category, l.item_id, i.name, l.quantity, i.price
FROM saved_cart_lines AS l JOIN items AS i ON i.id = l.item_id
WHERE l.buyer_id = %s ORDER BY l.item_id
"""


def cart_line(category: int, number: int, name: str, quantity: int, price: Decimal) -> dict:
    """One line of a cart as PROTOCOL.md returns it."""
    return {
        "item_id": format_item_id(category, number),
        "item_name": name,
        "quantity": quantity,
        "price": price,
        "price_decimal": money.text(price),
        "subtotal_decimal": money.text(money.line_total(quantity, price)),
    }


def cart_from_rows(rows: Sequence[Sequence]) -> dict:
    """A cart as PROTOCOL.md returns it: its lines and their total, from
    (category, number, name, quantity, price) rows."""
    total = money.total((row[3], row[4]) for row in rows)
    return {
        "cart": [cart_line(*row) for row in rows],
        "total": total,
        "total_decimal": money.text(total),
    }


async def active_cart(db: Database, session_key: str) -> dict:
    """The active cart of a session."""
    return cart_from_rows(await db.query(_ACTIVE_CART, (session_key,)))


async def saved_cart(db: Database, buyer_id: int) -> dict:
    """The saved cart of a buyer."""
    return cart_from_rows(await db.query(_SAVED_CART, (buyer_id,)))


async def start_active_cart(db: Database, session_key: str, buyer_id: int) -> None:
    """Fill a new session's active cart with a copy of the saved cart."""
    await db.execute(
        "INSERT INTO active_cart_lines (session_key, buyer_id, item_id, quantity)"
        " SELECT %s, buyer_id, item_id, quantity FROM saved_cart_lines"
        " WHERE buyer_id = %s",
        (session_key, buyer_id),
    )


# The most a cart line may come to, as SQL.
_TOTAL_MAX = f"{money.TOTAL_MAX}::numeric"

# The item a cart line is added for (a common table expression), read once
# for both checks of L{add_line}.
ADD_ITEM = (
    "item AS (SELECT id, quantity, price FROM items"
    " WHERE id = %(number)s AND category = %(category)s)"
)


def add_line(buyer: str, sources: str = "item AS i") -> str:
    """SQL that adds %(units)s of the C{item} of L{ADD_ITEM} to the active
    cart of session %(key)s for C{buyer} (an SQL expression over
    C{sources}), unless the cart would then hold more than is on sale, or
    the line would come to more than L{money.TOTAL_MAX}; it returns the
    line written (item_id, quantity), or nothing.

    One statement, so concurrent additions to one cart add up exactly: the
    conflicting row is locked while its new quantity is checked and written.
    The new quantity is checked as a bigint, so no sum of two quantities
    overflows the integer column before it is refused.
    """
    return f"""
INSERT INTO active_cart_lines AS l (session_key, buyer_id, item_id, quantity)
SELECT %(key)s, {buyer}, i.id, %(units)s FROM {sources}
WHERE i.quantity >= %(units)s AND i.price * %(units)s <= {_TOTAL_MAX}
ON CONFLICT (session_key, item_id) DO UPDATE
    SET quantity = l.quantity + excluded.quantity
    WHERE (SELECT l.quantity::bigint + excluded.quantity <= i.quantity
               AND (l.quantity::bigint + excluded.quantity) * i.price <= {_TOTAL_MAX}
           FROM item AS i)
RETURNING l.item_id, l.quantity
"""


_ADD_TO_CART = f"WITH {ADD_ITEM}{add_line('%(buyer)s')}"


async def add_to_cart(
    db: Database,
    session_key: str,
    buyer_id: int,
    category: int,
    number: int,
    units: int,
) -> bool:
    """Add units to the active cart if the item has that many on sale."""
    row = await db.one(
        _ADD_TO_CART,
        {
            "key": session_key,
            "buyer": buyer_id,
            "number": number,
            "category": category,
            "units": units,
        },
    )
    return row is not None


async def units_in_cart(
    db: Database, session_key: str, category: int, number: int
) -> int:
    """How many units of an item the active cart holds."""
    row = await db.one(
        "SELECT l.quantity FROM active_cart_lines AS l JOIN items AS i"
        " ON i.id = l.item_id WHERE l.session_key = %s AND l.item_id = %s"
        " AND i.category = %s",
        (session_key, number, category),
    )
    return row[0] if row else 0


async def remove_from_cart(
    db: Database, session_key: str, category: int, number: int, units: int
) -> bool:
    """Take units out of the active cart; False if the item is not in it.

    Taking out as many units as the line holds, or more, removes the line.
    """

    async def remove(cursor) -> bool:
        await cursor.execute(
            "SELECT l.quantity FROM active_cart_lines AS l JOIN items AS i"
            " ON i.id = l.item_id WHERE l.session_key = %s AND l.item_id = %s"
            " AND i.category = %s FOR UPDATE OF l",
            (session_key, number, category),
        )
        row = cursor.fetchone()
        if row is None:
            return False
        if row[0] <= units:
            await cursor.execute(
                "DELETE FROM active_cart_lines WHERE session_key = %s AND item_id = %s",
                (session_key, number),
            )
        else:
            await cursor.execute(
                "UPDATE active_cart_lines SET quantity = quantity - %s"
                " WHERE session_key = %s AND item_id = %s",
                (units, session_key, number),
            )
        return True

    return await db.transaction(remove)


async def save_cart(db: Database, session_key: str, buyer_id: int) -> None:
    """Make the active cart the buyer's saved cart."""

    async def replace(cursor) -> None:
        await cursor.execute(
            "DELETE FROM saved_cart_lines WHERE buyer_id = %s", (buyer_id,)
        )
        await cursor.execute(
            "INSERT INTO saved_cart_lines (buyer_id, item_id, quantity)"
            " SELECT %s, item_id, quantity FROM active_cart_lines"
            " WHERE session_key = %s",
            (buyer_id, session_key),
        )

    await db.transaction(replace)


async def clear_cart(db: Database, session_key: str) -> None:
    """Empty the active cart of a session."""
    await db.execute(
        "DELETE FROM active_cart_lines WHERE session_key = %s", (session_key,)
    )


async def drop_carts(db: Database, session_keys: List[str]) -> None:
    """Drop the active carts of sessions that have ended."""
    if session_keys:
        await db.execute(
            "DELETE FROM active_cart_lines WHERE session_key = ANY(%s)",
            (session_keys,),
        )


async def idle_cart_sessions(db: Database, idle: float) -> List[str]:
    """Session keys of active carts with no line added for C{idle} seconds."""
    rows = await db.query(
        "SELECT DISTINCT session_key FROM active_cart_lines"
        " GROUP BY session_key"
        " HAVING max(added_at) < now() - %s * interval '1 second'",
        (idle,),
    )
    return [key for (key,) in rows]
