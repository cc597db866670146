"""README.md and docs/USING.md as tested: their transcripts and code, run in
the order shown (the README's tour first) on a fresh marketplace, must print
what the documents say they print.

The blocks are read from the documents themselves:

- a ```` ```console ```` block that starts with ``$ .venv/bin/marketplace-…-cli``
  is a person's session: each prompt's line (``seller sam> items``) and each
  answered question (``Price: 12``) is typed into the program, and what the
  program writes, with the typed lines echoed as a terminal shows them, must
  be the block.  Secrets are typed where the block shows none:
  :data:`PASSWORD` at ``Password:``, ``123`` at ``Security code:``;
- a ```` ```console ```` block that starts with ``$ printf '…' | .venv/bin/…``
  is a script piped into the installed program (``$ echo $?`` gives its exit
  status);
- a ```` ```python ```` block is run as a program, with the ports of the
  README (8080, 8081) changed to the test's; the ```` ```text ```` block after
  it is what it must print.

Dates (``2026-11-24 07:49``) may differ.  Set ``README_SHOW=1`` to see what
each block printed.
"""

import os
import re
import shlex
import sys
from typing import List, Tuple

from twisted.internet import reactor
from twisted.trial import unittest

from tests.support import start_marketplace
from tests.test_cli import (
    ROOT,
    buyer_shell,
    run_program,
    seller_shell,
    waiting_for_input,
)

# The documents whose blocks run, in this order, on one marketplace.
DOCUMENTS = [os.path.join(ROOT, "README.md"), os.path.join(ROOT, "docs", "USING.md")]
PASSWORD = "correct-horse-7"
SECRETS = {
    "Password: ": PASSWORD,
    "Password again: ": PASSWORD,
    "Security code: ": "123",
}
_DATE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d")
_PROMPT = re.compile(r"^(seller|buyer)( \S+)?> ")
_QUESTIONS = {
    "Item name: ",
    "Category (a number): ",
    "Condition (new or used): ",
    "Price: ",
    "Units for sale: ",
    "Keywords (up to 5, space-separated): ",
    "Name on the card: ",
    "Card number: ",
    "Expires (MM/YY): ",
}


def blocks(text: str) -> List[Tuple[str, str]]:
    """The fenced blocks of a Markdown text: (info string, content)."""
    return re.findall(r"^```(\w*)\n(.*?)^```$", text, re.S | re.M)


def steps(text: str) -> List[Tuple[str, str]]:
    """The README's runnable blocks in order: (kind, content, expected)."""
    found = []
    fenced = blocks(text)
    for n, (kind, content) in enumerate(fenced):
        if kind == "console" and content.startswith("$ printf "):
            found.append(("script", content, ""))
        elif kind == "console" and content.startswith("$ .venv/bin/marketplace-"):
            found.append(("session", content, ""))
        elif kind == "python":
            after = fenced[n + 1] if n + 1 < len(fenced) else ("", "")
            found.append(("python", content, after[1] if after[0] == "text" else ""))
    return found


def same(text: str) -> str:
    """Text as compared: dates masked, line ends without spaces."""
    lines = [_DATE.sub("YYYY-MM-DD HH:MM", line).rstrip() for line in text.splitlines()]
    return "\n".join(lines).strip("\n")


