"""Turning answers into text a person reads: aligned tables, totals, dates.

Plain functions from payload dicts to strings; nothing here does I/O.
Widths are display widths (C{wcwidth}): a CJK character or an emoji takes
two columns of a terminal, a combining accent none, so columns stay in line
whatever the names hold.  Tables given a C{width} fit it by shortening
their long text columns (names, keywords) with an ellipsis.
"""

from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Dict, Iterable, List, Optional, Sequence

import wcwidth

_CENT = Decimal("0.01")
ELLIPSIS = "…"
# A column that is shortened to fit keeps at least this many columns.
_NARROWEST = 6
#: Rows shown at a time by search and items; 'more' shows the next ones.
PAGE_SIZE = 20


def text_width(text: str) -> int:
    """The number of terminal columns C{text} takes."""
    width = wcwidth.width(text)
    return width if width >= 0 else len(text)


def shorten(text: str, width: int) -> str:
    """C{text} cut to at most C{width} columns, ending in an ellipsis if cut;
    never splits a character made of several code points (joined emoji)."""
    if text_width(text) <= width:
        return text
    kept, used = [], 0
    for grapheme in wcwidth.iter_graphemes(text):
        size = text_width(grapheme)
        if used + size > width - 1:
            break
        kept.append(grapheme)
        used += size
    return "".join(kept) + ELLIPSIS


def pad(text: str, width: int, right: bool = False) -> str:
    """C{text} padded with spaces to C{width} columns."""
    fill = " " * max(0, width - text_width(text))
    return fill + text if right else text + fill


def wrap(text: str, width: int, indent: str = "") -> List[str]:
    """C{text} wrapped on words to C{width} columns, each line after the
    first indented with C{indent}."""
    return wcwidth.wrap(
        text, max(10, width), subsequent_indent=indent, break_long_words=True
    ) or [""]


def money(value) -> str:
    """A price or total with two decimals: C{4.5} -> C{"4.50"}."""
    try:
        return str(Decimal(str(value)).quantize(_CENT))
    except (InvalidOperation, ValueError):
        return str(value)


def plural(count: int, word: str, words: str = "") -> str:
    """C{"1 unit"}, C{"3 units"}."""
    return f"{count} {word if count == 1 else (words or word + 's')}"


def only(count: int, word: str) -> str:
    """C{"there is only 1 item"}, C{"there are only 3 items"}: for a page
    past the end."""
    return f"there {'is' if count == 1 else 'are'} only {plural(count, word)}"


def date(value) -> str:
    """An ISO timestamp as local C{YYYY-MM-DD HH:MM}; other text as it is."""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone()
    return moment.strftime("%Y-%m-%d %H:%M")


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence],
    right: Iterable[int] = (),
    footer: Sequence = (),
    width: Optional[int] = None,
    shrink: Sequence[int] = (),
) -> str:
    """Columns padded to the widest cell; columns in C{right} (numbers) are
    right-aligned.  A C{footer} row comes after a rule, for totals.

    With a C{width}, the columns in C{shrink} (first the first) are made
    narrower until the table fits, and their long cells end in an ellipsis.
    """
    right = set(right)
    body = [[str(cell) for cell in row] for row in rows]
    foot = [str(cell) for cell in footer]
    widths = [text_width(h) for h in headers]
    for row in body + ([foot] if foot else []):
        for n, cell in enumerate(row):
            widths[n] = max(widths[n], text_width(cell))
    if width is not None:
        excess = sum(widths) + 2 * (len(widths) - 1) - width
        for n in shrink:
            if excess <= 0:
                break
            narrowest = max(_NARROWEST, text_width(headers[n]))
            cut = min(excess, max(0, widths[n] - narrowest))
            widths[n] -= cut
            excess -= cut

    def line(cells: Sequence[str]) -> str:
        padded = [
            pad(shorten(cell, widths[n]), widths[n], n in right)
            for n, cell in enumerate(cells)
        ]
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * w for w in widths)
    lines: List[str] = [line(headers), rule]
    lines.extend(line(row) for row in body)
    if foot:
        lines.extend([rule, line(foot)])
    return "\n".join(lines)


