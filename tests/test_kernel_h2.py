"""Real-kernel HTTP/2 tests: hdrlog attached to nginx (`listen ... ssl http2`, OpenSSL), a Go crypto/tls server
(ALPN h2 is Go's default) and a Python httpx[http2] client, with curl (nghttp2) and httpx as h2 clients. Each
request carries a unique header value (lower-case hex: Huffman-coded on the wire by every encoder here) that
must appear on the request record, and its echo on the paired response record."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import gobuild
from conftest import TOKEN_SECRET, free_port, header, http_records, nginx_available, start_server, wait_port

pytestmark = pytest.mark.kernel

CURL = "curl"


def token() -> str:
    return "h2t-" + uuid.uuid4().hex


def nginx_h2(procs, tmp_path, certs) -> tuple:
    cert, key = certs
    port = free_port()
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / d).mkdir(parents=True, exist_ok=True)
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {tmp_path}/body; proxy_temp_path {tmp_path}/proxy;
  fastcgi_temp_path {tmp_path}/fastcgi; uwsgi_temp_path {tmp_path}/uwsgi; scgi_temp_path {tmp_path}/scgi;
  server {{
    listen 127.0.0.1:{port} ssl http2;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    add_header X-Echo $http_x_h2_tag always;
    add_header X-Served-By nginx-h2 always;
    location /missing {{ return 404; }}
    location / {{ return 200 "hello h2\\n"; }}
  }}
}}
""")
    master = procs(["nginx", "-p", str(tmp_path), "-c", str(conf), "-g", "daemon off;"], stderr=subprocess.PIPE)
    wait_port(port)
    return master, port


