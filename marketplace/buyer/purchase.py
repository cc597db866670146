"""MakePurchase: the whole active cart, paid by card, or nothing.

1. One transaction on the product database takes every line's units off
   sale (conditionally, so stock never goes below zero) and files a
   pending purchase under the buyer's idempotency key.  A short line, an
   empty cart or a key already used ends it there, changing nothing.
2. The financial-transactions service is asked to authorise the total,
   under the purchase's own payment key.
3. One transaction settles the purchase: completed (units sold, carts
   emptied), declined or aborted (units back on sale).

If the daemon dies between 1 and 3, L{Purchases.sweep} settles the purchase
later: it asks the payments service what it answered for the payment key
and completes the purchase if the payment was approved, else voids the key
(so a request still on its way cannot be approved any more) and gives the
units back.  Whoever settles first wins; the other reads what was decided.
"""

import uuid
from functools import partial
from decimal import Decimal
from typing import Optional

from twisted.internet import defer
from twisted.logger import Logger

from marketplace.contract import money
from marketplace.contract.errors import (
    BAD_REQUEST,
    EMPTY_CART,
    OUT_OF_STOCK,
    PAYMENT_DECLINED,
    PRICE_CHANGED,
    UNAVAILABLE,
    ApiError,
)
from marketplace.buyer.paymentclient import PaymentsClient, PaymentsError, PaymentsUnavailable
from marketplace.postgres.database import Database, is_unavailable
from marketplace.product import purchasedb
from marketplace.product.purchasedb import ABORTED, COMPLETED, DECLINED, PENDING, Purchase
from marketplace.postgres.requestkeys import DEFAULT_KEYS_PER_WINDOW, RequestKey, claim

# How long a retry waits for a purchase under the same key that is still
# being settled elsewhere before it answers UNAVAILABLE.
WAIT_FOR_PENDING = 15.0
# How long it waits before settling that purchase itself, as the sweep
# would: a client sends a purchase again when it lost the first one's
# connection, most often with the daemon that was paying for it, which
# will never settle it.  (Safe if that daemon is alive after all: whoever
# settles first wins, and an unanswered payment is voided first.)
RECOVER_AFTER = 0.5
_POLL = 0.1


class Card:
    """What the buyer gave to pay with; never logged, never stored here."""

    __slots__ = ("name", "number", "expiration", "security_code")

    def __init__(self, name: str, number: str, expiration: str, security_code: str) -> None:
        self.name = name
        self.number = number
        self.expiration = expiration
        self.security_code = security_code

    def __repr__(self) -> str:
        return "<Card>"


