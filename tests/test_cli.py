"""The terminal programs (clients/): formatting and parsing on their own,
the shells driven line by line over a StringTransport against the real
services, and the installed console scripts as processes."""

import os
import sys
from decimal import Decimal
from typing import List

from twisted.internet import defer, protocol, reactor
from twisted.internet.testing import StringTransport
from twisted.python import usage
from twisted.trial import unittest

from clients import buyer as buyer_cli
from clients import format
from clients import seller as seller_cli
from clients.program import Options
from clients.shell import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    Shell,
    UsageError,
    help_list,
    help_text,
    item_id,
    price,
    take_option,
    whole,
)
from marketplace.clientlib import BuyerClient, ClientError, SellerClient
from marketplace.contract.errors import INVALID_SESSION
from tests.test_connection_errors import free_port
from tests.support import _later, start_marketplace
from tests.test_client import make_client, seller_with_items, service

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FormatTests(unittest.SynchronousTestCase):
    """Answers as text, without a network."""

    def test_table_aligns_columns(self):
        text = format.table(
            ("ITEM", "NAME", "PRICE"),
            [("3-1", "Blue mug", "4.50"), ("3-22", "Lamp", "12.00")],
            right={2},
            footer=("", "Total", "16.50"),
        )
        self.assertEqual(
            text.splitlines(),
            [
                "ITEM  NAME      PRICE",
                "----  --------  -----",
                "3-1   Blue mug   4.50",
                "3-22  Lamp      12.00",
                "----  --------  -----",
                "      Total     16.50",
            ],
        )

    def test_money_and_plural(self):
        self.assertEqual(format.money(Decimal("4.5")), "4.50")
        self.assertEqual(format.money(12), "12.00")
        self.assertEqual(format.plural(1, "unit"), "1 unit")
        self.assertEqual(format.plural(0, "unit"), "0 units")
        self.assertEqual(format.only(1, "item"), "there is only 1 item")
        self.assertEqual(format.only(3, "item"), "there are only 3 items")
        self.assertEqual(format.search_results([], 3, total=1), "There is only 1 item.")

    def test_cart_has_subtotals_and_total(self):
        text = format.cart(
            {
                "cart": [
                    {
                        "item_id": "3-1",
                        "item_name": "Mug",
                        "quantity": 3,
                        "price": Decimal("4.5"),
                    },
                    {"item_id": "3-2", "item_name": "Lamp", "quantity": 1, "price": 12},
                ],
                "total": Decimal("25.5"),
            }
        )
        lines = text.splitlines()
        self.assertEqual(lines[2].split(), ["3-1", "Mug", "3", "4.50", "13.50"])
        self.assertEqual(lines[-1].split(), ["Total", "4", "25.50"])
        self.assertEqual(format.cart({"cart": [], "total": 0}), "The cart is empty.")

    def test_purchases_have_dates(self):
        text = format.purchases(
            {
                "items": [
                    {
                        "purchase_id": 7,
                        "item_id": "3-1",
                        "item_name": "Mug",
                        "quantity": 2,
                        "price": Decimal("4.5"),
                        "purchased_at": "2024-05-01T14:03:09",
                    }
                ],
                "items_purchased": 2,
            }
        )
        self.assertIn("2024-05-01 14:03", text)
        self.assertEqual(text.splitlines()[-1].split(), ["Total", "2", "9.00"])
        self.assertEqual(
            format.purchases({"items": [], "items_purchased": 0}), "No purchases yet."
        )

    def test_display_width(self):
        """Wide characters take two columns, joined emoji one character:
        columns stay in line."""
        rows = [
            ("3-1", "☕ Coffee", "4.50"),
            ("3-2", "日本茶", "12.00"),
            ("3-3", "👩‍👩‍👧 Family mug", "1.00"),
            ("3-4", "Café crème", "2.00"),
        ]
        lines = format.table(("ITEM", "NAME", "PRICE"), rows, right={2}).splitlines()
        ends = {format.text_width(line) for line in lines}
        self.assertEqual(ends, {format.text_width(lines[0])}, lines)
        self.assertEqual(format.text_width("👩‍👩‍👧"), 2)
        self.assertEqual(format.text_width("日本茶"), 6)

    def test_tables_fit_the_width(self):
        long_name = "An extraordinarily long mug name"  # 32 characters
        item = {
            "item_id": "3-1",
            "item_name": long_name,
            "category": 3,
            "condition": "new",
            "price": Decimal("4.50"),
            "quantity": 10,
            "thumbs_up": 0,
            "thumbs_down": 0,
            "keywords": ["kitchen", "mug", "blue", "ceramic", "big"],
            "seller_id": 1,
            "score": Decimal("1.5"),
        }
        for text in (
            format.seller_items([item], width=80),
            format.search_results([item], 3, width=80),
        ):
            lines = text.splitlines()
            self.assertLessEqual(max(len(line) for line in lines), 80, text)
            self.assertIn("…", lines[2])
        # Without a width, or wide enough, nothing is cut.
        self.assertIn(long_name, format.seller_items([item]))
        self.assertIn(long_name, format.seller_items([item], width=200))
        # Cut on a whole character, the ellipsis included in the width.
        self.assertEqual(format.shorten("日本茶です", 5), "日本…")
        self.assertEqual(format.shorten("👩‍👩‍👧👩‍👩‍👧", 3), "👩‍👩‍👧…")
        self.assertEqual(format.shorten("short", 5), "short")

    def test_help_wraps_on_words(self):
        commands = []
        for command in seller_cli.COMMANDS.values():
            if command not in commands:
                commands.append(command)
        for width in (80, 50):
            text = help_list(commands, width)
            words = set(" ".join(c.usage + " " + c.summary for c in commands).split())
            for line in text.splitlines():
                self.assertLessEqual(len(line), width, line)
                for word in line.split():
                    self.assertIn(word, words)  # no word cut in two
        text = help_text(seller_cli.COMMANDS["sell"], 50)
        self.assertTrue(all(len(line) <= 50 for line in text.splitlines()), text)
        self.assertIn("\n       [KEYWORD...]\n", text)

    def test_page_note(self):
        self.assertEqual(
            format.page_note(1, 20, 45),
            "Items 1-20 of 45. Type 'more' for the next 20.",
        )
        self.assertEqual(
            format.page_note(21, 20, 45),
            "Items 21-40 of 45. Type 'more' for the next 5.",
        )
        self.assertEqual(format.page_note(41, 5, 45), "Items 41-45 of 45.")

    def test_rating_as_counts(self):
        self.assertEqual(
            format.rating(
                {
                    "seller_id": 4,
                    "name": "Sam",
                    "thumbs_up": 5,
                    "thumbs_down": 1,
                    "items_sold": 1,
                }
            ),
            "Sam (seller 4): 5 thumbs up, 1 thumbs down, 1 unit sold.",
        )


