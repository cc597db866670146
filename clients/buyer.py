"""marketplace-buyer-cli: the buyer's terminal program.

Usage: marketplace-buyer-cli [HOST [PORT]] | --connect ENDPOINT
(defaults: localhost 8081).
"""

import re
from datetime import date
from typing import Dict, List, Optional, Tuple

from marketplace.payments import cards
from marketplace.clientlib import BuyerClient, ClientError

from clients import format
from clients.shell import (
    Command,
    Shell,
    UsageError,
    arity,
    choice,
    command_table,
    common_commands,
    item_id,
    keywords,
    take_option,
    whole,
)

# The most results one search request may ask for (PROTOCOL.md).
_MOST = 500
_CODE = re.compile(r"[0-9]{3,4}")


async def search(shell: Shell, words: List[str]) -> None:
    """search CATEGORY [KEYWORD...] [--page N]: a page of matching items."""
    page, words = take_option(words, "--page")
    arity(words, 1)
    category = whole(words[0], "CATEGORY", 0)
    wanted = keywords(words[1:])
    await _search_page(shell, category, wanted, 1 if page is None else whole(page, "N"))


async def _search_page(shell: Shell, category: int, wanted: List[str], page: int):
    """Page C{page} of a search (limit and offset), with how many there are,
    or that there are more than the next multiple of L{COUNTED_BY}."""
    size = format.PAGE_SIZE
    offset = (page - 1) * size
    answer = await shell.client.search_items_for_sale(category, wanted, size, offset)
    found = answer["items"]
    total, exact = offset + len(found), True
    if len(found) == size:
        up_to = (total // COUNTED_BY + 1) * COUNTED_BY
        total, exact = await _count(shell, category, wanted, total, up_to)
    elif offset and not found:
        # Past the end: how far it goes (fewer than the offset asked for).
        total, exact = await _count(shell, category, wanted, 0, None)
    shell.remember(*found)
    shell.write(
        format.search_results(found, category, shell.width, offset + 1, total, exact)
    )
    if found and (offset + len(found) < total or not exact):
        shell.more = lambda: _search_page(shell, category, wanted, page + 1)
    else:
        shell.more = None


#: A search counts its results for its "of N" line up to the next multiple
#: of this past the page, and past that says "of more than N": counting
#: every result of the commonest words among a million items took seconds
#: (a request per 500).
COUNTED_BY = 1000


async def _count(
    shell: Shell, category: int, wanted: List[str], counted: int, up_to: Optional[int]
) -> Tuple[int, bool]:
    """How many results there are, knowing the first C{counted}, and
    whether that is all: counting stops at C{up_to} (None: at the end),
    and then there are more than that."""
    while up_to is None or counted <= up_to:
        # One past up_to at most: it tells "exactly up_to" from "more".
        limit = _MOST if up_to is None else min(_MOST, up_to + 1 - counted)
        answer = await shell.client.search_items_for_sale(
            category, wanted, limit, counted
        )
        counted += len(answer["items"])
        if len(answer["items"]) < limit:
            return counted, True
    return up_to, False


async def item(shell: Shell, words: List[str]) -> None:
    """item ITEM_ID: one item, a field per line."""
    arity(words, 1, 1)
    answer = await shell.client.get_item(item_id(words[0]))
    shell.remember(answer)
    shell.write(format.item_details(answer, shell.width))


def _units(words: List[str]) -> int:
    return whole(words[1], "N") if len(words) > 1 else 1


async def add(shell: Shell, words: List[str]) -> None:
    """add ITEM_ID [N]: add units to the cart; the cart."""
    arity(words, 1, 2)
    wanted, units = item_id(words[0]), _units(words)
    cart = await shell.client.add_item_to_cart(wanted, units)
    shell.remember(*cart.get("cart", []))
    _unsaved(shell, cart)
    shell.write(
        format.cart(
            cart, f"Added {format.plural(units, 'unit')} of {wanted}.", shell.width
        )
    )


async def remove(shell: Shell, words: List[str]) -> None:
    """remove ITEM_ID [N]: take units out of the cart; the cart."""
    arity(words, 1, 2)
    wanted, units = item_id(words[0]), _units(words)
    cart = await shell.client.remove_item_from_cart(wanted, units)
    _unsaved(shell, cart)
    shell.write(
        format.cart(
            cart, f"Took {format.plural(units, 'unit')} of {wanted} out.", shell.width
        )
    )


def _unsaved(shell: Shell, cart: dict) -> None:
    """After a change of the active cart: leaving would lose it, unless it
    is empty (the saved cart, if any, stays)."""
    units = sum(line.get("quantity", 0) for line in cart.get("cart", []))
    shell.note_unsaved(
        f"the cart ({format.plural(units, 'unit')}) is not saved ('save' keeps"
        " it for your next login)"
        if units
        else None
    )


async def cart(shell: Shell, words: List[str]) -> None:
    """cart: the active cart with its total."""
    arity(words, 0, 0)
    answer = await shell.client.display_cart()
    shell.remember(*answer.get("cart", []))
    shell.write(format.cart(answer, width=shell.width))


async def save(shell: Shell, words: List[str]) -> None:
    """save: make the active cart the saved one."""
    arity(words, 0, 0)
    answer = await shell.client.save_cart()
    shell.note_unsaved(None)
    shell.write(
        format.cart(
            answer, "Saved the cart; it will be there at your next login.", shell.width
        )
    )


async def clear(shell: Shell, words: List[str]) -> None:
    """clear: empty the active cart."""
    arity(words, 0, 0)
    await shell.client.clear_cart()
    shell.note_unsaved(None)  # the saved cart stays as it was
    shell.write("Emptied the cart (the saved cart stays until you save again).")


async def buy(shell: Shell, words: List[str]) -> None:
    """buy [NAME CARD MM/YY CODE]: buy the cart, asking for the card if need be."""
    current = None
    if words:
        arity(words, 4, 4)
        name, number, expires, code = words
    elif not shell.interactive:
        raise UsageError("give the card as arguments in a script")
    else:
        current = await shell.client.display_cart()
        if not current.get("cart"):
            shell.fail("the cart is empty: add items first")
            return
        shell.write(format.cart(current, "Buying:", shell.width))
        # The card's details are private: no history keeps them.
        name = await shell.ask("Name on the card: ", check=_card_name, private=True)
        number = await shell.ask("Card number: ", check=_card_number, private=True)
        expires = await shell.ask("Expires (MM/YY): ", check=_expiry, private=True)
        code = await shell.ask("Security code: ", secret=True, check=_security_code)
    answer = await _pay(shell, [name, number, expires, code], current)
    shell.note_unsaved(None)
    shell.write(format.purchase(answer, shell.width, await _number_of(shell, answer)))


async def _number_of(shell: Shell, answer: dict) -> Optional[int]:
    """The buyer's own number of the purchase MakePurchase answered (their
    first, second...), from their history: not its purchase_id, which
    counts every buyer's purchases and declined attempts.  None if the
    history cannot be had now (the purchase is done all the same)."""
    try:
        bought = await shell.client.get_buyer_purchases()
    except ClientError:
        return None
    return format.purchase_numbers(bought.get("items", [])).get(answer.get("purchase_id"))


# Checks of the card's fields as they are typed (the payments service has
# the last word; these catch a typing slip before it is sent).


def _card_name(text: str) -> None:
    if not text.strip():
        raise UsageError("give the name as it is on the card")


def _card_number(text: str) -> None:
    digits = cards.card_digits(text)
    if digits is None:
        raise UsageError("a card number is 12 to 19 digits (spaces and dashes allowed)")
    if not cards.luhn_valid(digits):
        raise UsageError("that card number has a typing error (the Luhn check fails)")


def _expiry(text: str) -> None:
    expiry = cards.parse_expiry(text)
    if expiry is None:
        raise UsageError("write the expiry as MM/YY, for example 12/30")
    if cards.expired(*expiry, date.today()):
        raise UsageError("that card has expired")


def _security_code(text: str) -> None:
    if not _CODE.fullmatch(text):
        raise UsageError("the security code is the 3 or 4 digits on the card")


async def _pay(shell: Shell, card: List[str], shown: Optional[dict]) -> dict:
    """MakePurchase at the total of the cart C{shown} (if one was): while
    the prices change under it, show the new cart and ask again."""
    while True:
        expected = None if shown is None else shown.get("total_decimal", shown.get("total"))
        try:
            return await shell.client.make_purchase(*card, expected_total=expected)
        except ClientError as e:
            if e.code != "PRICE_CHANGED" or not isinstance(e.extra.get("cart"), dict):
                raise
            shown = e.extra["cart"]
        shell.write(
            format.cart(shown, "The prices have changed since the cart was shown:", shell.width)
        )
        total = format.money(shown.get("total_decimal", shown.get("total")))
        if (await shell.ask(f"Buy it for {total}? (yes/no): ")).strip().lower() not in (
            "y",
            "yes",
        ):
            raise ClientError("PRICE_CHANGED", "the prices changed; nothing was bought")


async def rate(shell: Shell, words: List[str]) -> None:
    """rate ITEM_ID up|down: feedback on a bought item."""
    arity(words, 2, 2)
    rated = item_id(words[0])
    thumbs_up = choice(words[1], "the vote", ("up", "down")) == "up"
    answer = await shell.client.provide_feedback(rated, thumbs_up)
    shell.write(format.feedback(answer, thumbs_up))


async def seller_rating(shell: Shell, words: List[str]) -> None:
    """seller-rating SELLER_ID: a seller's rating."""
    arity(words, 1, 1)
    seller_id = whole(words[0], "SELLER_ID", 0)
    shell.write(format.rating(await shell.client.get_seller_rating(seller_id)))


async def history(shell: Shell, words: List[str]) -> None:
    """history: the buyer's purchases, with dates, numbered from their first."""
    arity(words, 0, 0)
    answer = await shell.client.get_buyer_purchases()
    shell.remember(*answer.get("items", []))
    shell.write(format.purchases(answer, shell.width))


COMMANDS: Dict[str, Command] = command_table(
    common_commands(
        lambda: COMMANDS,
        [
            Command(
                "search",
                "CATEGORY [KEYWORD...] [--page N]",
                "find items for sale in a category",
                "search 3 mug kitchen",
                search,
                details="Best matches first. With no keywords, every item of the"
                f" category that has units on sale. At most 5 keywords. Shows"
                f" {format.PAGE_SIZE} items at a time and how many there are in"
                " all: 'more' shows the next ones, --page N page N.",
                aliases=("find",),
            ),
            Command(
                "item", "ITEM_ID", "show one item", "item 3-17", item, aliases=("show",)
            ),
            Command(
                "add",
                "ITEM_ID [N]",
                "put N units (default 1) in the cart",
                "add 3-17 2",
                add,
            ),
            Command(
                "remove",
                "ITEM_ID [N]",
                "take N units (default 1) out of the cart",
                "remove 3-17",
                remove,
            ),
            Command("cart", "", "show the cart and its total", "cart", cart),
            Command(
                "save",
                "",
                "keep the cart for your next login",
                "save",
                save,
            ),
            Command("clear", "", "empty the cart", "clear", clear),
            Command(
                "buy",
                "[NAME CARD MM/YY CODE]",
                "buy everything in the cart",
                'buy "Alice Smith" 4111111111111111 12/30 123',
                buy,
                details="Without arguments the card is asked for, the security code"
                " without showing it. 'Purchase 2 done' means your second purchase"
                " (a declined card uses up no number).",
                aliases=("checkout",),
            ),
            Command(
                "rate",
                "ITEM_ID up|down",
                "give thumbs up or down to an item you bought",
                "rate 3-17 up",
                rate,
            ),
            Command(
                "seller-rating",
                "SELLER_ID",
                "show a seller's thumbs and sales",
                "seller-rating 4",
                seller_rating,
                aliases=("seller",),
            ),
            Command(
                "history",
                "",
                "list what you bought",
                "history",
                history,
                details="PURCHASE numbers your own purchases: 1 is your first.",
                aliases=("purchases",),
            ),
        ],
    )
)


def main(argv: Optional[List[str]] = None) -> None:
    """The console command marketplace-buyer-cli."""
    from clients.program import run

    run(argv, BuyerClient, COMMANDS)


if __name__ == "__main__":
    main()
