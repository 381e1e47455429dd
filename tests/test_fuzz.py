"""Fuzz targets for every parser hdrlog feeds with untrusted bytes (issue 7, "Hostile and odd input").

Each target asserts: no exception escapes (the parsers' ``debug`` switches are on, so an internal error
that production would swallow and count fails the test here), memory stays bounded for the input size
(tracemalloc peak), and no input hangs (hypothesis ``deadline`` per example).

CI runs a short pass (a few seconds per target). A longer local run::

    HDRLOG_FUZZ_EXAMPLES=100000 .venv/bin/python -m pytest tests/test_fuzz.py -q -p no:cacheprovider

``HDRLOG_FUZZ_EXAMPLES`` replaces every target's ``max_examples``; ``HDRLOG_FUZZ_SEED`` pins the seed
(without it each long run explores new inputs; hypothesis keeps failing examples in .hypothesis/).
"""

from __future__ import annotations

import base64
import json
import os
import random
import struct
import tracemalloc
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from hdrlog import events, gopclntab, h2 as hh, h2hpack, mcp
from hdrlog.conntrack import Conn
from hdrlog.elfsyms import ElfFile, clear_cache
from hdrlog.errors import HdrlogError
from hdrlog.h2 import H2Parser, HpackDecoder
from hdrlog.http1 import Http1Parser
from hdrlog.mcp import Mcp
from hdrlog.pipeline import Pipeline
from hdrlog.redact import Redactor
from hdrlog.replay import read_events

from test_gopclntab import _FakeElf, _table  # the hand-made pclntab layout, written once

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
LIBSSL = "/usr/lib/x86_64-linux-gnu/libssl.so.3"
TLS = ["SSL_read", "SSL_write", "SSL_read_ex", "SSL_write_ex", "SSL_do_handshake", "SSL_free"]
_N = os.environ.get("HDRLOG_FUZZ_EXAMPLES")


def fuzz(n: int, deadline_ms: int = 5000):
    """hypothesis settings for a fuzz target: ``n`` examples in CI, HDRLOG_FUZZ_EXAMPLES when set."""
    s = settings(max_examples=int(_N) if _N else n, deadline=timedelta(milliseconds=deadline_ms),
                 suppress_health_check=list(HealthCheck), derandomize=False, database=None if _N else
                 settings.default.database)

    def wrap(f):
        f = s(f)
        if os.environ.get("HDRLOG_FUZZ_SEED"):
            f = seed(int(os.environ["HDRLOG_FUZZ_SEED"]))(f)
        return f

    return wrap


@pytest.fixture(autouse=True)
def _debug(monkeypatch):
    monkeypatch.setattr(Http1Parser, "debug", True)
    monkeypatch.setattr(H2Parser, "debug", True)
    h2hpack._huffman_decode(b"")  # builds the 64k-entry Huffman table once (not a per-input cost)


class Peak:
    """tracemalloc peak (bytes) of the block: ``with Peak() as p: ...; p.peak``."""

    def __enter__(self):
        tracemalloc.start()
        tracemalloc.reset_peak()
        return self

    def __exit__(self, *exc):
        _, self.peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()


class ListSink:
    def __init__(self):
        self.n = 0
        self.bytes = 0

    def write(self, rec):
        self.n += 1
        self.bytes += len(orjson.dumps(rec))  # every record must serialise (as the real sinks do)

    def flush(self):
        pass


# ---- building blocks -------------------------------------------------------------------------------------

HTTP1 = [
    b"GET /a?token=abc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cr3t\r\n\r\n",
    b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 45\r\n\r\n"
    b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}',
    b"POST /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
    b'event: message\r\ndata: {"jsonrpc":"2.0","id":1,"result":{"tools":[]}}\r\n\r\n',
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.0 204 No Content\r\nX-Folded: a\r\n b\r\n\r\n",
    b"HEAD / HTTP/1.1\r\n\r\n",
    b"CONNECT h:443 HTTP/1.1\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
    b"\r\n",
]


def h2frame(ftype: int, flags: int, sid: int, payload: bytes, length: int | None = None) -> bytes:
    n = len(payload) if length is None else length
    return struct.pack(">I", n)[1:] + bytes([ftype & 0xFF, flags & 0xFF]) + struct.pack(">I", sid) + payload