class ArgumentTests(unittest.SynchronousTestCase):
    """Checking the words of a command line."""

    def test_item_id(self):
        self.assertEqual(item_id("3-17"), "3-17")
        self.assertRaises(UsageError, item_id, "317")

    def test_whole(self):
        self.assertEqual(whole("2", "N"), 2)
        self.assertEqual(whole("0", "CATEGORY", 0), 0)
        for word in ("0", "-1", "two", "1.5"):
            self.assertRaises(UsageError, whole, word, "N")

    def test_price(self):
        self.assertEqual(price("4.5"), Decimal("4.50"))
        for word in ("-1", "4.555", "four", "nan", "inf"):
            self.assertRaises(UsageError, price, word)

    def test_take_option(self):
        self.assertEqual(take_option(["a", "-p", "x", "b"], "-p"), ("x", ["a", "b"]))
        self.assertEqual(take_option(["--password=x=y"], "--password"), ("x=y", []))
        self.assertEqual(take_option(["a"], "-p"), (None, ["a"]))
        self.assertRaises(UsageError, take_option, ["a", "-p"], "-p")

    def test_program_arguments(self):
        options = Options(8081)
        options.parseOptions([])
        self.assertEqual(options.endpoint(None), "tcp:host=localhost:port=8081")
        options = Options(8080)
        options.parseOptions(["shop.example", "9000"])
        self.assertEqual(options.endpoint(None), "tcp:host=shop.example:port=9000")
        options = Options(8080)
        options.parseOptions(["--connect", "tls:shop.example:8080"])
        self.assertEqual(options.endpoint(None), "tls:shop.example:8080")
        self.assertRaises(usage.UsageError, Options(8080).parseOptions, ["h", "port"])
        self.assertRaises(
            usage.UsageError,
            Options(8080).parseOptions,
            ["--ca-cert", "ca.pem", "--connect", "tcp:h:1"],
        )
        options = Options(8080)
        options.parseOptions(["--ca-cert", "ca.pem", "shop.example", "8443"])
        self.assertEqual(options["ca-cert"], "ca.pem")
        self.assertEqual(options["retry-deadline"], 30.0)
        options = Options(8080)
        options.parseOptions(["--retry-deadline", "2.5"])
        self.assertEqual(options["retry-deadline"], 2.5)
        for bad in ("0", "-1", "soon"):
            self.assertRaises(
                usage.UsageError, Options(8080).parseOptions, ["--retry-deadline", bad]
            )


class FakeTerminal:
    """Records echo changes instead of changing a terminal."""

    def __init__(self) -> None:
        self.changes: List[bool] = []

    def echo(self, on: bool) -> None:
        self.changes.append(on)


