"""Where records go: JSON lines (default) or a readable line per message for people."""

from __future__ import annotations

import errno
import os
import stat
import sys
import time

import orjson

from hdrlog.stats import _statsfast, mcp_is_error, mcp_items

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
    """One JSON object per line (orjson) onto a binary file. With the C module (`fast`), write is its JsonlWriter's
    C method (the same two calls, without a Python frame), which output.OutputSink's C chain calls directly."""

    #: write through _statsfast.JsonlWriter; tests compare with and without
    fast = _statsfast is not None

    def __init__(self, path: str | None = None):
        self.path = path
        self._use(open_private(path) if path else sys.stdout.buffer)

    def _use(self, f) -> None:
        self.f = f
        self._w = None
        self._written = 0
        if self.fast:
            self._w = _statsfast.JsonlWriter(f.write, _DUMPS, _NL)
            self.write = self._w.write

    @property
    def written(self) -> int:
        return self._w.written if self._w is not None else self._written

    def write(self, rec: dict) -> None:
        self.f.write(_DUMPS(rec, option=_NL))
        self._written += 1

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        try:
            self.f.flush()
        finally:
            if self.path:
                self.f.close()


_C = {"dim": "\033[2m", "bold": "\033[1m", "green": "\033[32m", "yellow": "\033[33m", "red": "\033[31m",
      "cyan": "\033[36m", "magenta": "\033[35m", "reset": "\033[0m"}


def mcp_label(req: dict | None, resp: dict | None) -> tuple[str, bool] | None:
    """("tools/call search", is_error) from an exchange's "mcp" objects (mcp.py: one summary or a list; a
    response carries its request's method/tool and "error" (the JSON-RPC code) or "is_error"), or None."""
    items = [m for r in (req, resp) if r for m in mcp_items(r)]
    if not items:
        return None
    names = []
    for m in items:
        label = " ".join(str(m[k]) for k in ("method", "tool", "resource", "prompt") if m.get(k))
        if label and label not in names:
            names.append(label)
    errs = [m for m in items if mcp_is_error(m)]
    text = ", ".join(names[:3]) + (f" +{len(names) - 3}" if len(names) > 3 else "") or "mcp"
    if errs:
        code = next((m["error"] for m in errs if isinstance(m.get("error"), int)), None)
        text += f" error {code}" if code is not None else " error"
    return text, bool(errs)


