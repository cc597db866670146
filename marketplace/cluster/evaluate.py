"""The failure evaluation: load on a cluster, one failure part-way, then
what the clients saw and what the databases hold.

The accounts and the sellers' items are made once per evaluation, by a
L{Population}, and every run uses the first N of each: an account costs
two argon2id computations (CreateAccount and Login), which is what made
the set-up of 100+100 slow; they are made concurrently on both frontends.

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
from typing import Callable, Dict, List, Optional, Sequence

import psycopg2
from twisted.internet import defer, task, threads

from marketplace.bench.patience import patiently
from marketplace.clientlib import BuyerClient, ClientError, SellerClient
from marketplace.clientlib.failover import FailoverEndpoint
from marketplace.contract.errors import INVALID_SESSION, UNAVAILABLE, USERNAME_TAKEN

CARD = {
    "name": "Eva Luator",
    "card_number": "4111 1111 1111 1111",
    "expiration_date": "12/39",
    "security_code": "123",
}
PASSWORD = "evaluation-" + "7f3a9c"
UNITS = 1_000_000
PURCHASE_EVERY = 5
ITEMS_PER_SELLER = 3
#: Accounts signed up at once while a population grows: enough to keep
#: the hashing workers of both frontends busy, within their per-address share.
SIGN_UPS_AT_ONCE = 8
#: Seconds a client waits for a TCP connection before it tries the next
#: frontend (a host that is cut off answers nothing).
CONNECT_TIMEOUT = 1
#: Every call is sent again (the same request key, the next frontend) after
#: a lost connection, a failed connect or UNAVAILABLE until this many
#: seconds have passed (see L{marketplace.clientlib.Connection}): longer than
#: the primary's failover, so that a caller sees it as a wait, not an error.
CLIENT_OPTIONS = {"deadline": 60.0}
#: What a browsing buyer reads, in turn (the issue's "browse").
BROWSE_APIS = ("DisplayCart", "SearchItemsForSale", "GetItem")
#: Seconds between a browsing buyer's additions to its cart (on a
#: connection of their own, so that an addition waiting for the primary
#: holds up no read).
BROWSER_ADD_EVERY = 0.25


def endpoint(endpoints: Sequence[str], index: int, reactor) -> FailoverEndpoint:
    """Every frontend of a service, starting with number C{index} (so that
    clients spread over the frontends), each with a short connect timeout."""
    return FailoverEndpoint(
        [f"{e}:timeout={CONNECT_TIMEOUT}" for e in endpoints], reactor, start=index
    )


@dataclass
class Account:
    """One account of a population and its open session."""

    username: str
    session_id: Optional[str] = None
    user_id: Optional[int] = None
    #: A seller's items (ids).
    items: List[str] = field(default_factory=list)


class Population:
    """The sellers and buyers of an evaluation, with their sessions and the
    sellers' items, kept from one run to the next (a run of N clients uses
    the first N of each)."""

    def __init__(self, reactor, sellers: Sequence[str], buyers: Sequence[str],
                 items_per_seller: int = ITEMS_PER_SELLER) -> None:
        self.reactor = reactor
        self.endpoints = {"seller": list(sellers), "buyer": list(buyers)}
        self.items_per_seller = items_per_seller
        self.tag = secrets.token_hex(3)
        self.accounts: Dict[str, List[Account]] = {"seller": [], "buyer": []}

    def __len__(self) -> int:
        return len(self.accounts["buyer"])

    def client(self, role: str, index: int):
        """A new client of account C{index} of C{role}, in its session."""
        kind = SellerClient if role == "seller" else BuyerClient
        client = kind(endpoint(self.endpoints[role], index, self.reactor),
                      reactor=self.reactor, **CLIENT_OPTIONS)
        account = self.accounts[role][index]
        client.session_id, client.user_id = account.session_id, account.user_id
        client.username = account.username
        return client

    async def grow(self, size: int) -> None:
        """Sign up (and log in) accounts up to C{size} of each role, several
        at a time over both frontends, and put the new sellers' items up."""
        first = len(self)
        for role in ("seller", "buyer"):
            self.accounts[role] += [Account(f"{role[0]}{self.tag}{i}")
                                    for i in range(first, size)]
        limit = defer.DeferredSemaphore(SIGN_UPS_AT_ONCE)
        work = [limit.run(lambda role=role, i=i: defer.Deferred.fromCoroutine(
                    self._sign_up(role, i)))
                for i in range(first, size) for role in ("seller", "buyer")]
        await defer.gatherResults(work, consumeErrors=True)

    async def _sign_up(self, role: str, index: int) -> None:
        client = self.client(role, index)
        account = self.accounts[role][index]
        try:
            try:
                await patiently(
                    self.reactor, lambda: client.create_account(account.username, PASSWORD), 100
                )
            except ClientError as e:
                if e.code != USERNAME_TAKEN:  # taken: by an attempt whose answer was lost
                    raise
            await self._log_in(client, account)
            if role == "seller":
                for n in range(self.items_per_seller):
                    answer = await client.register_item_for_sale(
                        f"thing {n}", 1, ["thing"], "new", Decimal("1.00"), UNITS
                    )
                    account.items.append(answer["item_id"])
        finally:
            await client.close()

    async def _log_in(self, client, account: Account) -> None:
        await patiently(self.reactor, lambda: client.login(account.username, PASSWORD), 100)
        account.session_id, account.user_id = client.session_id, client.user_id

    async def refresh(self) -> Dict[str, Decimal]:
        """Before a run: every buyer's cart emptied, every session used (an
        idle one ends after the daemons' session timeout, and runs of other
        sizes come between), logging in again where one has ended; the
        price of every seller's item now."""
        prices: Dict[str, Decimal] = {}
        limit = defer.DeferredSemaphore(4 * SIGN_UPS_AT_ONCE)

        async def touch(role: str, index: int) -> None:
            client = self.client(role, index)
            account = self.accounts[role][index]
            use = (client.display_items_for_sale if role == "seller" else client.clear_cart)
            try:
                try:
                    answer = await use()
                except ClientError as e:
                    if e.code != INVALID_SESSION:
                        raise
                    await self._log_in(client, account)
                    answer = await use()
            finally:
                await client.close()
            for item in answer.get("items", ()):
                prices[item["item_id"]] = item["price"]

        await defer.gatherResults(
            [limit.run(lambda role=role, i=i: defer.Deferred.fromCoroutine(touch(role, i)))
             for role in ("seller", "buyer") for i in range(len(self))],
            consumeErrors=True,
        )
        return prices


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
    """What the clients were told in one run, to hold against the databases."""

    registered: Dict[str, int] = field(default_factory=dict)
    # per buyer: item id -> [acknowledged units, units of unanswered calls]
    carts: Dict[int, Dict[str, List[int]]] = field(default_factory=dict)
    purchases: List[int] = field(default_factory=list)
    #: The idempotency key of every purchase tried (answered or not).
    purchase_keys: List[str] = field(default_factory=list)
    # item id -> (last acknowledged price, prices sent after it unanswered)
    prices: Dict[str, List] = field(default_factory=dict)


