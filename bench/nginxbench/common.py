"""Shared helpers of the nginx bench: paths, /proc readers, waiting and stopping processes, the environment
(certificate, wrk's private libssl)."""

from __future__ import annotations

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

ROOT = Path(__file__).resolve().parent.parent.parent  # bench/nginxbench/common.py -> the checkout
BENCH = ROOT / "bench"
OUT = BENCH / "out"
CLK = os.sysconf("SC_CLK_TCK")
PARTS = ("throughput", "ceiling", "rss", "attach")
CONDITIONS = ("none", "bpftrace", "hdrlog-entry", "hdrlog-functions", "hdrlog", "sites-count", "hdrlog-paced",
              "hdrlog-apart")
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
