"""Starting a terminal program: its arguments, stdin/stdout, exit status.

C{run} parses C{[HOST [PORT]] | --connect ENDPOINT} and connects the shell
to standard input and output.  At a terminal (standard input and output
both ttys) the line editor of L{clients.editor} reads the commands, on
Twisted's asyncio reactor (prompt_toolkit is asyncio); otherwise the lines
are read as a script, as they always were.  At a terminal the program
first connects, and says in words at once why it cannot.  It exits with
the shell's status once the input ends or C{quit} is typed (both log out
first); SIGTERM logs out and leaves too.
"""

import importlib.metadata
import os
import shutil
import signal
import sys
from typing import Dict, List, Optional, Sequence, Type, Union

from twisted.internet import stdio, task
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.python import usage

from marketplace.clientlib import tls
from marketplace.clientlib import ClientError, endpoint_description
from marketplace.clientlib.connection import DEFAULT_DEADLINE
from clients.format import wrap
from clients.shell import Command, Shell, Terminal

# How long the first connection of a person's session may take to fail.
FIRST_CONNECTION_WITHIN = 1.5

_INPUT = (
    "Commands are read from standard input: at a terminal with line editing"
    " (history in ~/.marketplace-{role}-history, Tab completes commands and item"
    " ids, Ctrl-C cancels a command, Ctrl-D logs out and leaves); from a pipe or"
    " a file as a script, one line at a time, where passwords and cards are"
    " given as arguments (login USER --password PW). Type 'help COMMAND' in the"
    " program for details."
)


class _Stdout:
    """Standard output as the shell's transport when the editor reads."""

    def write(self, data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    def loseConnection(self) -> None:
        pass


class Options(usage.Options):
    """The command line of a terminal program."""

    optParameters = [
        [
            "connect",
            "c",
            None,
            "Client endpoint description of the service, instead of HOST and"
            " PORT: tcp:host=HOST:port=PORT, tls:HOST:PORT, unix:path=PATH;"
            " several instances separated by | (each command goes to the next"
            " when one cannot be reached)",
        ],
        [
            "ca-cert",
            None,
            None,
            "Connect to HOST PORT with TLS, verifying the server's certificate"
            " against this CA certificate (a PEM file)",
        ],
        [
            "retry-deadline",
            None,
            DEFAULT_DEADLINE,
            "Seconds a command keeps trying while the service cannot be reached"
            " (reconnecting, sending the command again) before it fails",
            float,
        ],
    ]

    def __init__(
        self, default_port: int, role: str = "", commands: Sequence[str] = ()
    ) -> None:
        super().__init__()
        self.default_port = default_port
        self.role = role
        self.commands = commands
        self["host"] = "localhost"
        self["port"] = default_port

    def getSynopsis(self) -> str:
        name = os.path.basename(sys.argv[0])
        text = (
            f"Usage: {name} [--ca-cert CA.pem] [HOST [PORT]]\n"
            f"       {name} --connect ENDPOINT\n"
            f"  (defaults: localhost {self.default_port})\n\n"
            + "\n".join(wrap(_INPUT.format(role=self.role or "ROLE"), 79))
        )
        if self.commands:
            listed = "Commands: " + ", ".join(self.commands) + "."
            text += "\n\n" + "\n".join(wrap(listed, 79, "  "))
        return text + "\n"

    def opt_version(self) -> None:
        """Display the marketplace's version and exit."""
        try:
            version = importlib.metadata.version("marketplace")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        print(f"{os.path.basename(sys.argv[0])} (marketplace) {version}")
        sys.exit(0)

    def parseArgs(self, host: str = "localhost", port: Optional[str] = None) -> None:
        self["host"] = host
        if port is not None:
            try:
                self["port"] = int(port)
            except ValueError:
                raise usage.UsageError(f"PORT must be a number, not {port!r}")
            if not 0 < self["port"] < 65536:
                raise usage.UsageError("PORT must be from 1 to 65535")

    def postOptions(self) -> None:
        if not self["retry-deadline"] > 0:
            raise usage.UsageError("--retry-deadline must be a number of seconds above 0")
        if self["connect"] and self["ca-cert"]:
            raise usage.UsageError(
                "give --ca-cert with HOST and PORT, or put trustRoots= in --connect"
            )

    def endpoint(self, reactor) -> Union[str, IStreamClientEndpoint]:
        """What to connect to: an endpoint description, or a TLS endpoint."""
        if self["connect"]:
            return self["connect"]
        if self["ca-cert"]:
            return tls.client_endpoint(
                reactor, self["host"], self["port"], self["ca-cert"]
            )
        return endpoint_description(self["host"], self["port"])

    @property
    def where(self) -> str:
        """The service's address, for people."""
        return self["connect"] or f"{self['host']}:{self['port']}"


def parse(
    argv: List[str], default_port: int, role: str = "", commands: Sequence[str] = ()
) -> Options:
    """The options of C{argv} (without the program name); on a usage error
    print it and exit with status 2."""
    options = Options(default_port, role, commands)
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        sys.stderr.write(f"{options}\nerror: {e}\n")
        raise SystemExit(2)
    return options


def _log_problems_to_stderr() -> None:
    """Warnings and failures (bugs) go to standard error; the info messages
    about reconnecting do not clutter the terminal."""
    observer = FilteringLogObserver(
        textFileLogObserver(sys.stderr),
        [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)],
    )
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def _at_terminal() -> bool:
    return os.isatty(0) and os.isatty(1)


