"""A TLS HTTP server for tests/test_kernel_faults.py: serves until GET /exec, then exec()s (argument 3): "self"
(itself again, same listening socket through an inherited fd), "sleep" (/bin/sleep: no TLS), "node" (a node
https server on the same socket: another TLS library) or "sh-node" (/bin/sh, no TLS, which execs that node
server 2 s later). GET /crash-segv writes half a response header block and
dies of SIGSEGV; GET /crash-kill dies of SIGKILL after reading the request."""
import http.server
import os
import signal
import socket
import ssl
import sys

cert, key = sys.argv[1], sys.argv[2]
mode = sys.argv[3] if len(sys.argv) > 3 else "self"
gen = int(os.environ.get("GEN", "0"))
if "LISTEN_FD" in os.environ:
    ls = socket.socket(fileno=int(os.environ["LISTEN_FD"]))
else:
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    print("listening", ls.getsockname()[1], flush=True)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)



class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path.startswith("/crash-"):
            self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Half: 1\r\nAuthorization: Bearer crash-secret-1\r\nX-Par")
            self.wfile.flush()
            os.kill(os.getpid(), signal.SIGSEGV if self.path == "/crash-segv" else signal.SIGKILL)
        body = f"gen {gen}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Gen", str(gen))
        self.end_headers()
        self.wfile.write(body)
        if self.path == "/exec":
            self.wfile.flush()
            raise SystemExit  # handled below

    def log_message(self, *a):
        pass



while True:
    c, _ = ls.accept()
    s = ctx.wrap_socket(c, server_side=True)
    try:
        H(s, ("127.0.0.1", 0), None)
    except SystemExit:
        try:
            s.close()
        except OSError:
            pass
        os.set_inheritable(ls.fileno(), True)
        if mode == "sleep":
            os.execv("/bin/sleep", ["sleep", "30"])
        if mode == "sh-node":  # a program without TLS first (sh, checked and skipped), which then execs node
            js = ("const https=require('https'),fs=require('fs');"
                  "https.createServer({cert:fs.readFileSync(process.argv[1]),key:fs.readFileSync(process.argv[2])},"
                  "(q,r)=>{r.setHeader('X-Gen','node');r.end('node\\n')}).listen({fd:+process.argv[3]});")
            os.execv("/bin/sh", ["sh", "-c", 'sleep 2; exec /usr/bin/node -e "$0" "$1" "$2" "$3"', js, cert, key,
                                 str(ls.fileno())])
        if mode == "node":
            js = ("const https=require('https'),fs=require('fs');"
                  "https.createServer({cert:fs.readFileSync(process.argv[1]),key:fs.readFileSync(process.argv[2])},"
                  "(q,r)=>{r.setHeader('X-Gen','node');r.end('node\\n')}).listen({fd:+process.argv[3]});")
            os.execv("/usr/bin/node", ["node", "-e", js, cert, key, str(ls.fileno())])
        os.execve(sys.executable, [sys.executable] + sys.argv,
                  dict(os.environ, LISTEN_FD=str(ls.fileno()), GEN=str(gen + 1)))
    except Exception:
        pass
    finally:
        try:
            s.close()
        except OSError:
            pass
