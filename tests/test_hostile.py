"""Hostile input over real connections to the seller, buyer and payments
services, generated with hypothesis.

Each test starts the services once; the hypothesis test then runs in a
thread of its own and sends its examples through the reactor
(L{blockingCallFromThread}), so every example meets the same running
services and hypothesis can still shrink a failure.  For every request:

- the answer is a well-formed frame (strict UTF-8 JSON, an object) whose
  code is one of PROTOCOL.md's, and never INTERNAL;
- the connection stays open (only an oversized frame closes it);
- a request that was refused changed nothing in any database.
"""

import json
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor, threads
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.threads import blockingCallFromThread
from twisted.trial import unittest

from marketplace.contract.errors import ERROR_CODES, FRAME_TOO_LARGE, INTERNAL
from tests.support import (
    PAYMENTS_SECRET,
    WireClient,
    _later,
    on_both_layouts,
    open_database,
    payload_of,
    start_marketplace,
)

EXAMPLES = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)

# Columns that change on any use and are no content: a session's last
# request, a cart line's time.  Failed logins and tried sign-ups are meant
# to be counted.
_VOLATILE = ("last_seen", "added_at")
_NOT_CONTENT = ("login_failures", "login_failures_by_source", "rate_buckets")


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


class StrictClient(WireClient):
    """A WireClient that accepts only what PROTOCOL.md allows as an answer."""

    def stringReceived(self, frame: bytes) -> None:
        if not self.pending:
            return  # an answer to raw bytes sent with transport.write
        try:
            answer = json.loads(frame.decode("utf-8"), parse_constant=_reject_constant)
            if not isinstance(answer, dict):
                raise ValueError("the answer is not a JSON object")
        except ValueError as e:
            self.pending.popleft().errback(e)
        else:
            self.pending.popleft().callback(answer)


SQL = st.sampled_from(
    [
        "'; DROP TABLE items; --",
        "' OR '1'='1",
        "%s",
        "%(key)s",
        "\\",
        "$$",
        "1; SELECT pg_sleep(10)",
        "*/ --",
        "3-1 OR 1=1",
    ]
)
ODD_TEXT = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=40),  # lone surrogates too
    st.text(st.sampled_from("\x00\u202e\u200f\ufeff\U0001f600\u0301\n\t "), max_size=40),
    st.text(max_size=3000).map(lambda s: s * 3),
    SQL,
)
# Every numeric field is tried at these: the edges of 32- and 64-bit
# integers, of prices (numeric(12, 2)) and of a purchase's total, and
# numbers no column can hold.
EXTREMES = [
    0, 1, -1, 2**31 - 1, 2**31, -(2**31) - 1, 2**53 + 1, 2**63 - 1, 2**63, -(2**63) - 1,
    10**30, -(10**30), 10**4000, 0.01, 0.001, -0.0, 1.005, 9999999999.99, 10000000000,
    9999999999999.99, 10000000000000, 1e308, -1e308, "1", "9999999999.99",
]
HUGE_NUMBERS = st.sampled_from(EXTREMES)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
    HUGE_NUMBERS, ODD_TEXT,
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(ODD_TEXT, inner, max_size=4)
    ),
    max_leaves=12,
)

