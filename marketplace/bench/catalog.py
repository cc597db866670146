"""A catalog of N items from a seed, for benchmarks and tests of search.

The items are what sellers could have registered through the API: every
seller is a real account (made with CreateAccount), names of up to 32
characters made of words, 1 to 5 lower-case keywords of at most 8
characters without repeats, prices to the cent, stock (a few items sold
out), and votes that buyers cast through the API on items they really
bought (L{cast_votes}).  The words come from a vocabulary of a few thousand
made-up words drawn with a Zipf-like frequency, so that a few keywords are
on a large share of the items and most on very few.

Only the items themselves take a bulk path: COPY into the product
database's items table, whose triggers (schema.sql) fill the search's
keyword lists just as a RegisterItemForSale does.  The same seed gives the
same catalog.
"""

import bisect
import io
import itertools
import random
from dataclasses import dataclass
from decimal import Decimal
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

_CONSONANTS = "bcdfghklmnprstvz"
_VOWELS = "aeiou"
# How many keywords an item has: 1 to 5, three most often.
_KEYWORD_COUNTS = (1, 2, 3, 4, 5)
_KEYWORD_WEIGHTS = (1, 3, 4, 2, 1)
NAME_MAX = 32
#: Rows per COPY statement.
CHUNK = 50_000


@dataclass(frozen=True)
class CatalogSpec:
    """What to make: C{items} items in C{categories} categories from
    C{words} words, sold by C{sellers} sellers, from C{seed}."""

    items: int
    seed: int = 1
    categories: int = 20
    words: int = 3000
    sellers: int = 50
    #: The exponent of the words' Zipf-like frequency (1: the classic one).
    zipf: float = 1.0
    #: Prices are whole amounts from 1 to this, ending in .00, .49 or .99,
    #: so that many items tie on price.
    price_max: int = 500
    #: Items that buyers buy and vote on (see L{cast_votes}).
    voted_items: int = 0
    #: Buyers who vote on each of them.
    voters: int = 5


def vocabulary(seed: int, size: int) -> List[str]:
    """C{size} distinct made-up words of 2 to 8 letters; the first is the
    most frequent (see L{WordDrawer}).  Short words are often found inside
    longer ones, as "case" is in "suitcase"."""
    rng = random.Random(f"vocabulary-{seed}")
    words: List[str] = []
    seen = set()
    while len(words) < size:
        syllables = rng.choice((1, 2, 2, 3, 3, 4))
        word = "".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(syllables))
        if rng.random() < 0.3 and len(word) < 8:
            word += rng.choice(_CONSONANTS)
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


class WordDrawer:
    """Words drawn with probability proportional to 1 / rank ** exponent."""

    def __init__(self, words: Sequence[str], exponent: float, rng: random.Random) -> None:
        self.words = list(words)
        self.rng = rng
        weights = [1.0 / (rank + 1) ** exponent for rank in range(len(words))]
        self.cumulative = list(itertools.accumulate(weights))

    def draw(self) -> str:
        """One word."""
        total = self.cumulative[-1]
        return self.words[bisect.bisect(self.cumulative, self.rng.random() * total)]

    def distinct(self, count: int) -> List[str]:
        """C{count} different words (fewer if the vocabulary is smaller)."""
        chosen: List[str] = []
        for _ in range(count * 10):
            if len(chosen) == count:
                break
            word = self.draw()
            if word not in chosen:
                chosen.append(word)
        return chosen


Item = Tuple[int, str, int, List[str], str, Decimal, int]


def items(spec: CatalogSpec, seller_ids: Sequence[int]) -> Iterator[Item]:
    """The items of the catalog, in order: (seller_id, name, category,
    keywords, condition, price, quantity), as RegisterItemForSale takes
    them (keywords already lower-cased and without repeats)."""
    rng = random.Random(f"items-{spec.seed}")
    drawer = WordDrawer(vocabulary(spec.seed, spec.words), spec.zipf, rng)
    cents = (Decimal("0.00"), Decimal("0.49"), Decimal("0.99"))
    for _ in range(spec.items):
        name_words = [drawer.draw() for _ in range(rng.choice((1, 2, 2, 3, 3, 4)))]
        while len(name_words) > 1 and len(" ".join(name_words)) > NAME_MAX:
            name_words.pop()
        name = " ".join(w.capitalize() if rng.random() < 0.7 else w for w in name_words)
        keywords = drawer.distinct(rng.choices(_KEYWORD_COUNTS, _KEYWORD_WEIGHTS)[0])
        if rng.random() < 0.5 and name_words[0] not in keywords:
            # Often the first word of the name is also a keyword.
            keywords = [name_words[0]] + keywords[:4]
        quantity = 0 if rng.random() < 0.05 else rng.randint(1, 100)
        yield (
            rng.choice(seller_ids),
            name[:NAME_MAX],
            rng.randrange(spec.categories),
            keywords,
            rng.choice(("new", "used")),
            rng.randint(1, spec.price_max) + rng.choice(cents),
            quantity,
        )


def _copy_line(item: Item) -> str:
    seller_id, name, category, keywords, condition, price, quantity = item
    # The vocabulary's words need no quoting in COPY's text format nor in
    # an array literal.
    return f"{seller_id}\t{name}\t{category}\t{{{','.join(keywords)}}}\t{condition}\t{price}\t{quantity}\n"


def copy_items(
    dsn: str,
    spec: CatalogSpec,
    seller_ids: Sequence[int],
    progress: Optional[Callable[[int], None]] = None,
) -> None:
    """Put the catalog's items into the product database C{dsn} with COPY,
    C{CHUNK} items per statement (and transaction), then VACUUM ANALYZE the
    tables search reads.  Blocking: run it in a thread."""
    import psycopg2

    connection = psycopg2.connect(dsn)
    try:
        generated = items(spec, seller_ids)
        while True:
            chunk = list(itertools.islice(generated, CHUNK))
            if not chunk:
                break
            buffer = io.StringIO("".join(_copy_line(item) for item in chunk))
            with connection.cursor() as cursor:
                cursor.copy_expert(
                    "COPY items (seller_id, name, category, keywords, condition,"
                    " price, quantity) FROM STDIN",
                    buffer,
                )
            connection.commit()
            if progress is not None:
                progress(len(chunk))
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE items")
            cursor.execute("VACUUM ANALYZE item_keywords")
    finally:
        connection.close()


def voted_items(spec: CatalogSpec, first_id: int, on_sale: Sequence[bool]) -> List[int]:
    """Which of the catalog's items (numbered from C{first_id}, as COPY
    numbered them) buyers vote on: C{spec.voted_items} of those with stock
    enough for every voter, chosen from the seed."""
    rng = random.Random(f"votes-{spec.seed}")
    candidates = [first_id + n for n, ok in enumerate(on_sale) if ok]
    return sorted(rng.sample(candidates, min(spec.voted_items, len(candidates))))


def vote_of(spec: CatalogSpec, voter: int, item_number: int) -> bool:
    """Voter C{voter}'s thumb on item C{item_number}: each item has a
    quality of its own, so its votes lean one way."""
    quality = random.Random(f"quality-{spec.seed}-{item_number}").random()
    return random.Random(f"vote-{spec.seed}-{voter}-{item_number}").random() < quality


__all__ = [
    "CatalogSpec",
    "WordDrawer",
    "copy_items",
    "items",
    "vocabulary",
    "vote_of",
    "voted_items",
]
