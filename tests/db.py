"""The real PostgreSQL the tests run on.

By default each test process starts a throwaway embedded server of its own
(deleted at exit); set MARKETPLACE_TEST_CUSTOMER_DB and
MARKETPLACE_TEST_PRODUCT_DB (and MARKETPLACE_TEST_PAYMENTS_DB, else the
product database) to run on other databases instead (their tables are
emptied around every test).  A database that cannot be had fails the
tests; nothing is skipped.
"""

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, Optional

from marketplace.postgres.embedded import EmbeddedPostgres

_dsns: Optional[Dict[str, str]] = None
#: The embedded server the tests run on, if they run on one.
_server: Optional[EmbeddedPostgres] = None


def test_dsns() -> Dict[str, str]:
    """Connection strings of the test databases, by name (customer, product,
    payments)."""
    global _dsns
    if _dsns is None:
        customer = os.environ.get("MARKETPLACE_TEST_CUSTOMER_DB")
        product = os.environ.get("MARKETPLACE_TEST_PRODUCT_DB")
        payments = os.environ.get("MARKETPLACE_TEST_PAYMENTS_DB")
        if customer or product:
            _dsns = {
                "customer": customer or product,
                "product": product or customer,
                "payments": payments or product or customer,
            }
        else:
            _dsns = _start_embedded()
    return _dsns


def test_server() -> Optional[EmbeddedPostgres]:
    """The embedded server of the tests (None on other databases)."""
    test_dsns()
    return _server


def _start_embedded() -> Dict[str, str]:
    global _server
    folder = Path(tempfile.mkdtemp(prefix="marketplace-test-"))
    server = _server = EmbeddedPostgres(folder, throwaway=True)

    def stop():
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)

    atexit.register(stop)
    return server.start()
