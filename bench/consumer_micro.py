#!/usr/bin/env python3
"""Consumer CPU per message, stage by stage, without a kernel: recorded events replayed at steady state.

  .venv/bin/python bench/consumer_micro.py [--reps 5000] [--rounds 7] [--profile OUT.prof]
  .venv/bin/python bench/consumer_micro.py --ab /tmp/base/src/hdrlog   (in-process A/B against another tree)

One keep-alive exchange of fixtures/python_ssl_server_keepalive.events.jsonl (the GET /api/users request,
its response header block and its body: 3 events, 2 messages, one secret header each way) is repeated
--reps times on one connection, each copy with its own timestamps (50 µs apart), fed as memoryviews like
ringbuf.RingReader hands them over. Each stage adds one layer to the previous one, so the difference
between two lines is what that layer costs:

  decode    events.decode only
  track     + conntrack.Tracker (HTTP/1 parsing, pairing, MCP body hook), messages dropped
  record    + records.http_record (redaction) via pipeline.Pipeline, records dropped
  observe   + output.OutputSink with the default end-of-run statistics observer (stats.Stats)
  full      + JsonlSink (orjson) onto /dev/null, flushed every 64 events: what `hdrlog attach
              --output /dev/null` runs per message (no filter, stats on)
  full-nostats  the same with --no-stats

Rounds of all stages are interleaved; medians are printed (the machine may be shared: look at the load).

--varied makes every exchange differ the way real traffic does, so that memos keyed on values (the redaction
memo of markers and redacted values, caches of paths) miss as they would: a unique X-Request-Id, another query
string, Authorization, Cookie and Set-Cookie values never seen before, the Date header of each simulated second
(~6,700 exchanges a second at 50 µs between events) and bodies of 1 to 7 users (another Content-Length); the
request gains a Cookie header. The default (one exchange repeated) is what the README's figures use.

--ab DIR compares this tree with another one (DIR: its src/hdrlog, e.g. from `git archive`) in one process: DIR
is copied as package hdrlog_base, and every round runs each stage on both trees, alternating which goes first.
On a shared machine whose speed drifts by tens of percent over minutes, the paired differences (new − base,
same round) are much steadier than two processes' medians.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import re
import shutil
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from hdrlog import events  # noqa: E402
from hdrlog.conntrack import Tracker  # noqa: E402
from hdrlog.mcp import Mcp  # noqa: E402
from hdrlog.output import OutputSink  # noqa: E402
from hdrlog.pipeline import Pipeline  # noqa: E402
from hdrlog.redact import Redactor  # noqa: E402
from hdrlog.replay import read_events  # noqa: E402
from hdrlog.sinks import JsonlSink  # noqa: E402
from hdrlog.stats import Stats  # noqa: E402

FIXTURE = ROOT / "fixtures" / "python_ssl_server_keepalive.events.jsonl"
PICK = (1, 2, 3)  # GET request, response header block, response body (one connection)
MSGS_PER_REP = 2
FLUSH_EVERY = 64
KEY = b"k" * 32  # a fixed redaction key: the bench must not depend on /var/lib/hdrlog


def workload(reps: int, varied: bool = False) -> tuple[list[bytes], list[bytes], int]:
    meta, raws = read_events(str(FIXTURE))
    raws = list(raws)
    wall = int(meta.get("wall_offset_ns", 0))
    base = [bytes(raws[i]) for i in PICK]
    ts0 = struct.unpack_from("<Q", base[0])[0]
    out = []
    t = ts0
    for n in range(reps):
        copies = vary(base, n, t + wall) if varied else base
        for b in copies:
            r = bytearray(b)
            struct.pack_into("<Q", r, 0, t)
            t += 50_000
            out.append(bytes(r))
    handshake = bytes(raws[0])
    return [handshake], out, wall


def vary(base: list[bytes], n: int, wall_ns: int) -> list[bytes]:
    """Exchange n of --varied: the fixture's three events with what differs between real requests changed: a
    unique X-Request-Id, another query, Authorization, Cookie and Set-Cookie values never seen before, the Date
    of the (simulated) second, a body of 1 to 7 users (another Content-Length)."""
    token = f"{(n * 2654435761) % (1 << 32):08x}{n:06d}"
    req = (f"GET /api/users?id={n}&fields=name HTTP/1.1\r\nHost: 127.0.0.1:41225\r\nAccept-Encoding: identity\r\n"
           f"Accept: application/json\r\nAuthorization: Bearer tok-{token}\r\nCookie: sid=c{token}; theme=dark\r\n"
           f"X-Request-Id: fx-{n}\r\nUser-Agent: hdrlog-demo-client/1\r\n\r\n").encode()
    body = ('{"users": [' + ", ".join(f'{{"id": {n + i}, "name": "ada"}}' for i in range(1 + n % 7)) + "]}").encode()
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(wall_ns // 1_000_000_000))
    head = (f"HTTP/1.1 200 OK\r\nServer: hdrlog-demo-gateway/1 Python/3.11.2\r\nDate: {date}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nX-Request-Id: fx-{n}\r\n"
            f"Cache-Control: no-store\r\nSet-Cookie: session=s{token}; HttpOnly\r\n\r\n").encode()
    out = []
    for raw, data in zip(base, (req, head, body)):
        fields = list(events.EVENT_HEADER.unpack_from(raw))
        fields[4] = fields[5] = len(data)  # len, cap
        out.append(events.EVENT_HEADER.pack(*fields) + data)
    return out


class NullSink:
    written = 0

    def write(self, rec) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


THIS = {"events": events, "Tracker": Tracker, "Mcp": Mcp, "OutputSink": OutputSink, "Pipeline": Pipeline,
        "Redactor": Redactor, "JsonlSink": JsonlSink, "Stats": Stats}


def load_tree(pkg_dir: str, name: str = "hdrlog_base") -> dict:
    """The classes run_stage uses, from another tree's src/hdrlog copied as package `name` (imports renamed)."""
    root = tempfile.mkdtemp(prefix="consumer_micro_")
    dst = os.path.join(root, name)
    shutil.copytree(pkg_dir, dst, ignore=shutil.ignore_patterns("__pycache__"))
    for d, _, files in os.walk(dst):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(d, f)
                with open(path) as fh:
                    text = fh.read()
                text = re.sub(r"\bhdrlog\.", name + ".", text)
                text = re.sub(r"\bfrom hdrlog import\b", f"from {name} import", text)
                text = re.sub(r"^import hdrlog\b", f"import {name}", text, flags=re.M)
                with open(path, "w") as fh:
                    fh.write(text)
    sys.path.insert(0, root)
    mod = lambda m: importlib.import_module(f"{name}.{m}")  # noqa: E731
    return {"events": mod("events"), "Tracker": mod("conntrack").Tracker, "Mcp": mod("mcp").Mcp,
            "OutputSink": mod("output").OutputSink, "Pipeline": mod("pipeline").Pipeline,
            "Redactor": mod("redact").Redactor, "JsonlSink": mod("sinks").JsonlSink, "Stats": mod("stats").Stats}


