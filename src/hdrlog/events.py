"""Kernel events: the one place the event layout of probes/hdrlog.h is decoded.

tests/test_events.py compiles probes/hdrlog.h with gcc and checks EVENT_HEADER and every enum here
against it, so the C and Python sides cannot drift apart.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass
from enum import IntEnum

ABI = 1


class Kind(IntEnum):
    DATA = 1
    HANDSHAKE = 2
    CLOSE = 3
    LINK = 4
    FORK = 5


class Fn(IntEnum):
    NONE = 0
    SSL_READ = 1
    SSL_READ_EX = 2
    SSL_WRITE = 3
    SSL_WRITE_EX = 4
    SSL_DO_HANDSHAKE = 5
    SSL_FREE = 6
    GO_READ = 7
    GO_WRITE = 8
    GO_CLOSE = 9
    OSSL_READ_BYTES = 10  # a copy site in OpenSSL's record layer (osslsites.py): per record read
    OSSL_WRITE_BYTES = 11  # ... per record written


class Dir(IntEnum):
    NONE = 0
    IN = 1
    OUT = 2


class Attr(IntEnum):
    NONE = 0
    IN_CALL = 1
    RECV_BEFORE = 2
    SEND_AFTER = 3
    GO_FD = 4
    LINK_NEXT = 5  # a write at a copy site of a connection without a tuple: the LINK follows (conntrack parks it)


class Stat(IntEnum):
    EMITTED = 0
    DROPPED = 1
    DROPPED_BYTES = 2
    CALLS_FULL = 3
    WAKEUP_CTR = 4
    MAX = 5


# struct hdrlog_event, field by field (see probes/hdrlog.h); struct hdrlog_tuple is inlined.
EVENT_FIELDS = (
    ("ts_ns", "Q"), ("conn", "Q"), ("pid", "I"), ("tid", "I"), ("len", "I"), ("cap", "I"),
    ("offset", "I"), ("lost", "I"), ("kind", "B"), ("fn", "B"), ("dir", "B"), ("attr", "B"),
    ("tuple.family", "H"), ("tuple.lport", "H"), ("tuple.rport", "H"), ("tuple._pad", "H"),
    ("tuple.laddr", "16s"), ("tuple.raddr", "16s"), ("comm", "16s"), ("fd", "i"),
)
EVENT_HEADER = struct.Struct("<" + "".join(code for _, code in EVENT_FIELDS))

AF_INET = 2
AF_INET6 = 10

# bpf_ktime_get_ns() is CLOCK_MONOTONIC; one offset turns it into wall-clock time.
WALL_OFFSET_NS = time.time_ns() - time.monotonic_ns()


@dataclass(slots=True)
class Event:
    ts_ns: int  # wall clock
    conn: int
    pid: int
    tid: int
    length: int
    offset: int
    lost: int
    kind: int
    fn: int
    dir: int
    attr: int
    local: str | None
    peer: str | None
    comm: str
    fd: int
    data: bytes

    @property
    def truncated(self) -> bool:
        """True when this chunk is the last one captured and the call moved more bytes than captured."""
        return self.offset + len(self.data) < self.length


def format_addr(family: int, addr: bytes, port: int) -> str | None:
    if family == AF_INET:
        return f"{socket.inet_ntop(socket.AF_INET, addr[:4])}:{port}"
    if family == AF_INET6:
        return f"[{socket.inet_ntop(socket.AF_INET6, addr)}]:{port}"
    return None


# Decoding reads the 40-byte struct hdrlog_tuple as one bytes object: it is the address cache's key as it
# is (one 73-byte object per connection instead of a 5-tuple holding two 16-byte strings), and the ports
# and family are unpacked only when a tuple is new.
_DECODE = struct.Struct("<QQIIIIIIBBBB40s16si")
_TUPLE = struct.Struct("<HHHH16s16s")
assert _DECODE.size == EVENT_HEADER.size
_unpack_from = _DECODE.unpack_from
_addr_cache: dict[bytes, tuple[str | None, str | None]] = {}  # a connection's tuple repeats in every event
_comm_cache: dict[bytes, str] = {}


def _comm(raw: bytes) -> str:
    if len(_comm_cache) >= 4096:
        _comm_cache.clear()
    s = _comm_cache[raw] = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
    return s


def _addrs(tup: bytes) -> tuple[str | None, str | None]:
    family, lport, rport, _pad, laddr, raddr = _TUPLE.unpack(tup)
    if len(_addr_cache) >= 65536:
        _addr_cache.clear()
    pair = _addr_cache[tup] = (format_addr(family, laddr, lport), format_addr(family, raddr, rport))
    return pair


_HDR = EVENT_HEADER.size


def decode_py(raw: bytes | memoryview, wall_offset_ns: int = WALL_OFFSET_NS) -> Event:
    """decode in Python: the fallback of the C decode_event (and its reference in tests/test_events.py)."""
    if len(raw) < _HDR:
        raise ValueError(f"event of {len(raw)} bytes is shorter than its {_HDR}-byte header")
    ts, conn, pid, tid, length, cap, offset, lost, kind, fn, dir_, attr, tup, comm, fd = _unpack_from(raw)
    if attr:
        local, peer = _addr_cache.get(tup) or _addrs(tup)
    else:
        local = peer = None
    # positional: keyword arguments to a 16-field dataclass cost ~0.5 µs more per event
    return Event(ts + wall_offset_ns, conn, pid, tid, length, offset, lost, kind, fn, dir_, attr, local, peer,
                 _comm_cache.get(comm) or _comm(comm), fd, bytes(raw[_HDR:_HDR + cap]))


# The C decoder (hdrlog._h1fast.decode_event) builds the same Event in one call (~0.45 µs less per event than
# decode_py: no 15-tuple, no slicing of a memoryview); it returns None (decode_py then runs and fills the caches)
# for a tuple or comm not cached yet, a short record, anything unusual. None when the extension is not built.
try:
    from hdrlog._h1fast import decode_event as c_decode
except ImportError:  # not built (no compiler at install) or an older build without decode_event
    c_decode = None


if c_decode is not None:
    def decode(raw: bytes | memoryview, wall_offset_ns: int = WALL_OFFSET_NS) -> Event:
        """One ring-buffer record (header + data) → Event. Raises ValueError on a short record."""
        return c_decode(raw, wall_offset_ns, Event, _addr_cache, _comm_cache) or decode_py(raw, wall_offset_ns)
else:
    decode = decode_py
