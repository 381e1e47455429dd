"""Go crypto/tls (amd64, go1.17+ register ABI): (*Conn).Read, (*Conn).Write, (*Conn).Close.

Read and Write are probed at entry (receiver, buffer, length) and at every RET instruction (the byte count
in RAX), never with a uretprobe: Go moves goroutine stacks, and a uretprobe's rewritten return address
breaks that. Close ends a connection (Go reuses *tls.Conn addresses). The symbols come from .symtab, or
from .gopclntab in stripped binaries (discover.py); the RET offsets from golang.py.
"""

from __future__ import annotations

from hdrlog.tlslibs import TlsLibrary, Uprobe

GOTLS = TlsLibrary(
    name="gotls",
    probe_file="gotls.bpf.c",
    uprobes=(
        Uprobe("crypto/tls.(*Conn).Read", entry="go_read_enter", at_returns="go_read_return"),
        Uprobe("crypto/tls.(*Conn).Write", entry="go_write_enter", at_returns="go_write_return"),
        Uprobe("crypto/tls.(*Conn).Close", entry="go_close_enter"),
    ),
    data_symbols=frozenset({"crypto/tls.(*Conn).Read", "crypto/tls.(*Conn).Write"}),
)
