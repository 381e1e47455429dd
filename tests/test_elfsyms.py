"""hdrlog.elfsyms against the real binaries of this machine, cross-checked with binutils."""

from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

try:
    import hdrlog  # noqa: F401
except ImportError:  # running from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from hdrlog.elfsyms import ElfFile, Symbol, clear_cache  # noqa: E402
from hdrlog.errors import HdrlogError  # noqa: E402

LIBSSL = "/usr/lib/x86_64-linux-gnu/libssl.so.3"
NODE = "/usr/bin/node"
LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
TLS = ["SSL_read", "SSL_read_ex", "SSL_write", "SSL_write_ex", "SSL_do_handshake", "SSL_free"]

needs_readelf = pytest.mark.skipif(shutil.which("readelf") is None, reason="binutils readelf not installed")


def need(path: str) -> str:
    if not os.path.exists(path):
        pytest.skip(f"{path} not on this machine")
    return path


# ---- binutils reference ------------------------------------------------------------------


def readelf_symbols(path: str) -> dict[str, list[dict]]:
    """{".dynsym"/".symtab": [entry, ...]} from `readelf -Ws`."""
    out = subprocess.run(["readelf", "-Ws", "--wide", path], capture_output=True, text=True, check=True).stdout
    tables: dict[str, list[dict]] = {}
    cur = None
    for line in out.splitlines():
        if line.startswith("Symbol table '"):
            cur = tables.setdefault(line.split("'")[1], [])
            continue
        parts = line.split(None, 7)
        if cur is None or len(parts) < 8 or not parts[0].endswith(":") or not parts[0][:-1].isdigit():
            continue
        num, value, size, typ, bind, _, ndx, name = parts
        cur.append({"index": int(num[:-1]), "value": int(value, 16), "size": int(size, 0), "type": typ,
                    "bind": bind, "ndx": ndx, "name": name})
    return tables


def readelf_loads(path: str) -> list[tuple[int, int, int]]:
    """[(p_offset, p_vaddr, p_filesz)] of PT_LOAD from `readelf -lW`."""
    out = subprocess.run(["readelf", "-lW", path], capture_output=True, text=True, check=True).stdout
    loads = []
    for line in out.splitlines():
        f = line.split()
        if f and f[0] == "LOAD":
            loads.append((int(f[1], 16), int(f[2], 16), int(f[4], 16)))
    return loads


def file_offset(loads, vaddr: int) -> int:
    for off, va, filesz in loads:
        if va <= vaddr < va + filesz:
            return vaddr - va + off
    raise AssertionError(f"{vaddr:#x} is in no PT_LOAD")


def defined_funcs(entries: list[dict]) -> list[dict]:
    return [e for e in entries if e["type"] == "FUNC" and e["ndx"] != "UND" and e["value"]]


@pytest.fixture(scope="module")
def node_ref():
    need(NODE)
    if shutil.which("readelf") is None:
        pytest.skip("binutils readelf not installed")
    return readelf_symbols(NODE), readelf_loads(NODE)


@pytest.fixture(autouse=True)
def _cold():
    clear_cache()
    yield
    clear_cache()


# ---- lookups -----------------------------------------------------------------------------


@needs_readelf
def test_libssl_dynsym_versioned():
    need(LIBSSL)
    ref = readelf_symbols(LIBSSL)
    assert ".symtab" not in ref  # the brief's premise: SSL_* only in .dynsym
    loads = readelf_loads(LIBSSL)
    by_name = {e["name"]: e for e in defined_funcs(ref[".dynsym"])}
    t0 = time.perf_counter()
    with ElfFile(LIBSSL) as elf:
        got = elf.lookup(TLS)
    ms = (time.perf_counter() - t0) * 1000
    print(f"\nlibssl.so.3 open+lookup of {len(TLS)} names (cold cache): {ms:.2f} ms")
    assert list(got) == TLS
    for name, sym in got.items():
        e = by_name[f"{name}@@OPENSSL_3.0.0"]
        assert sym == Symbol(name, e["value"], e["size"], file_offset(loads, e["value"]), "OPENSSL_3.0.0", ".dynsym")


