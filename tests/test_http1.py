"""Tests for hdrlog.http1.Http1Parser.

Following h11's approach, every stream is checked by :func:`check`, which feeds it (a) whole, (b)
one byte at a time, (c) in random splits and (d) followed by the next message, and asserts that
every mode produces the same messages (and the expected ones).
"""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hdrlog import http1
from hdrlog.http1 import Http1Parser
from hdrlog.model import HttpMessage

@pytest.fixture(autouse=True, params=["fast", "llhttp"])
def _debug(request, monkeypatch):
    # Http1Parser swallows internal errors in production; here they must surface
    monkeypatch.setattr(Http1Parser, "debug", True)
    # every test runs with the C fast path (http1_fast; tests/test_h1fast.py checks it is built) and without it
    monkeypatch.setattr(Http1Parser, "fast", request.param == "fast" and Http1Parser.fast)


NEXT_REQ = b"GET /next?x=1 HTTP/1.1\r\nHost: next.example\r\n\r\n"
NEXT_RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX-Next: 1\r\n\r\nnext"
NEXT_REQ_T = ("request", "http/1.1", [("Host", "next.example")], "GET", "/next?x=1", "next.example",
              None, None, False)  # fmt: skip
NEXT_RESP_T = ("response", "http/1.1", [("Content-Length", "4"), ("X-Next", "1")], None, None, None,
               200, "OK", False)  # fmt: skip


class Peer:
    """Stands in for the Pairer: the methods of the requests the responses answer, in order."""

    def __init__(self, methods=()):
        self.methods = list(methods)
        self.used = 0
        self.calls = 0

    def __call__(self, skip=0):
        self.calls += 1
        i = self.used + skip
        return self.methods[i] if i < len(self.methods) else None

    def consume(self, msgs):
        # what Pairer.on_message does with the messages a feed() returned
        for m in msgs:
            if m.kind == "response" and not (m.status and 100 <= m.status < 200 and m.status != 101):
                self.used += 1


def t(m: HttpMessage):
    """The comparable wire facts of a message (ts_ns depends on the split: checked separately)."""
    return (m.kind, m.proto, m.headers, m.method, m.path, m.authority, m.status, m.reason, m.truncated)


def splits(data: bytes, mode, rnd: random.Random):
    if mode == "whole":
        return [data]
    if mode == "bytes":
        return [data[i : i + 1] for i in range(len(data))]
    out, i = [], 0
    while i < len(data):
        k = rnd.choice([1, 2, 3, 5, 8, 13, 64, 300, 1500, 5000])
        out.append(data[i : i + k])
        i += k
    return out


def run(chunks, methods=(), events=None):
    """Feed chunks (bytes, or ("gap", n) / ("close",)) to a fresh parser. Returns (messages, parser)."""
    peer = Peer(methods)
    p = Http1Parser(response_to=peer)
    msgs = []
    for ts, c in enumerate(chunks, 1):
        if isinstance(c, tuple):
            got = p.gap(c[1], ts) if c[0] == "gap" else p.close(ts)
        else:
            got = p.feed(c, ts)
        assert isinstance(got, list)
        peer.consume(got)
        msgs.extend(got)
    return msgs, p


def same(got, want, loose_truncated):
    """got == want; with loose_truncated, a truncated message may carry one more header at the end.

    (httptools holds each header until the next header name starts; llhttp flushes a partial name
    at the end of a feed but not at a parse error, so after an error inside a header name the last
    complete header is there or not depending on where the feeds were split.)
    """
    if not loose_truncated:
        return got == want
    if len(got) != len(want):
        return False
    for g, w in zip(got, want):
        if g == w:
            continue
        # both truncated; same kind/proto, method/path, status/reason (authority may come with Host)
        if not (w[-1] and g[-1]) or g[:2] != w[:2] or g[3:5] != w[3:5] or g[6:] != w[6:]:
            return False
        if g[2][: len(w[2])] != w[2] or len(g[2]) != len(w[2]) + 1:
            return False
    return True


