from twisted.application.service import ServiceMaker

marketplace_payments = ServiceMaker(
    "marketplace-payments",
    "marketplace.tap.payments",
    "The marketplace's financial-transactions service, for a host of its own.",
    "marketplace-payments",
)
