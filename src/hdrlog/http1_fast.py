"""The C fast path of :class:`hdrlog.http1.Http1Parser`: a whole message head parsed in one call (``_h1fast``).

llhttp through httptools calls back into Python for the URL, the status and every header; ``_h1fast.parse_head``
returns the head's facts in one call, for heads in a strict grammar that llhttp parses the same way (see
``_h1fast.c``), and None for anything else, which llhttp then parses as before. The parser uses it only where the
outcome is provably what llhttp would give, messages and parser state alike (tests/test_h1fast.py compares the two
on random and hostile streams):

* at the start of one of llhttp's segments (``http1_scan.segments``: errors are located per segment, so a message
  the fast path takes must not straddle one) with llhttp between messages, the head complete in the chunk;
* bodies framed by Content-Length (or none, or a response until the connection closes), skipped by length here
  (``_fskip``) or handed to the body hook's sink (``http1_body``'s side capture) exactly as beside llhttp;
  Transfer-Encoding, Upgrade, CONNECT, 1xx and everything else stay with llhttp;
* what llhttp would do after the message is replayed: the stops after HEAD and CONNECT responses and after a body
  the hook holds, the segment (and thus the error position) a later failure would be reported in, and what a
  reused llhttp parser remembers of the previous message: its version, which a request cut inside its own
  version reports, and its status code (``AFTER``: ``_p`` becomes the bytes a new llhttp parser is primed with).

Without the compiled extension (``parse_head`` is None, ``IMPORT_ERROR`` says why) hdrlog runs llhttp alone and
``hdrlog doctor`` says so.
"""

from __future__ import annotations

from .http1_scan import segments
from .model import HttpMessage

__all__ = ["parse_head", "IMPORT_ERROR", "FastHeads", "c_feeder"]

try:
    from ._h1fast import parse_head
    IMPORT_ERROR: str | None = None
except ImportError as exc:  # not built (no compiler at install) or built for another Python
    parse_head = None
    IMPORT_ERROR = str(exc)

MAX_HEAD = 64 * 1024  # http1.MAX_HEADER_BYTES: longer heads are left to llhttp (and its truncation rule)
UNTIL_CLOSE = 1 << 62  # _fskip of a response body that ends with the connection
# Http1Parser._p after a fast request of HTTP/1.0, of HTTP/1.1, after a fast response: what a new llhttp parser is
# fed first, without callbacks (Http1Parser._new_parser), to be in the state of one that parsed the fast message
AFTER = (b"GET / HTTP/1.0\r\n\r\n", b"GET / HTTP/1.1\r\n\r\n", b"")


class FastHeads:
    """Mixin of Http1Parser (state in its slots: ``_fskip``, the body bytes of a fast message still to skip, and
    those of BodyCapture and Resync)."""

    __slots__ = ()

    def _fast(self, data: bytes, q: int, end: int):
        """At q, the start of an llhttp segment ending at ``end`` (-1: not known yet, q is where _run started), llhttp
        between messages: take the message there if the C parser does. Returns -1 (not taken: llhttp goes on at q),
        the offset inside data where the message ended, or what ``_run`` returns (None: nothing more here;
        (data, pos): go on in another state or anew)."""
        req = self.kind == "request"
        r = parse_head(data, q, req, MAX_HEAD)
        if r is None:
            return -1
        h, x, y, headers, cl, host, minor = r
        if end < 0:
            # no segment boundary can lie inside the head unless (segments()) a response's head holds "HTTP/1." or
            # a request's head holds " HTTP/1." besides its request line's own
            if req:
                inside = data.find(b" HTTP/1.", data.find(b" HTTP/1.", q, h) + 1, h)
            else:
                inside = data.find(b"HTTP/1.", q + 1, h)
            if inside >= 0:
                return -1
        elif h > end:  # a segment boundary inside the head: llhttp would see it in two parts
            return -1
        if req:
            msg = HttpMessage("request", "http/1.1" if minor else "http/1.0", self._ts, headers, x, y, host, None,
                              None, False)  # fmt: skip
            method = None
            after = AFTER[minor]
        else:
            try:  # as on_message_begin
                rt = self._response_to
                method = rt(self._finals) if self._rt_skip else rt()
            except Exception:
                method = None
            self._method = method
            msg = HttpMessage("response", "http/1.1" if minor else "http/1.0", self._ts, headers, None, None, None,
                              x, y, False)  # fmt: skip
            after = AFTER[2]
        self._last = msg
        n = len(data)
        # as on_headers_complete
        if self._body is not None and self._want_body(msg, cl):
            if self._bmode != "side":  # "close": llhttp would stop at the end of the head, state "body" goes on
                self._p = None
                self.state = "body"
                return data, h
            self._side = 3  # as _side_run: hand the body over from the end of the head
            e = self._side_take(data, h)
            self._p = after
            if self._side:  # _brem more bytes to come
                self._fskip = self._brem
                return None
            if e >= n:
                return None
            if end < 0:  # the first segment boundary after q (after the head, see above)
                cands = segments(data, q, self.kind)
                end = cands[0] if cands else n
            if e < end and data[e:end].strip(b"\r\n"):
                # llhttp would begin the next message inside this segment before the body was handed over:
                # _side_stopped, a new llhttp parser from e
                self._p = None
                return data, e
            return e
        self._out.append(msg)
        if req:
            blen = cl if cl > 0 else 0
        else:
            self._finals += 1  # status >= 200: final
            if method == "HEAD":  # the stop after a HEAD response's head
                self._p = None
                return data, h
            if method == "CONNECT" and x < 300:
                self._p = None
                self.state = "tunnel"
                self._tentative = False
                return None
            if x == 204 or x == 304:  # llhttp reads no body whatever the Content-Length
                blen = 0
            else:
                blen = cl if cl >= 0 else UNTIL_CLOSE
        self._p = after
        e = h + blen
        if e >= n:
            self._fskip = e - n
            return None
        return e

    def _resume(self, out: list, data: bytes, ts_ns: int, finals: int, nxt) -> list[HttpMessage]:
        """The rest of a feed() call the C feed began (c_feeder: a HEAD response's head with bytes after it): its
        messages so far, and where Http1Parser's loop goes on."""
        self._out = out
        self._ts = ts_ns
        self._finals = finals
        try:
            self._loop(nxt, len(data))
        except Exception:
            if self.debug:
                raise
            self._fail()
        self._out = ()  # http1._NO_OUT
        self._last = None
        return out

    def _fast_body(self, data: bytes, pos: int):
        """``_fskip`` body bytes of a fast message at data[pos:] (llhttp never saw the message). Returns None (the
        chunk ends in the body) or where llhttp would go on after it: (where its segments start, the offset, the
        segment starts after that)."""
        n = len(data)
        if self._side:  # side capture: as _run's start with llhttp framing the body
            e = self._side_take(data, pos)
            if self._side:
                self._fskip = self._brem
                return None
            self._fskip = 0
            if e >= n:
                return None
            return e, e, segments(data, e, self.kind)
        k = self._fskip
        if k >= n - pos:
            self._fskip = k - (n - pos)
            return None
        self._fskip = 0
        return pos, pos + k, segments(data, pos, self.kind)


