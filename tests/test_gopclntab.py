"""gopclntab.py: Go function addresses without a symbol table, checked against .symtab on real builds."""

from __future__ import annotations

import os
import shutil
import struct

import pytest
from elftools.elf.elffile import ELFFile

import gobuild
from hdrlog import gopclntab
from hdrlog.discover import go_info
from hdrlog.elfsyms import ElfFile
from hdrlog.errors import HdrlogError

TLS = ("crypto/tls.(*Conn).Read", "crypto/tls.(*Conn).Write", "crypto/tls.(*Conn).Close")
CADDY = shutil.which("caddy") or "/usr/bin/caddy"
# amd64 Go prologues: cmp rsp, [r14+0x10] (small frames) or lea r12, [rsp-N] (large frames)
GO_PROLOGUES = (bytes.fromhex("493b6610"), bytes.fromhex("4c8d6424"))


@pytest.fixture(scope="module", params=gobuild.TOOLCHAINS)
def go(request):
    return request.param, gobuild.toolchain(request.param)


@pytest.fixture(scope="module")
def full(go):
    return str(gobuild.build(go=go[1]))


@pytest.fixture(scope="module")
def stripped(go):
    return str(gobuild.build(stripped=True, go=go[1]))


def _symtab_funcs(path: str) -> dict[str, set[int]]:
    """name -> addresses (a name can have two: an ABI0 assembly body and its ABIInternal wrapper)."""
    out: dict[str, set[int]] = {}
    with open(path, "rb") as f:
        tab = ELFFile(f).get_section_by_name(".symtab")
        for s in tab.iter_symbols():
            if s["st_info"]["type"] == "STT_FUNC" and s["st_value"]:
                # the table names an assembly function's ABI0 body and its Go-ABI wrapper alike;
                # .symtab calls the first NAME.abi0
                out.setdefault(s.name.removesuffix(".abi0"), set()).add(s["st_value"])
    return out


def test_tls_functions_same_as_symtab(go, full):
    """Unstripped: .symtab and .gopclntab give the same entry address and file offset."""
    with ElfFile(full) as elf:
        sym = elf.lookup(TLS, tables=(".symtab",))
        pcl = gopclntab.lookup(elf, TLS)
        tab = gopclntab.find_pclntab(elf)
    assert set(sym) == set(TLS) == set(pcl)
    for name in TLS:
        assert (pcl[name].vaddr, pcl[name].offset) == (sym[name].vaddr, sym[name].offset), name
        # pclntab's size runs to the next function (alignment padding included)
        assert sym[name].size <= pcl[name].size < sym[name].size + 64
        assert pcl[name].table == ".gopclntab"
    assert tab.ptr_size == 8
    if go[0] == "go1.19":
        assert tab.format == "go1.18" and tab.text_source == "header" and tab.header_text
    else:
        # current Go writes 0 for the header's text start: it comes from the moduledata
        assert tab.format == "go1.20" and tab.header_text == 0 and tab.text_source == "moduledata"


def test_every_function_matches_symtab(full):
    """Not just the TLS functions: every function the table lists is where .symtab says."""
    syms = _symtab_funcs(full)
    with ElfFile(full) as elf:
        funcs = list(gopclntab.find_pclntab(elf).funcs())
    assert len(funcs) > 3000
    named = [f for f in funcs if f.name in syms]
    assert len(named) > 0.95 * len(funcs)
    wrong = [(f.name, hex(f.entry), sorted(map(hex, syms[f.name]))) for f in named if f.entry not in syms[f.name]]
    assert not wrong, wrong[:5]
    assert all(a.end == b.entry for a, b in zip(funcs, funcs[1:]))


def test_stripped_binary_same_addresses(full, stripped):
    with ElfFile(stripped) as elf:
        assert elf.get_section(".symtab") is None
        assert elf.lookup(TLS) == {}
        pcl = gopclntab.lookup(elf, TLS)
    with ElfFile(full) as elf:
        sym = elf.lookup(TLS, tables=(".symtab",))
    assert {n: s.vaddr for n, s in pcl.items()} == {n: s.vaddr for n, s in sym.items()}


