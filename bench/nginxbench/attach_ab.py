#!/usr/bin/env python3
"""`attached` latency of two (or more) hdrlog trees, interleaved: the machine's speed drifts, so only runs
taken alternately say which tree is faster.

  sudo .venv/bin/python bench/nginxbench/attach_ab.py --trees base=/tmp/old/src,cur=src [--targets nginx,node,go] [--reps 7]

Each tree is a src/ directory put first on PYTHONPATH of `python -m hdrlog attach` (its probes/ must sit next
to it, as in a checkout). Targets: nginx (master + 1 worker, libssl), node (OpenSSL in the executable) and
Debian's caddy (a stripped go1.19 binary). Per run: seconds from just before the process is started to its
`attached` line (read from a pipe, no polling) and the CPU seconds it had used by then. The order of the trees
flips every round; the load average is printed with every run. Prints medians and the paired differences.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/, for nginxbench when run as a script

from nginxbench.attach import start_caddy  # noqa: E402
from nginxbench.common import CLK, PY, Env, loadavg, stop_proc  # noqa: E402
from nginxbench.procs import Nginx  # noqa: E402


def attach_once(src: str, pid: int) -> tuple[float, float]:
    """(seconds to the attached line, CPU seconds used by then) of one `hdrlog attach` from tree `src`."""
    env = dict(os.environ, PYTHONPATH=src) if src else dict(os.environ)
    t0 = time.monotonic()
    p = subprocess.Popen([PY, "-m", "hdrlog", "attach", "--output", "/dev/null", "--pid", str(pid)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
    seen = b""
    took = cpu = None
    for line in p.stderr:
        seen += line
        if b"attached to" in line:
            took = time.monotonic() - t0
            fields = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / CLK
            break
    p.send_signal(signal.SIGINT)
    rest = p.communicate(timeout=60)[1]
    if took is None:
        raise SystemExit(f"hdrlog from {src or 'the installed tree'} did not attach: {(seen + rest).decode()}")
    return took, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trees", required=True, help="NAME=SRC_DIR,... (an empty SRC_DIR: the installed hdrlog)")
    ap.add_argument("--targets", default="nginx,node,go")
    ap.add_argument("--reps", type=int, default=7)
    a = ap.parse_args()
    trees = [t.split("=", 1) for t in a.trees.split(",")]
    targets = a.targets.split(",")
    env = Env()
    pids: dict[str, int] = {}
    nginx = None
    try:
        if "nginx" in targets:
            nginx = Nginx(env, "ab", workers=1, affinity="")
            pids["nginx"] = nginx.master
        if "node" in targets:
            node = subprocess.Popen(["node", "-e", "require('https');setInterval(()=>{},1000)"])
            env.procs.append(node)
            pids["node"] = node.pid
        if "go" in targets:
            caddy = start_caddy(env)
            if caddy is None:
                raise SystemExit("caddy is not installed")
            pids["go"] = caddy.pid
        time.sleep(0.5)
        res: dict[tuple[str, str], list[tuple[float, float]]] = {(t, n): [] for t in targets for n, _ in trees}
        for i in range(a.reps):
            for t in targets:
                for name, src in (trees if i % 2 == 0 else trees[::-1]):
                    la = loadavg()
                    res[(t, name)].append(attach_once(src, pids[t]))
                    took, cpu = res[(t, name)][-1]
                    print(f"{t:6s} {name:8s} {took:.3f} s (cpu {cpu:.2f} s)  load {la}", flush=True)
        print("== medians (seconds to the attached line; CPU seconds by then)")
        for (t, name), xs in res.items():
            print(f"{t:6s} {name:8s} {statistics.median(x for x, _ in xs):.3f} s  cpu {statistics.median(c for _, c in xs):.2f} s"
                  f"  runs {' '.join(f'{x:.2f}' for x, _ in xs)}")
        if len(trees) == 2:
            (a_name, _), (b_name, _) = trees
            for t in targets:
                d = [b[0] - x[0] for x, b in zip(res[(t, a_name)], res[(t, b_name)])]
                print(f"{t:6s} paired {b_name}-{a_name}: median {statistics.median(d):+.3f} s  {' '.join(f'{x:+.2f}' for x in d)}")
        print(f"load average at the end: {loadavg()}")
    finally:
        if nginx is not None:
            nginx.stop()
        for p in env.procs:
            stop_proc(p, signal.SIGTERM, 10)
        env.cleanup()


if __name__ == "__main__":
    main()
