"""HTTP/2 for an observer (src/hdrlog/h2.py): HPACK against the hpack package, frames fed whole, byte by
byte and in random pieces, mid-connection starts, losses, and detection in conntrack.

Traffic comes from the `h2` package (a real HTTP/2 client and server talking to each other in memory:
SETTINGS, WINDOW_UPDATE, Huffman, dynamic table, CONTINUATION for big header blocks) and from frames built
by hand where a feature needs forcing (padding, priority, table size updates).
"""

from __future__ import annotations

import random
import struct

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from hpack import Decoder, Encoder
from hypothesis import given, settings
from hypothesis import strategies as st

import hdrlog.h2 as hh
from hdrlog import h2hpack, h2messages
from hdrlog.conntrack import Conn
from hdrlog.h2 import PREFACE, UNKNOWN, H2Conn, HpackDecoder

from conftest import FIXTURES

hh.H2Parser.debug = True


# ------------------------------------------------------------------------------------------ helpers
def frame(ftype: int, flags: int, sid: int, payload: bytes) -> bytes:
    return struct.pack(">BHBBL", len(payload) >> 16, len(payload) & 0xFFFF, ftype, flags, sid) + payload


class Talk:
    """A real h2 client and server (the `h2` package) exchanging bytes in memory. ``log`` is the list of
    (direction seen from the server, bytes of one write): "in" client -> server, "out" server -> client."""

    def __init__(self, header_table_size: int | None = None):
        self.c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.s = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
        self.log: list[tuple[str, bytes]] = []
        self.c.initiate_connection()
        if header_table_size is not None:
            self.c.update_settings({h2.settings.SettingCodes.HEADER_TABLE_SIZE: header_table_size})
        self.s.initiate_connection()
        self.events: list = []
        self.pump()

    def pump(self):
        while True:
            moved = False
            d = self.c.data_to_send()
            if d:
                self.log.append(("in", d))
                evs = self.s.receive_data(d)
                self.events += evs
                self._ack(self.s, evs)
                moved = True
            d = self.s.data_to_send()
            if d:
                self.log.append(("out", d))
                self._ack(self.c, self.c.receive_data(d))
                moved = True
            if not moved:
                return

    @staticmethod
    def _ack(conn, evs):
        for e in evs:
            if isinstance(e, h2.events.DataReceived) and e.flow_controlled_length:
                conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)

    def request(self, i: int, extra=(), end=True, body: bytes | None = None) -> int:
        sid = self.c.get_next_available_stream_id()
        hdrs = [(":method", "POST" if body else "GET"), (":scheme", "https"), (":authority", "example.test"),
                (":path", f"/items/{i}?q=v{i}"), ("user-agent", "talk/1"), ("x-request-id", f"rid-{i}-zq")]
        self.c.send_headers(sid, hdrs + list(extra), end_stream=end and body is None)
        if body is not None:
            self.c.send_data(sid, body, end_stream=True)
        return sid

    def respond(self, sid: int, rid: str, status: int = 200, body: bytes = b"ok", trailers: bool = False,
                pad: int | None = None):
        self.s.send_headers(sid, [(":status", str(status)), ("content-type", "text/plain"), ("x-echo", rid)])
        self.s.send_data(sid, body, end_stream=not trailers, pad_length=pad)
        if trailers:
            self.s.send_headers(sid, [("grpc-status", "0"), ("x-trailer", rid)], end_stream=True)


def run(log, split=None, conn: H2Conn | None = None, skip: dict | None = None):
    """Feed a log to an H2Conn (exact start unless ``conn`` is given); split(bytes) -> pieces."""
    c = conn or H2Conn(exact=True)
    out = []
    ts = 0
    for d, data in log:
        ts += 1000
        if skip and skip.get(d, 0) > 0:  # drop the first bytes of a direction (capture started later)
            k = min(skip[d], len(data))
            skip[d] -= k
            data = data[k:]
            if not data:
                continue
        for piece in (split(data) if split else [data]):
            out += [(d, m) for m in c.parser(d).feed(piece, ts)]
    return c, out


