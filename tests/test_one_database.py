"""The API tests again, with customer and product data in one database.

That is the layout of the embedded default, where the hot APIs check the
session and do their work in one statement (marketplace/hotpath.py); the
other test modules run on two databases, where they cannot.
"""

from tests import test_buyer_api, test_seller_api, test_sessions
from tests.db import test_dsns


class _OneDatabase:
    """Mixed into a test case: both services' data in the customer database."""

    @property
    def settings_overrides(self) -> dict:
        one = test_dsns()["customer"]
        return {"customer_db": one, "product_db": one}


class AccountTests(_OneDatabase, test_buyer_api.AccountTests):
    pass


class SearchTests(_OneDatabase, test_buyer_api.SearchTests):
    pass


class ItemTests(_OneDatabase, test_buyer_api.ItemTests):
    pass


class CartTests(_OneDatabase, test_buyer_api.CartTests):
    pass


class SellerApiTests(_OneDatabase, test_seller_api.SellerApiTests):
    pass


class StatelessTests(_OneDatabase, test_sessions.StatelessTests):
    pass


class ExpiryTests(_OneDatabase, test_sessions.ExpiryTests):
    pass


class WireTests(_OneDatabase, test_sessions.WireTests):
    pass
