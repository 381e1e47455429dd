"""memtrim: which mappings are released after the compile, and that releasing them really lowers RSS."""

import subprocess
import sys
import textwrap

import pytest

from hdrlog.memtrim import clean_compiler_mappings

SMAPS = """\
7f0000000000-7f0000100000 r-xp 00000000 fe:00 339084                     /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
Size:               1024 kB
Rss:                 800 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me sd
7f0000100000-7f0000200000 r--p 06162000 fe:00 339084                     /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
Rss:                 600 kB
Private_Dirty:       600 kB
Anonymous:           600 kB
7f0000200000-7f0000300000 rw-p 068d6000 fe:00 339084                     /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
Rss:                  36 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
7f0000300000-7f0000400000 r-xp 00000000 fe:00 1                          /usr/lib/llvm-14/lib/libclang-cpp.so.14
Rss:                 300 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
7f0000400000-7f0000500000 r-xp 00000000 fe:00 2                          /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                 900 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
7f0000500000-7f0000600000 r-xp 00000000 fe:00 3                          /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
Rss:                   0 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
7f0000600000-7f0000700000 rw-p 00000000 00:00 0
Rss:                 100 kB
Private_Dirty:       100 kB
Anonymous:           100 kB
"""


def test_only_clean_readonly_compiler_mappings_with_resident_pages(tmp_path):
    f = tmp_path / "smaps"
    f.write_text(SMAPS)
    got = clean_compiler_mappings(str(f))
    # kept: relocated RELRO (dirty), the writable segment, libc, an empty mapping, anonymous memory
    assert got == [(0x7F0000000000, 0x7F0000100000, 800), (0x7F0000300000, 0x7F0000400000, 300)]


def test_unreadable_smaps_releases_nothing(tmp_path):
    assert clean_compiler_mappings(str(tmp_path / "missing")) == []


_CHILD = textwrap.dedent("""
    import re, sys
    from bcc import BPF
    from hdrlog.memtrim import release_compiler_memory

    def rss_kb():
        return int(re.search(r"^Rss:\\s+(\\d+)", open("/proc/self/smaps_rollup").read(), re.M).group(1))

    prog = "int count(void *ctx) { return 0; }"
    b = BPF(text=prog)
    b.load_func("count", BPF.KPROBE)
    before = rss_kb()
    released = release_compiler_memory()
    after = rss_kb()
    # the compiler must still work afterwards: its pages come back from the page cache
    b2 = BPF(text=prog.replace("count", "count2"))
    b2.load_func("count2", BPF.KPROBE)
    print(before, after, released)
""")


@pytest.mark.kernel
def test_release_after_a_real_compile_lowers_rss_and_compiling_again_works():
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    before, after, released = map(int, out.stdout.split()[-3:])
    # measured on Debian 12 / LLVM 14: ~60 MiB of compiler code pages resident after one compile
    assert released > 20_000, (before, after, released)
    assert before - after > 20_000, (before, after, released)
