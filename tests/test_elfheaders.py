"""elfheaders.py reads the section and program headers with struct: the same result as pyelftools (which it
used before, and whose import cost every attach ~0.02 s) on the machine's real binaries, and the same names."""

from __future__ import annotations

import glob
import mmap
import os
import shutil
import sys

import pytest
from elftools.elf import enums
from elftools.elf.elffile import ELFFile

from hdrlog.elfheaders import P_TYPES, SH_TYPES, parse_headers


def _table(enum: dict) -> dict:
    return {v: k for k, v in enum.items() if k != "_default_"}


def test_type_names_are_pyelftools_names_for_x86_64():
    assert SH_TYPES == _table(enums.ENUM_SH_TYPE_AMD64)
    assert P_TYPES == _table(enums.ENUM_P_TYPE_BASE)


def _binaries() -> list[str]:
    cands = [sys.executable, shutil.which("node"), shutil.which("nginx"), shutil.which("caddy"),
             *glob.glob("/usr/lib/x86_64-linux-gnu/libssl.so.*"), *glob.glob("/usr/lib/x86_64-linux-gnu/libcrypto.so.*"),
             *glob.glob("/usr/lib/x86_64-linux-gnu/libc.so.*"), *sorted(glob.glob("/usr/bin/*"))[:40]]
    out = []
    for c in cands:
        if c and os.path.isfile(c) and not os.path.islink(c):
            with open(c, "rb") as f:
                head = f.read(20)
            if head[:4] == b"\x7fELF" and head[4] == 2 and head[18] == 62:
                out.append(c)
    return sorted(set(out))


def _reference(path: str):
    """What parse_headers returned when pyelftools read the headers."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        secs = [elf._get_section_header(i) for i in range(elf.num_sections())]
        segs = [elf._get_segment_header(i) for i in range(elf.num_segments())]
        sections = [(str(h["sh_type"]), h["sh_flags"], h["sh_addr"], h["sh_offset"], h["sh_size"], h["sh_entsize"],
                     h["sh_link"], h["sh_info"]) for h in secs]
        segments = [(str(g["p_type"]), g["p_flags"], g["p_offset"], g["p_vaddr"], g["p_filesz"], g["p_memsz"])
                    for g in segs]
        names = [s.name for s in elf.iter_sections()]
    return sections, segments, names


@pytest.mark.parametrize("path", _binaries())
def test_same_headers_as_pyelftools(path):
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        info = parse_headers(path, mm, os.path.getsize(path))
    sections, segments, names = _reference(path)
    assert [(s.type, s.flags, s.addr, s.offset, s.size, s.entsize, s.link, s.info) for s in info.sections] == sections
    assert [(g.type, g.flags, g.offset, g.vaddr, g.filesz, g.memsz) for g in info.segments] == segments
    assert [s.name for s in info.sections] == names


def test_the_machine_has_binaries_to_compare():
    assert len(_binaries()) >= 10
