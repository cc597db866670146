"""Writing Twisted endpoint descriptions (C{tcp:host=…:port=…})."""


def quote(value: str) -> str:
    """C{value} escaped for one argument of an endpoint description: its
    backslashes, colons and equals signs kept as they are."""
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


__all__ = ["quote"]
