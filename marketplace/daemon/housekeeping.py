"""Periodic clean-up: ended sessions and the active carts they leave,
counts of failed logins whose window has passed, old sign-up counts, and
request keys kept long enough and their counts of windows that have
passed."""

from marketplace.customer import customerdb
from marketplace.postgres.database import Database
from marketplace.product import productdb
from marketplace.postgres import requestkeys
from marketplace.frame.limits import LOGIN_WINDOW


async def sweep_sessions(customer: Database, product: Database, timeout: float) -> int:
    """Delete expired sessions and every active cart without a live session.

    Sessions are already invalid once idle for C{timeout} (the database
    checks that on each request); this only frees their rows.  A cart whose
    session is gone is an orphan if a login or logout failed half-way
    between the two databases.  Returns how many carts were dropped.
    """
    expired = await customerdb.expire_sessions(customer, timeout)
    if product.dsn != customer.dsn:
        await requestkeys.sweep(customer, timeout)
    await requestkeys.sweep(product, timeout, counted=True)
    await customerdb.expire_login_failures(customer, LOGIN_WINDOW)
    await customerdb.expire_rate_buckets(customer)
    await productdb.drop_carts(product, expired)
    idle = await productdb.idle_cart_sessions(product, timeout)
    if not idle:
        return len(expired)
    live = await customerdb.live_sessions(customer, idle)
    orphans = [key for key in idle if key not in live]
    await productdb.drop_carts(product, orphans)
    return len(set(expired) | set(orphans))
