"""Backups with point-in-time recovery of make run's embedded database
(marketplace-backup, postgres/backup.py): the promise.  Acknowledged
writes, a backup, more acknowledged writes, then a mistake (every cart
cleared) at time T; a restore to just before T has every write
acknowledged before T and none of the mistake."""

import shutil
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
from twisted.internet import threads
from twisted.trial import unittest

from marketplace.bench.catalogcli import embedded_dsn
from marketplace.daemon.config import Settings
from marketplace.postgres.embedded import same_code_env
from tests.support import NO_PAYMENTS, PAYMENTS_SECRET, RunningMarketplace, connect, payload_of


def backup_command(folder: Path, *args: str) -> str:
    """Run marketplace-backup on C{folder}, as a user would; its output."""
    done = subprocess.run(
        [sys.executable, "-m", "marketplace.postgres.backupcli", "--data-dir", str(folder), *args],
        capture_output=True, text=True, timeout=300, env=same_code_env(),
    )
    if done.returncode != 0:
        raise AssertionError(f"marketplace-backup {' '.join(args)}: {done.stderr}{done.stdout}")
    return done.stdout


class PointInTimeRecoveryTests(unittest.TestCase):

    timeout = 600
    if shutil.which("rsync") is None:
        skip = "Barman's restore needs rsync (make test installs it as root)"

    async def session(self, client, username: str) -> str:
        account = {"username": username, "password": "pw-passphrase-1"}
        payload_of(self, await client.request("CreateAccount", account))
        return payload_of(self, await client.request("Login", account))["session_id"]

    async def test_restore_to_just_before_a_mistake(self):
        folder = Path(self.mktemp()).resolve()
        settings = Settings(data_dir=folder, pool_size=1, payments=NO_PAYMENTS,
                            payments_secret=PAYMENTS_SECRET)
        market = RunningMarketplace(settings)
        await market.start()
        self.addCleanup(market.stop)
        seller = await connect(self, market.ports["seller"])
        buyer = await connect(self, market.ports["buyer"])
        sessions = {"seller": await self.session(seller, "sally"),
                    "buyer": await self.session(buyer, "bob")}

        async def sell_and_keep(name: str) -> str:
            """An item registered, and one of it put in the cart and the
            cart saved: acknowledged writes."""
            item = {"item_name": name, "category": 1, "keywords": [name], "condition": "new",
                    "price": 3.5, "quantity": 5}
            answer = await seller.request("RegisterItemForSale", item, sessions["seller"])
            item_id = payload_of(self, answer)["item_id"]
            add = {"item_id": item_id, "quantity": 1}
            payload_of(self, await buyer.request("AddItemToCart", add, sessions["buyer"]))
            payload_of(self, await buyer.request("SaveCart", {}, sessions["buyer"]))
            return item_id

        before_backup = await sell_and_keep("lamp")
        await threads.deferToThread(backup_command, folder, "backup")
        after_backup = await sell_and_keep("chair")

        dsn = embedded_dsn(folder, "marketplace")
        mistake = psycopg2.connect(dsn)
        with mistake, mistake.cursor() as cursor:
            cursor.execute("SELECT clock_timestamp()")
            (just_before,) = cursor.fetchone()
        time.sleep(0.05)
        with mistake, mistake.cursor() as cursor:  # the mistake, committed at T
            cursor.execute("DELETE FROM active_cart_lines")
            cursor.execute("DELETE FROM saved_cart_lines")
        mistake.close()
        cart = payload_of(self, await buyer.request("DisplayCart", {}, sessions["buyer"]))
        self.assertEqual(cart["items"] if "items" in cart else cart["cart"], [])

        await market.stop()
        await threads.deferToThread(backup_command, folder, "restore", "--to",
                                    just_before.isoformat())
        await market.start()
        seller = await connect(self, market.ports["seller"])
        buyer = await connect(self, market.ports["buyer"])
        items = payload_of(self, await seller.request("DisplayItemsForSale", {},
                                                      sessions["seller"]))["items"]
        self.assertEqual(sorted(i["item_id"] for i in items), sorted([before_backup, after_backup]))
        cart = payload_of(self, await buyer.request("DisplayCart", {}, sessions["buyer"]))
        lines = cart["items"] if "items" in cart else cart["cart"]
        self.assertEqual(sorted(line["item_id"] for line in lines),
                         sorted([before_backup, after_backup]))
        listed = backup_command(folder, "list")
        self.assertIn("a restore can reach any time from", listed)
