"""Part 2 of the nginx bench: the consumer's lossless ceiling, and drops counted beyond it.

See bench/nginx_bench.py for what each step measures."""

from __future__ import annotations

import time

from .common import Env, loadavg, log, median, sched_s
from .procs import Hdrlog, Nginx, run_wrk, served_between

# -- part 2: consumer ceiling ----------------------------------------------------------------------
# (label, wrk connections, wrk script, script args): rising load. Paced: 1 ms between a response and the
# next request on each connection; open-N: N connections as fast as nginx answers; pipeline-N: N requests
# per write (several requests per TLS read: fewer events per message).
CEILING_STEPS = [
    ("paced-16", 16, "paced.lua", (1,)),
    ("open-1", 1, None, ()),
    ("open-2", 2, None, ()),
    ("open-4", 4, None, ()),
    ("open-16", 16, None, ()),
    ("open-16-16m", 16, None, (), ["--ringbuf-mb", "16"]),  # a 16 MiB ring: more slack for scheduling hiccups
    ("pipeline-4", 16, "pipeline.lua", (4,)),
    ("pipeline-16", 16, "pipeline.lua", (16,)),
]
# beyond the consumer, on purpose, with one message per event so drops can be checked one for one:
# (label, connections, script, args, hdrlog arguments, hdrlog CPUs, nice)
BEYOND_STEPS = [
    ("starved", 16, None, (), [], "0", None),  # the consumer on CPU 0 with nginx and wrk, at normal priority
    ("ring-16k", 16, None, (), ["--ringbuf-pages", "4"], "1", "nice"),  # a 16 KiB ring buffer
]


def ceiling_step(env: Env, ng: Nginx, a, label, conns, script, sargs, extra=(), cpus="1", nice="nice") -> dict:
    la0 = loadavg()
    nice_v = a.ceiling_nice if nice == "nice" else None
    hd = Hdrlog(env, f"ceiling-{label}", [ng.master], cpus=cpus, extra=list(extra), nice=nice_v)
    s0, h0, n0, q0, t0 = ng.served(), hd.cpu(), ng.worker_cpu(), sched_s(hd.pid), time.monotonic()
    res = run_wrk(env, ng.port, a.ceiling_seconds, conns, cpus="0", script=script, script_args=sargs)
    h1, n1, q1, t1 = hd.cpu(), ng.worker_cpu(), sched_s(hd.pid), time.monotonic()
    served = served_between(s0, ng.served())
    time.sleep(0.5)
    h2 = hd.cpu()
    res.update(hd.stop())
    msgs = res["captured_requests"] + res["captured_responses"]
    lost = res["lost_events"] or 0
    res.update(label=label, connections=conns, script=script, script_args=list(sargs), hdrlog_args=list(extra),
               hdrlog_cpus=cpus, hdrlog_nice=nice_v, served=served, expected_msgs=2 * served, msgs=msgs,
               missing_msgs=2 * served - msgs, msgs_per_s=msgs / res["seconds"],
               served_msgs_per_s=2 * served / res["seconds"],
               consumer_cpu_share=(h1 - h0) / (t1 - t0), consumer_runqueue_wait_share=(q1[1] - q0[1]) / (t1 - t0),
               nginx_cpu_share=(n1 - n0) / (t1 - t0),
               consumer_cpu_us_per_msg=(h2 - h0) * 1e6 / max(1, msgs),
               events_per_msg=((res["events"] or 0) + lost) / max(1, 2 * served),
               # every event the probes produced is either emitted or counted lost; with one message per
               # data event the messages that did not arrive must equal the lost data events
               other_events=(res["events"] or 0) + lost - 2 * served if script != "pipeline.lua" else None,
               loss_records_match=(res["loss_record_events"] == lost),
               loadavg_before=la0, loadavg_after=loadavg())
    log(f"ceiling {label:12s} served {res['served_msgs_per_s']:6.0f} msg/s, captured {res['msgs_per_s']:6.0f} "
        f"msg/s; consumer {100 * res['consumer_cpu_share']:.0f}% CPU (+{100 * res['consumer_runqueue_wait_share']:.0f}% "
        f"waiting for it) {res['consumer_cpu_us_per_msg']:.1f} µs/msg; lost {lost} (loss records "
        f"{res['loss_record_events']}), missing msgs {res['missing_msgs']} (load {la0})")
    return res


