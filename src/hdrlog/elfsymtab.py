"""Symbol lookup in an ELF file's .dynsym and .symtab, for :class:`~hdrlog.elfsyms.ElfFile`.

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
"""

from __future__ import annotations

import mmap
import re
import struct
import sys
from collections.abc import Iterable
from dataclasses import dataclass

from hdrlog.elfheaders import Section

__all__ = ["Symbol", "SymbolLookup", "TABLES"]

_SYM = struct.Struct("<IBBHQQ")  # Elf64_Sym: st_name st_info st_other st_shndx st_value st_size
_SYM_SIZE = 24
_STT_FUNC = 2
_STT_GNU_IFUNC = 10
_STB_LOCAL = 0
_SHN_UNDEF = 0
_MAX_SEARCH_GROUPS = 8  # more distinct 4-byte name prefixes: one pass over the table instead
TABLES = (".dynsym", ".symtab")


@dataclass(frozen=True)
class Symbol:
    name: str  # base name without version, e.g. "SSL_read"
    vaddr: int  # st_value
    size: int  # st_size
    offset: int  # file offset: vaddr - PT_LOAD.p_vaddr + PT_LOAD.p_offset
    version: str | None  # e.g. "OPENSSL_3.0.0" when known
    table: str  # ".dynsym" or ".symtab"



class SymbolLookup:
    """Symbol lookup for :class:`~hdrlog.elfsyms.ElfFile` (a mixin: it uses the file's ``_info``, ``_map()``,
    ``_cstr()`` and ``vaddr_to_offset()``)."""

    __slots__ = ()

    def lookup(self, names: Iterable[str], tables: Iterable[str] = TABLES) -> dict[str, Symbol]:
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
        if unknown := set(tables) - set(TABLES):
            raise ValueError(f"unknown symbol table(s) {sorted(unknown)}; use .dynsym and/or .symtab")
        if tables != TABLES:
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


def _st_name_column(mm: mmap.mmap, base: int, count: int) -> list[int]:
    """st_name of `count` Elf64_Sym entries starting at file offset `base`."""
    if sys.byteorder == "little":
        with memoryview(mm) as whole, whole[base:base + count * _SYM_SIZE] as tbl, \
                tbl.cast("I") as words, words[::6] as col:
            return col.tolist()
    return [n for (n,) in struct.iter_unpack("<I20x", mm[base:base + count * _SYM_SIZE])]
