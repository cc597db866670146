"""The terminal programs as a person uses them: the installed programs on a
pseudo-terminal of 80 columns, the screen read back through a terminal
emulator (pyte).  History across runs, arrow keys, Ctrl-L, Tab completion,
paging, answers checked as they are typed, Ctrl-C and Ctrl-D, and the
connection problems told before any password is asked."""

import fcntl
import os
import struct
import sys
import termios

import pyte
from twisted.internet import defer, protocol, reactor
from twisted.trial import unittest

from marketplace import tls
from marketplace.client import SellerClient
from marketplace.devcerts import make_dev_certs
from tests.support import _later, start_marketplace
from tests.test_cli import ROOT
from tests.test_client import make_client, service
from tests.test_connection_errors import free_port

UP, DOWN = b"\x1b[A", b"\x1b[B"
CTRL_C, CTRL_D, CTRL_L, TAB = b"\x03", b"\x04", b"\x0c", b"\t"
PASSWORD = "correct-horse-7"


class Terminal(protocol.ProcessProtocol):
    """A program on a pseudo-terminal of C{columns} x C{rows}; what it
    shows, as a person would see it."""

    def __init__(self, columns: int = 80, rows: int = 24) -> None:
        self.screen = pyte.Screen(columns, rows)
        self.screen.set_mode(pyte.modes.LNM)
        self.stream = pyte.ByteStream(self.screen)
        self.raw = b""
        self.ended: defer.Deferred = defer.Deferred()
        self.status = None
        self.size = (rows, columns)

    def childDataReceived(self, fd: int, data: bytes) -> None:
        self.raw += data
        self.stream.feed(data)

    def processEnded(self, reason) -> None:
        self.status = reason.value.exitCode
        self.ended.callback(self.status)

    def text(self) -> str:
        """The screen, its lines without trailing spaces, empty ones cut
        from the end."""
        lines = [line.rstrip() for line in self.screen.display]
        while lines and not lines[-1]:
            lines.pop()
        return "\n".join(lines)

    def line(self) -> str:
        """The line the cursor is on."""
        return self.screen.display[self.screen.cursor.y].rstrip()

    def send(self, data) -> None:
        self.transport.write(data.encode("utf-8") if isinstance(data, str) else data)

    async def expect(self, text: str, timeout: float = 10.0) -> str:
        """Wait until C{text} is on the screen; the screen."""
        waited = 0.0
        while text.rstrip() not in self.text():
            if waited > timeout or self.ended.called:
                raise AssertionError(
                    f"{text!r} did not appear; the screen:\n{self.text()}"
                )
            await _later(0.02)
            waited += 0.02
        return self.text()

    async def settle(self) -> str:
        """Wait until the screen stops changing for a moment; the screen."""
        before = None
        while before != self.raw:
            before = self.raw
            await _later(0.15)
        return self.text()


def start(testcase, program: str, args, home: str, columns: int = 80) -> Terminal:
    """Run an installed terminal program on a new pseudo-terminal."""
    terminal = Terminal(columns)
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    path = os.path.join(os.path.dirname(sys.executable), program)
    env = dict(
        os.environ,
        PYTHONPATH=ROOT,
        HOME=home,
        TERM="xterm",
        PROMPT_TOOLKIT_NO_CPR="1",
    )
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    reactor.spawnProcess(
        terminal, path, [path] + list(args), env=env, usePTY=(master, slave, os.ttyname(slave))
    )

    async def stop():
        if not terminal.ended.called:
            terminal.transport.signalProcess("KILL")
            await terminal.ended

    testcase.addCleanup(lambda: defer.Deferred.fromCoroutine(stop()))
    return terminal


