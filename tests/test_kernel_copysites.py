"""Copy sites (the default placement for OpenSSL 3.0: probes inside the record layer, osslsites.py) capture what
function probes capture: the same traffic under `--placement auto`, `functions` and `entry` gives the same
messages. The cases are the ones where a per-record probe could differ from a per-call one: a read spread over
several records and calls (Python's buffered reader asks 8 KiB of 16 KiB records), a write of many records in
one call, SSL_peek before SSL_read, the multi-block write path, and many short connections (handshake records
read and written through the same functions)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import http_records, start_server

pytestmark = pytest.mark.kernel

PLACEMENTS = ["auto", "functions", "entry"]

SERVER = r"""
import socket, ssl, sys, threading
cert, key, mode = sys.argv[1], sys.argv[2], sys.argv[3]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
if mode == "cbc":  # what OpenSSL's multi-block write path needs: TLS 1.2, AES-CBC-HMAC-SHA1, no encrypt-then-mac
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA")
    ctx.options |= 1 << 19  # SSL_OP_NO_ENCRYPT_THEN_MAC
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(64)
print("listening", ls.getsockname()[1], flush=True)

def serve(c):
    with c:
        f = c.makefile("rb")
        while True:
            line = f.readline()
            if not line:
                return
            path = line.split(b" ")[1]
            n = 0
            while True:
                h = f.readline()
                if h in (b"\r\n", b""):
                    break
                k, v = h.split(b":", 1)
                if k.strip().lower() == b"content-length":
                    n = int(v)
            got = f.read(n) if n else b""
            size = int(path.split(b"?")[0].rsplit(b"/", 1)[1]) if path.startswith(b"/size/") else 2
            head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Path: %s\r\nX-Got: %d\r\n\r\n" % (size, path, len(got))
            c.sendall(head + b"x" * size)  # one SSL_write_ex of every record

while True:
    s, _ = ls.accept()
    try:
        t = ctx.wrap_socket(s, server_side=True)
    except OSError:
        continue
    threading.Thread(target=serve, args=(t,), daemon=True).start()
"""

CLIENT = r"""
import socket, ssl, sys
port, mode, conns = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
reqs = [("POST", "/post", 40_000), ("GET", "/size/100000", 0), ("GET", "/size/300000", 0), ("GET", "/size/10", 0)]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
if mode == "cbc":
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA")
    ctx.options |= 1 << 19
for i in range(conns):
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port))) as s:
        f = s.makefile("rb")
        for method, path, n in (reqs if conns == 1 else reqs[3:]):
            body = b"y" * n
            s.sendall(b"%s %s?c=%d HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (method.encode(), path.encode(), i, n)
                      + body)
            assert f.readline().startswith(b"HTTP/1.1 200")
            size = 0
            while True:
                h = f.readline()
                if h == b"\r\n":
                    break
                if h.lower().startswith(b"content-length:"):
                    size = int(h.split(b":")[1])
            assert len(f.read(size)) == size
print("done", flush=True)
"""

PEEK_CLIENT = r"""
import ctypes, socket, sys
lib = ctypes.CDLL("libssl.so.3")
P = ctypes.c_void_p
lib.TLS_client_method.restype = P
lib.SSL_CTX_new.restype, lib.SSL_CTX_new.argtypes = P, [P]
lib.SSL_new.restype, lib.SSL_new.argtypes = P, [P]
lib.SSL_set_fd.argtypes = [P, ctypes.c_int]
lib.SSL_connect.argtypes = [P]
for name in ("SSL_write", "SSL_peek", "SSL_read"):
    getattr(lib, name).argtypes = [P, P, ctypes.c_int]
ctx = lib.SSL_CTX_new(lib.TLS_client_method())  # verifies nothing by default
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
ssl = lib.SSL_new(ctx)
lib.SSL_set_fd(ssl, s.fileno())
assert lib.SSL_connect(ssl) == 1
print("ready", flush=True)
sys.stdin.readline()
buf = ctypes.create_string_buffer(1 << 16)
for i in range(3):
    req = b"GET /size/%d?peek=%d HTTP/1.1\r\nHost: t\r\n\r\n" % (5000 + i, i)
    assert lib.SSL_write(ssl, req, len(req)) == len(req)
    assert lib.SSL_peek(ssl, buf, 64) > 0  # looked at, not consumed: the data must be reported once
    got = b""
    while b"\r\n\r\n" not in got or len(got) < got.index(b"\r\n\r\n") + 4 + 5000 + i:
        n = lib.SSL_read(ssl, buf, len(buf))
        assert n > 0
        got += buf.raw[:n]
