"""The frame of every service: framing, envelope, dispatch, limits, workers, the service tree."""
