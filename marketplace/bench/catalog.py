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
    sellers: int = 20
    #: The exponent of the words' Zipf-like frequency (1: the classic one).
    zipf: float = 1.0
    #: Prices are whole amounts from 1 to this, ending in .00, .49 or .99,
    #: so that many items tie on price.
    price_max: int = 500
    #: Items that buyers buy and vote on (see L{cast_votes}).
    voted_items: int = 0
    #: Buyers who vote on each of them.
    voters: int = 5
    #: The first items of the catalog are there already (from an earlier
    #: run with the same seed and a smaller C{items}): add only the rest.
    skip: int = 0


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
    for n in range(spec.items):
        name_words = [drawer.draw() for _ in range(rng.choice((1, 2, 2, 3, 3, 4)))]
        while len(name_words) > 1 and len(" ".join(name_words)) > NAME_MAX:
            name_words.pop()
        name = " ".join(w.capitalize() if rng.random() < 0.7 else w for w in name_words)
        keywords = drawer.distinct(rng.choices(_KEYWORD_COUNTS, _KEYWORD_WEIGHTS)[0])
        if rng.random() < 0.5 and name_words[0] not in keywords:
            # Often the first word of the name is also a keyword.
            keywords = [name_words[0]] + keywords[:4]
        quantity = 0 if rng.random() < 0.05 else rng.randint(1, 100)
        item = (
            rng.choice(seller_ids),
            name[:NAME_MAX],
            rng.randrange(spec.categories),
            keywords,
            rng.choice(("new", "used")),
            rng.randint(1, spec.price_max) + rng.choice(cents),
            quantity,
        )
        if n >= spec.skip:
            yield item


def _copy_line(item: Item) -> str:
    seller_id, name, category, keywords, condition, price, quantity = item
    # The vocabulary's words need no quoting in COPY's text format nor in
    # an array literal.
    fields = (seller_id, name, category, "{" + ",".join(keywords) + "}", condition, price, quantity)
    return "\t".join(str(field) for field in fields) + "\n"


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
            cursor.execute("VACUUM ANALYZE item_keyword_pairs")
    finally:
        connection.close()


def _new_items(dsn: str, after_id: int, voters: int) -> List[Tuple[int, int]]:
    """(id, category) of the items numbered above C{after_id}
    with stock enough for C{voters} purchases, in order."""
    import psycopg2

    connection = psycopg2.connect(dsn)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT id, category FROM items WHERE id > %s AND quantity >= %s ORDER BY id",
                (after_id, voters),
            )
            return cursor.fetchall()
    finally:
        connection.close()


def _last_item_id(dsn: str) -> int:
    import psycopg2

    connection = psycopg2.connect(dsn)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT coalesce(max(id), 0) FROM items")
            return cursor.fetchone()[0]
    finally:
        connection.close()


def vote_of(spec: CatalogSpec, voter: int, item_number: int) -> bool:
    """Voter C{voter}'s thumb on item C{item_number} (counted from the
    catalog's first): each item has a quality of its own, so that its
    votes lean one way."""
    quality = random.Random(f"quality-{spec.seed}-{item_number}").random()
    return random.Random(f"vote-{spec.seed}-{voter}-{item_number}").random() < quality


PASSWORD = "catalog-password"
# A card of the right form (see marketplace/bench/workloads.py).
CARD = {
    "name": "Catalog Buyer",
    "card_number": "4111 1111 1111 1111",
    "expiration_date": "12/99",
    "security_code": "123",
}
#: Lines per purchase of a voter.
BASKET = 100


async def _account(client, username: str) -> None:
    from twisted.internet import reactor

    from marketplace.bench.patience import patiently
    from marketplace.clientlib import ClientError

    try:
        await patiently(reactor, lambda: client.create_account(username, PASSWORD))
    except ClientError as e:
        if e.code != "USERNAME_TAKEN":
            raise
    await patiently(reactor, lambda: client.login(username, PASSWORD))


async def create_sellers(endpoint: str, spec: CatalogSpec, reactor) -> List[int]:
    """The catalog's sellers: real accounts made through the seller service
    (several at a time: each costs a password hash), or looked up by
    logging in if an earlier run made them; their ids, in order."""
    from twisted.internet import defer

    from marketplace.bench.patience import patiently
    from marketplace.clientlib import ClientError, SellerClient

    client = SellerClient(endpoint, reactor=reactor)

    async def one(n: int) -> int:
        username = f"catalog{spec.seed}-seller{n}"
        try:
            signed_up = await patiently(reactor, lambda: client.create_account(username, PASSWORD))
            return signed_up["seller_id"]
        except ClientError as e:
            if e.code != "USERNAME_TAKEN":
                raise
        other = SellerClient(endpoint, reactor=reactor)
        try:
            seller_id = (await patiently(reactor, lambda: other.login(username, PASSWORD)))["seller_id"]
            await other.logout()
            return seller_id
        finally:
            await other.close()

    semaphore = defer.DeferredSemaphore(8)
    try:
        ids = await defer.gatherResults(
            [semaphore.run(lambda n=n: defer.Deferred.fromCoroutine(one(n)))
             for n in range(spec.sellers)],
            consumeErrors=True,
        )
    finally:
        await client.close()
    return sorted(ids)


