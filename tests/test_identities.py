"""Identities and passwords: usernames in one normal form, passwords long
enough and not common, a cap on live sessions per user, and logins with
the right password that never lock an account out."""

from argon2 import PasswordHasher
from twisted.internet import defer
from twisted.trial import unittest

from marketplace.contract.errors import ApiError
from marketplace.customer.accounts import DEFAULT_MAX_SESSIONS
from marketplace.customer.identities import common_passwords, new_password, username_key
from marketplace.postgres import schema
from tests.support import assert_error, connect, payload_of, start_marketplace

PASSWORD = "a long passphrase"


class UsernameTests(unittest.SynchronousTestCase):
    def test_look_alikes_are_one_name_or_refused(self):
        self.assertEqual(username_key("admin"), "admin")
        self.assertEqual(username_key("ADMIN"), "admin")
        self.assertEqual(username_key("Ａdmin"), "admin")  # full-width A
        self.assertEqual(username_key("ａｄｍｉｎ"), "admin")
        self.assertEqual(username_key("Straße"), "strasse")
        for refused in (
            "admin\u200b",  # zero-width space
            "ad\u200dmin",  # zero-width joiner
            "\u202eadmin",  # right-to-left override
            "admin\u00ad",  # soft hyphen
            "аdmin",  # Cyrillic а among Latin letters
            "admin\x07",
            "a\u3000b",  # ideographic space
        ):
            self.assertIsNone(username_key(refused), repr(refused))

    def test_other_scripts_are_welcome(self):
        for name in ("josé", "日本語", "δέλτα", "иван", "user.name-1"):
            self.assertEqual(username_key(name), name)

    def test_length_counts_after_normalisation(self):
        self.assertIsNone(username_key("\ufdfa"))  # one character, 18 after NFKC
        self.assertEqual(username_key("a" * 32), "a" * 32)


class PasswordRuleTests(unittest.SynchronousTestCase):
    def test_short_passwords_are_refused(self):
        invisible = "abc" + "\u200b" * 5
        for short in ("x", " ", "\t", "\u200b", "seven77", " " * 8, invisible):
            self.assertRaises(ApiError, new_password, short)

    def test_common_passwords_are_refused(self):
        self.assertGreater(len(common_passwords()), 19000)
        for common in ("password", "12345678", "PASSWORD1", " qwertyuiop "):
            self.assertRaises(ApiError, new_password, common)

    def test_long_uncommon_passwords_pass_in_nfkc(self):
        self.assertEqual(new_password(PASSWORD), PASSWORD)
        self.assertEqual(new_password("ｆｕｌｌ ｗｉｄｔｈ!"), "full width!")


