#!/usr/bin/env python3
"""CPU per message of a live capture's own events replayed in-process: the control for bench/live_ab.py.

  .venv/bin/python bench/live_replay.py EVENTS.jsonl [--rounds 5] [--output null|file] [--batch 64]

EVENTS.jsonl: `hdrlog attach --record-events` of a live run (e.g. `bench/live_ab.py --paths py --rounds 1
--hdrlog-args "--record-events /tmp/ev.jsonl"`). Each round feeds every event, as a memoryview like the ring
reader hands over, to a fresh Pipeline with what `hdrlog attach --output X` runs (OutputSink, JsonlSink, the
statistics observer), flushed every --batch events; process CPU time per message emitted. The difference from
live_ab's figure is what the live setting adds (ring walk, wake-ups, sharing nginx's core), not the traffic.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from hdrlog.output import OutputSink  # noqa: E402
from hdrlog.pipeline import Pipeline  # noqa: E402
from hdrlog.redact import Redactor  # noqa: E402
from hdrlog.replay import read_events  # noqa: E402
from hdrlog.sinks import JsonlSink  # noqa: E402
from hdrlog.stats import Stats  # noqa: E402
from consumer_micro import feed_timed  # noqa: E402

KEY = b"k" * 32


def one_round(raws: list[bytes], wall: int, out: str, batch: int) -> tuple[float, int]:
    sink = OutputSink(JsonlSink(out), None, observers=[Stats(headers=False)])
    pipe = Pipeline(sink, Redactor(key=KEY), lib_of_pid=lambda pid: "openssl", max_bytes=16384, wall_offset_ns=wall)
    dt = feed_timed(pipe.on_raw, sink.flush, [memoryview(r) for r in raws], batch)
    sink.close()
    return dt, sum(pipe.messages_by_pid.values())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("events")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--output", choices=("null", "file"), default="null")
    ap.add_argument("--batch", type=int, default=64)
    a = ap.parse_args()
    meta, raws = read_events(a.events)
    raws = [bytes(r) for r in raws]
    wall = int(meta.get("wall_offset_ns", 0))
    res = []
    for _ in range(a.rounds):
        if a.output == "file":
            with tempfile.NamedTemporaryFile(prefix="live_replay_", suffix=".jsonl") as f:
                dt, msgs = one_round(raws, wall, f.name, a.batch)
        else:
            dt, msgs = one_round(raws, wall, "/dev/null", a.batch)
        res.append(dt * 1e6 / max(1, msgs))
        print(f"{len(raws)} events, {msgs} messages: {res[-1]:.2f} µs/msg", flush=True)
    print(f"median {statistics.median(res):.2f} µs/msg ({a.output}, flush every {a.batch})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