@st.composite
def h2_frames(draw):
    ftype = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0xFF]))
    flags = draw(st.sampled_from([0, 1, 4, 5, 8, 0x20, 0x25, 0x2D, 0xFF]))
    sid = draw(st.sampled_from([0, 1, 3, 5, 2, 0x7FFFFFFF, 0xFFFFFFFF]))
    payload = draw(st.one_of(
        st.binary(max_size=64),
        st.sampled_from([b"\x82\x84\x86\x41\x8a\x08\x9d\x5c\x0b\x81\x70\xdc\x78\x0f\x03",  # GET / with :authority
                         b"\x88", b"\x3f\xe1\x1f", b"\x20", b"\x00\x03\x00\x00\x00\x64", b"\x7f\xff\xff\xff\x0f",
                         b'\x5f\x10application/json\x40\x0emcp-session-id\x03abc']),
    ))
    length = draw(st.one_of(st.none(), st.none(), st.integers(0, 1 << 24 - 1)))
    return h2frame(ftype, flags, sid, payload, length)


def cut(blob: bytes, points) -> list[bytes]:
    pts = sorted({p for p in points if 0 < p < len(blob)})
    return [blob[a:b] for a, b in zip([0] + pts, pts + [len(blob)]) if a < b]


def mangle(data, blob: bytearray, most: int = 4) -> bytearray:
    """Up to `most` random flips, drops, inserts and duplications in blob (also used by test_h1fast)."""
    for _ in range(data.draw(st.integers(0, most), label="nmut")):
        if not blob:
            break
        i = data.draw(st.integers(0, len(blob) - 1), label="at")
        op = data.draw(st.sampled_from(["flip", "drop", "insert", "dup"]), label="op")
        if op == "flip":
            blob[i] ^= data.draw(st.integers(1, 255), label="x")
        elif op == "drop":
            del blob[i:i + data.draw(st.integers(1, 16), label="n")]
        elif op == "insert":
            blob[i:i] = data.draw(st.binary(min_size=1, max_size=20), label="ins")
        else:
            blob[i:i] = blob[i:i + data.draw(st.integers(1, 64), label="n")]
    return blob


# ---- HTTP/1 ---------------------------------------------------------------------------------------------

@fuzz(300)
@given(st.data())
def test_http1_feed_gap_close_sequences(data):
    """Valid, mangled and random chunks interleaved with gaps (known size and unknown) and a close, with
    the MCP body hook on (bodies are framed and copied); then the parser is reused after close."""
    methods = data.draw(st.lists(st.sampled_from(["GET", "HEAD", "CONNECT", None]), min_size=1), label="methods")
    it = iter(methods * 1000)
    p = Http1Parser(response_to=lambda skip=0: next(it, None), body=Mcp())
    blob = mangle(data, bytearray(b"".join(data.draw(st.lists(st.sampled_from(HTTP1), max_size=10), label="msgs"))))
    blob += data.draw(st.binary(max_size=200), label="tail")
    chunks = cut(bytes(blob), data.draw(st.lists(st.integers(0, len(blob)), max_size=12), label="cuts"))
    plan = [(c, data.draw(st.sampled_from(["feed", "feed", "feed", "gap", "gap0", "close"]), label="op"),
             data.draw(st.integers(1, 1 << 20), label="gap")) for c in chunks]
    ts = 0
    size = sum(map(len, chunks))
    with Peak() as mem:
        for c, op, g in plan:
            ts += 1
            msgs = []
            if op == "gap":
                msgs += p.gap(g, ts)
            elif op == "gap0":
                msgs += p.gap(0, ts)
            elif op == "close":
                msgs += p.close(ts)
            msgs += p.feed(c, ts)
            for m in msgs:
                assert m.kind in ("request", "response")
                assert all(isinstance(n, str) and isinstance(v, str) for n, v in m.headers)
                orjson.dumps(m.extra)
        p.close(ts + 1)
    assert p.state in ("detect", "http", "resync", "not-http", "tunnel", "body")
    assert mem.peak < 2_000_000 + 50 * size


