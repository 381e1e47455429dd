"""Tests for hdrlog.pairing.Pairer (and its use as Http1Parser.response_to)."""

from __future__ import annotations

from hdrlog.http1 import Http1Parser
from hdrlog.model import HttpMessage
from hdrlog.pairing import MAX_PENDING, Pairer


def rq(method="GET", path="/", ts=0):
    return HttpMessage("request", "http/1.1", ts, [], method=method, path=path)


def rs(status=200, ts=0, truncated=False):
    return HttpMessage("response", "http/1.1", ts, [], status=status, truncated=truncated)


def test_fifo_pairing_and_latency():
    p = Pairer()
    a = p.on_message(rq(path="/a", ts=1_000_000), "in")
    assert a.request is None and a.latency_ms is None
    r = p.on_message(rs(ts=3_500_000), "out")
    assert r.request is a and r.latency_ms == 2.5
    assert p.pending("in") == 0 and p.unpaired == 0


def test_latency_rounded_to_3_decimals():
    p = Pairer()
    p.on_message(rq(ts=0), "in")
    assert p.on_message(rs(ts=1_234_567), "out").latency_ms == 1.235


def test_latency_from_integers_is_round_exactly():
    """The latency is computed from whole microseconds, not round(d / 1e6, 3): it must be that value to the
    bit, sign of zero included, for ties (...500 ns), clock steps backwards and huge differences."""
    import random

    rng = random.Random(3)
    ds = [0, 1, 499, 500, 501, 1500, 2500, 999_500, -1, -100, -2500, (1 << 40) - 500, 1 << 40, 10**15 + 500]
    ds += [rng.choice([rng.randrange(10**4), rng.randrange(10**9), rng.randrange(1 << 41),
                       rng.randrange(10**6) * 1000 + 500, -rng.randrange(10**6)]) for _ in range(20000)]
    for d in ds:
        p = Pairer()
        p.on_message(rq(ts=10**18), "in")
        got = p.on_message(rs(ts=10**18 + d), "out").latency_ms
        want = round(d / 1e6, 3)
        assert got == want and repr(got) == repr(want), d


def test_pipelined_requests_pair_in_order():
    p = Pairer()
    reqs = [p.on_message(rq(path=f"/{i}", ts=i), "in") for i in range(5)]
    for i in range(5):
        assert p.on_message(rs(ts=100 + i), "out").request is reqs[i]
    assert p.on_message(rs(), "out").request is None
    assert p.unpaired == 1


def test_responses_pair_with_the_opposite_direction_only():
    p = Pairer()
    p.on_message(rq(path="/server-side"), "in")
    # a response read "in" answers a request written "out": none pending there
    assert p.on_message(rs(), "in").request is None
    assert p.pending("in") == 1


def test_1xx_does_not_pop():
    p = Pairer()
    a = p.on_message(rq("POST", ts=0), "in")
    b = p.on_message(rq("GET", ts=0), "in")
    c100 = p.on_message(rs(100, ts=1_000_000), "out")
    c103 = p.on_message(rs(103, ts=2_000_000), "out")
    final = p.on_message(rs(201, ts=5_000_000), "out")
    assert c100.request is a and c100.latency_ms == 1.0
    assert c103.request is a and c103.latency_ms == 2.0
    assert final.request is a and final.latency_ms == 5.0
    assert p.on_message(rs(200), "out").request is b


def test_101_ends_the_exchange():
    p = Pairer()
    a = p.on_message(rq(), "in")
    assert p.on_message(rs(101), "out").request is a
    assert p.pending("in") == 0


def test_truncated_response_still_pairs():
    p = Pairer()
    a = p.on_message(rq(), "in")
    assert p.on_message(rs(None, truncated=True), "out").request is a


def test_role():
    p = Pairer()
    assert p.role is None
    p.on_message(rq(), "in")
    assert p.role == "server"
    c = Pairer()
    c.on_message(rq(), "out")
    assert c.role == "client"
    r = Pairer()
    r.on_message(rs(), "in")  # capture began after the request: the response still tells
    assert r.role == "client"
    # once known, it stays
    p.on_message(rq(), "out")
    assert p.role == "server"


def test_queue_is_bounded_and_drops_are_counted():
    p = Pairer()
    reqs = [p.on_message(rq(path=f"/{i}"), "out") for i in range(MAX_PENDING + 44)]
    assert p.pending("out") == MAX_PENDING and p.unpaired == 44
    # the oldest were dropped: the next response answers request #44
    assert p.on_message(rs(), "in").request is reqs[44]
    small = Pairer(max_pending=2)
    for i in range(5):
        small.on_message(rq(), "in")
    assert small.pending("in") == 2 and small.unpaired == 3


def test_response_to_and_skip():
    p = Pairer()
    assert p.response_to("out") is None
    p.on_message(rq("HEAD"), "in")
    p.on_message(rq("GET"), "in")
    p.on_message(rq("CONNECT"), "in")
    assert p.response_to("out") == "HEAD"
    assert p.response_to("out", 1) == "GET"
    assert p.response_to("out", 2) == "CONNECT"
    assert p.response_to("out", 3) is None
    assert p.response_to("in") is None  # nothing written "out"
    f = p.responder("out")
    assert f() == "HEAD" and f(2) == "CONNECT"
    p.on_message(rs(100), "out")
    assert p.response_to("out") == "HEAD"
    p.on_message(rs(200), "out")
    assert p.response_to("out") == "GET"


