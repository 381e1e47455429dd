"""The C ring walk (hdrlog._ringfast.walk) against RingReader.consume's Python loop, on ring images in memory:
the same records handed over, the same consumer position published, the same counts, exceptions and output.

Ring images are laid out as the kernel lays them (kernel/bpf/ringbuf.c): a consumer page, a producer page, then
the data area twice in a row; records u32 len (bit 31 busy, bit 30 discarded), u32 page offset, data, padded
to 8. The kernel's own ring is covered by tests/test_ringbuf.py (both paths) and the tests/test_kernel_*.py.
"""

from __future__ import annotations

import gc
import mmap
import struct
import sys
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import LinesSink
from hdrlog import events, ringbuf
from hdrlog.pipeline import Pipeline
from hdrlog.redact import Redactor
from hdrlog.replay import read_events

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = sorted((ROOT / "fixtures").glob("*.events.jsonl"))
PAGE = mmap.PAGESIZE
BUSY, DISCARD = ringbuf.BUSY, ringbuf.DISCARD

needs_c = pytest.mark.skipif(ringbuf._walk is None, reason="hdrlog._ringfast not built")


def image(recs: list[tuple[int, bytes]], size: int = PAGE, start: int = 0):
    """(consumer page, producer page + data twice) holding recs (flags, payload) from position start."""
    area = bytearray(size)
    pos = start
    for flags, payload in recs:
        blob = struct.pack("<II", len(payload) | flags, 0) + payload
        blob += b"\0" * (-len(blob) % 8)
        assert pos - start + len(blob) <= size, "the records do not fit the ring"
        for i, b in enumerate(blob):
            area[(pos + i) & (size - 1)] = b
        pos += len(blob)
    cons, data = mmap.mmap(-1, PAGE), mmap.mmap(-1, PAGE + 2 * size)
    data[PAGE:PAGE + size] = bytes(area)
    data[PAGE + size:] = bytes(area)
    struct.pack_into("<Q", data, 0, pos)
    struct.pack_into("<Q", cons, 0, start)
    return cons, data


def reader(fast: bool, recs, cb, size: int = PAGE, start: int = 0) -> ringbuf.RingReader:
    cons, data = image(recs, size, start)
    saved = ringbuf.RingReader.fast
    ringbuf.RingReader.fast = fast
    try:
        r = ringbuf.RingReader.over(cons, data, size, cb)
    finally:
        ringbuf.RingReader.fast = saved
    assert (r._walk is not None) == fast
    return r


def cons_pos(r: ringbuf.RingReader) -> int:
    return struct.unpack_from("<Q", r._cons, 0)[0]


def run_both(recs, size: int = PAGE, start: int = 0, calls: int = 2):
    """Per path: the payloads handed over, consume()'s results, the published position, records, batches."""
    out = []
    for fast in (False, True):
        got: list[bytes] = []
        r = reader(fast, recs, lambda v: got.append(bytes(v)), size, start)
        rets = [r.consume() for _ in range(calls)]
        out.append((got, rets, cons_pos(r), r.records, r.batches))
        r.close()
    return out


def test_switch_forces_the_python_loop():
    r = reader(False, [(0, b"a")], lambda v: None)
    assert r._walk is None
    r.close()


@needs_c
def test_busy_discarded_empty_and_odd_lengths_across_the_wrap():
    recs = [(0, b"abc"), (DISCARD, b"discarded!"), (0, b"x" * 101), (0, b""), (0, b"\xff" * 7),
            (BUSY, b"busy"), (0, b"after the busy one")]
    py, c = run_both(recs, start=PAGE - 16)  # the first record straddles the end of the data area
    assert py == c
    got, rets, pos, records, batches = c
    assert got == [b"abc", b"x" * 101, b"", b"\xff" * 7]
    assert rets == [4, 0] and records == 4 and batches == 2  # the busy record holds the rest back
    assert pos == PAGE - 16 + 16 + 24 + 112 + 8 + 16