def c_feeder(parser_type, no_out):
    """The C feed (``_h1feed.Feeder``) for Http1Parser (``no_out``: its ``_out`` between calls): ``.feed(parser,
    data, ts_ns)`` does what Http1Parser.feed does with this fast path for a chunk in the common state (a fast head
    whose body by Content-Length reaches the chunk's end, or the rest of such a body) in one C call, messages built
    and the MCP hook decided in C, and returns None having changed nothing for anything else. Raises ImportError
    when the extension is not built."""
    from . import _h1fast, _h1feed
    from .mcp import SNIFF_BYTES, BodySink, Mcp
    from .pairing import Pairer  # its responders (conntrack's response_to) are read in C, not called

    return _h1feed.Feeder(_h1fast.api, parser_type, HttpMessage, Mcp, BodySink, AFTER, no_out, MAX_HEAD, SNIFF_BYTES,
                          Pairer)


def _bench(reps: int = 20000, rounds: int = 7) -> None:  # pragma: no cover - manual timing check
    """The parser alone on the keep-alive fixture's exchange (request; response head; its JSON body, as three
    chunks), with and without the MCP body hook, llhttp alone vs the fast path: medians of interleaved rounds."""
    import statistics
    import time
    from pathlib import Path

    from .http1 import Http1Parser
    from .mcp import Mcp

    req = (b"GET /api/users?id=1&fields=name HTTP/1.1\r\nHost: 127.0.0.1:41225\r\nAccept-Encoding: identity\r\n"
           b"Accept: application/json\r\nAuthorization: Bearer demo-token-9f8e7d6c5b4a\r\nX-Request-Id: fx-0\r\n"
           b"User-Agent: hdrlog-demo-client/1\r\n\r\n")
    head = (b"HTTP/1.1 200 OK\r\nServer: hdrlog-demo-gateway/1 Python/3.11.2\r\nDate: Sun, 22 Nov 2026 01:10:36 GMT\r\n"
            b"Content-Type: application/json\r\nContent-Length: 37\r\nX-Request-Id: fx-0\r\nCache-Control: no-store\r\n"
            b"Set-Cookie: session=s3cr3t-session; HttpOnly\r\n\r\n")
    body = b'{"users": [{"id": 1, "name": "ada"}]}'
    fixture = Path(__file__).resolve().parents[2] / "fixtures" / "python_ssl_server_keepalive.events.jsonl"
    if fixture.is_file():  # the same bytes as bench/consumer_micro.py replays, when run from the source tree
        from . import events
        from .replay import read_events

        _, raws = read_events(str(fixture))
        raws = list(raws)
        req, head, body = (events.decode(memoryview(raws[i])).data for i in (1, 2, 3))

    def run(hook: bool) -> float:
        q = Http1Parser(body=Mcp() if hook else None)
        r = Http1Parser(response_to=lambda skip=0: "GET", body=Mcp() if hook else None, takes_skip=True)
        got = 0
        t = time.perf_counter()
        for i in range(reps):
            got += len(q.feed(req, i))
            got += len(r.feed(head, i))
            got += len(r.feed(body, i))
        dt = time.perf_counter() - t
        assert got == 2 * reps, got
        return dt / (2 * reps) * 1e6

    res: dict[tuple[bool, bool], list[float]] = {}
    for k in range(rounds):
        for hook in (False, True):
            for fast in ((True, False) if k % 2 else (False, True)):
                Http1Parser.fast = fast
                res.setdefault((hook, fast), []).append(run(hook))
    Http1Parser.fast = parse_head is not None
    for hook in (False, True):
        slow, fast = statistics.median(res[(hook, False)]), statistics.median(res[(hook, True)])
        diffs = [a - b for a, b in zip(res[(hook, True)], res[(hook, False)])]
        print(f"{'with' if hook else 'without'} the MCP hook: llhttp {slow:.2f} us/msg, fast path {fast:.2f} us/msg "
              f"(paired difference median {statistics.median(diffs):+.2f}, {rounds} rounds of {reps} exchanges)")


if __name__ == "__main__":  # pragma: no cover
    _bench()
