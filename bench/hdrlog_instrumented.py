#!/usr/bin/env python3
"""`hdrlog attach`, unchanged, plus what the bench needs to see from outside (bench use only).

  python bench/hdrlog_instrumented.py attach --pid PID ...    (same arguments as `hdrlog`)

Environment:
  HDRLOG_BENCH_STATS=FILE   every 0.25 s, write {"t", "conns", "fds", "counts", "rss_kb"} to FILE (the
                            number of connections the tracker holds: the summary record has no such count)
  HDRLOG_BENCH_IDLE_S=SEC   the tracker's idle timeout (hdrlog's default is 300 s and has no flag)
  HDRLOG_BENCH_PHASES=1     print "bench-phase NAME SECONDS rss_kb=N" lines on stderr: interpreter start
                            to main, BPF compile, attach, each from this process's start time

Nothing else is changed: the same Session, pipeline, sink and signals run as with `hdrlog attach`.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path


def _process_age() -> float:
    """Seconds since this process started (from /proc/self/stat, so the exec and imports count)."""
    start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    from hdrlog import cli, conntrack, loader, pipeline, session

    phases = os.environ.get("HDRLOG_BENCH_PHASES") == "1"

    def phase(name: str) -> None:
        if phases:
            sys.stderr.write(f"bench-phase {name} {_process_age():.3f} rss_kb={_rss_kb()}\n")
            sys.stderr.flush()

    phase("main")

    idle = os.environ.get("HDRLOG_BENCH_IDLE_S")
    if idle:
        class Tracker(conntrack.Tracker):
            def __init__(self, *a, **kw):
                kw["idle_timeout_s"] = float(idle)
                super().__init__(*a, **kw)

        pipeline.Tracker = Tracker

    if phases:
        orig_init, orig_open = loader.ProbeSet.__init__, loader.ProbeSet.open

        def init(self, *a, **kw):
            phase("compile-start")
            orig_init(self, *a, **kw)
            phase("compile-end")

        def open_(self, *a, **kw):
            phase("attach-start")
            return orig_open(self, *a, **kw)

        loader.ProbeSet.__init__, loader.ProbeSet.open = init, open_

    stats_path = os.environ.get("HDRLOG_BENCH_STATS")
    if stats_path:
        orig_run = session.Session.run

        def run(self):
            def dump():
                tmp = stats_path + ".tmp"
                while True:
                    p = self.pipeline
                    if p is not None:
                        tr = p.tracker
                        rec = {"t": time.time(), "conns": len(tr.conns), "fds": len(tr.fds._fds),
                               "counts": dict(tr.counts), "rss_kb": _rss_kb()}
                        with open(tmp, "w") as f:
                            json.dump(rec, f)
                        os.replace(tmp, stats_path)
                    time.sleep(0.25)

            threading.Thread(target=dump, daemon=True).start()
            return orig_run(self)

        session.Session.run = run

    return cli.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
