"""Machine checks run before attaching probes (and by ``hdrlog doctor`` / ``hdrlog setup``).

Every check returns a :class:`Check`; a failed one carries a one-clause ``detail`` and a ``fix``
that together read as one sentence (``Check.message()``).  This module imports only the standard
library, so it works (and explains what is missing) under any interpreter, bcc or not.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import importlib
import os
import platform
import re
import sys
from dataclasses import dataclass

from hdrlog.errors import HdrlogError
from hdrlog.procstate import exited

TRACEFS = "/sys/kernel/tracing"
DEBUGFS_TRACING = "/sys/kernel/debug/tracing"
KHEADERS_TAR = "/sys/kernel/kheaders.tar.xz"
UPROBE_PMU_TYPE = "/sys/bus/event_source/devices/uprobe/type"
BTF_VMLINUX = "/sys/kernel/btf/vmlinux"

CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39

_MOUNT_TRACEFS = f"mount -t tracefs nodev {TRACEFS}"
_BCC_FIX = (
    "install Debian's python3-bpfcc (apt-get install python3-bpfcc) and run hdrlog with /usr/bin/python3 "
    "or from a venv made with `/usr/bin/python3 -m venv --system-site-packages` "
    "(PyPI's `bcc` is an unrelated package: do not pip install it)"
)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None

    def message(self) -> str:
        """One sentence: what is wrong and, when known, how to fix it."""
        if self.ok or not self.fix:
            return self.detail
        return f"{self.detail}: {self.fix}"


# --------------------------------------------------------------------------------------- privileges
def _cap_eff(status_path: str = "/proc/self/status") -> int | None:
    try:
        with open(status_path) as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_privileges() -> Check:
    """Loading BPF programs and opening uprobe perf events needs CAP_BPF+CAP_PERFMON (or CAP_SYS_ADMIN).

    Root normally has them all; root inside a container that dropped them does not, so the effective
    capability set is what is judged, and euid only shapes the message.
    """
    euid = os.geteuid()
    caps = _cap_eff()
    if caps is None:  # no /proc: judge by euid alone
        if euid == 0:
            return Check("privileges", True, "running as root (capabilities unreadable)", None)
        return Check("privileges", False, f"running as uid {euid}, not root", "run hdrlog as root (sudo hdrlog …)")
    has = lambda bit: bool(caps >> bit & 1)  # noqa: E731
    if has(CAP_BPF) and has(CAP_PERFMON):
        who = "root" if euid == 0 else f"uid {euid}"
        return Check("privileges", True, f"running as {who} with CAP_BPF and CAP_PERFMON", None)
    if has(CAP_SYS_ADMIN):
        who = "root" if euid == 0 else f"uid {euid}"
        return Check("privileges", True, f"running as {who} with CAP_SYS_ADMIN", None)
    if euid == 0:
        return Check(
            "privileges",
            False,
            f"running as root but without CAP_BPF/CAP_PERFMON or CAP_SYS_ADMIN (CapEff={caps:#x})",
            "run hdrlog with full root capabilities (in a container: --privileged, or --cap-add BPF,PERFMON)",
        )
    return Check(
        "privileges",
        False,
        f"running as uid {euid} without CAP_BPF+CAP_PERFMON (CapEff={caps:#x})",
        "run hdrlog as root (sudo hdrlog …), or grant it the capabilities "
        "(setcap cap_bpf,cap_perfmon,cap_dac_read_search+ep on the interpreter)",
    )


# ------------------------------------------------------------------------------------------ tracefs
def _tracing_dir() -> str | None:
    for d in (TRACEFS, DEBUGFS_TRACING):
        if os.path.isdir(os.path.join(d, "events")):
            return d
    return None


def _mount_tracefs() -> str | None:
    """Mount tracefs on TRACEFS; return None on success, else the error text."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
    if libc.mount(b"nodev", TRACEFS.encode(), b"tracefs", 0, None) != 0:
        e = ctypes.get_errno()
        return f"{errno.errorcode.get(e, e)}: {os.strerror(e)}"
    return None


