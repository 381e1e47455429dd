"""Where each uprobe sits: on an instruction the kernel emulates, not one it must single-step.

A uprobe on an instruction the kernel single-steps out of line costs ~26 µs per hit on the reference VM;
on one it emulates (push reg, call/jmp rel, jcc, nop) ~0.45 µs (measured: shared/notes). Debian's libssl
begins SSL_read/SSL_write with `sub rsp, N` (single-stepped), and a uretprobe always sits at the entry.
So, per probe:

1. the entry instruction is emulated → entry and return probes stay there;
2. the function is one of a group (SSL_read, SSL_read_ex) that are thin wrappers calling the same internal
   function with the _ex signature (ssl, buf, num, size_t *moved), the call passes ssl and buf through
   unchanged (and, for the _ex member, num and the pointer too), and that internal function starts with an
   emulated instruction → both probes go on the internal function, once for the whole group;
3. otherwise an entry-only probe moves forward to the first emulated instruction of the straight-line
   prefix that the registers it reads survive to (a branch ends the prefix; the branch itself is a valid
   site since every call executes it); a return probe stays at the entry.

Anything the analysis cannot prove falls back to the entry, and every site says where it is and why.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import capstone
from capstone import x86_const as X

from hdrlog.elfsyms import ElfFile, Symbol
from hdrlog.x86flow import FULL, MD

WINDOW = 96  # bytes of a function examined
MAX_INSNS = 24

# the disassembler and register names x86flow (the copy sites' analysis) uses too: sub-registers fold into their
# 64-bit register
_MD, _FULL = MD, FULL


@dataclass(frozen=True)
class Site:
    kind: str  # "entry" | "return" (uretprobe) | "ret-insn"
    fn: str  # BPF function to run
    vaddr: int
    offset: int  # file offset: where the uprobe is attached
    symbol: str  # the probed function(s), e.g. "SSL_read" or "SSL_read+SSL_read_ex"
    where: str  # e.g. "SSL_read+0x0", "internal@0x35290"
    insn: str  # the instruction the probe sits on
    cost: str  # "emulated" | "single-step" | "unknown"
    why: str
    cookie: int = 0  # the uprobe's BPF cookie (copy sites: where their program finds its values)

    def _replace_why(self, why: str) -> Site:
        return replace(self, why=why)


def emulated(insn) -> bool:
    """True for instructions x86 uprobes emulate instead of single-stepping (arch/x86/kernel/uprobes.c)."""
    m = insn.mnemonic
    if m == "push" and insn.operands and insn.operands[0].type == X.X86_OP_REG:
        return True
    if m in ("call", "jmp") and insn.operands and insn.operands[0].type == X.X86_OP_IMM:
        return True
    if m.startswith("j") and m not in ("jmp",) and insn.operands and insn.operands[0].type == X.X86_OP_IMM:
        return True  # jcc rel
    return m == "nop"


def _writes(insn) -> set[str]:
    try:
        _read, written = insn.regs_access()
    except capstone.CsError:
        return {"?"}
    return {_FULL.get(insn.reg_name(r), insn.reg_name(r)) for r in written}


def _is_branch(insn) -> bool:
    return insn.group(capstone.CS_GRP_JUMP) or insn.group(capstone.CS_GRP_CALL) or insn.group(
        capstone.CS_GRP_RET) or insn.group(capstone.CS_GRP_INT)


def disasm(elf: ElfFile, sym: Symbol, n: int = WINDOW):
    size = min(sym.size or n, n)
    return list(_MD.disasm(elf.read(sym.offset, size), sym.vaddr))[:MAX_INSNS]


def _fmt(insn) -> str:
    return f"{insn.mnemonic} {insn.op_str}".strip()


def _cost(insn) -> str:
    return "emulated" if emulated(insn) else "single-step"


def walk_to_emulated(insns, reads: frozenset[str]):
    """First emulated instruction of the straight-line prefix before which no register in `reads` is
    written; None if a branch, a write to `reads` or rsp-independent doubt comes first."""
    for insn in insns:
        if emulated(insn):
            return insn
        if _is_branch(insn):
            return None
        w = _writes(insn)
        if "?" in w or w & reads:
            return None
    return None


def wrapper_call(insns, passthrough: frozenset[str]):
    """Target of the first direct call in the prefix if the registers in `passthrough` reach it unchanged.

    Conditional branches before the call are allowed (they leave on error paths, e.g. num < 0); any other
    control transfer, or a write to a passed-through register, disproves the wrapper shape.
    """
    for insn in insns:
        m = insn.mnemonic
        if m == "call":
            op = insn.operands[0] if insn.operands else None
            if op is not None and op.type == X.X86_OP_IMM:
                return insn, op.imm
            return None
        if m in ("jmp", "ret") or insn.group(capstone.CS_GRP_RET) or insn.group(capstone.CS_GRP_INT):
            return None
        w = _writes(insn)
        if "?" in w or w & passthrough:
            return None
    return None


def at_entry(elf: ElfFile, sym: Symbol, fn: str, kind: str, why: str | None = None) -> Site:
    insns = disasm(elf, sym)
    if not insns:
        return Site(kind, fn, sym.vaddr, sym.offset, sym.name, f"{sym.name}+0x0", "?", "unknown",
                    why or "could not disassemble the entry")
    first = insns[0]
    if why is None:
        why = "entry instruction is emulated" if emulated(first) else "entry instruction is single-stepped"
    return Site(kind, fn, sym.vaddr, sym.offset, sym.name, f"{sym.name}+0x0", _fmt(first), _cost(first), why)


def entry_site(elf: ElfFile, sym: Symbol, fn: str, reads: frozenset[str]) -> Site:
    """An entry-only probe: at the entry if emulated, else at the first emulated instruction it can reach."""
    insns = disasm(elf, sym)
    if not insns or emulated(insns[0]):
        return at_entry(elf, sym, fn, "entry")
    if not reads:
        return at_entry(elf, sym, fn, "entry", "entry is single-stepped; the probe declares no registers, so "
                        "it is not moved")
    hit = walk_to_emulated(insns, reads)
    if hit is None:
        return at_entry(elf, sym, fn, "entry", "entry is single-stepped and no emulated instruction comes "
                        "before a branch or a write to the registers the probe reads")
    delta = hit.address - sym.vaddr
    return Site("entry", fn, hit.address, sym.offset + delta, sym.name, f"{sym.name}+{delta:#x}", _fmt(hit),
                "emulated", f"first emulated instruction; {', '.join(sorted(reads))} unchanged before it")


def internal_sites(elf: ElfFile, members: list[tuple[Symbol, frozenset[str]]], entry_fn: str,
                   ret_fn: str) -> list[Site] | None:
    """Both probes on the internal function every member of a wrapper group calls, or None if unproven."""
    target = None
    for sym, passthrough in members:
        insns = disasm(elf, sym)
        found = wrapper_call(insns, passthrough)
        if found is None:
            return None
        _call, dest = found
        if target is not None and dest != target:
            return None
        target = dest
    if target is None:
        return None
    try:
        off = elf.vaddr_to_offset(target)
        insns = list(_MD.disasm(elf.read(off, 16), target))
    except Exception:  # noqa: BLE001 - outside the file's segments: unproven
        return None
    if not insns or not emulated(insns[0]):
        return None
    names = "+".join(s.name for s, _ in members)
    why = (f"{names} are wrappers that call the internal function at {target:#x} with ssl and buf unchanged; "
           f"its entry is emulated")
    return [Site(kind, fn, target, off, names, f"internal@{target:#x}", _fmt(insns[0]), "emulated", why)
            for kind, fn in (("entry", entry_fn), ("return", ret_fn))]


def _single(elf: ElfFile, up, sym: Symbol, note: str = "") -> list[Site]:
    if not up.ret:
        return [entry_site(elf, sym, up.entry, up.reads)] if up.entry else []
    # A uretprobe always sits at the entry; the entry probe shares its trap there (moving it would add a
    # trap, not remove one).
    sites = [at_entry(elf, sym, up.ret, "return")]
    if up.entry:
        sites.insert(0, at_entry(elf, sym, up.entry, "entry"))
    if note:
        sites = [s._replace_why(f"{s.why}; {note}") for s in sites]
    return sites


def _unplaced(up, sym: Symbol, why: str) -> list[Site]:
    return [Site(kind, fn, sym.vaddr, sym.offset, sym.name, f"{sym.name}+0x0", "", "unknown", why)
            for kind, fn in (("entry", up.entry), ("return", up.ret)) if fn]


def ret_insn_sites(elf: ElfFile, path: str, up, sym: Symbol) -> list[Site]:
    """A uprobe on every RET instruction of the function (Go: a uretprobe would corrupt moving stacks)."""
    from hdrlog.golang import return_offsets

    out = []
    for off in return_offsets(path, sym):
        vaddr = sym.vaddr + (off - sym.offset)
        insn = next(_MD.disasm(elf.read(off, 16), vaddr), None)
        out.append(Site("ret-insn", up.at_returns, vaddr, off, sym.name, f"{sym.name}+{off - sym.offset:#x}",
                        _fmt(insn) if insn else "?", _cost(insn) if insn else "unknown",
                        "Read's result is in RAX at each RET; no uretprobe on Go code"))
    return out


def go_body_site(elf: ElfFile, sym: Symbol, fn: str) -> Site:
    """Go: an entry program that must run once per call, on the first instruction after the stack-growth
    check (golang.after_stack_check); at the entry, said so, when the prologue is not recognised."""
    from hdrlog.golang import after_stack_check

    hit = after_stack_check(elf.read(sym.offset, 64), sym.vaddr)
    if hit is None:
        return at_entry(elf, sym, fn, "entry", "no Go stack-growth check recognised: at the entry, where it "
                        "runs again when morestack restarts the function")
    addr, text = hit
    delta = addr - sym.vaddr
    insn = next(_MD.disasm(elf.read(sym.offset + delta, 16), addr), None)
    return Site("entry", fn, addr, sym.offset + delta, sym.name, f"{sym.name}+{delta:#x}", text,
                _cost(insn) if insn else "unknown",
                "after Go's stack-growth check: once per call (morestack restarts the function at its entry)")


# copy-site locations in the BPF cookie (probes/hdrlog.h: HDRLOG_LOC_*, enum hdrlog_reg)
LOC_VALID, LOC_STACK, LOC_WIDE, LOC_ARG = 0x8000, 0x4000, 0x2000, 0x1FFF
REG_NUM = {"rax": 0, "rbx": 1, "rcx": 2, "rdx": 3, "rsi": 4, "rdi": 5, "rbp": 6, **{f"r{i}": i for i in range(8, 16)}}
MODES = ("auto", "functions", "entry")


def _loc_bits(loc) -> int:
    if loc is None:
        return 0
    bits = LOC_VALID | (LOC_WIDE if loc.size == 8 else 0)
    if loc.reg is not None:
        return bits | REG_NUM[loc.reg]
    if not 0 <= loc.sp_off <= LOC_ARG:
        raise ValueError(f"stack offset {loc.sp_off:#x} does not fit a cookie")
    return bits | LOC_STACK | loc.sp_off


def copy_cookie(cs) -> int:
    """A copy site's BPF cookie: its SSL*, record type and peek locations (osslsites.Loc) in 16 bits each."""
    return _loc_bits(cs.conn) | _loc_bits(cs.type) << 16 | _loc_bits(cs.peek) << 32


