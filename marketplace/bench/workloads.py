"""What the benchmark's clients call, one workload at a time.

A workload gives each role a cycle of steps; a client repeats its cycle
for as many calls as a run asks, one call after the other.  A step is a
function of the client's L{ClientState} that makes one call through the
client library and returns the API's name and the call's Deferred.

The data a workload needs (accounts, sessions, items) is made before the
first run by L{runner}; every seller puts L{ITEMS_PER_SELLER} items up for
sale, with stock enough for every run, and buyer I shops at seller I.
"""

import random
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Callable, Dict, List, Tuple

from twisted.internet import defer

from marketplace.client import BuyerClient, SellerClient

ITEMS_PER_SELLER = 5
# Enough units that no run of any size sells out (INT32 is the limit).
STOCK = 2_000_000_000
CATEGORIES = 10
KEYWORDS = ("bench", "phone", "case", "cable", "lamp", "book", "mug")

Step = Callable[["ClientState"], Tuple[str, defer.Deferred]]


@dataclass
class ClientState:
    """One benchmark client: its library client and what it works on."""

    role: str
    index: int
    client: object
    #: Item ids: a seller's own, or the ones a buyer shops for.
    item_ids: List[str] = field(default_factory=list)
    category: int = 0
    rng: random.Random = field(default_factory=random.Random)
    position: int = 0

    def next_item(self) -> str:
        """The client's items in turn."""
        item_id = self.item_ids[self.position % len(self.item_ids)]
        self.position += 1
        return item_id


def item_spec(seller: int, number: int) -> dict:
    """The RegisterItemForSale fields of a seller's item C{number}."""
    return {
        "item_name": f"bench item {seller}-{number}",
        "category": seller % CATEGORIES,
        "keywords": ["bench", KEYWORDS[1 + (seller + number) % (len(KEYWORDS) - 1)]],
        "condition": "new" if number % 2 else "used",
        "price": Decimal(10 + number) + Decimal("0.99"),
        "quantity": STOCK,
    }


# Seller steps


def display_items(state: ClientState) -> Tuple[str, defer.Deferred]:
    client: SellerClient = state.client
    return "DisplayItemsForSale", client.display_items_for_sale()


def change_price(state: ClientState) -> Tuple[str, defer.Deferred]:
    client: SellerClient = state.client
    price = Decimal(state.rng.randrange(100, 10000)) / 100
    return "ChangeItemPrice", client.change_item_price(state.next_item(), price)


# Buyer steps


def add_to_cart(state: ClientState) -> Tuple[str, defer.Deferred]:
    client: BuyerClient = state.client
    return "AddItemToCart", client.add_item_to_cart(state.next_item(), 1)


def search(state: ClientState) -> Tuple[str, defer.Deferred]:
    client: BuyerClient = state.client
    keyword = KEYWORDS[state.rng.randrange(len(KEYWORDS))]
    return "SearchItemsForSale", client.search_items_for_sale(
        state.category, [keyword], limit=10
    )


def get_item(state: ClientState) -> Tuple[str, defer.Deferred]:
    client: BuyerClient = state.client
    item_id = state.item_ids[state.position % len(state.item_ids)]
    return "GetItem", client.get_item(item_id)


def display_cart(state: ClientState) -> Tuple[str, defer.Deferred]:
    client: BuyerClient = state.client
    return "DisplayCart", client.display_cart()


# A card of the right form: it passes the Luhn check and has not expired,
# so the financial-transactions service approves it with its approval rate.
CARD = {
    "name": "Bench Buyer",
    "card_number": "4111 1111 1111 1111",
    "expiration_date": "12/99",
    "security_code": "123",
}


def make_purchase(state: ClientState) -> Tuple[str, defer.Deferred]:
    client: BuyerClient = state.client
    return "MakePurchase", client.make_purchase(**CARD)


@dataclass(frozen=True)
class Workload:
    """The step cycles of both roles, and what is done between runs."""

    name: str
    description: str
    seller: Tuple[Step, ...]
    buyer: Tuple[Step, ...]
    #: Whether buyers clear their active cart before each run (untimed), so
    #: carts do not grow from run to run.
    clear_cart: bool = True
    #: An API the buyer service must have for this workload.
    needs: str = ""


WORKLOADS: Dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(
            "seed",
            "buyers AddItemToCart, sellers DisplayItemsForSale",
            seller=(display_items,),
            buyer=(add_to_cart,),
        ),
        Workload(
            "browse",
            "buyers SearchItemsForSale, GetItem, AddItemToCart, DisplayCart;"
            " sellers DisplayItemsForSale, ChangeItemPrice",
            seller=(display_items, change_price),
            buyer=(search, get_item, add_to_cart, display_cart),
        ),
        Workload(
            "purchase",
            "buyers AddItemToCart, MakePurchase (a well-formed card);"
            " sellers DisplayItemsForSale, ChangeItemPrice",
            seller=(display_items, change_price),
            buyer=(add_to_cart, make_purchase),
            needs="MakePurchase",
        ),
    )
}


__all__ = ["ClientState", "Workload", "WORKLOADS", "item_spec", "ITEMS_PER_SELLER"]
