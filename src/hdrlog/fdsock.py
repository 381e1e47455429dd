"""(pid, fd) → TCP tuple, for events whose probe knew the connection's fd but saw no socket I/O (Go).

An fd is resolved through /proc/PID/fd/FD ("socket:[INODE]") and the TCP tables of the process's network
namespace, /proc/PID/net/tcp and tcp6 (re-read only when an inode is not in the last copy). Results are
cached per (pid, fd) together with the connection (TLS object address) they were found for:

* events that carry both an fd and an exact tuple (socket I/O seen inside the call) fill the cache
  without any /proc read;
* a Close event drops the fd (the number is handed to the next socket the process opens), and so does
  the same fd turning up for another connection object (a close hdrlog did not see).

Addresses are formatted as events.format_addr does ("127.0.0.1:443", "[::1]:443"), so a tuple from here
and one from the kernel compare equal.
"""

from __future__ import annotations

import os
import socket
from collections import OrderedDict

from hdrlog.events import Attr, Event, Kind

__all__ = ["FdSockets", "parse_tcp_table"]

Tuple = tuple[str, str]  # (local, peer)


def _addr(hexaddr: str, v6: bool) -> str | None:
    try:
        host, port = hexaddr.split(":")
        raw = bytes.fromhex(host)
        port_n = int(port, 16)
    except ValueError:
        return None
    if v6:
        if len(raw) != 16:
            return None
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))  # four host-order words
        return f"[{socket.inet_ntop(socket.AF_INET6, raw)}]:{port_n}"
    if len(raw) != 4:
        return None
    return f"{socket.inet_ntop(socket.AF_INET, raw[::-1])}:{port_n}"


def parse_tcp_table(text: str, v6: bool) -> dict[int, Tuple]:
    """{inode: (local, peer)} from the text of /proc/net/tcp or tcp6."""
    out: dict[int, Tuple] = {}
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 10:
            continue
        try:
            inode = int(f[9])
        except ValueError:
            continue
        if inode == 0:
            continue  # TIME_WAIT and friends: no socket any more
        local, peer = _addr(f[1], v6), _addr(f[2], v6)
        if local and peer:
            out[inode] = (local, peer)
    return out


class FdSockets:
    def __init__(self, proc: str = "/proc", max_entries: int = 65536):
        self.proc = proc
        self.max_entries = max_entries
        self._fds: OrderedDict[tuple[int, int], tuple[int, Tuple | None]] = OrderedDict()  # -> (conn, tuple)
        self._tables: dict[int, dict[int, Tuple]] = {}  # pid -> inode -> tuple (last read)
        self.counts = {"learned": 0, "resolved": 0, "unresolved": 0, "table_reads": 0, "forgotten": 0}

    # -- the consumer's hook -----------------------------------------------------------------------
    def on_event(self, ev: Event) -> None:
        """Learn from, or complete, one event that carries an fd (ev.fd >= 0)."""
        key = (ev.pid, ev.fd)
        if ev.kind == Kind.CLOSE:
            if self._fds.pop(key, None) is not None:
                self.counts["forgotten"] += 1
            return
        if ev.peer is not None:
            hit = self._fds.get(key)
            if hit is None or hit[0] != ev.conn:
                self._put(key, ev.conn, (ev.local, ev.peer))
                self.counts["learned"] += 1
            return
        if ev.attr == Attr.GO_FD:
            t = self.resolve(ev.pid, ev.fd, ev.conn, comm=ev.comm)
            if t is not None:
                ev.local, ev.peer = t

    # -- lookups ------------------------------------------------------------------------------------
    def resolve(self, pid: int, fd: int, conn: int = 0, comm: str | None = None) -> Tuple | None:
        """(local, peer) of TCP socket `fd` of `pid`, or None (not a TCP socket, or already closed).
        With `comm`, /proc is only believed while the process there still has that name (events replayed
        from a recording may name a PID that now belongs to another program)."""
        key = (pid, fd)
        hit = self._fds.get(key)
        if hit is not None and (hit[0] == conn or not conn):
            self._fds.move_to_end(key)
            return hit[1]
        if comm is not None and not self._same_comm(pid, comm):
            self.counts["unresolved"] += 1
            return None
        t = self._from_proc(pid, fd)
        self.counts["resolved" if t else "unresolved"] += 1
        if t is not None:
            self._put(key, conn, t)
        return t

    def _same_comm(self, pid: int, comm: str) -> bool:
        try:
            with open(f"{self.proc}/{pid}/comm", encoding="utf-8", errors="replace") as f:
                return f.read().rstrip("\n")[:15] == comm[:15]
        except OSError:
            return False

    def forget_pid(self, pid: int) -> None:
        self._tables.pop(pid, None)
        for k in [k for k in self._fds if k[0] == pid]:
            del self._fds[k]

    def _put(self, key: tuple[int, int], conn: int, t: Tuple) -> None:
        self._fds[key] = (conn, t)
        self._fds.move_to_end(key)
        while len(self._fds) > self.max_entries:
            self._fds.popitem(last=False)

    def _inode(self, pid: int, fd: int) -> int | None:
        try:
            link = os.readlink(f"{self.proc}/{pid}/fd/{fd}")
        except OSError:
            return None
        if not link.startswith("socket:["):
            return None
        try:
            return int(link[8:-1])
        except ValueError:
            return None

    def _from_proc(self, pid: int, fd: int) -> Tuple | None:
        inode = self._inode(pid, fd)
        if inode is None:
            return None
        table = self._tables.get(pid)
        if table is None or inode not in table:
            table = self._read_tables(pid)
            if table is None:
                return None
        return table.get(inode)

    def _read_tables(self, pid: int) -> dict[int, Tuple] | None:
        table: dict[int, Tuple] = {}
        ok = False
        for name, v6 in (("tcp", False), ("tcp6", True)):
            try:
                with open(f"{self.proc}/{pid}/net/{name}", encoding="ascii", errors="replace") as f:
                    table.update(parse_tcp_table(f.read(), v6))
                ok = True
            except OSError:
                continue
        self.counts["table_reads"] += 1
        if not ok:
            return None
        if len(self._tables) > 256:
            self._tables.clear()
        self._tables[pid] = table
        return table
