#!/usr/bin/env python3
"""Does hdrlog's ring reader lose events when nothing is full? A/B check of how it publishes consumer_pos.

  sudo .venv/bin/python bench/ringbuf_publish_check.py [--seconds 8] [--rounds 2] [--pages 1024]

A trivial producer (a tracepoint on getppid(), 96-byte records, ~19k/s from a process on CPU 0) writes
into a BPF ring buffer of --pages pages; hdrlog.ringbuf.RingReader consumes it on CPU 1, as is
with the consumer position published byte by byte as its first version did ("struct.pack_into") and as
it does now, by one 8-byte store through a native memoryview ("8-byte store").
Records the kernel refused are counted in the BPF program. CPython's struct.pack_into first zeroes the
destination (s_pack_internal: memset) and then writes the bytes, so the kernel can read consumer_pos
as 0 for an instant and refuse a reservation as if the ring were full, once more than the ring's size has
been produced in total. Prints one line per run and what was dropped.
"""

from __future__ import annotations

import argparse
import ctypes as ct
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROG = r"""
struct ev { u64 a[12]; };
BPF_RINGBUF_OUTPUT(events, PAGES);
BPF_PERCPU_ARRAY(st, u64, 3);
BPF_PERCPU_ARRAY(scratch, struct ev, 1);
TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
    int z = 0, one = 1, two = 2;
    if (bpf_get_current_pid_tgid() >> 32 != GEN_PID) return 0;
    struct ev *e = scratch.lookup(&z);
    if (!e) return 0;
    e->a[0] = bpf_ktime_get_ns();
    u64 flags = 1, *w = st.lookup(&two);
    if (w) { *w += 1; if ((*w % 64) == 0) flags = 2; }
    u64 *c = st.lookup(ringbuf_output_ok(e, flags) ? &z : &one);
    if (c) *c += 1;
    return 0;
}
"""


def run(pages: int, seconds: float, atomic: bool) -> dict:
    from bcc import BPF

    from hdrlog import ringbuf

    gen = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, "-c",
         "import os,sys,time\nsys.stdin.readline()\nt=time.time()+%f\nwhile time.time()<t:\n"
         "  for i in range(200): os.getppid()\n  time.sleep(0.01)" % seconds], stdin=subprocess.PIPE, text=True)
    text = (PROG.replace("PAGES", str(pages)).replace("GEN_PID", str(gen.pid))
            .replace("ringbuf_output_ok(e, flags)", "events.ringbuf_output(e, sizeof(*e), flags) == 0"))
    b = BPF(text=text)
    t = b["events"]
    got = [0]
    reader = ringbuf.RingReader(t.map_fd, int(t.max_entries), lambda v: got.__setitem__(0, got[0] + 1))
    if not atomic:
        # the reader's first version: consumer_pos published with struct.pack_into("<Q") (zeroes, then
        # writes byte by byte), kept here to show why the reader now uses one 8-byte store
        import struct

        class BytewisePos:
            def __getitem__(self, i):
                return struct.unpack_from("<Q", reader._cons, 0)[0]

            def __setitem__(self, i, v):
                struct.pack_into("<Q", reader._cons, 0, v)

            def release(self):
                pass

        reader._cons_pos.release()
        reader._cons_pos = BytewisePos()
    try:
        gen.stdin.write("go\n")
        gen.stdin.flush()
        while gen.poll() is None:
            reader.poll(100)
        reader.consume()
    finally:
        st = b["st"]
        ok, dropped = sum(st[ct.c_int(0)]), sum(st[ct.c_int(1)])
        reader.close()
        b.cleanup()
    return {"emitted": ok, "dropped": dropped, "consumed": got[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--pages", type=int, default=1024)
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    os.sched_setaffinity(0, {1})
    total = {False: 0, True: 0}
    for i in range(a.rounds):
        for atomic in (False, True):
            r = run(a.pages, a.seconds, atomic)
            total[atomic] += r["dropped"]
            how = "8-byte store    " if atomic else "struct.pack_into"
            print(f"round {i + 1} {how}: emitted {r['emitted']}, consumed {r['consumed']}, dropped {r['dropped']} "
                  f"(ring {a.pages * 4} KiB)", flush=True)
    print(f"dropped in total: struct.pack_into {total[False]}, 8-byte store {total[True]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
