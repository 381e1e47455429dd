"""Give memory back after bcc has compiled the probes.

bcc compiles with clang/LLVM inside hdrlog's process. After the one compile, two things stay resident for
the rest of the run (measured on Debian 12, bcc 0.26, LLVM 14: ~84 MiB of 142 MiB RSS at attach):
- the heap clang freed, which glibc keeps: malloc_trim(0) returns it;
- the code pages of libLLVM and libclang-cpp that the compile touched. They are clean file-backed pages
  (identical to the file), so MADV_DONTNEED only unmaps them from hdrlog: they stay in the page cache, the
  kernel reclaims them when it needs the memory, and a later compile faults them back in from there.
A mapping is released only if smaps says it holds no private or anonymous page (relocated data such as the
RELRO segment does, and is kept): dropping such a page would lose what was written to it.
"""

from __future__ import annotations

import ctypes as ct
import os

COMPILER_LIBS = ("libLLVM", "libclang")  # file-name prefixes of the compiler's shared libraries
MADV_DONTNEED = 4


def release_compiler_memory(smaps_path: str = "/proc/self/smaps") -> int:
    """malloc_trim, then unmap the compiler libraries' clean file pages; returns the kB of RSS released
    from the libraries (as smaps counted them before)."""
    try:
        libc = ct.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return 0  # not glibc: nothing we know how to do
    try:
        libc.malloc_trim(0)
    except AttributeError:
        pass
    libc.madvise.argtypes = (ct.c_void_p, ct.c_size_t, ct.c_int)
    released = 0
    for start, end, rss_kb in clean_compiler_mappings(smaps_path):
        if libc.madvise(start, end - start, MADV_DONTNEED) == 0:
            released += rss_kb
    return released


def clean_compiler_mappings(smaps_path: str = "/proc/self/smaps") -> list[tuple[int, int, int]]:
    """(start, end, rss_kB) of every mapping of a compiler library that holds only clean file pages."""
    out = []
    try:
        with open(smaps_path) as f:
            text = f.read()
    except OSError:
        return out
    cur = None
    fields: dict[str, int] = {}

    def flush():
        if cur is not None and fields.get("Rss", 0) and not fields.get("Private_Dirty", 1) \
                and not fields.get("Anonymous", 1):
            out.append((cur[0], cur[1], fields["Rss"]))

    for line in text.splitlines():
        head = line.split(None, 5)
        if head and "-" in head[0] and len(head) >= 5 and ":" not in head[0]:
            flush()
            cur, fields = None, {}
            if len(head) == 6 and head[1] in ("r-xp", "r--p") \
                    and os.path.basename(head[5]).startswith(COMPILER_LIBS):
                lo, hi = head[0].split("-")
                cur = (int(lo, 16), int(hi, 16))
        elif cur is not None and len(head) >= 2 and head[0].endswith(":"):
            try:
                fields[head[0][:-1]] = int(head[1])
            except ValueError:
                pass
    flush()
    return out