class Driver:
    """A shell on a StringTransport, fed line by line."""

    def __init__(self, testcase, client, commands, interactive=False) -> None:
        self.terminal = FakeTerminal()
        self.shell = Shell(
            client,
            commands,
            interactive=interactive,
            terminal=self.terminal,
            where="test",
        )
        self.transport = StringTransport()
        self.shell.makeConnection(self.transport)
        testcase.addCleanup(client.close)

    def output(self) -> str:
        """What was written since the last call."""
        text = self.transport.value().decode("utf-8")
        self.transport.clear()
        return text

    async def run(self, *lines: str) -> str:
        """Feed lines, wait until they have run; what was written."""
        for line in lines:
            self.shell.dataReceived(line.encode("utf-8") + b"\n")
        await self.shell.when_idle()
        return self.output()

    async def type(self, *lines: str) -> str:
        """Feed lines, wait until the shell asks for more (a question or
        the next command); what was written."""
        for line in lines:
            self.shell.dataReceived(line.encode("utf-8") + b"\n")
        await waiting_for_input(self.shell)
        return self.output()

    async def end(self) -> int:
        """End of input; the exit status."""
        self.shell.readConnectionLost()
        return await self.shell.finished


async def waiting_for_input(shell: Shell, timeout: float = 30.0) -> None:
    """Wait until C{shell} has run every line fed and waits for a line."""
    waited = 0.0
    while not (shell._answer is not None and not shell._lines):
        if not shell._busy and not shell._lines:
            return
        if waited > timeout:
            raise AssertionError("the shell did not come to ask for input")
        await _later(0.01)
        waited += 0.01


def seller_shell(testcase, market, interactive=False) -> Driver:
    client = SellerClient(service(market, "seller"), reactor=reactor)
    return Driver(testcase, client, seller_cli.COMMANDS, interactive)


def buyer_shell(testcase, market, interactive=False) -> Driver:
    client = BuyerClient(service(market, "buyer"), reactor=reactor)
    return Driver(testcase, client, buyer_cli.COMMANDS, interactive)


class SellerShellTests(unittest.TestCase):
    async def test_every_command(self):
        market = await start_marketplace(self)
        cli = seller_shell(self, market)
        out = await cli.run('register sam "Sam Shop" --password correct-horse-7')
        self.assertRegex(out, r"^Registered seller sam \(seller id \d+\)")
        out = await cli.run("login sam -p correct-horse-7")
        self.assertRegex(out, r"^Logged in as sam \(seller \d+\)\.\n$")
        self.assertEqual(cli.shell.prompt(), "seller sam> ")

        out = await cli.run('sell "Blue mug" 3 new 4.5 10 mug kitchen')
        self.assertRegex(
            out, r"^Item 3-\d+ is on sale: 10 units of Blue mug at 4.50\.\n$"
        )
        mug = out.split()[1]
        out = await cli.run("new-item Lamp 3 USED 12 2")
        lamp = out.split()[1]

        out = await cli.run(f"price {mug} 3.99")
        self.assertEqual(out, f"{mug} Blue mug now costs 3.99.\n")
        out = await cli.run(f"remove-units {lamp} 2")
        self.assertEqual(out, f"Took 2 units of {lamp} Lamp off sale; 0 left.\n")

        lines = (await cli.run("items")).splitlines()
        self.assertEqual(
            lines[0].split(),
            ["ITEM", "NAME", "CAT", "COND", "PRICE", "ON", "SALE", "VOTES", "KEYWORDS"],
        )
        self.assertIn("3.99", lines[2])
        self.assertIn("mug, kitchen", lines[2])
        self.assertIn("sold out", lines[3])
        self.assertEqual(lines[-1], "2 items, 10 units on sale.")
        # Columns line up: every row puts the price at the same place.
        self.assertEqual(lines[2].index("3.99") + 4, lines[3].index("12.00") + 5)

        out = await cli.run("rating")
        self.assertRegex(
            out,
            r"^Sam Shop \(seller \d+\): 0 thumbs up, 0 thumbs down, 0 units sold\.\n$",
        )

        self.assertEqual(await cli.run("logout"), "Logged out.\n")
        self.assertEqual(cli.shell.prompt(), "seller> ")
        self.assertEqual(await cli.end(), 0)

    async def test_errors_are_one_line_from_the_server(self):
        market = await start_marketplace(self)
        seller, (mug, lamp) = await seller_with_items(self, market)
        cli = seller_shell(self, market)
        out = await cli.run("register sam --password correct-horse-8")
        self.assertEqual(out, "line 1: error: there is already a seller called 'sam'\n")
        out = await cli.run("login sam --password wrong")
        self.assertEqual(out, "line 2: error: wrong username or password\n")
        await cli.run(
            "register otto -p correct-horse-7", "login otto -p correct-horse-7"
        )
        out = await cli.run(f"price {mug} 1")
        self.assertEqual(out, f"line 5: error: item {mug} belongs to another seller\n")
        self.assertEqual(await cli.end(), EXIT_FAILED)

    async def test_interactive_sell_asks_each_field(self):
        market = await start_marketplace(self)
        cli = seller_shell(self, market, interactive=True)
        await cli.run("register sam -p correct-horse-7", "login sam -p correct-horse-7")
        cli.shell.dataReceived(b"sell\n")
        out = await cli.run("Green mug", "3", "new", "2.25", "4", "mug green")
        self.assertIn("Item name: Category (a number): ", out)
        self.assertIn("units of Green mug at 2.25.", out)
        self.assertTrue(out.endswith("seller sam> "), out)


