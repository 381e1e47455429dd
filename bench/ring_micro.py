#!/usr/bin/env python3
"""The ring walk and dispatch in-process: RingReader.consume's Python loop against hdrlog._ringfast's C walk.

  .venv/bin/python bench/ring_micro.py [--events EVENTS.jsonl] [--reps 5000] [--rounds 11] [--batch 64]

The events (consumer_micro's workload by default: the fixture's keep-alive exchange repeated --reps times; or
a live capture's --record-events file) are laid out as a BPF ring image in anonymous memory, and each round
consumes it through a fresh pipeline as `hdrlog attach --output /dev/null` would run it (OutputSink, JsonlSink,
the statistics observer), the producer position advanced --batch records at a time and the sink flushed after
every batch, as session.py's loop does; and, as the control, without a ring (on_raw over a list of memoryviews of
the same image, as consumer_micro feeds it). Rounds rotate which path goes first; process CPU per message; the
medians and the paired differences (c - py, c - list).
"""

from __future__ import annotations

import argparse
import mmap
import statistics
import struct
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from hdrlog import ringbuf  # noqa: E402
from hdrlog.output import OutputSink  # noqa: E402
from hdrlog.pipeline import Pipeline  # noqa: E402
from hdrlog.redact import Redactor  # noqa: E402
from hdrlog.sinks import JsonlSink  # noqa: E402
from hdrlog.stats import Stats  # noqa: E402
from consumer_micro import feed_timed  # noqa: E402

KEY = b"k" * 32
PAGE_OFF = mmap.PAGESIZE


def ring_image(raws: list[bytes]) -> tuple[mmap.mmap, mmap.mmap, int, list[int]]:
    """(consumer page, producer page + data area twice, size, the position after each record)."""
    page = mmap.PAGESIZE
    total = sum((len(r) + 8 + 7) & ~7 for r in raws)
    size = page
    while size < total + 8:
        size *= 2
    area = bytearray(size)
    pos, ends = 0, []
    for r in raws:
        struct.pack_into("<II", area, pos, len(r), 0)
        area[pos + 8:pos + 8 + len(r)] = r
        pos += (len(r) + 8 + 7) & ~7
        ends.append(pos)
    cons = mmap.mmap(-1, page)
    data = mmap.mmap(-1, page + 2 * size)
    data[page:page + size] = bytes(area)
    data[page + size:page + 2 * size] = bytes(area)
    return cons, data, size, ends


def one_round(fast: bool | None, pre: list[bytes], raws: list[bytes], wall: int, batch: int) -> float:
    """fast: the C walk (True), the Python loop (False), or no ring at all (None: on_raw over a list of
    memoryviews, as consumer_micro feeds it)."""
    cons, data, size, ends = ring_image(raws)  # a fresh one: close() unmaps it
    sink = OutputSink(JsonlSink("/dev/null"), None, observers=[Stats(headers=False)])
    pipe = Pipeline(sink, Redactor(key=KEY), lib_of_pid=lambda pid: "openssl", max_bytes=16384, wall_offset_ns=wall)
    for raw in pre:
        pipe.on_raw(memoryview(raw))
    if fast is None:
        views = [memoryview(data)[PAGE_OFF + e - ((len(r) + 15) & ~7) + 8:][:len(r)] for r, e in zip(raws, ends)]
        dt = feed_timed(pipe.on_raw, sink.flush, views, batch)
        views = None
        sink.close()
        return dt * 1e6 / max(1, sum(pipe.messages_by_pid.values()))
    ringbuf.RingReader.fast = fast
    reader = ringbuf.RingReader.over(cons, data, size, pipe.on_raw)
    assert (reader._walk is not None) == fast, "the C walk is not built"
    prod = reader._prod_pos
    reader._cons_pos[0] = 0
    marks = ends[batch - 1::batch] + ([ends[-1]] if len(ends) % batch else [])
    consume, flush = reader.consume, sink.flush
    t0 = time.process_time()
    for m in marks:
        prod[0] = m
        consume()
        flush()
    dt = time.process_time() - t0
    msgs = sum(pipe.messages_by_pid.values())
    reader.close()
    sink.close()
    return dt * 1e6 / max(1, msgs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events")
    ap.add_argument("--reps", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--batch", type=int, default=64)
    a = ap.parse_args()
    if a.events:
        from hdrlog.replay import read_events

        meta, raws = read_events(a.events)
        pre, raws, wall = [], [bytes(r) for r in raws], int(meta.get("wall_offset_ns", 0))
    else:
        import consumer_micro

        pre, raws, wall = consumer_micro.workload(a.reps)
    one_round(True, pre, raws, wall, a.batch)  # warm caches
    paths = (False, True, None)
    res: dict = {p: [] for p in paths}
    for i in range(a.rounds):
        k = i % 3
        for p in paths[k:] + paths[:k]:
            res[p].append(one_round(p, pre, raws, wall, a.batch))
    med = {p: statistics.median(v) for p, v in res.items()}
    d = [c - p for p, c in zip(res[False], res[True])]
    dl = [c - p for p, c in zip(res[None], res[True])]
    print(f"{len(raws)} events, batches of {a.batch}, {a.rounds} rounds: py {med[False]:.2f} µs/msg, c {med[True]:.2f}, "
          f"no ring (on_raw over a list) {med[None]:.2f}; paired c-py median {statistics.median(d):+.2f} µs/msg "
          f"({min(d):+.2f}..{max(d):+.2f}), c-list {statistics.median(dl):+.2f} ({min(dl):+.2f}..{max(dl):+.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
