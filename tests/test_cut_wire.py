"""Every writing API with its connection cut, through the client library.

The client library sends each write with a request key and sends it again
with the same key when the connection drops or the answer is UNAVAILABLE;
the services record the key with the answer (docs/PROTOCOL.md, "Request
keys").  Together, a caller never sees the cut and nothing happens twice.

For every writing API, at each point where a wire can be cut (one test
class per point, one test per API), a case runs on fresh accounts of the
same services once without a fault, for the answer and the state it
leaves, and then once per cut, made by the proxies of tests/faultproxy.py.
A call with a cut must give the same answer and leave the same state
(items, units, prices, votes, carts active and saved, purchases,
accounts), apart from the ids each run draws.

The points: the request cut short on its way to the service; the answer
held back (the service has done the request); the answer cut half-way;
and, between the services and PostgreSQL, the answer lost after
PostgreSQL carried out and committed a statement: each COMMIT of the
call, and its last statement (as the run without a fault sent them).
The services run on the one-database layout (the embedded default).

L{DaemonWithoutRetriesTests}: without a client that retries, the same
cuts between a service and PostgreSQL are answered UNAVAILABLE (never
INTERNAL), and the service serves the next request.
"""

import itertools
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import Callable, Dict, List, Optional, Tuple

from twisted.internet import reactor, task
from twisted.trial import unittest

from marketplace.clientlib import BuyerClient, ClientError, SellerClient
from tests.db import test_dsns
from tests.faultproxy import (
    DOWN,
    HALF,
    UP,
    FrameCut,
    PostgresMessages,
    QueryCut,
    postgres_target,
    proxied_dsn,
    service_target,
    sql_shape,
    start_proxy,
)
from tests.support import assert_error, connect, payload_of, start_marketplace
from tests.test_purchase import CARD

PASSWORD = "correct-horse-7"
#: The items of a world's seller: RegisterItemForSale's arguments.
ITEMS = {
    "mug": ("Blue mug", 3, ["mug", "kitchen"], "new", Decimal("4.50"), 10),
    "lamp": ("Desk lamp", 3, ["lamp"], "used", 12, 2),
}
_serial = itertools.count(1)

CLIENTS = {"seller": SellerClient, "buyer": BuyerClient}


@dataclass(frozen=True)
class Case:
    """One writing API: who calls it (C{role}), the call, what is there
    before it (C{accounts}, then C{given}), and the account it makes."""

    role: str
    call: Callable
    given: Optional[Callable] = None
    accounts: Tuple[str, ...] = ("seller", "buyer")
    creates: Optional[str] = None


async def _bought_mugs(world: "World", clients: dict) -> None:
    await clients["buyer"].make_purchase(**CARD)


#: Every API that changes something (KEYS.md), as the client library calls it.
CASES: Dict[str, Case] = {
    "CreateAccount_seller": Case(
        "seller",
        lambda w, c: c.create_account(w.usernames["seller"], PASSWORD, "Shop"),
        accounts=(),
        creates="seller",
    ),
    "CreateAccount_buyer": Case(
        "buyer",
        lambda w, c: c.create_account(w.usernames["buyer"], PASSWORD),
        accounts=(),
        creates="buyer",
    ),
    "RegisterItemForSale": Case(
        "seller", lambda w, c: c.register_item_for_sale("Tea pot", 3, ["tea"], "used", "9.99", 4)
    ),
    "ChangeItemPrice": Case("seller", lambda w, c: c.change_item_price(w.items["mug"], "3.99")),
    "UpdateUnitsForSale": Case(
        "seller", lambda w, c: c.update_units_for_sale(w.items["mug"], 3)
    ),
    "AddItemToCart": Case("buyer", lambda w, c: c.add_item_to_cart(w.items["mug"], 3)),
    "RemoveItemFromCart": Case(
        "buyer", lambda w, c: c.remove_item_from_cart(w.items["mug"], 1)
    ),
    "SaveCart": Case("buyer", lambda w, c: c.save_cart()),
    "ClearCart": Case("buyer", lambda w, c: c.clear_cart()),
    "MakePurchase": Case("buyer", lambda w, c: c.make_purchase(**CARD)),
    "ProvideFeedback": Case(
        "buyer", lambda w, c: c.provide_feedback(w.items["mug"], True), given=_bought_mugs
    ),
}