class BuyerShellTests(unittest.TestCase):
    async def test_every_command(self):
        market = await start_marketplace(self)
        seller, (mug, lamp) = await seller_with_items(self, market)
        cli = buyer_shell(self, market)
        out = await cli.run("register bea --password correct-horse-7")
        self.assertRegex(
            out, r"^Registered buyer bea \(buyer id \d+\)\. Now: login bea\n$"
        )
        await cli.run("login bea --password correct-horse-7")

        lines = (await cli.run("search 3 mug lamp")).splitlines()
        self.assertEqual(lines[0].split()[:4], ["ITEM", "NAME", "COND", "PRICE"])
        self.assertEqual([line.split()[0] for line in lines[2:4]], [mug, lamp])
        self.assertEqual(lines[-1], "2 items found.")
        out = await cli.run("search 9")
        self.assertEqual(out, "No items for sale in category 9 match.\n")

        out = await cli.run(f"item {mug}")
        self.assertIn(f"Item {mug}: Blue mug\n", out)
        self.assertIn("  price      4.50\n", out)
        self.assertIn("  on sale    10 units\n", out)

        out = await cli.run(f"add {mug} 3")
        self.assertTrue(out.startswith(f"Added 3 units of {mug}.\n"), out)
        self.assertEqual(out.splitlines()[-1].split(), ["Total", "3", "13.50"])
        await cli.run(f"add {lamp}")
        out = await cli.run(f"remove {mug} 2")
        self.assertEqual(out.splitlines()[-1].split(), ["Total", "2", "16.50"])
        lines = (await cli.run("cart")).splitlines()
        self.assertEqual(
            lines[0].split(), ["ITEM", "NAME", "UNITS", "PRICE", "SUBTOTAL"]
        )
        self.assertEqual(lines[2].split(), [mug, "Blue", "mug", "1", "4.50", "4.50"])
        self.assertEqual(
            lines[3].split(), [lamp, "Desk", "lamp", "1", "12.00", "12.00"]
        )
        out = await cli.run("save")
        self.assertTrue(out.startswith("Saved the cart"), out)
        out = await cli.run("clear")
        self.assertTrue(out.startswith("Emptied the cart"), out)
        self.assertEqual(await cli.run("cart"), "The cart is empty.\n")

        out = await cli.run(f"seller-rating {seller.user_id}")
        self.assertEqual(
            out,
            f"Sam's Shop (seller {seller.user_id}): 0 thumbs up, 0 thumbs down, 0 units sold.\n",
        )
        self.assertEqual(await cli.run("history"), "No purchases yet.\n")

        # The purchase and feedback requests go out; whatever the server
        # answers for an empty cart or an item not bought is one line.
        out = await cli.run('buy "Bea B" 4111111111111111 12/30 123')
        self.assertRegex(out, r"^line \d+: error: [^\n]+\n$")
        out = await cli.run(f"rate {mug} up")
        self.assertRegex(out, r"^line \d+: error: [^\n]+\n$")

        self.assertEqual(await cli.run("logout"), "Logged out.\n")
        self.assertEqual(await cli.end(), EXIT_FAILED)

    async def test_usage_errors(self):
        market = await start_marketplace(self)
        cli = buyer_shell(self, market)
        await cli.run("register bea -p correct-horse-7", "login bea -p correct-horse-7")
        cli.shell.line_number = 0
        cases = {
            "add": "add ITEM_ID [N]",
            "add 3-1 2 3": "add ITEM_ID [N]",
            "add three": "add ITEM_ID [N]",
            "remove 3-1 none": "remove ITEM_ID [N]",
            "search": "search CATEGORY [KEYWORD...] [--page N]",
            "search books": "search CATEGORY [KEYWORD...] [--page N]",
            "search 1 a b c d e f": "search CATEGORY [KEYWORD...] [--page N]",
            "search 1 --page 0": "search CATEGORY [KEYWORD...] [--page N]",
            "rate 3-1 sideways": "rate ITEM_ID up|down",
            "seller-rating x": "seller-rating SELLER_ID",
            "buy alice": "buy [NAME CARD MM/YY CODE]",
            "cart please": "cart",
            "login": "login USER [--password PASSWORD]",
        }
        for line, expected in cases.items():
            out = await cli.run(line)
            self.assertIn(f"; usage: {expected}  (see 'help ", out)
            self.assertEqual(out.count("\n"), 1, out)
        out = await cli.run("buy")
        self.assertIn("give the card as arguments in a script", out)
        out = await cli.run("login bea")
        self.assertIn("give the password with --password PASSWORD in a script", out)
        self.assertEqual(
            await cli.run("dance"),
            f"line {len(cases) + 3}: error: there is no command 'dance'; type 'help' for the list\n",
        )
        out = await cli.run('item "3-1')
        self.assertIn("cannot read that line", out)
        # Nothing above logged the shell out.
        self.assertIsNotNone(cli.shell.client.session_id)

    async def test_needs_login(self):
        market = await start_marketplace(self)
        cli = buyer_shell(self, market)
        out = await cli.run("cart")
        self.assertEqual(
            out, "line 1: error: cart needs you to log in first: login USER\n"
        )

    async def test_help(self):
        market = await start_marketplace(self)
        cli = buyer_shell(self, market)
        out = await cli.run("help")
        for name in (
            "register",
            "login",
            "logout",
            "search",
            "item",
            "add",
            "remove",
            "cart",
            "save",
            "clear",
            "buy",
            "rate",
            "seller-rating",
            "history",
            "help",
            "quit",
        ):
            self.assertRegex(out, rf"\n  {name}\b")
        out = await cli.run("help add")
        self.assertIn("usage: add ITEM_ID [N]\n", out)
        self.assertIn("example: add 3-17 2\n", out)
        out = await cli.run("help nope")
        self.assertIn("there is no command 'nope'", out)
        self.assertEqual(await cli.end(), EXIT_FAILED)

    async def test_purchases_are_numbered_from_the_buyers_first(self):
        """A declined card uses up a purchase_id (the marketplace's), not a
        number of the buyer's: their first purchase reads 'Purchase 1 done',
        and the history numbers it 1 too."""
        market = await start_marketplace(self)
        seller, (mug, lamp) = await seller_with_items(self, market)
        cli = buyer_shell(self, market)
        await cli.run("register bea -p correct-horse-7", "login bea -p correct-horse-7")
        card = '"Bea B" 4111111111111111 12/30 123'
        market.set_approval_rate(0)
        out = await cli.run(f"add {mug}", f"buy {card}")
        self.assertIn("declined", out)
        market.set_approval_rate(1.0)
        out = await cli.run(f"buy {card}")
        self.assertTrue(out.startswith("Purchase 1 done: 1 unit for 4.50.\n"), out)
        out = await cli.run(f"add {lamp} 2", f"buy {card}")
        self.assertIn("Purchase 2 done: 2 units for 24.00.\n", out)
        rows = [line.split() for line in (await cli.run("history")).splitlines()[2:4]]
        self.assertEqual([row[2:4] for row in rows], [["1", mug], ["2", lamp]])
        self.assertEqual(
            format.purchase_numbers([{"purchase_id": 7}, {"purchase_id": 7}, {"purchase_id": 9}]),
            {7: 1, 9: 2},
        )


