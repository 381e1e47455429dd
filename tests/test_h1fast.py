"""The C fast path of the HTTP/1 parser (hdrlog._h1fast, used by http1_fast): the C function on its own, what it
accepts against llhttp (httptools) itself, and Http1Parser with the fast path against Http1Parser without it on
random and hostile streams fed whole, byte by byte and in random chunks, with gaps, closes, trims and early
releases, with and without a body hook: the messages (every field), the hook's calls and the parser's counters and
state after every call must be the same.

``HDRLOG_H1FAST_EXAMPLES=N`` runs N examples per property (CI: the default below).
"""

from __future__ import annotations

import ctypes
import os
import random
import sys

import httptools
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_fuzz import mangle

from hdrlog import doctor, http1_fast
from hdrlog.http1 import MAX_HEADER_BYTES, Http1Parser
from hdrlog.mcp import Mcp

parse_head = http1_fast.parse_head
EXAMPLES = int(os.environ.get("HDRLOG_H1FAST_EXAMPLES", "300"))
PROPS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(autouse=True)
def _debug(monkeypatch):
    monkeypatch.setattr(Http1Parser, "debug", True)


def test_the_extension_is_built_and_used():
    """CI must never run the slow path silently: the test venv has the extension and the parser uses it."""
    assert parse_head is not None, http1_fast.IMPORT_ERROR
    assert Http1Parser.fast is True


def test_doctor_says_when_the_fast_path_is_missing(monkeypatch):
    r = doctor.Report()
    doctor._fast_path(r)
    assert (r.items[-1].name, r.items[-1].status) == ("C fast paths", "ok")
    # a None in sys.modules makes `import hdrlog._h1fast` raise ImportError, as a module that was never built does
    monkeypatch.setitem(sys.modules, "hdrlog._h1fast", None)
    monkeypatch.setitem(sys.modules, "hdrlog._recfast", None)
    doctor._fast_path(r)
    it = r.items[-1]
    assert it.status == "warn" and "C extensions missing" in it.detail
    assert "hdrlog._h1fast (" in it.detail and "llhttp alone" in it.detail
    assert "hdrlog._recfast (" in it.detail and "redacted in Python" in it.detail
    assert "hdrlog._statsfast" not in it.detail
    assert "make setup" in it.fix and "python3-dev" in it.fix


# ------------------------------------------------------------------------------------------ the C function

REQ = (b"GET /api/users?id=1&fields=name HTTP/1.1\r\nHost: 127.0.0.1:41225\r\nAccept: application/json\r\n"
       b"Authorization: Bearer t\r\nX-Empty:\r\nX-Ws: \t a b \t\r\n\r\n")
RESP = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 37\r\nSet-Cookie: s=1\r\n\r\n"


def test_a_request_head():
    r = parse_head(REQ + b"body", 0, True, MAX_HEADER_BYTES)
    assert r == (len(REQ), "GET", "/api/users?id=1&fields=name",
                 [("Host", "127.0.0.1:41225"), ("Accept", "application/json"), ("Authorization", "Bearer t"),
                  ("X-Empty", ""), ("X-Ws", "a b \t")], -1, "127.0.0.1:41225", 1)  # fmt: skip


def test_a_response_head():
    r = parse_head(RESP, 0, False, MAX_HEADER_BYTES)
    assert r == (len(RESP), 200, "OK", [("Content-Type", "application/json"), ("Content-Length", "37"),
                                        ("Set-Cookie", "s=1")], 37, None, 1)  # fmt: skip
    assert parse_head(b"HTTP/1.0 404 \r\n\r\n", 0, False, 99) == (17, 404, "", [], -1, None, 0)
    assert parse_head(b"HTTP/1.1 999\r\ncontent-LENGTH: 0012\r\n\r\n", 0, False, 99)[1:5] == (999, "", [
        ("content-LENGTH", "0012")], 12)


