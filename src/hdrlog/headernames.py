"""Header names classified once per spelling: the parsers' hot paths look each header name up in a dict instead of
lower-casing and comparing it per message."""

from __future__ import annotations

__all__ = ["NameClasses"]


class NameClasses(dict):
    """``classes[name]`` -> the class of a header name as sent (0: none of interest), from a table of lower-case
    names; remembered per spelling, at most ``limit`` spellings (a hostile peer cannot grow it without bound)."""

    __slots__ = ("table", "limit")

    def __init__(self, table: dict[str, int], limit: int = 4096):
        super().__init__()
        self.table = table
        self.limit = limit

    def __missing__(self, name: str) -> int:
        c = self.table.get(name.lower(), 0)
        if len(self) >= self.limit:
            self.clear()
        self[name] = c
        return c