class PrettySink:
    """The readable view: one line per exchange (time, comm[pid], peer, METHOD path -> status, latency,
    headers, MCP method/tool).

    A request is held until its response arrives on the same connection (and h2 stream), then both make
    one line; a request still unanswered after PENDING_S, or at the end, gets a dimmed line of its own.
    `show`: header names (any case) to display from both; else the first `headers` request headers
    (Host aside: it is the authority) and the response's Content-Type/Content-Length."""

    PENDING_S = 1.0
    MAX_PENDING = 10000

    def __init__(self, stream=None, color: bool | None = None, headers: int = 4, show=None,
                 owns_stream: bool = False):
        self.f = stream or sys.stdout
        self.color = self.f.isatty() if color is None else color
        self.max_headers = headers
        self.show = [h.lower() for h in show] if show else None
        self.owns = owns_stream
        self.written = 0
        self.pending: dict[tuple, list] = {}
        self.npending = 0
        enc = (getattr(self.f, "encoding", None) or "utf-8").lower().replace("-", "")
        self.arrow = "\u2192" if enc in ("utf8", "utf8mb4") else "->"

    def _c(self, name: str, text: str) -> str:
        return f"{_C[name]}{text}{_C['reset']}" if self.color else text

    def write(self, rec: dict) -> None:
        t = rec.get("type")
        if t != "http":
            if t == "loss":
                self.f.write(self._c("red", f"!! lost {rec.get('events')} events ({rec.get('bytes')} bytes): "
                                     "affected connections resynchronise\n"))
            return
        self.written += 1
        key = (rec["conn"]["id"], rec.get("stream"))
        if rec.get("kind") == "request":
            self.pending.setdefault(key, []).append((time.monotonic(), rec))
            self.npending += 1
            if self.npending > self.MAX_PENDING:
                self._expire(float("inf"), limit=self.npending - self.MAX_PENDING)
            return
        want = rec.get("request") or {}
        q = self.pending.get(key)
        req = None
        while q:
            _, cand = q.pop(0)
            self.npending -= 1
            if cand.get("method") == want.get("method") and cand.get("path") == want.get("path"):
                req = cand
                break
            self._line(cand, None)  # its response never came (lost, or the connection resynchronised)
        if q is not None and not q:
            del self.pending[key]
        self._line(req, rec)

    def _expire(self, age: float, limit: int | None = None) -> None:
        now = time.monotonic()
        old = sorted((t, id(r), k, r) for k, q in self.pending.items() for t, r in q if now - t >= age)
        if limit is not None:
            old = old[:limit]
        for _t, _i, k, r in old:
            q = self.pending[k]
            q[:] = [x for x in q if x[1] is not r]
            if not q:
                del self.pending[k]
            self.npending -= 1
            self._line(r, None)

    def _headers(self, req: dict | None, resp: dict | None) -> str:
        if self.show is not None:
            hs = [(n, v) for r in (req, resp) if r for n, v in r["headers"] if n.lower() in self.show]
            return "; ".join(f"{n}: {v}" for n, v in hs)
        parts, tail = [], []
        if req:
            rh = [(n, v) for n, v in req["headers"] if n.lower() != "host"]
            parts += [f"{n}: {v}" for n, v in rh[: self.max_headers]]
            if len(rh) > self.max_headers:
                parts.append(f"+{len(rh) - self.max_headers}")
        if resp:
            tail = [f"{n}: {v}" for n, v in resp["headers"] if n.lower() in ("content-type", "content-length")]
        return "; ".join(parts) + (" | " if parts and tail else "") + "; ".join(tail)

    def _line(self, req: dict | None, resp: dict | None) -> None:
        base = req or resp
        conn = base["conn"]
        ts = base["ts"][11:23]
        who = f"{base['comm']}[{base['pid']}]"
        inbound = base["direction"] == "in" if req else base["direction"] == "out"  # requests come in
        peer = f"{'<-' if inbound else '->'} {conn.get('peer') or '?'}"
        if req:
            method, path = req.get("method"), req.get("path")
        else:
            r = resp.get("request") or {}
            method, path = r.get("method") or "?", r.get("path") or "?"
        what = self._c("bold", f"{method} {path}")
        if resp:
            st = resp.get("status") or 0
            colour = "green" if st < 400 else "yellow" if st < 500 else "red"
            lat = f" {resp['latency_ms']:.1f}ms" if resp.get("latency_ms") is not None else ""
            what += f" {self.arrow} " + self._c(colour, str(st)) + lat
        else:
            what = self._c("dim", f"{method} {path} {self.arrow} (no response seen)")
        if (resp or {}).get("proto") == "h2" or (req or {}).get("proto") == "h2":
            what += self._c("dim", " h2")
        trunc = self._c("red", " [truncated]") if any(r and r.get("truncated") for r in (req, resp)) else ""
        mcp = mcp_label(req, resp)
        tail = ""
        if mcp:
            tail = "  " + self._c("red" if mcp[1] else "magenta", f"[mcp {mcp[0]}]")
        hs = self._headers(req, resp)
        self.f.write(f"{self._c('dim', ts)} {who} {peer} {what}{trunc}{tail}  {self._c('cyan', hs)}\n")

    def flush(self) -> None:
        if self.npending:
            self._expire(self.PENDING_S)
        self.f.flush()

    def close(self) -> None:
        if self.npending:
            self._expire(0.0)
        self.f.flush()
        if self.owns:
            self.f.close()
