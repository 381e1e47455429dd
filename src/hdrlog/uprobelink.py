"""Uprobes attached without tracefs: BPF uprobe_multi links, or uprobe perf events on older kernels.

**Links** (BPF_LINK_CREATE with attach type BPF_TRACE_UPROBE_MULTI, Linux 6.6+): one link carries every
offset one program has in one file for one process, entry or return. Closing its fd makes the kernel
unregister all those uprobes behind a single synchronisation (a perf event per uprobe pays one each, ~0.1 s
on the reference VM). A program attached this way must be loaded with expected_attach_type
BPF_TRACE_UPROBE_MULTI (bcc: ``load_func(name, BPF.KPROBE, attach_type=BPF_TRACE_UPROBE_MULTI)``).

**Perf events** (the fallback where the kernel has no uprobe_multi): perf_event_open on the uprobe PMU,
one fd per offset, the program set with PERF_EVENT_IOC_SET_BPF. Unlike bcc's bpf_attach_uprobe, this never
falls back to writing tracefs uprobe_events, so nothing can outlive the process.

Either way a probe is only a file descriptor: when hdrlog exits, even by SIGKILL, the kernel removes it.
Numbers and layouts are the kernel's UAPI (checked against /sys/kernel/btf/vmlinux by test_uprobelink.py).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
import threading
import time

from hdrlog.errors import HdrlogError

_SYS_BPF = {"x86_64": 321, "aarch64": 280}
_SYS_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241}

BPF_PROG_LOAD = 5
BPF_LINK_CREATE = 28
BPF_PROG_TYPE_KPROBE = 2
BPF_TRACE_UPROBE_MULTI = 48  # enum bpf_attach_type
BPF_PERF_EVENT = 41  # enum bpf_attach_type: a BPF link on a perf event (carries a cookie)
BPF_F_UPROBE_MULTI_RETURN = 1
ATTR_SIZE = 64  # union bpf_attr up to the end of link_create.uprobe_multi (pid at byte 56)

UPROBE_PMU = "/sys/bus/event_source/devices/uprobe"
PERF_FLAG_FD_CLOEXEC = 8
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_SET_BPF = 0x40042408
PERF_ATTR_SIZE = 112  # PERF_ATTR_SIZE_VER5: config1/config2 (path, offset) are in it

MODES = ("multi", "perf")
MODE_ENV = "HDRLOG_UPROBE_MODE"  # "multi" | "perf": force one (the tests run both); default: the best one

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong]


def _syscall(table: dict, *args) -> tuple[int, int]:
    nr = table.get(platform.machine())
    if nr is None:
        raise HdrlogError(f"hdrlog does not know the system call numbers of {platform.machine()}.")
    ctypes.set_errno(0)
    r = _libc.syscall(ctypes.c_long(nr), *args)
    return r, ctypes.get_errno() if r < 0 else 0


def _bpf(cmd: int, attr) -> tuple[int, int]:
    return _syscall(_SYS_BPF, ctypes.c_long(cmd), attr, ctypes.c_long(ctypes.sizeof(attr)))


def _ename(e: int) -> str:
    return f"{errno.errorcode.get(e, e)}: {os.strerror(e)}"


# -------------------------------------------------------------------------------------------- links
def attach_multi(prog_fd: int, path: str, offsets: list[int], pid: int, retprobe: bool,
                 ref_ctr_offsets: list[int] | None = None, cookies: list[int] | None = None) -> int:
    """One uprobe_multi link for `offsets` (file offsets) in `path`, firing only in process `pid`; its fd.
    `cookies`: each offset's BPF cookie (bpf_get_attach_cookie), else 0.
    hdrlog never passes `ref_ctr_offsets` (USDT semaphores); tests use them to make a conflicting uprobe."""
    if not offsets:
        raise ValueError("no offsets")
    bpath = ctypes.create_string_buffer(os.fsencode(path))
    offs = (ctypes.c_uint64 * len(offsets))(*offsets)
    refs = (ctypes.c_uint64 * len(offsets))(*ref_ctr_offsets) if ref_ctr_offsets else None
    cks = (ctypes.c_uint64 * len(offsets))(*cookies) if cookies and any(cookies) else None
    attr = ctypes.create_string_buffer(ATTR_SIZE)
    struct.pack_into("<IIII", attr, 0, prog_fd, 0, BPF_TRACE_UPROBE_MULTI, 0)
    struct.pack_into("<QQQQIII", attr, 16, ctypes.addressof(bpath), ctypes.addressof(offs),
                     ctypes.addressof(refs) if refs is not None else 0, ctypes.addressof(cks) if cks is not None else 0,
                     len(offsets), BPF_F_UPROBE_MULTI_RETURN if retprobe else 0, pid)
    fd, e = _bpf(BPF_LINK_CREATE, attr)
    if fd < 0:
        raise _attach_error(e, path, offsets, pid, "BPF uprobe_multi link")
    return fd


class AttachError(HdrlogError):
    """The kernel refused a probe; `errno` says why (EINVAL: this offset, see loader's retry at entries)."""

    def __init__(self, msg: str, err: int):
        super().__init__(msg)
        self.errno = err


def _attach_error(e: int, path: str, offsets: list[int], pid: int, what: str) -> AttachError:
    where = ", ".join(hex(o) for o in offsets[:4]) + (", …" if len(offsets) > 4 else "")
    if e == errno.ESRCH:
        return AttachError(f"process {pid} exited while hdrlog was attaching to it.", e)
    if e == errno.ENOENT:
        return AttachError(f"cannot attach to {path}: the file is gone (did process {pid} exit?).", e)
    if e in (errno.EPERM, errno.EACCES):
        return AttachError(f"the kernel refused a {what} on {path} ({_ename(e)}): run hdrlog as root, or with "
                           "CAP_BPF and CAP_PERFMON.", e)
    if e in (errno.EOPNOTSUPP, errno.ENOSYS):
        return AttachError(f"this kernel cannot attach a {what} ({_ename(e)}): it needs CONFIG_UPROBES=y "
                           "(hdrlog doctor checks this).", e)
    hint = ""
    if e == errno.EINVAL:  # the usual cause, seen in the kernel log as "ref_ctr_offset mismatch"
        hint = ("; a uprobe another tool left at that offset with a different reference counter refuses new ones "
                "until reboot (`dmesg | grep ref_ctr_offset` shows it)")
    return AttachError(f"the kernel refused a {what} on {path} at offset {where} for process {pid} "
                       f"({_ename(e)}){hint}.", e)


# --------------------------------------------------------------------------------------- perf events
def _pmu_type() -> int | None:
    try:
        with open(f"{UPROBE_PMU}/type") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def _retprobe_bit() -> int:
    """The config bit of the PMU's `retprobe` format ("config:0" on every kernel seen)."""
    try:
        with open(f"{UPROBE_PMU}/format/retprobe") as f:
            return int(f.read().strip().split(":", 1)[1])
    except (OSError, ValueError, IndexError):
        return 0


def attach_perf(prog_fd: int, path: str, offset: int, pid: int, retprobe: bool, cookie: int = 0) -> int:
    """One uprobe perf event at `offset` in `path` for process `pid`, running prog_fd; its fd. Only the
    uprobe PMU is used: a kernel without it gets an error, never a tracefs event. With a `cookie` the program
    is attached through a BPF perf link carrying it (Linux 5.15+), and the link's fd is returned (it holds the
    event)."""
    pmu = _pmu_type()
    if pmu is None:
        raise HdrlogError(f"this kernel has no uprobe perf PMU ({UPROBE_PMU}) and no BPF uprobe_multi links: "
                          "hdrlog needs one of them (Linux 4.17+ with CONFIG_UPROBE_EVENTS=y).")
    bpath = ctypes.create_string_buffer(os.fsencode(path))
    attr = ctypes.create_string_buffer(128)
    config = 1 << _retprobe_bit() if retprobe else 0
    struct.pack_into("<IIQQ", attr, 0, pmu, PERF_ATTR_SIZE, config, 1)  # sample_period 1
    struct.pack_into("<I", attr, 48, 1)  # wakeup_events
    struct.pack_into("<QQ", attr, 56, ctypes.addressof(bpath), offset)  # config1: path, config2: offset
    fd, e = _syscall(_SYS_PERF_EVENT_OPEN, attr, ctypes.c_int(pid), ctypes.c_int(-1), ctypes.c_int(-1),
                     ctypes.c_ulong(PERF_FLAG_FD_CLOEXEC))
    if fd < 0:
        raise _attach_error(e, path, [offset], pid, "uprobe perf event")
    if cookie:
        link = ctypes.create_string_buffer(ATTR_SIZE)
        struct.pack_into("<IIIIQ", link, 0, prog_fd, fd, BPF_PERF_EVENT, 0, cookie)
        lfd, e = _bpf(BPF_LINK_CREATE, link)
        if lfd < 0 or _libc.ioctl(fd, PERF_EVENT_IOC_ENABLE, 0) != 0:
            e = e if lfd < 0 else ctypes.get_errno()
            if lfd >= 0:
                os.close(lfd)
            os.close(fd)
            raise _attach_error(e, path, [offset], pid, "uprobe perf event with a BPF cookie")
        os.close(fd)  # the link holds the event
        return lfd
    for req, arg in ((PERF_EVENT_IOC_SET_BPF, prog_fd), (PERF_EVENT_IOC_ENABLE, 0)):
        if _libc.ioctl(fd, req, arg) != 0:
            e = ctypes.get_errno()
            os.close(fd)
            raise _attach_error(e, path, [offset], pid, "uprobe perf event")
    return fd


# ------------------------------------------------------------------------------------------ detach
def close_all(fds: list[int], parallel: bool = True) -> float:
    """Close probe fds; return the seconds it took. Each close blocks while the kernel unregisters that
    fd's uprobes; in parallel threads the kernel's waits overlap (measured: see README, Detach)."""
    t0 = time.monotonic()
    if len(fds) <= 1 or not parallel:
        for fd in fds:
            _close(fd)
        return time.monotonic() - t0
    threads = [threading.Thread(target=_close, args=(fd,), daemon=True) for fd in fds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - t0


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


# ----------------------------------------------------------------------------------- feature probe
_MODE: str | None = None


def _load_trivial(expected_attach_type: int) -> tuple[int, int]:
    """A two-instruction kprobe-type program (r0 = 0; exit) loaded straight with bpf(2)."""
    insns = ctypes.create_string_buffer(struct.pack("<BBhi", 0xB7, 0, 0, 0) + struct.pack("<BBhi", 0x95, 0, 0, 0))
    lic = ctypes.create_string_buffer(b"GPL")
    attr = ctypes.create_string_buffer(128)
    struct.pack_into("<IIQQ", attr, 0, BPF_PROG_TYPE_KPROBE, 2, ctypes.addressof(insns), ctypes.addressof(lic))
    struct.pack_into("<I", attr, 68, expected_attach_type)
    return _bpf(BPF_PROG_LOAD, attr)


def probe_multi() -> tuple[bool, str]:
    """Does this kernel take uprobe_multi links? (ok, one clause saying why). The link is asked for on "/",
    a directory: a kernel that knows uprobe_multi gets that far and answers EBADF, creating nothing."""
    prog, e = _load_trivial(BPF_TRACE_UPROBE_MULTI)
    if prog < 0:
        if e in (errno.EPERM, errno.EACCES):
            return False, f"not tested: loading a BPF program needs privileges ({_ename(e)})"
        return False, f"the kernel refused a BPF program for uprobe_multi ({_ename(e)})"
    try:
        path = ctypes.create_string_buffer(b"/")
        off = (ctypes.c_uint64 * 1)(0)
        attr = ctypes.create_string_buffer(ATTR_SIZE)
        struct.pack_into("<IIII", attr, 0, prog, 0, BPF_TRACE_UPROBE_MULTI, 0)
        struct.pack_into("<QQQQIII", attr, 16, ctypes.addressof(path), ctypes.addressof(off), 0, 0, 1, 0, 0)
        fd, e = _bpf(BPF_LINK_CREATE, attr)
    finally:
        os.close(prog)
    if fd >= 0:  # cannot happen for a directory; never keep it
        os.close(fd)
        return True, "BPF uprobe_multi links are available"
    if e == errno.EBADF:
        return True, "BPF uprobe_multi links are available"
    return False, f"this kernel has no BPF uprobe_multi links ({_ename(e)}; they need Linux 6.6+)"


def mode() -> str:
    """"multi" (links) when the kernel has them, else "perf"; HDRLOG_UPROBE_MODE forces one."""
    global _MODE
    forced = os.environ.get(MODE_ENV, "")
    if forced:
        if forced not in MODES:
            raise HdrlogError(f"{MODE_ENV} must be one of {', '.join(MODES)}, not {forced!r}.")
        if forced == "multi" and not probe_multi()[0]:
            raise HdrlogError(f"{MODE_ENV}=multi, but {probe_multi()[1]}.")
        return forced
    if _MODE is None:
        _MODE = "multi" if probe_multi()[0] else "perf"
    return _MODE
