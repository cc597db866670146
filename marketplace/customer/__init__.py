"""The customer database: accounts and sessions, and the logic that owns them."""
