"""`hdrlog attach`: find targets, compile and attach probes, follow process trees, run the pipeline."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field

import psutil

from hdrlog import discover, events
from hdrlog.procstate import exited
from hdrlog.textsafe import TEXT_LIMIT, shown
from hdrlog.errors import HdrlogError
from hdrlog.inflight import blocked_socket_reads
from hdrlog.loader import ProbeSet, Settings
from hdrlog.redact import Redactor
from hdrlog.tlslibs import REGISTRY

# pipeline.py and records.py (the connection tracker, HTTP/1, HTTP/2 and MCP parsers they import: ~0.03 s)
# are imported once the `attached` line is out: nothing before it needs them, and what the probes catch
# meanwhile waits in the ring buffer.


def simple(type_: str, **fields) -> dict:
    from hdrlog.records import simple as record

    return record(type_, **fields)


@dataclass
class Options:
    pids: list[int]
    duration: float | None = None
    max_bytes: int = 16384
    ringbuf_pages: int = 1024
    show_secrets: bool = False
    record_events: str | None = None
    follow_children: bool = True
    placement: str = "auto"
    verbose: bool = False
    poll_ms: int = 100
    scan_interval_s: float = 0.5
    event_tap: object = None  # Pipeline tap: called with (event, tracker) for every decoded event (--pcap)
    mcp_payloads: bool = False  # --mcp-payloads: MCP tool arguments/results in records
    redact_names: tuple = ()  # --redact NAME: extra secret header names
    redact_patterns: tuple = ()  # --redact-pattern REGEX: header names matching it are secret


# run before a diagnostic is written to stderr (the live view's status line erases itself)
LOG_HOOKS: list = []


def log(msg: str) -> None:
    for hook in LOG_HOOKS:
        hook()
    sys.stderr.write(f"hdrlog: {msg}\n")
    sys.stderr.flush()


@dataclass
class Target:
    pid: int
    comm: str
    tls: list  # discover.TlsTarget
    probes: list = field(default_factory=list)
    exe: tuple | None = None  # (st_dev, st_ino) of /proc/PID/exe when attached: another one means exec()


def _exe_id(pid: int) -> tuple | None:
    try:
        st = os.stat(f"/proc/{pid}/exe")
        return st.st_dev, st.st_ino
    except OSError:
        return None


def _image_id(pid: int) -> tuple | None:
    """What a process runs and has mapped: its executable's identity and how many file mappings it has. A
    process checked and found without TLS is checked again when this changes (it exec'd another program, or
    loaded a library such as libssl later)."""
    try:
        with open(f"/proc/{pid}/maps", "rb") as f:
            files = f.read().count(b" /")
    except OSError:
        return None
    return _exe_id(pid), files


class Session:
    def __init__(self, opts: Options, sink, *, stop: threading.Event | None = None):
        self.opts = opts
        self.stop = stop or threading.Event()
        self.sink = _ReaderGone(sink, self.stop)
        self.targets: dict[int, Target] = {}
        self.roots = list(dict.fromkeys(opts.pids))
        self.probeset: ProbeSet | None = None
        self.pipeline: Pipeline | None = None
        self.recorder: EventRecorder | None = None
        self._pending: list | None = None  # attach records held while start() runs (see _start_pipeline)
        self._last_drop = (0, 0)
        self.lost_events = 0
        self.exited: list[int] = []
        self.started = time.monotonic()

    # -- discovery -------------------------------------------------------------------------------
    def _tree(self, root: int) -> list[int]:
        if _PROC_CHILDREN:
            return _proc_tree(root, self.opts.follow_children)
        try:
            p = psutil.Process(root)
            kids = p.children(recursive=True) if self.opts.follow_children else []
            return [root] + [k.pid for k in kids]
        except psutil.Error:
            return []

    def _find(self, pid: int) -> list:
        return [t for t in discover.find_tls(pid) if t.kind in REGISTRY]

    def _comm(self, pid: int) -> str:
        try:
            return psutil.Process(pid).name()
        except psutil.Error:
            return "?"

    def _initial_targets(self) -> dict[int, list]:
        found: dict[int, list] = {}
        for root in self.roots:
            if not psutil.pid_exists(root):
                raise HdrlogError(f"process {root} does not exist.")
            if _is_zombie(root):
                raise HdrlogError(f"process {root} has already exited (it is a zombie waiting for its parent).")
            tree = self._tree(root)
            hits = {pid: tls for pid in tree if (tls := self._safe_find(pid, strict=pid == root))}
            if not hits:
                raise HdrlogError(discover.explain_none(root))
            found.update(hits)
        return found

    def _safe_find(self, pid: int, strict: bool) -> list:
        try:
            return self._find(pid)
        except HdrlogError:
            if strict:
                raise
            return []  # a child that vanished or cannot be read is skipped

    # -- attach ----------------------------------------------------------------------------------
    def start(self) -> None:
        from hdrlog import preflight

        preflight.require_attach_ready()
        found = self._initial_targets()
        self._check_interrupted()
        libs = {REGISTRY[t.kind] for tls in found.values() for t in tls}
        settings = Settings(max_bytes=self.opts.max_bytes, ringbuf_pages=self.opts.ringbuf_pages,
                            placement=self.opts.placement)
        self.probeset = ProbeSet(libs, settings, trim=False)
        self._pending = []  # attach records, written once the pipeline exists
        try:
            self._check_interrupted()
            # what can fail for a user's reason (the redaction key, the --record-events file) fails before
            # anything is attached
            redactor = Redactor(show_secrets=self.opts.show_secrets, extra_names=self.opts.redact_names,
                                extra_patterns=self.opts.redact_patterns)
            if self.opts.record_events:
                from hdrlog.pipeline import EventRecorder

                self.recorder = EventRecorder(self.opts.record_events, {
                    "wall_offset_ns": events.WALL_OFFSET_NS, "max_bytes": self.opts.max_bytes, "libs": {}})
            for pid, tls in found.items():
                self._check_interrupted()
                self._attach(pid, tls, strict=pid in self.roots)
            self._check_interrupted()
        except BaseException:
            self._abandon()
            raise
        parts = []
        for t in self.targets.values():
            for tt in t.tls:
                mine = [p for p in t.probes if p.path == tt.mapping.host_path]
                rets = {p.symbol: sum(q.symbol == p.symbol and q.kind == "ret-insn" for q in mine) for p in mine}
                syms = sorted(f"{n} ({r} RETs)" if r else n for n, r in rets.items())
                ver = f" {shown(tt.version)}" if tt.version else ""
                tables = sorted({sym.table for sym in tt.symbols.values()} - {".dynsym", ".symtab"})
                src = f" (symbols from {', '.join(tables)})" if tables else ""
                parts.append(f"pid {t.pid} ({shown(t.comm)}): {tt.kind}{ver} {shown(tt.mapping.path, TEXT_LIMIT)}"
                             f"{src} [{', '.join(syms)}]")
        log("attached to " + "; ".join(parts))
        self._say_notes()  # only once attached (a failed attach says one sentence, its error), right after it
        if self.opts.verbose:
            self._log_placement()
        try:
            self._start_pipeline(redactor)
        except BaseException:
            self._abandon()
            raise
        self.probeset.trim()  # the compiler's leftover memory, given back once the line is out

    def _start_pipeline(self, redactor: Redactor) -> None:
        """The consumer: the pipeline, the ring buffer read into it (events since the probes were attached
        wait there), and the attach records."""
        from hdrlog.pipeline import Pipeline
        from hdrlog.records import rfc3339

        # the records go to the sink itself (once per message: no guard's frame), their write errors to the guard,
        # and nowhere once the output is gone
        self.pipeline = Pipeline(self.sink.inner, redactor, lib_of_pid=self._lib_of_pid, on_fork=self._on_fork,
                                 max_bytes=self.opts.max_bytes, recorder=self.recorder,
                                 tap=self.opts.event_tap, mcp_payloads=self.opts.mcp_payloads,
                                 sink_error=self.sink.failed)
        self.sink.on_gone = self._output_gone
        self.probeset.open(self.pipeline.on_raw)
        pending, self._pending = self._pending, None
        for ns, fields in pending:
            rec = simple("attach", **fields)
            rec["ts"] = rfc3339(ns)  # when it was attached
            self.sink.write(rec)

    def _output_gone(self) -> None:
        if self.pipeline is not None:
            self.pipeline.sink = _Discard()

    def _abandon(self) -> None:
        """Start failed: nothing stays attached, and close() must not drain/summarise a session that never ran."""
        ps, self.probeset = self.probeset, None
        ps.close()
        if self.recorder:
            self.recorder.close()

    def _log_placement(self) -> None:
        seen = set()
        for t in self.targets.values():
            for p in t.probes:
                s = p.site
                if s is None or (p.path, s.offset, s.kind) in seen:
                    continue
                seen.add((p.path, s.offset, s.kind))
                log(f"probe {s.kind:8s} {s.fn:22s} at {s.where} ({s.insn}; {s.cost}) in {p.path}: {s.why}")

    def _check_interrupted(self) -> None:
        """SIGINT/SIGTERM before the probes are all in place: stop there, detach, exit 130 (cli)."""
        if self.stop.is_set():
            log("interrupted before attaching; nothing is attached")
            raise KeyboardInterrupt

    def _attach(self, pid: int, tls: list, strict: bool) -> None:
        target = Target(pid, self._comm(pid), tls, exe=_exe_id(pid))
        try:
            with _libbcc_quiet():
                for t in tls:
                    lib = REGISTRY[t.kind]
                    target.probes += self.probeset.attach(pid, lib, t.mapping.host_path, t.symbols)
        except (HdrlogError, OSError) as exc:
            # OSError: the process's files under /proc/PID/root vanished with it
            self.probeset.detach(pid)
            if strict:
                if exited(pid):  # a zombie still has /proc/PID, so the loader cannot always tell
                    raise HdrlogError(f"process {pid} exited while hdrlog was attaching to it.") from None
                if isinstance(exc, OSError):
                    raise HdrlogError(f"cannot attach to process {pid}: {exc}.") from None
                raise
            return
        if not target.probes:
            return
        self.targets[pid] = target
        # reads already in progress are invisible to the new probes: say so (inflight.py)
        blocked = blocked_socket_reads(pid)
        if blocked:
            # a probe inside OpenSSL's record layer (a copy site) sees the data of a read begun before it
            copies = any(p.site is not None and p.site.fn == "ossl_rcopy" for p in target.probes)
            log(f"pid {pid}: {len(blocked)} thread(s) were already blocked reading a socket; if that is a TLS "
                + ("read, its data is still captured (OpenSSL reads are probed where the record is copied)" if copies
                   else "read, the message it returns is not captured (its response is recorded with request null)"))
        for t in tls:
            fields = dict(pid=pid, comm=target.comm, lib=REGISTRY[t.kind].name, kind=t.kind, path=t.mapping.path,
                          version=t.version, symbols=sorted({p.symbol for p in target.probes}),
                          blocked_socket_reads=len(blocked))
            if self._pending is not None:  # the first targets, before the pipeline runs
                self._pending.append((time.time_ns(), fields))
            else:
                self.sink.write(simple("attach", **fields))

    def _say_notes(self) -> None:
        for note in self.probeset.notes:  # said outside _libbcc_quiet, which silences fd 2
            log(note)
        self.probeset.notes.clear()

    def _lib_of_pid(self, pid: int) -> str:
        t = self.targets.get(pid)
        if t and t.tls:
            return REGISTRY[t.tls[0].kind].name
        return "openssl"

    # -- run -------------------------------------------------------------------------------------
    def _on_fork(self, parent: int, child: int) -> None:
        self._forked = True  # the kernel saw a traced process fork: rescan now, not at the next tick

    def _rescan(self) -> None:
        alive_roots = [r for r in self.roots if not exited(r)]
        for pid in list(self.targets):
            if exited(pid):
                self.probeset.detach(pid)
                del self.targets[pid]
                self.exited.append(pid)
                self.sink.write(simple("exit", pid=pid))
            elif (t := self.targets[pid]).exe is not None and (exe := _exe_id(pid)) is not None and exe != t.exe:
                # exec() of another program: the old image's probes cannot fire any more (a re-exec of the same
                # file keeps them: uprobes follow the file and the task); the new image is searched below
                self.probeset.detach(pid)
                del self.targets[pid]
                self._skipped.pop(pid, None)
                self._execd.add(pid)
                self.sink.write(simple("exit", pid=pid, reason="exec"))
                log(f"pid {pid} ({shown(t.comm)}) exec'd {shown(self._comm(pid))}: the old image's probes are removed; "
                    f"its new image is attached to if it has TLS code")
        for pid in [p for p in self._skipped if exited(p)]:
            del self._skipped[pid]
        for root in alive_roots:
            for pid in self._tree(root):
                if pid in self.targets:
                    continue
                image = _image_id(pid)
                was_skipped = pid in self._skipped
                if was_skipped and self._skipped[pid] == image:
                    continue  # checked before, found without TLS, and still the same image
                tls = self._safe_find(pid, strict=False)
                if not tls:
                    self._skipped[pid] = image
                    continue
                self._skipped.pop(pid, None)
                self._attach(pid, tls, strict=False)
                self._say_notes()
                if pid not in self.targets:
                    continue
                comm = shown(self.targets[pid].comm)
                if pid in self._execd:
                    log(f"attached to pid {pid} ({comm}), the program it exec'd; its TLS traffic between the exec "
                        f"and now is not captured")
                elif was_skipped:
                    log(f"attached to pid {pid} ({comm}): it had no TLS code when first checked and has now (it "
                        f"exec'd another program or loaded a TLS library); its TLS traffic before now is not captured")
                else:
                    log(f"attached to new process {pid} ({comm}) {_age_ms(pid):.0f} ms after it started; its TLS "
                        f"traffic before that is not captured")

    def _check_loss(self, st: dict[str, int]) -> None:
        dropped, dbytes = st["dropped"], st["dropped_bytes"]
        if dropped > self._last_drop[0]:
            n, b = dropped - self._last_drop[0], dbytes - self._last_drop[1]
            self.lost_events += n
            self.sink.write(simple("loss", events=n, bytes=b, total_events=dropped))
            log(f"lost {n} events ({b} bytes): the ring buffer was full; affected connections resynchronise")
        self._last_drop = (dropped, dbytes)

    def run(self) -> None:
        self._skipped: dict[int, tuple | None] = {}  # pid -> _image_id() when found without TLS
        self._execd: set[int] = set()  # targets that exec'd another program (their new image is searched)
        deadline = time.monotonic() + self.opts.duration if self.opts.duration else None
        next_scan = time.monotonic() + self.opts.scan_interval_s
        self._forked = False
        try:
            while not self.stop.is_set():
                self.probeset.poll(self.opts.poll_ms)
                tracker = self.pipeline.tracker
                if tracker.parked:  # writes whose link did not follow within a poll (memory BIO): as they are
                    tracker.release_parked(time.time_ns() - 2 * self.opts.poll_ms * 1_000_000)  # ev.ts_ns: wall clock
                self.sink.flush()
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                if now >= next_scan or self._forked:
                    self._forked = False
                    next_scan = now + self.opts.scan_interval_s
                    self._check_loss(self.probeset.stats())
                    self._rescan()
                    self.pipeline.tracker.expire(time.time_ns())
                    if not self.targets and all(exited(r) for r in self.roots):
                        log("every target process has exited")
                        break
        finally:
            self.close()

    def close(self) -> None:
        if self.probeset is None:
            return
        ps, self.probeset = self.probeset, None
        try:
            ps.drain()
            if self.pipeline is not None:
                self.pipeline.tracker.release_parked()
            self._final_stats = ps.stats()
            self._check_loss(self._final_stats)
        finally:
            ps.close()
            if self.recorder:
                self.recorder.close()
        self.summary()

    def summary(self) -> None:
        pipe = self.pipeline
        st = getattr(self, "_final_stats", {})
        per_pid = ", ".join(f"{pid}: {n}" for pid, n in sorted(pipe.messages_by_pid.items())) or "none"
        total = sum(pipe.messages_by_pid.values())
        counts = pipe.tracker.counts
        rec = simple(
            "summary", messages=total, messages_by_pid={str(k): v for k, v in pipe.messages_by_pid.items()},
            events=st.get("emitted", 0), lost_events=st.get("dropped", 0), truncated_messages=pipe.truncated,
            truncated_calls=counts["truncated_calls"], gaps=counts["gaps"],
            untracked_calls=st.get("calls_full", 0), non_http_connections=pipe.tracker.non_http_connections(),
            seconds=round(time.monotonic() - self.started, 3),
        )
        try:
            self.sink.write(rec)
            self.sink.flush()
        except (BrokenPipeError, OSError):
            pass
        log(
            f"detached. {total} messages (per pid: {per_pid}); {st.get('emitted', 0)} events, "
            f"{st.get('dropped', 0)} lost; {pipe.truncated} truncated messages, "
            f"{counts['truncated_calls']} calls beyond --max-bytes, {counts['gaps']} gaps"
            + (f"; {st['calls_full']} TLS calls not followed (in-flight table full)" if st.get("calls_full") else "")
            + (f"; {rec['non_http_connections']} connection(s) carried TLS data that is not HTTP"
               if rec["non_http_connections"] else "")
        )


def _age_ms(pid: int) -> float:
    """How long ago pid started, from its start time in clock ticks since boot (psutil's create_time is
    anchored to a whole-second boot time, so it can be off by up to a second)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")
    return max(0.0, (uptime - start_ticks / os.sysconf("SC_CLK_TCK")) * 1000)


