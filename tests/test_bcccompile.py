"""bcccompile.py: the /proc/kallsyms subset bcc is shown while it compiles, and that compiling with it gives
the very same BPF instructions as bcc's own pass over the whole of /proc/kallsyms, leaving no mount behind."""

from __future__ import annotations

import ctypes as ct
import hashlib
import os

import pytest

from hdrlog import bcccompile
from hdrlog.loader import Settings, program_text
from hdrlog.tlslibs import REGISTRY

KALLSYMS = (
    b"ffffffff81000000 T bpf_probe_read_kernel_str\n"
    b"ffffffff81000010 t bpf_probe_read_kernel\n"
    b"ffffffff81000020 T xbpf_probe_read_user\n"
    b"ffffffff81000030 d bpf_probe_read_user\t[somemod]\n"
    b"ffffffff81000040 T bpf_probe_read_user_str\n"
    b"0000000000000000 T bpf_probe_read_user"  # last line, no newline (kptr_restrict shows zeros)
)


def test_subset_keeps_exactly_the_lines_of_the_names_bcc_asks_for():
    assert bcccompile.kallsyms_subset(KALLSYMS) == (
        b"ffffffff81000010 t bpf_probe_read_kernel\n"
        b"ffffffff81000030 d bpf_probe_read_user\t[somemod]\n"
        b"0000000000000000 T bpf_probe_read_user"
    )


def test_subset_of_a_kernel_without_them_is_empty():
    assert bcccompile.kallsyms_subset(b"ffffffff81000000 T bpf_probe_read\nffffffff81000010 T x\n") == b""


def _fingerprint(bpf) -> str:
    """Every function's instructions, with the map fds of ld_imm64 masked (they differ between compiles)."""
    from bcc import lib

    h = hashlib.sha256()
    for i in range(lib.bpf_num_functions(bpf.module)):
        name = lib.bpf_function_name(bpf.module, i)
        raw = bytearray(ct.string_at(lib.bpf_function_start(bpf.module, name), lib.bpf_function_size(bpf.module, name)))
        for off in range(0, len(raw), 8):
            if raw[off] == 0x18 and raw[off + 1] >> 4 in (1, 2):  # BPF_PSEUDO_MAP_FD / _VALUE
                raw[off + 4:off + 8] = bytes(4)
        h.update(name + b"\0" + bytes(raw))
    return h.hexdigest()


def _mounted_over_kallsyms() -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == bcccompile.KALLSYMS for line in f)


@pytest.mark.kernel
@pytest.mark.parametrize("lib", ["openssl", "go"])
def test_same_instructions_as_bccs_own_kallsyms_pass(lib):
    from bcc import BPF

    text = program_text([REGISTRY[lib]]).encode()
    cflags = Settings().cflags()
    fast = bcccompile.compile(lambda: BPF(text=text, cflags=cflags))
    try:
        assert bcccompile.last_mode == "kallsyms-subset"
        fast_fp = _fingerprint(fast)
    finally:
        fast.cleanup()
    plain = bcccompile.compile(lambda: BPF(text=text, cflags=cflags), fast=False)
    try:
        assert bcccompile.last_mode == "plain"
        assert _fingerprint(plain) == fast_fp
    finally:
        plain.cleanup()
    assert not _mounted_over_kallsyms(), "the bind over /proc/kallsyms leaked out of the compile thread"


@pytest.mark.kernel
def test_an_exception_in_the_compile_reaches_the_caller():
    from bcc import BPF

    with pytest.raises(Exception, match="Failed to compile"):
        bcccompile.compile(lambda: BPF(text=b"int f(void *ctx) { return undefined_name; }"))
    assert not _mounted_over_kallsyms()


@pytest.mark.kernel
def test_a_failed_namespace_step_falls_back_to_bccs_own_pass(monkeypatch):
    from bcc import BPF

    def refuse(tmpdir):
        raise OSError(1, "unshare(CLONE_NEWNS): Operation not permitted")

    monkeypatch.setattr(bcccompile, "_hide_kallsyms", refuse)
    bpf = bcccompile.compile(lambda: BPF(text=b"int f(void *ctx) { return 0; }"))
    bpf.cleanup()
    assert bcccompile.last_mode == "plain (unshare(CLONE_NEWNS): Operation not permitted)"


def test_the_subset_is_read_once_per_boot_and_kept_privately(monkeypatch, tmp_path):
    fake = tmp_path / "kallsyms"
    fake.write_bytes(KALLSYMS)
    monkeypatch.setattr(bcccompile, "KALLSYMS", str(fake))
    cache = tmp_path / "run" / "hdrlog"
    first = bcccompile.boot_subset(str(cache))
    assert first == bcccompile.kallsyms_subset(KALLSYMS)
    (kept,) = cache.iterdir()
    boot = open(bcccompile.BOOT_ID).read().strip()
    assert kept.name == f"kallsyms-{boot}-{os.geteuid()}" and kept.read_bytes() == first
    assert cache.stat().st_mode & 0o777 == 0o700 and kept.stat().st_mode & 0o777 == 0o600
    fake.write_bytes(b"ffffffff81000000 T other\n")  # not read again in this boot
    assert bcccompile.boot_subset(str(cache)) == first
    cache.chmod(0o777)  # a cache others can write to is not trusted
    assert bcccompile.boot_subset(str(cache)) == b""
