"""The processes the nginx bench drives: nginx, wrk, and the probe consumers (hdrlog, bpftrace, the sites counter)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from .common import BENCH, PY, ROOT, Env, cpu_seconds, free_port, stop_proc, wait_for


# -- nginx ---------------------------------------------------------------------------------------
class Nginx:
    def __init__(self, env: Env, name: str, *, workers: int = 1, affinity: str = "01",
                 worker_connections: int = 1024, rlimit_nofile: int | None = None,
                 keepalive_timeout: str = "75s"):
        self.dir = env.tmp / f"nginx-{name}"
        self.dir.mkdir()
        for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.dir / d).mkdir()
        self.port, self.status_port = free_port(), free_port()
        t = self.dir
        rl = f"worker_rlimit_nofile {rlimit_nofile};" if rlimit_nofile else ""
        aff = f"worker_cpu_affinity {affinity};" if affinity else ""
        (t / "nginx.conf").write_text(f"""
worker_processes {workers};
{aff}
{rl}
pid {t}/nginx.pid;
error_log {t}/error.log;
events {{ worker_connections {worker_connections}; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout {keepalive_timeout};
  client_body_temp_path {t}/body; proxy_temp_path {t}/proxy;
  fastcgi_temp_path {t}/fastcgi; uwsgi_temp_path {t}/uwsgi; scgi_temp_path {t}/scgi;
  server {{
    listen 127.0.0.1:{self.port} ssl;
    ssl_protocols TLSv1.3;
    ssl_certificate {env.cert};
    ssl_certificate_key {env.key};
    location / {{ return 200 "ok\\n"; }}
  }}
  server {{
    listen 127.0.0.1:{self.status_port};
    location / {{ stub_status; }}
  }}
}}
""")
        self.p = subprocess.Popen(["nginx", "-p", str(t), "-c", str(t / "nginx.conf"), "-g", "daemon off;"],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        env.procs.append(self.p)
        self.master = self.p.pid

        def up():
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return True
            except OSError:
                return False

        wait_for(up, 10, "nginx start", self.p)
        import psutil

        self.workers = wait_for(lambda: [c.pid for c in psutil.Process(self.master).children()]
                                if len(psutil.Process(self.master).children()) >= workers else None,
                                10, "nginx workers", self.p)
        self.libssl = next((line.split()[-1] for line in Path(f"/proc/{self.workers[0]}/maps").read_text()
                            .splitlines() if re.search(r"/libssl\.so[.\d]*$", line)), None)

    def served(self) -> int:
        """stub_status's request count (it includes the status requests: see served_between)."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.status_port}/", timeout=5).read().decode()
        return int(text.splitlines()[2].split()[2])

    def worker_cpu(self) -> float:
        return sum(cpu_seconds(w) for w in self.workers)

    def stop(self) -> None:
        """Fast shutdown (SIGTERM); workers still alive after it (they hold connections) are killed."""
        stop_proc(self.p, signal.SIGTERM, 15)
        for w in self.workers:
            try:
                os.kill(w, signal.SIGKILL)
            except ProcessLookupError:
                pass


def served_between(s0: int, s1: int) -> int:
    """TLS requests nginx served between two served() readings: the first status request is in s1."""
    return s1 - s0 - 1


# -- wrk -----------------------------------------------------------------------------------------
def parse_latency(text: str, pct: str) -> float | None:
    m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    if not m:
        return None
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v


def run_wrk(env: Env, port: int, seconds: float, conns: int, *, threads: int = 1, cpus: str = "1",
            script: str | None = None, script_args: tuple = ()) -> dict:
    argv = ["taskset", "-c", cpus, "wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--latency"]
    if script:
        argv += ["-s", str(BENCH / "wrk" / script)]
    argv.append(f"https://127.0.0.1:{port}/")
    if script_args:
        argv += ["--", *map(str, script_args)]
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, env=env.wrk_env, timeout=seconds + 60)
    wall = time.monotonic() - t0
    if r.returncode != 0:
        raise RuntimeError(f"wrk failed: {r.stderr}{r.stdout}")
    out = r.stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    dur = float(m.group(2)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[m.group(3)]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errs = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"requests": total, "seconds": dur, "wall": wall, "rps": rps, "p50_ms": parse_latency(out, "50"),
            "p99_ms": parse_latency(out, "99"), "socket_errors": errs.group(1) if errs else None,
            "non2xx": int(non2xx.group(1)) if non2xx else 0}


