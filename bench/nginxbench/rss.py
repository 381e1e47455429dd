"""Part 3 of the nginx bench: hdrlog's RSS with many connections tracked, closed and idle-expired."""

from __future__ import annotations

import json
import resource
import subprocess
import time

from .common import BENCH, PY, Env, hwm_kb, loadavg, log, rss_kb, wait_for
from .procs import Hdrlog, Nginx


# -- part 3: RSS with many connections --------------------------------------------------------------
def part_rss(env: Env, a) -> dict:
    n = a.rss_conns
    want = n + 4096
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))  # nginx inherits it
    ng = Nginx(env, "rss", workers=1, affinity="01", worker_connections=n + 2048, rlimit_nofile=n + 4096,
               keepalive_timeout="600s")
    stats = env.tmp / "rss-stats.json"
    out: dict = {"connections": n, "loadavg_before": loadavg()}

    def tracker() -> dict:
        time.sleep(0.6)  # two dumps of the stats thread and at least one expire() scan
        return json.loads(stats.read_text())

    class Clients:
        """bench/many_conns.py in a.rss_procs processes (unpinned: a TLS handshake costs the Python client
        about three times what it costs nginx), `count` connections in all."""

        def __init__(self, count: int):
            k = max(1, min(a.rss_procs, count))
            self.ps = []
            for i in range(k):
                c = subprocess.Popen([PY, str(BENCH / "many_conns.py"), "--port", str(ng.port), "--conns",
                                      str(count // k + (i < count % k))], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
                env.procs.append(c)
                self.ps.append(c)
            t0 = time.monotonic()
            lines = [json.loads(c.stdout.readline()) for c in self.ps]
            self.opened = {"ok": sum(x["ok"] for x in lines), "errors": sum(x["errors"] for x in lines),
                           "first_errors": [e for x in lines for e in x["first_errors"]][:3],
                           "seconds": round(time.monotonic() - t0, 3), "processes": k}

        def close(self) -> dict:
            t0 = time.monotonic()
            for c in self.ps:
                c.stdin.write("close\n")
                c.stdin.flush()
            lines = [json.loads(c.stdout.readline()) for c in self.ps]
            for c in self.ps:
                c.wait(60)
            return {"closed": sum(x["closed"] for x in lines), "seconds": round(time.monotonic() - t0, 3)}

    def snapshot(name: str, hd: Hdrlog) -> None:
        tr = tracker()
        out[name] = {"rss_kb": rss_kb(hd.pid), "hwm_kb": hwm_kb(hd.pid), "anon_kb": rss_kb(hd.pid, "RssAnon"),
                     "file_kb": rss_kb(hd.pid, "RssFile"), "tracked_conns": tr["conns"], "fd_cache": tr["fds"],
                     "closed": tr["counts"]["closed"], "expired": tr["counts"]["expired"], "t": time.time()}
        log(f"rss {name:22s} hdrlog VmRSS {out[name]['rss_kb'] / 1024:6.1f} MiB, tracked connections "
            f"{tr['conns']}, closed {tr['counts']['closed']}, expired {tr['counts']['expired']}")

    try:
        # a) default idle timeout (300 s): 10k connections tracked, then closed
        hd = Hdrlog(env, "rss", [ng.master], cpus=None, instrumented=True,
                    env_extra={"HDRLOG_BENCH_STATS": str(stats)})
        snapshot("attached", hd)
        c = Clients(n)
        out["client_open"] = c.opened
        time.sleep(1.0)
        snapshot("open", hd)
        out["client_closed"] = c.close()
        wait_for(lambda: json.loads(stats.read_text())["conns"] < 100, 30, "tracker forgetting closed connections")
        snapshot("closed", hd)
        res = hd.stop()
        out["messages"] = res["messages"]
        out["lost_events"] = res["lost_events"]
        out["loss_records"] = res["loss_list"]
        # b) idle expiry: the tracker's timeout set to a.idle_s; connections stay open but idle
        stats.unlink()
        hd = Hdrlog(env, "rss-idle", [ng.master], cpus=None, instrumented=True,
                    env_extra={"HDRLOG_BENCH_STATS": str(stats), "HDRLOG_BENCH_IDLE_S": str(a.idle_s)})
        t_open = time.time()
        c = Clients(a.idle_conns)
        out["idle_client_open"] = c.opened
        snapshot("idle-open", hd)
        wait_for(lambda: json.loads(stats.read_text())["conns"] == 0, a.idle_s + 60, "idle expiry")
        out["idle_expired_after_s"] = round(time.time() - t_open, 1)
        snapshot("idle-expired", hd)
        c.close()
        time.sleep(1.0)
        snapshot("idle-closed", hd)
        hd.stop()
    finally:
        ng.stop()
    out["loadavg_after"] = loadavg()
    out["idle_timeout_s"] = a.idle_s
    out["rss_open_mb"] = out["open"]["rss_kb"] / 1024
    out["rss_added_mb"] = (out["open"]["rss_kb"] - out["attached"]["rss_kb"]) / 1024
    out["per_conn_kb"] = (out["open"]["rss_kb"] - out["attached"]["rss_kb"]) / max(1, out["open"]["tracked_conns"])
    return out


def print_rss(r: dict) -> None:
    print(f"\n== consumer RSS, {r['connections']} concurrent TLS connections (one request each), "
          f"client opened {r['client_open']['ok']} ({r['client_open']['errors']} errors) in {r['client_open']['seconds']}s")
    for k in ("attached", "open", "closed", "idle-open", "idle-expired", "idle-closed"):
        s = r.get(k)
        if s:
            print(f"{k:14s} VmRSS {s['rss_kb'] / 1024:7.1f} MiB (anon {s['anon_kb'] / 1024:5.1f}, file "
                  f"{s['file_kb'] / 1024:5.1f})  tracked connections {s['tracked_conns']:6d}  "
                  f"closed {s['closed']:6d}  expired {s['expired']:6d}")
    print(f"added with {r['open']['tracked_conns']} tracked: {r['rss_added_mb']:.1f} MiB ({r['per_conn_kb']:.2f} KiB per "
          f"connection); idle timeout {r['idle_timeout_s']}s: all expired {r.get('idle_expired_after_s')}s after opening")
