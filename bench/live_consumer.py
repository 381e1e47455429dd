#!/usr/bin/env python3
"""`hdrlog attach`, unchanged, with the ring reader's path chosen and its counts written out (bench use only).

  python bench/live_consumer.py attach --pid PID ...    (same arguments as `hdrlog`)

Environment:
  HDRLOG_LIVE_RING=py|c     py: force the Python ring walk (ringbuf.RingReader.fast = False); c (default): the C
                            walk when the extension is built
  HDRLOG_LIVE_GAP_MS=MS     experiment: after a non-empty batch, sleep until MS have passed since the poll began
  HDRLOG_LIVE_STATS=FILE    at the end, write {"records", "batches", "messages", "path", "cpu_s"} to FILE: the
                            reader's counts (records and consume() calls) and the messages the pipeline emitted
  HDRLOG_LIVE_GC=1          time the garbage collector (gc.callbacks): "gc_s", "gc_runs" per generation, and
                            "gc_objects" (objects tracked once attached); HDRLOG_LIVE_GC=freeze also gc.freeze()s
                            what exists once the pipeline is up (the loader's and bcc's objects)
  HDRLOG_LIVE_REPLAY=EVENTS  once the session is over, replay EVENTS (--record-events of an earlier run) in this
                            process through a fresh pipeline (bench/live_replay.py's round) and add its CPU per
                            message as "replay_us_per_msg": the same process and CPU, no ring and no sleeping
  HDRLOG_LIVE_TIMING=1      also time every consume() call (thread CPU time) and add to FILE "consume_cpu_s" and
                            a least-squares fit of one batch's CPU = fixed + per_record * records ("fit_us"), and
                            the CPU seconds of the session loop's other calls ("parts_cpu_s": poll (consume
                            included), flush, _rescan, _check_loss, stats, expire);
                            with HDRLOG_LIVE_PER_RECORD=1 also every record's callback ("per_record_us": mean,
                            median µs and count by the record's position in its batch: 0-3, 4-7, 8-15, 16-31, 32+;
                            with the Python loop only: the C walk dispatches the pipeline's records itself)

Apart from HDRLOG_LIVE_GAP_MS and the timing (which costs a little), nothing else is changed: the same Session,
pipeline, sink and signals run as with `hdrlog attach`.
"""

from __future__ import annotations

import json
import os
import sys
import time


def _fit(samples: list[tuple[int, int]]) -> dict:
    """Least squares of ns = a + b * records over the timed batches, in µs."""
    n = len(samples)
    mx = sum(x for x, _ in samples) / n
    my = sum(y for _, y in samples) / n
    sxx = sum((x - mx) ** 2 for x, _ in samples)
    b = sum((x - mx) * (y - my) for x, y in samples) / sxx if sxx else 0.0
    return {"fixed": (my - b * mx) / 1e3, "per_record": b / 1e3, "mean_records": mx}


