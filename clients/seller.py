"""marketplace-seller-cli: the seller's terminal program.

Usage: marketplace-seller-cli [HOST [PORT]] | --connect ENDPOINT
(defaults: localhost 8080).
"""

from typing import Dict, List, Optional

from marketplace.clientlib import ClientError, SellerClient
from marketplace.contract.errors import BAD_REQUEST

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
    price,
    take_option,
    whole,
)


def _name(text: str) -> str:
    if not 1 <= len(text) <= 32:
        raise UsageError("NAME must be 1 to 32 characters")
    return text


def _keywords(text: str) -> List[str]:
    return keywords(text.split())


# The questions of sell without arguments, each with the check of its
# answer: a bad answer is reported at once and asked again.
QUESTIONS = (
    ("Item name: ", _name),
    ("Category (a number): ", lambda text: whole(text, "CATEGORY", 0)),
    (
        "Condition (new or used): ",
        lambda text: choice(text, "CONDITION", ("new", "used")),
    ),
    ("Price: ", price),
    ("Units for sale: ", lambda text: whole(text, "QUANTITY")),
    ("Keywords (up to 5, space-separated): ", _keywords),
)


async def sell(shell: Shell, words: List[str]) -> None:
    """sell NAME CATEGORY CONDITION PRICE QUANTITY [KEYWORD...], or asked field by field."""
    if not words and shell.interactive:
        answers = [
            await shell.ask(question, check=check) for question, check in QUESTIONS
        ]
        words = answers[:5] + answers[5].split()
    arity(words, 5)
    name = _name(words[0])
    category = whole(words[1], "CATEGORY", 0)
    condition = choice(words[2], "CONDITION", ("new", "used"))
    amount = price(words[3])
    units = whole(words[4], "QUANTITY")
    tags = keywords(words[5:])
    answer = await shell.client.register_item_for_sale(
        name, category, tags, condition, amount, units
    )
    shell.remember(answer)
    shell.write(
        f"Item {answer['item_id']} is on sale: {format.plural(units, 'unit')} of"
        f" {name} at {format.money(amount)}."
    )


async def change_price(shell: Shell, words: List[str]) -> None:
    """price ITEM_ID PRICE: change an item's price."""
    arity(words, 2, 2)
    item = await shell.client.change_item_price(item_id(words[0]), price(words[1]))
    shell.remember(item)
    shell.write(
        f"{item['item_id']} {item['item_name']} now costs {format.money(item['price'])}."
    )


async def remove_units(shell: Shell, words: List[str]) -> None:
    """remove-units ITEM_ID N: take units off sale."""
    arity(words, 2, 2)
    units = whole(words[1], "N")
    wanted = item_id(words[0])
    try:
        item = await shell.client.update_units_for_sale(wanted, units)
    except ClientError as e:
        if e.code != BAD_REQUEST:
            raise
        await _too_many_units(shell, wanted, units)
        raise
    shell.remember(item)
    shell.write(
        f"Took {format.plural(units, 'unit')} of {item['item_id']} {item['item_name']}"
        f" off sale; {item['quantity']} left."
    )


async def _too_many_units(shell: Shell, wanted: str, units: int) -> None:
    """Say in words, with the count, that the item has fewer units on sale
    than were to be taken off (the service names the field, not the count)."""
    answer = await shell.client.display_items_for_sale()
    for item in answer["items"]:
        if item["item_id"] == wanted and item["quantity"] < units:
            raise ClientError(
                BAD_REQUEST,
                f"cannot take {format.plural(units, 'unit')} of {wanted}"
                f" {item['item_name']} off sale: it has only {item['quantity']} on sale",
                "UpdateUnitsForSale",
            )


async def items(shell: Shell, words: List[str]) -> None:
    """items [--page N]: the seller's items as a table, a page at a time."""
    page, words = take_option(words, "--page")
    arity(words, 0, 0)
    answer = await shell.client.display_items_for_sale()
    shell.remember(*answer["items"])
    _show_items(shell, answer["items"], 1 if page is None else whole(page, "N"))


def _show_items(shell: Shell, everything: List[dict], page: int) -> None:
    size = format.PAGE_SIZE
    first = (page - 1) * size
    shown = everything[first : first + size]
    if everything and not shown:
        raise UsageError(format.only(len(everything), "item"))
    shell.write(format.seller_items(shown, shell.width, first + 1, everything))

    async def following() -> None:
        _show_items(shell, everything, page + 1)

    shell.more = following if first + size < len(everything) else None


async def rating(shell: Shell, words: List[str]) -> None:
    """rating: this seller's rating."""
    arity(words, 0, 0)
    shell.write(format.rating(await shell.client.get_seller_rating()))


COMMANDS: Dict[str, Command] = command_table(
    common_commands(
        lambda: COMMANDS,
        [
            Command(
                "sell",
                "NAME CATEGORY new|used PRICE QUANTITY [KEYWORD...]",
                "put a new item on sale",
                'sell "Blue mug" 3 new 4.50 10 mug kitchen',
                sell,
                details="Quote a NAME of several words. Without arguments each"
                " field is asked for. At most 5 keywords of 1 to 8 characters.",
                aliases=("new-item",),
            ),
            Command(
                "price",
                "ITEM_ID PRICE",
                "change the price of one of your items",
                "price 3-17 3.99",
                change_price,
            ),
            Command(
                "remove-units",
                "ITEM_ID N",
                "take N units of an item off sale",
                "remove-units 3-17 2",
                remove_units,
            ),
            Command(
                "items",
                "[--page N]",
                "list your items, sold-out ones too",
                "items",
                items,
                details=f"Shows {format.PAGE_SIZE} items at a time and how many"
                " there are in all: 'more' shows the next ones, --page N page N.",
            ),
            Command("rating", "", "show your thumbs and sales", "rating", rating),
        ],
    )
)


def main(argv: Optional[List[str]] = None) -> None:
    """The console command marketplace-seller-cli."""
    from clients.program import run

    run(argv, SellerClient, COMMANDS)


if __name__ == "__main__":
    main()