class Purchases:
    """Purchases on the product database, paid through C{payments}."""

    log = Logger()

    def __init__(self, product: Database, payments: PaymentsClient, clock) -> None:
        self.product = product
        self.payments = payments
        self.clock = clock

    async def make(
        self,
        buyer_id: int,
        session_key: str,
        card: Card,
        key: Optional[str],
        expected_total: Optional[Decimal] = None,
        request_key: Optional[RequestKey] = None,
        keys_per_window: int = DEFAULT_KEYS_PER_WINDOW,
    ) -> dict:
        """Buy a session's active cart; MakePurchase's answer payload, or
        L{ApiError}.  The same C{key} again gives the first answer.  With
        C{expected_total}, a cart that comes to another total is not bought:
        PRICE_CHANGED, with the cart as it is now in the error object.
        C{request_key}, the request's, is claimed with the purchase: it may
        not have been used for another request (BAD_REQUEST)."""
        if key is None:
            key = f"auto-{uuid.uuid4()}"
        try:
            purchase = await purchasedb.take_units(
                self.product,
                buyer_id,
                key,
                session_key,
                expected_total,
                claim=request_key and partial(claim, key=request_key, keys_per_window=keys_per_window),
            )
        except purchasedb.EmptyCart:
            raise ApiError(EMPTY_CART, "the cart is empty: there is nothing to buy")
        except purchasedb.Shortage as e:
            raise ApiError(
                OUT_OF_STOCK,
                f"only {e.on_sale} unit{'' if e.on_sale == 1 else 's'} of {e.item_id}"
                f" left, the cart holds {e.wanted}",
            )
        except purchasedb.OverLimit as e:
            raise ApiError(
                BAD_REQUEST,
                f"the cart comes to {money.text(e.total)}, more than one purchase may"
                f" charge ({money.text(money.TOTAL_MAX)}): take some units out",
            )
        except purchasedb.PriceChanged as e:
            raise ApiError(
                PRICE_CHANGED,
                f"the cart now comes to {e.cart['total_decimal']}, not"
                f" {money.text(expected_total)}: nothing was bought",
                extra={"cart": e.cart},
            )
        except Exception as e:
            if not is_unavailable(e):
                raise
            # The answer to its COMMIT may be what was lost: then the
            # purchase is filed and pending, and this request, which has
            # the card, pays for it now rather than leave it to the sweep.
            purchase = await self._filed_anyway(buyer_id, key, e)
            if purchase.state != PENDING:
                return _answer(purchase)
        if purchase is None:
            return await self._earlier_answer(buyer_id, key)
        self.log.info(
            "purchase {purchase_id} of buyer {buyer_id}: {total} pending",
            purchase_id=purchase.id,
            buyer_id=buyer_id,
            total=str(purchase.total),
        )
        await self._pay(purchase, card)
        return _answer(await purchasedb.get(self.product, purchase.id))

    async def _filed_anyway(self, buyer_id: int, key: str, lost: Exception) -> Purchase:
        """The purchase filed under C{key} by a transaction whose COMMIT's
        answer was lost; C{lost} again if none was (or the database still
        cannot be reached)."""
        try:
            purchase = await purchasedb.find(self.product, buyer_id, key)
        except Exception:
            raise lost
        if purchase is None:
            raise lost
        self.log.info(
            "purchase {purchase_id} of buyer {buyer_id} was filed although the answer"
            " to its commit was lost; paying it now",
            purchase_id=purchase.id,
            buyer_id=buyer_id,
        )
        return purchase

    async def _pay(self, purchase: Purchase, card: Card) -> None:
        """Ask for the payment and settle the purchase by the answer."""
        try:
            answer = await self.payments.call(
                "AuthorizePayment",
                {
                    "name": card.name,
                    "card_number": card.number,
                    "expiration_date": card.expiration,
                    "security_code": card.security_code,
                    "amount": money.text(purchase.total),
                    "idempotency_key": purchase.payment_key,
                },
            )
        except (PaymentsUnavailable, PaymentsError) as e:
            # It may or may not have been authorised: void the key, which
            # also bars a request still on its way, then give the units back.
            self.log.warn(
                "purchase {purchase_id}: no answer from the payments service ({why})",
                purchase_id=purchase.id,
                why=str(e),
            )
            voided = await self._void(purchase.payment_key)
            await purchasedb.give_back(
                self.product,
                purchase.id,
                ABORTED,
                "the payments service could not be reached",
                void_needed=not voided,
            )
            return
        await self._settle(purchase.id, answer)

    async def _settle(self, purchase_id: int, answer: dict) -> None:
        """Settle a pending purchase by the payments service's answer."""
        if answer.get("approved") and not answer.get("voided"):
            await purchasedb.complete(self.product, purchase_id, answer["authorization_id"])
        elif answer.get("voided"):
            await purchasedb.give_back(
                self.product,
                purchase_id,
                ABORTED,
                "the payment was voided",
                authorization_id=answer.get("authorization_id"),
            )
        else:
            await purchasedb.give_back(
                self.product,
                purchase_id,
                DECLINED,
                answer.get("reason") or "the card was declined",
                authorization_id=answer.get("authorization_id"),
            )

    async def _void(self, payment_key: str) -> bool:
        """Void whatever the payments service holds under a key; whether it
        could be done."""
        try:
            await self.payments.call("VoidPayment", {"idempotency_key": payment_key})
        except (PaymentsUnavailable, PaymentsError):
            return False
        return True

    async def _earlier_answer(self, buyer_id: int, key: str) -> dict:
        """The answer to the purchase already filed under C{key}, once it is
        settled."""
        waited = 0.0
        recovered = False
        while True:
            purchase = await purchasedb.find(self.product, buyer_id, key)
            if purchase is None:
                # It was aborted in the meantime: its key is free again,
                # and this request changed nothing.
                raise ApiError(
                    UNAVAILABLE,
                    "an earlier purchase with this idempotency key failed; retry",
                )
            if purchase.state != PENDING:
                return _answer(purchase)
            if waited >= RECOVER_AFTER and not recovered:
                recovered = True
                try:
                    await self._recover(purchase)
                except (PaymentsUnavailable, PaymentsError) as e:
                    self.log.warn(
                        "purchase {purchase_id} stays pending: {why}",
                        purchase_id=purchase.id,
                        why=str(e),
                    )
                continue
            if waited >= WAIT_FOR_PENDING:
                raise ApiError(
                    UNAVAILABLE,
                    "a purchase with this idempotency key is still being paid; retry later",
                )
            await _sleep(self.clock, _POLL)
            waited += _POLL

    async def sweep(self, settle_after: float) -> int:
        """Settle the purchases left pending for more than C{settle_after}
        seconds, and void the payments of aborted purchases that still
        need it; how many purchases were settled."""
        settled = 0
        for purchase_id in await purchasedb.stale_pending(self.product, settle_after):
            try:
                purchase = await purchasedb.get(self.product, purchase_id)
                await self._recover(purchase)
                settled += 1
            except (PaymentsUnavailable, PaymentsError) as e:
                self.log.warn(
                    "purchase {purchase_id} stays pending: {why}",
                    purchase_id=purchase_id,
                    why=str(e),
                )
        for purchase_id, payment_key in await purchasedb.voids_needed(self.product):
            if await self._void(payment_key):
                await purchasedb.voided(self.product, purchase_id)
        return settled

    async def _recover(self, purchase: Purchase) -> None:
        try:
            answer = await self.payments.call(
                "GetPayment", {"idempotency_key": purchase.payment_key}
            )
        except PaymentsError as e:
            if e.code != "NOT_FOUND":
                raise
            answer = None
        if answer is None:
            # Never asked, or asked and not yet answered: make sure that it
            # will not be approved.
            answer = await self.payments.call(
                "VoidPayment", {"idempotency_key": purchase.payment_key}
            )
        self.log.info(
            "recovering purchase {purchase_id} left pending: {outcome}",
            purchase_id=purchase.id,
            outcome="approved" if answer["approved"] and not answer["voided"] else "undone",
        )
        await self._settle(purchase.id, answer)


def _answer(purchase: Purchase) -> dict:
    """MakePurchase's answer for a settled purchase, or its error."""
    if purchase.state == COMPLETED:
        return purchase.answer()
    if purchase.state == DECLINED:
        raise ApiError(PAYMENT_DECLINED, f"the payment was declined: {purchase.reason}")
    if purchase.state == ABORTED:
        raise ApiError(
            UNAVAILABLE,
            "the financial-transactions service cannot be reached;"
            " nothing was bought, retry later",
        )
    raise ApiError(UNAVAILABLE, "the purchase is still being paid; retry later")


def _sleep(clock, seconds: float) -> defer.Deferred:
    d: defer.Deferred = defer.Deferred()
    clock.callLater(seconds, d.callback, None)
    return d
