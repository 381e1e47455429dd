"""hdrlog.discover against real processes started by the test (and killed by it)."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

try:
    import hdrlog  # noqa: F401
except ImportError:  # running from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from hdrlog.discover import (  # noqa: E402
    GO_BUILDINFO_MAGIC, OPENSSL_FUNCS, explain_none, find_tls, go_info, parse_buildinfo, process_mappings,
)
from hdrlog.elfsyms import ElfFile, clear_cache  # noqa: E402
from hdrlog.errors import HdrlogError  # noqa: E402

PY = "/usr/bin/python3"
NODE = "/usr/bin/node"
LIBSSL = "/usr/lib/x86_64-linux-gnu/libssl.so.3"
DOCKER = "/usr/local/bin/docker"  # a Go binary with a symbol table, if present
STRIPPED_GO = "/usr/lib/google-cloud-sdk/platform/bigtable-emulator/cbtemulator"  # a stripped Go server


def need(path: str) -> str:
    if not os.path.exists(path):
        pytest.skip(f"{path} not on this machine")
    return path


def maps_text(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""


def exe_is(pid: int, path: str) -> bool:
    """`pid` runs `path` and the kernel has mapped it (/proc/PID/exe changes before the ELF
    loader maps the segments, so the link alone is not enough)."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
    except OSError:
        return False
    return exe == os.path.realpath(path) and f" {exe}" in maps_text(pid) and "[stack]" in maps_text(pid)


@pytest.fixture
def spawn():
    """spawn(argv, ready) starts a process and waits until ready(pid); all are killed afterwards."""
    procs: list[subprocess.Popen] = []

    def start(argv: list[str], ready: Callable[[int], bool], **kw) -> int:
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.DEVNULL)
        p = subprocess.Popen(argv, **kw)
        procs.append(p)
        deadline = time.monotonic() + 20
        while not ready(p.pid):
            if p.poll() is not None:
                pytest.fail(f"{argv} exited with {p.returncode} before it was ready")
            if time.monotonic() > deadline:
                pytest.fail(f"{argv} not ready after 20 s")
            time.sleep(0.05)
        return p.pid

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)
        if p.stdin:
            p.stdin.close()


@pytest.fixture(autouse=True)
def _cold():
    clear_cache()


def _timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, (time.perf_counter() - t0) * 1000


# ---- OpenSSL -----------------------------------------------------------------------------



def libssl_code_mapped(pid: int) -> bool:
    """libssl's executable segment is mapped: the loader maps the ELF header (r--p) first, so the name
    alone appearing in maps is too early to look for the code."""
    return any(" r-xp " in ln and "libssl.so" in ln for ln in maps_text(pid).splitlines())

def test_python_dynamic_libssl(spawn):
    need(PY)
    need(LIBSSL)
    pid = spawn([PY, "-c", "import ssl, time; time.sleep(30)"], libssl_code_mapped)
    targets, ms = _timed(find_tls, pid)
    print(f"\nfind_tls(python3 with libssl.so.3): {ms:.1f} ms (cold cache)")
    assert len(targets) == 1
    t = targets[0]
    assert (t.pid, t.kind) == (pid, "openssl")
    assert os.path.realpath(t.mapping.path) == os.path.realpath(LIBSSL)
    assert t.mapping.executable and not t.mapping.deleted
    assert t.mapping.host_path == f"/proc/{pid}/root{t.mapping.path}"
    assert os.stat(t.mapping.host_path).st_ino == t.mapping.inode
    with ElfFile(LIBSSL) as elf:
        assert t.symbols == elf.lookup(OPENSSL_FUNCS)
    assert set(t.symbols) == set(OPENSSL_FUNCS)
    child_version = subprocess.run([PY, "-c", "import ssl; print(ssl.OPENSSL_VERSION)"],
                                   capture_output=True, text=True, check=True).stdout.split()
    assert t.version == f"OpenSSL {child_version[1]}"  # "OpenSSL 3.0.19 27 Jan 2026" -> "OpenSSL 3.0.19"
    assert find_tls(pid) == targets  # deterministic
    assert "has TLS code" in explain_none(pid)


