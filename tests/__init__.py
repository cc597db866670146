"""Tests of the marketplace; run them with `make test`."""
