"""Go crypto/tls (amd64, go1.17+ register ABI): (*Conn).Read, (*Conn).Write, (*Conn).Close, and the entry of
(*Conn).serverHandshake/clientHandshake (to learn the socket of a connection before its first Read).

Read is probed at entry (receiver, buffer) and at every RET instruction (the byte count in RAX), never
with a uretprobe: Go moves goroutine stacks, and a uretprobe's rewritten return address breaks that.
Write is emitted at its entry (receiver, buffer, length). Close ends a connection (Go reuses *tls.Conn
addresses). The symbols come from .symtab, or from .gopclntab in stripped binaries (discover.py); the RET
offsets from golang.py.
"""

from __future__ import annotations

from hdrlog.tlslibs import TlsLibrary, Uprobe

# Go register ABI: receiver, buffer pointer and length in RAX, RBX, RCX; the goroutine's g in R14. The
# entry probes may move (placement.py) to the `jbe` of the stack-growth check that opens every Go function
# (`cmp rsp, [r14+0x10]` is single-stepped, the jcc emulated); morestack re-enters at the top, so the
# probe runs again for the same call, which simply replaces the call's state.
_IO = frozenset({"rax", "rbx", "rcx", "r14"})

GOTLS = TlsLibrary(
    name="gotls",
    probe_file="gotls.bpf.c",
    uprobes=(
        Uprobe("crypto/tls.(*Conn).Read", entry="go_read_enter", at_returns="go_read_return", reads=_IO),
        # emitted at entry, before the bytes reach the socket (the response can never come first), and
        # after the stack check, so a call whose stack grows is not emitted twice
        Uprobe("crypto/tls.(*Conn).Write", entry="go_write_enter", reads=_IO, after_stack_check=True),
        Uprobe("crypto/tls.(*Conn).Close", entry="go_close_enter", reads=frozenset({"rax"})),
        # the socket of a connection whose first Read is served from records the handshake already read
        Uprobe("crypto/tls.(*Conn).serverHandshake", entry="go_handshake_enter", reads=frozenset({"rax", "r14"})),
        Uprobe("crypto/tls.(*Conn).clientHandshake", entry="go_handshake_enter", reads=frozenset({"rax", "r14"})),
    ),
    data_symbols=frozenset({"crypto/tls.(*Conn).Read", "crypto/tls.(*Conn).Write"}),
)
