from twisted.application.service import ServiceMaker

marketplace_seller = ServiceMaker(
    "marketplace-seller",
    "marketplace.tap.seller",
    "The marketplace's seller service, for a host of its own.",
    "marketplace-seller",
)