def test_offsets_and_buffer_types():
    blob = b"xx" + REQ + RESP
    r = parse_head(blob, 2, True, MAX_HEADER_BYTES)
    assert r[0] == 2 + len(REQ) and r[2] == "/api/users?id=1&fields=name"
    assert parse_head(bytearray(blob), 2, True, MAX_HEADER_BYTES) == r
    assert parse_head(memoryview(blob), 2, True, MAX_HEADER_BYTES) == r
    assert parse_head(blob, 2 + len(REQ), False, MAX_HEADER_BYTES)[0] == len(blob)
    assert parse_head(blob, len(blob), True, MAX_HEADER_BYTES) is None
    assert parse_head(blob, 1, True, MAX_HEADER_BYTES) is None  # "x" + request: no method
    for bad in (-1, len(blob) + 1):
        with pytest.raises(ValueError):
            parse_head(blob, bad, True, MAX_HEADER_BYTES)
    with pytest.raises(TypeError):
        parse_head("text", 0, True, 10)
    with pytest.raises(ValueError):
        parse_head(blob, 0, True, -1)


def test_host_is_the_first_host_header_and_only_in_requests():
    r = parse_head(b"GET / HTTP/1.1\r\nX: 1\r\nhOsT: a\r\nHost: b\r\n\r\n", 0, True, 999)
    assert r[5] == "a" and r[3] == [("X", "1"), ("hOsT", "a"), ("Host", "b")]
    assert parse_head(b"HTTP/1.1 200 OK\r\nHost: a\r\n\r\n", 0, False, 999)[5] is None


def exact(b: bytes) -> memoryview:
    """b in a buffer of exactly len(b) bytes (a bytes object has a NUL after its end): under an AddressSanitizer
    build with PYTHONMALLOC=malloc, any read beyond it is reported."""
    return memoryview((ctypes.c_char * len(b)).from_buffer_copy(b)).cast("B")


def test_every_truncation_is_not_sure():
    for blob, req in ((REQ, True), (RESP, False)):
        for k in range(len(blob)):
            assert parse_head(exact(blob[:k]), 0, req, MAX_HEADER_BYTES) is None, blob[:k]
            assert parse_head(exact(b"::" + blob[:k]), 2, req, MAX_HEADER_BYTES) is None


def test_the_limit_bounds_the_head():
    assert parse_head(REQ, 0, True, len(REQ))[0] == len(REQ)
    assert parse_head(REQ, 0, True, len(REQ) - 1) is None
    assert parse_head(b"12" + REQ, 2, True, len(REQ))[0] == len(REQ) + 2


def test_non_utf8_is_decoded_as_http1_decodes_it():
    v = b"caf\xc3\xa9 \xff\xfe \xed\xa0\x80 \xc3"
    r = parse_head(b"HTTP/1.1 200 \xe2\x9c\x93 \xff\r\nX-V: " + v + b"\r\n\r\n", 0, False, 999)
    assert r[2] == b"\xe2\x9c\x93 \xff".decode("utf-8", "backslashreplace")
    assert r[3] == [("X-V", v.decode("utf-8", "backslashreplace"))]


def test_huge_header_counts():
    hdrs = b"".join(b"X-%d: %d\r\n" % (i, i) for i in range(5000))
    blob = b"GET / HTTP/1.1\r\n" + hdrs + b"\r\n"
    r = parse_head(blob, 0, True, len(blob))
    assert len(r[3]) == 5000 and r[3][4999] == ("X-4999", "4999")
    assert parse_head(blob, 0, True, len(blob) - 1) is None