class World:
    """Fresh accounts for one run of a case: a seller with the L{ITEMS} on
    sale, and a buyer with two mugs in the active cart (both logged in),
    or only the usernames where the case makes the account."""

    def __init__(self, test: "_CutWire", case: Case) -> None:
        self.test = test
        self.case = case
        serial = next(_serial)
        self.usernames = {role: f"{role}-{serial}" for role in CLIENTS}
        self.sessions: Dict[str, str] = {}
        self.ids: Dict[str, int] = {}
        self.items: Dict[str, str] = {}

    async def build(self) -> "World":
        clients = {}
        for role in self.case.accounts:
            client = clients[role] = self.test.client(role)
            await client.create_account(self.usernames[role], PASSWORD, "Shop")
            await client.login(self.usernames[role], PASSWORD)
            self.sessions[role] = client.session_id
            self.ids[role] = client.user_id
        if "seller" in clients:
            for name, args in ITEMS.items():
                answer = await clients["seller"].register_item_for_sale(*args)
                self.items[name] = answer["item_id"]
        if "buyer" in clients:
            await clients["buyer"].add_item_to_cart(self.items["mug"], 2)
        if self.case.given is not None:
            await self.case.given(self, clients)
        return self

    def caller(self, through: str):
        """The client of the case's role, in the world's session, on a
        connection of its own to C{through} (an endpoint description)."""
        role = self.case.role
        client = self.test.client(role, through)
        client.session_id = self.sessions.get(role)
        client.user_id = self.ids.get(role)
        return client

    async def state(self) -> dict:
        """What the world holds now, read by API calls on fresh connections:
        each account (an account the call made by logging in), the seller's
        items and rating, the buyer's active cart, saved cart (logging in
        again: a new session's active cart is a copy of it) and purchases."""
        state = {}
        roles = list(self.case.accounts) + [self.case.creates] * bool(self.case.creates)
        for role in roles:
            client = self.test.client(role)
            if role in self.sessions:
                client.session_id = self.sessions[role]
                seen = state[role] = {f"{role}_id": self.ids[role]}
            else:
                login = await client.login(self.usernames[role], PASSWORD)
                seen = state[role] = {f"{role}_id": login[f"{role}_id"]}
            if role == "seller":
                seen["items"] = (await client.display_items_for_sale())["items"]
                seen["rating"] = await client.get_seller_rating()
            else:
                seen["active_cart"] = await client.display_cart()
                seen["purchases"] = await client.get_buyer_purchases()
                await client.login(self.usernames[role], PASSWORD)
                seen["saved_cart"] = await client.display_cart()
        return state

    def names(self) -> dict:
        """Placeholders for the ids of this world, for L{normalized}."""
        names = {("item_id", item_id): name for name, item_id in self.items.items()}
        for role, account_id in self.ids.items():
            names[f"{role}_id", account_id] = role
        return names


#: Answer fields whose values each run draws anew.
ID_FIELDS = ("item_id", "seller_id", "buyer_id", "purchase_id")
#: Answer fields that differ from run to run and say nothing of the effect.
TIME_FIELDS = ("purchased_at",)


def normalized(value, names: dict):
    """C{value} with its ids replaced by the names of C{names} (extended
    with C{field#n} for ids met first here, in order of meeting)."""
    if isinstance(value, list):
        return [normalized(v, names) for v in value]
    if not isinstance(value, dict):
        return value
    result = {}
    for key, v in value.items():
        if key in TIME_FIELDS:
            continue
        if key in ID_FIELDS and not isinstance(v, (dict, list)):
            fresh = sum(1 for known in names if known[0] == key) + 1
            v = names.setdefault((key, v), f"{key}#{fresh}")
        result[key] = normalized(v, names)
    return result


