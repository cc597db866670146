"""The line-based shell both terminal programs are made of.

A L{Shell} reads commands one line at a time (from a person at a terminal or
from a script piped in), runs them one after the other through a
L{marketplace.clientlib} client, and writes the answers as text.  Which
commands there are is the business of L{clients.buyer} and
L{clients.seller}; the words of a line are split like a shell's (quotes
group words, C{#} starts a comment).
"""

import re
import shlex
from collections import deque
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Awaitable, Callable, Dict, List, Optional, Sequence, Tuple

from twisted.internet import defer
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from zope.interface import implementer

from marketplace.clientlib import ClientError
from marketplace.contract.errors import INVALID_SESSION, USERNAME_TAKEN, ApiError
from marketplace.payments import cards

from clients import format

_ITEM_ID = re.compile(r"[0-9]{1,10}-[0-9]{1,18}")
_CENT = Decimal("0.01")

#: The code of the error a command fails with when the program is pointed
#: at another service (the client's, not the protocol's).
WRONG_SERVICE = "WRONG_SERVICE"

# Exit status of a script in which a command failed, and of an interrupt.
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A command line that does not fit the command's usage."""


class EndOfInput(Exception):
    """The input ended while a command was asking for more."""


class Cancelled(Exception):
    """The person pressed Ctrl-C while a command asked or worked."""


# A check of one answer: returns nothing, raises UsageError for a bad one.
Check = Callable[[str], object]

#: How long the greeting waits to learn which service answers.
GREETING_WITHIN = 2.0

#: Columns of the terminal when it cannot be asked (a script's output).
DEFAULT_WIDTH = 80


@dataclass
class Command:
    """One command of a shell.

    C{run} gets the shell and the words after the command's name.
    """

    name: str
    args: str
    summary: str
    example: str
    run: Callable[["Shell", List[str]], Awaitable[None]]
    needs_login: bool = True
    aliases: Tuple[str, ...] = ()
    details: str = ""

    @property
    def usage(self) -> str:
        """The command's name and arguments, as help shows them."""
        return f"{self.name} {self.args}".rstrip()


# Checking and converting the words of a command line.


def arity(words: Sequence[str], low: int, high: Optional[int] = None) -> None:
    """Fail unless there are C{low} to C{high} words (no limit when None)."""
    if len(words) < low:
        raise UsageError("too few arguments")
    if high is not None and len(words) > high:
        raise UsageError("too many arguments")


def take_option(words: List[str], *names: str) -> Tuple[Optional[str], List[str]]:
    """Take C{--name VALUE} or C{--name=VALUE} out of C{words}; (value, rest)."""
    rest: List[str] = []
    value = None
    remaining = iter(words)
    for word in remaining:
        name, equals, attached = word.partition("=")
        if name in names:
            if equals:
                value = attached
            else:
                value = next(remaining, None)
                if value is None:
                    raise UsageError(f"{name} needs a value")
        else:
            rest.append(word)
    return value, rest


def item_id(word: str) -> str:
    """An item id such as C{3-17}."""
    if not _ITEM_ID.fullmatch(word):
        raise UsageError(f"{word!r} is not an item id (they look like 3-17)")
    return word


def whole(word: str, what: str, low: int = 1) -> int:
    """A whole number of at least C{low}."""
    try:
        value = int(word)
    except ValueError:
        value = None
    if value is None or value < low or value > 2**31 - 1:
        raise UsageError(
            f"{what} must be a whole number of {low} or more, not {word!r}"
        )
    return value


def price(word: str) -> Decimal:
    """A price: a number of 0 or more with at most two decimals."""
    try:
        value = Decimal(word)
        exact = value.is_finite() and value == value.quantize(_CENT)
    except (InvalidOperation, ValueError):
        exact = False
    if not exact or value < 0:
        raise UsageError(f"PRICE must be an amount such as 4.50, not {word!r}")
    return value.quantize(_CENT)


def choice(word: str, what: str, options: Sequence[str]) -> str:
    """One of C{options}, in any case."""
    if word.lower() not in options:
        raise UsageError(f"{what} must be {' or '.join(options)}, not {word!r}")
    return word.lower()


