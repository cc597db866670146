"""Settings: options over the environment over .env over defaults, and
each plugin's options and --help."""

import io
from contextlib import redirect_stdout
from importlib import metadata
from pathlib import Path

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial import unittest

from marketplace.daemon import config
from marketplace.daemon.options import AllOptions, BuyerOptions

# For every option of every plugin: a value for the environment and the
# setting it gives, then the same for the command line.  An option added
# without an entry here fails OptionsFromEnvironmentTests by its name.
SAMPLES = {
    "customer-db": ("dbname=ce", "dbname=ce", "dbname=cc", "dbname=cc"),
    "product-db": ("dbname=pe", "dbname=pe", "dbname=pc", "dbname=pc"),
    "payments-db": ("dbname=ye", "dbname=ye", "dbname=yc", "dbname=yc"),
    "customer-owner-db": ("dbname=coe", "dbname=coe", "dbname=coc", "dbname=coc"),
    "product-owner-db": ("dbname=poe", "dbname=poe", "dbname=poc", "dbname=poc"),
    "payments-owner-db": ("dbname=yoe", "dbname=yoe", "dbname=yoc", "dbname=yoc"),
    "data-dir": ("env-dir", Path("env-dir"), "cli-dir", Path("cli-dir")),
    "pool-size": ("7", 7, "9", 9),
    "session-timeout": ("42", 42.0, "43.5", 43.5),
    "max-frame": ("4096", 4096, "8192", 8192),
    "approval-rate": ("0.25", 0.25, "0.75", 0.75),
    "payments": ("tcp:host=e:port=1", "tcp:host=e:port=1", "tcp:host=c:port=2",
                 "tcp:host=c:port=2"),
    "payments-timeout": ("3", 3.0, "4", 4.0),
    "settle-after": ("12", 12.0, "13", 13.0),
    "payments-secret": ("e" * 16, "e" * 16, "c" * 20, "c" * 20),
    "max-connections": ("55", 55, "66", 66),
    "max-in-flight": ("3", 3, "5", 5),
    "frame-timeout": ("9", 9.0, "11", 11.0),
    "max-unsent": ("70000", 70000, "80000", 80000),
    "hash-workers": ("3", 3, "4", 4),
    "hash-queue": ("10", 10, "12", 12),
    "hash-per-address": ("5", 5, "6", 6),
    "hash-per-username": ("3", 3, "4", 4),
    "hash-memory": ("2048", 2048, "4096", 4096),
    "signups-per-address": ("30", 30, "40", 40),
    "signup-window": ("60", 60.0, "90", 90.0),
    "username-checks-per-address": ("70", 70, "80", 80),
    "trusted-networks": ("10.0.0.0/8", "10.0.0.0/8", "192.0.2.0/24,::1", "192.0.2.0/24,::1"),
    "max-sessions": ("3", 3, "4", 4),
    "request-keys-per-minute": ("30", 30, "40", 40),
    "idle-timeout": ("60", 60.0, "0", 0.0),
    "workers": ("3", 3, "2", 2),
    "listen": ("tcp:9001 tcp:9002", ["tcp:9001", "tcp:9002"], "tcp:9003", ["tcp:9003"]),
    "seller-listen": ("tcp:9011", ["tcp:9011"], "tcp:9012", ["tcp:9012"]),
    "buyer-listen": ("tcp:9021", ["tcp:9021"], "tcp:9022", ["tcp:9022"]),
    "payments-listen": ("tcp:9031", ["tcp:9031"], "tcp:9032", ["tcp:9032"]),
    "metrics": ("tcp:9041", "tcp:9041", "tcp:9042", "tcp:9042"),
    "log-json": ("env.json", "env.json", "cli.json", "cli.json"),
}


def plugins() -> dict:
    """The marketplace's twistd plugins: their Options classes by name."""
    found = {
        maker.tapname: maker.options
        for maker in getPlugins(IServiceMaker)
        if maker.tapname.startswith("marketplace")
    }
    assert set(found) == {
        "marketplace", "marketplace-buyer", "marketplace-seller", "marketplace-payments"
    }, found
    return found


def effective(options, name: str):
    """What the parsed option C{name} came to: a setting, a limit or the
    option's own value."""
    attribute = name.replace("-", "_")
    holders = (options.settings, options.settings.limits, options.settings.accounts)
    for holder in holders:
        if holder is not None and hasattr(holder, attribute):
            return getattr(holder, attribute)
    return options[name]


def parameters(options) -> list:
    """The names of the options that take a value."""
    flags = {flag[0] for flag in getattr(options, "optFlags", [])}
    return sorted(name for name in options.defaults if name not in flags)