def check(parts, expected, *, methods=(), trailing=True, state=None, errors=None, seeds=8,
          loose_truncated=False):  # fmt: skip
    """Run ``parts`` (bytes, or a list of bytes and ("gap", n)) in every mode; return the messages.

    Bytes in ``parts`` are split by the mode; gaps stay where they are.
    """
    if isinstance(parts, bytes):
        parts = [parts]
    kind = expected[0][0] if expected else None
    modes = [("whole", 0), ("bytes", 0)] + [("random", s) for s in range(seeds)]
    results = []
    for mode, seed in modes:
        for trail in (False, True) if trailing else (False,):
            rnd = random.Random(seed)
            chunks = []
            plist = list(parts)
            if trail:
                extra = NEXT_RESP if kind == "response" else NEXT_REQ
                if isinstance(plist[-1], bytes):
                    plist[-1] = plist[-1] + extra
                else:
                    plist.append(extra)
            for part in plist:
                chunks.extend([part] if isinstance(part, tuple) else splits(part, mode, rnd))
            meths = list(methods) + (["GET"] if trail else [])
            msgs, p = run(chunks, meths)
            got = [t(m) for m in msgs]
            want = list(expected) + ([NEXT_RESP_T if kind == "response" else NEXT_REQ_T] if trail else [])
            assert same(got, want, loose_truncated), f"mode={mode} seed={seed} trailing={trail}: {got}"
            if state is not None and not trail:
                assert p.state == state, f"mode={mode} seed={seed}"
            if errors is not None:
                assert p.errors == errors, f"mode={mode} seed={seed} trailing={trail}"
            results.append(msgs)
    return results[0]


def req(method, path, headers, proto="http/1.1", truncated=False):
    host = next((v for n, v in headers if n.lower() == "host"), None)
    return ("request", proto, headers, method, path, host, None, None, truncated)


def resp(status, reason, headers, proto="http/1.1", truncated=False):
    return ("response", proto, headers, None, None, None, status, reason, truncated)


# ---------------------------------------------------------------------------------------- requests


def test_simple_get_fields():
    data = (b"GET /api/v1/items?id=5&sort=desc HTTP/1.1\r\nHost: api.example.com\r\n"
            b"User-Agent: curl/8\r\nAccept: */*\r\n\r\n")  # fmt: skip
    msgs = check(data, [req("GET", "/api/v1/items?id=5&sort=desc",
                            [("Host", "api.example.com"), ("User-Agent", "curl/8"), ("Accept", "*/*")])],
                 state="http", errors=0)  # fmt: skip
    assert msgs[0].authority == "api.example.com"
    assert msgs[0].latency_ms is None and msgs[0].request is None


def test_header_case_and_duplicates_kept_in_order():
    data = (b"GET / HTTP/1.1\r\nhOsT: a\r\nX-Dup: 1\r\nx-dup: 2\r\nACCEPT: text/html\r\n"
            b"X-Dup: 3\r\n\r\n")  # fmt: skip
    check(data, [req("GET", "/", [("hOsT", "a"), ("X-Dup", "1"), ("x-dup", "2"),
                                  ("ACCEPT", "text/html"), ("X-Dup", "3")])])  # fmt: skip


def test_pipelined_requests_in_one_feed():
    data = (b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
            b"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world"
            b"DELETE /c?x=%20y HTTP/1.1\r\nHost: h\r\n\r\n")  # fmt: skip
    h = [("Host", "h")]
    msgs, _ = run([data])
    assert len(msgs) == 3
    check(data, [req("GET", "/a", h), req("POST", "/b", h + [("Content-Length", "11")]),
                 req("DELETE", "/c?x=%20y", h)], errors=0)  # fmt: skip


def test_content_length_body_bigger_than_one_feed():
    body = bytes(random.Random(1).randrange(256) for _ in range(20000))
    data = b"PUT /up HTTP/1.1\r\nHost: h\r\nContent-Length: 20000\r\n\r\n" + body
    check(data, [req("PUT", "/up", [("Host", "h"), ("Content-Length", "20000")])], errors=0, seeds=3)


