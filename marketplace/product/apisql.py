"""The SQL of the single-statement APIs, each readable whole here.

DisplayItemsForSale, ChangeItemPrice, UpdateUnitsForSale,
SearchItemsForSale, GetItem, AddItemToCart and DisplayCart each answer
with one statement on the product database (run by
marketplace/product/statements.py).  L{full_text} gives any of them in
full, as PostgreSQL runs it; C{python -m marketplace.product.apisql API
[joined|separate|standby] [unkeyed]} prints it.

Every statement begins with the common table expression C{live}, the
session's account (one row, or none for a session that is not live): on
one database it checks and touches the session itself (L{LIVE}; on a
standby it only checks it), on two it is the account the dispatcher found.
Each answers one row: an outcome (L{DONE}, or why not) and the payload as
JSON text written by PostgreSQL (of a refusal: what its error message
needs, looked up only then, since every plan node costs PostgreSQL time
to start on every call).

A write with a request key (arguments C{rk_id}, what the key is filed
under, and C{rk_request}, the request's fingerprint: both 32-byte SHA-256
digests, null without a key) first counts the write among the account's
(L{COUNTED}: beyond C{rk_max} in the window the outcome is
L{TOO_MANY_KEYS} and nothing changes), then files its answer under the key
where the outcome is L{DONE}.  Both digests are computed in Python
(L{marketplace.frame.dispatch.key_id} and C{fingerprint}).  A write
without a key runs its form without either (L{UNKEYED}).
"""

import sys
from typing import Dict, List, Optional

from marketplace.contract import money
from marketplace.customer.customerdb import LIVE_SESSION, LIVE_SESSION_READ
from marketplace.postgres import requestkeys
from marketplace.product.statements import DONE, TOO_MANY_KEYS

#: Outcomes of refusals (besides TOO_MANY_KEYS).
NO_ITEM = "no item"
NOT_OWNER = "not owner"
SHORT = "short"
REFUSED = "refused"

#: The most lines (distinct items) one cart may hold.
MAX_CART_LINES = 100

#: C{live} where customer and product data share a database.
LIVE = {
    "joined": LIVE_SESSION,
    "separate": "WITH live AS (SELECT %(account_id)s::bigint AS account_id)",
    # Joined, on a standby: the session checked, not touched (a standby
    # cannot write; marketplace/customer/touches.py touches it).
    "standby": LIVE_SESSION_READ,
}


def item_json(row: str, *extra: str) -> str:
    """SQL for an item as PROTOCOL.md returns it (JSON), of the items row
    C{row} (a table alias), with the C{extra} key/value pairs after it."""
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


def cart_object(price: str = "i.price") -> str:
    """SQL for a cart as PROTOCOL.md returns it (JSON), aggregated over
    rows of C{c}, a cart line (item_id, quantity), joined to C{i}, its
    item, at C{price} (an SQL expression: the item's price now, or
    C{c.price}, the line's own).  PostgreSQL's numeric is exact, and its
    text of a numeric(12, 2) or of a sum of them has two decimals, as
    L{money.text} writes them.  Every answer that holds a cart has
    PostgreSQL write it this way, so a cart filed as its lines
    (L{LINES_OBJECT}) comes back byte for byte."""
    return f"""json_build_object(
        'cart', coalesce(json_agg(json_build_object(
            'item_id', i.category || '-' || i.id, 'item_name', i.name,
            'quantity', c.quantity, 'price', {price}, 'price_decimal', {price}::text,
            'subtotal_decimal', (c.quantity * {price})::text) ORDER BY c.item_id), '[]'),
        'total', coalesce(sum(c.quantity * {price}), 0),
        'total_decimal', round(coalesce(sum(c.quantity * {price}), 0), 2)::text)"""


#: SQL for the compact form a cart is filed in under a request key,
#: aggregated over the rows of L{cart_object}: a JSON array of [item id,
#: quantity, price], a few bytes a line where the cart's JSON takes a
#: hundred and more.
LINES_OBJECT = """coalesce(json_agg(json_build_array(c.item_id, c.quantity, i.price)
                    ORDER BY c.item_id), '[]')"""


