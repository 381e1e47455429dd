#!/usr/bin/env python3
"""Soak: nginx under steady load for N minutes with hdrlog attached (issue 7).

  sudo .venv/bin/python bench/soak.py [--minutes 10] [--rate 4000] [--segment 30] [--baseline 20]

nginx (2 workers, TLS 1.3 keep-alive, `return 200`) is attached through its master; wrk, paced with
bench/wrk/paced.lua to about --rate requests/s, runs in --segment-second pieces back to back, so every
segment opens and closes its connections again (SSL_free, connection tracking and expiry are exercised,
not only the steady state). hdrlog writes JSON lines to a rotated file (--rotate-mb 64 --keep 2: disk stays
bounded) with its default options (end-of-run statistics included) and serves --metrics, scraped after every
segment for messages captured and events lost in that segment. hdrlog's RSS is sampled every 5 s.

Before attaching, a --baseline-second segment measures the same load without hdrlog.

Reports, per segment: wrk requests/s and p99, requests nginx served (stub_status), messages hdrlog captured
(2 per request expected), events lost, hdrlog RSS; and overall: sent vs captured, drops, RSS at start
(after the first segment: buffers and caches warm) and end and its maximum, throughput first vs last
segment. Verdict lines: `captured`: every served request's request+response captured, or the difference
explained by counted losses; `rss`: end - start below max(8 MiB, 10 %). Results: bench/out/soak.json.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nginx_bench import (OUT, Env, Hdrlog, Nginx, code_state, free_port, loadavg, log, rss_kb,  # noqa: E402
                         run_wrk, served_between)


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"(hdrlog_messages_total|hdrlog_events_total|hdrlog_events_lost_total|hdrlog_parse_gaps_total"
                     r"|hdrlog_truncated_messages_total)(\{[^}]*\})?\s+([\d.e+]+)$", line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
    return out


class RssSampler(threading.Thread):
    def __init__(self, pid: int, every: float = 5.0):
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, int]] = []
        self.halt = threading.Event()
        self.t0 = time.monotonic()

    def run(self):
        while not self.halt.is_set():
            try:
                self.samples.append((round(time.monotonic() - self.t0, 1), rss_kb(self.pid)))
            except (OSError, ValueError):
                return
            self.halt.wait(self.every)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="attached load duration (default 10)")
    ap.add_argument("--rate", type=int, default=4000, help="target requests/s (paced; default 4000)")
    ap.add_argument("--conns", type=int, default=16, help="wrk connections (default 16)")
    ap.add_argument("--segment", type=float, default=30.0, help="seconds per wrk run (default 30)")
    ap.add_argument("--baseline", type=float, default=20.0, help="seconds of load before attaching (0: none)")
    ap.add_argument("--out", default=str(OUT / "soak.json"))
    a = ap.parse_args()

    env = Env()
    try:
        ng = Nginx(env, "soak", workers=2, affinity="")
        env.private_libssl(ng.libssl)
        # paced.lua: each connection waits DELAY ms after a response; ~conns*1000/(delay+latency) req/s
        delay = max(1, round(a.conns * 1000 / a.rate))
        rep: dict = {"minutes": a.minutes, "rate": a.rate, "conns": a.conns, "delay_ms": delay,
                     "segment_s": a.segment, "load_before": loadavg(), "code": code_state(), "segments": []}
        if a.baseline:
            s0 = ng.served()
            w = run_wrk(env, ng.port, int(a.baseline), a.conns, cpus="0,1", script="paced.lua", script_args=(delay,))
            rep["baseline"] = {"rps": w["rps"], "p99_ms": w["p99_ms"], "requests": w["requests"],
                               "served": served_between(s0, ng.served())}
            log(f"baseline without hdrlog: {w['rps']:.0f} req/s, p99 {w['p99_ms']} ms")
        mport = free_port()
        out_file = env.tmp / "soak.jsonl"
        h = Hdrlog(env, "soak", [ng.master], cpus=None,
                   extra=("--metrics", f"127.0.0.1:{mport}", "--rotate-mb", "64", "--keep", "2"))
        h.out = out_file  # Hdrlog names it soak.jsonl too; read by us below, not by Hdrlog.stop
        sampler = RssSampler(h.pid)
        sampler.start()
        rep["rss_attached_kb"] = rss_kb(h.pid)
        t_end = time.monotonic() + a.minutes * 60
        prev = scrape(mport)
        sent = served = 0
        i = 0
        while time.monotonic() < t_end - 1:
            seg = max(1, int(min(a.segment, t_end - time.monotonic())))
            s0 = ng.served()
            w = run_wrk(env, ng.port, seg, a.conns, cpus="0,1", script="paced.lua", script_args=(delay,))
            time.sleep(0.3)  # hdrlog drains what the last responses produced
            srv = served_between(s0, ng.served())
            cur = scrape(mport)
            d = {k: cur.get(k, 0) - prev.get(k, 0) for k in cur}
            prev = cur
            row = {"i": i, "t_s": round(time.monotonic() - sampler.t0, 1), "rps": round(w["rps"]),
                   "p99_ms": w["p99_ms"], "requests": w["requests"], "served": srv,
                   "messages": int(d.get("hdrlog_messages_total", 0)),
                   "lost_events": int(d.get("hdrlog_events_lost_total", 0)),
                   "gaps": int(d.get("hdrlog_parse_gaps_total", 0)), "rss_kb": rss_kb(h.pid),
                   "socket_errors": w["socket_errors"]}
            rep["segments"].append(row)
            sent += w["requests"]
            served += srv
            log(f"segment {i}: {row['rps']} req/s p99 {row['p99_ms']} ms, served {srv}, captured "
                f"{row['messages']} messages (expected {2 * srv}), lost {row['lost_events']}, "
                f"rss {row['rss_kb'] / 1024:.1f} MiB")
            i += 1
        sampler.halt.set()
        rss_end = rss_kb(h.pid)
        err_path = h.err_path
        from nginx_bench import stop_proc
        import signal

        stop_proc(h.p, signal.SIGINT, 60)
        h.errf.close()
        summary = {}
        for f in sorted(env.tmp.glob("soak.jsonl*")):
            for line in f.read_bytes().splitlines():
                if line.startswith(b'{"type":"summary"'):
                    summary = json.loads(line)
        segs = rep["segments"]
        captured = sum(s["messages"] for s in segs)
        lost = sum(s["lost_events"] for s in segs)
        rss_start = segs[0]["rss_kb"] if segs else rep["rss_attached_kb"]
        rep.update({
            "hdrlog_exit": h.p.returncode, "stderr_tail": err_path.read_text(errors="replace")[-1500:],
            "sent_requests": sent, "served_requests": served, "expected_messages": 2 * served,
            "captured_messages": captured, "summary": {k: summary.get(k) for k in (
                "messages", "events", "lost_events", "truncated_messages", "gaps", "non_http_connections",
                "untracked_calls", "seconds")},
            "lost_events": lost, "rss_start_kb": rss_start, "rss_end_kb": rss_end,
            "rss_max_kb": max((s for _, s in sampler.samples), default=rss_end),
            "rss_samples": sampler.samples[::6],
            "rps_first": segs[0]["rps"] if segs else None, "rps_last": segs[-1]["rps"] if segs else None,
            "load_after": loadavg(),
        })
        ok_capture = captured == 2 * served or (lost > 0 and captured < 2 * served)
        ok_rss = rss_end - rss_start < max(8 * 1024, 0.10 * rss_start)
        rep["verdict"] = {"captured": ok_capture, "rss_flat": ok_rss, "hdrlog_exit_0": h.p.returncode == 0}
        ng.stop()
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(rep, indent=1))
        print(f"\nsoak: {len(segs)} segments, {a.minutes:g} min attached, ~{a.rate} req/s offered, "
              f"nginx 2 workers, wrk {a.conns} connections")
        if "baseline" in rep:
            print(f"  baseline (no hdrlog): {rep['baseline']['rps']:.0f} req/s, p99 {rep['baseline']['p99_ms']} ms")
        print(f"  throughput attached: first segment {rep['rps_first']} req/s, last {rep['rps_last']} req/s, "
              f"min {min(s['rps'] for s in segs)}, max {max(s['rps'] for s in segs)}")
        print(f"  requests sent (wrk) {sent}, served (nginx) {served}; messages captured {captured} of "
              f"{2 * served} expected; lost events {lost}; summary {rep['summary']}")
        print(f"  hdrlog RSS: attached {rep['rss_attached_kb'] / 1024:.1f} MiB, after segment 1 "
              f"{rss_start / 1024:.1f} MiB, end {rss_end / 1024:.1f} MiB, max {rep['rss_max_kb'] / 1024:.1f} MiB")
        print(f"  verdict: {rep['verdict']}; load {rep['load_before']} -> {rep['load_after']}; {a.out}")
        return 0 if all(rep["verdict"].values()) else 1
    finally:
        env.cleanup()


if __name__ == "__main__":
    sys.exit(main())
