"""placement.py: probes go on emulated instructions only where the machine code proves it safe."""

from __future__ import annotations

import pytest

from hdrlog import placement
from hdrlog.elfsyms import ElfFile, Symbol
from hdrlog.tlslibs import REGISTRY, InternalGroup, TlsLibrary, Uprobe

LIBSSL = "/usr/lib/x86_64-linux-gnu/libssl.so.3"
NODE = "/usr/bin/node"
OPENSSL = REGISTRY["openssl"]


def plan_for(path, mode="auto"):
    with ElfFile(path) as elf:
        syms = elf.lookup([u.symbol for u in OPENSSL.uprobes])
        return placement.plan(elf, OPENSSL, syms, path=path, mode=mode), syms


@pytest.mark.skipif(not __import__("os").path.exists(LIBSSL), reason="libssl3 not installed")
def test_libssl3_reads_and_writes_move_to_shared_internal_functions():
    sites, syms = plan_for(LIBSSL, mode="functions")
    by = {(s.kind, s.fn): s for s in sites}
    read_e, read_r = by[("entry", "ossl_read_ex_enter")], by[("return", "ossl_read_return")]
    write_e = by[("entry", "ossl_write_ex_enter")]
    assert read_e.offset == read_r.offset and read_e.where.startswith("internal@")
    assert read_e.cost == "emulated" and read_e.insn.startswith("push")
    assert write_e.where.startswith("internal@") and write_e.offset != read_e.offset
    # the group is probed once, never also at SSL_read/SSL_read_ex themselves (no double capture)
    assert not any(s.symbol in ("SSL_read", "SSL_read_ex", "SSL_write", "SSL_write_ex") for s in sites)
    assert ("entry", "ossl_read_enter") not in by
    # entry-only SSL_free moves past `test rdi, rdi` onto the emulated branch; rdi is still the SSL*
    free = by[("entry", "ossl_free_enter")]
    assert free.offset > syms["SSL_free"].offset and free.cost == "emulated"
    hs = by[("entry", "ossl_handshake_enter")]
    assert hs.offset == syms["SSL_do_handshake"].offset and hs.cost == "emulated"
    assert all(s.cost == "emulated" for s in sites), [(s.where, s.insn) for s in sites]


def test_node_entries_are_already_emulated():
    sites, syms = plan_for(NODE, mode="functions")
    for s in sites:
        if s.kind == "return" or s.fn != "ossl_free_enter":
            assert s.offset == syms[s.symbol].offset, s
        assert s.cost == "emulated"
    assert {s.fn for s in sites} >= {"ossl_read_enter", "ossl_read_ex_enter", "ossl_write_enter"}


def _copy_sites(sites):
    return {s.fn: s for s in sites if s.fn in ("ossl_rcopy", "ossl_wcall", "ossl_wmb")}


@pytest.mark.skipif(not __import__("os").path.exists(LIBSSL), reason="libssl3 not installed")
def test_libssl3_auto_probes_the_copy_sites_instead_of_the_read_and_write_functions():
    sites, syms = plan_for(LIBSSL)
    copies = _copy_sites(sites)
    assert set(copies) == {"ossl_rcopy", "ossl_wcall", "ossl_wmb"}, [(s.fn, s.where) for s in sites]
    for s in copies.values():
        assert s.kind == "entry" and s.cost == "emulated" and s.insn.startswith("call") and s.cookie
    assert copies["ossl_rcopy"].symbol == "SSL_read+SSL_read_ex" and "memcpy" in copies["ossl_rcopy"].insn
    assert copies["ossl_wcall"].symbol == "SSL_write+SSL_write_ex"
    # nothing else probes the reads and writes (no double capture), and no return probe is left for them
    assert not {s.fn for s in sites} & {"ossl_read_ex_enter", "ossl_read_return", "ossl_write_ex_enter",
                                         "ossl_write_return", "ossl_read_enter", "ossl_write_enter"}
    assert {s.fn for s in sites} >= {"ossl_handshake_enter", "ossl_handshake_return", "ossl_free_enter"}