_COPY_WHY = {
    "read-copy": "decrypted application data is copied into the caller's buffer here, once per record (a read that "
                 "finds nothing never gets here)",
    "write-call": "application data becomes TLS records here, once (a retry after EAGAIN resends them without "
                  "coming back)",
    "write-mb": "the multi-block path (TLS 1.2 AES-CBC-HMAC, large writes) encrypts application data here",
}


def _copy_sites(elf: ElfFile, library, groups: dict[str, list]) -> tuple[list[Site], dict[str, str]]:
    """Copy sites replacing whole wrapper groups where osslsites proves them; why not, per group otherwise."""
    from hdrlog import osslsites

    found = osslsites.find(elf)
    out, why_not = [], {}
    for group, csites, why in (("read", found.read, found.why_read), ("write", found.write, found.why_write)):
        members = groups.get(group)
        if not members:
            continue
        if not csites:
            why_not[group] = why
            continue
        names = "+".join(sym.name for _, sym in members)
        for cs in csites:
            extra = f"SSL* {cs.conn}" + (f", type {cs.type}" if cs.type else "") + (f", peek {cs.peek}" if cs.peek else "")
            out.append(Site("entry", dict(library.copy_fns)[cs.kind], cs.vaddr, cs.offset, names,
                            f"{cs.function}+{cs.vaddr - cs.fn_vaddr:#x}", cs.insn, "emulated",
                            f"{_COPY_WHY[cs.kind]}; {extra}; replaces {names.replace('+', ', ')}", copy_cookie(cs)))
        del groups[group]
    return out, why_not


