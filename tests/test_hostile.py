"""Hostile and odd input end to end (issue 7): other protocols over TLS, huge and malformed header blocks.

Most cases run through the real pipeline (decode → track → parse → pair → redact → record) with events
packed as the kernel packs them; the ones marked ``kernel`` attach to a real TLS server.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import ssl
import sys
import textwrap

import orjson
import pytest

from hdrlog import events
from hdrlog.conntrack import CHUNK
from hdrlog.http1 import Http1Parser
from hdrlog.pipeline import Pipeline
from hdrlog.redact import Redactor

from conftest import RecordSink, start_server

H = events.EVENT_HEADER


@pytest.fixture(autouse=True)
def _debug(monkeypatch):
    monkeypatch.setattr(Http1Parser, "debug", True)  # internal errors surface instead of being counted


def ev(direction: int, data: bytes, *, conn=1, kind=1, length=None, offset=0, lost=0, ts=1) -> bytes:
    laddr = socket.inet_aton("127.0.0.1").ljust(16, b"\0")
    return H.pack(ts, conn, 100, 100, len(data) if length is None else length, len(data), offset, lost, kind,
                  2 if direction == 1 else 4, direction, 1, 2, 8443, 40000, 0, laddr, laddr, b"gw", -1) + data


def call_events(direction: int, data: bytes, max_bytes: int, **kw) -> list[bytes]:
    """One TLS call as the probes report it: chunks of CHUNK bytes up to max_bytes, the full length in each."""
    out = []
    cap = data[:max_bytes]
    for off in range(0, max(len(cap), 1), CHUNK):
        out.append(ev(direction, cap[off:off + CHUNK], length=len(data), offset=off, **kw))
    return out


def run(calls, max_bytes=16384, close=True):
    """calls: [(direction 1=in 2=out, bytes)] on one connection, then SSL_free. -> (records, pipeline)."""
    sink = RecordSink()
    pipe = Pipeline(sink, Redactor(key=b"k" * 32), lib_of_pid=lambda pid: "openssl", max_bytes=max_bytes,
                    wall_offset_ns=0)
    for d, data in calls:
        for raw in call_events(d, data, max_bytes):
            pipe.on_raw(raw)
    if close:
        pipe.on_raw(ev(0, b"", kind=events.Kind.CLOSE))
    return sink.records, pipe


NEXT_REQ = b"GET /next HTTP/1.1\r\nHost: ok\r\n\r\n"
NEXT_RESP = b"HTTP/1.1 204 No Content\r\n\r\n"


# ------------------------------------------------------------------------------ other protocols over TLS
SMTP = [(2, b"220 mail.example ESMTP ready\r\n"), (1, b"EHLO client.example\r\n"),
        (2, b"250-mail.example\r\n250-SIZE 10240000\r\n250 AUTH PLAIN LOGIN\r\n"),
        (1, b"AUTH PLAIN AHVzZXIAc2VjcmV0\r\n"), (2, b"235 2.7.0 Authentication successful\r\n"),
        (1, b"MAIL FROM:<a@example.org>\r\n"), (2, b"250 OK\r\n"), (1, b"DATA\r\n"),
        (2, b"354 go ahead\r\n"), (1, b"Subject: GET / HTTP/1.1 in a mail\r\n\r\nhello\r\n.\r\n"),
        (2, b"250 queued\r\n"), (1, b"QUIT\r\n"), (2, b"221 bye\r\n")]


@pytest.mark.parametrize("name,calls", [
    ("smtp", SMTP),
    ("random", [(d, random.Random(i).randbytes(n)) for i, (d, n) in
                enumerate([(1, 100), (2, 5000), (1, 20000), (2, 3), (1, 70000)])]),
    ("echo", [(d, b"PING hello %d\n" % i) for i in range(50) for d in (1, 2)]),
    ("nul-and-binary", [(1, b"\0" * 9000), (2, b"\xff\xfe" * 3000)]),
], ids=str)
def test_non_http_protocol_over_tls_is_counted_not_parsed(name, calls):
    recs, pipe = run(calls)
    assert recs == [] or name == "smtp" and all(r["truncated"] for r in recs), recs
    assert pipe.tracker.counts["non_http"] == 1
    assert pipe.tracker.non_http_connections() == 1


def test_non_http_connection_still_open_is_counted_too():
    recs, pipe = run(SMTP, close=False)
    assert pipe.tracker.counts["non_http"] == 0 and pipe.tracker.non_http_connections() == 1


def test_http_connection_is_not_counted_as_non_http():
    recs, pipe = run([(1, NEXT_REQ), (2, NEXT_RESP)])
    assert len(recs) == 2 and pipe.tracker.non_http_connections() == 0


# ------------------------------------------------------------------------------ odd header blocks
def _block(n: int, value: bytes = b"v", start=b"GET /x HTTP/1.1\r\n") -> bytes:
    return start + b"".join(b"X-H-%d: %s\r\n" % (i, value) for i in range(n)) + b"\r\n"


@pytest.mark.parametrize("max_bytes", [16384, 262144])
def test_100k_header_block_is_truncated_and_the_connection_resynchronises(max_bytes):
    big = _block(1000, b"y" * 95)  # > 100 KiB
    assert len(big) > 100 * 1024
    recs, pipe = run([(1, big), (2, NEXT_RESP), (1, NEXT_REQ), (2, NEXT_RESP)], max_bytes=max_bytes)
    reqs = [r for r in recs if r["kind"] == "request"]
    assert reqs[0]["path"] == "/x" and reqs[0]["truncated"] is True
    assert reqs[-1]["path"] == "/next" and reqs[-1]["truncated"] is False
    assert len(orjson.dumps(reqs[0])) < 100 * 1024  # never more than the 64 KiB header cap (+ JSON)


def test_thousands_of_small_headers_in_one_block():
    recs, _ = run([(1, _block(5000)), (2, NEXT_RESP), (1, NEXT_REQ)], max_bytes=1 << 20)
    reqs = [r for r in recs if r["kind"] == "request"]
    assert reqs[0]["truncated"] is True or len(reqs[0]["headers"]) == 5000
    assert reqs[-1]["path"] == "/next"


def test_invalid_utf8_nul_and_control_bytes_in_headers():
    blk = (b"GET /p\xff\xfe?q=\xc3 HTTP/1.1\r\nX-Bad: \xff\xfe\xc3\x28\r\nX-Nul: a\0b\r\nX-Ctl: \x01\x7f\r\n"
           b"Authorization: Bearer s3cr3t-\xff\r\n\r\n")
    recs, _ = run([(1, blk), (2, NEXT_RESP), (1, NEXT_REQ)])
    text = orjson.dumps(recs).decode()
    assert "s3cr3t" not in text
    assert any(r.get("path") == "/next" for r in recs)


def test_obs_fold_and_very_long_lines():
    fold = b"GET /f HTTP/1.1\r\nX-Fold: a\r\n  b\r\n\tc\r\nHost: h\r\n\r\n"
    long_line = b"GET /" + b"a" * 60000 + b" HTTP/1.1\r\nHost: h\r\n\r\n"
    long_value = b"GET /v HTTP/1.1\r\nX-Long: " + b"z" * 70000 + b"\r\n\r\n"
    recs, pipe = run([(1, fold), (2, NEXT_RESP), (1, long_line), (2, NEXT_RESP), (1, long_value), (2, NEXT_RESP),
                      (1, NEXT_REQ), (2, NEXT_RESP)], max_bytes=1 << 20)
    reqs = [r for r in recs if r["kind"] == "request"]
    assert reqs[-1]["path"] == "/next" and not reqs[-1]["truncated"]
    folded = next((r for r in reqs if r["path"] == "/f"), None)
    assert folded is None or "a" in dict(folded["headers"]).get("X-Fold", "a")


def test_header_block_cut_after_authorization_never_leaks_it():
    """Parsing fails halfway through a header block whose last complete header is Authorization."""
    for cut_at in ("mid-name", "mid-value", "after"):
        blk = b"GET /s HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer s3cr3t-tail-token\r\n"
        blk += {"mid-name": b"X-Aft", "mid-value": b"X-After: partial", "after": b""}[cut_at]
        for lost_next in (True, False):
            sink = RecordSink()
            pipe = Pipeline(sink, Redactor(key=b"k" * 32), lib_of_pid=lambda pid: "openssl", max_bytes=16384,
                            wall_offset_ns=0)
            pipe.on_raw(ev(1, blk))
            if lost_next:
                pipe.on_raw(ev(1, NEXT_REQ, lost=3))
            else:
                pipe.on_raw(ev(1, b"\x00\x01garbage that breaks the block\r\n\r\n"))
            pipe.on_raw(ev(0, b"", kind=events.Kind.CLOSE))
            text = orjson.dumps(sink.records).decode()
            assert "s3cr3t" not in text, (cut_at, lost_next, text)


# ------------------------------------------------------------------------------ real kernel
NON_HTTP_SERVER = textwrap.dedent("""
    import socket, ssl, sys, threading, os
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[1], sys.argv[2])
    ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(8)
    print("listening", ls.getsockname()[1], flush=True)
    def serve(c):
        try:
            with ctx.wrap_socket(c, server_side=True) as s:
                s.sendall(b"220 mail.example ESMTP ready\\r\\n")
                while True:
                    data = s.recv(65536)
                    if not data:
                        return
                    if data.startswith(b"QUIT"):
                        s.sendall(b"221 bye\\r\\n"); return
                    s.sendall(b"250 OK\\r\\n" if data[:1].isalpha() else os.urandom(len(data)))
        except OSError:
            pass
    while True:
        c, _ = ls.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