def cart_rows(lines: str) -> str:
    """The FROM clause of L{cart_object}: C{lines}, a query of (item_id,
    quantity) rows, as C{c}, joined to their items, C{i}."""
    return f"({lines}) AS c JOIN items AS i ON i.id = c.item_id"


def cart_json(lines: str, price: str = "i.price") -> str:
    """SQL for the cart (L{cart_object}) of C{lines}, a query of
    (item_id, quantity) rows."""
    return f"""(
    SELECT {cart_object(price)}
    FROM {cart_rows(lines)}
)"""


def cart_lines_json(lines: str) -> str:
    """SQL for the compact form (L{LINES_OBJECT}) of the cart of C{lines}
    (as for L{cart_json})."""
    return f"""(
    SELECT {LINES_OBJECT}
    FROM {cart_rows(lines)}
)"""


#: The answer filed under a request key (an SQL expression over the
#: column C{answer}): the JSON of the answer itself, or, for an answer
#: that is a cart, its lines (a JSON array, L{cart_lines_json}) with the
#: prices they had, made into the cart again.  An item's name and category
#: never change, so the cart is the first answer byte for byte.
FILED_ANSWER = f"""CASE WHEN left(answer, 1) = '[' THEN {cart_json(
    "SELECT (l->>0)::bigint AS item_id, (l->>1)::integer AS quantity,"
    " (l->>2)::numeric(12, 2) AS price FROM json_array_elements(answer::json) AS l",
    "c.price",
)}::text ELSE answer END"""

#: The lines of the active cart of session %(key)s.
CART_LINES = "SELECT item_id, quantity FROM active_cart_lines WHERE session_key = %(key)s"

#: Counts a keyed write (%(rk_id)s not null) of the session's account
#: among its keyed writes of the window; C{keys} is the count so far
#: (requestkeys.COUNT_KEY, as a common table expression; the table is
#: unlogged, so the count writes no WAL).
COUNTED = f"""counted AS (
    INSERT INTO request_key_counts AS c (role, account_id, window_start, keys)
    SELECT %(role)s, s.account_id, now(), 1 FROM live AS s WHERE %(rk_id)s::bytea IS NOT NULL
    ON CONFLICT (role, account_id) DO UPDATE SET
        window_start = CASE WHEN c.window_start <= now() - interval '{requestkeys.KEY_WINDOW:g} seconds'
                            THEN now() ELSE c.window_start END,
        keys = CASE WHEN c.window_start <= now() - interval '{requestkeys.KEY_WINDOW:g} seconds'
                    THEN 1 ELSE c.keys + 1 END
    RETURNING keys
)"""

#: Whether the write is beyond the account's share of keyed writes.
OVER_SHARE = "EXISTS (SELECT FROM counted WHERE keys > %(rk_max)s)"


def counted(keyed: bool) -> str:
    """L{COUNTED} after a comma, for a keyed write; nothing for one without
    a key (whose statement then starts no plan nodes for it)."""
    return f", {COUNTED}" if keyed else ""


def over_share(keyed: bool) -> str:
    """L{OVER_SHARE} for a keyed write; for one without a key, false (which
    PostgreSQL folds away when it plans the statement)."""
    return OVER_SHARE if keyed else "false"


def filed(answer: str, keyed: bool = True) -> str:
    """After a comma, the common table expression that files C{answer} (SQL
    over the common table expression C{answer}, whose columns are outcome
    and payload) under the request key where the outcome is L{DONE};
    nothing for a write without a key."""
    if not keyed:
        return ""
    return f""", recorded AS (
    INSERT INTO request_answers (id, request, answer)
    SELECT %(rk_id)s::bytea, %(rk_request)s::bytea, {answer}
    FROM answer AS a WHERE %(rk_id)s::bytea IS NOT NULL AND a.outcome = '{DONE}'
)"""


# Seller

DISPLAY_ITEMS = f"""
SELECT '{DONE}', json_build_object('items', coalesce((
    SELECT json_agg({item_json('i')} ORDER BY i.id)
    FROM items AS i WHERE i.seller_id = s.account_id
), '[]'))::text
FROM live AS s
"""