# -- hdrlog and bpftrace as consumers --------------------------------------------------------------
class Hdrlog:
    """`hdrlog attach` (or bench/hdrlog_instrumented.py) writing JSON lines to a file."""

    def __init__(self, env: Env, name: str, pids: list[int], *, cpus: str | None, extra=(),
                 instrumented: bool = False, env_extra: dict | None = None, timeout: float = 60,
                 nice: int | None = None):
        self.out = env.tmp / f"{name}.jsonl"
        self.err_path = env.tmp / f"{name}.err"
        cmd = [PY, str(BENCH / "hdrlog_instrumented.py")] if instrumented else [PY, "-m", "hdrlog"]
        argv = [*cmd, "attach", "--output", str(self.out), *extra]
        for p in pids:
            argv += ["--pid", str(p)]
        if cpus is not None:
            argv = ["taskset", "-c", cpus, *argv]
        if nice:
            argv = ["nice", "-n", str(nice), *argv]
        self.argv = argv
        self.errf = open(self.err_path, "w")
        t0 = time.monotonic()
        self.p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self.errf, stdin=subprocess.DEVNULL,
                                  env=dict(os.environ, **(env_extra or {})), cwd=ROOT)
        env.procs.append(self.p)
        wait_for(lambda: "attached to" in self.stderr(), timeout, "hdrlog attach", self.p, self.stderr)
        self.attach_s = time.monotonic() - t0
        self.pid = self.p.pid

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self) -> dict:
        stop_proc(self.p, signal.SIGINT, 60)
        self.errf.close()
        if self.p.returncode != 0:
            raise RuntimeError(f"hdrlog exited {self.p.returncode}: {self.stderr()[-2000:]}")
        reqs = resps = 0
        loss_events = loss_records = loss_bytes = 0
        loss_list: list[dict] = []
        summary = {}
        with open(self.out, "rb") as f:
            for line in f:
                if line.startswith(b'{"type":"http"'):
                    if b'"kind":"request"' in line:
                        reqs += 1
                    else:
                        resps += 1
                    continue
                if not line.strip():
                    continue
                r = json.loads(line)
                t = r.get("type")
                if t == "http":
                    reqs += r.get("kind") == "request"
                    resps += r.get("kind") == "response"
                elif t == "loss":
                    if loss_records < 20:
                        loss_list.append(r)
                    loss_records += 1
                    loss_events += r["events"]
                    loss_bytes += r["bytes"]
                elif t == "summary":
                    summary = r
        self.out.unlink()
        return {"captured_requests": reqs, "captured_responses": resps, "messages": summary.get("messages"),
                "events": summary.get("events"), "lost_events": summary.get("lost_events"),
                "loss_records": loss_records, "loss_record_events": loss_events, "loss_record_bytes": loss_bytes,
                "gaps": summary.get("gaps"), "truncated_messages": summary.get("truncated_messages"),
                "loss_list": loss_list}


class _Counter:
    """A counting probe program run as a child: its stdout says "ready", then the counts when it is stopped."""

    def _start(self, env: Env, name: str, argv: list[str]) -> None:
        self.out_path, self.err_path = env.tmp / f"{name}.out", env.tmp / f"{name}.err"
        self.outf, self.errf = open(self.out_path, "w"), open(self.err_path, "w")
        self.p = subprocess.Popen(argv, stdout=self.outf, stderr=self.errf, stdin=subprocess.DEVNULL)
        env.procs.append(self.p)
        wait_for(lambda: "ready" in self.out_path.read_text(), 60, name, self.p,
                 lambda: self.err_path.read_text())
        self.pid = self.p.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def _stop(self) -> str:
        """Stop it (SIGINT: it prints its counts) and return its stdout."""
        stop_proc(self.p, signal.SIGINT, 30)
        self.outf.close()
        self.errf.close()
        return self.out_path.read_text()


class Bpftrace(_Counter):
    """The counting control: count() on uprobes at the entry of SSL_read and SSL_write."""

    def __init__(self, env: Env, libssl: str, cpus: str):
        prog = (f'BEGIN {{ printf("ready\\n"); }} '
                f'uprobe:{libssl}:SSL_read, uprobe:{libssl}:SSL_write {{ @hits = count(); }}')
        self._start(env, "bpftrace", ["taskset", "-c", cpus, "bpftrace", "-e", prog])
        time.sleep(0.2)

    def stop(self) -> dict:
        m = re.search(r"@hits:\s*(\d+)", self._stop())
        return {"probe_hits": int(m.group(1)) if m else None}


class SitesCount(_Counter):
    """bench/sites_count.py: count-only programs at exactly hdrlog's probe sites (and its tracepoints)."""

    def __init__(self, env: Env, pids: list[int], cpus: str):
        argv = ["taskset", "-c", cpus, PY, str(BENCH / "sites_count.py")]
        for p in pids:
            argv += ["--pid", str(p)]
        self._start(env, "sites_count", argv)

    def stop(self) -> dict:
        lines = [ln for ln in self._stop().splitlines() if ln.startswith("{")]
        r = json.loads(lines[-1]) if lines else {}
        hits = r.get("hits", {})
        return {"probe_hits": sum(hits.values()) if hits else None, "site_hits": hits,
                "tracepoint_hits": r.get("tracepoint_hits")}
