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

from marketplace.clientlib import SellerClient
from marketplace.daemon.devcerts import make_dev_certs
from tests.support import _later, start_marketplace, start_plain_and_tls
from tests.test_cli import ROOT
from tests.test_client import make_client, service
from tests.test_connection_errors import free_port

UP, DOWN = b"\x1b[A", b"\x1b[B"
CTRL_C, CTRL_D, CTRL_L, TAB = b"\x03", b"\x04", b"\x0c", b"\t"
PASSWORD = "correct-horse-7"


def _flat(text: str) -> str:
    return " ".join(text.split())


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
        """Wait until C{text} is on the screen (line ends and runs of spaces
        count as one space: a long line wraps); the screen."""
        waited = 0.0
        while _flat(text) not in _flat(self.text()):
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
    # A copy of the master end stays open after the program, to read the
    # terminal's modes as the program left them.
    terminal.master = os.dup(master)
    testcase.addCleanup(os.close, terminal.master)
    reactor.spawnProcess(
        terminal,
        path,
        [path] + list(args),
        env=env,
        usePTY=(master, slave, os.ttyname(slave)),
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
        screen = await term.expect("Logged in as sam")
        self.assertIn("\nPassword:\nLogged in as sam", screen)  # not even ****
        term.send("ite\t")
        await term.expect("seller sam> items")
        term.send("\r")
        await term.expect("3 items, 15 units on sale.")
        term.send(CTRL_L + b"pri\t")
        await term.expect("seller sam> price")
        term.send(" 3-\t")
        screen = await term.settle()
        for n, item in enumerate(ids):  # a menu of the ids seen, named
            self.assertRegex(screen, f"{item} +Mug {n}")
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
        await term.expect("sell cancelled.\nseller sam>")
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

    async def test_a_form_then_login_asks_the_password_afresh(self):
        """After a form (done, then cancelled) login checks no answer
        against an old question's rule, and nothing of a password is shown
        or recalled by the Up arrow, at a question or at the prompt."""
        seller = make_client(self, SellerClient, service(self.market, "seller"))
        await seller.create_account("sam", PASSWORD)
        term = self.seller()
        await term.expect("seller>")
        term.send(f"login sam -p {PASSWORD}\r")
        await term.expect("Logged in as sam")
        term.send(CTRL_L + b"sell\r")
        await term.expect("Item name: ")
        term.send("Desk lamp\r")
        await term.expect("Category (a number): ")
        term.send("lamps\r")
        # The error on a line of its own, then the question again, empty.
        await term.expect(
            "Category (a number): lamps\n"
            "error: CATEGORY must be a whole number of 0 or more, not 'lamps'\n"
            "Category (a number):"
        )
        self.assertEqual(term.line(), "Category (a number):")
        for typed, question in [
            ("3", "Condition (new or used): "),
            ("used", "Price: "),
            ("12", "Units for sale: "),
            ("2", "Keywords (up to 5, space-separated): "),
        ]:
            term.send(typed + "\r")
            await term.expect(question)
        term.send("lamp desk\r")
        screen = await term.expect("is on sale: 2 units of Desk lamp at 12.00.")
        self.assertNotIn("lamps3", screen)
        lamp = screen.split("Item ")[-1].split()[0]
        term.send(f"remove-units {lamp} 5\r")
        await term.expect(
            f"error: cannot take 5 units of {lamp} Desk lamp off sale: it has only 2 on sale"
        )
        term.send("sell Flask 3 new 9 1 insulated\r")
        await term.expect(
            "error: keyword 'insulated' has 9 characters; keywords have 1 to 8"
        )
        term.send("rating\r")
        await term.expect("0 thumbs down, 0 units sold.")
        # A form cancelled at a question with a rule of its own.
        term.send(CTRL_L + b"sell\r")
        await term.expect("Item name: ")
        term.send("Tulip\r")
        await term.expect("Category (a number): ")
        term.send("3\r")
        await term.expect("Condition (new or used): ")
        term.send(CTRL_C)
        await term.expect("sell cancelled.")
        term.send("logout\r")
        await term.expect("Logged out.")
        term.send("login sam\r")
        await term.expect("Password: ")
        term.send("Tulip-Harbor-42\r")
        await term.expect("error: wrong username or password")
        term.send("login sam\r")
        await term.expect("Password: ")
        term.send(PASSWORD + "\r")
        await term.expect("Logged in as sam (seller")
        # Up at a question: the earlier answers of this run, never a password.
        term.send(CTRL_L + b"sell\r")
        await term.expect("Item name: ")
        for _ in range(12):
            term.send(UP)
            screen = await term.settle()
            self.assertNotIn("Tulip-Harbor", screen)
            self.assertNotIn(PASSWORD, screen)
        term.send(CTRL_C)
        await term.expect("sell cancelled.")
        term.send(CTRL_L)
        await term.settle()
        for _ in range(12):  # nor at the prompt
            term.send(UP)
            screen = await term.settle()
            self.assertNotIn(PASSWORD, screen)
        term.send(CTRL_C + CTRL_D)
        await term.expect("Logged out.")
        self.assertEqual(await term.ended, 0)
        with open(os.path.join(self.home, ".marketplace-seller-history")) as f:
            kept = f.read()
        self.assertIn("+sell\n", kept)
        self.assertNotIn(PASSWORD, kept)
        self.assertNotIn("Tulip-Harbor", kept)

    async def test_a_purchase_then_login_and_quit_with_a_cart(self):
        """The buyer: after a purchase and a cancelled one, login works and
        no card detail comes back with Up; quitting with a cart not saved
        warns first."""
        seller = make_client(self, SellerClient, service(self.market, "seller"))
        await seller.create_account("sam", PASSWORD)
        await seller.login("sam", PASSWORD)
        answer = await seller.register_item_for_sale("Lamp", 3, ["lamp"], "new", "5", 2)
        lamp = answer["item_id"]
        term = self.buyer()
        await term.expect("buyer>")
        term.send(f"register bea -p {PASSWORD}\rlogin bea -p {PASSWORD}\r")
        await term.expect("Logged in as bea")
        term.send(f"add {lamp}\rbuy\r")
        await term.expect("Name on the card: ")
        for typed, question in [
            ("Bea Card", "Card number: "),
            ("4111 1111 1111 1111", "Expires (MM/YY): "),
            ("12/39", "Security code: "),
        ]:
            term.send(typed + "\r")
            await term.expect(question)
        term.send("123\r")
        await term.expect("Purchase")
        term.send(CTRL_L + f"add {lamp} 2\r".encode())
        await term.expect(f"error: only 1 unit of {lamp} left")
        term.send(f"add {lamp}\rbuy\r")
        await term.expect("Name on the card: ")
        for _ in range(6):
            term.send(UP)
            screen = await term.settle()
            for private in ("Bea Card", "4111", "12/39", "123"):
                self.assertNotIn(private, screen)
        term.send(b"\x15Bea Card\r")  # Ctrl-U: the line emptied first
        await term.expect("Card number: ")
        term.send(CTRL_C)
        await term.expect("buy cancelled.")
        term.send("logout\rlogin bea\r")
        await term.expect("Password: ")
        term.send(PASSWORD + "\r")
        await term.expect("Logged in as bea (buyer")
        self.assertNotIn(PASSWORD, term.text())
        term.send(f"add {lamp}\rquit\r")
        await term.expect(
            "warning: the cart (1 unit) is not saved ('save' keeps it for your next"
            " login); 'quit' or Ctrl-D again leaves without it\nbuyer bea>"
        )
        term.send("quit\r")
        await term.expect("Logged out.")
        self.assertEqual(await term.ended, 0)

    async def test_the_program_of_the_other_role(self):
        """Each program pointed at the other service says so in one line,
        creates no account there, and keeps running."""
        ports = self.market.ports
        for program, role, other in [
            ("marketplace-buyer-cli", "buyer", "seller"),
            ("marketplace-seller-cli", "seller", "buyer"),
        ]:
            where = f"127.0.0.1:{ports[other]}"
            term = start(self, program, ["127.0.0.1", str(ports[other])], self.home)
            told = f"error: {where} is a {other} service, not a {role} service"
            await term.expect(told)
            term.send("register bob\r")
            await term.expect(f"{role}> register bob\n{told}")
            term.send(f"login bob -p {PASSWORD}\r")
            await term.expect(f"{role}> login bob -p {PASSWORD}\n{told}")
            term.send("help more\r")
            screen = await term.expect("example: more")
            self.assertNotIn("Password", screen)
            self.assertNotIn("Traceback", screen)
            term.send("quit\r")
            self.assertEqual(await term.ended, 0)
        for role in ("buyer", "seller"):
            client = make_client(self, SellerClient, service(self.market, role))
            self.assertEqual(await client.which_service(), role)
            self.assertTrue((await client.check_username("bob"))["available"])

    async def test_sigterm_logs_out_and_gives_the_terminal_back(self):
        term = self.seller()
        await term.expect("seller>")
        term.send(f"register sam -p {PASSWORD}\rlogin sam -p {PASSWORD}\r")
        await term.expect("seller sam>")
        await term.settle()
        lflag = termios.tcgetattr(term.master)[3]
        self.assertFalse(lflag & termios.ICANON)  # the editor's raw mode
        term.transport.signalProcess("TERM")
        await term.ended
        self.assertIn("Logged out.", term.text())
        self.assertNotIn("Traceback", term.text())
        lflag = termios.tcgetattr(term.master)[3]
        self.assertTrue(lflag & termios.ICANON and lflag & termios.ECHO)

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
        # A password the service would refuse is refused at once, and asked
        # for again; so is a second one that differs.
        term.send("short\r")
        await term.expect(
            "error: the password must have at least 8 characters"
            " (not counting invisible ones)\nPassword:"
        )
        term.send("password\r")
        await term.expect("error: the password is one of the most common passwords")
        term.send(PASSWORD + "\r")
        await term.expect("Password again: ")
        term.send("correct-horse-8\r")
        await term.expect("error: the two passwords differ; type the password again")
        term.send(PASSWORD + "\r")
        await term.expect("Password again: ")
        term.send(PASSWORD + "\r")
        screen = await term.expect("Registered seller sue")
        self.assertNotIn("short", screen)
        self.assertNotIn(PASSWORD, screen)
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
        screen = await term.expect("error: there is nothing more to show")
        self.assertNotIn("usage", screen)
        term.send(CTRL_L + b"search 7 cup --page 2\r")
        await term.expect("Items 21-40 of 45.")
        for line in term.text().splitlines():
            self.assertLessEqual(len(line), 80)
        term.send("quit\r")
        self.assertEqual(await term.ended, 0)


class ExpiredSessionTests(unittest.TestCase):
    async def test_quit_after_the_session_expired(self):
        market = await start_marketplace(self, session_timeout=1.0)
        home = os.path.abspath(self.mktemp())
        os.makedirs(home)
        port = str(market.ports["seller"])
        term = start(self, "marketplace-seller-cli", ["127.0.0.1", port], home)
        await term.expect("seller>")
        term.send(f"register sam -p {PASSWORD}\rlogin sam -p {PASSWORD}\r")
        await term.expect("Logged in as sam")
        await _later(1.5)
        term.send("quit\r")
        screen = await term.expect("Logged out (the session had already ended).")
        self.assertNotIn("could not log out", screen)
        self.assertEqual(await term.ended, 0)


class ConnectionProblemTests(unittest.TestCase):
    """What a person sees when the program cannot talk to the service."""

    async def setUp(self):
        self.home = os.path.abspath(self.mktemp())
        os.makedirs(self.home)

    async def assert_told(self, args, message: str):
        term = start(self, "marketplace-buyer-cli", args, self.home)
        # Told at the first refusal, not after the client library's 30 s of
        # trying again (the bound is far from both, for a loaded machine).
        screen = await term.expect(message, timeout=20)
        self.assertEqual(await term.ended, 1)
        self.assertNotIn("Password", screen)
        self.assertNotIn("Traceback", screen)
        return screen

    async def test_connection_refused(self):
        await self.assert_told(
            ["127.0.0.1", str(free_port())],
            "nothing is listening at 127.0.0.1:",
        )


class TlsProblemTests(unittest.TestCase):
    """The program against a buyer service that listens on TLS and on plain
    TCP: the wrong CA, TLS to the plain port, plain frames to the TLS port."""

    async def setUp(self):
        folder = os.path.abspath(self.mktemp())
        self.certs = make_dev_certs(folder)
        self.other = make_dev_certs(folder + "-other")
        self.home = os.path.abspath(self.mktemp())
        os.makedirs(self.home)
        market = await start_marketplace(self, services=("buyer",))
        await market.stop()
        ports = await start_plain_and_tls(self, ("buyer",), self.certs, market.settings)
        self.ports = {kind: str(port) for (_, kind), port in ports.items()}

    async def told(self, args, typed: str, message: str) -> str:
        term = start(self, "marketplace-buyer-cli", args, self.home)
        if typed:
            await term.expect("buyer>")
            started = reactor.seconds()
            term.send(typed)
        else:
            started = reactor.seconds()
        screen = await term.expect(message, timeout=10)
        if typed:
            self.assertLess(reactor.seconds() - started, 2.0)
        self.assertNotIn("Password", screen)
        self.assertNotIn("Traceback", screen)
        return screen

    async def test_certificate_not_trusted(self):
        args = ["--ca-cert", self.other["ca_cert"], "localhost", self.ports["tls"]]
        await self.told(
            args,
            "",
            f"error: the certificate of localhost:{self.ports['tls']} is not trusted",
        )

    async def test_tls_to_the_plain_port(self):
        args = ["--ca-cert", self.certs["ca_cert"], "localhost", self.ports["tcp"]]
        await self.told(args, "", f"localhost:{self.ports['tcp']} does not speak TLS")

    async def test_plain_frames_to_the_tls_port(self):
        args = ["localhost", self.ports["tls"]]
        screen = await self.told(args, "login bea\r", "it may be a TLS port")
        self.assertIn("connect with --ca-cert CA.pem", screen)

    async def test_the_right_ca(self):
        args = ["--ca-cert", self.certs["ca_cert"], "localhost", self.ports["tls"]]
        term = start(self, "marketplace-buyer-cli", args, self.home)
        await term.expect("buyer>")
        term.send("register bea\r")
        await term.expect("Password:")
        term.send(CTRL_C)
        await term.expect("register cancelled.")
        term.send(CTRL_D)
        self.assertEqual(await term.ended, 0)


class CtrlCWhileWaitingTests(unittest.TestCase):
    async def test_ctrl_c_cancels_a_command_that_waits(self):
        """A service that never answers: Ctrl-C gives the prompt back."""
        home = os.path.abspath(self.mktemp())
        os.makedirs(home)
        factory = protocol.Factory.forProtocol(protocol.Protocol)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        args = ["127.0.0.1", str(port.getHost().port)]
        term = start(self, "marketplace-buyer-cli", args, home)
        await term.expect("buyer>")
        term.send("login bea\r")
        await _later(0.5)
        self.assertNotIn("Password", term.text())
        term.send(CTRL_C)
        await term.expect("login cancelled.")
        term.send("help more\r")
        await term.expect("example: more")
        term.send(CTRL_D)
        self.assertEqual(await term.ended, 0)
