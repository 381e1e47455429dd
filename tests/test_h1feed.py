"""The C feed (hdrlog._h1feed, used by Http1Parser.feed): the recorded fixtures replayed through the whole pipeline
with it, with the C head parser alone (FastHeads) and with llhttp alone give the same JSON records and counters;
MCP-specific heads and bodies (the decisions it makes in place of Mcp.__call__ and BodySink) on random streams;
exceptions from hooks and sinks; references (nothing leaked, nothing freed too early).

The random-stream differential tests of tests/test_h1fast.py (same_both_ways) also run every stream with the C feed.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_h1fast import EXAMPLES, drive, full

from hdrlog import conntrack, http1
from hdrlog.conntrack import Tracker
from hdrlog.http1 import Http1Parser
from hdrlog.mcp import Mcp
from hdrlog.redact import Redactor
from hdrlog.replay import replay

FIXTURES = sorted((Path(__file__).resolve().parent.parent / "fixtures").glob("*.events.jsonl"))
PROPS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
MODES = {"llhttp": (False, False), "fastheads": (True, False), "cfeed": (True, True), "cfeed-pytrack": (True, True)}
DELIVER, TRACK = conntrack._DELIVER, conntrack._TRACK


@pytest.fixture(autouse=True)
def _debug(monkeypatch):
    monkeypatch.setattr(Http1Parser, "debug", True)


def test_the_c_feed_is_built_and_used():
    assert http1._CFEED is not None, http1.CFEED_ERROR
    assert Http1Parser.fast and Http1Parser.cfeed
    assert conntrack._CFEED is http1._CFEED and DELIVER is not None and TRACK is not None
    t = Tracker(lambda *a: None, lib_of_pid=lambda pid: "openssl")
    assert t.on_event.__class__.__name__ == "TrackedOnEvent"


class Records:
    def __init__(self):
        self.lines = []

    def write(self, rec):
        self.lines.append(orjson.dumps(rec))

    def flush(self):
        pass


def set_mode(mode: str, monkeypatch):
    """The parser's switches, and pairing (conntrack._DELIVER) and on_event (conntrack._TRACK, for the Trackers made
    after this) in C with the C feed only ("cfeed-pytrack": on_event in Python)."""
    fast, cfeed = MODES[mode]
    monkeypatch.setattr(Http1Parser, "fast", fast)
    monkeypatch.setattr(Http1Parser, "cfeed", cfeed)
    monkeypatch.setattr(conntrack, "_DELIVER", DELIVER if cfeed else None)
    monkeypatch.setattr(conntrack, "_TRACK", TRACK if mode == "cfeed" else None)


def run_fixture(path, mode: str, payloads: bool, monkeypatch):
    set_mode(mode, monkeypatch)
    sink = Records()
    pipe = replay(str(path), sink, Redactor(key=b"k" * 32), mcp_payloads=payloads)
    t = pipe.tracker
    for c in list(t.conns.values()):  # what is left open is flushed as at the end of a capture
        t._flush(c, type("E", (), {"ts_ns": c.last_ns, "tid": 0})())
    hook = t.body_hook
    return sink.lines, dict(t.counts), (hook.candidates, hook.recognised), pipe.truncated


@pytest.mark.parametrize("payloads", [False, True])
@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name.split(".")[0])
def test_fixtures_replay_the_same_three_ways(path, payloads, monkeypatch):
    ref = run_fixture(path, "llhttp", payloads, monkeypatch)
    for mode in ("fastheads", "cfeed-pytrack", "cfeed"):
        assert run_fixture(path, mode, payloads, monkeypatch) == ref, mode


def test_the_keepalive_fixture_is_fed_in_c(monkeypatch):
    """The bench's exchange (request; response head; its JSON body in the next chunk) is taken in C: on_event, the
    feed and pairing; the Python rest of on_event (Tracker._on_data) runs for the chunks the C feed declines."""
    calls = {"on_data": 0}
    real = Tracker._on_data

    def counting(self, *a):
        calls["on_data"] += 1
        return real(self, *a)

    monkeypatch.setattr(Tracker, "_on_data", counting)
    lines, counts, *_ = run_fixture(
        FIXTURES[[p.name for p in FIXTURES].index("python_ssl_server_keepalive.events.jsonl")], "cfeed", False,
        monkeypatch)
    # in Python: a new connection's first event, the first chunk of each direction (state "detect"), a chunked
    # response and what follows it (14 of the 50 events)
    assert lines and counts["events"] >= 40 and calls["on_data"] <= 16, (counts, calls)


# ------------------------------------------------------------------------------------------ MCP heads and bodies

CTYPES = [b"application/json", b"Application/JSON; charset=utf-8", b"text/event-stream", b"TEXT/Event-Stream",
          b"text/html", b"appl\xc3\xa4cation/json", b"\xe2\x84\xaajson", b"", b"application/problem+json"]
JSONRPC = [b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}}',
           b'{"jsonrpc":"2.0","id":1,"result":{"isError":true}}', b'{"users": []}', b"",
           b'data: {"jsonrpc":"2.0","id":2,"result":{}}\r\n\r\n', b"x" * 511, b"y" * 512, b"z" * 600,
           b" " * 600 + b'{"jsonrpc":"2.0","id":3}', b'{"jsonrpc"']


@st.composite
def mcp_message(draw, req: bool):
    body = draw(st.sampled_from(JSONRPC))
    hdrs = []
    for _ in range(draw(st.integers(0, 2))):
        hdrs.append(b"Content-Type: " + draw(st.sampled_from(CTYPES)))
    if draw(st.integers(0, 3)) == 0:
        hdrs.append(draw(st.sampled_from([b"Mcp-Session-Id: s1", b"mcp-session-id: ", b"MCP-Protocol-Version: 2025",
                                          b"Mcp-Session-Id: \xc3\xa9"])))
    framing = draw(st.sampled_from(["cl"] * 8 + ["none", "wrong"]))
    if framing == "cl":
        hdrs.append(b"Content-Length: %d" % len(body))
    elif framing == "wrong":
        hdrs.append(b"Content-Length: %d" % max(0, len(body) + draw(st.integers(-5, 5))))
    draw(st.randoms(use_true_random=False)).shuffle(hdrs)
    start = (draw(st.sampled_from([b"POST /mcp HTTP/1.1", b"GET /mcp HTTP/1.1", b"DELETE /mcp HTTP/1.0"])) if req
             else draw(st.sampled_from([b"HTTP/1.1 200 OK", b"HTTP/1.1 202 Accepted", b"HTTP/1.0 200 OK",
                                        b"HTTP/1.1 204 No Content", b"HTTP/1.1 304 NM"])))
    return start + b"\r\n" + b"".join(h + b"\r\n" for h in hdrs) + b"\r\n" + body


def mcp_drive(ops, methods, limit: int, payloads: bool, mode: str):
    """drive() with an Mcp hook of this limit, its counters logged at the end."""
    hook = Mcp(limit=limit, payloads=payloads)
    import test_h1fast

    saved = test_h1fast.Mcp
    test_h1fast.Mcp = lambda: hook
    try:
        log = drive(ops, list(methods), "mcp", *MODES[mode])
    finally:
        test_h1fast.Mcp = saved
    return log + [("mcp", hook.candidates, hook.recognised)]


@PROPS
@given(st.data())
def test_mcp_streams_the_same_three_ways(data):
    req = data.draw(st.booleans(), label="req")
    parts = data.draw(st.lists(mcp_message(req), min_size=1, max_size=5), label="parts")
    blob = b"".join(parts)
    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(1, len(blob) - 1)), max_size=6), label="cuts")))
    if data.draw(st.booleans(), label="per message"):
        chunks = []
        for m in parts:  # head and body apart, or together: as TLS reads and writes deliver them
            h = m.index(b"\r\n\r\n") + 4
            chunks += [m[:h], m[h:]] if data.draw(st.booleans()) else [m]
        chunks = [c for c in chunks if c]
    else:
        chunks = [blob[a:b] for a, b in zip([0, *cuts], [*cuts, len(blob)]) if a < b]
    ops = []
    for c in chunks:
        extra = data.draw(st.sampled_from([""] * 12 + ["gap", "release", "trim"]), label="op")
        if extra == "gap":
            ops.append(("gap", data.draw(st.sampled_from([1, 30, 1 << 20]), label="g")))
        elif extra:
            ops.append((extra, None))
        ops.append(("feed", c))
    ops.append(("close", None))
    methods = data.draw(st.lists(st.sampled_from(["GET", "POST", "HEAD", "DELETE"]), max_size=6), label="methods")
    limit = data.draw(st.sampled_from([1 << 18, 40, 520, 0]), label="limit")
    payloads = data.draw(st.booleans(), label="payloads")
    ref = mcp_drive(ops, methods, limit, payloads, "llhttp")
    assert mcp_drive(ops, methods, limit, payloads, "fastheads") == ref
    assert mcp_drive(ops, methods, limit, payloads, "cfeed") == ref


# ------------------------------------------------------------------------------------------ whole connections


def tracker_log(evs, mode: str, monkeypatch):
    """Events through a Tracker (MCP hook on): every emitted message in full, with its request's index, and the
    connections' counters."""
    set_mode(mode, monkeypatch)
    seen: list = []
    log: list = []

    def emit(c, d, m, ev):
        seen.append(m)
        req = m.request
        log.append((c.id, d, full(m), None if req is None else next(i for i, x in enumerate(seen) if x is req),
                    m.latency_ms, c.messages, c.pairer.role, c.pairer.unpaired, c.local, c.peer, c.attr, c.last_ns,
                    ev.local, ev.peer))

    hook = Mcp()
    t = Tracker(emit, lib_of_pid=lambda pid: "openssl", body_hook=hook)
    for ev in evs:
        t.on_event(ev)
    return log, dict(t.counts), hook.candidates, hook.recognised, {
        k: (c.messages, c.gaps, c.pairer.unpaired, c.pairer.role, c.pairer.pending("in"), c.pairer.pending("out"),
            c.local, c.peer, c.attr, c.last_ns, c.seen, {d: (p.state, p.errors, p.gaps) for d, p in c.parsers.items()})
        for k, c in t.conns.items()}, t.fds.__dict__ if hasattr(t.fds, "__dict__") else None