SELLER_APIS = {
    "CreateAccount": {"username": "newseller", "password": "pw-passphrase", "name": "N"},
    "Login": {"username": "sal", "password": "pw-passphrase"},
    "Logout": {},
    "GetSellerRating": {},
    "RegisterItemForSale": {
        "item_name": "Lamp", "category": 1, "keywords": ["lamp"],
        "condition": "new", "price": 5, "quantity": 3,
    },
    "ChangeItemPrice": {"item_id": "ITEM", "price": 4.5},
    "UpdateUnitsForSale": {"item_id": "ITEM", "quantity": 1},
    "DisplayItemsForSale": {},
}
BUYER_APIS = {
    "CreateAccount": {"username": "newbuyer", "password": "pw-passphrase"},
    "Login": {"username": "bea", "password": "pw-passphrase"},
    "Logout": {},
    "SearchItemsForSale": {"category": 1, "keywords": ["lamp"], "limit": 5, "offset": 0},
    "GetItem": {"item_id": "ITEM"},
    "AddItemToCart": {"item_id": "ITEM", "quantity": 1},
    "RemoveItemFromCart": {"item_id": "ITEM", "quantity": 1},
    "SaveCart": {},
    "ClearCart": {},
    "DisplayCart": {},
    "MakePurchase": {
        "name": "Bea", "card_number": "4111111111111111", "expiration_date": "12/99",
        "security_code": "123", "idempotency_key": "k", "expected_total": 5,
    },
    "ProvideFeedback": {"item_id": "ITEM", "thumbs_up": True},
    "GetSellerRating": {"seller_id": 1},
    "GetBuyerPurchases": {},
}
PAYMENTS_APIS = {
    "AuthorizePayment": {
        "name": "Bea", "card_number": "4111111111111111", "expiration_date": "12/99",
        "security_code": "123", "amount": 5, "idempotency_key": "pay-1",
    },
    "VoidPayment": {"idempotency_key": "pay-1"},  # (or authorization_id)
    "GetPayment": {"idempotency_key": "pay-1"},
}
SERVICES = {"seller": SELLER_APIS, "buyer": BUYER_APIS, "payments": PAYMENTS_APIS}


@st.composite
def mutated_request(draw, service):
    """A request of one of the service's APIs with one field made hostile
    (replaced, dropped, or added)."""
    apis = SERVICES[service]
    api = draw(st.sampled_from(sorted(apis)))
    payload = dict(apis[api])
    fields = sorted(payload) or ["extra"]
    name = draw(st.sampled_from(fields + ["unknown"]))
    if draw(st.booleans()) and name in payload:
        del payload[name]
    else:
        payload[name] = draw(JSON)
    return api, payload


@st.composite
def hostile_envelope(draw, service):
    """An envelope with any of its fields hostile."""
    apis = sorted(SERVICES[service])
    message = {
        "type": draw(st.one_of(st.just("request"), JSON)),
        "api": draw(st.one_of(st.sampled_from(apis), JSON)),
        "session_id": draw(st.one_of(st.just("SESSION"), st.none(), JSON)),
        "payload": draw(st.one_of(st.dictionaries(ODD_TEXT, JSON, max_size=4), JSON)),
    }
    if draw(st.booleans()):
        message["request_id"] = draw(JSON)
    for key in draw(st.lists(st.sampled_from(sorted(message)), max_size=2)):
        message.pop(key, None)
    return message


def nested(depth: int, kind: str) -> str:
    if kind == "list":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


