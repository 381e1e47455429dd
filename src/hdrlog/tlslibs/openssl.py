"""OpenSSL 1.1/3.x and BoringSSL: dynamically loaded libssl or linked into the executable (node).

Python's ssl module calls only the _ex forms; nginx and node only the plain ones. SSL_do_handshake ties a
connection to its socket before the first read (which OpenSSL may serve from its buffer without a
syscall), and SSL_free ends a connection (SSL* addresses are recycled).
"""

from __future__ import annotations

from hdrlog.tlslibs import InternalGroup, TlsLibrary, Uprobe

# SysV argument registers the entry programs read
_PLAIN = frozenset({"rdi", "rsi"})  # ssl, buf (length comes from the return value)
_EX = frozenset({"rdi", "rsi", "rdx", "rcx"})  # ssl, buf, num, size_t *moved

OPENSSL = TlsLibrary(
    name="openssl",
    probe_file="openssl.bpf.c",
    uprobes=(
        Uprobe("SSL_read", entry="ossl_read_enter", ret="ossl_read_return", reads=_PLAIN, group="read"),
        Uprobe("SSL_read_ex", entry="ossl_read_ex_enter", ret="ossl_read_return", reads=_EX, group="read"),
        Uprobe("SSL_write", entry="ossl_write_enter", ret="ossl_write_return", reads=_PLAIN, group="write"),
        Uprobe("SSL_write_ex", entry="ossl_write_ex_enter", ret="ossl_write_return", reads=_EX, group="write"),
        Uprobe("SSL_do_handshake", entry="ossl_handshake_enter", ret="ossl_handshake_return",
               reads=frozenset({"rdi"})),
        Uprobe("SSL_free", entry="ossl_free_enter", reads=frozenset({"rdi"})),
    ),
    data_symbols=frozenset({"SSL_read", "SSL_read_ex", "SSL_write", "SSL_write_ex"}),
    # OpenSSL 3 (and 1.1.1): SSL_read/SSL_read_ex both call ssl_read_internal(s, buf, num, &readbytes),
    # SSL_write/SSL_write_ex ssl_write_internal(s, buf, num, &written): the _ex programs fit them.
    groups=(
        InternalGroup("read", entry="ossl_read_ex_enter", ret="ossl_read_return"),
        InternalGroup("write", entry="ossl_write_ex_enter", ret="ossl_write_return"),
    ),
    # OpenSSL 3.0/1.1.1's record layer (osslsites.py): one probe per record instead of the read/write groups
    copy_fns=(("read-copy", "ossl_rcopy"), ("write-call", "ossl_wcall"), ("write-mb", "ossl_wmb")),
)
