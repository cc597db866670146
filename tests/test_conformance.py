"""Conformance of the running services to docs/PROTOCOL.md.

Written as a third-party client author would, from PROTOCOL.md alone: every
check below cites the rule it comes from.  The services are the real ones
(tests.support.start_marketplace) on the real test PostgreSQL; every request
goes over a loopback TCP connection.

Every successful call made through L{Conformance.ok} and every failure made
through L{Conformance.err} also checks the envelope of its answer (type, api,
session_id and request_id echo), so the envelope rules are exercised for
every API used anywhere in this file.

Where PROTOCOL.md is ambiguous the check accepts every reasonable reading;
those places are marked "AMBIGUOUS" in a comment.

The checks of the APIs run on both layouts of the databases (see
tests/support.py), as a client cannot tell them apart; the framing checks,
which come before any API, run on the default one.
"""

import json
import re
import struct

from twisted.internet import defer, reactor
from twisted.trial import unittest

from tests.support import (
    RunningMarketplace,
    _later,
    connect,
    frame,
    on_both_layouts,
    start_marketplace,
)

ITEM_KEYS = {
    "item_id",
    "item_name",
    "category",
    "keywords",
    "condition",
    "price",
    "quantity",
    "seller_id",
    "thumbs_up",
    "thumbs_down",
    "price_decimal",  # PROTOCOL.md, Additions: exact money
}
CART_KEYS = {"cart", "total", "total_decimal"}
LINE_KEYS = {"item_id", "item_name", "quantity", "price", "price_decimal", "subtotal_decimal"}
RATING_KEYS = {"seller_id", "name", "thumbs_up", "thumbs_down", "items_sold"}
PURCHASE_LINE_KEYS = {
    "purchase_id",
    "item_id",
    "item_name",
    "quantity",
    "price",
    "purchased_at",
    "price_decimal",
    "subtotal_decimal",
}
CARD = {
    "name": "Ann Buyer",
    "card_number": "4111111111111111",
    "expiration_date": "12/39",
    "security_code": "123",
}
ITEM_ID = re.compile(r"^(\d+)-(\d+)$")
MISSING = object()

SELLER_SESSION_APIS = {
    "Logout": {},
    "GetSellerRating": {},
    "RegisterItemForSale": {
        "item_name": "x",
        "category": 1,
        "keywords": ["a"],
        "condition": "new",
        "price": 1,
        "quantity": 1,
    },
    "ChangeItemPrice": {"item_id": "1-1", "price": 2},
    "UpdateUnitsForSale": {"item_id": "1-1", "quantity": 1},
    "DisplayItemsForSale": {},
}
BUYER_SESSION_APIS = {
    "Logout": {},
    "SearchItemsForSale": {"category": 1, "keywords": ["a"]},
    "GetItem": {"item_id": "1-1"},
    "AddItemToCart": {"item_id": "1-1", "quantity": 1},
    "RemoveItemFromCart": {"item_id": "1-1", "quantity": 1},
    "SaveCart": {},
    "ClearCart": {},
    "DisplayCart": {},
    "MakePurchase": dict(CARD),
    "ProvideFeedback": {"item_id": "1-1", "thumbs_up": True},
    "GetSellerRating": {"seller_id": 1},
    "GetBuyerPurchases": {},
}


def is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def wait(d, seconds=10):
    return d.addTimeout(seconds, reactor)


class Conformance(unittest.TestCase):
    timeout = 60

    # ---------------------------------------------------------------- set-up

    async def up(self, **overrides):
        self.market = await start_marketplace(self, **overrides)
        self.s = await self.connect("seller")
        self.b = await self.connect("buyer")
        self.counter = 0
        return self.market

    async def connect(self, service, market=None):
        """A wire client whose every answer frame is checked to be strict
        UTF-8 JSON holding one object (PROTOCOL.md, Framing)."""
        client = await connect(self, (market or self.market).ports[service])

        def received(data):
            text = data.decode("utf-8")  # strict: no lone surrogates

            def refuse(constant):
                raise ValueError(f"{constant} is not JSON")

            message = json.loads(text, parse_constant=refuse)
            if not isinstance(message, dict):
                raise ValueError(f"answer is not an object: {text[:80]}")
            client.pending.popleft().callback(message)

        client.stringReceived = received
        return client

    def next_request_id(self):
        """Cycle through no request_id, an integer and a string."""
        self.counter += 1
        kind = self.counter % 3
        if kind == 0:
            return MISSING
        if kind == 1:
            return self.counter
        return f"req-{self.counter}"

    async def send(self, client, api, payload, sid):
        rid = self.next_request_id()
        extra = {} if rid is MISSING else {"request_id": rid}
        answer = await wait(client.request(api, payload, session_id=sid, **extra))
        return answer, rid

    def check_request_id(self, answer, rid):
        if rid is MISSING:
            # "request_id: echoed if sent".  AMBIGUOUS whether an answer to a
            # request without one leaves it out or sets it to null; accept both.
            self.assertIsNone(answer.get("request_id"), answer)
        else:
            self.assertIn("request_id", answer, answer)
            self.assertEqual(answer["request_id"], rid, answer)
            self.assertIs(type(answer["request_id"]), type(rid), answer)

    async def ok(self, client, api, payload=None, sid=None):
        """A success answer's payload, after checking its envelope."""
        payload = {} if payload is None else payload
        answer, rid = await self.send(client, api, payload, sid)
        self.assertEqual(answer.get("type"), "response", (api, payload, answer))
        self.assertEqual(answer.get("api"), api, answer)
        self.assertIn("session_id", answer, answer)
        if api == "Login":
            self.assertIsInstance(answer["session_id"], str, answer)
            self.assertEqual(answer["session_id"], answer["payload"]["session_id"])
        elif api == "Logout":
            self.assertIsNone(answer["session_id"], answer)
        else:
            self.assertEqual(answer["session_id"], sid, answer)
        self.assertIsInstance(answer.get("payload"), dict, answer)
        self.assertNotIn("error", answer)
        self.check_request_id(answer, rid)
        return answer["payload"]

    async def err(self, client, api, payload, sid, code, field=None):
        """A failure answer with C{code}, after checking its envelope."""
        answer, rid = await self.send(client, api, payload, sid)
        self.check_error(answer, code, api=api, sid=sid)
        self.check_request_id(answer, rid)
        if field is not None:
            # BAD_REQUEST: "the message names the field".
            self.assertIn(field, answer["error"]["message"], answer)
        return answer

    def check_error(self, answer, code, api=MISSING, sid=MISSING):
        self.assertEqual(answer.get("type"), "error", answer)
        self.assertIsInstance(answer.get("error"), dict, answer)
        self.assertEqual(answer["error"].get("code"), code, answer)
        self.assertIsInstance(answer["error"].get("message"), str, answer)
        self.assertTrue(answer["error"]["message"], answer)
        if api is not MISSING:
            self.assertEqual(answer.get("api"), api, answer)
        if sid is not MISSING:
            self.assertIn("session_id", answer, answer)
            if api == "Logout":
                # AMBIGUOUS: a failed Logout may echo the id or answer null.
                self.assertIn(answer["session_id"], (sid, None), answer)
            else:
                self.assertEqual(answer["session_id"], sid, answer)

    async def bad(self, client, api, payload, sid, field):
        return await self.err(client, api, payload, sid, "BAD_REQUEST", field)

    # ------------------------------------------------------------ shapes

    def check_item(self, item, extra=()):
        self.assertEqual(set(item), ITEM_KEYS | set(extra), item)
        self.assertIsInstance(item["item_id"], str)
        match = ITEM_ID.match(item["item_id"])
        self.assertIsNotNone(match, item)
        self.assertTrue(is_int(item["category"]), item)
        self.assertEqual(match.group(1), str(item["category"]), item)
        self.assertIsInstance(item["item_name"], str)
        self.assertTrue(1 <= len(item["item_name"]) <= 32)
        self.assertIsInstance(item["keywords"], list)
        self.assertLessEqual(len(item["keywords"]), 5)
        for keyword in item["keywords"]:
            self.assertIsInstance(keyword, str)
            self.assertTrue(1 <= len(keyword) <= 8)
        self.assertIn(item["condition"], ("new", "used"), item)
        self.check_price(item["price"], item["price_decimal"])
        self.assertTrue(is_int(item["quantity"]) and item["quantity"] >= 0, item)
        self.assertTrue(is_int(item["thumbs_up"]) and item["thumbs_up"] >= 0, item)
        self.assertTrue(is_int(item["thumbs_down"]) and item["thumbs_down"] >= 0, item)
        return item

    def check_price(self, price, exact=None):
        self.assertTrue(is_number(price), price)
        self.assertGreaterEqual(price, 0)
        self.assertEqual(round(price, 2), price, price)
        if exact is not None:
            # The exact decimal string of the same amount, two decimals.
            self.assertRegex(exact, r"^[0-9]+\.[0-9]{2}$")
            self.assertEqual(float(exact), price)

    def check_cart(self, cart):
        self.assertEqual(set(cart), CART_KEYS, cart)
        self.assertIsInstance(cart["cart"], list)
        total = 0
        for line in cart["cart"]:
            self.assertEqual(set(line), LINE_KEYS, line)
            self.assertTrue(ITEM_ID.match(line["item_id"]), line)
            self.assertIsInstance(line["item_name"], str)
            self.assertTrue(is_int(line["quantity"]) and line["quantity"] >= 1, line)
            self.check_price(line["price"], line["price_decimal"])
            self.check_price(line["quantity"] * line["price"], line["subtotal_decimal"])
            total += line["quantity"] * line["price"]
        self.assertTrue(is_number(cart["total"]), cart)
        self.check_price(round(total, 2), cart["total_decimal"])
        self.assertEqual(cart["total"], round(total, 2), cart)
        return cart

    def lines(self, cart):
        return {line["item_id"]: line["quantity"] for line in cart["cart"]}

    def check_rating(self, rating):
        self.assertEqual(set(rating), RATING_KEYS, rating)
        self.assertIsInstance(rating["name"], str)
        for key in ("thumbs_up", "thumbs_down", "items_sold"):
            self.assertTrue(is_int(rating[key]) and rating[key] >= 0, rating)
        return rating

    # ----------------------------------------------------------- helpers

    async def _account(self, role, username, password, name):
        """Create an account of C{role} and log in; the session id, the
        account id and the username."""
        self.counter += 1
        username = username or f"{role}{self.counter}"
        conn = self.s if role == "seller" else self.b
        id_field = f"{role}_id"
        payload = {"username": username, "password": password}
        if name is not None:
            payload["name"] = name
        created = await self.ok(conn, "CreateAccount", payload)
        self.assertEqual(set(created), {id_field}, created)
        login = await self.ok(
            conn, "Login", {"username": username, "password": password}
        )
        self.assertEqual(set(login), {"session_id", id_field}, login)
        self.assertEqual(login[id_field], created[id_field])
        return login["session_id"], login[id_field], username

    async def seller(self, username=None, password="pw-passphrase", name=None):
        session_id, seller_id, _ = await self._account("seller", username, password, name)
        return session_id, seller_id

    async def buyer(self, username=None, password="pw-passphrase", name=None):
        return await self._account("buyer", username, password, name)

    async def login_buyer(self, username, password="pw-passphrase"):
        login = await self.ok(
            self.b, "Login", {"username": username, "password": password}
        )
        return login["session_id"]

    async def item(self, sid, **fields):
        payload = dict(
            item_name="thing",
            category=1,
            keywords=["thing"],
            condition="new",
            price=10,
            quantity=5,
        )
        payload.update(fields)
        answer = await self.ok(self.s, "RegisterItemForSale", payload, sid)
        self.assertEqual(set(answer), {"item_id"}, answer)
        match = ITEM_ID.match(answer["item_id"])
        self.assertIsNotNone(match, answer)
        self.assertEqual(match.group(1), str(payload["category"]))
        return answer["item_id"]

    async def get(self, bsid, item_id):
        return self.check_item(await self.ok(self.b, "GetItem", {"item_id": item_id}, bsid))

    async def cart(self, bsid):
        return self.check_cart(await self.ok(self.b, "DisplayCart", {}, bsid))

    async def add(self, bsid, item_id, quantity):
        return self.check_cart(
            await self.ok(
                self.b, "AddItemToCart", {"item_id": item_id, "quantity": quantity}, bsid
            )
        )

    async def purchase(self, bsid, **extra):
        payload = dict(CARD)
        payload.update(extra)
        answer = await self.ok(self.b, "MakePurchase", payload, bsid)
        self.assertEqual(set(answer), {"purchase_id", "items", "total", "total_decimal"}, answer)
        self.assertIsInstance(answer["items"], list)
        self.assertTrue(is_number(answer["total"]), answer)
        return answer

    async def purchases(self, bsid):
        answer = await self.ok(self.b, "GetBuyerPurchases", {}, bsid)
        self.assertEqual(set(answer), {"items", "items_purchased"}, answer)
        self.assertTrue(is_int(answer["items_purchased"]), answer)
        for line in answer["items"]:
            self.assertEqual(set(line), PURCHASE_LINE_KEYS, line)
            self.assertTrue(ITEM_ID.match(line["item_id"]), line)
            self.assertIsInstance(line["item_name"], str)
            self.assertTrue(is_int(line["quantity"]) and line["quantity"] >= 1, line)
            self.check_price(line["price"])
            self.assertIsNotNone(line["purchase_id"])
            self.assertIsNotNone(line["purchased_at"])
        return answer

    async def search(self, bsid, category, keywords, **extra):
        payload = {"category": category, "keywords": keywords}
        payload.update(extra)
        answer = await self.ok(self.b, "SearchItemsForSale", payload, bsid)
        self.assertEqual(set(answer), {"items"}, answer)
        for item in answer["items"]:
            self.check_item(item, extra=("score",))
            self.assertTrue(is_number(item["score"]), item)
        return answer["items"]

    def pipeline(self, client, frames):
        """Write several raw frames at once; their answers, in order."""
        ds = [defer.Deferred() for _ in frames]
        client.pending.extend(ds)
        client.transport.write(b"".join(frames))
        return wait(defer.gatherResults(ds))