TUPLES = [(0, None, None)] * 4 + [(1, "10.0.0.1:443", "10.0.0.2:5000"), (2, "10.0.0.1:443", "10.0.0.3:6000"),
                                  (1, "10.0.0.1:0", "10.0.0.2:5000")]


@st.composite
def wellformed(draw, req: bool):
    from test_h1fast import heads

    head = draw(heads(req))
    body = draw(st.sampled_from([b"", b"hello", b'{"users": []}', JSONRPC[0], b"z" * 600]))
    if head.endswith(b"\r\n\r\n") and b"ontent-" not in head:
        head = head[:-2] + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        return head + body
    return head


@PROPS
@given(data=st.data())
def test_connections_the_same_three_ways(monkeypatch, data):
    """Exchanges on a few connections, the server's view (requests in, responses out) or the client's, requests
    sometimes pipelined, heads and bodies in chunks of their own or together, with lost events, truncated calls and
    closes: the same messages, pairings, latencies and counters with the C feed and pairing as without."""
    from hdrlog.events import Attr, Event, Kind

    evs = []
    ts = data.draw(st.sampled_from([0, 10**18, (1 << 64) - 10**9]), label="t0")
    for _ in range(data.draw(st.integers(1, 8), label="n")):
        conn = data.draw(st.integers(1, 3), label="conn")
        server = conn != 3
        what = data.draw(st.sampled_from(["exchange", "exchange", "exchange", "pipelined", "req", "resp", "close"]),
                         label="what")
        if what == "close":
            evs.append(Event(ts, conn, 1, 1, 0, 0, 0, int(Kind.CLOSE), 0, 0, int(Attr.NONE), None, None, "x", -1, b""))
            continue
        kinds = {"exchange": [True, False], "pipelined": [True, True, False, False], "req": [True],
                 "resp": [False]}[what]
        for req in kinds:
            msg = data.draw(wellformed(req), label="msg")
            if data.draw(st.integers(0, 7), label="mangle") == 0:
                msg = msg[: data.draw(st.integers(0, len(msg)), label="cut")]
            h = msg.find(b"\r\n\r\n") + 4
            chunks = [msg[:h], msg[h:]] if h > 3 and data.draw(st.booleans(), label="apart") else [msg]
            d = (1 if req else 2) if server else (2 if req else 1)  # events.Dir: IN 1, OUT 2
            for chunk in chunks:
                if not chunk:
                    continue
                ts += data.draw(st.sampled_from([1, 500, 1500, 10**6 + 500, 123456, 1 << 41]), label="dt")
                odd = data.draw(st.sampled_from(["", "", "", "", "", "", "lost", "trunc"]), label="odd")
                length = len(chunk) + (data.draw(st.integers(1, 99), label="more") if odd == "trunc" else 0)
                attr, local, peer = data.draw(st.sampled_from(TUPLES), label="tuple")
                fd = data.draw(st.sampled_from([-1, -1, -1, 5]), label="fd")
                evs.append(Event(ts, conn, 1, 1, length, 0, int(odd == "lost"), int(Kind.DATA), 0, d, attr, local,
                                 peer, "x", fd, chunk))
    ts_ok = all(e.ts_ns < 1 << 64 for e in evs)
    if not ts_ok:
        return
    ref = tracker_log(evs, "llhttp", monkeypatch)
    for mode in ("fastheads", "cfeed-pytrack", "cfeed"):
        assert tracker_log(evs, mode, monkeypatch) == ref, mode


