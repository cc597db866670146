"""The line editor of the terminal programs at a terminal (prompt_toolkit).

A L{LineEditor} reads the command lines of a L{Shell} with prompt_toolkit:
arrow keys and the usual editing keys, a history kept across runs in the
user's home (C{~/.marketplace-buyer-history}, C{~/.marketplace-seller-history}),
Ctrl-L to clear the screen, and Tab to complete command names and the item
ids seen in answers this session (with their names beside them).  It asks
the shell's questions too, secrets not shown at all; the shell checks each
answer and asks again, with an C{error:} line, for a bad one.

Nothing secret enters a history: a command line that carries a password or
a card (C{login sam -p …}, C{buy NAME CARD …}) is not kept, and answers to
private questions (passwords, card details) go into no history at all, so
the Up arrow never brings one back.

Ctrl-C at any prompt, or while a command waits for the service, cancels
that command and keeps the program running; Ctrl-D at the command prompt
logs out and leaves.  prompt_toolkit runs on asyncio, so the program runs
Twisted's asyncio reactor when it has a terminal (see L{clients.program}).
"""

import asyncio
import os
import shutil
from typing import Iterable, Optional

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import Completer, Completion
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.layout.processors import Processor, Transformation
from prompt_toolkit.validation import DummyValidator
from twisted.internet import defer

from clients.shell import Cancelled, Shell, carries_secret

# Commands whose arguments are command names rather than item ids.
_NAMES_COMMANDS = ("help", "?")


def history_path(role: str) -> str:
    """Where the command history of a role's program is kept."""
    return os.path.join(os.path.expanduser("~"), f".marketplace-{role}-history")


class _CommandHistory(FileHistory):
    """The command history file, without the lines that carry a secret."""

    def append_string(self, string: str) -> None:
        if not carries_secret(string):
            super().append_string(string)


class _InMemoryCommandHistory(InMemoryHistory):
    """The command history of one run, without the lines that carry a secret."""

    def append_string(self, string: str) -> None:
        if not carries_secret(string):
            super().append_string(string)


class _NoHistory(InMemoryHistory):
    """A history that keeps nothing: private answers."""

    def append_string(self, string: str) -> None:
        pass


def _history(path: str) -> History:
    """The history in C{path}, or one for this run only where it cannot be
    written (no home, a read-only one)."""
    try:
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError:
        return _InMemoryCommandHistory()
    return _CommandHistory(path)


class ShellCompleter(Completer):
    """Completes the first word from the command names, the words after
    C{help} from them too, and other words from the item ids seen."""

    def __init__(self, shell: Shell) -> None:
        self.shell = shell

    def get_completions(self, document, complete_event) -> Iterable[Completion]:
        before = document.text_before_cursor
        word = document.get_word_before_cursor(WORD=True)
        words = before.split()
        first_word = not words or (len(words) == 1 and not before[-1:].isspace())
        if first_word or words[0].lower() in _NAMES_COMMANDS:
            choices = sorted(self.shell.commands)
        else:
            choices = sorted(self.shell.seen_ids, key=_item_order)
        for choice in choices:
            if choice.startswith(word.lower() if first_word else word):
                # An item id has its name beside it in the menu.
                name = "" if first_word else self.shell.seen_ids.get(choice, "")
                yield Completion(choice, start_position=-len(word), display_meta=name)


def _item_order(item_id: str):
    category, _, number = item_id.partition("-")
    return (int(category), int(number))


class _Hidden(Processor):
    """Shows nothing of a secret, not even its length, as a terminal's
    password prompt does; the cursor stays after the question."""

    def apply_transformation(self, transformation_input) -> Transformation:
        return Transformation(
            [], source_to_display=lambda i: 0, display_to_source=lambda i: 0
        )


class LineEditor:
    """Reads a shell's command lines and answers at a terminal."""

    def __init__(self, shell: Shell, history: Optional[str] = None) -> None:
        self.shell = shell
        shell.editor = self
        path = history or history_path(shell.role)
        # Ctrl-C is Cancelled, not KeyboardInterrupt: asyncio lets a
        # KeyboardInterrupt out of its loop, which would end the program.
        self.commands = PromptSession(
            history=_history(path),
            completer=ShellCompleter(shell),
            complete_while_typing=False,
            interrupt_exception=Cancelled,
        )
        # Answers never go into the history file: those of this run are
        # recalled in memory, except private ones (passwords, card details),
        # which a session of their own forgets at once.
        self.questions = PromptSession(
            history=InMemoryHistory(), interrupt_exception=Cancelled
        )
        self.private_questions = PromptSession(
            history=_NoHistory(), interrupt_exception=Cancelled
        )
        self._running: Optional[defer.Deferred] = None
        self._asking: Optional[asyncio.Future] = None

    async def _prompt(self, session: PromptSession, message: str, **options) -> str:
        future = asyncio.ensure_future(session.prompt_async(message, **options))
        self._asking = future
        try:
            return await defer.Deferred.fromFuture(future)
        finally:
            self._asking = None

    async def ask(self, question: str, secret: bool = False, private: bool = False) -> str:
        """Ask one question, the answer not shown when C{secret} and kept in
        no history when C{secret} or C{private}; Ctrl-C or Ctrl-D cancels
        the command.  (The shell checks the answer.)"""
        session = self.private_questions if secret or private else self.questions
        try:
            # A session keeps the options of its last prompt (an option left
            # as None is not reset): give them all, every time.
            return await self._prompt(
                session,
                question,
                input_processors=[_Hidden()] if secret else [],
                validator=DummyValidator(),
                validate_while_typing=False,
            )
        except EOFError:
            raise Cancelled()

    async def run(self) -> None:
        """Read and run command lines until quit or Ctrl-D, then log out."""
        shell = self.shell
        await shell.greet()
        while not shell.leaving:
            shell.width = shutil.get_terminal_size().columns
            try:
                line = await self._prompt(self.commands, shell.prompt())
            except Cancelled:
                continue
            except EOFError:
                if shell.may_leave():
                    break
                continue
            except defer.CancelledError:
                break
            self._running = defer.Deferred.fromCoroutine(shell.run_line(line))
            try:
                await self._running
            except defer.CancelledError:
                shell.write(f"\n{line.split()[0] if line.split() else ''} cancelled.")
            finally:
                self._running = None
        await shell.finish()

    def interrupt(self) -> None:
        """Ctrl-C while a command runs (not at a prompt): cancel it."""
        if self._running is not None:
            self._running.cancel()

    def close(self) -> None:
        """The program is stopped (SIGTERM): end the prompt being shown, so
        that prompt_toolkit gives the terminal back as it found it."""
        if self._asking is not None:
            self._asking.cancel()


__all__ = ["LineEditor", "ShellCompleter", "history_path"]