class LineEditorTests(unittest.TestCase):
    async def setUp(self):
        self.market = await start_marketplace(self)
        self.home = os.path.abspath(self.mktemp())
        os.makedirs(self.home)

    def seller(self) -> Terminal:
        port = str(self.market.ports["seller"])
        return start(self, "marketplace-seller-cli", ["127.0.0.1", port], self.home)

    def buyer(self) -> Terminal:
        port = str(self.market.ports["buyer"])
        return start(self, "marketplace-buyer-cli", ["127.0.0.1", port], self.home)

    async def test_history_arrows_and_ctrl_l(self):
        term = self.seller()
        await term.expect("seller>")
        term.send("help more\r")
        await term.expect("example: more")
        term.send("rating\r")
        await term.expect("rating needs you to log in first")
        # Up twice: the older line, whose word is edited with the arrows.
        term.send(UP + UP)
        await term.expect("seller> help more")
        term.send(b"\x1b[D" * 4 + b"x")
        await term.expect("seller> help xmore")
        term.send(CTRL_L)
        screen = await term.settle()
        self.assertTrue(screen.startswith("seller> help xmore"), screen)
        term.send("\r")
        await term.expect("there is no command 'xmore'")
        term.send(CTRL_D)
        self.assertEqual(await term.ended, 0)
        with open(os.path.join(self.home, ".marketplace-seller-history")) as f:
            self.assertIn("+rating\n", f.read())
        # The next run has the history of the last.
        term = self.seller()
        await term.expect("seller>")
        term.send(UP)
        await term.expect("seller> help xmore")
        term.send(CTRL_C)
        await term.expect("seller> help xmore\nseller>")
        term.send("quit\r")
        self.assertEqual(await term.ended, 0)

    async def test_completion_of_commands_and_item_ids(self):
        seller = make_client(self, SellerClient, service(self.market, "seller"))
        await seller.create_account("sam", PASSWORD)
        await seller.login("sam", PASSWORD)
        ids = []
        for n in range(3):
            answer = await seller.register_item_for_sale(
                f"Mug {n}", 3, ["mug"], "new", "4.50", 5
            )
            ids.append(answer["item_id"])
        term = self.seller()
        await term.expect("seller>")
        term.send("log\t")
        screen = await term.settle()
        self.assertIn("login", screen)  # login and logout: a menu
        self.assertIn("logout", screen)
        term.send(TAB)  # the first of the menu
        await term.expect("seller> login")
        term.send(" sam\r")
        await term.expect("Password: ")
        term.send(PASSWORD + "\r")
        await term.expect("Logged in as sam")
        self.assertNotIn(PASSWORD, term.text())
        term.send("ite\t")
        await term.expect("seller sam> items")
        term.send("\r")
        await term.expect("3 items, 15 units on sale.")
        term.send(CTRL_L + b"pri\t")
        await term.expect("seller sam> price")
        term.send(" 3-\t")
        screen = await term.settle()
        for item in ids:  # a menu of the ids seen
            self.assertIn(item, screen)
        term.send(CTRL_C)
        await term.expect("seller sam>")
        term.send("price 3-" + "\t")
        await term.settle()
        term.send(TAB)  # the first of the menu
        await term.expect(f"seller sam> price {ids[0]}")
        term.send(" 3.99\r")
        await term.expect(f"{ids[0]} Mug 0 now costs 3.99.")
        term.send(CTRL_D)
        screen = await term.expect("Logged out.")
        self.assertEqual(await term.ended, 0)

    async def test_questions_checked_as_answered_and_ctrl_c(self):
        term = self.seller()
        await term.expect("seller>")
        term.send(f"register sam --password {PASSWORD}\r")
        await term.expect("Registered seller sam")
        term.send(f"login sam -p {PASSWORD}\r")
        await term.expect("Logged in as sam")
        term.send("sell\r")
        await term.expect("Item name: ")
        term.send("Blue mug\r")
        await term.expect("Category (a number): ")
        term.send("kitchen\r")
        # Reported at once, and the answer stays to be corrected.
        await term.expect("CATEGORY must be a whole number of 0 or more, not 'kitchen'")
        term.send(b"\x7f" * 7 + b"3\r")
        await term.expect("Condition (new or used): ")
        term.send("old\r")
        await term.expect("CONDITION must be new or used, not 'old'")
        term.send(CTRL_C)
        await term.expect("sell cancelled.")
        self.assertTrue(term.line().startswith("seller sam>"), term.text())
        # The program runs on: a Ctrl-C at the password too.
        term.send("login sam\r")
        await term.expect("Password: ")
        term.send(CTRL_C)
        await term.expect("login cancelled.")
        term.send("rating\r")
        await term.expect("0 thumbs up")
        term.send(CTRL_D)
        await term.expect("Logged out.")
        self.assertEqual(await term.ended, 0)

    async def test_name_taken_is_told_before_the_password(self):
        seller = make_client(self, SellerClient, service(self.market, "seller"))
        await seller.create_account("sam", PASSWORD)
        term = self.seller()
        await term.expect("seller>")
        term.send("register sam\r")
        screen = await term.expect("error: there is already a seller called 'sam'")
        self.assertNotIn("Password", screen)
        term.send("register sue\r")
        await term.expect("Password: ")
        term.send(PASSWORD + "\r")
        await term.expect("Password again: ")
        term.send(PASSWORD + "\r")
        await term.expect("Registered seller sue")
        term.send("quit\r")
        self.assertEqual(await term.ended, 0)

    async def test_paging_a_search(self):
        seller = make_client(self, SellerClient, service(self.market, "seller"))
        await seller.create_account("sam", PASSWORD)
        await seller.login("sam", PASSWORD)
        for n in range(45):
            await seller.register_item_for_sale(
                f"Cup {n:02}", 7, ["cup"], "new", "2.00", 1
            )
        term = self.buyer()
        await term.expect("buyer>")
        term.send(f"register bea -p {PASSWORD}\rlogin bea -p {PASSWORD}\r")
        await term.expect("Logged in as bea")
        term.send(CTRL_L + b"search 7 cup\r")
        await term.expect("Items 1-20 of 45. Type 'more' for the next 20.")
        term.send(CTRL_L + b"more\r")
        screen = await term.expect("Items 21-40 of 45. Type 'more' for the next 5.")
        self.assertIn("Cup 20", screen)
        self.assertNotIn("Cup 19", screen)
        term.send(CTRL_L + b"more\r")
        screen = await term.expect("Items 41-45 of 45.")
        self.assertIn("Cup 44", screen)
        term.send("more\r")
        await term.expect("error: there is nothing more to show")
        term.send(CTRL_L + b"search 7 cup --page 2\r")
        await term.expect("Items 21-40 of 45.")
        for line in term.text().splitlines():
            self.assertLessEqual(len(line), 80)
        term.send("quit\r")
        self.assertEqual(await term.ended, 0)


class ConnectionProblemTests(unittest.TestCase):
    """What a person sees when the program cannot talk to the service."""

    async def setUp(self):
        self.home = os.path.abspath(self.mktemp())
        os.makedirs(self.home)

    async def assert_told(self, args, message: str):
        started = reactor.seconds()
        term = start(self, "marketplace-buyer-cli", args, self.home)
        screen = await term.expect(message, timeout=5)
        self.assertLess(reactor.seconds() - started, 2.0 + 1.5)  # + Python's start
        self.assertEqual(await term.ended, 1)
        self.assertNotIn("Password", screen)
        self.assertNotIn("Traceback", screen)
        return screen

    async def test_connection_refused(self):
        await self.assert_told(
            ["127.0.0.1", str(free_port())],
            "nothing is listening at 127.0.0.1:",
        )
