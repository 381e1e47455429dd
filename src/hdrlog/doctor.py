"""`hdrlog doctor [--pid PID] [--probe-seconds N]`: why hdrlog would or would not capture, in sentences.

Machine: Python packages, privileges, tracefs, uprobes, the sock tracepoints, BPF ring buffer (a map is
really created), BTF (informational: hdrlog compiles with bcc), bcc, kernel headers, a real compile of
the probes, the redaction key. For a PID: its TLS stack, each probe's symbol and placement (placement.plan,
as attach would place it), how its connections will be attributed, listening ports, followed children.
With --probe-seconds N: attaches for N seconds (session.Session with a counting sink and a tap that
counts events per TLS function) and turns the counts into a verdict ("SSL_read fired 0 times: ...").

Every failed check carries its fix. Exit code 1 when a check fails, else 0. Only the standard library is
imported up front, so doctor runs (and says what is missing) under an interpreter without hdrlog's
dependencies or bcc.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import os
import platform
import struct
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass

from hdrlog import preflight
from hdrlog.errors import HdrlogError

EPILOG = """\
examples:
  hdrlog doctor                          # is this machine ready?
  hdrlog doctor --pid 4242               # ... and what exactly would be probed in process 4242
  hdrlog doctor --pid 4242 --probe-seconds 5   # attach for 5 s: which probes fire, what parses
  hdrlog doctor --json