def bytewise(data):
    return [data[i:i + 1] for i in range(len(data))]


def randsplit(seed):
    rnd = random.Random(seed)

    def split(data):
        out, i = [], 0
        while i < len(data):
            k = rnd.randint(1, 40)
            out.append(data[i:i + k])
            i += k
        return out

    return split


def hdr(m, name):
    return next((v for n, v in m.headers if n == name), None)


def conversation(n=30, seed=1):
    """n concurrent requests answered in random order; some with trailers, padding, a 404, a 103."""
    t = Talk()
    rnd = random.Random(seed)
    sids = {t.request(i): i for i in range(n)}
    t.pump()
    order = list(sids)
    rnd.shuffle(order)
    for sid in order:
        i = sids[sid]
        if i == 3:
            t.s.send_headers(sid, [(":status", "103"), ("link", "</a.css>; rel=preload")])
        t.respond(sid, f"rid-{i}-zq", status=404 if i == 5 else 200, trailers=i % 4 == 0,
                  pad=7 if i % 3 == 0 else None, body=b"x" * (i * 100))
        t.pump()
    return t, sids


def check_conversation(out, n=30):
    reqs = [m for d, m in out if m.kind == "request"]
    resps = [m for d, m in out if m.kind == "response" and not m.extra.get("trailers")]
    trailers = [m for d, m in out if m.extra.get("trailers")]
    assert sorted(hdr(m, "x-request-id") for m in reqs) == sorted(f"rid-{i}-zq" for i in range(n))
    for m in reqs:
        i = int(hdr(m, "x-request-id").split("-")[1])
        assert (m.method, m.path, m.authority, m.proto) == ("GET", f"/items/{i}?q=v{i}", "example.test", "h2")
        assert m.headers[0] == (":scheme", "https")  # kept; :method/:path/:authority are not repeated
        assert not any(n in (":method", ":path", ":authority") for n, _ in m.headers)
        assert not m.extra and not m.truncated
    assert len(resps) == n + 1  # + the 103
    for m in resps:
        assert m.request is not None and m.request.stream == m.stream
        assert hdr(m, "x-echo") in (hdr(m.request, "x-request-id"), None if m.status == 103 else "")
        assert m.latency_ms is not None and m.latency_ms >= 0
    st = {hdr(m, "x-echo"): m.status for m in resps if m.status != 103}
    assert st["rid-5-zq"] == 404 and st["rid-1-zq"] == 200
    assert [m.status for m in resps if hdr(m, "x-echo") is None] == [103]
    assert sorted(hdr(m, "x-trailer") for m in trailers) == sorted(f"rid-{i}-zq" for i in range(0, n, 4))
    for m in trailers:
        assert m.kind == "response" and m.status == 200 and m.request is not None
        assert hdr(m, "grpc-status") == "0"
    return reqs, resps, trailers


# ------------------------------------------------------------------------------------------ HPACK
HEADER = st.tuples(
    st.sampled_from(["x-a", "x-request-id", "cookie", "accept", "user-agent", ":path", "x-ünï", "date"]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=40),
)


@settings(max_examples=150, deadline=None)
@given(blocks=st.lists(st.lists(HEADER, max_size=12), min_size=1, max_size=12), huffman=st.booleans(),
       size=st.sampled_from([None, 0, 64, 256, 4096]))
def test_hpack_matches_reference_decoder(blocks, huffman, size):
    enc = Encoder()
    ref = Decoder()
    ours = HpackDecoder()
    for i, headers in enumerate(blocks):
        if size is not None and i == 1:
            enc.header_table_size = size  # emits a dynamic table size update in the next block
        data = enc.encode(headers, huffman=huffman)
        want = [(n, v) for n, v in ref.decode(data)]
        got, incomplete = ours.decode(data)
        assert got == want and not incomplete


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_huffman_matches_reference(raw):
    from hpack.huffman import HuffmanEncoder
    from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH

    code = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH).encode(raw)
    assert h2hpack._huffman_decode(code) == raw


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80))
def test_hpack_never_raises_on_garbage(data):
    fields, incomplete = HpackDecoder().decode(data)
    assert isinstance(fields, list)