def _tracefs(mount: bool) -> tuple[Check, list[str]]:
    d = _tracing_dir()
    if d:
        return Check("tracefs", True, f"tracefs at {d}", None), []
    if mount and os.geteuid() == 0:
        err = _mount_tracefs()
        d = _tracing_dir()
        if d:
            return Check("tracefs", True, f"tracefs at {d} (mounted now)", None), [f"mounted tracefs on {TRACEFS}"]
        return (
            Check("tracefs", False, f"tracefs is not mounted and mounting it failed ({err})", f"run `{_MOUNT_TRACEFS}`"),
            [],
        )
    return Check("tracefs", False, f"tracefs is not mounted at {TRACEFS}", f"run `{_MOUNT_TRACEFS}` as root"), []


def check_tracefs(mount: bool) -> Check:
    return _tracefs(mount)[0]


# ---------------------------------------------------------------------------------------------- bcc
def check_bcc() -> Check:
    where = f"{sys.executable} (Python {platform.python_version()})"
    try:
        bcc = importlib.import_module("bcc")
    except Exception as exc:  # ImportError, or OSError when libbcc.so cannot be loaded
        return Check("bcc", False, f"bcc cannot be imported by {where} ({type(exc).__name__}: {exc})", _BCC_FIX)
    if not hasattr(bcc, "BPF"):
        return Check(
            "bcc", False, f"the `bcc` module imported by {where} ({bcc.__file__}) is not BCC's Python binding", _BCC_FIX
        )
    version = getattr(bcc, "__version__", "?")
    return Check("bcc", True, f"bcc {version} from {os.path.dirname(bcc.__file__ or '?')}", None)


# ---------------------------------------------------------------------------------- kernel headers
_HDR_RE = re.compile(r"^linux-headers-(\d+\.\d+(?:\.\d+)?-\d+)-(.+)$")


def _debian_arch() -> str:
    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "i686": "i386", "armv7l": "armhf"}.get(m, m)


def _vkey(ver: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.split(r"[.-]", ver) if x.isdigit())


def find_headers_dirs(root: str = "/") -> tuple[str, str] | None:
    """Highest Debian header pair under root: (/usr/src/linux-headers-V-ARCH, /usr/src/linux-headers-V-common).

    Paths are returned as they are under ``root`` (absolute on the real machine).
    """
    src = os.path.join(root, "usr/src")
    arch = _debian_arch()
    try:
        names = os.listdir(src)
    except OSError:
        return None
    best = None
    for name in names:
        m = _HDR_RE.match(name)
        if not m:
            continue
        ver, flavour = m.groups()
        if flavour.startswith("common") or not (flavour == arch or flavour.endswith("-" + arch)):
            continue
        common = f"linux-headers-{ver}-common" + ("-rt" if flavour.startswith("rt-") else "")
        flavoured, common_path = os.path.join(src, name), os.path.join(src, common)
        if not (os.path.isfile(os.path.join(flavoured, "include/generated/autoconf.h"))
                and os.path.isdir(os.path.join(common_path, "include/linux"))):
            continue
        key = (_vkey(ver), flavour == arch)  # newest first; the plain flavour over cloud/rt at equal version
        if best is None or key > best[0]:
            best = (key, flavoured, common_path)
    return (best[1], best[2]) if best else None


def _modules_dir(root: str, release: str) -> str:
    return os.path.join(root, "lib/modules", release)


def _tree_complete(build: str, source: str) -> bool:
    """What bcc needs: generated/autoconf.h in build, linux/kconfig.h in source (when present) else build."""
    if not os.path.isfile(os.path.join(build, "include/generated/autoconf.h")):
        return False
    src = source if os.path.exists(source) else build
    return os.path.isfile(os.path.join(src, "include/linux/kconfig.h"))


