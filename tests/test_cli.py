"""The command line as a user meets it: help, `hdrlog demo`, `replay` errors, and every attach error.

An error is one sentence on stderr (`hdrlog: error: ....`, no traceback), exit code 2, and nothing left
attached. Errors that need a working kernel side to be reached (the process checks come after the
privilege/tracefs/bcc/headers checks) are marked `kernel`; the rest run anywhere.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT

SRC = ROOT / "src"
PY = sys.executable
IS_ROOT = os.geteuid() == 0
GO_NO_TLS = "/usr/lib/google-cloud-sdk/bin/gcloud-crc32c"  # a stripped Go binary that does not link crypto/tls

kernel = pytest.mark.kernel


def hdrlog(*args, prefix=(), timeout=60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, PY, "-m", "hdrlog", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout, **kw)


def one_error(r: subprocess.CompletedProcess) -> str:
    """The run failed the documented way: exit 2, exactly one `hdrlog: error: ...` sentence on stderr."""
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    line = lines[0]
    assert line.startswith("hdrlog: error: ") and line.endswith("."), line
    assert "Traceback" not in r.stderr and "Exception" not in r.stderr
    return line[len("hdrlog: error: "):]


def uprobe_events() -> str:
    for d in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        try:
            return Path(d, "uprobe_events").read_text()
        except OSError:
            continue
    return ""


def hdrlog_uprobe_lines(text: str, pid: int) -> list[str]:
    """bcc names its tracefs events ..._bcc_<tracer pid>; none may mention a run of ours."""
    return [ln for ln in text.splitlines() if f"bcc_{pid}" in ln]


def dead_pid() -> int:
    """A pid that existed a moment ago and is now reaped."""
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


@pytest.fixture
def sleeper(procs):
    return procs(["sleep", "30"])


@pytest.fixture
def ssl_idler(procs):
    """A process with libssl mapped (Python's ssl) that does nothing: a valid target."""
    return procs([PY, "-c", "import ssl, time; time.sleep(60)"])


# ------------------------------------------------------------------------------------------- help
def test_help_lists_commands():
    r = hdrlog("--help")
    assert r.returncode == 0, r.stderr
    for cmd in ("attach", "demo", "replay", "setup"):
        assert cmd in r.stdout
    assert r.stderr == ""


def test_no_command_prints_help_and_exits_2():
    r = hdrlog()
    assert r.returncode == 2 and "attach" in r.stdout


def test_attach_help_documents_the_contract():
    r = hdrlog("attach", "--help")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for opt in ("--pid", "--output", "--duration", "--max-bytes", "--show-secrets", "--ringbuf-mb"):
        assert opt in out, opt
    assert "0600" in out and "stderr" in out and "redacted" in out
    assert "Exit codes" in out
    assert "--ringbuf-pages" not in out, "a test-only flag must stay hidden"


def test_version():
    r = hdrlog("--version")
    assert r.returncode == 0 and r.stdout.startswith("hdrlog ")


@pytest.mark.parametrize("args, what", [
    (["attach"], "--pid"),
    (["attach", "--pid", "abc"], "invalid int"),
    (["attach", "--pid", "1", "--duration", "0"], "must be > 0"),
])
def test_usage_errors_exit_2(args, what):
    r = hdrlog(*args)
    assert r.returncode == 2 and what in r.stderr and "Traceback" not in r.stderr


def test_bad_ringbuf_size_is_one_sentence():
    msg = one_error(hdrlog("attach", "--pid", "1", "--ringbuf-mb", "3"))
    assert "power of two" in msg


# ----------------------------------------------------------------------------------------- replay
def test_replay_of_a_file_that_is_not_a_recording(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "http"}\n')
    msg = one_error(hdrlog("replay", str(bad)))
    assert str(bad) in msg and "not an hdrlog event recording" in msg


def test_replay_of_a_missing_file(tmp_path):
    msg = one_error(hdrlog("replay", str(tmp_path / "nope.jsonl")))
    assert "nope.jsonl" in msg


def test_replay_of_a_directory(tmp_path):
    msg = one_error(hdrlog("replay", str(tmp_path)))
    assert str(tmp_path) in msg


def test_replay_of_a_corrupt_recording(tmp_path):
    bad = tmp_path / "corrupt.jsonl"
    bad.write_text('{"type":"hdrlog-events","abi":1,"wall_offset_ns":0,"max_bytes":16384,"libs":{}}\n'
                   "this is not json\n")
    msg = one_error(hdrlog("replay", str(bad)))
    assert "corrupt.jsonl" in msg and "line 2" in msg


def test_replay_of_a_real_recording_works():
    fx = ROOT / "fixtures" / "python_ssl_server_keepalive.events.jsonl"
    if not fx.exists():
        pytest.skip("fixture not recorded")
    r = hdrlog("replay", str(fx))
    assert r.returncode == 0, r.stderr
    assert '"type":"http"' in r.stdout


# ---------------------------------------------------------------------------------- --output file
def test_output_symlink_is_refused(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("keep me\n")
    link = tmp_path / "out.jsonl"
    link.symlink_to(target)
    msg = one_error(hdrlog("attach", "--pid", "1", "--output", str(link)))
    assert str(link) in msg and "symbolic link" in msg
    assert target.read_text() == "keep me\n"
    assert link.is_symlink()


needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (mknod, chown)")


@needs_root
def test_output_file_owned_by_someone_else_is_refused(tmp_path):
    """chmod 0600 would not keep the decrypted traffic from the file's owner."""
    f = tmp_path / "planted.jsonl"
    f.write_text("")
    f.chmod(0o644)
    os.chown(f, 65534, 65534)
    msg = one_error(hdrlog("attach", "--pid", "1", "--output", str(f)))
    assert str(f) in msg and "uid 65534" in msg
    assert stat.S_IMODE(f.stat().st_mode) == 0o644 and f.read_text() == ""


@needs_root
def test_output_to_a_device_leaves_its_mode_alone(tmp_path):
    """--output /dev/null must not chmod /dev/null to 0600 (tested on a private copy of the device)."""
    dev = tmp_path / "null"
    os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.chmod(dev, 0o666)
    r = hdrlog("attach", "--pid", str(dead_pid()), "--output", str(dev))
    assert r.returncode == 2 and "does not exist" in r.stderr  # got past opening the output
    assert stat.S_IMODE(dev.stat().st_mode) == 0o666


def test_output_in_a_missing_directory_is_one_sentence(tmp_path):
    msg = one_error(hdrlog("attach", "--pid", "1", "--output", str(tmp_path / "no" / "such" / "f.jsonl")))
    assert "cannot write output file" in msg


# ------------------------------------------------------------------------------ privilege errors
def _setpriv(*args) -> list[str]:
    if not IS_ROOT or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux)")
    return ["setpriv", *args]


NOBODY = ("--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all")


def test_venv_is_usable_by_nobody():
    """Otherwise the privilege tests below would fail on an ImportError, not on the check they test."""
    r = subprocess.run([*_setpriv(*NOBODY), PY, "-c", "import hdrlog.cli, hdrlog.session, bcc"],
                       capture_output=True, text=True, timeout=60, cwd="/")
    assert r.returncode == 0, f"uid 65534 cannot run {PY} with hdrlog and bcc: {r.stderr}"


def test_not_root_is_one_sentence(sleeper):
    r = hdrlog("attach", "--pid", str(sleeper.pid), prefix=_setpriv(*NOBODY), cwd="/")
    msg = one_error(r)
    assert "uid 65534" in msg and "CAP_BPF" in msg and "root" in msg
    assert r.stdout == ""


def test_root_without_capabilities_is_one_sentence(sleeper):
    r = hdrlog("attach", "--pid", str(sleeper.pid), prefix=_setpriv("--inh-caps=-all", "--bounding-set=-all"))
    msg = one_error(r)
    assert "root but without CAP_BPF/CAP_PERFMON" in msg


# -------------------------------------------------------------------------- target process errors
@kernel
def test_pid_that_does_not_exist():
    pid = dead_pid()
    msg = one_error(hdrlog("attach", "--pid", str(pid)))
    assert msg == f"process {pid} does not exist."


@kernel
def test_pid_without_a_tls_library_says_what_was_searched(sleeper):
    msg = one_error(hdrlog("attach", "--pid", str(sleeper.pid)))
    assert f"PID {sleeper.pid} (sleep)" in msg
    assert "searched" in msg and "OpenSSL" in msg and "*ssl*" in msg


@kernel
def test_one_bad_pid_among_good_ones_fails_the_whole_attach(sleeper, ssl_idler):
    before = uprobe_events()
    r = hdrlog("attach", "--pid", str(ssl_idler.pid), "--pid", str(sleeper.pid))
    msg = one_error(r)
    assert f"PID {sleeper.pid}" in msg
    assert uprobe_events() == before


@kernel
@pytest.mark.skipif(not os.access(GO_NO_TLS, os.X_OK), reason=f"{GO_NO_TLS} not on this machine")
def test_go_binary_without_tls(procs, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    go = procs([GO_NO_TLS, str(fifo)])  # blocks opening the fifo
    time.sleep(0.3)
    msg = one_error(hdrlog("attach", "--pid", str(go.pid)))
    assert f"PID {go.pid}" in msg and "Go go1." in msg and "crypto/tls" in msg


@kernel
def test_zombie_pid_has_exited(procs):
    z = procs([PY, "-c", "import ssl"])  # exits at once; never waited for until the test ends: a zombie
    deadline = time.monotonic() + 10
    while Path(f"/proc/{z.pid}/stat").read_text().split(") ")[1][0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    msg = one_error(hdrlog("attach", "--pid", str(z.pid)))
    assert msg.startswith(f"process {z.pid} has already exited")


EXIT_DURING_ATTACH = textwrap.dedent("""
    import os, signal, sys, time
    from hdrlog import cli, session
    victim, out, others = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    found_targets = session.Session._initial_targets

    def found_then_killed(self):
        found = found_targets(self)           # the target was there and has libssl ...
        os.kill(victim, signal.SIGKILL)      # ... and dies before the probes are compiled and attached
        while os.path.exists(f"/proc/{victim}") and open(f"/proc/{victim}/stat").read().split(") ")[1][0] != "Z":
            time.sleep(0.01)
        return found

    session.Session._initial_targets = found_then_killed
    pids = [a for p in others for a in ("--pid", p)]  # attached first, then rolled back
    sys.exit(cli.main(["attach", *pids, "--pid", str(victim), "--output", out]))
""")


@kernel
@pytest.mark.parametrize("reaped", [True, False], ids=["reaped", "zombie"])
def test_pid_exits_during_attach(procs, tmp_path, reaped, ssl_idler):
    """The healthy target given first was already attached when the second one failed: it is detached."""
    victim = procs([PY, "-c", "import ssl, time; time.sleep(60)"])
    time.sleep(0.3)
    if reaped:
        threading.Thread(target=victim.p.wait, daemon=True).start()
    script = tmp_path / "race.py"
    script.write_text(EXIT_DURING_ATTACH)
    before = uprobe_events()
    r = subprocess.run([PY, str(script), str(victim.pid), str(tmp_path / "out.jsonl"), str(ssl_idler.pid)],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    msg = one_error(r)
    assert msg == f"process {victim.pid} exited while hdrlog was attaching to it."
    assert uprobe_events() == before
    from test_kernel_lifecycle import patched_bytes

    assert patched_bytes(ssl_idler.pid) == 0, "the target attached before the failure still has breakpoints"


@kernel
def test_pids_that_exit_right_after_being_given(tmp_path):
    """Short-lived targets, started just before hdrlog: whichever step notices, the result is one sentence
    and exit 2, or (if the target outlived the attach) a clean run that ends by itself, exit 0."""
    runs = []
    for life in (0.2, 0.6, 1.0, 1.4):
        # double fork: the target is nobody's child here (an orphan, reaped late by init)
        pid = int(subprocess.run(["sh", "-c", f"{PY} -c 'import ssl, time; time.sleep({life})' "
                                 ">/dev/null 2>&1 & echo $!"], capture_output=True, text=True).stdout)
        runs.append((life, pid, subprocess.Popen([PY, "-m", "hdrlog", "attach", "--pid", str(pid), "--output",
                                                  str(tmp_path / f"{pid}.jsonl")],
                                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)))
    for life, pid, p in runs:
        _, err = p.communicate(timeout=60)
        assert "Traceback" not in err and "cannot attach" not in err, (life, err)
        if p.returncode == 2:
            one_error(subprocess.CompletedProcess(p.args, 2, "", err))
            assert str(pid) in err
        else:
            assert p.returncode == 0, (life, p.returncode, err)
            assert "attached" in err and "every target process has exited" in err and "detached." in err


def _catches(pid: int, sig: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


@kernel
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_before_attached_exits_130_with_nothing_attached(ssl_idler, tmp_path, sig):
    """The documented exit code for a Ctrl-C (or SIGTERM) while hdrlog is still compiling/attaching."""
    for attempt in range(3):
        err = tmp_path / f"err{attempt}"
        with open(err, "w") as ef:
            p = subprocess.Popen([PY, "-m", "hdrlog", "attach", "--pid", str(ssl_idler.pid), "--output",
                                  str(tmp_path / "out.jsonl")], stdout=subprocess.DEVNULL, stderr=ef)
            deadline = time.monotonic() + 30
            while not _catches(p.pid, signal.SIGTERM):  # hdrlog's handlers are installed (Python's own
                assert p.poll() is None and time.monotonic() < deadline  # catch only SIGINT)
                time.sleep(0.002)
            early = "attached" not in err.read_text()
            p.send_signal(sig)
            rc = p.wait(30)
        text = err.read_text()
        if early and "attached to" not in text:
            break
    else:
        pytest.fail(f"hdrlog attached before the signal in 3 attempts: {text}")
    assert rc == 130, (rc, text)
    assert text == "hdrlog: interrupted before attaching; nothing is attached\n", text
    from test_kernel_lifecycle import patched_bytes

    assert patched_bytes(ssl_idler.pid) == 0


# ------------------------------------------------------------------ machine errors (mount namespace)
def _unshare(script: str, timeout=120) -> subprocess.CompletedProcess:
    if not IS_ROOT or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare (util-linux)")
    return subprocess.run(["unshare", "-m", "--propagation", "private", "bash", "-uc", script],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout)


def _split(r: subprocess.CompletedProcess) -> dict[str, subprocess.CompletedProcess]:
    """Runs of `step NAME cmd` in an _unshare script: NAME -> (rc, stdout, stderr)."""
    out = {}
    for name in [ln.split()[1] for ln in r.stdout.splitlines() if ln.startswith("@@step ")]:
        d = Path(f"/tmp/hdrlog-cli-{os.getpid()}-{name}")
        out[name] = subprocess.CompletedProcess(name, int((d / "rc").read_text()), (d / "out").read_text(),
                                                (d / "err").read_text())
        shutil.rmtree(d, ignore_errors=True)
    return out


STEP = f"""
step() {{ name=$1; shift; d=/tmp/hdrlog-cli-{os.getpid()}-$name; mkdir -p $d; echo "@@step $name"
          "$@" >$d/out 2>$d/err; echo $? >$d/rc; }}
"""


@kernel
def test_kernel_headers_missing_or_unusable(ssl_idler):
    """/lib/modules hidden: preflight explains; a tree that passes preflight but cannot compile: bcc's
    failure is explained in one sentence. Both name `hdrlog setup`."""
    rel = os.uname().release
    r = _unshare(STEP + f"""
        mount -t tmpfs none /lib/modules
        step missing {PY} -m hdrlog attach --pid {ssl_idler.pid}
        mkdir -p /lib/modules/{rel}/build/include/generated /lib/modules/{rel}/source/include/linux
        touch /lib/modules/{rel}/build/include/generated/autoconf.h /lib/modules/{rel}/source/include/linux/kconfig.h
        step broken {PY} -m hdrlog attach --pid {ssl_idler.pid}
    """)
    assert r.returncode == 0, r.stderr
    runs = _split(r)
    missing = one_error(runs["missing"])
    assert f"no kernel headers for {rel}" in missing and "hdrlog setup" in missing
    broken = one_error(runs["broken"])
    assert broken.startswith("bcc could not compile the probes") and "hdrlog setup" in broken, broken
    assert runs["broken"].stdout == ""
    from hdrlog import preflight

    assert preflight.check_kernel_headers(fix=False).ok, "the host's headers must be untouched"


@kernel
def test_tracefs_unmounted_is_mounted_or_explained(ssl_idler, tmp_path):
    """tracefs unmounted: hdrlog mounts it and works. Cannot be mounted (no mount point): one sentence
    saying how."""
    out = tmp_path / "out.jsonl"
    r = _unshare(STEP + f"""
        umount -R /sys/kernel/tracing 2>/dev/null || true
        umount -R /sys/kernel/debug 2>/dev/null || true
        step unmounted test -e /sys/kernel/tracing/events
        step works {PY} -m hdrlog attach --pid {ssl_idler.pid} --duration 0.3 --output {out}
        step mounted test -e /sys/kernel/tracing/events
        umount -R /sys/kernel/tracing
        mount -t tmpfs -o ro none /sys/kernel
        step nowhere {PY} -m hdrlog attach --pid {ssl_idler.pid}
    """)
    assert r.returncode == 0, r.stderr
    runs = _split(r)
    assert runs["unmounted"].returncode == 1
    assert runs["works"].returncode == 0, runs["works"].stderr
    assert "attached" in runs["works"].stderr
    assert runs["mounted"].returncode == 0, "hdrlog mounts tracefs when it is missing"
    msg = one_error(runs["nowhere"])
    assert "tracefs" in msg and "mount -t tracefs nodev /sys/kernel/tracing" in msg
    from hdrlog import preflight

    assert preflight.check_tracefs(mount=False).ok, "the host's tracefs must be untouched"


# ------------------------------------------------------------------------------------------ demo
@kernel
def test_demo_runs_end_to_end():
    t0 = time.monotonic()
    r = hdrlog("demo", timeout=90)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert took < 60, took
    assert "attached" in r.stderr
    demo = [ln for ln in r.stderr.splitlines() if ln.startswith("hdrlog: demo: ")]
    assert len(demo) == 1, r.stderr
    assert "captured 12 requests and 12 responses" in demo[0] and "FEWER" not in demo[0], demo[0]
    assert "Traceback" not in r.stderr
    assert "demo-token-9f8e7d6c5b4a" not in r.stdout + r.stderr
    assert "GET /api/users" in r.stdout  # the readable view
