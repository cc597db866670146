"""The project's documents stand on their own: docs/PROTOCOL.md is the
protocol's reference, and nothing points outside the project."""

import re
import subprocess
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent


def tracked_files():
    """The files git tracks in this checkout (with their paths)."""
    names = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return [ROOT / name for name in names if (ROOT / name).is_file()]


class SelfContainedTests(SynchronousTestCase):
    def test_nothing_refers_to_the_shared_folder(self):
        """A clone of the project alone is complete: no file names the
        folder the protocol first came from."""
        outside = ".." + "/shared"
        offenders = []
        for path in tracked_files():
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            if outside in text:
                offenders.append(str(path.relative_to(ROOT)))
        self.assertEqual(offenders, [])

    def test_links_exist(self):
        """Every relative link of README.md and of docs/ names a file of the
        project, and the README leads to every document of docs/."""
        documents = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
        missing = []
        for document in documents:
            text = document.read_text(encoding="utf-8")
            for link in re.findall(r"\]\(([^)#\s]+)\)", text):
                if "://" not in link and not (document.parent / link).exists():
                    missing.append(f"{document.relative_to(ROOT)}: {link}")
        self.assertEqual(missing, [])
        readme = (ROOT / "README.md").read_text(encoding="utf-8")
        for document in documents[1:]:
            self.assertIn(f"](docs/{document.name})", readme)

    def test_protocol_reference_lists_every_error_code(self):
        """docs/PROTOCOL.md names every error code the servers can send."""
        from marketplace.contract import errors

        reference = (ROOT / "docs" / "PROTOCOL.md").read_text(encoding="utf-8")
        for code in sorted(errors.ERROR_CODES):
            self.assertIn(f"| {code} |", reference)
