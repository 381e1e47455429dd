"""A write at a copy site of a connection the probes have no tuple for (Attr.LINK_NEXT) waits for its LINK, so the
first request of a client connection opened before hdrlog attached still gets its peer (conntrack.Tracker)."""

from __future__ import annotations

from hdrlog.conntrack import Tracker
from hdrlog.events import Attr, Dir, Event, Fn, Kind

REQ = b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n"
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def ev(kind, *, tid=7, conn=0xAB, attr=Attr.NONE, d=Dir.NONE, data=b"", peer=None, ts=1_000):
    return Event(ts, conn, 100, tid, len(data), 0, 0, int(kind), int(Fn.OSSL_WRITE_BYTES), int(d), int(attr),
                 "127.0.0.1:5555" if peer else None, peer, "x", -1, data)


def run(events, release=True):
    out = []
    t = Tracker(lambda c, direction, m, e: out.append((direction, m.kind, c.peer)), lib_of_pid=lambda pid: "openssl")
    for e in events:
        t.on_event(e)
    if release:
        t.release_parked()
    return out, t


def test_the_write_waits_for_its_link():
    out, t = run([ev(Kind.DATA, attr=Attr.LINK_NEXT, d=Dir.OUT, data=REQ),
                  ev(Kind.LINK, attr=Attr.SEND_AFTER, peer="127.0.0.1:443"),
                  ev(Kind.DATA, d=Dir.IN, data=RESP)], release=False)
    assert out == [("out", "request", "127.0.0.1:443"), ("in", "response", "127.0.0.1:443")]
    assert not t.parked


def test_another_event_of_the_thread_releases_it_first_in_order():
    out, _ = run([ev(Kind.DATA, attr=Attr.LINK_NEXT, d=Dir.OUT, data=REQ),
                  ev(Kind.DATA, d=Dir.IN, data=RESP)], release=False)
    assert out == [("out", "request", None), ("in", "response", None)]


def test_a_link_that_never_comes_releases_it_when_asked():
    out, t = run([ev(Kind.DATA, attr=Attr.LINK_NEXT, d=Dir.OUT, data=REQ)], release=False)
    assert out == [] and len(t.parked) == 1
    t.release_parked(before_ns=500)  # parked at ts 1000: not older than that
    assert out == []
    t.release_parked(before_ns=2_000)
    assert out == [("out", "request", None)] and not t.parked


def test_another_threads_events_do_not_release_it():
    out, t = run([ev(Kind.DATA, attr=Attr.LINK_NEXT, d=Dir.OUT, data=REQ),
                  ev(Kind.DATA, tid=8, conn=0xCD, d=Dir.IN, data=REQ),
                  ev(Kind.LINK, attr=Attr.SEND_AFTER, peer="127.0.0.1:443")], release=False)
    assert out == [("in", "request", None), ("out", "request", "127.0.0.1:443")]


def test_a_known_connection_is_not_held():
    out, _ = run([ev(Kind.HANDSHAKE, attr=Attr.IN_CALL, peer="127.0.0.1:443"),
                  ev(Kind.DATA, attr=Attr.LINK_NEXT, d=Dir.OUT, data=REQ)], release=False)
    assert out == [("out", "request", "127.0.0.1:443")]