@pytest.mark.parametrize("variant", [
    {"external": True},  # system linker: .text starts with C code, runtime.text is further on
    {"external": True, "pie": True},
    {"pie": True},
])
def test_other_link_modes(variant):
    path = str(gobuild.build(stripped=True, **variant))
    unstripped = str(gobuild.build(**variant))
    with ElfFile(path) as elf:
        pcl = gopclntab.lookup(elf, TLS)
        tab = gopclntab.find_pclntab(elf)
        code = {n: elf.read(s.offset, 4) for n, s in pcl.items()}
    with ElfFile(unstripped) as elf:
        sym = elf.lookup(TLS, tables=(".symtab",))
    assert {n: s.vaddr for n, s in pcl.items()} == {n: s.vaddr for n, s in sym.items()}
    assert all(c in GO_PROLOGUES for c in code.values()), code
    if variant.get("external"):
        with ElfFile(path) as elf:
            assert tab.text_start != elf.text_range[0]  # the .text guess would be wrong


def test_caddy_go119_stripped():
    """Debian's caddy: go1.19, stripped, externally linked: the go1.18 format with a header text start."""
    if not os.path.exists(CADDY):
        pytest.skip("caddy not installed (make setup installs it)")
    assert go_info(CADDY).startswith("go1.19")
    with ElfFile(CADDY) as elf:
        assert elf.get_section(".symtab") is None
        tab = gopclntab.find_pclntab(elf)
        pcl = gopclntab.lookup(elf, TLS)
        assert tab.magic == gopclntab.MAGIC_118 and tab.text_source == "header"
        assert tab.text_start != elf.text_range[0]
        assert set(pcl) == set(TLS)
        for s in pcl.values():
            assert elf.read(s.offset, 4) in GO_PROLOGUES


def test_not_go_and_unknown_names(full):
    with ElfFile("/usr/bin/sleep") as elf:
        assert gopclntab.find_pclntab(elf) is None
        assert gopclntab.lookup(elf, TLS) == {}
    with ElfFile(full) as elf:
        assert gopclntab.lookup(elf, ["no/such.Func", "crypto/tls.(*Conn)"]) == {}
        # a name that is a suffix of a longer one must not match
        assert gopclntab.lookup(elf, ["(*Conn).Read"]) == {}


# ---- crafted tables -----------------------------------------------------------------------------


class _FakeElf:
    """Just what PcLnTab needs from an ElfFile, for hand-made tables."""

    path = shown_path = "fake"
    elf_type = "EXEC"
    segments: list = []
    text_range = (0x401000, 0x500000)

    def find(self, *a, **k):
        return -1


def _table(magic: int, funcs: list[tuple[str, int]], text_end: int) -> bytes:
    """A pclntab with the given (name, entry) functions; go1.16 format uses absolute entries."""
    names = b""
    name_offs = []
    for n, _ in funcs:
        name_offs.append(len(names))
        names += n.encode() + b"\0"
    hdr_words = 8
    funcname_off = 8 + hdr_words * 8
    pcln_off = funcname_off + len(names)
    pcln_off += -pcln_off % 8
    wide = magic == gopclntab.MAGIC_116
    ent = 16 if wide else 8
    ftab = b""
    fdata = b""
    base_funcs = (len(funcs) + 1) * ent
    for (name, entry), noff in zip(funcs, name_offs):
        funcoff = base_funcs + len(fdata)
        ftab += struct.pack("<QQ", entry, funcoff) if wide else struct.pack("<II", entry, funcoff)
        fdata += (struct.pack("<Qi", entry, noff) if wide else struct.pack("<Ii", entry, noff)).ljust(40, b"\0")
    ftab += struct.pack("<QQ", text_end, 0) if wide else struct.pack("<II", text_end, 0)
    if wide:
        words = [len(funcs), 1, funcname_off, 0, 0, 0, pcln_off, 0]
    else:
        words = [len(funcs), 1, 0x401000, funcname_off, 0, 0, 0, pcln_off]
    head = struct.pack("<IBBBB", magic, 0, 0, 1, 8) + struct.pack("<8Q", *words)
    return (head + names).ljust(pcln_off, b"\0") + ftab + fdata


