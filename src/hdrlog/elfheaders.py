"""ELF headers: the ELF header, section and program headers of an x86-64 ELF64 file, checked for sanity.

The header tables are read with struct (they are fixed 64- and 56-byte records); the type names are
pyelftools' for x86-64 (tests/test_elfheaders.py checks the tables and the whole result against
pyelftools), whose import alone took ~0.022 s of every `hdrlog attach` before its probes were compiled.
Every malformed input becomes one :class:`~hdrlog.errors.HdrlogError` sentence, with names read from the
file escaped (:func:`hdrlog.textsafe.shown`).
"""

from __future__ import annotations

import mmap
import struct
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hdrlog.errors import HdrlogError
from hdrlog.textsafe import shown

if TYPE_CHECKING:
    from hdrlog.elfsymtab import Symbol

__all__ = ["ELF_TYPES", "MACHINES", "ElfInfo", "Section", "Segment", "cstr", "parse_headers"]

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")  # Elf64_Ehdr, 64 bytes
_SHDR = struct.Struct("<IIQQQQIIQQ")  # Elf64_Shdr: name type flags addr offset size link info addralign entsize
_PHDR = struct.Struct("<IIQQQQQQ")  # Elf64_Phdr: type flags offset vaddr paddr filesz memsz align
_EM_X86_64 = 62
_MAX_HEADERS = 1 << 18  # more section/program headers than this is treated as corrupt

MACHINES = {
    3: "x86 (32-bit)", 8: "MIPS", 20: "PowerPC", 21: "PowerPC64", 22: "s390",
    40: "ARM (32-bit)", 62: "x86-64", 183: "AArch64 (arm64)", 243: "RISC-V", 258: "LoongArch",
}
ELF_TYPES = {0: "NONE", 1: "REL", 2: "EXEC", 3: "DYN", 4: "CORE"}
# pyelftools' names (elftools.elf.enums ENUM_SH_TYPE_AMD64, ENUM_P_TYPE_BASE); other values: the number
SH_TYPES = {
    0: "SHT_NULL", 1: "SHT_PROGBITS", 2: "SHT_SYMTAB", 3: "SHT_STRTAB", 4: "SHT_RELA", 5: "SHT_HASH",
    6: "SHT_DYNAMIC", 7: "SHT_NOTE", 8: "SHT_NOBITS", 9: "SHT_REL", 10: "SHT_SHLIB", 11: "SHT_DYNSYM",
    14: "SHT_INIT_ARRAY", 15: "SHT_FINI_ARRAY", 16: "SHT_PREINIT_ARRAY", 17: "SHT_GROUP", 18: "SHT_SYMTAB_SHNDX",
    19: "SHT_RELR", 20: "SHT_NUM", 0x60000000: "SHT_LOOS", 0x6FFFFFF3: "SHT_SUNW_LDYNSYM",
    0x6FFFFFF5: "SHT_GNU_ATTRIBUTES", 0x6FFFFFF6: "SHT_GNU_HASH", 0x6FFFFFF7: "SHT_GNU_LIBLIST",
    0x6FFFFFFC: "SHT_SUNW_syminfo", 0x6FFFFFFD: "SHT_GNU_verdef", 0x6FFFFFFE: "SHT_GNU_verneed",
    0x6FFFFFFF: "SHT_GNU_versym", 0x70000001: "SHT_AMD64_UNWIND", 0x80000000: "SHT_LOUSER", 0xFFFFFFFF: "SHT_HIUSER",
}
P_TYPES = {
    0: "PT_NULL", 1: "PT_LOAD", 2: "PT_DYNAMIC", 3: "PT_INTERP", 4: "PT_NOTE", 5: "PT_SHLIB", 6: "PT_PHDR",
    7: "PT_TLS", 0x60000000: "PT_LOOS", 0x6474E550: "PT_GNU_EH_FRAME", 0x6474E551: "PT_GNU_STACK",
    0x6474E552: "PT_GNU_RELRO", 0x6474E553: "PT_GNU_PROPERTY", 0x6FFFFFFF: "PT_HIOS",
}


@dataclass(frozen=True)
class Section:
    index: int
    name: str
    type: str  # pyelftools' name, e.g. "SHT_DYNSYM" (or the number as a string when unknown)
    flags: int
    addr: int
    offset: int
    size: int
    entsize: int
    link: int
    info: int

    @property
    def in_file(self) -> bool:
        return self.type != "SHT_NOBITS" and self.size > 0


@dataclass(frozen=True)
class Segment:
    type: str  # e.g. "PT_LOAD"
    flags: int  # PF_X=1 PF_W=2 PF_R=4
    offset: int
    vaddr: int
    filesz: int
    memsz: int


class ElfInfo:
    """Everything parsed from one file identity; shared by all ElfFile objects on that file."""

    def __init__(self, e_type: int, machine: int, size: int, sections: list[Section],
                 segments: list[Segment]) -> None:
        self.e_type = e_type
        self.machine = machine
        self.size = size
        self.sections = sections
        self.by_name: dict[str, Section] = {}
        for s in sections:
            self.by_name.setdefault(s.name, s)
        self.segments = segments
        self.loads = [g for g in segments if g.type == "PT_LOAD" and g.filesz > 0]
        self.lock = threading.Lock()
        self.symbols: dict[str, Symbol | None] = {}  # memoised lookups, None = not defined
        self.verdefs: dict[int, dict[int, str]] = {}  # versym section index -> {ndx: name}
        self.extra: dict[str, object] = {}  # lazily computed properties (build_id, soname, ...)


