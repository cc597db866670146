"""Settings of the marketplace daemons: command-line options first, then the
environment, then a C{.env} file in the working directory, then defaults.

Every option C{--some-name} of a daemon may be set in the environment as
C{MARKETPLACE_SOME_NAME} (L{variable}).
"""

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

from dotenv import dotenv_values

from marketplace.customer.accounts import DEFAULT_SESSION_TIMEOUT, AccountLimits
from marketplace.customer.accounts import limits_from_options as account_limits_from
from marketplace.payments import paymentsecret
from marketplace.payments.apis import DEFAULT_APPROVAL_RATE
from marketplace.buyer.paymentclient import DEFAULT_PAYMENTS
from marketplace.buyer.paymentclient import DEFAULT_TIMEOUT as DEFAULT_PAYMENTS_TIMEOUT
from marketplace.frame.limits import Limits
from marketplace.frame.limits import from_options as limits_from
from marketplace.frame.protocol import DEFAULT_MAX_FRAME

DEFAULT_SETTLE_AFTER = 30.0

PREFIX = "MARKETPLACE_"


def variable(option: str) -> str:
    """The environment variable of an option: C{--pool-size} (or the
    setting C{pool_size}) is C{MARKETPLACE_POOL_SIZE}."""
    return PREFIX + option.upper().replace("-", "_")


DEFAULTS = {
    "customer_db": None,
    "product_db": None,
    "data_dir": "var",
    "pool_size": 4,
    "session_timeout": DEFAULT_SESSION_TIMEOUT,
    "max_frame": DEFAULT_MAX_FRAME,
    "payments_db": None,
    "approval_rate": DEFAULT_APPROVAL_RATE,
    "payments": DEFAULT_PAYMENTS,
    "payments_timeout": DEFAULT_PAYMENTS_TIMEOUT,
    "settle_after": DEFAULT_SETTLE_AFTER,
    "payments_secret": None,
    "unsafe_async_commit": False,
    "workers": 1,
    "customer_owner_db": None,
    "product_owner_db": None,
    "payments_owner_db": None,
}


_BOOLEANS = {
    "1": True, "yes": True, "true": True, "on": True,
    "0": False, "no": False, "false": False, "off": False, "": False,
}

#: The environment variable of each setting.
ENVIRONMENT = {name: variable(name) for name in DEFAULTS}


@dataclass(frozen=True)
class Settings:
    """Where the databases are and how the services behave.

    With neither database set, the services run an embedded PostgreSQL
    under C{data_dir}.  With only one set, both use it.  The payments
    database defaults to the product database when that is set, else to
    the embedded server's "payments" database.
    """

    customer_db: Optional[str] = None
    product_db: Optional[str] = None
    data_dir: Path = Path("var")
    pool_size: int = 4
    session_timeout: float = DEFAULT_SESSION_TIMEOUT
    max_frame: int = DEFAULT_MAX_FRAME
    # The financial-transactions service: its database (with other
    # databases set but not this one, the product database), the chance it
    # approves a well-formed card, and where the buyer service reaches it.
    payments_db: Optional[str] = None
    approval_rate: float = DEFAULT_APPROVAL_RATE
    payments: str = DEFAULT_PAYMENTS
    payments_timeout: float = DEFAULT_PAYMENTS_TIMEOUT
    # Seconds after which a purchase still pending (its buyer daemon died
    # before the payment was settled) is settled by the sweeper.
    settle_after: float = DEFAULT_SETTLE_AFTER
    # What the buyer service shows the payments service (paymentsecret.py);
    # None: the secret file in data_dir.  Kept out of repr, and so of logs.
    payments_secret: Optional[str] = field(default=None, repr=False)
    # Answer writes before their commit reaches the disk: faster, but a
    # crash of PostgreSQL (even of one backend) may lose acknowledged writes.
    unsafe_async_commit: bool = False
    # Processes serving each service's ports (marketplace.daemon.workers).
    workers: int = 1
    # The limits of each connection and of the accounts (frame/limits.py,
    # customer/accounts.py).
    limits: Limits = field(default_factory=Limits)
    accounts: AccountLimits = field(default_factory=AccountLimits)
    # The connections of the role that owns each database's tables and
    # applies schema.sql (postgres/roles.py); None: the service connection
    # itself, as when it is a superuser's.
    customer_owner_db: Optional[str] = None
    product_owner_db: Optional[str] = None
    payments_owner_db: Optional[str] = None

    @property
    def embedded(self) -> bool:
        """Whether the services run their own PostgreSQL."""
        return self.customer_db is None and self.product_db is None

    @property
    def one_database(self) -> bool:
        """Whether customer and product data share a database (the
        embedded one has them in one, postgres/embedded.py)."""
        return self.customer_db == self.product_db