def test_copy_cookie_packs_each_location_in_16_bits():
    from hdrlog.osslsites import CopySite, Loc

    cs = CopySite("read-copy", 0, 0, "f", 0, "call", Loc(None, 0x28, 8), Loc("r13", None, 4), Loc(None, 0, 4))
    ck = placement.copy_cookie(cs)
    assert ck & 0xFFFF == placement.LOC_VALID | placement.LOC_STACK | placement.LOC_WIDE | 0x28
    assert (ck >> 16) & 0xFFFF == placement.LOC_VALID | 13
    assert (ck >> 32) & 0xFFFF == placement.LOC_VALID | placement.LOC_STACK
    assert placement.copy_cookie(CopySite("write-mb", 0, 0, "f", 0, "call", Loc("r12", None, 8), None, None)) \
        == placement.LOC_VALID | placement.LOC_WIDE | 12
    with pytest.raises(ValueError):
        placement.copy_cookie(CopySite("read-copy", 0, 0, "f", 0, "call", Loc(None, 0x2000, 8), None, None))


def test_copy_cookie_constants_match_the_probe_header(tmp_path):
    """placement.py's LOC_*/REG_NUM are probes/hdrlog.h's HDRLOG_LOC_* and enum hdrlog_reg."""
    import re
    import subprocess
    from pathlib import Path

    names = [f"HDRLOG_LOC_{n}" for n in ("VALID", "STACK", "WIDE", "ARG")]
    regs = {r: f"HDRLOG_REG_{r[1:].upper() if r[1] in 'abcds' and len(r) == 3 else r.upper()}"
            for r in placement.REG_NUM}
    src = tmp_path / "c.c"
    src.write_text('#include <stdio.h>\ntypedef unsigned char __u8; typedef unsigned short __u16; typedef unsigned '
                   'int __u32; typedef unsigned long long __u64; typedef int __s32;\n#include "hdrlog.h"\nint main(void)'
                   '{\n' + "".join(f'printf("{n} %d\\n", (int){n});\n' for n in names + list(regs.values()))
                   + "return 0;}\n")
    exe = tmp_path / "c"
    probes = Path(__file__).resolve().parent.parent / "probes"
    subprocess.run(["gcc", "-I", str(probes), "-o", str(exe), str(src)], check=True)
    got = dict(line.split() for line in subprocess.run([str(exe)], capture_output=True, text=True,
                                                         check=True).stdout.splitlines())
    assert [int(got[n]) for n in names] == [placement.LOC_VALID, placement.LOC_STACK, placement.LOC_WIDE,
                                            placement.LOC_ARG]
    for r, n in regs.items():
        assert int(got[n]) == placement.REG_NUM[r], r


def test_entry_mode_puts_everything_at_the_symbol():
    sites, syms = plan_for(LIBSSL, mode="entry")
    assert all(s.offset == syms[s.symbol].offset for s in sites)
    assert len(sites) == sum(bool(u.entry) + bool(u.ret) for u in OPENSSL.uprobes)


def insns(code: bytes, addr: int = 0x1000):
    return list(placement._MD.disasm(code, addr))


RDI_RSI = frozenset({"rdi", "rsi"})


def test_walk_stops_at_writes_and_branches():
    # sub rsp,0x18 ; push rbx  -> push is the site
    assert placement.walk_to_emulated(insns(bytes.fromhex("4883ec18" "53")), RDI_RSI).mnemonic == "push"
    # mov rdi, rax ; push rbx  -> rdi clobbered before the push: no site
    assert placement.walk_to_emulated(insns(bytes.fromhex("4889c7" "53")), RDI_RSI) is None
    # mov esi, 1 (writes the low half of rsi) ; push rbx -> no site
    assert placement.walk_to_emulated(insns(bytes.fromhex("be01000000" "53")), RDI_RSI) is None
    # ret first -> no site
    assert placement.walk_to_emulated(insns(bytes.fromhex("c3" "53")), RDI_RSI) is None
    # test rdi,rdi ; je +5 -> the conditional branch itself is emulated and every call executes it
    assert placement.walk_to_emulated(insns(bytes.fromhex("4885ff" "7405")), RDI_RSI).mnemonic == "je"


