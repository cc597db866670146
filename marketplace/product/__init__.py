"""The product database: items, carts, purchases and feedback."""
