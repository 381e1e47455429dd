"""Fast ELF symbol lookup for uprobe targets (x86-64 ELF64 little-endian only, for now).

Why not plain pyelftools: iterating /usr/bin/node's symbol tables (75k .dynsym + 109k .symtab
entries) through pyelftools' Symbol objects takes seconds. pyelftools is used here only for the
ELF header and the section/segment headers; symbol, string and hash tables are read straight
from an mmap of the file:

* .dynsym: through its .gnu.hash table (a few probes per name, microseconds);
* .symtab (and a .dynsym without .gnu.hash), only for names not already found as exported
  default-version functions: the wanted names are located in the string table with a regex
  search (``SSL_read`` followed by NUL or ``@``, with no leading NUL so that names the linker
  stored as the tail of a longer string are found too), which gives the string offsets that spell
  a wanted name; then the st_name column of the table (every 6th uint32, copied out in one
  strided memoryview copy) is searched for those offsets, and only matching entries are
  unpacked. For many names at once (> 8 distinct 4-byte prefixes) one pass over the st_name
  column is cheaper and is used instead.

Results are memoised per file identity (st_dev, st_ino, mtime, size): a file is parsed once per
run however many processes map it. Names are base names ("SSL_read", never "SSL_read@@...").

Offsets: ``Symbol.offset`` is the *file offset* of the symbol (what a uprobe wants), computed
from the PT_LOAD segment containing ``st_value``. Symbols not inside a file-backed part of a
PT_LOAD are left out (nothing to probe).
"""

from __future__ import annotations

import mmap
import os
import re
import stat
import struct
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from elftools.elf.elffile import ELFFile

from hdrlog.errors import HdrlogError

__all__ = ["Symbol", "Section", "Segment", "ElfFile", "clear_cache"]

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")  # Elf64_Ehdr, 64 bytes
_SYM = struct.Struct("<IBBHQQ")  # Elf64_Sym: st_name st_info st_other st_shndx st_value st_size
_SYM_SIZE = 24
_EM_X86_64 = 62
_STT_FUNC = 2
_STT_GNU_IFUNC = 10
_STB_LOCAL = 0
_SHN_UNDEF = 0
_PT_LOAD = "PT_LOAD"
_DT_NULL, _DT_SONAME, _DT_FLAGS_1 = 0, 14, 0x6FFFFFFB
_DF_1_PIE = 0x08000000
_NT_GNU_BUILD_ID = 3
_CACHE_MAX = 128
_MAX_SEARCH_GROUPS = 8  # more distinct 4-byte name prefixes: one pass over the table instead
_TABLES = (".dynsym", ".symtab")
_MAX_HEADERS = 1 << 18  # more section/program headers than this is treated as corrupt

_MACHINES = {
    3: "x86 (32-bit)", 8: "MIPS", 20: "PowerPC", 21: "PowerPC64", 22: "s390",
    40: "ARM (32-bit)", 62: "x86-64", 183: "AArch64 (arm64)", 243: "RISC-V", 258: "LoongArch",
}
_ELF_TYPES = {0: "NONE", 1: "REL", 2: "EXEC", 3: "DYN", 4: "CORE"}


@dataclass(frozen=True)
class Symbol:
    name: str  # base name without version, e.g. "SSL_read"
    vaddr: int  # st_value
    size: int  # st_size
    offset: int  # file offset: vaddr - PT_LOAD.p_vaddr + PT_LOAD.p_offset
    version: str | None  # e.g. "OPENSSL_3.0.0" when known
    table: str  # ".dynsym" or ".symtab"


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


class _Info:
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
        self.loads = [g for g in segments if g.type == _PT_LOAD and g.filesz > 0]
        self.lock = threading.Lock()
        self.symbols: dict[str, Symbol | None] = {}  # memoised lookups, None = not defined
        self.verdefs: dict[int, dict[int, str]] = {}  # versym section index -> {ndx: name}
        self.extra: dict[str, object] = {}  # lazily computed properties (build_id, soname, ...)


