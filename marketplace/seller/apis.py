"""The seller service's APIs (PROTOCOL.md, Seller service)."""

from typing import Dict, Optional

from twisted.internet import defer

from marketplace.contract import validate
from marketplace.contract.errors import BAD_REQUEST, FORBIDDEN, NOT_FOUND, ApiError
from marketplace.customer import customerdb
from marketplace.customer.accounts import AccountLimits, Accounts
from marketplace.customer.passwords import Passwords
from marketplace.postgres.database import Database
from marketplace.product import apisql, productdb
from marketplace.product.ratings import seller_rating
from marketplace.postgres import requestkeys
from marketplace.frame.dispatch import Api, Call, Dispatcher
from marketplace.product.statements import SEPARATE, SessionCheck, Statements


def _refused(row: tuple, args: dict) -> ApiError:
    """The error of a write on an item that the seller could not make."""
    outcome = row[0]
    item_id = validate.format_item_id(args["category"], args["number"])
    if outcome == apisql.NO_ITEM:
        return ApiError(NOT_FOUND, f"there is no item {item_id}")
    if outcome == apisql.NOT_OWNER:
        return ApiError(FORBIDDEN, f"item {item_id} belongs to another seller")
    return ApiError(
        BAD_REQUEST,
        f'field "quantity": cannot take {args["units"]} units off sale,'
        f" item {item_id} has fewer on sale",
    )


class SellerApis:
    """What a seller can do, on the two databases; C{sessions} says whether
    they are one (marketplace/product/statements.py); C{clock} runs the
    login delay (None: the global reactor)."""

    def __init__(
        self,
        customer: Database,
        product: Database,
        passwords: Passwords,
        session_timeout: float,
        account_limits: Optional[AccountLimits] = None,
        sessions: SessionCheck = SEPARATE,
        clock=None,
    ) -> None:
        self.customer = customer
        self.product = product
        self.accounts = Accounts(
            customerdb.SELLER,
            customer,
            passwords,
            session_timeout,
            limits=account_limits or AccountLimits(),
            clock=clock,
        )
        self.statements = statements = Statements(
            product, sessions, self.accounts, apisql.FILED_ANSWER
        )
        self._seller_items = statements.read_statement("seller_items", "DisplayItemsForSale")
        self._change_price = statements.write_statement("change_price", "ChangeItemPrice")
        self._take_off_sale = statements.write_statement("take_off_sale", "UpdateUnitsForSale")

    async def get_seller_rating(self, call: Call) -> dict:
        rating = await seller_rating(
            self.customer.replicas, self.product.replicas, call.session.user_id
        )
        if rating is None:
            raise ApiError(NOT_FOUND, "this seller's account no longer exists")
        return rating

    async def register_item(self, call: Call) -> dict:
        payload = call.payload
        item = dict(
            seller_id=call.session.user_id,
            name=validate.text(payload, "item_name", 1, 32),
            category=validate.integer(payload, "category", 0),
            keywords=validate.keywords(payload),
            condition=validate.condition(payload),
            price=validate.price(payload),
            quantity=validate.quantity(payload),
        )

        async def register(db) -> dict:
            return {"item_id": await productdb.register_item(db, **item)}

        request_key = requestkeys.of_session(call.request, customerdb.SELLER, call.session)
        return await requestkeys.run(
            self.product, request_key, register, self.accounts.limits.request_keys_per_minute
        )

    def change_price(self, call: Call) -> defer.Deferred:
        statements = self.statements
        try:
            category, number = validate.item_id(call.payload)
            price = validate.price(call.payload)
        except ApiError as error:
            return statements.refuse(call, error)
        args = statements.args(call, category=category, number=number, price=price)
        return statements.write(call, self._change_price, args, _refused)

    def update_units(self, call: Call) -> defer.Deferred:
        statements = self.statements
        try:
            category, number = validate.item_id(call.payload)
            units = validate.quantity(call.payload)
        except ApiError as error:
            return statements.refuse(call, error)
        args = statements.args(call, category=category, number=number, units=units)
        return statements.write(call, self._take_off_sale, args, _refused)

    def display_items(self, call: Call) -> defer.Deferred:
        return self.statements.read_catalog(self._seller_items, self.statements.args(call))

    def apis(self) -> Dict[str, Api]:
        """Every seller API, by name."""
        return {
            **self.accounts.apis(),
            "GetSellerRating": Api(self.get_seller_rating),
            "RegisterItemForSale": Api(self.register_item),
            **self.statements.apis(
                {
                    "ChangeItemPrice": self.change_price,
                    "UpdateUnitsForSale": self.update_units,
                    "DisplayItemsForSale": self.display_items,
                }
            ),
        }

    def dispatcher(self) -> Dispatcher:
        """The dispatcher that answers the seller service's frames."""
        return Dispatcher("seller", self.apis(), self.accounts.authenticate)