def test_wrapper_call_shape():
    # sub rsp,8 ; call rel32 -> target
    found = placement.wrapper_call(insns(bytes.fromhex("4883ec08" "e800010000")), frozenset({"rdi", "rsi", "rdx", "rcx"}))
    assert found is not None and found[1] == 0x1000 + 4 + 5 + 0x100
    # mov rcx, rsp before the call is fine for the plain variant (rcx not passed through) ...
    code = bytes.fromhex("4889e1" "e800010000")
    assert placement.wrapper_call(insns(code), RDI_RSI) is not None
    # ... but not for the _ex variant, whose size_t* must reach the internal function unchanged
    assert placement.wrapper_call(insns(code), frozenset({"rdi", "rsi", "rdx", "rcx"})) is None
    # an unconditional jmp before any call: not a wrapper
    assert placement.wrapper_call(insns(bytes.fromhex("eb00" "e800010000")), RDI_RSI) is None
    # an indirect call: not provable
    assert placement.wrapper_call(insns(bytes.fromhex("ffd0")), RDI_RSI) is None


class FakeElf:
    """Machine code at chosen addresses (file offset == vaddr) for plan() over synthetic functions."""

    def __init__(self, blobs: dict[int, bytes]):
        self.blobs = blobs
        self.path = "fake"

    def read(self, off, n):
        for base, code in self.blobs.items():
            if base <= off < base + len(code):
                return code[off - base: off - base + n]
        return b""

    def vaddr_to_offset(self, va):
        return va


LIB = TlsLibrary(
    name="t", probe_file="x",
    uprobes=(Uprobe("r", entry="e_plain", ret="ret", reads=RDI_RSI, group="g"),
             Uprobe("rx", entry="e_ex", ret="ret", reads=frozenset({"rdi", "rsi", "rdx", "rcx"}), group="g")),
    data_symbols=frozenset({"r"}), groups=(InternalGroup("g", entry="e_int", ret="ret"),),
)


def call_to(src: int, dst: int) -> bytes:
    return b"\xe8" + (dst - (src + 5)).to_bytes(4, "little", signed=True)


def test_group_members_calling_different_functions_stay_at_entries():
    elf = FakeElf({0x100: bytes.fromhex("4883ec08") + call_to(0x104, 0x400),
                   0x200: bytes.fromhex("4883ec08") + call_to(0x204, 0x500),
                   0x400: b"\x53\xc3", 0x500: b"\x53\xc3"})
    syms = {"r": Symbol("r", 0x100, 9, 0x100, None, ".dynsym"), "rx": Symbol("rx", 0x200, 9, 0x200, None, ".dynsym")}
    sites = placement.plan(elf, LIB, syms)
    assert {s.offset for s in sites} == {0x100, 0x200}
    assert all("not proven" in s.why for s in sites)


def test_group_with_shared_internal_function_is_probed_once_there():
    elf = FakeElf({0x100: bytes.fromhex("4883ec08") + call_to(0x104, 0x400),
                   0x200: bytes.fromhex("4883ec08") + call_to(0x204, 0x400), 0x400: b"\x41\x55\xc3"})
    syms = {"r": Symbol("r", 0x100, 9, 0x100, None, ".dynsym"), "rx": Symbol("rx", 0x200, 9, 0x200, None, ".dynsym")}
    sites = placement.plan(elf, LIB, syms)
    assert [(s.kind, s.fn, s.offset) for s in sites] == [("entry", "e_int", 0x400), ("return", "ret", 0x400)]


def test_internal_function_that_is_itself_single_stepped_is_not_used():
    elf = FakeElf({0x100: bytes.fromhex("4883ec08") + call_to(0x104, 0x400), 0x400: bytes.fromhex("4883ec08c3")})
    syms = {"r": Symbol("r", 0x100, 9, 0x100, None, ".dynsym")}
    sites = placement.plan(elf, LIB, syms)
    assert {s.offset for s in sites} == {0x100}


def test_probe_without_declared_registers_is_never_moved():
    lib = TlsLibrary(name="t", probe_file="x", uprobes=(Uprobe("f", entry="e"),), data_symbols=frozenset())
    elf = FakeElf({0x100: bytes.fromhex("4883ec18" "53c3")})
    (site,) = placement.plan(elf, lib, {"f": Symbol("f", 0x100, 6, 0x100, None, ".symtab")})
    assert site.offset == 0x100 and site.cost == "single-step"
