"""The twistd plugin modules: one per daemon, each its Options and
makeService (twisted/plugins/ names them)."""
