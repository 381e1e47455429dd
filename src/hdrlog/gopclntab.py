"""Go function addresses from the pclntab, for Go binaries without a symbol table (`-ldflags="-s -w"`).

Every Go binary carries its function table for the runtime (stack traces, GC): the "pclntab", in the
section .gopclntab (internally linked binaries) or inside .rodata/.data.rel.ro (externally linked ones,
e.g. with cgo), where it is found by its header. Formats read here (amd64, pointer size 8):

* go1.18/go1.19 (magic 0xfffffff0) and go1.20+ (0xfffffff1): header {magic u32, pad u8 u8, minLC u8,
  ptrSize u8, nfunc, nfiles, textStart, funcnameOffset, cuOffset, filetabOffset, pctabOffset,
  pclnOffset} (words), then at pclnOffset the function table: nfunc+1 pairs {entryOff u32, funcOff u32}
  (entryOff relative to the text start, the last pair ends the text) and the _func records it points to,
  which begin {entryOff u32, nameOff i32} (nameOff into the name table at funcnameOffset). The two
  magics differ only in _func fields hdrlog does not read.
* go1.16/go1.17 (0xfffffffa): no textStart word; the function table is nfunc+1 pairs of words
  {entry address, funcOff}.
* older (0xfffffffb, go1.2-go1.15): refused (UnsupportedPclntab); hdrlog needs go1.17's register ABI
  anyway.

The text start that entryOff is relative to ("runtime.text") is, in order: the header's textStart word
when it is not 0 (go1.18 up to go1.26 without PIE; current Go always writes 0), else the `text` field of
the runtime's moduledata (found as the data word that points at the header, checked by the next word,
which points at the name table), for PIE binaries through their R_X86_64_RELATIVE relocations, else the
address of .text. The last guess is wrong for externally linked binaries, whose .text begins with C code
(Debian's caddy: runtime.text is .text + 0x100), which is why it comes last.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from hdrlog.elfsyms import ElfFile, Symbol
from hdrlog.errors import HdrlogError

__all__ = ["GoFunc", "PcLnTab", "UnsupportedPclntab", "find_pclntab", "lookup", "MAGIC_118", "MAGIC_120",
           "MAGIC_116", "MAGIC_12"]

MAGIC_12 = 0xFFFFFFFB  # go1.2 - go1.15
MAGIC_116 = 0xFFFFFFFA  # go1.16, go1.17
MAGIC_118 = 0xFFFFFFF0  # go1.18, go1.19
MAGIC_120 = 0xFFFFFFF1  # go1.20 and later
_FORMATS = {MAGIC_116: "go1.16", MAGIC_118: "go1.18", MAGIC_120: "go1.20"}
_MD_FUNCNAMETAB = 8  # moduledata: pcHeader *pcHeader, then funcnametab []byte
_MD_TEXT = 176  # ... ftab []functab (128), findfunctab (152), minpc (160), maxpc (168), text (176)
_R_X86_64_RELATIVE = 8
_HEADER_MIN = 72


class UnsupportedPclntab(HdrlogError):
    """The pclntab is of a format hdrlog does not read (go1.15 and older)."""


@dataclass(frozen=True)
class GoFunc:
    name: str
    entry: int  # virtual address of the first instruction
    end: int  # virtual address after the function (the next function's entry: includes padding)


class PcLnTab:
    """A parsed pclntab of one ELF file."""

    def __init__(self, elf: ElfFile, vaddr: int, data: bytes):
        self.elf = elf
        self.vaddr = vaddr
        self.data = data
        if len(data) < _HEADER_MIN:  # e.g. a .gopclntab section header with a corrupt size (found by fuzzing)
            raise HdrlogError(f"{elf.shown_path}: the Go function table at {vaddr:#x} is corrupt ({len(data)} bytes, "
                              f"shorter than its header).")
        magic, pad1, pad2, self.min_lc, self.ptr_size = struct.unpack_from("<IBBBB", data, 0)
        if magic == MAGIC_12:
            raise UnsupportedPclntab(f"{elf.shown_path} has a go1.2-go1.15 function table (magic {magic:#x}); "
                                     f"hdrlog reads go1.16 and later.")
        if magic not in _FORMATS or pad1 or pad2 or self.ptr_size != 8:
            raise HdrlogError(f"{elf.shown_path}: no Go function table at {vaddr:#x} (header {data[:8].hex()}).")
        self.magic = magic
        self.format = _FORMATS[magic]
        words = struct.unpack_from("<8Q", data, 8)
        if magic == MAGIC_116:
            self.nfunc, self.nfiles, self.funcname_off, _cu, _file, _pc, self.pcln_off, _ = words
            self.header_text = 0
        else:
            self.nfunc, self.nfiles, self.header_text, self.funcname_off, _cu, _file, _pc, self.pcln_off = words
        n = len(data)
        ent = 16 if magic == MAGIC_116 else 8
        if not (0 < self.nfunc < 1 << 24 and _HEADER_MIN <= self.funcname_off < n
                and 0 < self.pcln_off and self.pcln_off + (self.nfunc + 1) * ent <= n):
            raise HdrlogError(f"{elf.shown_path}: the Go function table at {vaddr:#x} is corrupt "
                              f"(nfunc {self.nfunc}, offsets beyond its {n} bytes).")
        self._ent = ent
        self.text_start, self.text_source = self._text_start()

    # ---- text start ------------------------------------------------------------------------------

    def _text_start(self) -> tuple[int, str]:
        if self.magic == MAGIC_116:
            return 0, "absolute"  # entries are addresses
        if self.header_text:
            return self.header_text, "header"
        rel = _relocations(self.elf)
        v = rel.get(self.vaddr + 24) if rel else None
        if v:
            return v, "header-reloc"
        md = self._moduledata_text(rel)
        if md:
            return md
        text = self.elf.text_range
        if text is None:
            raise HdrlogError(f"{self.elf.shown_path}: cannot tell where Go's text starts (no .text, no moduledata).")
        return text[0], ".text"

    def _moduledata_text(self, rel: dict[int, int] | None) -> tuple[int, str] | None:
        names = self.vaddr + self.funcname_off
        want = struct.pack("<QQ", self.vaddr, names)
        for g in self.elf.segments:
            if g.type != "PT_LOAD" or not g.flags & 2 or not g.filesz:
                continue  # moduledata is writable data
            pos, end = g.offset, g.offset + g.filesz
            while True:
                pos = self.elf.find(want, start=pos, end=end)
                if pos < 0:
                    break
                if (pos - g.offset + g.vaddr) % 8 == 0:
                    raw = self.elf.read(pos + _MD_TEXT, 8)
                    if len(raw) == 8 and (text := struct.unpack("<Q", raw)[0]):
                        return text, "moduledata"
                pos += 1
        return self._moduledata_text_relocated(rel) if rel else None

    def _moduledata_text_relocated(self, rel: dict[int, int]) -> tuple[int, str] | None:
        """PIE: the moduledata's words may be zero in the file, filled in by R_X86_64_RELATIVE relocations."""
        names = self.vaddr + self.funcname_off
        for site, value in rel.items():
            if value == self.vaddr and rel.get(site + _MD_FUNCNAMETAB) == names:
                text = rel.get(site + _MD_TEXT)
                if text:
                    return text, "moduledata-reloc"
        return None

    # ---- functions -------------------------------------------------------------------------------

    def _entry(self, i: int) -> tuple[int, int]:
        """(entry address, funcOff) of function table entry i (i == nfunc: the end of the text)."""
        base = self.pcln_off + i * self._ent
        if self._ent == 16:
            return struct.unpack_from("<QQ", self.data, base)
        off, funcoff = struct.unpack_from("<II", self.data, base)
        return self.text_start + off, funcoff

    def _name_at(self, name_off: int) -> str | None:
        start = self.funcname_off + name_off
        if not self.funcname_off <= start < len(self.data):
            return None
        end = self.data.find(b"\0", start)
        return self.data[start:end if end >= 0 else len(self.data)].decode("utf-8", "replace")

    def _name_off_of(self, funcoff: int) -> int | None:
        at = self.pcln_off + funcoff + (8 if self._ent == 16 else 4)
        if at + 4 > len(self.data):
            return None
        return struct.unpack_from("<i", self.data, at)[0]

    def funcs(self) -> Iterator[GoFunc]:
        """Every function, in address order."""
        prev = None
        for i in range(self.nfunc + 1):
            entry, funcoff = self._entry(i)
            if prev is not None:
                name_off = self._name_off_of(prev[1])
                name = self._name_at(name_off) if name_off is not None else None
                yield GoFunc(name or "?", prev[0], entry)
            prev = (entry, funcoff)

    def lookup(self, names: Iterable[str]) -> dict[str, GoFunc]:
        """The named functions that exist.

        Without decoding the whole table (caddy has 41k functions): a name's offset in the name table is
        found by a byte search, then that offset as an i32 in the _func records (which begin {entry,
        nameOff}), and each hit is confirmed by a binary search of the function table for an entry with
        the same entry and funcOff. A name listed twice (an assembly function's ABI0 body and its Go-ABI
        wrapper, which .symtab calls NAME.abi0 and NAME) gives the first in the records; Go methods
        such as crypto/tls.(*Conn).Read are listed once."""
        data, lo = self.data, self.funcname_off
        wanted: dict[int, str] = {}
        for name in dict.fromkeys(names):
            pat = name.encode() + b"\0"
            pos = data.find(pat, lo)
            while pos >= 0:
                if pos == lo or data[pos - 1] == 0:
                    wanted[pos - lo] = name
                pos = data.find(pat, pos + 1)
        out: dict[str, GoFunc] = {}
        entries = _Entries(self)
        lead = 8 if self._ent == 16 else 4  # bytes of the _func's entry field before nameOff
        funcs_lo = self.pcln_off + (self.nfunc + 1) * self._ent
        for name_off, name in wanted.items():
            pat = struct.pack("<i", name_off)
            pos = data.find(pat, funcs_lo)
            while pos >= 0 and name not in out:
                funcoff = pos - lead - self.pcln_off
                if funcoff % 4 == 0:
                    entry_raw = int.from_bytes(data[pos - lead:pos], "little")
                    i = bisect.bisect_left(entries, entry_raw)
                    while i < self.nfunc and entries[i] == entry_raw:
                        if entries.funcoff(i) == funcoff:
                            entry, _ = self._entry(i)
                            end, _ = self._entry(i + 1)
                            out[name] = GoFunc(name, entry, end)
                            break
                        i += 1
                pos = data.find(pat, pos + 1)
        return out