# ====================================================================== framing


class Framing(Conformance):
    async def test_length_prefix_split_writes(self):
        """A frame is a 4-byte big-endian length then the JSON; it may arrive
        in pieces, and the answer is framed the same way."""
        await self.up()
        raw = frame(
            {
                "type": "request",
                "api": "CreateAccount",
                "session_id": None,
                "payload": {"username": "split", "password": "pw-passphrase"},
                "request_id": "x",
            }
        )
        d = defer.Deferred()
        self.s.pending.append(d)
        for i in range(0, len(raw), 3):
            self.s.transport.write(raw[i : i + 3])
            await _later(0.001)
        answer = await wait(d)
        self.assertEqual(answer["type"], "response", answer)
        self.assertEqual(answer["request_id"], "x")

    async def test_pipelined_answers_in_order(self):
        """Many requests written at once: answers come back in request order,
        whatever each one costs (a slow Login among fast errors)."""
        await self.up()
        await self.ok(self.s, "CreateAccount", {"username": "pipe", "password": "pw-passphrase"})
        sid = (await self.ok(self.s, "Login", {"username": "pipe", "password": "pw-passphrase"}))["session_id"]
        frames = []
        expected = []
        for i in range(40):
            # Only a few of the (costly) password checks; more than the
            # 16-odd requests a server might keep in flight per connection.
            kind = i % 4
            message = {"type": "request", "session_id": None, "payload": {}, "request_id": i}
            if i in (0, 21):
                message.update(api="Login", payload={"username": "pipe", "password": "pw-passphrase"})
                expected.append(("response", "Login"))
            elif i in (10, 31):
                message.update(api="CreateAccount", payload={"username": f"pipe{i}", "password": "pw-passphrase"})
                expected.append(("response", "CreateAccount"))
            elif kind == 1:
                message.update(api="NoSuchApi")
                expected.append(("error", "UNKNOWN_API"))
            elif kind == 2:
                message.update(api="GetSellerRating")
                expected.append(("error", "NOT_LOGGED_IN"))
            else:
                message.update(api="DisplayItemsForSale", session_id=sid)
                expected.append(("response", "DisplayItemsForSale"))
            frames.append(frame(message))
        answers = await self.pipeline(self.s, frames)
        self.assertEqual([a.get("request_id") for a in answers], list(range(40)))
        for answer, (kind, what) in zip(answers, expected):
            self.assertEqual(answer["type"], kind, answer)
            if kind == "error":
                self.assertEqual(answer["error"]["code"], what, answer)
            else:
                self.assertEqual(answer["api"], what, answer)

    async def test_pipelined_bad_frames_keep_order(self):
        """Undecodable frames among good ones are answered in their place."""
        await self.up()
        await self.ok(self.b, "CreateAccount", {"username": "slow", "password": "pw-passphrase"})
        frames = [
            frame({"type": "request", "api": "Login", "session_id": None,
                   "payload": {"username": "slow", "password": "pw-passphrase"}, "request_id": 1}),
            struct.pack(">I", 3) + b"{{{",
            frame({"type": "request", "api": "Y", "session_id": None, "payload": {}, "request_id": 3}),
        ]
        answers = await self.pipeline(self.b, frames)
        self.assertEqual(answers[0].get("request_id"), 1)
        self.check_error(answers[1], "BAD_REQUEST")
        self.assertEqual(answers[2].get("request_id"), 3)

    async def test_frame_too_large_then_closed(self):
        """A frame over the limit (default 1 MiB) gets FRAME_TOO_LARGE, then the
        server closes the connection."""
        await self.up()
        for client in (self.s, self.b):
            d = client.send_bytes(struct.pack(">I", 1024 * 1024 + 1) + b"{")
            answer = await wait(d)
            self.check_error(answer, "FRAME_TOO_LARGE")
            await wait(client.closed)
            self.assertFalse(client.transport.connected)

    async def test_answers_before_frame_too_large_still_come_first(self):
        """Answers keep request order even when the connection then closes:
        a slow request, a fast one, then an oversized frame."""
        await self.up()
        await self.ok(self.s, "CreateAccount", {"username": "slow", "password": "pw-passphrase"})
        frames = [
            frame({"type": "request", "api": "Login", "session_id": None,
                   "payload": {"username": "slow", "password": "pw-passphrase"}, "request_id": 1}),
            frame({"type": "request", "api": "Nope", "session_id": None, "payload": {}, "request_id": 2}),
            struct.pack(">I", 1024 * 1024 + 1) + b"{",
        ]
        answers = await self.pipeline(self.s, frames)
        self.assertEqual(answers[0]["type"], "response", answers)
        self.assertEqual(answers[0]["request_id"], 1, answers)
        self.check_error(answers[1], "UNKNOWN_API")
        self.assertEqual(answers[1]["request_id"], 2, answers)
        self.check_error(answers[2], "FRAME_TOO_LARGE")
        await wait(self.s.closed)

    async def test_frame_of_exactly_the_limit_is_accepted(self):
        """Only a frame *longer* than the limit is refused."""
        await self.up()
        head = {
            "type": "request",
            "api": "NoSuchApi",
            "session_id": None,
            "payload": {},
            "request_id": 7,
            "pad": "",
        }
        size = len(json.dumps(head).encode())
        head["pad"] = "p" * (1024 * 1024 - size)
        body = json.dumps(head).encode()
        self.assertEqual(len(body), 1024 * 1024)
        answer = await wait(self.b.send_frame(body))
        self.check_error(answer, "UNKNOWN_API")
        self.assertEqual(answer.get("request_id"), 7)

    async def test_configured_frame_limit(self):
        """The limit is the server's (configurable)."""
        await self.up(max_frame=1000)
        answer = await wait(self.s.send_frame(b"{" + b" " * 1000 + b"}"))
        self.check_error(answer, "FRAME_TOO_LARGE")
        await wait(self.s.closed)

    async def test_undecodable_frames_are_bad_request_and_connection_stays(self):
        """Not UTF-8, not JSON, or not an object: BAD_REQUEST, stay open."""
        await self.up()
        bodies = [
            b"\xff\xfe\xfd",
            b'{"type": "request", "api": "Nope", "session_id": null, "payload": {"x": "\xed\xa0\x80"}}',
            b'{"type": "request", "api": "Nope", "session_id": null, "payload": {"x": "\xc0\xaf"}}',
            b'{"type": "request", "api": "\xc3\x28"}',
            b"{not json",
            b"",
            b"[1, 2]",
            b'"request"',
            b"42",
            b"null",
            b"true",
            b'{"type": "request", "api": "Nope", "session_id": null, "payload": {}} trailing',
            b'{"type": "request", "api": "Nope", "session_id": null, "payload": {}, "request_id": NaN}',
            b'{"type": "request", "api": "Nope", "session_id": null, "payload": {"x": Infinity}}',
            b'{"type": "request", "api": "Nope", "session_id": null, "payload": {"x": -Infinity}}',
            b"[" * 100000 + b"]" * 100000,
            b'{"a":' * 50000 + b"1" + b"}" * 50000,
        ]
        for client in (self.s, self.b):
            for body in bodies:
                answer = await wait(client.send_frame(body))
                self.check_error(answer, "BAD_REQUEST")
                json.dumps(answer, allow_nan=False)
            self.assertTrue(client.transport.connected)
            await self.err(client, "Nope", {}, None, "UNKNOWN_API")