def test_node_static_openssl(spawn):
    need(NODE)
    pid = spawn([NODE, "-e", "setTimeout(()=>{},30000)"], lambda p: exe_is(p, NODE))
    targets, ms = _timed(find_tls, pid)
    print(f"\nfind_tls(node): {ms:.1f} ms (cold cache)")
    assert ms < 1000
    assert [t.kind for t in targets] == ["openssl-static"]
    t = targets[0]
    assert t.mapping.path == os.path.realpath(NODE)
    with ElfFile(NODE) as elf:
        assert t.symbols == elf.lookup(OPENSSL_FUNCS)
    assert {"SSL_read", "SSL_write"} <= set(t.symbols)
    node_openssl = subprocess.run([NODE, "-p", "process.versions.openssl"], capture_output=True, text=True,
                                  check=True).stdout.strip()
    assert t.version == "OpenSSL " + node_openssl.split("+")[0]  # e.g. "3.0.13+quic" on some builds
    assert find_tls(pid) == targets


def test_two_libssl_copies_one_deleted(spawn, tmp_path):
    """Two libssl objects in one process (distinct inodes, a hard link to one of them that must not
    count twice), and one deleted after loading, as after a package upgrade: it is then read through
    /proc/PID/map_files, i.e. the inode actually mapped."""
    need(PY)
    need(LIBSSL)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    shutil.copy(LIBSSL, a / "libssl.so.3")
    shutil.copy(LIBSSL, b / "libssl.so.3")
    os.link(a / "libssl.so.3", tmp_path / "hardlink.so.3")
    code = ("import ctypes, sys, time\n"
            "for p in sys.argv[1:]: ctypes.CDLL(p)\n"
            "time.sleep(30)\n")
    pid = spawn([PY, "-c", code, str(a / "libssl.so.3"), str(b / "libssl.so.3"), str(tmp_path / "hardlink.so.3")],
                lambda p: maps_text(p).count("libssl.so.3") >= 2 and "hardlink" not in maps_text(p)
                and str(b) in maps_text(p))
    time.sleep(0.3)  # let the third dlopen finish
    os.unlink(b / "libssl.so.3")
    targets = find_tls(pid)
    assert [t.kind for t in targets] == ["openssl", "openssl"]
    assert [t.mapping.path for t in targets] == sorted([str(a / "libssl.so.3"), str(b / "libssl.so.3")])
    assert len({(t.mapping.dev, t.mapping.inode) for t in targets}) == 2
    ta, tb = targets
    assert not ta.mapping.deleted and tb.mapping.deleted
    assert tb.mapping.host_path.startswith(f"/proc/{pid}/map_files/")
    with ElfFile(LIBSSL) as elf:
        ref = elf.lookup(OPENSSL_FUNCS)
    assert ta.symbols == tb.symbols == ref
    assert ta.version == tb.version and ta.version.startswith("OpenSSL 3.")
    maps = process_mappings(pid)
    assert len({(m.dev, m.inode) for m in maps}) == len(maps)
    assert find_tls(pid) == targets


def test_process_mappings_shape(spawn):
    need(PY)
    pid = spawn([PY, "-c", "import ssl, time; time.sleep(30)"], libssl_code_mapped)
    maps = process_mappings(pid)
    raw: dict[tuple[str, int], int] = {}
    for line in maps_text(pid).splitlines():
        f = line.split(None, 5)
        if len(f) == 6 and int(f[4]) and f[5].startswith("/"):
            key = (f[3], int(f[4]))
            raw[key] = min(raw.get(key, 1 << 64), int(f[0].split("-")[0], 16))
    assert {(m.dev, m.inode): m.base for m in maps} == raw
    assert [m.base for m in maps] == sorted(m.base for m in maps)
    assert all(m.path.startswith("/") and m.host_path.startswith(f"/proc/{pid}/root/") for m in maps)
    assert any(m.executable for m in maps) and any(m.path.endswith("libssl.so.3") and m.executable for m in maps)