""")


def _tls_client(port: int, lines: list[bytes]) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, ctx.wrap_socket(raw) as s:
        s.recv(1024)
        for ln in lines:
            s.sendall(ln)
            s.recv(65536)


@pytest.mark.kernel
def test_kernel_non_http_over_tls_is_reported_in_the_summary(procs, certs, tmp_path):
    from test_kernel_lifecycle import Run, by_type, summary_line

    cert, key = certs
    srv, port = start_server(procs, [sys.executable, "-c", NON_HTTP_SERVER, cert, key])
    h = Run(procs, tmp_path, [srv.pid])
    _tls_client(port, [b"EHLO client.example\r\n", b"AUTH PLAIN AHVzZXIAc2VjcmV0\r\n", b"MAIL FROM:<a@b>\r\n",
                       b"DATA\r\n", b"Subject: x\r\n\r\nbody\r\n.\r\n", b"QUIT\r\n"])
    _tls_client(port, [os.urandom(3000) for _ in range(5)] + [b"QUIT\r\n"])
    rc = h.signal(signal.SIGINT, settle=1.0)
    err = h.stderr()
    assert rc == 0 and "Traceback" not in err, err
    recs = h.records()
    assert by_type(recs, "http") == []
    s = by_type(recs, "summary")[-1]
    assert s["non_http_connections"] == 2, s
    assert s["events"] > 10
    assert "2 connection(s) carried TLS data that is not HTTP" in summary_line(err)


@pytest.mark.kernel
def test_kernel_100k_header_block_to_the_demo_gateway(procs, certs, tmp_path):
    from test_kernel_lifecycle import Run, by_type, call, gateway, https

    gw, port = gateway(procs, certs)
    h = Run(procs, tmp_path, [gw.pid])
    c = https(port)
    big = {f"X-Big-{i}": "b" * 2000 for i in range(51)}  # ~100 KiB, under http.server's 100-header limit
    big["Authorization"] = "Bearer s3cr3t-in-a-huge-block"
    status = call(c, "GET", "/big", headers=big)
    assert status in (200, 404, 431)
    c.close()
    c = https(port)
    assert call(c, "GET", "/health") == 200
    c.close()
    assert h.signal(signal.SIGINT) == 0, h.stderr()
    recs = h.records()
    assert "Traceback" not in h.stderr()
    reqs = [r for r in by_type(recs, "http") if r["kind"] == "request"]
    bigr = [r for r in reqs if r["path"] == "/big"]
    assert len(bigr) == 1 and bigr[0]["truncated"] is True, bigr
    assert [r for r in reqs if r["path"] == "/health" and not r["truncated"]]
    assert "s3cr3t" not in h.out.read_text() and "s3cr3t" not in h.stderr()
    s = by_type(recs, "summary")[-1]
    assert s["truncated_messages"] >= 1  # Python reads TLS records (<= 16 KiB): the block is cut at 64 KiB


def test_ps_table_escapes_what_processes_and_files_say():
    """`hdrlog ps` prints a process's comm, its library path, TLS version and the reason it cannot be attached
    to: all read from the process or its files (issue 7). A newline or terminal escape in any of them stays
    escaped: one table line per process, no control character but the bold header's."""
    from hdrlog import ps

    evil = "x\nPID 1 root\x1b[2J\r"
    rows = [{"pid": 4242, "ppid": 1, "comm": evil, "ports": [443], "attachable": False, "covered_by": None,
             "why": f"PID 4242 ({evil}) maps no files", "tls": [{"kind": "go", "version": "go1.16" + evil,
                                                               "path": "/tmp/" + evil + "/srv", "symbols": []}]}]
    out = ps.render({"machine": {"attach_possible": True, "why": ""}, "processes": rows}, color=False)
    lines = out.splitlines()
    assert len(lines) == 3 and all(ln.isprintable() for ln in lines), lines
    assert lines[1].count("x\\nPID 1 root\\x1b[2J\\r") == 4, lines[1]
