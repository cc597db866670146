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

from marketplace.clientlib import BuyerClient, SellerClient

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
    #: The catalog's words, most frequent first, and its categories (the
    #: search-shapes and upkeep workloads).
    words: List[str] = field(default_factory=list)
    categories: int = CATEGORIES
    drawer: object = None

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


def add_to_cart_unkeyed(state: ClientState) -> Tuple[str, defer.Deferred]:
    """AddItemToCart without a request key, as a client that never sends a
    call again may send it (PROTOCOL.md: the key is optional)."""
    client: BuyerClient = state.client
    message = {
        "type": "request",
        "api": "AddItemToCart",
        "session_id": client.session_id,
        "payload": {"item_id": state.next_item(), "quantity": 1},
    }
    return "AddItemToCart", client.connection.call(message)


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


# Search shapes (on a catalog of marketplace/bench/catalog.py): each is
# labelled as an API of its own in the report.


def _shape(label: str, keywords: Callable[["ClientState"], List[str]]) -> Step:
    def step(state: ClientState) -> Tuple[str, defer.Deferred]:
        client: BuyerClient = state.client
        category = state.rng.randrange(state.categories)
        return label, client.search_items_for_sale(category, keywords(state))

    step.__name__ = label
    return step


search_none = _shape("Search, no keywords", lambda state: [])
search_common = _shape("Search, the most common keyword", lambda state: state.words[:1])
search_rare = _shape(
    "Search, one rare keyword",
    lambda state: [state.words[state.rng.randrange(len(state.words) // 2, len(state.words))]],
)
search_three = _shape(
    "Search, three keywords (Zipf)", lambda state: state.drawer.distinct(3)
)
search_three_common = _shape(
    "Search, the three most common keywords", lambda state: state.words[:3]
)


def register_item(state: ClientState) -> Tuple[str, defer.Deferred]:
    client: SellerClient = state.client
    rng = state.rng
    words = [state.drawer.draw() for _ in range(2)]
    return "RegisterItemForSale", client.register_item_for_sale(
        item_name=" ".join(words).capitalize()[:32],
        category=rng.randrange(state.categories),
        keywords=state.drawer.distinct(3),
        condition="new",
        price=Decimal(rng.randrange(100, 50000)) / 100,
        quantity=1000,
    )


def take_one_off_sale(state: ClientState) -> Tuple[str, defer.Deferred]:
    client: SellerClient = state.client
    return "UpdateUnitsForSale", client.update_units_for_sale(state.next_item(), 1)


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
            "seed-unkeyed",
            "the seed workload with AddItemToCart sent without a request key:"
            " against seed, what the keys cost",
            seller=(display_items,),
            buyer=(add_to_cart_unkeyed,),
        ),
        Workload(
            "browse",
            "buyers SearchItemsForSale, GetItem, AddItemToCart, DisplayCart;"
            " sellers DisplayItemsForSale, ChangeItemPrice",
            seller=(display_items, change_price),
            buyer=(search, get_item, add_to_cart, display_cart),
        ),
        Workload(
            "search-shapes",
            "buyers SearchItemsForSale of each shape (no keywords, the most common"
            " keyword, a rare one, three drawn by frequency, the three most common),"
            " GetItem, AddItemToCart; sellers DisplayItemsForSale (use with --catalog)",
            seller=(display_items,),
            buyer=(search_none, search_common, search_rare, search_three,
                   search_three_common, get_item, add_to_cart),
        ),
        Workload(
            "upkeep",
            "sellers RegisterItemForSale, ChangeItemPrice, UpdateUnitsForSale (one"
            " unit); buyers DisplayCart: the writes that keep search's indexes",
            seller=(register_item, change_price, take_one_off_sale),
            buyer=(display_cart,),
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
