from twisted.application.service import ServiceMaker

marketplace_buyer = ServiceMaker(
    "marketplace-buyer",
    "marketplace.tap.buyer",
    "The marketplace's buyer service, for a host of its own.",
    "marketplace-buyer",
)