class _CutWire:
    """The services on the one-database layout behind proxies: one between
    them and PostgreSQL, one in front of each service."""

    timeout = 180
    maxDiff = None
    #: Which proxy cuts: "front" (the service's) or "database".
    proxy_side = "front"
    #: Shapes of the statements of the services' housekeeping.
    background: frozenset = frozenset()

    async def setUp(self):
        one = test_dsns()["customer"]
        self.database = await start_proxy(
            self, reactor, postgres_target(reactor, one), PostgresMessages
        )
        through = proxied_dsn(one, self.database)
        self.market = await start_marketplace(self, customer_db=through, product_db=through)
        self.front = {}
        for role in CLIENTS:
            target = service_target(reactor, self.market.ports[role])
            self.front[role] = await start_proxy(self, reactor, target)
        if self.proxy_side == "database":
            await self.quiet()

    async def quiet(self) -> None:
        """Wait for the housekeeping that the services run as they start
        to be over, and know its statements (but BEGIN and COMMIT) by
        their shapes, so that a later run of it is not taken for a call's
        statements."""
        seen = -1
        for _ in range(100):
            if len(self.database.queries) == seen:
                break
            seen = len(self.database.queries)
            await task.deferLater(reactor, 0.2, lambda: None)
        shapes = {sql_shape(s) for s in self.database.queries}
        self.background = {s for s in shapes if s.lower() not in ("begin", "commit")}

    def client(self, role: str, endpoint: Optional[str] = None):
        """A client of the C{role} service (directly, unless C{endpoint}
        says otherwise), closed after the test."""
        endpoint = endpoint or f"tcp:host=127.0.0.1:port={self.market.ports[role]}"
        client = CLIENTS[role](endpoint, reactor=reactor)
        self.addCleanup(client.close)
        return client

    def cuts(self, statements: List[str]) -> list:
        """The cuts of this point, each made anew by a function of no
        arguments, given the statements of the call when nothing was cut."""
        raise NotImplementedError

    async def attempt(self, case: Case, cut=None):
        """One run of C{case} on a fresh world, with the rule made by
        C{cut} armed (if given): the normalized answer and state, and the
        statements the call sent to PostgreSQL."""
        world = await World(self, case).build()
        proxy = self.front[case.role]
        caller = world.caller(f"tcp:host=127.0.0.1:port={proxy.port.getHost().port}")
        rule = None
        if cut is not None:
            rule = cut()
            (self.database if self.proxy_side == "database" else proxy).arm(rule)
        mark = len(self.database.queries)
        try:
            answer = await case.call(world, caller)
        except ClientError as e:
            if rule is None:
                raise
            self.fail(f"{e} (after {rule})")
        statements = [
            s for s in self.database.queries[mark:] if sql_shape(s) not in self.background
        ]
        if rule is not None:
            fired = self.database.fired + proxy.fired
            self.assertIn(rule, fired, "the cut never came")
        names = world.names()
        result = normalized({"answer": answer, "state": await world.state()}, names)
        return result, statements

    async def check(self, case: Case, select=None) -> None:
        """C{case} without a fault and with each cut of this point (those
        that C{select} picks from the list, if given)."""
        expected, statements = await self.attempt(case)
        cuts = self.cuts(statements)
        for cut in cuts if select is None else select(cuts):
            got, _ = await self.attempt(case, cut)
            self.assertEqual(got["answer"], expected["answer"], f"the answer after {cut()}")
            self.assertEqual(got["state"], expected["state"], f"the effect after {cut()}")


def every_writing_api(cls):
    """Add one test per L{CASES} entry to C{cls}."""

    def make(name: str):
        async def test(self):
            await self.check(CASES[name])

        test.__name__ = f"test_{name}"
        test.__doc__ = f"{name}, cut {cls.__doc__.strip().rstrip('.')}."
        return test

    for name in CASES:
        if f"test_{name}" not in vars(cls):
            setattr(cls, f"test_{name}", make(name))
    return cls


