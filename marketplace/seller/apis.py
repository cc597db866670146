"""The seller service's APIs (PROTOCOL.md, Seller service)."""

from typing import Dict, Optional

from marketplace.contract import validate
from marketplace.contract.errors import BAD_REQUEST, FORBIDDEN, NOT_FOUND, ApiError
from marketplace.customer import customerdb
from marketplace.customer.accounts import AccountLimits, Accounts
from marketplace.customer.passwords import Passwords
from marketplace.postgres.database import Database
from marketplace.product import productdb
from marketplace.product.hotpath import SellerHotPath
from marketplace.server import requestkeys
from marketplace.server.dispatch import Api, Call, Dispatcher


async def seller_rating(
    customer: Database, product: Database, seller_id: int
) -> Optional[dict]:
    """A seller's rating as PROTOCOL.md returns it, or None: no such seller."""
    name = await customerdb.account_name(customer, customerdb.SELLER, seller_id)
    if name is None:
        return None
    counts = await productdb.seller_counts(product, seller_id)
    return {"seller_id": seller_id, "name": name, **counts}


class SellerApis:
    """What a seller can do, on the two databases."""

    def __init__(
        self,
        customer: Database,
        product: Database,
        passwords: Passwords,
        session_timeout: float,
        account_limits: Optional[AccountLimits] = None,
    ) -> None:
        self.customer = customer
        self.product = product
        self.accounts = Accounts(
            customerdb.SELLER,
            customer,
            passwords,
            session_timeout,
            limits=account_limits or AccountLimits(),
        )

    async def get_seller_rating(self, call: Call) -> dict:
        rating = await seller_rating(self.customer, self.product, call.session.user_id)
        if rating is None:
            raise ApiError(NOT_FOUND, "this seller's account no longer exists")
        return rating

    def _key(self, call: Call):
        """The request's key, among this seller's (None: it has none)."""
        scope = requestkeys.account_scope(customerdb.SELLER, call.session.user_id)
        return requestkeys.of_request(call.request, scope)

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

        return await requestkeys.run(self.product, self._key(call), register)

    async def change_price(self, call: Call) -> dict:
        category, number = validate.item_id(call.payload)
        price = validate.price(call.payload)

        async def change(db) -> dict:
            item = await productdb.change_price(
                db, call.session.user_id, category, number, price
            )
            if item is None:
                await self._explain(db, call, category, number)
            return item

        return await requestkeys.run(self.product, self._key(call), change)

    async def update_units(self, call: Call) -> dict:
        category, number = validate.item_id(call.payload)
        units = validate.quantity(call.payload)

        async def take_off(db) -> dict:
            item = await productdb.take_off_sale(
                db, call.session.user_id, category, number, units
            )
            if item is None:
                await self._explain(db, call, category, number)
                raise ApiError(
                    BAD_REQUEST,
                    f'field "quantity": cannot take {units} units off sale,'
                    f" item {validate.format_item_id(category, number)} has fewer on sale",
                )
            return item

        return await requestkeys.run(self.product, self._key(call), take_off)

    async def _explain(self, db, call: Call, category: int, number: int) -> None:
        """Raise NOT_FOUND or FORBIDDEN for an item the seller cannot change."""
        item_id = validate.format_item_id(category, number)
        owner = await productdb.item_owner(db, category, number)
        if owner is None:
            raise ApiError(NOT_FOUND, f"there is no item {item_id}")
        if owner != call.session.user_id:
            raise ApiError(FORBIDDEN, f"item {item_id} belongs to another seller")

    async def display_items(self, call: Call) -> dict:
        return {"items": await productdb.seller_items(self.product, call.session.user_id)}

    def apis(self) -> Dict[str, Api]:
        """Every seller API, by name."""
        return {
            **self.accounts.apis(),
            "GetSellerRating": Api(self.get_seller_rating),
            "RegisterItemForSale": Api(self.register_item),
            "ChangeItemPrice": Api(self.change_price),
            "UpdateUnitsForSale": Api(self.update_units),
            "DisplayItemsForSale": Api(self.display_items),
        }

    def dispatcher(self) -> Dispatcher:
        """The dispatcher that answers the seller service's frames."""
        hot_path = SellerHotPath(
            "seller", self.customer, self.product, self.accounts.session_timeout
        )
        return Dispatcher("seller", self.apis(), self.accounts.authenticate, hot_path)