Every line is ok, warn (works, but read it), info, or FAIL followed by "fix: ...". Exit code 1 when a
check fails, else 0.
"""

DEPS = (("psutil", "psutil"), ("orjson", "orjson"), ("httptools", "httptools"), ("elftools", "pyelftools"),
        ("capstone", "capstone"), ("cryptography", "cryptography"))
_SYS_BPF = {"x86_64": 321, "aarch64": 280}
_BPF_MAP_CREATE = 0
_BPF_MAP_TYPE_RINGBUF = 27
_MEMORY_BIO_HINTS = ("uvicorn", "hypercorn", "daphne", "aiohttp", "granian")


@dataclass
class Item:
    section: str
    name: str
    status: str  # "ok" | "warn" | "info" | "fail"
    detail: str
    fix: str | None = None


class Report:
    def __init__(self):
        self.items: list[Item] = []

    def add(self, section: str, name: str, status: str, detail: str, fix: str | None = None) -> Item:
        it = Item(section, name, status, detail.rstrip("."), fix)
        self.items.append(it)
        return it

    def check(self, section: str, c: preflight.Check, *, fail_status: str = "fail") -> Item:
        return self.add(section, c.name, "ok" if c.ok else fail_status, c.detail, None if c.ok else c.fix)

    @property
    def failed(self) -> bool:
        return any(i.status == "fail" for i in self.items)

    def render(self, color: bool) -> str:
        paint = {"ok": "32", "warn": "33", "info": "36", "fail": "31;1"}
        out, section = [], None
        for it in self.items:
            if it.section != section:
                section = it.section
                out.append(f"\033[1m{section}\033[0m" if color else section)
            tag = it.status.upper() if it.status == "fail" else it.status
            tag_s = f"\033[{paint[it.status]}m{tag:5s}\033[0m" if color else f"{tag:5s}"
            out.append(f"  {tag_s} {it.name:18s} {it.detail}")
            if it.fix:
                out.append(f"  {'':5s} {'':18s} fix: {it.fix}")
        n = sum(i.status == "fail" for i in self.items)
        out.append(f"{n} check(s) failed" if n else "all checks passed")
        return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------- machine
def _deps(r: Report) -> bool:
    import importlib

    missing = []
    for mod, pkg in DEPS:
        try:
            importlib.import_module(mod)
        except Exception:  # noqa: BLE001 - ImportError or a broken extension
            missing.append(pkg)
    if missing:
        r.add("machine", "python packages", "fail",
              f"{sys.executable} lacks {', '.join(missing)}",
              "run hdrlog from its venv (make setup; /usr/local/bin/hdrlog), or pip install " + " ".join(missing))
        return False
    r.add("machine", "python packages", "ok", f"{sys.executable} has hdrlog's dependencies")
    try:
        importlib.import_module("prometheus_client")
    except ImportError:
        r.add("machine", "prometheus_client", "warn", "prometheus_client is not installed: --metrics will not work",
              "pip install prometheus_client (make setup installs it)")
    return True


# hdrlog's C extensions (pyproject.toml's ext-modules): what runs in Python instead when one is missing
C_EXTENSIONS = {
    "hdrlog._h1fast": "HTTP/1 heads are parsed by llhttp alone and events decoded in Python",
    "hdrlog._h1feed": "HTTP/1 chunks, pairing and emission run in Python",
    "hdrlog._recfast": "records are built and secrets redacted in Python",
    "hdrlog._ringfast": "the ring buffer is walked in Python",
    "hdrlog._statsfast": "statistics and JSON lines are written from Python",
}


def _fast_path(r: Report) -> None:
    import importlib

    missing = []
    for name, without in C_EXTENSIONS.items():
        try:
            importlib.import_module(name)
        except ImportError as exc:
            missing.append(f"{name} ({exc}): {without}")
    if missing:
        r.add("machine", "C fast paths", "warn", "C extensions missing, hdrlog costs more CPU per message: "
              + "; ".join(missing),
              "build them: make setup in hdrlog's source tree (needs gcc and python3-dev), or pip install -e . there")
    else:
        r.add("machine", "C fast paths", "ok", f"the C extensions are loaded ({', '.join(C_EXTENSIONS)})")


def _tracefs(r: Report) -> bool:
    c = preflight.check_tracefs(mount=False)
    if c.ok:
        r.check("machine", c)
        return True
    if os.geteuid() == 0 and os.path.isdir(preflight.TRACEFS):
        r.add("machine", "tracefs", "warn", f"tracefs is not mounted at {preflight.TRACEFS}; hdrlog attach "
              "mounts it itself")
        return True
    r.check("machine", c)
    return False


def _tracepoints(r: Report) -> None:
    d = preflight._tracing_dir()
    if d is None:
        r.add("machine", "sock tracepoints", "info", "not checked (tracefs is not mounted)")
        return
    need = ("sock/sock_send_length", "sock/sock_recv_length")
    missing = [n for n in need if not os.path.isdir(os.path.join(d, "events", n))]
    if missing:
        r.add("machine", "sock tracepoints", "warn",
              f"the kernel has no {', '.join(missing)} tracepoint(s): connections will have no addresses "
              "(except Go's, found through the fd)", "use Linux 6.1 or later")
    else:
        r.add("machine", "sock tracepoints", "ok", "sock:sock_send_length and sock:sock_recv_length exist "
              "(connection addresses)")


def _stale_uprobes(r: Report) -> None:
    if preflight._tracing_dir() is None:
        return
    stale = preflight.stale_uprobe_events()
    if not stale:
        r.add("machine", "stale uprobes", "ok", "no tracefs uprobe_events entry left by a dead bcc-based tool")
        return
    pids = sorted({pid for _, pid in stale})
    r.add("machine", "stale uprobes", "warn",
          f"{len(stale)} tracefs uprobe_events entr{'y' if len(stale) == 1 else 'ies'} left by dead bcc-based tool "
          f"process(es) {', '.join(map(str, pids[:8]))}{', …' if len(pids) > 8 else ''} (libbcc's tracefs fallback; "
          "hdrlog never writes tracefs): they clutter uprobe_events until removed",
          f"`hdrlog setup` removes them, or run `{preflight.remove_uprobe_events_command(stale)}`")


def _uprobe_attach(r: Report) -> None:
    from hdrlog import uprobelink

    ok, why = uprobelink.probe_multi()
    if ok:
        r.add("machine", "uprobe links", "ok", why + ": probes detach in one kernel synchronisation per link, "
              "nothing is written to tracefs")
    elif why.startswith("not tested"):
        r.add("machine", "uprobe links", "info", why)
    else:
        r.add("machine", "uprobe links", "warn", why + ": hdrlog uses one uprobe perf event per probe instead "
              "(detaching takes ~0.1 s per probe, e.g. ~2 s for nginx with 2 workers)", "use Linux 6.6 or later")


def _ringbuf(r: Report) -> bool:
    rel = platform.release()
    nr = _SYS_BPF.get(platform.machine())
    if nr is None:
        r.add("machine", "BPF ring buffer", "info", f"not tested on {platform.machine()} (kernel {rel})")
        return True
    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.create_string_buffer(struct.pack("<IIIII", _BPF_MAP_TYPE_RINGBUF, 0, 0, 4096, 0), 128)
    fd = libc.syscall(nr, _BPF_MAP_CREATE, attr, ctypes.c_uint(128))
    if fd >= 0:
        os.close(fd)
        r.add("machine", "BPF ring buffer", "ok", f"a BPF ring buffer map was created (kernel {rel})")
        return True
    e = ctypes.get_errno()
    if e in (errno.EPERM, errno.EACCES):
        r.add("machine", "BPF ring buffer", "info", f"not tested: creating BPF maps needs privileges (kernel {rel})")
        return True
    r.add("machine", "BPF ring buffer", "fail",
          f"the kernel refused a BPF ring buffer map ({errno.errorcode.get(e, e)}; kernel {rel})",
          "use Linux 5.8 or later with CONFIG_BPF_SYSCALL=y")
    return False


def _compile(r: Report) -> None:
    from hdrlog.loader import ProbeSet
    from hdrlog.session import _libbcc_quiet
    from hdrlog.tlslibs import REGISTRY

    libs = {id(v): v for v in REGISTRY.values()}.values()
    t0 = time.monotonic()
    try:
        with _libbcc_quiet():
            ps = ProbeSet(libs)
    except HdrlogError as exc:
        r.add("machine", "probe compile", "fail", str(exc).split("; fix:")[0],
              str(exc).split("; fix: ", 1)[1].rstrip(".") if "; fix: " in str(exc) else None)
        return
    ps.close()
    r.add("machine", "probe compile", "ok", f"bcc compiled hdrlog's probes in {time.monotonic() - t0:.1f}s")


def machine_checks(r: Report, compile_probes: bool = True) -> bool:
    """Adds the machine's checks; True when attaching can work."""
    deps = _deps(r)
    _fast_path(r)
    priv = r.check("machine", preflight.check_privileges()).status == "ok"
    tfs = _tracefs(r)
    up = r.check("machine", preflight.check_uprobes()).status == "ok"
    if up:
        _uprobe_attach(r)
    if tfs:
        _stale_uprobes(r)
    _tracepoints(r)
    rb = _ringbuf(r)
    r.check("machine", preflight.check_btf(), fail_status="info")
    if r.items[-1].status == "info":
        r.items[-1].detail += " (not needed: hdrlog compiles with bcc against kernel headers)"
        r.items[-1].fix = None
    bcc = r.check("machine", preflight.check_bcc()).status == "ok"
    hdr = r.check("machine", preflight.check_kernel_headers(fix=False)).status == "ok"
    ready = deps and priv and tfs and up and rb and bcc and hdr
    if ready and compile_probes:
        _compile(r)
        ready = not r.failed
    elif compile_probes:
        r.add("machine", "probe compile", "info", "not tried (a check above failed)")
    if deps:
        from hdrlog import redact

        redact.load_key()
        if redact.KEY_PROBLEM:
            r.add("machine", "redaction key", "warn", redact.KEY_PROBLEM, "run hdrlog as root (it keeps the key in "
                  f"{redact.DEFAULT_KEY_FILE})")
        else:
            r.add("machine", "redaction key", "ok", "redaction markers are stable across runs")
    return ready