@needs_readelf
def test_libssl_every_exported_function_matches_readelf_and_nm():
    need(LIBSSL)
    loads = readelf_loads(LIBSSL)
    funcs = defined_funcs(readelf_symbols(LIBSSL)[".dynsym"])
    nm = subprocess.run(["nm", "-D", "--defined-only", LIBSSL], capture_output=True, text=True, check=True).stdout
    nm_addr = {f[2].split("@")[0]: int(f[0], 16) for f in (ln.split() for ln in nm.splitlines()) if len(f) == 3}
    assert len(funcs) > 500
    with ElfFile(LIBSSL) as elf:
        got = elf.lookup(e["name"].split("@")[0] for e in funcs)
    assert len(got) == len(funcs)
    for e in funcs:
        base, _, ver = e["name"].partition("@")
        sym = got[base]
        assert (sym.vaddr, sym.size, sym.version) == (e["value"], e["size"], ver.lstrip("@"))
        assert sym.offset == file_offset(loads, e["value"])
        assert sym.vaddr == nm_addr[base]


@needs_readelf
def test_node_lookup_is_fast_and_matches_readelf(node_ref):
    ref, loads = node_ref
    t0 = time.perf_counter()
    with ElfFile(NODE) as elf:
        t1 = time.perf_counter()
        got = elf.lookup(TLS)
        t2 = time.perf_counter()
        missing = elf.lookup(["SSL_no_such_function", "BORINGSSL_self_test"])  # forces a .symtab scan
        t3 = time.perf_counter()
    print(f"\nnode cold: open {1000 * (t1 - t0):.2f} ms, lookup of {len(TLS)} names {1000 * (t2 - t1):.2f} ms, "
          f"total {1000 * (t2 - t0):.2f} ms; lookup of 2 absent names (full .symtab scan) {1000 * (t3 - t2):.2f} ms")
    assert t2 - t0 < 0.3
    assert t3 - t2 < 0.3
    assert missing == {}
    assert list(got) == TLS
    for table in (".dynsym", ".symtab"):
        by_name = {e["name"]: e for e in defined_funcs(ref[table])}
        for name, sym in got.items():
            e = by_name[name]
            assert (sym.vaddr, sym.size, sym.offset) == (e["value"], e["size"], file_offset(loads, e["value"]))
            assert sym.version is None and sym.table == ".dynsym"


@needs_readelf
def test_node_symtab_only_functions(node_ref):
    """Static functions that exist only in .symtab, many at once (also exercises the
    full-column scan used when a lookup has hundreds of candidate strings)."""
    ref, loads = node_ref
    dyn_names = {e["name"] for e in ref[".dynsym"]}
    counts: dict[str, int] = {}
    for e in ref[".symtab"]:
        counts[e["name"]] = counts.get(e["name"], 0) + 1
    pool = [e for e in defined_funcs(ref[".symtab"])
            if e["name"] not in dyn_names and counts[e["name"]] == 1 and "@" not in e["name"]]
    assert len(pool) > 1000
    sample = random.Random(4).sample(pool, 400)
    for batch in (sample[:5], sample):
        clear_cache()
        t0 = time.perf_counter()
        with ElfFile(NODE) as elf:
            got = elf.lookup(e["name"] for e in batch)
        print(f"\nnode: {len(batch)} .symtab-only names in {1000 * (time.perf_counter() - t0):.1f} ms")
        assert len(got) == len(batch)
        for e in batch:
            sym = got[e["name"]]
            assert sym.table == ".symtab"
            assert (sym.vaddr, sym.size, sym.offset) == (e["value"], e["size"], file_offset(loads, e["value"]))


def test_symtab_restriction_node():
    need(NODE)
    with ElfFile(NODE) as elf:
        dyn = elf.lookup(TLS, tables=[".dynsym"])
        sym = elf.lookup(TLS, tables=[".symtab"])
    assert list(dyn) == list(sym) == TLS
    for n in TLS:
        assert sym[n].table == ".symtab" and dyn[n].table == ".dynsym"
        assert (sym[n].vaddr, sym[n].offset) == (dyn[n].vaddr, dyn[n].offset)


def test_prefers_default_version_libc():
    """libc has pthread_cond_wait@GLIBC_2.2.5 (hidden) and pthread_cond_wait@@GLIBC_2.3.2."""
    need(LIBC)
    with ElfFile(LIBC) as elf:
        got = elf.lookup(["pthread_cond_wait", "memcpy", "no_such_thing"])
    assert got["pthread_cond_wait"].version == "GLIBC_2.3.2"
    assert "memcpy" not in got  # an IFUNC: the resolver is not what a probe wants
    assert "no_such_thing" not in got


