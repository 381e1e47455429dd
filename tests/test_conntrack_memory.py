"""What a tracked connection costs and keeps: nothing of a message once it has been emitted, the llhttp state
freed on idle connections, and a bounded number of bytes per connection (bench/many_conns.py holds 10,000)."""

from __future__ import annotations

import gc
import struct
import tracemalloc

import pytest
from conftest import FIXTURES
from hdrlog import http1_fast
from hdrlog.http1 import Http1Parser
from hdrlog.conntrack import TRIM_NS, Tracker
from hdrlog.events import decode
from hdrlog.mcp import Mcp
from hdrlog.pipeline import Pipeline
from hdrlog.redact import Redactor
from hdrlog.replay import read_events

KEEPALIVE = FIXTURES / "python_ssl_server_keepalive.events.jsonl"


def _exchange(conn_addr: int, rport: int) -> list[bytes]:
    """Handshake, GET, response header block, response body of the keep-alive fixture, as connection conn_addr."""
    _meta, raws = read_events(str(KEEPALIVE))
    out = []
    for r in list(raws)[:4]:
        b = bytearray(r)
        struct.pack_into("<Q", b, 8, conn_addr)  # struct hdrlog_event.conn
        struct.pack_into("<H", b, 48, rport)  # tuple.rport: another peer port per connection
        out.append(bytes(b))
    return out


class Null:
    def write(self, rec):
        pass


@pytest.mark.parametrize("fast", [True, False], ids=["c-fast-path", "llhttp-only"])
def test_bytes_per_tracked_connection_are_bounded(fast, monkeypatch):
    """With the C fast path (the default) no llhttp parser is ever made for these whole heads, so there is nothing
    to trim and a connection costs less; with llhttp alone, idle trimming frees its two parsers."""
    if fast and Http1Parser.fast is False:
        pytest.fail("the C extension hdrlog._h1fast is not importable: " + str(http1_fast.IMPORT_ERROR))
    monkeypatch.setattr(Http1Parser, "fast", fast)
    n = 2000
    pipe = Pipeline(Null(), Redactor(key=b"k" * 32), lib_of_pid=lambda pid: "openssl", max_bytes=16384)
    evs = [_exchange(0x5000000 + i * 64, 20000 + i) for i in range(n)]
    for r in _exchange(0x4000000, 19999):  # warm-up: caches, regexes, first parser
        pipe.on_raw(memoryview(r))
    gc.collect()
    tracemalloc.start()
    try:
        m0 = tracemalloc.get_traced_memory()[0]
        for e in evs:
            for r in e:
                pipe.on_raw(memoryview(r))
        gc.collect()
        per_conn = (tracemalloc.get_traced_memory()[0] - m0) / n
        assert len(pipe.tracker.conns) == n + 1
        # llhttp only: ~3.3-3.9 KB measured (11.3 KB before messages, header lists and deques stopped being kept);
        # the fast path: ~2.5 KB (no llhttp parsers)
        assert per_conn < (3200 if fast else 4500), per_conn
        last = max(c.last_ns for c in pipe.tracker.conns.values())
        m1 = tracemalloc.get_traced_memory()[0]
        assert pipe.tracker.expire(last + TRIM_NS + 1) == 0  # idle, not yet expired: trimmed
        gc.collect()
        trimmed = (m1 - tracemalloc.get_traced_memory()[0]) / n
        if fast:
            assert trimmed < 100, trimmed  # no llhttp parser was made, none to free
            assert all(p._p is None for c in pipe.tracker.conns.values() for p in c.parsers.values())
        else:
            assert trimmed > 600, trimmed  # two llhttp parsers per connection (~400 bytes each)
    finally:
        tracemalloc.stop()


def test_emitted_messages_are_not_kept_by_the_connection():
    got = []
    tr = Tracker(lambda c, d, m, ev: got.append(m), lib_of_pid=lambda pid: "openssl", body_hook=Mcp())
    for r in _exchange(0x5000000, 20000):
        tr.on_event(decode(r))
    assert [m.kind for m in got] == ["request", "response"]
    (c,) = tr.conns.values()
    for p in c.parsers.values():
        assert p._out == () and p._last is None and p._hdrs == () and p._held is None
        assert p._url == b"" and p._status == b""
    assert c.pairer.pending("in") == 0 and c.pre is None
    refs = [id(x) for m in got for x in gc.get_referrers(m)]
    assert id(c) not in refs and not any(id(p) in refs for p in c.parsers.values())


def test_trimmed_connection_goes_on_parsing():
    got = []
    tr = Tracker(lambda c, d, m, ev: got.append(m), lib_of_pid=lambda pid: "openssl", body_hook=Mcp())
    ex = _exchange(0x5000000, 20000)
    for r in ex:
        tr.on_event(decode(r))
    (c,) = tr.conns.values()
    tr.expire(c.last_ns + TRIM_NS + 1)
    assert all(p._p is None for p in c.parsers.values())
    for r in ex[1:]:
        tr.on_event(decode(r))
    assert [(m.kind, m.path or m.status) for m in got] == [("request", "/api/users?id=1&fields=name"),
                                                          ("response", 200)] * 2
    assert got[-1].request is got[-2] and got[-1].headers == got[1].headers
