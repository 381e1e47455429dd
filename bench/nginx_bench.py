#!/usr/bin/env python3
"""hdrlog's benchmark on nginx: throughput cost, consumer ceiling, RSS with 10k connections, attach latency.

  sudo .venv/bin/python bench/nginx_bench.py [--only throughput,ceiling,rss,attach] [--seconds 4] [--rounds 3]

Parts (all by default; `make bench` runs them all in about four minutes on the 2-core reference VM):

throughput  nginx, 1 worker pinned to CPU 0, TLS 1.3 keep-alive, `return 200`; wrk (1 thread, 16
            connections) pinned to CPU 1. Every probe consumer is pinned to CPU 0, sharing nginx's core.
            Conditions, interleaved per round (the order rotates every round): `none`; `bpftrace`
            (a plain counting control: `count()` on uprobes at the entry of SSL_read and SSL_write of the
            libssl nginx maps); `hdrlog-entry` (`hdrlog attach --placement entry`); `hdrlog-functions`
            (`--placement functions`: probes on the TLS functions, the default before copy sites); `hdrlog`
            (default placement: copy sites inside OpenSSL's record layer); and `hdrlog-paced`, hdrlog with wrk paced to about 20k messages/s, for the
            consumer's CPU per message at that rate; `hdrlog-apart`, hdrlog as `hdrlog` but pinned to CPU 1
            (wrk's core), a diagnostic: what nginx pays for the probes alone, without sharing its core
            with the consumer (wrk then shares its core, so its req/s is not comparable). Prints req/s and the ratio to `none`, p50/p99 latency,
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
attach      seconds from starting `hdrlog attach` to its `attached` line, for nginx (libssl), node (OpenSSL
            linked into the executable) and Debian's caddy (a stripped Go binary), median of --attach-reps;
            plus one run split into phases. bench/nginxbench/attach_ab.py compares two trees alternately.

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
import shutil
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for nginxbench/ when run as a script

from nginxbench.attach import part_attach, print_attach  # noqa: E402
from nginxbench.ceiling import part_ceiling, print_ceiling  # noqa: E402
from nginxbench.common import (  # noqa: E402
    CONDITIONS, OUT, PARTS, Env, code_state, free_port, loadavg, log, rss_kb, stop_proc,
)
from nginxbench.procs import Hdrlog, Nginx, run_wrk, served_between  # noqa: E402
from nginxbench.rss import part_rss, print_rss  # noqa: E402
from nginxbench.targets import print_targets, targets  # noqa: E402
from nginxbench.throughput import part_throughput, print_throughput  # noqa: E402

# what bench/soak.py and tests/test_bench_smoke.py import from here
__all__ = ["CONDITIONS", "OUT", "Env", "Hdrlog", "Nginx", "free_port", "loadavg", "log", "main", "rss_kb", "run_wrk",
           "served_between", "stop_proc"]


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