class LoadTests(unittest.SynchronousTestCase):
    def test_defaults_mean_embedded(self):
        settings = config.load({}, env={})
        self.assertTrue(settings.embedded)
        self.assertEqual(settings.data_dir, Path("var"))
        self.assertEqual(settings.session_timeout, 300)

    def test_environment(self):
        settings = config.load(
            {},
            env={
                "MARKETPLACE_CUSTOMER_DB": "dbname=c",
                "MARKETPLACE_PRODUCT_DB": "dbname=p",
                "MARKETPLACE_SESSION_TIMEOUT": "5",
            },
        )
        self.assertEqual((settings.customer_db, settings.product_db), ("dbname=c", "dbname=p"))
        self.assertFalse(settings.embedded)
        self.assertEqual(settings.session_timeout, 5)

    def test_options_win(self):
        settings = config.load(
            {"customer_db": "dbname=o"}, env={"MARKETPLACE_CUSTOMER_DB": "dbname=e"}
        )
        self.assertEqual(settings.customer_db, "dbname=o")

    def test_one_database_serves_both(self):
        settings = config.load({"product_db": "dbname=one"}, env={})
        self.assertEqual(settings.customer_db, "dbname=one")

    def test_an_owner_connection_serves_the_databases_of_its_service_connection(self):
        shop, owner = "dbname=m user=marketplace_shop", "dbname=m user=marketplace_owner"
        settings = config.load({"customer_db": shop, "customer_owner_db": owner}, env={})
        self.assertEqual(
            (settings.customer_owner_db, settings.product_owner_db, settings.payments_owner_db),
            (owner, owner, owner),
        )
        settings = config.load(
            {"customer_db": shop, "payments_db": "dbname=p", "product_owner_db": owner}, env={}
        )
        self.assertEqual(settings.customer_owner_db, owner)
        self.assertIsNone(settings.payments_owner_db)  # another database: its own connection
        self.assertIsNone(config.load({"customer_db": shop}, env={}).customer_owner_db)

    def test_dotenv_file(self):
        path = Path(self.mktemp())
        path.write_text("MARKETPLACE_POOL_SIZE=7\nMARKETPLACE_PRODUCT_DB=dbname=x\n")
        values = config.environment(env={"MARKETPLACE_PRODUCT_DB": "dbname=y"}, dotenv=str(path))
        self.assertEqual(values["MARKETPLACE_POOL_SIZE"], "7")
        self.assertEqual(values["MARKETPLACE_PRODUCT_DB"], "dbname=y")

    def test_bad_numbers(self):
        self.assertRaises(ValueError, config.load, {"pool_size": "many"}, env={})
        self.assertRaises(ValueError, config.load, {"session_timeout": "0"}, env={})


class OptionsTests(unittest.SynchronousTestCase):
    def test_buyer_options(self):
        options = BuyerOptions()
        options.parseOptions(["--listen", "tcp:9000", "--customer-db", "dbname=c"])
        self.assertEqual(options["listen"], ["tcp:9000"])
        self.assertEqual(options.settings.customer_db, "dbname=c")

    def test_all_options_defaults(self):
        options = AllOptions()
        options.parseOptions([])
        self.assertEqual(options["seller-listen"], ["tcp:8080"])
        self.assertEqual(options["buyer-listen"], ["tcp:8081"])

    def test_bad_option_is_a_usage_error(self):
        self.assertRaises(usage.UsageError, BuyerOptions().parseOptions, ["--pool-size", "x"])