# ---------------------------------------------------------------------------------------- process
def _attribution(kind: str, cmdline: str) -> tuple[str, str]:
    if kind == "go":
        return "ok", "exact: Go crypto/tls calls are tied to their socket through the connection's fd (go-fd)"
    if kind in ("openssl-static", "boringssl"):
        return "info", ("inferred if it uses memory BIOs like node (recv-before/send-after: the socket the "
                        "thread read just before SSL_read / wrote just after SSL_write); exact with socket BIOs")
    if any(h in cmdline for h in _MEMORY_BIO_HINTS):
        return "info", ("inferred: this looks like an asyncio server (memory BIO): addresses come from the "
                        "thread's socket I/O around each TLS call (recv-before/send-after)")
    return "ok", ("exact: a libssl socket BIO reads/writes its socket inside each TLS call (socket); a memory-BIO "
                  "program (asyncio SSLObject) would be inferred instead, and so is, at copy sites (the default "
                  "placement), a connection opened before hdrlog attached (recv-before/send-after)")


def process_checks(r: Report, pid: int) -> list:
    """Adds the plan for `pid`; returns its TLS targets (empty when it cannot be attached)."""
    import psutil

    from hdrlog import discover, placement
    from hdrlog.elfsyms import ElfFile
    from hdrlog.ps import _listening
    from hdrlog.tlslibs import REGISTRY

    sec = f"process {pid}"
    try:
        p = psutil.Process(pid)
        comm, cmdline = p.name(), " ".join(p.cmdline())
        status = p.status()
    except psutil.NoSuchProcess:
        r.add(sec, "process", "fail", f"process {pid} does not exist", "check the PID (hdrlog ps lists candidates)")
        return []
    except psutil.AccessDenied:
        comm, cmdline, status = "?", "", "?"
    if status == psutil.STATUS_ZOMBIE:
        r.add(sec, "process", "fail", f"process {pid} ({comm}) has exited (zombie)", "attach to a live process")
        return []
    r.add(sec, "process", "info", f"{comm}: {cmdline[:160] or '?'}")
    try:
        found = discover.find_tls(pid)
    except HdrlogError as exc:
        text = str(exc).rstrip(".")
        fix = None
        if ": run hdrlog as root" in text:
            text, fix = text.split(": run hdrlog as root")[0], "run hdrlog as root"
        r.add(sec, "TLS library", "fail", text, fix)
        return []
    usable = [t for t in found if t.kind in REGISTRY]
    if not usable:
        r.add(sec, "TLS library", "fail", discover.explain_none(pid),
              "attach to the process that terminates TLS (hdrlog ps lists them); a parent covers its children")
        return []
    for t in usable:
        ver = f" {t.version}" if t.version else ""
        where = t.mapping.path + (" (deleted on disk: probed through /proc/PID/map_files)" if t.mapping.deleted else "")
        r.add(sec, "TLS library", "ok", f"{t.kind}{ver} in {where}")
        lib = REGISTRY[t.kind]
        wanted = [u.symbol for u in lib.uprobes]
        missing = [s for s in wanted if s not in t.symbols]
        tables = sorted({s.table for s in t.symbols.values()})
        r.add(sec, "symbols", "ok" if not missing else "info",
              f"{len(t.symbols)} of {len(wanted)} found in {', '.join(tables)}" +
              (f"; not present: {', '.join(missing)}" if missing else ""))
        try:
            with ElfFile(t.mapping.host_path) as elf:
                sites = placement.plan(elf, lib, t.symbols, path=t.mapping.host_path, mode="auto")
        except Exception as exc:  # noqa: BLE001 - report, do not crash
            r.add(sec, "placement", "warn", f"could not plan the probes: {exc}")
            sites = []
        seen = set()
        for s in sites:
            if (s.offset, s.kind) in seen:
                continue
            seen.add((s.offset, s.kind))
            status = "ok" if s.cost == "emulated" else "info"
            cost = "emulated, ~0.5 µs per hit" if s.cost == "emulated" else (
                "single-stepped, ~26 µs per hit on this VM" if s.cost == "single-step" else s.cost)
            r.add(sec, f"probe {s.kind}", status, f"{s.symbol} at {s.where} ({s.insn or '?'}; {cost}): {s.why}")
        st, text = _attribution(t.kind, cmdline)
        r.add(sec, "attribution", st, text)
    ports = _listening().get(pid, [])
    r.add(sec, "listening", "info", f"TCP ports {', '.join(map(str, ports))}" if ports else
          "no listening TCP port (a client, or its workers listen: see children)")
    try:
        kids = p.children(recursive=True)
    except psutil.Error:
        kids = []
    if kids:
        with_tls = []
        for k in kids[:64]:
            try:
                if any(t.kind in REGISTRY for t in discover.find_tls(k.pid)):
                    with_tls.append(f"{k.pid} ({k.name()})")
            except (HdrlogError, psutil.Error):
                continue
        r.add(sec, "children", "info", f"{len(kids)} child process(es), {len(with_tls)} with TLS code, followed by "
              f"attach: {', '.join(with_tls[:8]) or 'none'}")
    return usable


