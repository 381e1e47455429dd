#!/usr/bin/env python3
"""Re-record the kernel-event fixtures in fixtures/ from real runs (root, bcc):

  .venv/bin/python tests/record_fixtures.py [scenario ...]

Each scenario starts a real server and client on loopback, runs `hdrlog attach --record-events` (default
placement: the copy-site scenarios need it; the older fixtures were recorded with function probes), and
saves the raw ring-buffer records as fixtures/<scenario>.events.jsonl. tests/test_replay.py replays them
through the live pipeline without a kernel. The recordings contain the demo client's test credentials
in plaintext (raw events are unredacted by nature); they are fake values used only by the tests.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from conftest import start_gateway, start_server

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
PY = sys.executable

NODE_SERVER = (Path(__file__).parent / "test_kernel_openssl.py").read_text().split('NODE_SERVER = r"""')[1].split('"""')[0]


def attach(pid: int, name: str, tmp: Path) -> subprocess.Popen:
    err = tmp / f"{name}.err"
    h = subprocess.Popen([PY, "-m", "hdrlog", "attach", "--pid", str(pid), "--output", os.devnull,
                          "--record-events", str(tmp / f"{name}.events.jsonl")], stderr=open(err, "w"))
    while "attached" not in err.read_text():
        if h.poll() is not None:
            raise SystemExit(err.read_text())
        time.sleep(0.05)
    return h


def finish(h: subprocess.Popen, name: str, tmp: Path) -> None:
    time.sleep(0.5)
    h.send_signal(signal.SIGINT)
    h.wait(20)
    src = tmp / f"{name}.events.jsonl"
    dst = FIXTURES / src.name
    dst.write_bytes(src.read_bytes())
    os.chmod(dst, 0o644)
    print(f"wrote {dst} ({sum(1 for _ in dst.open()) - 1} events)")


def client(port: int, tag: str, n: int, conns: int, *extra) -> None:
    subprocess.run([PY, "-m", "hdrlog.demo.client", "--port", str(port), "--tag", tag, "--requests", str(n),
                    "--connections", str(conns), *extra], check=True, stdout=subprocess.DEVNULL)


def _gateway_scenario(tmp: Path, cert: str, key: str, name: str, tag: str, requests: int, conns: int) -> None:
    """hdrlog's demo gateway (Python ssl: SSL_read_ex/SSL_write_ex, socket BIO) and its demo client."""
    gw, port = start_gateway(subprocess.Popen, (cert, key))
    try:
        h = attach(gw.pid, name, tmp)
        client(port, tag, requests, conns)
        finish(h, name, tmp)
    finally:
        gw.kill()


def python_ssl_server_keepalive(tmp: Path, cert: str, key: str) -> None:
    """Python ssl server (SSL_read_ex/SSL_write_ex, socket BIO): 14 varied requests on 2 connections."""
    _gateway_scenario(tmp, cert, key, "python_ssl_server_keepalive", "fx", 14, 2)


def node_server_memory_bio(tmp: Path, cert: str, key: str) -> None:
    """node https (OpenSSL inside the executable, memory BIOs: SSL_read/SSL_write, no socket in the call)."""
    js = tmp / "server.js"
    js.write_text(NODE_SERVER)
    node, port = start_server(subprocess.Popen, ["node", str(js), key, cert])
    try:
        h = attach(node.pid, "node_server_memory_bio", tmp)
        client(port, "fx", 6, 2)
        finish(h, "node_server_memory_bio", tmp)
    finally:
        node.kill()


def python_client(tmp: Path, cert: str, key: str) -> None:
    """hdrlog attached to a TLS client (requests written, responses read)."""
    gw, port = start_gateway(subprocess.Popen, (cert, key))
    go = tmp / "go"
    cl = subprocess.Popen([PY, "-m", "hdrlog.demo.client", "--port", str(port), "--tag", "fx", "--requests", "5",
                           "--connections", "1", "--wait-file", str(go)], stdout=subprocess.DEVNULL)
    try:
        h = attach(cl.pid, "python_client", tmp)
        go.touch()
        cl.wait(30)
        finish(h, "python_client", tmp)
    finally:
        gw.kill()
        cl.kill()


class _Procs:
    """The `procs` fixture's interface for helpers shared with the real-kernel tests."""

    def __init__(self):
        self.started = []

    def __call__(self, argv, **kw):
        class P:
            pass

        p = P()
        p.p = subprocess.Popen(argv, **kw)
        p.pid = p.p.pid
        self.started.append(p)
        return p

    def stop(self):
        for p in reversed(self.started):
            p.p.terminate()
            p.p.wait(10)


H2_TAGS = [f"h2t-fixture-{i}-0123456789abcdef" for i in range(6)]


