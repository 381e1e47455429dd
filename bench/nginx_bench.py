#!/usr/bin/env python3
"""hdrlog's benchmark on nginx: throughput cost, consumer ceiling, RSS with 10k connections, attach latency.

  sudo .venv/bin/python bench/nginx_bench.py [--only throughput,ceiling,rss,attach] [--seconds 4] [--rounds 3]

Parts (all by default; `make bench` runs them all in about four minutes on the 2-core reference VM):

throughput  nginx, 1 worker pinned to CPU 0, TLS 1.3 keep-alive, `return 200`; wrk (1 thread, 16
            connections) pinned to CPU 1. Every probe consumer is pinned to CPU 0, sharing nginx's core.
            Conditions, interleaved per round (the order rotates every round): `none`; `bpftrace`
            (a plain counting control: `count()` on uprobes at the entry of SSL_read and SSL_write of the
            libssl nginx maps); `hdrlog-entry` (`hdrlog attach --placement entry`); `hdrlog` (default
            placement); and `hdrlog-paced`, hdrlog with wrk paced to about 20k messages/s, for the
            consumer's CPU per message at that rate. Prints req/s and the ratio to `none`, p50/p99 latency,
            nginx CPU µs per request (and added over `none`), consumer CPU µs per message, messages
            captured vs requests completed (wrk) and served (nginx's stub_status), lost events.
ceiling     the most messages/s hdrlog takes with zero loss: nginx (1 worker) and wrk share CPU 0, hdrlog
            alone on CPU 1; steps of rising load (paced, saturating, HTTP/1.1 pipelining); then beyond the
            consumer (a starved consumer / a tiny ring buffer) to check that every drop is counted: `loss`
            records vs the summary vs the requests nginx served.
rss         hdrlog's VmRSS before and with 10,000 concurrent TLS connections tracked (bench/many_conns.py
            holds them open after one request each), after they are closed (SSL_free must forget them),
            and an idle-expiry check (the tracker's idle timeout set to a few seconds through
            bench/hdrlog_instrumented.py, which also reports how many connections the tracker holds).
attach      seconds from starting `hdrlog attach` to its `attached` line, for nginx (libssl) and for node
            (OpenSSL linked into the executable), median of --attach-reps; plus one run split into phases.

wrk loads a private copy of libssl (LD_LIBRARY_PATH): bpftrace's uprobes are system-wide (-p does not
restrict them), and the load generator must not pay for probes on the library it shares with nginx.
/proc/loadavg is recorded before and after every part: the machine may be shared.
Results: bench/out/{throughput,ceiling,rss,attach}.json, bench/out/nginx_bench.json (everything).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
OUT = BENCH / "out"
CLK = os.sysconf("SC_CLK_TCK")
PARTS = ("throughput", "ceiling", "rss", "attach")
CONDITIONS = ("none", "bpftrace", "hdrlog-entry", "hdrlog", "sites-count", "hdrlog-paced")
PY = sys.executable


# -- small helpers ---------------------------------------------------------------------------------
def log(msg: str) -> None:
    sys.stderr.write(f"bench: {msg}\n")
    sys.stderr.flush()


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def sched_s(pid: int) -> tuple[float, float]:
    """(seconds on CPU, seconds runnable but waiting for a CPU) of pid's main thread (/proc/PID/schedstat)."""
    run, wait = Path(f"/proc/{pid}/schedstat").read_text().split()[:2]
    return int(run) / 1e9, int(wait) / 1e9


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def hwm_kb(pid: int) -> int:
    return rss_kb(pid, "VmHWM")


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def wait_for(pred, timeout: float, what: str, proc: subprocess.Popen | None = None, why=lambda: ""):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited {proc.returncode}: {why()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: timed out after {timeout}s: {why()}")
        time.sleep(0.01)


def stop_proc(p: subprocess.Popen | None, sig=signal.SIGINT, timeout: float = 30) -> None:
    if p is None or p.poll() is not None:
        return
    p.send_signal(sig)
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)


def code_state() -> dict:
    """The commit measured and whether src/ or probes/ had uncommitted changes (others edit them live)."""
    def git(*args):
        r = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None

    dirty = git("status", "--short", "--", "src", "probes")
    return {"commit": git("rev-parse", "--short", "HEAD"), "dirty": dirty.splitlines() if dirty else []}


class Env:
    """Temporary directory, certificate, and the private libssl copy wrk loads."""

    def __init__(self):
        sys.path.insert(0, str(ROOT / "src"))
        from hdrlog.demo.certs import make_cert

        self.tmp = Path(tempfile.mkdtemp(prefix="hdrlog-bench-"))
        self.cert, self.key = make_cert(self.tmp)
        self.procs: list[subprocess.Popen] = []
        self.wrk_env = dict(os.environ)
        self.wrk_libssl = None

    def private_libssl(self, libssl: str) -> None:
        d = self.tmp / "wrklib"
        d.mkdir(exist_ok=True)
        shutil.copy2(libssl, d / Path(libssl).name)
        self.wrk_env = dict(os.environ, LD_LIBRARY_PATH=str(d))
        ldd = subprocess.run(["ldd", shutil.which("wrk")], env=self.wrk_env, capture_output=True, text=True).stdout
        m = re.search(r"libssl\S*\s+=>\s+(\S+)", ldd)
        self.wrk_libssl = m.group(1) if m else None
        if not self.wrk_libssl or not self.wrk_libssl.startswith(str(d)):
            raise SystemExit(f"wrk does not load the private libssl copy: {ldd}")

    def cleanup(self) -> None:
        for p in reversed(self.procs):
            stop_proc(p, signal.SIGKILL, 5)
        shutil.rmtree(self.tmp, ignore_errors=True)


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


