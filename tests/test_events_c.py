"""The C event decoder (hdrlog._h1fast.decode_event) against the Python one (events.decode_py): the same Event for
every fixture event and for random records, None (the Python decode then runs) whenever it cannot be sure."""

import random
from pathlib import Path

import pytest

from hdrlog import events, http1_fast
from hdrlog.replay import read_events

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = sorted((ROOT / "fixtures").glob("*.events.jsonl"))
HDR = events.EVENT_HEADER.size

needs_c = pytest.mark.skipif(events.c_decode is None, reason="hdrlog._h1fast not built")


def c_dec(raw, off=events.WALL_OFFSET_NS):
    return events.c_decode(raw, off, events.Event, events._addr_cache, events._comm_cache)


def test_c_decoder_built_with_the_extension():
    # the extension that has parse_head has decode_event too: a stale build would silently lose it
    if http1_fast.parse_head is not None:
        assert events.c_decode is not None
        assert events.decode is not events.decode_py


@needs_c
@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_fixture_events_decode_identically(path):
    _, raws = read_events(str(path))
    n = 0
    for raw in raws:
        for r in (raw, memoryview(raw)):
            for off in (0, 1_700_000_000_000_000_000):
                want = events.decode_py(r, off)  # fills the caches: the C decoder must then take every event
                got = c_dec(r, off)
                assert got is not None
                assert got == want
                assert type(got.local) is type(want.local) and type(got.data) is bytes
                assert events.decode(r, off) == want
                n += 1
    assert n


@needs_c
def test_random_records_decode_identically():
    rng = random.Random(3)
    taken = 0
    for i in range(3000):
        raw = bytearray(rng.randbytes(HDR + rng.choice((0, 1, 7, 100, 300))))
        if i % 3:  # valid families and small caps too, not only random ones
            raw[44:46] = rng.choice((2, 10, 0, 7)).to_bytes(2, "little")
            raw[28:32] = rng.randrange(0, 400).to_bytes(4, "little")
        if i % 5 == 0:
            raw[43] = 0  # no tuple
        raw = bytes(raw)
        off = rng.choice((0, events.WALL_OFFSET_NS, -5, -(1 << 63), 1 << 62))
        first = c_dec(raw, off)
        want = events.decode_py(raw, off)
        if first is not None:
            assert first == want
        got = c_dec(raw, off)  # caches filled by decode_py
        if not 0 <= int.from_bytes(raw[:8], "little") + off < 1 << 64:
            assert got is None  # the sum is left to Python
            continue
        assert got == want
        taken += 1
    assert taken > 2000


@needs_c
def test_c_decoder_declines_what_python_must_do():
    raw = bytes(HDR + 4)
    assert c_dec(raw[:HDR - 1]) is None
    with pytest.raises(ValueError):
        events.decode(raw[:HDR - 1])
    assert c_dec(raw, 1 << 70) is None  # not a 64-bit offset
    assert events.decode(raw, 1 << 70).ts_ns == 1 << 70
    big = (1 << 64) - 1
    assert events.decode(big.to_bytes(8, "little") + raw[8:], 5).ts_ns == big + 5
    unknown = bytearray(raw)
    unknown[84:90] = b"nevers"  # a comm not cached yet
    events._comm_cache.pop(bytes(unknown[84:100]), None)
    assert c_dec(bytes(unknown)) is None
    assert events.decode(bytes(unknown)).comm == "nevers"
    assert c_dec(bytes(unknown)).comm == "nevers"
    with pytest.raises(TypeError):
        events.c_decode(raw, 0, events.Event, {}, None)


@needs_c
def test_event_made_without_init_holds_its_references():
    import gc
    import sys
    raw = bytearray(HDR + 10)
    raw[84:100] = b"refcount-probe\0\0"  # a comm of its own: other tests' garbage holds no reference to it
    raw = bytes(raw)
    events._comm_cache.pop(raw[84:100], None)
    events.decode_py(raw)
    comm = c_dec(raw).comm
    assert comm == "refcount-probe"
    gc.collect()
    before = sys.getrefcount(comm)
    evs = [c_dec(raw) for _ in range(100)]
    assert sys.getrefcount(comm) == before + 100  # each Event holds one reference to each of its fields
    assert all(type(e) is events.Event and e == evs[0] for e in evs)
    del evs
    gc.collect()
    assert sys.getrefcount(comm) == before


@needs_c
def test_event_type_with_post_init_is_called():
    from dataclasses import dataclass

    seen = []

    @dataclass(slots=True)
    class Checked(events.Event):
        def __post_init__(self):
            seen.append(self.pid)

    _, raws = read_events(str(FIXTURES[0]))
    raw = next(iter(raws))
    events.decode_py(raw)
    got = events.c_decode(raw, 0, Checked, events._addr_cache, events._comm_cache)
    assert type(got) is Checked and seen == [got.pid]
    assert c_dec(raw, 0) == events.decode_py(raw, 0)  # back to Event (made directly)
