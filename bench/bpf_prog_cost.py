#!/usr/bin/env python3
"""What each of hdrlog's BPF programs costs per nginx request, for one or more probes/ trees, A/B interleaved.

  python bench/bpf_prog_cost.py [--tree NAME=DIR ...] [--rounds R] [--seconds S] [--conns C] [--none]

Starts nginx (one worker on CPU 0, TLS 1.3, `return 200`), and for every round attaches each tree's
programs in turn (compiled once by hdrlog's own loader from DIR instead of probes/, default: this
checkout's probes/ as "cur") to the worker, runs wrk on CPU 1 for S seconds, and reads with
kernel.bpf_stats_enabled=1 every program's run count and run time. Printed per tree: each program's runs
per request and ns per run (medians over rounds), the programs' total ns per request, and the worker's
CPU µs per request (schedstat); with --none also a round without any probe, and every tree's CPU added
per request as the median of its paired per-round differences to that round's `none`.
The consumer is a no-op drain of the ring buffer in this process (pinned to CPU 1): what is measured is
the kernel side. Tracepoint runs are machine-wide (wrk's socket I/O is in them too). Needs root and bcc.
"""

from __future__ import annotations

import argparse
import ctypes as ct
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "src"))

from nginxbench.common import Env  # noqa: E402
from nginxbench.procs import Nginx  # noqa: E402

TPS = ("sock:sock_recv_length", "sock:sock_send_length", "sched:sched_process_fork")
RAW_TPS = ("sock_recv_length", "sock_send_length")


def prog_stats() -> dict[int, tuple[str, int, int]]:
    out = json.loads(subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True).stdout)
    return {p["id"]: (p.get("name", "?"), p.get("run_cnt", 0), p.get("run_time_ns", 0)) for p in out}


def sched_ns(pid: int) -> int:
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


