"""Settings: options over the environment over .env over defaults."""

from pathlib import Path

from twisted.python import usage
from twisted.trial import unittest

from marketplace import config
from marketplace.tap import AllOptions, BuyerOptions


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