def _item_write(change: str, where: str, refused: str, keyed: bool = True) -> str:
    """A seller's write on an item of theirs: the item after C{change} (SQL
    of SET) where C{where} holds as well; the outcome NO_ITEM, NOT_OWNER
    or, where the seller owns the item, C{refused} (SQL of the outcome).
    C{keyed}: the form for a request with a key (counted and filed)."""
    return f"""{counted(keyed)}, changed AS (
    UPDATE items AS i SET {change}
    WHERE i.id = %(number)s AND i.category = %(category)s
      AND i.seller_id = (SELECT account_id FROM live){where} AND NOT {over_share(keyed)}
    RETURNING i.*
), answer AS (
    SELECT CASE WHEN c.id IS NOT NULL THEN '{DONE}'
                WHEN {over_share(keyed)} THEN '{TOO_MANY_KEYS}'
                ELSE coalesce((
                    SELECT CASE WHEN o.seller_id <> s.account_id THEN '{NOT_OWNER}'
                                ELSE {refused} END
                    FROM items AS o WHERE o.id = %(number)s AND o.category = %(category)s
                ), '{NO_ITEM}') END AS outcome,
           {item_json('c')}::text AS payload
    FROM live AS s LEFT JOIN changed AS c ON true
){filed("a.payload", keyed)}
SELECT outcome, payload FROM answer
"""


def change_price(keyed: bool = True) -> str:
    """ChangeItemPrice: %(price)s for the item %(category)s-%(number)s (the
    owner's change always happens, so the third outcome never comes)."""
    return _item_write("price = %(price)s", "", f"'{NOT_OWNER}'", keyed)


def take_off_sale(keyed: bool = True) -> str:
    """UpdateUnitsForSale: %(units)s off sale, if the item has that many."""
    return _item_write(
        "quantity = i.quantity - %(units)s", " AND i.quantity >= %(units)s", f"'{SHORT}'", keyed
    )


# Buyer

GET_ITEM = f"""
SELECT CASE WHEN i.id IS NULL THEN '{NO_ITEM}' ELSE '{DONE}' END, {item_json('i')}::text
FROM live AS s LEFT JOIN items AS i ON i.id = %(number)s AND i.category = %(category)s
"""

DISPLAY_CART = f"""
SELECT '{DONE}', {cart_json(CART_LINES)}::text FROM live AS s
"""

# Search: see docs/PROTOCOL.md (Search) for the ranking, and productdb
# (search_statement) for which statement a search runs and its arguments.
# Each answers the items' columns and the score, ranked; SEARCHES has them
# answer as the API does.
#
# The rank of an item is the row (-score, thumbs_down - thumbs_up, price,
# id), smallest first, so a page after a keyset cursor is one row
# comparison that the indexes (schema.sql, items_ranked and
# item_keywords_ranked) answer in order.  Every statement takes
# %(category)s, %(limit)s, %(offset)s and the cursor's %(votes)s, %(price)s
# and %(id)s.

ITEM_COLUMNS = (
    "id, category, name, keywords, condition, price, quantity,"
    " seller_id, thumbs_up, thumbs_down"
)


def _columns(alias: str) -> str:
    return ", ".join(f"{alias}.{column.strip()}" for column in ITEM_COLUMNS.split(","))


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

# Several keywords (two to five, given as %(keywords)s).  An item's score
# is counted in halves (an integer: cheaper to add up and sort) until the
# page is cut; %(halves)s is the cursor's.  An item sharing one of n query
# keywords scores at most 1.5 for it and a half for each other keyword in
# its name: 2 + n halves.  Every item that can score more shares two or
# more, so it is on the list of a pair of the query's keywords
# (item_keyword_pairs, whose rows carry the item's keywords and lower-cased
# name: one row scores its item).
_QUERY = "%(keywords)s::text[]"
_SLOTS = range(1, 6)


def _keyword(n: int) -> str:
    """The query's C{n}th keyword (from 1; null beyond the last): a scalar
    argument of its own (L{keyword_args}), since an element of the array
    argument would be taken out of it on every row in a generic plan."""
    return f"%(keyword_{n})s::text"


def keyword_args(keywords: List[str]) -> Dict[str, Optional[str]]:
    """The scalar arguments of L{SEARCH_MANY} (L{_keyword}) for the query's
    C{keywords}."""
    return {
        f"keyword_{n}": keywords[n - 1] if n <= len(keywords) else None for n in _SLOTS
    }


