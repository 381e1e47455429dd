#!/usr/bin/env python3
"""The live consumer's CPU per message, two ring-reader paths (or two trees) interleaved round by round.

  sudo .venv/bin/python bench/live_ab.py [--rounds 6] [--seconds 5] [--paths py,c] [--output null|file]
                                         [--trees base=/tmp/base/src,cur=src] [--pyspy DIR]

The README's paced condition: nginx (1 worker) pinned to CPU 0, wrk (1 thread) on CPU 1 paced by
bench/wrk/paced.lua (1 ms after each response), its connections adjusted toward 20k messages/s after each run,
and `hdrlog attach` (bench/live_consumer.py) pinned to CPU 0 too. Each run is one hdrlog process: attach, wrk for
--seconds, then stop; CPU is the process's on-CPU time (/proc/PID/task/*/schedstat) from just before wrk starts
to 0.5 s after it ends (the ring drained), divided by the messages the pipeline emitted. Per run also the
records and non-empty batches the ring reader saw (records per batch). Variants: --paths (HDRLOG_LIVE_RING of
live_consumer.py: py forces the Python ring walk) or --trees (src/ directories first on PYTHONPATH); their order
flips every round. Prints every run, the medians, and the median of the paired differences (second - first).
--pyspy DIR: py-spy records each variant's first run (raw folded stacks, 1000 Hz) into DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/, for nginxbench when run as a script

from nginxbench.common import BENCH, CLK, PY, ROOT, Env, cpu_seconds, loadavg, stop_proc, wait_for  # noqa: E402
from nginxbench.procs import Nginx, run_wrk  # noqa: E402

PYSPY = ROOT / ".venv" / "bin" / "py-spy"


def oncpu_s(pid: int) -> float:
    """Seconds on CPU of every thread of pid (schedstat: nanoseconds, not clock ticks)."""
    total = 0
    for t in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((t / "schedstat").read_text().split()[0])
        except (OSError, ValueError):
            pass
    return total / 1e9


def user_sys(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of pid, clock ticks (/proc/PID/stat)."""
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(f[11]) / CLK, int(f[12]) / CLK


def ctxsw(pid: int) -> tuple[int, int]:
    """(voluntary, involuntary) context switches of pid's main thread."""
    v = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.endswith("ctxt_switches:") or "ctxt_switches:" in line:
            k, n = line.split(":")
            v[k] = int(n)
    return v["voluntary_ctxt_switches"], v["nonvoluntary_ctxt_switches"]