# ------------------------------------------------------------------------------------------ probe
class _Counts:
    """Pipeline tap and sink for --probe-seconds: events per TLS function, attribution, parsed messages."""

    def __init__(self):
        self.fn: Counter = Counter()
        self.kinds: Counter = Counter()
        self.data: Counter = Counter()  # direction -> data events
        self.attr: dict[tuple, int] = {}
        self.first: dict[int, bytes] = {}  # direction -> first bytes seen
        self.messages: Counter = Counter()
        self.protos: Counter = Counter()
        self.lost = 0
        self.truncated = 0

    def on_event(self, ev, tracker) -> None:
        from hdrlog.events import Kind

        self.fn[ev.fn] += 1
        self.kinds[ev.kind] += 1
        key = (ev.pid, ev.conn)
        c = tracker.conns.get(key)
        if c is not None:
            self.attr[key] = c.attr
        if ev.kind == Kind.DATA and ev.data:
            self.data[ev.dir] += 1
            if ev.offset == 0 and ev.dir not in self.first:
                self.first[ev.dir] = bytes(ev.data[:24])

    def write(self, rec: dict) -> None:
        t = rec.get("type")
        if t == "http":
            self.messages[rec.get("kind")] += 1
            self.protos[rec.get("proto")] += 1
            self.truncated += bool(rec.get("truncated"))
        elif t == "loss":
            self.lost = max(self.lost, rec.get("total_events") or 0)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def _classify(first: bytes) -> str:
    """What the first bytes of a connection look like, when they did not parse as HTTP."""
    if first.startswith(b"PRI * HTTP/2"):
        return "HTTP/2 (the h2 connection preface)"
    line = first.split(b"\r\n", 1)[0]
    if line and all(32 <= b < 127 for b in line[:16]):
        return f"text starting {line[:16].decode('ascii')!r}, not an HTTP/1 request or status line"
    if len(first) >= 9 and first[3] <= 9:  # 3-byte length, then an h2 frame type 0..9
        return "binary frames (HTTP/2 whose preface was not seen, or another protocol)"
    return f"binary data (first bytes {first[:8].hex(' ')}), not HTTP/1"


