"""Sans-IO HTTP/2 for an observer: frames per direction, HPACK per direction, pairing by stream id.

One :class:`H2Conn` holds both directions of one connection ("in" = what the traced process read,
"out" = what it wrote), the streams they share and one :class:`HpackDecoder` per direction.  Its
:meth:`H2Conn.parser` gives a per-direction object with the same ``feed(data, ts_ns)`` / ``gap(n,
ts_ns)`` / ``close(ts_ns)`` interface as :class:`~hdrlog.http1.Http1Parser`; messages come back as
:class:`~hdrlog.model.HttpMessage` with ``proto="h2"``, ``stream`` set, and responses already paired
(``request``/``latency_ms`` set here, by stream id; the HTTP/1 FIFO pairer must not touch them).

Records.  One message per header block: the request (``:method``) and the response (``:status``, 1xx
interim responses included) of each stream; a header block that ends a stream after its message
(trailers) is its own message of the same kind with ``extra["trailers"] = True``, the stream's
method/path (requests) or status (responses) repeated.  Pseudo-headers with their own field
(``:method``, ``:path``, ``:authority``, ``:status``) are not repeated in ``headers``; the others
(``:scheme``, ``:protocol``) stay there, in wire order.  A PUSH_PROMISE is decoded (HPACK state) and
pairs the pushed response, but is not a message of its own.

HPACK when hdrlog attaches to an open connection.  The dynamic table then holds entries hdrlog
never saw.  The decoder starts with an empty table and records every insertion it sees; since new
entries go to the front, what it inserts is exactly the front of the real table, and any index past
its known entries refers to an entry inserted before capture started.  Such a field is shown as
``["<hpack:unknown>", "<hpack:unknown>"]`` (the value is withheld too, because without its name
hdrlog cannot tell whether it is a secret) and the message gets ``extra["hpack_incomplete"] = True``;
static-table fields and literals decode normally, and as the peer re-inserts what it uses the table
refills and messages are complete again.  Whenever header-block bytes are lost (ring-buffer loss,
a capture cut outside a DATA payload, a frame that does not parse), the table is emptied the same
way, so a missed insertion can never shift indices and produce wrong headers.  The table size
follows the encoder's dynamic table size updates, starting at 4096 on a connection seen from its
preface and with a generous bound otherwise (keeping entries the peer evicted is harmless: they are
never referenced).  SETTINGS_HEADER_TABLE_SIZE sent by the peer is recorded as the bound the encoder
may use and only caps memory: a size update above it is still followed (observer, not enforcer).

Framing.  DATA payloads are skipped without copying (except bodies an opt-in ``body_hook`` asks for,
used for MCP), so a capture cut inside a DATA payload costs nothing; frames other than DATA are
buffered (bounded) until complete.  Detection (:func:`sniff`) accepts the client preface or, when
attaching mid-connection, a chunk that parses as a run of plausible frames; a direction that lost
sync waits for the next chunk that starts with plausible frames.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Callable

from hpack.huffman_table import HUFFMAN_TABLE
from hpack.table import HeaderTable

from .model import HttpMessage

__all__ = ["H2Conn", "H2Parser", "HpackDecoder", "PREFACE", "sniff", "UNKNOWN"]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
UNKNOWN = "<hpack:unknown>"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIO = 0x1, 0x1, 0x4, 0x8, 0x20
# flags each known frame type may carry (sniffing rejects others)
_FLAGS = (0x09, 0x2D, 0x00, 0x00, 0x01, 0x0C, 0x01, 0x00, 0x00, 0x04)

MAX_BLOCK = 256 * 1024  # header block (HEADERS + CONTINUATIONs) kept before it is cut as truncated
MAX_FRAME_BUFFER = 1 << 20  # a non-DATA frame longer than this means we lost sync
MAX_STREAMS = 1024  # streams remembered per connection for pairing (oldest forgotten first)
MAX_HELD = 32  # messages per connection held for their bodies (MCP); beyond, they go out without
DEFAULT_TABLE = 4096
OPEN_TABLE = 65536  # table bound used while the real one is unknown (attached mid-connection)
MAX_TABLE = 1 << 20  # memory cap per decoder, whatever the peer announces
SNIFF_MAX_LEN = 1 << 20

_HDR = struct.Struct(">BHBBL")  # length (8 + 16 bits), type, flags, R + stream id

# ------------------------------------------------------------------------------------------ Huffman
# hpack's decoder walks a 4-bit state machine (nghttp2's).  Two nibbles per byte in Python cost
# ~0.2 µs/byte; a table indexed by (state, byte) built from it on first use halves that.
_BYTE_TABLE: list | None = None


def _build_byte_table() -> list:
    t: list = [None] * (256 * 256)
    ht = HUFFMAN_TABLE
    for state in range(256):
        for b in range(256):
            s1, f1, o1 = ht[state * 16 + (b >> 4)]
            if f1 & 4:
                continue
            s2, f2, o2 = ht[s1 * 16 + (b & 15)]
            if f2 & 4:
                continue
            out = (bytes((o1,)) if f1 & 2 else b"") + (bytes((o2,)) if f2 & 2 else b"")
            t[(state << 8) | b] = (s2 << 8, out, f2 & 1)
    return t


class HpackError(Exception):
    pass


_HCACHE: dict[bytes, bytes] = {}  # recent Huffman strings (values such as dates repeat unindexed)
_HCACHE_MAX_KEY = 256  # only short strings are cached: 4096 entries of up to a whole header block would
# let a peer pin ~1 GiB (found by tests/test_fuzz.py's memory bound)


def huffman_decode(data) -> bytes:
    r = _HCACHE.get(data)
    if r is not None:
        return r
    r = _huffman_decode(data)
    if len(data) > _HCACHE_MAX_KEY:
        return r
    if len(_HCACHE) >= 4096:
        _HCACHE.clear()
    _HCACHE[data] = r
    return r


def _huffman_decode(data) -> bytes:
    global _BYTE_TABLE
    t = _BYTE_TABLE
    if t is None:
        t = _BYTE_TABLE = _build_byte_table()
    st = 0
    ok = 1
    out = []
    for b in data:
        e = t[st | b]
        if e is None:
            raise HpackError("invalid Huffman code")
        st, o, ok = e
        if o:
            out.append(o)
    if not ok:
        raise HpackError("incomplete Huffman code")
    return b"".join(out)


def _dec(b: bytes) -> str:
    try:
        return b.decode()
    except UnicodeDecodeError:
        return b.decode("utf-8", "backslashreplace")


_STATIC = [(n.decode(), v.decode()) for n, v in HeaderTable.STATIC_TABLE]
_NSTATIC = len(_STATIC)  # 61


class HpackDecoder:
    """HPACK decoding (RFC 7541) for one direction of one connection, tolerant of unknown state.

    ``exact``: the table state is known from the start of the connection.  Otherwise (attached
    mid-connection, or after lost header bytes) indices past the known entries decode to
    :data:`UNKNOWN` placeholders.  ``decode(block)`` returns ``(fields, incomplete)``; it never
    raises: on a malformed block it returns what decoded before the error, ``incomplete=True``, and
    resets the table (its insertions can no longer be trusted).
    """

    __slots__ = ("table", "sizes", "size", "max_size", "settings_max", "exact", "resets", "errors")

    def __init__(self, exact: bool = True):
        self.table: list[tuple] = []  # (name or None if unknown, value), newest first
        self.sizes: list[int] = []  # RFC 7541 entry sizes, parallel to table
        self.size = 0
        self.settings_max: int | None = None  # SETTINGS_HEADER_TABLE_SIZE the decoding peer announced
        self.exact = exact
        self.max_size = DEFAULT_TABLE if exact else OPEN_TABLE
        self.resets = 0
        self.errors = 0

    def reset(self) -> None:
        """Forget the table: header-block bytes were lost, so insertions may have been missed."""
        self.table = []
        self.sizes = []
        self.size = 0
        self.exact = False
        self.max_size = max(self.max_size, min(MAX_TABLE, max(OPEN_TABLE, self.settings_max or 0)))
        self.resets += 1

    def set_settings_max(self, value: int) -> None:
        self.settings_max = value
        if not self.exact and value > self.max_size:
            self.max_size = min(MAX_TABLE, value)

    def _resize(self, n: int) -> None:
        self.max_size = min(n, MAX_TABLE)
        self._evict(0)

    def _evict(self, room: int) -> None:
        t, sz = self.table, self.sizes
        limit = self.max_size - room
        while t and self.size > limit:
            t.pop()
            self.size -= sz.pop()

    def _insert(self, pair: tuple, size: int) -> None:
        if size > self.max_size:  # RFC 7541 4.4: an entry larger than the table empties it
            self.table.clear()
            self.sizes.clear()
            self.size = 0
            return
        if self.size + size > self.max_size:
            self._evict(size)
        self.table.insert(0, pair)
        self.sizes.insert(0, size)
        self.size += size

    def decode(self, block: bytes) -> tuple[list[tuple[str, str]], bool]:
        fields: list[tuple[str, str]] = []
        append = fields.append
        incomplete = False
        n = len(block)
        pos = 0
        table = self.table
        static = _STATIC
        try:
            while pos < n:
                b = block[pos]
                if b & 0x80:  # indexed field
                    idx = b & 0x7F
                    if idx == 0x7F:
                        idx, pos = _int(block, pos, 0x7F)
                    else:
                        pos += 1
                    if idx <= _NSTATIC:
                        if not idx:
                            raise HpackError("index 0")
                        append(static[idx - 1])
                        continue
                    i = idx - _NSTATIC - 1
                    if i < len(table):
                        pr = table[i]
                        if pr[0] is not None:
                            append(pr)
                            continue
                    append(_UNKNOWN_PAIR)
                    incomplete = True
                    continue
                if b & 0xC0 == 0x40:  # literal with incremental indexing
                    idx = b & 0x3F
                    mask = 0x3F
                    insert = True
                elif b & 0xE0 == 0x20:  # dynamic table size update
                    sz, pos = _int(block, pos, 0x1F)
                    self._resize(sz)
                    table = self.table
                    continue
                else:  # literal without indexing / never indexed
                    idx = b & 0x0F
                    mask = 0x0F
                    insert = False
                if idx == mask:
                    idx, pos = _int(block, pos, mask)
                else:
                    pos += 1
                if idx:
                    nm = None
                    if idx <= _NSTATIC:
                        nm = static[idx - 1][0]
                    else:
                        i = idx - _NSTATIC - 1
                        if i < len(table):
                            nm = table[i][0]
                    nsize = len(nm) if nm is not None else 0  # names are ASCII tokens when known
                else:
                    raw, pos = _string(block, pos, n)
                    nm = _dec(raw)
                    nsize = len(raw)
                raw, pos = _string(block, pos, n)
                try:
                    v = raw.decode()
                except UnicodeDecodeError:
                    v = raw.decode("utf-8", "backslashreplace")
                if nm is None:
                    incomplete = True
                    append(_UNKNOWN_PAIR)
                    pr = (None, v)
                else:
                    pr = (nm, v)
                    append(pr)
                if insert:
                    self._insert(pr, nsize + len(raw) + 32)
                    table = self.table
        except (HpackError, IndexError):  # malformed or cut block
            self.errors += 1
            self.reset()
            return fields, True
        return fields, incomplete


_UNKNOWN_PAIR = (UNKNOWN, UNKNOWN)


def _string(block: bytes, pos: int, n: int) -> tuple[bytes, int]:
    """An HPACK string literal at pos (RFC 7541 5.2): its bytes, Huffman-decoded if flagged, and the next
    position; HpackError when it runs past the end of the block (n bytes)."""
    c = block[pos]
    ln = c & 0x7F
    if ln == 0x7F:
        ln, pos = _int(block, pos, 0x7F)
    else:
        pos += 1
    end = pos + ln
    if end > n:
        raise HpackError("string past the end of the block")
    raw = block[pos:end]
    return (huffman_decode(raw) if c & 0x80 else raw), end


def _int(b: bytes, pos: int, mask: int) -> tuple[int, int]:
    v = b[pos] & mask
    pos += 1
    if v < mask:
        return v, pos
    shift = 0
    while True:
        c = b[pos]
        pos += 1
        v += (c & 0x7F) << shift
        if c < 0x80:
            return v, pos
        shift += 7
        if shift > 28:
            raise HpackError("integer too long")


# ------------------------------------------------------------------------------------------ sniffing
def _frame_ok(length: int, ftype: int, flags: int, sid: int) -> bool:
    """Is this a plausible frame header (strict: used to find frame boundaries)?"""
    if ftype > 9 or flags & ~_FLAGS[ftype] or sid & 0x80000000 or length > SNIFF_MAX_LEN:
        return False
    if ftype in (SETTINGS, PING, GOAWAY):
        if sid:
            return False
        if ftype == SETTINGS:
            return length % 6 == 0 and not (flags & ACK and length)
        return length == 8 if ftype == PING else length >= 8
    if ftype == WINDOW_UPDATE:
        return length == 4
    if not sid:
        return False
    if ftype == RST_STREAM:
        return length == 4
    if ftype == PRIORITY:
        return length == 5
    return True


def frames_plausible(data: bytes) -> bool:
    """Does ``data`` start at a frame boundary of an HTTP/2 connection (mid-connection detection)?

    Every frame header in the chunk must be plausible, and there must be at least two complete
    frames, or one complete non-DATA frame that ends the chunk exactly."""
    n = len(data)
    pos = 0
    frames = 0
    last_type = -1
    while pos + 9 <= n:
        hi, lo, t, f, sid = _HDR.unpack_from(data, pos)
        length = (hi << 16) | lo
        if not _frame_ok(length, t, f, sid):
            return False
        end = pos + 9 + length
        if end > n:
            return frames >= 2
        frames += 1
        last_type = t
        pos = end
    if pos == n:
        return frames >= 2 or (frames == 1 and last_type != DATA)
    return frames >= 2


def sniff(data: bytes) -> str | None:
    """"preface" (client preface at the start), "frames" (plausible frames), "no", or None (need more)."""
    if data.startswith(PREFACE):
        return "preface"
    if len(data) < len(PREFACE) and PREFACE.startswith(data):
        return None
    return "frames" if frames_plausible(data) else "no"


# ------------------------------------------------------------------------------------------ streams
class _Stream:
    __slots__ = ("id", "req", "resp", "msg", "ended", "sink", "held")

    def __init__(self, sid: int):
        self.id = sid
        self.req: HttpMessage | None = None
        self.resp: HttpMessage | None = None  # final (or last) response
        self.msg: dict[str, HttpMessage] = {}  # last message per direction (for trailers)
        self.ended = 0  # directions that sent END_STREAM: 1 in, 2 out
        self.sink: dict | None = None  # direction -> body sink (opt-in body capture)
        self.held: dict[str, HttpMessage] | None = None  # direction -> message waiting for its body


_OTHER = {"in": "out", "out": "in"}


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
        self.streams: OrderedDict[int, _Stream] = OrderedDict()
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

    def stream(self, sid: int, create: bool = True) -> _Stream | None:
        s = self.streams.get(sid)
        if s is None and create:
            if len(self.streams) >= self.max_streams:
                _, old = self.streams.popitem(last=False)
                self.unpaired += old.req is not None and old.resp is None
            s = self.streams[sid] = _Stream(sid)
        return s

    def learn_client(self, direction: str) -> None:
        if self.req_dir is None:
            self.req_dir = direction


class H2Parser:
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
        other = self.conn.parsers[_OTHER[self.dir]]
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
        unpack = _HDR.unpack_from
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
            if length > MAX_FRAME_BUFFER or (t <= 9 and not _frame_ok(min(length, SNIFF_MAX_LEN), t, 0, sid)):
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
                self.conn.learn_client(_OTHER[self.dir])  # only servers push
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
                        self.conn.parsers[_OTHER[self.dir]].hpack.set_settings_max(val)
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
            conn.learn_client(_OTHER[d])
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

    def _release(self, s: _Stream, complete: bool | None, direction: str | None = None) -> None:
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


def _bench(n: int = 5000) -> None:  # pragma: no cover - manual timing check
    """Server side of n streams: request HEADERS in, response HEADERS out (Huffman, dynamic table as
    the hpack package encodes it), then a 16 KiB DATA frame skipped."""
    import time

    from hpack import Encoder

    global _BYTE_TABLE
    if _BYTE_TABLE is None:
        _BYTE_TABLE = _build_byte_table()
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
