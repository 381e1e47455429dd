"""`hdrlog demo`: a loopback HTTPS gateway, a client, hdrlog attached to the gateway, and a summary."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter

from hdrlog.errors import HdrlogError


class CountingSink:
    def __init__(self, inner):
        self.inner = inner
        self.kinds: Counter[str] = Counter()
        self.redacted = 0
        self.peers: set[str] = set()

    def write(self, rec: dict) -> None:
        if rec.get("type") == "http":
            self.kinds[rec["kind"]] += 1
            self.redacted += sum(1 for _, v in rec["headers"] if "<redacted:" in v)
            if rec["conn"].get("peer"):
                self.peers.add(rec["conn"]["peer"])
        self.inner.write(rec)

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:
        self.inner.close()


def start_gateway(cert: str, key: str, host: str = "127.0.0.1") -> tuple[subprocess.Popen, int]:
    gw = subprocess.Popen(
        [sys.executable, "-m", "hdrlog.demo.gateway", "--cert", cert, "--key", key, "--host", host],
        stdout=subprocess.PIPE, text=True,
    )
    line = gw.stdout.readline()
    if not line.startswith("listening "):
        gw.kill()
        raise HdrlogError("the demo gateway did not start (no 'listening' line); see the messages above.")
    return gw, int(line.split()[1])


def run_demo(args) -> int:
    from hdrlog.demo.certs import make_cert
    from hdrlog.session import Options, Session, install_signal_handlers, log
    from hdrlog.sinks import JsonlSink, PrettySink

    tmp = tempfile.mkdtemp(prefix="hdrlog-demo-")
    cert, key = make_cert(tmp)
    gw, port = start_gateway(cert, key)
    stop = threading.Event()
    install_signal_handlers(stop)
    sink = CountingSink(JsonlSink() if args.jsonl else PrettySink(color=sys.stdout.isatty(), headers=5))
    log(f"demo gateway (Python ssl) pid {gw.pid} on https://127.0.0.1:{port}")
    session = Session(Options(pids=[gw.pid], duration=60), sink, stop=stop)
    client_out: list[str] = []
    t0 = time.monotonic()
    try:
        session.start()

        def drive():
            r = subprocess.run(
                [sys.executable, "-m", "hdrlog.demo.client", "--port", str(port),
                 "--requests", str(args.requests), "--tag", "demo"],
                capture_output=True, text=True, timeout=60,
            )
            client_out.append(r.stdout)
            time.sleep(0.5)  # let the last events arrive
            stop.set()

        threading.Thread(target=drive, daemon=True).start()
        session.run()
    finally:
        session.close()
        gw.terminate()
        gw.wait(5)
    req, resp = sink.kinds["request"], sink.kinds["response"]
    ok = req >= args.requests and resp >= args.requests
    log(
        f"demo: client sent {args.requests} requests on {len(client_out[0].splitlines()) if client_out else 0} "
        f"connections; captured {req} requests and {resp} responses from {len(sink.peers)} client "
        f"connection(s), {sink.redacted} secret header values redacted, in {time.monotonic() - t0:.1f}s"
        + ("" if ok else " -- FEWER THAN SENT")
    )
    return 0 if ok else 1