def parse_headers(p: str, mm: mmap.mmap, size: int) -> ElfInfo:
    """The ELF header and section/program headers of the file mapped at `mm` (`size` bytes), checked for
    sanity; HdrlogError with one sentence when the file is not a supported, intact ELF. `p` names the file in
    those sentences (already escaped: :attr:`ElfFile.shown_path <hdrlog.elfsyms.ElfFile>`)."""
    if size < 4 or mm[:4] != b"\x7fELF":
        raise HdrlogError(f"{p} is not an ELF binary (no \\x7fELF magic).")
    if size < _EHDR.size:
        raise HdrlogError(f"{p} is truncated: {size} bytes is shorter than an ELF header.")
    ident = mm[:16]
    if ident[4] != 2:
        cls = "32-bit" if ident[4] == 1 else f"class {ident[4]}"
        raise HdrlogError(f"{p} is a {cls} ELF; only x86-64 ELF64 little-endian binaries are supported.")
    if ident[5] != 1:
        raise HdrlogError(f"{p} is a big-endian ELF; only x86-64 ELF64 little-endian binaries are supported.")
    (_, e_type, machine, _, _, phoff, shoff, _, _, phentsize, phnum, shentsize, shnum,
     shstrndx) = _EHDR.unpack_from(mm, 0)
    if machine != _EM_X86_64:
        arch = MACHINES.get(machine, f"e_machine {machine}")
        raise HdrlogError(f"{p} is an ELF for {arch}; only x86-64 ELF64 little-endian binaries are supported.")
    if phnum and (phentsize != 56 or phoff + phnum * 56 > size):
        raise HdrlogError(f"{p} is truncated or corrupt: its program headers lie beyond the end of the file.")
    if shoff and (shentsize != 64 or shoff + max(shnum, 1) * 64 > size):
        raise HdrlogError(f"{p} is truncated or corrupt: its section headers lie beyond the end of the file.")
    # the counts, as pyelftools takes them: e_shnum 0 means section 0's sh_size, e_phnum PN_XNUM (0xffff)
    # section 0's sh_info (the size checks above made sure section 0 is in the file when shoff is set)
    nsec = 0
    if shoff:
        nsec = shnum or _SHDR.unpack_from(mm, shoff)[5]
    nseg = phnum
    if phnum == 0xFFFF:
        if not shoff:
            raise HdrlogError(f"{p} is corrupt: it has 0xffff program headers and no section 0 to count them.")
        nseg = _SHDR.unpack_from(mm, shoff)[7]
    if nsec and shoff + nsec * 64 > size:
        raise HdrlogError(f"{p} is truncated or corrupt: its section headers lie beyond the end of the file.")
    if nseg and (phentsize != 56 or phoff + nseg * 56 > size):
        raise HdrlogError(f"{p} is truncated or corrupt: its program headers lie beyond the end of the file.")
    if nsec > _MAX_HEADERS or nseg > _MAX_HEADERS:
        raise HdrlogError(f"{p} is corrupt: it claims {max(nsec, nseg)} section or program headers.")
    raw_sections = [_SHDR.unpack_from(mm, shoff + 64 * i) for i in range(nsec)]
    segments = []
    for i in range(nseg):
        ptype, pflags, poff, pvaddr, _, pfilesz, pmemsz, _ = _PHDR.unpack_from(mm, phoff + 56 * i)
        segments.append(Segment(type=P_TYPES.get(ptype, str(ptype)), flags=pflags, offset=poff, vaddr=pvaddr,
                                filesz=pfilesz, memsz=pmemsz))
    if raw_sections and shstrndx == 0xFFFF:  # SHN_XINDEX: real index is in section 0's sh_link
        shstrndx = raw_sections[0][6]
    names_lo = names_hi = 0
    if 0 < shstrndx < len(raw_sections) and raw_sections[shstrndx][1] != 8:  # not SHT_NOBITS
        names_lo = raw_sections[shstrndx][4]
        names_hi = names_lo + raw_sections[shstrndx][5]
        if names_hi > size:
            raise HdrlogError(f"{p} is truncated or corrupt: its section-name table lies beyond the end of the file.")
    sections = [
        Section(index=i, name=cstr(mm, names_lo, names_hi, name) if i else "", type=SH_TYPES.get(typ, str(typ)),
                flags=flags, addr=addr, offset=off, size=sz, entsize=entsize, link=link, info=info)
        for i, (name, typ, flags, addr, off, sz, link, info, _, entsize) in enumerate(raw_sections)
    ]
    for s in sections:
        if s.in_file and s.offset + s.size > size:
            raise HdrlogError(
                f"{p} is truncated or corrupt: section {shown(s.name) or s.index} extends beyond the end of the "
                f"file.")
    for g in segments:
        if g.filesz and g.offset + g.filesz > size:
            raise HdrlogError(f"{p} is truncated or corrupt: a {g.type} segment extends beyond the end of the file.")
    return ElfInfo(e_type, machine, size, sections, segments)


def cstr(mm: mmap.mmap, lo: int, hi: int, off: int) -> str:
    """NUL-terminated string at lo+off in the table [lo, hi) of `mm`."""
    start = lo + off
    if not lo <= start < hi:
        return ""
    end = mm.find(b"\0", start, hi)
    return mm[start:(hi if end < 0 else end)].decode("utf-8", "replace")