# ---- no TLS, errors ----------------------------------------------------------------------


def test_no_tls_explains_what_was_searched(spawn):
    sleep = need("/usr/bin/sleep")
    pid = spawn([sleep, "30"], lambda p: exe_is(p, sleep))
    assert find_tls(pid) == []
    msg = explain_none(pid)
    print(f"\n{msg}")
    assert f"PID {pid} (sleep)" in msg and "searched 1 of its" in msg and "(sleep)" in msg
    assert "SSL_read" in msg and "*ssl*, *crypto*" in msg
    assert "\n" not in msg and msg.endswith(".")
    assert "Go" not in msg


def test_deleted_executable(spawn, tmp_path):
    copy = tmp_path / "mysleep"
    shutil.copy(need("/usr/bin/sleep"), copy)
    pid = spawn([str(copy), "30"], lambda p: exe_is(p, str(copy)))
    copy.unlink()
    maps = process_mappings(pid)
    exe = next(m for m in maps if m.path == str(copy))
    assert exe.deleted and exe.host_path.startswith(f"/proc/{pid}/map_files/")
    assert find_tls(pid) == []
    assert "searched 1 of its" in explain_none(pid) and "mysleep" in explain_none(pid)


def test_hostile_comm_and_executable_name_are_escaped(spawn, tmp_path):
    """A process names itself (comm, executable file name): a newline or terminal escape in them must not
    break explain_none's one-line sentence (attach and doctor print it)."""
    name = "evil\n\x1b[2Jx"
    copy = tmp_path / name
    shutil.copy(need("/usr/bin/sleep"), copy)
    # /proc/PID/maps shows the newline as \012, so exe_is() cannot match: wait for the executable's mapping
    pid = spawn([str(copy), "30"], lambda p: "evil" in maps_text(p) and "[stack]" in maps_text(p))
    msg = explain_none(pid)
    print(f"\n{msg}")
    assert "\n" not in msg and "\x1b" not in msg
    assert "evil\\n\\x1b[2Jx" in msg  # shown escaped, still recognisable
    assert "could not read" not in msg  # the kernel's \012 in /proc/PID/maps is undone; the file is read
    exe = next(m for m in process_mappings(pid) if m.path == str(copy))
    assert exe.host_path.startswith(f"/proc/{pid}/map_files/")


def _free_pid() -> int:
    return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1  # above pid_max: never a process


def test_nonexistent_and_invalid_pids():
    pid = _free_pid()
    for fn in (process_mappings, find_tls, explain_none):
        with pytest.raises(HdrlogError, match=f"No process with PID {pid} exists"):
            fn(pid)
    for bad in (0, -5, "123", True, 1.5):
        with pytest.raises(HdrlogError, match="not a valid PID"):
            find_tls(bad)


def test_exited_process():
    p = subprocess.Popen(["true"])
    p.wait()
    if os.path.exists(f"/proc/{p.pid}"):
        pytest.skip("PID reused already")
    with pytest.raises(HdrlogError, match="No process"):
        find_tls(p.pid)


def test_permission_denied_when_not_root():
    if os.geteuid() != 0:
        with pytest.raises(HdrlogError, match="Permission denied.*run hdrlog as root"):
            process_mappings(1)
        return
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv not installed")
    src = str(Path(__file__).resolve().parents[1] / "src")
    code = ("from hdrlog.discover import process_mappings\n"
            "from hdrlog.errors import HdrlogError\n"
            "try:\n    process_mappings(1)\nexcept HdrlogError as e:\n    print('HdrlogError:', e)\n")
    out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": src}, cwd="/")
    if "Permission denied" not in out.stdout and out.returncode != 0:
        pytest.skip(f"cannot run the venv as nobody: {out.stderr.strip()[-200:]}")
    assert out.stdout.strip() == "HdrlogError: Permission denied reading /proc/1/maps: run hdrlog as root."