def environment(env: Optional[Mapping[str, str]] = None, dotenv: str = ".env") -> dict:
    """The process environment over the values of the C{.env} file."""
    values = {k: v for k, v in dotenv_values(dotenv).items() if v is not None}
    values.update(os.environ if env is None else env)
    return values


def load(
    options: Mapping, env: Optional[Mapping[str, str]] = None, limits: Optional[Mapping] = None
) -> Settings:
    """Settings from parsed options (None where not given) and C{env}; with
    C{limits} (the parsed options of frame/limits.py's and, where the
    daemon has them, customer/accounts.py's OPTIONS), its limits too.

    Raises ValueError, naming the setting, for a value of the wrong kind.
    """
    env = environment() if env is None else env
    raw = {}
    for name, key in ENVIRONMENT.items():
        value = options.get(name)
        if value is None:
            value = env.get(key) or DEFAULTS[name]
        raw[name] = value
    customer = raw["customer_db"] or raw["product_db"]
    product = raw["product_db"] or raw["customer_db"]
    payments_db = raw["payments_db"] or product
    owners = _owners(
        {"customer": customer, "product": product, "payments": payments_db},
        {name: raw[f"{name}_owner_db"] for name in ("customer", "product", "payments")},
    )
    try:
        pool_size = int(raw["pool_size"])
        timeout = float(raw["session_timeout"])
        max_frame = int(raw["max_frame"])
        approval_rate = float(raw["approval_rate"])
        payments_timeout = float(raw["payments_timeout"])
        settle_after = float(raw["settle_after"])
    except ValueError as e:
        raise ValueError(f"a setting is not a number: {e}")
    try:
        workers = int(raw["workers"])
    except ValueError:
        raise ValueError("--workers must be a whole number")
    if workers < 1:
        raise ValueError("--workers must be at least 1")
    if pool_size < 1 or timeout <= 0 or max_frame < 64:
        raise ValueError(
            "pool size must be at least 1, session timeout above 0,"
            " frame limit at least 64 bytes"
        )
    if not 0 <= approval_rate <= 1 or payments_timeout <= 0 or settle_after < 0:
        raise ValueError(
            "approval rate must be from 0 to 1, payments timeout above 0,"
            " settle-after at least 0"
        )
    if raw["payments_secret"] is not None:
        paymentsecret.check(raw["payments_secret"])
    unsafe = raw["unsafe_async_commit"]
    if isinstance(unsafe, str):
        if unsafe.strip().lower() not in _BOOLEANS:
            raise ValueError(f"MARKETPLACE_UNSAFE_ASYNC_COMMIT is not yes or no: {unsafe!r}")
        unsafe = _BOOLEANS[unsafe.strip().lower()]
    return Settings(
        unsafe_async_commit=bool(unsafe),
        customer_db=customer,
        product_db=product,
        data_dir=Path(raw["data_dir"]),
        pool_size=pool_size,
        session_timeout=timeout,
        max_frame=max_frame,
        payments_db=payments_db,
        approval_rate=approval_rate,
        payments=raw["payments"],
        payments_timeout=payments_timeout,
        settle_after=settle_after,
        payments_secret=raw["payments_secret"],
        customer_owner_db=owners["customer"],
        product_owner_db=owners["product"],
        payments_owner_db=owners["payments"],
        workers=workers,
        **_limits(limits),
    )


def _limits(options: Optional[Mapping]) -> dict:
    """The limits named by parsed options, as fields of L{Settings}."""
    if options is None:
        return {}
    found = {"limits": limits_from(options)}
    if "max-sessions" in options:
        found["accounts"] = account_limits_from(options)
    return found


def _owners(service: Mapping[str, Optional[str]], given: Mapping[str, Optional[str]]) -> dict:
    """The owner connection of each database: the one given for it, else
    the one given for another database of the same service connection
    (customer and product data in one database, say), else None."""
    owners = {}
    for name, dsn in service.items():
        owner = given[name]
        if owner is None:
            owner = next(
                (given[other] for other, same in service.items() if same == dsn and given[other]),
                None,
            )
        owners[name] = owner
    return owners