def probe(r: Report, pid: int, targets: list, seconds: float, ports: list[int]) -> None:
    from hdrlog.conntrack import ATTRIBUTION
    from hdrlog.events import Dir, Fn
    from hdrlog.session import Options, Session, install_signal_handlers
    from hdrlog.tlslibs import REGISTRY


    sec = f"probe ({seconds:g} s)"
    counts = _Counts()
    stop = threading.Event()
    install_signal_handlers(stop)
    sess = Session(Options(pids=[pid], duration=seconds, event_tap=counts.on_event), counts, stop=stop)
    try:
        sess.start()
        sess.run()
    except HdrlogError as exc:
        r.add(sec, "attach", "fail", str(exc).rstrip("."), "see the checks above")
        return
    finally:
        sess.close()
    r.add(sec, "attach", "ok", f"attached to {len(sess.targets) or 1} process(es) for {seconds:g} s")
    names = {f.name.lower(): f for f in Fn}
    probed = []
    for t in targets:
        for u in REGISTRY[t.kind].uprobes:
            fn = names.get(u.symbol.lower()) or names.get({"crypto/tls.(*Conn).Read": "go_read",
                                                           "crypto/tls.(*Conn).Write": "go_write",
                                                           "crypto/tls.(*Conn).Close": "go_close"}.get(u.symbol, ""))
            if fn is not None and u.symbol in t.symbols and (u.symbol, fn) not in probed:
                probed.append((u.symbol, fn))
    copies = [(name, fn) for name, fn in (("ssl3_read_bytes (copy site)", Fn.OSSL_READ_BYTES),
                                          ("ssl3_write_bytes (copy site)", Fn.OSSL_WRITE_BYTES)) if counts.fn.get(fn)]
    if copies:  # the read/write functions are not probed themselves then: their zero counts would mislead
        probed = [(sym, fn) for sym, fn in probed if counts.fn.get(fn) or not sym.startswith(("SSL_read", "SSL_write"))]
    fired = ", ".join(f"{sym} {counts.fn.get(fn, 0)}" for sym, fn in probed + copies)
    total = sum(counts.fn.values())
    hint = f" (e.g. curl -k https://127.0.0.1:{ports[0]}/)" if ports else ""
    if total == 0:
        r.add(sec, "events", "fail", f"no probe fired in {seconds:g} s ({fired}): process {pid} made no TLS reads "
              f"or writes while hdrlog was attached",
              f"send traffic to it during the probe{hint}, or attach to the process that serves it")
        return
    r.add(sec, "events", "ok", f"{total} events: {fired}")
    reads, writes = counts.data.get(Dir.IN, 0), counts.data.get(Dir.OUT, 0)
    if reads + writes == 0:
        r.add(sec, "data", "fail", "TLS handshakes/frees were seen but no application data was read or written",
              f"send requests (not only connections){hint}")
        return
    if not reads or not writes:
        missing = "reads" if not reads else "writes"
        r.add(sec, "data", "warn", f"{reads} data reads and {writes} writes: no {missing} seen, so one side of each "
              "exchange is missing (the process may use a TLS function hdrlog does not probe)")
    else:
        r.add(sec, "data", "ok", f"{reads} data reads, {writes} data writes")
    nmsg = sum(counts.messages.values())
    if nmsg == 0:
        first = counts.first.get(Dir.IN) or counts.first.get(Dir.OUT) or b""
        r.add(sec, "parsed", "fail", f"events arrived but no HTTP message parsed: the traffic is {_classify(first)}",
              "hdrlog parses HTTP/1.x (and HTTP/2 where supported); other protocols are not shown")
    else:
        protos = ", ".join(f"{k} {v}" for k, v in counts.protos.items())
        r.add(sec, "parsed", "ok", f"{nmsg} HTTP messages ({counts.messages.get('request', 0)} requests, "
              f"{counts.messages.get('response', 0)} responses; {protos})")
    by_attr = Counter()
    for a in counts.attr.values():
        by_attr[ATTRIBUTION.get(a) or "unknown"] += 1
    exact = by_attr.get("socket", 0) + by_attr.get("go-fd", 0)
    inferred = by_attr.get("recv-before", 0) + by_attr.get("send-after", 0)
    unknown = by_attr.get("unknown", 0)
    text = f"{len(counts.attr)} connection(s): {exact} exact, {inferred} inferred, {unknown} without addresses"
    if unknown:
        r.add(sec, "attribution", "warn", text + " (no socket I/O was seen on the TLS call's thread)")
    else:
        r.add(sec, "attribution", "ok", text)
    if counts.lost:
        r.add(sec, "loss", "warn", f"{counts.lost} events lost: the ring buffer was full", "attach --ringbuf-mb 16")
    if counts.truncated:
        r.add(sec, "truncation", "info", f"{counts.truncated} messages truncated", "attach --max-bytes 65536")


