"""Read a BPF ring buffer map directly through mmap, in batches, as libbpf does in C.

bcc's ring buffer API calls back into Python through ctypes once per record (a C→Python transition, a
Python wrapper and a copy each time). Here the consumer page and the data pages are mapped once; a batch
is every record between the consumer and producer positions, handed over as memoryviews without a copy,
and the consumer position is published once per batch.

hdrlog._ringfast.walk runs a batch's loop in one C call (no Python frame per record for the walk; for the
pipeline's on_raw, none for the dispatch either: see Pipeline.ring_dispatch); the loop below is its fallback
(the extension not built, RingReader.fast False) and the reference tests/test_ringfast.py compares it with.

Layout (kernel/bpf/ringbuf.c): page 0 consumer_pos (read-write), page 1 producer_pos, then the data area
mapped twice in a row so a record never appears to wrap. Each record: u32 len (bit 31 busy, bit 30
discarded), u32 page offset, then len bytes, the whole rounded up to 8.
"""

from __future__ import annotations

import mmap
import select
import struct
from collections.abc import Callable

BUSY = 1 << 31
DISCARD = 1 << 30
HDR = 8
_U32 = struct.Struct("<I")

try:
    from hdrlog._ringfast import walk as _walk
except ImportError:  # not built, or an older build without walk
    _walk = None


class RingReader:
    fast = True  # False: the Python loop even when the C walk is built (tests, bench/live_ab.py)

    def __init__(self, map_fd: int, size: int, callback: Callable[[memoryview], None]):
        page = mmap.PAGESIZE
        if size <= 0 or size & (size - 1) or size % page:
            raise ValueError(f"ring buffer size {size} is not a power-of-two multiple of the page size")
        cons = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        data = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self._setup(cons, data, size, callback)
        self._ep = select.epoll()
        self._ep.register(map_fd, select.EPOLLIN)

    @classmethod
    def over(cls, cons: mmap.mmap, data: mmap.mmap, size: int, callback: Callable[[memoryview], None]) -> RingReader:
        """A reader of a ring image in memory of the caller's (tests): cons, the consumer page; data, the
        producer page then the data area twice (consume() only; poll() has nothing to wait on)."""
        self = cls.__new__(cls)
        self._setup(cons, data, size, callback)
        self._ep = None
        return self

    def _setup(self, cons: mmap.mmap, data: mmap.mmap, size: int, callback) -> None:
        self.size = size
        self.mask = size - 1
        self.callback = callback
        self._cons = cons
        self._data = data
        self._view = memoryview(self._data)
        # The positions are read and written as single aligned 8-byte accesses through native-format
        # memoryviews: struct.pack_into/unpack_from with "<Q" go byte by byte (pack_into even zeroes the
        # field first), so the kernel could read a torn consumer position and refuse writes as if the ring
        # were full, and we could read a torn producer position.
        self._cons_pos = memoryview(self._cons).cast("B").cast("Q")
        self._prod_pos = self._view[:8].cast("Q")
        self._base = mmap.PAGESIZE  # data area begins after the producer page
        self.records = 0
        self.batches = 0
        self._walk = _walk if self.fast else None
        # the pipeline's on_raw can be dispatched by the C walk itself (decode, then tracker.on_event)
        self._dispatch = getattr(getattr(callback, "__self__", None), "ring_dispatch", None) \
            if getattr(callback, "__name__", None) == "on_raw" else None

    def consume(self) -> int:
        """Hand every committed record to the callback; returns how many. The callback must not keep the
        memoryview beyond its call (the space is reused once the batch is released)."""
        walk = self._walk
        if walk is not None:
            disp = self._dispatch() if self._dispatch is not None else None
            if disp is None:
                n = walk(self._cons_pos, self._view, self._base, self.mask, self.callback)
            else:
                n = walk(self._cons_pos, self._view, self._base, self.mask, self.callback, *disp)
            if n < 0:
                return 0
            self.records += n
            self.batches += 1
            return n
        cons = self._cons_pos[0]
        prod = self._prod_pos[0]
        if cons >= prod:
            return 0
        view, base, mask, cb, unpack = self._view, self._base, self.mask, self.callback, _U32.unpack_from
        n = 0
        try:
            while cons < prod:
                off = base + (cons & mask)
                ln = unpack(self._data, off)[0]
                if ln & BUSY:
                    break  # reserved but not committed yet: the rest of the batch waits for it
                length = ln & ~(BUSY | DISCARD)
                cons += (length + HDR + 7) & ~7  # before the callback: a record that raises is not re-read
                if not ln & DISCARD:
                    cb(view[off + HDR: off + HDR + length])
                    n += 1
        finally:
            self._cons_pos[0] = cons  # publish (one 8-byte store): the producer may reuse the space now
        self.records += n
        self.batches += 1
        return n

    def poll(self, timeout_ms: int) -> int:
        """Wait up to timeout_ms for a wake-up, then consume whatever is there (a timeout included:
        the probes wake the consumer only every few events)."""
        try:
            self._ep.poll(timeout_ms / 1000.0)
        except InterruptedError:
            pass
        return self.consume()

    def close(self) -> None:
        if self._ep is not None:
            self._ep.close()
        try:
            self._cons_pos.release()
            self._prod_pos.release()
            self._view.release()
            self._data.close()
            self._cons.close()
        except BufferError:
            # a slice is still referenced (e.g. by the traceback of a callback that raised): leave the
            # mappings to the garbage collector rather than hide that exception behind this one
            pass


def ring_size(bpf_table) -> int:
    """Data area size of a bcc ring buffer table (max_entries of the map is its size in bytes)."""
    return int(bpf_table.max_entries)

