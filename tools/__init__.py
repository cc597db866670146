"""Measurement scripts for the figures of docs/PERFORMANCE.md, run from a
checkout (``.venv/bin/python -m tools.NAME --help``); not part of the
installed package."""