# The halves an item scores for the query keywords found in its
# lower-cased name C{name} (the query's keywords are lower-cased).
_NAME_HITS = " + ".join(
    f"coalesce((strpos(name, {_keyword(n)}) > 0)::int, 0)" for n in _SLOTS
)


def _bigrams(n: int) -> str:
    """The bigrams of the query's C{n}th keyword (schema.sql, bigrams()),
    worked out once for the whole statement (the C{query_bigrams} of
    L{SEARCH_MANY})."""
    return f"(SELECT bigrams_{n} FROM query_bigrams)"


# The bigrams of each query keyword, as one row.
_QUERY_BIGRAMS = "query_bigrams AS MATERIALIZED (SELECT " + ", ".join(
    f"bigrams({_keyword(n)}) AS bigrams_{n}" for n in _SLOTS
) + ")"


def _in_slot(test: str, n: int) -> str:
    """C{test} of the query's C{n}th keyword: its placeholders C{keyword}
    and C{bigrams} filled in."""
    return test.format(keyword=_keyword(n), bigrams=_bigrams(n))


def _others(*columns: str) -> str:
    """A test that the query keyword (the C{keyword} placeholder that
    L{_sum_of} fills in) is none of these columns of the row: only the
    others are looked for."""
    return " AND ".join(f"{{keyword}} <> {column}" for column in columns)


def _sum_of(test: str, slots=_SLOTS) -> str:
    """The number of query keywords C{keyword} (of those in C{slots}; their
    bigrams C{bigrams}) for which C{test} holds."""
    return " + ".join(
        f"coalesce(({_in_slot(test, n)})::int, 0)" for n in slots
    )


def _pair_halves(slots) -> str:
    """The halves of the item of a pair row, for a query of the keywords
    in C{slots}: its pair's two keywords (4), each in its name (2 -
    misses), and two for each other query keyword among its C{keywords}
    and one for each in its name."""
    return (
        "6 - misses + 2 * ("
        + _sum_of(_others("first", "second") + " AND {keyword} = ANY (keywords)", slots)
        + ") + "
        + _sum_of(_others("first", "second") + " AND strpos(name, {keyword}) > 0", slots)
    )


# The halves of the item of a pair row (the shorter sum when there are no
# more than three keywords: it is worked out for every row read first).
_PAIR_HALVES = (
    f"CASE WHEN {_keyword(4)} IS NULL THEN {_pair_halves(range(1, 4))}"
    f" ELSE {_pair_halves(_SLOTS)} END"
)

# The test that a query keyword other than the row's own (in
# item_keywords) is in its lower-cased name: first whether the name has
# all its bigrams, which most rows fail much faster than strpos.
_OTHER_NAMED = (
    _others("keyword")
    + " AND (name_bigrams & {bigrams}) = {bigrams} AND strpos(name, {keyword}) > 0"
)

# The halves of an item from its row of item_keywords, when that is the one
# query keyword it has: 2, one if the name holds it, one for each other
# query keyword in its name.
_SINGLE_HALVES = "3 - name_miss::int + " + _sum_of(_OTHER_NAMED)

# Whether any query keyword other than the row's own is in its name: true
# for few rows of a long list, and cheaper to test on all of them than
# L{_SINGLE_HALVES}; null rather than false for a query of fewer than five
# keywords.
_OTHER_IN_NAME = " OR ".join(
    f"({_in_slot(_OTHER_NAMED, n)})" for n in _SLOTS
)


def _after_cursor(halves: str = "halves") -> str:
    """A test that a row of C{halves} (an SQL expression) ranks after the
    cursor's item."""
    return (
        f"(-{halves}, votes, price, item_id)"
        " > (-%(halves)s::integer, %(votes)s::integer, %(price)s::numeric, %(id)s::bigint)"
    )


_AFTER_CURSOR = _after_cursor()
_RANKED = "ORDER BY halves DESC, votes, price, item_id"
_PAGE_ROWS = "%(limit)s::bigint + %(offset)s::bigint"
_ABOVE_ONE_KEYWORD = f"halves > 2 + cardinality({_QUERY})"