# ---- Go ----------------------------------------------------------------------------------


def _inline_blob(version: bytes) -> bytes:
    mod = b"path\texample.com/x\n"
    return (GO_BUILDINFO_MAGIC + bytes([8, 2]) + b"\0" * 16 + bytes([len(version)]) + version
            + bytes([len(mod)]) + mod)


def test_parse_buildinfo_inline_and_pointer_formats():
    no_mem = lambda addr, size: None  # noqa: E731
    assert parse_buildinfo(_inline_blob(b"go1.22.3"), no_mem) == "go1.22.3"
    long = b"go1.22-20231128-RC02 cl/586117301 +6111acc8e6 X:fieldtrack,boringcrypto" * 3  # > 127: 2-byte varint
    blob = GO_BUILDINFO_MAGIC + bytes([8, 2]) + b"\0" * 16 + bytes([len(long) & 0x7F | 0x80, len(long) >> 7]) + long
    assert parse_buildinfo(blob, no_mem) == long.decode()
    # pre-1.18: pointers to Go string headers {data, len}, 8- and 4-byte, little and big endian
    for ptr, flags, word in ((8, 0, "<Q"), (4, 0, "<I"), (8, 1, ">Q"), (4, 1, ">I")):
        two = word[0] + word[1] * 2
        mem = {0x5000: struct.pack(two, 0x6000, 8), 0x6000: b"go1.16.5"}
        blob = GO_BUILDINFO_MAGIC + bytes([ptr, flags]) + struct.pack(two, 0x5000, 0x7000)
        blob += b"\0" * (32 - len(blob))
        assert parse_buildinfo(blob, lambda a, n: mem.get(a, b"")[:n] or None) == "go1.16.5"
    # garbage
    assert parse_buildinfo(b"", no_mem) is None
    assert parse_buildinfo(b"\x7fELF" + b"\0" * 60, no_mem) is None
    assert parse_buildinfo(GO_BUILDINFO_MAGIC + bytes([8, 2]) + b"\0" * 16 + b"\x7f" + b"go", no_mem) is None
    assert parse_buildinfo(GO_BUILDINFO_MAGIC + bytes([8, 2]) + b"\0" * 16 + b"\xff" * 12, no_mem) is None
    assert parse_buildinfo(GO_BUILDINFO_MAGIC + bytes([3, 0]) + b"\0" * 16, no_mem) is None
    bad_ptr = GO_BUILDINFO_MAGIC + bytes([8, 0]) + struct.pack("<QQ", 0x5000, 0)
    assert parse_buildinfo(bad_ptr, no_mem) is None
    assert parse_buildinfo(bad_ptr, lambda a, n: struct.pack("<QQ", 0x6000, 1 << 40)[:n]) is None


def _elf_with_data_segment(payload: bytes, vaddr: int = 0x500000) -> bytes:
    """A minimal x86-64 ELF without section headers: one RW PT_LOAD holding `payload`."""
    ehdr = struct.pack("<16sHHIQQQIHHHHHH", b"\x7fELF\x02\x01\x01" + b"\0" * 9, 2, 62, 1, vaddr, 64, 0, 0, 64, 56,
                       1, 64, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 1, 6, 0x1000, vaddr, vaddr, len(payload), len(payload), 0x1000)
    return (ehdr + phdr).ljust(0x1000, b"\0") + payload