def test_body_containing_request_lines_is_not_parsed():
    body = b"GET /fake HTTP/1.1\r\nHost: evil\r\n\r\n" * 3
    data = b"POST /x HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    check(data, [req("POST", "/x", [("Content-Length", str(len(body)))])], errors=0)


def test_chunked_request_with_trailers():
    data = (b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
            b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Sum: 42\r\n\r\n")  # fmt: skip
    check(data, [req("POST", "/c", [("Host", "h"), ("Transfer-Encoding", "chunked"),
                                    ("Trailer", "X-Sum")])], errors=0)  # fmt: skip


def test_http10_request():
    data = b"GET /old HTTP/1.0\r\nUser-Agent: ancient\r\n\r\n"
    check(data, [req("GET", "/old", [("User-Agent", "ancient")], proto="http/1.0")], errors=0)


def test_connection_close_then_more_data_still_parsed():
    data = b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\n"
    check(data, [req("GET", "/a", [("Connection", "close")])], errors=0)


def test_invalid_utf8_and_nul_in_values():
    data = b"GET /p HTTP/1.1\r\nX-Bin: a\xff\xfeb\r\nX-Nul: a\x00b\r\nX-Utf: caf\xc3\xa9\r\n\r\n"
    msgs = check(data, [req("GET", "/p", [("X-Bin", "a\\xff\\xfeb"), ("X-Nul", "a\x00b"),
                                          ("X-Utf", "café")])], errors=0)  # fmt: skip
    assert all(isinstance(v, str) for _, v in msgs[0].headers)


def test_non_token_header_name_is_a_parse_error():
    # llhttp accepts any byte in values (lenient) but only tokens in names: truncated + resync
    data = b"GET /p HTTP/1.1\r\nHost: h\r\nX\xe9: v\r\nX-After: 1\r\n\r\n"
    check(data, [req("GET", "/p", [], truncated=True)], errors=1, loose_truncated=True)


def test_ts_is_that_of_the_feed_completing_the_header_block():
    p = Http1Parser()
    assert p.feed(b"GET / HTTP/1.1\r\nHost: x\r\n", 100) == []
    (m,) = p.feed(b"\r\n", 200)
    assert m.ts_ns == 200
    (m1, m2) = p.feed(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n", 300)
    assert m1.ts_ns == m2.ts_ns == 300


def test_connect_request_then_tunnel_bytes():
    data = b"CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n"
    check([data, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfcGET / HTTP/1.1\r\n\r\n"],
          [req("CONNECT", "db.internal:5432", [("Host", "db.internal:5432")])],
          trailing=False, state="tunnel", errors=0)  # fmt: skip


def test_connect_refused_client_goes_on_with_http():
    data = b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"
    h = [("Host", "a:443")]
    msgs = check([data, b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\nProxy-Authorization: Basic eA==\r\n\r\n"],
                 [req("CONNECT", "a:443", h), req("CONNECT", "a:443", h + [("Proxy-Authorization", "Basic eA==")])],
                 trailing=False, state="tunnel", errors=0)  # fmt: skip
    assert len(msgs) == 2
    # after a non-CONNECT upgrade refusal too: the next request is parsed
    check(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
          [req("GET", "/ws", [("Upgrade", "websocket"), ("Connection", "Upgrade")])], errors=0)  # fmt: skip


def test_upgrade_request_then_websocket_frames():
    data = (b"GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
            b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58" + b" HTTP/1.1 GET / HTTP/1.1\r\n\r\n")  # fmt: skip
    check(data, [req("GET", "/chat", [("Host", "h"), ("Upgrade", "websocket"), ("Connection", "Upgrade")])],
          trailing=False, state="tunnel", errors=0)  # fmt: skip


def test_h2c_upgrade_with_body_then_preface():
    data = (b"POST /u HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
            b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nContent-Length: 14\r\n\r\n"
            b"GET / HTTP/1.1PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")  # fmt: skip
    check(data, [req("POST", "/u", [("Host", "h"), ("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"),
                                    ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"), ("Content-Length", "14")])],
          trailing=False, state="tunnel", errors=0)  # fmt: skip


# --------------------------------------------------------------------------------------- responses


def test_response_with_body():
    data = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
    check(data, [resp(200, "OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])],
          methods=["GET"], state="http", errors=0)  # fmt: skip


def test_response_body_contains_status_lines():
    body = b"HTTP/1.1 500 Fake\r\nContent-Length: 0\r\n\r\n" * 4 + b"HTTP/1."
    data = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    check(data, [resp(200, "OK", [("Content-Length", str(len(body)))])], methods=["GET"], errors=0)


def test_chunked_response_with_trailers():
    data = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"4\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nExpires: never\r\nX-Sig: abc\r\n\r\n")  # fmt: skip
    check(data, [resp(200, "OK", [("Transfer-Encoding", "chunked")])], methods=["GET"], errors=0)


def test_100_continue_then_final():
    data = (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
            b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nLocation: /x/1\r\n\r\n{}")  # fmt: skip
    check(data, [resp(100, "Continue", []), resp(103, "Early Hints", [("Link", "</s.css>; rel=preload")]),
                 resp(201, "Created", [("Content-Length", "2"), ("Location", "/x/1")])],
          methods=["POST"], errors=0)  # fmt: skip


def test_204_and_304_have_no_body():
    data = (b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n"
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\nETag: \"x\"\r\n\r\n")  # fmt: skip
    check(data, [resp(204, "No Content", [("Content-Length", "10")]),
                 resp(304, "Not Modified", [("Content-Length", "1234"), ("ETag", '"x"')])],
          methods=["DELETE", "GET"], errors=0)  # fmt: skip


def test_head_response_has_no_body():
    data = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 123456\r\n\r\n"
    check(data, [resp(200, "OK", [("Content-Type", "text/html"), ("Content-Length", "123456")])],
          methods=["HEAD"], state="http", errors=0)  # fmt: skip
    # without chunked / length either: the message still ends with its header block
    check(b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\n", [resp(200, "OK", [("Server", "x")], proto="http/1.0")],
          methods=["HEAD"], errors=0)  # fmt: skip


def test_pipelined_head_and_get_responses_in_one_feed():
    data = (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
            b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n"
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\n"
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 9000\r\n\r\n")  # fmt: skip
    check(data, [resp(200, "OK", [("Content-Length", "3")]), resp(200, "OK", [("Content-Length", "999")]),
                 resp(100, "Continue", []), resp(200, "OK", [("Transfer-Encoding", "chunked")]),
                 resp(404, "Not Found", [("Content-Length", "9000")])],
          methods=["GET", "HEAD", "POST", "HEAD"], errors=0)  # fmt: skip


def test_response_to_without_skip_argument_is_supported():
    calls = []
    p = Http1Parser(response_to=lambda: calls.append(1) or "HEAD")
    out = p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", 1)
    out += p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", 2)
    assert [m.status for m in out] == [200, 200] and len(calls) == 2 and p.errors == 0


def test_101_switching_protocols_is_a_tunnel():
    data = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
            b"\x81\x05HelloHTTP/1.1 200 OK\r\n\r\n")  # fmt: skip
    check(data, [resp(101, "Switching Protocols", [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                                   ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")])],
          methods=["GET"], trailing=False, state="tunnel", errors=0)  # fmt: skip


def test_connect_2xx_is_a_tunnel():
    data = b"HTTP/1.1 200 Connection Established\r\nProxy-Agent: x\r\n\r\n\x16\x03\x03\x00\x30HTTP/1.1 200 OK\r\n\r\n"
    check(data, [resp(200, "Connection Established", [("Proxy-Agent", "x")])],
          methods=["CONNECT"], trailing=False, state="tunnel", errors=0)  # fmt: skip


def test_connect_refused_is_not_a_tunnel():
    data = b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\nContent-Length: 0\r\n\r\n"
    check(data, [resp(407, "Proxy Authentication Required", [("Proxy-Authenticate", "Basic"),
                                                             ("Content-Length", "0")])],
          methods=["CONNECT"], state="http", errors=0)  # fmt: skip


def test_response_until_close():
    data = b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\nbody until close HTTP/1.1 200 OK\r\n\r\nmore"
    check([data, ("close",)], [resp(200, "OK", [("Server", "old")], proto="http/1.0")], methods=["GET"],
          trailing=False, errors=0)  # fmt: skip


def test_connection_close_response_with_length_then_more():
    data = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    check(data, [resp(200, "OK", [("Connection", "close"), ("Content-Length", "2")])], methods=["GET"], errors=0)


def test_empty_reason_phrase():
    check(b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", [resp(200, "", [("Content-Length", "0")])],
          methods=["GET"], errors=0)  # fmt: skip


# ---------------------------------------------------------------------- gaps, errors, resync, limits


def test_gap_in_headers_emits_truncated_then_resyncs():
    first = b"GET /secret?a=1 HTTP/1.1\r\nHost: h\r\nUser-Agent: x\r\nAccept: */"
    after = b"re: garbage\r\nX-More: 1\r\n\r\n" + NEXT_REQ
    msgs = check([first, ("gap", 50), after],
                 [req("GET", "/secret?a=1", [("Host", "h"), ("User-Agent", "x")], truncated=True), NEXT_REQ_T],
                 trailing=False, state="http", errors=0)  # fmt: skip
    # the truncated message carries the ts of the gap
    assert msgs[0].ts_ns > 0


def test_gap_in_status_line():
    ok = b"HTTP/1.1 204 No Content\r\n\r\n"
    # status code incomplete: nothing worth reporting
    msgs, p = run([ok + b"HTTP/1.1 20", ("gap", 10)], ["GET", "GET"])
    assert [m.status for m in msgs] == [204] and p.state == "resync"
    msgs, p = run([ok + b"HTTP/1.1 503 Bu", ("gap", 10)], ["GET", "GET"])
    assert [t(m) for m in msgs] == [resp(204, "No Content", []), resp(503, "Bu", [], truncated=True)]
    msgs, p = run([ok + b"HTTP/1.1 503 Busy\r\nRetry-After: 5\r\nX-Y: z\r\n", ("gap", 10)], ["GET", "GET"])
    assert [t(m) for m in msgs][1:] == [resp(503, "Busy", [("Retry-After", "5")], truncated=True)]


def test_gap_in_body_then_resync_on_next_request():
    head = b"POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n" + b"x" * 3000
    rest = b"y" * 500 + b"}" + NEXT_REQ  # the body ends (earlier than llhttp would think) and a request follows
    check([head, ("gap", 60000), rest],
          [req("POST", "/big", [("Host", "h"), ("Content-Length", "100000")]), NEXT_REQ_T],
          trailing=False, state="http", errors=0)  # fmt: skip


def test_gap_in_response_body_then_resync():
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n" + b"z" * 100
    rest = b"zz\r\n0\r\n\r\n" + NEXT_RESP
    check([head, ("gap", 4000), rest], [resp(200, "OK", [("Transfer-Encoding", "chunked")]), NEXT_RESP_T],
          methods=["GET", "GET"], trailing=False, state="http", errors=0)  # fmt: skip


def test_gap_between_messages_and_during_detect():
    check([b"GET /a HTTP/1.1\r\n\r\n", ("gap", 10), b"\r\nGET /b HTTP/1.1\r\n\r\n"],
          [req("GET", "/a", []), req("GET", "/b", [])], trailing=False, state="http", errors=0)  # fmt: skip
    check([b"GET /a HT", ("gap", 10), b"xx\r\n\r\nPOST /b HTTP/1.1\r\n\r\n"],
          [req("POST", "/b", [])], trailing=False, state="http", errors=0)  # fmt: skip


def test_garbage_then_resync():
    data = b"GET /a HTTP/1.1\r\n\r\n" + b"\x00\x01\x02 garbage GARBAGE /x HTTP/9\r\n" + NEXT_REQ
    check(data, [req("GET", "/a", []), NEXT_REQ_T], trailing=False, errors=1, state="http")


def test_invalid_header_mid_pipeline_is_truncated_and_next_parsed():
    data = (b"GET /a HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n"
            b"GET /b HTTP/1.1\r\nHost: b\r\n\r\n")  # fmt: skip
    check(data, [req("GET", "/a", [], truncated=True), req("GET", "/b", [("Host", "b")])],
          errors=1, loose_truncated=True)  # fmt: skip
    msgs, _ = run([data])  # whole: "Host: a" was still held by httptools when "Bad Header" failed
    assert msgs[0].headers == [] and msgs[0].authority is None


def test_error_right_after_uppercase_does_not_resync_inside_method():
    # POST fails; resync must not lock onto "OST ..." (a method cannot follow an upper-case letter)
    data = b"POST /a HTTP/1.1\r\nContent-Length: zz\r\n\r\n" + NEXT_REQ
    check(data, [req("POST", "/a", [], truncated=True), NEXT_REQ_T], trailing=False, errors=1)
    data = b"UNLOCK /a HTTP/1.1\r\nContent-Length: zz\r\n\r\n" + NEXT_REQ  # not "LOCK /a"
    check(data, [req("UNLOCK", "/a", [], truncated=True), NEXT_REQ_T], trailing=False, errors=1)


def test_bad_response_then_resync():
    ok = b"HTTP/1.1 204 No Content\r\n\r\n"
    data = ok + b"HTTP/1.1 2x0 Bad\r\n\r\n" + NEXT_RESP
    check(data, [resp(204, "No Content", []), NEXT_RESP_T], methods=["GET", "GET", "GET"], trailing=False,
          errors=1)  # fmt: skip


def test_not_http():
    rnd = random.Random(7)
    data = bytes(rnd.randrange(256) for _ in range(6000))
    msgs, p = run([data[i : i + 700] for i in range(0, len(data), 700)] + [NEXT_REQ])
    assert msgs == [] and p.state == "not-http" and p.errors == 0
    assert p._buf == b""
    # a binary protocol is given up on after DETECT_LIMIT bytes, whatever the split
    check([b"\x16\x03\x01" + b"\x00" * 5000], [], trailing=False, state="not-http")


def test_http2_preface_is_not_http():
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00"
    check(preface + NEXT_REQ, [], trailing=False, state="not-http", errors=0)
    p = Http1Parser()
    assert p.feed(b"PRI * HTT", 1) == [] and p.state == "detect"
    assert p.feed(b"P/2.0\r\n\r\n", 2) == [] and p.state == "not-http"


def test_detect_waits_for_enough_bytes():
    p = Http1Parser()
    assert p.feed(b"G", 1) == [] and p.state == "detect"
    assert p.feed(b"ET /long/path/", 2) == [] and p.state == "detect"
    assert [m.path for m in p.feed(b"x HTTP/1.1\r\n\r\n", 3)] == ["/long/path/x"]
    assert p.state == "http" and p.kind == "request"
    r = Http1Parser(response_to=lambda: "GET")
    assert r.feed(b"HTTP/1.1 2", 1) == [] and r.state == "detect"
    assert [m.status for m in r.feed(b"04 No Content\r\n\r\n", 2)] == [204] and r.kind == "response"


def test_capture_starting_mid_stream_finds_first_message():
    check(b'..."tail of a body"}' + NEXT_REQ, [NEXT_REQ_T], trailing=False, state="http", errors=0)
    check(b"0 OK\r\nContent-Length: 3\r\n\r\nabc" + NEXT_RESP, [NEXT_RESP_T], methods=["GET"],
          trailing=False, errors=0)  # fmt: skip
    check(b"BASE64TAILXYZ" + NEXT_REQ, [NEXT_REQ_T], trailing=False, errors=0)


def test_huge_header_block_is_cut():
    big = b"GET /h HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * (http1.MAX_HEADER_BYTES + 10000) + b"\r\n\r\n"
    chunks = [big[i : i + 1024] for i in range(0, len(big), 1024)] + [NEXT_REQ]
    msgs, p = run(chunks)
    assert [t(m) for m in msgs] == [req("GET", "/h", [("Host", "h")], truncated=True), NEXT_REQ_T]
    assert p.errors == 1 and p.state == "http"


def test_huge_header_block_in_one_feed_is_fine():
    big = b"GET /h HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 100000 + b"\r\n\r\n"
    msgs, p = run([big])
    assert msgs[0].headers[1] == ("X-Big", "a" * 100000) and not msgs[0].truncated


def test_resync_memory_is_bounded():
    p = Http1Parser()
    p.feed(b"GET / HTTP/1.1\r\n\r\n", 1)
    p.feed(b"\x00garbage", 2)
    assert p.state == "resync"
    for i in range(50):
        p.feed(os.urandom(50000).replace(b"HTTP", b"xxxx"), i)
        assert len(p._buf) <= http1.RESYNC_KEEP + 1
    assert [m.path for m in p.feed(NEXT_REQ, 99)] == ["/next?x=1"]


def test_detect_memory_is_bounded():
    p = Http1Parser()
    for i in range(10):
        p.feed(b"A" * 1000, i)
    assert p.state == "not-http" and p._buf == b""


def test_close_flushes_partial_header_block():
    msgs, p = run([b"GET /p HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nX-B", ("close",)])
    assert [t(m) for m in msgs] == [req("GET", "/p", [("Host", "h"), ("X-A", "1")], truncated=True)]
    # the last header line is held by httptools until the next name starts
    msgs, p = run([b"GET /p HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n", ("close",)])
    assert [t(m) for m in msgs] == [req("GET", "/p", [("Host", "h")], truncated=True)]
    msgs, p = run([b"GET /p HTTP/1.1\r\nHost: h\r\n\r\n", ("close",), ("close",)])
    assert len(msgs) == 1 and not msgs[0].truncated
    msgs, p = run([b"GE", ("close",)])
    assert msgs == []


def test_truncated_request_needs_at_least_a_target():
    msgs, _ = run([b"GET /x HTTP/1.1\r\n\r\nPOS", ("gap", 3)])
    assert [t(m) for m in msgs] == [req("GET", "/x", [])]
    msgs, _ = run([b"GET /x HTTP/1.1\r\n\r\nPOST /y", ("gap", 3)])
    assert [t(m) for m in msgs] == [req("GET", "/x", []), req("POST", "/y", [], truncated=True)]


def test_unknown_method_is_an_error_not_a_crash():
    data = b"FROB /x HTTP/1.1\r\n\r\n" + NEXT_REQ
    check(data, [NEXT_REQ_T], trailing=False, errors=1)


def test_feed_accepts_bytearray_and_memoryview():
    p = Http1Parser()
    assert [m.path for m in p.feed(bytearray(b"GET /a HTTP/1.1\r\n\r\n"), 1)] == ["/a"]
    assert [m.path for m in p.feed(memoryview(b"GET /b HTTP/1.1\r\n\r\n"), 2)] == ["/b"]
    assert p.feed(b"", 3) == []


def test_response_to_exception_does_not_escape():
    def boom(skip=0):
        raise RuntimeError("pairer bug")

    p = Http1Parser(response_to=boom)
    assert [m.status for m in p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 1)] == [200]


# ------------------------------------------------------------------------------------- properties

VALID = [
    b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n",
    b"POST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
    b"PUT /c HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
    b"CONNECT a:1 HTTP/1.1\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"\r\n",
]


def _fuzz(chunks, gaps, methods):
    meths = iter(methods * 1000)
    p = Http1Parser(response_to=lambda: next(meths, None))
    ts = 0
    for i, c in enumerate(chunks):
        ts += 1
        out = p.feed(c, ts)
        if i in gaps:
            out += p.gap(gaps[i], ts)
        for m in out:
            assert m.kind in ("request", "response") and m.proto in ("http/1.1", "http/1.0")
            assert all(isinstance(n, str) and isinstance(v, str) for n, v in m.headers)
    p.close(ts + 1)
    assert p.state in ("detect", "http", "resync", "not-http", "tunnel")
    assert len(p._buf) <= max(http1.DETECT_LIMIT, http1.RESYNC_KEEP) + 1 + max(map(len, chunks), default=0)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=300), max_size=20), st.dictionaries(st.integers(0, 20), st.integers(1, 99)))
def test_random_bytes_never_raise(chunks, gaps):
    _fuzz(chunks, gaps, ["GET", "HEAD", "CONNECT"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(VALID), min_size=1, max_size=12), st.data())
def test_mangled_streams_never_raise(parts, data):
    blob = bytearray(b"".join(parts))
    for _ in range(data.draw(st.integers(0, 4))):  # flip, drop or insert a few bytes
        if not blob:
            break
        i = data.draw(st.integers(0, len(blob) - 1))
        op = data.draw(st.sampled_from(["flip", "drop", "insert"]))
        if op == "flip":
            blob[i] ^= data.draw(st.integers(1, 255))
        elif op == "drop":
            del blob[i]
        else:
            blob[i:i] = data.draw(st.binary(min_size=1, max_size=20))
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(blob) - 1)), max_size=15)))
    chunks = [bytes(blob[a:b]) for a, b in zip([0] + cuts, cuts + [len(blob)]) if a < b]
    gaps = data.draw(st.dictionaries(st.integers(0, len(chunks)), st.integers(1, 50), max_size=2))
    _fuzz(chunks, gaps, data.draw(st.lists(st.sampled_from(["GET", "HEAD", "CONNECT", None]), min_size=1)))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(VALID[:4]), min_size=1, max_size=8), st.randoms(use_true_random=False))
def test_valid_request_streams_same_result_under_any_split(parts, rnd):
    reqs = [p for p in parts if not p.startswith(b"HTTP")] or [VALID[0]]
    blob = b"".join(reqs)
    whole, _ = run([blob])
    cut, _ = run(splits(blob, "random", rnd))
    assert [t(m) for m in whole] == [t(m) for m in cut]
    assert len(whole) == len(reqs)


def test_trim_frees_llhttp_only_between_messages():
    p = Http1Parser()
    assert [m.path for m in p.feed(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n", 1)] == ["/a"]
    p.trim()
    assert p._p is None
    assert p.feed(b"POST /b HTTP/1.1\r\nContent-Length: 10\r\n\r\nhello", 2)[0].path == "/b"
    p.trim()  # inside a body: llhttp's framing state is kept
    assert p._p is not None
    assert [m.path for m in p.feed(b"world" + NEXT_REQ, 3)] == ["/next?x=1"]
    assert p.feed(b"GET /c HTTP/1.1\r\nHo", 4) == []
    p.trim()  # inside a header block too
    (m,) = p.feed(b"st: c\r\n\r\n", 5)
    assert (m.path, m.headers) == ("/c", [("Host", "c")])


def test_garbage_after_a_keep_alive_response_is_no_phantom_response():
    """llhttp keeps the previous response's status code until it parses a new status line: garbage after a
    response (its parser reused) must not come out as a truncated copy of that response."""
    p = Http1Parser(response_to=lambda skip=0: "GET", takes_skip=True)
    out = p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", 1) + p.feed(b"\xe1\xd5s\x81garbage", 2)
    out += p.close(3)
    assert [(m.status, m.truncated) for m in out] == [(200, False)] and p.errors == 1
    p = Http1Parser(response_to=lambda skip=0: "GET", takes_skip=True)
    out = p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 404 Not", 1) + p.close(2)
    assert [(m.status, m.truncated, m.reason) for m in out] == [(200, False, "OK"), (404, True, "Not")]