class InteractiveTests(unittest.TestCase):
    """A person at a terminal: prompts, secrets not echoed."""

    async def test_passwords_are_asked_without_echo(self):
        market = await start_marketplace(self)
        cli = buyer_shell(self, market, interactive=True)
        self.assertEqual(
            cli.output(),
            "Marketplace buyer at test. 'help' lists the commands, 'quit' leaves.\nbuyer> ",
        )
        cli.shell.dataReceived(b"register bea\n")
        out = await cli.run("correct-horse-7", "correct-horse-7")
        self.assertTrue(
            out.startswith("Password: \nPassword again: \nRegistered buyer bea"), out
        )
        self.assertEqual(cli.terminal.changes, [False, True, False, True])
        cli.shell.dataReceived(b"login bea\n")
        out = await cli.run("correct-horse-7")
        self.assertEqual(
            out,
            "Password: \nLogged in as bea (buyer %d).\nbuyer bea> "
            % cli.shell.client.user_id,
        )
        out = await cli.run("add 3-1 x")
        self.assertTrue(out.startswith("error: N must be a whole number"), out)
        self.assertTrue(out.endswith("buyer bea> "))

    async def test_buy_asks_for_the_card(self):
        market = await start_marketplace(self)
        seller, (mug, lamp) = await seller_with_items(self, market)
        cli = buyer_shell(self, market, interactive=True)
        await cli.run(
            "register bea -p correct-horse-7",
            "login bea -p correct-horse-7",
            f"add {mug} 2",
        )
        cli.terminal.changes.clear()
        cli.shell.dataReceived(b"buy\n")
        out = await cli.run("Bea B", "4111111111111111", "12/30", "123")
        self.assertIn("Buying:\n", out)
        self.assertIn(
            "Name on the card: Card number: Expires (MM/YY): Security code: \n", out
        )
        self.assertEqual(cli.terminal.changes, [False, True])
        self.assertNotIn("123", out.split("Security code:")[1])

    async def test_end_of_input_while_asking(self):
        market = await start_marketplace(self)
        cli = buyer_shell(self, market, interactive=True)
        cli.shell.dataReceived(b"login bea\n")
        status = await cli.end()
        self.assertIn("error: login cancelled: the input ended", cli.output())
        self.assertEqual(status, 0)
        self.assertEqual(cli.terminal.changes, [False, True])


