"""Byte scans of HTTP/1.x streams for :mod:`hdrlog.http1`: what a direction carries, where the next message
may start (resynchronisation, segment boundaries), where a header block ends.

Everything here works on whole ``bytes`` with ``bytes.find``/``rfind`` and anchored regular expressions
(``match`` at a position, never an unanchored ``search`` over a block: CPython's regex engine tries every
start position, 3 µs on a 250-byte header block where two ``find`` calls take 0.2 µs), and the parser states
that look for a message start: "detect" (what does this direction carry?), "resync" (after an error or lost
bytes) and the tentative tunnel after a request with Upgrade/CONNECT.
"""

from __future__ import annotations

import re

__all__ = ["find_request", "find_response", "classify", "segments", "header_end", "KNOWN_METHODS", "Resync"]

DETECT_LIMIT = 4096  # bytes looked at before a direction is declared "not-http"
RESYNC_KEEP = 8 * 1024  # bytes kept between feeds while looking for the next message start

_MAX_TARGET = 16 * 1024  # longest request-target recognised while resynchronising

H2_PREFACE = b"PRI * HTTP/2.0"
# Anchored classification of the first bytes of a direction (brief: ^[A-Z]{3,16} \S+ HTTP/1\.[01]).
_REQ_LINE = re.compile(rb"[A-Z]{3,16} \S+ HTTP/1\.[01]")
_RESP_LINE = re.compile(rb"HTTP/1\.[01] [0-9]{3}")
_REQ_PARTIAL = re.compile(
    rb"(?:[A-Z]{1,16}|[A-Z]{3,16} \S*|[A-Z]{3,16} \S+ (?:H(?:T(?:T(?:P(?:/(?:1\.?)?)?)?)?)?)?)\Z"
)
_RESP_PARTIAL = re.compile(rb"H(?:T(?:T(?:P(?:/(?:1(?:\.(?:[01](?: [0-9]{0,2})?)?)?)?)?)?)?)?\Z")
# Used (with pos/endpos) when resynchronising.
_RESP_AT = re.compile(rb"HTTP/1\.[01] [0-9]{3}(?:[ \r\n]|\Z)")
_METHOD_TAIL = re.compile(rb"[A-Z]{3,16}\Z")
_SPACE = re.compile(rb"\s")
_RESP_TAILS = tuple(b"HTTP/1."[:k] for k in range(6, 0, -1))

# Methods llhttp's request parser accepts with HTTP/1.x (M-SEARCH aside).
KNOWN_METHODS = frozenset(
    b"DELETE GET HEAD POST PUT CONNECT OPTIONS TRACE COPY LOCK MKCOL MOVE PROPFIND PROPPATCH SEARCH "
    b"UNLOCK BIND REBIND UNBIND ACL REPORT MKACTIVITY CHECKOUT MERGE NOTIFY SUBSCRIBE UNSUBSCRIBE "
    b"PATCH PURGE MKCALENDAR LINK UNLINK SOURCE QUERY".split()
)


def find_request(buf: bytes, pos: int) -> int:
    """Offset >= pos of the first plausible request line (``METHOD SP target SP HTTP/1.x``), or -1.

    Only methods llhttp accepts count (resyncing onto anything else just fails again).  The method
    may directly follow the end of a body ("...}GET /"), even an upper-case one ("...XYZGET /"),
    but an upper-case run that continues from before ``pos`` is the rest of a method already
    rejected ("UNLOCK" failed: "NLOCK" must not become "LOCK").
    """
    f = buf.find(b" HTTP/1.", pos)
    n = len(buf)
    while f >= 0:
        v = f + 8
        if v < n and buf[v] in (48, 49) and (v + 1 == n or buf[v + 1] in (13, 10)):
            t = buf.rfind(b" ", max(pos, f - _MAX_TARGET), f)
            if t >= 0 and t + 1 < f and _SPACE.search(buf, t + 1, f) is None:
                m = _METHOD_TAIL.search(buf, max(pos, t - 16), t)
                if m is not None:
                    a = m.start()
                    if not (a == pos and a > 0 and 65 <= buf[a - 1] <= 90):
                        for s in range(a, t - 2):
                            if buf[s:t] in KNOWN_METHODS:
                                return s
        f = buf.find(b" HTTP/1.", f + 1)
    return -1


def find_response(buf: bytes, pos: int) -> int:
    """Offset >= pos of the first plausible status line (``HTTP/1.x NNN``), or -1."""
    f = buf.find(b"HTTP/1.", pos)
    while f >= 0:
        if _RESP_AT.match(buf, f) is not None:
            return f
        f = buf.find(b"HTTP/1.", f + 1)
    return -1


def classify(buf: bytes) -> str | None:
    """What the bytes at the start of ``buf`` are: "request", "response", "h2", "no", or None (wait)."""
    if buf.startswith(H2_PREFACE):
        return "h2"
    if _REQ_LINE.match(buf):
        return "request"
    if _RESP_LINE.match(buf):
        return "response"
    if H2_PREFACE.startswith(buf) or _REQ_PARTIAL.match(buf) or _RESP_PARTIAL.match(buf):
        return None
    return "no"


