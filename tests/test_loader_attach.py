"""loader.ProbeSet.attach when the kernel refuses a placed offset, without a kernel: which links it keeps,
which it closes, what it attaches instead (the real-kernel case is test_kernel_refused_offset.py)."""

from __future__ import annotations

import contextlib
import ctypes as ct
import errno
import itertools
import threading

import pytest

from hdrlog import loader, uprobelink
from hdrlog.placement import Site
from hdrlog.tlslibs import REGISTRY

LIB = REGISTRY["openssl"]


def site(kind, fn, offset, symbol):
    return Site(kind, fn, offset, offset, symbol, f"{symbol.split('+')[0]}+0x0" if offset < 0x1000 else
                f"internal@{offset:#x}", "push rbx", "emulated", "test")


PLACED = [
    site("entry", "ossl_handshake_enter", 0x100, "SSL_do_handshake"),
    site("return", "ossl_handshake_return", 0x100, "SSL_do_handshake"),
    site("entry", "ossl_read_ex_enter", 0x3000, "SSL_read+SSL_read_ex"),
    site("return", "ossl_read_return", 0x3000, "SSL_read+SSL_read_ex"),
    site("entry", "ossl_free_enter", 0x203, "SSL_free"),
]
ENTRIES = [
    site("entry", "ossl_handshake_enter", 0x100, "SSL_do_handshake"),
    site("return", "ossl_handshake_return", 0x100, "SSL_do_handshake"),
    site("entry", "ossl_read_enter", 0x400, "SSL_read"),
    site("entry", "ossl_read_ex_enter", 0x500, "SSL_read_ex"),
    site("return", "ossl_read_return", 0x400, "SSL_read"),
    site("return", "ossl_read_return", 0x500, "SSL_read_ex"),
    site("entry", "ossl_free_enter", 0x200, "SSL_free"),
]


class FakeKernel:
    """attach_multi/close_all stand-ins: refuses (EINVAL) any link that carries an offset in `refuse`."""

    def __init__(self, monkeypatch, refuse=(), refuse_ret=None):
        self.refuse, self.refuse_ret = set(refuse), refuse_ret
        self.links: dict[int, tuple] = {}
        self.closed: list[int] = []
        self._fd = itertools.count(100)
        monkeypatch.setattr(uprobelink, "attach_multi", self.attach_multi)
        monkeypatch.setattr(uprobelink, "close_all", self.close_all)

    def attach_multi(self, prog, path, offsets, pid, ret, cookies=None):
        if set(offsets) & self.refuse and (self.refuse_ret is None or ret == self.refuse_ret):
            raise uprobelink.AttachError("refused", errno.EINVAL)
        fd = next(self._fd)
        self.links[fd] = (prog, tuple(offsets), ret)
        return fd

    def close_all(self, fds, parallel=True):
        for fd in fds:
            self.closed.append(fd)
            self.links.pop(fd)
        return 0.0

    def live(self):
        return sorted((prog, offs, ret) for prog, offs, ret in self.links.values())


class Table(dict):
    def __setitem__(self, k, v):
        super().__setitem__(k.value, v.value)

    def __getitem__(self, k):
        return ct.c_uint32(super().get(k.value, 0))

    def __delitem__(self, k):
        super().__delitem__(k.value)


@pytest.fixture
def probeset(monkeypatch, tmp_path):
    monkeypatch.setattr(loader.placement, "plan",
                        lambda elf, lib, symbols, path=None, mode="auto": ENTRIES if mode == "entry" else PLACED)
    monkeypatch.setattr(loader, "ElfFile", lambda path: contextlib.nullcontext())
    ps = object.__new__(loader.ProbeSet)
    ps.mode, ps.settings, ps.bpf = "multi", loader.Settings(), {"targets": Table(), "target_slots": Table()}
    ps._targets, ps._targets_lock = set(), threading.Lock()
    ps.attached, ps._fds, ps.notes, ps._noted, ps._fns, ps._plans = {}, {}, [], set(), {}, {}
    monkeypatch.setattr(ps, "_prog_fd", lambda name: name)
    lib = tmp_path / "libssl.so.3"
    lib.write_bytes(b"")
    return ps, str(lib)


def test_a_refused_offset_keeps_the_links_already_made(monkeypatch, probeset):
    ps, path = probeset
    k = FakeKernel(monkeypatch, refuse={0x203})  # SSL_free+0x3, the last group
    done = ps.attach(1, LIB, path, {})
    assert k.closed == []  # nothing made before the refusal is closed (each close waits for the kernel)
    assert k.live() == [
        ("ossl_free_enter", (0x200,), False),
        ("ossl_handshake_enter", (0x100,), False),
        ("ossl_handshake_return", (0x100,), True),
        ("ossl_read_ex_enter", (0x3000,), False),
        ("ossl_read_return", (0x3000,), True),
    ]
    assert [p.site.where for p in done if p.symbol == "SSL_free"] == ["SSL_free+0x0"]
    assert sorted(ps._fds[1]) == sorted(k.links)
    assert ps.bpf["targets"] == {1: 1} and ps.bpf["target_slots"] == {1: 1}
    assert len(ps.notes) == 1 and "SSL_free is probed at its entry instead" in ps.notes[0]


def test_a_refused_return_moves_the_entry_link_of_the_same_functions_too(monkeypatch, probeset):
    ps, path = probeset
    k = FakeKernel(monkeypatch, refuse={0x3000}, refuse_ret=True)  # the internal read function's return
    ps.attach(1, LIB, path, {})
    assert len(k.closed) == 1  # the read entry link at the internal function, made just before
    assert k.live() == [
        ("ossl_free_enter", (0x203,), False),
        ("ossl_handshake_enter", (0x100,), False),
        ("ossl_handshake_return", (0x100,), True),
        ("ossl_read_enter", (0x400,), False),
        ("ossl_read_ex_enter", (0x500,), False),
        ("ossl_read_return", (0x400, 0x500), True),
    ]
    assert "SSL_read, SSL_read_ex are probed at their entries instead" in ps.notes[0]


def test_a_refused_entry_after_moving_is_one_error_and_nothing_stays(monkeypatch, probeset):
    ps, path = probeset
    k = FakeKernel(monkeypatch, refuse={0x203, 0x200})  # the placed offset and the entry too
    with pytest.raises(uprobelink.AttachError):
        ps.attach(1, LIB, path, {})
    assert k.links == {} and 1 not in ps._fds and 1 not in ps.attached


def test_targets_and_their_slots_follow_attach_and_detach(monkeypatch, probeset):
    ps, path = probeset
    FakeKernel(monkeypatch)
    ps.attach(1, LIB, path, {})
    ps.attach(1, LIB, path, {})  # a second library of the same process: counted once
    ps.attach(1 + loader.TARGET_SLOTS, LIB, path, {})  # same slot
    assert ps.bpf["targets"] == {1: 1, 1 + loader.TARGET_SLOTS: 1} and ps.bpf["target_slots"] == {1: 2}
    ps.detach(1)
    ps.detach(1)
    assert ps.bpf["targets"] == {1 + loader.TARGET_SLOTS: 1} and ps.bpf["target_slots"] == {1: 1}
    ps.detach(1 + loader.TARGET_SLOTS)
    assert ps.bpf["targets"] == {} and ps.bpf["target_slots"] == {1: 0}