@fuzz(40, deadline_ms=20000)
@given(st.sampled_from(["request", "response"]), st.integers(1, 5000), st.integers(0, 70000),
       st.sampled_from([b"a", b"\xff\xfe", b"\0", b"\r\n ", b"x" * 100]), st.integers(1, 9000))
def test_http1_huge_header_blocks(kind, nheaders, linelen, filler, step):
    """Thousands of headers, a 100 KiB block, very long lines, invalid UTF-8, NULs, obs-fold: bounded
    memory and either a (possibly truncated) message or a resync, never an exception."""
    start = b"GET /x HTTP/1.1\r\n" if kind == "request" else b"HTTP/1.1 200 OK\r\n"
    block = start + b"X-Long: " + (filler * (linelen // len(filler) + 1))[:linelen] + b"\r\n"
    block += b"".join(b"X-H%d: v\xc3%d\r\n" % (i, i) for i in range(nheaders)) + b"Content-Length: 0\r\n\r\n"
    block += b"GET /after HTTP/1.1\r\nHost: ok\r\n\r\n" if kind == "request" else b"HTTP/1.1 204 N\r\n\r\n"
    p = Http1Parser(response_to=lambda skip=0: "GET")
    out = []
    with Peak() as mem:
        for i in range(0, len(block), step):
            out += p.feed(block[i:i + step], i)
        out += p.close(len(block))
    assert mem.peak < 4_000_000 + 4 * len(block)
    assert all(isinstance(v, str) for m in out for _, v in m.headers)


# ---- HTTP/2 and HPACK -----------------------------------------------------------------------------------

@fuzz(300)
@given(st.data())
def test_h2_frames_both_directions(data):
    """Random frame sequences (plausible types, flags, stream ids and lengths) on both directions of an
    exact or mid-connection H2Conn, with gaps and a close; with the MCP body hook."""
    exact = data.draw(st.booleans(), label="exact")
    conn = hh.H2Conn(exact=exact, body_hook=Mcp(), max_streams=data.draw(st.sampled_from([2, 100]), label="ms"))
    plan = []
    for i in range(data.draw(st.integers(1, 30), label="n")):
        d = data.draw(st.sampled_from(["in", "out"]), label="dir")
        op = data.draw(st.sampled_from(["frames", "frames", "frames", "raw", "gap", "gap0"]), label="op")
        if op == "frames":
            blob = b"".join(data.draw(st.lists(h2_frames(), min_size=1, max_size=6), label="f"))
            plan += [(d, "feed", c) for c in cut(blob, data.draw(st.lists(st.integers(0, len(blob)), max_size=4),
                                                                label="cuts"))]
        elif op == "raw":
            plan.append((d, "feed", data.draw(st.binary(max_size=100), label="raw")))
        else:
            plan.append((d, "gap", data.draw(st.integers(1, 1 << 16), label="g") if op == "gap" else 0))
    total = sum(len(x) for _, op, x in plan if op == "feed")
    with Peak() as mem:
        if exact:
            conn.parsers["in"].feed(hh.PREFACE, 0)
        for i, (d, op, x) in enumerate(plan):
            if op == "feed":
                conn.parsers[d].feed(x, i)
            else:
                conn.parsers[d].gap(x, i)
        for p in conn.parsers.values():
            p.close(99)
    assert mem.peak < 3_000_000 + 50 * total


@fuzz(300)
@given(st.lists(st.binary(max_size=120), min_size=1, max_size=8), st.booleans(), st.integers(0, 1 << 20))
def test_hpack_block_sequences(blocks, exact, table_max):
    """Sequences of garbage blocks on one decoder (dynamic table state carried over), any table size."""
    dec = HpackDecoder(exact=exact)
    dec.set_settings_max(table_max)
    with Peak() as mem:
        for b in blocks:
            fields, incomplete = dec.decode(b)
            assert all(isinstance(n, str) and isinstance(v, str) for n, v in fields)
    assert mem.peak < 2_000_000 + 64 * sum(map(len, blocks))


@fuzz(300)
@given(st.binary(max_size=300))
def test_huffman_garbage(raw):
    try:
        h2hpack.huffman_decode(raw)
    except h2hpack.HpackError:
        pass


# ---- SSE and JSON-RPC / MCP -----------------------------------------------------------------------------

JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
        st.sampled_from(["jsonrpc", "id", "method", "params", "result", "error", "name", "arguments",
                         "code", "message", "isError", "content", "tools", "x"]), kids, max_size=6),
    max_leaves=20,
)