def test_reset_lost_response_pairs_next_response_with_fresh_request():
    # R1's response was lost in a gap; the client then sent R2: R2's response must not pair with R1
    p = Pairer()
    r1 = p.on_message(rq(path="/1"), "in")
    p.reset()
    r2 = p.on_message(rq(path="/2"), "in")
    assert p.response_to("out") == "GET"
    resp = p.on_message(rs(), "out")
    assert resp.request is r2 and r1 is not r2
    assert p.unpaired == 1 and p.pending("in") == 0


def test_reset_lost_request_bytes_keeps_waiting_request():
    # a gap on the request side while R1 waits: R1's response still pairs with R1
    p = Pairer()
    r1 = p.on_message(rq(path="/1"), "in")
    p.reset()
    assert p.on_message(rs(), "out").request is r1
    assert p.unpaired == 0
    r3 = p.on_message(rq(path="/3"), "in")
    assert p.on_message(rs(), "out").request is r3


def test_reset_interim_response_peeks_like_the_final_one():
    p = Pairer()
    p.on_message(rq(path="/old"), "in")
    p.reset()
    fresh = p.on_message(rq("PUT", path="/new"), "in")
    assert p.response_to("out") == "PUT"
    assert p.on_message(rs(100), "out").request is fresh
    assert p.on_message(rs(200), "out").request is fresh


def test_bound_with_stale_entries():
    p = Pairer(max_pending=3)
    for i in range(3):
        p.on_message(rq(path=f"/s{i}"), "in")
    p.reset()
    fresh = [p.on_message(rq(path=f"/f{i}"), "in") for i in range(2)]  # drops two stale ones
    assert p.pending("in") == 3 and p.unpaired == 2
    assert p.on_message(rs(), "out").request is fresh[0]
    assert p.unpaired == 3


def test_with_http1_parser_pipelined_head():
    """The Http1Parser asks the pairer (with skip) while several responses arrive in one chunk."""
    pr = Pairer()
    up = Http1Parser()
    down = Http1Parser(response_to=pr.responder("out"))
    for m in up.feed(b"HEAD /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nHEAD /c HTTP/1.1\r\n\r\n", 1_000_000):
        pr.on_message(m, "in")
    out = down.feed(
        b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
        b"HTTP/1.1 200 OK\r\nContent-Length: 700\r\n\r\n",
        3_000_000,
    )
    paired = [pr.on_message(m, "out") for m in out]
    assert [m.request.path for m in paired] == ["/a", "/b", "/c"]
    assert [m.latency_ms for m in paired] == [2.0, 2.0, 2.0]
    assert down.errors == 0 and pr.role == "server"


def _tracker_run(chunks):
    from hdrlog.conntrack import Tracker
    from hdrlog.events import Attr, Dir, Event, Kind
    from hdrlog.mcp import Mcp

    out = []
    t = Tracker(lambda c, d, m, ev: out.append(m), lib_of_pid=lambda p: "openssl", body_hook=Mcp())
    for i, (d, data) in enumerate(chunks):
        t.on_event(Event(ts_ns=i + 1, conn=1, pid=1, tid=1, length=len(data), offset=0, lost=0,
                         kind=Kind.DATA, fn=1, dir=d, attr=Attr.IN_CALL, local="127.0.0.1:1",
                         peer="127.0.0.1:2", comm="x", fd=-1, data=data))
    return out


POST_JSON = (b"POST /api/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             b"Content-Length: 23\r\n\r\n")
BODY = b'{"item":"book","qty":2}'


def test_response_before_request_body_still_pairs():
    """nginx `return 200` answers a POST before reading its body: the request (held for its JSON body by
    the MCP hook) must be paired with that response, and emitted before it."""
    from hdrlog.events import Dir

    msgs = _tracker_run([(Dir.IN, POST_JSON), (Dir.OUT, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
                         (Dir.IN, BODY), (Dir.IN, b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"),
                         (Dir.OUT, b"HTTP/1.1 204 No Content\r\n\r\n")])
    assert [(m.kind, m.method or m.status) for m in msgs] == [
        ("request", "POST"), ("response", 200), ("request", "GET"), ("response", 204)]
    assert msgs[1].request is msgs[0] and msgs[3].request is msgs[2]


def test_100_continue_does_not_release_the_held_request():
    from hdrlog.events import Dir

    msgs = _tracker_run([(Dir.IN, POST_JSON.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n")),
                         (Dir.OUT, b"HTTP/1.1 100 Continue\r\n\r\n"), (Dir.IN, BODY),
                         (Dir.OUT, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")])
    kinds = [(m.kind, m.method or m.status) for m in msgs]
    assert kinds.index(("request", "POST")) < kinds.index(("response", 201))
    final = next(m for m in msgs if m.status == 201)
    assert final.request is not None and final.request.method == "POST"