print("done", flush=True)
"""


def _server(procs, certs, mode="default"):
    cert, key = certs
    return start_server(procs, [sys.executable, "-c", SERVER, cert, key, mode])


def _messages(records):
    out = []
    for r in http_records(records):
        hdr = {k.lower(): v for k, v in r["headers"]}
        out.append((r["direction"], r["kind"], r.get("method") or r.get("status"),
                    r.get("path") or (r.get("request") or {}).get("path"), hdr.get("x-path"), hdr.get("x-got"),
                    r["truncated"], r["conn"]["peer"] is not None))
    return out


def _clean(records):
    summary = next(r for r in records if r["type"] == "summary")
    assert summary.get("lost_events", 0) == 0, summary
    assert not [r for r in records if r["type"] == "loss"]
    return summary


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_many_records_per_call_and_many_calls_per_record(procs, hdrlog, certs, placement):
    srv, port = _server(procs, certs)
    h = hdrlog(srv.pid, extra=("--placement", placement))
    subprocess.run([sys.executable, "-c", CLIENT, str(port), "default", "1"], check=True, timeout=60,
                   capture_output=True)
    records = h.stop()
    _clean(records)
    assert _messages(records) == _expected()


def _expected():
    """The CLIENT's keep-alive exchange as hdrlog reports it on the server: a 40,000-byte POST (X-Got: the body
    bytes the server read), then responses of 100,000, 300,000 and 10 bytes, each in one SSL_write_ex."""
    paths = ["/post?c=0", "/size/100000?c=0", "/size/300000?c=0", "/size/10?c=0"]
    return [m for p, g in zip(paths, ["40000", "0", "0", "0"]) for m in (
        ("in", "request", "POST" if p.startswith("/post") else "GET", p, None, None, False, True),
        ("out", "response", 200, p, p, g, False, True))]


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_peeked_data_is_reported_once(procs, hdrlog, certs, placement):
    srv, port = _server(procs, certs)
    cl = procs([sys.executable, "-c", PEEK_CLIENT, str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
               text=True)
    assert cl.p.stdout.readline().strip() == "ready"
    h = hdrlog(cl.pid, extra=("--placement", placement))  # the traced process is the one that peeks
    cl.p.stdin.write("go\n")
    cl.p.stdin.flush()
    assert cl.p.stdout.readline().strip() == "done"
    records = h.stop()
    _clean(records)
    msgs = _messages(records)
    want = []
    for i in range(3):
        p = f"/size/{5000 + i}?peek={i}"
        want += [("out", "request", "GET", p, None, None, False, True), ("in", "response", 200, p, p, "0", False, True)]
    assert msgs == want


def _multiblock_possible() -> bool:
    with open("/proc/cpuinfo") as f:
        return " aes " in f.read()


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_multi_block_writes(procs, hdrlog, certs, placement):
    """TLS 1.2 with AES128-SHA and no encrypt-then-mac: writes of 4 records or more go through OpenSSL's
    multi-block encryption (EVP_CTRL_TLS1_1_MULTIBLOCK_ENCRYPT), never through do_ssl3_write. Checked while
    writing this test with bpftrace on the server's EVP_CIPHER_CTX_ctrl: one exchange made 3 calls with 0x1a
    (MULTIBLOCK_ENCRYPT) and 3 with 0x19 (its AAD step), for the 100,000- and 300,000-byte responses. (The test
    certificate is ECDSA, hence the ECDHE-ECDSA suite.)"""
    if not _multiblock_possible():
        pytest.skip("this CPU has no AES-NI: OpenSSL has no multi-block cipher without it")
    srv, port = _server(procs, certs, "cbc")
    h = hdrlog(srv.pid, extra=("--placement", placement))
    subprocess.run([sys.executable, "-c", CLIENT, str(port), "cbc", "1"], check=True, timeout=60, capture_output=True)
    records = h.stop()
    _clean(records)
    assert _messages(records) == _expected()


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_many_short_connections(procs, hdrlog, certs, placement):
    """20 connections, one request each: handshakes go through the same record-layer functions (type 22) and
    must never show up as data; every message has its peer."""
    srv, port = _server(procs, certs)
    h = hdrlog(srv.pid, extra=("--placement", placement))
    subprocess.run([sys.executable, "-c", CLIENT, str(port), "default", "20"], check=True, timeout=60,
                   capture_output=True)
    records = h.stop()
    summary = _clean(records)
    msgs = _messages(records)
    assert sorted(msgs) == sorted(m for i in range(20) for m in (
        ("in", "request", "GET", f"/size/10?c={i}", None, None, False, True),
        ("out", "response", 200, f"/size/10?c={i}", f"/size/10?c={i}", "0", False, True)))
    assert summary.get("non_http_connections", 0) == 0, summary
