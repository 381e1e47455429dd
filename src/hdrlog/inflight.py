"""Threads already inside a blocking socket read when hdrlog attaches.

A uprobe sees a call only from its entry (and a uretprobe fires only for calls whose entry it saw), so a
thread blocked in SSL_read on an idle keep-alive connection (thread-per-connection servers such as Python's
http.server) returns its next request unseen; that request's response is then recorded with
"request": null. This module finds such threads from /proc/PID/task/*/syscall so the loss is reported,
not silent.
"""

from __future__ import annotations

import os

# x86-64 syscall numbers of the socket reads a socket BIO blocks in
_READS = {0: "read", 17: "pread64", 19: "readv", 45: "recvfrom", 47: "recvmsg", 299: "recvmmsg"}


def blocked_socket_reads(pid: int, proc: str = "/proc") -> list[tuple[int, int]]:
    """(tid, fd) of every thread of pid blocked in a read-like syscall on a socket."""
    out = []
    try:
        tids = os.listdir(f"{proc}/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"{proc}/{pid}/task/{tid}/syscall") as f:
                fields = f.read().split()
        except OSError:
            continue
        if len(fields) < 2 or not fields[0].isdigit() or int(fields[0]) not in _READS:
            continue
        fd = int(fields[1], 16)
        try:
            if os.readlink(f"{proc}/{pid}/fd/{fd}").startswith("socket:"):
                out.append((int(tid), fd))
        except OSError:
            continue
    return sorted(out)