def _pair_list(x: int, y: int) -> str:
    """The list of the pair of the query's keywords C{x} and C{y} (their
    places, from 1; no rows for a query of fewer than C{y}) in the category,
    best first (item_keyword_pairs_ranked), at most %(pair_rows)s rows."""
    first, second = _keyword(x), _keyword(y)
    return f"""(SELECT item_id, first, second, misses, votes, price, name, keywords
        FROM item_keyword_pairs
        WHERE category = %(category)s AND {second} IS NOT NULL
          AND first = least({first}, {second}) AND second = greatest({first}, {second})
        ORDER BY misses, votes, price, item_id LIMIT %(pair_rows)s)"""


def _single_list(n: int) -> str:
    """The list of the query's keyword C{n} (none beyond the last) in the
    category, in its own order (item_keywords_ranked)."""
    return f"""(SELECT item_id, keyword, name_miss, votes, price, name, name_bigrams
        FROM item_keywords
        WHERE category = %(category)s AND keyword = {_keyword(n)}
        ORDER BY name_miss, votes, price, item_id)"""


_SINGLE_LISTS = "\n    UNION ALL ".join(_single_list(n) for n in _SLOTS)

# Only a query of two or three keywords reads its pairs' lists first (see
# productdb.pair_rows): three lists at most.
_FIRST_SLOTS = range(1, 4)
_PAIR_LISTS = "\n    UNION ALL ".join(
    _pair_list(x, y) for x in _FIRST_SLOTS for y in _FIRST_SLOTS if x < y
)

# The pairs of the query's keywords (first < second, as in the table).
_QUERY_PAIRS = (
    f"SELECT a AS first, b AS second FROM unnest({_QUERY}) AS a, unnest({_QUERY}) AS b"
    " WHERE a < b"
)

# A row of a list that comes after the frontier (its values as scalars, so
# that even a generic plan seeks to it in the index).
_AFTER_FRONTIER = (
    "(x.misses, x.votes, x.price, x.item_id) > ("
    + ", ".join(f"(SELECT {column} FROM frontier)" for column in ("misses", "votes", "price", "item_id"))
    + ")"
)

