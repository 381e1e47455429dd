"""OpenSSL 1.1/3.x and BoringSSL: dynamically loaded libssl or linked into the executable (node).

Python's ssl module calls only the _ex forms; nginx and node only the plain ones. SSL_do_handshake ties a
connection to its socket before the first read (which OpenSSL may serve from its buffer without a
syscall), and SSL_free ends a connection (SSL* addresses are recycled).
"""

from __future__ import annotations

from hdrlog.tlslibs import TlsLibrary, Uprobe

OPENSSL = TlsLibrary(
    name="openssl",
    probe_file="openssl.bpf.c",
    uprobes=(
        Uprobe("SSL_read", entry="ossl_read_enter", ret="ossl_read_return"),
        Uprobe("SSL_read_ex", entry="ossl_read_ex_enter", ret="ossl_read_return"),
        Uprobe("SSL_write", entry="ossl_write_enter", ret="ossl_write_return"),
        Uprobe("SSL_write_ex", entry="ossl_write_ex_enter", ret="ossl_write_return"),
        Uprobe("SSL_do_handshake", entry="ossl_handshake_enter", ret="ossl_handshake_return"),
        Uprobe("SSL_free", entry="ossl_free_enter"),
    ),
    data_symbols=frozenset({"SSL_read", "SSL_read_ex", "SSL_write", "SSL_write_ex"}),
)