@pytest.fixture(scope="module")
def versioned_lib(tmp_path_factory):
    """A small shared library with foo@VER_1, foo@@VER_2 and a static function (needs gcc)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    d = tmp_path_factory.mktemp("ver")
    (d / "v.c").write_text(
        "int foo_v1(int x) { return x + 1; }\n"
        "int foo_v2(int x) { return x + 2; }\n"
        "static int local_only(int x) { return x * 3; }\n"
        "int use_local(int x) { return local_only(x); }\n"
        '__asm__(".symver foo_v1,foo@VER_1");\n'
        '__asm__(".symver foo_v2,foo@@VER_2");\n')
    (d / "v.map").write_text("VER_1 { global: foo; use_local; local: *; };\nVER_2 { global: foo; } VER_1;\n")
    lib = d / "libv.so"
    subprocess.run(["gcc", "-O0", "-shared", "-fPIC", f"-Wl,--version-script={d / 'v.map'}", "-o", str(lib),
                    str(d / "v.c")], check=True)
    return str(lib)


@needs_readelf
def test_versioned_names_both_tables(versioned_lib):
    ref = readelf_symbols(versioned_lib)
    addr = {e["name"]: e["value"] for e in ref[".symtab"]}
    with ElfFile(versioned_lib) as elf:
        both = elf.lookup(["foo", "local_only", "use_local"])
        symtab = elf.lookup(["foo", "use_local"], tables=[".symtab"])
        dynsym = elf.lookup(["foo", "local_only"], tables=(".dynsym",))
        with pytest.raises(ValueError):
            elf.lookup(["foo"], tables=[".debug"])
    for got in (both, symtab, dynsym):  # default version (@@VER_2) wins over foo@VER_1
        assert got["foo"].vaddr == addr["foo@@VER_2"] != addr["foo@VER_1"]
        assert got["foo"].version == "VER_2"
    assert symtab["foo"].table == ".symtab"
    assert symtab["use_local"].version is None  # .symtab spells it "use_local" (no @)
    assert both["use_local"].version == "VER_1" and both["use_local"].table == ".dynsym"
    assert both["local_only"].table == ".symtab" and both["local_only"].vaddr == addr["local_only"]
    assert "local_only" not in dynsym


# ---- file properties ---------------------------------------------------------------------


@needs_readelf
def test_properties():
    need(LIBSSL)
    need(NODE)
    for path in (LIBSSL, NODE, "/usr/bin/sleep"):
        notes = subprocess.run(["readelf", "-n", path], capture_output=True, text=True).stdout
        build_id = next((ln.split(":")[1].strip() for ln in notes.splitlines() if "Build ID" in ln), None)
        dyn = subprocess.run(["readelf", "-d", path], capture_output=True, text=True).stdout
        with ElfFile(path) as elf:
            assert elf.build_id == build_id
            assert elf.machine == "x86-64"
            assert elf.is_pie == ("Flags: PIE" in dyn)
            text = elf.get_section(".text")
            assert elf.text_range == (text.addr, text.addr + text.size)
            with open(path, "rb") as f:
                f.seek(text.offset)
                assert elf.section(".text")[:4096] == f.read(4096)
            assert elf.section(".no_such_section") is None
            assert elf.section(".bss") is None  # NOBITS: nothing in the file
            assert elf.vaddr_to_offset(text.addr) == text.offset
            assert elf.read_vaddr(text.addr, 16) == elf.read(text.offset, 16)
    with ElfFile(LIBSSL) as a, ElfFile(NODE) as b:
        assert (a.elf_type, a.soname, a.is_pie) == ("DYN", "libssl.so.3", False)
        assert (b.elf_type, b.soname, b.is_pie) == ("EXEC", None, False)


def test_cache_per_file_identity(tmp_path):
    need(LIBSSL)
    copy = tmp_path / "libssl.so.3"
    shutil.copy(LIBSSL, copy)
    with ElfFile(str(copy)) as a, ElfFile(LIBSSL) as other:
        first = a.lookup(TLS)
        assert other._info is not a._info
    t0 = time.perf_counter()
    with ElfFile(str(copy)) as b:
        assert b._info is a._info  # parsed once
        assert b.lookup(TLS) == first
    print(f"\ncached open+lookup: {1e6 * (time.perf_counter() - t0):.0f} us")
    os.utime(copy, ns=(0, 10**9))  # new mtime: parsed again
    with ElfFile(str(copy)) as c:
        assert c._info is not a._info
        assert c.lookup(TLS) == first


def test_context_manager_closes():
    need(LIBSSL)
    elf = ElfFile(LIBSSL)
    elf.lookup(["SSL_read"])
    fd = elf._fd
    with elf:
        pass
    with pytest.raises(OSError):
        os.fstat(fd)
    elf.close()  # idempotent


# ---- errors ------------------------------------------------------------------------------


def _expect_error(path, *words):
    with pytest.raises(HdrlogError) as exc:
        ElfFile(str(path))
    msg = str(exc.value)
    print(f"\n{msg}")
    assert str(path) in msg
    for w in words:
        assert w in msg
    assert msg.endswith(".") and "\n" not in msg
    return msg


def _patched(tmp_path, name, patches, source=LIBSSL):
    data = bytearray(Path(need(source)).read_bytes())
    for off, raw in patches:
        data[off:off + len(raw)] = raw
    p = tmp_path / name
    p.write_bytes(data)
    return p


def _shdr(data: bytes, index: int) -> tuple[int, tuple]:
    shoff, = struct.unpack_from("<Q", data, 0x28)
    at = shoff + index * 64
    return at, struct.unpack_from("<IIQQQQIIQQ", data, at)


def test_missing_directory_empty_text(tmp_path):
    _expect_error(tmp_path / "nope.so", "does not exist")
    _expect_error(tmp_path, "not a regular file")
    (tmp_path / "empty").write_bytes(b"")
    _expect_error(tmp_path / "empty", "empty")
    (tmp_path / "t.txt").write_text("#!/bin/sh\necho hello\n")
    _expect_error(tmp_path / "t.txt", "not an ELF")
    (tmp_path / "tiny").write_bytes(b"\x7fEL")
    _expect_error(tmp_path / "tiny", "not an ELF")


def test_truncated(tmp_path):
    data = Path(need(LIBSSL)).read_bytes()
    for n in (20, 63, 100, 4096, len(data) // 2, len(data) - 1):
        (tmp_path / f"t{n}").write_bytes(data[:n])
        _expect_error(tmp_path / f"t{n}", "truncated")


def test_wrong_arch_class_endianness(tmp_path):
    _expect_error(_patched(tmp_path, "arm64", [(18, struct.pack("<H", 183))]), "AArch64", "only x86-64")
    _expect_error(_patched(tmp_path, "m999", [(18, struct.pack("<H", 999))]), "e_machine 999")
    _expect_error(_patched(tmp_path, "elf32", [(4, b"\x01")]), "32-bit")
    _expect_error(_patched(tmp_path, "be", [(5, b"\x02")]), "big-endian")
    # a real foreign-arch ELF, if the machine happens to have one
    for cand in ("/usr/lib/gcc-cross", "/usr/aarch64-linux-gnu/lib", "/usr/lib/i386-linux-gnu"):
        for root, _, files in os.walk(cand):
            so = next((f for f in files if f.endswith(".so") or ".so." in f), None)
            if so and open(os.path.join(root, so), "rb").read(4) == b"\x7fELF":
                _expect_error(os.path.join(root, so), "only x86-64")
                return


def test_huge_symbol_count_and_bad_headers(tmp_path):
    data = Path(need(LIBSSL)).read_bytes()
    elf = ElfFile(LIBSSL)
    dynsym = elf.get_section(".dynsym")
    elf.close()
    at, _ = _shdr(data, dynsym.index)
    # sh_size of .dynsym claims 2**40 symbols
    _expect_error(_patched(tmp_path, "hugesyms", [(at + 0x20, struct.pack("<Q", 24 << 40))]), "section .dynsym")
    # the same inside the file (sh_size = whole file) but with a wrong entry size: no crash, no symbols
    p = _patched(tmp_path, "entsize", [(at + 0x38, struct.pack("<Q", 7))])
    with ElfFile(str(p)) as e:
        assert e.lookup(TLS) == {}
    _expect_error(_patched(tmp_path, "shnum", [(0x3C, struct.pack("<H", 0xFFF0))]), "section headers")
    _expect_error(_patched(tmp_path, "phnum", [(0x38, struct.pack("<H", 0xFFF0))]), "program headers")
    _expect_error(_patched(tmp_path, "shoff", [(0x28, struct.pack("<Q", 2**62))]), "section headers")
    # bad section-name index: still opens, sections simply have no names
    with ElfFile(str(_patched(tmp_path, "shstrndx", [(0x3E, struct.pack("<H", 0xFFF0))]))) as e:
        assert e.get_section(".dynsym") is None and e.lookup(TLS)["SSL_read"].version == "OPENSSL_3.0.0"


def test_random_corruption_never_escapes_as_another_exception(tmp_path):
    """Flip bytes in the ELF header, program headers, section headers and the dynamic tables:
    the result is either a working ElfFile or an HdrlogError, never another exception."""
    src = bytearray(Path(need(LIBSSL)).read_bytes())
    shoff, = struct.unpack_from("<Q", src, 0x28)
    hot = list(range(0, 0x400)) + list(range(shoff, len(src)))
    with ElfFile(LIBSSL) as e:
        for s in e.sections:
            if s.type in ("SHT_GNU_HASH", "SHT_GNU_verdef", "SHT_GNU_versym", "SHT_DYNAMIC", "SHT_NOTE"):
                hot += range(s.offset, s.offset + min(s.size, 256))
    rnd = random.Random(1234)
    outcomes = {"ok": 0, "error": 0}
    for i in range(300):
        data = bytearray(src)
        for _ in range(rnd.choice((1, 2, 4, 8))):
            data[rnd.choice(hot)] = rnd.randrange(256)
        p = tmp_path / f"c{i}"
        p.write_bytes(data)
        clear_cache()
        try:
            with ElfFile(str(p)) as e:
                e.lookup(TLS + ["OpenSSL_version_num"])
                e.build_id, e.soname, e.is_pie, e.text_range, e.section(".text")
            outcomes["ok"] += 1
        except HdrlogError:
            outcomes["error"] += 1
        p.unlink()
    print(f"\ncorruption outcomes: {outcomes}")
    assert outcomes["error"] > 0


def _raw_symtab(path: str):
    """(entries, strtab bytes) of .symtab, read with plain struct (independent of hdrlog)."""
    data = Path(path).read_bytes()
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shnum, = struct.unpack_from("<H", data, 0x3C)
    shdrs = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * 64) for i in range(shnum)]
    sym = next(h for h in shdrs if h[1] == 2)  # SHT_SYMTAB
    strs = shdrs[sym[6]]
    strtab = data[strs[4]:strs[4] + strs[5]]
    return list(struct.iter_unpack("<IBBHQQ", data[sym[4]:sym[4] + sym[5]])), strtab


@needs_readelf
def test_node_tail_merged_names(node_ref):
    """The linker stores some names as the tail of a longer string (e.g. "foo" inside "_foo");
    those st_name offsets are not preceded by a NUL and must still be found."""
    ref, loads = node_ref
    counts: dict[str, int] = {}
    for e in ref[".symtab"] + ref[".dynsym"]:
        counts[e["name"]] = counts.get(e["name"], 0) + 1
    by_name = {e["name"]: e for e in defined_funcs(ref[".symtab"])}
    entries, strtab = _raw_symtab(NODE)
    merged = []
    for st_name, info, _, shndx, value, _ in entries:
        if st_name and strtab[st_name - 1] != 0 and info & 0xF == 2 and shndx and value:
            name = strtab[st_name:strtab.index(b"\0", st_name)].decode()
            if counts.get(name) == 1 and name in by_name and "@" not in name:
                merged.append(name)
    assert len(merged) > 20
    for batch in (merged[:3], merged[:200]):  # string-search path, then column path
        clear_cache()
        with ElfFile(NODE) as elf:
            got = elf.lookup(batch)
        assert sorted(got) == sorted(batch)
        for name in batch:
            e = by_name[name]
            assert (got[name].vaddr, got[name].offset) == (e["value"], file_offset(loads, e["value"]))