async def _main(reactor, options: Options, client_class, commands) -> None:
    interactive = os.isatty(0)
    _log_problems_to_stderr()
    try:
        client = client_class(
            options.endpoint(reactor),
            reactor=reactor,
            deadline=options["retry-deadline"],
            where=options.where,
        )
    except ValueError as e:
        # clientFromString could not read the description.
        sys.stderr.write(f"error: cannot use --connect {options['connect']!r}: {e}\n")
        raise SystemExit(2)
    if interactive:
        # Before anything is asked: a person learns at once what is wrong.
        try:
            await client.connect(FIRST_CONNECTION_WITHIN)
        except ClientError as e:
            width = shutil.get_terminal_size().columns
            sys.stderr.write("\n".join(wrap(f"error: {e.message}", width, "  ")) + "\n")
            raise SystemExit(1)
    shell = Shell(
        client,
        commands,
        interactive=interactive,
        terminal=Terminal(0) if interactive else None,
        where=options.where,
    )
    if os.isatty(1):
        shell.width = shutil.get_terminal_size().columns
    # SIGTERM stops the reactor; log out before it does.
    reactor.addSystemEventTrigger("before", "shutdown", shell.interrupt)
    if interactive and _at_terminal():
        from clients.editor import LineEditor

        editor = LineEditor(shell)
        reactor.addSystemEventTrigger("before", "shutdown", editor.close)
        shell.makeConnection(_Stdout())
        # Ctrl-C while a command runs cancels it (at a prompt it is a key).
        signal.signal(
            signal.SIGINT, lambda *_: reactor.callFromThread(editor.interrupt)
        )
        await editor.run()
        status = await shell.finished
    else:
        stdio.StandardIO(shell, reactor=reactor)
        status = await shell.finished
        await shell.when_disconnected()
    if status:
        raise SystemExit(status)


def run(
    argv: Optional[List[str]], client_class: Type, commands: Dict[str, Command]
) -> None:
    """Run a terminal program for C{client_class} with C{commands}; exits."""
    names = sorted({command.name for command in commands.values()})
    options = parse(
        sys.argv[1:] if argv is None else argv,
        client_class.default_port,
        client_class.role,
        names,
    )
    if _at_terminal():
        # prompt_toolkit runs on asyncio: Twisted on asyncio's loop.
        import asyncio

        from twisted.internet import asyncioreactor

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        asyncioreactor.install(loop)
    task.react(_main, (options, client_class, commands))


__all__ = ["Options", "parse", "run"]
