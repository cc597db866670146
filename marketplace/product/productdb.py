"""The product database: items, carts (and later purchases and feedback).

All of its SQL is here.  Items come back as the dicts PROTOCOL.md describes.
"""

from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import List, Optional, Sequence, Tuple

from marketplace.contract import money
from marketplace.contract.validate import format_item_id
from marketplace.postgres.database import Database

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

    The hot path (marketplace/product/hotpath.py) has PostgreSQL write its answers
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


def _columns(alias: str) -> str:
    return ", ".join(f"{alias}.{column.strip()}" for column in ITEM_COLUMNS.split(","))


# Search: see docs/PROTOCOL.md (Search) for the ranking: score (highest
# first), thumbs_up - thumbs_down (highest first), price, item id.  Each
# statement answers ITEM_COLUMNS and the score, ranked; the hot path
# (marketplace/product/hotpath.py) joins the same statements onto the session.
#
# The rank of an item is the row (-score, thumbs_down - thumbs_up, price,
# id), smallest first, so a page after a keyset cursor (L{SearchCursor}) is
# one row comparison that the indexes (schema.sql, items_ranked and
# item_keywords_ranked) answer in order.  Every statement takes
# %(category)s, %(limit)s, %(offset)s and the cursor's %(votes)s, %(price)s
# and %(id)s; the cursor of the first page is L{FIRST}.

# No keywords: every item on sale in the category, score 0, straight off
# items_ranked in ranking order.
SEARCH_ALL = f"""
SELECT {_columns('i')}, 0.0 AS score FROM items AS i
WHERE category = %(category)s AND quantity > 0
  AND (thumbs_down - thumbs_up, price, id)
      > (%(votes)s::integer, %(price)s::numeric, %(id)s::bigint)
ORDER BY thumbs_down - thumbs_up, price, id
LIMIT %(limit)s OFFSET %(offset)s
"""

# One keyword: its list in the category, straight off item_keywords_ranked
# in ranking order: the items with the keyword in their name (score 1.5)
# first, then the others (1.0).  %(name_miss)s is the cursor's part.
SEARCH_ONE = f"""
SELECT {_columns('i')}, CASE WHEN k.name_miss THEN 1.0 ELSE 1.5 END AS score
FROM (
    SELECT item_id, name_miss, votes, price FROM item_keywords
    WHERE category = %(category)s AND keyword = %(keyword)s::text
      AND (name_miss, votes, price, item_id)
          > (%(name_miss)s::boolean, %(votes)s::integer, %(price)s::numeric, %(id)s::bigint)
    ORDER BY name_miss, votes, price, item_id
    LIMIT %(limit)s OFFSET %(offset)s
) AS k JOIN items AS i ON i.id = k.item_id
ORDER BY k.name_miss, k.votes, k.price, k.item_id
"""

# Up to five keywords, given as %(keywords)s: only the rows of those
# keywords in the category are read (an index-only scan of
# item_keywords_ranked); an item's rows give how many keywords it shares
# and its lower-cased name, hence its score, without reading the item.  The
# score is counted in halves (an integer: cheaper to add up and sort) until
# the page is cut; %(halves)s is the cursor's.  Only the page's items are
# read from items.
SEARCH_MANY = f"""
SELECT {_columns('i')}, m.halves * 0.5 AS score FROM (
    SELECT item_id, halves, votes, price FROM (
        SELECT item_id, 2 * count(*) + max(hits) AS halves,
               any_value(votes) AS votes, any_value(price) AS price
        FROM (
            SELECT item_id, votes, price,
                coalesce((strpos(name, (%(keywords)s::text[])[1]) > 0)::int, 0)
                + coalesce((strpos(name, (%(keywords)s::text[])[2]) > 0)::int, 0)
                + coalesce((strpos(name, (%(keywords)s::text[])[3]) > 0)::int, 0)
                + coalesce((strpos(name, (%(keywords)s::text[])[4]) > 0)::int, 0)
                + coalesce((strpos(name, (%(keywords)s::text[])[5]) > 0)::int, 0) AS hits
            FROM item_keywords
            WHERE category = %(category)s AND keyword = ANY (%(keywords)s::text[])
        ) AS rows
        GROUP BY item_id
    ) AS scored
    WHERE (-halves, votes, price, item_id)
        > (-%(halves)s::integer, %(votes)s::integer, %(price)s::numeric, %(id)s::bigint)
    ORDER BY halves DESC, votes, price, item_id
    LIMIT %(limit)s OFFSET %(offset)s
) AS m JOIN items AS i ON i.id = m.item_id
ORDER BY m.halves DESC, m.votes, m.price, m.item_id
"""

