"""The financial-transactions service, its database and its client."""
