"""Part 1 of the nginx bench: throughput cost of each probe consumer (see bench/nginx_bench.py)."""

from __future__ import annotations

import time

from .common import Env, cpu_seconds, loadavg, log, median, sched_s
from .procs import Bpftrace, Hdrlog, Nginx, SitesCount, run_wrk, served_between


# -- part 1: throughput ----------------------------------------------------------------------------
def part_throughput(env: Env, a) -> dict:
    ng = Nginx(env, "throughput", workers=1, affinity="01")
    env.private_libssl(ng.libssl)
    worker = ng.workers[0]
    paced_conns = a.paced_connections
    runs: dict[str, list[dict]] = {c: [] for c in a.conditions}
    placement = None
    try:
        run_wrk(env, ng.port, 1, a.connections)  # warm-up
        for rnd in range(a.rounds):
            conds = list(a.conditions)
            k = rnd % len(conds)
            for cond in conds[k:] + conds[:k]:
                la0 = loadavg()
                cons = None
                if cond == "bpftrace":
                    cons = Bpftrace(env, ng.libssl, "0")
                elif cond == "sites-count":
                    cons = SitesCount(env, [ng.master, *ng.workers], "0")
                elif cond.startswith("hdrlog"):
                    extra = ["--verbose", "--placement", {"hdrlog-entry": "entry",
                                                          "hdrlog-functions": "functions"}.get(cond, "auto")]
                    # hdrlog-apart: the consumer on wrk's core, to tell what sharing nginx's core costs nginx
                    cons = Hdrlog(env, cond, [ng.master], cpus="1" if cond == "hdrlog-apart" else "0", extra=extra)
                    if cond == "hdrlog" and placement is None:
                        placement = [ln[len("hdrlog: "):] for ln in cons.stderr().splitlines()
                                     if ln.startswith("hdrlog: probe ") or ln.startswith("hdrlog: attached")]
                s0, c0 = ng.served(), cpu_seconds(worker)
                h0 = cons.cpu() if cons else 0.0
                q0, t0 = (sched_s(cons.pid) if cons else (0.0, 0.0)), time.monotonic()
                if cond == "hdrlog-paced":
                    res = run_wrk(env, ng.port, a.seconds, paced_conns, script="paced.lua", script_args=(1,))
                else:
                    res = run_wrk(env, ng.port, a.seconds, a.connections)
                c1, s1 = cpu_seconds(worker), ng.served()
                if cons is not None:
                    q1, t1 = sched_s(cons.pid), time.monotonic()
                    res["consumer_cpu_share"] = (q1[0] - q0[0]) / (t1 - t0)
                    res["consumer_runqueue_wait_share"] = (q1[1] - q0[1]) / (t1 - t0)
                res["served"] = served_between(s0, s1)
                res["nginx_cpu_us_per_req"] = (c1 - c0) * 1e6 / max(1, res["served"])
                res["loadavg_before"] = la0
                if cons is not None:
                    time.sleep(0.5)  # let the consumer drain what is in the ring
                    h1 = cons.cpu()
                    res.update(cons.stop())
                    res["consumer_cpu_s"] = h1 - h0
                    if isinstance(cons, Hdrlog):
                        msgs = res["captured_requests"] + res["captured_responses"]
                        res["consumer_cpu_us_per_msg"] = (h1 - h0) * 1e6 / max(1, msgs)
                        res["msgs_per_s"] = msgs / res["seconds"]
                        res["attach_s"] = cons.attach_s
                    else:
                        res["probe_hits_per_req"] = (res["probe_hits"] or 0) / max(1, res["served"])
                        if res.get("tracepoint_hits") is not None:
                            res["tracepoint_hits_per_req"] = res["tracepoint_hits"] / max(1, res["served"])
                res["loadavg_after"] = loadavg()
                if cond == "hdrlog-paced":
                    res["paced_connections"] = paced_conns
                    # aim the next round at 20k messages/s (10k requests/s): wrk's delay is whole ms
                    rate = res["rps"] * 2
                    if rate > 0 and abs(rate - 20000) > 1500:
                        paced_conns = max(1, round(paced_conns * 20000 / rate))
                runs[cond].append(res)
                extra = ""
                if "consumer_cpu_us_per_msg" in res:
                    extra = (f" consumer {res['consumer_cpu_us_per_msg']:.1f} µs/msg at "
                             f"{res['msgs_per_s']:.0f} msg/s, lost {res['lost_events']}")
                elif "probe_hits" in res:
                    extra = f" {res['probe_hits_per_req']:.2f} probe hits/req"
                log(f"throughput round {rnd + 1}/{a.rounds} {cond:12s} {res['rps']:8.0f} req/s, nginx "
                    f"{res['nginx_cpu_us_per_req']:.1f} µs/req{extra} (load {la0})")
    finally:
        ng.stop()
    base = median(r["rps"] for r in runs["none"]) if runs.get("none") else None
    base_cpu = median(r["nginx_cpu_us_per_req"] for r in runs["none"]) if runs.get("none") else None
    rows = []
    for cond, rs in runs.items():
        med = lambda k: median(r.get(k) for r in rs)  # noqa: E731
        probe = cond != "none"
        row = {"condition": cond, "rps": med("rps"), "ratio": med("rps") / base if base else None,
               "p50_ms": med("p50_ms"), "p99_ms": med("p99_ms"), "nginx_cpu_us_per_req": med("nginx_cpu_us_per_req"),
               "nginx_cpu_added_us": (med("nginx_cpu_us_per_req") - base_cpu) if base_cpu is not None else None,
               "consumer_cpu_us_per_msg": med("consumer_cpu_us_per_msg"), "msgs_per_s": med("msgs_per_s"),
               "completed": sum(r["requests"] for r in rs), "served": sum(r["served"] for r in rs),
               "captured_requests": sum(r.get("captured_requests", 0) for r in rs) if cond.startswith("hdrlog") else None,
               "captured_responses": sum(r.get("captured_responses", 0) for r in rs) if cond.startswith("hdrlog") else None,
               "lost_events": sum(r.get("lost_events") or 0 for r in rs) if cond.startswith("hdrlog") else None,
               "probe_hits_per_req": med("probe_hits_per_req"), "tracepoint_hits_per_req": med("tracepoint_hits_per_req"),
               "consumer_cpu_share": med("consumer_cpu_share"),
               "consumer_runqueue_wait_share": med("consumer_runqueue_wait_share"), "rounds": len(rs),
               "rps_all": [round(r["rps"]) for r in rs]}
        if not probe:
            row["ratio"] = 1.0
        if cond == "hdrlog-paced" and rs:
            near = min(rs, key=lambda r: abs(r["msgs_per_s"] - 20000))
            row["nearest_20k"] = {"msgs_per_s": near["msgs_per_s"], "consumer_cpu_us_per_msg": near["consumer_cpu_us_per_msg"],
                                  "paced_connections": near["paced_connections"], "lost_events": near["lost_events"]}
        rows.append(row)
    return {"setup": {"nginx": "1 worker pinned to CPU 0, TLS 1.3, keep-alive, return 200",
                      "wrk": f"1 thread, {a.connections} connections, CPU 1, {a.seconds}s per run",
                      "consumers": "pinned to CPU 0 (nginx's core), except hdrlog-apart's (CPU 1, wrk's core)",
                      "paced": "wrk -s bench/wrk/paced.lua -- 1 (1 ms between a response and the next request)",
                      "wrk_libssl": env.wrk_libssl, "nginx_libssl": ng.libssl},
            "placement": placement, "rows": rows, "runs": runs}


