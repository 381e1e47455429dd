"""The demo client: varied HTTPS requests over keep-alive connections (Python ssl, so also a TLS client).

Run: python -m hdrlog.demo.client --port P [--host 127.0.0.1] [--requests N] [--tag T] [--wait-file F]
Prints one JSON line per connection it used: {"local_port": ..., "requests": ...}. With --wait-file it
waits until that file exists before connecting (so a tracer can attach to this process first).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import ssl
import sys
import time

TOKEN = "Bearer demo-token-9f8e7d6c5b4a"

REQUESTS = [
    ("GET", "/api/users?id=1&fields=name", None, {"Accept": "application/json", "Authorization": TOKEN}),
    ("POST", "/api/orders", b'{"item":"book","qty":2}', {"Content-Type": "application/json",
                                                         "X-Api-Key": "k-1234567890abcdef"}),
    ("GET", "/stream", None, {"Accept": "text/plain"}),
    ("HEAD", "/health", None, {}),
    ("GET", "/slow", None, {"Cookie": "session=s3cr3t-session; theme=dark"}),
    ("GET", "/missing", None, {"Accept": "*/*"}),
    ("DELETE", "/api/orders/7", None, {"Authorization": TOKEN}),
]


def run(host: str, port: int, n: int, tag: str, conns: int = 2) -> list[dict]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    out = []
    per_conn = max(1, (n + conns - 1) // conns)
    sent = 0
    for c in range(conns):
        if sent >= n:
            break
        conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=10)
        conn.connect()
        local_port = conn.sock.getsockname()[1]
        done = 0
        for i in range(per_conn):
            if sent >= n:
                break
            method, path, body, headers = REQUESTS[sent % len(REQUESTS)]
            h = dict(headers)
            h["X-Request-Id"] = f"{tag}-{sent}"
            h["User-Agent"] = "hdrlog-demo-client/1"
            conn.request(method, path, body=body, headers=h)
            resp = conn.getresponse()
            resp.read()
            sent += 1
            done += 1
        conn.close()
        out.append({"local_port": local_port, "requests": done})
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--requests", type=int, default=12)
    ap.add_argument("--connections", type=int, default=2)
    ap.add_argument("--tag", default="demo")
    ap.add_argument("--wait-file")
    a = ap.parse_args(argv)
    if a.wait_file:
        deadline = time.monotonic() + 60
        while not os.path.exists(a.wait_file):
            if time.monotonic() > deadline:
                sys.exit("client: timed out waiting for " + a.wait_file)
            time.sleep(0.02)
    for line in run(a.host, a.port, a.requests, a.tag, a.connections):
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
