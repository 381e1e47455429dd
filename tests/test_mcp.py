"""MCP over streamable HTTP (src/hdrlog/mcp.py and the body hook in http1.py / h2.py): recognition, body
reassembly over many reads, SSE, batches, privacy (no arguments/results unless asked), bounds, and that
ordinary traffic never has its body copied."""

from __future__ import annotations

import json
import time

import h2.config
import h2.connection
import pytest

from hdrlog import mcp
from hdrlog.conntrack import Tracker
from hdrlog.events import Attr, Dir, Event, Kind
from hdrlog.http1 import Http1Parser
from hdrlog.mcp import Mcp
from hdrlog.model import HttpMessage

Http1Parser.debug = True

SESSION = "4f1c2d3e-aaaa-bbbb-cccc-0123456789ab"
VERSION = "2025-06-18"


def rpc(method, id_=1, **params):
    m = {"jsonrpc": "2.0", "id": id_, "method": method, "params": params}
    if id_ is None:
        del m["id"]
    return m


def post(body: bytes | str, *, session=SESSION, version=VERSION, chunked=False, ctype="application/json",
         path="/mcp") -> bytes:
    if isinstance(body, str):
        body = body.encode()
    h = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1:8000", f"Content-Type: {ctype}",
         "Accept: application/json, text/event-stream"]
    if session:
        h.append(f"Mcp-Session-Id: {session}")
    if version:
        h.append(f"MCP-Protocol-Version: {version}")
    if chunked:
        h.append("Transfer-Encoding: chunked")
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 7]), body[i:i + 7]) for i in range(0, len(body), 7))
        return ("\r\n".join(h) + "\r\n\r\n").encode() + chunks + b"0\r\n\r\n"
    h.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(h) + "\r\n\r\n").encode() + body


def response(body: bytes | str, *, ctype="application/json", session=SESSION, status=200, chunked=False,
             close=False) -> bytes:
    if isinstance(body, str):
        body = body.encode()
    h = [f"HTTP/1.1 {status} OK", f"Content-Type: {ctype}"]
    if session:
        h.append(f"mcp-session-id: {session}")
    if chunked:
        h.append("Transfer-Encoding: chunked")
        return ("\r\n".join(h) + "\r\n\r\n").encode() + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    if not close:
        h.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(h) + "\r\n\r\n").encode() + body


class Feed:
    """A Tracker (the live pipeline's) fed synthetic events of one server connection."""

    def __init__(self, payloads=False):
        self.out: list[tuple[str, HttpMessage]] = []
        self.hook = Mcp(payloads=payloads)
        self.t = Tracker(lambda c, d, m, ev: self.out.append((d, m)), lib_of_pid=lambda p: "openssl",
                         body_hook=self.hook)
        self.ts = time.time_ns()

    def send(self, direction: str, data: bytes, pieces: int | None = None):
        step = pieces or len(data) or 1
        for i in range(0, max(len(data), 1), step):
            self.ts += 1000
            chunk = data[i:i + step]
            self.t.on_event(Event(self.ts, 7, 100, 100, len(chunk), 0, 0, Kind.DATA, 0,
                                  Dir.IN if direction == "in" else Dir.OUT, Attr.IN_CALL, "127.0.0.1:8000",
                                  "127.0.0.1:5555", "srv", 3, chunk))

    def close(self):
        self.t.on_event(Event(self.ts, 7, 100, 100, 0, 0, 0, Kind.CLOSE, 0, 0, 0, None, None, "srv", 3, b""))


