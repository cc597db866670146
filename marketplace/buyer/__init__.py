"""The buyer service: its APIs and the purchase flow."""