@needs_c
def test_empty_ring_is_not_a_batch():
    py, c = run_both([])
    assert py == c == ([], [0, 0], 0, 0, 0)


@needs_c
def test_a_busy_first_record_is_an_empty_batch():
    py, c = run_both([(BUSY, b"x"), (0, b"y")])
    assert py == c
    assert c[1] == [0, 0] and c[2] == 0 and c[4] == 2


record = st.tuples(st.sampled_from([0, 0, 0, DISCARD, BUSY]), st.binary(max_size=300))


@needs_c
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(record, max_size=30), st.integers(0, 2 * PAGE - 1), st.integers(0, 3))
def test_random_rings_walk_identically(recs, start, pages_log2):
    size = PAGE << pages_log2
    total = sum((len(p) + 8 + 7) & ~7 for _, p in recs)
    if total > size:
        recs = recs[:len(recs) // 2]
        if sum((len(p) + 8 + 7) & ~7 for _, p in recs) > size:
            return
    start &= ~7  # the kernel's positions are multiples of 8
    py, c = run_both(recs, size, start, calls=1)
    assert py == c


class Boom(Exception):
    pass


@needs_c
@pytest.mark.parametrize("fail_at", [0, 2, 4])
def test_a_callback_that_raises_publishes_past_its_record(fail_at):
    recs = [(0, bytes([i]) * (i + 1)) for i in range(5)]
    results = []
    for fast in (False, True):
        got: list[bytes] = []

        def cb(v, got=got):
            if len(got) == fail_at and not getattr(cb, "failed", False):
                cb.failed = True
                raise Boom(bytes(v))
            got.append(bytes(v))

        r = reader(fast, recs, cb)
        with pytest.raises(Boom) as ei:
            r.consume()
        after_raise = (list(got), cons_pos(r), r.records, r.batches, ei.value.args)
        ei = None
        n = r.consume()  # the rest: the record that raised is not read again
        results.append((after_raise, n, got, cons_pos(r), r.records, r.batches))
        r.close()
    assert results[0] == results[1]
    (before, _, _, _, args), n, got, pos, records, _ = results[1]
    assert args == (bytes([fail_at]) * (fail_at + 1),)
    assert n == 4 - fail_at and len(got) == 4 and records == 4 - fail_at


@needs_c
def test_walk_checks_its_arguments():
    cons, data = image([(0, b"x")])
    view = memoryview(data)
    cpos = memoryview(cons).cast("B").cast("Q")
    with pytest.raises(TypeError):
        ringbuf._walk(cpos, view, PAGE, PAGE - 1)
    with pytest.raises(ValueError):  # a mask beyond the data area
        ringbuf._walk(cpos, view, PAGE, 4 * PAGE - 1, print)
    with pytest.raises(ValueError):  # base past the buffer
        ringbuf._walk(cpos, view, 10 * PAGE, PAGE - 1, print)
    with pytest.raises(BufferError):  # the consumer page must be writable
        ringbuf._walk(b"\0" * 8, view, PAGE, PAGE - 1, print)
    assert cons_pos_raw(cons) == 0  # nothing was consumed by the refused calls
    cpos[0] = 6  # a position the kernel never makes (not a multiple of 8): refused, not read unaligned
    with pytest.raises(ValueError):
        ringbuf._walk(cpos, view, PAGE, PAGE - 1, print)
    assert cons_pos_raw(cons) == 6
    cpos.release()
    view.release()


def cons_pos_raw(cons) -> int:
    return struct.unpack_from("<Q", cons, 0)[0]


@needs_c
def test_no_references_leak_and_close_unmaps():
    recs = [(0, b"r" * 50), (DISCARD, b"d"), (0, b"s" * 3)]
    seen = []

    def cb(v):
        seen.append(len(v))

    r = reader(True, recs, cb)
    view = r._view
    r.consume()
    cb_refs, view_refs = sys.getrefcount(cb), sys.getrefcount(view)
    for _ in range(3000):
        r._cons_pos[0] = 0
        assert r.consume() == 2
    assert sys.getrefcount(cb) == cb_refs and sys.getrefcount(view) == view_refs
    seen.clear()
    tracemalloc.start()
    for i in range(3000):
        r._cons_pos[0] = 0
        r.consume()
        if i == 100:
            seen.clear()
            gc.collect()
            snap = tracemalloc.take_snapshot()
    seen.clear()
    gc.collect()
    grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(snap, "filename"))
    tracemalloc.stop()
    assert grown < 16 * 1024, grown
    del view
    r.close()  # no slice is held: the mappings close
    assert r._data.closed