#: Lower than any item's votes (thumbs_down - thumbs_up) and price: the
#: cursor before the first item.
_LOWEST_VOTES = -(2**31 - 1)
_LOWEST_PRICE = Decimal(-1)
#: Higher than any: the cursor after the last item.
_HIGHEST_VOTES = 2**31 - 1
_HIGHEST_PRICE = Decimal(10) ** 12


@dataclass(frozen=True)
class SearchCursor:
    """Where a page starts: just after the item of this score, votes
    (thumbs_down - thumbs_up), price and item number in the ranking."""

    score: Decimal
    votes: int
    price: Decimal
    number: int


FIRST = SearchCursor(Decimal("Infinity"), _LOWEST_VOTES, _LOWEST_PRICE, 0)

Cursor = Optional[Tuple[Decimal, int, Decimal, int]]


def _cursor_args(cursor: SearchCursor, top: Decimal, bottom: Decimal) -> dict:
    """The cursor as the row (votes, price, id) of a statement whose items
    all score from C{bottom} to C{top}: the cursor's own row if its score
    is one of theirs, before them all if it is higher, after them all if
    lower."""
    if cursor.score > top:
        return {"votes": _LOWEST_VOTES, "price": _LOWEST_PRICE, "id": 0}
    if cursor.score < bottom:
        return {"votes": _HIGHEST_VOTES, "price": _HIGHEST_PRICE, "id": 2**63 - 1}
    return {"votes": cursor.votes, "price": cursor.price, "id": cursor.number}


def search_statement(
    category: int,
    keywords: List[str],
    limit: int,
    offset: int,
    cursor: Cursor = None,
) -> Tuple[str, str, dict]:
    """The search for these fields: a short name for its prepared statement,
    its SQL (answering ITEM_COLUMNS and the score, ranked) and arguments.
    C{cursor} is L{validate.search_cursor}'s (score, votes, price, number)
    of the item the page comes after, or None for the first page."""
    after = SearchCursor(*cursor) if cursor is not None else FIRST
    args = {"category": category, "limit": limit, "offset": offset}
    if not keywords:
        args.update(_cursor_args(after, Decimal(0), Decimal(0)))
        return "all", SEARCH_ALL, args
    if len(keywords) == 1:
        # Score 1.5 (name_miss false), then 1.0 (true).
        level = Decimal("1.5") if after.score >= Decimal("1.5") else Decimal(1)
        args.update(_cursor_args(after, level, level), name_miss=level == 1)
        return "one", SEARCH_ONE, {**args, "keyword": keywords[0]}
    # Scores are whole halves: a cursor between two is just before the lower.
    # No item scores more than 7.5 (15 halves).
    halves = 100
    if after.score.is_finite():
        halves = max(-100, min(100, int((2 * after.score).to_integral_value(ROUND_FLOOR))))
    level = Decimal(halves) / 2
    args.update(_cursor_args(after, level, level), halves=int(halves), keywords=keywords)
    return "many", SEARCH_MANY, args


async def search(
    db: Database,
    category: int,
    keywords: List[str],
    limit: int,
    offset: int,
    cursor: Cursor = None,
) -> List[dict]:
    """Items on sale in C{category} that share a keyword, best first."""
    _, sql, args = search_statement(category, keywords, limit, offset, cursor)
    items = []
    for row in await db.query(sql, args):
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
