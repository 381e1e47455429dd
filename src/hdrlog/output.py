"""What `attach` and `replay` write, assembled in one place: filters, observers, status line, rotation.

The chain, per record:  observers (metrics, end-of-run statistics) see every record → the Filter decides
what is written (and trims headers to --header) → the format sink (JSON lines or the readable view) →
stdout or a file (rotated by size with --rotate-mb/--keep, mode 0600). On a terminal the readable view
also keeps a status line (messages/s, drops) at the bottom.
"""

from __future__ import annotations

import fnmatch
import os
import sys
import time
from collections import deque

from hdrlog.errors import HdrlogError
from hdrlog.sinks import JsonlSink, PrettySink, open_private
from hdrlog.stats import _statsfast, mcp_items

# ---------------------------------------------------------------------------------------- filters


def parse_status(spec: str) -> tuple[int, int]:
    """"404" → (404, 404); "5xx" → (500, 599); "4XX" too. ValueError otherwise."""
    s = spec.strip().lower()
    if len(s) == 3 and s[0] in "12345" and s[1:] == "xx":
        lo = int(s[0]) * 100
        return lo, lo + 99
    if len(s) == 3 and s.isdigit() and 100 <= int(s) <= 599:
        return int(s), int(s)
    raise ValueError(f"--status takes a code (404) or a class (5xx), not {spec!r}")


def _is_glob(p: str) -> bool:
    return any(c in p for c in "*?[")


class Filter:
    """Which http records are written, and which of their headers. Non-http records always pass.

    Each option is a list; a record passes when it matches one value of every option given. Responses
    are matched on the method/path of the request they answer. --status keeps responses only (a request
    has no status yet); --header keeps only the named headers (any case) in what is written.
    """

    def __init__(self, *, paths=(), methods=(), statuses=(), mcp: bool = False, headers=()):
        self.paths = [p for p in paths if p]
        self.methods = {m.upper() for m in methods if m}
        self.statuses = [parse_status(s) for s in statuses]
        self.mcp = mcp
        self.headers = {h.strip().lower() for h in headers if h.strip()}
        self.active = bool(self.paths or self.methods or self.statuses or self.mcp or self.headers)

    @classmethod
    def from_args(cls, args) -> Filter:
        try:
            return cls(paths=getattr(args, "path", None) or (), methods=getattr(args, "method", None) or (),
                       statuses=getattr(args, "status", None) or (), mcp=bool(getattr(args, "mcp", False)),
                       headers=getattr(args, "header", None) or ())
        except ValueError as exc:
            raise HdrlogError(f"{exc}.") from None

    def _path_ok(self, path: str | None) -> bool:
        if path is None:
            return False
        bare = path.split("?", 1)[0]
        for p in self.paths:
            if _is_glob(p):
                if fnmatch.fnmatchcase(bare, p) or fnmatch.fnmatchcase(path, p):
                    return True
            elif p in path:
                return True
        return False

    def match(self, rec: dict) -> bool:
        if rec.get("type") != "http":
            return True
        if self.mcp and not mcp_items(rec):
            return False
        if rec.get("kind") == "response":
            req = rec.get("request") or {}
            method, path, status = req.get("method"), req.get("path"), rec.get("status")
        else:
            method, path, status = rec.get("method"), rec.get("path"), None
        if self.methods and (method or "").upper() not in self.methods:
            return False
        if self.paths and not self._path_ok(path):
            return False
        if self.statuses:
            if status is None or not any(lo <= status <= hi for lo, hi in self.statuses):
                return False
        return True

    def project(self, rec: dict) -> dict:
        """The record as written: with --header, only those headers (a copy; observers keep the full one)."""
        if not self.headers or rec.get("type") != "http":
            return rec
        out = dict(rec)
        out["headers"] = [h for h in rec["headers"] if h[0].lower() in self.headers]
        return out


# ------------------------------------------------------------------------------------ status line


class StatusLine:
    """A status line at the bottom of a terminal, under the readable view: rate, totals, drops.

    Wraps the PrettySink that writes to the same terminal: the line is erased before anything is
    written and redrawn (at most twice a second) on flush. Diagnostics on stderr clear it too
    (session.LOG_HOOKS)."""

    REDRAW_S = 0.5

    def __init__(self, inner, stream):
        self.inner = inner
        self.f = stream
        self.drawn = False
        self.seen = 0  # http records observed (before filters)
        self.shown = 0
        self.lost = 0
        self.started = time.monotonic()
        self.window: deque[tuple[float, int]] = deque()
        self._next = 0.0

    def observe(self, rec: dict) -> None:
        t = rec.get("type")
        if t == "http":
            self.seen += 1
        elif t == "loss":
            self.lost = max(self.lost, int(rec.get("total_events") or 0))

    def clear(self) -> None:
        if self.drawn:
            self.f.write("\r\033[K")
            self.f.flush()
            self.drawn = False

    def write(self, rec: dict) -> None:
        self.clear()
        if rec.get("type") == "http":
            self.shown += 1
        self.inner.write(rec)

    def text(self, now: float) -> str:
        self.window.append((now, self.seen))
        while len(self.window) > 2 and now - self.window[0][0] > 5.0:
            self.window.popleft()
        t0, n0 = self.window[0]
        rate = (self.seen - n0) / (now - t0) if now > t0 else 0.0
        up = int(now - self.started)
        shown = f" ({self.shown} shown)" if self.shown != self.seen else ""
        lost = f"\033[31m{self.lost} lost\033[0m" if self.lost else "0 lost"
        return (f"\033[7m hdrlog \033[0m {rate:.1f} msg/s · {self.seen} messages{shown} · {lost} · "
                f"{up // 60:d}:{up % 60:02d}  (Ctrl-C stops)")

    def flush(self) -> None:
        self.clear()
        self.inner.flush()
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.REDRAW_S
            self._line = self.text(now)
        self.f.write(self._line)
        self.f.flush()
        self.drawn = True

    def close(self) -> None:
        self.clear()
        self.inner.close()