def _headers_fix(release: str, root: str = "/") -> str:
    mod = os.path.join("/lib/modules", release)
    found = find_headers_dirs(root)
    if found:
        build_t, src_t = (os.path.join("/usr/src", os.path.basename(p)) for p in found)
        pkg_step = ""
    else:
        arch = _debian_arch()
        build_t, src_t = f"/usr/src/linux-headers-<ver>-{arch}", "/usr/src/linux-headers-<ver>-common"
        pkg_step = f"apt-get install linux-headers-{arch} && "
    return (
        f"run `hdrlog setup` (or: {pkg_step}mkdir -p {mod} && ln -sfn {build_t} {mod}/build "
        f"&& ln -sfn {src_t} {mod}/source)"
    )


def _is_our_link(path: str) -> bool:
    """A symlink we may replace: missing, dangling, or any symlink (never a real directory)."""
    return os.path.islink(path) or not os.path.lexists(path)


def _kernel_headers(fix: bool, root: str = "/", release: str | None = None) -> tuple[Check, list[str]]:
    release = release or os.uname().release
    mod = _modules_dir(root, release)
    build, source = os.path.join(mod, "build"), os.path.join(mod, "source")
    if _tree_complete(build, source):
        shown = os.path.realpath(build)
        return Check("kernel headers", True, f"kernel headers for {release} at {shown}", None), []
    if os.path.isfile(os.path.join(root, KHEADERS_TAR.lstrip("/"))):
        return Check("kernel headers", True, f"kernel headers for {release} from {KHEADERS_TAR}", None), []

    found = find_headers_dirs(root)
    what = f"no kernel headers for {release}"
    if os.path.lexists(build):
        what += f" ({build} is incomplete" + (" or dangling)" if os.path.islink(build) else ")")
    if not fix or not found:
        return Check("kernel headers", False, what, _headers_fix(release, root)), []
    if not (_is_our_link(build) and _is_our_link(source)):
        return (
            Check(
                "kernel headers",
                False,
                f"{what}, and {mod} holds real directories that hdrlog will not replace",
                f"fix that tree by hand, or move it away and run `hdrlog setup`",
            ),
            [],
        )
    flavoured, common = found
    actions = []
    os.makedirs(mod, exist_ok=True)
    for link, target in ((build, flavoured), (source, common)):
        if os.path.islink(link) and os.readlink(link) == target:
            continue
        tmp = f"{link}.hdrlog-tmp"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(target, tmp)
        os.replace(tmp, link)  # atomic swap, also over a dangling link
        actions.append(f"linked {link} -> {target}")
    if _tree_complete(build, source):
        return Check("kernel headers", True, f"kernel headers for {release} at {flavoured} (linked now)", None), actions
    return Check("kernel headers", False, f"{what} even after linking {flavoured}", _headers_fix(release, root)), actions


def check_kernel_headers(fix: bool, root: str = "/", *, release: str | None = None) -> Check:
    """bcc compiles against /lib/modules/$(uname -r)/{build,source} (or /sys/kernel/kheaders.tar.xz).

    Debian ships headers only for its own kernels; for other kernels (this VM's 6.18) the newest Debian
    pair /usr/src/linux-headers-V-ARCH (build: generated files) + -common (source) works for uprobe
    programs, provided both links exist.  With ``fix`` they are created (only ever replacing symlinks).
    """
    return _kernel_headers(fix, root, release)[0]


# ------------------------------------------------------------------------------------ uprobes / BTF
def check_uprobes() -> Check:
    if os.path.isfile(UPROBE_PMU_TYPE):
        return Check("uprobes", True, "uprobe perf PMU available", None)
    d = _tracing_dir()
    if d and os.path.exists(os.path.join(d, "uprobe_events")):
        return Check("uprobes", True, f"uprobes via {d}/uprobe_events", None)
    return Check(
        "uprobes",
        False,
        "this kernel offers no uprobes (no uprobe perf PMU, no tracefs uprobe_events)",
        f"use a kernel built with CONFIG_UPROBE_EVENTS=y (if tracefs is just unmounted: `{_MOUNT_TRACEFS}`)",
    )


def check_btf() -> Check:
    if os.path.isfile(BTF_VMLINUX):
        return Check("btf", True, f"kernel BTF at {BTF_VMLINUX}", None)
    return Check("btf", False, f"no kernel BTF ({BTF_VMLINUX} is missing)", "use a kernel built with CONFIG_DEBUG_INFO_BTF=y")