class Bpftrace:
    """The counting control: count() on uprobes at the entry of SSL_read and SSL_write."""

    def __init__(self, env: Env, libssl: str, cpus: str):
        prog = (f'BEGIN {{ printf("ready\\n"); }} '
                f'uprobe:{libssl}:SSL_read, uprobe:{libssl}:SSL_write {{ @hits = count(); }}')
        self.out_path, self.err_path = env.tmp / "bpftrace.out", env.tmp / "bpftrace.err"
        self.outf, self.errf = open(self.out_path, "w"), open(self.err_path, "w")
        self.p = subprocess.Popen(["taskset", "-c", cpus, "bpftrace", "-e", prog], stdout=self.outf,
                                  stderr=self.errf, stdin=subprocess.DEVNULL)
        env.procs.append(self.p)
        wait_for(lambda: "ready" in self.out_path.read_text(), 60, "bpftrace", self.p,
                 lambda: self.err_path.read_text())
        time.sleep(0.2)
        self.pid = self.p.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self) -> dict:
        stop_proc(self.p, signal.SIGINT, 30)
        self.outf.close()
        self.errf.close()
        m = re.search(r"@hits:\s*(\d+)", self.out_path.read_text())
        return {"probe_hits": int(m.group(1)) if m else None}


class SitesCount:
    """bench/sites_count.py: count-only programs at exactly hdrlog's probe sites (and its tracepoints)."""

    def __init__(self, env: Env, pids: list[int], cpus: str):
        self.out_path, self.err_path = env.tmp / "sites.out", env.tmp / "sites.err"
        self.outf, self.errf = open(self.out_path, "w"), open(self.err_path, "w")
        argv = ["taskset", "-c", cpus, PY, str(BENCH / "sites_count.py")]
        for p in pids:
            argv += ["--pid", str(p)]
        self.p = subprocess.Popen(argv, stdout=self.outf, stderr=self.errf, stdin=subprocess.DEVNULL)
        env.procs.append(self.p)
        wait_for(lambda: "ready" in self.out_path.read_text(), 60, "sites_count", self.p,
                 lambda: self.err_path.read_text())
        self.pid = self.p.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self) -> dict:
        stop_proc(self.p, signal.SIGINT, 30)
        self.outf.close()
        self.errf.close()
        lines = [ln for ln in self.out_path.read_text().splitlines() if ln.startswith("{")]
        r = json.loads(lines[-1]) if lines else {}
        hits = r.get("hits", {})
        return {"probe_hits": sum(hits.values()) if hits else None, "site_hits": hits,
                "tracepoint_hits": r.get("tracepoint_hits")}