NOT_SURE = {
    "method": [b"get / HTTP/1.1", b"CONNECT h:443 HTTP/1.1", b"M-SEARCH * HTTP/1.1", b"PRI * HTTP/1.1",
               b"GETS / HTTP/1.1", b"XYZZYXYZZYXYZZYXYZZY / HTTP/1.1", b" GET / HTTP/1.1", b"\r\nGET / HTTP/1.1"],
    "target": [b"GET * HTTP/1.1", b"GET http://h/ HTTP/1.1", b"GET  / HTTP/1.1", b"GET /\xff HTTP/1.1",
               b"GET /\x7f HTTP/1.1", b"GET /a\tb HTTP/1.1", b"GET / x HTTP/1.1", b"GET /"],
    "version": [b"GET / HTTP/1.2", b"GET / HTTP/2.0", b"GET / HTTP/1.1 ", b"GET / http/1.1", b"HTTP/1.2 200 OK",
                b"HTTP/2 200 OK"],
    "status": [b"HTTP/1.1 100 Continue", b"HTTP/1.1 101 Switching", b"HTTP/1.1 199 x", b"HTTP/1.1 099 x",
               b"HTTP/1.1 2000 x", b"HTTP/1.1 20 x", b"HTTP/1.1 2x0 x", b"HTTP/1.1  200 x", b"HTTP/1.1 200\tx",
               b"HTTP/1.1 200 a\x01b", b"HTTP/1.1 200 a\x7f", b"HTTP/1.1 200 a\x00"],
    "line ends": [b"GET / HTTP/1.1\nHost: a", b"GET / HTTP/1.1\r\nHost: a\n", b"GET / HTTP/1.1\r\nHost: a\rb",
                  b"GET / HTTP/1.1\r\r\n", b"HTTP/1.1 200 OK\n"],
    "names": [b"GET / HTTP/1.1\r\nA b: c", b"GET / HTTP/1.1\r\nA : c", b"GET / HTTP/1.1\r\n: c",
              b"GET / HTTP/1.1\r\nN\xff: c", b"GET / HTTP/1.1\r\nA(b): c", b"GET / HTTP/1.1\r\nNoColon",
              b"GET / HTTP/1.1\r\n\x00: c"],
    "obs-fold": [b"GET / HTTP/1.1\r\nA: b\r\n c", b"GET / HTTP/1.1\r\nA: b\r\n\tc", b"GET / HTTP/1.1\r\n A: b"],
    "values": [b"GET / HTTP/1.1\r\nA: \x00", b"GET / HTTP/1.1\r\nA: b\x01", b"GET / HTTP/1.1\r\nA: \x7f",
               b"GET / HTTP/1.1\r\nA: \x1b[31m", b"GET / HTTP/1.1\r\nA: b\x0bc"],
    "framing": [b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked", b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip",
                b"GET / HTTP/1.1\r\nUpgrade: websocket", b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1",
                b"GET / HTTP/1.1\r\nContent-Length: 1 ", b"GET / HTTP/1.1\r\nContent-Length: 1x",
                b"GET / HTTP/1.1\r\nContent-Length:", b"GET / HTTP/1.1\r\nContent-Length: -1",
                b"GET / HTTP/1.1\r\nContent-Length: +1", b"GET / HTTP/1.1\r\nContent-Length: 1234567890123456789"],
}


@pytest.mark.parametrize("klass", sorted(NOT_SURE))
def test_outside_the_grammar_is_not_sure(klass):
    for head in NOT_SURE[klass]:
        blob = head + b"\r\n\r\n"
        req = not head.startswith(b"HTTP/")
        assert parse_head(blob, 0, req, MAX_HEADER_BYTES) is None, head
        assert parse_head(blob, 0, not req, MAX_HEADER_BYTES) is None, head


def test_inside_the_grammar():
    ok = [b"DELETE /x HTTP/1.1", b"QUERY /x HTTP/1.0", b"GET /~!$&'()*+,;=:@[]{}|^`\"<>\\%#f HTTP/1.1",
          b"GET / HTTP/1.1\r\nX~|`^_'!#$%&*+-.: v", b"GET / HTTP/1.1\r\nA: \t", b"GET / HTTP/1.1\r\nA:b\t\x80c",
          b"GET / HTTP/1.1\r\nContent-Length: 000000000000000001", b"GET / HTTP/1.1\r\nConnection: upgrade"]
    for head in ok:
        assert parse_head(head + b"\r\n\r\n", 0, True, MAX_HEADER_BYTES) is not None, head


# ------------------------------------------------------------------------------------------ against llhttp

