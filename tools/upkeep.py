"""What search's indexes cost on writes: the time of one write statement of
each kind on the product database, with the indexes and triggers of
schema.sql ("new") and with the search indexes of before (items_on_sale,
the GIN index on keywords, no item_keywords: "old"), on the catalog there.

    python -m tools.upkeep --product-db DSN [--statements 1000] [--reps 3]

Each mode runs in a transaction that is rolled back, so the database is
left as it was; each repetition writes other items (so no repetition pays
for another's dead rows), and the report keeps the fastest repetition,
in microseconds per statement, as PostgreSQL itself timed it (no round
trips).  Needs the owner of the items table (it drops and creates indexes
and disables triggers inside the transaction).
"""

import argparse
import sys
from typing import List, Optional

_RUN = """
CREATE OR REPLACE FUNCTION pg_temp.upkeep_run(kind text, n int, rep int) RETURNS float8
LANGUAGE plpgsql AS $$
DECLARE
    started timestamptz := clock_timestamp();
    first bigint := (SELECT min(id) FROM items);
    span bigint := (SELECT max(id) - min(id) FROM items);
    item bigint;
BEGIN
    FOR i IN 1..n LOOP
        item := first + ((rep * n + i) * 7919) % span;
        IF kind = 'reprice' THEN
            UPDATE items SET price = price + 0.01 WHERE id = item;
        ELSIF kind = 'vote' THEN
            UPDATE items SET thumbs_up = thumbs_up + 1 WHERE id = item;
        ELSIF kind = 'sell one unit' THEN
            UPDATE items SET quantity = quantity - 1 WHERE id = item AND quantity > 1;
        ELSIF kind = 'register' THEN
            INSERT INTO items (seller_id, name, category, keywords, condition, price, quantity)
            VALUES (1, 'Upkeep item ' || i, i % 20, ARRAY['upkeep', 'item' || i % 50],
                    'new', 9.99, 5);
        END IF;
    END LOOP;
    RETURN extract(epoch FROM clock_timestamp() - started) * 1e6 / n;
END
$$;
"""

_OLD = """
ALTER TABLE items DISABLE TRIGGER items_keywords_insert;
ALTER TABLE items DISABLE TRIGGER items_keywords_update;
DROP INDEX items_ranked;
CREATE INDEX items_on_sale ON items (category) WHERE quantity > 0;
CREATE INDEX items_keywords ON items USING gin (keywords);
"""

KINDS = ("register", "reprice", "vote", "sell one unit")


def measure(cursor, mode: str, statements: int, reps: int) -> dict:
    """The fastest repetition of each kind, in one rolled-back transaction."""
    cursor.execute("BEGIN")
    try:
        if mode == "old":
            cursor.execute(_OLD)
        best = {}
        for rep in range(reps):
            for kind in KINDS:
                cursor.execute(
                    "SELECT pg_temp.upkeep_run(%s, %s, %s)", (kind, statements, rep)
                )
                value = cursor.fetchone()[0]
                best[kind] = min(value, best.get(kind, value))
        return best
    finally:
        cursor.execute("ROLLBACK")


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.upkeep")
    p.add_argument("--product-db", required=True)
    p.add_argument("--statements", type=int, default=1000)
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args(argv)
    import psycopg2

    connection = psycopg2.connect(args.product_db)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(_RUN)
        cursor.execute("SELECT count(*) FROM items")
        count = cursor.fetchone()[0]
        results = {mode: measure(cursor, mode, args.statements, args.reps)
                   for mode in ("new", "old")}
    connection.close()
    print(f"{count:,} items; µs per statement, fastest of {args.reps} x {args.statements}\n")
    print("| statement | before (old indexes) | now (items_ranked, item_keywords) | difference |")
    print("| --- | ---: | ---: | ---: |")
    for kind in KINDS:
        old, new = results["old"][kind], results["new"][kind]
        print(f"| {kind} | {old:.0f} | {new:.0f} | {new - old:+.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