def votes(item: dict) -> str:
    """Thumbs as C{+3/-1}."""
    return f"+{item.get('thumbs_up', 0)}/-{item.get('thumbs_down', 0)}"


def page_note(
    first: int, shown: int, total: int, what: str = "item", exact: bool = True
) -> str:
    """Which rows of how many a page shows (of more than C{total} unless
    C{exact}), and how to see the next ones:
    C{"Items 21-40 of 60. Type 'more' for the next 20."}."""
    last = first + shown - 1
    of = total if exact else f"more than {total}"
    note = f"{what.capitalize()}s {first}-{last} of {of}."
    if last < total or not exact:
        following = min(PAGE_SIZE, total - last) if exact else PAGE_SIZE
        note += f" Type 'more' for the next {following}."
    return note


def search_results(
    items: List[dict],
    category: int,
    width: Optional[int] = None,
    first: int = 1,
    total: Optional[int] = None,
    exact: bool = True,
) -> str:
    """SearchItemsForSale's items, best match first: one page of them, the
    C{first}-th result of C{total} (of more than C{total} unless C{exact})
    at the top."""
    total = len(items) if total is None else total
    if not items:
        if total:
            return only(total, "item").capitalize() + "."
        return f"No items for sale in category {category} match."
    rows = [
        (
            i["item_id"],
            i["item_name"],
            i["condition"],
            money(i["price"]),
            i["quantity"],
            i["seller_id"],
            votes(i),
            _score(i.get("score", "")),
            ", ".join(i.get("keywords", [])),
        )
        for i in items
    ]
    headers = (
        "ITEM",
        "NAME",
        "COND",
        "PRICE",
        "UNITS",
        "SELLER",
        "VOTES",
        "SCORE",
        "KEYWORDS",
    )
    if first == 1 and len(items) == total and exact:
        found = plural(total, "item") + " found."
    else:
        found = page_note(first, len(items), total, exact=exact)
    text = table(headers, rows, right={3, 4, 5, 7}, width=width, shrink=(8, 1))
    return text + "\n" + found


def _score(value) -> str:
    try:
        return f"{Decimal(str(value)).normalize():f}"
    except (InvalidOperation, ValueError):
        return str(value)


def item_details(item: dict, width: Optional[int] = None) -> str:
    """One item, a field per line."""
    fields = [
        ("category", item["category"]),
        ("keywords", ", ".join(item.get("keywords", [])) or "(none)"),
        ("condition", item["condition"]),
        ("price", money(item["price"])),
        ("on sale", plural(item["quantity"], "unit")),
        ("seller", item["seller_id"]),
        ("feedback", f"{item['thumbs_up']} up, {item['thumbs_down']} down"),
    ]
    lines = [f"Item {item['item_id']}: {item['item_name']}"]
    lines.extend(f"  {name:<10} {value}" for name, value in fields)
    return "\n".join(lines)


def cart(answer: dict, title: str = "", width: Optional[int] = None) -> str:
    """A cart with a subtotal per line and the total."""
    lines = answer.get("cart", [])
    if not lines:
        return (title + "\n" if title else "") + "The cart is empty."
    rows = [
        (
            line["item_id"],
            line["item_name"],
            line["quantity"],
            money(line["price"]),
            money(Decimal(str(line["price"])) * line["quantity"]),
        )
        for line in lines
    ]
    units = sum(line["quantity"] for line in lines)
    text = table(
        ("ITEM", "NAME", "UNITS", "PRICE", "SUBTOTAL"),
        rows,
        right={2, 3, 4},
        footer=("", "Total", units, "", money(answer.get("total", 0))),
        width=width,
        shrink=(1,),
    )
    return (title + "\n" if title else "") + text


