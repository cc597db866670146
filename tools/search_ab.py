"""The several-keyword search statement (apisql.SEARCH_MANY) of the code
before a change against the code now, on a catalog, as docs/PERFORMANCE.md
measures it ("Several keywords: the items sharing one, read in their lists'
order"): both prepared on one connection, alternated query by query (the
machine's speed wanders by a third between minutes), the fastest of a few
runs of each, and their rows checked equal.

    git show HEAD~1:marketplace/product/apisql.py > /tmp/before.py
    python -m tools.search_ab --product-db DSN --before /tmp/before.py \\
        [--generic] [--offset 150]

Both statements get the arguments of productdb.search_statement as it is
now (a statement before it took other arguments cannot be compared so).
"""

import argparse
import importlib.util
import random
import statistics
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

from marketplace.bench.catalog import WordDrawer, vocabulary
from marketplace.postgres.database import prepared_forms
from marketplace.product import apisql, productdb

#: (group, category, keywords) of one query.
Query = Tuple[str, int, List[str]]


class RowsDiffer(Exception):
    """The two statements gave different rows for a query."""


def load_statement(path: str) -> str:
    """SEARCH_MANY of the apisql module in the file at C{path}."""
    spec = importlib.util.spec_from_file_location("apisql_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SEARCH_MANY


def queries(words: Sequence[str], seed: int = 11, drawn: int = 40) -> List[Query]:
    """The three most common words in every other of 20 categories,
    C{drawn} three-word queries drawn by frequency, the five most common
    words in 3 categories and 5 five-word drawn queries."""
    rng = random.Random(seed)
    drawer = WordDrawer(words, 1.0, rng)
    found: List[Query] = [("three most common", c, list(words[:3])) for c in range(0, 20, 2)]
    found += [("three drawn", rng.randrange(20), drawer.distinct(3)) for _ in range(drawn)]
    found += [("five most common", c, list(words[:5])) for c in range(3)]
    found += [("five drawn", c, drawer.distinct(5)) for c in range(5)]
    return found


def summary(times: Dict[str, Dict[str, List[float]]]) -> Dict[str, Dict[str, Tuple]]:
    """For each group and statement, (p50, p90, max) of its times (ms)."""
    result = {}
    for group, by_statement in times.items():
        result[group] = {}
        for statement, values in by_statement.items():
            ordered = sorted(values)
            result[group][statement] = (
                round(statistics.median(ordered), 2),
                round(ordered[int(0.9 * len(ordered))], 2),
                round(ordered[-1], 2),
            )
    return result


def compare(cursor, before: str, after: str, wanted: Sequence[Query], reps: int = 3,
            offsets: Sequence[int] = (0,), warm_up: int = 0) -> Dict[str, Dict[str, List[float]]]:
    """The fastest of C{reps} runs of each statement, alternated, for each
    query at each offset, by group (ms); raises L{RowsDiffer}.  The first
    C{warm_up} queries run once each before, unmeasured: a prepared
    statement's plan may change in its first five runs."""
    executes = {}
    for name, sql in (("before", before), ("after", after)):
        prepare, execute = prepared_forms(f"search_ab_{name}", sql)
        cursor.execute(prepare)
        executes[name] = execute
    for _, category, keywords in wanted[:warm_up]:
        args = productdb.search_statement(category, keywords, 50, 0)[2]
        for execute in executes.values():
            cursor.execute(execute, args)
    times: Dict[str, Dict[str, List[float]]] = {}
    for group, category, keywords in wanted:
        for offset in offsets:
            args = productdb.search_statement(category, keywords, 50, offset)[2]
            best = {name: float("inf") for name in executes}
            rows = {}
            for _ in range(reps):
                for name, execute in executes.items():
                    started = time.perf_counter()
                    cursor.execute(execute, args)
                    rows[name] = cursor.fetchall()
                    best[name] = min(best[name], (time.perf_counter() - started) * 1000)
            if rows["before"] != rows["after"]:
                raise RowsDiffer(f"{keywords} in category {category} at offset {offset}")
            for name, value in best.items():
                times.setdefault(group, {}).setdefault(name, []).append(value)
    for name in executes:
        cursor.execute(f"DEALLOCATE search_ab_{name}")
    return times


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.search_ab")
    p.add_argument("--product-db", required=True)
    p.add_argument("--before", required=True, help="an apisql.py of the code before")
    p.add_argument("--seed", type=int, default=1, help="the catalog's (default 1)")
    p.add_argument("--words", type=int, default=3000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--offset", type=int, action="append", default=None,
                   help="pages at this offset as well as the first (repeatable)")
    p.add_argument("--generic", action="store_true", help="plan_cache_mode = force_generic_plan")
    args = p.parse_args(argv)
    import psycopg2

    connection = psycopg2.connect(args.product_db)
    connection.autocommit = True
    wanted = queries(vocabulary(args.seed, args.words))
    before = load_statement(args.before)
    with connection.cursor() as cursor:
        if args.generic:
            cursor.execute("SET plan_cache_mode = force_generic_plan")
        times = compare(cursor, before, apisql.SEARCH_MANY, wanted,
                        args.reps, [0] + (args.offset or []), warm_up=5)
    connection.close()
    print("| queries | before p50 / p90 / max (ms) | after p50 / p90 / max (ms) |")
    print("| --- | ---: | ---: |")
    for group, by_statement in summary(times).items():
        print(f"| {group} | " + " | ".join(
            " / ".join(f"{v:.2f}" for v in by_statement[name]) for name in ("before", "after"))
            + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
