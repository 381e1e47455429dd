"""Where records go: JSON lines (default) or a readable line per message for people."""

from __future__ import annotations

import errno
import os
import stat
import sys

import orjson

_DUMPS = orjson.dumps
_NL = orjson.OPT_APPEND_NEWLINE


def open_private(path: str):
    """Create/append a file readable by its owner (us) only; refuse a symlink planted at the path and a
    file someone else owns (they could read the plaintext whatever its mode). A device or pipe
    (/dev/null, a FIFO another tool reads) is written to as it is: chmod-ing /dev/null would break it."""
    from hdrlog.errors import HdrlogError

    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        why = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
        raise HdrlogError(f"cannot write output file {path}: {why}.") from None
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode):
        if st.st_uid != os.geteuid():
            os.close(fd)
            raise HdrlogError(
                f"cannot write output file {path}: it belongs to uid {st.st_uid}, who could read the decrypted "
                f"traffic; remove it or choose another path."
            )
        os.fchmod(fd, 0o600)
    return os.fdopen(fd, "ab", buffering=1 << 16)


class JsonlSink:
    def __init__(self, path: str | None = None):
        self.path = path
        self.f = open_private(path) if path else sys.stdout.buffer
        self.written = 0

    def write(self, rec: dict) -> None:
        self.f.write(_DUMPS(rec, option=_NL))
        self.written += 1

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        try:
            self.f.flush()
        finally:
            if self.path:
                self.f.close()


_C = {"dim": "\033[2m", "bold": "\033[1m", "green": "\033[32m", "yellow": "\033[33m", "red": "\033[31m",
      "cyan": "\033[36m", "reset": "\033[0m"}


class PrettySink:
    """One line per message: time, pid/comm, peer, method path or status, latency, a few headers."""

    def __init__(self, stream=None, color: bool | None = None, headers: int = 4):
        self.f = stream or sys.stdout
        self.color = self.f.isatty() if color is None else color
        self.max_headers = headers
        self.written = 0

    def _c(self, name: str, text: str) -> str:
        return f"{_C[name]}{text}{_C['reset']}" if self.color else text

    def write(self, rec: dict) -> None:
        t = rec.get("type")
        if t != "http":
            if t == "loss":
                self.f.write(self._c("red", f"!! lost {rec.get('events')} events\n"))
            return
        self.written += 1
        conn = rec["conn"]
        ts = rec["ts"][11:23]
        who = f"{rec['comm']}[{rec['pid']}]"
        arrow = "<-" if rec["direction"] == "in" else "->"
        peer = conn.get("peer") or "?"
        if rec["kind"] == "request":
            what = self._c("bold", f"{rec['method']} {rec['path']}")
        else:
            st = rec.get("status") or 0
            colour = "green" if st < 400 else "yellow" if st < 500 else "red"
            lat = f" {rec['latency_ms']:.1f}ms" if rec.get("latency_ms") is not None else ""
            req = rec.get("request") or {}
            what = self._c(colour, f"{st}") + lat + self._c("dim", f" ({req.get('method')} {req.get('path')})")
        hs = "; ".join(f"{n}: {v}" for n, v in rec["headers"][: self.max_headers])
        more = len(rec["headers"]) - self.max_headers
        if more > 0:
            hs += f"; +{more}"
        trunc = self._c("red", " [truncated]") if rec.get("truncated") else ""
        self.f.write(
            f"{self._c('dim', ts)} {who} {arrow} {peer} {conn.get('role') or '?'} {what}{trunc}  "
            f"{self._c('cyan', hs)}\n"
        )

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        self.flush()