# -- part 1: throughput ----------------------------------------------------------------------------
def part_throughput(env: Env, a) -> dict:
    ng = Nginx(env, "throughput", workers=1, affinity="01")
    env.private_libssl(ng.libssl)
    worker = ng.workers[0]
    paced_conns = a.paced_connections
    runs: dict[str, list[dict]] = {c: [] for c in a.conditions}
    placement = None
    try:
        run_wrk(env, ng.port, 1, a.connections)  # warm-up
        for rnd in range(a.rounds):
            conds = list(a.conditions)
            k = rnd % len(conds)
            for cond in conds[k:] + conds[:k]:
                la0 = loadavg()
                cons = None
                if cond == "bpftrace":
                    cons = Bpftrace(env, ng.libssl, "0")
                elif cond == "sites-count":
                    cons = SitesCount(env, [ng.master, *ng.workers], "0")
                elif cond.startswith("hdrlog"):
                    extra = ["--verbose", "--placement", "entry" if cond == "hdrlog-entry" else "auto"]
                    cons = Hdrlog(env, cond, [ng.master], cpus="0", extra=extra)
                    if cond == "hdrlog" and placement is None:
                        placement = [ln[len("hdrlog: "):] for ln in cons.stderr().splitlines()
                                     if ln.startswith("hdrlog: probe ") or ln.startswith("hdrlog: attached")]
                s0, c0 = ng.served(), cpu_seconds(worker)
                h0 = cons.cpu() if cons else 0.0
                q0, t0 = (sched_s(cons.pid) if cons else (0.0, 0.0)), time.monotonic()
                if cond == "hdrlog-paced":
                    res = run_wrk(env, ng.port, a.seconds, paced_conns, script="paced.lua", script_args=(1,))
                else:
                    res = run_wrk(env, ng.port, a.seconds, a.connections)
                c1, s1 = cpu_seconds(worker), ng.served()
                if cons is not None:
                    q1, t1 = sched_s(cons.pid), time.monotonic()
                    res["consumer_cpu_share"] = (q1[0] - q0[0]) / (t1 - t0)
                    res["consumer_runqueue_wait_share"] = (q1[1] - q0[1]) / (t1 - t0)
                res["served"] = served_between(s0, s1)
                res["nginx_cpu_us_per_req"] = (c1 - c0) * 1e6 / max(1, res["served"])
                res["loadavg_before"] = la0
                if cons is not None:
                    time.sleep(0.5)  # let the consumer drain what is in the ring
                    h1 = cons.cpu()
                    res.update(cons.stop())
                    res["consumer_cpu_s"] = h1 - h0
                    if isinstance(cons, Hdrlog):
                        msgs = res["captured_requests"] + res["captured_responses"]
                        res["consumer_cpu_us_per_msg"] = (h1 - h0) * 1e6 / max(1, msgs)
                        res["msgs_per_s"] = msgs / res["seconds"]
                        res["attach_s"] = cons.attach_s
                    else:
                        res["probe_hits_per_req"] = (res["probe_hits"] or 0) / max(1, res["served"])
                        if res.get("tracepoint_hits") is not None:
                            res["tracepoint_hits_per_req"] = res["tracepoint_hits"] / max(1, res["served"])
                res["loadavg_after"] = loadavg()
                if cond == "hdrlog-paced":
                    res["paced_connections"] = paced_conns
                    # aim the next round at 20k messages/s (10k requests/s): wrk's delay is whole ms
                    rate = res["rps"] * 2
                    if rate > 0 and abs(rate - 20000) > 1500:
                        paced_conns = max(1, round(paced_conns * 20000 / rate))
                runs[cond].append(res)
                extra = ""
                if "consumer_cpu_us_per_msg" in res:
                    extra = (f" consumer {res['consumer_cpu_us_per_msg']:.1f} µs/msg at "
                             f"{res['msgs_per_s']:.0f} msg/s, lost {res['lost_events']}")
                elif "probe_hits" in res:
                    extra = f" {res['probe_hits_per_req']:.2f} probe hits/req"
                log(f"throughput round {rnd + 1}/{a.rounds} {cond:12s} {res['rps']:8.0f} req/s, nginx "
                    f"{res['nginx_cpu_us_per_req']:.1f} µs/req{extra} (load {la0})")
    finally:
        ng.stop()
    base = median(r["rps"] for r in runs["none"]) if runs.get("none") else None
    base_cpu = median(r["nginx_cpu_us_per_req"] for r in runs["none"]) if runs.get("none") else None
    rows = []
    for cond, rs in runs.items():
        med = lambda k: median(r.get(k) for r in rs)  # noqa: E731
        probe = cond != "none"
        row = {"condition": cond, "rps": med("rps"), "ratio": med("rps") / base if base else None,
               "p50_ms": med("p50_ms"), "p99_ms": med("p99_ms"), "nginx_cpu_us_per_req": med("nginx_cpu_us_per_req"),
               "nginx_cpu_added_us": (med("nginx_cpu_us_per_req") - base_cpu) if base_cpu is not None else None,
               "consumer_cpu_us_per_msg": med("consumer_cpu_us_per_msg"), "msgs_per_s": med("msgs_per_s"),
               "completed": sum(r["requests"] for r in rs), "served": sum(r["served"] for r in rs),
               "captured_requests": sum(r.get("captured_requests", 0) for r in rs) if cond.startswith("hdrlog") else None,
               "captured_responses": sum(r.get("captured_responses", 0) for r in rs) if cond.startswith("hdrlog") else None,
               "lost_events": sum(r.get("lost_events") or 0 for r in rs) if cond.startswith("hdrlog") else None,
               "probe_hits_per_req": med("probe_hits_per_req"), "tracepoint_hits_per_req": med("tracepoint_hits_per_req"),
               "consumer_cpu_share": med("consumer_cpu_share"),
               "consumer_runqueue_wait_share": med("consumer_runqueue_wait_share"), "rounds": len(rs),
               "rps_all": [round(r["rps"]) for r in rs]}
        if not probe:
            row["ratio"] = 1.0
        if cond == "hdrlog-paced" and rs:
            near = min(rs, key=lambda r: abs(r["msgs_per_s"] - 20000))
            row["nearest_20k"] = {"msgs_per_s": near["msgs_per_s"], "consumer_cpu_us_per_msg": near["consumer_cpu_us_per_msg"],
                                  "paced_connections": near["paced_connections"], "lost_events": near["lost_events"]}
        rows.append(row)
    return {"setup": {"nginx": "1 worker pinned to CPU 0, TLS 1.3, keep-alive, return 200",
                      "wrk": f"1 thread, {a.connections} connections, CPU 1, {a.seconds}s per run",
                      "consumers": "pinned to CPU 0 (nginx's core)",
                      "paced": "wrk -s bench/wrk/paced.lua -- 1 (1 ms between a response and the next request)",
                      "wrk_libssl": env.wrk_libssl, "nginx_libssl": ng.libssl},
            "placement": placement, "rows": rows, "runs": runs}