class Load:
    """Closed-loop clients of a cluster (the first C{clients} sellers and
    buyers of C{population}), and what they saw."""

    def __init__(self, reactor, population: Population, clients: int, seed: int = 1,
                 browsers: int = 0) -> None:
        self.reactor = reactor
        self.population = population
        self.clients = clients
        #: Browsing buyers (the accounts after the C{clients} buyers): each
        #: reads (L{BROWSE_APIS}) as fast as it is answered, and adds to its
        #: cart now and then on a second connection.
        self.browsers = browsers
        #: Per browsing buyer: item id -> units acknowledged to it.
        self.browsed_carts: Dict[int, Dict[str, int]] = {}
        #: DisplayCart answers that lacked an addition acknowledged before
        #: the call was sent (read-your-writes broken).
        self.stale_carts = 0
        self.browsing: List[BuyerClient] = []
        self.random = random.Random(seed)
        self.calls: List[Call] = []
        self.ledger = Ledger()
        self.running = False
        #: When the failure (or the planned change) began, and ended.
        self.failure_started: Optional[float] = None
        self.sellers: List[SellerClient] = []
        self.buyers: List[BuyerClient] = []

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
        """Before the clock starts: the population grown to this run's size,
        carts emptied, prices noted, and every client connected."""
        population = self.population
        accounts = self.clients + self.browsers
        if len(population) < accounts:
            await population.grow(accounts)
        prices = await population.refresh()
        self.seller_items = {i: list(population.accounts["seller"][i].items)
                             for i in range(max(self.clients, 1))}
        self.items: List[str] = [item for items in self.seller_items.values()
                                 for item in items]
        for item in self.items:
            self.ledger.registered[item] = UNITS
            self.ledger.prices[item] = [prices[item], []]
        self.sellers = [population.client("seller", i) for i in range(self.clients)]
        self.buyers = [population.client("buyer", i) for i in range(self.clients)]
        self.ledger.carts = {i: {} for i in range(self.clients)}
        # Two clients per browsing buyer, one session: reads, additions.
        self.browsing = [population.client("buyer", self.clients + i // 2)
                         for i in range(2 * self.browsers)]
        self.browsed_carts = {i: {} for i in range(self.browsers)}
        await defer.gatherResults([c.connect() for c in self._clients()], consumeErrors=True)

    def _clients(self) -> list:
        return self.sellers + self.buyers + self.browsing

    async def _browser(self, i: int) -> None:
        """Browsing buyer C{i}: its reads in turn, every DisplayCart held
        against the additions acknowledged before it was sent."""
        reader, cart = self.browsing[2 * i], self.browsed_carts[i]
        turn = i
        while self.running:
            api = BROWSE_APIS[turn % len(BROWSE_APIS)]
            turn += 1
            try:
                if api == "DisplayCart":
                    acknowledged = dict(cart)
                    answer = await self._timed(f"r{i}", api, reader.display_cart)
                    shown = {line["item_id"]: line["quantity"] for line in answer["cart"]}
                    if any(shown.get(item, 0) < n for item, n in acknowledged.items()):
                        self.stale_carts += 1
                elif api == "SearchItemsForSale":
                    await self._timed(f"r{i}", api,
                                      lambda: reader.search_items_for_sale(1, ["thing"]))
                else:
                    item = self.random.choice(self.items)
                    await self._timed(f"r{i}", api, lambda: reader.get_item(item))
            except ClientError:
                await self._pause()

    async def _browser_adds(self, i: int) -> None:
        """Browsing buyer C{i}'s additions to its cart, on its second
        connection, one every L{BROWSER_ADD_EVERY} seconds."""
        adder, cart = self.browsing[2 * i + 1], self.browsed_carts[i]
        while self.running:
            item = self.random.choice(self.items)
            try:
                await self._timed(f"a{i}", "AddItemToCart", lambda: adder.add_item_to_cart(item, 1))
                cart[item] = cart.get(item, 0) + 1
            except ClientError:
                pass
            await task.deferLater(self.reactor, BROWSER_ADD_EVERY, lambda: None)

    def browse_gap(self, since: float) -> float:
        """The longest a browsing buyer went without an answer to a read
        from C{since} to the end of the run."""
        return self.longest_gap(since, readers=True)

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
        self.ledger.purchase_keys.append(key)
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
        workers += [defer.Deferred.fromCoroutine(work(i)) for i in range(self.browsers)
                    for work in (self._browser, self._browser_adds)]
        failed_at = None
        if failure_at is not None:
            await task.deferLater(self.reactor, failure_at, lambda: None)
            self.failure_started = time.monotonic()
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

    def longest_gap(self, since: float, until: Optional[float] = None,
                    readers: bool = False) -> float:
        """The longest any client went without a successful call between
        C{since} and C{until} (the end of the run): the longest wait a
        person would have noticed across a failure or a planned change
        (with C{readers}, of the browsing buyers' reads alone)."""
        until = self.ended if until is None else until
        longest = 0.0
        clients = {c.client for c in self.calls}
        if readers:
            clients = {c for c in clients if c.startswith("r")}
        for client in clients:
            previous = since
            for ended in sorted(c.ended for c in self.calls
                                if c.client == client and c.code == "OK"):
                if ended <= since:
                    continue
                longest = max(longest, min(ended, until) - previous)
                previous = ended
                if ended >= until:
                    break
            longest = max(longest, until - previous)
        return longest

    def errors(self) -> Dict[str, int]:
        """Calls whose caller got an error, by API and code (declined
        cards, which the payments service gives by design, left out)."""
        found: Dict[str, int] = {}
        for c in self.calls:
            if c.code not in ("OK", "PAYMENT_DECLINED"):
                found[f"{c.api} {c.code}"] = found.get(f"{c.api} {c.code}", 0) + 1
        return found

    async def carts_now(self) -> Dict[int, Dict[str, int]]:
        """Every buyer's active cart as the service shows it now."""
        carts = {}
        for i, buyer in enumerate(self.buyers):
            answer = await buyer.display_cart()
            carts[i] = {line["item_id"]: line["quantity"] for line in answer["cart"]}
        return carts

    async def close(self) -> None:
        """Close every client's connection."""
        await defer.gatherResults([c.close() for c in self._clients()])


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
        # This run's purchases: the items outlive the run, the keys do not.
        cursor.execute(
            "SELECT id, state, payment_key FROM purchases WHERE idempotency_key = ANY(%s)",
            (ledger.purchase_keys,),
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