def part_ceiling(env: Env, a) -> dict:
    ng = Nginx(env, "ceiling", workers=1, affinity="01")
    env.private_libssl(ng.libssl)
    steps, beyond = [], []
    try:
        run_wrk(env, ng.port, 1, 16, cpus="0")
        for st in CEILING_STEPS:
            steps.append(ceiling_step(env, ng, a, *st))
        if not a.no_beyond:
            for label, conns, script, sargs, extra, cpus, nice in BEYOND_STEPS:
                beyond.append(ceiling_step(env, ng, a, label, conns, script, sargs, extra, cpus, nice))
    finally:
        ng.stop()
    lossless = [s for s in steps if s["lost_events"] == 0 and s["missing_msgs"] <= 0]
    best = max(lossless, key=lambda s: s["msgs_per_s"]) if lossless else None
    lossy = [s for s in steps + beyond if s["lost_events"]]
    first_lossy = min((s for s in steps if s["lost_events"]), key=lambda s: s["served_msgs_per_s"], default=None)
    cost = median(s["consumer_cpu_us_per_msg"] for s in steps)
    return {"setup": {"nginx": "1 worker pinned to CPU 0", "wrk": "1 thread pinned to CPU 0 (with nginx)",
                      "hdrlog": f"pinned to CPU 1 at nice {a.ceiling_nice} (shielded from unrelated load), "
                                "default 4 MiB ring buffer, unless noted",
                      "seconds": a.ceiling_seconds},
            "steps": steps, "beyond": beyond,
            "max_lossless_msgs_per_s": best["msgs_per_s"] if best else None,
            "max_lossless_step": best["label"] if best else None,
            "max_lossless_consumer_cpu_share": best["consumer_cpu_share"] if best else None,
            "lowest_lossy_served_msgs_per_s": first_lossy["served_msgs_per_s"] if first_lossy else None,
            "lowest_lossy_step": first_lossy["label"] if first_lossy else None,
            "consumer_cpu_us_per_msg_median": cost,
            "one_core_limit_msgs_per_s": 1e6 / cost if cost else None,
            "max_served_msgs_per_s": max(s["served_msgs_per_s"] for s in steps),
            "drops_counted": {
                "loss_records_equal_summary": all(s["loss_records_match"] for s in steps + beyond),
                "steps_with_loss": len(lossy),
                # one message per event: missing messages minus lost events = lost non-message events (≤ 0)
                "missing_minus_lost": {s["label"]: s["missing_msgs"] - s["lost_events"] for s in lossy
                                       if s["script"] != "pipeline.lua"}}}


def first_loss(c: dict) -> str:
    """Where the first loss came, or that no step with the default ring lost anything."""
    if c["lowest_lossy_served_msgs_per_s"] is None:
        return "no step lost an event (the deliberately small ring of the last step aside)"
    return f"first loss at {c['lowest_lossy_served_msgs_per_s']:.0f} msg/s offered ({c['lowest_lossy_step']})"


def print_ceiling(c: dict) -> None:
    print(f"\n== consumer ceiling ({c['setup']['nginx']}, wrk {c['setup']['wrk']}; hdrlog {c['setup']['hdrlog']}; "
          f"{c['setup']['seconds']}s per step)")
    print(f"{'step':12s} {'hdrlog':>16s} {'served msg/s':>12s} {'captured msg/s':>14s} {'cons CPU':>8s} {'rq wait':>7s} "
          f"{'µs/msg':>6s} {'ev/msg':>6s} {'lost(summary)':>13s} {'lost(loss recs)':>15s} {'missing msgs':>12s}")
    for s in c["steps"] + c["beyond"]:
        how = (" ".join(s["hdrlog_args"]).replace("--ringbuf-pages ", "pages=").replace("--ringbuf-mb ", "MiB=")
               or "4MiB") + f" cpu{s['hdrlog_cpus']}"
        print(f"{s['label']:12s} {how:>16s} {s['served_msgs_per_s']:12.0f} {s['msgs_per_s']:14.0f} "
              f"{100 * s['consumer_cpu_share']:7.0f}% {100 * s['consumer_runqueue_wait_share']:6.0f}% "
              f"{s['consumer_cpu_us_per_msg']:6.1f} {s['events_per_msg']:6.2f} {s['lost_events']:13d} "
              f"{s['loss_record_events']:15d} {s['missing_msgs']:12d}")
    d = c["drops_counted"]
    print(f"max lossless: {c['max_lossless_msgs_per_s'] or 0:.0f} msg/s ({c['max_lossless_step']}, consumer at "
          f"{100 * (c['max_lossless_consumer_cpu_share'] or 0):.0f}% of its core); {first_loss(c)}; consumer "
          f"{c['consumer_cpu_us_per_msg_median']:.1f} µs/msg = {c['one_core_limit_msgs_per_s']:.0f} msg/s per core; "
          f"nginx served up to {c['max_served_msgs_per_s']:.0f} msg/s")
    print(f"drops: loss records = summary in every step: {d['loss_records_equal_summary']}; missing messages - lost "
          f"events (one message per event): {d['missing_minus_lost']}")
