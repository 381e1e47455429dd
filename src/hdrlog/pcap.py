"""`--pcap FILE`: the decrypted streams as pcapng, on synthesized TCP/IP packets with the real addresses.

Each TLS connection becomes one TCP flow between its real local and peer address (conn.local/conn.peer as
learned by conntrack): a SYN / SYN-ACK / ACK when hdrlog first sees it, one PSH+ACK segment per captured
chunk of plaintext with sequence numbers that follow the byte stream per direction, and FINs when the
TLS object is freed. Bytes hdrlog did not capture (a call longer than --max-bytes) are skipped in the
sequence space, so Wireshark shows "previous segment not captured" where they were; events the ring
buffer dropped are noted in the next packet's comment. Every packet carries a comment with pid, tid,
comm, connection id and the TLS function. The interface is LINKTYPE_RAW (IPv4 and IPv6 packets, no
link layer), timestamps in nanoseconds.

The bytes are the plaintext as the process read or wrote it, credentials included: hdrlog does not
rewrite them (HTTP/2 header blocks are HPACK-compressed with connection state, so a redacted value cannot
be substituted correctly), and `--pcap` therefore requires `--show-secrets`. The file is mode 0600.

Wireshark dissects HTTP on well-known ports only, and sees 443 as TLS: open the file with
`wireshark -d tcp.port==PORT,http FILE` (or `,http2`); describe() prints the exact command.
"""

from __future__ import annotations

import ipaddress
import struct
import sys
import zlib
from dataclasses import dataclass, field

from hdrlog.events import Dir, Fn, Kind
from hdrlog.sinks import open_private

LINKTYPE_RAW = 101
_SHB, _IDB, _EPB = 0x0A0D0D0A, 0x00000001, 0x00000006
_BOM = 0x1A2B3C4D
_FIN, _SYN, _RST, _PSH, _ACK = 0x01, 0x02, 0x04, 0x08, 0x10
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_PENDING_BYTES = 1 << 20  # data held per connection while its addresses are unknown


def _opt(code: int, value: bytes) -> bytes:
    pad = (-len(value)) % 4
    return struct.pack("<HH", code, len(value)) + value + b"\0" * pad


def _block(btype: int, body: bytes) -> bytes:
    n = 12 + len(body)
    return struct.pack("<II", btype, n) + body + struct.pack("<I", n)


def _csum(data: bytes) -> int:
    """Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    s = sum(memoryview(data).cast("H"))  # native (little-endian) words: byte-swap the folded sum
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    s = ~s & 0xFFFF
    return ((s & 0xFF) << 8) | (s >> 8) if sys.byteorder == "little" else s


_METHODS = (b"GET ", b"POST ", b"PUT ", b"DELETE ", b"HEAD ", b"OPTIONS ", b"PATCH ", b"CONNECT ", b"TRACE ")


def _client_speaks(first: bytes) -> bool | None:
    """True: a client's first bytes (request line, h2 preface); False: a server's (status line); None: unsure."""
    if first.startswith(H2_PREFACE[: len(first)]) or first.startswith(_METHODS):
        return True
    if first.startswith(b"HTTP/1."):
        return False
    return None


def fn_name(fn: int) -> str:
    """events.Fn → the function's own name: SSL_read_ex, tls.(*Conn).Read."""
    try:
        name = Fn(fn).name
    except ValueError:
        return str(fn)
    if name.startswith("SSL_"):
        return "SSL_" + name[4:].lower()
    if name.startswith("GO_"):
        return "tls.(*Conn)." + name[3:].capitalize()
    if name.startswith("OSSL_"):
        return "ssl3_" + name[5:].lower()  # ssl3_read_bytes, ssl3_write_bytes
    return name.lower()


def parse_addr(text: str | None):
    """"1.2.3.4:80" / "[::1]:80" → (ip_address, port), or None."""
    if not text:
        return None
    try:
        if text.startswith("["):
            host, port = text[1:].split("]:", 1)
        else:
            host, port = text.rsplit(":", 1)
        return ipaddress.ip_address(host), int(port)
    except ValueError:
        return None


@dataclass
class _Side:
    isn: int
    base: int = 0  # sequence number where the current TLS call's bytes start
    end: int = 0  # sequence number after the current call's bytes (its full length, captured or not)


@dataclass
class _Flow:
    key: tuple
    conn_id: str
    pid: int
    comm: str
    client: tuple | None = None  # (ip, port) of the side that opened the connection
    server: tuple | None = None
    local_is_client: bool | None = None
    sides: dict = field(default_factory=dict)  # "client"/"server" -> _Side
    started: bool = False
    pending: list = field(default_factory=list)  # (ts, direction, offset, length, data, comment) before addresses
    pending_bytes: int = 0
    first_dir: int | None = None
    lost: int = 0
    proto: str | None = None