# ===================================================================== envelope


@on_both_layouts
class Envelope(Conformance):
    async def test_envelopes_of_answers(self):
        """Login puts the new id in session_id and payload; Logout answers
        null with payload {}; every other answer, success or error, echoes
        the request's session_id; request_id, any JSON value, is echoed."""
        await self.up()
        sid, seller_id = await self.seller(username="env")
        self.assertIsInstance(sid, str)
        for rid in ("abc", 17, 2.5, {"a": [1, "b"]}, [1, 2], True, ""):
            answer = await wait(self.s.request("DisplayItemsForSale", {}, session_id=sid, request_id=rid))
            self.assertEqual(answer["type"], "response", answer)
            self.assertEqual(answer["request_id"], rid, answer)
            answer = await wait(self.b.request("Nope", {}, request_id=rid))
            self.check_error(answer, "UNKNOWN_API")
            self.assertEqual(answer["request_id"], rid, answer)
        self.check_rating(await self.ok(self.s, "GetSellerRating", {}, sid))
        # The new session id is in the envelope even when the request carried
        # some other session id.
        answer = await wait(
            self.s.request("Login", {"username": "env", "password": "pw-passphrase"}, session_id=sid, request_id="L")
        )
        self.assertEqual(answer["type"], "response", answer)
        self.assertEqual(answer["request_id"], "L", answer)
        sid2 = answer["session_id"]
        self.assertNotEqual(sid2, sid)
        self.assertEqual(answer["session_id"], answer["payload"]["session_id"])
        self.assertEqual(answer["payload"]["seller_id"], seller_id)
        # Errors echo the session id too.
        await self.err(self.s, "Nope", {}, sid, "UNKNOWN_API")
        await self.err(self.s, "Nope", {}, "not-a-session", "UNKNOWN_API")
        await self.err(self.s, "GetSellerRating", {}, "not-a-session", "INVALID_SESSION")
        await self.err(self.s, "ChangeItemPrice", {"item_id": "1-999", "price": 1}, sid, "NOT_FOUND")
        await self.err(self.s, "Login", {"username": "nobody", "password": "x-passphrase"}, None, "INVALID_CREDENTIALS")
        out = await self.ok(self.s, "Logout", {}, sid)
        self.assertEqual(out, {})
        await self.ok(self.s, "GetSellerRating", {}, sid2)
        bsid, buyer_id, _ = await self.buyer()
        self.assertIsInstance(bsid, str)
        await self.err(self.b, "GetItem", {"item_id": "1-999"}, bsid, "NOT_FOUND")
        await self.err(self.b, "MakePurchase", dict(CARD), bsid, "EMPTY_CART")
        await self.err(self.b, "AddItemToCart", {"item_id": "1-999", "quantity": 0}, bsid, "BAD_REQUEST")
        out = await self.ok(self.b, "Logout", {}, bsid)
        self.assertEqual(out, {})

    async def test_malformed_envelopes(self):
        """Envelope malformed (a field missing or of the wrong type):
        BAD_REQUEST, connection kept."""
        await self.up()
        good = {"type": "request", "api": "CreateAccount", "session_id": None,
                "payload": {"username": "env", "password": "pw-passphrase"}}
        cases = [
            {k: v for k, v in good.items() if k != "api"},
            {k: v for k, v in good.items() if k != "type"},
            dict(good, type="response"),
            dict(good, type=None),
            dict(good, api=17),
            dict(good, api=None),
            dict(good, api=["CreateAccount"]),
            dict(good, payload=[1]),
            dict(good, payload="x"),
            dict(good, payload=None),
            dict(good, session_id=17),
            dict(good, session_id={"id": "x"}),
        ]
        for client in (self.s, self.b):
            for i, case in enumerate(cases):
                case = dict(case, request_id=i)
                answer = await wait(client.send_frame(json.dumps(case).encode()))
                self.check_error(answer, "BAD_REQUEST")
                self.assertEqual(answer.get("request_id"), i, (case, answer))
            self.assertTrue(client.transport.connected)

    async def test_unknown_api(self):
        await self.up()
        for api in ("Nope", "SearchItemsForSale", "AddItemToCart", "MakePurchase",
                    "GetBuyerPurchases", "createaccount"):
            await self.err(self.s, api, {}, None, "UNKNOWN_API")
        for api in ("Nope", "RegisterItemForSale", "ChangeItemPrice",
                    "UpdateUnitsForSale", "DisplayItemsForSale", "AuthorizePayment"):
            await self.err(self.b, api, {}, None, "UNKNOWN_API")
        # AMBIGUOUS: an empty api name is a malformed envelope or no such API.
        answer = await wait(self.s.request("", {}))
        self.assertIn(answer["error"]["code"], ("BAD_REQUEST", "UNKNOWN_API"), answer)

    async def test_not_logged_in_every_session_api(self):
        await self.up()
        for api, payload in SELLER_SESSION_APIS.items():
            await self.err(self.s, api, payload, None, "NOT_LOGGED_IN")
        for api, payload in BUYER_SESSION_APIS.items():
            await self.err(self.b, api, payload, None, "NOT_LOGGED_IN")

    async def test_missing_session_id_field(self):
        """AMBIGUOUS: a request without the session_id field at all (rather
        than null) is either a malformed envelope or no session."""
        await self.up()
        body = json.dumps({"type": "request", "api": "DisplayCart", "payload": {}}).encode()
        answer = await wait(self.b.send_frame(body))
        self.assertEqual(answer["type"], "error", answer)
        self.assertIn(answer["error"]["code"], ("BAD_REQUEST", "NOT_LOGGED_IN"), answer)

    async def test_invalid_session_every_session_api(self):
        """Unknown, logged-out, and other-role session ids: INVALID_SESSION."""
        await self.up()
        ssid, _ = await self.seller(username="sel")
        bsid, _, _ = await self.buyer(username="buy")
        old_s = (await self.ok(self.s, "Login", {"username": "sel", "password": "pw-passphrase"}))["session_id"]
        await self.ok(self.s, "Logout", {}, old_s)
        old_b = await self.login_buyer("buy")
        await self.ok(self.b, "Logout", {}, old_b)
        for bogus in ("nope", old_s, bsid, ssid + "x", ""):
            for api, payload in SELLER_SESSION_APIS.items():
                await self.err(self.s, api, payload, bogus, "INVALID_SESSION")
        for bogus in ("nope", old_b, ssid):
            for api, payload in BUYER_SESSION_APIS.items():
                await self.err(self.b, api, payload, bogus, "INVALID_SESSION")


# ======================================================================= values