# The search reads the first %(pair_rows)s rows of its pairs' lists merged
# in one order (READ): misses (how many of its pair's two keywords the
# item's name lacks), then votes, price and id, in a Merge Append of index
# scans that stops there.  Each item read is scored from any of its rows
# (SEEN).  The last row read is the frontier; each list is read
# %(beyond_rows)s rows further (BEYOND, scored too), and the lists with
# more are the open ones.  An item none of whose rows were read shares
# only keywords whose pairs are all open, k of them at most
# (OPEN_KEYWORDS), and on each of its pairs its name lacks at least as
# many keywords as the frontier's row (m): with m = 0 it may score 2k + n
# halves (every keyword in its name), with m = 1 at most one of those it
# shares is in its name (k + n + 1), with m = 2 none is (k + n).  Scoring
# that much takes a row with exactly m misses, which comes after the
# frontier in the same order; so such an item ranks after the frontier's
# place scored that much (UNREAD_BEST).  Then:
# - if enough items read score above 2 + n and the last of the page ranks
#   ahead of UNREAD_BEST (or no list is open), they are the page;
# - else the open lists' rows after the frontier give the items not read
#   (REST, by item: an item sharing k keywords is on k(k-1)/2 of the lists),
#   and if the items sharing two keywords or more (KNOWN) still do not fill
#   a page above 2 + n, the items sharing one are read from the keywords'
#   lists (item_keywords_ranked, which includes the lower-cased name), each
#   scored from its row alone: the few whose name holds another query
#   keyword are found by testing every row (SINGLE_NAMED); the others score
#   2, or 3 with their own keyword in their name, so each list's own order
#   is theirs, and the lists merged in it are read only as far as the page
#   (SINGLE_PLAIN).
SEARCH_MANY = f"""
WITH {_QUERY_BIGRAMS}, read AS MATERIALIZED (
    SELECT * FROM (
    {_PAIR_LISTS}
    ) AS rows
    ORDER BY misses, votes, price, item_id
    LIMIT CASE WHEN {_keyword(4)} IS NULL THEN %(pair_rows)s ELSE 0 END
), frontier AS MATERIALIZED (
    SELECT misses, votes, price, item_id,
           CASE WHEN misses < 0 THEN 0 ELSE %(beyond_rows)s END AS further
    FROM (
        SELECT * FROM (
            SELECT misses, votes, price, item_id FROM read
            ORDER BY misses DESC, votes DESC, price DESC, item_id DESC LIMIT 1
        ) AS last
        UNION ALL
        SELECT -1, 0, 0, 0
    ) AS place ORDER BY misses DESC LIMIT 1
), beyond AS MATERIALIZED (
    SELECT x.* FROM ({_QUERY_PAIRS}) AS p, LATERAL (
        SELECT x.item_id, x.first, x.second, x.misses, x.votes, x.price, x.name, x.keywords
        FROM item_keyword_pairs AS x
        WHERE x.category = %(category)s AND x.first = p.first AND x.second = p.second
          AND {_AFTER_FRONTIER}
        ORDER BY x.misses, x.votes, x.price, x.item_id
        LIMIT (SELECT further FROM frontier) + 1
    ) AS x
), open_pairs AS MATERIALIZED (
    SELECT first, second FROM beyond GROUP BY first, second
    HAVING count(*) > (SELECT further FROM frontier)
), open_keywords AS (
    SELECT count(DISTINCT keyword) AS k FROM open_pairs, LATERAL (VALUES (first), (second)) AS v (keyword)
), unread_best AS (
    SELECT o.k + cardinality({_QUERY})
           + CASE WHEN f.misses <= 0 THEN o.k WHEN f.misses = 1 THEN 1 ELSE 0 END AS halves,
           f.votes, f.price, f.item_id
    FROM frontier AS f, open_keywords AS o
), seen AS MATERIALIZED (
    SELECT item_id, {_PAIR_HALVES} AS halves, votes, price FROM (
        SELECT DISTINCT ON (item_id) * FROM (
            SELECT * FROM read
            UNION ALL
            SELECT * FROM beyond
        ) AS rows
    ) AS once
), seen_above AS (
    SELECT * FROM seen WHERE {_ABOVE_ONE_KEYWORD} AND {_AFTER_CURSOR}
    {_RANKED} LIMIT {_PAGE_ROWS}
), proved AS (
    SELECT (SELECT count(*) FROM seen_above) = {_PAGE_ROWS}
       AND ((SELECT k FROM open_keywords) < 2
            OR (SELECT (-last.halves, last.votes, last.price, last.item_id)
                       < (-u.halves, u.votes, u.price, u.item_id)
                FROM unread_best AS u, (
                    SELECT * FROM seen_above
                    ORDER BY halves, votes DESC, price DESC, item_id DESC LIMIT 1
                ) AS last)) AS yes
), rest AS (
    SELECT item_id, 2 * CASE pairs WHEN 1 THEN 2 WHEN 3 THEN 3 WHEN 6 THEN 4 ELSE 5 END
                    + {_NAME_HITS} AS halves, votes, price FROM (
        SELECT x.item_id, count(*) AS pairs, any_value(x.name) AS name,
               any_value(x.votes) AS votes, any_value(x.price) AS price
        FROM open_pairs AS p, item_keyword_pairs AS x
        WHERE NOT (SELECT yes FROM proved)
          AND x.category = %(category)s AND x.first = p.first AND x.second = p.second
          AND {_AFTER_FRONTIER}
          AND x.item_id NOT IN (SELECT item_id FROM seen)
        GROUP BY x.item_id
    ) AS by_item
), known AS MATERIALIZED (
    SELECT * FROM seen WHERE NOT (SELECT yes FROM proved)
    UNION ALL
    SELECT * FROM rest
), known_above AS (
    SELECT * FROM known WHERE {_ABOVE_ONE_KEYWORD} AND {_AFTER_CURSOR}
    {_RANKED} LIMIT {_PAGE_ROWS}
), every_list AS (
    SELECT NOT (SELECT yes FROM proved)
           AND (SELECT count(*) FROM known_above) < {_PAGE_ROWS} AS needed
), single_named AS (
    SELECT * FROM (
        SELECT item_id, {_SINGLE_HALVES} AS halves, votes, price FROM item_keywords AS l
        WHERE (SELECT needed FROM every_list)
          AND category = %(category)s AND keyword = ANY ({_QUERY})
          AND l.item_id NOT IN (SELECT item_id FROM known)
          AND ({_OTHER_IN_NAME})
        OFFSET 0  -- (so that the halves are worked out only for those rows)
    ) AS named WHERE {_AFTER_CURSOR}
), single_plain AS (
    SELECT item_id, 3 - name_miss::int AS halves, votes, price FROM (
    {_SINGLE_LISTS}
    ) AS rows
    WHERE (SELECT needed FROM every_list)
      AND item_id NOT IN (SELECT item_id FROM known)
      AND ({_OTHER_IN_NAME}) IS NOT TRUE
      AND {_after_cursor("(3 - name_miss::int)")}
    ORDER BY name_miss, votes, price, item_id LIMIT {_PAGE_ROWS}
)
SELECT {_columns('i')}, m.halves * 0.5 AS score FROM (
    SELECT * FROM seen_above WHERE (SELECT yes FROM proved)
    UNION ALL
    SELECT * FROM known_above
    WHERE NOT (SELECT yes FROM proved) AND NOT (SELECT needed FROM every_list)
    UNION ALL
    SELECT * FROM (
        SELECT * FROM known WHERE {_AFTER_CURSOR}
        UNION ALL
        SELECT * FROM single_named
        UNION ALL
        SELECT * FROM single_plain
        {_RANKED} LIMIT {_PAGE_ROWS}
    ) AS every WHERE (SELECT needed FROM every_list)
    {_RANKED} OFFSET %(offset)s
) AS m JOIN items AS i ON i.id = m.item_id
ORDER BY m.halves DESC, m.votes, m.price, m.item_id
"""


