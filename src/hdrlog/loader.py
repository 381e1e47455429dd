"""The only code that compiles probes and attaches them: bcc, uprobes by file offset, one ring buffer.

The BPF program is one main text: probes/common.bpf.c followed by the probe file of every TLS library in
use, joined with #line markers (bcc rewrites map accesses and tracepoint arguments in the main file only).
Settings are -D flags, the running kernel's struct sock offsets among them (kbtf.py: with them the socket
probes are raw tracepoints, without them classic ones). Uprobes are attached at the file offsets discover.py resolved, per process, by
uprobelink.py: one BPF uprobe_multi link per (program, process, file, entry/return) on Linux 6.6+, else one
uprobe perf event per offset (the PMU only). Either is just a file descriptor: nothing is ever written to
tracefs, and the kernel removes every probe when hdrlog exits, SIGKILL included.
"""

from __future__ import annotations

import ctypes as ct
import errno
import os
import struct
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from hdrlog import bcccompile, placement, uprobelink
from hdrlog.elfsyms import ElfFile
from hdrlog.errors import HdrlogError
from hdrlog.placement import Site
from hdrlog.procstate import exited
from hdrlog.events import Stat
from hdrlog.tlslibs import TlsLibrary

COMMON_FILE = "common.bpf.c"
MAX_BYTES_LIMIT = 1 << 18  # 256 KiB per call: 16 chunks of 16 KiB
TARGET_SLOTS = 16384  # entries of the probes' target_slots filter (a power of two)


def probes_dir() -> Path:
    """probes/ shipped inside the wheel, else the source tree's (editable install)."""
    here = Path(__file__).resolve().parent
    for cand in (here / "probes", here.parent.parent / "probes"):
        if (cand / COMMON_FILE).is_file():
            return cand
    raise HdrlogError(f"hdrlog's BPF sources ({COMMON_FILE}) are missing next to {here}; reinstall hdrlog.")


def program_text(libraries: Iterable[TlsLibrary]) -> str:
    pdir = probes_dir()
    libraries = list(libraries)
    files = [COMMON_FILE] + sorted({lib.probe_file for lib in libraries})
    # common.bpf.c declares what only some libraries' probes need (HDRLOG_WITH_GOTLS, ...)
    parts = [f"#define HDRLOG_WITH_{name.upper()} 1" for name in sorted({lib.name for lib in libraries})]
    for name in files:
        parts.append(f'#line 1 "{name}"\n' + (pdir / name).read_text())
    return "\n".join(parts)


@dataclass
class AttachedProbe:
    pid: int
    symbol: str
    path: str
    offset: int
    kind: str  # "entry" | "return" (uretprobe) | "ret-insn" (a uprobe on one RET instruction)
    fd: int  # the link (shared by the sites of one program) or perf event that holds this uprobe
    site: Site | None = None  # where and why (placement.py)


@dataclass
class Settings:
    max_bytes: int = 16384
    ringbuf_pages: int = 1024  # 4 MiB
    placement: str = "auto"  # "auto" (placement.py) | "entry" (every probe at its symbol's entry)
    raw_tracepoints: bool = True  # the sock probes as raw tracepoints when the kernel's BTF gives the offsets
    extra_cflags: list[str] = field(default_factory=list)

    def cflags(self) -> list[str]:
        if not 1 <= self.max_bytes <= MAX_BYTES_LIMIT:
            raise HdrlogError(f"--max-bytes must be between 1 and {MAX_BYTES_LIMIT}, not {self.max_bytes}.")
        pages = self.ringbuf_pages
        if pages < 1 or pages & (pages - 1):
            raise HdrlogError(f"the ring buffer size must be a power-of-two number of pages, not {pages}.")
        return [
            f"-I{probes_dir()}",
            f"-DHDRLOG_MAX_BYTES={self.max_bytes}",
            f"-DHDRLOG_RINGBUF_PAGES={pages}",
            f"-DHDRLOG_TARGET_SLOTS={TARGET_SLOTS}",
            *(kernel_cflags() if self.raw_tracepoints else []),
            *self.extra_cflags,
        ]


_kernel_cflags: list[str] | None = None