class HostileCase(unittest.TestCase):
    """The running services, a seller and a buyer logged in, an item on
    sale, and L{exchange} to send a frame and check what it did."""

    async def setUp(self):
        self.market = await start_marketplace(self)
        self.databases = {
            name: await open_database(self, name) for name in ("customer", "product", "payments")
        }
        self.clients = {
            name: await self.connect(name) for name in ("seller", "buyer", "payments")
        }
        seller, buyer = self.clients["seller"], self.clients["buyer"]
        await seller.request("CreateAccount", {"username": "sal", "password": "pw-passphrase"})
        await buyer.request("CreateAccount", {"username": "bea", "password": "pw-passphrase"})
        self.sessions = {
            "seller": payload_of(
                self, await seller.request("Login", {"username": "sal", "password": "pw-passphrase"})
            )["session_id"],
            "buyer": payload_of(
                self, await buyer.request("Login", {"username": "bea", "password": "pw-passphrase"})
            )["session_id"],
            "payments": PAYMENTS_SECRET,
        }
        item = dict(SELLER_APIS["RegisterItemForSale"])
        self.item_id = payload_of(
            self, await seller.request("RegisterItemForSale", item, self.sessions["seller"])
        )["item_id"]
        self.tables = {}
        for name, database in self.databases.items():
            rows = await database.query(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
            )
            self.tables[name] = [t for (t,) in rows if t not in _NOT_CONTENT]
        self.snapshot = await self.take_snapshot()

    async def connect(self, service: str) -> StrictClient:
        client = await connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", self.market.ports[service]),
            StrictClient(),
        )
        self.addCleanup(lambda: client.transport.loseConnection() or client.closed)
        return client

    async def take_snapshot(self) -> dict:
        """The content of every table of every database."""
        snapshot = {}
        volatile = "".join(f" - '{column}'" for column in _VOLATILE)
        for name, database in self.databases.items():
            # One statement per database: a digest of each table.
            rows = await database.query(" UNION ALL ".join(
                f"SELECT '{table}', (SELECT md5(coalesce(string_agg(x, ',' ORDER BY x), ''))"
                f" FROM (SELECT (to_jsonb(t){volatile})::text AS x FROM {table} t) s)"
                for table in self.tables[name]
            ))
            for table, digest in rows:
                snapshot[(name, table)] = digest
        return snapshot

    async def exchange(self, service: str, body: bytes) -> dict:
        """Send one frame body; check the answer, the connection and the
        databases as the module docstring says; the answer."""
        client = self.clients[service]
        answer = await client.send_frame(body)
        self.assertTrue(client.transport.connected, "the connection was closed")
        kind = answer.get("type")
        self.assertIn(kind, ("response", "error"), answer)
        if kind == "error":
            code = answer["error"]["code"]
            self.assertIn(code, ERROR_CODES, answer)
            self.assertNotIn(code, (INTERNAL, FRAME_TOO_LARGE), (body[:300], answer))
            self.assertIsInstance(answer["error"]["message"], str)
            after = await self.take_snapshot()
            changed = [k for k in after if after[k] != self.snapshot.get(k)]
            self.assertEqual(changed, [], (body[:300], answer))
        else:
            self.snapshot = await self.take_snapshot()
        return answer

    def blocking(self, service: str, body: bytes) -> dict:
        """L{exchange}, from hypothesis's thread."""
        return blockingCallFromThread(
            reactor, lambda: defer.Deferred.fromCoroutine(self.exchange(service, body))
        )

    def encode(self, message, service: str) -> bytes:
        text = json.dumps(message, ensure_ascii=True)
        text = text.replace('"ITEM"', json.dumps(self.item_id))
        if self.sessions[service]:
            text = text.replace('"SESSION"', json.dumps(self.sessions[service]))
        return text.encode("utf-8")



