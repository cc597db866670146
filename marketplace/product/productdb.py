"""The product database: items and carts (purchases and feedback are in
purchasedb).

All of its SQL is here.  Items and carts come back as PROTOCOL.md
describes them, written as JSON by PostgreSQL (L{item_json}, L{cart_json}).
"""

from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import List, Optional, Sequence, Tuple

from marketplace.contract import money
from marketplace.contract.validate import format_item_id
from marketplace.postgres.database import Database
from marketplace.server.envelope import JsonPayload
from marketplace.server.statements import OK, recorded

# Outcomes of the single-statement APIs (marketplace/server/statements.py)
# besides statements.OK.
NO_ITEM = "no item"
NOT_OWNER = "not owner"
SHORT = "short"
REFUSED = "refused"


def item_json(row: str, *extra: str) -> str:
    """SQL for an item as PROTOCOL.md returns it (JSON), of the items row
    C{row} (a table alias), with the C{extra} key/value pairs after it.

    Every answer that holds items has PostgreSQL write them this way,
    sparing the service the rows, the dicts and their encoding.
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
    """SQL for a cart as PROTOCOL.md returns it (JSON), of C{lines}: a
    query of (item_id, quantity) rows.  PostgreSQL's numeric is exact, and
    its text of a numeric(12, 2) or of a sum of them has two decimals, as
    L{money.text} writes them.  Every answer that holds a cart has
    PostgreSQL write it this way."""
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


# The single-statement APIs (marketplace/server/statements.py): each
# statement comes after C{live} (the session's account, one row or none)
# and answers one row per live session: the outcome (statements.OK or one
# of those above) and the payload as JSON text (of a refusal, what its
# error message needs beyond the outcome, if anything).  A write files its
# payload under its request key where the outcome is OK
# (statements.recorded()).

SELLER_ITEMS = f"""
SELECT '{OK}', json_build_object('items', coalesce((
    SELECT json_agg({item_json('i')} ORDER BY i.id)
    FROM items AS i WHERE i.seller_id = s.account_id
), '[]'))::text
FROM live AS s
"""

GET_ITEM = f"""
SELECT CASE WHEN i.id IS NULL THEN '{NO_ITEM}' ELSE '{OK}' END, {item_json('i')}::text
FROM live AS s LEFT JOIN items AS i ON i.id = %(number)s AND i.category = %(category)s
"""


def _item_write(change: str, where: str, refused: str) -> str:
    """A seller's write on an item of theirs: the item after C{change} (SQL
    of SET) where C{where} holds as well; the outcome NO_ITEM, NOT_OWNER
    or, where the seller owns the item, C{refused} (SQL of the outcome).
    Why not is looked up only when the write did not happen."""
    return f""", changed AS (
    UPDATE items AS i SET {change}
    WHERE i.id = %(number)s AND i.category = %(category)s
      AND i.seller_id = (SELECT account_id FROM live){where}
    RETURNING i.*
), answer AS (
    SELECT s.account_id,
           CASE WHEN c.id IS NOT NULL THEN '{OK}'
                ELSE coalesce((
                    SELECT CASE WHEN o.seller_id <> s.account_id THEN '{NOT_OWNER}'
                                ELSE {refused} END
                    FROM items AS o WHERE o.id = %(number)s AND o.category = %(category)s
                ), '{NO_ITEM}') END AS outcome,
           {item_json('c')}::text AS payload
    FROM live AS s LEFT JOIN changed AS c ON true
), {recorded()}
SELECT outcome, payload FROM answer
"""


#: ChangeItemPrice: %(price)s for the item %(category)s-%(number)s (the
#: owner's change always happens, so the third outcome never comes).
CHANGE_PRICE = _item_write("price = %(price)s", "", f"'{NOT_OWNER}'")

#: UpdateUnitsForSale: %(units)s off sale, if the item has that many.
TAKE_OFF_SALE = _item_write(
    "quantity = i.quantity - %(units)s", " AND i.quantity >= %(units)s", f"'{SHORT}'"
)


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


ITEM_COLUMNS = (
    "id, category, name, keywords, condition, price, quantity,"
    " seller_id, thumbs_up, thumbs_down"
)


def _columns(alias: str) -> str:
    return ", ".join(f"{alias}.{column.strip()}" for column in ITEM_COLUMNS.split(","))


# Search: see docs/PROTOCOL.md (Search) for the ranking: score (highest
# first), thumbs_up - thumbs_down (highest first), price, item id.  Each
# statement answers ITEM_COLUMNS and the score, ranked; SEARCHES has them
# answer as the API does.
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

# The halves an item scores for the query keywords found in its
# lower-cased name C{name} (the query's keywords are lower-cased).
_NAME_HITS = " + ".join(
    f"coalesce((strpos(name, (%(keywords)s::text[])[{n}]) > 0)::int, 0)" for n in range(1, 6)
)

# Up to five keywords, given as %(keywords)s, when fewer than a page share
# two of them (SEARCH_MANY): only the rows of those keywords in the
# category are read (an index-only scan of item_keywords_ranked); an item's
# rows give how many keywords it shares and its lower-cased name, hence its
# score, without reading the item.  The score is counted in halves (an
# integer: cheaper to add up and sort) until the page is cut; %(halves)s is
# the cursor's.
_EVERY_LIST = f"""
    SELECT item_id, halves, votes, price FROM (
        SELECT item_id, 2 * count(*) + max(hits) AS halves,
               any_value(votes) AS votes, any_value(price) AS price
        FROM (
            SELECT item_id, votes, price, {_NAME_HITS} AS hits
            FROM item_keywords
            WHERE category = %(category)s AND keyword = ANY (%(keywords)s::text[])
        ) AS rows
        GROUP BY item_id
    ) AS scored
    WHERE (-halves, votes, price, item_id)
        > (-%(halves)s::integer, %(votes)s::integer, %(price)s::numeric, %(id)s::bigint)
    ORDER BY halves DESC, votes, price, item_id
    LIMIT %(limit)s OFFSET %(offset)s"""

# Several keywords.  An item that shares one query keyword scores at most
# 1.5 for it and a half for each other keyword in its name: 2 + n halves
# for n keywords.  The items sharing two or more are found on the lists of
# pairs of the query's keywords (item_keyword_pairs: an item sharing k of
# them is on k(k-1)/2 of those lists, so how many tells k).  If at least
# offset + limit of them after the cursor score above that bound, they are
# the page, and the keywords' whole lists (often long: a common word is on
# a third of the items) are never read; otherwise _EVERY_LIST is.
SEARCH_MANY = f"""
WITH shared AS (
    SELECT item_id, 2 * CASE count(*) WHEN 1 THEN 2 WHEN 3 THEN 3 WHEN 6 THEN 4 ELSE 5 END
                    + max({_NAME_HITS}) AS halves,
           any_value(votes) AS votes, any_value(price) AS price
    FROM item_keyword_pairs
    WHERE category = %(category)s
      AND (first, second) IN (
          SELECT a, b FROM unnest(%(keywords)s::text[]) AS a, unnest(%(keywords)s::text[]) AS b
          WHERE a < b)
    GROUP BY item_id
), above AS (
    SELECT item_id, halves, votes, price FROM shared
    WHERE halves > 2 + cardinality(%(keywords)s::text[])
      AND (-halves, votes, price, item_id)
          > (-%(halves)s::integer, %(votes)s::integer, %(price)s::numeric, %(id)s::bigint)
    ORDER BY halves DESC, votes, price, item_id
    LIMIT %(limit)s::bigint + %(offset)s::bigint
), page AS (
    SELECT item_id, halves, votes, price FROM above
    WHERE (SELECT count(*) FROM above) = %(limit)s::bigint + %(offset)s::bigint
    ORDER BY halves DESC, votes, price, item_id
    OFFSET %(offset)s
)
SELECT {_columns('i')}, m.halves * 0.5 AS score FROM (
    SELECT * FROM page
    UNION ALL
    SELECT * FROM ({_EVERY_LIST}
    ) AS every WHERE (SELECT count(*) FROM above) < %(limit)s::bigint + %(offset)s::bigint
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
    """The search for these fields: the short name of its statement in
    L{SEARCHES}, its SQL (answering ITEM_COLUMNS and the score, ranked) and
    arguments.
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


def _search(sql: str) -> str:
    """The single statement of a search of shape C{sql}, after C{live}."""
    return f"""
SELECT '{OK}', json_build_object('items', coalesce((
    SELECT json_agg({item_json('m', "'score', m.score")}
                    ORDER BY m.score DESC, m.thumbs_down - m.thumbs_up, m.price, m.id)
    FROM ({sql}) AS m
), '[]'))::text
FROM live AS s
"""


#: SearchItemsForSale by the short name of L{search_statement}.
SEARCHES = {"all": _search(SEARCH_ALL), "one": _search(SEARCH_ONE), "many": _search(SEARCH_MANY)}


# Carts

#: The lines of the active cart of session %(key)s.
CART_LINES = "SELECT item_id, quantity FROM active_cart_lines WHERE session_key = %(key)s"

#: DisplayCart.
DISPLAY_CART = f"""
SELECT '{OK}', {cart_json(CART_LINES)}::text FROM live AS s
"""


async def active_cart(db: Database, session_key: str) -> JsonPayload:
    """The active cart of a session."""
    row = await db.one(f"SELECT {cart_json(CART_LINES)}::text", {"key": session_key})
    return JsonPayload(row[0])


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


# The cart after adding: the line the statement wrote (as RETURNING gives
# it) and the cart's other lines as they were when it began, since the rest
# of a statement cannot see its own writes.
_LINES_AFTER_ADDING = """
    SELECT item_id, quantity FROM added
    UNION ALL
    SELECT item_id, quantity FROM active_cart_lines
    WHERE session_key = %(key)s AND item_id <> %(number)s"""

#: AddItemToCart: %(units)s of the item %(category)s-%(number)s into the
#: active cart of session %(key)s.  The outcome is OK, with the cart, or
#: REFUSED, with what the error message needs (JSON): [units on sale,
#: price, units the cart holds] of the item, or null: there is no such
#: item.  These are looked up only when nothing was added (a plan node
#: more to start costs every call; one that is not reached costs little).
ADD_TO_CART = f""", {ADD_ITEM}, added AS ({add_line("s.account_id", "item AS i, live AS s")}
), answer AS (
    SELECT s.account_id,
           CASE WHEN EXISTS (SELECT FROM added) THEN '{OK}' ELSE '{REFUSED}' END AS outcome,
           CASE WHEN EXISTS (SELECT FROM added) THEN {cart_json(_LINES_AFTER_ADDING)}::text
                ELSE (SELECT json_build_array(i.quantity, i.price, coalesce((
                          SELECT l.quantity FROM active_cart_lines AS l
                          WHERE l.session_key = %(key)s AND l.item_id = i.id), 0))::text
                      FROM item AS i) END AS payload
    FROM live AS s
), {recorded()}
SELECT outcome, payload FROM answer
"""


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


async def clear_cart(db: Database, session_key: str) -> JsonPayload:
    """Empty the active cart of a session; the cart (empty)."""
    row = await db.one(
        "WITH cleared AS (DELETE FROM active_cart_lines WHERE session_key = %(key)s)"
        f" SELECT {cart_json(CART_LINES + ' AND false')}::text",
        {"key": session_key},
    )
    return JsonPayload(row[0])


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
