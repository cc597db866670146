"""The financial-transactions service's APIs: authorise and void card payments.

It speaks the framing and envelope of PROTOCOL.md.  Its one caller is the
buyer service, which puts the shared secret (marketplace/payments/paymentsecret.py)
in every request's C{session_id}: a request without it is answered
NOT_LOGGED_IN, one with another value INVALID_CREDENTIALS, before anything
is read or written, so nobody else learns a decision, a decline reason or
whether a key is filed.

| api | payload | answer payload |
| --- | --- | --- |
| AuthorizePayment | name, card_number, expiration_date "MM/YY", security_code, amount, idempotency_key | authorization_id, approved, voided, reason (why declined, else null) |
| VoidPayment | authorization_id or idempotency_key | the authorisation, voided |
| GetPayment | idempotency_key | the authorisation, or NOT_FOUND |

A malformed or expired card is declined; a well-formed one is approved with
probability C{approval_rate}.  Either way the answer is filed under the
idempotency key, and asking again with that key gives the first answer.
"""

import random
from datetime import datetime, timezone
from decimal import Decimal
from typing import Dict, Optional

from twisted.logger import Logger

from marketplace.contract import money, validate
from marketplace.contract.errors import INVALID_CREDENTIALS, NOT_FOUND, ApiError, bad_request
from marketplace.payments import cards, paymentsdb, paymentsecret
from marketplace.postgres.database import Database
from marketplace.frame.dispatch import Api, Call, Dispatcher, Session

DEFAULT_APPROVAL_RATE = 0.9
AMOUNT_MAX = Decimal("999999999999999999.99")  # numeric(20, 2)


def amount(payload: dict, name: str = "amount") -> Decimal:
    """An amount of money: a number (or decimal string) from 0 with at most
    two decimal places."""
    return money.amount(payload, name, AMOUNT_MAX)


def _answer(authorization: dict) -> dict:
    return {
        "authorization_id": authorization["authorization_id"],
        "idempotency_key": authorization["idempotency_key"],
        "approved": authorization["approved"],
        "voided": authorization["voided"],
        "reason": authorization["reason"],
    }


class PaymentApis:
    """Card authorisations on the payments database, for callers that show
    C{secret}.

    C{clock} gives the time (C{seconds()}, as a reactor does) against which
    expiry dates are checked; C{chance} draws the approvals.
    """

    log = Logger()

    def __init__(
        self,
        payments: Database,
        secret: str,
        approval_rate: float,
        clock,
        chance: Optional[random.Random] = None,
    ) -> None:
        self.payments = payments
        self.secret = secret
        self.approval_rate = approval_rate
        self.clock = clock
        self.chance = chance or random.SystemRandom()

    def _today(self):
        return datetime.fromtimestamp(self.clock.seconds(), timezone.utc).date()

    def decide(self, name: str, number: str, expiration: str, code: str) -> Optional[str]:
        """Why a card is declined, or None if it is approved."""
        reason = cards.decline_reason(name, number, expiration, code, self._today())
        if reason is None and not self.chance.random() < self.approval_rate:
            reason = "the card issuer declined the payment"
        return reason

    async def authorize(self, call: Call) -> dict:
        payload = call.payload
        key = validate.idempotency_key(payload)
        total = amount(payload)
        # Only the type of the card fields is the caller's business: what
        # is in them is for the decision, and a bad card is a decline.
        name = validate.text(payload, "name", 0, 200)
        number = validate.text(payload, "card_number", 0, 64)
        expiration = validate.text(payload, "expiration_date", 0, 16)
        code = validate.text(payload, "security_code", 0, 16)
        existing = await paymentsdb.by_key(self.payments, key)
        if existing is not None:
            return _answer(existing)
        reason = self.decide(name, number, expiration, code)
        authorization = await paymentsdb.record(
            self.payments,
            key,
            name,
            cards.last_four(number),
            total,
            approved=reason is None,
            reason=reason,
        )
        self.log.info(
            "payment {authorization_id} of {amount}: {outcome}",
            authorization_id=authorization["authorization_id"],
            amount=str(total),
            outcome="approved" if authorization["approved"] else authorization["reason"],
        )
        return _answer(authorization)

    async def void(self, call: Call) -> dict:
        payload = call.payload
        authorization_id = validate.text(payload, "authorization_id", 1, 64, required=False)
        if authorization_id is not None:
            authorization = await paymentsdb.void_by_id(self.payments, authorization_id)
            if authorization is None:
                raise ApiError(NOT_FOUND, f"there is no authorisation {authorization_id}")
        else:
            key = validate.idempotency_key(payload, required=False)
            if key is None:
                raise bad_request('give field "authorization_id" or "idempotency_key"')
            authorization = await paymentsdb.void_by_key(self.payments, key)
        self.log.info(
            "payment {authorization_id} voided",
            authorization_id=authorization["authorization_id"],
        )
        return _answer(authorization)

    async def get(self, call: Call) -> dict:
        key = validate.idempotency_key(call.payload)
        authorization = await paymentsdb.by_key(self.payments, key)
        if authorization is None:
            raise ApiError(NOT_FOUND, "nothing is filed under that idempotency key")
        return _answer(authorization)

    def apis(self) -> Dict[str, Api]:
        """Every payments API, by name."""
        return {
            "AuthorizePayment": Api(self.authorize),
            "VoidPayment": Api(self.void),
            "GetPayment": Api(self.get),
        }

    async def authenticate(self, shown: str) -> Session:
        """The caller, if C{shown} (the request's session_id) is the secret."""
        if not paymentsecret.matches(shown, self.secret):
            raise ApiError(
                INVALID_CREDENTIALS,
                "the financial-transactions service answers the buyer service only",
            )
        return _BUYER_SERVICE

    def dispatcher(self) -> Dispatcher:
        """The dispatcher that answers the payments service's frames."""
        return Dispatcher("payments", self.apis(), self.authenticate)


# The one caller there is.
_BUYER_SERVICE = Session(user_id=0, key="buyer service")
