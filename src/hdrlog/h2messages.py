"""HTTP/2 stream state and message building: header blocks of a stream become paired HttpMessages.

Records.  One message per header block: the request (``:method``) and the response (``:status``, 1xx
interim responses included) of each stream; a header block that ends a stream after its message
(trailers) is its own message of the same kind with ``extra["trailers"] = True``, the stream's
method/path (requests) or status (responses) repeated.  Pseudo-headers with their own field
(``:method``, ``:path``, ``:authority``, ``:status``) are not repeated in ``headers``; the others
(``:scheme``, ``:protocol``) stay there, in wire order.  A PUSH_PROMISE is decoded (HPACK state) and
pairs the pushed response, but is not a message of its own.

Bodies are captured only for messages an opt-in ``body_hook`` asks for (MCP); such a message is held
until its body ends (END_STREAM), is cut, or the sink declines more.
"""

from __future__ import annotations

from .h2frames import OTHER
from .h2hpack import UNKNOWN
from .model import HttpMessage

__all__ = ["H2Messages", "Stream", "MAX_HELD"]

MAX_HELD = 32  # messages per connection held for their bodies (MCP); beyond, they go out without


class Stream:
    __slots__ = ("id", "req", "resp", "msg", "ended", "sink", "held")

    def __init__(self, sid: int):
        self.id = sid
        self.req: HttpMessage | None = None
        self.resp: HttpMessage | None = None  # final (or last) response
        self.msg: dict[str, HttpMessage] = {}  # last message per direction (for trailers)
        self.ended = 0  # directions that sent END_STREAM: 1 in, 2 out
        self.sink: dict | None = None  # direction -> body sink (opt-in body capture)
        self.held: dict[str, HttpMessage] | None = None  # direction -> message waiting for its body



class H2Messages:
    """Message building for :class:`~hdrlog.h2parser.H2Parser` (a mixin: it uses the parser's ``conn``,
    ``dir``, ``_ts`` and ``_out``)."""

    __slots__ = ()

    def _promise(self, sid: int, fields) -> None:
        method = path = authority = None
        for n, v in fields:
            if n == ":method":
                method = v
            elif n == ":path":
                path = v
            elif n == ":authority":
                authority = v
        s = self.conn.stream(sid)
        s.req = HttpMessage("request", "h2", self._ts, [], method, path, authority, stream=sid)

    def _message(self, sid: int, fields, incomplete: bool, truncated: bool, end_stream: bool) -> None:
        method = path = authority = status = None
        keep = None
        i = 0
        nf = len(fields)
        while i < nf:  # pseudo-headers come first (RFC 9113 8.3); the rest is copied as a slice
            nv = fields[i]
            n = nv[0]
            if n[:1] != ":" and n != UNKNOWN:
                break
            i += 1
            if n == UNKNOWN:  # may have been a pseudo-header: keep looking (the placeholder is kept)
                if keep is None:
                    keep = [nv]
                else:
                    keep.append(nv)
            elif n == ":method":
                method = nv[1]
            elif n == ":path":
                path = nv[1]
            elif n == ":authority":
                authority = nv[1]
            elif n == ":status" and len(nv[1]) == 3 and nv[1].isdigit():
                status = int(nv[1])
            elif keep is None:
                keep = [nv]
            else:
                keep.append(nv)
        if i < nf:  # (a pseudo-header after a regular one is malformed: it stays in headers)
            rest = fields[i:] if i else fields
            headers = keep + rest if keep else rest
        else:
            headers = keep or []
        conn = self.conn
        d = self.dir
        s = conn.stream(sid)
        prev = s.msg.get(d)
        trailers = False
        if method is not None:
            kind = "request"
            conn.learn_client(d)
        elif status is not None:
            kind = "response"
            conn.learn_client(OTHER[d])
        elif prev is not None:
            kind = prev.kind
            trailers = True
        elif conn.req_dir is not None:
            kind = "request" if d == conn.req_dir else "response"
        else:
            conn.dropped_blocks += 1
            return
        if authority is None and kind == "request":
            for n, v in headers:
                if n == "host":
                    authority = v
                    break
        ts = self._ts
        if kind == "request":
            if trailers:
                method, path, authority = prev.method, prev.path, prev.authority
            msg = HttpMessage("request", "h2", ts, headers, method, path, authority, truncated=truncated,
                              stream=sid)  # fmt: skip
            if not trailers:
                s.req = msg
        else:
            if trailers and prev is not None:
                status = prev.status
            msg = HttpMessage("response", "h2", ts, headers, None, None, None, status, None, truncated,
                              stream=sid)  # fmt: skip
            req = s.req
            if req is not None:
                msg.request = req
                msg.latency_ms = round(max(0, ts - req.ts_ns) / 1e6, 3)
            else:
                conn.unpaired += 1
            if not trailers:
                s.resp = msg
        if incomplete:
            msg.extra["hpack_incomplete"] = True
        if trailers:
            msg.extra["trailers"] = True
        s.msg[d] = msg
        hook = conn.body_hook
        sink = hook(msg) if hook is not None and not trailers else None
        if sink is not None and not end_stream and conn.held >= MAX_HELD:
            sink = None  # bound memory: this one goes out without its body's MCP fields
        if sink is not None:
            if end_stream:
                sink.finish(True)
            else:
                if s.sink is None:
                    s.sink, s.held = {}, {}
                s.sink[d] = sink
                s.held[d] = msg
                conn.held += 1
                if end_stream:
                    self._end_stream(sid)
                return
        self._out.append(msg)
        if end_stream:
            self._end_stream(sid)

    def _release(self, s: Stream, complete: bool | None, direction: str | None = None) -> None:
        """Return a message held for its body: complete (END_STREAM), cut (False) or declined (None)."""
        d = direction or self.dir
        if not s.held:
            return
        msg = s.held.pop(d, None)
        sink = s.sink.pop(d, None)
        if msg is not None:
            self.conn.held -= 1
        if sink is not None and complete is not None:
            sink.finish(complete)
        if msg is not None:
            self._out.append(msg)

    def _end_stream(self, sid: int) -> None:
        s = self.conn.streams.get(sid)
        if s is None:
            return
        d = self.dir
        if s.held and d in s.held:
            self._release(s, complete=True)
        s.ended |= 1 if d == "in" else 2
        if s.ended == 3 and not s.held:
            del self.conn.streams[sid]