# ------------------------------------------------------------------------------------------ HTTP/1
@pytest.mark.parametrize("pieces", [None, 1, 13])
@pytest.mark.parametrize("chunked", [False, True])
def test_tools_call_request_and_response(pieces, chunked):
    f = Feed()
    call = rpc("tools/call", 3, name="add", arguments={"a": 1, "b": "private-arg-value"})
    f.send("in", post(json.dumps(call), chunked=chunked), pieces)
    result = {"jsonrpc": "2.0", "id": 3, "result": {"content": [{"type": "text", "text": "private-result"}],
                                                     "isError": False}}
    f.send("out", response(json.dumps(result), chunked=chunked), pieces)
    f.send("in", b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", pieces)  # keep-alive goes on after the body
    (d1, req), (d2, resp), (_, nxt) = f.out
    assert req.extra["mcp"] == {"session": SESSION, "version": VERSION, "method": "tools/call", "id": 3,
                                "tool": "add"}
    assert resp.request is req
    assert resp.extra["mcp"] == {"session": SESSION, "version": VERSION, "id": 3, "is_error": False,
                                 "method": "tools/call", "tool": "add"}
    assert nxt.path == "/health" and not nxt.extra
    assert "private" not in repr([m.extra for _, m in f.out])


def test_payloads_flag_logs_arguments_and_results():
    f = Feed(payloads=True)
    f.send("in", post(json.dumps(rpc("tools/call", 3, name="add", arguments={"a": 1}))))
    f.send("out", response(json.dumps({"jsonrpc": "2.0", "id": 3, "result": {"content": [], "isError": True}})))
    f.send("in", post(json.dumps(rpc("tools/call", 4, name="x"))))
    f.send("out", response(json.dumps({"jsonrpc": "2.0", "id": 4, "error": {"code": -32602, "message": "bad"}})))
    (_, req), (_, resp), (_, _), (_, err) = f.out
    assert req.extra["mcp"]["params"] == {"name": "add", "arguments": {"a": 1}}
    assert resp.extra["mcp"]["result"] == {"content": [], "isError": True} and resp.extra["mcp"]["is_error"] is True
    assert err.extra["mcp"]["error"] == -32602 and err.extra["mcp"]["error_message"] == "bad"


def test_initialize_version_from_body_and_session_from_response_header():
    f = Feed()
    f.send("in", post(json.dumps(rpc("initialize", 0, protocolVersion="2025-03-26", capabilities={},
                                     clientInfo={"name": "c", "version": "1"})), session=None, version=None))
    f.send("out", response(json.dumps({"jsonrpc": "2.0", "id": 0, "result": {"protocolVersion": "2025-03-26"}})))
    (_, req), (_, resp) = f.out
    assert req.extra["mcp"] == {"session": None, "version": "2025-03-26", "method": "initialize", "id": 0}
    assert resp.extra["mcp"]["session"] == SESSION and resp.extra["mcp"]["version"] == "2025-03-26"
    assert resp.extra["mcp"]["method"] == "initialize"


def test_resource_prompt_batch_and_notification():
    f = Feed()
    batch = [rpc("resources/read", 1, uri="file:///etc/motd"), rpc("prompts/get", 2, name="greet"),
             rpc("notifications/initialized", None)]
    f.send("in", post(json.dumps(batch)))
    ((_, req),) = f.out
    assert req.extra["mcp"] == [
        {"session": SESSION, "version": VERSION, "method": "resources/read", "id": 1, "resource": "file:///etc/motd"},
        {"session": SESSION, "version": VERSION, "method": "prompts/get", "id": 2, "prompt": "greet"},
        {"session": SESSION, "version": VERSION, "method": "notifications/initialized"},
    ]


def test_sse_response_reassembled_over_many_reads():
    f = Feed()
    f.send("in", post(json.dumps(rpc("tools/call", 7, name="slow", arguments={}))))
    events = (
        ": keep-alive comment\n\n"
        "id: 1\nevent: message\ndata: " + json.dumps({"jsonrpc": "2.0", "method": "notifications/progress",
                                                      "params": {"progress": 1}}) + "\n\n"
        "event: message\r\ndata: {\"jsonrpc\": \"2.0\",\r\ndata:  \"id\": 7, \"result\": {\"isError\": true}}\r\n\r\n"
    )
    f.send("out", response(events, ctype="text/event-stream", chunked=True), pieces=5)
    (_, req), (_, resp) = f.out
    assert resp.extra["mcp"] == [
        {"session": SESSION, "version": VERSION, "method": "notifications/progress"},
        {"session": SESSION, "version": VERSION, "id": 7, "is_error": True, "method": "tools/call", "tool": "slow"},
    ]


def test_sse_body_until_close():
    f = Feed()
    f.send("in", post(json.dumps(rpc("tools/list", 2))))
    f.send("out", response('event: message\ndata: {"jsonrpc":"2.0","id":2,"result":{"tools":[]}}\n\n',
                           ctype="text/event-stream", close=True))
    assert len(f.out) == 1  # held until the body ends: here, when the connection closes
    f.close()
    assert f.out[1][1].extra["mcp"]["method"] == "tools/list"


def test_get_sse_stream_and_delete_are_not_held():
    f = Feed()
    f.send("in", f"GET /mcp HTTP/1.1\r\nHost: h\r\nAccept: text/event-stream\r\nMcp-Session-Id: {SESSION}\r\n"
                 f"MCP-Protocol-Version: {VERSION}\r\n\r\n".encode())
    f.send("out", b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
                  b"mcp-session-id: " + SESSION.encode() + b"\r\n\r\n")
    assert [m.extra["mcp"] for _, m in f.out] == [{"session": SESSION, "version": VERSION}] * 2
    f2 = Feed()
    f2.send("in", f"DELETE /mcp HTTP/1.1\r\nHost: h\r\nMcp-Session-Id: {SESSION}\r\n\r\n".encode())
    f2.send("out", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    (_, d), (_, r) = f2.out
    assert d.method == "DELETE" and d.extra["mcp"] == {"session": SESSION, "version": None}
    assert r.request is d


def test_202_accepted_for_a_notification():
    f = Feed()
    f.send("in", post(json.dumps(rpc("notifications/initialized", None))))
    f.send("out", b"HTTP/1.1 202 Accepted\r\nmcp-session-id: " + SESSION.encode() + b"\r\nContent-Length: 0\r\n\r\n")
    (_, req), (_, resp) = f.out
    assert req.extra["mcp"]["method"] == "notifications/initialized"
    assert resp.status == 202 and resp.extra["mcp"]["session"] == SESSION


def test_big_body_is_bounded_and_the_envelope_still_decoded():
    f = Feed()
    call = rpc("tools/call", 9, name="upload", arguments={"blob": "A" * (400 * 1024)})
    f.send("in", post(json.dumps(call)), pieces=16384)
    f.send("in", b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    (_, req), (_, nxt) = f.out
    assert req.extra["mcp"] == {"session": SESSION, "version": VERSION, "method": "tools/call", "id": 9,
                                "tool": "upload", "truncated": True}
    assert nxt.path == "/next"


def test_ordinary_json_api_is_released_after_its_first_bytes():
    f = Feed()
    body = json.dumps({"items": ["x" * 50] * 200})
    f.send("in", post(body, session=None, version=None), pieces=300)
    f.send("in", b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    assert [m.path for _, m in f.out] == ["/mcp", "/next"] and not any(m.extra for _, m in f.out)


def test_ordinary_traffic_never_gets_a_sink():
    hook = Mcp()
    p = Http1Parser(body=hook)
    for i in range(5):
        msgs = p.feed(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Type: application/octet-stream\r\n"
                      b"Content-Length: 10\r\n\r\n0123456789", i)
        assert len(msgs) == 1 and not msgs[0].extra
    msgs = p.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 9)
    assert hook.candidates == 0 and p.state == "http"


def test_hook_cost_on_ordinary_messages():
    """The hook only scans header names for ordinary traffic (budget: a few µs per message)."""
    hook = Mcp()
    m = HttpMessage("request", "http/1.1", 0, [("Host", "a"), ("User-Agent", "curl/8"), ("Accept", "*/*"),
                                               ("Authorization", "Bearer x"), ("X-Request-Id", "1"),
                                               ("Accept-Encoding", "gzip"), ("Connection", "keep-alive")])
    t = time.perf_counter()
    for _ in range(20000):
        hook(m)
    per = (time.perf_counter() - t) / 20000 * 1e6
    assert per < 5, per


def test_partial_json_envelope():
    assert mcp._partial('{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"t","arguments":{"x":"abc') \
        == {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "t"}}
    assert mcp._partial('[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","id":2,"meth') == [
        {"jsonrpc": "2.0", "id": 1, "method": "a"}, {"jsonrpc": "2.0", "id": 2}]
    assert mcp._partial("garbage") is None


def test_parse_sse():
    assert mcp.parse_sse(b"data: a\ndata: b\n\n: c\n\ndata:x\r\n\r\nevent: e\ndata: last") == ["a\nb", "x", "last"]


# ------------------------------------------------------------------------------------------ HTTP/2
def test_mcp_over_h2():
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    s = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
    c.initiate_connection()
    s.initiate_connection()
    f = Feed()

    def pump():
        while True:
            a, b = c.data_to_send(), s.data_to_send()
            if not a and not b:
                return
            if a:
                f.send("in", a, pieces=11)
                s.receive_data(a)
            if b:
                f.send("out", b, pieces=11)
                c.receive_data(b)

    pump()
    body = json.dumps(rpc("tools/call", 11, name="h2tool", arguments={"secret": "private-arg-value"})).encode()
    sid = c.get_next_available_stream_id()
    c.send_headers(sid, [(":method", "POST"), (":scheme", "https"), (":authority", "h"), (":path", "/mcp"),
                         ("content-type", "application/json"), ("mcp-session-id", SESSION),
                         ("mcp-protocol-version", VERSION)])
    c.send_data(sid, body[:20], pad_length=5)
    c.send_data(sid, body[20:], end_stream=True)
    pump()
    s.send_headers(sid, [(":status", "200"), ("content-type", "text/event-stream")])
    s.send_data(sid, b'event: message\ndata: {"jsonrpc":"2.0","id":11,"result":{"isError":false}}\n\n',
                end_stream=True)
    pump()
    (_, req), (_, resp) = f.out
    assert req.proto == "h2" and req.extra["mcp"] == {"session": SESSION, "version": VERSION,
                                                      "method": "tools/call", "id": 11, "tool": "h2tool"}
    assert resp.request is req and resp.extra["mcp"]["tool"] == "h2tool" and resp.extra["mcp"]["is_error"] is False
    assert "private" not in repr(req.extra)


def test_sse_cut_after_a_whole_event_is_not_truncated_but_mid_event_is():
    for cut, truncated in ((0, False), (25, True)):
        f = Feed()
        f.send("in", post(json.dumps(rpc("tools/call", 5, name="t", arguments={}))))
        ev = 'event: message\r\ndata: {"jsonrpc":"2.0","id":5,"result":{"isError":false}}\r\n\r\n'
        ev += "event: message\r\ndata: " + json.dumps({"jsonrpc": "2.0", "method": "notifications/message",
                                                       "params": {"level": "info"}})
        body = ev[:len(ev) - cut] if cut else ev.rsplit("event:", 1)[0]
        f.send("out", b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"%x\r\n%s\r\n" % (len(body), body.encode()))
        f.close()  # the client hung up before the last chunk
        m = f.out[1][1].extra["mcp"]
        items = m if isinstance(m, list) else [m]
        assert items[0]["is_error"] is False and items[0]["tool"] == "t"
        assert any(i.get("truncated") for i in items) == truncated, items


def test_fixture_mcp_sdk_over_uvicorn():
    """Kernel events recorded from the MCP SDK's server on uvicorn and its client (legacy initialize flow)."""
    from test_h2 import replayed

    recs = replayed("mcp_uvicorn_legacy")
    reqs = [r for r in recs if r["kind"] == "request"]
    resps = [r for r in recs if r["kind"] == "response"]
    assert len(reqs) == len(resps) == 9 and all("mcp" in r for r in recs)
    methods = [r["mcp"].get("method") for r in reqs]
    assert sorted(map(str, methods)) == sorted(map(str, [  # None: the GET stream and the DELETE
        "initialize", None, "notifications/initialized", "tools/list", "tools/call", "tools/call", "resources/read",
        "prompts/get", None]))
    session = next(r["mcp"]["session"] for r in resps if r["mcp"].get("method") == "initialize")
    assert session and all(r["mcp"]["session"] == session for r in recs if r["mcp"].get("method") != "initialize"
                           or r["kind"] == "response")
    assert {r["mcp"]["version"] for r in recs} == {"2025-11-25"}
    calls = {r["mcp"]["tool"]: r for r in resps if r["mcp"].get("method") == "tools/call"}
    assert calls["add"]["mcp"]["is_error"] is False and calls["explode"]["mcp"]["is_error"] is True
    assert {r["conn"]["attribution"] for r in recs} <= {"recv-before", "send-after"}
    assert {r["method"] for r in reqs} == {"POST", "GET", "DELETE"}
    text = json.dumps(recs)
    assert "secret-arg-7f3e" not in text and "secret-result-9d2c" not in text


def test_http1_gap_inside_a_held_body():
    """Bytes lost inside a Content-Length body: the message goes out (mcp marked truncated), framing holds
    and the next request parses; lost bytes in a chunked body make the parser resynchronise."""
    hook = Mcp()
    p = Http1Parser(body=hook)
    body = json.dumps(rpc("tools/call", 1, name="t", arguments={"x": "y" * 2000})).encode()
    msg = post(body)
    head = msg[:len(msg) - len(body)]
    out = p.feed(head + body[:100], 1)
    assert out == []
    out = p.gap(1000, 2)
    assert len(out) == 1 and out[0].extra["mcp"]["tool"] == "t" and out[0].extra["mcp"]["truncated"] is True
    out = p.feed(body[1100:] + b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n", 3)
    assert [m.path for m in out] == ["/after"]
    p2 = Http1Parser(body=Mcp())
    chunked = post(body, chunked=True)
    out = p2.feed(chunked[:400], 1) + p2.gap(50, 2) + p2.feed(chunked[450:] + b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n", 3)
    assert [m.path for m in out] == ["/mcp", "/after"] and out[0].extra["mcp"]["truncated"] is True


def test_inferred_tuple_of_a_closing_socket_is_ignored():
    """uvicorn: a new connection's handshake can follow the previous connection's last recv on the same
    thread, whose socket already released its local port ("127.0.0.1:0"); the next inference is used."""
    f = Feed()
    for local, peer in (("127.0.0.1:0", "127.0.0.1:41086"), ("127.0.0.1:8000", "127.0.0.1:41094")):
        f.t.on_event(Event(f.ts, 7, 100, 100, 0, 0, 0, Kind.HANDSHAKE, 0, 0, Attr.RECV_BEFORE, local, peer, "srv",
                           -1, b""))
    c = f.t.conns[(100, 7)]
    assert (c.local, c.peer, c.attribution) == ("127.0.0.1:8000", "127.0.0.1:41094", "recv-before")


def test_content_length_bodies_sliced_beside_llhttp_at_any_split():
    """Content-Length bodies are taken beside llhttp (no stop, no new parser): pipelined messages, the body
    ending inside a chunk that goes on with the next message, or llhttp beginning the next message before the
    body was handed over (two messages in one segment): same messages, in order, wherever the chunks split."""
    b1 = json.dumps(rpc("tools/call", 1, name="a", arguments={})).encode()
    b2 = json.dumps(rpc("tools/list", 2)).encode()
    reqs = post(b1) + post(b'{"not": "rpc"}' * 40, session=None, version=None) + post(b2) \
        + b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n" + post(b1)
    resps = response(json.dumps({"jsonrpc": "2.0", "id": 1, "result": {}})) + response(b'{"a": 1}') \
        + response(json.dumps({"jsonrpc": "2.0", "id": 2, "error": {"code": -1, "message": "m"}}))

    def feed(stream, cuts, kind):
        p = (Http1Parser(body=Mcp()) if kind == "request" else
             Http1Parser(response_to=lambda skip=0: "POST", body=Mcp(), takes_skip=True))
        out, last = [], 0
        for c in (*cuts, len(stream)):
            out += p.feed(stream[last:c], c)
            last = c
        assert p.errors == 0
        return [(m.path, m.status, m.truncated, m.headers, m.extra.get("mcp")) for m in out + p.close(0)]

    for stream, kind, n in ((reqs, "request", 5), (resps, "response", 3)):
        whole = feed(stream, (), kind)
        assert len(whole) == n and not any(t for _, _, t, _, _ in whole)
        for i in range(1, len(stream)):
            assert feed(stream, (i,), kind) == whole, i
        for i in range(1, len(stream), 29):
            for j in range(i + 1, len(stream), 31):
                assert feed(stream, (i, j), kind) == whole, (i, j)
    assert [m for _, _, _, _, m in feed(reqs, (), "request")][:3] == [
        {"session": SESSION, "version": VERSION, "method": "tools/call", "id": 1, "tool": "a"}, None,
        {"session": SESSION, "version": VERSION, "method": "tools/list", "id": 2}]
