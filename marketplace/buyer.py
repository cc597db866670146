"""The buyer service's APIs (PROTOCOL.md, Buyer service)."""

from typing import Dict

from marketplace import customerdb, productdb, validate
from marketplace.accounts import Accounts
from marketplace.database import Database
from marketplace.dispatch import Api, Call, Dispatcher
from marketplace.errors import NOT_FOUND, OUT_OF_STOCK, ApiError
from marketplace.passwords import Passwords
from marketplace.seller import seller_rating

SEARCH_LIMIT_DEFAULT = 50
SEARCH_LIMIT_MAX = 500


class BuyerApis:
    """What a buyer can do, on the two databases."""

    def __init__(
        self,
        customer: Database,
        product: Database,
        passwords: Passwords,
        session_timeout: float,
    ) -> None:
        self.customer = customer
        self.product = product
        self.accounts = Accounts(
            customerdb.BUYER,
            customer,
            passwords,
            session_timeout,
            on_login=self._start_cart,
            on_logout=self._drop_cart,
        )

    async def _start_cart(self, key: str, buyer_id: int) -> None:
        await productdb.start_active_cart(self.product, key, buyer_id)

    async def _drop_cart(self, key: str) -> None:
        await productdb.drop_carts(self.product, [key])

    async def search(self, call: Call) -> dict:
        payload = call.payload
        category = validate.integer(payload, "category", 0)
        keywords = validate.keywords(payload)
        limit = validate.integer(
            payload, "limit", 1, SEARCH_LIMIT_MAX, default=SEARCH_LIMIT_DEFAULT
        )
        offset = validate.integer(payload, "offset", 0, default=0)
        items = await productdb.search(self.product, category, keywords, limit, offset)
        return {"items": items}

    async def get_item(self, call: Call) -> dict:
        category, number = validate.item_id(call.payload)
        item = await productdb.get_item(self.product, category, number)
        if item is None:
            raise ApiError(NOT_FOUND, f"there is no item {validate.format_item_id(category, number)}")
        return item

    async def add_to_cart(self, call: Call) -> dict:
        category, number = validate.item_id(call.payload)
        units = validate.quantity(call.payload)
        session = call.session
        added = await productdb.add_to_cart(
            self.product, session.key, session.user_id, category, number, units
        )
        if not added:
            item_id = validate.format_item_id(category, number)
            item = await productdb.get_item(self.product, category, number)
            if item is None:
                raise ApiError(NOT_FOUND, f"there is no item {item_id}")
            held = await productdb.units_in_cart(self.product, session.key, category, number)
            raise ApiError(
                OUT_OF_STOCK,
                f"only {item['quantity']} units of {item_id} left"
                + (f" and the cart already holds {held}" if held else ""),
            )
        return await productdb.active_cart(self.product, session.key)

    async def remove_from_cart(self, call: Call) -> dict:
        category, number = validate.item_id(call.payload)
        units = validate.quantity(call.payload)
        key = call.session.key
        if not await productdb.remove_from_cart(self.product, key, category, number, units):
            raise ApiError(
                NOT_FOUND,
                f"item {validate.format_item_id(category, number)} is not in the cart",
            )
        return await productdb.active_cart(self.product, key)

    async def save_cart(self, call: Call) -> dict:
        await productdb.save_cart(self.product, call.session.key, call.session.user_id)
        return await productdb.active_cart(self.product, call.session.key)

    async def clear_cart(self, call: Call) -> dict:
        await productdb.clear_cart(self.product, call.session.key)
        return productdb.cart_from_rows([])

    async def display_cart(self, call: Call) -> dict:
        return await productdb.active_cart(self.product, call.session.key)

    async def get_seller_rating(self, call: Call) -> dict:
        seller_id = validate.integer(call.payload, "seller_id", 0, 2**63 - 1)
        rating = await seller_rating(self.customer, self.product, seller_id)
        if rating is None:
            raise ApiError(NOT_FOUND, f"there is no seller {seller_id}")
        return rating

    async def get_purchases(self, call: Call) -> dict:
        return {"items": [], "items_purchased": 0}

    def apis(self) -> Dict[str, Api]:
        """Every buyer API, by name."""
        return {
            **self.accounts.apis(),
            "SearchItemsForSale": Api(self.search),
            "GetItem": Api(self.get_item),
            "AddItemToCart": Api(self.add_to_cart),
            "RemoveItemFromCart": Api(self.remove_from_cart),
            "SaveCart": Api(self.save_cart),
            "ClearCart": Api(self.clear_cart),
            "DisplayCart": Api(self.display_cart),
            "GetSellerRating": Api(self.get_seller_rating),
            "GetBuyerPurchases": Api(self.get_purchases),
        }

    def dispatcher(self) -> Dispatcher:
        """The dispatcher that answers the buyer service's frames."""
        return Dispatcher("buyer", self.apis(), self.accounts.authenticate)