# ------------------------------------------------------------------------------- stale uprobe events
_BCC_EVENT_RE = re.compile(r"^([pr]):(\S+?)/(\S+_bcc_(\d+))(?:\s|$)")


def stale_uprobe_events(tracing_dir: str | None = None) -> list[tuple[str, int]]:
    """tracefs uprobe_events entries that bcc-based tools (libbcc's tracefs fallback names them
    `..._bcc_<tool pid>`) left behind when they died: [("group/event", tool pid)], tool pid dead. Entries of
    live processes are never listed. hdrlog itself never writes tracefs (uprobelink.py)."""
    d = tracing_dir or _tracing_dir()
    if d is None:
        return []
    try:
        with open(os.path.join(d, "uprobe_events")) as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        m = _BCC_EVENT_RE.match(line)
        if m and exited(int(m.group(4))):
            out.append((f"{m.group(2)}/{m.group(3)}", int(m.group(4))))
    return out


def remove_uprobe_events_command(events: list[tuple[str, int]], tracing_dir: str | None = None) -> str:
    d = tracing_dir or _tracing_dir() or TRACEFS
    return f"printf '%s\\n' {' '.join('-:' + e for e, _ in events)} >> {d}/uprobe_events"


def write_uprobe_events(line: str, tracing_dir: str | None = None) -> None:
    """One command to uprobe_events, as `echo ... >>` does it (Python's append mode seeks, which tracefs refuses)."""
    fd = os.open(os.path.join(tracing_dir or _tracing_dir() or TRACEFS, "uprobe_events"), os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def remove_stale_uprobe_events(tracing_dir: str | None = None) -> tuple[list[str], list[str]]:
    """Remove the entries stale_uprobe_events() lists (re-checked one by one just before); (removed, errors)."""
    d = tracing_dir or _tracing_dir()
    removed, errors = [], []
    for event, pid in stale_uprobe_events(d):
        if not exited(pid):
            continue
        try:
            write_uprobe_events(f"-:{event}\n", d)
            removed.append(event)
        except OSError as exc:  # EBUSY: something still has it open
            errors.append(f"{event}: {exc.strerror}")
    return removed, errors


# ------------------------------------------------------------------------------------------ summary
def require_attach_ready() -> None:
    """Raise HdrlogError with the first failed check's sentence (fix included); mounts tracefs if needed."""
    for run in (
        check_privileges,
        lambda: check_tracefs(mount=True),
        check_uprobes,
        check_bcc,
        lambda: check_kernel_headers(fix=False),
    ):
        c = run()
        if not c.ok:
            raise HdrlogError(c.message() + ".")


# ------------------------------------------------------------------------------ compile diagnostics
_KERNEL_HDR_RE = re.compile(r"'(\./include/|generated/|linux/|asm/|asm-generic/|uapi/)[^']*' file not found")
_ERR_LINE_RE = re.compile(r"(?:^|\s)(?:fatal )?error:")


def explain_compile_error(stderr_text: str) -> str:
    """One sentence for a failed bcc compile, from libbcc/clang's stderr."""
    text = stderr_text or ""
    release = os.uname().release
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    missing = _KERNEL_HDR_RE.search(text)
    if (
        "Unable to find kernel headers" in text
        or missing
        or re.search(r"chdir\(/lib/modules/[^)]*\): No such file", text)
    ):
        what = f"bcc could not compile the probes: no usable kernel headers for {release}"
        if missing:
            what += f" ({missing.group(0)})"
        return f"{what}; fix: {_headers_fix(release)}."
    if "Operation not permitted" in text or "EPERM" in text:
        return f"the kernel refused to load the probes (Operation not permitted); fix: {check_privileges().message()}."
    first = next((ln for ln in lines if _ERR_LINE_RE.search(ln)), None)
    if first is None:
        first = next((ln for ln in reversed(lines) if not ln.startswith(("Traceback", "File ", "raise "))), "no diagnostics")
    return f"the BPF program failed to compile: {first.rstrip('.')}; this is a bug in hdrlog, please report it with the output of `hdrlog doctor`."
