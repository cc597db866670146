"""The product database: items and carts (purchases and feedback are in
purchasedb).

All of its SQL is here, but for the single-statement APIs' (apisql).
Items and carts come back as PROTOCOL.md describes them, written as JSON
by PostgreSQL (apisql.item_json, apisql.cart_json).
"""

from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import List, Optional, Tuple

from marketplace.contract.validate import format_item_id
from marketplace.postgres.database import Database
from marketplace.product.apisql import (
    CART_LINES,
    SEARCH_ALL,
    SEARCH_MANY,
    SEARCH_ONE,
    cart_json,
    cart_lines_json,
    keyword_args,
)
from marketplace.frame.dispatch import JsonPayload


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


# Search: the statements are apisql's SEARCH_*; the cursor of the first
# page is L{FIRST}.

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


#: How many rows of its pairs' lists a search with several keywords reads
#: first, for each item of the page it asks for (apisql.SEARCH_MANY): the
#: three most common keywords of a catalog of a million items needed 8 to
#: 17 for a page of 50 (docs/PERFORMANCE.md, "Several keywords: the best
#: of the pairs first").
PAIR_ROWS_PER_ITEM = 20
#: The fewest it reads first, and the most: a page further down than that
#: reads nothing first (on a million items, the first 500 results read
#: 10,000 rows first in vain: 29 ms against 22 ms without).
PAIR_ROWS = (200, 4_000)
#: How many rows after the first read it reads of each list: a list with no
#: more is then read whole, and an item not read cannot be on it.
BEYOND_ROWS = 64


def pair_rows(keywords: int, limit: int, offset: int) -> int:
    """How many rows of its pairs' lists a search with C{keywords} keywords
    for C{offset + limit} items reads first: none with four or five, whose
    pages the first rows do not settle (the best an unread item can score
    grows with the keywords it may have in its name), and none for a page
    beyond the first L{PAIR_ROWS}[1] / L{PAIR_ROWS_PER_ITEM} items."""
    low, high = PAIR_ROWS
    rows = PAIR_ROWS_PER_ITEM * (limit + offset)
    if keywords > 3 or rows > high:
        return 0
    return max(low, rows)


def search_statement(
    category: int,
    keywords: List[str],
    limit: int,
    offset: int,
    cursor: Cursor = None,
    first_pair_rows: Optional[int] = None,
    beyond_rows: int = BEYOND_ROWS,
) -> Tuple[str, str, dict]:
    """The search for these fields: the short name of its statement in
    L{SEARCHES}, its SQL (answering ITEM_COLUMNS and the score, ranked) and
    arguments.
    C{cursor} is L{validate.search_cursor}'s (score, votes, price, number)
    of the item the page comes after, or None for the first page.
    C{first_pair_rows}: how many rows of the pairs' lists to read first
    (default L{pair_rows}), and C{beyond_rows} of each after those (default
    L{BEYOND_ROWS}); tests make them small."""
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
    if first_pair_rows is None:
        first_pair_rows = pair_rows(len(keywords), limit, offset)
    args.update(
        _cursor_args(after, level, level), halves=int(halves), keywords=keywords,
        pair_rows=first_pair_rows, beyond_rows=beyond_rows,
        **keyword_args(keywords),
    )
    return "many", SEARCH_MANY, args


# Carts


class FiledCart(JsonPayload):
    """A cart answer (JSON text), and C{filed}: the compact form it is
    filed in under a request key (apisql.cart_lines_json)."""

    __slots__ = ("filed",)

    def __init__(self, text: str, filed: str) -> None:
        super().__init__(text)
        self.filed = filed


async def active_cart(db: Database, session_key: str) -> FiledCart:
    """The active cart of a session."""
    row = await db.one(
        f"SELECT {cart_json(CART_LINES)}::text, {cart_lines_json(CART_LINES)}::text",
        {"key": session_key},
    )
    return FiledCart(*row)


async def start_active_cart(db: Database, session_key: str, buyer_id: int) -> None:
    """Fill a new session's active cart with a copy of the saved cart."""
    await db.execute(
        "INSERT INTO active_cart_lines (session_key, buyer_id, item_id, quantity)"
        " SELECT %s, buyer_id, item_id, quantity FROM saved_cart_lines"
        " WHERE buyer_id = %s",
        (session_key, buyer_id),
    )


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


async def clear_cart(db: Database, session_key: str) -> FiledCart:
    """Empty the active cart of a session; the cart (empty)."""
    row = await db.one(
        "WITH cleared AS (DELETE FROM active_cart_lines WHERE session_key = %(key)s)"
        f" SELECT {cart_json(CART_LINES + ' AND false')}::text",
        {"key": session_key},
    )
    return FiledCart(row[0], "[]")


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
