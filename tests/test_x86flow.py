"""x86flow: where arguments are inside a function, on small hand-assembled functions (GNU as, Intel syntax;
the source is beside each byte string). The probe point in each is its `nop`."""

from __future__ import annotations

import pytest

from hdrlog import x86flow
from hdrlog.x86flow import Unsupported, rsp_at, where_arg

BASE = 0x1000


def flow(hexcode: str, noreturn=()):
    code = bytes.fromhex(hexcode)

    def read(addr, n):
        off = addr - BASE
        return code[off:off + n] if 0 <= off < len(code) else b""

    f = x86flow.Flow(read, BASE, (BASE, BASE + len(code)), noreturn=lambda t: t in noreturn)
    nop = next((a for a, i in f.insns.items() if i.mnemonic == "nop"), None)
    return f, (f.state_at(nop) if nop is not None else None)


def locs(st, arg, nbytes=8):
    return where_arg(st, arg, nbytes, rsp_at(st))


def test_a_value_saved_in_the_prologue_survives_a_call_in_callee_saved_registers_and_the_frame():
    # push rbx; mov rbx, rdi; sub rsp, 0x10; mov [rsp+8], esi; mov [rsp], r9d; call .+0x100; nop; ...
    _, st = flow("534889fb4883ec108974240844890c24e8fb000000904883c4105bc3")
    assert locs(st, 0) == [("rbx", None)]  # rdi itself was clobbered by the call
    assert locs(st, 1, 4) == [(None, 8)] and locs(st, 1, 8) == []  # only 4 bytes of esi were stored
    assert locs(st, 5, 4) == [(None, 0)]
    assert st.get("rdi") == x86flow.UNK and rsp_at(st) == -0x18


def test_paths_that_disagree_lose_the_exact_value_but_keep_both_taints():
    # mov rbx, rdi; test esi, esi; je 1f; mov rbx, rdx; 1: nop; ret
    _, st = flow("4889fb85f674034889d390c3")
    assert locs(st, 0) == [("rdi", None)]  # rdi itself is unchanged on both paths
    assert st.get("rbx") == (None, frozenset({0, 2}))


def test_a_call_may_write_a_slot_at_or_above_an_escaped_frame_address_but_not_below():
    # sub rsp, 0x28; mov [rsp], rdi; mov [rsp+0x10], rdi; lea rsi, [rsp+8]; call .+0x100; nop
    _, st = flow("4883ec2848893c2448897c2410488d742408e8fb000000904883c428c3")
    assert locs(st, 0) == [(None, 0)]


def test_a_store_through_an_unknown_pointer_may_hit_the_escaped_region_only():
    # sub rsp, 0x28; mov [rsp], rdi; mov [rsp+0x10], rdi; lea rax, [rsp+8]; mov [rcx], rdx; nop
    _, st = flow("4883ec2848893c2448897c2410488d442408488911904883c428c3")
    assert locs(st, 0) == [("rdi", None), (None, 0)]


def test_rbp_frames_are_followed_as_frame_addresses():
    # push rbp; mov rbp, rsp; sub rsp, 0x20; mov [rbp-8], rdi; call .+0x100; nop; leave; ret
    _, st = flow("554889e54883ec2048897df8e8fb00000090c9c3")
    assert locs(st, 0) == [(None, 0x18)] and rsp_at(st) == -0x28


def test_an_indirect_jump_is_not_analysed():
    # test edi, edi; je 1f; jmp rax; 1: ret
    with pytest.raises(Unsupported, match="indirect jump"):
        flow("85ff7402ffe0c3")


def test_push_pop_32_bit_moves_arithmetic_taint_and_loads():
    # push rdi; pop rbx; mov ebp, esi; lea rax, [rcx+rdx]; mov r12, [rdi+8]; nop; ret
    _, st = flow("575b89f5488d04114c8b670890c3")
    assert ("rbx", None) in locs(st, 0)
    assert ("rbp", None) in locs(st, 1, 4) and ("rbp", None) not in locs(st, 1, 8)
    assert st.get("rax") == (None, frozenset({2, 3}))
    assert st.get("r12") == x86flow.UNK  # a load from memory: nothing known, no taint


def test_a_jump_out_of_the_function_with_its_frame_popped_is_a_tail_call():
    # push rbx; mov rbx, rdi; pop rbx; jmp .+0x200
    f, _ = flow("534889fb5be9fb010000")
    assert [hex(j.target) for j in f.tail_jumps] == [hex(BASE + 5 + 0x200)]


def test_a_call_that_never_returns_ends_the_path():
    # test edi, edi; je 1f; call .+0x300 (noreturn); jmp rax (never reached); 1: ret
    f, _ = flow("85ff7407e8fb020000ffe0c3", noreturn={BASE + 4 + 0x300})
    assert not any(i.kind == "ijmp" for i in f.insns.values())
    with pytest.raises(Unsupported):
        flow("85ff7407e8fb020000ffe0c3")  # the same code when the callee may return


def test_an_argument_overwritten_on_one_path_is_nowhere():
    # push rbx; mov rbx, rdi; test esi, esi; je 1f; mov rbx, [rbx+8]; 1: call .+0x100; nop; pop rbx; ret
    _, st = flow("534889fb85f67404488b5b08e8fb000000905bc3")
    assert locs(st, 0) == []


def test_a_call_overwrites_what_lies_below_rsp():
    # sub rsp, 0x10; mov [rsp], rdi; add rsp, 0x10; call .+0x100; sub rsp, 0x10; nop  (the slot is stale there)
    _, st = flow("4883ec1048893c244883c410e8fb0000004883ec10904883c410c3")
    assert locs(st, 0) == []


def test_rep_stos_may_write_anything_at_or_above_its_escaped_start():
    # sub rsp, 0x40; mov [rsp+0x20], rdi; mov [rsp], rdi; lea rdi, [rsp+0x10]; xor eax, eax; mov ecx, 4;
    # rep stosq; nop  (32 bytes from +0x10 cover +0x20; +0 is below)
    _, st = flow("4883ec4048897c242048893c24488d7c241031c0b904000000f348ab904883c440c3")
    assert locs(st, 0) == [(None, 0)]


def test_an_indexed_frame_address_escapes_from_its_base():
    # sub rsp, 0x40; mov [rsp+0x20], rdi; mov [rsp], rdi; lea rax, [rsp+rcx*8+0x10]; mov [rax], rdx; nop
    _, st = flow("4883ec4048897c242048893c24488d44cc10488910904883c440c3")
    assert locs(st, 0) == [("rdi", None), (None, 0)]
