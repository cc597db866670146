"""Payload field checks, without a network."""

from decimal import Decimal

from twisted.trial import unittest

from marketplace.contract import validate
from marketplace.contract.errors import BAD_REQUEST, ApiError


class ValidateTests(unittest.SynchronousTestCase):
    def assertBad(self, function, payload, *args, field="x"):
        with self.assertRaises(ApiError) as caught:
            function(payload, *args)
        self.assertEqual(caught.exception.code, BAD_REQUEST)
        self.assertIn(f'"{field}"', caught.exception.message)

    def test_text(self):
        self.assertEqual(validate.text({"x": "abc"}, "x", 1, 3), "abc")
        self.assertBad(validate.text, {"x": ""}, "x", 1, 3)
        self.assertBad(validate.text, {"x": "abcd"}, "x", 1, 3)
        self.assertBad(validate.text, {"x": 5}, "x", 1, 3)
        self.assertBad(validate.text, {}, "x", 1, 3)
        self.assertBad(validate.text, {"x": "a\x00"}, "x", 1, 3)
        self.assertBad(validate.text, {"x": "\ud800"}, "x", 1, 3)
        self.assertIsNone(validate.text({}, "x", 1, 3, required=False))

    def test_text_without_spaces(self):
        self.assertBad(validate.text, {"x": "a b"}, "x", 1, 9, True, False)
        self.assertBad(validate.text, {"x": "a\u2003b"}, "x", 1, 9, True, False)

    def test_integer(self):
        self.assertEqual(validate.integer({"x": 3}, "x", 0), 3)
        self.assertBad(validate.integer, {"x": True}, "x", 0)
        self.assertBad(validate.integer, {"x": 1.5}, "x", 0)
        self.assertBad(validate.integer, {"x": -1}, "x", 0)
        self.assertBad(validate.integer, {"x": 2**31}, "x", 0)
        self.assertBad(validate.integer, {"x": "3"}, "x", 0)
        self.assertEqual(validate.integer({}, "x", 0, default=50), 50)

    def test_price(self):
        self.assertEqual(validate.price({"price": Decimal("9.99")}), Decimal("9.99"))
        self.assertEqual(validate.price({"price": 4}), Decimal("4.00"))
        self.assertEqual(validate.price({"price": Decimal("1.500")}), Decimal("1.50"))
        for bad in (Decimal("1.999"), Decimal("-1"), Decimal("1E+20"), "1", True, None):
            self.assertBad(validate.price, {"price": bad}, field="price")

    def test_keywords(self):
        self.assertEqual(
            validate.keywords({"keywords": ["Phone", "case", "PHONE"]}), ["phone", "case"]
        )
        self.assertEqual(validate.keywords({"keywords": []}), [])
        self.assertBad(validate.keywords, {"keywords": ["a"] * 6}, field="keywords")
        self.assertBad(validate.keywords, {"keywords": ["toolongword"]}, field="keywords")
        self.assertBad(validate.keywords, {"keywords": [""]}, field="keywords")
        self.assertBad(validate.keywords, {"keywords": "phone"}, field="keywords")
        self.assertBad(validate.keywords, {"keywords": [1]}, field="keywords")

    def test_condition(self):
        self.assertEqual(validate.condition({"condition": "USED"}), "used")
        self.assertBad(validate.condition, {"condition": "broken"}, field="condition")

    def test_item_id(self):
        self.assertEqual(validate.item_id({"item_id": "3-17"}), (3, 17))
        for bad in ("3", "3-", "-17", "a-1", "3-17-1", 317, "\u0663-1", "3 -17"):
            self.assertBad(validate.item_id, {"item_id": bad}, field="item_id")

    def test_boolean(self):
        self.assertIs(validate.boolean({"x": False}, "x"), False)
        self.assertBad(validate.boolean, {"x": 0}, "x")
