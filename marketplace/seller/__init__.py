"""The seller service: its APIs."""