def feed_timed(feed, flush, views, batch: int = FLUSH_EVERY) -> float:
    """CPU seconds to feed the views one by one, flushing every `batch` records as the ring reader's batches would:
    the loop every in-process bench here times (bench/live_replay.py, bench/ring_micro.py's no-ring control)."""
    t0 = time.process_time()
    i = 0
    for mv in views:
        feed(mv)
        i += 1
        if i == batch:
            i = 0
            flush()
    flush()
    return time.process_time() - t0


def run_stage(stage: str, pre: list[bytes], raws: list[bytes], wall: int, m: dict = THIS) -> float:
    """Seconds of CPU (process time) for feeding `raws` through the stage (of tree `m`, default this one)."""
    events, Tracker, Mcp, OutputSink = m["events"], m["Tracker"], m["Mcp"], m["OutputSink"]  # noqa: N806
    Pipeline, Redactor, JsonlSink, Stats = m["Pipeline"], m["Redactor"], m["JsonlSink"], m["Stats"]  # noqa: N806
    redactor = Redactor(key=KEY)
    sink = None
    if stage == "decode":
        decode = events.decode

        def feed(mv):
            decode(mv, wall)
    elif stage == "track":
        tracker = Tracker(lambda *a: None, lib_of_pid=lambda pid: "openssl", max_bytes=16384, body_hook=Mcp())
        decode, on_event = events.decode, tracker.on_event

        def feed(mv):
            on_event(decode(mv, wall))
    else:
        if stage == "record":
            sink = NullSink()
        elif stage == "observe":
            sink = OutputSink(NullSink(), None, observers=[Stats(headers=False)])
        elif stage == "full":
            sink = OutputSink(JsonlSink("/dev/null"), None, observers=[Stats(headers=False)])
        elif stage == "full-nostats":
            sink = OutputSink(JsonlSink("/dev/null"), None, observers=[None])
        else:
            raise ValueError(stage)
        pipe = Pipeline(sink, redactor, lib_of_pid=lambda pid: "openssl", max_bytes=16384, wall_offset_ns=wall)
        feed = pipe.on_raw
    for raw in pre:
        feed(memoryview(raw))
    views = [memoryview(r) for r in raws]
    flush = sink.flush if sink is not None else (lambda: None)
    dt = feed_timed(feed, flush, views)
    if sink is not None:
        sink.close()
    return dt


