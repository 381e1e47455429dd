"""The built-in demo gateway: a small HTTPS API on loopback, served by Python's ssl (OpenSSL's _ex calls).

Run: python -m hdrlog.demo.gateway --cert C --key K [--port 0] [--host 127.0.0.1]
Prints "listening PORT" on stdout once ready; serves until killed.
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hdrlog-demo-gateway/1"

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json", extra=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Request-Id", self.headers.get("X-Request-Id", "none"))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        if self.path.startswith("/api/users"):
            self._send(200, json.dumps({"users": [{"id": 1, "name": "ada"}]}).encode(),
                       extra=[("Cache-Control", "no-store"), ("Set-Cookie", "session=s3cr3t-session; HttpOnly")])
        elif self.path.startswith("/stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(3):
                chunk = f"part {i}\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        elif self.path.startswith("/slow"):
            import time

            time.sleep(0.05)
            self._send(200, b'{"slow":true}')
        elif self.path.startswith("/health"):
            self._send(200, b"ok", "text/plain")
        else:
            self._send(404, b'{"error":"not found"}')

    do_HEAD = do_GET

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n) if n else b""
        self._send(201, json.dumps({"received": len(body)}).encode(), extra=[("Location", "/api/orders/7")])

    def do_DELETE(self):
        self._send(204, b"")


class Server(ThreadingHTTPServer):
    daemon_threads = True


def serve(host: str, port: int, cert: str, key: str) -> None:
    Server.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
    httpd = Server((host, port), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    print(f"listening {httpd.server_address[1]}", flush=True)
    httpd.serve_forever()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    a = ap.parse_args(argv)
    try:
        serve(a.host, a.port, a.cert, a.key)
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
