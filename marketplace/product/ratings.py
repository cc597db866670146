"""A seller's rating: the name from the customer database, the votes and
sales from the product database."""

from typing import Optional, Union

from marketplace.customer import customerdb
from marketplace.postgres.database import Database, Replicas
from marketplace.product import productdb


async def seller_rating(
    customer: Union[Database, Replicas], product: Union[Database, Replicas], seller_id: int
) -> Optional[dict]:
    """A seller's rating as PROTOCOL.md returns it, or None: no such seller
    (read on the standbys where C{customer} and C{product} are theirs)."""
    name = await customerdb.account_name(customer, customerdb.SELLER, seller_id)
    if name is None:
        return None
    counts = await productdb.seller_counts(product, seller_id)
    return {"seller_id": seller_id, "name": name, **counts}