class _Entries:
    """The function table's raw entry fields as a sorted sequence (for bisect)."""

    def __init__(self, tab: PcLnTab):
        self.tab = tab
        self.fmt = "<Q" if tab._ent == 16 else "<I"
        self.step = tab._ent

    def __len__(self) -> int:
        return self.tab.nfunc

    def __getitem__(self, i: int) -> int:
        return struct.unpack_from(self.fmt, self.tab.data, self.tab.pcln_off + i * self.step)[0]

    def funcoff(self, i: int) -> int:
        half = self.step // 2
        return struct.unpack_from(self.fmt, self.tab.data, self.tab.pcln_off + i * self.step + half)[0]


# ---- finding the table -----------------------------------------------------------------------------


def _header_ok(data: bytes) -> bool:
    if len(data) < _HEADER_MIN:
        return False
    magic, p1, p2, lc, ps = struct.unpack_from("<IBBBB", data, 0)
    return magic in _FORMATS and not p1 and not p2 and lc in (1, 2, 4) and ps == 8


def _candidates(elf: ElfFile) -> Iterator[int]:
    """Virtual addresses where a pclntab header may start, best first."""
    sec = elf.get_section(".gopclntab")
    if sec is not None and sec.in_file:
        yield sec.addr
    # no such section (externally linked): the header's magic in the data segments
    for magic in (MAGIC_120, MAGIC_118, MAGIC_116, MAGIC_12):
        pat = struct.pack("<IBBBB", magic, 0, 0, 1, 8)
        for g in elf.segments:
            if g.type != "PT_LOAD" or g.flags & 1 or not g.filesz:  # data, not code
                continue
            pos, end = g.offset, g.offset + g.filesz
            while (pos := elf.find(pat, start=pos, end=end)) >= 0:
                if (pos - g.offset) % 8 == 0:
                    yield pos - g.offset + g.vaddr
                pos += 1


