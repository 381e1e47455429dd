"""The readable live view and output options, as a user meets them: `attach` in a pseudo-terminal
(colours, one line per exchange, status line, the statistics table at the end), filters on both formats,
--output rotation, and the view's logic on records with MCP objects and unanswered requests."""

from __future__ import annotations

import io
import json
import os
import re
import select
import signal
import stat
import subprocess
import sys
import time

import pytest

from conftest import FIXTURES, run_client
from hdrlog.output import Filter, RotatingFile
from hdrlog.sinks import PrettySink

PY = sys.executable
FIX = FIXTURES / "python_ssl_server_keepalive.events.jsonl"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def hdrlog(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "hdrlog", *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, **kw)


class Pty:
    """A command with stdout on a pseudo-terminal (stderr to a pipe, so the two can be told apart)."""

    def __init__(self, argv, err_path, cols=220):
        import fcntl
        import struct
        import termios

        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, cols, 0, 0))
        self.err_path = err_path
        with open(err_path, "wb") as err:
            self.p = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=err, close_fds=True)
        os.close(slave)
        self.buf = b""

    def stderr(self) -> str:
        return self.err_path.read_text()

    def read(self, timeout=0.2) -> str:
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                break
            r, _, _ = select.select([self.master], [], [], left)
            if not r:
                break
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                break
            if not chunk:
                break
            self.buf += chunk
        return self.buf.decode("utf-8", "replace")

    def wait_for(self, text: str, timeout=30) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            out = self.read(0.2)
            if text in ANSI.sub("", out):
                return out
            if self.p.poll() is not None:
                break
        raise AssertionError(f"{text!r} not shown; screen: {self.read(0.1)!r}; stderr: {self.stderr()}")

    def close(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(5)
        os.close(self.master)


# ------------------------------------------------------------------------------- filters (jsonl)
def _records(r) -> list[dict]:
    assert r.returncode == 0, r.stderr
    return [json.loads(x) for x in r.stdout.splitlines()]


def test_filters_on_json_lines():
    allrecs = _records(hdrlog("replay", str(FIX)))
    gets = _records(hdrlog("replay", str(FIX), "--method", "get"))
    assert gets and len(gets) < len(allrecs)
    for r in gets:
        assert (r.get("method") or r["request"]["method"]) == "GET"
    errors = _records(hdrlog("replay", str(FIX), "--status", "4xx"))
    assert errors and all(r["kind"] == "response" and 400 <= r["status"] < 500 for r in errors)
    assert {r["request"]["path"] for r in errors} == {"/missing"}
    api = _records(hdrlog("replay", str(FIX), "--path", "/api/*"))
    paths = {(r.get("path") or r["request"]["path"]) for r in api}
    assert paths == {"/api/users?id=1&fields=name", "/api/orders", "/api/orders/7"}
    sub = _records(hdrlog("replay", str(FIX), "--path", "orders", "--method", "DELETE", "--method", "POST"))
    assert {(r.get("method") or r["request"]["method"]) for r in sub} == {"DELETE", "POST"}
    hdr = _records(hdrlog("replay", str(FIX), "--header", "x-request-id", "--header", "CONTENT-TYPE"))
    assert len(hdr) == len(allrecs)
    for r in hdr:
        assert r["headers"] and {n.lower() for n, _ in r["headers"]} <= {"x-request-id", "content-type"}
    assert _records(hdrlog("replay", str(FIX), "--mcp")) == []


def test_bad_status_filter_is_one_sentence():
    r = hdrlog("replay", str(FIX), "--status", "6xx")
    assert r.returncode == 2 and r.stderr.startswith("hdrlog: error: --status takes") and r.stderr.count("\n") == 1


def test_pretty_replay_in_a_terminal_is_one_line_per_exchange(tmp_path):
    t = Pty([PY, "-m", "hdrlog", "replay", str(FIX), "--format", "pretty"], tmp_path / "err")
    try:
        t.p.wait(30)
        screen = t.read(0.5)
    finally:
        t.close()
    assert "\x1b[" in screen, "colours on a terminal"
    lines = [ANSI.sub("", x) for x in screen.splitlines() if x.strip()]
    assert len(lines) == 14, lines  # 14 exchanges: each request is on its response's line
    first = lines[0]
    assert re.search(r"^\d\d:\d\d:\d\d\.\d{3} python\[\d+\] <- 127\.0\.0\.1:\d+ GET /api/users\?id=1&fields=name "
                     r"(→|->) 200 \d+\.\dms ", first), first
    assert "Authorization: Bearer <redacted:" in screen and "demo-token" not in screen
    assert any("/missing" in x and "404" in x for x in lines)


# --------------------------------------------------------------------------- the view's own logic
def _rec(kind, conn="c1", **kw):
    r = {"type": "http", "ts": "2026-11-22T01:02:03.456789Z", "pid": 7, "tid": 7, "comm": "node",
         "direction": "in" if kind == "request" else "out", "proto": "http/1.1", "kind": kind,
         "conn": {"id": conn, "role": "server", "local": "127.0.0.1:443", "peer": "127.0.0.1:5555",
                  "attribution": "recv-before"}, "headers": [["Host", "x"], ["Accept", "*/*"]], "truncated": False}
    r.update(kw)
    return r


def test_pretty_pairs_requests_and_shows_mcp_and_unanswered():
    buf = io.StringIO()
    s = PrettySink(buf, color=False, show=["accept", "content-type"])
    s.write(_rec("request", method="POST", path="/mcp", mcp={"method": "tools/call", "tool": "search", "id": 1}))
    s.write(_rec("request", conn="c2", method="GET", path="/never"))
    assert buf.getvalue() == ""  # held until the response
    s.write(_rec("response", status=200, latency_ms=3.25, request={"method": "POST", "path": "/mcp"},
                 headers=[["Content-Type", "application/json"]], mcp={"id": 1, "method": "tools/call", "tool": "search", "error": -32601}))
    line = buf.getvalue()
    assert line.count("\n") == 1
    assert "POST /mcp" in line and "200 3.2ms" in line and "[mcp tools/call search error -32601]" in line
    assert "Accept: */*; Content-Type: application/json" in line and "Host" not in line
    s.close()
    last = buf.getvalue().splitlines()[-1]
    assert "GET /never" in last and "no response seen" in last


def test_filter_logic():
    f = Filter(statuses=["5xx", "404"])
    assert f.match(_rec("response", status=503, request={"method": "GET", "path": "/"}))
    assert f.match(_rec("response", status=404, request={"method": "GET", "path": "/"}))
    assert not f.match(_rec("response", status=200, request={"method": "GET", "path": "/"}))
    assert not f.match(_rec("request", method="GET", path="/"))
    assert f.match({"type": "loss", "events": 1})
    g = Filter(mcp=True, paths=["/mcp*"])
    assert g.match(_rec("request", method="POST", path="/mcp?x=1", mcp={"method": "initialize"}))
    assert not g.match(_rec("request", method="POST", path="/mcp"))


def test_rotating_file(tmp_path):
    p = tmp_path / "out.jsonl"
    f = RotatingFile(str(p), max_bytes=100, keep=2)
    for i in range(12):
        f.write(json.dumps({"i": i, "pad": "x" * 30}).encode() + b"\n")
    f.close()
    names = sorted(x.name for x in tmp_path.iterdir())
    assert names == ["out.jsonl", "out.jsonl.1", "out.jsonl.2"]
    for x in tmp_path.iterdir():
        assert stat.S_IMODE(x.stat().st_mode) == 0o600
        for line in x.read_text().splitlines():
            json.loads(line)  # never a record cut in two
    newest = [json.loads(x)["i"] for x in (tmp_path / "out.jsonl.1").read_text().splitlines()]
    assert newest[-1] < 11 or (tmp_path / "out.jsonl").read_text() == ""


# --------------------------------------------------------------------------------- real kernel
@pytest.mark.kernel
def test_attach_in_a_terminal(gateway, tmp_path):
    gw, port = gateway
    t = Pty([PY, "-m", "hdrlog", "attach", "--pid", str(gw.pid)], tmp_path / "err")
    try:
        deadline = time.monotonic() + 60
        while "attached" not in t.stderr():
            assert time.monotonic() < deadline and t.p.poll() is None, t.stderr()
            time.sleep(0.1)
        run_client(port, "live", requests=7, connections=1)
        screen = t.wait_for("DELETE /api/orders/7")
        t.wait_for("msg/s")  # the status line
        screen = t.read(1.0)
        t.p.send_signal(signal.SIGINT)
        t.p.wait(30)
        t.read(0.3)
        err = t.stderr()
    finally:
        t.close()
    plain = ANSI.sub("", screen)
    assert "\x1b[32m200" in screen  # a green status
    assert re.search(r"GET /api/users\?id=1&fields=name (→|->) 200 ", plain)
    assert "7 messages" in plain or "14 messages" in plain
    assert "\x1b[K" in screen  # the status line redraws in place
    assert t.p.returncode == 0, err
    assert "detached." in err
    # the statistics table at the end, on stderr
    assert "ROUTE" in err and "GET /api/users" in err and "PEER" in err and "127.0.0.1" in err


@pytest.mark.kernel
def test_attach_output_rotation_and_filters(gateway, hdrlog, tmp_path):
    gw, port = gateway
    h = hdrlog(gw.pid, extra=("--rotate-mb", "0.002", "--keep", "2", "--status", "2xx", "--header", "x-request-id"))
    run_client(port, "rot", requests=12, connections=1)
    run_client(port, "rot2", requests=12, connections=1)
    h.stop()
    files = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(h.out.name))
    assert files == [h.out.name, h.out.name + ".1", h.out.name + ".2"], files
    recs = []
    for name in files:
        p = tmp_path / name
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
        assert p.stat().st_size < 2048 + 2048  # rotated after crossing 2 KiB
        recs += [json.loads(x) for x in p.read_text().splitlines()]
    http = [r for r in recs if r["type"] == "http"]
    assert http and all(r["kind"] == "response" and 200 <= r["status"] < 300 for r in http)
    assert all({n.lower() for n, _ in r["headers"]} <= {"x-request-id"} for r in http)
    assert sum(bool(r["headers"]) for r in http) > len(http) // 2
    assert "ROUTE" in h.stderr()  # the end-of-run table
