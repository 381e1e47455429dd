"""Go binaries: which toolchains hdrlog can probe, and where a Go function returns.

Go code must never get a uretprobe: it replaces the return address on the goroutine stack, which the Go
runtime copies and walks (stack growth, GC, tracebacks), so the process crashes or the probe misfires. A
function's result is read instead by uprobes on each of its RET instructions, which are found here by
disassembling the function with capstone (a linear sweep is exact for Go: the Go toolchain puts no data in
.text, and pads between functions with INT3).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict

from hdrlog.elfsyms import ElfFile, Symbol
from hdrlog.errors import HdrlogError
from hdrlog.textsafe import TEXT_LIMIT, shown

__all__ = ["MIN_GO", "parse_version", "unsupported_reason", "return_sites", "return_offsets", "after_stack_check",
           "arg_spills"]

MIN_GO = (1, 17)  # the register ABI on amd64 (receiver/args in RAX, RBX, RCX..., g in R14)
_MAX_FUNC = 1 << 20  # a function larger than this is not what we think it is

_cache: OrderedDict[tuple, tuple[int, ...]] = OrderedDict()
_cache_lock = threading.Lock()


def parse_version(version: str | None) -> tuple[int, int, int] | None:
    """(1, 22, 3) from "go1.22.3", "go1.21rc2", "go1.24.3 X:boringcrypto", "devel go1.23-abc"; else None."""
    if not version:
        return None
    m = re.search(r"go(\d+)\.(\d+)(?:\.(\d+))?", version)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def unsupported_reason(version: str | None) -> str | None:
    """Why hdrlog cannot probe crypto/tls of this Go version, or None if it can."""
    v = parse_version(version)
    if v is None:
        return None  # unknown: try (symbols and disassembly still have to work out)
    if v[:2] < MIN_GO:
        return (f"{shown(version, TEXT_LIMIT)} predates Go's register ABI (go1.17), which hdrlog's Go probes rely on; "
                f"rebuild the program with go1.17 or later")
    return None


def return_sites(code: bytes, vaddr: int) -> list[int]:
    """Virtual addresses of the RET instructions in `code` (a whole function starting at `vaddr`).

    Raises HdrlogError when the bytes do not disassemble to the end (something other than Go code, or
    a wrong function size): a missed RET would silently lose every call that leaves through it.
    """
    from capstone import CS_ARCH_X86, CS_MODE_64, Cs

    md = Cs(CS_ARCH_X86, CS_MODE_64)
    md.skipdata = False
    rets = []
    end = vaddr
    for address, size, mnemonic, _ops in md.disasm_lite(code, vaddr):
        if mnemonic in ("ret", "retf", "iret", "iretq") or mnemonic.startswith("ret"):
            rets.append(address)
        end = address + size
    tail = code[end - vaddr:]
    if tail.strip(b"\xcc\x00"):
        raise HdrlogError(f"cannot disassemble the function at {vaddr:#x} past {end:#x} "
                          f"({len(tail)} bytes left, starting {tail[:8].hex()}); not probing its returns.")
    return rets


_STACK_CHECK = re.compile(r"^(rsp|r12), qword ptr \[r14 \+ 0x10\]$")


def after_stack_check(code: bytes, vaddr: int) -> tuple[int, str] | None:
    """(address, instruction) of the first instruction after the stack-growth check that opens a Go
    function on amd64 — `cmp rsp|r12, [r14+0x10]` (g.stackguard0), then `jbe` to the morestack call — or
    None when the prologue is not that.

    A probe that must run once per call goes there: when the stack has to grow (or the goroutine is asked
    to yield, through the same guard), morestack runs the function again from its first instruction, so
    a probe at or before the `jbe` fires twice for one call, and one after it exactly once. The registers
    are still the arguments: the check writes only flags (and r12 for large frames)."""
    from capstone import CS_ARCH_X86, CS_MODE_64, Cs

    insns = list(Cs(CS_ARCH_X86, CS_MODE_64).disasm_lite(code[:64], vaddr))[:8]
    for i in range(len(insns) - 2):
        _a, _s, mnem, ops = insns[i]
        if mnem == "cmp" and _STACK_CHECK.match(ops) and insns[i + 1][2] in ("jbe", "jna"):
            addr, _size, m, o = insns[i + 2]
            return addr, f"{m} {o}".strip()
    return None


_SPILL = re.compile(r"^qword ptr \[rsp \+ (0x[0-9a-f]+|\d+)\], (rax|rbx|rcx|rdi|rsi)$")
_SUB_RSP = re.compile(r"^rsp, (0x[0-9a-f]+|\d+)$")


def arg_spills(code: bytes, vaddr: int) -> dict[str, int]:
    """Register arguments the function's prologue stores into the caller-reserved spill area, as
    {register: offset from the stack pointer at entry} (8 = the first slot above the return address).

    Go's register ABI reserves a slot per register argument above the return address; a function that
    needs its arguments after a call spills them there at the top. gotls.bpf.c relies on (*Conn).Read
    doing so for rax/rbx/rcx (receiver, buffer, length) to read a Read that was in flight when hdrlog
    attached; this reads the prologue (up to the first branch after the stack check) to check it."""
    from capstone import CS_ARCH_X86, CS_MODE_64, Cs

    depth = 0  # bytes pushed/reserved since entry
    out: dict[str, int] = {}
    seen_check = False
    for _addr, _size, mnem, ops in Cs(CS_ARCH_X86, CS_MODE_64).disasm_lite(code[:160], vaddr):
        if mnem == "cmp" and _STACK_CHECK.match(ops):
            seen_check = True
            continue
        if mnem in ("jbe", "jna") and seen_check:
            continue
        if mnem.startswith("j") or mnem in ("call", "ret"):
            break
        if mnem == "push":
            depth += 8
        elif mnem == "sub" and (m := _SUB_RSP.match(ops)):
            depth += int(m.group(1), 0)
        elif mnem == "mov" and (m := _SPILL.match(ops)):
            off = int(m.group(1), 0) - depth
            if off > 0:
                out.setdefault(m.group(2), off)
    return out


def return_offsets(path: str, sym: Symbol) -> tuple[int, ...]:
    """File offsets of the RET instructions of the function `sym` in the ELF file `path` (memoised per
    file identity and function). HdrlogError when none is found or the code cannot be disassembled."""
    with ElfFile(path) as elf:
        st = elf._info  # identity of the parsed file (shared by every ElfFile on the same inode)
        key = (id(st), sym.vaddr, sym.size)
        with _cache_lock:
            hit = _cache.get(key)
        if hit is not None:
            return hit
        if not 0 < sym.size <= _MAX_FUNC:
            raise HdrlogError(f"{sym.name} in {elf.shown_path} has no usable size ({sym.size}); "
                              f"cannot find its returns.")
        code = elf.read(sym.offset, sym.size)
        if len(code) != sym.size:
            raise HdrlogError(f"{sym.name} in {elf.shown_path} extends beyond the end of the file.")
        sites = return_sites(code, sym.vaddr)
        if not sites:
            raise HdrlogError(f"{sym.name} in {elf.shown_path} has no RET instruction; cannot read its results.")
        offsets = tuple(sym.offset + (a - sym.vaddr) for a in sites)
    with _cache_lock:
        _cache[key] = offsets
        while len(_cache) > 256:
            _cache.popitem(last=False)
    return offsets
