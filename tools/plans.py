"""The plans of search's statements on a catalog, as docs/PERFORMANCE.md
shows them: EXPLAIN (ANALYZE, BUFFERS) of each shape of the search-shapes
workload, and the size of each table and index of the items.

    python -m tools.plans --product-db DSN [--seed 1] [--words 3000] [--category 3]
"""

import argparse
import random
import sys
from typing import List, Optional

from marketplace.product import productdb
from marketplace.bench.catalog import WordDrawer, vocabulary

_SIZES = """
SELECT c.relname, pg_size_pretty(pg_relation_size(c.oid))
FROM pg_class AS c
WHERE c.relname IN ('items', 'items_pkey', 'items_seller', 'items_ranked', 'item_keywords_item',
                    'item_keywords', 'item_keywords_pkey', 'item_keywords_ranked')
ORDER BY c.relname
"""


def shapes(words: List[str]) -> List[tuple]:
    """(label, keywords) of each shape, as the search-shapes workload
    draws them (the Zipf draw from a fixed seed)."""
    drawer = WordDrawer(words, 1.0, random.Random(1))
    return [
        ("no keywords", []),
        ("the most common keyword", words[:1]),
        ("one rare keyword", [words[len(words) * 3 // 4]]),
        ("three keywords (Zipf)", drawer.distinct(3)),
        ("the three most common keywords", words[:3]),
    ]


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.plans")
    p.add_argument("--product-db", required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--words", type=int, default=3000)
    p.add_argument("--category", type=int, default=3)
    args = p.parse_args(argv)
    import psycopg2

    connection = psycopg2.connect(args.product_db)
    connection.autocommit = True
    with connection.cursor() as cursor:
        for label, keywords in shapes(vocabulary(args.seed, args.words)):
            _, sql, values = productdb.search_statement(args.category, keywords, 50, 0)
            cursor.execute(sql, values)  # warm
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, values)
            plan = "\n".join(row[0] for row in cursor.fetchall())
            print(f"#### {label}: {keywords}\n\n```\n{plan}\n```\n")
        cursor.execute(_SIZES)
        print("| relation | size |\n| --- | ---: |")
        for name, size in cursor.fetchall():
            print(f"| {name} | {size} |")
    connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
