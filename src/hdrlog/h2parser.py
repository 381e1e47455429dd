"""One direction of an HTTP/2 connection: frame sync, header-block assembly, DATA skipping.

Frames other than DATA are buffered (bounded) until complete; DATA payloads are passed over without
copying.  Completed header blocks go through the direction's HPACK decoder and then to message
building (:mod:`hdrlog.h2messages`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .h2frames import (
    ACK, CONTINUATION, DATA, END_HEADERS, END_STREAM, HEADERS, OTHER, PADDED, PREFACE, PRIO, PUSH_PROMISE,
    RST_STREAM, SETTINGS, SNIFF_MAX_LEN, FRAME_HDR, frame_ok, sniff,
)  # fmt: skip
from .h2hpack import HpackDecoder
from .h2messages import H2Messages
from .model import HttpMessage

if TYPE_CHECKING:
    from .h2 import H2Conn

__all__ = ["H2Parser"]

MAX_BLOCK = 256 * 1024  # header block (HEADERS + CONTINUATIONs) kept before it is cut as truncated
MAX_FRAME_BUFFER = 1 << 20  # a non-DATA frame longer than this means we lost sync


class H2Parser(H2Messages):
    """One direction of an :class:`H2Conn`: ``feed``/``gap``/``close`` like Http1Parser."""

    __slots__ = (
        "conn", "dir", "hpack", "state", "kind", "errors", "gaps", "frames", "_buf", "_skip", "_dsid",
        "_dpad_hdr", "_dpad", "_dend", "_block", "_bsid", "_bflags", "_bpush", "_bsize", "_bcut",
        "_out", "_ts", "_first", "_settings_first",
    )  # fmt: skip

    debug = False

    def __init__(self, conn: H2Conn, direction: str):
        self.conn = conn
        self.dir = direction
        self.hpack = HpackDecoder(exact=conn.exact)
        self.state = "preface" if conn.exact else "sync"  # "preface" | "frames" | "sync"
        self.kind = "h2"
        self.errors = 0
        self.gaps = 0
        self.frames = 0
        self._buf = b""  # partial frame (header or non-DATA payload) carried to the next feed
        self._skip = 0  # DATA payload bytes still to pass over
        self._dsid = 0
        self._dpad_hdr = False  # the pad-length byte of the DATA frame is still to come
        self._dpad = 0  # trailing padding bytes of the current DATA frame
        self._dend = False  # the current DATA frame ends its stream
        self._block: list[bytes] = []  # header block fragments being assembled
        self._bsid = 0
        self._bflags = 0
        self._bpush = 0  # promised stream id when the block is a PUSH_PROMISE
        self._bsize = 0
        self._bcut = False
        self._out: list[HttpMessage] = []
        self._ts = 0
        self._first = True  # no data fed yet
        self._settings_first = False  # the first frame of this direction was a SETTINGS frame

    # ------------------------------------------------------------------ public API
    def feed(self, data: bytes, ts_ns: int) -> list[HttpMessage]:
        self._out = out = []
        self._ts = ts_ns
        if not data:
            return out
        if type(data) is not bytes:
            data = bytes(data)
        try:
            self._feed(data)
        except Exception:
            if self.debug:
                raise
            self.errors += 1
            self._lose_sync()
        return out

    def gap(self, nbytes: int, ts_ns: int) -> list[HttpMessage]:
        """``nbytes`` of this direction were not captured (0: an unknown amount, events were lost).

        A gap entirely inside a DATA payload being skipped costs nothing; otherwise frame sync and
        the HPACK table are lost (the header block in progress is returned truncated)."""
        self._out = out = []
        self._ts = ts_ns
        try:
            if nbytes > 0 and self.state == "frames" and not self._buf and self._skip >= nbytes \
                    and not self._dpad_hdr:
                self._skip_data(None, 0, nbytes)
                return out
            self.gaps += 1
            self._lose_sync()
        except Exception:
            if self.debug:
                raise
            self.errors += 1
        return out

    def close(self, ts_ns: int) -> list[HttpMessage]:
        """The connection ended: a header block in progress is returned truncated, held bodies end."""
        self._out = out = []
        self._ts = ts_ns
        try:
            if self._block:
                self._end_block(truncated=True)
            for s in list(self.conn.streams.values()):
                if s.held and self.dir in s.held:
                    self._release(s, complete=False)
        except Exception:
            if self.debug:
                raise
            self.errors += 1
        self._buf = b""
        return out

    # ------------------------------------------------------------------ framing
    def _feed(self, data: bytes) -> None:
        first = self._first
        self._first = False
        if self.state == "sync":
            if self._buf:  # a preface split across feeds
                data = self._buf + data
                self._buf = b""
            s = sniff(data)
            if s is None:
                self._buf = data
                return
            if s == "preface":
                if first or self.conn.exact:
                    self._upgrade_exact()
                self.conn.learn_client(self.dir)
                self.state = "frames"
                data = data[len(PREFACE):]
                self._parse(data, 0)
                return
            if s == "no":
                return  # wait for a chunk that starts at a frame boundary
            if first and data[3] == SETTINGS:
                self._settings_first = True
            self.state = "frames"
            self._parse(data, 0)
            return
        if self.state == "preface":  # exact start: the client direction begins with the preface
            data = self._buf + data if self._buf else data
            self._buf = b""
            if len(data) < len(PREFACE) and PREFACE.startswith(data):
                self._buf = data
                return
            self.state = "frames"
            if data.startswith(PREFACE):
                self.conn.learn_client(self.dir)
                data = data[len(PREFACE):]
        self._parse(data, 0)

    def _upgrade_exact(self) -> None:
        """The client preface came first in this direction and the other side began with SETTINGS
        (or nothing yet): the whole connection is seen from its start."""
        other = self.conn.parsers[OTHER[self.dir]]
        if other._first or (other._settings_first and other.hpack.resets == 0 and not other.hpack.table):
            for p in (self, other):
                if p.hpack.resets == 0 and not p.hpack.table:
                    p.hpack = HpackDecoder(exact=True)
            self.conn.exact = True

    def _parse(self, data: bytes, pos: int) -> None:
        if self._skip:
            pos = self._skip_data(data, pos, len(data) - pos)
        if self._buf:
            data = self._buf + data[pos:]
            pos = 0
            self._buf = b""
        n = len(data)
        unpack = FRAME_HDR.unpack_from
        while pos < n:
            if pos + 9 > n:
                self._buf = data[pos:]
                return
            hi, lo, t, f, sid = unpack(data, pos)
            length = (hi << 16) | lo
            sid &= 0x7FFFFFFF
            if t == DATA:
                if not sid:
                    self.errors += 1
                    self._lose_sync()
                    return
                pos += 9
                self.frames += 1
                self._dsid = sid
                self._dend = bool(f & END_STREAM)
                self._dpad = 0
                self._dpad_hdr = bool(f & PADDED)
                self._skip = length
                if length == 0:
                    self._data_done()
                    continue
                pos = self._skip_data(data, pos, n - pos)
                continue
            if length > MAX_FRAME_BUFFER or (t <= 9 and not frame_ok(min(length, SNIFF_MAX_LEN), t, 0, sid)):
                self.errors += 1
                self._lose_sync()
                return
            end = pos + 9 + length
            if end > n:
                self._buf = data[pos:]
                return
            self.frames += 1
            self._frame(t, f, sid, data, pos + 9, end)
            pos = end

    def _skip_data(self, data: bytes | None, pos: int, avail: int) -> int:
        """Pass over up to ``avail`` DATA payload bytes at data[pos:] (None: bytes that were lost)."""
        k = min(self._skip, avail)
        if k <= 0:
            return pos
        s = self.conn.streams.get(self._dsid)
        sink = s.sink.get(self.dir) if s is not None and s.sink else None
        if sink is not None:
            a, b = pos, pos + k
            if self._dpad_hdr:
                if data is not None:
                    self._dpad = data[a]
                self._dpad_hdr = False
                a += 1
            body_end = pos + self._skip - self._dpad  # where padding starts, relative to pos
            b2 = min(b, body_end)
            if data is None:
                self._release(s, complete=False)  # body bytes lost
            elif b2 > a and not sink.add(data[a:b2]):
                self._release(s, complete=None)
        elif self._dpad_hdr:
            self._dpad_hdr = False
        self._skip -= k
        pos += k
        if not self._skip:
            self._data_done()
        return pos

    def _data_done(self) -> None:
        if self._dend:
            self._end_stream(self._dsid)

    def _lose_sync(self) -> None:
        """Frame boundaries (and so header-block bytes) were lost in this direction."""
        if self._block:
            self._end_block(truncated=True)
        s = self.conn.streams.get(self._dsid) if self._skip else None
        if s is not None and s.held and self.dir in s.held:
            self._release(s, complete=False)
        self._buf = b""
        self._skip = 0
        self._dpad_hdr = False
        self.hpack.reset()
        self.state = "sync"

    # ------------------------------------------------------------------ frames
    def _frame(self, t: int, f: int, sid: int, data: bytes, a: int, b: int) -> None:
        if self._block and t != CONTINUATION:
            # protocol error in the stream, or we lost a CONTINUATION: the block is cut
            self._end_block(truncated=True)
            self.hpack.reset()
        if t == HEADERS or t == PUSH_PROMISE:
            if f & PADDED:
                if a >= b:  # PADDED on an empty frame: no pad-length byte (data[a] is the next frame's)
                    self.errors += 1
                    self._lose_sync()
                    return
                pad = data[a]
                a += 1
                b -= pad
            if t == HEADERS:
                if f & PRIO:
                    a += 5
                self._bpush = 0
            else:
                self._bpush = int.from_bytes(data[a:a + 4], "big") & 0x7FFFFFFF
                a += 4
                self.conn.learn_client(OTHER[self.dir])  # only servers push
            if b < a:
                self.errors += 1
                self._lose_sync()
                return
            self._bsid = sid
            self._bflags = f
            self._block = [data[a:b]]
            self._bsize = b - a
            self._bcut = False
            if f & END_HEADERS:
                self._end_block(truncated=False)
        elif t == CONTINUATION:
            if not self._block or sid != self._bsid:
                # the start of this block was not seen: its insertions are unknown
                self._block = []
                self.hpack.reset()
                return
            if self._bsize + (b - a) > MAX_BLOCK:
                self._bcut = True
            else:
                self._block.append(data[a:b])
                self._bsize += b - a
            if f & END_HEADERS:
                self._end_block(truncated=False)
        elif t == RST_STREAM:
            s = self.conn.streams.pop(sid, None)
            if s is not None and s.held:
                for d in list(s.held):
                    self._release(s, complete=False, direction=d)
        elif t == SETTINGS:
            if not f & ACK:
                for i in range(a, b - 5, 6):
                    ident = (data[i] << 8) | data[i + 1]
                    val = int.from_bytes(data[i + 2:i + 6], "big")
                    if ident == 1:  # HEADER_TABLE_SIZE: bounds the encoder of the other direction
                        self.conn.parsers[OTHER[self.dir]].hpack.set_settings_max(val)
                    elif ident == 2:  # ENABLE_PUSH: only clients send it
                        self.conn.learn_client(self.dir)
        # PRIORITY, PING, GOAWAY, WINDOW_UPDATE and unknown types: nothing to report

    def _end_block(self, truncated: bool) -> None:
        block = self._block[0] if len(self._block) == 1 else b"".join(self._block)
        self._block = []
        cut = truncated or self._bcut
        fields, incomplete = self.hpack.decode(block)
        if cut:
            # a cut block may have lost insertions after the cut
            self.hpack.reset()
        sid = self._bsid
        if self._bpush:
            self._promise(self._bpush, fields)
            return
        self._message(sid, fields, incomplete, cut, bool(self._bflags & END_STREAM))
