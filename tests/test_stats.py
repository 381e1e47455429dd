"""`hdrlog stats` on real captures (the recorded fixture replayed, as a user would make one) and on a
capture with MCP and error traffic; path normalisation and percentiles in isolation."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import FIXTURES
from hdrlog.stats import Stats, normalise_path, peer_ip, percentile

PY = sys.executable


def hdrlog(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "hdrlog", *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, **kw)


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    """JSON lines of a real run: the keep-alive fixture replayed (what `attach` wrote for it)."""
    out = tmp_path_factory.mktemp("cap") / "cap.jsonl"
    r = hdrlog("replay", str(FIXTURES / "python_ssl_server_keepalive.events.jsonl"))
    assert r.returncode == 0, r.stderr
    out.write_text(r.stdout)
    return out


def test_table_on_a_real_capture(capture):
    r = hdrlog("stats", str(capture))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.startswith("14 requests, 14 responses")
    lines = out.splitlines()
    route = next(ln for ln in lines if ln.startswith("DELETE /api/orders/{id}"))  # /api/orders/7 normalised
    assert route.split()[2] == "2"
    missing = next(ln for ln in lines if ln.startswith("GET /missing"))
    assert "100.0" in missing  # 2 of 2 are 404
    assert any(ln.startswith("127.0.0.1 ") for ln in lines)  # the peer, without its port
    auth = next(ln for ln in lines if ln.startswith("req authorization"))
    assert "fp" in auth and "<redacted:" in auth and "demo-token" not in out
    assert "x-request-id" in out


def test_json_on_a_real_capture(capture):
    r = hdrlog("stats", "--json", str(capture))
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["requests"] == 14 and res["responses"] == 14
    routes = {(x["method"], x["route"]): x for x in res["routes"]}
    assert ("GET", "/api/users") in routes  # query dropped
    slow = routes[("GET", "/slow")]
    assert slow["latency_ms"]["p50"] >= 40  # the demo gateway sleeps 50 ms there
    assert routes[("GET", "/missing")]["error_rate"] == 1.0
    assert routes[("GET", "/api/users")]["response_bytes"]["total"] > 0
    hdr = {(h["kind"], h["name"]): h for h in res["headers"]}
    assert hdr[("request", "x-request-id")]["distinct"] == 14
    assert hdr[("request", "authorization")]["redacted"] == 4
    assert all("<redacted:" in t["value"] for t in hdr[("request", "authorization")]["top"])
    assert [p["peer"] for p in res["peers"]] == ["127.0.0.1"]


def _http(kind, ts, conn="1-1", peer="10.0.0.7:5000", **kw):
    rec = {"type": "http", "ts": ts, "pid": 1, "tid": 1, "comm": "gw", "lib": "openssl",
           "direction": "in" if kind == "request" else "out", "proto": "http/1.1", "kind": kind,
           "conn": {"id": conn, "role": "server", "local": "10.0.0.1:443", "peer": peer, "attribution": "socket"},
           "headers": kw.pop("headers", []), "truncated": False}
    rec.update(kw)
    return rec


def test_mcp_and_errors(tmp_path):
    recs = []
    for i in range(10):
        ts = f"2026-11-22T00:00:{i:02d}.000000Z"
        tool = "search" if i % 2 else "fetch"
        mcp_req = {"method": "tools/call", "tool": tool, "id": i, "session": "s1" if i < 5 else "s2"}
        recs.append(_http("request", ts, method="POST", path="/mcp", authority="gw", mcp=mcp_req,
                          headers=[["Mcp-Session-Id", mcp_req["session"]]]))
        resp = {"id": i, "session": mcp_req["session"]}  # as mcp.py writes it; method/tool linked only for some
        if i == 3:
            resp["error"] = -32601
        status = 500 if i == 9 else 200
        recs.append(_http("response", ts, status=status, reason="", latency_ms=float(i + 1),
                          request={"method": "POST", "path": "/mcp"}, mcp=resp))
    recs.append(_http("request", "2026-11-22T00:01:00.000000Z", peer="[2001:db8::1]:4000", method="GET",
                      path="/users/550e8400-e29b-41d4-a716-446655440000/items/deadbeef12?x=1", authority="gw"))
    f = tmp_path / "mcp.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in recs))
    r = hdrlog("stats", "--json", str(f))
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    mcp = res["mcp"]
    assert mcp["calls"] == 10 and mcp["errors"] == 1 and mcp["sessions"] == 2
    by = {(x["method"], x["tool"]): x for x in mcp["by_method_tool"]}
    assert by[("tools/call", "search")]["calls"] == 5 and by[("tools/call", "search")]["errors"] == 1
    route = next(x for x in res["routes"] if x["route"] == "/mcp")
    assert route["errors_5xx"] == 1 and route["mcp_errors"] == 1 and route["error_rate"] == 0.2
    assert route["latency_ms"]["p50"] == 5.5
    assert any(x["route"] == "/users/{id}/items/{id}" for x in res["routes"])
    assert {p["peer"] for p in res["peers"]} == {"10.0.0.7", "2001:db8::1"}
    table = hdrlog("stats", str(f)).stdout
    assert "MCP: 10 calls, 1 errors (10.0%), 2 sessions" in table
    assert "tools/call  search" in table


def test_errors_are_one_sentence(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type":"http"}\nnot json\n')
    r = hdrlog("stats", str(bad))
    assert r.returncode == 2 and r.stderr.startswith("hdrlog: error: ") and "line 2" in r.stderr
    r = hdrlog("stats", str(FIXTURES / "python_ssl_server_keepalive.events.jsonl"))
    assert r.returncode == 2 and "hdrlog replay" in r.stderr
    r = hdrlog("stats", str(tmp_path / "nope.jsonl"))
    assert r.returncode == 2 and "cannot read" in r.stderr


def test_stdin(capture):
    r = subprocess.run([PY, "-m", "hdrlog", "stats", "-", "--json"], stdin=open(capture), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and json.loads(r.stdout)["requests"] == 14


@pytest.mark.parametrize("path, want", [
    ("/api/users?id=1", "/api/users"),
    ("/users/42/orders/7", "/users/{id}/orders/{id}"),
    ("/o/550e8400-e29b-41d4-a716-446655440000", "/o/{id}"),
    ("/blob/9f8e7d6c5b4a3f21", "/blob/{id}"),
    ("/static/app.js", "/static/app.js"),
    ("/v1/chat", "/v1/chat"),
    ("/t/abcDEF1234567890ghijKL", "/t/{id}"),
    ("http://example.com/x/12", "/x/{id}"),
    ("/", "/"),
    (None, "?"),
])
def test_normalise_path(path, want):
    assert normalise_path(path) == want


def test_peer_and_percentiles():
    assert peer_ip("1.2.3.4:5") == "1.2.3.4" and peer_ip("[::1]:80") == "::1" and peer_ip(None) == "?"
    vals = sorted(float(i) for i in range(1, 101))
    assert percentile(vals, 0.5) == 50.5 and percentile(vals, 0.99) == pytest.approx(99.01)
    assert percentile([], 0.5) is None


def test_bounded_memory():
    st = Stats()
    for i in range(3000):
        st.add(_http("request", "2026-11-22T00:00:00.000000Z", method="GET", path=f"/p{i}x", peer=f"10.0.{i // 250}.{i % 250}:1",
                     authority="a", headers=[["X-Id", str(i)]]))
    assert len(st.routes) <= 2001 and ("other", "other") in st.routes
    assert st.headers[("request", "x-id")].overflow


# ------------------------------------------------------- MCP end to end: kernel-format events → CLI
def _recording(tmp_path):
    """A `--record-events` file of one MCP session over HTTP/1 (raw events in the kernel's layout): two tool
    calls (one a JSON-RPC error), a tools/list; replayed by the real CLI below."""
    import base64
    import socket

    from hdrlog import events

    def raw(ts, direction, data, kind=events.Kind.DATA):
        lo, pe = socket.inet_aton("127.0.0.1"), socket.inet_aton("10.1.2.3")
        fields = dict(ts_ns=ts, conn=0xABC, pid=4242, tid=4242, len=len(data), cap=len(data), offset=0, lost=0,
                      kind=kind, fn=events.Fn.SSL_READ_EX if direction == "in" else events.Fn.SSL_WRITE_EX,
                      dir=events.Dir.IN if direction == "in" else events.Dir.OUT, attr=events.Attr.IN_CALL)
        vals = [fields.get(n, 0) for n, _ in events.EVENT_FIELDS[:12]]
        vals += [events.AF_INET, 8443, 51000, 0, lo.ljust(16, b"\0"), pe.ljust(16, b"\0"), b"mcpgw".ljust(16, b"\0"), 5]
        return events.EVENT_HEADER.pack(*vals) + data

    def post(body: str) -> bytes:
        return (f"POST /mcp HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nMcp-Session-Id: sess-1\r\n"
                f"Content-Length: {len(body)}\r\n\r\n{body}").encode()

    def answer(body: str, status=200) -> bytes:
        return (f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                f"{body}").encode()

    rpc = '{{"jsonrpc":"2.0","id":{},"method":"{}","params":{}}}'
    talk = [
        ("in", post(rpc.format(1, "tools/call", '{"name":"search","arguments":{"q":"x"}}'))),
        ("out", answer('{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":false}}')),
        ("in", post(rpc.format(2, "tools/call", '{"name":"delete","arguments":{}}'))),
        ("out", answer('{"jsonrpc":"2.0","id":2,"error":{"code":-32602,"message":"bad"}}')),
        ("in", post(rpc.format(3, "tools/list", "{}"))),
        ("out", answer('{"jsonrpc":"2.0","id":3,"result":{"tools":[]}}')),
    ]
    path = tmp_path / "mcp.events.jsonl"
    lines = [json.dumps({"type": "hdrlog-events", "abi": events.ABI, "wall_offset_ns": 0, "max_bytes": 16384,
                         "libs": {}})]
    ts = 1_790_000_000_000_000_000
    for i, (d, data) in enumerate(talk):
        lines.append(json.dumps({"raw": base64.b64encode(raw(ts + i * 1_000_000, d, data)).decode()}))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_mcp_capture_through_replay_stats_and_filter(tmp_path):
    rec = _recording(tmp_path)
    r = hdrlog("replay", str(rec))
    assert r.returncode == 0, r.stderr
    out = tmp_path / "mcp.jsonl"
    out.write_text(r.stdout)
    recs = [json.loads(x) for x in r.stdout.splitlines()]
    assert sum(1 for x in recs if x.get("mcp")) == 6, recs
    res = json.loads(hdrlog("stats", "--json", str(out)).stdout)
    by = {(x["method"], x["tool"]): (x["calls"], x["errors"]) for x in res["mcp"]["by_method_tool"]}
    assert by == {("tools/call", "search"): (1, 0), ("tools/call", "delete"): (1, 1), ("tools/list", None): (1, 0)}
    assert res["mcp"]["sessions"] == 1 and res["mcp"]["error_rate"] == pytest.approx(1 / 3, abs=1e-3)
    assert res["peers"][0]["peer"] == "10.1.2.3"
    only = hdrlog("replay", str(rec), "--mcp", "--format", "pretty")
    lines = only.stdout.splitlines()
    assert len(lines) == 3, lines  # one line per exchange
    assert "[mcp tools/call delete error -32602]" in lines[1] and "POST /mcp" in lines[1]
    assert "[mcp tools/list]" in lines[2]


@pytest.mark.parametrize("patterns", [(), ("length",)])
def test_content_length_noted_by_the_redactor_counts_as_a_scan_would(patterns):
    """Live records carry the first Content-Length value on their header list (redact.Headers), so Stats does
    not scan; the bytes counted must equal those of the same records read back from JSON (scanned), also when
    the header is secret by a --redact-pattern (then it is no number: not counted), duplicated or odd-cased."""
    from hdrlog.redact import Headers, Redactor

    red = Redactor(key=b"k" * 32, extra_patterns=patterns)
    cases = [[("Content-Length", "12")], [("CONTENT-LENGTH", " 7 "), ("content-length", "9")], [("Content-Length", "x")],
             [("Content-Lengthy", "5")], [], [("Host", "a"), ("content-length", "")], [("Content-length", "40")]]
    live, read_back = Stats(headers=False), Stats(headers=False)
    for i, hs in enumerate(cases):
        out = red.headers(hs)
        assert type(out) is Headers and out == json.loads(json.dumps(out))
        for kind in ("request", "response"):
            rec = {"type": "http", "kind": kind, "proto": "http/1.1", "ts": f"2026-01-01T00:00:0{i}Z", "method": "POST",
                   "path": "/p", "status": 200, "request": {"method": "POST", "path": "/p"}, "conn": {"peer": "1.2.3.4:5"},
                   "headers": out}
            live.add(rec)
            read_back.add(json.loads(json.dumps(rec)))
    assert live.result() == read_back.result()
    route = live.result()["routes"][0]
    if patterns:
        assert "request_bytes" not in route
    else:
        assert route["request_bytes"] == {"total": 12 + 7 + 40, "known_for": 3}