@on_both_layouts
class Values(Conformance):
    async def test_item_values(self):
        """The value rules of items; one seller and one buyer for all the
        checks (password hashing is what costs time in these tests)."""
        await self.up()
        sid, seller_id = await self.seller()
        bsid, _, _ = await self.buyer()
        for name in (
            "values_outside_any_column",
            "two_decimal_prices_that_binary_floats_cannot_hold",
            "non_ascii_lengths_count_characters",
            "register_item_values",
            "register_item_rejections",
            "request_quantities_and_prices",
            "malformed_item_ids",
            "item_id_with_wrong_category_is_not_found",
            "prices_add_up_to_two_decimals",
        ):
            await getattr(self, "check_" + name)(sid, seller_id, bsid)

    async def test_accounts(self):
        """username 1-32 characters, no white space, unique per role;
        password 1-128; name 1-32, optional, default the username, need not
        be unique."""
        await self.up()
        ids = {}
        for client, role in ((self.s, "seller_id"), (self.b, "buyer_id")):
            # session_id is echoed even on an API that needs none.
            created = await self.ok(client, "CreateAccount", {"username": "u" * 32, "password": "p" * 128,
                                                              "name": "ñ" * 32}, "whatever")
            self.assertEqual(set(created), {role})
            await self.ok(client, "CreateAccount", {"username": "é" * 32, "password": "p-passphrase"})
            for username in ("", "u" * 33, "é" * 33, "a b", "a\tb", " a", "a\n", "a\u00a0b", "a\u3000b"):
                await self.bad(client, "CreateAccount", {"username": username, "password": "p-passphrase"}, None, "username")
            for password in ("", "p" * 129):
                await self.bad(client, "CreateAccount", {"username": "okname", "password": password}, None, "password")
            for name in ("", "n" * 33, 5):
                await self.bad(client, "CreateAccount", {"username": "okname", "password": "p-passphrase", "name": name}, None, "name")
            await self.bad(client, "CreateAccount", {"password": "p-passphrase"}, None, "username")
            await self.bad(client, "CreateAccount", {"username": "okname"}, None, "password")
            await self.bad(client, "CreateAccount", {"username": 5, "password": "p-passphrase"}, None, "username")
            await self.bad(client, "CreateAccount", {"username": "okname", "password": 5}, None, "password")
            await self.bad(client, "Login", {"password": "p-passphrase"}, None, "username")
            await self.bad(client, "Login", {"username": "okname"}, None, "password")
            await self.err(client, "CreateAccount", {"username": "u" * 32, "password": "q-passphrase"}, None, "USERNAME_TAKEN")
            await self.err(client, "Login", {"username": "é" * 32, "password": "wrong"}, None, "INVALID_CREDENTIALS")
            await self.err(client, "Login", {"username": "ghost", "password": "p-passphrase"}, None, "INVALID_CREDENTIALS")
            ids[role] = await self.ok(client, "Login", {"username": "é" * 32, "password": "p-passphrase"})
        # The same username under the other role is an account of its own.
        await self.err(self.b, "Login", {"username": "u" * 32, "password": "p-passphrase"}, None, "INVALID_CREDENTIALS")
        ssid, seller_id = ids["seller_id"]["session_id"], ids["seller_id"]["seller_id"]
        bsid = ids["buyer_id"]["session_id"]
        rating = self.check_rating(await self.ok(self.s, "GetSellerRating", {}, ssid))
        self.assertEqual(rating, {"seller_id": seller_id, "name": "é" * 32, "thumbs_up": 0,
                                  "thumbs_down": 0, "items_sold": 0})
        self.assertEqual(rating, await self.ok(self.b, "GetSellerRating", {"seller_id": seller_id}, bsid))
        # Names need not be unique.
        other, other_id = await self.seller(username="named", name="ñ" * 32)
        rating = self.check_rating(await self.ok(self.s, "GetSellerRating", {}, other))
        self.assertEqual((rating["name"], rating["seller_id"]), ("ñ" * 32, other_id))
        # The seller service answers for this session's seller, whatever else
        # the payload says.
        answer = await wait(self.s.request("GetSellerRating", {"seller_id": seller_id}, session_id=other))
        if answer["type"] == "response":
            self.assertEqual(answer["payload"]["seller_id"], other_id, answer)

    async def check_values_outside_any_column(self, sid, seller_id, bsid):
        """Values PROTOCOL.md sets no upper bound for are either accepted or
        BAD_REQUEST; never INTERNAL."""
        base = dict(item_name="thing", category=1, keywords=["a"], condition="new", price=1, quantity=1)
        cases = [("quantity", 10 ** 30), ("quantity", 2 ** 31), ("category", 10 ** 30), ("category", 2 ** 31),
                 ("price", 1e300), ("price", 10 ** 30), ("price", 1e16)]
        for field, value in cases:
            answer = await wait(self.s.request("RegisterItemForSale", dict(base, **{field: value}), session_id=sid))
            if answer["type"] == "error":
                self.check_error(answer, "BAD_REQUEST")
                self.assertIn(field, answer["error"]["message"])
        for payload in ({"category": 10 ** 30, "keywords": []}, {"category": 1, "keywords": [], "offset": 10 ** 30},
                        {"category": 1, "keywords": [], "limit": 10 ** 30}):
            answer = await wait(self.b.request("SearchItemsForSale", payload, session_id=bsid))
            if answer["type"] == "error":
                self.check_error(answer, "BAD_REQUEST")
        for payload in ({"item_id": "1-" + "9" * 40}, {"item_id": "9" * 40 + "-1"}):
            answer = await wait(self.b.request("GetItem", payload, session_id=bsid))
            self.assertEqual(answer["type"], "error", answer)
            self.assertIn(answer["error"]["code"], ("BAD_REQUEST", "NOT_FOUND"), answer)
        answer = await wait(self.b.request("GetSellerRating", {"seller_id": 10 ** 30}, session_id=bsid))
        self.assertEqual(answer["type"], "error", answer)
        self.assertIn(answer["error"]["code"], ("BAD_REQUEST", "NOT_FOUND"), answer)

    async def check_two_decimal_prices_that_binary_floats_cannot_hold(self, sid, seller_id, bsid):
        """"at most 2 decimal places" is about the JSON number: 0.29 or 4.35
        have 2, however a binary float stores them."""
        prices = [0.29, 0.57, 1.13, 1.15, 4.35, 8.2, 9.95, 19.99, 0.07, 1234567.89, 99999.99]
        item = await self.item(sid, price=0.01)
        for price in prices:
            got = self.check_item(await self.ok(self.s, "ChangeItemPrice", {"item_id": item, "price": price}, sid))
            self.assertEqual(got["price"], price)
        for price in (2.675, 0.001, 1.005, 4.351):
            await self.bad(self.s, "ChangeItemPrice", {"item_id": item, "price": price}, sid, "price")
        await self.item(sid, price=0.29)

    async def check_non_ascii_lengths_count_characters(self, sid, seller_id, bsid):
        item = await self.item(sid, item_name="ü" * 32, category=11, keywords=["éééééééé", "日本語"])
        got = await self.get(bsid, item)
        self.assertEqual(got["item_name"], "ü" * 32)
        self.assertEqual(sorted(got["keywords"]), sorted(["éééééééé", "日本語"]))
        await self.bad(self.s, "RegisterItemForSale", dict(item_name="ü" * 33, category=1, keywords=[],
                       condition="new", price=1, quantity=1), sid, "item_name")
        await self.bad(self.s, "RegisterItemForSale", dict(item_name="x", category=1, keywords=["ééééééééé"],
                       condition="new", price=1, quantity=1), sid, "keywords")
        found = await self.search(bsid, 11, ["ÉÉÉÉÉÉÉÉ"])
        self.assertEqual([i["item_id"] for i in found], [item])

    async def check_register_item_values(self, sid, seller_id, bsid):
        a = await self.item(sid, category=3, item_name="n" * 32, condition="NEW", price=12.34,
                            keywords=["Red", "red", "RED", "blue", "blue"])
        b = await self.item(sid, category=4, condition="Used", price=0, keywords=[])
        c = await self.item(sid, category=0, price=7.5, keywords=["abcdefgh", "a", "b", "c", "d"])
        numbers = [ITEM_ID.match(x).group(2) for x in (a, b, c)]
        self.assertEqual(len(set(numbers)), 3, numbers)
        item = await self.get(bsid, a)
        self.assertEqual(item["item_id"], a)
        self.assertEqual(item["category"], 3)
        self.assertEqual(item["item_name"], "n" * 32)
        self.assertEqual(item["condition"], "new")
        self.assertEqual(item["price"], 12.34)
        self.assertEqual(item["quantity"], 5)
        self.assertEqual(item["seller_id"], seller_id)
        self.assertEqual((item["thumbs_up"], item["thumbs_down"]), (0, 0))
        # keywords matched without regard to case, duplicates dropped.
        # AMBIGUOUS: which spelling of a case-duplicate is kept.
        self.assertEqual(len(item["keywords"]), 2, item)
        self.assertEqual({k.lower() for k in item["keywords"]}, {"red", "blue"})
        item = await self.get(bsid, b)
        self.assertEqual(item["condition"], "used")
        self.assertEqual(item["price"], 0)
        self.assertEqual(item["keywords"], [])
        item = await self.get(bsid, c)
        self.assertEqual(item["category"], 0)
        self.assertEqual(item["price"], 7.5)
        self.assertEqual(sorted(item["keywords"]), ["a", "abcdefgh", "b", "c", "d"])

    async def check_register_item_rejections(self, sid, seller_id, bsid):
        before = await self.ok(self.s, "DisplayItemsForSale", {}, sid)
        base = dict(item_name="thing", category=1, keywords=["a"], condition="new", price=1, quantity=1)
        cases = [
            ("item_name", ""), ("item_name", "n" * 33), ("item_name", 5), ("item_name", None),
            ("category", -1), ("category", "1"), ("category", True), ("category", 1.5), ("category", None),
            ("keywords", ["a", "b", "c", "d", "e", "f"]), ("keywords", [""]), ("keywords", ["abcdefghi"]),
            ("keywords", "a"), ("keywords", [1]), ("keywords", None),
            ("condition", "broken"), ("condition", ""), ("condition", 1), ("condition", None),
            ("price", -1), ("price", -0.01), ("price", 1.234), ("price", 0.001), ("price", "1"),
            ("price", True), ("price", None),
            ("quantity", 0), ("quantity", -1), ("quantity", 1.5), ("quantity", "1"), ("quantity", True),
            ("quantity", None),
        ]
        for field, value in cases:
            await self.bad(self.s, "RegisterItemForSale", dict(base, **{field: value}), sid, field)
        for field in base:
            payload = {k: v for k, v in base.items() if k != field}
            await self.bad(self.s, "RegisterItemForSale", payload, sid, field)
        after = await self.ok(self.s, "DisplayItemsForSale", {}, sid)
        self.assertEqual(after, before)

    async def check_request_quantities_and_prices(self, sid, seller_id, bsid):
        """quantity >= 1 and price rules in every request that carries them."""
        item = await self.item(sid)
        for quantity in (0, -1, 1.5, "1", True, None):
            await self.bad(self.s, "UpdateUnitsForSale", {"item_id": item, "quantity": quantity}, sid, "quantity")
            await self.bad(self.b, "AddItemToCart", {"item_id": item, "quantity": quantity}, bsid, "quantity")
            await self.bad(self.b, "RemoveItemFromCart", {"item_id": item, "quantity": quantity}, bsid, "quantity")
        for price in (-1, 1.001, "2", True, None):
            await self.bad(self.s, "ChangeItemPrice", {"item_id": item, "price": price}, sid, "price")
        for api in ("GetItem",):
            await self.bad(self.b, api, {"item_id": 5}, bsid, "item_id")
            await self.bad(self.b, api, {}, bsid, "item_id")
        await self.bad(self.s, "ChangeItemPrice", {"price": 1}, sid, "item_id")
        await self.bad(self.s, "UpdateUnitsForSale", {"quantity": 1}, sid, "item_id")
        await self.bad(self.b, "AddItemToCart", {"quantity": 1}, bsid, "item_id")
        await self.bad(self.b, "ProvideFeedback", {"item_id": item, "thumbs_up": 1}, bsid, "thumbs_up")
        await self.bad(self.b, "ProvideFeedback", {"item_id": item}, bsid, "thumbs_up")
        await self.bad(self.b, "GetSellerRating", {}, bsid, "seller_id")
        await self.bad(self.b, "SearchItemsForSale", {"category": 1, "keywords": ["a"] * 6}, bsid, "keywords")
        await self.bad(self.b, "SearchItemsForSale", {"category": 1, "keywords": ["abcdefghi"]}, bsid, "keywords")
        await self.bad(self.b, "SearchItemsForSale", {"category": -1, "keywords": []}, bsid, "category")
        await self.bad(self.b, "SearchItemsForSale", {"keywords": []}, bsid, "category")
        await self.bad(self.b, "SearchItemsForSale", {"category": 1}, bsid, "keywords")
        await self.bad(self.b, "SearchItemsForSale", {"category": 1, "keywords": "a"}, bsid, "keywords")
        await self.bad(self.b, "MakePurchase", dict(CARD, card_number=4111111111111111), bsid, "card_number")
        await self.bad(self.b, "MakePurchase", dict(CARD, security_code=123), bsid, "security_code")
        await self.bad(self.b, "MakePurchase", dict(CARD, expiration_date=1230), bsid, "expiration_date")
        await self.bad(self.b, "MakePurchase", dict(CARD, name=None), bsid, "name")
        await self.bad(self.b, "SearchItemsForSale", {"category": "1", "keywords": []}, bsid, "category")
        await self.bad(self.b, "SearchItemsForSale", {"category": 1, "keywords": [], "limit": "5"}, bsid, "limit")
        await self.bad(self.b, "SearchItemsForSale", {"category": 1, "keywords": [], "offset": -1}, bsid, "offset")
        # nothing changed
        got = await self.get(bsid, item)
        self.assertEqual((got["price"], got["quantity"]), (10, 5))
        self.assertEqual((await self.cart(bsid))["cart"], [])

    async def check_malformed_item_ids(self, sid, seller_id, bsid):
        """AMBIGUOUS: an item_id that is not "<category>-<number>" is either
        outside its limits (BAD_REQUEST) or names no item (NOT_FOUND)."""
        for item_id in ("abc", "", "1-", "-1", "1-2-3", "1_2", "x-1"):
            answer = await wait(self.b.request("GetItem", {"item_id": item_id}, session_id=bsid))
            self.assertEqual(answer["type"], "error", answer)
            self.assertIn(answer["error"]["code"], ("BAD_REQUEST", "NOT_FOUND"), answer)
            answer = await wait(self.s.request("ChangeItemPrice", {"item_id": item_id, "price": 1}, session_id=sid))
            self.assertEqual(answer["type"], "error", answer)
            self.assertIn(answer["error"]["code"], ("BAD_REQUEST", "NOT_FOUND"), answer)

    async def check_item_id_with_wrong_category_is_not_found(self, sid, seller_id, bsid):
        """An item_id is "<category>-<number>" where the category is the
        item's own: the right number under another category names no item."""
        item = await self.item(sid, category=3)
        number = ITEM_ID.match(item).group(2)
        wrong = f"4-{number}"
        await self.err(self.b, "GetItem", {"item_id": wrong}, bsid, "NOT_FOUND")
        await self.err(self.b, "AddItemToCart", {"item_id": wrong, "quantity": 1}, bsid, "NOT_FOUND")
        await self.err(self.s, "ChangeItemPrice", {"item_id": wrong, "price": 1}, sid, "NOT_FOUND")
        await self.err(self.s, "UpdateUnitsForSale", {"item_id": wrong, "quantity": 1}, sid, "NOT_FOUND")

    async def check_prices_add_up_to_two_decimals(self, sid, seller_id, bsid):
        """Totals of prices with 2 decimals are exact (no binary float noise)."""
        a = await self.item(sid, price=0.1, quantity=10)
        b = await self.item(sid, price=0.2, quantity=10)
        c = await self.item(sid, price=19.99, quantity=10)
        await self.add(bsid, a, 1)
        cart = await self.add(bsid, b, 1)
        self.assertEqual(cart["total"], 0.3, cart)
        cart = await self.add(bsid, c, 3)
        self.assertEqual(cart["total"], 60.27, cart)
        answer = await self.purchase(bsid)
        self.assertEqual(answer["total"], 60.27, answer)