@every_writing_api
class RequestCutShortTests(_CutWire, unittest.TestCase):
    """before the service has the whole request (half of it went)."""

    def cuts(self, statements):
        return [lambda: FrameCut(UP, HALF)]


@every_writing_api
class AnswerHeldBackTests(_CutWire, unittest.TestCase):
    """after the service did the request, before any byte of the answer."""

    def cuts(self, statements):
        return [lambda: FrameCut(DOWN, 0)]


@every_writing_api
class AnswerCutHalfWayTests(_CutWire, unittest.TestCase):
    """half-way through the answer."""

    def cuts(self, statements):
        return [lambda: FrameCut(DOWN, HALF)]


def _is_commit(sql: str) -> bool:
    return sql.strip().upper() == "COMMIT"


def commits_and_last(statements: List[str]) -> list:
    """Cuts of the answers to each COMMIT among C{statements} and to the
    last of them, when the same call is made again (a statement is known
    by its shape and by how many of that shape came before it)."""
    shapes = [sql_shape(s) for s in statements]
    chosen = [i for i, s in enumerate(statements) if _is_commit(s)]
    if len(statements) - 1 not in chosen:
        chosen.append(len(statements) - 1)
    return [
        partial(QueryCut.shaped_like, statements[i], shapes[: i + 1].count(shapes[i]))
        for i in chosen
    ]


@every_writing_api
class DatabaseAnswerLostTests(_CutWire, unittest.TestCase):
    """between the service and PostgreSQL, after PostgreSQL committed (at
    each COMMIT of the call, and its last statement), before its answer
    reached the service."""

    proxy_side = "database"

    def cuts(self, statements):
        self.assertTrue(statements, "the call sent no statement")
        return commits_and_last(statements)

    async def test_MakePurchase(self):
        """MakePurchase, each cut; at the first, the answer to the COMMIT
        that files the pending purchase is lost, and the service, which
        finds it filed, pays for it then."""
        await self.check(CASES["MakePurchase"], lambda cuts: cuts)


def _not_prepare(sql: str) -> bool:
    return not sql.lstrip().upper().startswith("PREPARE")


class DaemonWithoutRetriesTests(_CutWire, unittest.TestCase):
    """A raw request (no retries) whose service loses its PostgreSQL
    connection mid-call: UNAVAILABLE, never INTERNAL, and the next request
    is served."""

    READS = {"buyer": "DisplayCart", "seller": "DisplayItemsForSale"}

    async def cut_mid_call(self, role: str, api: str, payload, rule) -> None:
        world = await World(self, CASES["AddItemToCart"]).build()
        wire = await connect(self, self.market.ports[role])
        self.database.arm(rule)
        answer = await wire.request(api, payload(world), world.sessions[role])
        self.assertEqual(self.database.fired, [rule], "the cut never came")
        assert_error(self, answer, "UNAVAILABLE")
        answer = await wire.request(self.READS[role], {}, world.sessions[role])
        payload_of(self, answer)

    def add_mug(self, world: World) -> dict:
        return {"item_id": world.items["mug"], "quantity": 1}

    async def test_statement_cut_short(self):
        await self.cut_mid_call("buyer", "AddItemToCart", self.add_mug, FrameCut(UP, HALF))

    async def test_answer_lost_after_commit(self):
        rule = QueryCut(_not_prepare)
        await self.cut_mid_call("buyer", "AddItemToCart", self.add_mug, rule)

    async def test_answer_lost_in_a_transaction(self):
        # (MakePurchase is not the example: it finds its purchase filed and
        # pays for it, see DatabaseAnswerLostTests.test_MakePurchase.)
        payload = lambda world: {}  # noqa: E731 (a table of one)
        rule = QueryCut(_is_commit)
        await self.cut_mid_call("buyer", "SaveCart", payload, rule)

    async def test_seller_statement_answer_lost(self):
        payload = lambda world: {"item_id": world.items["lamp"], "quantity": 1}  # noqa: E731
        await self.cut_mid_call("seller", "UpdateUnitsForSale", payload, QueryCut(_not_prepare))
