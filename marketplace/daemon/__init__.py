"""The daemon assembly: settings, the service tree, worker processes,
exits, and the periodic housekeeping of the databases."""
