"""golang.py (Go versions, RET instructions), the Go probe description, and fdsock.py ((pid, fd) -> tuple)."""

from __future__ import annotations

import os
import re
import socket

import pytest

import gobuild
from hdrlog import golang, gopclntab
from hdrlog.elfsyms import ElfFile
from hdrlog.errors import HdrlogError
from hdrlog.events import Attr, Event, Fn, Kind
from hdrlog.fdsock import FdSockets, parse_tcp_table
from hdrlog.loader import probes_dir
from hdrlog.tlslibs import REGISTRY

READ, WRITE, CLOSE = "crypto/tls.(*Conn).Read", "crypto/tls.(*Conn).Write", "crypto/tls.(*Conn).Close"


def test_versions():
    assert golang.parse_version("go1.22.3") == (1, 22, 3)
    assert golang.parse_version("go1.21rc2") == (1, 21, 0)
    assert golang.parse_version("go1.24.3 X:boringcrypto") == (1, 24, 3)
    assert golang.parse_version("devel go1.23-abcdef Mon") == (1, 23, 0)
    assert golang.parse_version(None) is None and golang.parse_version("weird") is None
    assert golang.unsupported_reason("go1.16.15") and "register ABI" in golang.unsupported_reason("go1.16.15")
    assert golang.unsupported_reason("go1.17") is None
    assert golang.unsupported_reason("go1.19.8") is None and golang.unsupported_reason("go1.27.3") is None
    assert golang.unsupported_reason("go (version unknown)") is None


def test_hostile_version_is_escaped_in_the_reason():
    """The version comes from the binary's .go.buildinfo (issue 7): a newline or terminal escape in it must
    not break the one-line sentence nor reach the terminal."""
    why = golang.unsupported_reason("go1.16\n\x1b[2Jhdrlog: attached\r")
    assert why and why.isprintable() and "\\n\\x1b[2J" in why and "register ABI" in why


def test_return_sites_crafted():
    # push rbp; mov rbp,rsp; test eax,eax; je +3; pop rbp; ret; xor eax,eax; pop rbp; ret; int3 padding
    code = bytes.fromhex("55 4889e5 85c0 7402 5d c3 31c0 5d c3 cccccc".replace(" ", ""))
    assert golang.return_sites(code, 0x1000) == [0x1000 + 9, 0x1000 + 13]
    # ret imm16 counts too
    assert golang.return_sites(bytes.fromhex("c20800"), 0x2000) == [0x2000]
    # bytes that do not decode: refuse rather than miss a RET
    with pytest.raises(HdrlogError, match="cannot disassemble"):
        golang.return_sites(bytes.fromhex("55c3") + b"\x0f\xff\xff\xff", 0x3000)


@pytest.fixture(scope="module", params=gobuild.TOOLCHAINS)
def builds(request):
    go = gobuild.toolchain(request.param)
    return str(gobuild.build(go=go)), str(gobuild.build(stripped=True, go=go))


def test_return_offsets_same_from_symtab_and_pclntab(builds):
    full, stripped = builds
    with ElfFile(full) as elf:
        sym = elf.lookup([READ, WRITE, CLOSE], tables=(".symtab",))
        pcl = gopclntab.lookup(elf, [READ, WRITE, CLOSE])
    with ElfFile(stripped) as elf:
        spcl = gopclntab.lookup(elf, [READ, WRITE, CLOSE])
    for name in (READ, WRITE, CLOSE):
        a = golang.return_offsets(full, sym[name])
        b = golang.return_offsets(full, pcl[name])
        c = golang.return_offsets(stripped, spcl[name])
        assert a == b == c and len(a) >= 2, (name, a, b, c)
        with ElfFile(full) as elf:
            assert all(elf.read(o, 1) == b"\xc3" for o in a)
            assert all(sym[name].offset < o < sym[name].offset + sym[name].size for o in a)