def keywords(words: Sequence[str]) -> List[str]:
    """At most 5 keywords of 1 to 8 characters."""
    if len(words) > 5:
        raise UsageError(f"give at most 5 keywords, not {len(words)}")
    for word in words:
        if not 1 <= len(word) <= 8:
            raise UsageError(
                f"keyword {word!r} has {format.plural(len(word), 'character')};"
                " keywords have 1 to 8"
            )
    return list(words)


_PASSWORD_OPTIONS = ("--password", "-p")


def carries_secret(line: str) -> bool:
    """Whether a command line holds a password (C{--password}, C{-p}) or
    what looks like a card number, so that no history may keep it."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        words = line.split()
    return any(
        word.partition("=")[0] in _PASSWORD_OPTIONS
        or cards.card_digits(word) is not None
        for word in words[1:]
    )


class Terminal:
    """Echo control of the terminal on C{fd}, for secrets typed in."""

    def __init__(self, fd: int = 0) -> None:
        self.fd = fd
        self._saved = None

    def echo(self, on: bool) -> None:
        """Turn echo of typed characters on or off."""
        import termios

        try:
            if not on:
                self._saved = termios.tcgetattr(self.fd)
                quiet = termios.tcgetattr(self.fd)
                quiet[3] &= ~termios.ECHO
                termios.tcsetattr(self.fd, termios.TCSANOW, quiet)
            elif self._saved is not None:
                termios.tcsetattr(self.fd, termios.TCSANOW, self._saved)
                self._saved = None
        except termios.error:
            pass


@implementer(IHalfCloseableProtocol)
class Shell(LineReceiver):
    """Runs command lines against a client, one at a time, in order.

    @param client: a L{BuyerClient} or L{SellerClient}.
    @param commands: the commands, by name (aliases included).
    @param interactive: whether a person types the lines: then there is a
        prompt, and missing passwords and card details are asked for.  When
        not (a script), errors name their line and L{finished} fires with
        status 1 if any command failed.
    @param terminal: echo control while a secret is typed (interactive).
    @param where: the service's address, for the greeting.

    L{finished} fires with the exit status once the input has ended (or
    C{quit}) and the session is logged out.
    """

    delimiter = b"\n"
    log = Logger()

    def __init__(
        self,
        client,
        commands: Dict[str, Command],
        interactive: bool,
        terminal: Optional[Terminal] = None,
        where: str = "",
    ) -> None:
        self.client = client
        self.commands = commands
        self.interactive = interactive
        self.terminal = terminal
        self.where = where
        self.failed = False
        self.line_number = 0
        self.finished: defer.Deferred = defer.Deferred()
        self._lines: deque = deque()
        self._answer: Optional[defer.Deferred] = None
        self._busy = False
        self._pumping = False
        self._input_done = False
        self._interrupted = False
        self._finishing: Optional[defer.Deferred] = None
        self._idle_waiters: List[defer.Deferred] = []
        self._lost_waiters: List[defer.Deferred] = []
        self._disconnected = False
        self._service_checked = False
        #: What leaving now would lose (a cart not saved), in words; None
        #: when nothing.  At a terminal the first quit only warns of it.
        self.unsaved: Optional[str] = None
        self._warned = False
        #: The line editor that asks the questions at a terminal, if any.
        self.editor = None
        #: Columns of the terminal the output goes to, which tables fit;
        #: None for output to a file or a pipe (tables whole, as always).
        self.width: Optional[int] = None
        #: Item ids seen in answers this session, with their names, for
        #: completion.
        self.seen_ids: Dict[str, str] = {}
        #: What the 'more' command shows next, if there is more.
        self.more: Optional[Callable[[], Awaitable[None]]] = None

    @property
    def role(self) -> str:
        """buyer or seller."""
        return self.client.role

    # Output

    def write(self, text: str) -> None:
        """Write lines of text."""
        self.transport.write((text + "\n").encode("utf-8", "replace"))

    def fail(self, message: str) -> None:
        """Report a failed command in one line."""
        self.failed = True
        if self.interactive:
            self.write("\n".join(format.wrap(f"error: {message}", self.columns, "  ")))
        else:
            self.write(f"line {self.line_number}: error: {message}")

    def prompt(self) -> str:
        """The prompt: the role, and who is logged in."""
        if self.client.username:
            return f"{self.role} {self.client.username}> "
        return f"{self.role}> "

    @property
    def columns(self) -> int:
        """The width text is wrapped to: the terminal's, or 80."""
        return self.width or DEFAULT_WIDTH

    @property
    def leaving(self) -> bool:
        """Whether the input has ended or quit was typed."""
        return self._input_done

    def _show_prompt(self) -> None:
        if self.editor is not None:
            return
        if self.interactive and not self._lines and not self._input_done:
            self.transport.write(self.prompt().encode("utf-8"))

    # Input

    def banner(self) -> str:
        """The greeting, wrapped to the width."""
        where = f" at {self.where}" if self.where else ""
        text = (
            f"Marketplace {self.role}{where}. 'help' lists the commands, 'quit' leaves."
        )
        return "\n".join(format.wrap(text, self.columns))

    def connectionMade(self) -> None:
        if self.interactive and self.editor is None:
            self.write(self.banner())
            self._show_prompt()

    def lineReceived(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip("\r")
        if self._answer is not None:
            answer, self._answer = self._answer, None
            answer.callback(text)
            return
        self._lines.append(text)
        self._pump()

    def readConnectionLost(self) -> None:
        """End of input: run what is left, then log out and finish."""
        if self.interactive and not self._input_done:
            # Ctrl-D leaves the cursor after the prompt.
            self.transport.write(b"\n")
        self._input_done = True
        if self._answer is not None:
            answer, self._answer = self._answer, None
            answer.errback(EndOfInput())
        self._pump()

    def writeConnectionLost(self) -> None:
        """Nobody reads the output any more: stop."""
        self._lines.clear()
        self.readConnectionLost()

    def connectionLost(self, reason=None) -> None:
        self._disconnected = True
        self._lines.clear()
        self._input_done = True
        for d in self._drain(self._lost_waiters):
            d.callback(None)
        self._pump()

    def when_disconnected(self) -> defer.Deferred:
        """A Deferred that fires once the terminal connection is closed."""
        if self._disconnected:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._lost_waiters.append(d)
        return d

    async def ask(
        self,
        question: str,
        secret: bool = False,
        check: Optional[Check] = None,
        private: bool = False,
    ) -> str:
        """Ask the person for a line (not echoed when C{secret}; kept in no
        history when C{secret} or C{private}); with a C{check}, a bad answer
        is reported at once on an C{error:} line and asked for again."""
        # Between the editor's prompts the terminal echoes what is typed
        # ahead (while an answer is checked, say): not a secret's.
        quiet = secret and self.editor is not None and self.terminal is not None
        if quiet:
            self.terminal.echo(False)
        try:
            return await self._ask_until_good(question, secret, check, private)
        finally:
            if quiet:
                self.terminal.echo(True)

    async def _ask_until_good(
        self, question: str, secret: bool, check: Optional[Check], private: bool
    ) -> str:
        while True:
            if self.editor is not None:
                answer = await self.editor.ask(question, secret, private)
            else:
                answer = await self._ask_line(question, secret)
            if check is None:
                return answer
            try:
                check(answer)
            except UsageError as e:
                self.write("\n".join(format.wrap(f"error: {e}", self.columns, "  ")))
                continue
            return answer

    async def _ask_line(self, question: str, secret: bool) -> str:
        self.transport.write(question.encode("utf-8"))
        if secret and self.terminal is not None:
            self.terminal.echo(False)
        try:
            if self._lines:
                return self._lines.popleft()
            if self._input_done:
                raise EndOfInput()
            self._answer = defer.Deferred()
            return await self._answer
        finally:
            if secret:
                if self.terminal is not None:
                    self.terminal.echo(True)
                # The Enter that ended the secret was not echoed either.
                self.transport.write(b"\n")

    # Running commands

    def _pump(self) -> None:
        """Start the next line unless one runs; finish at the end of input."""
        if self._pumping:
            return
        self._pumping = True
        try:
            while not self._busy and self._lines and self._finishing is None:
                self._busy = True
                d = defer.Deferred.fromCoroutine(self.run_line(self._lines.popleft()))
                d.addErrback(self._bug)
                d.addBoth(self._line_done)
        finally:
            self._pumping = False
        if not self._busy and not self._lines:
            for d in self._drain(self._idle_waiters):
                d.callback(None)
            if self._input_done:
                self.finish()

    def _line_done(self, _) -> None:
        self._busy = False
        self._show_prompt()
        self._pump()

    def _bug(self, failure) -> None:
        self.log.failure("the shell failed", failure)
        self.fail("this program failed (a bug); the details are on standard error")

    def when_idle(self) -> defer.Deferred:
        """A Deferred that fires once every line received so far has run."""
        if not self._busy and not self._lines:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._idle_waiters.append(d)
        return d

    async def run_line(self, text: str) -> None:
        """Run one command line, reporting any error as one line of text."""
        self.line_number += 1
        try:
            words = shlex.split(text, comments=True)
        except ValueError as e:
            self.fail(f"cannot read that line ({e})")
            return
        if not words:
            return
        name, args = words[0].lower(), words[1:]
        command = self.commands.get(name)
        if command is None:
            self.fail(f"there is no command {name!r}; type 'help' for the list")
            return
        if command.needs_login and self.client.session_id is None:
            self.fail(f"{command.name} needs you to log in first: login USER")
            return
        try:
            await command.run(self, args)
        except UsageError as e:
            self.fail(f"{e}; usage: {command.usage}  (see 'help {command.name}')")
        except ClientError as e:
            self.fail(e.message)
        except EndOfInput:
            self.fail(f"{command.name} cancelled: the input ended")
        except Cancelled:
            self.write(f"{command.name} cancelled.")

    async def check_service(self) -> None:
        """Make sure the service at the other end is this program's role's:
        L{ClientError} WRONG_SERVICE, one sentence, if it is not.  Once it
        has been found right it is not asked again."""
        if self._service_checked:
            return
        found = await self.client.which_service()
        if found != self.role:
            raise ClientError(WRONG_SERVICE, wrong_service(self, found))
        self._service_checked = True

    async def greet(self) -> None:
        """At a terminal, once connected: the banner, and at once a line of
        warning if the service is not this program's (the program goes on:
        a command of its own then says so again)."""
        from twisted.internet import reactor

        self.write(self.banner())
        try:
            checking = defer.Deferred.fromCoroutine(self.check_service())
            await checking.addTimeout(GREETING_WITHIN, reactor)
        except ClientError as e:
            self.fail(e.message)
        except defer.TimeoutError:
            pass  # a slow service: login and register ask again

    def remember(self, *items: dict) -> None:
        """Keep the item ids of answers, for completion."""
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("item_id"), str):
                name = item.get("item_name")
                self.seen_ids[item["item_id"]] = name if isinstance(name, str) else ""

    def note_unsaved(self, what: Optional[str]) -> None:
        """Say what leaving now would lose (None: nothing); the next quit
        warns of it again."""
        self.unsaved = what
        self._warned = False

    def may_leave(self) -> bool:
        """Whether quit (or Ctrl-D) may leave now: at a terminal, with
        something unsaved, the first time only warns, and says how to leave."""
        if not self.interactive or self.unsaved is None or self._warned:
            return True
        self._warned = True
        text = f"{self.unsaved}; 'quit' or Ctrl-D again leaves without it"
        self.write("\n".join(format.wrap(f"warning: {text}", self.columns, "  ")))
        return False

    def quit(self) -> None:
        """Stop reading: the lines after this one are not run."""
        self._lines.clear()
        self._input_done = True

    # Ending

    def finish(self) -> defer.Deferred:
        """Log out if logged in, close the connection and fire L{finished}."""
        if self._finishing is None:
            self._finishing = defer.Deferred.fromCoroutine(self._finish())
        return self._finishing

    async def _finish(self) -> None:
        if self.client.session_id is not None:
            try:
                await self.client.logout()
                self.write("Logged out.")
            except ClientError as e:
                if e.code == INVALID_SESSION:
                    self.write("Logged out (the session had already ended).")
                else:
                    self.write(f"could not log out: {e.message}")
        await self.client.close()
        if self._interrupted and not self.interactive:
            status = EXIT_INTERRUPTED
        elif self.failed and not self.interactive:
            status = EXIT_FAILED
        else:
            status = 0
        if not self._disconnected:
            self.transport.loseConnection()
        self.finished.callback(status)

    def interrupt(self) -> defer.Deferred:
        """Ctrl-C: restore the terminal, log out and finish."""
        self._interrupted = True
        if self.terminal is not None:
            self.terminal.echo(True)
        if self.interactive and self._finishing is None and not self._disconnected:
            # Past the ^C the terminal shows.
            self.transport.write(b"\n")
        if self._answer is not None:
            answer, self._answer = self._answer, None
            answer.errback(EndOfInput())
        self._lines.clear()
        self._input_done = True
        return self.finish()

    @staticmethod
    def _drain(waiters: List[defer.Deferred]) -> List[defer.Deferred]:
        taken = list(waiters)
        waiters.clear()
        return taken