class ReadmeTests(unittest.TestCase):
    timeout = 300

    async def test_readme(self):
        found = []
        for document in DOCUMENTS:
            with open(document, encoding="utf-8") as f:
                found += steps(f.read())
        kinds = [kind for kind, _, _ in found]
        # The transcripts the README must have, so that none is lost unseen.
        self.assertEqual(kinds.count("session"), 2, kinds)
        self.assertIn("script", kinds)
        self.assertEqual(kinds.count("python"), 2, kinds)
        self.market = await start_marketplace(self)
        for kind, content, expected in found:
            if kind == "session":
                actual = await self.session(content)
                expected = content
            elif kind == "script":
                actual = await self.script(content)
                expected = content
            else:
                actual = await self.python(content)
            if os.environ.get("README_SHOW"):
                sys.stderr.write(f"\n--- {kind}\n{actual}\n")
                continue
            self.assertEqual(same(actual), same(expected))

    async def session(self, transcript: str) -> str:
        """Type a person's session into the program; the transcript it
        makes."""
        lines = transcript.splitlines()
        command = lines[0]
        role = "seller" if "seller-cli" in command else "buyer"
        make = seller_shell if role == "seller" else buyer_shell
        cli = make(self, self.market, interactive=True)
        cli.shell.where = f"localhost:{8080 if role == 'seller' else 8081}"
        cli.shell.width = 80  # a terminal of 80 columns
        cli.transport.clear()
        cli.shell.connectionMade()
        shown = command + "\n" + cli.output()
        if os.environ.get("README_SHOW"):
            # Type what the README's lines type, wherever the program asks.
            typed_lines = [
                _PROMPT.sub("", line) for line in lines if _PROMPT.match(line)
            ]
            answers = [
                line.split(": ", 1)[1]
                for line in lines
                if not _PROMPT.match(line)
                and line.split(": ", 1)[0] + ": " in _QUESTIONS
            ]
        while True:
            await waiting_for_input(cli.shell)
            shown += cli.output()
            if cli.shell.finished.called:
                break
            row = shown.count("\n")
            asked = shown[shown.rfind("\n") + 1 :]
            if os.environ.get("README_SHOW"):
                if asked in SECRETS:
                    typed = SECRETS[asked]
                else:
                    queue = typed_lines if _PROMPT.match(asked) else answers
                    if not queue:
                        break
                    typed = queue.pop(0)
                    shown += typed + "\n"
                cli.shell.dataReceived(typed.encode("utf-8") + b"\n")
                if cli.shell.leaving:
                    break
                continue
            if row >= len(lines):
                raise AssertionError(f"the session goes on past the README's:\n{shown}")
            line = lines[row]
            if not line.startswith(asked.rstrip()):
                raise AssertionError(
                    f"the program asks {asked!r} where the README has {line!r}:\n{shown}"
                )
            if asked in SECRETS:
                typed = SECRETS[asked]
            else:
                typed = line[len(asked) :]
                shown += typed + "\n"
            cli.shell.dataReceived(typed.encode("utf-8") + b"\n")
            if cli.shell.leaving:
                break
        await cli.shell.finished
        return shown + cli.output()

    async def script(self, transcript: str) -> str:
        """Pipe a script into the installed program; the transcript."""
        command, _, rest = transcript.partition("\n$ echo $?\n")
        head = command.splitlines()
        typed = [line for line in head if line.startswith(("$ ", "    "))]
        words = shlex.split(" ".join(line.lstrip("$ ").rstrip("\\") for line in typed))
        script = words[1].replace("\\n", "\n")
        program, args = words[3].rsplit("/", 1)[1], words[4:]
        port = self.market.ports["seller" if "seller" in program else "buyer"]
        status, out, err = await run_program(program, ["127.0.0.1", str(port)], script)
        self.assertEqual(err, "")
        return "\n".join(typed) + "\n" + out + f"$ echo $?\n{status}\n"

    async def python(self, code: str) -> str:
        """Run a Python block against the test's services; what it printed."""
        code = code.replace("8080", str(self.market.ports["seller"]))
        code = code.replace("8081", str(self.market.ports["buyer"]))
        status, out, err = await run_python(code)
        self.assertEqual((status, err), (0, ""), out)
        return out


async def run_python(code: str):
    """Run C{code} with this Python; (status, stdout, stderr)."""
    from tests.test_cli import _Collect

    collect = _Collect(b"")
    env = dict(os.environ, PYTHONPATH=ROOT)
    reactor.spawnProcess(collect, sys.executable, [sys.executable, "-c", code], env=env)
    status = await collect.ended
    return status, collect.out.decode("utf-8"), collect.err.decode("utf-8")