def print_throughput(t: dict) -> None:
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    print(f"\n== throughput ({t['setup']['wrk']}; consumers on nginx's core; medians of {t['rows'][0]['rounds']} rounds)")
    print(f"{'condition':13s} {'req/s':>8s} {'ratio':>6s} {'p50ms':>6s} {'p99ms':>6s} {'nginx µs/req':>12s} "
          f"{'added':>6s} {'cons µs/msg':>11s} {'cons CPU/wait':>13s} {'msg/s':>7s} {'captured/served (wrk)':>24s} {'lost':>5s}")
    for r in t["rows"]:
        cap = "-"
        if r["captured_requests"] is not None:
            cap = f"{r['captured_requests']}/{r['served']} ({r['completed']})"
        elif r["probe_hits_per_req"] is not None:
            cap = f"{r['probe_hits_per_req']:.2f} hits/req"
        share = "-"
        if r["consumer_cpu_share"] is not None:
            share = f"{100 * r['consumer_cpu_share']:.0f}%/{100 * r['consumer_runqueue_wait_share']:.0f}%"
        print(f"{r['condition']:13s} {fmt(r['rps'], '8.0f')} {fmt(r['ratio'], '6.3f')} {fmt(r['p50_ms'], '6.2f')} "
              f"{fmt(r['p99_ms'], '6.2f')} {fmt(r['nginx_cpu_us_per_req'], '12.1f')} "
              f"{fmt(r['nginx_cpu_added_us'], '6.1f')} {fmt(r['consumer_cpu_us_per_msg'], '11.1f')} {share:>13s} "
              f"{fmt(r['msgs_per_s'], '7.0f')} {cap:>24s} {fmt(r['lost_events'], '5d')}")


# -- part 2: consumer ceiling ----------------------------------------------------------------------
# (label, wrk connections, wrk script, script args): rising load. Paced: 1 ms between a response and the
# next request on each connection; open-N: N connections as fast as nginx answers; pipeline-N: N requests
# per write (several requests per TLS read: fewer events per message).
CEILING_STEPS = [
    ("paced-16", 16, "paced.lua", (1,)),
    ("open-1", 1, None, ()),
    ("open-2", 2, None, ()),
    ("open-4", 4, None, ()),
    ("open-16", 16, None, ()),
    ("open-16-16m", 16, None, (), ["--ringbuf-mb", "16"]),  # a 16 MiB ring: more slack for scheduling hiccups
    ("pipeline-4", 16, "pipeline.lua", (4,)),
    ("pipeline-16", 16, "pipeline.lua", (16,)),
]
# beyond the consumer, on purpose, with one message per event so drops can be checked one for one:
# (label, connections, script, args, hdrlog arguments, hdrlog CPUs, nice)
BEYOND_STEPS = [
    ("starved", 16, None, (), [], "0", None),  # the consumer on CPU 0 with nginx and wrk, at normal priority
    ("ring-16k", 16, None, (), ["--ringbuf-pages", "4"], "1", "nice"),  # a 16 KiB ring buffer
]


def ceiling_step(env: Env, ng: Nginx, a, label, conns, script, sargs, extra=(), cpus="1", nice="nice") -> dict:
    la0 = loadavg()
    nice_v = a.ceiling_nice if nice == "nice" else None
    hd = Hdrlog(env, f"ceiling-{label}", [ng.master], cpus=cpus, extra=list(extra), nice=nice_v)
    s0, h0, n0, q0, t0 = ng.served(), hd.cpu(), ng.worker_cpu(), sched_s(hd.pid), time.monotonic()
    res = run_wrk(env, ng.port, a.ceiling_seconds, conns, cpus="0", script=script, script_args=sargs)
    h1, n1, q1, t1 = hd.cpu(), ng.worker_cpu(), sched_s(hd.pid), time.monotonic()
    served = served_between(s0, ng.served())
    time.sleep(0.5)
    h2 = hd.cpu()
    res.update(hd.stop())
    msgs = res["captured_requests"] + res["captured_responses"]
    lost = res["lost_events"] or 0
    res.update(label=label, connections=conns, script=script, script_args=list(sargs), hdrlog_args=list(extra),
               hdrlog_cpus=cpus, hdrlog_nice=nice_v, served=served, expected_msgs=2 * served, msgs=msgs,
               missing_msgs=2 * served - msgs, msgs_per_s=msgs / res["seconds"],
               served_msgs_per_s=2 * served / res["seconds"],
               consumer_cpu_share=(h1 - h0) / (t1 - t0), consumer_runqueue_wait_share=(q1[1] - q0[1]) / (t1 - t0),
               nginx_cpu_share=(n1 - n0) / (t1 - t0),
               consumer_cpu_us_per_msg=(h2 - h0) * 1e6 / max(1, msgs),
               events_per_msg=((res["events"] or 0) + lost) / max(1, 2 * served),
               # every event the probes produced is either emitted or counted lost; with one message per
               # data event the messages that did not arrive must equal the lost data events
               other_events=(res["events"] or 0) + lost - 2 * served if script != "pipeline.lua" else None,
               loss_records_match=(res["loss_record_events"] == lost),
               loadavg_before=la0, loadavg_after=loadavg())
    log(f"ceiling {label:12s} served {res['served_msgs_per_s']:6.0f} msg/s, captured {res['msgs_per_s']:6.0f} "
        f"msg/s; consumer {100 * res['consumer_cpu_share']:.0f}% CPU (+{100 * res['consumer_runqueue_wait_share']:.0f}% "
        f"waiting for it) {res['consumer_cpu_us_per_msg']:.1f} µs/msg; lost {lost} (loss records "
        f"{res['loss_record_events']}), missing msgs {res['missing_msgs']} (load {la0})")
    return res