# --------------------------------------------------------------------------------------- rotation


class RotatingFile:
    """An append-only file of at most `max_bytes` (checked after each write, so a record is never split):
    then FILE → FILE.1 → … → FILE.<keep>, the oldest is deleted, and a new FILE is created. Every file is
    created mode 0600 through sinks.open_private (no symlinks, no file of another user)."""

    def __init__(self, path: str, max_bytes: int, keep: int):
        if keep < 0:
            raise HdrlogError(f"--keep must be 0 or more, not {keep}.")
        self.path, self.max_bytes, self.keep = path, max_bytes, keep
        self.f = open_private(path)
        self.size = self.f.tell() if self.f.seekable() else 0
        self.rotations = 0

    def write(self, data: bytes) -> int:
        n = self.f.write(data)
        self.size += len(data)
        if self.max_bytes and self.size >= self.max_bytes:
            self.rotate()
        return n

    def rotate(self) -> None:
        self.f.close()
        if self.keep == 0:
            os.unlink(self.path)
        else:
            for i in range(self.keep - 1, 0, -1):
                src = f"{self.path}.{i}"
                if os.path.lexists(src):
                    os.replace(src, f"{self.path}.{i + 1}")
            os.replace(self.path, f"{self.path}.1")
        self.f = open_private(self.path)
        self.size = 0
        self.rotations += 1

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        self.f.close()


class TextFile:
    """str lines onto a binary file (open_private or RotatingFile): what PrettySink writes to a file."""

    def __init__(self, f):
        self.f = f

    def write(self, text: str) -> int:
        return self.f.write(text.encode("utf-8", "replace"))

    def flush(self) -> None:
        self.f.flush()

    def isatty(self) -> bool:
        return False

    def close(self) -> None:
        self.f.close()


class _RotatingJsonl(JsonlSink):
    def __init__(self, path: str, max_bytes: int, keep: int):
        self.path = path
        self._use(RotatingFile(path, max_bytes, keep))


# ------------------------------------------------------------------------------------------ chain


class OutputSink:
    """observers see every record; the filter picks what the inner sink writes.

    Without a filter and with the C module (`fast`), write is a _statsfast.Chain's C method: it calls each
    observer's observe and the inner sink's write as they are when the OutputSink is made (a Stats' and a
    JsonlSink's in C, without a Python frame), and counts."""

    #: write through _statsfast.Chain when there is no filter; tests compare with and without
    fast = _statsfast is not None

    def __init__(self, inner, flt: Filter | None = None, observers=()):
        self.inner = inner
        self.filter = flt if flt is not None and flt.active else None
        self.observers = [o for o in observers if o is not None]
        self._written = 0
        self._chain = None
        if self.fast and self.filter is None:
            self._chain = _statsfast.Chain(tuple(o.observe for o in self.observers), inner.write)
            self.write = self._chain.write

    @property
    def written(self) -> int:
        return self._chain.written if self._chain is not None else self._written

    def write(self, rec: dict) -> None:
        for o in self.observers:
            o.observe(rec)
        f = self.filter
        if f is None:
            self.inner.write(rec)
        elif f.match(rec):
            self.inner.write(f.project(rec))
        else:
            return
        self._written += 1

    def flush(self) -> None:
        self.inner.flush()
        for o in self.observers:
            tick = getattr(o, "tick", None)  # metrics refresh hdrlog's health from the main loop
            if tick is not None:
                tick()

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            for o in self.observers:
                closer = getattr(o, "close", None)
                if closer is not None and o is not self.inner:
                    closer()


def base_sink(fmt: str | None, output: str | None, *, headers=(), rotate_mb: float | None = None,
              keep: int = 5, status: bool = True):
    """The format sink: pretty on a terminal without --output, else JSON lines; rotation for files."""
    if fmt is None:
        fmt = "pretty" if output is None and sys.stdout.isatty() else "jsonl"
    max_bytes = int(rotate_mb * 1024 * 1024) if rotate_mb else 0
    if rotate_mb is not None and output is None:
        raise HdrlogError("--rotate-mb needs --output FILE.")
    show = [h for h in headers if h]
    if fmt == "pretty" and output is None:
        sink = PrettySink(show=show or None)
        if status and sys.stdout.isatty():
            return StatusLine(sink, sys.stdout)
        return sink
    if fmt == "pretty":
        raw = RotatingFile(output, max_bytes, keep) if max_bytes else open_private(output)
        return PrettySink(TextFile(raw), color=False, show=show or None, owns_stream=True)
    if max_bytes:
        return _RotatingJsonl(output, max_bytes, keep)
    return JsonlSink(output)


def add_filter_arguments(p) -> None:
    g = p.add_argument_group("filters (what is written, in both formats)")
    g.add_argument("--header", action="append", metavar="NAME",
                   help="show/write only these headers (repeatable, any case)")
    g.add_argument("--path", action="append", metavar="PATTERN",
                   help="only messages whose path contains PATTERN, or matches it as a glob when it has "
                   "*, ? or [ (e.g. '/api/*'); responses match on their request's path (repeatable)")
    g.add_argument("--method", action="append", metavar="METHOD", help="only this request method (repeatable)")
    g.add_argument("--status", action="append", metavar="CODE",
                   help="only responses with this status: 404, or a class: 5xx (repeatable)")
    g.add_argument("--mcp", action="store_true", help="only MCP messages (records with an \"mcp\" object)")
