"""OpenSSL 3.0 / 1.1.1 copy sites: the instructions where plaintext crosses the record layer, once per record.

nginx calls SSL_read twice per request (the second finds nothing: EAGAIN) and SSL_write once; probing their entry
and return costs six traps per request. Inside the record layer there are instructions that run exactly once per
record of application data, with the plaintext in registers:
- read-copy: in ssl3_read_bytes, `call memcpy(buf, record data, n)`, the copy of decrypted data into the
  caller's buffer. Only when the `type` argument is 23 (application data) and `peek` is 0 is that a read the
  application consumes (SSL_peek copies too; the handshake reads the same function with type 22).
- write-call: in ssl3_write_bytes, `call do_ssl3_write(s, type, buf, pipelens, numpipes, ...)`: data reaching it
  is committed to TLS records once (a retry after EAGAIN resends the pending record without calling it again).
- write-mb: the multi-block path of ssl3_write_bytes (TLS 1.1/1.2 stitched AES-CBC-HMAC ciphers, writes of at
  least four records) encrypts through `EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_TLS1_1_MULTIBLOCK_ENCRYPT, len, &p)`
  with p = {out, inp, len, interleave}, never through do_ssl3_write: a site too, or writes are not covered.
The SSL*, type and peek live wherever the compiler keeps them there: hdrlog.x86flow proves a register or stack
slot that holds them on every path, or the sites are not used (:func:`find` says why) and the probes stay on the
functions. Functions come from symbols (node links OpenSSL with its symbols) or, in a stripped libssl, from the
SSL_METHOD table TLS_server_method() returns (+0x68 ssl_read_bytes, +0x70 ssl_write_bytes, +0x78
ssl_dispatch_alert).
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass

from hdrlog import ehframe, x86flow
from hdrlog.elfsyms import ElfFile, Symbol

MB_ENCRYPT = 0x1A  # EVP_CTRL_TLS1_1_MULTIBLOCK_ENCRYPT
_METHOD_SLOTS = {"ssl3_read_bytes": 0x68, "ssl3_write_bytes": 0x70, "ssl3_dispatch_alert": 0x78}
_METHODS = ("TLS_server_method", "TLS_method", "TLS_client_method")
_R_X86_64_RELATIVE, _R_X86_64_JUMP_SLOT = 8, 7


@dataclass(frozen=True)
class Loc:
    """Where a value is when the probed instruction is about to run: a register, or [rsp + sp_off]."""

    reg: str | None
    sp_off: int | None
    size: int  # bytes holding it: 8 for SSL*, 4 for the int arguments

    def __str__(self) -> str:
        return self.reg if self.reg else f"[rsp+{self.sp_off:#x}]"


@dataclass(frozen=True)
class CopySite:
    kind: str  # "read-copy" | "write-call" | "write-mb"
    vaddr: int
    offset: int  # file offset: where the uprobe attaches
    function: str  # "ssl3_read_bytes" | "ssl3_write_bytes"
    fn_vaddr: int
    insn: str
    conn: Loc
    type: Loc | None
    peek: Loc | None


@dataclass(frozen=True)
class Found:
    read: tuple[CopySite, ...]
    write: tuple[CopySite, ...]
    why_read: str
    why_write: str


class _NotProven(Exception):
    pass


_memo: dict[tuple, Found] = {}
_memo_lock = threading.Lock()


def find(elf: ElfFile, symbols: dict[str, Symbol] | None = None) -> Found:
    """The copy sites of the OpenSSL in `elf`, memoised per file (path and build id)."""
    key = (elf.path, elf.build_id)
    with _memo_lock:
        hit = _memo.get(key)
    if hit is not None:
        return hit
    found = _find(elf)
    with _memo_lock:
        _memo[key] = found
    return found


# public API that OpenSSL 3.2 added with QUIC, when the record layer was rewritten (tls_write_records; the
# SSL_METHOD table changed too: OpenSSL 4.0's +0x68 is not ssl3_read_bytes)
_NEWER = ("SSL_handle_events", "OSSL_QUIC_client_method", "SSL_new_stream")


def _find(elf: ElfFile) -> Found:
    # every name this module asks for, in one scan of the symbol tables (ElfFile memoises per name; node's .symtab
    # has ~100k entries)
    elf.lookup([*_NEWER, *_METHOD_SLOTS, *_METHODS, "do_ssl3_write", "memcpy", "EVP_CIPHER_CTX_ctrl"])
    newer = sorted(elf.lookup(list(_NEWER)))
    if newer:
        why = (f"OpenSSL 3.2 or later (it has {newer[0]}): its record layer was rewritten, and only 3.0/1.1.1's is "
               "analysed")
        return Found((), (), why, why)
    try:
        fns = _functions(elf)
    except (_NotProven, ehframe.Unsupported) as e:
        return Found((), (), str(e), str(e))
    lib = _Lib(elf)
    read, why_read = _guard(lambda: _read_sites(elf, lib, fns))
    write, why_write = _guard(lambda: _write_sites(elf, lib, fns))
    return Found(read, write, why_read, why_write)


def _guard(fn) -> tuple[tuple[CopySite, ...], str]:
    try:
        return fn()
    except (_NotProven, x86flow.Unsupported, ehframe.Unsupported) as e:
        return (), str(e)


# ------------------------------------------------------------------------------------------ the functions
def _functions(elf: ElfFile) -> dict[str, tuple[int, tuple[int, int]]]:
    """name -> (entry, [start, end)) for ssl3_read_bytes, ssl3_write_bytes, ssl3_dispatch_alert."""
    syms = elf.lookup(list(_METHOD_SLOTS) + ["do_ssl3_write"])
    table = _method_table(elf)
    out = {}
    for name, slot in _METHOD_SLOTS.items():
        by_table = table.get(slot) if table else None
        sym = syms.get(name)
        if sym is not None and by_table is not None and sym.vaddr != by_table:
            raise _NotProven(f"{name} is at {sym.vaddr:#x} by its symbol but {by_table:#x} in the SSL_METHOD table")
        entry = sym.vaddr if sym is not None else by_table
        if entry is None:
            raise _NotProven(f"{name} not found (no symbol, no TLS_server_method table)")
        rng = (sym.vaddr, sym.vaddr + sym.size) if sym is not None and sym.size else ehframe.fde_range(elf, entry)
        if rng is None or rng[0] != entry:
            raise _NotProven(f"the extent of {name} at {entry:#x} is unknown (no symbol size, no .eh_frame entry "
                             "starting there)")
        out[name] = (entry, rng)
    if "do_ssl3_write" in syms:
        out["do_ssl3_write"] = (syms["do_ssl3_write"].vaddr, (0, 0))
    return out


def _relative_relocs(elf: ElfFile) -> dict[int, int]:
    out = {}
    for s in elf.sections:
        if s.type == "SHT_RELA" and s.in_file and s.entsize == 24:
            for off, info, addend in struct.iter_unpack("<QQq", elf.read(s.offset, s.size - s.size % 24)):
                if info & 0xFFFFFFFF == _R_X86_64_RELATIVE:
                    out[off] = addend
    return out


def _method_table(elf: ElfFile) -> dict[int, int] | None:
    """Slot offset -> function address in the SSL_METHOD the TLS_*_method() functions return, if they agree."""
    syms = elf.lookup(list(_METHODS))
    if not syms:
        return None
    relocs = _relative_relocs(elf) if elf.elf_type == "DYN" else {}
    tables = []
    for name in _METHODS:
        sym = syms.get(name)
        if sym is None:
            continue
        insns = list(x86flow.MD.disasm(elf.read(sym.offset, 16), sym.vaddr))
        if insns and insns[0].mnemonic == "endbr64":
            insns = insns[1:]
        if len(insns) < 2 or insns[1].mnemonic != "ret":
            raise _NotProven(f"{name} is not `lea rax, [table]; ret`")
        i = insns[0]
        ops = i.operands
        if i.mnemonic == "lea" and ops[1].type == x86flow.X.X86_OP_MEM and i.reg_name(ops[1].mem.base) == "rip":
            addr = i.address + i.size + ops[1].mem.disp
        elif i.mnemonic == "mov" and ops[1].type == x86flow.X.X86_OP_IMM:
            addr = ops[1].imm
        else:
            raise _NotProven(f"{name} does not return a table address ({i.mnemonic} {i.op_str})")
        slots = {}
        for slot in _METHOD_SLOTS.values():
            if addr + slot in relocs:
                v = relocs[addr + slot]
            elif elf.elf_type == "EXEC":
                raw = elf.read_vaddr(addr + slot, 8)
                v = struct.unpack("<Q", raw)[0] if raw else None
            else:
                v = None
            if v is None or not _executable(elf, v):
                raise _NotProven(f"{name}'s table slot +{slot:#x} does not point to code")
            slots[slot] = v
        tables.append(slots)
    if any(t != tables[0] for t in tables):
        raise _NotProven("TLS_server_method, TLS_method and TLS_client_method disagree on the record-layer functions")
    return tables[0]


def _executable(elf: ElfFile, vaddr: int) -> bool:
    return any(g.type == "PT_LOAD" and g.flags & 1 and g.vaddr <= vaddr < g.vaddr + g.filesz for g in elf.segments)


class _Lib:
    """Names of call targets: PLT stubs through .rela.plt, local functions through symbols."""

    def __init__(self, elf: ElfFile) -> None:
        self.elf = elf
        self._got: dict[int, str] | None = None
        self._names: dict[int, str | None] = {}
        self._plt = [(s.addr, s.addr + s.size) for s in elf.sections if s.name in (".plt", ".plt.sec", ".plt.got")]

    def _got_names(self) -> dict[int, str]:
        if self._got is None:
            self._got = {}
            dynsym, dynstr = self.elf.get_section(".dynsym"), self.elf.section(".dynstr")
            for s in self.elf.sections:
                if s.name == ".rela.plt" and s.in_file and dynsym is not None and dynstr is not None:
                    for off, info, _ in struct.iter_unpack("<QQq", self.elf.read(s.offset, s.size - s.size % 24)):
                        if info & 0xFFFFFFFF != _R_X86_64_JUMP_SLOT:
                            continue
                        ent = self.elf.read(dynsym.offset + 24 * (info >> 32), 24)
                        name_off = struct.unpack_from("<I", ent)[0]
                        end = dynstr.index(b"\0", name_off)
                        self._got[off] = dynstr[name_off:end].decode("ascii", "replace")
        return self._got

    def name(self, target: int) -> str | None:
        if target in self._names:
            return self._names[target]
        name = None
        if self.is_plt(target):
            for i in x86flow.MD.disasm(self.elf.read_vaddr(target, 16) or b"", target):
                if i.mnemonic.endswith("jmp") and i.operands and i.operands[0].type == x86flow.X.X86_OP_MEM \
                        and i.reg_name(i.operands[0].mem.base) == "rip":
                    name = self._got_names().get(i.address + i.size + i.operands[0].mem.disp)
                    break
                if i.mnemonic not in ("endbr64",):
                    break
        self._names[target] = name
        return name

    def is_plt(self, target: int) -> bool:
        return any(lo <= target < hi for lo, hi in self._plt)

    def noreturn(self, target: int) -> bool:
        return self.name(target) in x86flow.NORETURN


def _target_named(elf: ElfFile, lib: _Lib, target: int, name: str) -> bool:
    if lib.name(target) == name:
        return True
    sym = elf.lookup([name]).get(name)
    return sym is not None and sym.vaddr == target


def _flow(elf: ElfFile, lib: _Lib, entry: int, rng: tuple[int, int]) -> x86flow.Flow:
    return x86flow.Flow(lambda a, n: elf.read_vaddr(a, n) or b"", entry, rng, noreturn=lib.noreturn)


def _loc(st: x86flow.State, arg: int, nbytes: int, what: str, at: int) -> Loc:
    sp = x86flow.rsp_at(st)
    locs = x86flow.where_arg(st, arg, nbytes, sp)
    if not locs:
        raise _NotProven(f"{what} is not in a register or stack slot on every path to {at:#x}")
    regs = [r for r, _ in locs if r in ("rbx", "rbp", "r12", "r13", "r14", "r15")] + [r for r, _ in locs if r]
    if regs:
        return Loc(regs[0], None, nbytes)
    return Loc(None, locs[0][1], nbytes)


def _calls(flow: x86flow.Flow):
    lo, hi = flow.range
    for a, insn in sorted(flow.insns.items()):
        if insn.kind == "call" and insn.target is not None and a in flow.states:
            yield a, insn, lo <= a < hi


def _site(elf: ElfFile, kind: str, fn: str, entry: int, insn, conn: Loc, typ: Loc | None, peek: Loc | None,
          callee: str) -> CopySite:
    off = elf.vaddr_to_offset(insn.address)
    if off is None:
        raise _NotProven(f"{insn.address:#x} is not in the file")
    return CopySite(kind, insn.address, off, fn, entry, f"call {insn.target:#x} <{callee}>", conn, typ, peek)


# ------------------------------------------------------------------------------------------ the sites
def _read_sites(elf: ElfFile, lib: _Lib, fns) -> tuple[tuple[CopySite, ...], str]:
    entry, rng = fns["ssl3_read_bytes"]
    flow = _flow(elf, lib, entry, rng)
    for j in flow.tail_jumps:
        if _target_named(elf, lib, j.target, "memcpy"):
            raise _NotProven(f"ssl3_read_bytes tail-calls memcpy at {j.address:#x}")
    sites = []
    for a, insn, inside in _calls(flow):
        if not _target_named(elf, lib, insn.target, "memcpy"):
            continue
        st = flow.state_at(a)
        taint = st.get("rdi")[1]
        if 3 not in taint or 0 in taint:
            continue  # not a copy into the caller's buffer (the alert/handshake fragment copies into SSL)
        if not inside:
            raise _NotProven(f"a copy into the caller's buffer at {a:#x} lies outside ssl3_read_bytes' range")
        conn = _loc(st, 0, 8, "the SSL*", a)
        typ = _loc(st, 1, 4, "the record type", a)
        peek = _loc(st, 5, 4, "the peek flag", a)
        sites.append(_site(elf, "read-copy", "ssl3_read_bytes", entry, insn, conn, typ, peek, "memcpy"))
    if not sites:
        raise _NotProven("no memcpy into the caller's buffer found in ssl3_read_bytes")
    where = "; ".join(f"{s.vaddr:#x} (SSL* {s.conn}, type {s.type}, peek {s.peek})" for s in sites)
    return tuple(sites), f"ssl3_read_bytes@{entry:#x} copies application data to the caller's buffer at {where}"


def _do_ssl3_write(elf: ElfFile, lib: _Lib, fns, wflow: x86flow.Flow) -> int:
    if "do_ssl3_write" in fns:
        return fns["do_ssl3_write"][0]
    aentry, arng = fns["ssl3_dispatch_alert"]
    aflow = _flow(elf, lib, aentry, arng)
    mine = {i.target for _, i, inside in _calls(wflow) if inside and not lib.is_plt(i.target)}
    theirs = {i.target for _, i, inside in _calls(aflow) if inside and not lib.is_plt(i.target)}
    both = mine & theirs
    if len(both) != 1:
        raise _NotProven(f"do_ssl3_write not identified: ssl3_write_bytes and ssl3_dispatch_alert share "
                         f"{len(both)} direct callees")
    return both.pop()


def _write_sites(elf: ElfFile, lib: _Lib, fns) -> tuple[tuple[CopySite, ...], str]:
    entry, rng = fns["ssl3_write_bytes"]
    flow = _flow(elf, lib, entry, rng)
    dsw = _do_ssl3_write(elf, lib, fns, flow)
    for j in flow.tail_jumps:
        if j.target == dsw or _target_named(elf, lib, j.target, "EVP_CIPHER_CTX_ctrl"):
            raise _NotProven(f"ssl3_write_bytes tail-calls a record writer at {j.address:#x}")
    sites, ctrl_calls = [], 0
    for a, insn, inside in _calls(flow):
        st = flow.state_at(a)
        if insn.target == dsw:
            if not inside:
                raise _NotProven(f"a do_ssl3_write call at {a:#x} lies outside ssl3_write_bytes' range")
            rdi, rsi, rdx = st.get("rdi"), st.get("rsi"), st.get("rdx")
            if rdi[0] != ("arg", 0, 8) or rsi[0] is None or rsi[0][:2] != ("arg", 1) or rsi[0][2] < 4 \
                    or 2 not in rdx[1]:
                raise _NotProven(f"the do_ssl3_write call at {a:#x} does not pass (SSL*, type, buf) through")
            sites.append(_site(elf, "write-call", "ssl3_write_bytes", entry, insn, Loc("rdi", None, 8),
                               Loc("rsi", None, 4), None, "do_ssl3_write"))
        elif _target_named(elf, lib, insn.target, "EVP_CIPHER_CTX_ctrl"):
            ctrl_calls += 1
            if st.get("rsi")[0] != ("const", MB_ENCRYPT):
                continue
            if not inside:
                raise _NotProven(f"the multi-block encryption at {a:#x} lies outside ssl3_write_bytes' range")
            conn = _loc(st, 0, 8, "the SSL*", a)
            sites.append(_site(elf, "write-mb", "ssl3_write_bytes", entry, insn, conn, None, None,
                               "EVP_CIPHER_CTX_ctrl"))
    calls = [s for s in sites if s.kind == "write-call"]
    mbs = [s for s in sites if s.kind == "write-mb"]
    if not calls:
        raise _NotProven("no do_ssl3_write call found in ssl3_write_bytes")
    if ctrl_calls and not mbs:
        raise _NotProven("ssl3_write_bytes has a multi-block path but its encryption call was not proven")
    why = (f"ssl3_write_bytes@{entry:#x} hands application data to do_ssl3_write@{dsw:#x} at "
           + ", ".join(f"{s.vaddr:#x}" for s in calls)
           + ("; multi-block encryption at " + ", ".join(f"{s.vaddr:#x} (SSL* {s.conn})" for s in mbs) if mbs else ""))
    return tuple(sites), why
