"""The buyer service's APIs (PROTOCOL.md, Buyer service)."""

from typing import Dict, Optional

from marketplace.buyer.purchase import Card, Purchases
from marketplace.contract import money, validate
from marketplace.contract.errors import FORBIDDEN, NOT_FOUND, OUT_OF_STOCK, ApiError, bad_request
from marketplace.customer import customerdb
from marketplace.customer.accounts import AccountLimits, Accounts
from marketplace.customer.passwords import Passwords
from marketplace.payments.apis import KEY_MAX
from marketplace.payments.paymentclient import PaymentsClient
from marketplace.postgres.database import Database
from marketplace.product import productdb, purchasedb
from marketplace.product.hotpath import BuyerHotPath
from marketplace.seller.apis import seller_rating
from marketplace.server import requestkeys
from marketplace.server.dispatch import Api, Call, Dispatcher

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
        payments: Optional[PaymentsClient] = None,
        clock=None,
        account_limits: Optional[AccountLimits] = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.customer = customer
        self.product = product
        self.purchases = Purchases(product, payments or PaymentsClient(reactor=clock), clock)
        self.accounts = Accounts(
            customerdb.BUYER,
            customer,
            passwords,
            session_timeout,
            on_login=self._start_cart,
            on_logout=self._drop_cart,
            limits=account_limits or AccountLimits(),
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
        after = validate.search_cursor(payload)
        items = await productdb.search(self.product, category, keywords, limit, offset, after)
        return {"items": items}

    async def get_item(self, call: Call) -> dict:
        category, number = validate.item_id(call.payload)
        item = await productdb.get_item(self.product, category, number)
        if item is None:
            raise ApiError(NOT_FOUND, f"there is no item {validate.format_item_id(category, number)}")
        return item

    def _key(self, call: Call):
        """The request's key, among this buyer's (None: it has none)."""
        scope = requestkeys.account_scope(customerdb.BUYER, call.session.user_id)
        return requestkeys.of_request(call.request, scope)

    async def add_to_cart(self, call: Call) -> dict:
        category, number = validate.item_id(call.payload)
        units = validate.quantity(call.payload)
        session = call.session

        async def add(db) -> dict:
            added = await productdb.add_to_cart(
                db, session.key, session.user_id, category, number, units
            )
            if not added:
                await self._why_not_added(db, session.key, category, number, units)
            return await productdb.active_cart(db, session.key)

        return await requestkeys.run(self.product, self._key(call), add)

    async def _why_not_added(self, db, key: str, category: int, number: int, units: int):
        """Raise the error of an addition that found nothing to add."""
        item_id = validate.format_item_id(category, number)
        item = await productdb.get_item(db, category, number)
        if item is None:
            raise ApiError(NOT_FOUND, f"there is no item {item_id}")
        held = await productdb.units_in_cart(db, key, category, number)
        line = money.line_total(held + units, item["price"])
        if money.exceeds(line):
            raise bad_request(
                f'field "quantity": {held + units} units of {item_id} at'
                f" {money.text(item['price'])} come to {money.text(line)}, more than"
                f" one purchase may charge ({money.text(money.TOTAL_MAX)})"
            )
        raise ApiError(
            OUT_OF_STOCK,
            f"only {item['quantity']} units of {item_id} left"
            + (f" and the cart already holds {held}" if held else ""),
        )

    async def remove_from_cart(self, call: Call) -> dict:
        category, number = validate.item_id(call.payload)
        units = validate.quantity(call.payload)
        key = call.session.key

        async def remove(db) -> dict:
            if not await productdb.remove_from_cart(db, key, category, number, units):
                raise ApiError(
                    NOT_FOUND,
                    f"item {validate.format_item_id(category, number)} is not in the cart",
                )
            return await productdb.active_cart(db, key)

        return await requestkeys.run(self.product, self._key(call), remove)

    async def save_cart(self, call: Call) -> dict:
        session = call.session

        async def save(db) -> dict:
            await productdb.save_cart(db, session.key, session.user_id)
            return await productdb.active_cart(db, session.key)

        return await requestkeys.run(self.product, self._key(call), save)

    async def clear_cart(self, call: Call) -> dict:
        async def clear(db) -> dict:
            await productdb.clear_cart(db, call.session.key)
            return productdb.cart_from_rows([])

        return await requestkeys.run(self.product, self._key(call), clear)

    async def display_cart(self, call: Call) -> dict:
        return await productdb.active_cart(self.product, call.session.key)

    async def get_seller_rating(self, call: Call) -> dict:
        seller_id = validate.integer(call.payload, "seller_id", 0, 2**63 - 1)
        rating = await seller_rating(self.customer, self.product, seller_id)
        if rating is None:
            raise ApiError(NOT_FOUND, f"there is no seller {seller_id}")
        return rating

    async def make_purchase(self, call: Call) -> dict:
        payload = call.payload
        # The card's fields are checked here for their type only: whether
        # they make a good card is the financial-transactions service's call.
        card = Card(
            name=validate.text(payload, "name", 0, 200),
            number=validate.text(payload, "card_number", 0, 64),
            expiration=validate.text(payload, "expiration_date", 0, 16),
            security_code=validate.text(payload, "security_code", 0, 16),
        )
        # Without an idempotency key of its own, a purchase is filed under
        # its request key (PROTOCOL.md, Request keys).
        key = validate.text(payload, "idempotency_key", 1, KEY_MAX, required=False)
        if key is None:
            key = call.request.request_key
        # The total the buyer was shown: a cart that now comes to another
        # one is not bought (PRICE_CHANGED).
        expected = money.amount(payload, "expected_total", required=False)
        return await self.purchases.make(
            call.session.user_id, call.session.key, card, key, expected
        )

    async def provide_feedback(self, call: Call) -> dict:
        category, number = validate.item_id(call.payload)
        thumbs_up = validate.boolean(call.payload, "thumbs_up")
        item_id = validate.format_item_id(category, number)

        async def vote(db) -> dict:
            counts = await purchasedb.vote(db, call.session.user_id, category, number, thumbs_up)
            if counts == purchasedb.FEEDBACK_NO_ITEM:
                raise ApiError(NOT_FOUND, f"there is no item {item_id}")
            if counts == purchasedb.FEEDBACK_NOT_BOUGHT:
                raise ApiError(FORBIDDEN, f"only a buyer of item {item_id} may rate it")
            return {"item_id": item_id, **counts}

        return await requestkeys.run(self.product, self._key(call), vote)

    async def get_purchases(self, call: Call) -> dict:
        return await purchasedb.history(self.product, call.session.user_id)

    async def settle_stale_purchases(self, settle_after: float) -> int:
        """Settle purchases left pending by a daemon that died (see
        L{Purchases.sweep}); how many were settled."""
        return await self.purchases.sweep(settle_after)

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
            "MakePurchase": Api(self.make_purchase),
            "ProvideFeedback": Api(self.provide_feedback),
        }

    def dispatcher(self) -> Dispatcher:
        """The dispatcher that answers the buyer service's frames."""
        hot_path = BuyerHotPath(
            "buyer",
            self.customer,
            self.product,
            self.accounts.session_timeout,
            search_limits=(SEARCH_LIMIT_DEFAULT, SEARCH_LIMIT_MAX),
        )
        return Dispatcher("buyer", self.apis(), self.accounts.authenticate, hot_path)