class HostileInputTests(HostileCase):
    def in_thread(self, test):
        return threads.deferToThread(test)

    def test_random_bytes_as_frames(self):
        @EXAMPLES
        @given(service=st.sampled_from(sorted(SERVICES)), body=st.binary(max_size=300))
        def check(service, body):
            self.blocking(service, body)

        return self.in_thread(check)

    def test_json_that_is_not_a_request(self):
        @EXAMPLES
        @given(service=st.sampled_from(sorted(SERVICES)), value=JSON)
        def check(service, value):
            answer = self.blocking(service, self.encode(value, service))
            self.assertEqual(answer["type"], "error")

        return self.in_thread(check)

    def test_hostile_envelopes(self):
        @EXAMPLES
        @given(data=st.data())
        def check(data):
            service = data.draw(st.sampled_from(sorted(SERVICES)))
            message = data.draw(hostile_envelope(service))
            self.blocking(service, self.encode(message, service))

        return self.in_thread(check)

    def test_every_field_of_every_api(self):
        @settings(EXAMPLES, max_examples=150)
        @given(data=st.data())
        def check(data):
            service = data.draw(st.sampled_from(sorted(SERVICES)))
            api, payload = data.draw(mutated_request(service))
            message = {
                "type": "request", "api": api, "session_id": "SESSION", "payload": payload,
            }
            self.blocking(service, self.encode(message, service))

        return self.in_thread(check)

    def test_deep_nesting_and_huge_numbers(self):
        @EXAMPLES
        @given(
            service=st.sampled_from(sorted(SERVICES)),
            depth=st.sampled_from([10, 200, 900, 1000, 5000, 100000]),
            kind=st.sampled_from(["list", "object"]),
            where=st.sampled_from(["frame", "payload", "request_id", "field"]),
            number=st.sampled_from(["1" * 5000, "1e999999999", "-1e-999999999", "1" * 400]),
        )
        def check(service, depth, kind, where, number):
            deep = nested(depth, kind)
            if where == "frame":
                body = deep
            else:
                api = sorted(SERVICES[service])[0]
                value = deep if where != "field" else number
                body = (
                    '{"type":"request","api":%s,"session_id":null,' % json.dumps(api)
                    + ('"payload":%s' % (deep if where == "payload" else "{}"))
                    + (',"request_id":%s' % value if where in ("request_id", "field") else "")
                    + "}"
                )
            self.blocking(service, body.encode())

        return self.in_thread(check)

    def test_frames_in_pieces(self):
        """A frame split anywhere (truncated in transit) is answered as a
        whole one would be."""

        @EXAMPLES
        @given(
            service=st.sampled_from(sorted(SERVICES)),
            cuts=st.lists(st.integers(min_value=1, max_value=60), max_size=5),
        )
        def check(service, cuts):
            body = self.encode({"type": "request", "api": "NoSuchApi", "payload": {}}, service)
            data = struct.pack(">I", len(body)) + body
            pieces, rest = [], data
            for cut in cuts:
                pieces.append(rest[:cut])
                rest = rest[cut:]
            pieces.append(rest)

            async def send():
                client = self.clients[service]
                d = client.send_bytes(pieces[0])
                for piece in pieces[1:]:
                    await _later(0)
                    client.transport.write(piece)
                answer = await d
                self.assertEqual(answer["error"]["code"], "UNKNOWN_API")

            blockingCallFromThread(reactor, lambda: defer.Deferred.fromCoroutine(send()))

        return self.in_thread(check)

    async def test_streams_of_junk_then_the_service_still_serves(self):
        """Raw bytes on their own connections: whatever they do to those,
        the services keep serving everyone else."""
        junk = [
            b"\xff\xff\xff\xff",  # an oversized frame header
            b"\x00\x00\x00\x10{\"type\"",  # half a frame, then gone
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            bytes(range(256)) * 4,
        ]
        for service in SERVICES:
            for data in junk:
                hostile = await self.connect(service)
                hostile.transport.write(data)
                await _later(0.01)
                hostile.transport.loseConnection()
                await hostile.closed
            body = self.encode({"type": "request", "api": "NoSuchApi"}, service)
            answer = await self.exchange(service, body)
            self.assertEqual(answer["error"]["code"], "UNKNOWN_API")
        payload_of(
            self,
            await self.clients["buyer"].request("DisplayCart", {}, self.sessions["buyer"]),
        )

    async def test_unusual_unicode_echoed(self):
        """Lone surrogates (as JSON escapes), NUL, RTL marks and emoji in
        the echoed fields and in every text field."""
        odd = ["\udc00", "\ud800x", "a\x00b", "\u202eevil", "\U0001f600" * 40, "\ufeff"]
        for service, apis in SERVICES.items():
            for text in odd:
                message = {"type": "request", "api": text, "session_id": text, "request_id": text}
                answer = await self.exchange(service, self.encode(message, service))
                self.assertEqual(answer["error"]["code"], "UNKNOWN_API")
                self.assertEqual((answer["api"], answer["request_id"]), (text, text))
                for api, template in apis.items():
                    for field, value in template.items():
                        if isinstance(value, str):
                            payload = dict(template, **{field: text})
                            message = {
                                "type": "request", "api": api, "session_id": "SESSION",
                                "payload": payload,
                            }
                            await self.exchange(service, self.encode(message, service))

    async def test_oversized_frame_is_answered_then_closed(self):
        for service in SERVICES:
            hostile = await self.connect(service)
            answer = await hostile.send_bytes(struct.pack(">I", self.market.settings.max_frame + 1))
            self.assertEqual(answer["error"]["code"], FRAME_TOO_LARGE)
            await hostile.closed
            body = self.encode({"type": "request", "api": "NoSuchApi"}, service)
            await self.exchange(service, body)