def one_run(env: Env, ng: Nginx, variant: tuple[str, dict], a, conns: int, pyspy_out: Path | None) -> dict:
    name, extra_env = variant
    stats = env.tmp / f"live-{name}.json"
    out = "/dev/null" if a.output == "null" or "+null" in name else str(env.tmp / f"live-{name}.jsonl")
    errp = env.tmp / f"live-{name}.err"
    prio = ["chrt", "--fifo", "1"] if "+fifo" in name else []
    argv = [*prio, "taskset", "-c", "0", PY, str(BENCH / "live_consumer.py"), "attach", "--output", out, "--pid",
            str(ng.master), *a.hdrlog_args.split()]
    e = dict(os.environ, HDRLOG_LIVE_STATS=str(stats), **extra_env)
    with open(errp, "w") as errf:
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=errf, stdin=subprocess.DEVNULL, env=e, cwd=ROOT)
        env.procs.append(p)
        wait_for(lambda: "attached to" in errp.read_text(), 60, "hdrlog attach", p, errp.read_text)
        time.sleep(0.3)
        spy = None
        if pyspy_out is not None:
            spy = subprocess.Popen([str(PYSPY), "record", "-r", "1000", "-f", "raw", "-o", str(pyspy_out),
                                    "-p", str(p.pid), "-d", str(int(a.seconds) + 1)] + (["--native"] if a.native else []),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        burner = None
        if "+burn" in name:  # CPU 0 never idles: a SCHED_IDLE spinner takes what nobody else wants
            burner = subprocess.Popen(["chrt", "--idle", "0", "taskset", "-c", "0", "sh", "-c", "while :; do :; done"])
        la = loadavg()
        c0, w0, us0, x0 = oncpu_s(p.pid), cpu_seconds(ng.workers[0]), user_sys(p.pid), ctxsw(p.pid)
        res = run_wrk(env, ng.port, a.seconds, conns, script="paced.lua", script_args=(1,))
        w1 = cpu_seconds(ng.workers[0])
        time.sleep(0.5)
        c1, us1, x1 = oncpu_s(p.pid), user_sys(p.pid), ctxsw(p.pid)
        if burner is not None:
            stop_proc(burner, signal.SIGKILL, 5)
        if spy is not None:
            spy.wait(30)
        stop_proc(p, signal.SIGINT, 60)
    if p.returncode != 0:
        raise RuntimeError(f"hdrlog exited {p.returncode}: {errp.read_text()[-2000:]}")
    st = json.loads(stats.read_text())
    msgs = st["messages"]
    return {"variant": name, "path": st.get("path"), "us_per_msg": (c1 - c0) * 1e6 / max(1, msgs),
            "msgs_per_s": res["requests"] * 2 / res["seconds"], "messages": msgs, "records": st["records"],
            "batches": st["batches"], "consume_cpu_s": st.get("consume_cpu_s"), "fit_us": st.get("fit_us"), "replay": st.get("replay_us_per_msg"), "per_record_us": st.get("per_record_us"), "parts": st.get("parts_cpu_s"),
            "gc": {k: st[k] for k in ("gc_s", "gc_runs", "gc_objects") if k in st}, "per_batch": st["records"] / max(1, st["batches"]),
            "ctxsw": (x1[0] - x0[0], x1[1] - x0[1]),
            "sys_share": (us1[1] - us0[1]) / max(1e-9, (us1[0] + us1[1]) - (us0[0] + us0[1])),
            "nginx_us_per_req": (w1 - w0) * 1e6 / max(1, res["requests"]), "conns": conns, "load": la}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--paths", default="py,c", help="HDRLOG_LIVE_RING values, in the first round's order")
    ap.add_argument("--trees", help="NAME=SRC_DIR,... instead of --paths")
    ap.add_argument("--output", choices=("null", "file"), default="file")
    ap.add_argument("--connections", type=int, default=24, help="wrk connections of the first run")
    ap.add_argument("--hdrlog-args", default="", help="more arguments of hdrlog attach (split on spaces)")
    ap.add_argument("--max-connections", type=int, default=96)
    ap.add_argument("--micro", action="store_true",
                    help="after every round, consumer_micro.py --stages full (3 rounds, on CPU 0, nginx idle): the "
                         "in-process figure the live one is compared with, round by round")
    ap.add_argument("--pyspy", metavar="DIR")
    ap.add_argument("--native", action="store_true", help="py-spy --native")
    a = ap.parse_args()
    if a.trees:
        variants = [(n, {"PYTHONPATH": src}) for n, src in (t.split("=", 1) for t in a.trees.split(","))]
    else:
        variants = []
        for v in a.paths.split(","):
            e = {"HDRLOG_LIVE_RING": v.split("+")[0]}
            for part in v.split("+")[1:]:
                if part.startswith("gap"):
                    e["HDRLOG_LIVE_GAP_MS"] = part[3:]
            variants.append((v, e))
    env = Env()
    ng = Nginx(env, "live", workers=1, affinity="01")
    env.private_libssl(ng.libssl)
    conns = a.connections
    runs: dict[str, list[dict]] = {n: [] for n, _ in variants}
    micro: list[float] = []
    try:
        run_wrk(env, ng.port, 1, 16)  # warm-up
        for rnd in range(a.rounds):
            for v in (variants if rnd % 2 == 0 else variants[::-1]):
                spy = Path(a.pyspy) / f"{v[0]}.txt" if a.pyspy and not runs[v[0]] else None
                if spy is not None:
                    spy.parent.mkdir(parents=True, exist_ok=True)
                r = one_run(env, ng, v, a, conns, spy)
                runs[v[0]].append(r)
                print(f"round {rnd + 1} {r['variant']:6s} ({r['path']}) {r['us_per_msg']:6.2f} µs/msg at "
                      f"{r['msgs_per_s']:6.0f} msg/s, {r['per_batch']:6.1f} records/batch ({r['batches']} batches), "
                      f"sys {100 * r['sys_share']:.0f}%, switches {r['ctxsw'][0]}+{r['ctxsw'][1]} invol., nginx {r['nginx_us_per_req']:.1f} µs/req, conns {conns}, load {r['load']}", flush=True)
                if r["fit_us"]:
                    f = r["fit_us"]
                    print(f"    consume() {r['consume_cpu_s'] * 1e6 / max(1, r['messages']):.2f} µs/msg of it; per batch "
                          f"{f['fixed']:.1f} µs + {f['per_record']:.2f} µs/record", flush=True)
                if r["replay"]:
                    print(f"    the recorded events replayed in the same process: {r['replay']:.2f} µs/msg", flush=True)
                if r["parts"]:
                    print("    µs/msg in: " + ", ".join(f"{k} {v * 1e6 / max(1, r['messages']):.2f}"
                                                    for k, v in sorted(r["parts"].items())), flush=True)
                if r["per_record_us"]:
                    print(f"    per record by position in its batch (mean, median µs, n): {r['per_record_us']}", flush=True)
                if r["gc"]:
                    print(f"    gc {r['gc']}", flush=True)
                if r["msgs_per_s"] > 0 and abs(r["msgs_per_s"] - 20000) > 1500:
                    # toward 20k msg/s, at most ×1.5 per run and never past nginx's 1024 connections: a loaded
                    # machine serves less at any count, and more connections only pile up
                    conns = max(2, min(a.max_connections, round(conns * min(1.5, 20000 / r["msgs_per_s"]))))
            if a.micro:
                m = subprocess.run(["taskset", "-c", "0", PY, str(BENCH / "consumer_micro.py"), "--stages", "full",
                                    "--rounds", "3"], capture_output=True, text=True, cwd=ROOT)
                micro.append(float(m.stdout.split("full", 1)[1].split()[0]))
                print(f"round {rnd + 1} consumer_micro full {micro[-1]:.2f} µs/msg", flush=True)
        print("== medians")
        for n, rs in runs.items():
            print(f"{n:6s} {statistics.median(r['us_per_msg'] for r in rs):6.2f} µs/msg  "
                  f"{statistics.median(r['msgs_per_s'] for r in rs):6.0f} msg/s  "
                  f"{statistics.median(r['per_batch'] for r in rs):6.1f} records/batch  "
                  "runs " + " ".join(f"{r['us_per_msg']:.2f}" for r in rs))
        if len(variants) == 2:
            (x, _), (y, _) = variants
            d = [b["us_per_msg"] - q["us_per_msg"] for q, b in zip(runs[x], runs[y])]
            print(f"paired {y}-{x}: median {statistics.median(d):+.2f} µs/msg  {' '.join(f'{v:+.2f}' for v in d)}")
        if micro:
            print(f"consumer_micro full {statistics.median(micro):.2f} µs/msg")
            for n, rs in runs.items():
                d = [r["us_per_msg"] - m for r, m in zip(rs, micro)]
                print(f"paired {n} - consumer_micro full: median {statistics.median(d):+.2f} µs/msg  "
                      + " ".join(f"{v:+.2f}" for v in d))
        print(f"load average at the end: {loadavg()}")
    finally:
        ng.stop()
        env.cleanup()


if __name__ == "__main__":
    main()
