#!/usr/bin/env python3
"""nginx under wrk, with no probe and with `hdrlog attach` writing JSON lines, in interleaved runs.

  sudo .venv/bin/python bench/nginx_bench.py [--seconds 5] [--rounds 2] [--connections 16]

nginx: 1 worker pinned to CPU 0, TLS 1.3 keep-alive, `return 200`. wrk pinned to CPU 1; hdrlog (the
consumer) pinned to CPU 0, sharing nginx's core. Conditions: no probe, hdrlog --placement entry (every
probe on its symbol's first instruction), hdrlog (default placement). Prints req/s and the ratio to no-probe, p50/p99
latency, nginx CPU µs per request, hdrlog CPU µs per message, requests captured vs completed, drops.
Results also go to bench/out/nginx_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLK = os.sysconf("SC_CLK_TCK")
# no probe; hdrlog with every probe at its symbol's entry; hdrlog with placement.py's sites (default)
CONDITIONS = ("none", "hdrlog-entry", "hdrlog")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def start_nginx(tmp: Path, cert: str, key: str, port: int) -> subprocess.Popen:
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp / d).mkdir(exist_ok=True)
    conf = tmp / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
worker_cpu_affinity 01;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_protocols TLSv1.3;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    location / {{ return 200 "ok\\n"; }}
  }}
}}
""")
    p = subprocess.Popen(["nginx", "-p", str(tmp), "-c", str(conf), "-g", "daemon off;"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return p
        except OSError:
            time.sleep(0.05)
    p.kill()
    raise SystemExit("nginx did not start")


def worker_pid(master: int) -> int:
    import psutil

    for _ in range(50):
        kids = psutil.Process(master).children()
        if kids:
            return kids[0].pid
        time.sleep(0.1)
    raise SystemExit("no nginx worker")


def parse_latency(text: str, pct: str) -> float | None:
    m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    if not m:
        return None
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v


def run_wrk(port: int, seconds: int, conns: int) -> dict:
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency",
         f"https://127.0.0.1:{port}/"], capture_output=True, text=True, check=True).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return {"requests": total, "rps": rps, "p50_ms": parse_latency(out, "50"), "p99_ms": parse_latency(out, "99")}


def run_condition(name: str, master: int, worker: int, port: int, a, tmp: Path) -> dict:
    hd = None
    out_file = tmp / f"{name}.jsonl"
    if name.startswith("hdrlog"):
        err = open(tmp / "hdrlog.err", "w")
        placement = "entry" if name == "hdrlog-entry" else "auto"
        hd = subprocess.Popen(
            ["taskset", "-c", "0", sys.executable, "-m", "hdrlog", "attach", "--pid", str(master),
             "--output", str(out_file), "--placement", placement], stderr=err, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while "attached" not in (tmp / "hdrlog.err").read_text():
            if hd.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("hdrlog failed: " + (tmp / "hdrlog.err").read_text())
            time.sleep(0.05)
    c0 = cpu_seconds(worker)
    h0 = cpu_seconds(hd.pid) if hd else 0.0
    res = run_wrk(port, a.seconds, a.connections)
    res["nginx_cpu_us_per_req"] = (cpu_seconds(worker) - c0) * 1e6 / max(1, res["requests"])
    if hd:
        time.sleep(1.0)  # let the consumer drain
        h1 = cpu_seconds(hd.pid)
        hd.send_signal(signal.SIGINT)
        hd.wait(30)
        recs = [json.loads(x) for x in out_file.read_text().splitlines() if x.strip()]
        reqs = sum(1 for r in recs if r.get("type") == "http" and r["kind"] == "request")
        resps = sum(1 for r in recs if r.get("type") == "http" and r["kind"] == "response")
        summ = next((r for r in recs if r.get("type") == "summary"), {})
        res.update(captured_requests=reqs, captured_responses=resps, lost_events=summ.get("lost_events"),
                   consumer_cpu_us_per_msg=(h1 - h0) * 1e6 / max(1, reqs + resps))
        out_file.unlink()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--connections", type=int, default=16)
    a = ap.parse_args()
    for tool in ("nginx", "wrk", "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not installed (make setup installs nginx-light and wrk)")
    sys.path.insert(0, str(ROOT / "src"))
    from hdrlog.demo.certs import make_cert

    tmp = Path(tempfile.mkdtemp(prefix="hdrlog-bench-"))
    cert, key = make_cert(tmp)
    port = free_port()
    nginx = start_nginx(tmp, cert, key, port)
    results: dict[str, list[dict]] = {c: [] for c in CONDITIONS}
    try:
        worker = worker_pid(nginx.pid)
        run_wrk(port, 1, a.connections)  # warm-up
        for _ in range(a.rounds):
            for cond in CONDITIONS:
                r = run_condition(cond, nginx.pid, worker, port, a, tmp)
                results[cond].append(r)
                print(f"  {cond:7s} {r['rps']:>10.0f} req/s", file=sys.stderr)
    finally:
        nginx.send_signal(signal.SIGQUIT)
        nginx.wait(10)
    base = statistics.median(r["rps"] for r in results["none"])
    rows = []
    for cond, runs in results.items():
        med = lambda k: statistics.median(r[k] for r in runs if r.get(k) is not None) if any(  # noqa: E731
            r.get(k) is not None for r in runs) else None
        row = {"condition": cond, "rps": med("rps"), "ratio": med("rps") / base, "p50_ms": med("p50_ms"),
               "p99_ms": med("p99_ms"), "nginx_cpu_us_per_req": med("nginx_cpu_us_per_req"),
               "consumer_cpu_us_per_msg": med("consumer_cpu_us_per_msg"),
               "captured": sum(r.get("captured_requests", 0) for r in runs) if cond != "none" else None,
               "completed": sum(r["requests"] for r in runs),
               "lost_events": sum(r.get("lost_events") or 0 for r in runs) if cond != "none" else None}
        rows.append(row)
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    print(f"{'condition':10s} {'req/s':>9s} {'ratio':>6s} {'p50ms':>7s} {'p99ms':>7s} {'nginx µs/req':>12s} "
          f"{'hdrlog µs/msg':>13s} {'captured/completed':>20s} {'lost':>5s}")
    for r in rows:
        cap = "-" if r["captured"] is None else f"{r['captured']}/{r['completed']}"
        print(f"{r['condition']:10s} {fmt(r['rps'], '9.0f')} {fmt(r['ratio'], '6.3f')} {fmt(r['p50_ms'], '7.2f')} "
              f"{fmt(r['p99_ms'], '7.2f')} {fmt(r['nginx_cpu_us_per_req'], '12.1f')} "
              f"{fmt(r['consumer_cpu_us_per_msg'], '13.1f')} {cap:>20s} {fmt(r['lost_events'], '5d')}")
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "nginx_bench.json").write_text(json.dumps({"args": vars(a), "rows": rows, "runs": results}, indent=1))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
