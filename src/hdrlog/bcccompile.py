"""bcc's compile without its /proc/kallsyms pass.

bcc 0.26 (and upstream since) asks, once per compile, whether the kernel has the symbols
`bpf_probe_read_kernel` and `bpf_probe_read_user` (b_frontend_action.cc: check_bpf_probe_read_kernel/_user)
to choose between those helpers and the old bpf_probe_read. To answer, libbcc reads the whole of
/proc/kallsyms (120k lines here) into a sorted vector and a hash map of every name, looks up one or two
names, and frees it all: ~0.19 s of a ~0.42 s compile on the reference VM, for two yes/no answers.

compile() runs bcc in a thread of its own that first gets a private mount namespace (mount namespaces and
the working directory are per thread once unshared) and, there only, bind-mounts over /proc/kallsyms a
file holding just the real lines of those two symbols, copied verbatim from /proc/kallsyms. bcc's parser
sees the same lines for the names it asks about, so it makes the same choice; everything else it reads
(kernel headers, tracefs) is the same mount tree. The rest of the process never sees the bind: the
namespace is made private before it, and it ends with the thread.

Reading /proc/kallsyms ourselves still costs ~0.06 s (the kernel formatting 120k lines), so the subset is
kept for the rest of the boot in /run/hdrlog/kallsyms-<boot id>-<euid> (tmpfs: gone at reboot, when the
addresses change; per euid because what /proc/kallsyms shows depends on the reader's privileges). The two
symbols are core kernel functions: they cannot appear or go away while the kernel runs.

Without CAP_SYS_ADMIN (CAP_BPF + CAP_PERFMON only), or if any step fails, bcc compiles as it always did.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import tempfile
import threading

KALLSYMS = "/proc/kallsyms"
BOOT_ID = "/proc/sys/kernel/random/boot_id"
CACHE_DIR = "/run/hdrlog"
# the names bcc 0.26 resolves while compiling (and nothing else in /proc/kallsyms)
BCC_KSYMS = (b"bpf_probe_read_kernel", b"bpf_probe_read_user")

_CLONE_NEWNS = 0x00020000
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p)
_libc.unshare.argtypes = (ctypes.c_int,)

# how the last compile() went: "kallsyms-subset" or why it fell back (for tests and `--verbose`-style checks)
last_mode = ""


def kallsyms_subset(text: bytes, names=BCC_KSYMS) -> bytes:
    """The lines of /proc/kallsyms text (`ADDR TYPE NAME[\\t[MODULE]]`) whose NAME is one of `names`,
    verbatim and in their order."""
    out = []
    for name in names:
        needle = b" " + name
        i = text.find(needle)
        while i >= 0:
            end = i + len(needle)
            after = text[end:end + 1]
            start = text.rfind(b"\n", 0, i) + 1
            # the name field ends here, and the field before it is the one-letter type
            if after in (b"\n", b"\t", b"") and i - start >= 2 and text[i - 2:i - 1] == b" ":
                stop = text.find(b"\n", end)
                out.append((start, text[start:len(text) if stop < 0 else stop + 1]))
            i = text.find(needle, end)
    return b"".join(line for _, line in sorted(out))


def _check(rc: int, what: str) -> None:
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def boot_subset(cache_dir: str = CACHE_DIR) -> bytes:
    """kallsyms_subset of /proc/kallsyms, read once per boot (and euid) and kept in cache_dir."""
    try:
        with open(BOOT_ID) as f:
            boot = f.read().strip()
    except OSError:
        boot = ""
    path = os.path.join(cache_dir, f"kallsyms-{boot}-{os.geteuid()}") if boot.replace("-", "").isalnum() else None
    if path:
        try:
            st = os.stat(cache_dir)
            if st.st_uid == os.geteuid() and not st.st_mode & 0o022:  # ours alone, or not trusted
                with open(path, "rb") as f:
                    return f.read()
        except OSError:
            pass
    with open(KALLSYMS, "rb") as f:
        subset = kallsyms_subset(f.read())
    if path:
        try:
            os.makedirs(cache_dir, mode=0o700, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".kallsyms-")
            with os.fdopen(fd, "wb") as f:
                f.write(subset)
            os.replace(tmp, path)  # whole or absent, also with two hdrlogs starting at once
        except OSError:
            pass
    return subset


def _hide_kallsyms(tmpdir: str) -> None:
    """In the calling thread only: a private mount namespace in which /proc/kallsyms is the subset."""
    subset = boot_subset()
    path = os.path.join(tmpdir, "kallsyms")
    with open(path, "wb") as f:
        f.write(subset)
    _check(_libc.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    # nothing mounted below may propagate back to the machine's namespace
    _check(_libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None), "mount --make-rprivate /")
    _check(_libc.mount(path.encode(), KALLSYMS.encode(), None, _MS_BIND, None), f"bind {KALLSYMS}")


def compile(make, fast: bool = True):
    """make() (which calls bcc's BPF(...)) in a thread whose /proc/kallsyms holds only what bcc asks for;
    its result, or the exception it raised. fast=False: the same thread, /proc/kallsyms untouched."""
    global last_mode
    result: dict = {}

    def run() -> None:
        global last_mode
        mode = "plain"
        if fast:
            tmpdir = tempfile.mkdtemp(prefix="hdrlog-ksyms-")
            try:
                _hide_kallsyms(tmpdir)
                mode = "kallsyms-subset"
            except OSError as exc:
                mode = f"plain ({exc.strerror or exc})"
            finally:
                shutil.rmtree(tmpdir, ignore_errors=True)  # the bind holds the file; nothing stays on disk
        last_mode = mode
        try:
            result["value"] = make()
        except BaseException as exc:  # handed to the caller's thread
            result["error"] = exc

    t = threading.Thread(target=run, name="hdrlog-bcc-compile", daemon=True)
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]
    return result["value"]