class Tree:
    """One probes/ directory compiled by hdrlog's loader; its tracepoints attached only while measured."""

    def __init__(self, name: str, pdir: Path):
        from hdrlog import loader
        from hdrlog.tlslibs import REGISTRY

        pdir = pdir.resolve()  # bcc crashed on a relative include directory
        self.name, self.dir = name, pdir
        saved = loader.probes_dir
        loader.probes_dir = lambda: pdir
        try:
            self.ps = loader.ProbeSet([REGISTRY["openssl"]])
        finally:
            loader.probes_dir = saved
        self.tps = [t for t in TPS if f"tracepoint__{t.replace(':', '__')}".encode() in self.ps.bpf.funcs]
        try:
            self.ps.bpf["target_slots"]
        except KeyError:  # a tree from before the target_slots filter: its targets alone
            def target(pid, on, bpf=self.ps.bpf):
                if on:
                    bpf["targets"][ct.c_uint32(pid)] = ct.c_uint8(1)
                elif ct.c_uint32(pid) in bpf["targets"]:
                    del bpf["targets"][ct.c_uint32(pid)]
            self.ps._target = target
        self.raw = [t for t in RAW_TPS if f"raw_tracepoint__{t}".encode() in self.ps.bpf.funcs]
        self._tp_detach()
        self.events = 0
        self.ps.open(self._count)

    def _count(self, raw) -> None:
        self.events += 1

    def attach(self, pid: int) -> None:
        from hdrlog import discover
        from hdrlog.tlslibs import REGISTRY

        for t in self.tps:
            self.ps.bpf.attach_tracepoint(tp=t.encode(), fn_name=f"tracepoint__{t.replace(':', '__')}".encode())
        for t in self.raw:
            self.ps.bpf.attach_raw_tracepoint(tp=t.encode(), fn_name=f"raw_tracepoint__{t}".encode())
        for t in discover.find_tls(pid):
            if t.kind == "openssl":
                self.ps.attach(pid, REGISTRY["openssl"], t.mapping.host_path, t.symbols)

    def detach(self, pid: int) -> None:
        self.ps.detach(pid)
        self._tp_detach()
        self.ps.drain()

    def _tp_detach(self) -> None:
        for t in self.tps:
            self.ps.bpf.detach_tracepoint(t.encode())
        for t in self.raw:
            self.ps.bpf.detach_raw_tracepoint(tp=t.encode())

    def prog_ids(self) -> set[int]:
        ids = set()
        for fn in self.ps.bpf.funcs.values():
            for line in Path(f"/proc/self/fdinfo/{fn.fd}").read_text().splitlines():
                if line.startswith("prog_id:"):
                    ids.add(int(line.split()[1]))
        return ids


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", action="append", default=[], help="NAME=DIR: a probes/ directory to measure")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--none", action="store_true", help="also a round without probes (CPU added per request)")
    a = ap.parse_args()
    trees_arg = a.tree or [f"cur={ROOT / 'probes'}"]
    os.sched_setaffinity(0, {1})
    env = Env()
    ng = Nginx(env, "progcost", workers=1, affinity="01")
    env.private_libssl(ng.libssl)
    worker = ng.workers[0]
    trees = [Tree(*(lambda n, d: (n, Path(d)))(*t.split("=", 1))) for t in trees_arg]
    stop = threading.Event()

    def drain():
        while not stop.is_set():
            for t in trees:
                t.ps.poll(0)
            time.sleep(0.02)

    th = threading.Thread(target=drain, daemon=True)
    th.start()
    names = (["none"] if a.none else []) + [t.name for t in trees]
    cpu: dict[str, list[float]] = {n: [] for n in names}
    progs: dict[str, list[dict[str, tuple[float, float]]]] = {t.name: [] for t in trees}
    ids: dict[str, set[int]] = {}
    # bpf_stats' own cost per run (two sched_clock reads, a paravirt clock on a KVM guest): an empty program
    # on the same raw tracepoint, attached throughout; its ns/run is what every program's figure includes
    from bcc import BPF

    floor = BPF(text=b"RAW_TRACEPOINT_PROBE(sock_recv_length) { return 0; }")
    floor_ids = set()
    for fn in floor.funcs.values():
        for line in Path(f"/proc/self/fdinfo/{fn.fd}").read_text().splitlines():
            if line.startswith("prog_id:"):
                floor_ids.add(int(line.split()[1]))
    floor_ns: list[float] = []
    bpf_stats = Path("/proc/sys/kernel/bpf_stats_enabled")
    old = bpf_stats.read_text().strip()
    bpf_stats.write_text("1")
    try:
        for rnd in range(a.rounds):
            order = names if rnd % 2 == 0 else names[::-1]
            line = []
            for n in order:
                tree = next((t for t in trees if t.name == n), None)
                if tree:
                    tree.attach(worker)
                    ids[n] = tree.prog_ids()
                time.sleep(0.3)
                s0, c0, r0 = prog_stats(), sched_ns(worker), ng.served()
                w = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{a.conns}", f"-d{a.seconds}s",
                                f"https://127.0.0.1:{ng.port}/"], capture_output=True, text=True, env=env.wrk_env)
                if w.returncode != 0 or "requests in" not in w.stdout:
                    raise SystemExit(f"wrk failed: {w.stderr}{w.stdout}")
                s1, c1, r1 = prog_stats(), sched_ns(worker), ng.served()
                if tree:
                    tree.detach(worker)
                req = r1 - r0 - 1
                cpu[n].append((c1 - c0) / req / 1e3)
                line.append(f"{n} {cpu[n][-1]:.2f}")
                if tree:
                    per = {}
                    for pid_, (pname, rc, rt) in s1.items():
                        if pid_ not in ids[n] or pid_ not in s0:
                            continue
                        drc, drt = rc - s0[pid_][1], rt - s0[pid_][2]
                        if drc:
                            per[pname] = (drc / req, drt / drc)
                    progs[n].append(per)
                fc = sum(s1[i][1] - s0[i][1] for i in floor_ids if i in s0 and i in s1)
                if fc:
                    floor_ns.append(sum(s1[i][2] - s0[i][2] for i in floor_ids if i in s0 and i in s1) / fc)
            print(f"round {rnd}: nginx µs/req " + "  ".join(line), flush=True)
    finally:
        bpf_stats.write_text(old)
        stop.set()
        th.join()
        ng.stop()
        env.cleanup()
    if floor_ns:
        print(f"\nbpf_stats floor: an empty program {statistics.median(floor_ns):.0f} ns/run (included in every "
              f"ns/run below)")
    for t in trees:
        rows = progs[t.name]
        pn = sorted({p for r in rows for p in r})
        print(f"\n{t.name} ({t.dir}): nginx {statistics.median(cpu[t.name]):.2f} µs/req (median of {a.rounds})")
        total = []
        for r in rows:
            total.append(sum(v[0] * v[1] for v in r.values()))
        for p in pn:
            runs = statistics.median(r[p][0] for r in rows if p in r)
            ns = statistics.median(r[p][1] for r in rows if p in r)
            print(f"  {p:40s} {runs:5.2f} runs/req {ns:7.0f} ns/run")
        print(f"  programs total {statistics.median(total):.0f} ns/req (tracepoints machine-wide)")
        if a.none:
            d = [x - y for x, y in zip(cpu[t.name], cpu["none"])]
            print(f"  nginx CPU added {statistics.median(d):+.2f} µs/req (median of paired differences "
                  f"{', '.join(f'{x:+.2f}' for x in d)})")
    if len(trees) > 1:
        base = trees[0].name
        for t in trees[1:]:
            d = [x - y for x, y in zip(cpu[t.name], cpu[base])]
            tb = [sum(v[0] * v[1] for v in r.values()) for r in progs[base]]
            tt = [sum(v[0] * v[1] for v in r.values()) for r in progs[t.name]]
            print(f"\n{t.name} - {base}: nginx {statistics.median(d):+.2f} µs/req (paired rounds), programs "
                  f"{statistics.median([x - y for x, y in zip(tt, tb)]):+.0f} ns/req")
    return 0


if __name__ == "__main__":
    sys.exit(main())