class OptionsFromEnvironmentTests(unittest.SynchronousTestCase):
    """Every option of every plugin may be set in the environment."""

    def test_each_option_from_the_environment(self):
        for plugin, options_class in plugins().items():
            for name in parameters(options_class(environment={})):
                self.assertIn(name, SAMPLES, f"{plugin} --{name} has no sample value")
                text, expected = SAMPLES[name][:2]
                options = options_class(environment={config.variable(name): text})
                options.parseOptions([])
                self.assertEqual(
                    effective(options, name), expected,
                    f"{plugin}: ${config.variable(name)} was not used for --{name}",
                )

    def test_each_option_on_the_command_line_wins(self):
        for plugin, options_class in plugins().items():
            for name in parameters(options_class(environment={})):
                env_text, _, text, expected = SAMPLES[name]
                options = options_class(environment={config.variable(name): env_text})
                options.parseOptions([f"--{name}={text}"])
                self.assertEqual(effective(options, name), expected, f"{plugin} --{name}")

    def test_each_default_is_the_one_help_shows(self):
        for plugin, options_class in plugins().items():
            default = options_class(environment={})
            default.parseOptions([])
            for name in parameters(default):
                shown = default.defaults[name]
                if shown is not None:
                    given = options_class(environment={})
                    given.parseOptions([f"--{name}={shown}"])
                    self.assertEqual(
                        effective(default, name), effective(given, name), f"{plugin} --{name}"
                    )

    def test_unsafe_async_commit_is_off_unless_asked_for(self):
        for plugin, options_class in plugins().items():
            options = options_class(environment={})
            options.parseOptions([])
            self.assertFalse(options.settings.unsafe_async_commit, plugin)
            options = options_class(environment={})
            options.parseOptions(["--unsafe-async-commit"])
            self.assertTrue(options.settings.unsafe_async_commit, plugin)
            options = options_class(environment={"MARKETPLACE_UNSAFE_ASYNC_COMMIT": "yes"})
            options.parseOptions([])
            self.assertTrue(options.settings.unsafe_async_commit, plugin)
        options = BuyerOptions(environment={"MARKETPLACE_UNSAFE_ASYNC_COMMIT": "maybe"})
        self.assertRaises(usage.UsageError, options.parseOptions, [])

    def test_environment_word_for_word(self):
        options = BuyerOptions(environment={"MARKETPLACE_LISTEN": "tcp:9100"})
        options.parseOptions([])
        self.assertEqual(options["listen"], ["tcp:9100"])

    def test_listen_repeated_on_the_command_line(self):
        options = AllOptions(environment={"MARKETPLACE_BUYER_LISTEN": "tcp:1"})
        options.parseOptions(["--buyer-listen", "tcp:2", "--buyer-listen", "ssl:3"])
        self.assertEqual(options["buyer-listen"], ["tcp:2", "ssl:3"])
        self.assertEqual(options["seller-listen"], ["tcp:8080"])

    def test_databases_from_the_environment_stay_off_the_options(self):
        # --workers passes the options on to more processes' command lines;
        # a connection string may hold a password.
        options = BuyerOptions(environment={
            "MARKETPLACE_CUSTOMER_DB": "password=secret",
            "MARKETPLACE_PAYMENTS_SECRET": "payments-secret-from-env",
        })
        options.parseOptions([])
        self.assertEqual(options.settings.customer_db, "password=secret")
        self.assertEqual(options.settings.payments_secret, "payments-secret-from-env")
        self.assertNotIn("password=secret", repr(dict(options)))
        self.assertNotIn("-from-env", repr(dict(options)))

    def test_bad_value_from_the_environment_is_a_usage_error(self):
        for name in ("pool-size", "max-in-flight", "workers"):
            options = plugins()["marketplace"](environment={config.variable(name): "x"})
            self.assertRaises(usage.UsageError, options.parseOptions, [])


class HelpTests(unittest.SynchronousTestCase):
    """--help and --version of each plugin."""

    def help_of(self, plugin: str) -> str:
        return plugins()[plugin](environment={}).getUsage(width=2000)

    def lines_of(self, plugin: str) -> dict:
        lines = {}
        for line in self.help_of(plugin).splitlines():
            if line.strip().startswith("--"):
                option, _, text = line.strip().partition(" ")
                lines[option.rstrip("=")[2:]] = text
        return lines

    def test_each_default_said_once(self):
        for plugin in plugins():
            for name, text in self.lines_of(plugin).items():
                self.assertLessEqual(text.lower().count("default"), 1, f"{plugin} --{name}: {text}")

    def test_payments_lists_only_what_it_uses(self):
        options = set(self.lines_of("marketplace-payments"))
        for unused in ("customer-db", "product-db", "session-timeout", "payments",
                       "payments-timeout", "settle-after"):
            self.assertNotIn(unused, options)
        self.assertIn("workers", options)

    def test_listen_says_it_can_be_repeated(self):
        for plugin in plugins():
            for name, text in self.lines_of(plugin).items():
                if name.endswith("listen"):
                    self.assertIn("several times", text, f"{plugin} --{name}")

    def test_help_names_the_environment(self):
        for plugin in plugins():
            self.assertIn("MARKETPLACE_", self.help_of(plugin))

    def test_version_is_the_marketplace_s(self):
        for plugin, options_class in plugins().items():
            out = io.StringIO()
            with redirect_stdout(out):
                self.assertRaises(SystemExit, options_class(environment={}).parseOptions,
                                  ["--version"])
            self.assertTrue(
                out.getvalue().startswith(f"marketplace {metadata.version('marketplace')}"),
                f"{plugin}: {out.getvalue()}",
            )
