"""Find the TLS code of a running process through /proc/PID/maps.

What is searched (kept small on purpose; big gateways map hundreds of objects):

* the main executable (static OpenSSL/BoringSSL, e.g. node, envoy; or a Go binary), and
* every object with an executable mapping whose file name contains one of ``NAME_HINTS``
  ("ssl", "crypto", "boring", "tls", "node"): libssl.so.*, libcrypto, libboringssl, libnode, ...

An object carries TLS when it *defines* SSL_read/SSL_write (or their _ex variants) as functions.
Kinds: "openssl" (an object named libssl*), "openssl-static" (any other object, e.g. node's
executable; this also covers OpenSSL-compatible layers such as libgnutls-openssl), "boringssl"
(BoringSSL-only functions are present, however it is linked), "go" (a Go executable, go1.17 or later,
defining crypto/tls.(*Conn).Read/Write, found in its .symtab or, when stripped, in its .gopclntab
function table (gopclntab.py); its ``symbols`` are keyed by those Go names).

Objects are opened from hdrlog's mount namespace as /proc/PID/root/<path>, which works for
containers; a mapped file that was deleted or replaced since (e.g. libssl upgraded under a running
gateway) is opened through /proc/PID/map_files/<range>, i.e. the inode actually mapped.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from hdrlog import golang, gopclntab
from hdrlog.elfsyms import ElfFile, Symbol
from hdrlog.errors import HdrlogError
from hdrlog.textsafe import TEXT_LIMIT, shown

__all__ = [
    "Mapping", "TlsTarget", "process_mappings", "find_tls", "go_info", "explain_none",
    "parse_buildinfo", "OPENSSL_FUNCS", "GO_TLS_FUNCS", "NAME_HINTS",
]

OPENSSL_FUNCS = ("SSL_read", "SSL_read_ex", "SSL_write", "SSL_write_ex", "SSL_do_handshake", "SSL_free")
_IO_FUNCS = ("SSL_read", "SSL_read_ex", "SSL_write", "SSL_write_ex")  # one of these makes a target
# Functions that exist in BoringSSL but not in OpenSSL.
BORINGSSL_MARKERS = ("SSL_CTX_set_custom_verify", "SSL_set_renegotiate_mode", "BORINGSSL_self_test",
                     "SSL_early_callback_ctx_extension_get")
GO_TLS_FUNCS = ("crypto/tls.(*Conn).Read", "crypto/tls.(*Conn).Write", "crypto/tls.(*Conn).Handshake",
                "crypto/tls.(*Conn).Close", "crypto/tls.(*Conn).serverHandshake",
                "crypto/tls.(*Conn).clientHandshake")
NAME_HINTS = ("ssl", "crypto", "boring", "tls", "node")
GO_BUILDINFO_MAGIC = b"\xff Go buildinf:"


@dataclass(frozen=True)
class Mapping:
    """One file mapped by a process (all its mappings merged)."""

    path: str  # path as in /proc/PID/maps, without a trailing " (deleted)"
    host_path: str  # what to open from hdrlog's mount namespace
    dev: str  # "major:minor" in hex, as in /proc/PID/maps
    inode: int
    base: int  # lowest start address of the file's mappings
    executable: bool = False  # at least one mapping is executable
    deleted: bool = False  # maps says "(deleted)": host_path then goes through map_files


@dataclass(frozen=True)
class TlsTarget:
    pid: int
    kind: str  # "openssl", "openssl-static", "boringssl", "go"
    mapping: Mapping
    symbols: dict[str, Symbol] = field(hash=False)
    version: str | None  # "OpenSSL 3.0.19", "OpenSSL 3" (from the soname only), "BoringSSL", "go1.22.3"


# ---- /proc ---------------------------------------------------------------------------------


def _check_pid(pid: int) -> int:
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise HdrlogError(f"{pid!r} is not a valid PID (a positive integer).")
    return pid


def _alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def _read_proc(pid: int, name: str) -> str:
    path = f"/proc/{pid}/{name}"
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read()
    except FileNotFoundError:
        if _alive(pid):
            raise HdrlogError(f"Process {pid} exited while hdrlog was reading {path}.") from None
        raise HdrlogError(f"No process with PID {pid} exists.") from None
    except ProcessLookupError:
        raise HdrlogError(f"Process {pid} exited while hdrlog was reading {path}.") from None
    except PermissionError:
        raise HdrlogError(f"Permission denied reading {path}: run hdrlog as root.") from None
    except OSError as e:
        raise HdrlogError(f"Cannot read {path}: {e.strerror or e}.") from None


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return "?"


def process_mappings(pid: int) -> list[Mapping]:
    """File-backed mappings of `pid`, one per (dev, inode), in address order."""
    pid = _check_pid(pid)
    text = _read_proc(pid, "maps")
    merged: dict[tuple[str, int], dict] = {}
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 6:
            continue  # anonymous mapping
        addr, perms, _, dev, inode_s, path = parts
        try:
            inode = int(inode_s)
            lo_s, hi_s = addr.split("-")
            start = int(lo_s, 16)
        except ValueError:
            continue
        if inode == 0 or not path.startswith("/"):
            continue  # [heap], [vdso], anonymous shared memory, ...
        deleted = path.endswith(" (deleted)")
        if deleted:
            path = path[: -len(" (deleted)")]
        # the kernel writes a newline in a path as \012 (and nothing else escaped): such a file is opened
        # through map_files, which needs no path at all
        escaped = "\\012" in path
        if escaped:
            path = path.replace("\\012", "\n")
        m = merged.get((dev, inode))
        if m is None:
            merged[(dev, inode)] = m = {"path": path, "dev": dev, "inode": inode, "base": start,
                                        "executable": False, "deleted": deleted, "range": addr,
                                        "by_map_files": deleted or escaped}
        m["base"] = min(m["base"], start)
        m["executable"] |= "x" in perms
    out = []
    for m in merged.values():
        host = f"/proc/{pid}/map_files/{m['range']}" if m["by_map_files"] else f"/proc/{pid}/root{m['path']}"
        out.append(Mapping(path=m["path"], host_path=host, dev=m["dev"], inode=m["inode"], base=m["base"],
                           executable=m["executable"], deleted=m["deleted"]))
    out.sort(key=lambda m: (m.base, m.dev, m.inode))
    return out


def _exe_mapping(pid: int, maps: list[Mapping]) -> Mapping | None:
    """The main executable among `maps` (by /proc/PID/exe path, then by device and inode)."""
    try:
        link = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None  # kernel thread, zombie, or no permission
    link = link.removesuffix(" (deleted)")
    for m in maps:
        if m.path == link:
            return m
    try:
        st = os.stat(f"/proc/{pid}/exe")
    except OSError:
        return None
    for m in maps:
        try:
            major, minor = (int(x, 16) for x in m.dev.split(":"))
        except ValueError:
            continue
        if m.inode == st.st_ino and os.makedev(major, minor) == st.st_dev:
            return m
    return None


# ---- Go ------------------------------------------------------------------------------------


def _uvarint(data: bytes, pos: int) -> tuple[int, int] | None:
    """(value, bytes used) of the unsigned varint at data[pos:], or None."""
    value = shift = 0
    for i in range(10):
        if pos + i >= len(data):
            return None
        b = data[pos + i]
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i + 1
        shift += 7
    return None


def _printable(raw: bytes | None) -> str | None:
    if not raw:
        return None
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return s if s.isprintable() else None


def parse_buildinfo(data: bytes, read_vaddr: Callable[[int, int], bytes | None]) -> str | None:
    """Go version from a .go.buildinfo blob (as Go's debug/buildinfo reads it).

    Header: 14-byte magic, pointer size, flags. go1.18+ (flags & 2) stores the version inline as a
    varint-prefixed string at offset 32; older toolchains store at offset 16 a pointer to a Go
    string header {data pointer, length}, resolved through `read_vaddr(address, size)`.
    """
    if len(data) < 32 or not data.startswith(GO_BUILDINFO_MAGIC):
        return None
    ptr_size, flags = data[14], data[15]
    if flags & 2:
        got = _uvarint(data, 32)
        if got is None:
            return None
        n, used = got
        start = 32 + used
        return _printable(data[start:start + n]) if start + n <= len(data) else None
    if ptr_size not in (4, 8):
        return None
    word = (">" if flags & 1 else "<") + ("I" if ptr_size == 4 else "Q")
    (hdr_addr,) = struct.unpack_from(word, data, 16)
    hdr = read_vaddr(hdr_addr, 2 * ptr_size)
    if not hdr or len(hdr) < 2 * ptr_size:
        return None
    (str_addr,), (str_len,) = struct.unpack_from(word, hdr, 0), struct.unpack_from(word, hdr, ptr_size)
    if not 0 < str_len <= 4096:
        return None
    return _printable(read_vaddr(str_addr, str_len))


def _go_version(elf: ElfFile) -> str | None:
    data = elf.section(".go.buildinfo")
    if data is None:
        # No section headers (stripped hard): like Go's debug/buildinfo, look in the writable
        # PT_LOAD segments for the magic at a 16-byte-aligned virtual address.
        for seg in elf.segments:
            if seg.type != "PT_LOAD" or not seg.flags & 2 or not seg.filesz:
                continue
            end = seg.offset + seg.filesz
            pos = elf.find(GO_BUILDINFO_MAGIC, start=seg.offset, end=end)
            while pos >= 0 and (pos - seg.offset + seg.vaddr) % 16:
                pos = elf.find(GO_BUILDINFO_MAGIC, start=pos + 1, end=end)
            if pos >= 0:
                data = elf.read(pos, min(4096, end - pos))
                break
    if data is None:
        return None
    return parse_buildinfo(data, elf.read_vaddr)


def go_info(path: str) -> str | None:
    """Go version ("go1.22.3") if `path` is a Go ELF binary, else None. HdrlogError if unreadable."""
    with ElfFile(path) as elf:
        return _go_version(elf)


# ---- OpenSSL version -----------------------------------------------------------------------


def _version_num(elf: ElfFile, sym: Symbol | None) -> int | None:
    """OPENSSL_VERSION_NUMBER from the code of OpenSSL_version_num(): [endbr64] mov eax|rax, imm32; ret."""
    if sym is None:
        return None
    code = elf.read(sym.offset, 16)
    if code.startswith(b"\xf3\x0f\x1e\xfa"):
        code = code[4:]
    if code[:1] == b"\xb8" and code[5:6] == b"\xc3":
        return struct.unpack_from("<I", code, 1)[0]
    if code[:3] == b"\x48\xc7\xc0" and code[7:8] == b"\xc3":
        return struct.unpack_from("<I", code, 3)[0]
    return None


def _openssl_version_text(v: int) -> str | None:
    major, minor = v >> 28, (v >> 20) & 0xFF
    if major >= 3:  # 0xMNN00PP0
        return f"OpenSSL {major}.{minor}.{(v >> 4) & 0xFF}"
    if major == 1:  # 0xMNNFFPPS: 1.1.1w = 0x1010117f
        patch = (v >> 4) & 0xFF
        letter = chr(ord("a") + patch - 1) if 1 <= patch <= 26 else ""
        return f"OpenSSL {major}.{minor}.{(v >> 12) & 0xFF}{letter}"
    return None


def _soname_version(path: str) -> str | None:
    """"OpenSSL 3" from libssl.so.3, "OpenSSL 1.1" from libssl.so.1.1; None for other names
    (LibreSSL's libssl.so.53 is not "OpenSSL 53")."""
    m = re.match(r"libssl\.so\.(1\.0\.\d+|1\.1|[3-9])$", os.path.basename(path))
    return f"OpenSSL {m.group(1)}" if m else None


# ---- search --------------------------------------------------------------------------------


@dataclass
class _Search:
    pid: int
    comm: str
    maps: list[Mapping]
    exe: Mapping | None = None
    searched: list[Mapping] = field(default_factory=list)
    unreadable: list[tuple[Mapping, str]] = field(default_factory=list)
    targets: list[TlsTarget] = field(default_factory=list)
    go_version: str | None = None
    go_stripped: bool = False  # the Go executable has no .symtab
    go_problem: str | None = None  # why its crypto/tls cannot be probed (too old, unreadable table)


def _is_libssl(m: Mapping) -> bool:
    return os.path.basename(m.path).startswith("libssl")


def _open(pid: int, m: Mapping, s: _Search) -> ElfFile | None:
    try:
        return ElfFile(m.host_path)
    except HdrlogError as e:
        if not _alive(pid):
            raise HdrlogError(f"Process {pid} exited while hdrlog was reading its libraries.") from None
        s.unreadable.append((m, str(e)))
        return None


def _search(pid: int) -> _Search:
    maps = process_mappings(pid)
    s = _Search(pid=pid, comm=_comm(pid), maps=maps, exe=_exe_mapping(pid, maps))
    for m in maps:
        is_exe = m == s.exe
        name = os.path.basename(m.path).lower()
        if is_exe or (m.executable and any(h in name for h in NAME_HINTS)):
            s.searched.append(m)
    found: list[tuple[int, TlsTarget]] = []
    for m in s.searched:
        elf = _open(pid, m, s)
        if elf is None:
            continue
        with elf:
            is_exe = m == s.exe
            if is_exe:
                s.go_version = _go_version(elf)
                if s.go_version is None and (elf.get_section(".gopclntab") or elf.get_section(".note.go.buildid")):
                    s.go_version = "go (version unknown)"
                if s.go_version:
                    s.go_stripped = elf.get_section(".symtab") is None
                    syms = _go_symbols(elf, s)
                    s.go_problem = s.go_problem or golang.unsupported_reason(s.go_version)
                    if s.go_problem is None and any(n in syms for n in GO_TLS_FUNCS[:2]):
                        found.append((0, TlsTarget(pid, "go", m, syms, s.go_version)))
            syms = elf.lookup(OPENSSL_FUNCS + BORINGSSL_MARKERS + ("OpenSSL_version_num",))
            if not any(n in syms for n in _IO_FUNCS):
                continue
            if any(n in syms for n in BORINGSSL_MARKERS):
                kind, version = "boringssl", "BoringSSL"
            elif _is_libssl(m):
                kind, version = "openssl", _libcrypto_version(pid, m, s) or _soname_version(m.path)
            else:
                num = _version_num(elf, syms.get("OpenSSL_version_num"))
                kind, version = "openssl-static", _openssl_version_text(num) if num else None
            tls = {n: syms[n] for n in OPENSSL_FUNCS if n in syms}
            found.append((0 if is_exe else 1, TlsTarget(pid, kind, m, tls, version)))
    found.sort(key=lambda t: (t[0], t[1].mapping.path, t[1].mapping.dev, t[1].mapping.inode, t[1].kind))
    s.targets = [t for _, t in found]
    return s


def _go_symbols(elf: ElfFile, s: _Search) -> dict[str, Symbol]:
    """crypto/tls functions of a Go executable: .symtab, else (stripped) the .gopclntab function table."""
    syms = elf.lookup(GO_TLS_FUNCS)
    if all(n in syms for n in GO_TLS_FUNCS[:2]):
        return syms
    try:
        return {**gopclntab.lookup(elf, GO_TLS_FUNCS), **syms}
    except HdrlogError as e:
        s.go_problem = str(e).rstrip(".")
        return syms


def _libcrypto_version(pid: int, libssl: Mapping, s: _Search) -> str | None:
    """Version of a dynamic libssl, read from the matching libcrypto mapped by the same process
    (libssl.so.3 -> libcrypto.so.3, same directory preferred)."""
    suffix = os.path.basename(libssl.path)[len("libssl"):]
    matches = [m for m in s.maps if os.path.basename(m.path) == "libcrypto" + suffix]
    matches.sort(key=lambda m: os.path.dirname(m.path) != os.path.dirname(libssl.path))
    for m in matches:
        try:
            with ElfFile(m.host_path) as elf:
                num = _version_num(elf, elf.lookup(["OpenSSL_version_num"]).get("OpenSSL_version_num"))
        except HdrlogError:
            continue
        if num and (text := _openssl_version_text(num)):
            return text
    return None


def find_tls(pid: int) -> list[TlsTarget]:
    """All TLS objects of `pid` (a process may have several), executable first, then by path;
    one per (dev, inode). HdrlogError if the process does not exist, exits meanwhile, or its
    maps cannot be read (not root)."""
    return _search(pid).targets


def _names(ms: list[Mapping], limit: int = 8) -> str:
    names = [shown(os.path.basename(m.path), TEXT_LIMIT) for m in ms[:limit]]
    more = f" and {len(ms) - limit} more" if len(ms) > limit else ""
    return ", ".join(names) + more


def explain_none(pid: int) -> str:
    """One sentence on why no TLS target was found in `pid`: what was searched, and whether the
    executable is a Go binary (and why its crypto/tls cannot be probed)."""
    s = _search(pid)
    who = f"PID {pid} ({shown(s.comm)})"
    if s.targets:
        return f"{who} has TLS code: " + "; ".join(f"{t.kind} in {shown(t.mapping.path, TEXT_LIMIT)}"
                                                  for t in s.targets) + "."
    if not s.maps:
        return f"{who} maps no files (a kernel thread or a zombie), so there is nothing to search."
    hints = ", ".join(f"*{h}*" for h in NAME_HINTS)
    text = (f"No OpenSSL/BoringSSL SSL_read/SSL_write found in {who}: searched {len(s.searched)} of its "
            f"{len(s.maps)} mapped files ({_names(s.searched)}), i.e. the executable and libraries named {hints}")
    if s.unreadable:
        text += f"; could not read {_names([m for m, _ in s.unreadable], 3)} ({s.unreadable[0][1].rstrip('.')})"
    if s.go_version:
        exe = shown(s.exe.path, TEXT_LIMIT) if s.exe else "its executable"
        stripped = " (stripped)" if s.go_stripped else ""
        why = s.go_problem or "it has no crypto/tls (*Conn).Read/Write (it does not use Go's TLS)"
        text += f"; {exe} is a Go {shown(s.go_version)} binary{stripped}; hdrlog cannot probe its TLS: {why}"
    return text + "."
