"""The house's floors: each folder of marketplace/ imports only from the
floors below it (and itself), so no import runs back up and there is no
circle.  docs/DESIGN.md draws the same floors."""

import ast
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

PACKAGE = Path(__file__).resolve().parent.parent / "marketplace"

#: The floors, bottom first: each folder imports only from strictly lower
#: floors and from itself (folders on one floor are independent of each
#: other).
FLOORS = [
    ("contract",),
    ("frame",),
    ("postgres", "clientlib"),
    ("customer",),
    ("product",),
    ("buyer", "seller", "payments"),
    ("observability",),
    ("daemon",),
    ("tap", "bench"),
    ("cluster",),
]
FLOOR = {folder: n for n, folders in enumerate(FLOORS) for folder in folders}


def imports_of(path: Path):
    """The marketplace folders a module imports from, with line numbers."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "marketplace" and len(parts) > 1:
                yield node.lineno, parts[1]


class FloorTests(SynchronousTestCase):
    def test_every_folder_has_a_floor(self):
        folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
        self.assertEqual(folders - {"data"}, set(FLOOR))

    def test_no_import_runs_back_up(self):
        upward = []
        for path in sorted(PACKAGE.glob("*/*.py")):
            here = path.parent.name
            for line, there in imports_of(path):
                if there != here and there in FLOOR and FLOOR[there] >= FLOOR[here]:
                    upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} -> {there}")
        self.assertEqual(upward, [])
