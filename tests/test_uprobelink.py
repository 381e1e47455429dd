"""uprobelink.py against the real kernel: the UAPI numbers and layout it packs by hand agree with the running
kernel's BTF, a link/perf event really patches (and un-patches) the code of the one process it names and
runs its program there, closing is what removes it, and every refusal is one sentence."""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import subprocess
import sys
import time

import pytest

from hdrlog import uprobelink as u
from hdrlog.elfsyms import ElfFile
from hdrlog.errors import HdrlogError

pytestmark = pytest.mark.kernel

BTF = "/sys/kernel/btf/vmlinux"


# ------------------------------------------------------------------------------------- BTF reader
def _btf_types():
    """(types, name): every BTF type of vmlinux as (kind, name, size_or_type, members/values)."""
    data = open(BTF, "rb").read()
    magic, _ver, _flags, hdr_len, type_off, type_len, str_off, _str_len = struct.unpack_from("<HBBIIIII", data)
    assert magic == 0xEB9F
    tbase, sbase = hdr_len + type_off, hdr_len + str_off

    def name(off):
        return data[sbase + off:data.index(b"\0", sbase + off)].decode()

    types = [None]  # ids start at 1
    pos, end = tbase, tbase + type_len
    extra = {1: 4, 3: 12, 14: 4, 17: 4}
    while pos < end:
        name_off, info, size = struct.unpack_from("<III", data, pos)
        kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
        pos += 12
        items = []
        if kind in (4, 5):  # struct, union: (name, type, bit offset)
            for i in range(vlen):
                n, t, o = struct.unpack_from("<III", data, pos + 12 * i)
                items.append((name(n), t, o & 0xFFFFFF if kflag else o))
            pos += 12 * vlen
        elif kind == 6:  # enum
            for i in range(vlen):
                n, v = struct.unpack_from("<Ii", data, pos + 8 * i)
                items.append((name(n), v))
            pos += 8 * vlen
        elif kind == 19:  # enum64
            for i in range(vlen):
                n, lo, hi = struct.unpack_from("<III", data, pos + 12 * i)
                items.append((name(n), lo | hi << 32))
            pos += 12 * vlen
        elif kind in (13, 15):
            pos += (8 if kind == 13 else 12) * vlen
        else:
            pos += extra.get(kind, 0)
        types.append((kind, name(name_off), size, items))
    return types


@pytest.fixture(scope="module")
def btf():
    if not os.path.exists(BTF):
        pytest.skip("no kernel BTF")
    return _btf_types()


def _enum_value(types, name):
    for t in types[1:]:
        if t[0] in (6, 19):
            for n, v in t[3]:
                if n == name:
                    return v
    raise KeyError(name)


