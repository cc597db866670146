"""Secret files are private from the moment they exist, and one that others
could read or change is refused (marketplace/frame/secretfiles.py), for
each secret file the project writes: the payments secret and the
development keys."""

import os
import stat
from pathlib import Path
from unittest import mock

from twisted.trial import unittest

from marketplace.payments import paymentsecret
from marketplace.daemon import devcerts
from marketplace.frame import secretfiles


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class BornPrivateTests(unittest.TestCase):
    """The file has mode 0600 from its creation: the open that makes it
    gives that mode, whatever the umask, and nothing widens it later."""

    def setUp(self):
        self.folder = Path(self.mktemp())
        self.folder.mkdir()
        self.opened = []
        real_open = os.open

        def watching_open(path, flags, mode=0o777, *args, **kwargs):
            if flags & os.O_CREAT:
                self.opened.append((Path(path).name, flags, mode))
            return real_open(path, flags, mode, *args, **kwargs)

        patcher = mock.patch("os.open", watching_open)
        patcher.start()
        self.addCleanup(patcher.stop)
        old = os.umask(0)  # the widest umask: only the creating mode protects
        self.addCleanup(os.umask, old)

    def assert_created_private(self):
        self.assertTrue(self.opened)
        for name, flags, mode in self.opened:
            self.assertTrue(flags & os.O_EXCL, name)
            self.assertEqual(mode, 0o600, name)

    def test_payments_secret(self):
        paymentsecret.load_or_create(self.folder)
        self.assertEqual(mode_of(self.folder / paymentsecret.FILE_NAME), 0o600)
        self.assert_created_private()

    def test_development_keys(self):
        paths = devcerts.make_dev_certs(self.folder)
        for name in ("ca_key", "key"):
            self.assertEqual(mode_of(paths[name]), 0o600, name)
        keys = [(flags, mode) for name, flags, mode in self.opened if ".key" in name]
        self.assertEqual(len(keys), 2)
        for flags, mode in keys:
            self.assertTrue(flags & os.O_EXCL)
            self.assertEqual(mode, 0o600)

    def test_forced_new_keys_do_not_keep_an_old_wide_mode(self):
        paths = devcerts.make_dev_certs(self.folder)
        paths["key"].chmod(0o644)
        devcerts.make_dev_certs(self.folder)
        self.assertEqual(mode_of(paths["key"]), 0o600)

    def test_a_race_keeps_the_first_secret(self):
        path = self.folder / "s"
        self.assertTrue(secretfiles.create(path, b"first"))
        self.assertFalse(secretfiles.create(path, b"second"))
        self.assertEqual(secretfiles.read(path), b"first")
        self.assertEqual(sorted(p.name for p in self.folder.iterdir()), ["s"])


class RefusedTests(unittest.TestCase):
    """An existing secret file that others may read or write, or that is
    not this user's, is refused with a message that says so."""

    def setUp(self):
        self.folder = Path(self.mktemp())
        paymentsecret.load_or_create(self.folder)
        self.path = self.folder / paymentsecret.FILE_NAME

    def test_readable_by_others(self):
        for mode in (0o644, 0o640, 0o602, 0o660):
            self.path.chmod(mode)
            with self.assertRaises(secretfiles.UnsafeSecretFile) as caught:
                paymentsecret.load_or_create(self.folder)
            self.assertIn(f"mode {mode:04o}", str(caught.exception))
            self.assertIn("chmod 600", str(caught.exception))
            self.assertEqual(mode_of(self.path), mode)  # told, not mended behind one's back

    def test_private_is_accepted(self):
        for mode in (0o600, 0o400):
            self.path.chmod(mode)
            self.assertTrue(paymentsecret.load_or_create(self.folder))

    def test_someone_elses(self):
        real = os.fstat

        def other_owner(fd):
            status = list(real(fd))
            status[stat.ST_UID] = os.geteuid() + 1
            return os.stat_result(status)

        with mock.patch("os.fstat", other_owner):
            with self.assertRaises(secretfiles.UnsafeSecretFile) as caught:
                paymentsecret.load_or_create(self.folder)
        self.assertIn("belongs to uid", str(caught.exception))

    def test_a_link_is_not_followed(self):
        target = self.folder / "elsewhere"
        self.path.rename(target)
        self.path.symlink_to(target.resolve())
        with self.assertRaises(OSError):
            paymentsecret.load_or_create(self.folder)

    def test_a_daemon_refuses_to_start_with_one_line(self):
        from marketplace.daemon.build import make_daemon
        from marketplace.daemon.options import PaymentsOptions

        self.path.chmod(0o644)
        options = PaymentsOptions(environment={})
        options.parseOptions(["--data-dir", str(self.folder)])
        with self.assertRaises(SystemExit) as caught:
            make_daemon(options)
        self.assertIn("chmod 600", str(caught.exception.code))
