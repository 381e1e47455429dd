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
import os
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
    ap.add_argument("--kinds", default="entry,return,ret-insn",
                    help="which of hdrlog's sites to attach, by kind (entry, return = uretprobe, ret-insn): "
                         "to split the traps' cost between function entries and returns")
    ap.add_argument("--no-tracepoints", action="store_true", help="leave the two socket tracepoints out")
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from bcc import BPF

    from hdrlog import discover, placement, uprobelink
    from hdrlog.elfsyms import ElfFile
    from hdrlog.tlslibs import REGISTRY

    def refused(path: str, offset: int, ret: bool, pid: int) -> bool:
        """The kernel refuses this offset (EINVAL: a uprobe another tool leaked there; hdrlog's loader then
        probes the function at its entry instead, and so do we)."""
        if uprobelink.mode() != "multi":
            return False
        fd = uprobelink._load_trivial(uprobelink.BPF_TRACE_UPROBE_MULTI)[0]
        try:
            uprobelink.close_all([uprobelink.attach_multi(fd, path, [offset], pid, ret)])
            return False
        except uprobelink.AttachError:
            return True
        finally:
            os.close(fd)

    plans = []  # (pid, path, site)
    for pid in a.pid:
        for t in discover.find_tls(pid):
            lib = REGISTRY.get(t.kind)
            if lib is None:
                continue
            path = t.mapping.host_path
            with ElfFile(path) as elf:
                sites = placement.plan(elf, lib, t.symbols, path=path, mode=a.placement)
                bad = {n for s in sites if refused(path, s.offset, s.kind == "return", pid)
                       for n in s.symbol.split("+")}
                if bad:
                    entry = placement.plan(elf, lib, t.symbols, path=path, mode="entry")
                    sites = [s for s in sites if not bad & set(s.symbol.split("+"))] + \
                            [s for s in entry if s.symbol in bad]
                    sys.stderr.write(f"sites_count: {', '.join(sorted(bad))} refused where placed; at entry instead\n")
            kinds = set(a.kinds.split(","))
            plans += [(pid, path, site) for site in sites if site.kind in kinds]
    if not plans:
        sys.stderr.write("sites_count: no TLS library found\n")
        return 2
    keys = sorted({(s.kind, s.where) for _, _, s in plans})
    text = "\n".join(PROG.replace("count_site", f"count_site_{i}").replace("BPF_ARRAY(hits, u64, 64);", "")
                     .replace("SITE", str(i)) for i in range(len(keys)))
    b = BPF(text="BPF_ARRAY(hits, u64, 64);\n" + text + ("" if a.no_tracepoints else TP))
    # attached exactly as hdrlog's loader does: uprobe_multi links (one per program, process, file and
    # entry/return), or one perf event per uprobe where the kernel has no uprobe_multi
    mode = uprobelink.mode()
    attach_type = uprobelink.BPF_TRACE_UPROBE_MULTI if mode == "multi" else -1
    groups: dict[tuple, list[int]] = {}
    for pid, path, site in plans:
        i = keys.index((site.kind, site.where))
        groups.setdefault((i, pid, path, site.kind == "return"), []).append(site.offset)
    fds = []
    for (i, pid, path, ret), offsets in groups.items():
        fn = b.load_func(f"count_site_{i}".encode(), BPF.KPROBE, attach_type=attach_type)
        try:
            if mode == "multi":
                fds.append(uprobelink.attach_multi(fn.fd, path, sorted(set(offsets)), pid, ret))
            else:
                fds += [uprobelink.attach_perf(fn.fd, path, off, pid, ret) for off in sorted(set(offsets))]
        except uprobelink.AttachError as exc:
            sys.stderr.write(f"sites_count: {exc}\n")
            uprobelink.close_all(fds)
            return 2
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait()
    hits = {f"{k}@{w}": int(b["hits"][i].value) for i, (k, w) in enumerate(keys)}
    tp_hits = 0 if a.no_tracepoints else int(b["tp_hits"][0].value)
    print(json.dumps({"hits": hits, "tracepoint_hits": tp_hits,
                      "sites": [f"{s.kind} {s.where} ({s.insn}; {s.cost})" for _, _, s in plans]}), flush=True)
    uprobelink.close_all(fds)
    b.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