def _member_offsets(types, type_id, want, base=0, out=None):
    """Byte offsets of the named members reachable through anonymous members and the `want` path."""
    out = {} if out is None else out
    kind, _name, _size, members = types[type_id]
    for n, t, bits in members:
        while types[t][0] in (8, 9, 10, 11, 18):  # typedef/volatile/const/restrict/type_tag
            t = types[t][2]
        if n == "" and types[t][0] in (4, 5):
            _member_offsets(types, t, want, base + bits // 8, out)
        elif want and n == want[0]:
            if len(want) == 1:
                out[n] = (base + bits // 8, t)
            else:
                _member_offsets(types, t, want[1:], base + bits // 8, out)
    return out


def test_uapi_numbers_match_the_kernel_btf(btf):
    assert _enum_value(btf, "BPF_TRACE_UPROBE_MULTI") == u.BPF_TRACE_UPROBE_MULTI
    assert _enum_value(btf, "BPF_F_UPROBE_MULTI_RETURN") == u.BPF_F_UPROBE_MULTI_RETURN
    assert _enum_value(btf, "BPF_LINK_CREATE") == u.BPF_LINK_CREATE
    assert _enum_value(btf, "BPF_PROG_LOAD") == u.BPF_PROG_LOAD
    assert _enum_value(btf, "BPF_PROG_TYPE_KPROBE") == u.BPF_PROG_TYPE_KPROBE


def test_link_create_uprobe_multi_layout_matches_the_kernel_btf(btf):
    attr = next(i for i, t in enumerate(btf) if t and t[0] == 5 and t[1] == "bpf_attr")
    lc = _member_offsets(btf, attr, ["link_create"])["link_create"]
    assert lc[0] == 0
    head = _member_offsets(btf, lc[1], ["prog_fd"]) | _member_offsets(btf, lc[1], ["attach_type"])
    assert head["prog_fd"][0] == 0 and head["attach_type"][0] == 8
    um = _member_offsets(btf, lc[1], ["uprobe_multi"])["uprobe_multi"]
    fields = {}
    for f in ("path", "offsets", "ref_ctr_offsets", "cookies", "cnt", "flags", "pid"):
        fields[f] = um[0] + _member_offsets(btf, um[1], [f])[f][0]
    # what attach_multi packs: four u64 from byte 16, then cnt, flags, pid
    assert fields == {"path": 16, "offsets": 24, "ref_ctr_offsets": 32, "cookies": 40, "cnt": 48, "flags": 52,
                      "pid": 56}
    assert u.ATTR_SIZE >= fields["pid"] + 4
    pl = _member_offsets(btf, attr, ["expected_attach_type"])  # BPF_PROG_LOAD's, used by the feature probe
    assert pl["expected_attach_type"][0] == 68


# ---------------------------------------------------------------------------------- live attach
CHILD = r"""
import ctypes, sys, time
libc = ctypes.CDLL("libc.so.6")
print("ready", flush=True)
for line in sys.stdin:
    n = int(line)
    for _ in range(n):
        libc.getppid()
    print("done", flush=True)
"""


def _libc_text(pid):
    for line in open(f"/proc/{pid}/maps"):
        parts = line.split()
        if len(parts) >= 6 and "x" in parts[1] and "/libc.so" in parts[5]:
            start = int(parts[0].split("-")[0], 16)
            return start, int(parts[2], 16), parts[5]
    raise AssertionError("no libc mapping")


def _byte_at(pid, file_offset):
    start, off, _ = _libc_text(pid)
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as m:
        m.seek(start + file_offset - off)
        return m.read(1)


@pytest.fixture
def child():
    p = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    yield p
    p.kill()
    p.wait()


def _getppid_offset(pid):
    _, _, path = _libc_text(pid)
    with ElfFile(path) as elf:
        sym = elf.lookup(["getppid"])["getppid"]
    return path, sym.offset


COUNTER = """
BPF_ARRAY(hits, u64, 1);
int count(struct pt_regs *ctx) { int k = 0; u64 *v = hits.lookup(&k); if (v) __sync_fetch_and_add(v, 1); return 0; }
"""


@pytest.mark.parametrize("mode", u.MODES)
def test_a_probe_patches_only_its_process_fires_there_and_is_gone_after_close(child, mode):
    from bcc import BPF

    if mode == "multi" and not u.probe_multi()[0]:
        pytest.skip(u.probe_multi()[1])
    path, off = _getppid_offset(child.pid)
    original = open(path, "rb").read()[off:off + 1]
    b = BPF(text=COUNTER.encode())
    try:
        fn = b.load_func(b"count", BPF.KPROBE, attach_type=u.BPF_TRACE_UPROBE_MULTI if mode == "multi" else -1)
        if mode == "multi":
            fd = u.attach_multi(fn.fd, path, [off], child.pid, False)
        else:
            fd = u.attach_perf(fn.fd, path, off, child.pid, False)
        assert _byte_at(child.pid, off) == b"\xcc", "the breakpoint is in the named process"
        assert _byte_at(os.getpid(), off) == original, "and in no other"
        child.stdin.write("100\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "done"
        ctypes.CDLL("libc.so.6").getppid()  # our own calls do not count
        assert b[b"hits"][ctypes.c_int(0)].value >= 100
        took = u.close_all([fd])
        assert _byte_at(child.pid, off) == original, "closing the fd removed the breakpoint"
        assert took < 2.0
    finally:
        b.cleanup()


COOKIES = """
BPF_HASH(seen, u64, u64, 16);
int by_cookie(struct pt_regs *ctx) {
    u64 k = bpf_get_attach_cookie(ctx), one = 1;
    u64 *v = seen.lookup(&k);
    if (v) __sync_fetch_and_add(v, 1); else seen.update(&k, &one);
    return 0;
}
"""


@pytest.mark.parametrize("mode", u.MODES)
def test_each_offset_carries_its_own_cookie(child, mode):
    """The copy-site probes find their values through the cookie (placement.copy_cookie): per offset, in both
    attach modes (a uprobe_multi link's cookie array; a BPF perf link per event)."""
    from bcc import BPF

    if mode == "multi" and not u.probe_multi()[0]:
        pytest.skip(u.probe_multi()[1])
    _, _, path = _libc_text(child.pid)
    with ElfFile(path) as elf:
        syms = elf.lookup(["getppid", "getpid"])
    offs = {syms["getppid"].offset: 0x8000_2000_1234, syms["getpid"].offset: 0x4321}
    b = BPF(text=COOKIES.encode())
    try:
        fn = b.load_func(b"by_cookie", BPF.KPROBE, attach_type=u.BPF_TRACE_UPROBE_MULTI if mode == "multi" else -1)
        if mode == "multi":
            fds = [u.attach_multi(fn.fd, path, list(offs), child.pid, False, cookies=list(offs.values()))]
        else:
            fds = [u.attach_perf(fn.fd, path, o, child.pid, False, cookie=c) for o, c in offs.items()]
        child.stdin.write("50\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "done"
        seen = {k.value: v.value for k, v in b[b"seen"].items()}
        assert seen.get(0x8000_2000_1234, 0) >= 50, seen
        assert set(seen) <= set(offs.values()), seen
        u.close_all(fds)
    finally:
        b.cleanup()


def test_refusals_are_sentences():
    prog, e = u._load_trivial(u.BPF_TRACE_UPROBE_MULTI)
    assert prog >= 0, os.strerror(e)
    try:
        dead = subprocess.Popen(["true"])
        dead.wait()
        libc = _libc_text(os.getpid())[2]
        with pytest.raises(HdrlogError, match=rf"process {dead.pid} exited while hdrlog was attaching"):
            u.attach_multi(prog, libc, [0x1000], dead.pid, False)
        with pytest.raises(HdrlogError, match=r"cannot attach to /nonexistent/libx.so: the file is gone"):
            u.attach_multi(prog, "/nonexistent/libx.so", [0x1000], os.getpid(), False)
        size = os.path.getsize(libc)
        with pytest.raises(u.AttachError) as ei:
            u.attach_multi(prog, libc, [size + 4096], os.getpid(), True)
        assert ei.value.errno == errno.EINVAL
        assert str(ei.value).startswith(f"the kernel refused a BPF uprobe_multi link on {libc} at offset "
                                        f"{hex(size + 4096)} for process {os.getpid()} (EINVAL")
    finally:
        os.close(prog)


def test_mode_is_multi_here_and_can_be_forced(monkeypatch):
    ok, why = u.probe_multi()
    assert ok, why  # the reference kernel (6.18) has uprobe_multi links
    monkeypatch.setenv(u.MODE_ENV, "perf")
    assert u.mode() == "perf"
    monkeypatch.setenv(u.MODE_ENV, "kprobe")
    with pytest.raises(HdrlogError, match="HDRLOG_UPROBE_MODE must be one of multi, perf"):
        u.mode()
    monkeypatch.delenv(u.MODE_ENV)
    assert u.mode() == "multi"


def test_parallel_close_of_links_overlaps_the_kernel_waits(child):
    """16 links on distinct offsets of getppid's neighbourhood in the child: closing them in threads takes far less
    than one by one (measured, not assumed: a serial close pays one synchronisation per link)."""
    path, off = _getppid_offset(child.pid)
    prog, e = u._load_trivial(u.BPF_TRACE_UPROBE_MULTI)
    assert prog >= 0
    try:
        times = {}
        for parallel in (False, True):
            fds = [u.attach_multi(prog, path, [off], child.pid, bool(i % 2)) for i in range(16)]
            t0 = time.monotonic()
            u.close_all(fds, parallel=parallel)
            times[parallel] = time.monotonic() - t0
        assert times[True] < times[False] / 2, times
    finally:
        os.close(prog)