@fuzz(300)
@given(st.lists(JSONISH, max_size=4), st.booleans(), st.integers(0, 400), st.binary(max_size=40),
       st.sampled_from([b"\n", b"\r\n", b"\r"]))
def test_mcp_bodies(objs, sse, cut_at, junk, nl):
    """JSON-RPC-ish objects as a JSON body or SSE events, cut anywhere and with junk appended: parse_sse,
    messages_from_body (truncated or not), _partial and summarize never raise."""
    texts = [json.dumps(o) for o in objs]
    texts = [t for t in texts if len(t) < 100000]
    if sse:
        body = b"".join(b"event: message" + nl + b"data: " + t.encode() + nl + nl for t in texts)
    else:
        body = (("[" + ",".join(texts) + "]") if len(texts) > 1 else (texts[0] if texts else "")).encode()
    body = body[:cut_at] + junk
    for truncated in (False, True):
        msgs, partial = mcp.messages_from_body(body, sse, truncated, report=True)
        for m in msgs:
            for payloads in (False, True):
                orjson.dumps(mcp.summarize(m, payloads))
    mcp.parse_sse(body)
    mcp._partial(body.decode("utf-8", "replace"))


@fuzz(200)
@given(st.lists(JSONISH, min_size=1, max_size=3), st.lists(st.integers(1, 300), max_size=10), st.booleans(),
       st.booleans(), st.integers(8, 2000))
def test_mcp_body_sink(objs, sizes, sse, complete, limit):
    """The body sink over many reads with a small limit, finished complete or cut."""
    body = b"".join(b"data: " + json.dumps(o).encode() + b"\n\n" for o in objs) if sse else \
        json.dumps(objs).encode()
    from hdrlog.model import HttpMessage
    msg = HttpMessage(kind="request", proto="http/1.1", headers=[
        ("Content-Type", "text/event-stream" if sse else "application/json"), ("Mcp-Session-Id", "s")],
        method="POST", path="/mcp", ts_ns=1)
    sink = Mcp(limit=limit)(msg)
    assert sink is not None
    pos = 0
    for n in sizes + [len(body)]:
        if not sink.add(body[pos:pos + n]):
            break
        pos += n
    sink.finish(complete)
    orjson.dumps(msg.extra)


# ---- ELF and pclntab ------------------------------------------------------------------------------------

def _elf_fields(src: bytes):
    """(offset, size) of every ELF header, program header and section header field of a 64-bit ELF."""
    out = [(o, s) for o, s in ((0x10, 2), (0x12, 2), (0x18, 8), (0x20, 8), (0x28, 8), (0x34, 2), (0x36, 2),
                               (0x38, 2), (0x3A, 2), (0x3C, 2), (0x3E, 2))]
    phoff, = struct.unpack_from("<Q", src, 0x20)
    shoff, = struct.unpack_from("<Q", src, 0x28)
    phnum, = struct.unpack_from("<H", src, 0x38)
    shnum, = struct.unpack_from("<H", src, 0x3C)
    for i in range(phnum):
        b = phoff + i * 56
        out += [(b, 4), (b + 4, 4), (b + 8, 8), (b + 16, 8), (b + 32, 8), (b + 40, 8)]
    for i in range(shnum):
        b = shoff + i * 64
        out += [(b, 4), (b + 4, 4), (b + 24, 8), (b + 32, 8), (b + 40, 4), (b + 44, 4), (b + 56, 8)]
    return out


_LIBSSL = Path(LIBSSL).read_bytes() if Path(LIBSSL).exists() else None
BOUNDARY = [0, 1, 7, 8, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 32, 1 << 40, (1 << 63) - 1, (1 << 64) - 1]


