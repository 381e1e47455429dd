#!/usr/bin/env python3
"""hdrlog's probe footprint with empty programs: count-only BPF at exactly the sites hdrlog uses (bench use).

  python bench/sites_count.py --pid PID [--pid PID ...] [--placement auto|entry]

For every process, finds its TLS library the way `hdrlog attach` does (hdrlog.discover), plans the sites
with hdrlog.placement (same uprobes, uretprobes and offsets), and attaches one program that only counts,
per process like hdrlog; plus the two socket tracepoints hdrlog uses, counting too. Prints "ready" when
everything is attached, and on SIGINT/SIGTERM one JSON line {"hits": {site: n}, "tracepoint_hits": n}.
The difference between this and hdrlog on the same load is what hdrlog's BPF programs (and its consumer)
add on top of the traps themselves.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROG = r"""
BPF_ARRAY(hits, u64, 64);
int count_site(struct pt_regs *ctx) {
    u32 k = SITE;
    u64 *v = hits.lookup(&k);
    if (v) __sync_fetch_and_add(v, 1);
    return 0;
}
"""

TP = r"""
BPF_ARRAY(tp_hits, u64, 1);
static inline void tp_count(void) {
    u32 k = 0;
    u64 *v = tp_hits.lookup(&k);
    if (v) __sync_fetch_and_add(v, 1);
}
TRACEPOINT_PROBE(sock, sock_recv_length) { tp_count(); return 0; }
TRACEPOINT_PROBE(sock, sock_send_length) { tp_count(); return 0; }
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pid", type=int, action="append", required=True)
    ap.add_argument("--placement", choices=("auto", "entry"), default="auto")
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from bcc import BPF, libbcc

    from hdrlog import discover, placement
    from hdrlog.elfsyms import ElfFile
    from hdrlog.tlslibs import REGISTRY

    plans = []  # (pid, path, site)
    for pid in a.pid:
        for t in discover.find_tls(pid):
            lib = REGISTRY.get(t.kind)
            if lib is None:
                continue
            with ElfFile(t.mapping.host_path) as elf:
                for site in placement.plan(elf, lib, t.symbols, path=t.mapping.host_path, mode=a.placement):
                    plans.append((pid, t.mapping.host_path, site))
    if not plans:
        sys.stderr.write("sites_count: no TLS library found\n")
        return 2
    keys = sorted({(s.kind, s.where) for _, _, s in plans})
    text = "\n".join(PROG.replace("count_site", f"count_site_{i}").replace("BPF_ARRAY(hits, u64, 64);", "")
                     .replace("SITE", str(i)) for i in range(len(keys)))
    b = BPF(text="BPF_ARRAY(hits, u64, 64);\n" + text + TP)
    fds = []
    for pid, path, site in plans:
        i = keys.index((site.kind, site.where))
        fn = b.load_func(f"count_site_{i}".encode(), BPF.KPROBE)
        ev = b._get_uprobe_evname(b"r" if site.kind == "return" else b"p", path.encode(), site.offset, pid)
        fd = libbcc.lib.bpf_attach_uprobe(fn.fd, 1 if site.kind == "return" else 0, ev, path.encode(),
                                          site.offset, pid)
        if fd < 0:
            sys.stderr.write(f"sites_count: cannot attach {site.kind} at {site.where} in {path} for {pid}\n")
            return 2
        b._add_uprobe_fd(ev, fd)
        fds.append(ev)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait()
    hits = {f"{k}@{w}": int(b["hits"][i].value) for i, (k, w) in enumerate(keys)}
    print(json.dumps({"hits": hits, "tracepoint_hits": int(b["tp_hits"][0].value),
                      "sites": [f"{s.kind} {s.where} ({s.insn}; {s.cost})" for _, _, s in plans]}), flush=True)
    b.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
