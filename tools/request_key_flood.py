"""Measure what a flood of fresh request keys fills (issue 28's probe).

Starts the marketplace of the checkout in the current directory (twistd,
throwaway embedded database in a folder of its own under ./.flood), signs
up two sellers with 500 items of random 32-character names and a buyer whose
active cart gets as many of them as the service lets in (500 lines on code
without a line limit), waits for a fresh window of the keyed-write limit,
then sends AddItemToCart with a fresh key on 4 connections for 10 s, and
prints the growth of request_answers (pg_total_relation_size) and its rows.

    PYTHONPATH=. .venv/bin/python tools/request_key_flood.py [BASE_PORT]
"""

import random
import shutil
import string
import sys
import time
from pathlib import Path

import psycopg2
from twisted.internet import defer, task

from marketplace.bench.deploy import LocalMarketplace
from marketplace.clientlib import BuyerClient, ClientError, SellerClient

LINES = 500
CONNECTIONS = 4
SECONDS = 10.0


def _name() -> str:
    return "".join(random.choices(string.ascii_letters + string.digits, k=32))


def _table(dsn: str) -> tuple:
    with psycopg2.connect(dsn) as db, db.cursor() as cursor:
        cursor.execute("SELECT pg_total_relation_size('request_answers'), count(*) FROM request_answers")
        return cursor.fetchone()


async def flood(reactor, market: LocalMarketplace) -> None:
    # Two sellers: one account's keyed writes per minute are limited.
    items, sellers = [], []
    for n in range(2):
        seller = SellerClient(market.seller, reactor=reactor)
        await seller.create_account(f"flood-seller-{n}", "correct-horse-7")
        await seller.login(f"flood-seller-{n}", "correct-horse-7")
        sellers.append(seller)
        for _ in range(LINES // 2):
            answer = await seller.register_item_for_sale(_name(), 3, ["flood"], "new", "1.25", 1000)
            items.append(answer["item_id"])
    buyer = BuyerClient(market.buyer, reactor=reactor)
    await buyer.create_account("flood-buyer", "correct-horse-7")
    await buyer.login("flood-buyer", "correct-horse-7")
    lines = 0
    for item in items:
        try:
            await buyer.add_item_to_cart(item, 1)
            lines += 1
        except ClientError as e:
            print(f"cart filling stopped at {lines} lines: {e.code}")
            break
    await task.deferLater(reactor, 61, lambda: None)  # a fresh window
    size_before, rows_before = _table(market.product_dsn())
    clients = []
    for _ in range(CONNECTIONS):
        client = BuyerClient(market.buyer, reactor=reactor, deadline=2)
        client.session_id, client.user_id = buyer.session_id, buyer.user_id
        clients.append(client)
    outcomes: dict = {}
    end = time.monotonic() + SECONDS

    async def send(client) -> None:
        while time.monotonic() < end:
            try:
                await client.add_item_to_cart(items[0], 1)
                outcomes["ok"] = outcomes.get("ok", 0) + 1
            except ClientError as e:
                outcomes[e.code] = outcomes.get(e.code, 0) + 1

    await defer.gatherResults([defer.ensureDeferred(send(c)) for c in clients])
    size_after, rows_after = _table(market.product_dsn())
    print(f"cart lines: {lines}; answers in {SECONDS:g} s on {CONNECTIONS} connections: {outcomes}")
    print(
        f"request_answers grew by {(size_after - size_before) / 1e6:.2f} MB"
        f" ({rows_after - rows_before} rows); now {size_after / 1e6:.2f} MB, {rows_after} rows"
    )
    for c in clients + [buyer] + sellers:
        await c.close()


def main() -> None:
    base = int(sys.argv[1]) if len(sys.argv) > 1 else 13000
    folder = Path(".flood")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    market = LocalMarketplace(base_port=base, workers=1)
    shutil.rmtree(market.folder, ignore_errors=True)
    market.folder = folder.resolve()
    market.log = market.folder / "twistd.log"
    # The service's own limit of keyed writes, not the benchmark's lifted one.
    command = market.command
    market.command = lambda: [a for a in command() if not a.startswith("--request-keys")]
    market.start()
    try:
        task.react(lambda reactor: defer.ensureDeferred(flood(reactor, market)))
    finally:
        market.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