def curl_h2(port: int, tokens: list[str], paths: list[str]) -> None:
    """One curl, one connection, several requests (curl multiplexes them on one h2 connection)."""
    argv = [CURL, "-sk", "--http2", "-o", "/dev/null", "-w", "%{http_version} %{response_code}\\n"]
    for i, (t, p) in enumerate(zip(tokens, paths)):
        if i:
            argv.append("--next")
            argv += ["-sk", "--http2", "-o", "/dev/null", "-w", "%{http_version} %{response_code}\\n"]
        argv += ["-H", f"x-h2-tag: {t}", "-H", f"Authorization: Bearer {TOKEN_SECRET}",
                 f"https://127.0.0.1:{port}{p}"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert all(line.startswith("2 ") for line in r.stdout.split("\n") if line), r.stdout


def check_h2(records, tokens: list[str], role: str = "server", echo: str = "x-echo", statuses=None):
    reqs = [r for r in http_records(records, kind="request", proto="h2") if header(r, "x-h2-tag") in tokens]
    assert sorted(header(r, "x-h2-tag") for r in reqs) == sorted(tokens), [r["path"] for r in reqs]
    by_stream = {}
    for r in reqs:
        assert r["conn"]["role"] == role and isinstance(r["stream"], int) and r["stream"] % 2 == 1
        assert r["method"] in ("GET", "POST") and r["path"].startswith("/") and r["authority"].startswith("127.0.0.1:")
        assert not any(n in (":method", ":path", ":authority") for n, _ in r["headers"])
        assert "hpack_incomplete" not in r and not r["truncated"]
        auth = header(r, "authorization")
        assert auth is None or auth.startswith("Bearer <redacted:")
        by_stream[(r["conn"]["id"], r["stream"])] = r
    resps = [r for r in http_records(records, kind="response", proto="h2")
             if (r["conn"]["id"], r.get("stream")) in by_stream and not r.get("trailers")]
    assert len(resps) == len(tokens), resps
    for r in resps:
        q = by_stream[(r["conn"]["id"], r["stream"])]
        assert r["request"] == {"method": q["method"], "path": q["path"]}
        assert r["latency_ms"] is not None and r["latency_ms"] >= 0
        if echo:
            assert header(r, echo) == header(q, "x-h2-tag"), r
        if statuses:
            assert r["status"] == statuses.get(q["path"], 200)
    return reqs, resps


def raw_plaintext(path) -> bytes:
    """All plaintext of a --record-events file, concatenated."""
    from hdrlog import events
    from hdrlog.replay import read_events

    _, raws = read_events(str(path))
    return b"".join(events.decode(r, 0).data for r in raws)


@pytest.mark.skipif(not nginx_available(), reason="nginx not installed")
def test_nginx_h2_curl(procs, hdrlog, certs, tmp_path):
    master, port = nginx_h2(procs, tmp_path, certs)
    h = hdrlog(master.pid, extra=("--record-events", str(tmp_path / "ev.jsonl")))
    tokens = [token() for _ in range(6)]
    paths = ["/a?x=1", "/b", "/missing", "/c?token=abc", "/d", "/e"]
    curl_h2(port, tokens[:3], paths[:3])  # two connections, several streams each
    curl_h2(port, tokens[3:], paths[3:])
    records = h.stop()
    reqs, resps = check_h2(records, tokens, statuses={"/missing": 404})
    assert {r["path"] for r in reqs} >= {"/a?x=1", "/missing"}
    assert any(p.startswith("/c?token=<redacted:") for p in (r["path"] for r in reqs))  # query redaction
    assert all(header(r, "x-served-by") == "nginx-h2" for r in resps)
    assert len({r["conn"]["id"] for r in reqs}) == 2
    assert TOKEN_SECRET not in h.raw()
    # the tags (and their echoes) crossed the wire Huffman-coded: they are nowhere in the captured plaintext
    plain = raw_plaintext(tmp_path / "ev.jsonl")
    assert b"PRI * HTTP/2.0" in plain and not any(t.encode() in plain for t in tokens)


NODE_H2_SERVER = r"""
const http2 = require('http2'), fs = require('fs');
const s = http2.createSecureServer({key: fs.readFileSync(process.argv[2]), cert: fs.readFileSync(process.argv[3])});
s.on('stream', (stream, headers) => {
  stream.respond({':status': headers[':path'] === '/missing' ? 404 : 200, 'x-echo': headers['x-h2-tag'] || '',
                  'content-type': 'text/plain'});
  stream.end('hi from node h2\n');
});
s.listen(0, '127.0.0.1', () => console.log('listening ' + s.address().port));
"""


def test_node_h2_server(procs, hdrlog, certs, tmp_path):
    """node's http2 (OpenSSL inside the executable, memory BIOs; node writes its SETTINGS first)."""
    cert, key = certs
    js = tmp_path / "h2server.js"
    js.write_text(NODE_H2_SERVER)
    node, port = start_server(procs, ["node", str(js), key, cert])
    h = hdrlog(node.pid)
    tokens = [token() for _ in range(5)]
    curl_h2(port, tokens[:3], ["/n1", "/missing", "/n3?x=y"])
    curl_h2(port, tokens[3:], ["/n4", "/n5"])
    records = h.stop()
    reqs, resps = check_h2(records, tokens, statuses={"/missing": 404})
    assert {r["conn"]["attribution"] for r in reqs} <= {"recv-before", "send-after"}
    assert all(r["conn"]["peer"] for r in reqs)


@pytest.mark.skipif(not nginx_available(), reason="nginx not installed")
def test_nginx_h2_httpx_client_and_server_side(procs, hdrlog, certs, tmp_path):
    """httpx[http2] (Python ssl, so OpenSSL's _ex functions) against nginx, captured on both ends at once:
    the client process (requests go out) and nginx (requests come in)."""
    master, port = nginx_h2(procs, tmp_path, certs)
    go = tmp_path / "go"
    tokens = [token() for _ in range(8)]
    script = tmp_path / "client.py"
    script.write_text(f"""
import os, sys, time, asyncio, httpx
while not os.path.exists({str(go)!r}):
    time.sleep(0.02)
async def main():
    async with httpx.AsyncClient(http2=True, verify=False) as c:
        rs = await asyncio.gather(*[c.get("https://127.0.0.1:{port}/x/%d" % i, headers={{"x-h2-tag": t}})
                                    for i, t in enumerate({tokens!r})])
        assert all(r.http_version == "HTTP/2" and r.status_code == 200 for r in rs), rs
        r = await c.post("https://127.0.0.1:{port}/post", content=b"x" * 30000, headers={{"x-h2-tag": "big"}})
asyncio.run(main())
""")
    client = procs([sys.executable, str(script)], stderr=subprocess.PIPE, text=True)
    hs = hdrlog(master.pid)
    hc = hdrlog(client.pid)
    go.touch()
    assert client.p.wait(30) == 0, client.p.stderr.read()
    rs, rc = hs.stop(), hc.stop(settle=0.1)
    check_h2(rs, tokens)
    reqs, _ = check_h2(rc, tokens, role="client")
    assert all(r["direction"] == "out" for r in reqs)
    assert [r for r in http_records(rc, kind="request", proto="h2", path="/post")]


def test_go_h2_server(procs, hdrlog, certs, tmp_path):
    """A Go crypto/tls server (ALPN h2, Go's HPACK encoder) with curl and Go's own h2 client."""
    binary = str(gobuild.build())
    cert, key = certs
    srv, port = start_server(procs, [binary, "server", "-cert", cert, "-key", key, "-h2", "-name", "go-h2"])
    h = hdrlog(srv.pid)
    tokens = [token() for _ in range(4)]
    curl_h2(port, tokens, ["/one", "/two?q=1", "/missing", "/three"])
    r = subprocess.run([binary, "client", "-url", f"https://127.0.0.1:{port}", "-tag", "goh2", "-requests", "10",
                        "-conns", "2", "-h2"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert all(json.loads(x)["proto"] == "HTTP/2.0" for x in r.stdout.splitlines())
    records = h.stop()
    reqs, resps = check_h2(records, tokens, echo="", statuses={"/missing": 404})
    assert all(header(r, "x-served-by") == "go-h2" for r in resps)
    assert {r["lib"] for r in reqs} == {"gotls"}
    goreqs = [x for x in http_records(records, kind="request", proto="h2")
              if (header(x, "x-request-id") or "").startswith("goh2-")]
    assert sorted(header(x, "x-request-id") for x in goreqs) == sorted(f"goh2-{i}" for i in range(10))
    echoes = {header(x, "x-echo") for x in http_records(records, kind="response", proto="h2")}
    assert {f"goh2-{i}" for i in range(10)} <= echoes
    assert TOKEN_SECRET not in h.raw()


@pytest.mark.skipif(not nginx_available(), reason="nginx not installed")
def late_h2_client(script: Path, port: int, ready: Path, go: Path, after_tags: list[str]) -> Path:
    """An httpx h2 client script: 3 requests on one connection, then it creates `ready` and waits for `go`
    (attach hdrlog in between), then one request per tag on the same connection (x-h2-tag: tag)."""
    script.write_text(f"""
import os, time, httpx
with httpx.Client(http2=True, verify=False) as c:
    for i in range(3):
        c.get("https://127.0.0.1:{port}/before/%d" % i, headers={{"x-h2-tag": "before-%d" % i, "x-fixed": "same"}})
    open({str(ready)!r}, "w").close()
    while not os.path.exists({str(go)!r}):
        time.sleep(0.02)
    for i, t in enumerate({after_tags!r}):
        r = c.get("https://127.0.0.1:{port}/after/%d" % i, headers={{"x-h2-tag": t, "x-fixed": "same"}})
        assert r.http_version == "HTTP/2"
""")
    return script


def test_attach_to_an_open_h2_connection(procs, hdrlog, certs, tmp_path):
    """hdrlog attaches while an h2 connection is already open and has sent requests: later requests on it
    are recorded (detection by frame shape), fields that come from HPACK entries sent before the attach are
    placeholders with hpack_incomplete, and nothing decodes wrong."""
    master, port = nginx_h2(procs, tmp_path, certs)
    go1, go2 = tmp_path / "go1", tmp_path / "done"
    tokens = [token() for _ in range(5)]
    script = late_h2_client(tmp_path / "client.py", port, go1, go2, tokens)
    client = procs([sys.executable, str(script)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not go1.exists():
        assert client.p.poll() is None and time.monotonic() < deadline, client.p.stderr.read()
        time.sleep(0.02)
    h = hdrlog(master.pid)
    go2.touch()
    assert client.p.wait(30) == 0, client.p.stderr.read()
    records = h.stop()
    reqs = http_records(records, kind="request", proto="h2")
    paths = sorted(r["path"] for r in reqs if r["path"])
    assert paths == [f"/after/{i}" for i in range(5)], paths
    for r in reqs:
        assert r["method"] == "GET"
        for n, v in r["headers"]:
            if n == "<hpack:unknown>":
                assert v == "<hpack:unknown>" and r.get("hpack_incomplete") is True
            elif n == "x-h2-tag":
                assert v in tokens  # a value seen is always the right one
            elif n == "x-fixed":
                assert v == "same"
    # x-fixed/user-agent/:authority were inserted into the table before the attach
    assert any(r.get("hpack_incomplete") for r in reqs), reqs
    print(json.dumps(reqs[-1]))
    resps = http_records(records, kind="response", proto="h2")
    assert len(resps) == 5 and all(r["status"] == 200 and r["request"]["path"].startswith("/after/") for r in resps)
