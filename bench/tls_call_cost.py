#!/usr/bin/env python3
"""What one probed TLS call costs the traced process, without a network or a gateway in the way.

  python bench/tls_call_cost.py [--iterations N] [--rounds R]

A child process runs Python's ssl over memory BIOs (client and server in one process, no sockets, so no
tracepoint fires): each iteration is client SSL_write_ex, server SSL_read_ex, server SSL_write_ex, client
SSL_read_ex (4 TLS calls, 8 uprobe traps: entry and return of libssl's internal read/write functions).
The child's CPU time per call is measured, interleaved round by round, under:
  none      no probe
  sites     bench/sites_count.py: count-only BPF programs at exactly hdrlog's sites (the traps' own cost)
  hdrlog    `hdrlog attach --pid CHILD` with its full pipeline writing JSON lines to a file
and printed as µs per TLS call and the difference to `none` (what the probes add per call).
Needs root and bcc, like hdrlog. Other load on the machine makes the figures noisier: compare rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
HDRLOG = [PY, "-m", "hdrlog.cli"] if not (ROOT / ".venv/bin/hdrlog").exists() else [str(ROOT / ".venv/bin/hdrlog")]

CHILD = textwrap.dedent(r"""
    import ssl, sys, time
    cert, key = sys.argv[1], sys.argv[2]
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); sctx.load_cert_chain(cert, key)
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); cctx.check_hostname = False; cctx.verify_mode = ssl.CERT_NONE
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    c = cctx.wrap_bio(c_in, c_out, server_side=False)
    s = sctx.wrap_bio(s_in, s_out, server_side=True)
    def pump():
        s_in.write(c_out.read()); c_in.write(s_out.read())
    for _ in range(20):
        for o in (c, s):
            try:
                o.do_handshake()
            except ssl.SSLWantReadError:
                pass
        pump()
    REQ = b"GET /v1/items?id=42 HTTP/1.1\r\nHost: api.example\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
    RESP = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
            b"Cache-Control: no-store\r\nServer: bench\r\n\r\n{}")
    def one():
        c.write(REQ); s_in.write(c_out.read()); s.read(4096)
        s.write(RESP); c_in.write(s_out.read()); c.read(4096)
    for _ in range(2000):
        one()
    print("ready", flush=True)
    for line in sys.stdin:
        n = int(line)
        t0 = time.process_time()
        for _ in range(n):
            one()
        print(time.process_time() - t0, flush=True)
""")


def wait_ready(p: subprocess.Popen, what: str, stream=None, timeout: float = 60) -> None:
    stream = stream or p.stdout
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            raise SystemExit(f"{what} exited before it was ready (exit {p.wait()})")
        if "ready" in line or "attached" in line:
            return
    raise SystemExit(f"{what} not ready after {timeout} s")


def stop(p: subprocess.Popen) -> str:
    p.send_signal(signal.SIGINT)
    try:
        out, _ = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
    return out or ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=50_000, help="iterations (4 TLS calls each) per run")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the three conditions")
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from hdrlog.demo.certs import make_cert

    tmp = Path(tempfile.mkdtemp(prefix="hdrlog-callcost-"))
    cert, key = make_cert(tmp)
    child = subprocess.Popen([PY, "-c", CHILD, str(cert), str(key)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    wait_ready(child, "the TLS child")
    calls = a.iterations * 4

    def run() -> float:
        child.stdin.write(f"{a.iterations}\n")
        child.stdin.flush()
        return float(child.stdout.readline()) / calls * 1e6

    res: dict[str, list[float]] = {"none": [], "sites": [], "hdrlog": []}
    extra: dict[str, list] = {"sites": [], "hdrlog": []}
    try:
        for rnd in range(a.rounds):
            res["none"].append(run())
            p = subprocess.Popen([PY, str(ROOT / "bench/sites_count.py"), "--pid", str(child.pid)],
                                 stdout=subprocess.PIPE, text=True)
            wait_ready(p, "sites_count")
            res["sites"].append(run())
            out = stop(p)
            line = next((ln for ln in out.splitlines() if ln.startswith("{")), "{}")
            hits = sum(json.loads(line).get("hits", {}).values())
            extra["sites"].append(hits / calls)
            outf = tmp / f"out{rnd}.jsonl"
            h = subprocess.Popen([*HDRLOG, "attach", "--pid", str(child.pid), "-o", str(outf)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            wait_ready(h, "hdrlog attach", h.stderr)
            res["hdrlog"].append(run())
            summary = stop(h)
            extra["hdrlog"].append(sum(1 for _ in open(outf)) if outf.exists() else 0)
            print(f"round {rnd}: none {res['none'][-1]:.2f}  sites {res['sites'][-1]:.2f} "
                  f"({extra['sites'][-1]:.2f} traps/call)  hdrlog {res['hdrlog'][-1]:.2f} µs/call "
                  f"({extra['hdrlog'][-1]} records; load {os.getloadavg()[0]:.2f})", flush=True)
            if "lost" in summary and " 0 lost" not in summary:
                print(f"  hdrlog: {summary.strip().splitlines()[-1]}")
    finally:
        child.kill()
    base = statistics.median(res["none"])
    print(f"\nmedian of {a.rounds} rounds, {calls} TLS calls each (Python ssl over memory BIOs):")
    for k, v in res.items():
        m = statistics.median(v)
        print(f"  {k:7s} {m:6.2f} µs per TLS call" + ("" if k == "none" else f"   +{m - base:5.2f} µs"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
