#!/usr/bin/env python3
"""What the uprobe traps alone cost per TLS call, split between function entries and returns.

  python bench/trap_cost.py [--rounds R] [--iterations N] [--nginx] [--seconds S]

Count-only programs (bench/sites_count.py) at exactly hdrlog's sites, under four conditions interleaved
round by round: none, entry sites only, return sites only (uretprobes and RET-instruction uprobes), both.
Default target: bench/tls_call_cost.py's child (Python ssl over memory BIOs: no sockets, 4 TLS calls per
iteration), CPU µs per TLS call. --nginx: one nginx worker on CPU 0 loaded by wrk on CPU 1, the worker's
CPU µs per request (schedstat). Printed: medians, and each condition's paired difference to `none`.
Also says whether the kernel returns from uretprobes through the uretprobe syscall (Linux 6.11+, x86-64)
or an int3: /proc/kallsyms has __x64_sys_uretprobe, and the child's [uprobes] mapping is checked.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "src"))

from tls_call_cost import CHILD, PY, stop, wait_ready  # noqa: E402

CONDITIONS = {"none": None, "entry": "entry", "return": "return,ret-insn", "both": "entry,return,ret-insn"}


def uretprobe_syscall() -> bool:
    with open("/proc/kallsyms") as f:
        return any(line.rstrip().endswith(" __x64_sys_uretprobe") for line in f)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=30_000)
    ap.add_argument("--nginx", action="store_true")
    ap.add_argument("--seconds", type=int, default=3)
    a = ap.parse_args()
    env = ng = child = None
    if a.nginx:
        from nginxbench.common import Env
        from nginxbench.procs import Nginx

        env = Env()
        ng = Nginx(env, "trapcost", workers=1, affinity="01")
        env.private_libssl(ng.libssl)
        pid = ng.workers[0]

        def run() -> float:
            c0, r0 = int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]), ng.served()
            subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c16", f"-d{a.seconds}s",
                            f"https://127.0.0.1:{ng.port}/"], capture_output=True, env=env.wrk_env, check=True)
            c1, r1 = int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]), ng.served()
            return (c1 - c0) / (r1 - r0 - 1) / 1e3
        unit = "µs per nginx request"
    else:
        from hdrlog.demo.certs import make_cert

        cert, key = make_cert(Path(tempfile.mkdtemp(prefix="hdrlog-trapcost-")))
        child = subprocess.Popen([PY, "-c", CHILD, str(cert), str(key)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        wait_ready(child, "the TLS child")
        pid = child.pid

        def run() -> float:
            child.stdin.write(f"{a.iterations}\n")
            child.stdin.flush()
            return float(child.stdout.readline()) / (a.iterations * 4) * 1e6
        unit = "µs per TLS call"
    res: dict[str, list[float]] = {k: [] for k in CONDITIONS}
    try:
        for rnd in range(a.rounds):
            order = list(CONDITIONS) if rnd % 2 == 0 else list(CONDITIONS)[::-1]
            for name in order:
                kinds = CONDITIONS[name]
                p = None
                if kinds:
                    p = subprocess.Popen([PY, str(ROOT / "bench/sites_count.py"), "--pid", str(pid), "--kinds", kinds,
                                          "--no-tracepoints"], stdout=subprocess.PIPE, text=True)
                    wait_ready(p, "sites_count")
                    time.sleep(0.2)
                res[name].append(run())
                if p:
                    stop(p)
            print(f"round {rnd}: " + "  ".join(f"{k} {v[-1]:.2f}" for k, v in res.items()), flush=True)
    finally:
        if child:
            child.kill()
        if ng:
            ng.stop()
            env.cleanup()
    print(f"\nmedians of {a.rounds} rounds, {unit} (kernel uretprobe syscall: "
          f"{'yes' if uretprobe_syscall() else 'no (int3 on return)'}):")
    for k, v in res.items():
        d = [x - y for x, y in zip(v, res["none"])]
        print(f"  {k:7s} {statistics.median(v):6.2f}" + ("" if k == "none" else
                                                        f"   added {statistics.median(d):+.2f} (paired)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
