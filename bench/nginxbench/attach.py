"""Part 4 of the nginx bench: seconds from starting `hdrlog attach` to its `attached` line."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import time

from .common import Env, free_port, loadavg, log, rss_kb, stop_proc, wait_for
from .procs import Hdrlog, Nginx

TARGETS_S = {"nginx": 1.0, "node": 2.0, "go": 2.0}  # issue #3: libssl 1 s, node and Go 2 s
CADDYFILE = """\
{{
	admin off
	auto_https disable_redirects
	http_port {http_port}
	https_port {port}
	storage file_system {data}
	log {{
		output discard
	}}
}}
https://127.0.0.1:{port} {{
	bind 127.0.0.1
	tls {cert} {key}
	respond "ok"
}}
"""


def start_caddy(env: Env) -> subprocess.Popen | None:
    """Debian's caddy (a stripped go1.19 binary: symbols from .gopclntab) serving TLS, or None if absent."""
    caddy = shutil.which("caddy")
    if not caddy:
        return None
    d = env.tmp / "caddy"
    d.mkdir()
    port = free_port()
    (d / "Caddyfile").write_text(CADDYFILE.format(http_port=free_port(), port=port, data=d / "data", cert=env.cert,
                                                  key=env.key))
    xdg = {"HOME": str(d), "XDG_DATA_HOME": str(d / "xdg-data"), "XDG_CONFIG_HOME": str(d / "xdg-config")}
    p = subprocess.Popen([caddy, "run", "--config", str(d / "Caddyfile"), "--adapter", "caddyfile"],
                         env={**os.environ, **xdg}, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env.procs.append(p)

    def up() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            return False

    wait_for(up, 15, "caddy start", p)
    return p


# -- part 4: attach latency -----------------------------------------------------------------------
def time_attach(env: Env, pid: int, name: str, reps: int) -> dict:
    times = []
    for i in range(reps):
        la = loadavg()
        hd = Hdrlog(env, f"attach-{name}-{i}", [pid], cpus=None)
        times.append(hd.attach_s)
        hd.stop()
        log(f"attach {name}: {hd.attach_s:.3f}s (load {la})")
    # one more through the instrumented entry point, split into phases
    hd = Hdrlog(env, f"attach-{name}-phases", [pid], cpus=None, instrumented=True,
                env_extra={"HDRLOG_BENCH_PHASES": "1"})
    text = hd.stderr()
    phases = {m.group(1): float(m.group(2)) for m in re.finditer(r"bench-phase (\S+) ([\d.]+)", text)}
    phase_rss_kb = {m.group(1): int(m.group(2)) for m in re.finditer(r"bench-phase (\S+) \S+ rss_kb=(\d+)", text)}
    phase_rss_kb["attached"] = rss_kb(hd.pid)
    phases["attached-line"] = hd.attach_s
    attached_line = next((ln for ln in hd.stderr().splitlines() if "attached to" in ln), "")
    hd.stop()
    return {"seconds": times, "median_s": statistics.median(times), "phases": phases, "phase_rss_kb": phase_rss_kb,
            "attached_line": attached_line}


def part_attach(env: Env, a) -> dict:
    out = {"loadavg_before": loadavg()}
    ng = Nginx(env, "attach", workers=1, affinity="")
    try:
        out["nginx"] = time_attach(env, ng.master, "nginx", a.attach_reps)
    finally:
        ng.stop()
    if shutil.which("node"):
        node = subprocess.Popen(["node", "-e", "require('https');setInterval(()=>{},1000)"])
        env.procs.append(node)
        try:
            time.sleep(0.5)
            out["node"] = time_attach(env, node.pid, "node", a.attach_reps)
        finally:
            stop_proc(node, signal.SIGTERM, 10)
    caddy = start_caddy(env)
    if caddy is not None:
        try:
            out["go"] = time_attach(env, caddy.pid, "go", a.attach_reps)
        finally:
            stop_proc(caddy, signal.SIGTERM, 10)
    out["loadavg_after"] = loadavg()
    return out


def print_attach(r: dict) -> None:
    print("\n== `attached` latency (start of `hdrlog attach` to its `attached` line)")
    for k, target in TARGETS_S.items():
        if k in r:
            x = r[k]
            ph = x["phases"]
            print(f"{k:6s} median {x['median_s']:.2f}s (target {target:.0f}s) runs "
                  f"{', '.join(f'{t:.2f}' for t in x['seconds'])}; phases from process start: main "
                  f"{ph.get('main', 0):.2f}s, compile {ph.get('compile-start', 0):.2f}-{ph.get('compile-end', 0):.2f}s, "
                  # hdrlog_instrumented's "attach-start" is ProbeSet.open: since b9d00f8 the session opens the
                  # ring (and starts its pipeline) once the probes are attached and the line is out
                  f"ring opened at {ph.get('attach-start', 0):.2f}s")