def kernel_cflags() -> list[str]:
    """-D flags with the running kernel's struct sock member offsets (kbtf.py), read once per process;
    empty when the kernel's BTF does not tell them (the probes then use the classic sock tracepoints)."""
    global _kernel_cflags
    if _kernel_cflags is None:
        from hdrlog import kbtf

        btf, fam, proto = kbtf.load(), None, None
        try:
            if btf:
                fam, proto = btf.member("sock_common", "skc_family"), btf.member("sock", "sk_protocol")
        except (ValueError, IndexError, struct.error):  # a malformed BTF: the classic tracepoints
            fam = proto = None
        ok = fam is not None and proto is not None and fam.size == 2 and proto.size == 2
        _kernel_cflags = [f"-DHDRLOG_SKC_FAMILY={fam.offset}", f"-DHDRLOG_SK_PROTOCOL={proto.offset}"] if ok else []
    return _kernel_cflags


class _OutputCapture:
    """libbcc prints clang's diagnostics on fd 2 and "Unable to find kernel headers" on fd 1: keep both
    (to explain a failed compile in one sentence) and keep them out of the JSON-lines stream."""

    def __enter__(self):
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        self._tmp = tempfile.TemporaryFile()
        self._saved = {fd: os.dup(fd) for fd in (1, 2)}
        for fd in (1, 2):
            os.dup2(self._tmp.fileno(), fd)
        return self

    def __exit__(self, *exc):
        for fd, saved in self._saved.items():
            os.dup2(saved, fd)
            os.close(saved)
        self._tmp.seek(0)
        self.text = self._tmp.read().decode("utf-8", "replace")
        self._tmp.close()
        return False