def find_pclntab(elf: ElfFile) -> PcLnTab | None:
    """The pclntab of a Go ELF file, or None when there is none. UnsupportedPclntab for go1.15 and older."""
    seen = set()
    first_err: HdrlogError | None = None
    for vaddr in _candidates(elf):
        if vaddr in seen:
            continue
        seen.add(vaddr)
        off = elf.vaddr_to_offset(vaddr)
        if off is None:
            continue
        seg_end = next((g.offset + g.filesz for g in elf.segments
                        if g.type == "PT_LOAD" and g.offset <= off < g.offset + g.filesz), None)
        head = elf.read(off, _HEADER_MIN)
        if seg_end is None or not _header_ok(head):
            continue
        if struct.unpack_from("<I", head)[0] == MAGIC_12:
            raise UnsupportedPclntab(f"{elf.shown_path} has a go1.2-go1.15 function table; "
                                     f"hdrlog reads go1.16 and later.")
        sec = elf.get_section(".gopclntab")
        end = off + sec.size if sec is not None and sec.addr == vaddr else seg_end
        try:
            return PcLnTab(elf, vaddr, elf.read(off, end - off))
        except UnsupportedPclntab:
            raise
        except HdrlogError as e:
            first_err = first_err or e
    if first_err is not None:
        raise first_err
    return None


def lookup(elf: ElfFile, names: Iterable[str]) -> dict[str, Symbol]:
    """Go functions by name as elfsyms Symbols (table ".gopclntab"; size runs to the next function)."""
    tab = find_pclntab(elf)
    if tab is None:
        return {}
    out = {}
    for name, f in tab.lookup(names).items():
        off = elf.vaddr_to_offset(f.entry)
        if off is None:
            continue
        out[name] = Symbol(name=name, vaddr=f.entry, size=f.end - f.entry, offset=off, version=None,
                           table=".gopclntab")
    return out


# ---- relocations (PIE) -----------------------------------------------------------------------------


def _relocations(elf: ElfFile) -> dict[int, int] | None:
    """{address: value} of the R_X86_64_RELATIVE relocations in .rela.dyn (PIE and shared objects only)."""
    if elf.elf_type != "DYN":
        return None
    out: dict[int, int] = {}
    for sec in elf.sections:
        if sec.type != "SHT_RELA" or not sec.in_file or sec.entsize not in (0, 24):
            continue
        raw = elf.read(sec.offset, sec.size - sec.size % 24)
        for r_offset, r_info, r_addend in struct.iter_unpack("<QQq", raw):
            if r_info & 0xFFFFFFFF == _R_X86_64_RELATIVE:
                out[r_offset] = r_addend
    return out
