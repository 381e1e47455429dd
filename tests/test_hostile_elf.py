"""Malformed ELF files met by `hdrlog ps`, `doctor` and `attach` through a real process (issue 7).

A running process whose executable is a crafted ELF cannot exist (exec refuses it, and a running executable
cannot be written: ETXTBSY), but a shared library can be changed on disk under a process that mapped it:
the process keeps its pages, while hdrlog, which reads the file through /proc/PID/root, sees the damage. So a
Python TLS server loads a private copy of libssl (LD_LIBRARY_PATH), which is then truncated, given another
architecture, a huge symbol table, or zeroed. Each command must answer with a sentence, never a traceback.
The crafted-file layer itself (ElfFile on truncated, foreign, 32-bit, big-endian, huge-count files and
random corruption) is tested in test_elfsyms.py and test_fuzz.py.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import start_server

LIBSSL = Path("/usr/lib/x86_64-linux-gnu/libssl.so.3")
SERVER = """
import ssl, socket, time
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(1)
print("listening", ls.getsockname()[1], flush=True)
time.sleep(120)
"""


def _shdr_of(data: bytes, want_type: int) -> int:
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shnum, = struct.unpack_from("<H", data, 0x3C)
    for i in range(shnum):
        at = shoff + i * 64
        if struct.unpack_from("<I", data, at + 4)[0] == want_type:
            return at
    raise AssertionError("no such section")


def damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        data = data[:3000]
    elif how == "aarch64":
        data[18:20] = struct.pack("<H", 183)
    elif how == "huge-dynsym":
        at = _shdr_of(bytes(data), 11)  # SHT_DYNSYM
        data[at + 32:at + 40] = struct.pack("<Q", 24 << 40)
    elif how == "zeroed":
        data = bytearray(len(data))
    # in place (same inode, as an upgrade gone wrong would leave it): the process keeps its mapping
    with open(path, "r+b") as f:
        f.write(data)
        f.truncate(len(data))


def hdrlog(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hdrlog", *map(str, args)], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.skipif(not LIBSSL.exists() or os.geteuid() != 0, reason="needs libssl.so.3 and root")
@pytest.mark.parametrize("how", ["truncated", "aarch64", "huge-dynsym", "zeroed"])
def test_ps_doctor_attach_on_a_damaged_library_say_why(tmp_path, how):
    lib = tmp_path / "libssl.so.3"
    shutil.copy(LIBSSL, lib)
    env = dict(os.environ, LD_LIBRARY_PATH=str(tmp_path))
    srv, _ = start_server(subprocess.Popen, ["/usr/bin/python3", "-c", SERVER], env=env)
    try:
        maps = Path(f"/proc/{srv.pid}/maps").read_text()
        assert str(lib) in maps, "the copy was not loaded"
        ok = hdrlog("ps", "--pid", srv.pid)
        assert ok.returncode == 0 and str(lib) in ok.stdout, ok.stdout + ok.stderr
        damage(lib, how)

        ps = hdrlog("ps", "--pid", srv.pid)
        out = ps.stdout + ps.stderr
        assert ps.returncode == 1 and "Traceback" not in out, out
        assert "libssl.so.3" in out and ("could not read" in out or "no SSL" in out or "No OpenSSL" in out), out
        js = hdrlog("ps", "--pid", srv.pid, "--json")
        assert "Traceback" not in js.stderr and js.stdout.strip().startswith(("[", "{")), js.stdout + js.stderr

        doc = hdrlog("doctor", "--pid", srv.pid, "--no-compile")
        out = doc.stdout + doc.stderr
        assert doc.returncode == 1 and "Traceback" not in out, out
        assert "FAIL  TLS library" in out and "libssl.so.3" in out, out

        att = hdrlog("attach", "--pid", srv.pid, "--duration", "1", "--output", tmp_path / "o.jsonl")
        assert att.returncode == 2 and "Traceback" not in att.stderr, att.stderr
        msg = att.stderr.strip().splitlines()
        assert len(msg) == 1 and msg[0].startswith("hdrlog: error: ") and "libssl.so.3" in msg[0], att.stderr
        if how == "truncated":
            assert "truncated" in msg[0]
        if how == "aarch64":
            assert "AArch64" in msg[0] or "x86-64" in msg[0], msg[0]
    finally:
        srv.kill()
        srv.wait()


@pytest.mark.parametrize("content", [b"", b"#!/bin/sh\necho not elf\n", b"\x7fELF\x01" + b"\0" * 100])
def test_a_hostile_file_name_is_escaped_in_the_sentence(tmp_path, content):
    """A path read from /proc/PID/maps may hold a newline or a terminal escape (issue 7): ElfFile's sentences
    show it escaped, on one line, like the section names it reads from the file."""
    from hdrlog.elfsyms import ElfFile
    from hdrlog.errors import HdrlogError

    evil = tmp_path / "lib\nhdrlog: attached\x1b[2J.so"
    evil.write_bytes(content)
    for path in (evil, tmp_path / "missing\r\x1b[31m.so"):
        with pytest.raises(HdrlogError) as e:
            ElfFile(str(path))
        msg = str(e.value)
        assert msg.isprintable() and "\\x1b" in msg and ("\\n" in msg or "\\r" in msg), msg