STAGES = ("decode", "track", "record", "observe", "full", "full-nostats")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--profile", metavar="OUT", help="cProfile one stage (--profile-stage, default full) once into OUT")
    ap.add_argument("--profile-stage", default="full", choices=STAGES)
    ap.add_argument("--ab", metavar="DIR", help="also run another tree's src/hdrlog, in this process (see above)")
    ap.add_argument("--varied", action="store_true",
                    help="every exchange differs as real traffic does (see above), so that memos do not hit")
    a = ap.parse_args()
    pre, raws, wall = workload(a.reps, a.varied)
    msgs = a.reps * MSGS_PER_REP
    stages = a.stages.split(",")
    if a.profile:
        import cProfile

        cProfile.runctx("run_stage(a.profile_stage, pre, raws, wall)", globals(), locals(), a.profile)
        import pstats

        pstats.Stats(a.profile).sort_stats("tottime").print_stats(25)
        return 0
    if a.ab:
        return ab(load_tree(a.ab), stages, a, pre, raws, wall, msgs)
    load0 = os.getloadavg()
    run_stage("full", pre, raws, wall)  # warm caches (imports, regexes, redaction cache)
    times: dict[str, list[float]] = {s: [] for s in stages}
    for _ in range(a.rounds):
        for s in stages:
            gc.collect()
            times[s].append(run_stage(s, pre, raws, wall) / msgs * 1e6)
    load1 = os.getloadavg()
    mode = " --varied" if a.varied else ""
    print(f"consumer_micro{mode}: {a.reps} exchanges = {msgs} messages ({len(raws)} events) per run, {a.rounds} rounds, "
          f"CPU µs per message (median, min–max); loadavg {load0[0]:.2f} -> {load1[0]:.2f}")
    prev = None
    for s in stages:
        v = times[s]
        med = statistics.median(v)
        delta = "" if prev is None or s == "full-nostats" else f"  (+{med - prev:.2f})"
        print(f"  {s:13s} {med:6.2f} µs/msg  ({min(v):.2f}–{max(v):.2f}){delta}")
        if s != "full-nostats":
            prev = med
    return 0


def ab(base: dict, stages: list[str], a, pre, raws, wall, msgs) -> int:
    load0 = os.getloadavg()
    trees = {"base": base, "this": THIS}
    for m in trees.values():
        run_stage("full", pre, raws, wall, m)  # warm caches
    times: dict[tuple[str, str], list[float]] = {(s, t): [] for s in stages for t in trees}
    for r in range(a.rounds):
        for s in stages:
            for t in (("base", "this") if r % 2 == 0 else ("this", "base")):
                gc.collect()
                times[(s, t)].append(run_stage(s, pre, raws, wall, trees[t]) / msgs * 1e6)
    load1 = os.getloadavg()
    mode = " --varied" if a.varied else ""
    print(f"consumer_micro{mode} A/B in one process: {a.ab} vs this tree, {msgs} messages per run, {a.rounds} rounds, CPU µs "
          f"per message (median, min); loadavg {load0[0]:.2f} -> {load1[0]:.2f}")
    for s in stages:
        b, n = times[(s, "base")], times[(s, "this")]
        d = statistics.median(y - x for x, y in zip(b, n))
        print(f"  {s:13s} base {statistics.median(b):6.2f} ({min(b):.2f})  this {statistics.median(n):6.2f} "
              f"({min(n):.2f})  paired difference {d:+.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