class EndingTests(unittest.TestCase):
    """quit, end of input and Ctrl-C log out; scripts get an exit status."""

    async def assert_logged_out(self, market, session_id):
        probe = make_client(self, BuyerClient, service(market, "buyer"))
        probe.session_id = session_id
        e = await self.assertFailure(probe.display_cart(), ClientError)
        self.assertEqual(e.code, INVALID_SESSION)

    async def test_script_that_succeeds(self):
        market = await start_marketplace(self)
        cli = buyer_shell(self, market)
        await cli.run(
            "register bea -p correct-horse-7",
            "# a comment",
            "",
            "login bea -p correct-horse-7",
            "cart",
        )
        session = cli.shell.client.session_id
        self.assertEqual(await cli.end(), 0)
        self.assertTrue(cli.output().endswith("Logged out.\n"))
        self.assertTrue(cli.transport.disconnecting)
        await self.assert_logged_out(market, session)

    async def test_script_with_a_failure_runs_on_and_exits_1(self):
        market = await start_marketplace(self)
        cli = buyer_shell(self, market)
        for line in (
            "register bea -p correct-horse-7",
            "login bea -p correct-horse-7",
            "item 3-999",
            "cart",
        ):
            cli.shell.dataReceived(line.encode() + b"\n")
        cli.shell.readConnectionLost()
        self.assertEqual(await cli.shell.finished, EXIT_FAILED)
        out = cli.output()
        self.assertIn("line 3: error: there is no item 3-999\n", out)
        self.assertIn("The cart is empty.\nLogged out.\n", out)

    async def test_quit_skips_the_rest(self):
        market = await start_marketplace(self)
        cli = buyer_shell(self, market, interactive=True)
        await cli.run("register bea -p correct-horse-7", "login bea -p correct-horse-7")
        session = cli.shell.client.session_id
        cli.shell.dataReceived(b"quit\ncart\n")
        self.assertEqual(await cli.shell.finished, 0)
        self.assertEqual(cli.output(), "Logged out.\n")
        await self.assert_logged_out(market, session)

    async def test_interrupt(self):
        market = await start_marketplace(self)
        cli = buyer_shell(self, market)
        await cli.run("register bea -p correct-horse-7", "login bea -p correct-horse-7")
        session = cli.shell.client.session_id
        await cli.shell.interrupt()
        self.assertEqual(await cli.shell.finished, EXIT_INTERRUPTED)
        await self.assert_logged_out(market, session)


class _Collect(protocol.ProcessProtocol):
    def __init__(self, stdin: bytes) -> None:
        self.stdin = stdin
        self.out = b""
        self.err = b""
        self.ended: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.stdin)
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason) -> None:
        self.ended.callback(reason.value.exitCode)


async def run_program(name: str, args: List[str], script: str):
    """Run an installed console script with C{script} piped in; (status,
    stdout, stderr).  The working tree's code is imported, not an older copy."""
    program = os.path.join(os.path.dirname(sys.executable), name)
    if not os.path.exists(program):
        raise AssertionError(f"{program} is not installed: run make install")
    env = dict(os.environ, PYTHONPATH=ROOT)
    collect = _Collect(script.encode("utf-8"))
    reactor.spawnProcess(collect, program, [program] + args, env=env)
    status = await collect.ended
    return status, collect.out.decode("utf-8"), collect.err.decode("utf-8")


class ConsoleScriptTests(unittest.TestCase):
    """The installed programs, with a script piped in."""

    async def test_seller_script(self):
        market = await start_marketplace(self)
        port = str(market.ports["seller"])
        script = "register sam -p correct-horse-7\nlogin sam -p correct-horse-7\nsell Mug 3 new 4.50 10 mug\nitems\n"
        status, out, err = await run_program(
            "marketplace-seller-cli", ["127.0.0.1", port], script
        )
        self.assertEqual((status, err), (0, ""), out)
        self.assertIn("Item 3-", out)
        self.assertIn("1 item, 10 units on sale.\nLogged out.\n", out)
        self.assertNotIn("seller>", out)

    async def test_buyer_script_that_fails(self):
        market = await start_marketplace(self)
        endpoint = service(market, "buyer")
        script = "register bea -p correct-horse-7\nlogin bea -p correct-horse-7\nadd 3-1\ncart\n"
        status, out, err = await run_program(
            "marketplace-buyer-cli", ["--connect", endpoint], script
        )
        self.assertEqual(status, 1, out + err)
        self.assertIn("line 3: error: there is no item 3-1\n", out)
        self.assertIn("The cart is empty.\nLogged out.\n", out)
        self.assertNotIn("Traceback", out + err)


    async def test_retry_deadline(self):
        """A command fails after --retry-deadline when nothing answers."""
        script = "register bea -p correct-horse-7\n"
        started = reactor.seconds()
        status, out, err = await run_program(
            "marketplace-buyer-cli",
            ["--retry-deadline", "2", "127.0.0.1", str(free_port())],
            script,
        )
        self.assertEqual(status, 1, out + err)
        # register first asks which service answers (the wrong one is told).
        self.assertIn("line 1: error: the service got no answer within 2 s:", out)
        self.assertIn("nothing is listening at 127.0.0.1:", out)
        self.assertLess(reactor.seconds() - started, 15)