async def _vote_as(client, spec: CatalogSpec, voter: int, items: Sequence[Tuple[int, int]],
                   first_id: int, progress: Callable[[int], None]) -> None:
    """One voter buys one unit of each item (C{BASKET} to a purchase) and
    votes on it.  Its writes wait out the service's limit of an account's
    keyed writes per minute (--request-keys-per-minute) where they meet it."""
    from twisted.internet import reactor

    from marketplace.bench.patience import patiently
    from marketplace.clientlib import ClientError

    def write(call):
        # Over a minute of tries: the limit counts per minute.
        return patiently(reactor, call, tries=400)

    await _account(client, f"catalog{spec.seed}-voter{voter}")
    await write(client.clear_cart)
    for start in range(0, len(items), BASKET):
        basket = [f"{category}-{number}" for number, category in items[start:start + BASKET]]
        for item_id in basket:
            await write(lambda: client.add_item_to_cart(item_id, 1))
        while True:
            try:
                await write(lambda: client.make_purchase(**CARD))
                break
            except ClientError as e:
                # The payments service declines a share of good cards at random.
                if e.code != "PAYMENT_DECLINED":
                    raise
        for (number, _), item_id in zip(items[start:start + BASKET], basket):
            vote = vote_of(spec, voter, number - first_id)
            await write(lambda: client.provide_feedback(item_id, vote))
        progress(len(basket))
    await client.logout()


async def cast_votes(endpoint: str, spec: CatalogSpec, items: Sequence[Tuple[int, int]],
                     first_id: int, reactor, progress: Callable[[int], None]) -> None:
    """Every one of C{spec.voters} buyers buys each of C{items} ((number,
    category) pairs) and votes on it, through the buyer service, all
    voters at once."""
    from twisted.internet import defer

    from marketplace.clientlib import BuyerClient, open_clients

    clients = await open_clients(BuyerClient, spec.voters, endpoint, reactor)
    try:
        await defer.gatherResults(
            [
                defer.Deferred.fromCoroutine(
                    _vote_as(client, spec, voter, items, first_id, progress)
                )
                for voter, client in enumerate(clients)
            ],
            consumeErrors=True,
        )
    finally:
        await defer.gatherResults([client.close() for client in clients])


@dataclass
class Built:
    """What L{build} made and how long each part took, in seconds."""

    spec: CatalogSpec
    seller_ids: List[int]
    first_id: int
    voted: int
    seconds: dict


async def build(
    spec: CatalogSpec,
    seller: str,
    buyer: str,
    product_dsn: str,
    reactor,
    progress: Optional[Callable[[str, int, int], None]] = None,
) -> Built:
    """Fill a deployment with the catalog of C{spec}: sellers through the
    seller service C{seller}, items by COPY into the product database
    C{product_dsn} (in a thread), votes through the buyer service C{buyer}.
    C{progress(stage, done, total)} is told how far each stage is."""
    import time

    from twisted.internet import threads

    def tell(stage: str, total: int) -> Callable[[int], None]:
        done = [0]

        def step(count: int) -> None:
            done[0] += count
            if progress is not None:
                reactor.callFromThread(progress, stage, done[0], total)

        return step

    seconds = {}
    started = time.monotonic()
    seller_ids = await create_sellers(seller, spec, reactor)
    seconds["sellers"] = time.monotonic() - started
    mark = time.monotonic()
    first_id = await threads.deferToThreadPool(
        reactor, reactor.getThreadPool(), _last_item_id, product_dsn
    ) + 1
    await threads.deferToThreadPool(
        reactor, reactor.getThreadPool(), copy_items, product_dsn, spec, seller_ids,
        tell("items", spec.items - spec.skip),
    )
    seconds["items"] = time.monotonic() - mark
    mark = time.monotonic()
    voted: List[Tuple[int, int]] = []
    if spec.voted_items and spec.voters:
        stocked = await threads.deferToThreadPool(
            reactor, reactor.getThreadPool(), _new_items, product_dsn, first_id - 1, spec.voters
        )
        rng = random.Random(f"votes-{spec.seed}")
        voted = sorted(
            (number, category)
            for number, category in rng.sample(stocked, min(spec.voted_items, len(stocked)))
        )
        await cast_votes(
            buyer, spec, voted, first_id, reactor, tell("votes", len(voted) * spec.voters)
        )
    seconds["votes"] = time.monotonic() - mark
    seconds["total"] = time.monotonic() - started
    return Built(spec, seller_ids, first_id, len(voted), seconds)


__all__ = [
    "Built",
    "CatalogSpec",
    "WordDrawer",
    "build",
    "cast_votes",
    "copy_items",
    "create_sellers",
    "items",
    "vocabulary",
    "vote_of",
]