def test_hpack_mid_stream_placeholders_and_recovery():
    """A decoder that missed the first blocks: unknown indices are placeholders (value withheld), literals
    and static entries decode, and once the encoder re-inserts what it uses everything decodes again."""
    enc = Encoder()
    secret = [("authorization", "Bearer s3cret"), ("x-k", "v")]
    enc.encode(secret)  # missed by the observer: both inserted into the encoder's table
    late = HpackDecoder(exact=False)
    got, incomplete = late.decode(enc.encode([(":method", "GET"), ("authorization", "Bearer s3cret"),
                                              ("x-new", "fresh")]))
    assert incomplete
    assert got == [(":method", "GET"), (UNKNOWN, UNKNOWN), ("x-new", "fresh")]
    assert "s3cret" not in repr(got)
    # the encoder's table churns: the old entries go, re-inserted ones decode again
    enc.header_table_size = 0
    enc.header_table_size = 4096
    got, incomplete = late.decode(enc.encode(secret))
    assert not incomplete and got == secret


def test_hpack_unknown_name_withholds_value():
    enc = Encoder()
    enc.encode([("x-custom-secret-name", "a")])
    data = enc.encode([("x-custom-secret-name", "other-value")])  # literal, name from the missed entry
    got, incomplete = HpackDecoder(exact=False).decode(data)
    assert incomplete and got == [(UNKNOWN, UNKNOWN)]


def test_hpack_table_bigger_than_default_is_followed():
    """A peer announcing SETTINGS_HEADER_TABLE_SIZE 65536 lets the encoder use a larger table: entries past
    4096 bytes must still be there."""
    enc = Encoder()
    enc.header_table_size = 65536
    ours = HpackDecoder()
    ours.set_settings_max(65536)
    hs = [(f"x-h{i}", "v" * 200) for i in range(100)]  # ~23 KB of entries
    assert ours.decode(enc.encode(hs)) == (hs, False)
    assert ours.decode(enc.encode(hs)) == (hs, False)  # all by index now


def test_hpack_cut_block_resets_table():
    enc = Encoder()
    data = enc.encode([("x-a", "1"), ("x-b", "2")])
    d = HpackDecoder()
    got, incomplete = d.decode(data[:-1])
    assert incomplete and got == [("x-a", "1")] and d.table == [] and d.resets == 1


# ------------------------------------------------------------------------------------------ frames
@pytest.mark.parametrize("split", [None, bytewise, randsplit(1), randsplit(2)], ids=["whole", "bytewise", "rand1", "rand2"])
def test_conversation_concurrent_streams(split):
    t, _ = conversation()
    c, out = run(t.log, split)
    check_conversation(out)
    assert c.role == "server" and not c.streams  # every stream ended and was forgotten
    assert all(d == "in" for d, m in out if m.kind == "request")


def test_trailing_data_in_one_chunk_per_direction():
    """Everything each side wrote, concatenated into one chunk per direction (frames followed by more
    frames in the same read), requests first."""
    t, _ = conversation(n=10)
    ins = b"".join(d for k, d in t.log if k == "in")
    outs = b"".join(d for k, d in t.log if k == "out")
    c, out = run([("in", ins), ("out", outs)])
    check_conversation(out, n=10)


def test_continuation_big_header_block():
    t = Talk()
    big = "b" * 40000  # more than 16 KiB: HEADERS + CONTINUATION frames
    sid = t.request(0, extra=[("x-big", big)])
    t.pump()
    t.respond(sid, "rid-0-zq")
    t.pump()
    raw = b"".join(d for k, d in t.log if k == "in")
    assert struct.unpack_from(">B", raw, len(PREFACE) + 3)[0] in (4, 1)
    for split in (None, bytewise):
        c, out = run(t.log, split)
        (req,) = [m for _, m in out if m.kind == "request"]
        assert hdr(req, "x-big") == big and not req.truncated and hdr(req, "x-request-id") == "rid-0-zq"


