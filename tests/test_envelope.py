"""Decoding and encoding of the envelope, without a network."""

import json
from decimal import Decimal

from twisted.trial import unittest

from marketplace.contract.errors import BAD_REQUEST, ApiError
from marketplace.frame import dispatch


def request(**fields) -> bytes:
    message = {"type": "request", "api": "GetItem", "session_id": None, "payload": {}}
    message.update(fields)
    return json.dumps(message).encode()


class ParseRequestTests(unittest.SynchronousTestCase):
    def assertBad(self, frame: bytes, words: str) -> ApiError:
        with self.assertRaises(ApiError) as caught:
            dispatch.parse_request(frame)
        self.assertEqual(caught.exception.code, BAD_REQUEST)
        self.assertIn(words, caught.exception.message)
        return caught.exception

    def test_valid(self):
        parsed = dispatch.parse_request(
            request(session_id="abc", payload={"item_id": "3-17"}, request_id=7)
        )
        self.assertEqual(parsed.api, "GetItem")
        self.assertEqual(parsed.session_id, "abc")
        self.assertEqual(parsed.payload, {"item_id": "3-17"})
        self.assertEqual((parsed.request_id, parsed.has_request_id), (7, True))

    def test_fractions_are_decimal(self):
        parsed = dispatch.parse_request(request(payload={"price": 9.99}))
        self.assertEqual(parsed.payload["price"], Decimal("9.99"))

    def test_missing_payload_is_empty(self):
        frame = json.dumps({"type": "request", "api": "Logout"}).encode()
        self.assertEqual(dispatch.parse_request(frame).payload, {})

    def test_not_utf8(self):
        self.assertBad(b"\xff\xfe{}", "UTF-8")

    def test_not_json(self):
        self.assertBad(b"{nope", "JSON")

    def test_not_an_object(self):
        self.assertBad(b"[1, 2]", "object")
        self.assertBad(b'"text"', "object")

    def test_nan_is_rejected(self):
        self.assertBad(b'{"type": "request", "api": "X", "payload": {"price": NaN}}', "JSON")

    def test_deep_nesting(self):
        self.assertBad(b"[" * 100000 + b"]" * 100000, "")

    def test_huge_integer(self):
        self.assertBad(b'{"n": ' + b"9" * 5000 + b"}", "JSON")

    def test_type_must_be_request(self):
        error = self.assertBad(request(type="response", request_id="r1"), '"type"')
        self.assertEqual(error.request.request_id, "r1")
        self.assertEqual(error.request.api, "GetItem")

    def test_api_must_be_a_string(self):
        self.assertBad(request(api=5), '"api"')
        self.assertBad(request(api=""), '"api"')

    def test_session_id_type(self):
        self.assertBad(request(session_id=12), '"session_id"')

    def test_payload_type(self):
        self.assertBad(request(payload=[1]), '"payload"')


class EncodeTests(unittest.SynchronousTestCase):
    def test_response_echoes(self):
        parsed = dispatch.parse_request(request(session_id="s", request_id="x"))
        answer = dispatch.response(parsed, {"price": Decimal("2.50")})
        self.assertEqual(
            json.loads(dispatch.encode(answer)),
            {
                "type": "response",
                "api": "GetItem",
                "session_id": "s",
                "payload": {"price": 2.5},
                "request_id": "x",
            },
        )

    def test_json_payload_goes_in_as_it_is(self):
        parsed = dispatch.parse_request(request(session_id="s", request_id="\ud800"))
        text = '{"items" : [{"item_name" : "Tasse \u00fc \\"x\\"", "price" : 10.00}]}'
        answer = dispatch.response(parsed, dispatch.JsonPayload(text))
        self.assertEqual(
            json.loads(dispatch.encode(answer), parse_float=Decimal),
            {
                "type": "response",
                "api": "GetItem",
                "session_id": "s",
                "payload": {"items": [{"item_name": 'Tasse \u00fc "x"', "price": Decimal("10.00")}]},
                "request_id": "\ud800",
            },
        )

    def test_no_request_id_unless_sent(self):
        parsed = dispatch.parse_request(request())
        self.assertNotIn("request_id", dispatch.response(parsed, {}))

    def test_session_id_override(self):
        parsed = dispatch.parse_request(request(session_id="s"))
        self.assertIsNone(dispatch.response(parsed, {}, None)["session_id"])

    def test_error(self):
        parsed = dispatch.parse_request(request(session_id="s"))
        answer = dispatch.error(parsed, "NOT_FOUND", "no such item")
        self.assertEqual(answer["type"], "error")
        self.assertEqual(answer["error"], {"code": "NOT_FOUND", "message": "no such item"})
        self.assertEqual(answer["session_id"], "s")

    def test_error_without_request(self):
        answer = dispatch.error(None, "BAD_REQUEST", "bad")
        self.assertEqual((answer["api"], answer["session_id"]), (None, None))

    def test_unicode_is_kept(self):
        parsed = dispatch.parse_request(request())
        body = dispatch.encode(dispatch.response(parsed, {"name": "caf\u00e9 \U0001f600"}))
        self.assertEqual(json.loads(body.decode("utf-8"))["payload"]["name"], "caf\u00e9 \U0001f600")