def plan(elf: ElfFile, library, symbols: dict[str, Symbol], *, path: str | None = None,
         mode: str = "auto") -> list[Site]:
    """Sites for every uprobe of `library` whose symbol was found. mode "auto": copy sites inside the library
    where proven, else "functions": function probes on emulated instructions; "entry": every probe at its symbol."""
    if mode not in MODES:
        raise ValueError(f"placement mode {mode!r}")
    sites: list[Site] = []
    groups: dict[str, list] = {}
    for up in library.uprobes:
        sym = symbols.get(up.symbol)
        if sym is None:
            continue
        if up.at_returns is not None:
            sites += ret_insn_sites(elf, path or elf.path, up, sym)
        if up.after_stack_check and up.entry and not up.ret:
            sites.append(go_body_site(elf, sym, up.entry))  # correctness, not cost: in every mode
            continue
        if up.group and mode != "entry":
            groups.setdefault(up.group, []).append((up, sym))
        elif mode == "entry":
            sites += _unplaced(up, sym, "--placement entry")
        else:
            sites += _single(elf, up, sym)
    why_not: dict[str, str] = {}
    if mode == "auto" and library.copy_fns:
        copies, why_not = _copy_sites(elf, library, groups)
        sites += copies
    for name, members in groups.items():
        firsts = [disasm(elf, sym)[:1] for _, sym in members]
        note = f"; no copy site: {why_not[name]}" if name in why_not else ""
        if all(f and emulated(f[0]) for f in firsts):
            for up, sym in members:
                sites += [s._replace_why(s.why + note) for s in _single(elf, up, sym)]
            continue
        group = library.group(name)
        internal = internal_sites(elf, [(sym, up.reads) for up, sym in members], group.entry, group.ret)
        if internal is not None:
            sites += [s._replace_why(s.why + note) for s in internal]
        else:
            for up, sym in members:
                sites += _single(elf, up, sym, f"the {name} wrapper shape was not proven{note}")
    return sites