@pytest.mark.skipif(_LIBSSL is None, reason="no libssl.so.3")
@fuzz(150, deadline_ms=10000)
@given(st.data())
def test_elf_header_fields_truncation_and_huge_counts(tmp_path_factory, data):
    """libssl with header/table fields set to boundary values (huge counts, sizes, offsets) and/or
    truncated anywhere: either it opens and every accessor works, or HdrlogError with one sentence."""
    src = bytearray(_LIBSSL)
    fields = _elf_fields(bytes(src))
    for _ in range(data.draw(st.integers(1, 4), label="n")):
        off, size = data.draw(st.sampled_from(fields), label="field")
        v = data.draw(st.sampled_from(BOUNDARY) | st.integers(0, (1 << 8 * size) - 1), label="v")
        src[off:off + size] = (v & ((1 << 8 * size) - 1)).to_bytes(size, "little")
    if data.draw(st.booleans(), label="trunc"):
        src = src[:data.draw(st.integers(0, len(src)), label="len")]
    p = tmp_path_factory.mktemp("elf") / "x.so"
    p.write_bytes(src)
    clear_cache()
    with Peak() as mem:
        try:
            with ElfFile(str(p)) as e:
                e.lookup(TLS + ["OpenSSL_version_num"])
                e.lookup(["SSL_read"], tables=(".symtab",))
                e.build_id, e.soname, e.is_pie, e.text_range, e.section(".text"), e.sections, e.segments
                e.find(b"OpenSSL", ".rodata")
                try:
                    gopclntab.find_pclntab(e)
                except HdrlogError:
                    pass
        except HdrlogError as exc:
            msg = str(exc)
            assert "\n" not in msg and "Traceback" not in msg
    assert mem.peak < 64_000_000  # mmap'd, not read: a 2**40-entry table claim must not be materialised


@fuzz(300)
@given(st.sampled_from([gopclntab.MAGIC_116, gopclntab.MAGIC_118, gopclntab.MAGIC_120]),
       st.lists(st.tuples(st.sampled_from(["main.a", "crypto/tls.(*Conn).Read", "crypto/tls.(*Conn).Write", "é"]),
                          st.integers(0, 0xFFFFFFFF)), min_size=1, max_size=6),
       st.data())
def test_pclntab_mutated(magic, funcs, data):
    """Crafted tables with header words at boundary values, random bytes overwritten and truncation:
    PcLnTab either refuses with HdrlogError or answers funcs()/lookup() without raising."""
    tab = bytearray(_table(magic, funcs, data.draw(st.integers(0, 0xFFFFFFFF), label="end")))
    for _ in range(data.draw(st.integers(0, 3), label="nw")):
        w = data.draw(st.integers(0, 7), label="word")
        struct.pack_into("<Q", tab, 8 + 8 * w, data.draw(st.sampled_from(BOUNDARY) | st.integers(0, 1 << 20),
                                                         label="v"))
    tab = mangle(data, tab)
    if data.draw(st.booleans(), label="trunc"):
        tab = tab[:data.draw(st.integers(0, len(tab)), label="len")]
    try:
        t = gopclntab.PcLnTab(_FakeElf(), 0x600000, bytes(tab))
    except HdrlogError:
        return
    list(t.funcs())
    t.lookup(["crypto/tls.(*Conn).Read", "crypto/tls.(*Conn).Write", "nope"])


GO_BINARY = "/usr/bin/caddy"  # Debian's caddy: a stripped go1.19 build (pclntab only), installed by make setup


@pytest.fixture(scope="module")
def go_copy(tmp_path_factory):
    if not os.path.exists(GO_BINARY):
        pytest.skip(f"{GO_BINARY} is missing")
    p = tmp_path_factory.mktemp("go") / "caddy"
    data = Path(GO_BINARY).read_bytes()
    p.write_bytes(data)
    with ElfFile(str(p)) as e:
        tab = gopclntab.find_pclntab(e)
        off = e.vaddr_to_offset(tab.vaddr)
        hot = [(off, 72), (off + tab.pcln_off, 4096), (off + tab.funcname_off, 256), (0, 64)]
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shnum, = struct.unpack_from("<H", data, 0x3C)
        hot.append((shoff, shnum * 64))
    return p, data, hot, off, len(tab.data)


