"""Terminal programs for the marketplace: marketplace-buyer-cli and
marketplace-seller-cli, line-based shells on L{marketplace.clientlib}."""
