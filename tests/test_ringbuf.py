"""ringbuf.RingReader against a real BPF ring buffer: sizes, discards and many wrap-arounds, with the Python loop
and with the C walk (hdrlog._ringfast)."""

from __future__ import annotations

import os
import struct

import pytest

pytestmark = pytest.mark.kernel

PROG = r"""
BPF_RINGBUF_OUTPUT(rb, 1);             /* one page: 4 KiB, wraps often */
BPF_ARRAY(cfg, u32, 2);                /* [0] target tgid, [1] sequence */

struct rec { u32 seq; u32 len; u8 pad[120]; };

TRACEPOINT_PROBE(syscalls, sys_enter_getppid)
{
	u32 k0 = 0, k1 = 1;
	u32 *pid = cfg.lookup(&k0);
	if (!pid || *pid != (bpf_get_current_pid_tgid() >> 32))
		return 0;
	u32 *seq = cfg.lookup(&k1);
	if (!seq)
		return 0;
	u32 s = *seq;
	*seq = s + 1;
	struct rec *r = rb.ringbuf_reserve(sizeof(struct rec));
	if (!r)
		return 0;
	r->seq = s;
	r->len = 8 + (s % 5) * 24;      /* the consumer reads only the first len bytes */
	if (s % 7 == 3)
		rb.ringbuf_discard(r, 0);   /* discarded records must be skipped */
	else
		rb.ringbuf_submit(r, 0);
	return 0;
}
"""


@pytest.mark.parametrize("fast", [False, True], ids=["python", "c"])
def test_ring_reader_batches_wraps_and_skips_discards(fast, monkeypatch):
    from bcc import BPF

    from hdrlog import ringbuf
    from hdrlog.ringbuf import RingReader

    if fast and ringbuf._walk is None:
        pytest.skip("hdrlog._ringfast not built")
    monkeypatch.setattr(RingReader, "fast", fast)

    b = BPF(text=PROG.encode())
    cfg = b[b"cfg"]
    cfg[cfg.Key(0)] = cfg.Leaf(os.getpid())
    seen: list[int] = []

    def cb(view):
        seq, ln = struct.unpack_from("<II", view)
        assert len(view) == 128  # the record as reserved
        seen.append(seq)

    rb = b[b"rb"]
    reader = RingReader(rb.map_fd, int(rb.max_entries), cb)
    assert (reader._walk is not None) == fast
    try:
        total = 2000
        for i in range(total):
            os.getppid()
            if i % 20 == 19:  # 20 records of 136 bytes fit in the 4 KiB ring
                reader.consume()
        reader.consume()
        expected = [s for s in range(total) if s % 7 != 3]
        assert seen == expected
        assert reader.records == len(expected) and reader.batches >= total // 20
        assert reader.consume() == 0
    finally:
        reader.close()
        b.cleanup()