def test_read_spills_its_arguments(builds):
    """gotls.bpf.c reads a Read that was in flight at attach time from the spill slots above the return
    address: the prologue must store receiver, buffer and length there (every toolchain we can reach)."""
    paths = [*builds, str(gobuild.build(external=True, stripped=True)), "/usr/bin/caddy",
             "/usr/local/bin/docker", "/usr/lib/google-cloud-sdk/bin/kubectl"]
    seen = 0
    for path in paths:
        if not os.path.exists(path):
            continue
        with ElfFile(path) as elf:
            sym = gopclntab.lookup(elf, [READ])[READ]
            spills = golang.arg_spills(elf.read(sym.offset, 160), sym.vaddr)
        assert {k: spills.get(k) for k in ("rax", "rbx", "rcx")} == {"rax": 8, "rbx": 16, "rcx": 24}, path
        seen += 1
    assert seen >= 3
    # crafted: push rbp; mov rbp,rsp; sub rsp,0x20; mov [rsp+0x30],rax; mov [rsp+0x38],rbx
    code = bytes.fromhex("55 4889e5 4883ec20 4889442430 48895c2438 c3".replace(" ", ""))
    assert golang.arg_spills(code, 0x1000) == {"rax": 8, "rbx": 16}


def test_after_stack_check():
    # cmp rsp,[r14+0x10]; jbe +0x20; push rbp
    code = bytes.fromhex("493b6610 7620 55 4889e5 c3".replace(" ", ""))
    assert golang.after_stack_check(code, 0x1000) == (0x1006, "push rbp")
    # lea r12,[rsp-0x48]; cmp r12,[r14+0x10]; jbe rel32; sub rsp,0xe8
    code = bytes.fromhex("4c8d6424b8 4d3b6610 0f8600010000 4881ece8000000".replace(" ", ""))
    assert golang.after_stack_check(code, 0x2000) == (0x200F, "sub rsp, 0xe8")
    assert golang.after_stack_check(bytes.fromhex("554889e5c3"), 0x3000) is None  # not a Go prologue


def test_caddy_returns():
    caddy = "/usr/bin/caddy"
    if not os.path.exists(caddy):
        pytest.skip("caddy not installed (make setup installs it)")
    with ElfFile(caddy) as elf:
        syms = gopclntab.lookup(elf, [READ, WRITE])
        for s in syms.values():
            offs = golang.return_offsets(caddy, s)
            assert offs and all(elf.read(o, 1) == b"\xc3" for o in offs)
            # go1.19 epilogues restore rbp with a mov and never pop it
            assert all(elf.read(o - 1, 1) != b"\x5d" for o in offs)


def test_go_library_description():
    lib = REGISTRY["go"]
    assert lib.name == "gotls" and lib.probe_file == "gotls.bpf.c"
    by_sym = {u.symbol: u for u in lib.uprobes}
    assert {READ, WRITE, CLOSE} <= set(by_sym)
    assert all(u.ret is None for u in lib.uprobes), "never a uretprobe on Go code"
    assert by_sym[READ].at_returns and by_sym[WRITE].entry and by_sym[CLOSE].entry
    src = (probes_dir() / lib.probe_file).read_text()
    defined = set(re.findall(r"^int (\w+)\(struct pt_regs \*ctx\)", src, re.M))
    named = {f for u in lib.uprobes for f in (u.entry, u.ret, u.at_returns) if f}
    assert named <= defined, named - defined


# ---- fdsock ---------------------------------------------------------------------------------------

TCP_TEXT = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1 0
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 2222 1 0
   2: 0100007F:1F90 0100007F:C351 06 00000000:00000000 03:00000000 00000000     0        0 0 3 0
"""
TCP6_TEXT = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue
   0: 00000000000000000000000001000000:01BB 00000000000000000000000001000000:D431 01 00000000:00000000 00:00000000 00000000     0        0 3333 1 0
   1: 0000000000000000FFFF00000100007F:01BB 0000000000000000FFFF00000100007F:D432 01 00000000:00000000 00:00000000 00000000     0        0 4444 1 0
"""


def test_parse_tcp_tables():
    t = parse_tcp_table(TCP_TEXT, v6=False)
    assert t[2222] == ("127.0.0.1:8080", "127.0.0.1:50000")
    assert t[1111] == ("127.0.0.1:8080", "0.0.0.0:0") and 0 not in t
    t6 = parse_tcp_table(TCP6_TEXT, v6=True)
    assert t6[3333] == ("[::1]:443", "[::1]:54321")
    assert t6[4444] == ("[::ffff:127.0.0.1]:443", "[::ffff:127.0.0.1]:54322")


def _event(**kw) -> Event:
    base = dict(ts_ns=0, conn=0xC000100000, pid=os.getpid(), tid=1, length=3, offset=0, lost=0,
                kind=Kind.DATA, fn=Fn.GO_READ, dir=1, attr=Attr.GO_FD, local=None, peer=None, comm="t",
                fd=-1, data=b"abc")
    base.update(kw)
    return Event(**base)