class _Rec:
    def __init__(self):
        self.url, self.status, self.hdrs, self.hc = b"", b"", [], None

    def on_url(self, u):
        self.url += u

    def on_status(self, s):
        self.status += s

    def on_header(self, n, v):
        self.hdrs.append((n.decode("utf-8", "backslashreplace"), v.decode("utf-8", "backslashreplace")))

    def on_headers_complete(self):
        self.hc = True


def llhttp_head(blob: bytes, req: bool):
    """What llhttp (as Http1Parser sets it up) reports for the head at the start of blob, fed byte by byte:
    (end of the head, method or status, target or reason, headers, version), or the exception it raised."""
    rec = _Rec()
    p = (httptools.HttpRequestParser if req else httptools.HttpResponseParser)(rec)
    p.set_dangerous_leniencies(lenient_headers=True, lenient_keep_alive=True)
    for i in range(len(blob)):
        try:
            p.feed_data(blob[i:i + 1])
        except (httptools.HttpParserUpgrade, httptools.HttpParserError) as exc:
            return type(exc).__name__
        if rec.hc:
            first = p.get_method().decode() if req else p.get_status_code()
            second = rec.url.decode("utf-8", "backslashreplace") if req else rec.status.decode("utf-8",
                                                                                               "backslashreplace")
            return i + 1, first, second, rec.hdrs, p.get_http_version()
    return None


NAMES = [b"Host", b"host", b"Content-Length", b"content-length", b"Transfer-Encoding", b"Upgrade", b"Connection",
         b"Content-Type", b"Set-Cookie", b"Authorization", b"X-Body", b"X~!#$%&'*+-.^_`|", b"A b", b"", b"N\xffm",
         b"Ho:st", b"Proxy-Connection", b"Mcp-Session-Id", b"Expect"]
VALUES = [b"", b" ", b"x", b"  x  ", b"\t", b"a\tb", b"0", b"5", b"12", b"012", b"1 2", b"-1", b"99999999999999999999",
          b"chunked", b"gzip, chunked", b"close", b"upgrade", b"keep-alive", b"websocket", b"\xff\xfe",
          b"caf\xc3\xa9", b"\x00", b"\x01", b"\x7f", b"a\rb", b"application/json", b"text/event-stream",
          b"100-continue", b" 7 "]


CLEAN_NAMES = [b"Host", b"host", b"Connection", b"Content-Type", b"Set-Cookie", b"Authorization", b"X-A",
               b"Expect", b"Mcp-Session-Id", b"X~!#$%&'*+-.^_`|"]
CLEAN_VALUES = [b"", b"x", b"  x  ", b"a\tb", b"close", b"keep-alive", b"upgrade", b"\xff\xfe", b"caf\xc3\xa9",
                b"application/json", b"text/event-stream", b"100-continue", b"Bearer s3cr3t"]


