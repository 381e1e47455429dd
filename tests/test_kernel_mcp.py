"""Real-kernel MCP test: the official `mcp` Python SDK's streamable HTTP server served by uvicorn over TLS
(Python ssl with asyncio memory BIOs: tuples come from recv-before/send-after attribution, like node), and
the SDK's own client running the classic initialize flow (mode="legacy") and SDK 2.x's default
(server/discover), then tools/list, tools/call (a tool that works and one that fails), resources/read and
prompts/get. Records must carry method, tool, session and version, and never a tool argument or result."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import free_port, http_records, wait_port

pytestmark = pytest.mark.kernel

SECRET_ARG = "secret-arg-7f3e"  # a tool argument: must not be logged
SECRET_RESULT = "secret-result-9d2c"  # a tool result: must not be logged

MCP_SERVER = r'''
import sys, uvicorn
from mcp.server.mcpserver import MCPServer
port, cert, key, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
mcp = MCPServer("hdrlog-test")

@mcp.tool()
def add(a: int, b: int) -> str:
    """Add two numbers."""
    return "secret-result-9d2c %d" % (a + b)

@mcp.tool()
def explode(reason: str) -> str:
    """Always fails."""
    raise ValueError("no")

@mcp.resource("test://greeting")
def greeting() -> str:
    return "hello"

@mcp.prompt()
def greet(name: str) -> str:
    return f"Say hello to {name}"

app = mcp.streamable_http_app(json_response=mode == "json")
uvicorn.run(app, host="127.0.0.1", port=port, ssl_certfile=cert, ssl_keyfile=key, log_level="error")
'''

MCP_CLIENT = r'''
import sys, json, anyio, httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
url, mode = sys.argv[1], sys.argv[2]

async def main():
    http = httpx2.AsyncClient(verify=False)
    async with Client(streamable_http_client(url, http_client=http), mode=mode) as c:
        tools = await c.list_tools()
        r = await c.call_tool("add", {"a": 20, "b": 22})
        e = await c.call_tool("explode", {"reason": "secret-arg-7f3e"})
        await c.read_resource("test://greeting")
        await c.get_prompt("greet", {"name": "Ann"})
        print(json.dumps({"tools": sorted(t.name for t in tools.tools), "add": r.content[0].text,
                          "explode": e.is_error, "version": c.session.protocol_version}))

anyio.run(main)
'''


def start_server(procs, tmp_path, certs, mode: str):
    cert, key = certs
    (tmp_path / "mcp_server.py").write_text(MCP_SERVER)
    port = free_port()
    srv = procs([sys.executable, str(tmp_path / "mcp_server.py"), str(port), cert, key, mode],
                stderr=subprocess.DEVNULL)
    wait_port(port)
    return srv, port


def run_client(tmp_path, port: int, mode: str) -> dict:
    (tmp_path / "mcp_client.py").write_text(MCP_CLIENT)
    r = subprocess.run([sys.executable, str(tmp_path / "mcp_client.py"), f"https://127.0.0.1:{port}/mcp", mode],
                       capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["tools"] == ["add", "explode"] and out["add"].endswith(" 42") and out["explode"] is True
    return out


def mcp_records(records, kind):
    return [r for r in http_records(records, kind=kind) if "mcp" in r]


def one(recs, method, **match):
    got = [r for r in recs if isinstance(r["mcp"], dict) and r["mcp"].get("method") == method
           and all(r["mcp"].get(k) == v for k, v in match.items())]
    assert len(got) == 1, (method, match, [r["mcp"] for r in recs])
    return got[0]


@pytest.mark.parametrize("body", ["sse", "json"])
def test_mcp_sdk_legacy_initialize_flow(procs, hdrlog, certs, tmp_path, body):
    srv, port = start_server(procs, tmp_path, certs, body)
    h = hdrlog(srv.pid)
    out = run_client(tmp_path, port, "legacy")
    records = h.stop()
    reqs, resps = mcp_records(records, "request"), mcp_records(records, "response")
    version = out["version"]
    init = one(reqs, "initialize")
    assert init["method"] == "POST" and init["path"] == "/mcp" and init["mcp"]["version"] == version
    assert init["mcp"]["session"] is None and init["mcp"]["id"] is not None
    init_resp = one(resps, "initialize")
    session = init_resp["mcp"]["session"]
    assert session and init_resp["request"]["method"] == "POST" and init_resp["mcp"]["version"] == version
    call = one(reqs, "tools/call", tool="add")
    assert call["mcp"]["session"] == session and call["mcp"]["version"] == version
    ok = one(resps, "tools/call", tool="add")
    assert ok["mcp"]["is_error"] is False and ok["mcp"]["id"] == call["mcp"]["id"] and ok["latency_ms"] >= 0
    assert one(resps, "tools/call", tool="explode")["mcp"]["is_error"] is True
    assert one(reqs, "tools/list")["mcp"]["session"] == session
    assert one(reqs, "resources/read")["mcp"]["resource"] == "test://greeting"
    assert one(reqs, "prompts/get")["mcp"]["prompt"] == "greet"
    assert one(reqs, "notifications/initialized")["mcp"]["session"] == session
    delete = [r for r in reqs if r["method"] == "DELETE"]
    assert [d["mcp"] for d in delete] == [{"session": session, "version": version}]
    if body == "sse":
        ctypes = {v for r in resps for n, v in r["headers"] if n.lower() == "content-type"}
        assert any("text/event-stream" in c for c in ctypes)
    for r in reqs + resps:
        assert r["conn"]["role"] == "server" and r["conn"]["attribution"] in ("recv-before", "send-after", "socket")
        assert r["conn"]["peer"] and r["conn"]["local"] == f"127.0.0.1:{port}"
        for m in r["mcp"] if isinstance(r["mcp"], list) else [r["mcp"]]:
            assert "params" not in m and "result" not in m and not m.get("truncated")
    assert SECRET_ARG not in h.raw() and SECRET_RESULT not in h.raw()


def test_mcp_sdk_default_discover_flow(procs, hdrlog, certs, tmp_path):
    """SDK 2.x's default client mode probes server/discover (no initialize, no session)."""
    srv, port = start_server(procs, tmp_path, certs, "sse")
    h = hdrlog(srv.pid)
    out = run_client(tmp_path, port, "auto")
    records = h.stop()
    reqs, resps = mcp_records(records, "request"), mcp_records(records, "response")
    first = one(reqs, "server/discover")
    assert first["mcp"]["version"] == out["version"]
    assert one(resps, "server/discover")["request"]["path"] == "/mcp"
    call = one(reqs, "tools/call", tool="add")
    assert call["mcp"]["version"] == out["version"]
    assert one(resps, "tools/call", tool="explode")["mcp"]["is_error"] is True
    assert SECRET_ARG not in h.raw() and SECRET_RESULT not in h.raw()


def test_mcp_payloads_flag(procs, hdrlog, certs, tmp_path):
    srv, port = start_server(procs, tmp_path, certs, "json")
    h = hdrlog(srv.pid, extra=("--mcp-payloads",))
    run_client(tmp_path, port, "legacy")
    records = h.stop()
    call = one(mcp_records(records, "request"), "tools/call", tool="explode")
    assert call["mcp"]["params"]["arguments"] == {"reason": SECRET_ARG}
    ok = one(mcp_records(records, "response"), "tools/call", tool="add")
    assert SECRET_RESULT in json.dumps(ok["mcp"]["result"])