# ======================================================================= seller


@on_both_layouts
class SellerApis(Conformance):
    async def test_item_management(self):
        await self.up()
        sid, seller_id = await self.seller()
        other, _ = await self.seller()
        a = await self.item(sid, item_name="lamp", category=2, keywords=["light"], condition="used",
                            price=5.5, quantity=3)
        b = await self.item(sid, quantity=1)
        mine = await self.item(other)
        item = self.check_item(await self.ok(self.s, "ChangeItemPrice", {"item_id": a, "price": 7.25}, sid))
        self.assertEqual(item, {"item_id": a, "item_name": "lamp", "category": 2, "keywords": ["light"],
                                "condition": "used", "price": 7.25, "price_decimal": "7.25", "quantity": 3, "seller_id": seller_id,
                                "thumbs_up": 0, "thumbs_down": 0})
        item = self.check_item(await self.ok(self.s, "UpdateUnitsForSale", {"item_id": a, "quantity": 2}, sid))
        self.assertEqual((item["item_id"], item["quantity"], item["price"]), (a, 1, 7.25))
        # Taking off more than are on sale: BAD_REQUEST, nothing changed.
        await self.bad(self.s, "UpdateUnitsForSale", {"item_id": a, "quantity": 2}, sid, "quantity")
        item = self.check_item(await self.ok(self.s, "UpdateUnitsForSale", {"item_id": b, "quantity": 1}, sid))
        self.assertEqual(item["quantity"], 0)
        await self.bad(self.s, "UpdateUnitsForSale", {"item_id": b, "quantity": 1}, sid, "quantity")
        # Another seller's item: FORBIDDEN; unknown item: NOT_FOUND.
        await self.err(self.s, "ChangeItemPrice", {"item_id": mine, "price": 1}, sid, "FORBIDDEN")
        await self.err(self.s, "UpdateUnitsForSale", {"item_id": mine, "quantity": 1}, sid, "FORBIDDEN")
        await self.err(self.s, "ChangeItemPrice", {"item_id": "2-999999", "price": 1}, sid, "NOT_FOUND")
        await self.err(self.s, "UpdateUnitsForSale", {"item_id": "2-999999", "quantity": 1}, sid, "NOT_FOUND")
        # DisplayItemsForSale: every item of this seller, sold-out ones included.
        shown = await self.ok(self.s, "DisplayItemsForSale", {}, sid)
        self.assertEqual(set(shown), {"items"})
        for item in shown["items"]:
            self.check_item(item)
        by_id = {item["item_id"]: item for item in shown["items"]}
        self.assertEqual(set(by_id), {a, b})
        self.assertEqual(by_id[a]["quantity"], 1)
        self.assertEqual(by_id[b]["quantity"], 0)
        shown = await self.ok(self.s, "DisplayItemsForSale", {}, other)
        self.assertEqual([item["item_id"] for item in shown["items"]], [mine])
        self.assertEqual(shown["items"][0]["price"], 10)


# ======================================================================== buyer


