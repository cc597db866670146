"""Turning answers into text a person reads: aligned tables, totals, dates.

Plain functions from payload dicts to strings; nothing here does I/O.
"""

from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Iterable, List, Sequence

_CENT = Decimal("0.01")


def money(value) -> str:
    """A price or total with two decimals: C{4.5} -> C{"4.50"}."""
    try:
        return str(Decimal(str(value)).quantize(_CENT))
    except (InvalidOperation, ValueError):
        return str(value)


def plural(count: int, word: str, words: str = "") -> str:
    """C{"1 unit"}, C{"3 units"}."""
    return f"{count} {word if count == 1 else (words or word + 's')}"


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
) -> str:
    """Columns padded to the widest cell; columns in C{right} (numbers) are
    right-aligned.  A C{footer} row comes after a rule, for totals."""
    right = set(right)
    body = [[str(cell) for cell in row] for row in rows]
    foot = [str(cell) for cell in footer]
    widths = [len(h) for h in headers]
    for row in body + ([foot] if foot else []):
        for n, cell in enumerate(row):
            widths[n] = max(widths[n], len(cell))

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.rjust(widths[n]) if n in right else cell.ljust(widths[n])
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


def search_results(items: List[dict], category: int) -> str:
    """SearchItemsForSale's items, best match first."""
    if not items:
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
    found = plural(len(items), "item") + " found."
    return table(headers, rows, right={3, 4, 5, 7}) + "\n" + found


def _score(value) -> str:
    try:
        return f"{Decimal(str(value)).normalize():f}"
    except (InvalidOperation, ValueError):
        return str(value)


def item_details(item: dict) -> str:
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


def cart(answer: dict, title: str = "") -> str:
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
    )
    return (title + "\n" if title else "") + text


def seller_items(items: List[dict]) -> str:
    """A seller's items, sold-out ones included."""
    if not items:
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
    on_sale = sum(i["quantity"] for i in items)
    text = table(
        ("ITEM", "NAME", "CAT", "COND", "PRICE", "ON SALE", "VOTES", "KEYWORDS"),
        rows,
        right={2, 4, 5},
    )
    return text + f"\n{plural(len(items), 'item')}, {plural(on_sale, 'unit')} on sale."


def rating(answer: dict) -> str:
    """A seller's rating as counts."""
    return (
        f"{answer['name']} (seller {answer['seller_id']}):"
        f" {answer['thumbs_up']} thumbs up, {answer['thumbs_down']} thumbs down,"
        f" {plural(answer['items_sold'], 'item')} sold."
    )


def purchases(answer: dict) -> str:
    """A buyer's purchase history, oldest first, with dates."""
    items = answer.get("items", [])
    if not items:
        return "No purchases yet."
    rows = [
        (
            date(p.get("purchased_at", "")),
            p.get("purchase_id", ""),
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
    )


def purchase(answer: dict) -> str:
    """What MakePurchase bought."""
    items = answer.get("items", [])
    head = (
        f"Purchase {answer.get('purchase_id', '?')} done:"
        f" {plural(sum(i.get('quantity', 0) for i in items), 'unit')}"
        f" for {money(answer.get('total', 0))}."
    )
    if not items:
        return head
    return head + "\n" + cart({"cart": items, "total": answer.get("total", 0)})


def feedback(answer: dict, thumbs_up: bool) -> str:
    """What ProvideFeedback answered."""
    return (
        f"Thumbs {'up' if thumbs_up else 'down'} for item {answer['item_id']}; it now has"
        f" {answer['thumbs_up']} up and {answer['thumbs_down']} down."
    )


__all__ = [
    "money",
    "plural",
    "date",
    "table",
    "search_results",
    "item_details",
    "cart",
    "seller_items",
    "rating",
    "purchases",
    "purchase",
    "feedback",
]
