"""The buyer service's APIs (PROTOCOL.md, Buyer service)."""

import json
from decimal import Decimal
from typing import Any, Awaitable, Dict, Optional

from twisted.internet import defer

from marketplace.buyer.purchase import Card, Purchases
from marketplace.contract import money, validate
from marketplace.contract.errors import FORBIDDEN, NOT_FOUND, OUT_OF_STOCK, ApiError, bad_request
from marketplace.customer import customerdb
from marketplace.customer.accounts import AccountLimits, Accounts
from marketplace.customer.passwords import Passwords
from marketplace.buyer.paymentclient import PaymentsClient
from marketplace.postgres.database import Database
from marketplace.product import apisql, productdb, purchasedb
from marketplace.product.ratings import seller_rating
from marketplace.postgres import requestkeys
from marketplace.frame.dispatch import Api, Call, Dispatcher
from marketplace.product.statements import SEPARATE, SessionCheck, Statements

SEARCH_LIMIT_DEFAULT = 50
SEARCH_LIMIT_MAX = 500


def _not_found(row: tuple, args: dict) -> ApiError:
    """GetItem's error: there is no such item."""
    item_id = validate.format_item_id(args["category"], args["number"])
    return ApiError(NOT_FOUND, f"there is no item {item_id}")


def _not_added(row: tuple, args: dict) -> ApiError:
    """AddItemToCart's error, from its statement's row: the outcome and the
    item's [units on sale, price, units the cart holds, lines the cart
    holds] (or None: there is no such item)."""
    if row[1] is None:
        return _not_found(row, args)
    on_sale, price, held, lines = json.loads(row[1], parse_float=Decimal)
    item_id = validate.format_item_id(args["category"], args["number"])
    if not held and lines >= apisql.MAX_CART_LINES:
        return bad_request(
            f"the cart holds {lines} items, the most one cart may hold is"
            f" {apisql.MAX_CART_LINES}: buy or remove some before adding {item_id}"
        )
    wanted = held + args["units"]
    line = money.line_total(wanted, price)
    if money.exceeds(line):
        return bad_request(
            f'field "quantity": {wanted} units of {item_id} at {money.text(price)}'
            f" come to {money.text(line)}, more than one purchase may charge"
            f" ({money.text(money.TOTAL_MAX)})"
        )
    return ApiError(
        OUT_OF_STOCK,
        f"only {on_sale} unit{'' if on_sale == 1 else 's'} of {item_id} left"
        + (f" and the cart already holds {held}" if held else ""),
    )


