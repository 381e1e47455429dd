"""Sans-IO HTTP/1.x header extraction for ONE direction of ONE connection.

The connection tracker feeds the plaintext it captured (any chunk boundaries) and gets back the
header blocks that completed, as :class:`~hdrlog.model.HttpMessage`.  The parsing itself is done by
llhttp (through httptools); this module only adds what an *observer* needs on top of a server-side
parser:

* deciding whether a direction carries requests, responses or something else;
* framing that depends on the other direction (HEAD responses, CONNECT 2xx), via ``response_to``;
* surviving lost data and garbage: the partial header block is reported as ``truncated`` and the
  parser resynchronises on the next plausible message start, without ever raising;
* bounded memory whatever the input; nothing of a message is kept once it is returned.

Split by job: this module runs llhttp (state "http") and builds the messages; ``http1_scan`` finds
where messages start (detection, resynchronisation, segment boundaries, header-block ends);
``http1_body`` frames and collects the bodies the opt-in body hook (MCP) asks for.

Error localisation.  httptools does not tell where in a chunk an error happened, so each chunk is
fed in *segments* split at every place where a message could start (a cheap ``bytes.find`` scan).
llhttp is a streaming parser, so splitting never changes the result; when llhttp fails, the failure
lies inside the current segment and parsing resumes from the next plausible start after it.

The fast path (``http1_fast``, C in ``_h1fast.c``): where a whole head is in the chunk, in a strict grammar, at
a place where the outcome is provably llhttp's, it is parsed in one C call instead of llhttp's callbacks (a
header-block splitter in Python was measured no faster than llhttp: ~1.6 µs before validation, 2.2-2.6 µs with
the checks, for a 221-byte request that llhttp and its callbacks parse in ~1.6 µs). Bodies are skipped by
length, never copied into Python.  Timing: ``python -m hdrlog.http1_fast``.  A chunk in the common state (one fast
head whose body reaches the chunk's end, or the rest of such a body) is taken whole by the C feed (``_h1feed``,
``http1_fast.c_feeder``) before any of this runs; it declines anything else having changed nothing (``cfeed``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import httptools
from httptools import HttpParserError, HttpParserUpgrade

from .http1_body import BodyCapture, is_final
from .http1_fast import FastHeads, c_feeder, parse_head
from .http1_scan import DETECT_LIMIT, RESYNC_KEEP, Resync, header_end, segments
from .model import HttpMessage

__all__ = ["Http1Parser", "DETECT_LIMIT", "MAX_HEADER_BYTES"]

MAX_HEADER_BYTES = 64 * 1024  # partial header block kept across feeds before it is cut as truncated

_PROTO = {"1.1": "http/1.1", "1.0": "http/1.0"}
_METHODS: dict[bytes, str] = {}
_NO_HDRS: tuple = ()  # _hdrs between messages: the header list is not kept once in a message
_NO_OUT: tuple = ()  # _out between calls (appending to it outside feed/gap/close/release_held is a bug)


class _Stop(Exception):
    """Raised from on_headers_complete to make llhttp stop at the end of a header block."""


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


def _dec(b: bytes) -> str:
    return b.decode("utf-8", "backslashreplace")


class Http1Parser(BodyCapture, Resync, FastHeads):
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
    bool`` and ``finish(complete: bool)``.  The message is then held back, its body framed (by llhttp
    for Content-Length, here for chunked or until close: see ``http1_body``) and handed to ``sink.add``
    until it ends (``finish``) or ``add`` returns False, and only then returned.

    Attributes: ``state`` ("detect" | "http" | "resync" | "not-http" | "tunnel" | "body"), ``kind``
    ("request" | "response" | None), ``errors`` (parse errors and oversize header blocks, each
    followed by a resync) and ``gaps`` (calls to ``gap`` with nbytes > 0).
    """

    __slots__ = (
        "state", "kind", "errors", "gaps",
        "_response_to", "_rt_skip", "_p", "_buf", "_bpos", "_tentative", "_skip_body",
        "_out", "_ts", "_finals", "_in_msg", "_in_hdrs", "_began", "_url", "_status", "_hdrs",
        "_hdr_bytes", "_tail", "_method", "_stop", "_last",
        "_body", "_sink", "_held", "_bmode", "_brem", "_cstate", "_cline", "_side", "_stale", "_fskip",
    )  # fmt: skip

    #: re-raise internal errors instead of counting them (tests set this; never in production)
    debug = False
    #: use the C fast path where it applies (http1_fast; tests compare with and without it)
    fast = parse_head is not None
    #: with ``fast``, let the C feed (_h1feed) take a whole chunk in the common case (tests compare with and without)
    cfeed = True

    def __init__(self, *, response_to: Callable[..., str | None] = lambda: None, body: Callable | None = None,
                 takes_skip: bool | None = None):
        self.state = "detect"
        self.kind: str | None = None
        self.errors = 0
        self.gaps = 0
        self._response_to = response_to
        # whether response_to takes ``skip``: given by the caller (conntrack: Pairer.responder does), else
        # found with inspect (~20 µs and a few KiB per parser)
        self._rt_skip = _wants_skip(response_to) if takes_skip is None else takes_skip
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
        self._hdrs: list[tuple[str, str]] | tuple = _NO_HDRS  # decoded as llhttp reports them
        self._hdr_bytes = 0
        self._tail = b""  # last bytes of a header block in progress (terminator split across feeds)
        self._method: str | None = None  # method of the request the current response answers
        self._stop: str | None = None  # "head" | "tunnel" when _Stop was raised
        self._last: HttpMessage | None = None  # the message completed last, during one feed() only
        self._body = body  # opt-in body hook (see class doc)
        self._sink = None  # body sink of the held message
        self._held: HttpMessage | None = None  # message waiting for the end of its body
        self._bmode: str | None = None  # "length" | "chunked" | "close" while state == "body"
        self._brem = 0  # body (length) or chunk (chunked) bytes left
        self._cstate = "size"  # chunked: "size" | "data" | "crlf" | "trailer"
        self._cline = b""  # chunked: partial size/trailer line
        self._stale = False  # llhttp's status code is the previous message's (see _truncate)
        self._side = 0  # Content-Length body sliced beside llhttp (http1_body.BodyCapture._side_*): 0 = none
        self._fskip = 0  # body bytes of a message the fast path took, still to come (http1_fast)

    # ------------------------------------------------------------------ public API

    def feed(self, data: bytes, ts_ns: int) -> list[HttpMessage]:
        """Parse a plaintext chunk; return the header blocks that completed in it."""
        if _CFEED is not None:  # the C feed (_h1feed) takes the common case whole, or declines having done nothing
            out = _CFEED(self, data, ts_ns)
            if out is not None:
                return out
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
            self._loop(nxt, len(data))
        except Exception:  # never raise to the tracker; a bug here must not kill the capture
            if self.debug:
                raise
            self._fail()
        # the caller owns the messages now: an idle connection must not keep them (and their headers) alive
        self._out = _NO_OUT
        self._last = None
        return out

    def _loop(self, nxt, n: int) -> None:
        """feed()'s states after the first step (n: the chunk's length): nxt is (data, pos) to go on in the current
        state, or None."""
        if nxt is not None:
            # every step makes progress; this only guards against a bug
            budget = 8 + 2 * (n + RESYNC_KEEP + DETECT_LIMIT)
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

    def trim(self) -> None:
        """Between messages, free the llhttp parser (~400 bytes; made again, ~0.3 µs, by the next message):
        the tracker calls this for connections idle a while, which is what most tracked connections are."""
        if self.state == "http" and not self._in_msg and not self._fskip:
            self._p = None

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
                self._fskip = 0  # as llhttp in the body: the side capture's gap rule, else a resync
            if st == "http" and self._side:
                self._side_gap(nbytes)
            elif st == "http":
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
        self._out = _NO_OUT
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
        self._side = self._fskip = 0
        self._buf = b""
        self._hdrs = _NO_HDRS
        self._out = _NO_OUT
        return out

    # ------------------------------------------------------------------ llhttp callbacks

    def on_message_begin(self) -> None:
        if self._side:  # a side-captured body is not handed over yet: stop here (see _failed)
            if self._side < 0:  # _new_parser primes a parser: not a message
                return
            self._stop = "side"
            raise _Stop
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
        self._stale = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_hdrs:  # llhttp reports chunked trailers through the same callback: skip them
            try:  # decoded here (strict UTF-8 is the fast path, escaped only when needed), not in a second pass
                self._hdrs.append((name.decode(), value.decode()))
            except UnicodeDecodeError:
                self._hdrs.append((_dec(name), _dec(value)))

    def on_headers_complete(self) -> None:
        if self._side < 0:  # priming (_new_parser)
            return
        self._in_hdrs = False
        msg = self._message(False)
        if self._body is not None and self._want_body(msg):
            if self._bmode == "side":  # llhttp frames the body; _run slices it for the sink: no stop
                self._side = 1 if self._began else 2
                return
            self._stop = "body"
            raise _Stop
        self._out.append(msg)
        if msg.kind == "response":
            st = msg.status or 0
            if is_final(st):
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
        self._stale = True

    # ------------------------------------------------------------------ internals

    def _message(self, truncated: bool) -> HttpMessage:
        p = self._p
        headers = self._hdrs
        self._hdrs = _NO_HDRS
        authority = None
        if self.kind == "request":  # only a request's Host is written (records.http_record): no scan of responses
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
            self._url = b""
            # positional: keyword arguments to the dataclass cost more
            msg = HttpMessage("request", proto, self._ts, headers, method, path, authority, None, None, truncated)
        else:
            status = p.get_status_code()
            if not 100 <= status <= 999:  # status line not complete yet (truncated)
                status = None
            reason = _dec(self._status) if status is not None else None
            self._status = b""
            msg = HttpMessage("response", proto, self._ts, headers, None, None, authority,
                              status, reason, truncated)  # fmt: skip
        self._last = msg
        return msg

    def _new_parser(self, prime: bytes | None = None):
        """A new llhttp parser; ``prime``: it replaces one that would have parsed a fast message (http1_fast.FastHeads:
        _p is then a bytes object), to be fed first (a request of that message's version) without callbacks."""
        cls = httptools.HttpRequestParser if self.kind == "request" else httptools.HttpResponseParser
        p = cls(self)
        # Observer, not server: show NUL/control bytes in header values instead of dropping the
        # message, and keep parsing after "Connection: close" / HTTP/1.0 (we see what was sent).
        p.set_dangerous_leniencies(lenient_headers=True, lenient_keep_alive=True)
        self._in_msg = self._in_hdrs = False
        self._stop = None
        if prime:
            # llhttp keeps the version of the request it parsed last until it parses the next one's (a request cut
            # inside "HTTP/1.1" reports it)
            side, self._side = self._side, -1
            try:
                p.feed_data(prime)
            finally:
                self._side = side
            self._url = b""
        # and the status code of the response it parsed last until a new one is parsed (see _truncate)
        self._stale = prime is not None
        return p

    def _run(self, data: bytes, pos: int):
        """Parse ``data[pos:]`` in state "http"; return (data, pos) to continue elsewhere, or None."""
        n = len(data)
        if pos >= n:
            return None
        if self._fskip:  # the body of a message the fast path took goes on
            r = self._fast_body(data, pos)
            if r is None:
                return None
            a, q, cands = r
            return self._segments(data, a, q, cands, 0, False)
        if self._side:  # the held message's body goes on in this chunk
            e = self._side_take(data, pos)
            # ending here, it is a segment of its own: segments() takes its start for a message start
            if e == n:  # body bytes only: no message can start in them
                cands = ()
            elif e > pos:
                cands = [e, *segments(data, e, self.kind)]
            else:
                cands = segments(data, pos, self.kind)
        else:
            r = -1
            if self.fast and not self._in_msg:  # most chunks hold one message: try before finding the segments
                r = self._fast(data, pos, -1)
                if r.__class__ is not int:
                    return r
            cands = segments(data, pos, self.kind)
            if r >= 0:  # a message ended at r
                return self._segments(data, pos, r, cands, 0, True)
            return self._segments(data, pos, pos, cands, 0, False, pos if self.fast else -1)
        return self._segments(data, pos, pos, cands, 0, False)

    def _segments(self, data: bytes, a: int, q: int, cands, ci: int, began: bool, tried: int = -1):
        """Feed llhttp data[q:] segment by segment: [a, cands[ci]), [cands[ci], cands[ci + 1]) ... the last one
        ending at len(data). q > a: llhttp goes on inside the segment holding q (after a message the fast path
        took or skipped), which is where a failure is located; ``began``: a message began in data[a:q]. At a
        segment start with llhttp between messages the fast path is tried first (not again at ``tried``)."""
        n = len(data)
        nc = len(cands)
        mv = None
        fast = self.fast
        while q < n:
            while ci < nc and cands[ci] <= q:  # the segment holding q
                a = cands[ci]
                ci += 1
                began = False
            end = cands[ci] if ci < nc else n
            if q == a and fast and q != tried and not self._in_msg and not self._side:
                r = self._fast(data, q, end)
                if r.__class__ is not int:
                    return r
                if r >= 0:  # a message ended at r: llhttp would go on from there, in the segment holding r
                    q = r
                    began = True
                    continue
            p = self._p
            if p is None or p.__class__ is bytes:  # bytes: after a fast message (_new_parser)
                p = self._p = self._new_parser(p)
            self._began = began
            hdr_before = self._in_hdrs
            try:
                if q == 0 and end == n:  # one segment: the common case
                    p.feed_data(data)
                else:
                    if mv is None:
                        mv = memoryview(data)
                    p.feed_data(mv[q:end])
            except HttpParserUpgrade as e:
                return self._upgraded(data, q + (e.args[0] if e.args else end - q))
            except HttpParserError as e:
                return self._failed(data, a, end, hdr_before, e)
            if self._side:
                self._side_run(data, a, end, hdr_before)
            if self._in_hdrs:
                r = self._partial_headers(data, a, end, hdr_before)
                if r is not None:
                    return r
            a = q = end
            ci += 1
            began = False
        return None

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
            if stop == "side":
                return self._side_stopped(data, pos, end, hdr_before)
            # HEAD response (the message ends with its header block) or a body to capture
            e = self._block_end(data, pos, end, self._began, hdr_before)
            if stop == "body":
                self.state = "body"
            return data, e
        self.errors += 1
        if self._in_hdrs:
            self._truncate()
        resume = pos + 1 if self._began else pos
        self._to_resync()
        return data, resume

    def _block_end(self, data: bytes, pos: int, end: int, began: bool, hdr_before: bool) -> int:
        """Where the header block that ended in data[pos:end] ends (the body starts): ``began``, it began in
        this segment; else its terminator may have started in the tail of the previous one."""
        if began:
            e = header_end(data, pos, end)
            return e if e >= 0 else end
        tail = self._tail if hdr_before else b""
        buf = tail + bytes(data[pos:end])
        e = header_end(buf, 0, len(buf))
        return max(pos, pos + e - len(tail)) if e >= 0 else end

    def _upgraded(self, data: bytes, off: int):
        """llhttp paused after a message with upgrade semantics (101, CONNECT, Upgrade:)."""
        if self._held is not None:  # not expected: side capture is never chosen for an upgrade
            self._side = 0
            self._release(False)
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
        if not known and self.kind == "response" and not self._stale:
            # a reused llhttp parser reports the previous response's status code until it has parsed a new one:
            # garbage after a keep-alive response made a phantom truncated copy of it
            known = 100 <= p.get_status_code() <= 999
        if known:  # else nothing is known yet, e.g. garbage llhttp took for a message start
            msg = self._message(True)
            self._out.append(msg)
            if msg.kind == "response" and is_final(msg.status):
                self._finals += 1


CFEED_ERROR: str | None = None
try:
    _FEEDER = c_feeder(Http1Parser, _NO_OUT)
except (ImportError, AttributeError, TypeError) as _exc:  # not built, or the types are not as _h1feed expects
    _FEEDER, CFEED_ERROR = None, str(_exc)
_CFEED = _FEEDER.feed if _FEEDER is not None else None