def print_throughput(t: dict) -> None:
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    print(f"\n== throughput ({t['setup']['wrk']}; consumers on nginx's core; medians of {t['rows'][0]['rounds']} rounds)")
    print(f"{'condition':13s} {'req/s':>8s} {'ratio':>6s} {'p50ms':>6s} {'p99ms':>6s} {'nginx µs/req':>12s} "
          f"{'added':>6s} {'cons µs/msg':>11s} {'cons CPU/wait':>13s} {'msg/s':>7s} {'captured/served (wrk)':>24s} {'lost':>5s}")
    for r in t["rows"]:
        cap = "-"
        if r["captured_requests"] is not None:
            cap = f"{r['captured_requests']}/{r['served']} ({r['completed']})"
        elif r["probe_hits_per_req"] is not None:
            cap = f"{r['probe_hits_per_req']:.2f} hits/req"
        share = "-"
        if r["consumer_cpu_share"] is not None:
            share = f"{100 * r['consumer_cpu_share']:.0f}%/{100 * r['consumer_runqueue_wait_share']:.0f}%"
        print(f"{r['condition']:13s} {fmt(r['rps'], '8.0f')} {fmt(r['ratio'], '6.3f')} {fmt(r['p50_ms'], '6.2f')} "
              f"{fmt(r['p99_ms'], '6.2f')} {fmt(r['nginx_cpu_us_per_req'], '12.1f')} "
              f"{fmt(r['nginx_cpu_added_us'], '6.1f')} {fmt(r['consumer_cpu_us_per_msg'], '11.1f')} {share:>13s} "
              f"{fmt(r['msgs_per_s'], '7.0f')} {cap:>24s} {fmt(r['lost_events'], '5d')}")