@pytest.mark.skipif(not os.path.exists(GO_BINARY), reason="no Go binary (caddy)")
@fuzz(100, deadline_ms=10000)
@given(st.data())
def test_real_go_binary_pclntab_mutated(go_copy, data):
    """A real stripped Go binary with bytes of its pclntab header, function table, name table, ELF header or
    section headers overwritten (boundary values or random bytes): find_pclntab/lookup either work or raise
    HdrlogError; the file is restored after every example."""
    path, orig, hot, tab_off, tab_len = go_copy
    patches = []
    for _ in range(data.draw(st.integers(1, 6), label="n")):
        base, size = data.draw(st.sampled_from(hot + [(tab_off, tab_len)]), label="region")
        at = base + data.draw(st.integers(0, max(0, size - 8)), label="at")
        raw = data.draw(st.sampled_from([struct.pack("<Q", v & (1 << 64) - 1) for v in BOUNDARY])
                        | st.binary(min_size=1, max_size=8), label="bytes")
        patches.append((at, raw))
    with open(path, "r+b") as f:
        try:
            for at, raw in patches:
                f.seek(at)
                f.write(raw)
            f.flush()
            clear_cache()
            try:
                with ElfFile(str(path)) as e:
                    gopclntab.lookup(e, ["crypto/tls.(*Conn).Read", "crypto/tls.(*Conn).Write",
                                         "crypto/tls.(*Conn).Close"])
                    t = gopclntab.find_pclntab(e)
                    if t is not None:
                        for i, _ in zip(t.funcs(), range(50000)):
                            pass
            except HdrlogError as exc:
                assert "\n" not in str(exc)
        finally:
            for at, raw in patches:
                f.seek(at)
                f.write(orig[at:at + len(raw)])


# ---- kernel events and the whole pipeline ---------------------------------------------------------------

H = events.EVENT_HEADER
DATA_POOL = HTTP1 + [hh.PREFACE, hh.PREFACE + h2frame(4, 0, 0, b""),
                     h2frame(1, 5, 1, b"\x82\x84\x86\x41\x8a\x08\x9d\x5c\x0b\x81\x70\xdc\x78\x0f\x03"),
                     h2frame(1, 4, 1, b"\x88\x5f\x10application/json"), h2frame(0, 1, 1, b'{"jsonrpc":"2.0"}'),
                     b"EHLO mail.example\r\n", b"\x16\x03\x01\x00\xa5", b"PING hello\n"]


@st.composite
def raw_events(draw):
    kind = draw(st.sampled_from([1, 1, 1, 1, 2, 3, 4, 5, 0, 99]))
    data = draw(st.one_of(st.sampled_from(DATA_POOL), st.binary(max_size=200)))
    if draw(st.booleans()):
        data = bytes(mangle_plain(draw, bytearray(data)))
    length = draw(st.one_of(st.just(len(data)), st.integers(0, 1 << 32 - 1)))
    offset = draw(st.one_of(st.just(0), st.integers(0, 1 << 20)))
    cap = draw(st.one_of(st.just(len(data)), st.integers(0, 1 << 16)))
    family = draw(st.sampled_from([2, 10, 0, 1, 0xFFFF]))
    fields = dict(
        ts_ns=draw(st.integers(0, 1 << 63)), conn=draw(st.sampled_from([1, 2, 3, 0xDEAD])),
        pid=draw(st.sampled_from([10, 11, 0])), tid=draw(st.integers(0, 1 << 32 - 1)), len=length,
        cap=cap, offset=offset, lost=draw(st.sampled_from([0, 0, 0, 1, 0xFFFFFFFF])), kind=kind,
        fn=draw(st.integers(0, 255)), dir=draw(st.sampled_from([1, 2, 1, 2, 0, 3])),
        attr=draw(st.integers(0, 6)), family=family, lport=draw(st.integers(0, 65535)),
        rport=draw(st.integers(0, 65535)), pad=0, laddr=draw(st.binary(min_size=16, max_size=16)),
        raddr=draw(st.binary(min_size=16, max_size=16)),
        comm=draw(st.sampled_from([b"nginx\0", b"\xff\xfe\0", b"a" * 16])),
        fd=draw(st.sampled_from([-1, 3, 1 << 30, -5])),
    )
    return H.pack(*fields.values()) + data


