"""Where a function's arguments are at an instruction inside it: a small sound abstract interpreter over x86-64
machine code (capstone), for probes placed on an instruction in the middle of a function instead of at its entry.

A probe on the `call memcpy` that copies decrypted data to SSL_read's buffer fires once per record, and never
for a read that finds nothing (nginx's second SSL_read per request); but there the SSL* and the other arguments
are wherever the compiler left them. This module follows every path from the function's entry to that
instruction and tells, for each incoming argument register (rdi, rsi, rdx, rcx, r8, r9 = argument 0..5), the
registers and stack slots that hold its value there *on every path* (a must-analysis: paths that disagree lose
it), plus, for each register, which arguments its value was computed from (a may-analysis, "taint").

Values: an argument's value (with how many low bytes still hold it), a constant, or an address in the frame
(entry rsp + delta, which is how rbp frames and push/pop are followed); anything else is unknown. Memory: only
stack slots (offset from the entry rsp) are tracked. Soundness rules:
- a call clobbers rax, rcx, rdx, rsi, rdi, r8-r11; callee-saved registers and the frame survive it;
- an address in the frame that reaches any register but rsp "escapes"; a call, a store through a pointer that
  is not a known frame address, or a string instruction may then write anything at or above the lowest escaped
  address (C objects extend upward from their address), so slots overlapping that region are forgotten;
- a store to the frame at an unknown offset forgets every slot; an rsp that becomes unknown (e.g. `and rsp,-16`)
  makes its accesses unknown;
- an indirect jump, an instruction whose written registers capstone cannot tell, or more code than MAX_INSNS:
  :class:`Unsupported`, with the reason. The caller then keeps its probes at function boundaries.
Direct jumps are followed wherever they go (cold parts of a function live elsewhere), except a jump made with the
whole frame popped (rsp back at its entry value) out of the function's range: a tail call, which ends the path.
"""

from __future__ import annotations

import capstone
from capstone import x86_const as X

