"""The failure evaluation: load on a cluster, one failure part-way, then
what the clients saw and what the databases hold.

Buyers add single units to their carts and buy every few calls (MakePurchase
with an idempotency key, repeated with the same key until it has a definite
answer); sellers change their items' prices and list them.  Every call is
timed and its outcome kept; every acknowledged write is recorded in a
L{Ledger}, and L{check_invariants} then asks the databases whether each is
there: nothing acknowledged lost, units conserved, no purchase left pending,
every approved authorisation matching exactly one completed purchase.
"""

import random
import secrets
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Callable, Dict, List, Optional

import psycopg2
from twisted.internet import defer, task, threads

from marketplace.client import BuyerClient, ClientError, SellerClient
from marketplace.client.failover import FailoverEndpoint
from marketplace.contract.errors import UNAVAILABLE

CARD = {
    "name": "Eva Luator",
    "card_number": "4111 1111 1111 1111",
    "expiration_date": "12/39",
    "security_code": "123",
}
PASSWORD = "evaluation-" + "7f3a9c"
UNITS = 1_000_000
PURCHASE_EVERY = 5


@dataclass
class Call:
    """One call as a client saw it (monotonic seconds)."""

    client: str
    api: str
    started: float
    ended: float
    code: str  # "OK" or the error code


@dataclass
class Ledger:
    """What the clients were told, to hold against the databases."""

    registered: Dict[str, int] = field(default_factory=dict)
    # per buyer: item id -> [acknowledged units, units of unanswered calls]
    carts: Dict[int, Dict[str, List[int]]] = field(default_factory=dict)
    purchases: List[int] = field(default_factory=list)
    # item id -> (last acknowledged price, prices sent after it unanswered)
    prices: Dict[str, List] = field(default_factory=dict)


class Load:
    """Closed-loop clients of a cluster, and what they saw."""

    def __init__(self, reactor, sellers: List[str], buyers: List[str], clients: int,
                 items_per_seller: int = 3, seed: int = 1) -> None:
        self.reactor = reactor
        self.seller_endpoints = sellers
        self.buyer_endpoints = buyers
        self.clients = clients
        self.items_per_seller = items_per_seller
        self.random = random.Random(seed)
        self.calls: List[Call] = []
        self.ledger = Ledger()
        self.running = False
        self.tag = secrets.token_hex(3)

    def _endpoint(self, endpoints: List[str], index: int) -> FailoverEndpoint:
        return FailoverEndpoint(
            [f"{e}:timeout=1" for e in endpoints], self.reactor, start=index
        )

    async def _timed(self, client: str, api: str, call: Callable) -> Optional[dict]:
        started = time.monotonic()
        try:
            answer = await call()
        except ClientError as e:
            self.calls.append(Call(client, api, started, time.monotonic(), e.code))
            raise
        self.calls.append(Call(client, api, started, time.monotonic(), "OK"))
        return answer

    async def set_up(self) -> None:
        """Accounts, sessions and items, before the clock starts."""
        options = {"give_up_after": 60.0, "max_retries": 20}
        self.sellers = []
        self.items: List[str] = []
        self.seller_items: Dict[int, List[str]] = {}
        for i in range(self.clients):
            seller = SellerClient(self._endpoint(self.seller_endpoints, i),
                                  reactor=self.reactor, **options)
            name = f"s{self.tag}{i}"
            await seller.create_account(name, PASSWORD)
            await seller.login(name, PASSWORD)
            mine = []
            for n in range(self.items_per_seller):
                answer = await seller.register_item_for_sale(
                    f"thing {n}", 1, ["thing"], "new", Decimal("1.00"), UNITS
                )
                mine.append(answer["item_id"])
                self.ledger.registered[answer["item_id"]] = UNITS
                self.ledger.prices[answer["item_id"]] = [Decimal("1.00"), []]
            self.sellers.append(seller)
            self.seller_items[i] = mine
            self.items += mine
        self.buyers = []
        for i in range(self.clients):
            buyer = BuyerClient(self._endpoint(self.buyer_endpoints, i),
                                reactor=self.reactor, **options)
            name = f"b{self.tag}{i}"
            await buyer.create_account(name, PASSWORD)
            await buyer.login(name, PASSWORD)
            self.buyers.append(buyer)
            self.ledger.carts[i] = {}

    async def _buyer(self, i: int) -> None:
        buyer = self.buyers[i]
        cart = self.ledger.carts[i]
        count = 0
        while self.running:
            count += 1
            if count % PURCHASE_EVERY == 0 and cart:
                await self._purchase(i, buyer, cart)
                continue
            item = self.random.choice(self.items)
            line = cart.setdefault(item, [0, 0])
            try:
                await self._timed(f"b{i}", "AddItemToCart",
                                  lambda: buyer.add_item_to_cart(item, 1))
                line[0] += 1
            except ClientError as e:
                if e.code == UNAVAILABLE:
                    line[1] += 1
                await self._pause()

    async def _purchase(self, i: int, buyer: BuyerClient, cart: dict) -> None:
        key = uuid.uuid4().hex
        deadline = time.monotonic() + 120
        while True:
            try:
                answer = await self._timed(f"b{i}", "MakePurchase",
                                           lambda: buyer.make_purchase(idempotency_key=key, **CARD))
            except ClientError as e:
                if e.code == UNAVAILABLE and time.monotonic() < deadline:
                    await self._pause()
                    continue  # the same key: it happens once at most
                if e.code != UNAVAILABLE:
                    return  # declined: the cart is as it was
                raise
            self.ledger.purchases.append(answer["purchase_id"])
            cart.clear()
            return

    async def _seller(self, i: int) -> None:
        seller = self.sellers[i]
        mine = self.seller_items[i]
        while self.running:
            item = self.random.choice(mine)
            price = Decimal(self.random.randint(100, 999)) / 100
            record = self.ledger.prices[item]
            try:
                await self._timed(f"s{i}", "ChangeItemPrice",
                                  lambda: seller.change_item_price(item, price))
                record[0], record[1] = price, []
            except ClientError as e:
                if e.code == UNAVAILABLE:
                    record[1].append(price)
                await self._pause()
                continue
            try:
                await self._timed(f"s{i}", "DisplayItemsForSale", seller.display_items_for_sale)
            except ClientError:
                await self._pause()

    async def _pause(self) -> None:
        await task.deferLater(self.reactor, 0.05, lambda: None)

    async def run(self, seconds: float, failure_at: Optional[float],
                  inject: Callable[[], None]) -> Optional[float]:
        """Run the clients for C{seconds}; call C{inject} (in a thread)
        C{failure_at} seconds in.  The monotonic time of the failure."""
        self.running = True
        self.started = time.monotonic()
        workers = [defer.Deferred.fromCoroutine(self._buyer(i)) for i in range(self.clients)]
        workers += [defer.Deferred.fromCoroutine(self._seller(i)) for i in range(self.clients)]
        failed_at = None
        if failure_at is not None:
            await task.deferLater(self.reactor, failure_at, lambda: None)
            await threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), inject)
            # Once the failure is complete (every process of the host dead).
            failed_at = time.monotonic()
            await task.deferLater(self.reactor, max(0.0, seconds - failure_at), lambda: None)
        else:
            await task.deferLater(self.reactor, seconds, lambda: None)
        self.running = False
        self.ended = time.monotonic()
        await defer.DeferredList(workers, consumeErrors=True)
        return failed_at

    async def carts_now(self) -> Dict[int, Dict[str, int]]:
        """Every buyer's active cart as the service shows it now."""
        carts = {}
        for i, buyer in enumerate(self.buyers):
            answer = await buyer.display_cart()
            carts[i] = {line["item_id"]: line["quantity"] for line in answer["cart"]}
        return carts

    async def close(self) -> None:
        """Close every client's connection."""
        await defer.gatherResults([c.close() for c in self.sellers + self.buyers])