def _search(sql: str) -> str:
    """The single statement of a search of shape C{sql}, after C{live}."""
    return f"""
SELECT '{DONE}', json_build_object('items', coalesce((
    SELECT json_agg({item_json('m', "'score', m.score")}
                    ORDER BY m.score DESC, m.thumbs_down - m.thumbs_up, m.price, m.id)
    FROM ({sql}) AS m
), '[]'))::text
FROM live AS s
"""


# The most a cart line may come to, as SQL.
_TOTAL_MAX = f"{money.TOTAL_MAX}::numeric"

# The cart after adding: the line the statement wrote (as RETURNING gives
# it) and the cart's other lines as they were when it began, since the rest
# of a statement cannot see its own writes.
_LINES_AFTER_ADDING = """
    SELECT item_id, quantity FROM added
    UNION ALL
    SELECT item_id, quantity FROM active_cart_lines
    WHERE session_key = %(key)s AND item_id <> %(number)s"""


def _cart_after_adding(keyed: bool) -> str:
    """Of AddItemToCart: after a comma, for a keyed write, the common table
    expression C{cart}, one row: the cart after adding, as answered
    (C{answer}) and as filed under the key (C{filed}), aggregated in one
    pass over one join (where the answer and what is filed each read the
    cart, the join and its plan nodes were made twice); nothing for a write
    without a key.  Only read when the line was added."""
    if not keyed:
        return ""
    return f""", cart AS (
    SELECT {cart_object()}::text AS answer,
        {LINES_OBJECT}::text AS filed
    FROM {cart_rows(_LINES_AFTER_ADDING)}
)"""


