#!/usr/bin/env python3
"""What hdrlog's socket tracepoint programs add to one send()+recv() pair, for one or more probes/ trees.

  python bench/sock_tp_cost.py {traced|untraced} NAME=DIR [NAME=DIR ...] [--rounds R] [--iterations N]

This process (pinned to CPU 1) sends one byte over loopback TCP and receives it, N times per run, under:
no probes, then each tree's socket tracepoints only (compiled by hdrlog's loader from DIR, as in
bench/bpf_prog_cost.py), rounds interleaved. `traced`: this process is in the probes' targets (a traced
thread's path outside TLS calls: the receive hint); `untraced`: it is not (every other process's path).
Prints each tree's thread CPU ns per pair and the median of its paired differences to `none`.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bpf_prog_cost as B  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("traced", "untraced"))
    ap.add_argument("tree", nargs="+", help="NAME=DIR")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iterations", type=int, default=100_000)
    a = ap.parse_args()
    trees = [B.Tree(n, Path(d)) for n, d in (t.split("=", 1) for t in a.tree)]
    os.sched_setaffinity(0, {1})
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    c = socket.create_connection(srv.getsockname())
    s, _ = srv.accept()

    def run() -> float:
        t0 = time.thread_time_ns()
        for _ in range(a.iterations):
            c.send(b"x")
            s.recv(16)
        return (time.thread_time_ns() - t0) / a.iterations

    res: dict[str, list[float]] = {k: [] for k in ["none"] + [t.name for t in trees]}
    for _ in range(a.rounds):
        res["none"].append(run())
        for t in trees:
            for tp in t.tps:
                t.ps.bpf.attach_tracepoint(tp=tp.encode(), fn_name=f"tracepoint__{tp.replace(':', '__')}".encode())
            for tp in t.raw:
                t.ps.bpf.attach_raw_tracepoint(tp=tp.encode(), fn_name=f"raw_tracepoint__{tp}".encode())
            if a.mode == "traced":
                t.ps._target(os.getpid(), True)
            res[t.name].append(run())
            if a.mode == "traced":
                t.ps._target(os.getpid(), False)
            t._tp_detach()
    for k, v in res.items():
        d = [x - y for x, y in zip(v, res["none"])]
        print(f"{k:10s} {statistics.median(v):7.0f} ns per send+recv" +
              ("" if k == "none" else f"   added {statistics.median(d):+.0f} (paired median)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