def wrong_service(shell: "Shell", found: Optional[str]) -> str:
    """The one line that says the service at the other end is not the
    program's: C{found} is the role that answers, or None."""
    where = shell.where or "that address"
    role = shell.role
    if found is None:
        return f"{where} is not a {role} service"
    default = shell.client.default_port
    return f"{where} is a {found} service, not a {role} service (port {default})"


def command_table(commands: Sequence[Command]) -> Dict[str, Command]:
    """Commands by name and by alias."""
    table: Dict[str, Command] = {}
    for command in commands:
        table[command.name] = command
        for alias in command.aliases:
            table[alias] = command
    return table


# The commands both programs have.


def common_commands(
    all_commands: Callable[[], Dict[str, Command]], own: List[Command]
) -> List[Command]:
    """register, login and logout, then a program's C{own} commands, then
    help and quit; C{all_commands} gives the program's commands for help."""

    async def register(shell: Shell, words: List[str]) -> None:
        password, words = take_option(words, "--password", "-p")
        arity(words, 1, 2)
        username = words[0]
        name = words[1] if len(words) > 1 else None
        await shell.check_service()
        if password is None:
            # The name first: nobody types a password twice for a name
            # that is taken (and a connection problem shows up here too).
            if not (await shell.client.check_username(username))["available"]:
                raise ClientError(
                    USERNAME_TAKEN,
                    f"there is already a {shell.role} called {username!r}",
                )
            password = await _ask_password(shell, confirm=True)
        answer = await shell.client.create_account(username, password, name)
        shell.write(
            f"Registered {shell.role} {username} ({shell.role} id"
            f" {answer.get(shell.client.id_field, '?')}). Now: login {username}"
        )

    async def login(shell: Shell, words: List[str]) -> None:
        password, words = take_option(words, "--password", "-p")
        arity(words, 1, 1)
        # Before the password is typed: the wrong service, a connection
        # problem.
        await shell.check_service()
        if password is None:
            await shell.client.check_username(words[0])
            password = await _ask_password(shell)
        if shell.client.session_id is not None:
            await shell.client.logout()
        answer = await shell.client.login(words[0], password)
        shell.note_unsaved(None)
        shell.write(
            f"Logged in as {words[0]} ({shell.role}"
            f" {answer.get(shell.client.id_field, '?')})."
        )

    async def logout(shell: Shell, words: List[str]) -> None:
        arity(words, 0, 0)
        await shell.client.logout()
        shell.write("Logged out.")

    async def help_(shell: Shell, words: List[str]) -> None:
        arity(words, 0, 1)
        commands = all_commands()
        if words:
            command = commands.get(words[0].lower())
            if command is None:
                raise UsageError(f"there is no command {words[0]!r}")
            shell.write(help_text(command, shell.columns))
            return
        seen: List[Command] = []
        for command in commands.values():
            if command not in seen:
                seen.append(command)
        shell.write(
            "Commands:\n"
            + help_list(seen, shell.columns)
            + "\nType 'help COMMAND' for details and an example."
        )

    async def more(shell: Shell, words: List[str]) -> None:
        arity(words, 0, 0)
        if shell.more is None:
            # Not a usage error: the command was typed right.
            shell.fail("there is nothing more to show")
            return
        await shell.more()

    async def quit_(shell: Shell, words: List[str]) -> None:
        arity(words, 0, 0)
        if shell.may_leave():
            shell.quit()

    account = [
        Command(
            "register",
            "USER [NAME] [--password PASSWORD]",
            "create an account",
            'register alice "Alice Smith"',
            register,
            needs_login=False,
            details="Without --password the password is asked for, and not shown"
            " as you type. NAME is the name others see; it defaults to USER.",
        ),
        Command(
            "login",
            "USER [--password PASSWORD]",
            "log in (asks for the password)",
            "login alice",
            login,
            needs_login=False,
            details="Without --password the password is asked for, and not shown"
            " as you type. Logging in again ends the session you had.",
        ),
        Command("logout", "", "log out", "logout", logout),
    ]
    general = [
        Command(
            "help",
            "[COMMAND]",
            "list the commands, or explain one",
            "help login",
            help_,
            needs_login=False,
            aliases=("?",),
        ),
        Command(
            "more",
            "",
            "show the next page of the last search or list",
            "more",
            more,
            needs_login=False,
        ),
        Command(
            "quit",
            "",
            "log out and leave (Ctrl-D at the prompt too)",
            "quit",
            quit_,
            needs_login=False,
            aliases=("exit",),
        ),
    ]
    return account + own + general


