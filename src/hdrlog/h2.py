"""Sans-IO HTTP/2 for an observer: frames per direction, HPACK per direction, pairing by stream id.

One :class:`H2Conn` holds both directions of one connection ("in" = what the traced process read,
"out" = what it wrote), the streams they share and one :class:`HpackDecoder` per direction.  Its
:meth:`H2Conn.parser` gives a per-direction object with the same ``feed(data, ts_ns)`` / ``gap(n,
ts_ns)`` / ``close(ts_ns)`` interface as :class:`~hdrlog.http1.Http1Parser`; messages come back as
:class:`~hdrlog.model.HttpMessage` with ``proto="h2"``, ``stream`` set, and responses already paired
(``request``/``latency_ms`` set here, by stream id; the HTTP/1 FIFO pairer must not touch them).

One message per header block (records, trailers, pseudo-headers: see :mod:`hdrlog.h2messages`).

Modules: :mod:`hdrlog.h2frames` (wire constants, :func:`sniff`), :mod:`hdrlog.h2hpack` (HPACK, and how it
copes with attaching to an open connection), :mod:`hdrlog.h2parser` (one direction's framing),
:mod:`hdrlog.h2messages` (stream state, message building and pairing); this module holds the
connection and re-exports the public names.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Callable

from .h2frames import DATA, END_HEADERS, END_STREAM, HEADERS, PREFACE, sniff
from .h2hpack import UNKNOWN, HpackDecoder, huffman_decode
from .h2messages import Stream
from .h2parser import H2Parser

__all__ = ["H2Conn", "H2Parser", "HpackDecoder", "PREFACE", "sniff", "UNKNOWN"]

MAX_STREAMS = 1024  # streams remembered per connection for pairing (oldest forgotten first)


class H2Conn:
    """Both directions of one HTTP/2 connection.

    ``exact``: the connection is seen from its start (client preface), so HPACK state is complete.
    ``body_hook(msg)``: optional; returns a body sink (``add(bytes) -> bool``, ``finish(complete)``)
    for a message whose body should be captured (MCP), which then is returned only when its body
    ended (or the sink declined more); None for the common case.
    """

    def __init__(self, *, exact: bool = False, body_hook: Callable | None = None,
                 max_streams: int = MAX_STREAMS):
        self.exact = exact
        self.body_hook = body_hook
        self.max_streams = max_streams
        self.streams: OrderedDict[int, Stream] = OrderedDict()
        self.req_dir: str | None = None  # direction that carries requests (client -> server)
        self.parsers = {d: H2Parser(self, d) for d in ("in", "out")}
        self.unpaired = 0
        self.dropped_blocks = 0  # header blocks whose kind could not be told (nothing emitted)
        self.held = 0  # messages held for their bodies

    @property
    def role(self) -> str | None:
        r = self.req_dir
        return None if r is None else ("server" if r == "in" else "client")

    def parser(self, direction: str) -> "H2Parser":
        return self.parsers[direction]

    def stream(self, sid: int, create: bool = True) -> Stream | None:
        s = self.streams.get(sid)
        if s is None and create:
            if len(self.streams) >= self.max_streams:
                _, old = self.streams.popitem(last=False)
                self.unpaired += old.req is not None and old.resp is None
            s = self.streams[sid] = Stream(sid)
        return s

    def learn_client(self, direction: str) -> None:
        if self.req_dir is None:
            self.req_dir = direction

def _bench(n: int = 5000) -> None:  # pragma: no cover - manual timing check
    """Server side of n streams: request HEADERS in, response HEADERS out (Huffman, dynamic table as
    the hpack package encodes it), then a 16 KiB DATA frame skipped."""
    import time

    from hpack import Encoder

    huffman_decode(b"")  # builds the Huffman table once (not part of the timing)
    enc, renc = Encoder(), Encoder()
    reqs, resps = [], []
    for i in range(n):
        block = enc.encode([
            (":method", "GET"), (":scheme", "https"), (":authority", "api.example.com"),
            (":path", f"/api/v1/items?id={i}&sort=desc"), ("user-agent", "curl/8.5.0"),
            ("accept", "application/json"), ("authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.abc.def"),
            ("x-request-id", f"7f3c9a2e-1b4d-4c8e-9f0a-{i:012d}"), ("accept-encoding", "gzip, deflate, br")])
        reqs.append(struct.pack(">BHBBL", 0, len(block), HEADERS, END_HEADERS | END_STREAM, 2 * i + 1) + block)
        block = renc.encode([(":status", "200"), ("content-type", "application/json"), ("server", "nginx"),
                             ("date", "Sat, 22 Nov 2025 00:00:00 GMT"), ("x-request-id", f"7f3c9a2e-{i:012d}")])
        resps.append(struct.pack(">BHBBL", 0, len(block), HEADERS, END_HEADERS | END_STREAM, 2 * i + 1) + block)
    best = 1e9
    for _ in range(5):
        conn = H2Conn(exact=True)
        p, q = conn.parser("in"), conn.parser("out")
        p.feed(PREFACE, 0)
        t = time.perf_counter()
        for i in range(n):
            p.feed(reqs[i], i)
            q.feed(resps[i], i)
        best = min(best, time.perf_counter() - t)
        assert not conn.streams
    print(f"h2 request ({len(reqs[-1])} bytes) + response ({len(resps[-1])} bytes) HEADERS: "
          f"{best / n / 2 * 1e6:.2f} us/message")
    big = struct.pack(">BHBBL", 0, 16384, DATA, 0, 1) + b"x" * 16384
    t = time.perf_counter()
    for i in range(n):
        p.feed(big, i)
    dt = time.perf_counter() - t
    print(f"16 KiB DATA frame skipped: {dt / n * 1e6:.2f} us/frame")


if __name__ == "__main__":  # pragma: no cover
    _bench()