def test_padding_priority_and_hand_built_frames():
    enc = Encoder()
    block = enc.encode([(":method", "GET"), (":scheme", "https"), (":path", "/p"), (":authority", "a.test"),
                        ("x-one", "1")])
    pad = 9
    prio = struct.pack(">LB", 0x80000003, 200)
    headers = frame(1, 0x08 | 0x20 | 0x01, 1, bytes([pad]) + prio + block[:5] + b"\0" * pad)  # padded+prio
    cont = frame(9, 0x04, 1, block[5:])
    data = bytes([3]) + b"abc" + b"\0\0\0"
    c = H2Conn(exact=True)
    p = c.parser("in")
    msgs = p.feed(PREFACE + frame(4, 0, 0, b"") + frame(2, 0, 1, prio) + headers + cont
                  + frame(8, 0, 0, b"\0\0\x10\0"), 1)
    assert [(m.method, m.path, m.authority, m.headers) for m in msgs] == [
        ("GET", "/p", "a.test", [(":scheme", "https"), ("x-one", "1")])]
    renc = Encoder()
    out = c.parser("out").feed(frame(1, 0x04, 1, renc.encode([(":status", "204")]))
                               + frame(0, 0x08 | 0x01, 1, data), 2)
    assert [(m.status, m.request.path) for m in out] == [(204, "/p")]
    assert not c.streams


def test_rst_stream_and_goaway_and_unknown_frames():
    t = Talk()
    s1 = t.request(1, end=False)
    s2 = t.request(2)
    t.pump()
    t.c.reset_stream(s1)
    t.respond(s2, "rid-2-zq")
    t.pump()
    t.s.close_connection()
    t.pump()
    log = list(t.log)
    log.insert(2, ("in", frame(0xB, 0xFF, 0, b"ext-frame")))  # unknown frame type: skipped
    c, out = run(log)
    assert [(m.kind, m.stream) for _, m in out] == [("request", s1), ("request", s2), ("response", s2)]
    assert s1 not in c.streams  # RST_STREAM forgot it


def test_large_data_is_skipped_and_capture_cuts_inside_it_cost_nothing():
    """A 1 MiB upload: DATA payloads are skipped; bytes the capture did not get inside DATA payloads keep
    frame sync and the HPACK table (the next request, indexed from the table, decodes fully)."""
    t = Talk()
    t.c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**30})
    t.s.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**30})
    t.pump()
    t.s.increment_flow_control_window(2**30)
    t.c.increment_flow_control_window(2**30)
    t.pump()
    sid = t.c.get_next_available_stream_id()
    hdrs = [(":method", "PUT"), (":scheme", "https"), (":authority", "example.test"), (":path", "/up"),
            ("x-request-id", "up-1")]
    t.c.send_headers(sid, hdrs)
    t.pump()
    body = b"z" * (1 << 20)
    for i in range(0, len(body), 16384):
        t.c.send_data(sid, body[i:i + 16384], end_stream=i + 16384 >= len(body))
    t.pump()
    t.respond(sid, "up-1")
    t.request(2, extra=[("x-request-id", "up-1")])  # x-request-id now comes from the dynamic table
    t.pump()
    c = H2Conn(exact=True)
    out = []
    for d, data in t.log:
        p = c.parser(d)
        for k in range(0, len(data), 16384):  # like the kernel side: 16 KiB chunks, keep only 1 KiB of each
            out += p.feed(data[k:k + 1024], 1)
            if len(data[k:k + 16384]) > 1024:
                out += p.gap(len(data[k:k + 16384]) - 1024, 1)
    reqs = [m for m in out if m.kind == "request"]
    assert [m.path for m in reqs] == ["/up", "/items/2?q=v2"]
    assert all(not m.extra for m in out), [m.extra for m in out]
    assert c.parser("in").hpack.resets == 0


