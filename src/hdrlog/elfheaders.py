"""ELF headers: the ELF header, section and program headers of an x86-64 ELF64 file, checked for sanity.

pyelftools parses the header tables only (no Section/Segment objects, which would read and validate linked
data hdrlog does not need); every malformed input becomes one :class:`~hdrlog.errors.HdrlogError`
sentence, with names read from the file escaped (:func:`hdrlog.textsafe.shown`).
"""

from __future__ import annotations

import mmap
import struct
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from elftools.elf.elffile import ELFFile

from hdrlog.errors import HdrlogError
from hdrlog.textsafe import shown

if TYPE_CHECKING:
    from hdrlog.elfsymtab import Symbol

__all__ = ["ELF_TYPES", "MACHINES", "ElfInfo", "Section", "Segment", "cstr", "parse_headers"]

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")  # Elf64_Ehdr, 64 bytes
_EM_X86_64 = 62
_MAX_HEADERS = 1 << 18  # more section/program headers than this is treated as corrupt

MACHINES = {
    3: "x86 (32-bit)", 8: "MIPS", 20: "PowerPC", 21: "PowerPC64", 22: "s390",
    40: "ARM (32-bit)", 62: "x86-64", 183: "AArch64 (arm64)", 243: "RISC-V", 258: "LoongArch",
}
ELF_TYPES = {0: "NONE", 1: "REL", 2: "EXEC", 3: "DYN", 4: "CORE"}


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
    # pyelftools parses the headers; it raises assorted exception types (ELFError, ELFParseError,
    # struct.error, IndexError, UnicodeDecodeError, ...) on malformed input, all of which mean
    # "corrupt file" here.
    try:
        elf = ELFFile(mm)
        nsec = elf.num_sections()
        nseg = elf.num_segments()
        if nsec and shoff + nsec * 64 > size:
            raise HdrlogError(f"{p} is truncated or corrupt: its section headers lie beyond the end of the file.")
        if nseg and phoff + nseg * 56 > size:
            raise HdrlogError(f"{p} is truncated or corrupt: its program headers lie beyond the end of the file.")
        if nsec > _MAX_HEADERS or nseg > _MAX_HEADERS:
            raise HdrlogError(f"{p} is corrupt: it claims {max(nsec, nseg)} section or program headers.")
        # Header-only accessors (no Section/Segment objects, which would read and validate
        # linked data we do not need).
        raw_sections = [elf._get_section_header(i) for i in range(nsec)]
        segments = [
            Segment(type=str(g["p_type"]), flags=g["p_flags"], offset=g["p_offset"],
                    vaddr=g["p_vaddr"], filesz=g["p_filesz"], memsz=g["p_memsz"])
            for g in (elf._get_segment_header(i) for i in range(nseg))
        ]
    except HdrlogError:
        raise
    except Exception as e:  # noqa: BLE001 - see comment above
        raise HdrlogError(f"{p} is a corrupt ELF file ({type(e).__name__}: {shown(str(e), 200)}).") from e
    if raw_sections and shstrndx == 0xFFFF:  # SHN_XINDEX: real index is in section 0's sh_link
        shstrndx = raw_sections[0]["sh_link"]
    names_lo = names_hi = 0
    if 0 < shstrndx < len(raw_sections) and raw_sections[shstrndx]["sh_type"] != "SHT_NOBITS":
        names_lo = raw_sections[shstrndx]["sh_offset"]
        names_hi = names_lo + raw_sections[shstrndx]["sh_size"]
        if names_hi > size:
            raise HdrlogError(f"{p} is truncated or corrupt: its section-name table lies beyond the end of the file.")
    sections = [
        Section(index=i, name=cstr(mm, names_lo, names_hi, h["sh_name"]) if i else "",
                type=str(h["sh_type"]), flags=h["sh_flags"], addr=h["sh_addr"], offset=h["sh_offset"],
                size=h["sh_size"], entsize=h["sh_entsize"], link=h["sh_link"], info=h["sh_info"])
        for i, h in enumerate(raw_sections)
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