# /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN): a process tree read from its own members. psutil's children()
# reads /proc/*/stat of every process on the machine (its parent map) at every rescan, every 0.5 s: ~0.3 µs per
# captured message at 20k messages/s with ~90 processes, more on a busy host.
_PROC_CHILDREN = os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")


def _proc_tree(root: int, follow: bool) -> list[int]:
    """root and its descendants (by pid, root first), or [] if root is gone: psutil's children(recursive=True)
    without reading every other process."""
    try:
        tids = os.listdir(f"/proc/{root}/task")
    except OSError:
        return []
    if not follow:
        return [root]
    seen = {root}
    kids: list[int] = []
    todo = [(root, tids)]
    while todo:
        pid, tids = todo.pop()
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                    found = f.read().split()
            except OSError:  # the thread or the process exited meanwhile
                continue
            for c in map(int, found):
                if c not in seen:
                    seen.add(c)
                    kids.append(c)
                    try:
                        todo.append((c, os.listdir(f"/proc/{c}/task")))
                    except OSError:
                        pass
    return [root] + sorted(kids)


def _is_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


class _ReaderGone:
    """The sink, guarded: when the reader of our output goes away (`hdrlog attach ... | head -3`), the
    session stops quietly. A BrokenPipeError must not escape from a sink write: those happen inside the
    ring-buffer callback, and an exception there skips records and keeps the buffer's memory exported. The
    pipeline writes its records to the inner sink and hands a write's OSError to failed()."""

    def __init__(self, inner, stop: threading.Event):
        self.inner = inner
        self.stop = stop
        self.gone = False
        self.error: str | None = None  # why the output could not be written (disk full, I/O error)
        self.on_gone = None  # called once when the output fails (the session stops the pipeline's writes)

    def _guard(self, fn, *args) -> None:
        if self.gone:
            return
        try:
            fn(*args)
        except OSError as exc:  # BrokenPipeError included
            self.failed(exc)

    def failed(self, exc: OSError) -> None:
        """A write or flush of the output failed (here or in the pipeline, which writes records to the inner sink
        itself): stop, say why once, and write nothing more."""
        if self.gone:
            return
        self.gone = True
        self.stop.set()
        if isinstance(exc, BrokenPipeError):
            log("the output was closed by its reader; stopping")
            try:  # what is still buffered for stdout goes nowhere, instead of failing again at exit
                fd = os.open(os.devnull, os.O_WRONLY)
                os.dup2(fd, 1)
                os.close(fd)
            except OSError:
                pass
        else:
            # disk full, quota, I/O error: stop (the probes are removed on the way out) and say why once
            self.error = str(exc.strerror or exc)
            log(f"cannot write the output ({self.error}); stopping")
        if self.on_gone is not None:
            self.on_gone()

    def write(self, rec: dict) -> None:
        self._guard(self.inner.write, rec)

    def flush(self) -> None:
        self._guard(self.inner.flush)

    def close(self) -> None:
        self._guard(self.inner.close)

    def __getattr__(self, name):
        return getattr(self.inner, name)


class _Discard:
    """Where the pipeline's records go once the output has failed."""

    def write(self, rec: dict) -> None:
        pass

    def flush(self) -> None:
        pass


@contextlib.contextmanager
def _libbcc_quiet():
    """libbcc prints "cannot attach uprobe, probe entry may not exist" on fd 2 when a uprobe is refused;
    the HdrlogError raised for it is the one sentence the user gets, so keep that line off stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def install_signal_handlers(stop: threading.Event) -> None:
    """SIGINT/SIGTERM stop the loop (SIGINT may arrive ignored from a non-interactive parent shell)."""

    def handler(signum, frame):
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