@needs_c
def test_a_slice_kept_past_its_call_keeps_the_mapping():
    kept = []
    r = reader(True, [(0, b"keep me")], kept.append)
    r.consume()
    r.close()  # the kept slice holds the export: close leaves the mapping to the garbage collector
    assert bytes(kept[0]) == b"keep me"


# -- the pipeline's dispatch: decode and tracker.on_event from C, on_raw for the rest -----------------------------
KEY = b"k" * 32


def pipeline_output(fast: bool, raws: list[bytes], batch: int, **kw) -> tuple:
    events._addr_cache.clear()  # the first events of each run go through the Python decode (None from C)
    events._comm_cache.clear()
    sink = LinesSink()
    forks: list = []
    pipe = Pipeline(sink, Redactor(key=KEY), lib_of_pid=lambda pid: "openssl", max_bytes=16384,
                    wall_offset_ns=1_700_000_000_000_000_000, on_fork=lambda *a: forks.append(a), **kw)
    recs = [(0, r) for r in raws]
    size = PAGE
    while size < sum((len(r) + 15) & ~7 for r in raws) + 8:
        size *= 2
    r = reader(fast, recs, pipe.on_raw, size)
    if fast:
        assert (r._dispatch is not None) and ((r._dispatch() is None) == bool(kw))
    ends, pos = [], 0
    for raw in raws:
        pos += (len(raw) + 15) & ~7
        ends.append(pos)
    end = struct.unpack_from("<Q", r._data, 0)[0]
    prod = r._prod_pos
    for m in ends[batch - 1::batch] + [end]:
        prod[0] = m
        r.consume()
    r.close()
    return (sink.lines, forks, dict(pipe.messages_by_pid), pipe.truncated, pipe.decode_errors,
            dict(pipe.tracker.counts), r.records, r.batches)


@needs_c
@pytest.mark.skipif(events.c_decode is None, reason="hdrlog._h1fast not built")
@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
@pytest.mark.parametrize("batch", [1, 7, 64])
def test_fixtures_through_the_pipeline_identically(path, batch):
    raws = [bytes(x) for x in read_events(str(path))[1]]
    py = pipeline_output(False, raws, batch)
    assert pipeline_output(True, raws, batch) == py
    assert py[0], "the fixture made no records"


def fork_event(pid: int, child: int) -> bytes:
    return events.EVENT_HEADER.pack(1, child, pid, pid, 0, 0, 0, 0, int(events.Kind.FORK), 0, 0, 0,
                                    0, 0, 0, 0, b"\0" * 16, b"\0" * 16, b"nginx".ljust(16, b"\0"), -1)


@needs_c
@pytest.mark.skipif(events.c_decode is None, reason="hdrlog._h1fast not built")
def test_forks_short_records_and_taps_go_through_on_raw():
    raws = [bytes(x) for x in read_events(str(FIXTURES[-1]))[1]]
    mixed = raws[:2] + [fork_event(10, 11), b"short"] + raws[2:] + [fork_event(12, 13)]
    py = pipeline_output(False, mixed, 5)
    c = pipeline_output(True, mixed, 5)
    assert c == py
    assert c[1] == [(10, 11), (12, 13)] and c[4] == 1  # both forks seen, the short record counted
    taps: list = []
    with_tap = pipeline_output(True, mixed, 5, tap=lambda ev, tr: taps.append(ev.conn))
    assert with_tap == py and len(taps) == len(mixed) - 3  # every decoded non-fork event tapped