def part_ceiling(env: Env, a) -> dict:
    ng = Nginx(env, "ceiling", workers=1, affinity="01")
    env.private_libssl(ng.libssl)
    steps, beyond = [], []
    try:
        run_wrk(env, ng.port, 1, 16, cpus="0")
        for st in CEILING_STEPS:
            steps.append(ceiling_step(env, ng, a, *st))
        if not a.no_beyond:
            for label, conns, script, sargs, extra, cpus, nice in BEYOND_STEPS:
                beyond.append(ceiling_step(env, ng, a, label, conns, script, sargs, extra, cpus, nice))
    finally:
        ng.stop()
    lossless = [s for s in steps if s["lost_events"] == 0 and s["missing_msgs"] <= 0]
    best = max(lossless, key=lambda s: s["msgs_per_s"]) if lossless else None
    lossy = [s for s in steps + beyond if s["lost_events"]]
    first_lossy = min((s for s in steps if s["lost_events"]), key=lambda s: s["served_msgs_per_s"], default=None)
    cost = median(s["consumer_cpu_us_per_msg"] for s in steps)
    return {"setup": {"nginx": "1 worker pinned to CPU 0", "wrk": "1 thread pinned to CPU 0 (with nginx)",
                      "hdrlog": f"pinned to CPU 1 at nice {a.ceiling_nice} (shielded from unrelated load), "
                                "default 4 MiB ring buffer, unless noted",
                      "seconds": a.ceiling_seconds},
            "steps": steps, "beyond": beyond,
            "max_lossless_msgs_per_s": best["msgs_per_s"] if best else None,
            "max_lossless_step": best["label"] if best else None,
            "max_lossless_consumer_cpu_share": best["consumer_cpu_share"] if best else None,
            "lowest_lossy_served_msgs_per_s": first_lossy["served_msgs_per_s"] if first_lossy else None,
            "lowest_lossy_step": first_lossy["label"] if first_lossy else None,
            "consumer_cpu_us_per_msg_median": cost,
            "one_core_limit_msgs_per_s": 1e6 / cost if cost else None,
            "max_served_msgs_per_s": max(s["served_msgs_per_s"] for s in steps),
            "drops_counted": {
                "loss_records_equal_summary": all(s["loss_records_match"] for s in steps + beyond),
                "steps_with_loss": len(lossy),
                # one message per event: missing messages minus lost events = lost non-message events (≤ 0)
                "missing_minus_lost": {s["label"]: s["missing_msgs"] - s["lost_events"] for s in lossy
                                       if s["script"] != "pipeline.lua"}}}


def print_ceiling(c: dict) -> None:
    print(f"\n== consumer ceiling ({c['setup']['nginx']}, wrk {c['setup']['wrk']}; hdrlog {c['setup']['hdrlog']}; "
          f"{c['setup']['seconds']}s per step)")
    print(f"{'step':12s} {'hdrlog':>16s} {'served msg/s':>12s} {'captured msg/s':>14s} {'cons CPU':>8s} {'rq wait':>7s} "
          f"{'µs/msg':>6s} {'ev/msg':>6s} {'lost(summary)':>13s} {'lost(loss recs)':>15s} {'missing msgs':>12s}")
    for s in c["steps"] + c["beyond"]:
        how = (" ".join(s["hdrlog_args"]).replace("--ringbuf-pages ", "pages=").replace("--ringbuf-mb ", "MiB=")
               or "4MiB") + f" cpu{s['hdrlog_cpus']}"
        print(f"{s['label']:12s} {how:>16s} {s['served_msgs_per_s']:12.0f} {s['msgs_per_s']:14.0f} "
              f"{100 * s['consumer_cpu_share']:7.0f}% {100 * s['consumer_runqueue_wait_share']:6.0f}% "
              f"{s['consumer_cpu_us_per_msg']:6.1f} {s['events_per_msg']:6.2f} {s['lost_events']:13d} "
              f"{s['loss_record_events']:15d} {s['missing_msgs']:12d}")
    d = c["drops_counted"]
    print(f"max lossless: {c['max_lossless_msgs_per_s'] or 0:.0f} msg/s ({c['max_lossless_step']}, consumer at "
          f"{100 * (c['max_lossless_consumer_cpu_share'] or 0):.0f}% of its core); first loss at "
          f"{c['lowest_lossy_served_msgs_per_s'] or 0:.0f} msg/s offered ({c['lowest_lossy_step']}); consumer "
          f"{c['consumer_cpu_us_per_msg_median']:.1f} µs/msg = {c['one_core_limit_msgs_per_s']:.0f} msg/s per core; "
          f"nginx served up to {c['max_served_msgs_per_s']:.0f} msg/s")
    print(f"drops: loss records = summary in every step: {d['loss_records_equal_summary']}; missing messages - lost "
          f"events (one message per event): {d['missing_minus_lost']}")