def main() -> int:
    from hdrlog import cli, loader, ringbuf, session

    path = os.environ.get("HDRLOG_LIVE_RING", "c")
    if path == "py":
        ringbuf.RingReader.fast = False
    gap = float(os.environ.get("HDRLOG_LIVE_GAP_MS", "0")) / 1000
    if gap:  # experiment: after a batch, wait until gap has passed since it began (bigger, fewer batches)
        orig_poll = loader.ProbeSet.poll

        def poll(self, timeout_ms):
            t0 = time.monotonic()
            n = orig_poll(self, timeout_ms)
            if n:
                rest = gap - (time.monotonic() - t0)
                if rest > 0:
                    time.sleep(rest)
            return n

        loader.ProbeSet.poll = poll
    stats_path = os.environ.get("HDRLOG_LIVE_STATS")
    if stats_path:
        orig_close, orig_summary = loader.ProbeSet.close, session.Session.summary
        seen: dict = {}

        timing = os.environ.get("HDRLOG_LIVE_TIMING") == "1"
        samples: list[tuple[int, int]] = []
        per_record: list[tuple[int, int]] = []
        if timing:
            orig_open = loader.ProbeSet.open

            def open_(self, callback):
                orig_open(self, callback)
                r = self.reader
                consume, clock = r.consume, time.thread_time_ns

                def timed():
                    t0 = clock()
                    n = consume()
                    if n:
                        samples.append((n, clock() - t0))
                    return n

                r.consume = timed
                if os.environ.get("HDRLOG_LIVE_PER_RECORD"):
                    cb = r.callback
                    pos = [0]

                    def timed_cb(raw):
                        t0 = clock()
                        cb(raw)
                        per_record.append((pos[0], clock() - t0))
                        pos[0] += 1

                    def timed2():
                        pos[0] = 0
                        return timed()

                    r.callback = timed_cb
                    r.consume = timed2

            loader.ProbeSet.open = open_
            # the session loop's other work, CPU seconds each (thread time)
            parts: dict[str, float] = {}
            seen["parts_cpu_s"] = parts

            def timed_method(cls, name):
                orig = getattr(cls, name)

                def f(self, *a, **kw):
                    t0 = time.thread_time()
                    try:
                        return orig(self, *a, **kw)
                    finally:
                        parts[name] = parts.get(name, 0.0) + time.thread_time() - t0

                setattr(cls, name, f)

            for cls, name in ((session.Session, "_rescan"), (session.Session, "_check_loss"),
                              (loader.ProbeSet, "stats"), (loader.ProbeSet, "poll")):
                timed_method(cls, name)
            orig_sp2 = session.Session._start_pipeline

            def start_pipeline2(self, redactor):
                orig_sp2(self, redactor)
                sink, tracker = self.sink, self.pipeline.tracker
                for obj, name in ((sink, "flush"), (tracker, "expire")):
                    orig = getattr(obj, name)

                    def f(*a, _orig=orig, _name=name, **kw):
                        t0 = time.thread_time()
                        try:
                            return _orig(*a, **kw)
                        finally:
                            parts[_name] = parts.get(_name, 0.0) + time.thread_time() - t0

                    setattr(obj, name, f)

            session.Session._start_pipeline = start_pipeline2

        def close(self):
            r = getattr(self, "reader", None)
            if r is not None:
                seen.update(records=r.records, batches=r.batches,
                            path="c" if getattr(r, "_walk", None) is not None else "py")
            return orig_close(self)

        def summary(self):
            orig_summary(self)
            seen["messages"] = sum(self.pipeline.messages_by_pid.values())
            seen["cpu_s"] = time.process_time()
            if "gc" in seen:
                g = seen.pop("gc")
                seen["gc_s"], seen["gc_runs"] = g["s"] / 1e9, g["runs"]
            rp = os.environ.get("HDRLOG_LIVE_REPLAY")
            if rp:
                sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
                import live_replay
                from hdrlog.replay import read_events

                meta, raws = read_events(rp)
                raws = [bytes(r) for r in raws]
                wall = int(meta.get("wall_offset_ns", 0))
                out = []
                for _ in range(3):
                    dt, msgs = live_replay.one_round(raws, wall, "/dev/null", 64)
                    out.append(dt * 1e6 / max(1, msgs))
                seen["replay_us_per_msg"] = sorted(out)[1]
            if per_record:
                import statistics
                buckets: dict = {}
                for i, ns in per_record:
                    k = i if i < 4 else 4 if i < 8 else 8 if i < 16 else 16 if i < 32 else 32
                    buckets.setdefault(k, []).append(ns)
                seen["per_record_us"] = {str(k): [round(statistics.mean(v) / 1e3, 2), round(statistics.median(v) / 1e3, 2), len(v)] for k, v in sorted(buckets.items())}
            if samples:
                seen["consume_cpu_s"] = sum(t for _, t in samples) / 1e9
                seen["consume_batches"] = len(samples)
                seen["fit_us"] = _fit(samples)
            with open(stats_path, "w") as f:
                json.dump(seen, f)

        loader.ProbeSet.close, session.Session.summary = close, summary
        gcmode = os.environ.get("HDRLOG_LIVE_GC")
        if gcmode:
            import gc

            gct = {"t0": 0, "s": 0, "runs": [0, 0, 0]}

            def cb(phase, info):
                if phase == "start":
                    gct["t0"] = time.perf_counter_ns()
                else:
                    gct["s"] += time.perf_counter_ns() - gct["t0"]
                    gct["runs"][info["generation"]] += 1

            orig_sp = session.Session._start_pipeline

            def start_pipeline(self, redactor):
                orig_sp(self, redactor)
                seen["gc_objects"] = len(gc.get_objects())
                if gcmode == "freeze":
                    gc.freeze()
                gct["s"], gct["runs"] = 0, [0, 0, 0]
                gc.callbacks.append(cb)
                seen["gc"] = gct

            session.Session._start_pipeline = start_pipeline
    return cli.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