def test_go_info_crafted_elf_without_sections(tmp_path):
    vaddr = 0x500000
    inline = b"\0" * 3 + GO_BUILDINFO_MAGIC  # misaligned decoy, then the real one at +32
    inline = inline.ljust(32, b"\0") + _inline_blob(b"go1.21.0")
    (tmp_path / "inline").write_bytes(_elf_with_data_segment(inline, vaddr))
    assert go_info(str(tmp_path / "inline")) == "go1.21.0"
    # old pointer format: blob at +0, string header at +0x40, string at +0x60, all in the segment
    old = (GO_BUILDINFO_MAGIC + bytes([8, 0]) + struct.pack("<QQ", vaddr + 0x40, 0)).ljust(0x40, b"\0")
    old += struct.pack("<QQ", vaddr + 0x60, 9).ljust(0x20, b"\0") + b"go1.15.15"
    (tmp_path / "old").write_bytes(_elf_with_data_segment(old, vaddr))
    assert go_info(str(tmp_path / "old")) == "go1.15.15"
    (tmp_path / "nogo").write_bytes(_elf_with_data_segment(b"\0" * 64, vaddr))
    assert go_info(str(tmp_path / "nogo")) is None


def test_go_info_real_binaries(tmp_path):
    assert go_info(need(NODE)) is None
    assert go_info(need(LIBSSL)) is None
    (tmp_path / "t").write_text("not elf")
    with pytest.raises(HdrlogError):
        go_info(str(tmp_path / "t"))
    seen = 0
    for path in (DOCKER, STRIPPED_GO, "/usr/lib/google-cloud-sdk/bin/kubectl"):
        if not os.path.exists(path):
            continue
        with ElfFile(path) as elf:
            raw = elf.section(".go.buildinfo")
        assert raw[14:16] == b"\x08\x02"  # go1.18+ inline format
        expected = raw[33:33 + raw[32]].decode()  # 1-byte varint for short versions
        assert go_info(path) == expected and expected.startswith("go1.")
        print(f"\n{path}: {expected}")
        seen += 1
    if not seen:
        pytest.skip("no Go binaries on this machine")


def test_go_process_with_symbols(spawn, tmp_path):
    need(DOCKER)
    env = {**os.environ, "HOME": str(tmp_path), "DOCKER_CONFIG": str(tmp_path)}
    # `docker login --password-stdin` blocks reading stdin, which we keep open
    pid = spawn([DOCKER, "login", "-u", "x", "--password-stdin", "example.invalid"], lambda p: exe_is(p, DOCKER),
                stdin=subprocess.PIPE, env=env)
    targets = find_tls(pid)
    assert [t.kind for t in targets] == ["go"]
    t = targets[0]
    assert t.version == go_info(DOCKER)
    assert {"crypto/tls.(*Conn).Read", "crypto/tls.(*Conn).Write"} <= set(t.symbols)
    assert all(s.table == ".symtab" for s in t.symbols.values())
    msg = explain_none(pid)
    print(f"\n{msg}")
    assert f"has TLS code: go in {DOCKER}" in msg


def test_stripped_go_process(spawn):
    need(STRIPPED_GO)
    pid = spawn([STRIPPED_GO, "-host", "127.0.0.1", "-port", "0"], lambda p: exe_is(p, STRIPPED_GO))
    assert find_tls(pid) == []
    msg = explain_none(pid)
    print(f"\n{msg}")
    assert f"is a Go {go_info(STRIPPED_GO)} binary (stripped);" in msg
    assert "no crypto/tls" in msg


def test_version_helpers():
    from hdrlog.discover import _openssl_version_text, _soname_version

    assert _openssl_version_text(0x30000130) == "OpenSSL 3.0.19"
    assert _openssl_version_text(0x30500010) == "OpenSSL 3.5.1"
    assert _openssl_version_text(0x1010117F) == "OpenSSL 1.1.1w"
    assert _openssl_version_text(0x1000215F) == "OpenSSL 1.0.2u"
    assert _openssl_version_text(0x20000000) is None  # LibreSSL pretends 2.0.0
    assert _soname_version("/usr/lib/libssl.so.3") == "OpenSSL 3"
    assert _soname_version("libssl.so.1.1") == "OpenSSL 1.1"
    assert _soname_version("libssl.so.53") is None and _soname_version("libssl.so") is None