@pytest.mark.parametrize("family,host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_resolve_real_sockets(family, host):
    """This process's own connected sockets, both ends, through /proc."""
    try:
        srv = socket.socket(family, socket.SOCK_STREAM)
        srv.bind((host, 0))
    except OSError:
        pytest.skip(f"no {host} on this machine")
    srv.listen(1)
    cli = socket.create_connection((host, srv.getsockname()[1]))
    acc, _ = srv.accept()
    fmt = (lambda a: f"{a[0]}:{a[1]}") if family == socket.AF_INET else (lambda a: f"[{a[0]}]:{a[1]}")
    try:
        fds = FdSockets()
        pid = os.getpid()
        assert fds.resolve(pid, cli.fileno(), conn=1) == (fmt(cli.getsockname()), fmt(cli.getpeername()))
        assert fds.resolve(pid, acc.fileno(), conn=2) == (fmt(acc.getsockname()), fmt(acc.getpeername()))
        assert fds.resolve(pid, srv.fileno()) is not None  # a listener resolves too (peer 0:0 / [::]:0)
        r, w = os.pipe()
        assert fds.resolve(pid, r) is None  # not a socket
        os.close(r), os.close(w)
        assert fds.resolve(pid, 65000) is None  # not open
        # the hook fills an fd-only event (of a process of that name), and a close forgets the fd
        with open(f"/proc/{pid}/comm") as f:
            comm = f.read().strip()
        stranger = _event(fd=acc.fileno(), conn=3, comm="not-" + comm)
        fds.on_event(stranger)
        assert stranger.peer is None  # a replayed recording whose PID now names another program
        ev = _event(fd=acc.fileno(), conn=2, comm=comm)
        fds.on_event(ev)
        assert (ev.local, ev.peer) == (fmt(acc.getsockname()), fmt(acc.getpeername()))
        fds.on_event(_event(fd=acc.fileno(), conn=2, kind=Kind.CLOSE, fn=Fn.GO_CLOSE, attr=Attr.NONE))
        assert (pid, acc.fileno()) not in fds._fds
    finally:
        cli.close(), acc.close(), srv.close()


def test_learned_tuples_and_fd_reuse():
    fds = FdSockets(proc="/nonexistent")  # everything must come from events
    pid = 4242
    exact = _event(pid=pid, fd=9, conn=0xA, attr=Attr.IN_CALL, local="10.0.0.1:443", peer="10.0.0.2:5000")
    fds.on_event(exact)
    ev = _event(pid=pid, fd=9, conn=0xA)
    fds.on_event(ev)
    assert (ev.local, ev.peer) == ("10.0.0.1:443", "10.0.0.2:5000")
    # the same fd number for another connection object: the cached tuple is not reused
    other = _event(pid=pid, fd=9, conn=0xB)
    fds.on_event(other)
    assert other.peer is None
    fds.on_event(_event(pid=pid, fd=9, conn=0xA, kind=Kind.CLOSE, attr=Attr.NONE))
    late = _event(pid=pid, fd=9, conn=0xA)
    fds.on_event(late)
    assert late.peer is None
    assert fds.counts["learned"] == 1 and fds.counts["forgotten"] == 1


def test_tracker_uses_fd_tuples():
    """conntrack: a Go event with only an fd gets its tuple and the go-fd attribution."""
    from hdrlog.conntrack import Tracker

    out = []
    tr = Tracker(lambda c, d, m, e: out.append((c, d, m)), lib_of_pid=lambda pid: "gotls")
    pid = 77
    tr.fds._put((pid, 5), 0xC0, ("127.0.0.1:8443", "127.0.0.1:40000"))
    req = b"GET /x HTTP/1.1\r\nHost: a\r\nX-Id: 1\r\n\r\n"
    tr.on_event(_event(pid=pid, fd=5, conn=0xC0, data=req, length=len(req)))
    assert out, "request not parsed"
    conn, direction, msg = out[0]
    assert conn.peer == "127.0.0.1:40000" and conn.attribution == "go-fd" and conn.lib == "gotls"
    assert direction == "in" and msg.method == "GET" and conn.role == "server"
    tr.on_event(_event(pid=pid, fd=5, conn=0xC0, kind=Kind.CLOSE, fn=Fn.GO_CLOSE, attr=Attr.NONE, data=b""))
    assert (pid, 0xC0) not in tr.conns and (pid, 5) not in tr.fds._fds
