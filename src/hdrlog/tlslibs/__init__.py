"""TLS libraries hdrlog can probe: each module describes its uprobes as data; loader.py attaches them.

REGISTRY maps a discovered target kind (discover.TlsTarget.kind) to its library description.
tests/test_tlslibs.py checks every entry against the BPF functions in probes/.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Uprobe:
    """One function to probe: its symbol and the BPF functions run at its entry and/or return."""

    symbol: str
    entry: str | None = None  # BPF function run at the first instruction
    ret: str | None = None  # BPF function run at return (uretprobe)


@dataclass(frozen=True)
class TlsLibrary:
    name: str  # the "lib" field of records
    probe_file: str  # file in probes/ with the BPF functions, compiled after common.bpf.c
    uprobes: tuple[Uprobe, ...]
    # at least one of these symbols must be found, or the target is not usable
    data_symbols: frozenset[str]


from hdrlog.tlslibs.openssl import OPENSSL  # noqa: E402

REGISTRY: dict[str, TlsLibrary] = {
    "openssl": OPENSSL,
    "openssl-static": OPENSSL,
    "boringssl": OPENSSL,
}
