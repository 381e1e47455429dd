"""Sans-IO HTTP/1.x header extraction for ONE direction of ONE connection.

The connection tracker feeds the plaintext it captured (any chunk boundaries) and gets back the
header blocks that completed, as :class:`~hdrlog.model.HttpMessage`.  The parsing itself is done by
llhttp (through httptools); this module only adds what an *observer* needs on top of a server-side
parser:

* deciding whether a direction carries requests, responses or something else;
* framing that depends on the other direction (HEAD responses, CONNECT 2xx), via ``response_to``;
* surviving lost data and garbage: the partial header block is reported as ``truncated`` and the
  parser resynchronises on the next plausible message start, without ever raising;
* bounded memory whatever the input.

Error localisation.  httptools does not tell where in a chunk an error happened, so each chunk is
fed in *segments* split at every place where a message could start (a cheap ``bytes.find`` scan).
llhttp is a streaming parser, so splitting never changes the result; when llhttp fails, the failure
lies inside the current segment and parsing resumes from the next plausible start after it.

Timing (``python -m hdrlog.http1``: 10k messages fed whole, CPython 3.11, httptools 0.9): a typical
286-byte request with 8 headers costs about 3.2 µs per message end to end (httptools with trivial
callbacks alone: about 1.1 µs); a 150-byte response header with a 2 KiB body about 3.0 µs.  Body
bytes are skipped inside llhttp (no on_body callback) and only scanned once by ``bytes.find``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable

import httptools
from httptools import HttpParserError, HttpParserUpgrade

from .model import HttpMessage

__all__ = ["Http1Parser", "DETECT_LIMIT", "MAX_HEADER_BYTES"]

DETECT_LIMIT = 4096  # bytes looked at before a direction is declared "not-http"
MAX_HEADER_BYTES = 64 * 1024  # partial header block kept across feeds before it is cut as truncated
RESYNC_KEEP = 8 * 1024  # bytes kept between feeds while looking for the next message start
_MAX_TARGET = 16 * 1024  # longest request-target recognised while resynchronising

_H2_PREFACE = b"PRI * HTTP/2.0"
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
_HDR_END = re.compile(rb"\r?\n\r?\n")
_RESP_TAILS = tuple(b"HTTP/1."[:k] for k in range(6, 0, -1))

# Methods llhttp's request parser accepts with HTTP/1.x (M-SEARCH aside).
_KNOWN_METHODS = frozenset(
    b"DELETE GET HEAD POST PUT CONNECT OPTIONS TRACE COPY LOCK MKCOL MOVE PROPFIND PROPPATCH SEARCH "
    b"UNLOCK BIND REBIND UNBIND ACL REPORT MKACTIVITY CHECKOUT MERGE NOTIFY SUBSCRIBE UNSUBSCRIBE "
    b"PATCH PURGE MKCALENDAR LINK UNLINK SOURCE QUERY".split()
)
_PROTO = {"1.1": "http/1.1", "1.0": "http/1.0"}
_METHODS: dict[bytes, str] = {}


class _Stop(Exception):
    """Raised from on_headers_complete to make llhttp stop at the end of a header block."""


def _find_request(buf: bytes, pos: int) -> int:
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
                            if buf[s:t] in _KNOWN_METHODS:
                                return s
        f = buf.find(b" HTTP/1.", f + 1)
    return -1


def _find_response(buf: bytes, pos: int) -> int:
    """Offset >= pos of the first plausible status line (``HTTP/1.x NNN``), or -1."""
    f = buf.find(b"HTTP/1.", pos)
    while f >= 0:
        if _RESP_AT.match(buf, f) is not None:
            return f
        f = buf.find(b"HTTP/1.", f + 1)
    return -1


def _classify(buf: bytes) -> str | None:
    """What the bytes at the start of ``buf`` are: "request", "response", "h2", "no", or None (wait)."""
    if buf.startswith(_H2_PREFACE):
        return "h2"
    if _REQ_LINE.match(buf):
        return "request"
    if _RESP_LINE.match(buf):
        return "response"
    if _H2_PREFACE.startswith(buf) or _REQ_PARTIAL.match(buf) or _RESP_PARTIAL.match(buf):
        return None
    return "no"


def _wants_skip(fn: Callable) -> bool:
    """Does ``response_to`` accept the optional ``skip`` argument (see :class:`Http1Parser`)?"""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    for prm in sig.parameters.values():
        if prm.kind in (prm.POSITIONAL_ONLY, prm.POSITIONAL_OR_KEYWORD, prm.VAR_POSITIONAL):
            return True
    return False


def _is_final(status: int | None) -> bool:
    """Does this response end its request's exchange? (Same rule as the Pairer: 1xx except 101 don't.)"""
    return status is None or status >= 200 or status == 101 or status < 100


def _dec(b: bytes) -> str:
    return b.decode("utf-8", "backslashreplace")


class Http1Parser:
    """HTTP/1.x header blocks of one direction of one connection.

    ``response_to()`` is asked, when a response starts, for the method of the request it answers
    (normally ``Pairer.response_to``): HEAD responses have no body whatever their Content-Length and
    a 2xx answer to CONNECT starts a tunnel.  It may take one optional positional argument ``skip``:
    the number of final responses this parser already completed in the current ``feed()`` call
    (their messages are not yet returned, so the pairer has not consumed their requests).  A
    zero-argument callable works too, but then pipelined HEAD/CONNECT responses arriving in the same
    chunk as earlier responses can be framed wrong.  Pass every message returned by
    ``feed``/``gap``/``close`` to the pairer before the next call.

    ``body`` (optional, opt-in body capture, used for MCP): called as ``body(msg, method)`` for each
    header block (``method``: the request a response answers, else None); it returns None (the
    common case: the body is skipped inside llhttp, never copied) or a sink with ``add(bytes) ->
    bool`` and ``finish(complete: bool)``.  The message is then held back, its body framed here
    (Content-Length, chunked, or until close) and handed to ``sink.add`` until it ends (``finish``)
    or ``add`` returns False, and only then returned.

    Attributes: ``state`` ("detect" | "http" | "resync" | "not-http" | "tunnel" | "body"), ``kind``
    ("request" | "response" | None), ``errors`` (parse errors and oversize header blocks, each
    followed by a resync) and ``gaps`` (calls to ``gap`` with nbytes > 0).
    """

    __slots__ = (
        "state", "kind", "errors", "gaps",
        "_response_to", "_rt_skip", "_p", "_buf", "_bpos", "_tentative", "_skip_body",
        "_out", "_ts", "_finals", "_in_msg", "_in_hdrs", "_began", "_url", "_status", "_hdrs",
        "_hdr_bytes", "_tail", "_method", "_stop", "_last",
        "_body", "_sink", "_held", "_bmode", "_brem", "_cstate", "_cline",
    )  # fmt: skip

    #: re-raise internal errors instead of counting them (tests set this; never in production)
    debug = False

    def __init__(self, *, response_to: Callable[..., str | None] = lambda: None, body: Callable | None = None):
        self.state = "detect"
        self.kind: str | None = None
        self.errors = 0
        self.gaps = 0
        self._response_to = response_to
        self._rt_skip = _wants_skip(response_to)
        self._p = None  # httptools parser, created when the direction is known
        self._buf = b""  # bytes kept between feeds in detect / resync / tentative tunnel states
        self._bpos = 0  # where to start searching self._buf
        self._tentative = False  # request direction after CONNECT/Upgrade: tunnel unless HTTP resumes
        self._skip_body = 0  # body bytes of an Upgrade request to skip before that decision
        self._out: list[HttpMessage] = []
        self._ts = 0
        self._finals = 0  # final responses completed during the current feed() call
        self._in_msg = False
        self._in_hdrs = False
        self._began = False  # a message began in the segment being fed
        self._url = b""
        self._status = b""
        self._hdrs: list[tuple[bytes, bytes]] = []
        self._hdr_bytes = 0
        self._tail = b""  # last bytes of a header block in progress (terminator split across feeds)
        self._method: str | None = None  # method of the request the current response answers
        self._stop: str | None = None  # "head" | "tunnel" when _Stop was raised
        self._last: HttpMessage | None = None
        self._body = body  # opt-in body hook (see class doc)
        self._sink = None  # body sink of the held message
        self._held: HttpMessage | None = None  # message waiting for the end of its body
        self._bmode: str | None = None  # "length" | "chunked" | "close" while state == "body"
        self._brem = 0  # body (length) or chunk (chunked) bytes left
        self._cstate = "size"  # chunked: "size" | "data" | "crlf" | "trailer"
        self._cline = b""  # chunked: partial size/trailer line

    # ------------------------------------------------------------------ public API

    def feed(self, data: bytes, ts_ns: int) -> list[HttpMessage]:
        """Parse a plaintext chunk; return the header blocks that completed in it."""
        self._out = out = []
        self._ts = ts_ns
        self._finals = 0
        if not data:
            return out
        if type(data) is not bytes:
            data = bytes(data)
        try:
            if self.state == "http":  # hot path
                nxt = self._run(data, 0)
            else:
                nxt = (data, 0)
            # every step makes progress; this only guards against a bug
            budget = 8 + 2 * (len(data) + RESYNC_KEEP + DETECT_LIMIT)
            while nxt is not None:
                budget -= 1
                if budget < 0:
                    raise RuntimeError("http1: no progress")
                data, pos = nxt
                st = self.state
                if st == "http":
                    nxt = self._run(data, pos)
                elif st == "resync":
                    nxt = self._resync(data, pos)
                elif st == "detect":
                    nxt = self._detect(data, pos)
                elif st == "tunnel" and self._tentative:
                    nxt = self._tunnel_check(data, pos)
                elif st == "body":
                    nxt = self._body_run(data, pos)
                else:
                    nxt = None
        except Exception:  # never raise to the tracker; a bug here must not kill the capture
            if self.debug:
                raise
            self._fail()
        return out

    def gap(self, nbytes: int, ts_ns: int) -> list[HttpMessage]:
        """``nbytes`` of this direction were lost: cut the header block in progress, resync."""
        self._out = out = []
        self._ts = ts_ns
        if nbytes <= 0:
            return out
        self.gaps += 1
        try:
            st = self.state
            if st == "http":
                if self._in_hdrs:
                    self._truncate()
                self._to_resync()
            elif st in ("resync", "detect"):
                self._buf = b""
                self._bpos = 0
            elif st == "tunnel" and self._tentative:
                self._buf = b""
                self._skip_body = 0
            elif st == "body":
                self._release(False)
                if self._bmode == "length" and self._brem >= nbytes:
                    self._brem -= nbytes  # the loss lies inside the body: framing is intact
                    if not self._brem:
                        self._body_done()
                else:
                    self._to_resync()
        except Exception:
            if self.debug:
                raise
            self._fail()
        return out

    def close(self, ts_ns: int) -> list[HttpMessage]:
        """The connection ended: a header block in progress is returned as truncated."""
        self._out = out = []
        self._ts = ts_ns
        try:
            if self.state == "http" and self._in_hdrs:
                self._truncate()
            elif self._held is not None:
                self._release(self.state == "body" and self._bmode == "close")
        except Exception:
            if self.debug:
                raise
            self.errors += 1
        self._p = None
        self._in_msg = self._in_hdrs = False
        self._buf = b""
        self._hdrs = []
        return out

    # ------------------------------------------------------------------ llhttp callbacks

    def on_message_begin(self) -> None:
        self._in_msg = True
        self._in_hdrs = True
        self._began = True
        self._url = b""
        self._status = b""
        self._hdrs = []
        self._hdr_bytes = 0
        if self.kind == "response":
            try:
                rt = self._response_to
                self._method = rt(self._finals) if self._rt_skip else rt()
            except Exception:
                self._method = None

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_status(self, status: bytes) -> None:
        self._status += status

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_hdrs:  # llhttp reports chunked trailers through the same callback: skip them
            self._hdrs.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_hdrs = False
        msg = self._message(False)
        if self._body is not None and self._want_body(msg):
            self._stop = "body"
            raise _Stop
        self._out.append(msg)
        if msg.kind == "response":
            st = msg.status or 0
            if _is_final(st):
                self._finals += 1
                m = self._method
                if m == "HEAD":
                    self._stop = "head"
                    raise _Stop
                if m == "CONNECT" and st < 300:
                    self._stop = "tunnel"
                    raise _Stop

    def on_message_complete(self) -> None:
        self._in_msg = False

    # ------------------------------------------------------------------ internals

    def _message(self, truncated: bool) -> HttpMessage:
        p = self._p
        raw = self._hdrs
        try:  # strict UTF-8 is the fast path; escape only when needed
            headers = [(n.decode(), v.decode()) for n, v in raw]
        except UnicodeDecodeError:
            headers = [(_dec(n), _dec(v)) for n, v in raw]
        authority = None
        for n, v in headers:
            if len(n) == 4 and n.lower() == "host":
                authority = v
                break
        ver = p.get_http_version()
        proto = _PROTO.get(ver, "http/1.1")
        if self.kind == "request":
            method = path = None
            if self._url or not truncated:  # llhttp knows the method once the URL started
                mb = p.get_method()
                method = _METHODS.get(mb)
                if method is None:
                    method = _METHODS.setdefault(mb, _dec(mb))
                path = _dec(self._url)
            msg = HttpMessage("request", proto, self._ts, headers, method, path, authority,
                              truncated=truncated)  # fmt: skip
        else:
            status = p.get_status_code()
            if not 100 <= status <= 999:  # status line not complete yet (truncated)
                status = None
            reason = _dec(self._status) if status is not None else None
            msg = HttpMessage("response", proto, self._ts, headers, None, None, authority,
                              status, reason, truncated)  # fmt: skip
        self._last = msg
        return msg

    def _new_parser(self):
        cls = httptools.HttpRequestParser if self.kind == "request" else httptools.HttpResponseParser
        p = cls(self)
        # Observer, not server: show NUL/control bytes in header values instead of dropping the
        # message, and keep parsing after "Connection: close" / HTTP/1.0 (we see what was sent).
        p.set_dangerous_leniencies(lenient_headers=True, lenient_keep_alive=True)
        self._in_msg = self._in_hdrs = False
        self._stop = None
        return p

    def _run(self, data: bytes, pos: int):
        """Parse ``data[pos:]`` in state "http"; return (data, pos) to continue elsewhere, or None."""
        n = len(data)
        if pos >= n:
            return None
        p = self._p
        if p is None:
            p = self._p = self._new_parser()
        cands = self._segments(data, pos)
        if not cands and pos == 0:  # one segment: the common case
            self._began = False
            hdr_before = self._in_hdrs
            try:
                p.feed_data(data)
            except HttpParserUpgrade as e:
                return self._upgraded(data, e.args[0] if e.args else n)
            except HttpParserError as e:
                return self._failed(data, 0, n, hdr_before, e)
            if self._in_hdrs:
                return self._partial_headers(data, 0, n, hdr_before)
            return None
        mv = memoryview(data)
        ci = 0
        nc = len(cands)
        while pos < n:
            end = cands[ci] if ci < nc else n
            ci += 1
            self._began = False
            hdr_before = self._in_hdrs
            try:
                p.feed_data(mv[pos:end])
            except HttpParserUpgrade as e:
                return self._upgraded(data, pos + (e.args[0] if e.args else end - pos))
            except HttpParserError as e:
                return self._failed(data, pos, end, hdr_before, e)
            if self._in_hdrs:
                r = self._partial_headers(data, pos, end, hdr_before)
                if r is not None:
                    return r
            pos = end
        return None

    def _segments(self, data: bytes, pos: int):
        """Offsets > pos where a message may start (segment boundaries), ascending."""
        if self.kind == "response":
            # every "HTTP/1." (validated or not) and a prefix of it ending the chunk: a response
            # must begin at a segment start for the HEAD terminator search to be exact
            f = data.find(b"HTTP/1.", pos + 1)
            last = data[-1]
            tail = last in b"HTP/1"
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
        out = []
        while f >= 0:
            nl = data.rfind(b"\n", pos, f)
            if nl >= 0:
                s = _find_request(data, nl + 1)
                if s < 0:
                    break
                if s > pos:
                    out.append(s)
                    f = data.find(b" HTTP/1.", max(f, s) + 1)
                    continue
            f = data.find(b" HTTP/1.", f + 1)
        return out

    def _partial_headers(self, data: bytes, pos: int, end: int, hdr_before: bool):
        """A header block is still open after data[pos:end]: bound it, remember its tail."""
        self._hdr_bytes += end - pos
        if self._hdr_bytes > MAX_HEADER_BYTES:
            self.errors += 1
            self._truncate()
            self._to_resync()
            return data, end
        if hdr_before and end - pos < 3:
            self._tail = (self._tail + data[pos:end])[-3:]
        else:
            self._tail = data[max(pos, end - 3):end]
        return None

    def _failed(self, data: bytes, pos: int, end: int, hdr_before: bool, exc: Exception):
        """llhttp stopped inside data[pos:end]: our _Stop, or a parse error."""
        stop = self._stop
        if self.debug and stop is None and isinstance(exc, httptools.HttpParserCallbackError):
            raise exc  # a bug in our callbacks, not bad input
        if stop is not None:
            self._stop = None
            self._p = None
            self._in_msg = self._in_hdrs = False
            if stop == "tunnel":
                self.state = "tunnel"
                self._tentative = False
                return None
            # HEAD response (the message ends with its header block) or a body to capture
            if self._began:
                m = _HDR_END.search(data, pos, end)
                e = m.end() if m is not None else end
            else:
                tail = self._tail if hdr_before else b""
                m = _HDR_END.search(tail + bytes(data[pos:end]))
                e = max(pos, pos + m.end() - len(tail)) if m is not None else end
            if stop == "body":
                self.state = "body"
            return data, e
        self.errors += 1
        if self._in_hdrs:
            self._truncate()
        resume = pos + 1 if self._began else pos
        self._to_resync()
        return data, resume

    def _upgraded(self, data: bytes, off: int):
        """llhttp paused after a message with upgrade semantics (101, CONNECT, Upgrade:)."""
        self._p = None
        self._in_msg = self._in_hdrs = False
        self.state = "tunnel"
        if self.kind == "response":
            self._tentative = False
            return None
        # request side: the tunnel starts only if the server agrees; until bytes show otherwise,
        # assume the client may go on with HTTP/1.1 (e.g. 407 to CONNECT, refused h2c upgrade)
        self._tentative = True
        self._buf = b""
        self._skip_body = 0
        last = self._last
        if last is not None and last.method != "CONNECT":
            # httptools skips the body of an Upgrade request; skip it ourselves
            for k, v in last.headers:
                if k.lower() == "content-length":
                    try:
                        self._skip_body = max(0, int(v.strip()))
                    except ValueError:
                        pass
                    break
        return data, off

    # ------------------------------------------------------------------ opt-in body capture

    def _want_body(self, msg: HttpMessage) -> bool:
        """Ask the body hook about ``msg``; set up the held message and its framing if it wants it."""
        method = None
        if msg.kind == "response":
            st = msg.status or 0
            method = self._method
            if st < 200 or st == 204 or st == 304 or method == "HEAD" or (method == "CONNECT" and st < 300):
                return False
        try:
            sink = self._body(msg, method)
        except Exception:
            if self.debug:
                raise
            return False
        if sink is None:
            return False
        mode, length = "close" if msg.kind == "response" else None, 0
        for n, v in msg.headers:
            low = n.lower()
            if low == "transfer-encoding" and "chunked" in v.lower():
                mode = "chunked"
                break
            if low == "content-length":
                try:
                    length = int(v.strip())
                    mode = "length" if length > 0 else None
                except ValueError:
                    pass
        if mode is None:  # no body
            sink.finish(True)
            return False
        self._sink, self._held = sink, msg
        self._bmode, self._brem, self._cstate, self._cline = mode, length, "size", b""
        return True

    def release_held(self) -> list[HttpMessage]:
        """Hand over a message held for its body now: the other direction answered before the body ended
        (nginx answers `return 200` before reading a POST body), and pairing must see the request first.
        The rest of the body is still framed, no longer collected; the hook decodes what it has."""
        if self._held is None:
            return []
        self._out = out = []
        self._release(False)
        return out

    def _release(self, complete: bool | None) -> None:
        """Return the held message: body complete (True), cut (False) or no longer wanted (None)."""
        msg, sink = self._held, self._sink
        self._held = self._sink = None
        if sink is not None and complete is not None:
            sink.finish(complete)
        if msg is not None:
            self._out.append(msg)
            if msg.kind == "response" and _is_final(msg.status):
                self._finals += 1

    def _add(self, chunk) -> None:
        if self._sink is not None and not self._sink.add(chunk):
            self._release(None)

    def _body_done(self) -> None:
        self._release(True)
        self.state = "http"
        self._p = None
        self._bmode = None

    def _body_run(self, data: bytes, pos: int):
        """State "body": frame the held message's body, hand it to its sink, then resume HTTP."""
        n = len(data)
        mode = self._bmode
        if mode == "close":
            if pos < n:
                self._add(data[pos:])
            return None
        if mode == "length":
            k = min(self._brem, n - pos)
            if k > 0:
                self._add(data[pos:pos + k])
                self._brem -= k
                pos += k
            if self._brem:
                return None
            self._body_done()
            return (data, pos) if pos < n else None
        while pos < n:  # chunked
            cs = self._cstate
            if cs == "data":
                k = min(self._brem, n - pos)
                self._add(data[pos:pos + k])
                self._brem -= k
                pos += k
                if not self._brem:
                    self._cstate = "crlf"
                continue
            nl = data.find(b"\n", pos)
            if nl < 0:
                self._cline += data[pos:]
                if len(self._cline) > 4096:
                    self.errors += 1
                    self._to_resync()
                return None
            line = (self._cline + data[pos:nl]).rstrip(b"\r")
            self._cline = b""
            pos = nl + 1
            if cs == "crlf":
                self._cstate = "size"
            elif cs == "size":
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    self.errors += 1
                    self._to_resync()
                    return data, pos
                if size:
                    self._brem = size
                    self._cstate = "data"
                else:
                    self._cstate = "trailer"
            elif not line:  # the empty line after the last chunk (and trailers)
                self._body_done()
                return (data, pos) if pos < n else None
        return None

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
        c = _classify(buf)
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
        c = _classify(buf)
        if c == "h2":
            return self._not_http()
        if c == "request" or c == "response":
            return self._start(c, buf, 0)
        if c == "no":
            # capture may start mid-connection (hdrlog attaches to running gateways): look for a
            # message start further in
            r = _find_request(buf, 0)
            s = _find_response(buf, 0)
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
            s = _find_request(data, pos)
        else:
            s = _find_response(data, pos)
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

    def _to_resync(self):
        if self._held is not None:
            self._release(False)
        self.state = "resync"
        self._p = None
        self._in_msg = self._in_hdrs = False
        self._stop = None
        self._buf = b""
        self._bpos = 0
        self._tail = b""

    def _truncate(self):
        """Report the header block in progress as truncated (what llhttp delivered so far).

        httptools hands a header over only when the next header name starts (or the block ends), so
        the last header line before the cut is not reported, whether it was complete or not.  (After
        a parse error inside a header *name* it is, if a feed boundary fell inside that name: llhttp
        flushes a partial name at the end of each feed but not at an error.)
        """
        self._in_hdrs = False
        p = self._p
        if p is None:
            return
        known = self._url or self._status or self._hdrs
        if not known and self.kind == "response":
            known = 100 <= p.get_status_code() <= 999
        if known:  # else nothing is known yet, e.g. garbage llhttp took for a message start
            msg = self._message(True)
            self._out.append(msg)
            if msg.kind == "response" and _is_final(msg.status):
                self._finals += 1

    def _fail(self):
        """Internal error (should not happen): count it and start over safely."""
        self.errors += 1
        if self.kind is None:
            self.state = "not-http"
            self._buf = b""
        else:
            self._to_resync()