def seller_items(
    items: List[dict], width: Optional[int] = None, first: int = 1, everything=None
) -> str:
    """A seller's items, sold-out ones included: the page C{items} of the
    list C{everything} (all of them when not given), its C{first}-th at the
    top, then the count of items and units of the whole list."""
    everything = items if everything is None else everything
    if not everything:
        return "You have no items. Put one on sale with: sell"
    rows = [
        (
            i["item_id"],
            i["item_name"],
            i["category"],
            i["condition"],
            money(i["price"]),
            i["quantity"] if i["quantity"] else "sold out",
            votes(i),
            ", ".join(i.get("keywords", [])),
        )
        for i in items
    ]
    on_sale = sum(i["quantity"] for i in everything)
    text = table(
        ("ITEM", "NAME", "CAT", "COND", "PRICE", "ON SALE", "VOTES", "KEYWORDS"),
        rows,
        right={2, 4, 5},
        width=width,
        shrink=(7, 1),
    )
    text += f"\n{plural(len(everything), 'item')}, {plural(on_sale, 'unit')} on sale."
    if len(items) < len(everything):
        text += " " + page_note(first, len(items), len(everything))
    return text


def rating(answer: dict) -> str:
    """A seller's rating as counts."""
    return (
        f"{answer['name']} (seller {answer['seller_id']}):"
        f" {answer['thumbs_up']} thumbs up, {answer['thumbs_down']} thumbs down,"
        f" {plural(answer['items_sold'], 'unit')} sold."
    )


def purchase_numbers(items: list) -> Dict[object, int]:
    """The buyer's own number of each purchase in a history's lines (oldest
    first): 1 for the first one completed, 2 for the next.  The protocol's
    purchase_id is the marketplace's, counted over every buyer and used up
    by a declined attempt too, so a person's first purchase may be 7."""
    numbers: Dict[object, int] = {}
    for line in items:
        numbers.setdefault(line.get("purchase_id"), len(numbers) + 1)
    return numbers


def purchases(answer: dict, width: Optional[int] = None) -> str:
    """A buyer's purchase history, oldest first, with dates; the PURCHASE
    column counts the buyer's own purchases (L{purchase_numbers})."""
    items = answer.get("items", [])
    if not items:
        return "No purchases yet."
    numbers = purchase_numbers(items)
    rows = [
        (
            date(p.get("purchased_at", "")),
            numbers[p.get("purchase_id")],
            p["item_id"],
            p["item_name"],
            p["quantity"],
            money(p["price"]),
            money(Decimal(str(p["price"])) * p["quantity"]),
        )
        for p in items
    ]
    spent = sum(Decimal(str(p["price"])) * p["quantity"] for p in items)
    units = answer.get("items_purchased", sum(p["quantity"] for p in items))
    return table(
        ("DATE", "PURCHASE", "ITEM", "NAME", "UNITS", "PRICE", "PAID"),
        rows,
        right={1, 4, 5, 6},
        footer=("", "", "", "Total", units, "", money(spent)),
        width=width,
        shrink=(3,),
    )


def purchase(answer: dict, width: Optional[int] = None, number: Optional[int] = None) -> str:
    """What MakePurchase bought; C{number} is the buyer's own number of
    this purchase (L{purchase_numbers}), if known."""
    items = answer.get("items", [])
    done = "Purchase done:" if number is None else f"Purchase {number} done:"
    head = (
        f"{done} {plural(sum(i.get('quantity', 0) for i in items), 'unit')}"
        f" for {money(answer.get('total', 0))}."
    )
    if not items:
        return head
    return (
        head
        + "\n"
        + cart({"cart": items, "total": answer.get("total", 0)}, width=width)
    )


def feedback(answer: dict, thumbs_up: bool) -> str:
    """What ProvideFeedback answered."""
    return (
        f"Thumbs {'up' if thumbs_up else 'down'} for item {answer['item_id']}; it now has"
        f" {answer['thumbs_up']} up and {answer['thumbs_down']} down."
    )


__all__ = [
    "PAGE_SIZE",
    "text_width",
    "shorten",
    "pad",
    "wrap",
    "money",
    "plural",
    "date",
    "table",
    "page_note",
    "search_results",
    "item_details",
    "cart",
    "seller_items",
    "rating",
    "purchase_numbers",
    "purchases",
    "purchase",
    "feedback",
]