class AccountTests(unittest.TestCase):
    """The rules on the wire, on the real services."""

    async def setUp(self):
        self.market = await start_marketplace(self, services=("seller", "buyer"))
        self.buyer = await connect(self, self.market.ports["buyer"])
        self.customer = self.market.backend().customer

    def create(self, username, password=PASSWORD):
        return self.buyer.request("CreateAccount", {"username": username, "password": password})

    def login(self, username, password=PASSWORD):
        return self.buyer.request("Login", {"username": username, "password": password})

    async def test_admin_in_four_spellings_is_one_account(self):
        buyer_id = payload_of(self, await self.create("admin"))["buyer_id"]
        for other in ("ADMIN", "Ａdmin"):
            assert_error(self, await self.create(other), "USERNAME_TAKEN")
        for refused in ("admin\u200b", "аdmin"):
            assert_error(self, await self.create(refused), "BAD_REQUEST")
        for spelling in ("admin", "ADMIN", "Ａdmin"):
            self.assertEqual(payload_of(self, await self.login(spelling))["buyer_id"], buyer_id)
        (count,) = await self.customer.one("SELECT count(*) FROM accounts")
        self.assertEqual(count, 1)
        answer = await self.buyer.request("CheckUsername", {"username": "Ａdmin"})
        self.assertEqual(payload_of(self, answer), {"username": "admin", "available": False})
        answer = await self.buyer.request("CheckUsername", {"username": "admin\u200b"})
        assert_error(self, answer, "BAD_REQUEST")

    async def test_weak_passwords_are_refused(self):
        for weak in ("x", " ", "\t", "\u200b", "s3cret", "password1", "iloveyou"):
            answer = await self.create("bea", weak)
            assert_error(self, answer, "BAD_REQUEST")
            self.assertIn("password", answer["error"]["message"])
        (count,) = await self.customer.one("SELECT count(*) FROM accounts")
        self.assertEqual(count, 0)

    async def test_live_sessions_per_user_are_capped_oldest_first(self):
        payload_of(self, await self.create("bea"))
        sessions = []
        for _ in range(DEFAULT_MAX_SESSIONS + 1):
            sessions.append(payload_of(self, await self.login("bea"))["session_id"])
        assert_error(
            self, await self.buyer.request("DisplayCart", {}, sessions[0]), "INVALID_SESSION"
        )
        for session in sessions[1:]:
            payload_of(self, await self.buyer.request("DisplayCart", {}, session))
        (count,) = await self.customer.one("SELECT count(*) FROM sessions")
        self.assertEqual(count, DEFAULT_MAX_SESSIONS)

    async def test_right_password_logins_never_lock_out(self):
        """Six logins at once with the right password: none is a failure,
        nothing is counted, and the next login succeeds.  (Some of the six
        may be turned away for the moment by the hashing budget's share of
        a username.)"""
        payload_of(self, await self.create("bea"))
        answers = await defer.gatherResults([self.login("bea") for _ in range(6)])
        codes = [a["error"]["code"] if a["type"] == "error" else "OK" for a in answers]
        self.assertIn("OK", codes)
        self.assertLessEqual(set(codes), {"OK", "RATE_LIMITED"})
        for _ in range(6):
            payload_of(self, await self.login("bea"))
        failures = await self.customer.one("SELECT failures FROM login_failures")
        self.assertIn(failures, (None, (0,)))

    async def test_failures_still_lock_out(self):
        payload_of(self, await self.create("bea"))
        for _ in range(5):
            assert_error(self, await self.login("bea", "not the password"), "INVALID_CREDENTIALS")
        assert_error(self, await self.login("BEA"), "RATE_LIMITED")


class LegacyAccountTests(unittest.TestCase):
    """Accounts made under the old rules, in an old database."""

    async def setUp(self):
        self.market = await start_marketplace(self, services=("seller", "buyer"))
        self.buyer = await connect(self, self.market.ports["buyer"])
        self.customer = self.market.backend().customer
        cheap = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
        self.ids = {}
        for username in ("ADMIN", "Admin", "Ｂob", "Carol"):
            (self.ids[username],) = await self.customer.one(
                "INSERT INTO accounts (role, username, name, password_hash)"
                " VALUES ('buyer', %s, %s, %s) RETURNING id",
                (username, username, cheap.hash("pw")),
            )

    def login(self, username, password="pw"):
        return self.buyer.request("Login", {"username": username, "password": password})

    async def test_migration_folds_what_it_can_and_is_re_runnable(self):
        for _ in range(2):
            await schema.apply_schema(self.customer, "customer")
            rows = await self.customer.query("SELECT id, username FROM accounts ORDER BY id")
            self.assertEqual(
                [name for _, name in rows], ["admin", "Admin", "Ｂob", "carol"]
            )

    async def test_every_old_account_still_logs_in(self):
        await schema.apply_schema(self.customer, "customer")
        expected = {"admin": "ADMIN", "ADMIN": "ADMIN", "Admin": "Admin", "Ｂob": "Ｂob",
                    "carol": "Carol", "CAROL": "Carol"}
        for spelling, owner in expected.items():
            answer = payload_of(self, await self.login(spelling))
            self.assertEqual(answer["buyer_id"], self.ids[owner], spelling)
        # A new account cannot take a folded old name.
        answer = await self.buyer.request(
            "CreateAccount", {"username": "CAROL", "password": PASSWORD}
        )
        assert_error(self, answer, "USERNAME_TAKEN")