_cache: OrderedDict[tuple[int, int, int, int], _Info] = OrderedDict()
_cache_lock = threading.Lock()


def clear_cache() -> None:
    """Forget every parsed file (tests use it to measure cold lookups)."""
    with _cache_lock:
        _cache.clear()


class ElfFile:
    """An x86-64 ELF64 file opened for symbol lookup. Use as a context manager or call close()."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._mm: mmap.mmap | None = None
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # no hang on a FIFO
        except FileNotFoundError:
            raise HdrlogError(f"ELF file {path} does not exist.") from None
        except PermissionError:
            raise HdrlogError(f"Cannot read {path}: permission denied (run hdrlog as root).") from None
        except ProcessLookupError:
            raise HdrlogError(f"Cannot read {path}: the process it belongs to has exited.") from None
        except OSError as e:
            raise HdrlogError(f"Cannot open {path}: {e.strerror or e}.") from None
        try:
            self._info = self._load()
        except BaseException:
            self.close()
            raise

    # ---- opening and parsing -------------------------------------------------------------

    def _load(self) -> _Info:
        st = os.fstat(self._fd)
        if not stat.S_ISREG(st.st_mode):
            raise HdrlogError(f"{self.path} is not a regular file, so not an ELF binary.")
        key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        with _cache_lock:
            info = _cache.get(key)
            if info is not None:
                _cache.move_to_end(key)
                return info
        if st.st_size == 0:
            raise HdrlogError(f"{self.path} is empty, not an ELF binary.")
        info = self._parse(st.st_size)
        with _cache_lock:
            info = _cache.setdefault(key, info)
            while len(_cache) > _CACHE_MAX:
                _cache.popitem(last=False)
        return info

    def _parse(self, size: int) -> _Info:
        p = self.path
        mm = self._map()
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
            arch = _MACHINES.get(machine, f"e_machine {machine}")
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
            raise HdrlogError(f"{p} is a corrupt ELF file ({type(e).__name__}: {_shown(str(e), 200)}).") from e
        if raw_sections and shstrndx == 0xFFFF:  # SHN_XINDEX: real index is in section 0's sh_link
            shstrndx = raw_sections[0]["sh_link"]
        names_lo = names_hi = 0
        if 0 < shstrndx < len(raw_sections) and raw_sections[shstrndx]["sh_type"] != "SHT_NOBITS":
            names_lo = raw_sections[shstrndx]["sh_offset"]
            names_hi = names_lo + raw_sections[shstrndx]["sh_size"]
            if names_hi > size:
                raise HdrlogError(f"{p} is truncated or corrupt: its section-name table lies beyond the end of the file.")
        sections = [
            Section(index=i, name=self._cstr(names_lo, names_hi, h["sh_name"]) if i else "",
                    type=str(h["sh_type"]), flags=h["sh_flags"], addr=h["sh_addr"], offset=h["sh_offset"],
                    size=h["sh_size"], entsize=h["sh_entsize"], link=h["sh_link"], info=h["sh_info"])
            for i, h in enumerate(raw_sections)
        ]
        for s in sections:
            if s.in_file and s.offset + s.size > size:
                raise HdrlogError(
                    f"{p} is truncated or corrupt: section {_shown(s.name) or s.index} extends beyond the end of the "
                    f"file.")
        for g in segments:
            if g.filesz and g.offset + g.filesz > size:
                raise HdrlogError(f"{p} is truncated or corrupt: a {g.type} segment extends beyond the end of the file.")
        return _Info(e_type, machine, size, sections, segments)
    def _map(self) -> mmap.mmap:
        if self._mm is None:
            self._mm = mmap.mmap(self._fd, 0, access=mmap.ACCESS_READ)
        return self._mm

    def _cstr(self, lo: int, hi: int, off: int) -> str:
        """NUL-terminated string at lo+off in the table [lo, hi)."""
        mm = self._map()
        start = lo + off
        if not lo <= start < hi:
            return ""
        end = mm.find(b"\0", start, hi)
        return mm[start:(hi if end < 0 else end)].decode("utf-8", "replace")

    # ---- properties ----------------------------------------------------------------------

    @property
    def machine(self) -> str:
        return _MACHINES.get(self._info.machine, str(self._info.machine))

    @property
    def elf_type(self) -> str:
        """'EXEC', 'DYN', 'REL', 'CORE' (or the number)."""
        return _ELF_TYPES.get(self._info.e_type, str(self._info.e_type))

    @property
    def sections(self) -> list[Section]:
        return list(self._info.sections)

    @property
    def segments(self) -> list[Segment]:
        return list(self._info.segments)

    def get_section(self, name: str) -> Section | None:
        return self._info.by_name.get(name)

    @property
    def text_range(self) -> tuple[int, int] | None:
        """(start, end) virtual addresses of .text, or None."""
        s = self._info.by_name.get(".text")
        return (s.addr, s.addr + s.size) if s else None

    @property
    def build_id(self) -> str | None:
        """GNU build ID as hex, from .note.gnu.build-id or any PT_NOTE segment."""
        return self._lazy("build_id", self._find_build_id)

    @property
    def soname(self) -> str | None:
        return self._lazy("soname", lambda: self._dynamic()[0])

    @property
    def is_pie(self) -> bool:
        """True for a position-independent *executable* (ET_DYN with DF_1_PIE, or with PT_INTERP
        and no DT_SONAME); False for shared libraries and ET_EXEC. Best effort."""
        if self._info.e_type != 3:
            return False
        soname, flags_1 = self._dynamic()
        if flags_1 & _DF_1_PIE:
            return True
        return soname is None and any(g.type == "PT_INTERP" for g in self._info.segments)

    def _lazy(self, key: str, compute):
        info = self._info
        if key not in info.extra:
            value = compute()
            with info.lock:
                info.extra.setdefault(key, value)
        return info.extra[key]

    def _dynamic(self) -> tuple[str | None, int]:
        def compute() -> tuple[str | None, int]:
            dyn = next((s for s in self._info.sections if s.type == "SHT_DYNAMIC" and s.in_file), None)
            if dyn is None:
                return None, 0
            mm = self._map()
            soname_off, flags_1 = None, 0
            for pos in range(dyn.offset, dyn.offset + dyn.size - 15, 16):
                tag, val = struct.unpack_from("<qQ", mm, pos)
                if tag == _DT_NULL:
                    break
                if tag == _DT_SONAME:
                    soname_off = val
                elif tag == _DT_FLAGS_1:
                    flags_1 = val
            soname = None
            if soname_off is not None and 0 <= dyn.link < len(self._info.sections):
                strs = self._info.sections[dyn.link]
                soname = self._cstr(strs.offset, strs.offset + strs.size, soname_off) or None
            return soname, flags_1

        return self._lazy("dynamic", compute)

    def _find_build_id(self) -> str | None:
        mm = self._map()
        areas = [(s.offset, s.size) for s in self._info.sections if s.name == ".note.gnu.build-id" and s.in_file]
        areas += [(g.offset, g.filesz) for g in self._info.segments if g.type == "PT_NOTE" and g.filesz]
        for off, size in areas:
            pos, end = off, off + size
            while pos + 12 <= end:
                namesz, descsz, ntype = struct.unpack_from("<III", mm, pos)
                name_at = pos + 12
                desc_at = name_at + ((namesz + 3) & ~3)
                nxt = desc_at + ((descsz + 3) & ~3)
                if nxt > end:
                    break
                if ntype == _NT_GNU_BUILD_ID and mm[name_at:name_at + namesz] == b"GNU\0" and descsz:
                    return mm[desc_at:desc_at + descsz].hex()
                pos = nxt
        return None

    # ---- raw data ------------------------------------------------------------------------

    def section(self, name: str) -> bytes | None:
        """Raw bytes of the first section called `name`; None if absent or without file data (NOBITS)."""
        s = self._info.by_name.get(name)
        if s is None or not s.in_file:
            return None
        return self._map()[s.offset:s.offset + s.size]

    def read(self, offset: int, size: int) -> bytes:
        """Up to `size` bytes at file offset `offset` (short at end of file)."""
        if offset < 0 or size < 0:
            return b""
        return self._map()[offset:offset + size]

    def vaddr_to_offset(self, vaddr: int) -> int | None:
        """File offset of virtual address `vaddr`, if it lies in the file-backed part of a PT_LOAD."""
        for g in self._info.loads:
            if g.vaddr <= vaddr < g.vaddr + g.filesz:
                return vaddr - g.vaddr + g.offset
        return None

    def read_vaddr(self, vaddr: int, size: int) -> bytes | None:
        """`size` bytes at virtual address `vaddr` (within one PT_LOAD), or None if not in the file."""
        for g in self._info.loads:
            if g.vaddr <= vaddr and vaddr + size <= g.vaddr + g.filesz:
                off = vaddr - g.vaddr + g.offset
                return self._map()[off:off + size]
        return None

    def find(self, pattern: bytes, section: str | None = None, start: int = 0, end: int | None = None) -> int:
        """File offset of the first occurrence of `pattern` within [start, end) (and within
        `section` when given), or -1."""
        if section is None:
            lo, hi = 0, self._info.size
        else:
            s = self._info.by_name.get(section)
            if s is None or not s.in_file:
                return -1
            lo, hi = s.offset, s.offset + s.size
        if end is not None:
            hi = min(hi, end)
        return self._map().find(pattern, max(lo, start), hi)

    # ---- symbols -------------------------------------------------------------------------

    def lookup(self, names: Iterable[str], tables: Iterable[str] = _TABLES) -> dict[str, Symbol]:
        """Defined FUNC symbols among `names`, searched in .dynsym and .symtab.

        Versioned names match their base name ("SSL_read@@OPENSSL_3.0.0" -> "SSL_read"). When a
        name is defined several times the winner is, in order: global/weak over local binding,
        default version (@@ / non-hidden versym) over hidden, .dynsym over .symtab, lowest index.
        An STT_GNU_IFUNC winner is not returned (probing the resolver would be wrong; e.g. glibc's
        memcpy gives nothing rather than the compat memcpy@GLIBC_2.2.5), nor are symbols outside
        the file-backed part of a PT_LOAD segment. `tables` restricts the search to
        ".dynsym" or ".symtab" (results for the default, both, are memoised per file).
        """
        info = self._info
        wanted = [n for n in dict.fromkeys(names) if n]
        tables = tuple(sorted(set(tables)))
        if unknown := set(tables) - set(_TABLES):
            raise ValueError(f"unknown symbol table(s) {sorted(unknown)}; use .dynsym and/or .symtab")
        if tables != _TABLES:
            found = self._scan(wanted, tables)
            return {n: found[n] for n in wanted if n in found}
        with info.lock:
            todo = [n for n in wanted if n not in info.symbols]
        if todo:
            found = self._scan(todo, tables)
            with info.lock:
                for n in todo:
                    info.symbols.setdefault(n, found.get(n))
        return {n: info.symbols[n] for n in wanted if info.symbols.get(n) is not None}

    def _scan(self, names: list[str], which: tuple[str, ...]) -> dict[str, Symbol]:
        best: dict[str, tuple[tuple, Symbol]] = {}

        def consider(sec: Section, hits: dict[int, str]) -> None:
            for rank, sym in self._decode(sec, hits):
                cur = best.get(sym.name)
                if cur is None or rank < cur[0]:
                    best[sym.name] = (rank, sym)

        types = {".dynsym": "SHT_DYNSYM", ".symtab": "SHT_SYMTAB"}
        wanted_types = {types[t] for t in which}
        tables = [s for s in self._info.sections if s.type in wanted_types and s.in_file]
        for sec in tables:
            if sec.type == "SHT_DYNSYM":
                hits = self._gnu_hash_hits(sec, names)
                consider(sec, self._strtab_hits(sec, names) if hits is None else hits)
        # .symtab is only needed for names without an exported, default-version global definition
        # (nothing in .symtab can outrank one, see lookup()).
        rest = [n for n in names if n not in best or best[n][0][:2] != (False, False)]
        for sec in tables:
            if sec.type == "SHT_SYMTAB" and rest:
                consider(sec, self._strtab_hits(sec, rest))
        # The best definition may be an IFUNC (e.g. glibc's memcpy@@GLIBC_2.14, next to a plain
        # memcpy@GLIBC_2.2.5): then the name has no probe-able function rather than a stale one.
        return {n: s for n, (rank, s) in best.items() if not rank[-1]}

    def _strtab(self, sec: Section) -> Section | None:
        """The string table linked from symbol table `sec`, if sane."""
        info = self._info
        if sec.entsize not in (0, _SYM_SIZE) or not 0 < sec.link < len(info.sections):
            return None
        strs = info.sections[sec.link]
        return strs if strs.type == "SHT_STRTAB" and strs.in_file else None

    def _gnu_hash_hits(self, dynsym: Section, names: list[str]) -> dict[int, str] | None:
        """{symbol index: name} found through .gnu.hash (O(1) per name); None if there is no usable
        hash table. Only defined symbols are hashed, and all versions of a name share a chain."""
        info = self._info
        gh = next((s for s in info.sections if s.type == "SHT_GNU_HASH" and s.link == dynsym.index
                   and s.in_file), None)
        strs = self._strtab(dynsym)
        if gh is None or strs is None or gh.size < 16:
            return None
        mm = self._map()
        nsyms = dynsym.size // _SYM_SIZE
        nbuckets, symoffset, bloom_size, _ = struct.unpack_from("<IIII", mm, gh.offset)
        buckets_at = gh.offset + 16 + 8 * bloom_size
        chain_at = buckets_at + 4 * nbuckets
        end = gh.offset + gh.size
        if nbuckets == 0 or chain_at > end or symoffset > nsyms or chain_at + 4 * (nsyms - symoffset) > end:
            return None
        s_lo, s_hi = strs.offset, strs.offset + strs.size
        hits: dict[int, str] = {}
        for name in names:
            raw = name.encode()
            h = 5381
            for c in raw:
                h = (h * 33 + c) & 0xFFFFFFFF
            (idx,) = struct.unpack_from("<I", mm, buckets_at + 4 * (h % nbuckets))
            if idx < symoffset:
                continue
            while idx < nsyms:
                (h2,) = struct.unpack_from("<I", mm, chain_at + 4 * (idx - symoffset))
                if (h | 1) == (h2 | 1):
                    (st_name,) = struct.unpack_from("<I", mm, dynsym.offset + idx * _SYM_SIZE)
                    start = s_lo + st_name
                    if start + len(raw) < s_hi and mm[start:start + len(raw) + 1] in (raw + b"\0", raw + b"@"):
                        hits[idx] = name
                if h2 & 1:
                    break
                idx += 1
        return hits

    def _strtab_hits(self, sec: Section, names: list[str]) -> dict[int, str]:
        """{symbol index: name} by searching the string table, then the st_name column."""
        strs = self._strtab(sec)
        if strs is None:
            return {}
        mm = self._map()
        s_lo, s_hi = strs.offset, strs.offset + strs.size
        groups: dict[bytes, list[tuple[bytes, str]]] = {}
        for name in names:
            raw = name.encode()
            groups.setdefault(raw[:4], []).append((raw, name))
        count = sec.size // _SYM_SIZE
        base = sec.offset
        if len(groups) > _MAX_SEARCH_GROUPS:
            return self._column_hits(mm, base, count, s_lo, s_hi, groups)
        # 1. String-table offsets whose C string is "name" or "name@...". Searching without a
        #    leading NUL also finds names that the linker stored as the tail of a longer string
        #    (suffix merging: 1.7k of node's .symtab names). Names sharing a 4-byte prefix are
        #    searched together with one regex (re's literal-prefix search), others with mmap.find
        #    (faster for a lone literal); each search restarts one byte further, so overlapping
        #    matches are seen.
        cand: dict[int, str] = {}
        for group in groups.values():
            if len(group) < 3:  # mmap.find (two-way search) beats re for a lone literal
                for raw, name in group:
                    pos = mm.find(raw, s_lo, s_hi)
                    while pos >= 0:
                        if mm[pos + len(raw):pos + len(raw) + 1] in (b"\0", b"@"):
                            cand[pos - s_lo] = name
                        pos = mm.find(raw, pos + 1, s_hi)
                continue
            alts = b"|".join(re.escape(raw) for raw, _ in sorted(group, key=lambda g: -len(g[0])))
            rx = re.compile(b"(?:" + alts + b")(?=[\\0@])")
            m = rx.search(mm, s_lo, s_hi)
            while m:
                cand[m.start() - s_lo] = m.group().decode()
                m = rx.search(mm, m.start() + 1, s_hi)
        if not cand:
            return {}
        # 2. symbol-table indexes whose st_name is one of those offsets
        hits: dict[int, str] = {}
        if sys.byteorder == "little" and len(cand) <= 256:
            with memoryview(mm) as whole, whole[base:base + count * _SYM_SIZE] as tbl, \
                    tbl.cast("I") as words, words[::6] as col:
                st_names = col.tobytes()  # one strided copy of the st_name column
            for off, name in cand.items():
                key = struct.pack("<I", off)
                pos = st_names.find(key)
                while pos >= 0:
                    if pos % 4 == 0:
                        hits[pos // 4] = name
                    pos = st_names.find(key, pos + 1)
        else:
            for i, st_name in enumerate(_st_name_column(mm, base, count)):
                if st_name in cand:
                    hits[i] = cand[st_name]
        return hits

    @staticmethod
    def _column_hits(mm: mmap.mmap, base: int, count: int, s_lo: int, s_hi: int,
                     groups: dict[bytes, list[tuple[bytes, str]]]) -> dict[int, str]:
        """Many names at once: one pass over the st_name column; an entry's string is read only
        when its first 4 bytes are a wanted prefix (cost ~ table size, not names x string table)."""
        strings = mm[s_lo:s_hi]
        column = _st_name_column(mm, base, count)
        wanted = {raw: name for group in groups.values() for raw, name in group}
        prefixes = None if any(len(k) < 4 for k in groups) else set(groups)
        hits: dict[int, str] = {}
        for idx, off in enumerate(column):
            if prefixes is not None and strings[off:off + 4] not in prefixes:
                continue
            end = strings.find(b"\0", off)
            full = strings[off:end] if end >= 0 else strings[off:]
            name = wanted.get(full.split(b"@", 1)[0])
            if name is not None:
                hits[idx] = name
        return hits

    def _decode(self, sec: Section, hits: dict[int, str]):
        """(rank, Symbol) for each hit that is a defined, file-backed FUNC or IFUNC (rank[-1] is
        True for an IFUNC, which competes for the name but is never returned)."""
        strs = self._strtab(sec)
        if strs is None:
            return
        mm = self._map()
        s_lo, s_hi = strs.offset, strs.offset + strs.size
        table = ".dynsym" if sec.type == "SHT_DYNSYM" else ".symtab"
        for idx in sorted(hits):
            name = hits[idx]
            st_name, st_info, _, shndx, value, size = _SYM.unpack_from(mm, sec.offset + idx * _SYM_SIZE)
            if st_info & 0xF not in (_STT_FUNC, _STT_GNU_IFUNC) or shndx == _SHN_UNDEF or value == 0:
                continue
            offset = self.vaddr_to_offset(value)
            if offset is None:
                continue
            version, default = None, True
            full = self._cstr(s_lo, s_hi, st_name)
            if len(full) > len(name) and full[len(name)] == "@":
                ver = full[len(name) + 1:]
                default = ver.startswith("@")
                version = ver.lstrip("@") or None
            elif table == ".dynsym":
                version, default = self._dynsym_version(sec, idx)
            rank = (st_info >> 4 == _STB_LOCAL, not default, table != ".dynsym", idx, st_info & 0xF != _STT_FUNC)
            yield rank, Symbol(name=name, vaddr=value, size=size, offset=offset, version=version, table=table)

    def _dynsym_version(self, dynsym: Section, idx: int) -> tuple[str | None, bool]:
        """(version name, is default) of .dynsym entry idx from .gnu.version/.gnu.version_d."""
        info = self._info
        versym = next((s for s in info.sections if s.type == "SHT_GNU_versym" and s.link == dynsym.index
                       and s.in_file), None)
        if versym is None or (idx + 1) * 2 > versym.size:
            return None, True
        (v,) = struct.unpack_from("<H", self._map(), versym.offset + idx * 2)
        hidden, ndx = bool(v & 0x8000), v & 0x7FFF
        if ndx < 2:
            return None, True
        if versym.index not in info.verdefs:
            defs = self._parse_verdef(dynsym)
            with info.lock:
                info.verdefs.setdefault(versym.index, defs)
        return info.verdefs[versym.index].get(ndx), not hidden

    def _parse_verdef(self, dynsym: Section) -> dict[int, str]:
        info = self._info
        vd = next((s for s in info.sections if s.type == "SHT_GNU_verdef" and s.in_file), None)
        if vd is None or not 0 < vd.link < len(info.sections):
            return {}
        strs = info.sections[vd.link]
        mm = self._map()
        out: dict[int, str] = {}
        pos, end = vd.offset, vd.offset + vd.size
        for _ in range(min(vd.info or 0xFFFF, 0xFFFF)):
            if pos + 20 > end:
                break
            _, flags, ndx, cnt, _, aux, nxt = struct.unpack_from("<HHHHIII", mm, pos)
            if cnt and pos + aux + 8 <= end and not flags & 1:  # skip VER_FLG_BASE (the soname)
                (vda_name,) = struct.unpack_from("<I", mm, pos + aux)
                out[ndx] = self._cstr(strs.offset, strs.offset + strs.size, vda_name)
            if nxt == 0:
                break
            pos += nxt
        return out

    # ---- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        if self._mm is not None:
            self._mm.close()
            self._mm = None
        if getattr(self, "_fd", -1) >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ElfFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finaliser
            pass

    def __repr__(self) -> str:
        return f"ElfFile({self.path!r}, {self.elf_type}, {self.machine})"


def _shown(text: str, limit: int = 64) -> str:
    """A string read from the file, fit for a one-line message: control characters (a newline, a terminal
    escape from a hostile file) and overlong text are shown escaped (found by tests/test_fuzz.py)."""
    if text.isprintable() and len(text) <= limit:
        return text
    return repr(text[:limit])[1:-1] + ("..." if len(text) > limit else "")


def _st_name_column(mm: mmap.mmap, base: int, count: int) -> list[int]:
    """st_name of `count` Elf64_Sym entries starting at file offset `base`."""
    if sys.byteorder == "little":
        with memoryview(mm) as whole, whole[base:base + count * _SYM_SIZE] as tbl, \
                tbl.cast("I") as words, words[::6] as col:
            return col.tolist()
    return [n for (n,) in struct.iter_unpack("<I20x", mm[base:base + count * _SYM_SIZE])]