class BuyerApis:
    """What a buyer can do, on the two databases; C{sessions} says whether
    they are one (marketplace/product/statements.py)."""

    def __init__(
        self,
        customer: Database,
        product: Database,
        passwords: Passwords,
        session_timeout: float,
        payments: Optional[PaymentsClient],
        clock,
        account_limits: Optional[AccountLimits] = None,
        sessions: SessionCheck = SEPARATE,
    ) -> None:
        self.customer = customer
        self.product = product
        self.purchases = Purchases(product, payments, clock)
        self.accounts = Accounts(
            customerdb.BUYER,
            customer,
            passwords,
            session_timeout,
            on_login=self._start_cart,
            on_logout=self._drop_cart,
            limits=account_limits or AccountLimits(),
            clock=clock,
        )
        self.statements = statements = Statements(
            product, sessions, self.accounts, apisql.FILED_ANSWER
        )
        self._get_item = statements.read_statement("get_item", "GetItem")
        self._add_to_cart = statements.write_statement("add_to_cart", "AddItemToCart")
        self._display_cart = statements.read_statement("display_cart", "DisplayCart")
        self._searches = {
            shape: statements.read_statement(f"search_{shape}", f"SearchItemsForSale/{shape}")
            for shape in ("all", "one", "many")
        }

    async def _start_cart(self, key: str, buyer_id: int) -> None:
        await productdb.start_active_cart(self.product, key, buyer_id)

    async def _drop_cart(self, key: str) -> None:
        await productdb.drop_carts(self.product, [key])

    def search(self, call: Call) -> defer.Deferred:
        payload = call.payload
        try:
            category = validate.integer(payload, "category", 0)
            keywords = validate.keywords(payload)
            limit = validate.integer(
                payload, "limit", 1, SEARCH_LIMIT_MAX, default=SEARCH_LIMIT_DEFAULT
            )
            offset = validate.integer(payload, "offset", 0, default=0)
            after = validate.search_cursor(payload)
        except ApiError as error:
            return self.statements.refuse(call, error)
        shape, _, args = productdb.search_statement(category, keywords, limit, offset, after)
        return self.statements.read_catalog(
            self._searches[shape], self.statements.args(call, **args)
        )

    def get_item(self, call: Call) -> defer.Deferred:
        try:
            category, number = validate.item_id(call.payload)
        except ApiError as error:
            return self.statements.refuse(call, error)
        args = self.statements.args(call, category=category, number=number)
        return self.statements.read_catalog(self._get_item, args, _not_found)

    def add_to_cart(self, call: Call) -> defer.Deferred:
        statements = self.statements
        try:
            category, number = validate.item_id(call.payload)
            units = validate.quantity(call.payload)
        except ApiError as error:
            return statements.refuse(call, error)
        args = statements.args(call, category=category, number=number, units=units)
        return statements.write(call, self._add_to_cart, args, _not_added)

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

        return await self._keyed(call, remove)

    async def save_cart(self, call: Call) -> dict:
        session = call.session

        async def save(db) -> dict:
            await productdb.save_cart(db, session.key, session.user_id)
            return await productdb.active_cart(db, session.key)

        return await self._keyed(call, save)

    async def clear_cart(self, call: Call) -> dict:
        async def clear(db) -> dict:
            return await productdb.clear_cart(db, call.session.key)

        return await self._keyed(call, clear)

    def display_cart(self, call: Call) -> defer.Deferred:
        return self.statements.read(self._display_cart, self.statements.args(call))

    def _keyed(self, call: Call, work) -> Awaitable[Any]:
        """C{work} on the product database under the call's request key."""
        return requestkeys.run(
            self.product,
            requestkeys.of_session(call.request, customerdb.BUYER, call.session),
            work,
            self.accounts.limits.request_keys_per_minute,
            apisql.FILED_ANSWER,
        )

    async def get_seller_rating(self, call: Call) -> dict:
        seller_id = validate.integer(call.payload, "seller_id", 0, 2**63 - 1)
        rating = await seller_rating(self.customer.replicas, self.product.replicas, seller_id)
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
        key = validate.idempotency_key(payload, required=False)
        if key is None:
            key = call.request.request_key
        # The total the buyer was shown: a cart that now comes to another
        # one is not bought (PRICE_CHANGED).
        expected = money.amount(payload, "expected_total", required=False)
        # The key is tied to this request (another card or payload under it
        # is BAD_REQUEST); the card counts by its last four digits and its
        # security code not at all: neither is kept, not even as a hash.
        shown = dict(payload, card_number=card.number[-4:])
        shown.pop("security_code", None)
        request_key = requestkeys.of_session(call.request, customerdb.BUYER, call.session, shown)
        return await self.purchases.make(
            call.session.user_id,
            call.session.key,
            card,
            key,
            expected,
            request_key,
            self.accounts.limits.request_keys_per_minute,
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

        return await self._keyed(call, vote)

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
            **self.statements.apis(
                {
                    "SearchItemsForSale": self.search,
                    "GetItem": self.get_item,
                    "AddItemToCart": self.add_to_cart,
                    "DisplayCart": self.display_cart,
                }
            ),
            "RemoveItemFromCart": Api(self.remove_from_cart),
            "SaveCart": Api(self.save_cart),
            "ClearCart": Api(self.clear_cart),
            "GetSellerRating": Api(self.get_seller_rating),
            "GetBuyerPurchases": Api(self.get_purchases),
            "MakePurchase": Api(self.make_purchase),
            "ProvideFeedback": Api(self.provide_feedback),
        }

    def dispatcher(self) -> Dispatcher:
        """The dispatcher that answers the buyer service's frames."""
        return Dispatcher("buyer", self.apis(), self.accounts.authenticate)