def test_crafted_go118_and_go116():
    f = [("main.a", 0x100), ("crypto/tls.(*Conn).Read", 0x180), ("main.z", 0x400)]
    t = gopclntab.PcLnTab(_FakeElf(), 0x600000, _table(gopclntab.MAGIC_118, f, 0x480))
    assert t.text_source == "header" and t.text_start == 0x401000
    got = t.lookup(["crypto/tls.(*Conn).Read", "main.z", "nope"])
    assert got["crypto/tls.(*Conn).Read"] == gopclntab.GoFunc("crypto/tls.(*Conn).Read", 0x401180, 0x401400)
    assert got["main.z"].end == 0x401480 and "nope" not in got
    assert [x.name for x in t.funcs()] == ["main.a", "crypto/tls.(*Conn).Read", "main.z"]

    fa = [("main.a", 0x401100), ("crypto/tls.(*Conn).Write", 0x401200)]
    t = gopclntab.PcLnTab(_FakeElf(), 0x600000, _table(gopclntab.MAGIC_116, fa, 0x401300))
    assert t.format == "go1.16" and t.text_source == "absolute"
    assert t.lookup(["crypto/tls.(*Conn).Write"])["crypto/tls.(*Conn).Write"].entry == 0x401200


def test_crafted_text_start_from_relocations():
    """PIE: header text start 0 and a moduledata whose words only relocations fill in."""
    data = bytearray(_table(gopclntab.MAGIC_120, [("main.a", 0x10)], 0x20))
    struct.pack_into("<Q", data, 24, 0)
    t = gopclntab.PcLnTab(_FakeElf(), 0x600000, bytes(data))
    assert t.text_source == ".text" and t.text_start == 0x401000  # the last resort
    md = 0x900000
    rel = {md: 0x600000, md + 8: 0x600000 + t.funcname_off, md + 176: 0x402340}
    assert t._moduledata_text_relocated(rel) == (0x402340, "moduledata-reloc")
    assert t._moduledata_text_relocated({md: 0x600000, md + 8: 1, md + 176: 5}) is None


def test_crafted_refusals():
    old = struct.pack("<IBBBB", gopclntab.MAGIC_12, 0, 0, 1, 8).ljust(80, b"\0")
    with pytest.raises(gopclntab.UnsupportedPclntab, match="go1.2-go1.15"):
        gopclntab.PcLnTab(_FakeElf(), 0x600000, old)
    bad = bytearray(_table(gopclntab.MAGIC_120, [("main.a", 0x10)], 0x20))
    struct.pack_into("<Q", bad, 8, 1 << 30)  # nfunc beyond the data
    with pytest.raises(HdrlogError, match="corrupt"):
        gopclntab.PcLnTab(_FakeElf(), 0x600000, bytes(bad))
    with pytest.raises(HdrlogError, match="no Go function table"):
        gopclntab.PcLnTab(_FakeElf(), 0x600000, b"\x7fELF".ljust(80, b"\0"))


def test_refusal_names_a_hostile_path_escaped(tmp_path):
    """A file name may hold any byte but NUL (issue 7): the sentence stays one printable line."""
    evil = tmp_path / "go\n\x1b]0;pwned\x07bin"
    shutil.copy("/bin/true", evil)
    with ElfFile(str(evil)) as elf, pytest.raises(HdrlogError) as e:
        gopclntab.PcLnTab(elf, 0x600000, b"\x7fELF".ljust(80, b"\0"))
    msg = str(e.value)
    assert msg.isprintable() and "go\\n\\x1b]0;pwned\\x07bin: no Go function table" in msg, msg