class PagingTests(unittest.TestCase):
    """search and items show how many there are and page through them."""

    async def cups_and_a_buyer(self):
        """A marketplace where a seller sells 45 cups in category 7, and a
        buyer's shell, logged in; (the seller's client, the shell)."""
        market = await start_marketplace(self)
        seller = make_client(self, SellerClient, service(market, "seller"))
        await seller.create_account("sam", "correct-horse-7")
        await seller.login("sam", "correct-horse-7")
        for n in range(45):
            await seller.register_item_for_sale(f"Cup {n:02}", 7, ["cup"], "new", "2", 1)
        cli = buyer_shell(self, market)
        await cli.run("register bea -p correct-horse-7", "login bea -p correct-horse-7")
        return seller, cli

    async def test_search_pages(self):
        seller, cli = await self.cups_and_a_buyer()
        lines = (await cli.run("search 7 cup")).splitlines()
        self.assertEqual(lines[-1], "Items 1-20 of 45. Type 'more' for the next 20.")
        self.assertEqual(len(lines), 2 + 20 + 1)
        self.assertIn("Cup 00", lines[2])
        lines = (await cli.run("more")).splitlines()
        self.assertIn("Cup 20", lines[2])
        self.assertEqual(lines[-1], "Items 21-40 of 45. Type 'more' for the next 5.")
        lines = (await cli.run("more")).splitlines()
        self.assertEqual(lines[-1], "Items 41-45 of 45.")
        self.assertEqual(len(lines), 2 + 5 + 1)
        out = await cli.run("more")
        self.assertIn("error: there is nothing more to show", out)
        lines = (await cli.run("search 7 --page 2")).splitlines()
        self.assertIn("Cup 20", lines[2])
        self.assertEqual(lines[-1], "Items 21-40 of 45. Type 'more' for the next 5.")
        out = await cli.run("search 7 cup --page 4")
        self.assertEqual(out, "There are only 45 items.\n")
        # A search with fewer results than a page says how many, as before.
        out = await cli.run("search 7 nothing")
        self.assertEqual(out, "No items for sale in category 7 match.\n")
        # Exactly a page: counted, no 'more'.
        for n in range(15):
            await seller.register_item_for_sale(
                f"Cup {n + 45}", 7, ["cup"], "new", "2", 1
            )
        lines = (await cli.run("search 7 cup --page 3")).splitlines()
        self.assertEqual(lines[-1], "Items 41-60 of 60.")
        self.assertIsNone(cli.shell.more)

    async def test_search_counts_only_so_far(self):
        """Past the next multiple of COUNTED_BY a search says "more than",
        and asks for no more results than it needs to say so."""
        _, cli = await self.cups_and_a_buyer()
        asked = []
        search = cli.shell.client.search_items_for_sale

        def counting(category, keywords, limit, offset):
            asked.append((limit, offset))
            return search(category, keywords, limit, offset)

        self.patch(cli.shell.client, "search_items_for_sale", counting)
        self.patch(buyer_cli, "COUNTED_BY", 30)
        lines = (await cli.run("search 7 cup")).splitlines()
        self.assertEqual(lines[-1], "Items 1-20 of more than 30. Type 'more' for the next 20.")
        self.assertEqual(asked, [(20, 0), (11, 20)])
        lines = (await cli.run("more")).splitlines()
        self.assertIn("Cup 20", lines[2])
        self.assertEqual(lines[-1], "Items 21-40 of 45. Type 'more' for the next 5.")
        # Exactly the multiple, and one fewer: exact, and "more than".
        self.patch(buyer_cli, "COUNTED_BY", 45)
        lines = (await cli.run("search 7 cup")).splitlines()
        self.assertEqual(lines[-1], "Items 1-20 of 45. Type 'more' for the next 20.")
        self.patch(buyer_cli, "COUNTED_BY", 44)
        lines = (await cli.run("search 7 cup")).splitlines()
        self.assertEqual(lines[-1], "Items 1-20 of more than 44. Type 'more' for the next 20.")
        # Past the end it counts to the end, however far.
        self.patch(buyer_cli, "COUNTED_BY", 10)
        out = await cli.run("search 7 cup --page 4")
        self.assertEqual(out, "There are only 45 items.\n")

    async def test_items_pages(self):
        market = await start_marketplace(self)
        cli = seller_shell(self, market)
        await cli.run("register sam -p correct-horse-7", "login sam -p correct-horse-7")
        for n in range(25):
            await cli.run(f"sell 'Mug {n:02}' 3 new 4.50 5 mug")
        lines = (await cli.run("items")).splitlines()
        self.assertEqual(len(lines), 2 + 20 + 1)
        self.assertEqual(
            lines[-1],
            "25 items, 125 units on sale. Items 1-20 of 25. Type 'more' for the next 5.",
        )
        lines = (await cli.run("more")).splitlines()
        self.assertIn("Mug 20", lines[2])
        self.assertEqual(lines[-1], "25 items, 125 units on sale. Items 21-25 of 25.")
        out = await cli.run("items --page 3")
        self.assertIn("error: there are only 25 items", out)