def nginx_h2_curl(tmp: Path, cert: str, key: str) -> None:
    """nginx `listen ... ssl http2` and curl (nghttp2): 6 requests (a 404, a secret query) on 2 connections."""
    from test_kernel_h2 import curl_h2, nginx_h2

    procs = _Procs()
    try:
        master, port = nginx_h2(procs, tmp / "nginx_h2", (cert, key))
        h = attach(master.pid, "nginx_h2_curl", tmp)
        curl_h2(port, H2_TAGS[:3], ["/a?x=1", "/b", "/missing"])
        curl_h2(port, H2_TAGS[3:], ["/c?token=abc", "/d", "/e"])
        finish(h, "nginx_h2_curl", tmp)
    finally:
        procs.stop()


def nginx_h2_late_attach(tmp: Path, cert: str, key: str) -> None:
    """hdrlog attached to nginx while an httpx h2 connection is open and has already sent 3 requests."""
    from test_kernel_h2 import late_h2_client, nginx_h2

    procs = _Procs()
    try:
        master, port = nginx_h2(procs, tmp / "nginx_late", (cert, key))
        go1, go2 = tmp / "late1", tmp / "late2"
        script = late_h2_client(tmp / "late_client.py", port, go1, go2, [f"after-{i}" for i in range(60)])
        cl = procs([PY, str(script)])
        while not go1.exists():
            time.sleep(0.02)
        h = attach(master.pid, "nginx_h2_late_attach", tmp)
        go2.touch()
        cl.p.wait(60)
        finish(h, "nginx_h2_late_attach", tmp)
    finally:
        procs.stop()


def mcp_uvicorn_legacy(tmp: Path, cert: str, key: str) -> None:
    """The official MCP SDK: its streamable HTTP server on uvicorn (TLS, memory BIOs, SSE responses) and its
    client's classic initialize flow, tools/list, tools/call x2, resources/read, prompts/get, DELETE."""
    from test_kernel_mcp import MCP_CLIENT, MCP_SERVER

    (tmp / "mcp_server.py").write_text(MCP_SERVER)
    (tmp / "mcp_client.py").write_text(MCP_CLIENT)
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import free_port, wait_port

    port = free_port()
    srv = subprocess.Popen([PY, str(tmp / "mcp_server.py"), str(port), cert, key, "sse"], stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        h = attach(srv.pid, "mcp_uvicorn_legacy", tmp)
        subprocess.run([PY, str(tmp / "mcp_client.py"), f"https://127.0.0.1:{port}/mcp", "legacy"], check=True,
                       stdout=subprocess.DEVNULL)
        finish(h, "mcp_uvicorn_legacy", tmp)
    finally:
        srv.kill()


def python_ssl_server_copysites(tmp: Path, cert: str, key: str) -> None:
    """The Python ssl server under the default placement, OpenSSL's copy sites (osslsites.py): events per record
    from ssl3_read_bytes/ssl3_write_bytes, no per-call events; 8 requests on 2 connections."""
    _gateway_scenario(tmp, cert, key, "python_ssl_server_copysites", "cs", 8, 2)


def client_late_attach_copysites(tmp: Path, cert: str, key: str) -> None:
    """A libssl client (ctypes: SSL_write, SSL_peek, SSL_read) whose connection was opened before hdrlog attached:
    at copy sites its first write has no tuple yet (Attr.LINK_NEXT) and the LINK follows."""
    from test_kernel_copysites import PEEK_CLIENT, SERVER

    srv, port = start_server(subprocess.Popen, [PY, "-c", SERVER, cert, key, "default"])
    cl = subprocess.Popen([PY, "-c", PEEK_CLIENT, str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert cl.stdout.readline().strip() == "ready"
        h = attach(cl.pid, "client_late_attach_copysites", tmp)
        cl.stdin.write("go\n")
        cl.stdin.flush()
        assert cl.stdout.readline().strip() == "done"
        finish(h, "client_late_attach_copysites", tmp)
    finally:
        cl.kill()
        srv.kill()


SCENARIOS = {f.__name__: f for f in (python_ssl_server_keepalive, node_server_memory_bio, python_client,
                                     nginx_h2_curl, nginx_h2_late_attach, mcp_uvicorn_legacy,
                                     python_ssl_server_copysites, client_late_attach_copysites)}


def main() -> None:
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(Path(__file__).parent))  # helpers shared with the real-kernel tests
    from hdrlog.demo.certs import make_cert

    names = sys.argv[1:] or list(SCENARIOS)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cert, key = make_cert(tmp / "certs")
        for n in names:
            SCENARIOS[n](tmp, cert, key)


if __name__ == "__main__":
    main()
