"""Real-kernel tests: hdrlog attached to real OpenSSL servers and clients, asserting on what it printed."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from conftest import (TOKEN_SECRET, header, http_records, nginx_available, run_client, start_gateway, start_server)
from test_kernel_lifecycle import start_nginx

pytestmark = pytest.mark.kernel


def check_exchange(records, tag: str, client_ports: set[int], role: str, n_requests: int):
    """Every request the client sent is there once with its response, tuple and role."""
    reqs = [r for r in http_records(records, kind="request") if (header(r, "X-Request-Id") or "").startswith(tag)]
    resps = [r for r in http_records(records, kind="response") if r.get("request")]
    assert len(reqs) == n_requests, [(r["method"], r["path"]) for r in reqs]
    ids = sorted(header(r, "X-Request-Id") for r in reqs)
    assert ids == sorted(f"{tag}-{i}" for i in range(n_requests))
    for r in reqs:
        assert r["conn"]["role"] == role
        port = int(r["conn"]["peer" if role == "server" else "local"].rsplit(":", 1)[1])
        assert port in client_ports, (r["conn"], client_ports)
        assert r["ts"].endswith("Z") and r["proto"] == "http/1.1"
    assert len(resps) >= n_requests
    for r in resps:
        assert isinstance(r["status"], int) and r["latency_ms"] is not None and r["latency_ms"] >= 0
    return reqs, resps


@pytest.mark.parametrize("placement", ["auto", "functions", "entry"])
def test_python_ssl_server_ex_path(procs, hdrlog, certs, placement):
    """Python's ssl calls SSL_read_ex/SSL_write_ex; socket BIO, so tuples are exact. The relocated probes
    (auto: libssl's internal read/write functions) and the entry probes must give the same records."""
    gw, port = start_gateway(procs, certs)
    h = hdrlog(gw.pid, extra=("--placement", placement))
    assert "SSL_read_ex" in h.stderr() and "SSL_write_ex" in h.stderr()
    conns = run_client(port, "py", requests=7, connections=2)
    records = h.stop()
    reqs, resps = check_exchange(records, "py", {c["local_port"] for c in conns}, "server", 7)
    by_path = {r["path"]: r for r in reqs}
    assert by_path["/api/users?id=1&fields=name"]["method"] == "GET"
    assert by_path["/api/orders"]["method"] == "POST"
    assert {r["method"] for r in reqs} >= {"GET", "POST", "HEAD", "DELETE"}
    statuses = {r["request"]["path"]: r["status"] for r in resps}
    assert statuses["/api/orders"] == 201 and statuses["/missing"] == 404 and statuses["/health"] == 200
    assert all(r["conn"]["attribution"] == "socket" for r in reqs)
    assert all(r["conn"]["local"] == f"127.0.0.1:{port}" for r in reqs)
    auth = [header(r, "Authorization") for r in reqs if header(r, "Authorization")]
    assert auth and all(a.startswith("Bearer <redacted:") for a in auth)
    assert TOKEN_SECRET not in h.raw() and TOKEN_SECRET not in h.stderr()
    assert "s3cr3t-session" not in h.raw()
    assert [r for r in records if r["type"] == "summary"]


@pytest.mark.skipif(not nginx_available(), reason="nginx not installed")
@pytest.mark.parametrize("placement", ["auto", "functions"])
def test_nginx_two_workers_through_master(procs, hdrlog, certs, tmp_path, placement):
    """Copy sites (auto) and function probes capture the same exchange (placement does not change what is seen)."""
    master, port, _ = start_nginx(procs, certs, tmp_path)
    h = hdrlog(master.pid, extra=("--placement", placement))
    # both workers are attached through the master
    deadline = time.monotonic() + 5
    while h.stderr().count("(nginx)") < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert h.stderr().count("(nginx)") >= 3, h.stderr()  # master + 2 workers
    conns = run_client(port, "ngx", requests=8, connections=4)
    records = h.stop()
    reqs, resps = check_exchange(records, "ngx", {c["local_port"] for c in conns}, "server", 8)
    assert all(header(r, "X-Served-By") == "nginx-test" for r in resps if r["status"] == 200)
    assert {r["lib"] for r in reqs} == {"openssl"}
    assert TOKEN_SECRET not in h.raw()


NODE_SERVER = r"""
const https = require('https'), fs = require('fs');
const s = https.createServer({key: fs.readFileSync(process.argv[2]), cert: fs.readFileSync(process.argv[3])},
  (req, res) => { req.resume(); req.on('end', () => {
    res.setHeader('X-Echo', req.headers['x-request-id'] || '');
    res.writeHead(req.url === '/missing' ? 404 : 200, {'content-type': 'text/plain'});
    res.end('hi\n'); }); });
s.listen(0, '127.0.0.1', () => console.log('listening ' + s.address().port));
"""


@pytest.mark.parametrize("placement", ["auto", "functions"])
def test_node_https_static_openssl(procs, hdrlog, certs, tmp_path, placement):
    """node carries OpenSSL inside its executable and uses memory BIOs; copy sites (auto) and function probes
    capture the same exchange."""
    cert, key = certs
    js = tmp_path / "server.js"
    js.write_text(NODE_SERVER)
    node, port = start_server(procs, ["node", str(js), key, cert])
    h = hdrlog(node.pid, extra=("--placement", placement, "--verbose"))
    assert "openssl-static" in h.stderr()
    assert ("ossl_rcopy" in h.stderr()) == (placement == "auto"), h.stderr()
    conns = run_client(port, "node", requests=6, connections=2)
    records = h.stop()
    reqs, resps = check_exchange(records, "node", {c["local_port"] for c in conns}, "server", 6)
    echo = {header(r, "X-Echo") for r in resps}
    assert {f"node-{i}" for i in range(6)} <= echo
    assert {r["conn"]["attribution"] for r in reqs} <= {"recv-before", "send-after", "socket"}
    assert TOKEN_SECRET not in h.raw()


def test_client_side_capture(procs, hdrlog, certs, tmp_path):
    """hdrlog attached to a TLS client: requests go out, role is client, local port is the client's."""
    gw, port = start_gateway(procs, certs)
    go = tmp_path / "go"
    client = procs([sys.executable, "-m", "hdrlog.demo.client", "--port", str(port), "--tag", "cli",
                    "--requests", "5", "--connections", "1", "--wait-file", str(go)],
                   stdout=subprocess.PIPE, text=True)
    h = hdrlog(client.pid)
    go.touch()
    out = client.p.stdout.read()
    client.p.wait(30)
    conns = [json.loads(x) for x in out.splitlines()]
    records = h.stop(settle=0.3)
    reqs, resps = check_exchange(records, "cli", {c["local_port"] for c in conns}, "client", 5)
    assert all(r["direction"] == "out" for r in reqs)
    assert all(r["direction"] == "in" for r in resps)
    assert all(r["conn"]["peer"] == f"127.0.0.1:{port}" for r in reqs)
    assert TOKEN_SECRET not in h.raw()


PREOPEN_CLIENT = r"""
import http.client, json, os, ssl, sys, time
port, go = int(sys.argv[1]), sys.argv[2]
ctx = ssl._create_unverified_context()
c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
c.request("GET", "/before", headers={"X-Request-Id": "pre-0"}); c.getresponse().read()
print(json.dumps({"local_port": c.sock.getsockname()[1]}), flush=True)
while not os.path.exists(go):
    time.sleep(0.02)
for i in (1, 2):
    c.request("GET", f"/after/{i}", headers={"X-Request-Id": f"pre-{i}"}); c.getresponse().read()
c.close()
"""


@pytest.mark.parametrize("server", ["python", "node"])
def test_connection_opened_before_attach(procs, hdrlog, certs, tmp_path, server):
    """A keep-alive connection established (handshake and one request) before hdrlog attached: later
    requests on it still get the right tuple and role."""
    cert, key = certs
    if server == "python":
        srv, port = start_gateway(procs, certs)
    else:
        js = tmp_path / "server.js"
        js.write_text(NODE_SERVER)
        srv, port = start_server(procs, ["node", str(js), key, cert])
    go = tmp_path / "go"
    cl = procs([sys.executable, "-c", PREOPEN_CLIENT, str(port), str(go)], stdout=subprocess.PIPE, text=True)
    local_port = json.loads(cl.p.stdout.readline())["local_port"]
    h = hdrlog(srv.pid)
    go.touch()
    cl.p.wait(30)
    records = h.stop()
    reqs = http_records(records, kind="request")
    attach = next(r for r in records if r["type"] == "attach")
    if server == "python":
        # the handler thread was blocked in SSL_read_ex when the probes arrived, which hdrlog reports; the
        # probe inside OpenSSL's record layer (default placement, osslsites.py) still sees that read's data
        # arrive, as a probe on SSL_read_ex's entry could not
        assert attach["blocked_socket_reads"] >= 1 and "already blocked reading a socket" in h.stderr()
        expected = ["/after/1", "/after/2"]
        unpaired = [r for r in http_records(records, kind="response") if r["request"] is None]
        assert not unpaired
    else:  # node reads from its event loop: nothing was in progress
        assert attach["blocked_socket_reads"] == 0
        expected = ["/after/1", "/after/2"]
    assert sorted(r["path"] for r in reqs) == expected  # /before preceded the attach
    for r in reqs:
        assert r["conn"]["role"] == "server"
        assert r["conn"]["peer"] == f"127.0.0.1:{local_port}", r["conn"]
        assert r["conn"]["local"] == f"127.0.0.1:{port}"
    resps = [r for r in http_records(records, kind="response") if r.get("request")]
    assert sorted(r["request"]["path"] for r in resps) == expected