def add_to_cart(keyed: bool = True) -> str:
    """AddItemToCart: %(units)s of the item %(category)s-%(number)s into the
    active cart of session %(key)s, unless the cart would then hold more
    than is on sale, the line would come to more than money.TOTAL_MAX, or
    the item would be a line beyond MAX_CART_LINES.  One statement, so
    concurrent additions of one item add up exactly: the conflicting row is
    locked while its new quantity is checked (as a bigint, so no sum
    overflows the column before it is refused) and written.  The outcome is
    DONE, with the cart, or REFUSED, with what the error message needs (JSON):
    [units on sale, price, units the cart holds, lines it holds] of the
    item, or null: there is no such item.  With a request key the cart is
    filed as its lines (LINES_OBJECT).
    C{keyed}: the form for a request with a key."""
    cart = "(SELECT answer FROM cart)" if keyed else f"{cart_json(_LINES_AFTER_ADDING)}::text"
    return f""", item AS (
    SELECT id, quantity, price FROM items WHERE id = %(number)s AND category = %(category)s
){counted(keyed)}, added AS (
    INSERT INTO active_cart_lines AS l (session_key, buyer_id, item_id, quantity)
    SELECT %(key)s, s.account_id, i.id, %(units)s FROM item AS i, live AS s
    WHERE i.quantity >= %(units)s AND i.price * %(units)s <= {_TOTAL_MAX} AND NOT {over_share(keyed)}
      AND ((SELECT count(*) FROM active_cart_lines WHERE session_key = %(key)s) < {MAX_CART_LINES}
           OR EXISTS (SELECT FROM active_cart_lines
                      WHERE session_key = %(key)s AND item_id = %(number)s))
    ON CONFLICT (session_key, item_id) DO UPDATE
        SET quantity = l.quantity + excluded.quantity
        WHERE (SELECT l.quantity::bigint + excluded.quantity <= i.quantity
                   AND (l.quantity::bigint + excluded.quantity) * i.price <= {_TOTAL_MAX}
               FROM item AS i)
    RETURNING l.item_id, l.quantity
){_cart_after_adding(keyed)}, answer AS (
    SELECT CASE WHEN EXISTS (SELECT FROM added) THEN '{DONE}'
                WHEN {over_share(keyed)} THEN '{TOO_MANY_KEYS}'
                ELSE '{REFUSED}' END AS outcome,
           CASE WHEN EXISTS (SELECT FROM added) THEN {cart}
                ELSE (SELECT json_build_array(i.quantity, i.price, coalesce((
                          SELECT l.quantity FROM active_cart_lines AS l
                          WHERE l.session_key = %(key)s AND l.item_id = i.id), 0),
                          (SELECT count(*) FROM active_cart_lines AS l
                           WHERE l.session_key = %(key)s))::text
                      FROM item AS i) END AS payload
    FROM live AS s
){filed("(SELECT filed FROM cart)", keyed)}
SELECT outcome, payload FROM answer
"""

#: Each single-statement API's statement after C{live}, by API (a search
#: by its shape too: SearchItemsForSale/one...).
STATEMENTS: Dict[str, str] = {
    "DisplayItemsForSale": DISPLAY_ITEMS,
    "ChangeItemPrice": change_price(),
    "UpdateUnitsForSale": take_off_sale(),
    "GetItem": GET_ITEM,
    "AddItemToCart": add_to_cart(),
    "DisplayCart": DISPLAY_CART,
    "SearchItemsForSale/all": _search(SEARCH_ALL),
    "SearchItemsForSale/one": _search(SEARCH_ONE),
    "SearchItemsForSale/many": _search(SEARCH_MANY),
}


#: The writes' statements for a request without a key: nothing counted or
#: filed, so PostgreSQL starts no plan nodes for either (issue 29: a
#: tenth to a sixth of an AddItemToCart's time in PostgreSQL).
UNKEYED: Dict[str, str] = {
    "ChangeItemPrice": change_price(keyed=False),
    "UpdateUnitsForSale": take_off_sale(keyed=False),
    "AddItemToCart": add_to_cart(keyed=False),
}


def full_text(api: str, layout: str = "joined", keyed: bool = True) -> str:
    """The whole statement of C{api} (a key of L{STATEMENTS}) on
    C{layout}: "joined" (customer and product data in one database),
    "standby" (joined, for a standby: nothing written) or "separate";
    of a write, without C{keyed}, its form for a request without a key
    (L{UNKEYED})."""
    return LIVE[layout] + (STATEMENTS[api] if keyed else UNKEYED[api])


def main(argv=None) -> None:
    """Print the statement of an API: C{API [joined|separate|standby]
    [unkeyed]}; without arguments, the names."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in STATEMENTS:
        print("\n".join(STATEMENTS))
        return
    layout = argv[1] if len(argv) > 1 else "joined"
    print(full_text(argv[0], layout, keyed="unkeyed" not in argv[2:]))


if __name__ == "__main__":
    main()