@on_both_layouts
class Sessions(Conformance):
    async def test_several_sessions_logout_ends_only_one(self):
        await self.up()
        ssid1, _ = await self.seller(username="multi")
        login = await self.ok(self.s, "Login", {"username": "multi", "password": "pw-passphrase"})
        ssid2 = login["session_id"]
        self.assertNotEqual(ssid1, ssid2)
        await self.ok(self.s, "Logout", {}, ssid1)
        await self.err(self.s, "GetSellerRating", {}, ssid1, "INVALID_SESSION")
        await self.ok(self.s, "GetSellerRating", {}, ssid2)
        await self.err(self.s, "Logout", {}, ssid1, "INVALID_SESSION")
        bsid1, _, name = await self.buyer()
        bsid2 = await self.login_buyer(name)
        self.assertNotEqual(bsid1, bsid2)
        await self.ok(self.b, "Logout", {}, bsid2)
        await self.cart(bsid1)
        await self.err(self.b, "DisplayCart", {}, bsid2, "INVALID_SESSION")
        # A session works on any connection.
        other = await self.connect("buyer")
        answer = await wait(other.request("DisplayCart", {}, session_id=bsid1))
        self.assertEqual(answer["type"], "response", answer)
        # Cross-role: a buyer session is invalid on the seller service and
        # the other way round.
        await self.err(self.s, "GetSellerRating", {}, bsid1, "INVALID_SESSION")
        await self.err(self.b, "DisplayCart", {}, ssid2, "INVALID_SESSION")
        await self.err(self.b, "Logout", {}, ssid2, "INVALID_SESSION")
        await self.err(self.s, "Logout", {}, bsid1, "INVALID_SESSION")
        await self.ok(self.s, "GetSellerRating", {}, ssid2)
        await self.cart(bsid1)

    async def test_session_survives_restart_and_works_on_another_instance(self):
        await self.up()
        ssid, _ = await self.seller()
        item = await self.item(ssid)
        bsid, _, _ = await self.buyer()
        await self.add(bsid, item, 2)
        await self.market.restart()
        self.s = await self.connect("seller")
        self.b = await self.connect("buyer")
        await self.ok(self.s, "GetSellerRating", {}, ssid)
        cart = await self.cart(bsid)
        self.assertEqual(self.lines(cart), {item: 2})
        second = RunningMarketplace(self.market.settings, ("buyer",))
        await second.start()
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(second.stop()))
        other = await self.connect("buyer", second)
        answer = await wait(other.request("DisplayCart", {}, session_id=bsid))
        self.assertEqual(answer["type"], "response", answer)
        self.assertEqual(self.lines(answer["payload"]), {item: 2})

    async def test_session_expiry(self):
        """A session ends after the configured time *without a request*; the
        active cart is dropped, the saved cart stays."""
        await self.up(session_timeout=2)
        ssid, _ = await self.seller()
        item = await self.item(ssid)
        bsid, _, name = await self.buyer()
        await self.add(bsid, item, 1)
        await self.ok(self.b, "SaveCart", {}, bsid)
        await self.add(bsid, item, 1)
        for _ in range(3):
            await _later(0.8)
            await self.cart(bsid)
        await _later(3.2)
        await self.err(self.b, "DisplayCart", {}, bsid, "INVALID_SESSION")
        await self.err(self.s, "GetSellerRating", {}, ssid, "INVALID_SESSION")
        bsid2 = await self.login_buyer(name)
        self.assertEqual(self.lines(await self.cart(bsid2)), {item: 1})

    async def test_expired_sessions_on_every_api(self):
        """An ended session is INVALID_SESSION on every API, and its
        effects are gone (nothing added, nothing changed)."""
        await self.up(session_timeout=2)
        ssid, _ = await self.seller()
        item = await self.item(ssid, keywords=["a"])
        bsid, _, _ = await self.buyer()
        await _later(3.2)
        seller_apis = dict(SELLER_SESSION_APIS)
        seller_apis["ChangeItemPrice"] = {"item_id": item, "price": 99}
        seller_apis["UpdateUnitsForSale"] = {"item_id": item, "quantity": 1}
        buyer_apis = dict(BUYER_SESSION_APIS)
        for api in ("GetItem", "AddItemToCart", "RemoveItemFromCart", "ProvideFeedback"):
            buyer_apis[api] = dict(buyer_apis[api], item_id=item)
        for api, payload in seller_apis.items():
            await self.err(self.s, api, payload, ssid, "INVALID_SESSION")
        for api, payload in buyer_apis.items():
            await self.err(self.b, api, payload, bsid, "INVALID_SESSION")
        fresh, _, _ = await self.buyer()
        got = await self.get(fresh, item)
        self.assertEqual((got["price"], got["quantity"]), (10, 5))

    async def test_failed_logins_are_rate_limited(self):
        """AMBIGUOUS: PROTOCOL.md does not say how many failed logins are too
        many; 12 in a row for one username surely are."""
        await self.up()
        await self.ok(self.b, "CreateAccount", {"username": "victim", "password": "right-passphrase"})
        codes = []
        for _ in range(12):
            answer = await wait(self.b.request("Login", {"username": "victim", "password": "wrong"}))
            self.assertEqual(answer["type"], "error")
            codes.append(answer["error"]["code"])
        self.assertEqual(set(codes), {"INVALID_CREDENTIALS", "RATE_LIMITED"}, codes)
        self.assertEqual(codes[0], "INVALID_CREDENTIALS")
        self.assertEqual(codes[-1], "RATE_LIMITED")


@on_both_layouts
class Carts(Conformance):
    async def test_cart_operations(self):
        await self.up()
        ssid, _ = await self.seller()
        a = await self.item(ssid, item_name="apple", price=2.5, quantity=5)
        b = await self.item(ssid, item_name="pear", price=1, quantity=2)
        gone = await self.item(ssid, quantity=1)
        await self.ok(self.s, "UpdateUnitsForSale", {"item_id": gone, "quantity": 1}, ssid)
        bsid, _, _ = await self.buyer()
        cart = await self.cart(bsid)
        self.assertEqual(cart, {"cart": [], "total": 0, "total_decimal": "0.00"})
        cart = await self.add(bsid, a, 3)
        self.assertEqual(cart, {"cart": [{"item_id": a, "item_name": "apple", "quantity": 3, "price": 2.5,
                                          "price_decimal": "2.50", "subtotal_decimal": "7.50"}],
                                "total": 7.5, "total_decimal": "7.50"})
        # Would then hold more units than are on sale: OUT_OF_STOCK, no change.
        await self.err(self.b, "AddItemToCart", {"item_id": a, "quantity": 3}, bsid, "OUT_OF_STOCK")
        await self.err(self.b, "AddItemToCart", {"item_id": gone, "quantity": 1}, bsid, "OUT_OF_STOCK")
        await self.err(self.b, "AddItemToCart", {"item_id": b, "quantity": 3}, bsid, "OUT_OF_STOCK")
        self.assertEqual(self.lines(await self.cart(bsid)), {a: 3})
        cart = await self.add(bsid, a, 2)
        self.assertEqual(self.lines(cart), {a: 5})
        cart = await self.add(bsid, b, 2)
        self.assertEqual(self.lines(cart), {a: 5, b: 2})
        self.assertEqual(cart["total"], 14.5)
        await self.err(self.b, "AddItemToCart", {"item_id": "1-999999", "quantity": 1}, bsid, "NOT_FOUND")
        # Units are not reserved: another buyer may put all of them in a cart.
        other, _, _ = await self.buyer()
        self.assertEqual(self.lines(await self.add(other, a, 5)), {a: 5})
        # RemoveItemFromCart
        cart = self.check_cart(await self.ok(self.b, "RemoveItemFromCart", {"item_id": a, "quantity": 2}, bsid))
        self.assertEqual(self.lines(cart), {a: 3, b: 2})
        cart = self.check_cart(await self.ok(self.b, "RemoveItemFromCart", {"item_id": b, "quantity": 5}, bsid))
        self.assertEqual(self.lines(cart), {a: 3})
        await self.err(self.b, "RemoveItemFromCart", {"item_id": b, "quantity": 1}, bsid, "NOT_FOUND")
        await self.err(self.b, "RemoveItemFromCart", {"item_id": "1-999999", "quantity": 1}, bsid, "NOT_FOUND")
        cart = self.check_cart(await self.ok(self.b, "RemoveItemFromCart", {"item_id": a, "quantity": 3}, bsid))
        self.assertEqual(cart, {"cart": [], "total": 0, "total_decimal": "0.00"})

    async def test_saved_and_active_carts(self):
        await self.up()
        ssid, _ = await self.seller()
        a = await self.item(ssid, quantity=10)
        b = await self.item(ssid, quantity=10)
        s1, _, name = await self.buyer()
        await self.add(s1, a, 1)
        # Not saved yet: a new session starts from the (empty) saved cart.
        s2 = await self.login_buyer(name)
        self.assertEqual(self.lines(await self.cart(s2)), {})
        saved = self.check_cart(await self.ok(self.b, "SaveCart", {}, s1))
        self.assertEqual(self.lines(saved), {a: 1})
        # s2's active cart was copied at its Login; SaveCart elsewhere does not
        # change it.
        self.assertEqual(self.lines(await self.cart(s2)), {})
        s3 = await self.login_buyer(name)
        self.assertEqual(self.lines(await self.cart(s3)), {a: 1})
        # Active carts are per session.
        await self.add(s3, b, 2)
        self.assertEqual(self.lines(await self.cart(s1)), {a: 1})
        self.assertEqual(self.lines(await self.cart(s3)), {a: 1, b: 2})
        # ClearCart empties the active cart only.
        cleared = self.check_cart(await self.ok(self.b, "ClearCart", {}, s3))
        self.assertEqual(cleared, {"cart": [], "total": 0, "total_decimal": "0.00"})
        self.assertEqual(self.lines(await self.cart(s3)), {})
        s4 = await self.login_buyer(name)
        self.assertEqual(self.lines(await self.cart(s4)), {a: 1})
        # Logout drops the active cart; the saved cart stays.
        await self.add(s1, b, 3)
        await self.ok(self.b, "Logout", {}, s1)
        s5 = await self.login_buyer(name)
        self.assertEqual(self.lines(await self.cart(s5)), {a: 1})
        # Saving an empty cart empties the saved cart.
        await self.ok(self.b, "SaveCart", {}, s3)
        s6 = await self.login_buyer(name)
        self.assertEqual(self.lines(await self.cart(s6)), {})
        # Another buyer's saved cart is their own.
        t1, _, _ = await self.buyer()
        self.assertEqual(self.lines(await self.cart(t1)), {})