@st.composite
def heads(draw, req: bool):
    """A head: half of them in the fast path's grammar, the others often just outside it."""
    pick = st.sampled_from
    if draw(st.booleans()):
        start = (draw(pick([b"GET", b"POST", b"HEAD", b"QUERY"])) + b" " + draw(pick([b"/", b"/a?b", b"/x#y"])) +
                 b" HTTP/1.1" if req else draw(pick([b"HTTP/1.1 ", b"HTTP/1.0 "])) +
                 draw(pick([b"200 OK", b"201", b"204 ", b"304 NM", b"404 Not Found", b"500 \xff"])))
        hdrs = [n + b": " + v for n, v in draw(st.lists(st.tuples(pick(CLEAN_NAMES), pick(CLEAN_VALUES)), max_size=6))]
        return start + b"\r\n" + b"".join(h + b"\r\n" for h in hdrs) + b"\r\n"
    if req:
        method = draw(pick([b"GET", b"GET", b"POST", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"CONNECT",
                            b"M-SEARCH", b"get", b"PRI", b"QUERY", b"SOURCE", b"MKCALENDAR", b"GE"]))
        target = draw(pick([b"/", b"/a?b=c&d", b"/p#frag", b"*", b"http://h/x", b"/sp ace", b"/\xff", b"/\x7f",
                            b"/~!$&'()*+,;=:@[]", b"/" + b"x" * 300, b"/HTTP/1.1"]))
        sep = draw(pick([b" ", b" ", b" ", b"  ", b"\t"]))
        ver = draw(pick([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2.0", b"HTTP/1.1 "]))
        start = method + sep + target + b" " + ver
    else:
        ver = draw(pick([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2"]))
        status = draw(pick([b"200", b"200", b"201", b"204", b"304", b"404", b"500", b"100", b"101", b"103", b"099",
                            b"999", b"20", b"2000"]))
        reason = draw(pick([b" OK", b" OK", b"", b" ", b" Not Found", b"  x  ", b" caf\xc3\xa9", b" \xff",
                            b" a\x01b", b"\tOK", b" HTTP/1.1 y"]))
        start = ver + b" " + status + reason
    hdrs = []
    for _ in range(draw(st.integers(0, 8))):
        name = draw(st.one_of(pick(NAMES), st.from_regex(rb"\A[A-Za-z0-9-]{1,12}\Z")))
        value = draw(st.one_of(pick(VALUES), st.binary(max_size=12)))
        sep = draw(pick([b": ", b": ", b":", b":\t", b" : "]))
        hdrs.append(name + sep + value)
        if draw(st.integers(0, 30)) == 0:
            hdrs.append(b" folded")
    eol = draw(pick([b"\r\n"] * 12 + [b"\n", b"\r"]))
    return start + eol + b"".join(h + b"\r\n" for h in hdrs) + b"\r\n"


@PROPS
@given(st.booleans(), st.data())
def test_what_the_c_parser_takes_llhttp_parses_the_same(req, data):
    head = data.draw(heads(req))
    head = bytes(mangle(data, bytearray(head), 2))
    tail = data.draw(st.sampled_from([b"", b"abc", b"GET / HTTP/1.1\r\n\r\n", b"\r\n"]))
    r = parse_head(exact(head + tail), 0, req, MAX_HEADER_BYTES)
    for k in range(len(head)):  # and cut anywhere
        cut = parse_head(exact(head[:k]), 0, req, MAX_HEADER_BYTES)
        assert cut is None or cut[0] <= k
    if r is None:
        return
    end, first, second, headers, cl, host, minor = r
    assert llhttp_head(head + tail, req) == (end, first, second, headers, f"1.{minor}")
    if req:
        assert host == next((v for n, v in headers if n.lower() == "host"), None)
    n_cl = [v for n, v in headers if n.lower() == "content-length"]
    assert cl == (int(n_cl[0]) if n_cl else -1) and len(n_cl) <= 1


# ------------------------------------------------------------------------------------------ the parser, both ways

class RecHook:
    """A body hook that logs what it is given: it wants the body of messages with an X-Body header (its value:
    how many bytes it wants before add() says no more)."""

    def __init__(self, log):
        self.log = log

    def __call__(self, msg, method=None):
        self.log.append(("hook", msg.kind, msg.status, msg.path, method))
        for n, v in msg.headers:
            if n.lower() == "x-body":
                return RecSink(self.log, int(v) if v.strip().isdigit() else 1 << 30)
        return None


class RecSink:
    def __init__(self, log, want):
        self.log, self.want = log, want

    def add(self, b) -> bool:
        self.log.append(("add", bytes(b)))
        self.want -= len(b)
        return self.want > 0

    def finish(self, complete) -> None:
        self.log.append(("finish", complete))


def full(m):
    return (m.kind, m.proto, m.ts_ns, m.headers, m.method, m.path, m.authority, m.status, m.reason, m.truncated,
            m.stream, m.latency_ms, m.extra)


def drive(ops, methods, hook: str, fast: bool, cfeed: bool = False) -> list:
    """Run ops through one Http1Parser (fast: the C head parser; cfeed: and the C feed, _h1feed); the log of
    everything observable."""
    saved = Http1Parser.fast, Http1Parser.cfeed
    Http1Parser.fast, Http1Parser.cfeed = fast, cfeed
    try:
        log: list = []
        used = [0]

        def rt(skip=0):
            i = used[0] + skip
            m = methods[i] if i < len(methods) else None
            log.append(("rt", skip, m))
            return m

        body = {"none": None, "rec": RecHook(log), "mcp": Mcp()}[hook]
        p = Http1Parser(response_to=rt, body=body, takes_skip=True)
        for ts, (op, arg) in enumerate(ops):
            if op == "feed":
                msgs = p.feed(arg, ts)
            elif op == "gap":
                msgs = p.gap(arg, ts)
            elif op == "close":
                msgs = p.close(ts)
            elif op == "release":
                msgs = p.release_held()
            else:
                p.trim()
                msgs = []
            for m in msgs:
                log.append(("msg", full(m)))
                if m.kind == "response" and not (m.status and 100 <= m.status < 200 and m.status != 101):
                    used[0] += 1
            log.append((op, p.state, p.kind, p.errors, p.gaps, p.holding))
        return log
    finally:
        Http1Parser.fast, Http1Parser.cfeed = saved


def same_both_ways(ops, methods=(), hook="none"):
    """llhttp alone, the C head parser (FastHeads), and the C feed (_h1feed) over it: the same log."""
    fast = drive(ops, list(methods), hook, True)
    slow = drive(ops, list(methods), hook, False)
    assert fast == slow
    cfed = drive(ops, list(methods), hook, True, True)
    assert cfed == slow
    return fast


class Counting:
    """parse_head with a count of the heads it took."""

    def __init__(self):
        self.taken = 0

    def __call__(self, *a):
        r = parse_head(*a)
        self.taken += r is not None
        return r


@pytest.fixture
def counting(monkeypatch):
    c = Counting()
    monkeypatch.setattr(http1_fast, "parse_head", c)
    return c


JSON_BODY = b'{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}'
RESP_J = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(JSON_BODY)
NEXT_REQ = b"GET /next?x=1 HTTP/1.1\r\nHost: next.example\r\n\r\n"


@pytest.mark.parametrize("hook", ["none", "rec", "mcp"])
def test_fixed_streams_both_ways(counting, hook):
    req = REQ.replace(b"X-Empty:", b"X-Body: 5\r\nX-Empty:")
    post = b"POST /p HTTP/1.1\r\nX-Body: 100\r\nContent-Length: 10\r\n\r\n"
    cases = [
        ([("feed", req), ("feed", req + req), ("feed", post + b"hello"), ("feed", b"world" + NEXT_REQ)], ()),
        ([("feed", post), ("trim", None), ("feed", b"01234"), ("gap", 3), ("feed", b"ab" + NEXT_REQ)], ()),
        ([("feed", post + b"012"), ("release", None), ("feed", b"3456789GET /x HTTP/1.1\r\nHo"), ("close", None),
          ("feed", NEXT_REQ)], ()),
        ([("feed", RESP_J), ("feed", JSON_BODY), ("feed", RESP_J + JSON_BODY + RESP_J[:20]), ("feed", RESP_J[20:])],
         ["POST"] * 4),
        # HEAD and CONNECT answers, a body until close, 204/304 with a Content-Length
        ([("feed", b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n" + RESP_J), ("feed", JSON_BODY),
          ("feed", b"HTTP/1.1 200 OK\r\n\r\nbody"), ("feed", b"more HTTP/1.1 200 OK\r\n\r\n"), ("close", None),
          ("feed", b"HTTP/1.1 304 NM\r\nContent-Length: 5\r\n\r\nHTTP/1.1 204 NC\r\nContent-Length: 5\r\n\r\n"),
          ("feed", b"HTTP/1.1 200 Connection established\r\n\r\nbinary")], ["HEAD", "POST", "GET", "GET", "GET",
                                                                             "CONNECT"]),
        # the status code llhttp keeps from the previous response (no reason phrase: no on_status)
        ([("feed", RESP_J + JSON_BODY), ("feed", b"HTTP/1.1 200\r\nX-A: 1\r\nX-B"), ("close", None)], ["GET"] * 2),
        ([("feed", RESP_J + JSON_BODY + b"HTTP/1.1 500\r\nX"), ("gap", 10)], ["GET"] * 2),
        # a request cut before its version, after a fast one
        ([("feed", NEXT_REQ + b"GET /cut"), ("close", None)], ()),
        # a segment boundary (a message start to segments()) inside a head: llhttp's then
        ([("feed", b"GET / HTTP/1.1\r\nX: a GET /y HTTP/1.1\r\n\r\n" + NEXT_REQ)], ()),
        ([("feed", b"HTTP/1.1 200 OK\r\nVia: HTTP/1.1 p\r\nContent-Length: 2\r\n\r\nok" + RESP_J + JSON_BODY)],
         ["GET"] * 2),
        # a held body, then bytes that begin a message inside the same segment (llhttp stops there)
        ([("feed", post + b"helloworldXGET /x HTTP/1.1\r\n\r\n"), ("feed", post + b"helloworld\r\n" + NEXT_REQ)], ()),
    ]
    for ops, methods in cases:
        same_both_ways(ops, methods, hook)
        for k in (1, 7):  # and in small chunks
            small = [(op, arg[i:i + k]) if op == "feed" else (op, arg)
                     for op, arg in ops for i in (range(0, len(arg), k) if op == "feed" else [0])]
            same_both_ways(small, methods, hook)
    assert counting.taken >= 15  # whole chunks only: small ones never hold a whole head


def test_the_fixture_exchange_takes_the_fast_path(counting):
    log = same_both_ways([("feed", REQ)] * 3)
    # 3 by FastHeads, then 1 with the C feed over it: the first chunk (state "detect") is Python's, the others C's
    assert counting.taken == 3 + 1 and sum(e[0] == "msg" for e in log) == 3


@st.composite
def messages(draw, req: bool):
    head = draw(heads(req))
    body = draw(st.sampled_from([b"", b"hello", JSON_BODY, b"GET / HTTP/1.1\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\n",
                                 b"x\r\n\r\ny", b"z" * 200]))
    framing = draw(st.sampled_from(["cl", "cl", "cl", "cl-wrong", "none", "chunked", "hook", "hook", "hook-close"]))
    extra = b""
    if framing.startswith("hook"):  # a body the hook wants (RecHook: X-Body, Mcp: JSON)
        extra = b"X-Body: %d\r\nContent-Type: application/json\r\n" % draw(st.integers(1, 250))
    if framing in ("cl", "hook"):
        extra += b"Content-Length: %d\r\n" % len(body)
    elif framing == "cl-wrong":
        extra = b"Content-Length: %d\r\n" % max(0, len(body) + draw(st.integers(-3, 3)))
    elif framing == "chunked":
        extra = b"Transfer-Encoding: chunked\r\n"
        body = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    if head.endswith(b"\r\n\r\n") and extra:
        head = head[:-2] + extra + b"\r\n"
    return head + body


@PROPS
@given(st.data())
def test_random_and_hostile_streams_same_both_ways(data):
    req = data.draw(st.booleans(), label="req")
    parts = data.draw(st.lists(st.one_of(messages(req), messages(req), st.sampled_from(
        [NEXT_REQ, RESP_J + JSON_BODY, b"\r\n", b"\x00" * 8, b"garbage"]), st.binary(max_size=30)),
        min_size=1, max_size=6), label="parts")
    blob = bytes(mangle(data, bytearray(b"".join(parts)), 3))
    mode = data.draw(st.sampled_from(["whole", "bytes", "random", "random"]), label="mode")
    if mode == "whole":
        chunks = [blob]
    elif mode == "bytes":
        chunks = [blob[i:i + 1] for i in range(len(blob))]
    else:
        cuts = sorted(set(data.draw(st.lists(st.integers(1, max(1, len(blob) - 1)), max_size=10), label="cuts")))
        chunks = [blob[a:b] for a, b in zip([0, *cuts], [*cuts, len(blob)]) if a < b]
    ops = []
    for c in chunks:
        if mode != "bytes" or data.draw(st.integers(0, 40), label="rare") == 0:
            extra = data.draw(st.sampled_from(["", "", "", "", "gap", "close", "release", "trim"]), label="op")
            if extra == "gap":
                ops.append(("gap", data.draw(st.sampled_from([1, 3, 10, 40, 1 << 20]), label="n")))
            elif extra:
                ops.append((extra, None))
        ops.append(("feed", c))
    ops.append(("close", None))
    methods = data.draw(st.lists(st.sampled_from(["GET", "GET", "POST", "HEAD", "CONNECT", None]), max_size=8),
                        label="methods")
    hook = data.draw(st.sampled_from(["none", "rec", "mcp"]), label="hook")
    same_both_ways(ops, methods, hook)


@settings(max_examples=max(20, EXAMPLES // 10), deadline=None, suppress_health_check=list(HealthCheck))
@given(st.booleans(), st.integers(1, 6000), st.integers(0, 3), st.randoms(use_true_random=False))
def test_huge_heads_same_both_ways(req, nheaders, pad, rnd: random.Random):
    start = b"POST /u HTTP/1.1\r\n" if req else b"HTTP/1.1 200 OK\r\n"
    head = start + b"".join(b"X-%d: %s\r\n" % (i, b"v" * pad) for i in range(nheaders)) + b"Content-Length: 3\r\n\r\n"
    blob = head + b"abc" + head
    chunks, i = [], 0
    while i < len(blob):
        k = rnd.choice([1, 100, 4096, 70000])
        chunks.append(blob[i:i + k])
        i += k
    same_both_ways([("feed", blob)], ["GET", "GET"])
    same_both_ways([("feed", c) for c in chunks] + [("close", None)], ["GET", "GET"])


@PROPS
@given(st.data())
def test_bodies_across_chunks_same_both_ways(data):
    """Valid messages with bodies (held by the hook or skipped), cut anywhere: the body ends inside a later chunk,
    at its end, or with the next message right behind it."""
    req = data.draw(st.booleans(), label="req")
    parts = []
    for _ in range(data.draw(st.integers(1, 5), label="n")):
        body = b"b" * data.draw(st.sampled_from([0, 1, 5, 37, 300]), label="len")
        hdrs = b"Content-Length: %d\r\n" % len(body)
        if data.draw(st.booleans(), label="held"):
            hdrs += b"X-Body: %d\r\nContent-Type: application/json\r\n" % data.draw(st.integers(1, 400), label="want")
        start = b"POST /p HTTP/1.1\r\n" if req else b"HTTP/1.1 200 OK\r\n"
        parts.append(start + hdrs + b"\r\n" + body + data.draw(st.sampled_from([b"", b"", b"\r\n", b"x"]), label="sep"))
    blob = b"".join(parts)
    if data.draw(st.booleans(), label="at boundaries"):  # as TLS reads deliver them: heads and bodies whole
        cuts, at = [], 0
        for m in parts:
            h = m.index(b"\r\n\r\n") + 4
            if data.draw(st.booleans(), label="apart"):
                cuts.append(at + h)
            at += len(m)
            cuts.append(at)
        cuts = [c for c in cuts if 0 < c < len(blob)]
    else:
        cuts = sorted(set(data.draw(st.lists(st.integers(1, max(1, len(blob) - 1)), max_size=8), label="cuts")))
    ops = []
    for a, b in zip([0, *cuts], [*cuts, len(blob)]):
        if a < b:
            extra = data.draw(st.sampled_from(["", "", "", "", "", "", "gap", "release", "trim"]), label="op")
            if extra == "gap":
                ops.append(("gap", data.draw(st.sampled_from([1, 10, 200, 1 << 20]), label="g")))
            elif extra:
                ops.append((extra, None))
            ops.append(("feed", blob[a:b]))
    ops.append(("close", None))
    methods = data.draw(st.lists(st.sampled_from(["GET", "POST", "HEAD"]), max_size=6), label="methods")
    same_both_ways(ops, methods, data.draw(st.sampled_from(["none", "rec", "mcp"]), label="hook"))