def check_invariants(ledger: Ledger, carts: Dict[int, Dict[str, int]],
                     product_dsn: str, payments_dsn: str) -> Dict[str, int]:
    """Hold what the clients were told against the databases; counts of
    each kind of violation (all zero when nothing was lost or doubled)."""
    lost_cart_units = 0
    extra_cart_units = 0
    for buyer, lines in ledger.carts.items():
        shown = carts.get(buyer, {})
        for item, (acknowledged, unanswered) in lines.items():
            have = shown.get(item, 0)
            lost_cart_units += max(0, acknowledged - have)
            extra_cart_units += max(0, have - acknowledged - unanswered)
    items = list(ledger.registered)
    numbers = [int(item.split("-")[1]) for item in items]
    with psycopg2.connect(product_dsn) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, quantity, units_sold, price FROM items WHERE id = ANY(%s)", (numbers,)
        )
        rows = {row[0]: row[1:] for row in cursor.fetchall()}
        cursor.execute(
            "SELECT id, state, payment_key FROM purchases p WHERE EXISTS ("
            " SELECT 1 FROM purchase_lines l WHERE l.purchase_id = p.id"
            " AND l.item_id = ANY(%s))", (numbers,)
        )
        purchases = cursor.fetchall()
    connection.close()
    unconserved = 0
    wrong_prices = 0
    for item, number in zip(items, numbers):
        quantity, sold, price = rows[number]
        if quantity + sold != ledger.registered[item]:
            unconserved += 1
        last, later = ledger.prices[item]
        if price != last and price not in later:
            wrong_prices += 1
    states = {pid: state for pid, state, _ in purchases}
    lost_purchases = sum(1 for pid in ledger.purchases if states.get(pid) != "completed")
    pending = sum(1 for state in states.values() if state == "pending")
    completed_keys = {key for _, state, key in purchases if state == "completed"}
    all_keys = [key for _, _, key in purchases]
    with psycopg2.connect(payments_dsn) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT idempotency_key FROM authorizations WHERE approved AND voided_at IS NULL"
            " AND idempotency_key = ANY(%s)", (all_keys,)
        )
        approved = {row[0] for row in cursor.fetchall()}
    connection.close()
    return {
        "acknowledged cart units lost": lost_cart_units,
        "cart units added twice": extra_cart_units,
        "acknowledged purchases not completed": lost_purchases,
        "acknowledged prices lost": wrong_prices,
        "items whose units are not conserved": unconserved,
        "purchases still pending": pending,
        "approved payments without a completed purchase": len(approved - completed_keys),
        "completed purchases without an approved payment": len(completed_keys - approved),
    }