@on_both_layouts
class Search(Conformance):
    async def test_case_and_paging(self):
        await self.up()
        ssid, _ = await self.seller()
        bsid, _, _ = await self.buyer()
        await self.check_name_match_ignores_case(ssid, bsid)
        await self.check_limit_default_and_max(ssid, bsid)

    async def test_matching_score_and_order(self):
        await self.up()
        ssid, seller_id = await self.seller()
        cat = 7
        A = await self.item(ssid, category=cat, item_name="red shoe", keywords=["red", "shoe"], price=10)
        B = await self.item(ssid, category=cat, item_name="plain", keywords=["red", "shoe", "x"], price=50)
        C = await self.item(ssid, category=cat, item_name="shoe rack", keywords=["shoe"], price=20)
        D = await self.item(ssid, category=cat, item_name="thing", keywords=["shoe"], price=5)
        E = await self.item(ssid, category=cat, item_name="thing", keywords=["SHOE"], price=5)
        F = await self.item(ssid, category=cat, item_name="red car", keywords=["car"], price=1)
        G = await self.item(ssid, category=cat, item_name="red shoe", keywords=["red"], price=1, quantity=2)
        H = await self.item(ssid, category=cat + 1, item_name="red shoe", keywords=["red", "shoe"], price=1)
        I = await self.item(ssid, category=cat, item_name="cheap", keywords=["shoe"], price=1)
        J = await self.item(ssid, category=cat, item_name="thing", keywords=["shoe"], price=100, quantity=5)
        K = await self.item(ssid, category=cat, item_name="thing", keywords=["shoe"], price=0, quantity=5)
        await self.ok(self.s, "UpdateUnitsForSale", {"item_id": G, "quantity": 2}, ssid)
        bsid, _, _ = await self.buyer()
        await self.add(bsid, J, 1)
        await self.add(bsid, K, 1)
        await self.purchase(bsid)
        up = await self.ok(self.b, "ProvideFeedback", {"item_id": J, "thumbs_up": True}, bsid)
        self.assertEqual(up, {"item_id": J, "thumbs_up": 1, "thumbs_down": 0})
        down = await self.ok(self.b, "ProvideFeedback", {"item_id": K, "thumbs_up": False}, bsid)
        self.assertEqual(down, {"item_id": K, "thumbs_up": 0, "thumbs_down": 1})

        def id_key(item_id):
            return int(ITEM_ID.match(item_id).group(2))

        d_e = sorted([D, E], key=id_key)
        # AMBIGUOUS: "then item_id" may be string or numeric order; the two
        # agree when the numbers have the same number of digits.
        if len(str(id_key(D))) != len(str(id_key(E))):
            d_e = None
        found = await self.search(bsid, cat, ["red", "shoe"])
        ids = [item["item_id"] for item in found]
        scores = {item["item_id"]: item["score"] for item in found}
        self.assertEqual(set(ids), {A, B, C, D, E, I, J, K}, found)
        self.assertEqual(scores, {A: 3.0, B: 2.0, C: 1.5, D: 1.0, E: 1.0, I: 1.0, J: 1.0, K: 1.0})
        self.assertEqual(ids[:5], [A, B, C, J, I])
        self.assertEqual(ids[-1], K)
        if d_e is not None:
            self.assertEqual(ids[5:7], d_e)
        for item in found:
            self.assertEqual(item["seller_id"], seller_id)
            self.assertGreater(item["quantity"], 0)
            self.assertEqual(item["category"], cat)
        # Keywords match without regard to case; duplicates dropped.
        again = await self.search(bsid, cat, ["SHOE", "shoe", "Red"])
        self.assertEqual(set(i["item_id"] for i in again), set(ids))
        by_id = {item["item_id"]: item["score"] for item in again}
        self.assertEqual(by_id[B], 2.0, again)
        self.assertEqual(by_id[D], 1.0, again)
        # A name match alone is no match.
        found = await self.search(bsid, cat, ["car"])
        self.assertEqual([(i["item_id"], i["score"]) for i in found], [(F, 1.5)])
        found = await self.search(bsid, cat, ["rack"])
        self.assertEqual(found, [])
        # No keywords: every item with units on sale in the category.
        found = await self.search(bsid, cat, [])
        self.assertEqual({i["item_id"] for i in found}, {A, B, C, D, E, F, I, J, K})
        self.assertTrue(all(i["score"] == 0 for i in found), found)
        # ordered by thumbs, then lower price, then item_id
        ids = [i["item_id"] for i in found]
        self.assertEqual(ids[0], J)
        self.assertEqual(ids[-1], K)
        prices = [i["price"] for i in found[1:-1]]
        self.assertEqual(prices, sorted(prices))
        # paging
        page = await self.search(bsid, cat, [], limit=3, offset=2)
        self.assertEqual([i["item_id"] for i in page], ids[2:5])
        page = await self.search(bsid, cat, [], offset=8)
        self.assertEqual([i["item_id"] for i in page], ids[8:])
        self.assertEqual(await self.search(bsid, 99, ["red"]), [])
        self.assertEqual([i["item_id"] for i in await self.search(bsid, cat + 1, ["shoe"])], [H])

    async def check_name_match_ignores_case(self, ssid, bsid):
        """AMBIGUOUS: PROTOCOL.md says keywords are "matched without regard
        to case" but does not say so for the name half of the score."""
        A = await self.item(ssid, category=2, item_name="Red Shoe", keywords=["red"])
        found = await self.search(bsid, 2, ["RED"])
        self.assertEqual([(i["item_id"], i["score"]) for i in found], [(A, 1.5)])

    async def check_limit_default_and_max(self, ssid, bsid):
        frames = []
        for i in range(55):
            frames.append(frame({
                "type": "request", "api": "RegisterItemForSale", "session_id": ssid,
                "payload": {"item_name": f"i{i}", "category": 9, "keywords": ["k"],
                            "condition": "new", "price": i, "quantity": 1},
            }))
        answers = await self.pipeline(self.s, frames)
        self.assertTrue(all(a["type"] == "response" for a in answers), answers)
        self.assertEqual(len(await self.search(bsid, 9, [])), 50)
        self.assertEqual(len(await self.search(bsid, 9, ["k"], limit=500)), 55)
        self.assertEqual(len(await self.search(bsid, 9, ["k"], offset=50)), 5)
        answer = await wait(self.b.request(
            "SearchItemsForSale", {"category": 9, "keywords": [], "limit": 501}, session_id=bsid))
        # AMBIGUOUS: "max 500" may mean refused (BAD_REQUEST) or capped.
        if answer["type"] == "error":
            self.check_error(answer, "BAD_REQUEST")
        else:
            self.assertLessEqual(len(answer["payload"]["items"]), 500)