def _bench(n: int = 10000) -> None:  # pragma: no cover - manual timing check
    import time

    req = (
        b"GET /api/v1/items?id=12345&sort=desc HTTP/1.1\r\nHost: api.example.com\r\n"
        b"User-Agent: curl/8.5.0\r\nAccept: application/json\r\n"
        b"Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.abc.def\r\n"
        b"X-Request-Id: 7f3c9a2e-1b4d-4c8e-9f0a-123456789abc\r\n"
        b"Accept-Encoding: gzip, deflate, br\r\nConnection: keep-alive\r\n\r\n"
    )
    resp = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2048\r\n"
        b"Date: Sat, 22 Nov 2025 00:00:00 GMT\r\nServer: nginx\r\n"
        b"Cache-Control: no-store\r\n\r\n" + b"x" * 2048
    )
    for name, blob, rt in (("request", req, lambda: None), ("response", resp, lambda: "GET")):
        p = Http1Parser(response_to=rt)
        p.feed(blob, 0)
        t = time.perf_counter()
        got = 0
        for i in range(n):
            got += len(p.feed(blob, i))
        dt = time.perf_counter() - t
        assert got == n, (got, p.state)
        print(f"{name}: {len(blob)} bytes, {dt / n * 1e6:.2f} us/message")


if __name__ == "__main__":  # pragma: no cover
    _bench()