# -- part 3: RSS with many connections --------------------------------------------------------------
def part_rss(env: Env, a) -> dict:
    n = a.rss_conns
    want = n + 4096
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))  # nginx inherits it
    ng = Nginx(env, "rss", workers=1, affinity="01", worker_connections=n + 2048, rlimit_nofile=n + 4096,
               keepalive_timeout="600s")
    stats = env.tmp / "rss-stats.json"
    out: dict = {"connections": n, "loadavg_before": loadavg()}

    def tracker() -> dict:
        time.sleep(0.6)  # two dumps of the stats thread and at least one expire() scan
        return json.loads(stats.read_text())

    class Clients:
        """bench/many_conns.py in a.rss_procs processes (unpinned: a TLS handshake costs the Python client
        about three times what it costs nginx), `count` connections in all."""

        def __init__(self, count: int):
            k = max(1, min(a.rss_procs, count))
            self.ps = []
            for i in range(k):
                c = subprocess.Popen([PY, str(BENCH / "many_conns.py"), "--port", str(ng.port), "--conns",
                                      str(count // k + (i < count % k))], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
                env.procs.append(c)
                self.ps.append(c)
            t0 = time.monotonic()
            lines = [json.loads(c.stdout.readline()) for c in self.ps]
            self.opened = {"ok": sum(x["ok"] for x in lines), "errors": sum(x["errors"] for x in lines),
                           "first_errors": [e for x in lines for e in x["first_errors"]][:3],
                           "seconds": round(time.monotonic() - t0, 3), "processes": k}

        def close(self) -> dict:
            t0 = time.monotonic()
            for c in self.ps:
                c.stdin.write("close\n")
                c.stdin.flush()
            lines = [json.loads(c.stdout.readline()) for c in self.ps]
            for c in self.ps:
                c.wait(60)
            return {"closed": sum(x["closed"] for x in lines), "seconds": round(time.monotonic() - t0, 3)}

    def snapshot(name: str, hd: Hdrlog) -> None:
        tr = tracker()
        out[name] = {"rss_kb": rss_kb(hd.pid), "hwm_kb": hwm_kb(hd.pid), "anon_kb": rss_kb(hd.pid, "RssAnon"),
                     "file_kb": rss_kb(hd.pid, "RssFile"), "tracked_conns": tr["conns"], "fd_cache": tr["fds"],
                     "closed": tr["counts"]["closed"], "expired": tr["counts"]["expired"], "t": time.time()}
        log(f"rss {name:22s} hdrlog VmRSS {out[name]['rss_kb'] / 1024:6.1f} MiB, tracked connections "
            f"{tr['conns']}, closed {tr['counts']['closed']}, expired {tr['counts']['expired']}")

    try:
        # a) default idle timeout (300 s): 10k connections tracked, then closed
        hd = Hdrlog(env, "rss", [ng.master], cpus=None, instrumented=True,
                    env_extra={"HDRLOG_BENCH_STATS": str(stats)})
        snapshot("attached", hd)
        c = Clients(n)
        out["client_open"] = c.opened
        time.sleep(1.0)
        snapshot("open", hd)
        out["client_closed"] = c.close()
        wait_for(lambda: json.loads(stats.read_text())["conns"] < 100, 30, "tracker forgetting closed connections")
        snapshot("closed", hd)
        res = hd.stop()
        out["messages"] = res["messages"]
        out["lost_events"] = res["lost_events"]
        out["loss_records"] = res["loss_list"]
        # b) idle expiry: the tracker's timeout set to a.idle_s; connections stay open but idle
        stats.unlink()
        hd = Hdrlog(env, "rss-idle", [ng.master], cpus=None, instrumented=True,
                    env_extra={"HDRLOG_BENCH_STATS": str(stats), "HDRLOG_BENCH_IDLE_S": str(a.idle_s)})
        t_open = time.time()
        c = Clients(a.idle_conns)
        out["idle_client_open"] = c.opened
        snapshot("idle-open", hd)
        wait_for(lambda: json.loads(stats.read_text())["conns"] == 0, a.idle_s + 60, "idle expiry")
        out["idle_expired_after_s"] = round(time.time() - t_open, 1)
        snapshot("idle-expired", hd)
        c.close()
        time.sleep(1.0)
        snapshot("idle-closed", hd)
        hd.stop()
    finally:
        ng.stop()
    out["loadavg_after"] = loadavg()
    out["idle_timeout_s"] = a.idle_s
    out["rss_open_mb"] = out["open"]["rss_kb"] / 1024
    out["rss_added_mb"] = (out["open"]["rss_kb"] - out["attached"]["rss_kb"]) / 1024
    out["per_conn_kb"] = (out["open"]["rss_kb"] - out["attached"]["rss_kb"]) / max(1, out["open"]["tracked_conns"])
    return out


def print_rss(r: dict) -> None:
    print(f"\n== consumer RSS, {r['connections']} concurrent TLS connections (one request each), "
          f"client opened {r['client_open']['ok']} ({r['client_open']['errors']} errors) in {r['client_open']['seconds']}s")
    for k in ("attached", "open", "closed", "idle-open", "idle-expired", "idle-closed"):
        s = r.get(k)
        if s:
            print(f"{k:14s} VmRSS {s['rss_kb'] / 1024:7.1f} MiB (anon {s['anon_kb'] / 1024:5.1f}, file "
                  f"{s['file_kb'] / 1024:5.1f})  tracked connections {s['tracked_conns']:6d}  "
                  f"closed {s['closed']:6d}  expired {s['expired']:6d}")
    print(f"added with {r['open']['tracked_conns']} tracked: {r['rss_added_mb']:.1f} MiB ({r['per_conn_kb']:.2f} KiB per "
          f"connection); idle timeout {r['idle_timeout_s']}s: all expired {r.get('idle_expired_after_s')}s after opening")


# -- part 4: attach latency -----------------------------------------------------------------------
def time_attach(env: Env, pid: int, name: str, reps: int) -> dict:
    times = []
    for i in range(reps):
        la = loadavg()
        hd = Hdrlog(env, f"attach-{name}-{i}", [pid], cpus=None)
        times.append(hd.attach_s)
        hd.stop()
        log(f"attach {name}: {hd.attach_s:.3f}s (load {la})")
    # one more through the instrumented entry point, split into phases
    hd = Hdrlog(env, f"attach-{name}-phases", [pid], cpus=None, instrumented=True,
                env_extra={"HDRLOG_BENCH_PHASES": "1"})
    text = hd.stderr()
    phases = {m.group(1): float(m.group(2)) for m in re.finditer(r"bench-phase (\S+) ([\d.]+)", text)}
    phase_rss_kb = {m.group(1): int(m.group(2)) for m in re.finditer(r"bench-phase (\S+) \S+ rss_kb=(\d+)", text)}
    phase_rss_kb["attached"] = rss_kb(hd.pid)
    phases["attached-line"] = hd.attach_s
    attached_line = next((ln for ln in hd.stderr().splitlines() if "attached to" in ln), "")
    hd.stop()
    return {"seconds": times, "median_s": statistics.median(times), "phases": phases, "phase_rss_kb": phase_rss_kb,
            "attached_line": attached_line}


def part_attach(env: Env, a) -> dict:
    out = {"loadavg_before": loadavg()}
    ng = Nginx(env, "attach", workers=1, affinity="")
    try:
        out["nginx"] = time_attach(env, ng.master, "nginx", a.attach_reps)
    finally:
        ng.stop()
    if shutil.which("node"):
        node = subprocess.Popen(["node", "-e", "require('https');setInterval(()=>{},1000)"])
        env.procs.append(node)
        try:
            time.sleep(0.5)
            out["node"] = time_attach(env, node.pid, "node", a.attach_reps)
        finally:
            stop_proc(node, signal.SIGTERM, 10)
    out["loadavg_after"] = loadavg()
    return out


def print_attach(r: dict) -> None:
    print("\n== `attached` latency (start of `hdrlog attach` to its `attached` line)")
    for k, target in (("nginx", 1.0), ("node", 2.0)):
        if k in r:
            x = r[k]
            ph = x["phases"]
            print(f"{k:6s} median {x['median_s']:.2f}s (target {target:.0f}s) runs "
                  f"{', '.join(f'{t:.2f}' for t in x['seconds'])}; phases from process start: main "
                  f"{ph.get('main', 0):.2f}s, compile {ph.get('compile-start', 0):.2f}-{ph.get('compile-end', 0):.2f}s, "
                  f"attach from {ph.get('attach-start', 0):.2f}s")


# -- targets (issue 3) ------------------------------------------------------------------------------
def targets(rep: dict) -> list[dict]:
    out = []

    def add(name, measured, goal, met, by, note=""):
        out.append({"target": name, "measured": measured, "goal": goal, "met": met, "by": by, "note": note})

    t = rep.get("throughput")
    if t:
        rows = {r["condition"]: r for r in t["rows"]}
        h = rows.get("hdrlog")
        if h and h["nginx_cpu_added_us"] is not None:
            v = h["nginx_cpu_added_us"]
            add("nginx CPU added per request", f"{v:.1f} µs", "≤ 5 µs", v <= 5, f"{v - 5:+.1f} µs")
        if h:
            add("throughput ratio at saturation", f"{h['ratio']:.2f}", "≥ 0.35", h["ratio"] >= 0.35,
                f"{h['ratio'] - 0.35:+.2f}")
            add("zero loss at saturation", f"{h['lost_events']} lost events", "0", h["lost_events"] == 0,
                f"{h['lost_events']} events")
        p = rows.get("hdrlog-paced")
        if p and p.get("nearest_20k"):
            n = p["nearest_20k"]
            v = n["consumer_cpu_us_per_msg"]
            add("consumer CPU per message at 20k msg/s", f"{v:.1f} µs at {n['msgs_per_s']:.0f} msg/s", "≤ 8 µs",
                v <= 8, f"{v - 8:+.1f} µs", f"paced run nearest 20k msg/s; median of all paced runs "
                f"{p['consumer_cpu_us_per_msg']:.1f} µs")
    c = rep.get("ceiling")
    if c:
        v = c["max_lossless_msgs_per_s"] or 0
        add("lossless message rate (ceiling)", f"{v:.0f} msg/s", "≥ 50,000 msg/s", v >= 50000, f"{v - 50000:+.0f} msg/s",
            f"first loss at {c['lowest_lossy_served_msgs_per_s'] or 0:.0f} msg/s offered; "
            f"{c['consumer_cpu_us_per_msg_median']:.1f} µs/msg = {c['one_core_limit_msgs_per_s']:.0f} msg/s per core")
        d = c["drops_counted"]
        exact = d["loss_records_equal_summary"] and all(v <= 0 for v in d["missing_minus_lost"].values())
        add("drops counted beyond the ceiling", f"{d['steps_with_loss']} lossy steps", "loss records = summary = missing",
            exact, "exact" if exact else "not exact")
    a = rep.get("attach")
    if a:
        for k, goal in (("nginx", 1.0), ("node", 2.0)):
            if k in a:
                v = a[k]["median_s"]
                add(f"attached latency, {k}", f"{v:.2f} s", f"≤ {goal:.0f} s", v <= goal, f"{v - goal:+.2f} s")
    r = rep.get("rss")
    if r:
        v = r["open"]["rss_kb"] / 1024
        add(f"consumer RSS with {r['open']['tracked_conns']} connections tracked", f"{v:.0f} MiB", "≤ 150 MB",
            v * 1.048576 <= 150, f"{v * 1.048576 - 150:+.0f} MB", f"{r['attached']['rss_kb'] / 1024:.0f} MiB before "
            f"any connection, +{r['per_conn_kb']:.1f} KiB per connection")
        ok = r["closed"]["tracked_conns"] == 0 and r["idle-expired"]["tracked_conns"] == 0
        add("closed and idle connections forgotten", f"{r['closed']['tracked_conns']} left after close, "
            f"{r['idle-expired']['tracked_conns']} after idle timeout", "0", ok, "ok" if ok else "leak")
    return out


def print_targets(ts: list[dict]) -> None:
    print("\n== targets (issue 3)")
    for x in ts:
        print(f"{'met   ' if x['met'] else 'MISSED'} {x['target']:45s} {x['measured']:>28s}  goal {x['goal']:<24s} "
              f"{x['by']:>12s}  {x['note']}")


# -- main -------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts: {','.join(PARTS)}")
    ap.add_argument("--seconds", type=int, default=4, help="wrk seconds per throughput run (default 4)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved throughput rounds (default 3)")
    ap.add_argument("--connections", type=int, default=16, help="wrk connections, throughput (default 16)")
    ap.add_argument("--conditions", default=",".join(CONDITIONS), help="throughput conditions to run")
    ap.add_argument("--paced-connections", type=int, default=32,
                    help="wrk connections for hdrlog-paced's first round (then adjusted toward 20k msg/s)")
    ap.add_argument("--ceiling-seconds", type=int, default=3, help="wrk seconds per ceiling step (default 3)")
    ap.add_argument("--no-beyond", action="store_true", help="ceiling: skip the forced-loss steps")
    ap.add_argument("--ceiling-nice", type=int, default=-10,
                    help="ceiling: nice value of hdrlog on its own core (default -10; 0 for none)")
    ap.add_argument("--rss-conns", type=int, default=10000, help="concurrent connections for rss (default 10000)")
    ap.add_argument("--rss-procs", type=int, default=4, help="rss: client processes (default 4)")
    ap.add_argument("--idle-conns", type=int, default=2000, help="rss: connections for the idle-expiry check")
    ap.add_argument("--idle-s", type=float, default=5.0, help="rss: idle timeout for the expiry check (default 5)")
    ap.add_argument("--attach-reps", type=int, default=5, help="attach: runs per target (default 5)")
    ap.add_argument("--out", type=Path, default=OUT, help=f"directory for the JSON results (default {OUT})")
    a = ap.parse_args()
    parts = [p.strip() for p in a.only.split(",") if p.strip()]
    bad = set(parts) - set(PARTS)
    if bad:
        ap.error(f"unknown part(s) {', '.join(sorted(bad))}; choose from {', '.join(PARTS)}")
    a.conditions = [c.strip() for c in a.conditions.split(",") if c.strip()]
    if set(a.conditions) - set(CONDITIONS) or "none" not in a.conditions:
        ap.error(f"--conditions: choose from {', '.join(CONDITIONS)}, `none` included")
    if os.geteuid() != 0:
        raise SystemExit("the bench attaches probes: run it as root (sudo)")
    for tool in ("nginx", "wrk", "taskset") + (("bpftrace",) if "bpftrace" in a.conditions else ()):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not installed (make setup installs nginx-light, wrk and bpftrace)")
    out_dir = a.out
    out_dir.mkdir(parents=True, exist_ok=True)

    def on_term(signum, frame):
        raise SystemExit(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    env = Env()
    t_start = time.monotonic()
    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "args": vars(a),
              "machine": {"kernel": platform.release(), "cpus": os.cpu_count(),
                          "cpu_model": next((ln.split(":", 1)[1].strip() for ln in
                                             Path("/proc/cpuinfo").read_text().splitlines()
                                             if ln.startswith("model name")), None),
                          "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)},
              "loadavg_before": loadavg(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "code": code_state()}
    printers = {"throughput": print_throughput, "ceiling": print_ceiling, "rss": print_rss, "attach": print_attach}
    funcs = {"throughput": part_throughput, "ceiling": part_ceiling, "rss": part_rss, "attach": part_attach}
    try:
        for part in PARTS:
            if part not in parts:
                continue
            la0, t0 = loadavg(), time.monotonic()
            log(f"{part}: start (load {la0})")
            res = funcs[part](env, a)
            res["loadavg_before_part"], res["loadavg_after_part"] = la0, loadavg()
            res["part_seconds"] = round(time.monotonic() - t0, 1)
            report[part] = res
            (out_dir / f"{part}.json").write_text(json.dumps(res, indent=1, default=str))
    finally:
        env.cleanup()
    report["loadavg_after"] = loadavg()
    report["seconds"] = round(time.monotonic() - t_start, 1)
    report["targets"] = targets(report)
    (out_dir / "nginx_bench.json").write_text(json.dumps(report, indent=1, default=str))
    print(f"\nhdrlog bench: {report['machine']['cpus']} CPUs ({report['machine']['cpu_model']}), kernel "
          f"{report['machine']['kernel']}; load average before {report['loadavg_before']}, after "
          f"{report['loadavg_after']}; {report['seconds']:.0f}s")
    for part in PARTS:
        if part in report:
            printers[part](report[part])
    print_targets(report["targets"])
    print(f"\nresults: {out_dir}/nginx_bench.json and {', '.join(p + '.json' for p in PARTS if p in report)}")


if __name__ == "__main__":
    main()