async def _ask_password(shell: Shell, confirm: bool = False) -> str:
    """A password typed at a question; with C{confirm} (a new account's), one
    the service will take, typed twice: a bad one, or two that differ, is
    reported at once and asked for again."""
    if not shell.interactive:
        raise UsageError("give the password with --password PASSWORD in a script")
    if not confirm:
        return await shell.ask("Password: ", secret=True, check=_some_password)
    while True:
        password = await shell.ask("Password: ", secret=True, check=new_password)
        if password == await shell.ask("Password again: ", secret=True):
            return password
        shell.write("error: the two passwords differ; type the password again")


def _some_password(text: str) -> None:
    if not text:
        raise UsageError("the password must not be empty")


def new_password(text: str) -> None:
    """Check a new account's password by the service's own rules
    (PROTOCOL.md, Additions: too short or too common is refused)."""
    # Imported here: it loads data a program that never registers needs not.
    from marketplace.customer import identities

    try:
        identities.new_password(text)
    except ApiError as e:
        raise UsageError(e.message.replace('field "password"', "the password"))


def help_list(commands: Sequence[Command], width: int = DEFAULT_WIDTH) -> str:
    """One line per command (usage, then summary), wrapped on words to
    C{width}: a summary that does not fit beside a long usage goes below."""
    column = min(max(len(c.usage) for c in commands), 28)
    lines: List[str] = []
    for command in commands:
        usage = command.usage
        indent = " " * (column + 4)
        if len(usage) > column:
            lines.extend(format.wrap("  " + usage, width, "      "))
            lines.extend(format.wrap(indent + command.summary, width, indent))
        else:
            text = f"  {usage.ljust(column)}  {command.summary}"
            lines.extend(format.wrap(text, width, indent))
    return "\n".join(lines)


def help_text(command: Command, width: int = DEFAULT_WIDTH) -> str:
    """The usage, summary, details and example of one command."""
    lines = format.wrap(f"usage: {command.usage}", width, "       ")
    lines.extend(format.wrap(f"  {command.summary}", width, "  "))
    if command.details:
        lines.extend(format.wrap("  " + command.details, width, "  "))
    if command.aliases:
        lines.append(f"  also: {', '.join(command.aliases)}")
    example = f"example: {command.example}"
    if format.text_width(example) > width:
        # A command to copy is not wrapped; it gets a line of its own.
        example = f"example:\n  {command.example}"
    lines.append(example)
    return "\n".join(lines)


__all__ = [
    "Command",
    "Shell",
    "Terminal",
    "UsageError",
    "EndOfInput",
    "Cancelled",
    "help_list",
    "arity",
    "take_option",
    "item_id",
    "whole",
    "price",
    "choice",
    "keywords",
    "command_table",
    "common_commands",
    "help_text",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
]