# -------------------------------------------------------------------------------------------- cli
def add_parser(sub) -> None:
    p = sub.add_parser(
        "doctor", help="check this machine (and a process) and say why capture would or would not work",
        description="Check privileges, kernel features (uprobes, BPF ring buffer, tracefs, BTF), bcc and kernel "
        "headers (with a real compile of the probes); with --pid, show the exact plan for that process: TLS "
        "library and version, each probe's symbol and placement, how connections are attributed; with "
        "--probe-seconds, attach briefly and say which probes fired and what parsed.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--pid", type=int, metavar="PID", help="also plan the probes for this process")
    p.add_argument("--probe-seconds", type=float, metavar="N",
                   help="with --pid: attach for N seconds and report which probes fired and what was parsed")
    p.add_argument("--no-compile", action="store_true", help="skip compiling the probes (saves a few seconds)")
    p.add_argument("--json", action="store_true", help="print the checks as JSON")


def run(args) -> int:
    if args.probe_seconds is not None and args.pid is None:
        raise HdrlogError("--probe-seconds needs --pid.")
    if args.probe_seconds is not None and args.probe_seconds <= 0:
        raise HdrlogError("--probe-seconds must be > 0.")
    r = Report()
    ready = machine_checks(r, compile_probes=not args.no_compile)
    targets = []
    if args.pid is not None:
        if any(i.name == "python packages" and i.status == "fail" for i in r.items):
            r.add(f"process {args.pid}", "plan", "info", "not planned (hdrlog's Python packages are missing)")
        else:
            targets = process_checks(r, args.pid)
    if args.probe_seconds is not None:
        sec = f"probe ({args.probe_seconds:g} s)"
        if not ready:
            r.add(sec, "attach", "fail", "not attempted: a machine check failed", "fix the machine checks above")
        elif not targets:
            r.add(sec, "attach", "fail", "not attempted: the process has no TLS code hdrlog can probe",
                  "see the process checks above")
        else:
            from hdrlog.ps import _listening

            probe(r, args.pid, targets, args.probe_seconds, _listening().get(args.pid, []))
    if args.json:
        import json

        sys.stdout.write(json.dumps({"ok": not r.failed, "checks": [asdict(i) for i in r.items]}, indent=2) + "\n")
    else:
        sys.stdout.write(r.render(sys.stdout.isatty()))
    return 1 if r.failed else 0