def mangle_plain(draw, blob: bytearray) -> bytearray:
    for _ in range(draw(st.integers(0, 3))):
        if not blob:
            break
        i = draw(st.integers(0, len(blob) - 1))
        blob[i] ^= draw(st.integers(1, 255))
    return blob


def _pipeline(max_bytes=16384):
    sink = ListSink()
    pipe = Pipeline(sink, Redactor(key=b"k" * 32), lib_of_pid=lambda pid: "openssl", max_bytes=max_bytes,
                    wall_offset_ns=0, mcp_payloads=True, on_fork=lambda ppid, child: None)
    return pipe, sink


def _finish(pipe):
    # what the session does at the end: every connection is flushed, records serialised
    for c in list(pipe.tracker.conns.values()):
        pipe.tracker._flush(c, events.decode(H.pack(0, c.addr, c.pid, 0, 0, 0, 0, 0, 3, 6, 0, 0, 0, 0, 0, 0,
                                                    b"\0" * 16, b"\0" * 16, b"x", -1)))
    pipe.tracker.expire(1 << 64)


@fuzz(300)
@given(st.lists(st.binary(max_size=300), max_size=30))
def test_decode_and_pipeline_random_bytes(raws):
    pipe, sink = _pipeline()
    for r in raws:
        try:
            events.decode(r)
        except ValueError:
            pass
        pipe.on_raw(r)
    _finish(pipe)


@fuzz(300)
@given(st.lists(raw_events(), max_size=40), st.sampled_from([64, 4096, 16384]))
def test_pipeline_structured_event_streams(raws, max_bytes):
    """Well-formed event headers with random kinds, directions, lengths/offsets/caps that disagree with
    the data, losses, odd address families and comms, carrying HTTP/1, h2, MCP and non-HTTP data."""
    pipe, sink = _pipeline(max_bytes)
    with Peak() as mem:
        for r in raws:
            pipe.on_raw(r)
        _finish(pipe)
    assert mem.peak < 4_000_000 + 100 * sum(map(len, raws))


def _fixture_raws():
    out = {}
    for f in sorted(FIXTURES.glob("*.events.jsonl")):
        meta, raws = read_events(str(f))
        out[f.name] = list(raws)
    return out


FIXTURE_RAWS = _fixture_raws()


@pytest.mark.skipif(not FIXTURE_RAWS, reason="no fixtures")
@fuzz(100, deadline_ms=15000)
@given(st.sampled_from(sorted(FIXTURE_RAWS)), st.data())
def test_pipeline_mutated_fixtures(name, data):
    """Real recorded streams with events dropped, duplicated, reordered, their data mangled or cut, and
    their length/offset/lost fields changed."""
    raws = list(FIXTURE_RAWS[name])
    rnd = random.Random(data.draw(st.integers(0, 1 << 32), label="seed"))
    for _ in range(data.draw(st.integers(1, 12), label="nmut")):
        if not raws:
            break
        i = rnd.randrange(len(raws))
        op = rnd.choice(["drop", "dup", "swap", "data", "cut", "len", "lost"])
        r = bytearray(raws[i])
        if op == "drop":
            del raws[i]
            continue
        if op == "dup":
            raws.insert(i, bytes(r))
            continue
        if op == "swap":
            j = rnd.randrange(len(raws))
            raws[i], raws[j] = raws[j], raws[i]
            continue
        if op == "data" and len(r) > H.size:
            for _ in range(rnd.randint(1, 8)):
                r[rnd.randrange(H.size, len(r))] = rnd.randrange(256)
        elif op == "cut":
            r = r[:rnd.randrange(len(r) + 1)]
        elif op == "len" and len(r) >= H.size:
            struct.pack_into("<I", r, 24, rnd.choice([0, 1, len(r), 1 << 31, 0xFFFFFFFF]))
        elif op == "lost" and len(r) >= H.size:
            struct.pack_into("<I", r, 36, rnd.choice([1, 5, 0xFFFFFFFF]))
        raws[i] = bytes(r)
    pipe, sink = _pipeline()
    for r in raws:
        pipe.on_raw(r)
    _finish(pipe)


