"""Text read from files and processes, made fit for hdrlog's one-line messages.

A name hdrlog reads from a (possibly hostile) ELF file or from /proc (section names, a Go version string, a
process's comm or command line, a file path) may hold a newline or a terminal escape; put into an error
sentence or a table cell unescaped it would break the one-line message or drive the terminal.  Every such
value goes through :func:`shown` first.
"""

from __future__ import annotations

__all__ = ["TEXT_LIMIT", "shown"]

TEXT_LIMIT = 4096  # paths (PATH_MAX), names and sentences up to this are shown whole, only escaped


def shown(text: str, limit: int = 64) -> str:
    """A string read from a file or a process, fit for a one-line message: control characters (a newline, a
    terminal escape from a hostile file) and overlong text are shown escaped (found by tests/test_fuzz.py)."""
    if text.isprintable() and len(text) <= limit:
        return text
    return repr(text[:limit])[1:-1] + ("..." if len(text) > limit else "")
