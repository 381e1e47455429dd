"""The nginx bench's figures against the goals of issue 3."""

from __future__ import annotations

from .ceiling import first_loss


# -- targets (issue 3) ------------------------------------------------------------------------------
def targets(rep: dict) -> list[dict]:
    out = []

    def add(name, measured, goal, met, by, note=""):
        out.append({"target": name, "measured": measured, "goal": goal, "met": met, "by": by, "note": note})

    t = rep.get("throughput")
    if t:
        rows = {r["condition"]: r for r in t["rows"]}
        h = rows.get("hdrlog")
        if h and h["nginx_cpu_added_us"] is not None:
            v = h["nginx_cpu_added_us"]
            add("nginx CPU added per request", f"{v:.1f} µs", "≤ 5 µs", v <= 5, f"{v - 5:+.1f} µs")
        if h:
            add("throughput ratio at saturation", f"{h['ratio']:.2f}", "≥ 0.35", h["ratio"] >= 0.35,
                f"{h['ratio'] - 0.35:+.2f}")
            add("zero loss at saturation", f"{h['lost_events']} lost events", "0", h["lost_events"] == 0,
                f"{h['lost_events']} events")
        p = rows.get("hdrlog-paced")
        if p and p.get("nearest_20k"):
            n = p["nearest_20k"]
            v = n["consumer_cpu_us_per_msg"]
            add("consumer CPU per message at 20k msg/s", f"{v:.1f} µs at {n['msgs_per_s']:.0f} msg/s", "≤ 8 µs",
                v <= 8, f"{v - 8:+.1f} µs", f"paced run nearest 20k msg/s; median of all paced runs "
                f"{p['consumer_cpu_us_per_msg']:.1f} µs")
    c = rep.get("ceiling")
    if c:
        v = c["max_lossless_msgs_per_s"] or 0
        add("lossless message rate (ceiling)", f"{v:.0f} msg/s", "≥ 50,000 msg/s", v >= 50000, f"{v - 50000:+.0f} msg/s",
            f"{first_loss(c)}; "
            f"{c['consumer_cpu_us_per_msg_median']:.1f} µs/msg = {c['one_core_limit_msgs_per_s']:.0f} msg/s per core")
        d = c["drops_counted"]
        exact = d["loss_records_equal_summary"] and all(v <= 0 for v in d["missing_minus_lost"].values())
        add("drops counted beyond the ceiling", f"{d['steps_with_loss']} lossy steps", "loss records = summary = missing",
            exact, "exact" if exact else "not exact")
    a = rep.get("attach")
    if a:
        from .attach import TARGETS_S

        for k, goal in TARGETS_S.items():
            if k in a:
                v = a[k]["median_s"]
                add(f"attached latency, {k}", f"{v:.2f} s", f"≤ {goal:.0f} s", v <= goal, f"{v - goal:+.2f} s")
    r = rep.get("rss")
    if r:
        v = r["open"]["rss_kb"] / 1024
        add(f"consumer RSS with {r['open']['tracked_conns']} connections tracked", f"{v:.0f} MiB", "≤ 150 MB",
            v * 1.048576 <= 150, f"{v * 1.048576 - 150:+.0f} MB", f"{r['attached']['rss_kb'] / 1024:.0f} MiB before "
            f"any connection, +{r['per_conn_kb']:.1f} KiB per connection")
        ok = r["closed"]["tracked_conns"] == 0 and r["idle-expired"]["tracked_conns"] == 0
        add("closed and idle connections forgotten", f"{r['closed']['tracked_conns']} left after close, "
            f"{r['idle-expired']['tracked_conns']} after idle timeout", "0", ok, "ok" if ok else "leak")
    return out


def print_targets(ts: list[dict]) -> None:
    print("\n== targets (issue 3)")
    for x in ts:
        print(f"{'met   ' if x['met'] else 'MISSED'} {x['target']:45s} {x['measured']:>28s}  goal {x['goal']:<24s} "
              f"{x['by']:>12s}  {x['note']}")