# ---- regressions found by these targets -----------------------------------------------------------------

def test_regression_h2_padded_headers_without_pad_byte():
    """HEADERS with PADDED set and length 0: the pad length was read from the next frame (IndexError at the
    end of the buffer); now the direction loses sync and the next frames parse."""
    conn = hh.H2Conn(exact=False)
    p = conn.parsers["in"]
    p.feed(h2frame(1, 0x08 | 0x04, 1, b""), 1)
    assert p.errors == 1 and p.state == "sync"
    p.feed(h2frame(1, 0x08 | 0x04, 1, b"") + h2frame(4, 0, 0, b""), 2)


def test_regression_mcp_hook_empty_header_name():
    """An HPACK literal with an empty name reached the MCP hook, which indexed n[0]."""
    from hdrlog.model import HttpMessage
    msg = HttpMessage(kind="request", proto="h2", ts_ns=1, headers=[("", "x"), ("content-type", "application/json")])
    assert Mcp()(msg) is not None


def test_regression_huffman_cache_keeps_only_short_strings():
    from hpack.huffman import HuffmanEncoder
    from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
    code = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH).encode(b"v" * 4000)
    h2hpack._HCACHE.clear()
    assert h2hpack.huffman_decode(code) == b"v" * 4000
    assert code not in h2hpack._HCACHE


def test_regression_mcp_huge_ints_and_deep_nesting_serialise():
    """A JSON-RPC id or payload integer beyond 64 bits, or a payload nested 300 deep, made the record
    unserialisable by orjson (the sinks' writer)."""
    deep = "[" * 300 + "]" * 300
    body = ('{"jsonrpc":"2.0","id":123456789012345678901234567890,"result":{"n":-9223372036854775809,'
            '"deep":%s}}' % deep).encode()
    for m in mcp.messages_from_body(body, False):
        orjson.dumps(mcp.summarize(m, True))
        assert mcp.summarize(m)["id"] == "123456789012345678901234567890"


def test_regression_gopclntab_section_size_smaller_than_the_header(tmp_path):
    """A .gopclntab section header whose size was corrupted below 72 bytes: struct.error escaped."""
    if not os.path.exists(GO_BINARY):
        pytest.skip(f"{GO_BINARY} is missing")
    p = tmp_path / "caddy"
    data = bytearray(Path(GO_BINARY).read_bytes())
    with ElfFile(GO_BINARY) as e:
        idx = e.get_section(".gopclntab").index
    shoff, = struct.unpack_from("<Q", data, 0x28)
    for size in (0, 8, 71):
        struct.pack_into("<Q", data, shoff + idx * 64 + 32, size)
        p.write_bytes(data)
        clear_cache()
        with ElfFile(str(p)) as e, pytest.raises(HdrlogError, match="corrupt"):
            gopclntab.lookup(e, ["crypto/tls.(*Conn).Read"])


def test_regression_elf_error_never_quotes_control_characters(tmp_path):
    """A section whose name (read from the file) holds a newline or a terminal escape, reported in the error:
    the sentence stays on one line, escaped."""
    if _LIBSSL is None:
        pytest.skip("no libssl.so.3")
    data = bytearray(_LIBSSL)
    with ElfFile(LIBSSL) as e:
        sec = e.get_section(".dynsym")
        strtab = e.sections[struct.unpack_from("<H", data, 0x3E)[0]]
    shoff, = struct.unpack_from("<Q", data, 0x28)
    at = shoff + sec.index * 64
    name_off, = struct.unpack_from("<I", data, at)
    evil = b"\x1b[31mx\ny"
    data[strtab.offset + name_off:strtab.offset + name_off + len(evil)] = evil
    struct.pack_into("<Q", data, at + 32, 1 << 40)  # sh_size beyond the file: the error names the section
    p = tmp_path / "evil.so"
    p.write_bytes(data)
    clear_cache()
    with pytest.raises(HdrlogError) as exc:
        ElfFile(str(p))
    msg = str(exc.value)
    assert "\n" not in msg and "\x1b" not in msg and "\\x1b[31mx\\ny" in msg, msg