@on_both_layouts
class Purchases(Conformance):
    async def test_purchase_rules(self):
        """All or nothing, declines, idempotency; one seller and one buyer."""
        await self.up()
        ssid, _ = await self.seller()
        bsid, _, _ = await self.buyer()
        await self.check_all_or_nothing_out_of_stock(ssid, bsid)
        await self.check_declined_card_changes_nothing(ssid, bsid)
        await self.check_idempotency_key(ssid, bsid)
        await self.check_concurrent_repeats_of_one_idempotency_key(ssid, bsid)

    async def test_purchase_happy_path(self):
        await self.up()
        ssid, seller_id = await self.seller()
        a = await self.item(ssid, item_name="apple", price=2.5, quantity=5)
        b = await self.item(ssid, item_name="pear", price=1.25, quantity=2)
        bsid, _, name = await self.buyer()
        await self.err(self.b, "MakePurchase", dict(CARD), bsid, "EMPTY_CART")
        await self.add(bsid, a, 2)
        await self.add(bsid, b, 2)
        await self.ok(self.b, "SaveCart", {}, bsid)
        other_session = await self.login_buyer(name)
        # Price at purchase time is the current price.
        await self.ok(self.s, "ChangeItemPrice", {"item_id": a, "price": 3}, ssid)
        for field in ("name", "card_number", "expiration_date", "security_code"):
            payload = {k: v for k, v in CARD.items() if k != field}
            await self.bad(self.b, "MakePurchase", payload, bsid, field)
        answer = await self.purchase(bsid)
        self.assertEqual(answer["total"], 8.5)
        self.assertEqual(len(answer["items"]), 2, answer)
        # Active and saved carts empty afterwards.
        self.assertEqual(await self.cart(bsid), {"cart": [], "total": 0, "total_decimal": "0.00"})
        self.assertEqual(self.lines(await self.cart(other_session)), {a: 2, b: 2})
        fresh = await self.login_buyer(name)
        self.assertEqual(await self.cart(fresh), {"cart": [], "total": 0, "total_decimal": "0.00"})
        self.assertEqual((await self.get(bsid, a))["quantity"], 3)
        self.assertEqual((await self.get(bsid, b))["quantity"], 0)
        history = await self.purchases(bsid)
        lines = {line["item_id"]: line for line in history["items"]}
        self.assertEqual(set(lines), {a, b})
        self.assertEqual((lines[a]["quantity"], lines[a]["price"], lines[a]["item_name"]), (2, 3, "apple"))
        self.assertEqual((lines[b]["quantity"], lines[b]["price"]), (2, 1.25))
        self.assertEqual({line["purchase_id"] for line in history["items"]}, {answer["purchase_id"]})
        # AMBIGUOUS: items_purchased may count units (4) or lines (2).
        self.assertIn(history["items_purchased"], (2, 4), history)
        rating = self.check_rating(await self.ok(self.s, "GetSellerRating", {}, ssid))
        # AMBIGUOUS: items_sold may count units (4) or lines (2).
        self.assertIn(rating["items_sold"], (2, 4), rating)
        self.assertEqual(
            rating, self.check_rating(await self.ok(self.b, "GetSellerRating", {"seller_id": seller_id}, bsid))
        )
        await self.err(self.b, "GetSellerRating", {"seller_id": 999999}, bsid, "NOT_FOUND")
        # Sold-out item: still shown to its seller, not found by search.
        shown = await self.ok(self.s, "DisplayItemsForSale", {}, ssid)
        self.assertEqual({i["item_id"]: i["quantity"] for i in shown["items"]}, {a: 3, b: 0})
        self.assertEqual([i["item_id"] for i in await self.search(bsid, 1, [])], [a])
        # The other session's cart (copied before) now wants more than is
        # on sale.
        await self.err(self.b, "MakePurchase", dict(CARD), other_session, "OUT_OF_STOCK")

    async def check_all_or_nothing_out_of_stock(self, ssid, bsid):
        await self.ok(self.b, "ClearCart", {}, bsid)
        a = await self.item(ssid, quantity=5)
        b = await self.item(ssid, quantity=2)
        await self.add(bsid, a, 3)
        await self.add(bsid, b, 2)
        await self.ok(self.s, "UpdateUnitsForSale", {"item_id": b, "quantity": 1}, ssid)
        await self.err(self.b, "MakePurchase", dict(CARD), bsid, "OUT_OF_STOCK")
        self.assertEqual((await self.get(bsid, a))["quantity"], 5)
        self.assertEqual((await self.get(bsid, b))["quantity"], 1)
        self.assertEqual((await self.purchases(bsid))["items"], [])
        self.assertEqual(self.lines(await self.cart(bsid)), {a: 3, b: 2})
        rating = await self.ok(self.s, "GetSellerRating", {}, ssid)
        self.assertEqual(rating["items_sold"], 0)

    async def check_declined_card_changes_nothing(self, ssid, bsid):
        await self.ok(self.b, "ClearCart", {}, bsid)
        a = await self.item(ssid, quantity=5)
        await self.add(bsid, a, 2)
        # Well formed (Luhn-valid, MM/YY) but expired.
        await self.err(self.b, "MakePurchase", dict(CARD, expiration_date="01/20"), bsid, "PAYMENT_DECLINED")
        self.assertEqual((await self.get(bsid, a))["quantity"], 5)
        self.assertEqual([l for l in (await self.purchases(bsid))["items"] if l["item_id"] == a], [])
        # AMBIGUOUS: a malformed card is "declined" by the payments service
        # but is also a payload outside its limits.
        for card in (dict(CARD, card_number="4111111111111112"), dict(CARD, expiration_date="13/30")):
            answer = await wait(self.b.request("MakePurchase", card, session_id=bsid))
            self.assertEqual(answer["type"], "error", answer)
            self.assertIn(answer["error"]["code"], ("PAYMENT_DECLINED", "BAD_REQUEST"), answer)
        self.assertEqual((await self.get(bsid, a))["quantity"], 5)
        answer = await self.purchase(bsid)
        self.assertEqual(answer["total"], 20)

    async def check_idempotency_key(self, ssid, bsid):
        await self.ok(self.b, "ClearCart", {}, bsid)
        a = await self.item(ssid, quantity=5, price=4)
        b = await self.item(ssid, quantity=5, price=1)
        await self.add(bsid, a, 2)
        first = await self.purchase(bsid, idempotency_key="key-1")
        again = await self.purchase(bsid, idempotency_key="key-1")
        self.assertEqual(again, first)
        # Even with a new cart, the repeat returns the first answer and buys
        # nothing.
        await self.add(bsid, b, 1)
        again = await self.purchase(bsid, idempotency_key="key-1")
        self.assertEqual(again, first)
        self.assertEqual((await self.get(bsid, a))["quantity"], 3)
        self.assertEqual((await self.get(bsid, b))["quantity"], 5)
        self.assertEqual(self.lines(await self.cart(bsid)), {b: 1})
        history = await self.purchases(bsid)
        self.assertEqual([(l["item_id"], l["quantity"]) for l in history["items"] if l["item_id"] in (a, b)],
                         [(a, 2)])
        # A new key buys again.
        second = await self.purchase(bsid, idempotency_key="key-2")
        self.assertNotEqual(second["purchase_id"], first["purchase_id"])
        self.assertEqual(second["total"], 1)

    async def test_race_for_last_unit(self):
        await self.up()
        ssid, _ = await self.seller()
        a = await self.item(ssid, quantity=1)
        sessions = []
        for _ in range(2):
            bsid, _, _ = await self.buyer()
            await self.add(bsid, a, 1)
            sessions.append(bsid)
        clients = [await self.connect("buyer") for _ in sessions]
        answers = await wait(defer.gatherResults([
            c.request("MakePurchase", dict(CARD), session_id=s) for c, s in zip(clients, sessions)
        ]), 30)
        kinds = sorted(a["type"] for a in answers)
        self.assertEqual(kinds, ["error", "response"], answers)
        for answer in answers:
            if answer["type"] == "error":
                self.assertEqual(answer["error"]["code"], "OUT_OF_STOCK", answer)
        self.assertEqual((await self.get(sessions[0], a))["quantity"], 0)

    async def check_concurrent_repeats_of_one_idempotency_key(self, ssid, bsid):
        await self.ok(self.b, "ClearCart", {}, bsid)
        a = await self.item(ssid, quantity=5)
        await self.add(bsid, a, 2)
        clients = [await self.connect("buyer") for _ in range(3)]
        answers = await wait(defer.gatherResults([
            c.request("MakePurchase", dict(CARD, idempotency_key="same"), session_id=bsid) for c in clients
        ]), 30)
        for answer in answers:
            self.assertEqual(answer["type"], "response", answers)
            self.assertEqual(answer["payload"], answers[0]["payload"])
        self.assertEqual((await self.get(bsid, a))["quantity"], 3)
        self.assertEqual(len([l for l in (await self.purchases(bsid))["items"] if l["item_id"] == a]), 1)

    async def test_payments_unreachable_is_unavailable(self):
        await self.up(services=("seller", "buyer"))
        ssid, _ = await self.seller()
        a = await self.item(ssid, quantity=5)
        bsid, _, name = await self.buyer()
        await self.add(bsid, a, 2)
        await self.ok(self.b, "SaveCart", {}, bsid)
        await self.err(self.b, "MakePurchase", dict(CARD), bsid, "UNAVAILABLE")
        self.assertEqual((await self.get(bsid, a))["quantity"], 5)
        self.assertEqual(self.lines(await self.cart(bsid)), {a: 2})
        self.assertEqual(self.lines(await self.cart(await self.login_buyer(name))), {a: 2})
        self.assertEqual((await self.purchases(bsid))["items"], [])


@on_both_layouts
class Feedback(Conformance):
    async def test_feedback_rules(self):
        await self.up()
        ssid, seller_id = await self.seller()
        a = await self.item(ssid, quantity=5)
        b = await self.item(ssid, quantity=5)
        never = await self.item(ssid, quantity=5)
        other_ssid, other_seller = await self.seller()
        c = await self.item(other_ssid, quantity=5)
        b1, _, _ = await self.buyer()
        b2, _, _ = await self.buyer()
        await self.add(b1, a, 1)
        await self.add(b1, b, 1)
        await self.add(b1, c, 1)
        await self.purchase(b1)
        await self.add(b2, a, 1)
        await self.purchase(b2)
        await self.add(b1, a, 1)
        await self.purchase(b1)
        # Only bought items.
        await self.err(self.b, "ProvideFeedback", {"item_id": never, "thumbs_up": True}, b1, "FORBIDDEN")
        await self.err(self.b, "ProvideFeedback", {"item_id": b, "thumbs_up": True}, b2, "FORBIDDEN")
        await self.err(self.b, "ProvideFeedback", {"item_id": "1-999999", "thumbs_up": True}, b1, "NOT_FOUND")
        answer = await self.ok(self.b, "ProvideFeedback", {"item_id": a, "thumbs_up": True}, b1)
        self.assertEqual(answer, {"item_id": a, "thumbs_up": 1, "thumbs_down": 0})
        # A second vote replaces the first.
        answer = await self.ok(self.b, "ProvideFeedback", {"item_id": a, "thumbs_up": False}, b1)
        self.assertEqual(answer, {"item_id": a, "thumbs_up": 0, "thumbs_down": 1})
        answer = await self.ok(self.b, "ProvideFeedback", {"item_id": a, "thumbs_up": False}, b1)
        self.assertEqual(answer, {"item_id": a, "thumbs_up": 0, "thumbs_down": 1})
        answer = await self.ok(self.b, "ProvideFeedback", {"item_id": a, "thumbs_up": True}, b2)
        self.assertEqual(answer, {"item_id": a, "thumbs_up": 1, "thumbs_down": 1})
        answer = await self.ok(self.b, "ProvideFeedback", {"item_id": b, "thumbs_up": True}, b1)
        self.assertEqual(answer, {"item_id": b, "thumbs_up": 1, "thumbs_down": 0})
        answer = await self.ok(self.b, "ProvideFeedback", {"item_id": c, "thumbs_up": False}, b1)
        self.assertEqual(answer, {"item_id": c, "thumbs_up": 0, "thumbs_down": 1})
        item = await self.get(b1, a)
        self.assertEqual((item["thumbs_up"], item["thumbs_down"]), (1, 1))
        # The seller's rating sums the votes on all of that seller's items.
        rating = self.check_rating(await self.ok(self.b, "GetSellerRating", {"seller_id": seller_id}, b2))
        self.assertEqual((rating["thumbs_up"], rating["thumbs_down"]), (2, 1))
        self.assertEqual(rating, self.check_rating(await self.ok(self.s, "GetSellerRating", {}, ssid)))
        rating = self.check_rating(await self.ok(self.b, "GetSellerRating", {"seller_id": other_seller}, b2))
        self.assertEqual((rating["thumbs_up"], rating["thumbs_down"]), (0, 1))
        shown = await self.ok(self.s, "DisplayItemsForSale", {}, ssid)
        counts = {i["item_id"]: (i["thumbs_up"], i["thumbs_down"]) for i in shown["items"]}
        self.assertEqual(counts, {a: (1, 1), b: (1, 0), never: (0, 0)})
