"""A function's extent from .eh_frame: the FDE covering an address, found through .eh_frame_hdr's binary-search
table and parsed alone (pyelftools' whole-CFI parse is too slow at attach time). Used by osslsites.py where a
stripped library has no symbol size for the function it analyses.
"""

from __future__ import annotations

import struct


class Unsupported(Exception):
    """An .eh_frame encoding this parser does not know."""

def _enc(data: bytes, pos: int, enc: int, here: int, datarel: int) -> tuple[int, int]:
    """A DW_EH_PE-encoded pointer at data[pos]: (value, new pos)."""
    fmt = enc & 0x0F
    size, code = {0x00: (8, "<Q"), 0x03: (4, "<I"), 0x04: (8, "<Q"), 0x0B: (4, "<i"), 0x0C: (8, "<q"),
                  0x02: (2, "<H"), 0x0A: (2, "<h")}.get(fmt, (0, ""))
    if not size:
        raise Unsupported(f"unsupported pointer encoding {enc:#x} in .eh_frame")
    v = struct.unpack_from(code, data, pos)[0]
    app = enc & 0x70
    if app == 0x10:
        v += here + pos
    elif app == 0x30:
        v += datarel
    elif app != 0:
        raise Unsupported(f"unsupported pointer application {enc:#x} in .eh_frame")
    return v & ((1 << 64) - 1), pos + size


def _uleb(data: bytes, pos: int) -> tuple[int, int]:
    v = shift = 0
    while True:
        b = data[pos]
        pos += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return v, pos


def fde_range(elf, vaddr: int) -> tuple[int, int] | None:
    """[start, end) of the .eh_frame FDE that covers `vaddr`, through .eh_frame_hdr's search table."""
    hdr = next((s for s in elf.sections if s.name == ".eh_frame_hdr"), None)
    if hdr is None or not hdr.in_file:
        return None
    h = elf.read(hdr.offset, hdr.size)
    if len(h) < 4 or h[0] != 1:
        return None
    pos = 4
    _, pos = _enc(h, pos, h[1], hdr.addr, hdr.addr)
    count, pos = _enc(h, pos, h[2], hdr.addr, hdr.addr)
    if h[3] != 0x3B or count <= 0 or pos + 8 * count > len(h):  # datarel sdata4 pairs, as every linker writes
        return None
    lo, hi = 0, count - 1
    best = None
    while lo <= hi:
        mid = (lo + hi) // 2
        loc, fde = struct.unpack_from("<ii", h, pos + 8 * mid)
        if hdr.addr + loc <= vaddr:
            best, lo = (hdr.addr + loc, hdr.addr + fde), mid + 1
        else:
            hi = mid - 1
    if best is None:
        return None
    fde_addr = best[1]
    raw = elf.read_vaddr(fde_addr, 32)
    if raw is None:
        return None
    length, cie_ptr = struct.unpack_from("<Ii", raw, 0)
    if length in (0, 0xFFFFFFFF):
        return None
    cie_addr = fde_addr + 4 - cie_ptr
    cie = elf.read_vaddr(cie_addr, 64)
    if cie is None:
        return None
    aug_end = cie.index(b"\0", 9)
    aug = cie[9:aug_end].decode("ascii", "replace")
    p = aug_end + 1
    _, p = _uleb(cie, p)  # code alignment
    _, p = _uleb(cie, p)  # data alignment (sleb: skipping needs only the bytes)
    p += 1 if cie[8] == 1 else 0
    if cie[8] != 1:
        _, p = _uleb(cie, p)
    enc = 0
    if aug.startswith("z"):
        _, p = _uleb(cie, p)
        for ch in aug[1:]:
            if ch == "R":
                enc = cie[p]
                p += 1
            elif ch == "P":
                penc = cie[p]
                p += 1
                _, p = _enc(cie, p, penc, cie_addr, 0)
            elif ch == "L":
                p += 1
            elif ch not in "SB":
                return None
    start, q = _enc(raw, 8, enc, fde_addr, 0)
    size, _ = _enc(raw, q, enc & 0x0F, fde_addr, 0)
    if not (start <= vaddr < start + size):
        return None
    return start, start + size