HEAD_RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"


@pytest.mark.parametrize("hook", ["none", "rec", "mcp"])
def test_edge_cases_the_same_three_ways(hook):
    cases = [
        # a HEAD response with the next response behind it (the C feed hands the rest to _resume)
        ([("feed", HEAD_RESP + HEAD_RESP + b"hello")], ["HEAD", "GET"]),
        ([("feed", HEAD_RESP + b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")],
         ["HEAD", "POST"]),
        # CONNECT 200: a tunnel
        ([("feed", b"HTTP/1.1 200 Connection established\r\n\r\n"), ("feed", b"\x16\x03\x01")], ["CONNECT"]),
        # 204/304 with a Content-Length, with and without bytes behind the head
        ([("feed", b"HTTP/1.1 204 NC\r\nContent-Length: 5\r\n\r\n"), ("feed", HEAD_RESP + b"hello")], ["GET"] * 2),
        ([("feed", b"HTTP/1.1 304 NM\r\nContent-Length: 5\r\n\r\n" + HEAD_RESP + b"hello")], ["GET"] * 2),
        # a huge Content-Length: skipped by length
        ([("feed", b"POST /u HTTP/1.1\r\nContent-Length: 999999999999999999\r\n\r\nabc"), ("feed", b"x" * 9999)], ()),
        # a response without Content-Length: until close (left to Python)
        ([("feed", b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"), ("feed", b"}"), ("close", None)],
         ["GET"]),
        # non-ASCII values, empty values
        ([("feed", b"GET /\xc3 HTTP/1.1\r\nX: \xff\xfe\r\nY:\r\n\r\n"), ("feed", b"GET / HTTP/1.1\r\nX: \xc3\xa9\r\n\r\n")],
         ()),
        # a body that ends exactly at the chunk's end, then the next head
        ([("feed", b"POST /u HTTP/1.1\r\nX-Body: 3\r\nContent-Type: application/json\r\nContent-Length: 4\r\n\r\n"),
          ("feed", b"ab"), ("feed", b"cd"), ("feed", b"GET / HTTP/1.1\r\n\r\n")], ()),
    ]
    for ops, methods in cases:
        ref = drive(ops, list(methods), hook, False)
        assert drive(ops, list(methods), hook, True) == ref
        assert drive(ops, list(methods), hook, True, True) == ref


def test_subclasses_and_other_buffers_are_left_to_python():
    class Sub(Http1Parser):
        __slots__ = ()

    p = Sub()
    p.feed(b"GET / HTTP/1.1\r\n\r\n", 1)
    assert http1._CFEED(p, b"GET / HTTP/1.1\r\n\r\n", 2) is None
    q = Http1Parser()
    q.feed(b"GET / HTTP/1.1\r\n\r\n", 1)
    assert http1._CFEED(q, memoryview(b"GET / HTTP/1.1\r\n\r\n"), 2) is None
    assert http1._CFEED(q, b"", 2) is None
    assert [m.path for m in http1._CFEED(q, b"GET /x HTTP/1.1\r\n\r\n", 2)] == ["/x"]
    with pytest.raises(TypeError):
        http1._CFEED(q, b"")


# ------------------------------------------------------------------------------------------ exceptions


class Boom(Exception):
    pass


class BadSink:
    def __init__(self, where):
        self.where = where

    def add(self, b):
        if self.where == "add":
            raise Boom("add")
        return True

    def finish(self, complete):
        if self.where == "finish":
            raise Boom("finish")


@pytest.mark.parametrize("where", ["hook", "add", "finish", "rt"])
@pytest.mark.parametrize("debug", [True, False])
def test_exceptions_the_same_both_ways(where, debug, monkeypatch):
    monkeypatch.setattr(Http1Parser, "debug", debug)

    def run(cfeed):
        monkeypatch.setattr(Http1Parser, "cfeed", cfeed)
        log = []

        def hook(msg, method=None):
            if where == "hook":
                raise Boom("hook")
            return BadSink(where)

        def rt(skip=0):
            if where == "rt":
                raise Boom("rt")
            return "GET"

        p = Http1Parser(response_to=rt, body=hook, takes_skip=True)
        for data in (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", b"ab", b"c",
                     b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"):
            try:
                msgs = p.feed(data, 1)
                log.append([full(m) for m in msgs])
            except Boom as e:
                log.append(("raised", str(e)))
            log.append((p.state, p.errors, p.holding, p._fskip, p._side, p._brem))
        return log

    assert run(True) == run(False)


# ------------------------------------------------------------------------------------------ references

REQ = (b"GET /api/users?id=1 HTTP/1.1\r\nHost: h\r\nAccept: application/json\r\nAuthorization: Bearer t\r\n\r\n")
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\nSet-Cookie: s=1\r\n\r\n"
BODY = b'{"users": []}'


WHOLE = HEAD + BODY


def exchange(t: Tracker, ev_cls, i: int):
    """Two exchanges: the response's body in a chunk of its own, then in the head's chunk."""
    for k, (data, d) in enumerate(((REQ, 0), (HEAD, 1), (BODY, 1), (REQ, 0), (WHOLE, 1))):
        t.on_event(ev_cls(ts_ns=i * 10 + k, data=data, dir=d))


def _event_type():
    from hdrlog.events import Attr, Dir, Event, Kind

    def make(ts_ns, data, dir):
        return Event(ts_ns=ts_ns, conn=7, pid=1, tid=1, length=len(data), offset=0, lost=0, kind=int(Kind.DATA),
                     fn=0, dir=int(Dir.IN if dir == 0 else Dir.OUT), attr=int(Attr.NONE), local=None, peer=None,
                     comm="x", fd=-1, data=data)

    return make


def test_no_references_leak(monkeypatch):
    got = []
    t = Tracker(lambda c, d, m, ev: got.append(m), lib_of_pid=lambda pid: "openssl", body_hook=Mcp())
    ev = _event_type()
    exchange(t, ev, 0)
    assert len(got) == 4 and got[-1].request is got[-2] and got[1].status == 200
    p_in, p_out = (t.conns[(1, 7)].parsers[d] for d in ("in", "out"))
    got.clear()
    gc.collect()  # other tests' garbage may hold the constants
    refs = [sys.getrefcount(o) for o in (REQ, HEAD, BODY, WHOLE, t.body_hook, p_in, p_out)]
    tracemalloc.start()
    for i in range(1, 3001):
        exchange(t, ev, i)
        got.clear()
    gc.collect()
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert size < 64 * 1024, size  # 12,000 messages: a leak of one object per message would be ~0.5 MB
    assert [sys.getrefcount(o) for o in (REQ, HEAD, BODY, WHOLE, t.body_hook, p_in, p_out)] == refs
    assert t.body_hook.candidates == 2 * 3001


def test_messages_hold_their_references():
    p = Http1Parser(body=Mcp())
    p.feed(b"GET / HTTP/1.1\r\n\r\n", 0)
    msgs = p.feed(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}", 5)
    del p
    gc.collect()
    (m,) = msgs
    assert (m.method, m.path, m.authority, m.headers[0], m.extra, m.ts_ns) == ("POST", "/x", "h", ("Host", "h"), {}, 5)
    assert m.request is None and m.latency_ms is None and m.stream is None and m.truncated is False


def test_without_the_module_the_python_path_runs(monkeypatch):
    """hdrlog._h1feed missing (not built): nothing of it is used, and the records are the same."""
    import subprocess

    path = FIXTURES[[p.name for p in FIXTURES].index("python_ssl_server_keepalive.events.jsonl")]
    code = (
        "import sys; sys.modules['hdrlog._h1feed'] = None\n"
        "import orjson\n"
        "from hdrlog import conntrack, http1\n"
        "from hdrlog.redact import Redactor\n"
        "from hdrlog.replay import replay\n"
        "assert http1._CFEED is None and http1.CFEED_ERROR and conntrack._DELIVER is None and conntrack._TRACK is None\n"
        "class S:\n"
        "    def write(self, rec): sys.stdout.buffer.write(orjson.dumps(rec) + b'\\n')\n"
        "    def flush(self): pass\n"
        f"replay({str(path)!r}, S(), Redactor(key=b'k' * 32))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout.splitlines()
    lines, *_ = run_fixture(path, "cfeed", False, monkeypatch)
    assert out and out == lines[: len(out)] and len(lines) - len(out) <= 2  # run_fixture also flushes open ones


def test_odd_events_the_same_four_ways(monkeypatch):
    """Events the C on_event leaves to Python, or takes in part: another direction, empty or non-bytes data, offsets
    and lengths that say the call was truncated (or huge), a handshake, a lost event, a close."""
    from hdrlog.events import Event, Kind

    def ev(ts, data, d=1, kind=Kind.DATA, lost=0, offset=0, length=None, conn=9):
        return Event(ts, conn, 1, 1, len(data) if length is None else length, offset, lost, int(kind), 0, d, 0, None,
                     None, "x", -1, data)

    req = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    evs = [ev(1, req), ev(2, resp, 2), ev(3, req), ev(4, b"", 1), ev(5, bytearray(req), 1), ev(6, resp, 2),
           ev(7, resp, 2), ev(8, req, 0), ev(9, req, 3), ev(10, memoryview(req), 1), ev(11, resp, 2),
           ev(12, req, 1, length=len(req) + 50), ev(13, resp, 2, offset=1 << 70, length=(1 << 70) + 100),
           ev(14, req, 1, offset=16384, length=16384 + len(req) + 5), ev(15, b"", 2, kind=Kind.HANDSHAKE),
           ev(16, req, 1, lost=1), ev(17, resp, 2), ev(18, req, 1, conn=10), ev(19, b"", 1, kind=Kind.CLOSE),
           ev(20, req, 1)]
    ref = tracker_log(evs, "llhttp", monkeypatch)
    assert ref[0] and ref[1]["truncated_calls"] >= 2 and ref[1]["gaps"] == 1
    for mode in ("fastheads", "cfeed-pytrack", "cfeed"):
        assert tracker_log(evs, mode, monkeypatch) == ref, mode


def test_types_not_as_expected_are_refused():
    from hdrlog import _h1fast, _h1feed
    from hdrlog.conntrack import Conn
    from hdrlog.events import Event
    from hdrlog.mcp import SNIFF_BYTES, BodySink
    from hdrlog.model import HttpMessage
    from hdrlog.pairing import Pairer

    class NotSlotted:
        pass

    from hdrlog.http1_fast import AFTER

    args = [_h1fast.api, Http1Parser, HttpMessage, Mcp, BodySink, AFTER, (), 1 << 16, SNIFF_BYTES, Pairer]
    assert _h1feed.Feeder(*args) is not None
    for k in (1, 2, 3, 4, 9):
        bad = list(args)
        bad[k] = NotSlotted
        with pytest.raises(TypeError):
            _h1feed.Feeder(*bad)
    with pytest.raises(ValueError):
        _h1feed.Feeder(b"not a capsule", *args[1:])
    with pytest.raises(TypeError):
        _h1feed.Deliverer(NotSlotted, Pairer, HttpMessage, print, print)
    with pytest.raises(TypeError):
        _h1feed.Track(NotSlotted, Conn, Tracker.on_event, http1._FEEDER, DELIVER.__self__)
    with pytest.raises(TypeError):
        _h1feed.Track(Event, Conn, Tracker.on_event, DELIVER.__self__, DELIVER.__self__)
    # made and freed many times, good or refused: the (static) types' reference counts do not move
    before = [sys.getrefcount(c) for c in (_h1feed.Feeder, _h1feed.Deliverer, _h1feed.Track)]
    for _ in range(300):
        _h1feed.Feeder(*args)
        _h1feed.Deliverer(Conn, Pairer, HttpMessage, print, print)
        _h1feed.Track(Event, Conn, Tracker.on_event, http1._FEEDER, DELIVER.__self__)
        for k in (1, 9):
            with pytest.raises(TypeError):
                _h1feed.Feeder(*args[:k], NotSlotted, *args[k + 1:])
        with pytest.raises(TypeError):
            _h1feed.Track(NotSlotted, Conn, Tracker.on_event, http1._FEEDER, DELIVER.__self__)
        Tracker(lambda *a: None, lib_of_pid=lambda pid: "openssl")
    gc.collect()
    assert [sys.getrefcount(c) for c in (_h1feed.Feeder, _h1feed.Deliverer, _h1feed.Track)] == before
    t = Tracker(lambda *a: None, lib_of_pid=lambda pid: "openssl")
    on_event = t.on_event
    del t
    gc.collect()
    with pytest.raises(ReferenceError):  # held weakly: the tracker is gone
        on_event(None)