ARG_REGS = ("rdi", "rsi", "rdx", "rcx", "r8", "r9")
CALLER_SAVED = ("rax", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11")
MAX_INSNS = 20_000
NORETURN = frozenset({"__stack_chk_fail", "abort", "exit", "_exit", "__assert_fail", "OPENSSL_die",
                      "_Unwind_Resume", "__cxa_throw", "__fortify_fail", "__chk_fail"})

MD = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
MD.detail = True

# register name -> its 64-bit register
FULL: dict[str, str] = {}
for _full, _subs in {
    "rax": ("eax", "ax", "al", "ah"), "rbx": ("ebx", "bx", "bl", "bh"), "rcx": ("ecx", "cx", "cl", "ch"),
    "rdx": ("edx", "dx", "dl", "dh"), "rsi": ("esi", "si", "sil"), "rdi": ("edi", "di", "dil"),
    "rbp": ("ebp", "bp", "bpl"), "rsp": ("esp", "sp", "spl"),
    **{f"r{i}": (f"r{i}d", f"r{i}w", f"r{i}b") for i in range(8, 16)},
}.items():
    FULL[_full] = _full
    for _s in _subs:
        FULL[_s] = _full
GPRS = frozenset(FULL.values())


class Unsupported(Exception):
    """The code cannot be analysed soundly; str() says why."""


# A value is (exact, taint): exact is None, ("arg", i, nbytes), ("const", c) or ("sp", delta); taint a frozenset
# of argument indices it was computed from.
_E = frozenset()
UNK = (None, _E)


def _narrow(v, nbytes: int):
    """The value as seen through its low `nbytes` bytes (a 4-byte register write zero-extends: still exact)."""
    ex, t = v
    if ex is None:
        return v
    if ex[0] == "arg":
        return (("arg", ex[1], min(ex[2], nbytes)), t)
    if ex[0] == "const":
        return (("const", ex[1] & ((1 << (8 * nbytes)) - 1)), t) if nbytes < 8 else v
    return v if nbytes == 8 else (None, t)  # a frame address is only exact as 8 bytes


def _join(a, b):
    if a == b:
        return a
    return (a[0] if a[0] == b[0] else None, a[1] | b[1])


class State:
    __slots__ = ("regs", "slots")

    def __init__(self, regs: dict, slots: dict) -> None:
        self.regs = regs  # 64-bit register -> value (absent: unknown, no taint)
        self.slots = slots  # frame offset -> (nbytes, value)

    def copy(self) -> State:
        return State(dict(self.regs), dict(self.slots))

    def get(self, reg: str):
        return self.regs.get(reg, UNK)

    def join(self, other: State) -> bool:
        """Join `other` into self; True if self changed."""
        changed = False
        for r in set(self.regs) | set(other.regs):
            a, b = self.regs.get(r, UNK), other.regs.get(r, UNK)
            j = _join(a, b)
            if j != a:
                self.regs[r] = j
                changed = True
        for off, mine in list(self.slots.items()):
            theirs = other.slots.get(off)
            if theirs == mine:
                continue
            changed = True
            if theirs is None or theirs[0] != mine[0]:
                del self.slots[off]  # not the same slot on both paths: nothing is known of it
            else:  # the same slot: exact only where both paths agree, tainted by either
                self.slots[off] = (mine[0], _join(mine[1], theirs[1]))
        return changed

    def kill_from(self, lowest: int | None) -> None:
        """Forget slots overlapping [lowest, +inf) (None: nothing escaped)."""
        if lowest is None:
            return
        for off in [o for o, (n, _) in self.slots.items() if o + n > lowest]:
            del self.slots[off]

    def store(self, off: int, nbytes: int, v) -> None:
        for o in [o for o, (n, _) in self.slots.items() if o < off + nbytes and off < o + n]:
            del self.slots[o]
        self.slots[off] = (nbytes, _narrow(v, nbytes))

    def load(self, off: int, nbytes: int):
        s = self.slots.get(off)
        if s is None or s[0] < nbytes:
            return UNK
        return _narrow(s[1], nbytes)


class Insn:
    """What the interpreter needs of one instruction, decoded once."""

    __slots__ = ("address", "size", "mnemonic", "text", "ops", "reads", "writes", "target", "kind")

    def __init__(self, ci) -> None:
        self.address, self.size, self.mnemonic = ci.address, ci.size, ci.mnemonic
        self.text = f"{ci.mnemonic} {ci.op_str}".strip()
        ops = []
        for op in ci.operands:
            if op.type == X.X86_OP_REG:
                ops.append(("reg", ci.reg_name(op.reg), op.size, op.access))
            elif op.type == X.X86_OP_IMM:
                ops.append(("imm", op.imm, op.size, op.access))
            elif op.type == X.X86_OP_MEM:
                m = op.mem
                ops.append(("mem", (ci.reg_name(m.base) if m.base else None, ci.reg_name(m.index) if m.index else None,
                                    m.scale, m.disp, ci.reg_name(m.segment) if m.segment else None), op.size, op.access))
        self.ops = ops
        try:
            rd, wr = ci.regs_access()
        except capstone.CsError as e:
            raise Unsupported(f"capstone cannot tell the registers of {self.text} at {ci.address:#x}") from e
        self.reads = {FULL.get(ci.reg_name(r), ci.reg_name(r)) for r in rd}
        self.writes = {FULL.get(ci.reg_name(r), ci.reg_name(r)) for r in wr}
        self.target = None
        m = ci.mnemonic
        if ci.group(capstone.CS_GRP_RET) or m in ("ud2", "hlt", "int3"):
            self.kind = "end"
        elif ci.group(capstone.CS_GRP_CALL):
            self.kind = "call"
            if ops and ops[0][0] == "imm":
                self.target = ops[0][1]
        elif ci.group(capstone.CS_GRP_JUMP):
            self.kind = "jmp" if m in ("jmp", "bnd jmp", "notrack jmp") else "jcc"
            if ops and ops[0][0] == "imm":
                self.target = ops[0][1]
            elif self.kind == "jmp":
                self.kind = "ijmp"
            else:
                raise Unsupported(f"unexpected indirect conditional jump at {ci.address:#x}")
        else:
            self.kind = "op"


class Flow:
    """The analysis of one function: `state_at(vaddr)` is the abstract state just before that instruction."""

    def __init__(self, read, entry: int, rng: tuple[int, int], *, noreturn=lambda t: False) -> None:
        self.entry, self.range = entry, rng
        self.read, self.noreturn = read, noreturn
        self.insns: dict[int, Insn] = {}  # decoded as the fixpoint reaches them (a tail call's target never is)
        self.lowest_escaped: int | None = None
        self.tail_jumps: list[Insn] = []  # jumps that leave the function with the frame popped
        for _ in range(8):  # restarted when a lower escaped address shows up (monotone: few rounds)
            before = self.lowest_escaped
            self._run()
            if self.lowest_escaped == before:
                return
        raise Unsupported("escaped frame addresses did not settle")

    # -- fixpoint over the instructions, in a worklist of addresses
    def _run(self) -> None:
        regs = {r: (("arg", i, 8), frozenset({i})) for i, r in enumerate(ARG_REGS)}
        regs["rsp"] = (("sp", 0), _E)
        self.states: dict[int, State] = {self.entry: State(regs, {})}
        self.tail_jumps = []
        todo = [self.entry]
        queued = {self.entry}
        while todo:
            addr = todo.pop()
            queued.discard(addr)
            st = self.states[addr].copy()
            insn = self.insns.get(addr) or self._decode(addr)
            succ = self._step(insn, st)
            for nxt in succ:
                cur = self.states.get(nxt)
                if cur is None:
                    self.states[nxt] = st.copy() if len(succ) > 1 else st
                elif not cur.join(st):
                    continue
                if nxt not in queued:
                    queued.add(nxt)
                    todo.append(nxt)

    def _decode(self, addr: int) -> Insn:
        code = self.read(addr, 16)
        ci = next(MD.disasm(code, addr, 1), None) if code else None
        if ci is None:
            raise Unsupported(f"cannot decode the instruction at {addr:#x}")
        insn = self.insns[addr] = Insn(ci)
        if len(self.insns) > MAX_INSNS:
            raise Unsupported(f"more than {MAX_INSNS} instructions reachable from {self.entry:#x}")
        if insn.kind == "ijmp":
            raise Unsupported(f"indirect jump `{insn.text}` at {addr:#x}")
        return insn

    def state_at(self, vaddr: int) -> State | None:
        return self.states.get(vaddr)

    def _escape(self, v) -> None:
        ex = v[0]
        if ex is not None and ex[0] == "sp" and (self.lowest_escaped is None or ex[1] < self.lowest_escaped):
            self.lowest_escaped = ex[1]

    # -- operand helpers
    def _addr(self, st: State, mem):
        """('stack', offset) | ('stack?', lowest offset) | ('other', _E) for a memory operand."""
        base, index, scale, disp, seg = mem
        if seg in ("fs", "gs") or base == "rip":
            return ("other", _E)
        b = st.get(FULL.get(base, base)) if base else (("const", 0), _E)
        if index is None and b[0] is not None and b[0][0] == "sp":
            return ("stack", b[0][1] + disp)
        if b[0] is not None and b[0][0] == "sp":
            return ("stack?", b[0][1] + disp)  # indexed from a frame object: within it, i.e. at or above it
        return ("other", _E)

    def _read(self, st: State, op):
        kind, val, size, _ = op
        if kind == "reg":
            return _narrow(st.get(FULL[val]), size) if val in FULL else UNK
        if kind == "imm":
            return (("const", val & ((1 << 64) - 1)), _E)
        where = self._addr(st, val)
        return st.load(where[1], size) if where[0] == "stack" else UNK  # a load from elsewhere: fresh, no taint

    def _write_reg(self, st: State, name: str, size: int, v) -> None:
        full = FULL[name]
        if size >= 4:
            v = _narrow(v, size)
        else:  # a partial write merges into the old value
            old = st.get(full)
            v = (None, old[1] | v[1])
        st.regs[full] = v
        if full != "rsp":
            self._escape(v)

    def _write_mem(self, st: State, mem, size: int, v) -> None:
        self._escape(v)
        where = self._addr(st, mem)
        if where[0] == "stack":
            st.store(where[1], size, v)
        elif where[0] == "stack?":
            st.kill_from(where[1])
        else:
            st.kill_from(self.lowest_escaped)

    def _rsp(self, st: State) -> int | None:
        ex = st.get("rsp")[0]
        return ex[1] if ex is not None and ex[0] == "sp" else None

    # -- one instruction
    def _step(self, insn: Insn, st: State) -> list[int]:
        nxt = insn.address + insn.size
        m, ops = insn.mnemonic, insn.ops
        k = insn.kind
        if k == "end":
            return []
        if k == "jmp":
            t = insn.target
            if not (self.range[0] <= t < self.range[1]) and self._rsp(st) == 0:
                self.tail_jumps.append(insn)
                return []
            return [t]
        if k == "jcc":
            return [insn.target, nxt]
        if k == "call":
            for r in CALLER_SAVED:
                st.regs[r] = UNK
            st.kill_from(self.lowest_escaped)
            sp = self._rsp(st)  # the callee's frame (and its return address) goes below rsp: nothing there survives
            for off in [o for o in st.slots if sp is None or o < sp]:
                del st.slots[off]
            if insn.target is not None and self.noreturn(insn.target):
                return []
            return [nxt]
        self._op(insn, st, m, ops)
        return [nxt]

    def _op(self, insn: Insn, st: State, m: str, ops) -> None:
        sp = self._rsp(st)
        if m == "push" and len(ops) == 1:
            v = self._read(st, ops[0])
            self._escape(v)
            st.regs["rsp"] = ((("sp", sp - 8), _E) if sp is not None else UNK)
            if sp is not None:
                st.store(sp - 8, 8, v)
            else:
                st.slots.clear()
            return
        if m == "pop" and len(ops) == 1 and ops[0][0] == "reg":
            v = st.load(sp, 8) if sp is not None else UNK
            st.regs["rsp"] = ((("sp", sp + 8), _E) if sp is not None else UNK)
            self._write_reg(st, ops[0][1], ops[0][2], v)
            return
        if m == "leave":
            fp = st.get("rbp")[0]
            if fp is not None and fp[0] == "sp":
                st.regs["rbp"] = st.load(fp[1], 8)
                st.regs["rsp"] = (("sp", fp[1] + 8), _E)
            else:
                st.regs["rbp"] = st.regs["rsp"] = UNK
            return
        if m in ("mov", "movabs") and len(ops) == 2:
            dst, src = ops
            v = self._read(st, src)
            if dst[0] == "reg" and dst[1] in FULL:
                self._write_reg(st, dst[1], dst[2], v)
                return
            if dst[0] == "mem":
                self._write_mem(st, dst[1], dst[2], v)
                return
        if m == "lea" and len(ops) == 2 and ops[0][0] == "reg" and ops[0][1] in FULL:
            base, index, scale, disp, seg = ops[1][1]
            b = st.get(FULL[base]) if base in FULL else UNK
            i = st.get(FULL[index]) if index in FULL else UNK
            ex = None
            if base == "rip":
                ex = ("const", insn.address + insn.size + disp)
            elif base in FULL and index is None and b[0] is not None and b[0][0] in ("sp", "const"):
                ex = (b[0][0], b[0][1] + disp)
            elif b[0] is not None and b[0][0] == "sp":  # into a frame object, at an index: it escapes from there
                self._escape(((("sp", b[0][1] + disp)), _E))
            self._write_reg(st, ops[0][1], ops[0][2], (ex, b[1] | i[1]))
            return
        if m in ("xor", "sub") and len(ops) == 2 and ops[0][0] == ops[1][0] == "reg" and ops[0][1] == ops[1][1]:
            self._write_reg(st, ops[0][1], ops[0][2], (("const", 0), _E))
            return
        if m in ("sub", "add") and len(ops) == 2 and ops[0][0] == "reg" and FULL.get(ops[0][1]) == "rsp" \
                and ops[1][0] == "imm":
            st.regs["rsp"] = ((("sp", sp + (ops[1][1] if m == "add" else -ops[1][1])), _E) if sp is not None else UNK)
            return
        self._generic(insn, st, ops)

    def _generic(self, insn: Insn, st: State, ops) -> None:
        """Written registers become unknown, tainted by the registers the instruction reads as values (not as
        addresses); a memory destination is written with that unknown value."""
        addr_regs = set()
        for op in ops:
            if op[0] == "mem":
                addr_regs.update(FULL.get(r, r) for r in op[1][:2] if r)
        taint = _E
        for r in insn.reads:
            if r in GPRS and r != "rsp" and r not in addr_regs:
                taint = taint | st.get(r)[1]
        for op in ops:  # a register used both as value and address still taints through its value operand;
            # a frame slot read as a value taints with what it holds
            if op[0] == "reg" and op[3] & capstone.CS_AC_READ and op[1] in FULL:
                taint = taint | st.get(FULL[op[1]])[1]
            elif op[0] == "mem" and op[3] & capstone.CS_AC_READ:
                taint = taint | self._read(st, op)[1]
        v = (None, taint)
        for r in insn.writes:
            if r == "rsp":
                st.regs["rsp"] = UNK
            elif r in GPRS:
                st.regs[r] = v
        if insn.mnemonic.startswith("rep"):
            # rep stos/movs: rcx elements from rdi, which can only point into the frame at or above an escaped
            # address (a frame address in rdi escaped when it got there); without rep, one store like any other
            st.kill_from(self.lowest_escaped)
            return
        for op in ops:
            if op[0] == "mem" and op[3] & capstone.CS_AC_WRITE:
                self._write_mem(st, op[1], op[2], v)


# ---------------------------------------------------------------------------------- what a state says
def where_arg(st: State, i: int, nbytes: int, sp_at: int | None) -> list[tuple[str | None, int | None]]:
    """Locations holding at least `nbytes` low bytes of argument `i`: ("reg", None) or (None, rsp offset)."""
    out: list[tuple[str | None, int | None]] = []
    for r, (ex, _) in st.regs.items():
        if ex is not None and ex[0] == "arg" and ex[1] == i and ex[2] >= nbytes and r != "rsp":
            out.append((r, None))
    if sp_at is not None:
        for off, (n, (ex, _)) in sorted(st.slots.items()):
            if ex is not None and ex[0] == "arg" and ex[1] == i and ex[2] >= nbytes and n >= nbytes and off >= sp_at:
                out.append((None, off - sp_at))
    return out


def rsp_at(st: State) -> int | None:
    ex = st.get("rsp")[0]
    return ex[1] if ex is not None and ex[0] == "sp" else None