class CheckedAnswerTests(unittest.TestCase):
    """Questions check each answer at once and ask again on a bad one."""

    async def test_sell_reports_a_wrong_category_at_once(self):
        market = await start_marketplace(self)
        cli = seller_shell(self, market, interactive=True)
        await cli.run("register sam -p correct-horse-7", "login sam -p correct-horse-7")
        cli.output()
        out = await cli.type("sell", "Blue mug", "kitchen")
        # Reported right after the bad answer, before the next question.
        self.assertTrue(
            out.endswith(
                "Category (a number): error: CATEGORY must be a whole number of 0 or"
                " more, not 'kitchen'\nCategory (a number): "
            ),
            out,
        )
        out = await cli.type(
            "3", "old", "new", "4.555", "4.50", "0", "10", "a b c d e f"
        )
        self.assertIn("error: CONDITION must be new or used, not 'old'", out)
        self.assertIn("error: PRICE must be an amount such as 4.50, not '4.555'", out)
        self.assertIn(
            "error: QUANTITY must be a whole number of 1 or more, not '0'", out
        )
        self.assertIn("error: give at most 5 keywords", out)
        out = await cli.run("mug blue")
        self.assertRegex(out, r"Item 3-\d+ is on sale: 10 units of Blue mug at 4.50\.")

    async def test_register_checks_the_name_before_the_password(self):
        market = await start_marketplace(self)
        cli = seller_shell(self, market, interactive=True)
        await cli.run("register sam -p correct-horse-7")
        cli.output()
        out = await cli.run("register sam")
        self.assertEqual(out, "error: there is already a seller called 'sam'\nseller> ")
        self.assertEqual(cli.terminal.changes, [])  # no password was asked

    async def test_buy_checks_the_card_as_typed(self):
        market = await start_marketplace(self)
        seller, (mug, lamp) = await seller_with_items(self, market)
        cli = buyer_shell(self, market, interactive=True)
        await cli.run(
            "register bea -p correct-horse-7",
            "login bea -p correct-horse-7",
            f"add {mug}",
        )
        cli.output()
        cli.shell.dataReceived(b"buy\n")
        out = await cli.run(
            "",
            "Bea B",
            "4111111111111112",
            "4111 1111 1111 1111",
            "13/30",
            "12/30",
            "12",
            "123",
        )
        self.assertIn("error: give the name as it is on the card", out)
        self.assertIn("error: that card number has a typing error", out)
        self.assertIn("error: write the expiry as MM/YY", out)
        self.assertIn("error: the security code is the 3 or 4 digits", out)
        self.assertIn("Purchase 1 done: 1 unit for 4.50.", out)
        # The cart bought, as a table, after the purchase.
        self.assertIn(f"{mug}   Blue mug      1   4.50      4.50", out)

    async def test_banner_fits_80_columns(self):
        market = await start_marketplace(self)
        cli = seller_shell(self, market, interactive=True)
        cli.shell.where = "localhost:8080"
        self.assertLessEqual(len(cli.shell.banner()), 80)
        cli.shell.where = "tls:host=shop.example.com:port=8443:trustRoots=certs/ca"
        self.assertTrue(all(len(l) <= 80 for l in cli.shell.banner().splitlines()))


class HelpOptionTests(unittest.TestCase):
    async def test_help_names_commands_password_and_script_mode(self):
        status, out, err = await run_program("marketplace-buyer-cli", ["--help"], "")
        self.assertEqual((status, err), (0, ""))
        self.assertIn(
            "Commands: add, buy, cart, clear, help, history, item, login,", out
        )
        self.assertIn("--password PW", out)
        self.assertIn("as a\nscript", out)
        self.assertIn("~/.marketplace-buyer-history", out)
        self.assertTrue(all(len(line) <= 80 for line in out.splitlines()), out)
        status, out, err = await run_program(
            "marketplace-seller-cli", ["--version"], ""
        )
        self.assertEqual(status, 0)
        self.assertIn("(marketplace) ", out)
        self.assertNotIn("Twisted", out)
