"""The public contract's values, shared by the services and the clients: error codes, value rules, money."""
