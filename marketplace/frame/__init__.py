"""The domain-free frame every service stands on: framing, envelopes,
dispatch, limits, periodic jobs and Deferred helpers.  It knows no
database and no service."""