@pytest.mark.parametrize("skip_writes", [1, 2, 3, 5])
def test_mid_connection_start_at_a_write_boundary(skip_writes):
    """hdrlog attached after the connection started: the first writes of both directions are missing.
    Nothing wrong is ever emitted: known fields are right, unknown ones are placeholders and marked, and
    the table refills as the encoder's entries churn (the table holds ~50 of these requests)."""
    t = Talk()
    n = 160
    for i in range(n):
        sid = t.request(i)
        t.pump()
        t.respond(sid, f"rid-{i}-zq")
        t.pump()
    seen = {"in": 0, "out": 0}
    log = []
    for d, data in t.log:
        seen[d] += 1
        if seen[d] > skip_writes:
            log.append((d, data))
    c, out = run(log, conn=H2Conn(exact=False))
    check_no_garbage(out)
    reqs = [m for _, m in out if m.kind == "request"]
    assert len(reqs) >= n - skip_writes
    # writes 1-2 of each side (preface, SETTINGS) carry no header block
    assert any("hpack_incomplete" in m.extra for m in reqs) == (skip_writes > 2)
    assert recovered(reqs[-1], n - 1)


def recovered(m, i):
    """The table refilled: fields whose entries the encoder re-inserted decode again (:authority was in
    the table before capture began). x-request-id may stay unknown: each new value is inserted with its
    name taken from the previous entry, a chain that goes back to an entry the capture never saw."""
    return (m.method, m.path, m.authority, hdr(m, "user-agent")) == ("GET", f"/items/{i}?q=v{i}", "example.test",
                                                                      "talk/1")


def check_no_garbage(out):
    for d, m in out:
        for n, v in m.headers:
            if n == UNKNOWN:
                assert v == UNKNOWN and m.extra.get("hpack_incomplete")
                continue
            assert n in (":scheme", "user-agent", "x-request-id", "content-type", "x-echo"), (n, v)
        if m.kind == "request":
            rid = hdr(m, "x-request-id")
            i = int(rid.split("-")[1]) if rid else None
            if m.path is not None and i is not None:
                assert m.path == f"/items/{i}?q=v{i}"
            assert m.method in ("GET", None) and m.authority in ("example.test", None)
        else:
            assert m.status in (200, None)
            if m.request is not None and hdr(m, "x-echo") and hdr(m.request, "x-request-id"):
                assert hdr(m, "x-echo") == hdr(m.request, "x-request-id")