class PcapWriter:
    """A Pipeline tap: on_event(ev, tracker) for every decoded event; close() at the end."""

    def __init__(self, path: str):
        self.path = path
        self.f = open_private(path)
        self.flows: dict[tuple, _Flow] = {}
        self.packets = 0
        self.connections = 0
        self.ports: dict[str, set[int]] = {"http": set(), "http2": set()}
        self._ipid = 0
        shb = struct.pack("<IHHq", _BOM, 1, 0, -1) + _opt(4, b"hdrlog") + _opt(0, b"")
        self.f.write(_block(_SHB, shb))
        idb = struct.pack("<HHI", LINKTYPE_RAW, 0, 0) + _opt(2, b"hdrlog-decrypted") + _opt(9, b"\x09") + _opt(0, b"")
        self.f.write(_block(_IDB, idb))

    # -- events ----------------------------------------------------------------------------------
    def on_event(self, ev, tracker) -> None:
        key = (ev.pid, ev.conn)
        flow = self.flows.get(key)
        conn = tracker.conns.get(key)
        if ev.kind == Kind.CLOSE:
            if flow is not None:
                self._flush_pending(flow, force=True)
                if flow.started:
                    self._close(flow, ev.ts_ns)
                del self.flows[key]
            return
        is_data = ev.kind == Kind.DATA and ev.dir in (Dir.IN, Dir.OUT)
        if flow is None:
            if not is_data:
                return
            flow = self.flows[key] = _Flow(key, conn.id if conn else f"{ev.pid}-?", ev.pid, ev.comm)
        self._learn(flow, conn, ev if is_data else None)
        if not is_data:
            self._flush_pending(flow)
            return
        if ev.lost:
            flow.lost += ev.lost
        direction = "in" if ev.dir == Dir.IN else "out"
        comment = f"pid={ev.pid} tid={ev.tid} comm={ev.comm} conn={flow.conn_id} fn={fn_name(ev.fn)} {direction}"
        if flow.lost:
            comment += f" ({flow.lost} events lost before this)"
            flow.lost = 0
        item = (ev.ts_ns, direction, ev.offset, max(ev.length, ev.offset + len(ev.data)), bytes(ev.data), comment)
        if flow.client is None:
            flow.pending.append(item)
            flow.pending_bytes += len(item[4])
            if flow.pending_bytes > MAX_PENDING_BYTES:
                self._flush_pending(flow, force=True)
            return
        self._flush_pending(flow)
        self._data(flow, *item)

    def _learn(self, flow: _Flow, conn, ev) -> None:
        """Which side opened the connection (the parsed role, else the first bytes: a request line or the
        h2 preface is the client's, a status line the server's), and the addresses."""
        if flow.client is not None:
            return
        if flow.local_is_client is None:
            if conn is not None and conn.role is not None:
                flow.local_is_client = conn.role == "client"
            elif ev is not None and ev.offset == 0 and ev.data:
                sender_is_client = _client_speaks(bytes(ev.data[:24]))
                if sender_is_client is not None:
                    flow.local_is_client = sender_is_client == (ev.dir == Dir.OUT)
            if flow.first_dir is None and ev is not None:
                flow.first_dir = ev.dir
        if conn is None or flow.local_is_client is None:
            return
        local, peer = parse_addr(conn.local), parse_addr(conn.peer)
        if local is None or peer is None or local[0].version != peer[0].version:
            return
        flow.client, flow.server = (local, peer) if flow.local_is_client else (peer, local)
        flow.comm = conn.comm or flow.comm

    def _flush_pending(self, flow: _Flow, force: bool = False) -> None:
        if not flow.pending:
            return
        unknown = False
        if flow.client is None:
            if not force:
                return
            # never learned: guess who opened it from the first direction; placeholder addresses
            if flow.local_is_client is None:
                flow.local_is_client = flow.first_dir == Dir.OUT
            flow.client, flow.server = (ipaddress.ip_address("0.0.0.1"), 1), (ipaddress.ip_address("0.0.0.2"), 2)
            unknown = True
        items, flow.pending, flow.pending_bytes = flow.pending, [], 0
        for ts, d, off, length, data, comment in items:
            self._data(flow, ts, d, off, length, data, comment + (" (addresses unknown)" if unknown else ""))

    # -- TCP -------------------------------------------------------------------------------------
    def _start(self, flow: _Flow, ts: int) -> None:
        seed = zlib.crc32(repr(flow.key).encode())
        flow.sides = {"client": _Side(isn=seed & 0x7FFFFFFF), "server": _Side(isn=(seed * 7919) & 0x7FFFFFFF)}
        for s in flow.sides.values():
            s.base = s.end = (s.isn + 1) & 0xFFFFFFFF
        c, s = flow.sides["client"], flow.sides["server"]
        note = f"pid={flow.pid} comm={flow.comm} conn={flow.conn_id} (synthesized handshake)"
        self._packet(flow, ts - 3000, "client", c.isn, 0, _SYN, b"", note)
        self._packet(flow, ts - 2000, "server", s.isn, c.end, _SYN | _ACK, b"", note)
        self._packet(flow, ts - 1000, "client", c.end, s.end, _ACK, b"", note)
        flow.started = True
        self.connections += 1

    def _data(self, flow: _Flow, ts: int, direction: str, offset: int, length: int, data: bytes,
              comment: str) -> None:
        if not flow.started:
            self._start(flow, ts)
        # "in": the process read it, so the peer sent it
        sender_is_client = (direction == "out") == bool(flow.local_is_client)
        me, other = ("client", "server") if sender_is_client else ("server", "client")
        side = flow.sides[me]
        if offset == 0:  # a new TLS call: its bytes follow the previous call's (captured or not)
            side.base = side.end
            side.end = (side.base + length) & 0xFFFFFFFF
        if flow.proto is None and me == "client" and data:
            flow.proto = "http2" if data.startswith(H2_PREFACE[:len(data)]) else "http"
            self.ports[flow.proto].add(flow.server[1])
        if data:
            seq = (side.base + offset) & 0xFFFFFFFF
            self._packet(flow, ts, me, seq, flow.sides[other].end, _PSH | _ACK, data, comment)

    def _close(self, flow: _Flow, ts: int) -> None:
        local = "client" if flow.local_is_client else "server"
        remote = "server" if local == "client" else "client"
        a, b = flow.sides[local], flow.sides[remote]
        note = f"pid={flow.pid} comm={flow.comm} conn={flow.conn_id} (TLS object freed; synthesized FIN)"
        self._packet(flow, ts, local, a.end, b.end, _FIN | _ACK, b"", note)
        self._packet(flow, ts + 1000, remote, b.end, (a.end + 1) & 0xFFFFFFFF, _FIN | _ACK, b"", note)
        self._packet(flow, ts + 2000, local, (a.end + 1) & 0xFFFFFFFF, (b.end + 1) & 0xFFFFFFFF, _ACK, b"", note)

    def _packet(self, flow: _Flow, ts: int, sender: str, seq: int, ack: int, flags: int, payload: bytes,
                comment: str) -> None:
        (sip, sport), (dip, dport) = (flow.client, flow.server) if sender == "client" else (flow.server, flow.client)
        tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack if flags & _ACK else 0, 5 << 4, flags, 65535, 0, 0)
        seg = tcp + payload
        src, dst = sip.packed, dip.packed
        if sip.version == 4:
            pseudo = src + dst + struct.pack("!BBH", 0, 6, len(seg))
        else:
            pseudo = src + dst + struct.pack("!IxxxB", len(seg), 6)
        seg = seg[:16] + struct.pack("!H", _csum(pseudo + seg)) + seg[18:]
        if sip.version == 4:
            self._ipid = (self._ipid + 1) & 0xFFFF
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(seg), self._ipid, 0x4000, 64, 6, 0, src, dst)
            ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
        else:
            ip = struct.pack("!IHBB16s16s", 6 << 28, len(seg), 6, 64, src, dst)
        pkt = ip + seg
        pad = (-len(pkt)) % 4
        body = (struct.pack("<IIIII", 0, (ts >> 32) & 0xFFFFFFFF, ts & 0xFFFFFFFF, len(pkt), len(pkt))
                + pkt + b"\0" * pad + _opt(1, comment.encode("utf-8", "replace")) + _opt(0, b""))
        self.f.write(_block(_EPB, body))
        self.packets += 1

    # -- end -------------------------------------------------------------------------------------
    def close(self) -> None:
        for flow in list(self.flows.values()):
            self._flush_pending(flow, force=True)
        self.flows.clear()
        self.f.close()

    def describe(self) -> str:
        text = f"pcap: {self.packets} packets on {self.connections} connections written to {self.path}"
        decode = [f"-d tcp.port=={p},{proto}" for proto in ("http", "http2") for p in sorted(self.ports[proto])]
        if decode:
            text += f"; open it with: wireshark {' '.join(decode[:6])} {self.path}"
        return text