class ProbeSet:
    """One compiled BPF program, its ring buffer, and the uprobes attached for each process."""

    def __init__(self, libraries: Iterable[TlsLibrary], settings: Settings | None = None, trim: bool = True):
        """Compiles the probes (bcc). trim=False: the caller calls trim() when the time it takes (~0.02 s)
        is not in anyone's way (the session: once its `attached` line is out)."""
        from bcc import BPF  # imported here: preflight explains a missing bcc before we get this far

        self._BPF = BPF
        self.mode = uprobelink.mode()  # "multi" (uprobe_multi links) or "perf" (older kernels)
        self.settings = settings or Settings()
        self.libraries = list(libraries)
        text = program_text(self.libraries).encode()  # bcc wants bytes (a str draws a DeprecationWarning)
        cflags = self.settings.cflags()
        with _OutputCapture() as cap:
            try:
                # bcc in a thread that skips its /proc/kallsyms pass (bcccompile.py): ~0.19 s less
                self.bpf = bcccompile.compile(lambda: BPF(text=text, cflags=cflags))
            except Exception as exc:  # bcc raises bare Exception
                err = exc
            else:
                err = None
        if err is not None:
            from hdrlog.preflight import explain_compile_error

            raise HdrlogError(explain_compile_error(cap.text or str(err))) from None
        if trim:
            self.trim()
        self.attached: dict[int, list[AttachedProbe]] = {}
        self._fds: dict[int, list[int]] = {}  # per process: the links / perf events holding its uprobes
        self.notes: list[str] = []  # what the loader changed on its own (said on stderr by the session)
        self.detach_seconds = 0.0
        self._noted: set[tuple[int, str]] = set()
        self._fns: dict[str, object] = {}
        self._plans: dict[tuple, list[Site]] = {}
        self._targets: set[int] = set()  # pids in the probes' `targets`
        self._targets_lock = threading.Lock()

    @staticmethod
    def trim() -> None:
        """Give back what the compile left resident: clang's freed heap and LLVM's code pages (memtrim.py)."""
        from hdrlog.memtrim import release_compiler_memory

        release_compiler_memory()

    # -- processes -------------------------------------------------------------------------------
    def plan(self, library: TlsLibrary, path: str, symbols: dict) -> list[Site]:
        """Where every uprobe of `library` goes in the file at `path` (placement.py), memoised per file."""
        key = self._plan_key(library, path, symbols)
        sites = self._plans.get(key)
        if sites is None:
            with ElfFile(path) as elf:
                sites = self._plans[key] = placement.plan(elf, library, symbols, path=path,
                                                          mode=self.settings.placement)
        return sites

    @staticmethod
    def _plan_key(library: TlsLibrary, path: str, symbols: dict) -> tuple:
        try:
            ino = os.stat(path).st_ino
        except OSError as exc:  # /proc/PID/root/... vanished with its process
            raise HdrlogError(f"cannot read {path}: {exc.strerror}; did the process exit?") from None
        return library.name, path, ino, tuple(sorted((n, s.offset) for n, s in symbols.items()))

    def attach(self, pid: int, library: TlsLibrary, path: str, symbols: dict) -> list[AttachedProbe]:
        """Attach every uprobe of `library` whose symbol is in `symbols` (name → discover Symbol) for pid.

        When the kernel refuses a placed offset (EINVAL: usually a uprobe another tool left there, see
        uprobelink), the functions that offset covers go back to their symbols' entries and the others keep
        their placement. The links already made for other functions are kept: closing links waits for the
        kernel (~0.09 s per process on the reference VM, paid by every nginx process before this)."""
        sites = self.plan(library, path, symbols)
        done: list[AttachedProbe] = []
        moved: set[str] = set()  # functions sent back to their entries
        todo = list(sites)
        try:
            while True:
                try:
                    self._attach_sites(pid, path, todo, done)
                    break
                except uprobelink.AttachError as exc:
                    refused = getattr(exc, "sites", None)
                    names = {n for s in refused or () for n in s.symbol.split("+")}
                    if exc.errno != errno.EINVAL or not refused or self.settings.placement == "entry" or names & moved:
                        raise self._explain(pid, exc) from None
                    moved |= names
                    todo = self._move_to_entries(pid, library, path, symbols, todo, done, refused, names)
        except BaseException:
            uprobelink.close_all([fd for fd in dict.fromkeys(p.fd for p in done)])
            raise
        self._fds.setdefault(pid, []).extend(dict.fromkeys(p.fd for p in done))
        self.attached.setdefault(pid, []).extend(done)
        self._target(pid, True)
        return done

    def _target(self, pid: int, on: bool) -> None:
        """Add pid to (remove it from) the probes' `targets`, and count it in `target_slots` (a tgid is in
        `targets` only while its slot counts it)."""
        with self._targets_lock:
            if on == (pid in self._targets):
                return
            slots, slot = self.bpf["target_slots"], ct.c_int(pid % TARGET_SLOTS)
            if on:
                slots[slot] = ct.c_uint32(slots[slot].value + 1)
                self.bpf["targets"][ct.c_uint32(pid)] = ct.c_uint8(1)
                self._targets.add(pid)
            else:
                self._targets.discard(pid)
                try:
                    del self.bpf["targets"][ct.c_uint32(pid)]
                except KeyError:
                    pass
                slots[slot] = ct.c_uint32(max(0, slots[slot].value - 1))

    def _move_to_entries(self, pid: int, library: TlsLibrary, path: str, symbols: dict, todo: list[Site],
                         done: list[AttachedProbe], refused: list[Site], names: set[str]) -> list[Site]:
        """What is left to attach once the functions in `names` go to their entries; `done` loses the links
        already made for them (an entry link made before its return was refused), whose other sites are
        attached again."""
        def touches(site: Site) -> bool:
            return bool(names & set(site.symbol.split("+")))

        drop = {p.fd for p in done if touches(p.site)}
        again = [p.site for p in done if p.fd in drop and not touches(p.site)]
        uprobelink.close_all(list(drop))
        done[:] = [p for p in done if p.fd not in drop]
        attached = {id(p.site) for p in done}
        with ElfFile(path) as elf:
            entry = placement.plan(elf, library, symbols, path=path, mode="entry")
        where = ", ".join(sorted({s.where for s in refused}))
        key = (os.stat(path).st_ino, where)
        if key not in self._noted:  # said once per file, not once per worker
            self._noted.add(key)
            self.notes.append(f"pid {pid}: the kernel refused a uprobe at {where} in {path} (EINVAL; usually a "
                              f"uprobe another tool left at that offset, `dmesg | grep ref_ctr_offset` shows it), so "
                              f"{', '.join(sorted(names))} " + ("is probed at its entry" if len(names) == 1 else
                                                                  "are probed at their entries") + " instead")
        left = {id(s): s for s in again + todo if id(s) not in attached and not touches(s)}
        why = f"the kernel refused the placed offset {where} (EINVAL), so at the entry instead"
        return list(left.values()) + [s._replace_why(why) for s in entry if s.symbol in names]

    @staticmethod
    def _explain(pid: int, exc: HdrlogError) -> HdrlogError:
        if exited(pid):
            return HdrlogError(f"process {pid} exited while hdrlog was attaching to it.")
        return exc

    def _prog_fd(self, name: str) -> int:
        fn = self._fns.get(name)
        if fn is None:
            attach_type = uprobelink.BPF_TRACE_UPROBE_MULTI if self.mode == "multi" else -1
            fn = self._fns[name] = self.bpf.load_func(name.encode(), self._BPF.KPROBE, attach_type=attach_type)
        return fn.fd

    def _attach_sites(self, pid: int, path: str, sites: list[Site], done: list[AttachedProbe]) -> None:
        """multi: one link per (program, entry/return) carrying all its offsets; perf: one event per site.
        Appends to `done` as it goes; a refusal raises AttachError with .sites, the group refused, and what
        was attached before it stays in `done` (the caller keeps or closes it)."""
        groups: dict[tuple[str, bool], list[Site]] = {}
        for site in sites:
            groups.setdefault((site.fn, site.kind == "return"), []).append(site)
        for (name, ret), group in groups.items():
            prog = self._prog_fd(name)
            try:
                if self.mode == "multi":
                    cookies = {s.offset: s.cookie for s in group}
                    offsets = sorted(cookies)
                    fd = uprobelink.attach_multi(prog, path, offsets, pid, ret, cookies=[cookies[o] for o in offsets])
                    done += [AttachedProbe(pid, s.symbol, path, s.offset, s.kind, fd, s) for s in group]
                else:
                    for s in group:
                        fd = uprobelink.attach_perf(prog, path, s.offset, pid, ret, cookie=s.cookie)
                        done.append(AttachedProbe(pid, s.symbol, path, s.offset, s.kind, fd, s))
            except uprobelink.AttachError as exc:
                exc.sites = group  # which sites the kernel refused (attach() may place them elsewhere)
                raise

    def detach(self, pid: int) -> float:
        """Remove pid's probes; the seconds the kernel took (its fds are closed in parallel threads)."""
        self.attached.pop(pid, None)
        took = uprobelink.close_all(self._fds.pop(pid, []))
        self._target(pid, False)
        return took

    # -- events ----------------------------------------------------------------------------------
    def open(self, callback: Callable[[memoryview], None]) -> None:
        """callback(raw_event) for every ring-buffer record, read in batches straight from the mapped ring
        (ringbuf.py); raw_event is only valid during the call."""
        from hdrlog.ringbuf import RingReader

        table = self.bpf["events"]
        self.reader = RingReader(table.map_fd, int(table.max_entries), callback)

    def poll(self, timeout_ms: int) -> int:
        """Wait up to timeout_ms for a wake-up, then take everything in the ring."""
        return self.reader.poll(timeout_ms)

    def drain(self) -> int:
        return self.reader.consume()

    def stats(self) -> dict[str, int]:
        table = self.bpf["stats"]
        out = {}
        for s in Stat:
            if s in (Stat.MAX, Stat.WAKEUP_CTR):
                continue
            out[s.name.lower()] = int(sum(table[ct.c_int(s.value)]))
        return out

    def close(self) -> None:
        # every process's probes at once: the kernel's waits for each fd overlap (README, Detach)
        fds = [fd for pid in list(self._fds) for fd in self._fds.pop(pid)]
        self.attached.clear()
        self.detach_seconds = uprobelink.close_all(fds)
        reader = getattr(self, "reader", None)
        if reader is not None:
            reader.close()
        self.bpf.cleanup()
