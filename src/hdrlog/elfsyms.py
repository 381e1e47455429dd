"""Fast ELF symbol lookup for uprobe targets (x86-64 ELF64 little-endian only, for now).

Modules: :mod:`hdrlog.elfheaders` (ELF/section/program headers, checked), :mod:`hdrlog.elfsymtab` (symbol
lookup through .gnu.hash and the string tables), this one (opening, caching, properties, raw reads).

Results are memoised per file identity (st_dev, st_ino, mtime, size): a file is parsed once per
run however many processes map it. Names are base names ("SSL_read", never "SSL_read@@...").

Offsets: ``Symbol.offset`` is the *file offset* of the symbol (what a uprobe wants), computed
from the PT_LOAD segment containing ``st_value``. Symbols not inside a file-backed part of a
PT_LOAD are left out (nothing to probe).
"""

from __future__ import annotations

import mmap
import os
import stat
import struct
import threading
from collections import OrderedDict

from hdrlog.elfheaders import ELF_TYPES, MACHINES, ElfInfo, Section, Segment, cstr, parse_headers
from hdrlog.elfsymtab import Symbol, SymbolLookup
from hdrlog.errors import HdrlogError
from hdrlog.textsafe import TEXT_LIMIT, shown

__all__ = ["Symbol", "Section", "Segment", "ElfFile", "clear_cache"]

_DT_NULL, _DT_SONAME, _DT_FLAGS_1 = 0, 14, 0x6FFFFFFB
_DF_1_PIE = 0x08000000
_NT_GNU_BUILD_ID = 3
_CACHE_MAX = 128

_cache: OrderedDict[tuple[int, int, int, int], ElfInfo] = OrderedDict()
_cache_lock = threading.Lock()


def clear_cache() -> None:
    """Forget every parsed file (tests use it to measure cold lookups)."""
    with _cache_lock:
        _cache.clear()


class ElfFile(SymbolLookup):
    """An x86-64 ELF64 file opened for symbol lookup. Use as a context manager or call close()."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.shown_path = p = shown(path, TEXT_LIMIT)  # for messages: a path may hold any byte but NUL
        self._mm: mmap.mmap | None = None
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # no hang on a FIFO
        except FileNotFoundError:
            raise HdrlogError(f"ELF file {p} does not exist.") from None
        except PermissionError:
            raise HdrlogError(f"Cannot read {p}: permission denied (run hdrlog as root).") from None
        except ProcessLookupError:
            raise HdrlogError(f"Cannot read {p}: the process it belongs to has exited.") from None
        except OSError as e:
            raise HdrlogError(f"Cannot open {p}: {e.strerror or e}.") from None
        try:
            self._info = self._load()
        except BaseException:
            self.close()
            raise

    # ---- opening and parsing -------------------------------------------------------------

    def _load(self) -> ElfInfo:
        st = os.fstat(self._fd)
        if not stat.S_ISREG(st.st_mode):
            raise HdrlogError(f"{self.shown_path} is not a regular file, so not an ELF binary.")
        key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        with _cache_lock:
            info = _cache.get(key)
            if info is not None:
                _cache.move_to_end(key)
                return info
        if st.st_size == 0:
            raise HdrlogError(f"{self.shown_path} is empty, not an ELF binary.")
        info = parse_headers(self.shown_path, self._map(), st.st_size)
        with _cache_lock:
            info = _cache.setdefault(key, info)
            while len(_cache) > _CACHE_MAX:
                _cache.popitem(last=False)
        return info

    def _map(self) -> mmap.mmap:
        if self._mm is None:
            self._mm = mmap.mmap(self._fd, 0, access=mmap.ACCESS_READ)
        return self._mm

    def _cstr(self, lo: int, hi: int, off: int) -> str:
        """NUL-terminated string at lo+off in the table [lo, hi)."""
        return cstr(self._map(), lo, hi, off)

    # ---- properties ----------------------------------------------------------------------

    @property
    def machine(self) -> str:
        return MACHINES.get(self._info.machine, str(self._info.machine))

    @property
    def elf_type(self) -> str:
        """'EXEC', 'DYN', 'REL', 'CORE' (or the number)."""
        return ELF_TYPES.get(self._info.e_type, str(self._info.e_type))

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
