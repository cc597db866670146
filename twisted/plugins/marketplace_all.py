from twisted.application.service import ServiceMaker

marketplace = ServiceMaker(
    "marketplace",
    "marketplace.tap.everything",
    "Every marketplace service in one process, on one machine.",
    "marketplace",
)