@pytest.mark.parametrize("seed", range(6))
def test_mid_connection_start_at_any_byte(seed):
    """The capture starts at an arbitrary byte: the parser waits for a chunk that starts with frames."""
    t = Talk()
    for i in range(120):
        sid = t.request(i)
        t.pump()
        t.respond(sid, f"rid-{i}-zq", body=b"y" * random.Random(i).randint(0, 3000))
        t.pump()
    rnd = random.Random(seed)
    total = {d: sum(len(x) for k, x in t.log if k == d) for d in ("in", "out")}
    skip = {d: rnd.randint(1, total[d] // 3) for d in ("in", "out")}
    c, out = run(t.log, conn=H2Conn(exact=False), skip=skip)
    check_no_garbage(out)
    reqs = [m for _, m in out if m.kind == "request"]
    assert len(reqs) > 60 and recovered(reqs[-1], 119)


def test_lost_events_reset_and_recover():
    """gap(0) (events lost, amount unknown) in the middle: sync and table are dropped, then regained."""
    t = Talk()
    for i in range(150):
        sid = t.request(i)
        t.pump()
        t.respond(sid, f"rid-{i}-zq")
        t.pump()
    c = H2Conn(exact=True)
    out = []
    for k, (d, data) in enumerate(t.log):
        if 40 <= k < 44:
            continue  # dropped by the ring buffer
        if k == 44:
            for dd in ("in", "out"):
                out += [(dd, m) for m in c.parser(dd).gap(0, k)]
        out += [(d, m) for m in c.parser(d).feed(data, k)]
    check_no_garbage(out)
    assert c.parser("in").hpack.resets >= 1
    reqs = [m for _, m in out if m.kind == "request"]
    assert any(m.extra.get("hpack_incomplete") for m in reqs) and recovered(reqs[-1], 149)


def test_settings_first_then_preface_is_exact():
    """A server that writes its SETTINGS before reading the client preface: still an exact start."""
    t = Talk()
    sid = t.request(0)
    t.pump()
    t.respond(sid, "rid-0-zq")
    t.pump()
    out_first = sorted(t.log, key=lambda x: x[0] != "out")  # all server writes first, then the client's
    server_settings = out_first[0]
    conn = Conn(id="1", pid=1, addr=1, lib="openssl", comm="t")
    msgs = conn.feed("out", server_settings[1], 1)
    assert conn.h2 is not None and not msgs
    got = []
    for d, data in t.log:
        if (d, data) == server_settings:
            continue
        got += conn.feed(d, data, 2)
    assert conn.h2.exact and [m.kind for m in got] == ["request", "response"]


# ------------------------------------------------------------------------------------------ detection
def test_sniff():
    assert hh.sniff(PREFACE + b"xx") == "preface"
    assert hh.sniff(PREFACE[:10]) is None
    assert hh.sniff(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n") == "no"
    assert hh.sniff(b"HTTP/1.1 200 OK\r\n\r\n") == "no"
    assert hh.sniff(frame(4, 0, 0, b"\0\x03\0\0\0\x64")) == "frames"  # one complete SETTINGS frame
    assert hh.sniff(frame(0, 0, 1, b"abc")) == "no"  # a lone DATA frame is too weak
    assert hh.sniff(frame(0, 0, 1, b"abc") + frame(8, 0, 1, b"\0\0\0\1")) == "frames"
    assert hh.sniff(frame(4, 0, 1, b"")) == "no"  # SETTINGS on a stream
    assert hh.sniff(b'{"jsonrpc":"2.0"}') == "no"


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=200))
def test_sniff_rejects_text(data):
    text = bytes(b % 95 + 32 for b in data)  # printable ASCII: HTTP/1, JSON, ...
    assert hh.sniff(text) in ("no", None)


def test_conntrack_switches_to_h2_and_http1_is_untouched():
    t, _ = conversation(n=8)
    conn = Conn(id="1", pid=1, addr=1, lib="openssl", comm="t")
    out = []
    for d, data in t.log:
        out += [(d, m) for m in conn.feed(d, data, 1)]
    assert conn.h2 is not None and conn.h2.exact and conn.role == "server"
    check_conversation(out, n=8)
    h1 = Conn(id="2", pid=1, addr=2, lib="openssl", comm="t")
    msgs = h1.feed("in", b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n", 1)
    assert h1.h2 is None and [m.proto for m in msgs] == ["http/1.1"] and not h1.pre


def test_conntrack_detects_h2_mid_connection_by_frame_shape():
    t = Talk()
    for i in range(80):
        sid = t.request(i)
        t.pump()
        t.respond(sid, f"rid-{i}-zq")
        t.pump()
    conn = Conn(id="1", pid=1, addr=1, lib="openssl", comm="t")
    out = []
    for d, data in t.log[6:]:
        out += [(d, m) for m in conn.feed(d, data, 1)]
    assert conn.h2 is not None and not conn.h2.exact
    check_no_garbage(out)
    assert len([m for _, m in out if m.kind == "response" and m.request is not None]) > 60


def test_bench_runs():
    """The timing helper stays runnable (numbers are in the README and the module)."""
    hh._bench(50)


# ------------------------------------------------------------------------------------------ recorded
def replayed(name: str) -> list[dict]:
    import orjson

    from hdrlog.redact import Redactor
    from hdrlog.replay import replay

    class Sink:
        records: list = []

        def write(self, r):
            self.records.append(orjson.loads(orjson.dumps(r)))

        def flush(self):
            pass

    s = Sink()
    s.records = []
    replay(str(FIXTURES / f"{name}.events.jsonl"), s, Redactor(key=b"k" * 32))
    return s.records


def test_fixture_nginx_h2_curl():
    """Kernel events recorded from nginx (ssl http2) and curl (tests/record_fixtures.py)."""
    recs = replayed("nginx_h2_curl")
    reqs = [r for r in recs if r["kind"] == "request"]
    resps = [r for r in recs if r["kind"] == "response"]
    tags = [f"h2t-fixture-{i}-0123456789abcdef" for i in range(6)]
    assert sorted(dict(r["headers"])["x-h2-tag"] for r in reqs) == tags
    assert {r["proto"] for r in recs} == {"h2"} and {r["conn"]["role"] for r in recs} == {"server"}
    for r in resps:
        q = next(x for x in reqs if x["conn"]["id"] == r["conn"]["id"] and x["stream"] == r["stream"])
        assert dict(r["headers"])["x-echo"] == dict(q["headers"])["x-h2-tag"]
        assert r["request"] == {"method": "GET", "path": q["path"]}
        assert r["status"] == (404 if q["path"] == "/missing" else 200)
    assert any(r["path"].startswith("/c?token=<redacted:") for r in reqs)
    assert all(dict(r["headers"])["authorization"].startswith("Bearer <redacted:") for r in reqs)
    assert not any(r.get("hpack_incomplete") or r["truncated"] for r in recs)


def test_fixture_nginx_h2_late_attach():
    """Recorded: hdrlog attached to nginx after an httpx h2 connection had sent 3 requests, 60 more follow."""
    recs = replayed("nginx_h2_late_attach")
    reqs = [r for r in recs if r["kind"] == "request"]
    assert [r["path"] for r in reqs] == [f"/after/{i}" for i in range(60)]
    assert reqs[0].get("hpack_incomplete") is True
    for r in reqs:
        for n, v in r["headers"]:
            assert (n, v) in ((UNKNOWN, UNKNOWN), ("x-fixed", "same"), (":scheme", "https"),
                              ("accept", "*/*"), ("accept-encoding", "gzip, deflate"),
                              ("user-agent", dict(r["headers"]).get("user-agent"))) or n == "x-h2-tag"
            if n == "x-h2-tag":
                assert v == "after-" + r["path"].rsplit("/", 1)[1]
        assert r["authority"] in (None, reqs[-1]["authority"])
    last = reqs[-1]  # the table refilled: entries the encoder re-inserted decode again
    assert last["authority"] and dict(last["headers"]).get("x-fixed") == "same"
    resps = [r for r in recs if r["kind"] == "response"]
    assert len(resps) == 60 and all(dict(r["headers"])["x-echo"] == "after-" + r["request"]["path"][7:] for r in resps)


def test_conntrack_preface_split_across_reads():
    t, _ = conversation(n=8)
    conn = Conn(id="1", pid=1, addr=1, lib="openssl", comm="t")
    out = []
    first = True
    for d, data in t.log:
        if first:  # the client preface arrives in 3 reads
            first = False
            for piece in (data[:5], data[5:17], data[17:]):
                out += [(d, m) for m in conn.feed(d, piece, 1)]
            continue
        out += [(d, m) for m in conn.feed(d, data, 1)]
    assert conn.h2 is not None and conn.h2.exact
    check_conversation(out, n=8)


def test_held_bodies_are_bounded_per_connection():
    from hdrlog.mcp import Mcp

    c = H2Conn(exact=True, body_hook=Mcp())
    p = c.parser("in")
    p.feed(PREFACE, 0)
    enc = Encoder()
    out = []
    for i in range(h2messages.MAX_HELD + 5):  # POSTs whose bodies never come
        block = enc.encode([(":method", "POST"), (":scheme", "https"), (":path", "/mcp"), (":authority", "a"),
                            ("content-type", "application/json")])
        out += p.feed(frame(1, 0x04, 2 * i + 1, block), i)
    assert c.held == h2messages.MAX_HELD and len(out) == 5
    out += p.close(99)
    assert c.held == 0 and len(out) == h2messages.MAX_HELD + 5