def segments(data: bytes, pos: int, kind: str | None):
    """Offsets > pos where a message of ``kind`` may start in ``data`` (segment boundaries), ascending."""
    if kind == "response":
        # every "HTTP/1." (validated or not) and a prefix of it ending the chunk: a response
        # must begin at a segment start for the HEAD terminator search to be exact
        f = data.find(b"HTTP/1.", pos + 1)
        tail = data[-1] in b"HTP/1"
        if f < 0 and not tail:
            return ()
        out = []
        while f >= 0:
            out.append(f)
            f = data.find(b"HTTP/1.", f + 7)
        if tail:
            n = len(data)
            for t in _RESP_TAILS:
                if data.endswith(t):
                    s = n - len(t)
                    if s > pos and (not out or out[-1] < s):
                        out.append(s)
                    break
        return out
    # requests: validated request lines, not on the line the segment starts in
    f = data.find(b" HTTP/1.", pos + 1)
    if f < 0:
        return ()
    nl = data.rfind(b"\n", pos, f)
    if nl < 0:  # the usual case: the only " HTTP/1." is the request line the segment starts with
        f = data.find(b" HTTP/1.", f + 1)
        if f < 0:
            return ()
    out = []
    while f >= 0:
        nl = data.rfind(b"\n", pos, f)
        if nl >= 0:
            s = find_request(data, nl + 1)
            if s < 0:
                break
            if s > pos:
                out.append(s)
                f = data.find(b" HTTP/1.", max(f, s) + 1)
                continue
        f = data.find(b" HTTP/1.", f + 1)
    return out


def header_end(data: bytes, pos: int, end: int) -> int:
    """Offset just after the first blank line (``\\n\\r?\\n``, the end of a header block) in data[pos:end], or -1.

    Same answer as searching ``\\r?\\n\\r?\\n``: the block ends at the first LF followed by an optional CR and
    an LF."""
    a = data.find(b"\n\n", pos, end)
    b = data.find(b"\n\r\n", pos, end)
    if b >= 0 and (a < 0 or b < a):
        return b + 3
    return a + 2 if a >= 0 else -1


class Resync:
    """Mixin of Http1Parser: the states that look for a message start (their state lives in Http1Parser's
    slots: ``_buf``, ``_bpos``, ``_tentative``, ``_skip_body``, ``kind``, ``state``, ``_p``), and the way into
    "resync" after an error or lost bytes."""

    __slots__ = ()

    def _to_resync(self):
        """Drop the message in progress (a held one is released as cut) and look for the next message start."""
        self._side = self._fskip = 0
        if self._held is not None:
            self._release(False)
        self.state = "resync"
        self._p = None
        self._in_msg = self._in_hdrs = False
        self._stop = None
        self._buf = b""
        self._bpos = 0
        self._tail = b""

    def _fail(self):
        """Internal error (should not happen): count it and start over safely."""
        self.errors += 1
        if self.kind is None:
            self.state = "not-http"
            self._buf = b""
        else:
            self._to_resync()

    def _tunnel_check(self, data: bytes, pos: int):
        if self._skip_body:
            k = min(self._skip_body, len(data) - pos)
            self._skip_body -= k
            pos += k
            if self._skip_body:
                return None
        buf = self._buf + data[pos:] if self._buf else data[pos:]
        if not buf:
            return None
        c = classify(buf)
        if c == "request":
            self._buf = b""
            self._tentative = False
            self.state = "http"
            return buf, 0
        if c is None and len(buf) < DETECT_LIMIT:
            self._buf = buf
            return None
        self._buf = b""
        self._tentative = False  # a real tunnel: stop looking
        return None

    def _detect(self, data: bytes, pos: int):
        buf = self._buf + data[pos:] if self._buf else data[pos:]
        c = classify(buf)
        if c == "h2":
            return self._not_http()
        if c == "request" or c == "response":
            return self._start(c, buf, 0)
        if c == "no":
            # capture may start mid-connection (hdrlog attaches to running gateways): look for a
            # message start further in
            r = find_request(buf, 0)
            s = find_response(buf, 0)
            if r >= 0 and (s < 0 or r < s):
                return self._start("request", buf, r)
            if s >= 0:
                return self._start("response", buf, s)
        if len(buf) > DETECT_LIMIT:
            return self._not_http()
        self._buf = buf
        return None

    def _start(self, kind: str, buf: bytes, at: int):
        self.kind = kind
        self.state = "http"
        self._buf = b""
        self._p = None
        return buf, at

    def _not_http(self):
        self.state = "not-http"
        self._buf = b""
        return None

    def _resync(self, data: bytes, pos: int):
        if self._buf:
            data = self._buf + data[pos:]
            pos = self._bpos
            self._buf = b""
        if self.kind == "request":
            s = find_request(data, pos)
        else:
            s = find_response(data, pos)
        if s >= 0:
            self.state = "http"
            self._p = None
            return data, s
        cut = max(pos, len(data) - RESYNC_KEEP)
        if cut > 0:  # keep one byte before the cut as context (a method must not follow A-Z)
            self._buf = data[cut - 1:]
            self._bpos = 1
        else:
            self._buf = data
            self._bpos = 0
        return None
