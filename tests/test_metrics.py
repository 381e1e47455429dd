"""--metrics: Prometheus text scraped over HTTP during a real attach; label caps; the Grafana dashboard
only queries metrics hdrlog exports."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import ROOT, free_port, run_client, start_gateway
from hdrlog.metrics import Capped, MetricsServer, parse_addr

PY = sys.executable
DASHBOARD = ROOT / "src" / "hdrlog" / "grafana" / "hdrlog.json"


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.status == 200
        return r.read().decode()


def value(text: str, name: str, **labels) -> float:
    """The sample `name{labels...}` (labels matched as a subset)."""
    total = None
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total = (total or 0.0) + float(m.group(4))
    if total is None:
        raise AssertionError(f"no {name} {labels} in:\n{text}")
    return total


@pytest.mark.kernel
def test_scrape_during_a_real_attach(procs, hdrlog, certs):
    cert, key = certs
    gw, port = start_gateway(procs, certs)
    mport = free_port()
    h = hdrlog(gw.pid, extra=("--metrics", f"127.0.0.1:{mport}"))
    assert f"metrics on http://127.0.0.1:{mport}/metrics" in h.stderr()
    run_client(port, "m", requests=14, connections=2)
    deadline = time.monotonic() + 15
    while True:  # the session reads the ring buffer every 100 ms and refreshes health once a second
        text = scrape(mport)
        try:
            if value(text, "hdrlog_http_requests_total") >= 14 and value(text, "hdrlog_events_total") > 0:
                break
        except AssertionError:
            pass
        assert time.monotonic() < deadline, text
        time.sleep(0.3)
    assert value(text, "hdrlog_http_requests_total", method="GET", route="/api/users", peer="127.0.0.1") == 2
    assert value(text, "hdrlog_http_requests_total", method="DELETE", route="/api/orders/{id}") == 2
    assert value(text, "hdrlog_http_responses_total", status="404") == 2
    assert value(text, "hdrlog_http_errors_total", route="/missing", status="404") == 2
    assert value(text, "hdrlog_http_request_duration_seconds_count", route="/slow") == 2
    assert value(text, "hdrlog_http_request_duration_seconds_bucket", route="/slow", le="0.025") == 0  # 50 ms
    assert value(text, "hdrlog_http_request_duration_seconds_bucket", route="/slow", le="+Inf") == 2
    assert value(text, "hdrlog_messages_total", attribution="socket") >= 28
    assert value(text, "hdrlog_events_lost_total") == 0
    assert value(text, "hdrlog_attached_processes") == 1
    assert value(text, "hdrlog_label_overflow_total", label="route") == 0
    assert "demo-token" not in text and "s3cr3t" not in text
    h.stop()
    with pytest.raises(OSError):  # the endpoint goes away with hdrlog
        scrape(mport)


def test_busy_port_is_one_sentence_before_attaching():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run([PY, "-m", "hdrlog", "attach", "--pid", "1", "--metrics", f"127.0.0.1:{port}"],
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 2 and r.stderr == f"hdrlog: error: cannot serve metrics on 127.0.0.1:{port}: " \
                                             "Address already in use.\n"


def test_bad_address_is_one_sentence():
    r = subprocess.run([PY, "-m", "hdrlog", "attach", "--pid", "1", "--metrics", "localhost:http"],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 2 and "--metrics takes ADDR:PORT" in r.stderr


def test_parse_addr():
    assert parse_addr("9464") == ("127.0.0.1", 9464)
    assert parse_addr("0.0.0.0:9464") == ("0.0.0.0", 9464)
    assert parse_addr("[::1]:9464") == ("::1", 9464)
    assert parse_addr(":9464") == ("0.0.0.0", 9464)


def test_label_cardinality_is_bounded():
    m = MetricsServer("127.0.0.1", 0, max_routes=5, max_peers=3)
    for i in range(50):
        m.observe({"type": "http", "kind": "request", "method": "GET" if i % 2 else "BREW", "path": f"/r{i}x/{i}",
                   "conn": {"id": "c", "peer": f"10.0.0.{i}:1", "attribution": None}, "headers": []})
        m.observe({"type": "http", "kind": "request", "method": "POST", "path": "/mcp",
                   "conn": {"id": "c", "peer": "10.0.0.1:1", "attribution": "socket"}, "headers": [],
                   "mcp": [{"method": "tools/call", "tool": f"t{i % 3}", "id": i}]})
        m.observe({"type": "http", "kind": "response", "status": 200, "latency_ms": 1.0,
                   "request": {"method": "POST", "path": "/mcp"},
                   "conn": {"id": "c", "peer": "10.0.0.1:1", "attribution": "socket"}, "headers": [],
                   "mcp": {"id": i, "error": -32000} if i == 7 else {"id": i}})
    from prometheus_client import generate_latest

    text = generate_latest(m.registry).decode()
    routes = set(re.findall(r'hdrlog_http_requests_total\{[^}]*route="([^"]*)"', text))
    peers = set(re.findall(r'hdrlog_http_requests_total\{[^}]*peer="([^"]*)"', text))
    methods = set(re.findall(r'hdrlog_http_requests_total\{method="([^"]*)"', text))
    assert len(routes) <= 6 and "other" in routes
    assert len(peers) <= 4 and "other" in peers
    assert methods == {"GET", "POST", "other"}  # BREW is not a standard method
    assert value(text, "hdrlog_mcp_calls_total", method="tools/call", tool="t1") == 17
    assert value(text, "hdrlog_mcp_errors_total", method="tools/call", tool="t1") == 1  # id 7 → t1, by id
    m.tick(force=True)
    text = generate_latest(m.registry).decode()
    assert value(text, "hdrlog_label_overflow_total", label="route") > 0
    c = Capped(1)
    assert [c("a"), c("b"), c("a")] == ["a", "other", "a"]


def test_grafana_dashboard_queries_exported_metrics():
    dash = json.loads(DASHBOARD.read_text())
    source = (ROOT / "src" / "hdrlog" / "metrics.py").read_text()
    exported = set(re.findall(r'"(hdrlog_[a-z_]+)"', source))
    assert dash["panels"]
    for p in dash["panels"]:
        assert p["targets"], p["title"]
        for t in p["targets"]:
            for name in re.findall(r"\b(hdrlog_[a-z_]+)", t["expr"]):
                base = re.sub(r"_(total|bucket|count|sum)$", "", name)
                assert base in exported or name in exported, (p["title"], name)
