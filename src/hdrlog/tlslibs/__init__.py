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
    at_returns: str | None = None  # BPF function run at every RET instruction (Go: never a uretprobe)
    # registers the entry program reads: placement.py only moves a probe where they are intact
    reads: frozenset[str] = frozenset()
    # wrapper group (placement.py): members that call one internal function, probed there instead
    group: str | None = None
    # Go: the entry program must run once per call, so it goes after the stack-growth check (morestack
    # runs the function again from its first instruction); placement.py honours it in every mode
    after_stack_check: bool = False


@dataclass(frozen=True)
class InternalGroup:
    """Functions that are thin wrappers around one internal function with the signature the `entry`
    program expects; placement.py proves the shape from the machine code before using it."""

    name: str
    entry: str  # BPF function at the internal function's entry
    ret: str  # BPF function at its return


@dataclass(frozen=True)
class TlsLibrary:
    name: str  # the "lib" field of records
    probe_file: str  # file in probes/ with the BPF functions, compiled after common.bpf.c
    uprobes: tuple[Uprobe, ...]
    # at least one of these symbols must be found, or the target is not usable
    data_symbols: frozenset[str]
    groups: tuple[InternalGroup, ...] = ()
    # (copy-site kind (osslsites.CopySite.kind), BPF function) pairs; empty: the library has none
    copy_fns: tuple[tuple[str, str], ...] = ()

    def group(self, name: str) -> InternalGroup:
        return next(g for g in self.groups if g.name == name)


from hdrlog.tlslibs.gotls import GOTLS  # noqa: E402
from hdrlog.tlslibs.openssl import OPENSSL  # noqa: E402

REGISTRY: dict[str, TlsLibrary] = {
    "openssl": OPENSSL,
    "openssl-static": OPENSSL,
    "boringssl": OPENSSL,
    "go": GOTLS,
}