@on_both_layouts
class MoneyExtremesTests(HostileCase):
    """Numbers at and beyond every limit, on two databases."""

    async def test_numeric_extremes_of_every_field(self):
        """Each numeric field of every API at each of EXTREMES, on the small
        item of setUp and on one at the highest price with the most units."""
        big = await self.big_item()
        numeric = {
            "category", "price", "quantity", "limit", "offset", "seller_id",
            "amount", "expected_total",
        }
        for service, apis in SERVICES.items():
            for api, template in apis.items():
                for field in sorted(numeric & set(template)):
                    for value in EXTREMES:
                        for item in ("ITEM", big):
                            payload = dict(template, **{field: value})
                            if payload.get("item_id") == "ITEM":
                                payload["item_id"] = item
                            message = {
                                "type": "request", "api": api, "session_id": "SESSION",
                                "payload": payload,
                            }
                            await self.exchange(service, self.encode(message, service))

    async def big_item(self) -> str:
        """An item at the highest price with the most units; its id."""
        big = dict(SELLER_APIS["RegisterItemForSale"], price=9999999999.99, quantity=2**31 - 1)
        message = {"type": "request", "api": "RegisterItemForSale", "session_id": "SESSION",
                   "payload": big}
        answer = await self.exchange("seller", self.encode(message, "seller"))
        return payload_of(self, answer)["item_id"]

    async def test_money_at_its_limits(self):
        """The issue's attack, and the carts around it: the most units at the
        highest price, a price raised under a full cart, quantities that
        would overflow their column; never INTERNAL, a refusal changes
        nothing."""
        big = await self.big_item()
        cheap = dict(SELLER_APIS["RegisterItemForSale"], price=0.01, quantity=2**31 - 1)
        answer = await self.exchange("seller", self.encode(
            {"type": "request", "api": "RegisterItemForSale", "session_id": "SESSION",
             "payload": cheap}, "seller"))
        cheap_id = payload_of(self, answer)["item_id"]

        def buyer(api, **payload):
            message = {"type": "request", "api": api, "session_id": "SESSION",
                       "payload": payload}
            return self.exchange("buyer", self.encode(message, "buyer"))

        def seller(api, **payload):
            message = {"type": "request", "api": api, "session_id": "SESSION",
                       "payload": payload}
            return self.exchange("seller", self.encode(message, "seller"))

        card = dict(BUYER_APIS["MakePurchase"])
        del card["expected_total"]
        for units in (2**31 - 1, 1001, 1000, 1, 2**31 - 1):
            await buyer("AddItemToCart", item_id=big, quantity=units)
        for units in (2**31 - 1, 1, 2**31 - 1):
            await buyer("AddItemToCart", item_id=cheap_id, quantity=units)
        await buyer("DisplayCart")
        for price in (9999999999.99, 0.01, 9999999999.99):
            await seller("ChangeItemPrice", item_id=cheap_id, price=price)
            cart = payload_of(self, await buyer("DisplayCart"))
            for expected in (cart["total"], cart["total_decimal"], 0, 2**63):
                await buyer("MakePurchase", **dict(card, expected_total=expected))
            await buyer("MakePurchase", **card)
            await buyer("SaveCart")
        # 1000 units at the highest price, the most units of the raised one.
        self.assertEqual(cart["total_decimal"], "21474846469978525153.53")
        for units in (2**31 - 1, 2**31 - 2, 1):
            await buyer("RemoveItemFromCart", item_id=cheap_id, quantity=units)
            await seller("UpdateUnitsForSale", item_id=big, quantity=units)
        await buyer("MakePurchase", **card)
        await buyer("GetBuyerPurchases")
        await buyer("GetSellerRating", seller_id=2**63 - 1)
